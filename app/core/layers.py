"""The layer stack of a document and its compositing. Qt-free.

A document is a canvas of `width` x `height` pixels with a stack of layers over it, bottom first. Every
layer holds its pixels as one patch over its own bounding box (never a canvas-sized copy unless it covers
the canvas), placed at (x, y) in document coordinates; a patch may reach beyond the canvas, and what lies
outside is kept, only not shown. Patches are H x W x 3 (opaque) or H x W x 4 (straight alpha) uint8 and
read-only, so stacks share them: every edit makes a new LayerStack and the old one stays valid for undo.

A generative layer keeps everything its generation made: the mask it filled, the request's parameters and
every variant it produced; its pixels are the selected variant's. Variants are stored as the result pixels
opaque wherever the result differs from the image it was generated from and transparent elsewhere, so
showing the layer gives the engine's result bit for bit and hiding it gives the image below bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

import cv2
import numpy as np

from app.core.control_layers import ControlSettings
from app.core.geometry import Rect

KINDS = ("raster", "generative", "control")
MAX_NAME = 200


def frozen_pixels(pixels: np.ndarray) -> np.ndarray:
    """The patch, contiguous and read-only (copied when it was writable, so no one can change it later)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"layer pixels must be H x W x 3 or 4 uint8, got {pixels.dtype} {pixels.shape}")
    if pixels.flags.writeable or not pixels.flags.c_contiguous or pixels.base is not None:
        pixels = np.array(pixels, copy=True, order="C")
        pixels.setflags(write=False)
    return pixels


def frozen_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask must be H x W uint8, got {mask.dtype} {mask.shape}")
    if mask.flags.writeable or not mask.flags.c_contiguous or mask.base is not None:
        mask = np.array(mask, copy=True, order="C")
        mask.setflags(write=False)
    return mask


@dataclass(frozen=True)
class LayerVariant:
    """One result of a generation, as a patch at (x, y)."""
    pixels: np.ndarray
    x: int
    y: int
    seed: int = 0
    parameters: str = ""          # the PNG `parameters` text of this result

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixels", frozen_pixels(self.pixels))

    @property
    def rect(self) -> Rect:
        return Rect(self.x, self.y, int(self.pixels.shape[1]), int(self.pixels.shape[0]))

    def translated(self, dx: int, dy: int) -> "LayerVariant":
        return replace(self, x=self.x + dx, y=self.y + dy)


@dataclass(frozen=True)
class Generation:
    """What made a generative layer: the job, its settings, its mask and all its variants."""
    kind: str                                   # "fill", "expand" or "restyle"
    variants: tuple[LayerVariant, ...]
    selected: int = 0
    settings: dict = field(default_factory=dict)   # the request's settings (JSON values only)
    mask: np.ndarray | None = None              # the painted mask over mask_rect (fills)
    mask_x: int = 0
    mask_y: int = 0

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("a generative layer needs at least one variant")
        if not 0 <= self.selected < len(self.variants):
            raise ValueError(f"variant {self.selected + 1} does not exist (there are {len(self.variants)})")
        if self.mask is not None:
            object.__setattr__(self, "mask", frozen_mask(self.mask))

    @property
    def mask_rect(self) -> Rect | None:
        if self.mask is None:
            return None
        return Rect(self.mask_x, self.mask_y, int(self.mask.shape[1]), int(self.mask.shape[0]))

    @property
    def current(self) -> LayerVariant:
        return self.variants[self.selected]

    def translated(self, dx: int, dy: int) -> "Generation":
        return replace(self, variants=tuple(v.translated(dx, dy) for v in self.variants),
                       mask_x=self.mask_x + dx, mask_y=self.mask_y + dy)


