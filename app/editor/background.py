"""One function call on a worker thread, its outcome delivered on the UI thread: for work that must not
stall the window (checking a model file the user added reads and validates its header)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Signal

log = logging.getLogger(__name__)

_DONE = QEvent.Type(QEvent.registerEventType())


class BackgroundCall(QObject):
    finished = Signal(object, object)        # (result, exception or None), on the thread that owns this object

    # Calls on their way, so the object outlives its thread whatever the caller keeps.
    _running: set["BackgroundCall"] = set()

    def __init__(self, function: Callable, *args, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._function, self._args = function, args
        self._outcome: tuple[object, Exception | None] = (None, None)

    def start(self) -> "BackgroundCall":
        BackgroundCall._running.add(self)
        threading.Thread(target=self._run, name="background-call", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self._outcome = (self._function(*self._args), None)
        except Exception as exc:  # noqa: BLE001 - handed to the UI thread, which says what went wrong
            self._outcome = (None, exc)
        # Posted, not emitted: a queued signal emitted from this (non-Qt) thread was lost about one time in
        # twenty under load with PySide6 6.11; an event posted to the object is always delivered.
        try:
            QCoreApplication.postEvent(self, QEvent(_DONE))
        except RuntimeError:                  # the window that asked is gone: nobody is waiting
            log.debug("background call finished after its owner was deleted")

    def event(self, event: QEvent) -> bool:
        if event.type() != _DONE:
            return super().event(event)
        BackgroundCall._running.discard(self)
        result, error = self._outcome
        self._outcome = (None, None)
        self.finished.emit(result, error)
        self.deleteLater()
        return True
