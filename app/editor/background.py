"""One function call on a worker thread, its outcome delivered on the UI thread: for work that must not
stall the window (checking a model file the user added reads and validates its header)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


class BackgroundCall(QObject):
    finished = Signal(object, object)        # (result, exception or None), on the thread that owns this object

    def __init__(self, function: Callable, *args, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._function, self._args = function, args
        self.finished.connect(self.deleteLater)

    def start(self) -> "BackgroundCall":
        threading.Thread(target=self._run, name="background-call", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            result, error = self._function(*self._args), None
        except Exception as exc:  # noqa: BLE001 - handed to the UI thread, which says what went wrong
            result, error = None, exc
        try:
            self.finished.emit(result, error)
        except RuntimeError:                  # the window that asked is gone: nobody is waiting
            log.debug("background call finished after its owner was deleted")
