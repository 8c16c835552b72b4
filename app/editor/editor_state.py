"""Observable editor state shared by the canvas, the panel and the main window.

Widgets read from here and change the document only through `commit()` (or `push_applied()` for strokes
painted live), so every document change is one undo step and every view hears about it.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.core.changes import CanvasChange, Change, DocumentChange, MaskPatchChange
from app.core.document import Document, DocumentState
from app.core.geometry import Rect
from app.editor.history import History

TOOLS = ("brush", "eraser", "rect", "lasso", "canvas")


class EditorState(QObject):
    document_replaced = Signal()          # a document was opened or closed
    image_changed = Signal()              # pixels, mask and canvas may all have changed
    mask_changed = Signal(object)         # Rect of the changed area, or None for all
    canvas_changed = Signal()
    overlay_changed = Signal()            # preview or candidate changed
    tool_changed = Signal(str)
    brush_changed = Signal()

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

    # -- document ---------------------------------------------------------------------------------
    def set_document(self, document: Document | None) -> None:
        self.document = document
        self.preview = None
        self.candidate = None
        self.history.clear()
        self.history.stack.setClean()
        self.tool = "brush"
        self.document_replaced.emit()
        self.tool_changed.emit(self.tool)

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
        before = doc.begin_mask_edit()
        doc.mask[...] = mask
        self.push_applied(MaskPatchChange.capture(doc, doc.image_rect, before, label))

    def clear_mask(self) -> None:
        if self.document is not None and self.document.has_mask():
            self.set_mask(np.zeros_like(self.document.mask), "Clear mask")

    def invert_mask(self) -> None:
        if self.document is not None:
            self.set_mask(255 - self.document.mask, "Invert mask")

    def accept(self, image: np.ndarray, parameters: str) -> None:
        """Commit a generated result (the whole new image, canvas included) as one undo step."""
        doc = self.document
        if doc is None:
            return
        before = doc.snapshot()
        after = DocumentState(np.ascontiguousarray(image), np.zeros(image.shape[:2], np.uint8),
                              Rect(0, 0, image.shape[1], image.shape[0]), parameters)
        self.candidate = None
        self.preview = None
        self.commit(DocumentChange(before, after, "Accept generated result"))
        self.overlay_changed.emit()

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
        else:
            self.image_changed.emit()
