"""Undo history on QUndoStack, bounded by bytes as well as by count.

QUndoStack can only limit the number of commands. When the byte budget is exceeded, the oldest changes
are dropped by rebuilding the stack from the core Change objects (without re-applying them); at least
`min_levels` changes are always kept.
"""
from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from app.core.changes import Change
from app.core.document import Document

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 1024 * 1024 * 1024
MIN_LEVELS = 5


class _Command(QUndoCommand):
    def __init__(self, history: "History", change: Change, already_applied: bool) -> None:
        super().__init__(change.label)
        self.change = change
        self._history = history
        self._skip_redo = already_applied

    def redo(self) -> None:
        if self._skip_redo or self._history.rebuilding:
            self._skip_redo = False
            return
        self._run("redo", self.change.apply)

    def undo(self) -> None:
        if self._history.rebuilding:
            return
        self._run("undo", self.change.revert)

    def _run(self, what: str, step: Callable[[Document], None]) -> None:
        # An exception must not leave this Qt virtual: with PySide6 6.11 on Python 3.11 one raised in C
        # (numpy's, say) crashes the process there. The changes check themselves before touching the document.
        try:
            step(self._history.document())
        except Exception as exc:  # noqa: BLE001 - reported in one line; the document is as it was
            # Obsolete: QUndoStack drops the step, so its position still matches the document.
            self.setObsolete(True)
            if what == "undo":           # the document still holds this step: it is not the saved one
                self._history.stack.resetClean()
            line = f"Could not {what} \"{self.change.label}\" ({' '.join(str(exc).split())}); that step was " \
                   "taken out of the undo history"
            log.error("%s", line)
            log.debug("the failed %s", what, exc_info=exc)
            self._history.failed.emit(line)
            return
        self._history.notify(self.change)


class History(QObject):
    failed = Signal(str)          # an undo or redo could not be made (one line); the document is unchanged

    def __init__(self, document: Callable[[], Document], notify: Callable[[Change], None],
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, min_levels: int = MIN_LEVELS,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.stack = QUndoStack(self)
        self.document = document
        self.notify = notify
        self.budget_bytes = budget_bytes
        self.min_levels = min_levels
        # While True, moving through the stack leaves the document alone and its signals (clean, index)
        # describe no real change: the stack is being trimmed or restored.
        self.rebuilding = False

    def restore(self, changes: list[Change], index: int) -> None:
        """Rebuild the history of a recovered document, which is at the state after changes[:index]: those
        are undoable, the rest redoable. Nothing is applied to the document; the result counts as unsaved."""
        self.rebuilding = True
        try:
            self.stack.clear()
            for change in changes:
                self.stack.push(_Command(self, change, already_applied=True))
            self.stack.setIndex(index)
        finally:
            self.rebuilding = False
        self.stack.resetClean()

    def push(self, change: Change, already_applied: bool = False) -> None:
        self.stack.push(_Command(self, change, already_applied))
        self._trim()

    def clear(self) -> None:
        self.stack.clear()

    def changes(self) -> list[Change]:
        return [self.stack.command(i).change for i in range(self.stack.count())]

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.changes())

    def _trim(self) -> None:
        changes = self.changes()
        total = sum(c.nbytes for c in changes)
        if total <= self.budget_bytes or len(changes) <= self.min_levels:
            return
        # push() leaves the index at the top (nothing to redo), so rebuilding loses no redo branch.
        drop = 0
        while total > self.budget_bytes and len(changes) - drop > self.min_levels:
            total -= changes[drop].nbytes
            drop += 1
        clean_index = self.stack.cleanIndex() - drop    # where the saved state lies after the drop
        self.rebuilding = True
        try:
            self.stack.clear()
            self.stack.resetClean()
            for i, change in enumerate(changes[drop:]):
                if i == clean_index:
                    self.stack.setClean()
                self.stack.push(_Command(self, change, already_applied=True))
            if clean_index == len(changes) - drop:
                self.stack.setClean()
        finally:
            self.rebuilding = False
