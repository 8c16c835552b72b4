"""Undoable document changes, Qt-free. Each knows how to apply and revert itself and what it costs.

The Qt undo stack (app/editor/history.py) wraps these; keeping the data here lets the stack be rebuilt when it
is trimmed to its byte budget, and lets the core be tested without Qt.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.document import Document, DocumentState
from app.core.geometry import Rect


class Change:
    label: str = "Change"

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    def apply(self, doc: Document) -> None:
        raise NotImplementedError

    def revert(self, doc: Document) -> None:
        raise NotImplementedError

    # What a view must repaint/refresh after apply or revert.
    region: str = "all"   # "mask", "canvas", "named_masks" or "all"


@dataclass
class MaskPatchChange(Change):
    """A brush stroke, selection, clear or invert: the mask inside `rect` before and after."""
    rect: Rect
    before: np.ndarray
    after: np.ndarray
    label: str = "Paint mask"
    region: str = "mask"

    @staticmethod
    def capture(doc: Document, rect: Rect, before_full: np.ndarray, label: str) -> "MaskPatchChange":
        """Record a change already made to doc.mask, given a copy of the mask from before it."""
        rect = rect.intersect(doc.image_rect)
        rows, cols = rect.slices()
        return MaskPatchChange(rect, before_full[rows, cols].copy(), doc.mask[rows, cols].copy(), label)

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)

    def is_noop(self) -> bool:
        return self.rect.is_empty() or bool(np.array_equal(self.before, self.after))

    def apply(self, doc: Document) -> None:
        self._paste(doc, self.after)

    def revert(self, doc: Document) -> None:
        self._paste(doc, self.before)

    def _paste(self, doc: Document, patch: np.ndarray) -> None:
        # Refused here, in Python, before numpy sees it: numpy raises its error for a patch that does not fit
        # from C, not yet normalised, and such an exception leaving QUndoCommand.undo() segfaults PySide6 6.11
        # (shiboken's PepException_GetArgs) instead of reaching Python. Negative coordinates would not even
        # raise: numpy counts them from the far edge and the patch would land elsewhere.
        height, width = doc.mask.shape[:2]
        rect = self.rect
        numbers = (rect.x, rect.y, rect.w, rect.h)
        whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in numbers)
        fits = whole and rect.w >= 0 and rect.h >= 0 and Rect(0, 0, width, height).contains_rect(rect)
        if not fits or not isinstance(patch, np.ndarray) or patch.shape != (rect.h, rect.w):
            shape = getattr(patch, "shape", None)
            raise ValueError(f"a mask patch of shape {shape} at {rect} does not fit the {width}x{height} mask")
        rows, cols = rect.slices()
        doc.editable_mask()[rows, cols] = patch


@dataclass
class CanvasChange(Change):
    """The canvas rectangle dragged or set by a preset."""
    before: Rect
    after: Rect
    label: str = "Resize canvas"
    region: str = "canvas"

    @property
    def nbytes(self) -> int:
        return 64

    def apply(self, doc: Document) -> None:
        doc.canvas = self.after

    def revert(self, doc: Document) -> None:
        doc.canvas = self.before


@dataclass
class DocumentChange(Change):
    """Layers, mask and canvas replaced together: an accepted result, or any layer edit; with region
    "named_masks", a named mask saved or deleted."""
    before: DocumentState
    after: DocumentState
    label: str = "Accept result"
    region: str = "all"

    @property
    def nbytes(self) -> int:
        # Neighbouring states share their unchanged layers and mask: count only what differs. The states never
        # change, and the history sums every step's cost at each push: counted once.
        cost = self.__dict__.get("_nbytes")
        if cost is None:
            cost = self.before.cost_beside(self.after) + self.after.cost_beside(self.before)
            self.__dict__["_nbytes"] = cost
        return cost

    def apply(self, doc: Document) -> None:
        doc.restore(self.after)

    def revert(self, doc: Document) -> None:
        doc.restore(self.before)
