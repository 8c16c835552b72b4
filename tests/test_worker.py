import logging
import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.engine.base import Engine
from app.engine.events import CancelToken, EngineError, EngineEvent, EventKind, Variant
from app.engine.registry import EngineRegistry
from app.engine.request import GenerationRequest, JobKind, SamplingOptions
from app.engine.runner import OUT_OF_MEMORY, run_job
from app.engine.worker import EngineController

IMAGE = np.full((48, 64, 3), 100, np.uint8)


def request(model: str = "classic", variants: int = 1) -> GenerationRequest:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    return GenerationRequest(JobKind.FILL, IMAGE, mask, model=model,
                             sampling=SamplingOptions(variants=variants))


class ScriptedEngine(Engine):
    """Behaves as its model id says: "wait" emits one step then waits for cancel, "keep" does the same
    but a finish request ends it with that step's result, "quick" finishes in three steps, "raise"
    fails, "oom" runs out of memory."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.id = f"scripted-{behaviour}"
        self.label = f"Scripted {behaviour} engine"
        self.steps_emitted: list[tuple[int, int]] = []

    def generate(self, request, job_id, emit, cancel):
        if self.behaviour == "raise":
            raise ValueError("boom")
        if self.behaviour == "oom":
            raise MemoryError()
        if self.behaviour == "user-error":
            raise EngineError("the prompt is too long")
        if self.behaviour == "deaf":            # one step, then a long uninterruptible part (a VAE decode)
            emit(EngineEvent.progress(job_id, 1, 1, message="step 1"))
            time.sleep(0.4)
            return (Variant(np.array(request.image), request.sampling.seed, "deaf"),)
        steps = 3 if self.behaviour == "quick" else 5
        for step in range(1, steps + 1):
            self.steps_emitted.append((job_id, step))
            emit(EngineEvent.progress(job_id, step, steps, message=f"step {step}"))
            cancel.check()
            if self.behaviour in ("wait", "keep"):
                deadline = time.monotonic() + 10.0
                while not cancel.cancelled and not cancel.finish_requested and time.monotonic() < deadline:
                    time.sleep(0.005)
                cancel.check()
            if cancel.finish_requested:
                return (Variant(np.full_like(request.image, step), request.sampling.seed, f"step {step}"),)
        return (Variant(np.array(request.image), request.sampling.seed, "scripted"),)


class Factories:
    """Registry of scripted engines that counts how often each one was built."""

    def __init__(self) -> None:
        self.built: list[ScriptedEngine] = []
        self.registry = EngineRegistry()
        for behaviour in ("wait", "keep", "quick", "raise", "oom", "user-error", "deaf"):
            self.registry.register(f"scripted-{behaviour}", f"Scripted {behaviour} engine",
                                   self._factory(behaviour))

    def _factory(self, behaviour):
        def build():
            engine = ScriptedEngine(behaviour)
            self.built.append(engine)
            return engine
        return build


@pytest.fixture
def factories():
    return Factories()


@pytest.fixture
def make_controller(qtbot, factories):
    made = []

    def make(registry=None):
        controller = EngineController(registry if registry is not None else factories.registry)
        made.append(controller)
        return controller

    yield make
    for controller in made:
        assert controller.shutdown(timeout_ms=5000)


def is_kind(kind, job_id=None):
    return lambda event: event.kind == kind and (job_id is None or event.job_id == job_id)


def record(controller) -> list:
    events = []
    controller.event.connect(events.append)
    return events


# -- controller ---------------------------------------------------------------------------------------

def test_real_classic_engine_delivers_a_result(qtbot, make_controller):
    controller = make_controller(EngineRegistry())
    events = record(controller)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=20000) as blocker:
        job_id = controller.start(request("classic", variants=2))
        assert controller.busy
    result = blocker.args[0]
    assert result.job_id == job_id
    assert len(result.variants) == 2 and result.variants[0].image.shape == IMAGE.shape
    assert not controller.busy
    assert any(e.kind == EventKind.PROGRESS and e.preview is not None for e in events)
    assert all(e.job_id == job_id for e in events)


def test_cancel_stops_a_running_job_within_one_step(qtbot, make_controller, factories):
    controller = make_controller()
    events = record(controller)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.PROGRESS), timeout=5000):
        job_id = controller.start(request("scripted-wait"))
    seen_before_cancel = len(events)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.CANCELLED, job_id),
                          timeout=5000):
        controller.cancel()
    assert [e.kind for e in events[seen_before_cancel:]] == [EventKind.CANCELLED]
    assert factories.built[0].steps_emitted == [(job_id, 1)]
    assert not controller.busy


def test_cancel_is_immediate_even_while_the_engine_cannot_stop(qtbot, make_controller):
    controller = make_controller()
    events = record(controller)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.PROGRESS), timeout=5000):
        job_id = controller.start(request("scripted-deaf"))
    controller.cancel()
    assert not controller.busy and events[-1].kind == EventKind.CANCELLED and events[-1].job_id == job_id
    qtbot.wait(700)                                  # the engine finishes its result meanwhile: dropped
    assert [e.kind for e in events].count(EventKind.CANCELLED) == 1
    assert EventKind.RESULT not in [e.kind for e in events] and not controller.busy
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000):
        controller.start(request("scripted-quick"))


def test_finish_ends_a_running_job_with_the_current_step_as_its_result(qtbot, make_controller, factories):
    controller = make_controller()
    events = record(controller)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.PROGRESS), timeout=5000):
        job_id = controller.start(request("scripted-keep"))
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT, job_id),
                          timeout=5000) as blocker:
        controller.finish()
    assert [v.parameters for v in blocker.args[0].variants] == ["step 1"]
    assert factories.built[0].steps_emitted == [(job_id, 1)]
    assert EventKind.CANCELLED not in [e.kind for e in events]
    assert not controller.busy


def test_finish_when_idle_does_nothing_and_does_not_touch_the_next_job(qtbot, make_controller):
    controller = make_controller()
    controller.finish()                                 # nothing runs: no event, no error
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000) as blocker:
        controller.start(request("scripted-quick"))
    assert blocker.args[0].variants[0].parameters == "scripted"     # all three steps ran
    controller.finish()                                 # after the job ended: still harmless
    assert not controller.busy


def test_a_second_job_drops_stale_events_of_the_first(qtbot, make_controller):
    controller = make_controller()
    raw = []
    controller.worker.event.connect(raw.append, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.PROGRESS), timeout=5000):
        first = controller.start(request("scripted-wait"))
    events = record(controller)
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000):
        second = controller.start(request("scripted-quick"))
    assert second != first
    assert any(e.job_id == first and e.kind == EventKind.CANCELLED for e in raw)   # it was produced...
    assert events and all(e.job_id == second for e in events)                       # ...and dropped
    assert [e.step for e in events if e.kind == EventKind.PROGRESS] == [1, 2, 3]
    assert not controller.busy


def test_a_job_replaced_or_cancelled_before_it_reached_the_engine_never_runs(qtbot, make_controller, factories):
    """Jobs reach the engine thread one event-loop turn after start(), behind the window's repaint: a job
    cancelled or replaced before that turn is never run at all."""
    controller = make_controller()
    events = record(controller)
    controller.start(request("scripted-wait"))
    controller.cancel()
    controller.start(request("scripted-keep"))
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000):
        third = controller.start(request("scripted-quick"))
    assert [engine.behaviour for engine in factories.built] == ["quick"]
    assert [e.kind for e in events] == [EventKind.CANCELLED] + [EventKind.PROGRESS] * 3 + [EventKind.RESULT]
    assert all(e.job_id == third for e in events[1:])


def test_an_engine_that_raises_gives_error_and_the_next_job_works(qtbot, make_controller):
    controller = make_controller()
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.ERROR), timeout=5000) as blocker:
        controller.start(request("scripted-raise"))
    assert blocker.args[0].message == "internal error in Scripted raise engine: ValueError: boom"
    assert not controller.busy
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000):
        controller.start(request("scripted-quick"))


def test_unknown_model_is_reported_as_an_error(qtbot, make_controller):
    controller = make_controller()
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.ERROR), timeout=5000) as blocker:
        controller.start(request("./no/such/model.safetensors"))
    assert blocker.args[0].message == "model not found: ./no/such/model.safetensors"


def test_the_engine_is_built_once_per_model(qtbot, make_controller, factories):
    controller = make_controller()
    for _ in range(2):
        with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.RESULT), timeout=5000):
            controller.start(request("scripted-quick"))
    assert len(factories.built) == 1


def test_shutdown_mid_job_stops_the_thread(qtbot, make_controller):
    controller = make_controller()
    with qtbot.waitSignal(controller.event, check_params_cb=is_kind(EventKind.PROGRESS), timeout=5000):
        controller.start(request("scripted-wait"))
    assert controller.busy
    assert controller.shutdown(timeout_ms=5000)
    assert controller.thread.isFinished() and not controller.busy
    assert controller.shutdown()               # a second call is harmless
    with pytest.raises(RuntimeError):
        controller.start(request("scripted-quick"))


# -- runner ------------------------------------------------------------------------------------------

def run(engine, token=None):
    events = []
    run_job(engine, request(), 5, events.append, token or CancelToken())
    return events


@pytest.mark.parametrize("behaviour, message", [
    ("oom", OUT_OF_MEMORY),
    ("user-error", "the prompt is too long"),
    ("raise", "internal error in Scripted raise engine: ValueError: boom"),
])
def test_runner_turns_failures_into_one_error_line(behaviour, message):
    events = run(ScriptedEngine(behaviour))
    assert [(e.kind, e.message) for e in events] == [(EventKind.ERROR, message)]
    assert events[0].job_id == 5


def test_runner_logs_the_traceback_of_internal_errors(caplog):
    with caplog.at_level(logging.ERROR):
        run(ScriptedEngine("raise"))
    assert any(record.exc_info and "boom" in str(record.exc_info[1]) for record in caplog.records)


def test_runner_reports_cancel_set_while_generate_returned():
    token = CancelToken()

    class CancelsAtTheEnd(ScriptedEngine):
        def generate(self, request, job_id, emit, cancel):
            result = super().generate(request, job_id, emit, CancelToken())
            token.cancel()
            return result

    events = run(CancelsAtTheEnd("quick"), token)
    assert [e.kind for e in events][-1] == EventKind.CANCELLED
    assert EventKind.RESULT not in [e.kind for e in events]


def test_runner_survives_a_listener_that_raises():
    calls = []

    def emit(event):
        calls.append(event.kind)
        raise RuntimeError("listener broke")

    run_job(ScriptedEngine("quick"), request(), 1, emit, CancelToken())
    assert calls[0] == EventKind.PROGRESS and calls[-1] == EventKind.ERROR


def test_runner_result_carries_variants_once():
    events = run(ScriptedEngine("quick"))
    kinds = [e.kind for e in events]
    assert kinds == [EventKind.PROGRESS] * 3 + [EventKind.RESULT]
    assert len(events[-1].variants) == 1


def test_runner_runs_on_any_thread():
    events = []
    thread = threading.Thread(target=run_job, args=(ScriptedEngine("quick"), request(), 2, events.append,
                                                     CancelToken()))
    thread.start()
    thread.join(5)
    assert events[-1].kind == EventKind.RESULT and events[-1].job_id == 2


APP_CLOSED_MID_JOB = """
import sys
import numpy as np
from PySide6.QtWidgets import QApplication
from app.engine.events import EventKind
from app.engine.request import GenerationRequest, JobKind, SamplingOptions
from app.engine.worker import EngineController

