"""Autosave for crash recovery: a few seconds after each change, the document, its mask and its undo history
are written to this editor's recovery folder (app/core/recovery.py), on a background thread.

The snapshot is taken on the UI thread (references to immutable arrays and a copy of the live mask, a few ms
at 4096x4096); the writing happens on a thread, one save at a time, and a change made meanwhile is saved
after it. A document with nothing unsaved (just opened, or saved) has no recovery data.
"""
from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.recovery import RecoveryStore, take_snapshot
from app.editor.editor_state import EditorState

log = logging.getLogger(__name__)

DELAY_MS = 3000
MAX_WAIT_S = 30.0           # however often the user keeps changing things, a save at least this often


class Autosave(QObject):
    saved = Signal(str)          # the manifest written (emitted on the UI thread)
    failed = Signal(str)         # one line: why the recovery data could not be written
    _save_done = Signal(str, str)  # (manifest, error) from the writer thread, delivered queued on the UI thread

    def __init__(self, state: EditorState, store: RecoveryStore, delay_ms: int = DELAY_MS,
                 parent: QObject | None = None, settings=None) -> None:
        super().__init__(parent)
        self.state = state
        self.store = store
        self.settings = settings       # () -> the panel's settings as JSON values, saved with the document
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.save_now)
        self._thread: threading.Thread | None = None
        self._pending = False
        self._has_data = False
        self._waiting_since = time.monotonic()
        self._save_done.connect(self._after_write)
        for signal in (state.image_changed, state.mask_changed, state.canvas_changed, state.document_replaced,
                       state.history.stack.indexChanged, state.history.stack.cleanChanged):
            signal.connect(self.schedule)

    def schedule(self, *_args) -> None:
        """Something changed: save in a few seconds, or drop the recovery data if nothing is unsaved."""
        if self._rebuilding():
            return                     # the undo stack is being trimmed or restored: no real change
        if self._nothing_to_lose():
            self._timer.stop()
            self._pending = False
            if self._has_data:
                self._clear()
            return
        now = time.monotonic()
        if not self._timer.isActive():
            self._waiting_since = now
        if now - self._waiting_since >= MAX_WAIT_S:
            self.save_now()            # changes every few seconds must not postpone the save for ever
        else:
            self._timer.start()

    def save_now(self) -> None:
        self._timer.stop()
        self._waiting_since = time.monotonic()
        if self._nothing_to_lose():
            return
        if self._thread is not None and self._thread.is_alive():
            self._pending = True          # saved again when the running save ends
            return
        history = self.state.history
        try:
            settings = self.settings() if self.settings is not None else None
        except Exception as exc:  # noqa: BLE001 - the document matters more than the panel's settings
            log.warning("could not read the panel settings for the recovery copy", exc_info=exc)
            settings = None
        snapshot = take_snapshot(self.state.document, history.changes(), history.stack.index(), settings)
        self._has_data = True
        self._thread = threading.Thread(target=self._write, args=(snapshot,), name="autosave", daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until the running save (if any) has finished; True if none is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """The editor is closing with nothing unsaved (or the user chose to discard): no recovery needed."""
        self._timer.stop()
        self._pending = False
        self._clear()

    def _rebuilding(self) -> bool:
        try:
            return self.state.history.rebuilding
        except RuntimeError:
            return False

    def _nothing_to_lose(self) -> bool:
        try:
            return self.state.document is None or self.state.history.stack.isClean()
        except RuntimeError:           # the window is being destroyed: its undo stack is already gone
            return True

    def _clear(self) -> None:
        self.wait()
        self.store.clear()
        self._has_data = False

    def _write(self, snapshot) -> None:
        try:
            path = str(self.store.save(snapshot))
            self._save_done.emit(path, "")
        except Exception as exc:  # noqa: BLE001 - a full disk must not take the editor down
            log.warning("autosave failed", exc_info=exc)
            self._save_done.emit("", f"Could not write the recovery copy: {exc}")

    def _after_write(self, path: str, error: str) -> None:
        if error:
            self.failed.emit(error.splitlines()[0])
        else:
            self.saved.emit(path)
        if self._pending:
            self._pending = False
            self.save_now()
