"""Pause, resume and cancel for long work on a worker thread, set from any other thread (a window, a signal
handler, a command reader); the work calls `wait_while_paused` where it may stop."""
from __future__ import annotations

import threading


class PauseControl:
    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._cancelled = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_while_paused(self, poll_s: float = 0.2) -> None:
        """Return once running; the poll lets a waiting main thread still take Ctrl+C."""
        while not self._running.wait(poll_s):
            pass