@dataclass(frozen=True)
class Layer:
    id: int
    name: str
    pixels: np.ndarray
    x: int = 0
    y: int = 0
    visible: bool = True
    opacity: float = 1.0
    generation: Generation | None = None
    control: ControlSettings | None = None   # a control layer: guides generation, never composited

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixels", frozen_pixels(self.pixels))
        if self.control is not None and self.generation is not None:
            raise ValueError("a layer is either generative or a control layer")
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise ValueError(f"opacity must be between 0 and 1, got {self.opacity}")
        object.__setattr__(self, "opacity", float(self.opacity))
        object.__setattr__(self, "name", " ".join(str(self.name).split())[:MAX_NAME] or "Layer")
        g = self.generation
        if g is not None and (g.current.pixels is not self.pixels or (g.current.x, g.current.y) != (self.x, self.y)):
            raise ValueError("a generative layer's pixels must be its selected variant's")

    @staticmethod
    def generative(layer_id: int, name: str, generation: Generation) -> "Layer":
        v = generation.current
        return Layer(layer_id, name, v.pixels, v.x, v.y, generation=generation)

    @property
    def kind(self) -> str:
        if self.control is not None:
            return "control"
        return "raster" if self.generation is None else "generative"

    @property
    def composited(self) -> bool:
        """Whether this layer is part of the image: visible, not transparent and not a control layer."""
        return self.visible and self.opacity > 0.0 and self.control is None

    @property
    def rect(self) -> Rect:
        return Rect(self.x, self.y, int(self.pixels.shape[1]), int(self.pixels.shape[0]))

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4

    def with_variant(self, index: int) -> "Layer":
        g = self.generation
        if g is None:
            raise ValueError(f"'{self.name}' is not a generative layer: it has no variants")
        g = replace(g, selected=index)
        v = g.current
        return replace(self, pixels=v.pixels, x=v.x, y=v.y, generation=g)

    def translated(self, dx: int, dy: int) -> "Layer":
        g = None if self.generation is None else self.generation.translated(dx, dy)
        return replace(self, x=self.x + dx, y=self.y + dy, generation=g)

    def arrays(self) -> Iterable[np.ndarray]:
        """Every pixel array this layer holds (the selected variant's once)."""
        if self.generation is None:
            yield self.pixels
            return
        for variant in self.generation.variants:
            yield variant.pixels
        if self.generation.mask is not None:
            yield self.generation.mask