app = QApplication([])
controller = EngineController()
image = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
mask = np.zeros((1500, 1500), np.uint8)
mask[200:1300, 200:1300] = 255

def on_event(event):
    if event.kind == EventKind.PROGRESS:
        print("progress", flush=True)
        app.quit()                     # the job is still running: 16 variants take far longer

controller.event.connect(on_event)
controller.start(GenerationRequest(JobKind.FILL, image, mask, sampling=SamplingOptions(variants=16)))
app.exec()
print("busy after quit:", controller.busy, "finished:", controller.thread.isFinished(), flush=True)
"""


def run_script(tmp_path, code: str):
    """Run `code` as its own Python process from the project folder, headless; returns (process, output)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "script.py"
    script.write_text(code)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    return done, done.stdout + done.stderr


def test_closing_the_app_mid_job_exits_cleanly(tmp_path):
    done, output = run_script(tmp_path, APP_CLOSED_MID_JOB)
    assert done.returncode == 0, output
    assert "progress" in done.stdout
    assert "busy after quit: False finished: True" in done.stdout
    assert "Destroyed while thread" not in output


ENGINE_STUCK_AT_EXIT = """
import sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app.engine.base import Engine
from app.engine.events import EngineEvent, Variant
from app.engine.registry import EngineRegistry
from app.engine.worker import EngineController, exit_code_after_shutdown
import numpy as np
from app.engine.request import GenerationRequest, JobKind

class Stuck(Engine):
    id = label = "stuck"
    def generate(self, request, job_id, emit, cancel):
        emit(EngineEvent.progress(job_id, 1, 1))
        time.sleep(3)                              # a decode that cannot be interrupted
        return (Variant(np.array(request.image), 1, ""),)

registry = EngineRegistry()
registry.register("stuck", "Stuck", Stuck)
controller = EngineController(registry)      # made before the app: it does not wait 5 s at quit itself
app = QApplication([])
mask = np.full((8, 8), 255, np.uint8)
controller.start(GenerationRequest(JobKind.FILL, np.zeros((8, 8, 3), np.uint8), mask, model="stuck"))
QTimer.singleShot(500, app.quit)                   # the window closes while the engine is stuck
code = app.exec()
print("stopped in time:", controller.shutdown(timeout_ms=100), flush=True)
sys.exit(exit_code_after_shutdown(code))
"""


def test_an_engine_stuck_at_exit_does_not_crash_the_process(tmp_path):
    done, output = run_script(tmp_path, ENGINE_STUCK_AT_EXIT)
    assert "stopped in time: False" in done.stdout, output
    assert done.returncode == 0, output
    assert "Destroyed while thread" not in output
