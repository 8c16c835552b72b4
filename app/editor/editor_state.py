"""Observable editor state shared by the canvas, the panel and the main window.

Widgets read from here and change the document only through `commit()` (or `push_applied()` for strokes
painted live), so every document change is one undo step and every view hears about it.
"""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal

from app.core import imageops
from app.core.changes import CanvasChange, Change, DocumentChange, MaskPatchChange
from app.core.document import (
    MAX_NAMED_MASKS,
    Document,
    DocumentState,
    NamedMask,
    mask_name,
)
from app.core.geometry import Rect
from app.core.control_layers import ControlSettings, empty_control_pixels
from app.core.layers import Generation, Layer, LayerStack, variant_from_result
from app.editor.history import History

TOOLS = ("brush", "eraser", "rect", "lasso", "wand", "object", "canvas")


class EditorState(QObject):
    document_replaced = Signal()          # a document was opened or closed
    image_changed = Signal()              # pixels, mask and canvas may all have changed
    mask_changed = Signal(object)         # Rect of the changed area, or None for all
    canvas_changed = Signal()
    overlay_changed = Signal()            # preview or candidate changed
    tool_changed = Signal(str)
    brush_changed = Signal()
    active_layer_changed = Signal(int)    # the layer id edits and new layers go to (0: none)
    named_masks_changed = Signal()        # a mask was saved under a name, replaced or deleted (or undone)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.document: Document | None = None
        self.history = History(lambda: self.document, self._changed, parent=self)
        self.tool = "brush"
        self.brush_size = 64           # diameter in image pixels
        self.brush_softness = 0.3      # 0 = hard edge, 1 = fully soft
        # A live preview during a job: (H x W x C uint8, Rect in image coords)
        self.preview: tuple[np.ndarray, Rect] | None = None
        # A finished variant shown in place, not yet accepted: (image, Rect of the output)
        self.candidate: tuple[np.ndarray, Rect] | None = None
        self.active_layer = 0              # id of the selected layer in the Layers dock
        self.keep_mask_after_accept = True

    # -- document ---------------------------------------------------------------------------------
    def set_document(self, document: Document | None) -> None:
        self.document = document
        self.preview = None
        self.candidate = None
        self.history.clear()
        self.history.stack.setClean()
        self.tool = "brush"
        self.active_layer = document.layers.layers[-1].id if document is not None and document.layers.layers else 0
        self.document_replaced.emit()
        self.tool_changed.emit(self.tool)
        self.active_layer_changed.emit(self.active_layer)

    def commit(self, change: Change) -> None:
        """Apply a change and make it one undo step."""
        if self.document is None:
            return
        self.history.push(change)

    def push_applied(self, change: Change) -> None:
        """Record a change the caller has already made to the document (a live brush stroke)."""
        if self.document is None:
            return
        if isinstance(change, MaskPatchChange) and change.is_noop():
            return
        self.history.push(change, already_applied=True)
        self._changed(change)

    def set_canvas(self, canvas: Rect) -> None:
        doc = self.document
        if doc is not None and canvas != doc.canvas and not canvas.is_empty():
            self.commit(CanvasChange(doc.canvas, canvas))

    def set_mask(self, mask: np.ndarray, label: str) -> None:
        doc = self.document
        if doc is None:
            return
        changed = imageops.mask_bounds(cv2.absdiff(np.ascontiguousarray(mask), doc.mask))
        if changed is None:
            return
        before = doc.begin_mask_edit()
        rows, cols = changed.slices()
        doc.mask[rows, cols] = mask[rows, cols]
        self.push_applied(MaskPatchChange.capture(doc, changed, before, label))      # only what changed

    def clear_mask(self) -> None:
        if self.document is not None and self.document.has_mask():
            self.set_mask(np.zeros_like(self.document.mask), "Clear mask")

    def invert_mask(self) -> None:
        if self.document is not None:
            self.set_mask(255 - self.document.mask, "Invert mask")

    def accept(self, request, variants, index: int, keep_all: bool = False) -> bool:
        """Add a generation's result as a generative layer on top, one undo step: the chosen variant shown,
        and with keep_all every variant kept in the layer to switch to later. Expand grows every layer's
        canvas first. False (nothing changed) when the document no longer has the size the job started on."""
        doc = self.document
        if doc is None or not variants:
            return False
        if request.image.shape[:2] != (doc.height, doc.width):
            return False
        kind = request.kind.value
        output = request.output_rect
        stack = doc.layers
        keep = self.keep_mask_after_accept
        mask = None if keep else np.zeros_like(doc.mask)       # None: the mask stays as it is
        canvas = doc.canvas
        reference, known = request.image, None
        named = None                                           # None: the named masks stay as they are
        if kind == "expand":
            stack = stack.resized(output)
            reference = imageops.pad_to_canvas(request.image, output)
            known = imageops.known_region(request.image.shape, output)
            mask = imageops.crop(doc.mask, output) if keep else np.zeros(output.size[::-1], np.uint8)
            canvas = stack.rect
            if doc.named_masks:                                # they move with the image, cut as the mask is
                moved = (m.moved(-output.x, -output.y, output.w, output.h) for m in doc.named_masks)
                named = tuple(m for m in moved if m is not None)
        if reference.shape[2] == 4:
            known = reference[..., 3] if known is None else np.minimum(known, reference[..., 3])
        within, box = None, None
        if kind == "fill" and request.mask is not None:
            box = imageops.mask_bounds(request.mask)
            reach = request.mask_options.feather + request.mask_options.grow + 2
            within = None if box is None else box.grown(reach)
        chosen = list(variants) if keep_all else [variants[index]]
        layer_variants = tuple(variant_from_result(v.image, reference, 0, 0, v.seed, v.parameters, known, within)
                               for v in chosen)
        painted, mask_at = None, (0, 0)
        if box is not None:
            painted, mask_at = request.mask[box.slices()], (box.x, box.y)
        generation = Generation(kind, layer_variants, index if keep_all else 0, settings_of(request),
                                painted, *mask_at)
        name = f"{kind.capitalize()} {sum(1 for l in stack.layers if l.generation) + 1}"
        if request.prompt.strip():
            name += ": " + " ".join(request.prompt.split())[:40]
        stack = stack.added(Layer.generative(0, name, generation))
        variant = variants[index]
        after = DocumentState(stack, mask, canvas, variant.parameters, named)
        self.candidate = None
        self.preview = None
        before = doc.snapshot(with_mask=mask is not None, with_named_masks=named is not None)
        self.commit(DocumentChange(before, after, f"Accept {kind}"))
        self.set_active_layer(stack.layers[-1].id)
        self.overlay_changed.emit()
        return True

    # -- named masks ----------------------------------------------------------------------------------
    def save_named_mask(self, name: str) -> str:
        """Keep the mask under `name`, one undo step. A mask saved under that name before is replaced, in its
        place in the list. The name as kept (its spaces trimmed); ValueError, one line, for a name that
        cannot be used, an empty mask, or a mask more than a document keeps."""
        doc = self._document_for_masks()
        name = mask_name(name)
        kept = NamedMask.of(name, doc.mask)
        if kept is None:
            raise ValueError("Paint or select a mask first.")
        old = doc.named_mask(name)
        if old is None and len(doc.named_masks) >= MAX_NAMED_MASKS:
            raise ValueError(f"A document keeps at most {MAX_NAMED_MASKS} saved masks: delete one first.")
        if old is not None and old.rect == kept.rect and np.array_equal(old.pixels, kept.pixels):
            return name
        if old is None:
            self._change_named_masks(doc.named_masks + (kept,), f"Save mask '{name}'")
        else:
            self._change_named_masks(tuple(kept if m is old else m for m in doc.named_masks),
                                     f"Replace mask '{name}'")
        return name

    def load_named_mask(self, name: str) -> bool:
        """The mask replaced by the one saved as `name`, one undo step; False when it is the mask already.
        ValueError (one line) when no mask is saved under that name."""
        doc = self._document_for_masks()
        kept = self._named(doc, name)
        mask = kept.full(doc.width, doc.height)
        if np.array_equal(mask, doc.mask):
            return False
        self.set_mask(mask, f"Load mask '{name}'")
        return True

    def delete_named_mask(self, name: str) -> None:
        """Forget the mask saved as `name`, one undo step; ValueError (one line) when there is none."""
        doc = self._document_for_masks()
        kept = self._named(doc, name)
        self._change_named_masks(tuple(m for m in doc.named_masks if m is not kept), f"Delete mask '{name}'")

    def _document_for_masks(self) -> Document:
        if self.document is None:
            raise ValueError("Open an image first.")
        return self.document

    @staticmethod
    def _named(doc: Document, name: str) -> NamedMask:
        kept = doc.named_mask(name)
        if kept is None:
            raise ValueError(f"No mask is saved as '{' '.join(str(name).split())[:100]}'.")
        return kept

    def _change_named_masks(self, masks: tuple[NamedMask, ...], label: str) -> None:
        before = self.document.snapshot(with_mask=False, with_named_masks=True)
        after = DocumentState(before.layers, None, before.canvas, before.parameters, masks)
        self.commit(DocumentChange(before, after, label, "named_masks"))

    # -- layers ---------------------------------------------------------------------------------------
    def change_layers(self, stack: LayerStack, label: str) -> None:
        """Replace the layer stack (same canvas) as one undo step."""
        doc = self.document
        if doc is None or stack is doc.layers:
            return
        before = doc.snapshot(with_mask=False)
        self.commit(DocumentChange(before, DocumentState(stack, None, before.canvas, before.parameters), label))
        if self.active_layer not in {layer.id for layer in stack.layers}:
            self.set_active_layer(stack.layers[-1].id if stack.layers else 0)

    def set_active_layer(self, layer_id: int) -> None:
        if layer_id != self.active_layer:
            self.active_layer = layer_id
            self.active_layer_changed.emit(layer_id)

    def _layer_edit(self, layer_id: int, label: str, edit) -> bool:
        doc = self.document
        if doc is None:
            return False
        try:
            stack = edit(doc.layers)
        except (KeyError, ValueError):
            return False
        self.change_layers(stack, label)
        return True

    def set_layer_visible(self, layer_id: int, visible: bool) -> bool:
        return self._layer_edit(layer_id, "Show layer" if visible else "Hide layer",
                                lambda s: s.changed(layer_id, visible=bool(visible)))

    def set_layer_opacity(self, layer_id: int, opacity: float) -> bool:
        opacity = min(max(float(opacity), 0.0), 1.0)
        if self.document is not None and self.document.layers.get(layer_id).opacity == opacity:
            return False
        return self._layer_edit(layer_id, "Layer opacity", lambda s: s.changed(layer_id, opacity=opacity))

    def rename_layer(self, layer_id: int, name: str) -> bool:
        return self._layer_edit(layer_id, "Rename layer", lambda s: s.changed(layer_id, name=name))

    def move_layer(self, layer_id: int, index: int) -> bool:
        return self._layer_edit(layer_id, "Move layer", lambda s: s.moved(layer_id, index))

    def reorder_layers(self, ids: list[int]) -> bool:
        """The stack in the order `ids` gives, bottom first (a drag in the Layers dock)."""
        return self._layer_edit(0, "Move layer", lambda s: s.reordered(list(ids)))

    def remove_layer(self, layer_id: int) -> bool:
        doc = self.document
        if doc is None or len(doc.layers) <= 1:
            return False
        return self._layer_edit(layer_id, "Delete layer", lambda s: s.removed(layer_id))

    def merge_down(self, layer_id: int) -> bool:
        return self._layer_edit(layer_id, "Merge down", lambda s: s.merged_down(layer_id))

    def flatten(self) -> bool:
        doc = self.document
        if doc is None or len(doc.layers) <= 1:
            return False
        return self._layer_edit(0, "Flatten image", lambda s: s.flattened())

    def select_variant(self, layer_id: int, index: int) -> bool:
        doc = self.document
        if doc is None:
            return False
        try:
            if doc.layers.get(layer_id).generation.selected == index:
                return False
        except (KeyError, AttributeError):
            return False
        return self._layer_edit(layer_id, f"Variant {index + 1}", lambda s: s.with_variant(layer_id, index))

    def add_image_layer(self, pixels: np.ndarray, name: str, x: int | None = None, y: int | None = None) -> bool:
        """A pasted or dropped image as a raster layer on top, centred unless placed."""
        doc = self.document
        if doc is None:
            return False
        h, w = pixels.shape[:2]
        x = (doc.width - w) // 2 if x is None else x
        y = (doc.height - h) // 2 if y is None else y
        stack = doc.layers.added(Layer(0, name, pixels, x, y))
        self.change_layers(stack, "Add layer")
        self.set_active_layer(stack.layers[-1].id)
        return True

    def add_control_layer(self, settings: ControlSettings, pixels: np.ndarray | None = None,
                          name: str | None = None) -> bool:
        """A control layer on top (canvas-sized and transparent unless `pixels` is given, e.g. an imported
        drawing, placed at the canvas's origin), selected."""
        doc = self.document
        if doc is None:
            return False
        if pixels is None:
            pixels = empty_control_pixels(doc.width, doc.height)
        layer = Layer(0, name or f"{settings.label} control", pixels, 0, 0, control=settings)
        stack = doc.layers.added(layer)
        self.change_layers(stack, "Add control layer")
        self.set_active_layer(stack.layers[-1].id)
        return True

    def set_control_settings(self, layer_id: int, settings: ControlSettings) -> bool:
        doc = self.document
        if doc is None:
            return False
        try:
            layer = doc.layers.get(layer_id)
        except KeyError:
            return False
        if layer.control is None or layer.control == settings:
            return False
        return self._layer_edit(layer_id, "Control settings", lambda s: s.changed(layer_id, control=settings))

    def set_layer_pixels(self, layer_id: int, pixels: np.ndarray, label: str = "Draw on layer") -> bool:
        """Replace a layer's pixels (same place): the pen's strokes on a control layer, an imported image."""
        return self._layer_edit(layer_id, label, lambda s: s.changed(layer_id, pixels=pixels))

    # -- overlays -----------------------------------------------------------------------------------
    def set_preview(self, image: np.ndarray | None, rect: Rect | None) -> None:
        preview = None if image is None or rect is None else (image, rect)
        if preview is None and self.preview is None:
            return                     # nothing shown, nothing to clear: no repaint
        self.preview = preview
        self.overlay_changed.emit()

    def set_candidate(self, image: np.ndarray | None, rect: Rect | None) -> None:
        candidate = None if image is None or rect is None else (image, rect)
        if candidate is None and self.candidate is None:
            return
        self.candidate = candidate
        self.overlay_changed.emit()

    # -- tools --------------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        if tool != self.tool:
            self.tool = tool
            self.tool_changed.emit(tool)

    def set_brush(self, size: int | None = None, softness: float | None = None) -> None:
        if size is not None:
            self.brush_size = int(min(max(size, 1), 2048))
        if softness is not None:
            self.brush_softness = float(min(max(softness, 0.0), 1.0))
        self.brush_changed.emit()

    def grow_brush(self) -> None:
        self.set_brush(size=max(self.brush_size + 1, round(self.brush_size * 1.15)))

    def shrink_brush(self) -> None:
        self.set_brush(size=max(1, min(self.brush_size - 1, round(self.brush_size / 1.15))))

    # -- notifications ------------------------------------------------------------------------------
    def _changed(self, change: Change) -> None:
        if change.region == "mask":
            self.mask_changed.emit(getattr(change, "rect", None))
        elif change.region == "canvas":
            self.canvas_changed.emit()
        elif change.region == "named_masks":
            self.named_masks_changed.emit()
        else:
            self.image_changed.emit()
            if isinstance(change, DocumentChange) and (change.before.named_masks is not None
                                                       or change.after.named_masks is not None):
                self.named_masks_changed.emit()


def settings_of(request) -> dict:
    """What a generation's request asked for, as JSON values (kept in its layer and in projects)."""
    sampling, style, mask = request.sampling, request.style, request.mask_options
    return {"kind": request.kind.value, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
            "style": style.name, "style_strength": style.strength, "model": request.model,
            "steps": sampling.steps, "guidance": sampling.guidance, "strength": sampling.strength,
            "seed": sampling.seed, "variants": sampling.variants, "sampler": sampling.sampler,
            "feather": mask.feather, "grow": mask.grow, **_control_settings(request)}


MAX_RECORDED_CONTROLS = 8


def _control_settings(request) -> dict:
    """The request's ControlNets as flat JSON values (control1_kind, control1_model, ...); not their images."""
    recorded = {}
    for number, control in enumerate(getattr(request, "controls", ())[:MAX_RECORDED_CONTROLS], start=1):
        recorded.update({f"control{number}_kind": control.kind, f"control{number}_model": control.model,
                         f"control{number}_weight": control.weight, f"control{number}_start": control.start,
                         f"control{number}_end": control.end})
    return recorded
