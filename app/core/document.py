"""The open document: its layers, mask and canvas rectangle. Qt-free.

Coordinates are image pixels: the image (the layers' canvas) occupies Rect(0, 0, width, height); `canvas`
may reach beyond it (the area Expand outpaints) or inside it. The mask is image-sized, uint8, 255 = fill,
values between are a soft edge. Named masks (Mask > Save Mask As) are part of the document: each keeps its
mask's pixels inside their bounding box, at their place in the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.core.geometry import Rect
from app.core.imageops import mask_bounds
from app.core.layers import LayerStack, composite_rgba
from app.core.safe_files import writable_text

MAX_NAMED_MASKS = 64
MAX_MASK_NAME = 100            # characters


class Document:
    """A canvas with a layer stack (app/core/layers.py), a mask over it, and the canvas rectangle Expand works
    on. `image` is the composite of the visible layers: kept up to date as layers change, redrawn only where
    they differ, and read-only, so a generation request can hold it while the user goes on editing."""

    def __init__(self, layers: LayerStack, mask: np.ndarray | None = None, canvas: Rect | None = None,
                 path: Path | None = None, parameters: str = "",
                 named_masks: tuple[NamedMask, ...] = ()) -> None:
        if mask is None:
            mask = np.zeros((layers.height, layers.width), np.uint8)
        if mask.shape != (layers.height, layers.width) or mask.dtype != np.uint8:
            raise ValueError(f"a {layers.width}x{layers.height} document needs a mask of that size, "
                             f"got {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}")
        self.layers = layers
        self.mask = mask
        self.canvas = canvas if canvas is not None else layers.rect
        self.path = path
        self.parameters = parameters          # generation settings of the last accepted result
        self.named_masks = check_named_masks(tuple(named_masks), self.width, self.height)
        self._composite: np.ndarray | None = None
        self._composited: LayerStack | None = None     # the stack _composite shows
        self._holders = 0                     # who hold _composite (shared_image): while any do, it is never
                                              # changed in place, the next update makes a new array

    @staticmethod
    def from_image(image: np.ndarray, path: Path | None = None, parameters: str = "") -> "Document":
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError("a document image must be H x W x 3 or 4 uint8")
        return Document(LayerStack.from_image(image), path=path, parameters=parameters)

    # -- the composite --------------------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        """The visible layers composited over the canvas: RGB when the bottom layer is RGB and every pixel is
        opaque, RGBA otherwise. Read-only; hand it to someone who keeps it with shared_image()."""
        stack = self.layers
        if self._composite is None or self._composited is not stack:
            self._composite = self._composite_for(stack)
            self._composited = stack
        return self._composite

    def shared_image(self) -> np.ndarray:
        """The composite, never changed in place while it is held (a request keeps it while a job runs and
        until its result is accepted or discarded). A holder that is done calls release_image."""
        image = self.image
        self._holders += 1
        return image

    def release_image(self, image: np.ndarray) -> None:
        """A holder of shared_image() is done with it; the composite may be updated in place again."""
        if image is self._composite and self._holders > 0:
            self._holders -= 1

    def _composite_for(self, stack: LayerStack) -> np.ndarray:
        old, before = self._composite, self._composited
        area = None if old is None or before is None else before.changed_area(stack)
        if old is not None and before is not None and (before.width, before.height) == (stack.width, stack.height):
            same_bottom = bool(before.layers) == bool(stack.layers) and (
                not stack.layers or before.layers[0].has_alpha == stack.layers[0].has_alpha)
            if area is None and same_bottom:
                return old
            if area is not None and same_bottom:
                patch = composite_rgba(stack, area)
                channels = _channels(stack, patch, old, area)
                if channels == old.shape[2]:
                    target = old.copy() if self._holders else old
                    self._holders = 0
                    target.setflags(write=True)
                    target[area.slices()] = patch[..., :channels]
                    target.setflags(write=False)
                    return target
        full = composite_rgba(stack, stack.rect)
        self._holders = 0
        opaque_rgb = stack.layers and not stack.layers[0].has_alpha and bool((full[..., 3] == 255).all())
        image = np.ascontiguousarray(full[..., :3]) if opaque_rgb else full
        image.setflags(write=False)
        return image

    # -- geometry -------------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return int(self.layers.width)

    @property
    def height(self) -> int:
        return int(self.layers.height)

    @property
    def image_rect(self) -> Rect:
        return Rect(0, 0, self.width, self.height)

    @property
    def has_alpha(self) -> bool:
        return self.image.shape[2] == 4

    def has_mask(self) -> bool:
        return any_painted(self.mask)

    # The mask is edited in place by the brush, and shared without a copy by the generation request and the
    # undo history that read it: shared_mask() marks it read-only, and the next edit works on a copy of it.
    def shared_mask(self) -> np.ndarray:
        """The mask, read-only from now on, for a request or an undo state to keep without copying it."""
        self.mask.setflags(write=False)
        return self.mask

    def editable_mask(self) -> np.ndarray:
        """The mask, writable (a copy of it if it was shared)."""
        if not self.mask.flags.writeable:
            self.mask = self.mask.copy()
        return self.mask

    def begin_mask_edit(self) -> np.ndarray:
        """Before an edit: the mask's content as an array no one will write (for undo), with `mask` left
        writable. One copy either way: a shared mask is itself that array."""
        if self.mask.flags.writeable:
            return self.mask.copy()
        before = self.mask
        self.mask = before.copy()
        return before

    def is_extended(self) -> bool:
        """True when the canvas reaches beyond the image on at least one side (Expand has work)."""
        return not self.image_rect.contains_rect(self.canvas)

    def nbytes(self) -> int:
        return int(self.layers.nbytes() + self.mask.nbytes + sum(m.pixels.nbytes for m in self.named_masks))

    def named_mask(self, name: str) -> NamedMask | None:
        return next((m for m in self.named_masks if m.name == name), None)

    def snapshot(self, with_mask: bool = True, with_named_masks: bool = False) -> "DocumentState":
        """The state now; without the mask (or the named masks) for a change that leaves it alone."""
        return DocumentState(self.layers, self.shared_mask() if with_mask else None, self.canvas, self.parameters,
                             self.named_masks if with_named_masks else None)

    def restore(self, state: "DocumentState") -> None:
        self.layers = state.layers
        if state.mask is not None:
            self.mask = state.mask
            self.mask.setflags(write=False)
        self.canvas = state.canvas
        self.parameters = state.parameters
        if state.named_masks is not None:
            self.named_masks = state.named_masks


def _channels(stack: LayerStack, patch: np.ndarray, old: np.ndarray, area: Rect) -> int:
    """How many channels the composite needs after `patch` replaces `area` of `old`."""
    if not stack.layers or stack.layers[0].has_alpha:
        return 4
    patch_opaque = bool((patch[..., 3] == 255).all())
    if old.shape[2] == 3:
        return 3 if patch_opaque else 4
    if not patch_opaque:
        return 4
    outside = old[..., 3].copy()
    outside[area.slices()] = 255
    return 3 if bool((outside == 255).all()) else 4


@dataclass(frozen=True)
class DocumentState:
    """Everything an undo step may replace. Layer stacks share their pixel arrays and the mask is shared
    read-only, so a state costs only what differs from its neighbours."""
    layers: LayerStack
    mask: np.ndarray | None             # None: the change leaves the mask as it is
    canvas: Rect
    parameters: str
    named_masks: tuple[NamedMask, ...] | None = None    # None: the change leaves the named masks as they are

    @property
    def nbytes(self) -> int:
        named = sum(int(m.pixels.nbytes) for m in self.named_masks or ())
        return int(self.layers.nbytes() + (0 if self.mask is None else self.mask.nbytes) + named)

    def cost_beside(self, other: "DocumentState") -> int:
        """The bytes this state holds that `other` does not."""
        theirs = other.layers.arrays()
        own = sum(int(a.nbytes) for key, a in self.layers.arrays().items() if key not in theirs)
        if self.named_masks:
            shared = {id(m.pixels) for m in other.named_masks or ()}
            own += sum(int(m.pixels.nbytes) for m in self.named_masks if id(m.pixels) not in shared)
        if self.mask is None or self.mask is other.mask:
            return own
        return own + int(self.mask.nbytes)


@dataclass(frozen=True, eq=False)
class NamedMask:
    """A mask kept under a name: its pixels inside their bounding box (read-only), at (x, y) in the image."""
    name: str
    pixels: np.ndarray
    x: int
    y: int

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or not pixels.size:
            raise ValueError(f"the named mask {self.name!r} needs an H x W uint8 patch")
        object.__setattr__(self, "pixels", read_only(pixels))
        object.__setattr__(self, "x", int(self.x))
        object.__setattr__(self, "y", int(self.y))

    @staticmethod
    def of(name: str, mask: np.ndarray) -> NamedMask | None:
        """The image-sized `mask` kept under `name`; None when nothing is painted in it."""
        box = mask_bounds(mask)
        return None if box is None else NamedMask(name, mask[box.slices()].copy(), box.x, box.y)

    @property
    def rect(self) -> Rect:
        return Rect(self.x, self.y, int(self.pixels.shape[1]), int(self.pixels.shape[0]))

    def full(self, width: int, height: int) -> np.ndarray:
        """The mask on a width x height image, zero around the patch."""
        mask = np.zeros((height, width), np.uint8)
        inside = self.rect.intersect(Rect(0, 0, width, height))
        if not inside.is_empty():
            mask[inside.slices()] = self.pixels[inside.translated(-self.x, -self.y).slices()]
        return mask

    def moved(self, dx: int, dy: int, width: int, height: int) -> NamedMask | None:
        """Moved by (dx, dy) and cut to a width x height image; None when nothing painted is left in it."""
        rect = self.rect.translated(dx, dy)
        inside = rect.intersect(Rect(0, 0, width, height))
        if inside == rect:
            return NamedMask(self.name, self.pixels, rect.x, rect.y)
        if inside.is_empty():
            return None
        patch = self.pixels[inside.translated(-rect.x, -rect.y).slices()]
        box = mask_bounds(patch)
        if box is None:
            return None
        return NamedMask(self.name, patch[box.slices()].copy(), inside.x + box.x, inside.y + box.y)


def mask_name(text: str) -> str:
    """`text` as a mask's name: one line, its runs of spaces made one, trimmed; ValueError (one line) when
    nothing is left, it is over MAX_MASK_NAME characters or holds characters that are not text."""
    name = " ".join(str(text).split())
    if not name:
        raise ValueError("A saved mask needs a name.")
    if len(name) > MAX_MASK_NAME:
        raise ValueError(f"A mask's name is at most {MAX_MASK_NAME} characters; this one has {len(name)}.")
    if not name.isprintable() or not writable_text(name):
        raise ValueError("A mask's name cannot hold control characters.")
    return name


def check_named_masks(masks: tuple[NamedMask, ...], width: int, height: int) -> tuple[NamedMask, ...]:
    """`masks`, once each is a NamedMask with a distinct usable name whose patch lies inside the image."""
    if len(masks) > MAX_NAMED_MASKS:
        raise ValueError(f"a document keeps at most {MAX_NAMED_MASKS} named masks, not {len(masks)}")
    names = set()
    for m in masks:
        if not isinstance(m, NamedMask) or mask_name(m.name) != m.name or m.name in names:
            raise ValueError(f"{getattr(m, 'name', m)!r} is not a named mask with a name of its own")
        if not Rect(0, 0, width, height).contains_rect(m.rect):
            raise ValueError(f"the named mask {m.name!r} lies outside the {width}x{height} image")
        names.add(m.name)
    return masks


def read_only(image: np.ndarray) -> np.ndarray:
    """The image, contiguous and marked read-only in place: document images are replaced, never written, so
    history states and generation requests can share them without copies."""
    image = np.ascontiguousarray(image)
    if is_immutable(image):
        return image
    if image.base is not None:             # a view: its owner could still change or free the pixels
        image = image.copy()
    image.setflags(write=False)
    return image


def any_painted(mask: np.ndarray) -> bool:
    """True if any pixel of the H x W uint8 mask is non-zero; stops at the first one."""
    return bool(cv2.hasNonZero(np.ascontiguousarray(mask)))


def is_immutable(array: np.ndarray) -> bool:
    """True when no one can write these pixels: the array and every array it views are read-only."""
    while isinstance(array, np.ndarray):
        if array.flags.writeable:
            return False
        array = array.base
    return array is None or isinstance(array, bytes)