@dataclass(frozen=True)
class LayerStack:
    width: int
    height: int
    layers: tuple[Layer, ...] = ()      # bottom first
    next_id: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a canvas must be at least 1x1, got {self.width}x{self.height}")
        ids = [layer.id for layer in self.layers]
        if len(set(ids)) != len(ids):
            raise ValueError("two layers share an id")
        if ids and max(ids) >= self.next_id:
            object.__setattr__(self, "next_id", max(ids) + 1)

    @staticmethod
    def from_image(image: np.ndarray, name: str = "Background") -> "LayerStack":
        image = frozen_pixels(image)
        height, width = image.shape[:2]
        return LayerStack(width, height, (Layer(1, name, image),), 2)

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def rect(self) -> Rect:
        return Rect(0, 0, self.width, self.height)

    def __len__(self) -> int:
        return len(self.layers)

    def index_of(self, layer_id: int) -> int:
        for i, layer in enumerate(self.layers):
            if layer.id == layer_id:
                return i
        raise KeyError(f"no layer {layer_id}")

    def get(self, layer_id: int) -> Layer:
        return self.layers[self.index_of(layer_id)]

    def arrays(self) -> dict[int, np.ndarray]:
        """id(array) -> array for every pixel array the stack holds: what it costs, counted once."""
        return {id(a): a for layer in self.layers for a in layer.arrays()}

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays().values())

    # -- edits: each returns a new stack ----------------------------------------------------------------
    def _with_layers(self, layers: Iterable[Layer], **changes) -> "LayerStack":
        return replace(self, layers=tuple(layers), **changes)

    def added(self, layer: Layer, index: int | None = None) -> "LayerStack":
        """The stack with `layer` inserted at `index` (default: on top); its id is assigned here."""
        layer = replace(layer, id=self.next_id)
        layers = list(self.layers)
        layers.insert(len(layers) if index is None else max(0, min(index, len(layers))), layer)
        return self._with_layers(layers, next_id=self.next_id + 1)

    def replaced(self, layer: Layer) -> "LayerStack":
        i = self.index_of(layer.id)
        return self._with_layers(self.layers[:i] + (layer,) + self.layers[i + 1:])

    def changed(self, layer_id: int, **changes) -> "LayerStack":
        return self.replaced(replace(self.get(layer_id), **changes))

    def removed(self, layer_id: int) -> "LayerStack":
        i = self.index_of(layer_id)
        return self._with_layers(self.layers[:i] + self.layers[i + 1:])

    def moved(self, layer_id: int, index: int) -> "LayerStack":
        layers = list(self.layers)
        layer = layers.pop(self.index_of(layer_id))
        layers.insert(max(0, min(index, len(layers))), layer)
        return self._with_layers(layers)

    def reordered(self, ids: list[int]) -> "LayerStack":
        """The same layers in the order `ids` gives (bottom first); every layer must be named once."""
        if sorted(ids) != sorted(layer.id for layer in self.layers):
            raise ValueError("a new order must name every layer once")
        by_id = {layer.id: layer for layer in self.layers}
        return self._with_layers(by_id[i] for i in ids)

    def with_variant(self, layer_id: int, index: int) -> "LayerStack":
        return self.replaced(self.get(layer_id).with_variant(index))

    def merged_down(self, layer_id: int) -> "LayerStack":
        """The layer composited into the one below it, which becomes a raster layer of both extents."""
        i = self.index_of(layer_id)
        if i == 0:
            raise ValueError("the bottom layer has nothing below it to merge into")
        below, top = self.layers[i - 1], self.layers[i]
        if top.control is not None or below.control is not None:
            raise ValueError("control layers guide generation: they cannot be merged")
        if not top.visible:
            return self.removed(layer_id)
        area = below.rect.union(top.rect) if below.visible else top.rect
        sub = LayerStack(self.width, self.height, (below, top))
        pixels = composite_rgba(sub, area, clip=False)
        merged = Layer(below.id, below.name, pixels, area.x, area.y, visible=True, opacity=1.0)
        if not below.visible:
            merged = replace(merged, name=top.name)
        return self._with_layers(self.layers[:i - 1] + (merged,) + self.layers[i + 1:])

    def flattened(self, name: str = "Background") -> "LayerStack":
        """One raster layer holding the visible composite of the canvas (what Export writes)."""
        pixels = composite_rgba(self, self.rect)
        if bool((pixels[..., 3] == 255).all()):
            pixels = np.ascontiguousarray(pixels[..., :3])
        controls = tuple(layer for layer in self.layers if layer.control is not None)   # kept, on top
        return LayerStack(self.width, self.height, (Layer(self.next_id, name, pixels),) + controls,
                          self.next_id + 1)

    def resized(self, canvas: Rect) -> "LayerStack":
        """The canvas set to `canvas` (in current document coordinates): every layer moves with it, and what
        falls outside is kept, not cropped."""
        dx, dy = -canvas.x, -canvas.y
        return LayerStack(canvas.w, canvas.h, tuple(layer.translated(dx, dy) for layer in self.layers),
                          self.next_id)

    def changed_area(self, other: "LayerStack") -> Rect | None:
        """Where the composites of this stack and `other` may differ (None: nowhere), judged from which
        layers differ; a different canvas size means everywhere."""
        if (self.width, self.height) != (other.width, other.height):
            return self.rect
        mine = {layer.id: layer for layer in self.layers}
        theirs = {layer.id: layer for layer in other.layers}
        common_mine = [i for i in mine if i in theirs]
        common_theirs = [i for i in theirs if i in mine]
        if common_mine != common_theirs:             # reordered: whatever the reordered layers cover
            touched = list(self.layers) + list(other.layers)
        else:
            touched = [mine[i] for i in mine if i not in theirs] + [theirs[i] for i in theirs if i not in mine]
            for i in common_mine:
                if not _same_look(mine[i], theirs[i]):
                    touched += [mine[i], theirs[i]]
        area: Rect | None = None
        for layer in touched:
            if layer.visible and layer.control is None:
                area = layer.rect if area is None else area.union(layer.rect)
        if area is None:
            return None
        area = area.intersect(self.rect)
        return None if area.is_empty() else area


