"""Runs engine jobs on a background QThread. The only Qt code of the engine package.

EngineController lives in the GUI thread: it starts and cancels jobs and re-emits the current job's
events. EngineWorker lives on the worker thread and runs one job at a time, in submission order.
"""
from __future__ import annotations

import logging
import os
import sys

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from app.engine import preload
from app.engine.base import Engine
from app.engine.events import CancelToken, EngineEvent, EventKind
from app.engine.registry import EngineRegistry
from app.engine.request import GenerationRequest
from app.engine.runner import describe_failure, run_job

log = logging.getLogger(__name__)

_TERMINAL = (EventKind.RESULT, EventKind.ERROR, EventKind.CANCELLED)
# Threads whose engine did not stop in time at shutdown: kept referenced so Qt never destroys them running.
_abandoned_threads: list[QThread] = []


def exit_code_after_shutdown(code: int) -> int:
    """Call as the editor's process ends. If an engine did not stop within its shutdown timeout (a step or a
    VAE decode of a big model on a slow CPU can take longer), its QThread is still running, and letting
    Python tear it down would abort the process ("QThread: Destroyed while thread is still running"). Then
    the process ends here, at once, with `code`: nothing is left to save by then (the window has closed)."""
    importing = not preload.stop()
    if importing or any(thread.isRunning() for thread in _abandoned_threads):
        log.warning("%s was still busy at exit; ending the process without waiting for it",
                    "the background import" if importing else "an engine")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(code)
    return code


class EngineWorker(QObject):
    event = Signal(object)      # EngineEvent, emitted from the worker thread

    def __init__(self, registry: EngineRegistry) -> None:
        super().__init__()
        self._registry = registry
        self._engine: tuple[str, Engine] | None = None    # the last engine built, by model id

    @Slot(int, object, object)
    def run(self, job_id: int, request: GenerationRequest, cancel: CancelToken) -> None:
        if cancel.cancelled:
            self.event.emit(EngineEvent.cancelled(job_id))
            return
        preload.wait_if_started()
        try:
            engine = self._engine_for(request.model)
        except Exception as exc:  # noqa: BLE001 - reported as the job's one ERROR event
            self.event.emit(EngineEvent.error(job_id, describe_failure(exc, "engine setup")))
            return
        run_job(engine, request, job_id, self.event.emit, cancel)

    def release_engine(self) -> None:
        """Drop the cached engine (call on the worker thread, or once the thread has finished)."""
        if self._engine is not None:
            _, engine = self._engine
            self._engine = None
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing must never fail a shutdown
                log.exception("could not close engine %s", engine.id)

    def _engine_for(self, model_id: str) -> Engine:
        key = (model_id or "").strip() or self._registry.default_id
        if self._engine is not None and self._engine[0] == key:
            return self._engine[1]
        self.release_engine()
        engine = self._registry.create(key)
        self._engine = (key, engine)
        return engine


class EngineController(QObject):
    event = Signal(object)          # EngineEvent of the current job only
    busy_changed = Signal(bool)
    _submit = Signal(int, object, object)

    def __init__(self, registry: EngineRegistry | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry = registry if registry is not None else EngineRegistry()
        self._job_id = 0
        self._token: CancelToken | None = None
        self._busy = False
        self._shut_down = False
        self._thread = QThread()
        self._thread.setObjectName("engine-worker")
        self._worker = EngineWorker(self.registry)
        self._worker.moveToThread(self._thread)
        self._submit.connect(self._worker.run)
        self._worker.event.connect(self._on_worker_event)
        self._thread.start()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def current_job(self) -> int:
        """Id of the last job started (0 before the first)."""
        return self._job_id

    @property
    def thread(self) -> QThread:
        return self._thread

    @property
    def worker(self) -> EngineWorker:
        """The worker on the background thread; its `event` carries every job's events, stale ones too."""
        return self._worker

    def start(self, request: GenerationRequest) -> int:
        """Cancel any running job and queue `request`; returns the new job id."""
        if self._shut_down:
            raise RuntimeError("the engine controller has been shut down")
        if self._token is not None:
            self._token.cancel()
        self._job_id += 1
        self._token = CancelToken()
        self._set_busy(True)
        # Queued behind the repaints the new busy state asks for: the window shows the job as started before
        # the engine thread starts competing for the GIL (a model load is seconds of Python).
        job, token = self._job_id, self._token
        QTimer.singleShot(0, self, lambda: self._submit_unless_cancelled(job, request, token))
        return self._job_id

    def _submit_unless_cancelled(self, job: int, request: GenerationRequest, token: CancelToken) -> None:
        if not token.cancelled and not self._shut_down:
            self._submit.emit(job, request, token)

    def cancel(self) -> None:
        """Stop the current job: it is CANCELLED at once (that event is emitted before this returns) and the
        controller is idle. The worker drops the job at its next check; whatever it still reports is ignored."""
        if self._token is None:
            return
        self._token.cancel()
        self._token = None
        self._set_busy(False)
        self.event.emit(EngineEvent.cancelled(self._job_id))

    def finish(self) -> None:
        """Ask the current job to stop after its current step and keep that step's prediction as the
        result; its RESULT event follows. Does nothing when no job runs."""
        if self._token is not None:
            self._token.finish()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel, stop the worker thread and wait for it. Returns False if the engine did not stop in time
        (the thread is then left to finish on its own; it is never terminated). Safe to call twice."""
        if self._shut_down:
            return self._thread.isFinished()
        self._shut_down = True
        if self._token is not None:
            self._token.cancel()
            self._token = None
        self._thread.quit()
        finished = self._thread.wait(timeout_ms)
        if finished:
            self._worker.release_engine()
        else:
            log.warning("the engine did not stop within %d ms; leaving its thread to finish", timeout_ms)
            _abandoned_threads.append(self._thread)
        self._set_busy(False)
        return finished

    @Slot(object)
    def _on_worker_event(self, event: EngineEvent) -> None:
        if event.job_id != self._job_id or self._token is None or self._shut_down:
            return          # an older job's, or the current one's after it was cancelled
        if event.kind in _TERMINAL:
            self._token = None
            self._set_busy(False)
        self.event.emit(event)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)
