"""The selection tools as editor commands: magic wand, colour range, Select object (GrabCut), grow, shrink and
feather. Each reads the composite and the mask, computes off the UI thread (with a busy cursor) when the image
is large, and changes the mask as one undo step; Shift adds to the mask, Alt subtracts, as in Photoshop.

The computing is app/core/selection.py. A result that arrives after the document or the mask changed is
dropped with a line, never applied over newer work.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QCursor, QGuiApplication

from app.core import selection
from app.core.geometry import Rect
from app.editor.background import BackgroundCall
from app.editor.editor_state import EditorState

# Below this many pixels a tool runs on the UI thread: the selection benchmark measured the slowest whole-image
# pass (colour range with softness, grow by 32 px) at under 16 ms for 1 megapixel.
INLINE_PIXELS = 1_000_000


class SelectionCommands(QObject):
    status = Signal(str, bool)              # text, is_error
    busy_changed = Signal(bool)

    def __init__(self, state: EditorState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.busy = False
        self._pending = None            # (document, mask, label) of the computation running
        self.tolerance = 32
        self.contiguous = True

    # -- the tools ------------------------------------------------------------------------------------------
    def magic_wand(self, x: int, y: int, mode: str = "replace") -> bool:
        tolerance, contiguous = self.tolerance, self.contiguous
        return self._run(lambda image, mask: selection.combine(
            mask, selection.magic_wand(image, x, y, tolerance, contiguous), mode), "Magic wand")

    def colour_range(self, colour: tuple[int, int, int], tolerance: int, softness: int = 0,
                     mode: str = "replace") -> bool:
        return self._run(lambda image, mask: selection.combine(
            mask, selection.colour_range(image, colour, tolerance, softness), mode), "Select colour range")

    def select_object(self, box: Rect, mode: str = "replace") -> bool:
        def compute(image, mask):
            return selection.combine(mask, selection.select_object(image, box), mode)
        return self._run(compute, "Select object", always_in_background=True)

    def grow(self, px: int) -> bool:
        return self._run(lambda image, mask: selection.grow(mask, px), f"Grow mask by {px} px", needs_mask=True)

    def shrink(self, px: int) -> bool:
        return self._run(lambda image, mask: selection.shrink(mask, px), f"Shrink mask by {px} px",
                         needs_mask=True)

    def feather(self, px: int) -> bool:
        return self._run(lambda image, mask: selection.feather(mask, px), f"Feather mask by {px} px",
                         needs_mask=True)

    # -- running --------------------------------------------------------------------------------------------
    def _run(self, compute: Callable[[np.ndarray, np.ndarray], np.ndarray], label: str,
             needs_mask: bool = False, always_in_background: bool = False) -> bool:
        doc = self.state.document
        if doc is None:
            return False
        if self.busy:
            self.status.emit("A selection is still being computed; try again in a moment.", True)
            return False
        if needs_mask and not doc.has_mask():
            self.status.emit("Paint or select a mask first.", True)
            return False
        image, mask = doc.shared_image(), doc.shared_mask()      # nobody writes these while we read them
        if not always_in_background and doc.width * doc.height <= INLINE_PIXELS:
            try:
                result = compute(image, mask)
            except ValueError as exc:
                self.status.emit(str(exc), True)
                return False
            finally:
                doc.release_image(image)
            self._apply(doc, mask, result, label)
            return True
        self._set_busy(True)
        self._pending = (doc, mask, label, image)
        call = BackgroundCall(compute, image, mask, parent=self)
        call.finished.connect(self._finished)
        call.start()
        self.status.emit(f"{label}…", False)
        return True

    def _finished(self, result, error) -> None:
        doc, mask, label, image = self._pending
        self._pending = None
        doc.release_image(image)
        self._set_busy(False)
        if error is not None:
            text = str(error) if isinstance(error, ValueError) else f"{label} failed: {error}"
            self.status.emit(" ".join(text.split()), True)
            return
        self._apply(doc, mask, result, label)

    def _apply(self, doc, mask, result: np.ndarray, label: str) -> None:
        current = self.state.document
        if current is not doc or current.mask is not mask:
            self.status.emit(f"{label} was not applied: the image or the mask changed while it was computed.",
                             True)
            return
        self.state.set_mask(result, label)
        selected = int(np.count_nonzero(result))
        self.status.emit(f"{label}: {selected:,} px selected." if selected else f"{label}: nothing selected.",
                         False)

    def _set_busy(self, busy: bool) -> None:
        if busy == self.busy:
            return
        self.busy = busy
        if busy:
            QGuiApplication.setOverrideCursor(QCursor(Qt.CursorShape.BusyCursor))
        else:
            QGuiApplication.restoreOverrideCursor()
        self.busy_changed.emit(busy)


def mode_for(modifiers) -> str:
    """Shift adds to the mask, Alt subtracts, Shift+Alt intersects (as in Photoshop)."""
    shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
    alt = bool(modifiers & Qt.KeyboardModifier.AltModifier)
    return "intersect" if shift and alt else "add" if shift else "subtract" if alt else "replace"