def _same_look(a: Layer, b: Layer) -> bool:
    return (a.pixels is b.pixels and (a.x, a.y) == (b.x, b.y) and a.visible == b.visible
            and a.opacity == b.opacity)


# -- compositing ----------------------------------------------------------------------------------------------

def composite_rgba(stack: LayerStack, area: Rect, clip: bool = True) -> np.ndarray:
    """The visible layers over `area`, bottom first, as an area-sized RGBA uint8 array (straight alpha;
    transparent where no layer covers). With clip, only the canvas is drawn.

    Over an opaque destination a layer blends as base * (1 - a) + layer * a in one OpenCV pass, the same
    arithmetic the engines composite with, so a pixel at alpha 0 keeps the image below bit for bit and one at
    alpha 255 becomes the layer's bit for bit.
    """
    out = np.zeros((area.h, area.w, 4), np.uint8)
    if area.is_empty():
        return out
    opaque = False                       # the whole area holds opaque pixels so far
    for layer in stack.layers:
        if not layer.composited:
            continue
        part = layer.rect.intersect(area)
        if clip:
            part = part.intersect(stack.rect)
        if part.is_empty():
            continue
        src = layer.pixels[part.translated(-layer.x, -layer.y).slices()]
        dst_slices = part.translated(-area.x, -area.y).slices()
        dst = out[dst_slices]
        covers = part == area
        if not layer.has_alpha and layer.opacity >= 1.0:
            dst[..., :3] = src
            dst[..., 3] = 255
            opaque = opaque or covers
            continue
        if opaque or _all_opaque(dst):
            _blend_opaque(dst, src, layer.opacity)
            continue
        # Opaque pixels blend exactly as above, whatever the area around them holds, so a part redrawn
        # alone always equals the whole drawn at once; the rest blend "over".
        was_opaque = dst[..., 3] == 255
        empty = dst[..., 3] == 0 if layer.opacity >= 1.0 else None
        linear = dst.copy() if was_opaque.any() else None
        if linear is not None:
            _blend_opaque(linear, src, layer.opacity)
        _blend_over(dst, src, layer.opacity)
        if linear is not None:
            np.copyto(dst, linear, where=was_opaque[..., None])
        if empty is not None:                 # over nothing: the layer as it is, colour under alpha 0 too
            np.copyto(dst, src, where=empty[..., None])
    return out


def _all_opaque(dst: np.ndarray) -> bool:
    return bool(cv2.minMaxLoc(np.ascontiguousarray(dst[..., 3]))[0] == 255)


def _alpha(src: np.ndarray, opacity: float) -> np.ndarray:
    if src.shape[2] == 4:
        alpha = src[..., 3].astype(np.float32) * np.float32(1.0 / 255.0)
        return alpha if opacity >= 1.0 else alpha * np.float32(opacity)
    return np.full(src.shape[:2], np.float32(opacity), np.float32)


def _blend_opaque(dst: np.ndarray, src: np.ndarray, opacity: float) -> None:
    """dst (opaque RGBA view) = dst * (1 - a) + src * a, written in place."""
    if src.shape[2] == 4 and opacity >= 1.0:
        alpha_u8 = src[..., 3]
        low, high = cv2.minMaxLoc(np.ascontiguousarray(alpha_u8))[:2]
        if low == 255:
            dst[..., :3] = src[..., :3]
            return
        if high == 0:
            return
        if bool(((alpha_u8 == 0) | (alpha_u8 == 255)).all()):   # a variant: opaque where it changed
            np.copyto(dst[..., :3], src[..., :3], where=(alpha_u8 == 255)[..., None])
            return
    weight = _alpha(src, opacity)
    rgb = np.ascontiguousarray(dst[..., :3])
    blended = cv2.blendLinear(rgb, np.ascontiguousarray(src[..., :3]), 1.0 - weight, weight)
    dst[..., :3] = blended


