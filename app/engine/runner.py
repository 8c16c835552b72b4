"""Run one job on an engine and turn whatever happens into exactly one terminal event."""
from __future__ import annotations

import logging

from app.engine.base import Emit, Engine, _one_line
from app.engine.events import CancelToken, Cancelled, EngineError, EngineEvent
from app.engine.request import GenerationRequest

log = logging.getLogger(__name__)

OUT_OF_MEMORY = "out of memory: try a smaller image or fewer variants"


def run_job(engine: Engine, request: GenerationRequest, job_id: int, emit: Emit,
            cancel: CancelToken) -> None:
    """Run engine.generate and emit RESULT, CANCELLED or ERROR once. Never raises."""
    try:
        cancel.check()
        variants = tuple(engine.generate(request, job_id, emit, cancel))
        cancel.check()
        variants = tuple(variant.with_thumbnail() for variant in variants)
        if not variants:
            raise EngineError(f"{engine.label or engine.id} produced no result")
        terminal = EngineEvent.result(job_id, variants)
    except Cancelled:
        terminal = EngineEvent.cancelled(job_id)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one ERROR event
        terminal = EngineEvent.error(job_id, describe_failure(exc, engine.label or engine.id))
    _emit_safely(emit, terminal)


def describe_failure(exc: BaseException, where: str) -> str:
    """One line for the user; unexpected failures also get their traceback logged."""
    if isinstance(exc, EngineError):
        return _one_line(str(exc)) or f"{where} failed"
    if isinstance(exc, MemoryError) or _is_opencv_out_of_memory(exc) or _is_torch_out_of_memory(exc):
        log.warning("%s ran out of memory", where, exc_info=exc)
        return OUT_OF_MEMORY
    log.error("internal error in %s", where, exc_info=exc)
    return _one_line(f"internal error in {where}: {type(exc).__name__}: {exc}")


def _is_torch_out_of_memory(exc: BaseException) -> bool:
    import sys

    if "torch" not in sys.modules:
        return False
    from app.engine.diffusion.devices import is_out_of_memory

    return is_out_of_memory(exc)


def _is_opencv_out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "error" and ("Insufficient memory" in text or "Failed to allocate" in text)


def _emit_safely(emit: Emit, event: EngineEvent) -> None:
    try:
        emit(event)
    except Exception:  # noqa: BLE001 - a broken listener must not kill the worker thread
        log.exception("could not deliver the %s event of job %d", event.kind.value, event.job_id)