def _blend_over(dst: np.ndarray, src: np.ndarray, opacity: float) -> None:
    """Porter-Duff "over" with straight alpha, in float32, for destinations with transparency."""
    a_src = _alpha(src, opacity)[..., None]
    a_dst = dst[..., 3:4].astype(np.float32) * np.float32(1.0 / 255.0)
    a_out = a_src + a_dst * (1.0 - a_src)
    rgb = src[..., :3].astype(np.float32) * a_src + dst[..., :3].astype(np.float32) * a_dst * (1.0 - a_src)
    safe = np.where(a_out > 0, a_out, 1.0)
    dst[..., :3] = np.clip(np.rint(rgb / safe), 0, 255).astype(np.uint8)
    dst[..., 3:4] = np.clip(np.rint(a_out * 255.0), 0, 255).astype(np.uint8)


# -- results as layers ----------------------------------------------------------------------------------------

def variant_from_result(result: np.ndarray, reference: np.ndarray, x: int = 0, y: int = 0, seed: int = 0,
                        parameters: str = "", reference_alpha: np.ndarray | None = None,
                        within: Rect | None = None) -> LayerVariant:
    """A generated result as a variant patch: opaque where it differs from `reference` (the image the job
    read, aligned with the result) and transparent elsewhere, cut to the bounding box of what changed.

    `reference_alpha` (H x W uint8, default opaque) marks where the reference held pixels at all: a pixel the
    reference did not hold (the new area of an Expand) counts as changed. The result's own alpha, when it has
    one, is kept inside the patch. `within` (in the result's pixels) limits the comparison to where the
    engine may have changed anything (a Fill's mask with its feather): outside it the result is the reference.
    """
    if result.shape[:2] != reference.shape[:2]:
        raise ValueError(f"a result of {result.shape[1]}x{result.shape[0]} does not match the "
                         f"{reference.shape[1]}x{reference.shape[0]} image it was made from")
    whole = Rect(0, 0, int(result.shape[1]), int(result.shape[0]))
    area = whole if within is None else within.intersect(whole)
    if area.is_empty():
        area = Rect(0, 0, 1, 1)
    rows, cols = area.slices()
    channels = min(result.shape[2], reference.shape[2])
    diff = cv2.absdiff(np.ascontiguousarray(result[rows, cols, :channels]),
                       np.ascontiguousarray(reference[rows, cols, :channels]))
    changed = diff[..., 0]
    for c in range(1, channels):                      # any channel: an OR of the planes (a numpy max is 20x slower)
        changed = cv2.bitwise_or(changed, np.ascontiguousarray(diff[..., c]))
    if reference_alpha is not None:
        changed = cv2.bitwise_or(changed, np.where(reference_alpha[rows, cols] < 255, np.uint8(1), np.uint8(0)))
    if result.shape[2] == 4:
        changed = np.where(result[rows, cols, 3] > 0, changed, np.uint8(0))
    points = cv2.findNonZero(changed)
    if points is None:
        box = Rect(0, 0, 1, 1)
        patch = np.zeros((1, 1, 4), np.uint8)
    else:
        bx, by, bw, bh = cv2.boundingRect(points)
        inside_box = Rect(int(bx), int(by), int(bw), int(bh))
        changed = changed[inside_box.slices()] > 0
        box = inside_box.translated(area.x, area.y)
        rows, cols = box.slices()
        patch = np.zeros((bh, bw, 4), np.uint8)
        patch[..., :3] = result[rows, cols, :3]
        alpha = result[rows, cols, 3] if result.shape[2] == 4 else np.uint8(255)
        patch[..., 3] = np.where(changed, alpha, np.uint8(0))
    return LayerVariant(patch, x + box.x, y + box.y, seed, parameters)
