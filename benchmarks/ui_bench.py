"""Benchmark 5: does the editor's main thread stall while a diffusion fill runs, and how fast does Cancel act?

A real MainWindow (QT_QPA_PLATFORM=offscreen unless a display is set up) with the benchmark model added to
its model library and picked in the panel; fills start through window.session.fill with the panel's
settings, as the Fill button does. A QTimer firing every 1 ms (Qt.PreciseTimer) records the gaps between
its timeouts: the longest gap is the longest time the event loop could not react to input. Monitoring
covers the fill() call itself, every step's preview reaching the canvas and the result arriving (until
300 ms after busy_changed(False), so the variants strip and candidate paint are counted), and is also split
by phase: from Fill to the first preview (the request is built on the main thread), while the steps run,
and from the last preview on (the result arrives).

CanvasView.paintEvent is wrapped to time each canvas paint (diagnosis only; the wrapper adds microseconds).

Cancel: during a fill, Cancel is pressed (session.cancel, what the Cancel button does) at a random moment
inside a step; the time until busy_changed(False) is compared with one step. A second case presses it
30 ms after the last step's preview arrived, while the final VAE decode and composite run.

    python -m benchmarks.ui_bench --size mid --family sd15 --runs 5 --steps 10
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import GUIDANCE, NEGATIVE, PROMPT, box_mask, emit_result, photo, summary
from benchmarks.models import describe, model_folder, native_size

SETTLE_MS = 300
FINAL_DELAY_MS = 30


class Monitor:
    """Event-loop latency: the gaps between the timeouts of a 1 ms precise timer, with what happened nearby."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer, Qt

        self.timer = QTimer()
        self.timer.setInterval(1)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.gaps: list[tuple[float, float]] = []       # (gap seconds, end time)
        self.marks: list[tuple[float, str]] = []        # (time, label)
        self.start_time = 0.0

    def start(self) -> None:
        self.gaps, self.marks = [], []
        self.start_time = self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self._tick()
        self.timer.stop()

    def mark(self, label: str) -> None:
        self.marks.append((time.perf_counter(), label))

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last, now))
        self.last = now

    def longest(self, count: int = 3) -> list[dict]:
        """The longest gaps, each with the last mark before its end (what the main thread was doing)."""
        out = []
        for gap, end in sorted(self.gaps, reverse=True)[:count]:
            before = [label for t, label in self.marks if t <= end]
            out.append({"ms": round(gap * 1000, 2), "at_s": round(end - self.start_time, 3),
                        "after": before[-1] if before else "start"})
        return out

    def max_ms(self, until: float | None = None, after: float | None = None) -> float:
        gaps = [gap for gap, end in self.gaps if (until is None or end <= until) and (after is None or end > after)]
        return 1000 * max(gaps) if gaps else 0.0

    def percentile_ms(self, share: float) -> float:
        gaps = sorted(gap for gap, _ in self.gaps)
        return 1000 * gaps[min(len(gaps) - 1, int(share * len(gaps)))] if gaps else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mid")
    parser.add_argument("--family", default="sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dtype", default="float32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--document", type=int, default=2048, help="side of the square document, px")
    args = parser.parse_args()
    emit_result(run(args))


def run(args) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    scratch = Path(tempfile.mkdtemp(prefix="lc-ui-bench-"))
    os.environ["XDG_CONFIG_HOME"] = str(scratch)        # no user settings or model list leak in
    folder = model_folder(args.size, args.family, dtype=args.model_dtype)

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["latent-canvas-benchmark"])
    from app.core.document import Document
    from app.editor.model_library import ModelLibrary
    from app.widgets.canvas import CanvasView
    from app.widgets.main_window import MainWindow

    paints: list[float] = []               # CanvasView.paintEvent durations, for the diagnosis only
    paint_event = CanvasView.paintEvent

    def timed_paint(self, event):
        start = time.perf_counter()
        try:
            return paint_event(self, event)
        finally:
            paints.append(time.perf_counter() - start)
    CanvasView.paintEvent = timed_paint

    settings = scratch / "settings.json"
    window = MainWindow(settings=settings, library=ModelLibrary(scratch / "models.json"),
                        recovery_root=scratch / "recovery")
    window.resize(1400, 900)
    window.show()
    # As the editor does (app/gui.py): the diffusion stack is imported on a background thread once the
    # window is up. The main thread's longest stall meanwhile is reported on its own.
    from app.engine.preload import preload

    torch_preloaded = "torch" in sys.modules
    preload_monitor = Monitor()
    preload_monitor.start()
    preload_start = time.perf_counter()
    done = preload()
    while not done.wait(0.001):
        app.processEvents()
    preload_monitor.stop()
    preload_s = time.perf_counter() - preload_start
    print(f"engine preload after the window is shown: {preload_s:.2f} s, longest stall "
          f"{preload_monitor.max_ms():.1f} ms", flush=True)
    added = []                                       # the model is checked on a background thread
    window.model_check_finished.connect(added.append)
    window.add_model_from_text(str(folder))
    deadline = time.perf_counter() + 300
    while not added and time.perf_counter() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 10)
    if not added:
        raise RuntimeError("the benchmark model was not checked within 5 minutes")
    entry = added[0]
    if entry is None or window.panel.selected_model() != entry.location:
        raise RuntimeError(f"could not add and pick the benchmark model: {window.last_error}")
    side = args.document
    native = native_size(args.size, args.family)
    window.state.set_document(Document.from_image(photo(side, side)))
    from app.core.geometry import Rect

    box = native * 5 // 4
    hole = Rect((side - box) // 2, (side - box) // 2, box, box)
    window.state.set_mask(box_mask(side, side, hole), "Benchmark mask")
    # As a user sees the document before pressing Fill: it is painted (and its zoomed-out reduction made)
    # before the first job, whose figure is about the job, not about the first paint of a new document.
    settle = time.perf_counter() + 0.5
    while time.perf_counter() < settle:
        app.processEvents()
        time.sleep(0.005)
    job = replace(window.panel.job_settings(), prompt=PROMPT, negative_prompt=NEGATIVE, guidance=GUIDANCE,
                  steps=args.steps, seed=1, variants=1, device=args.device, style="None")
    session = window.session
    monitor = Monitor()
    session.progress.connect(lambda step, total: monitor.mark(f"step {step}/{total} preview received")
                             if step else None)
    session.variants_ready.connect(lambda variants: monitor.mark("variants ready") if variants else None)
    step_times: list[float] = []
    session.progress.connect(lambda step, total: step_times.append(time.perf_counter()) if step else None)

    def one_job(cancel_at=None) -> dict:
        """Run one fill in the event loop; cancel_at(step, total) -> delay in ms to press Cancel, or None."""
        loop = QEventLoop()
        state = {"cancel": None, "idle": None, "started": False, "result": None}
        step_times.clear()
        paints.clear()

        def on_busy(busy: bool) -> None:
            if not busy and state["started"]:
                state["idle"] = time.perf_counter()
                monitor.mark("busy_changed(False)")
                QTimer.singleShot(SETTLE_MS, loop.quit)

        def on_progress(step: int, total: int) -> None:
            if cancel_at is None or state["cancel"] is not None or step == 0:
                return
            delay = cancel_at(step, total)
            if delay is not None:
                state["cancel"] = -1.0
                QTimer.singleShot(int(delay), press_cancel)

        def press_cancel() -> None:
            state["cancel"] = time.perf_counter()
            monitor.mark("Cancel pressed")
            session.cancel()

        def start() -> None:
            monitor.mark("Fill pressed")
            state["started"] = session.fill(job)
            monitor.mark("fill() returned")
            if not state["started"]:
                loop.quit()

        session.busy_changed.connect(on_busy)
        session.progress.connect(on_progress)
        monitor.start()
        QTimer.singleShot(0, start)
        loop.exec()
        monitor.stop()
        session.busy_changed.disconnect(on_busy)
        session.progress.disconnect(on_progress)
        if not state["started"]:
            raise RuntimeError(f"the fill did not start: {window.last_error}")
        intervals = [b - a for a, b in zip(step_times, step_times[1:])]
        idle = state["idle"]
        first_step = step_times[0] if step_times else None
        last_step = step_times[-1] if step_times else None
        out = {"max_stall_ms": round(monitor.max_ms(), 2),
               # by phase (the gap's end): Fill pressed .. first preview, previews, last preview .. settled
               "start_ms": round(monitor.max_ms(until=first_step), 2),
               "steps_ms": round(monitor.max_ms(until=last_step, after=first_step), 2) if step_times else None,
               "finish_ms": round(monitor.max_ms(after=last_step), 2) if step_times else None,
               "max_stall_until_idle_ms": round(monitor.max_ms(until=idle), 2),
               "p99_gap_ms": round(monitor.percentile_ms(0.99), 2), "longest": monitor.longest(),
               "steps_seen": len(step_times), "step_s": sorted(intervals)[len(intervals) // 2] if intervals else None,
               "variants": len(session.variants),
               "paint_ms": [round(1000 * p, 2) for p in paints]}
        if state["cancel"] and state["cancel"] > 0 and idle:
            if idle > state["cancel"]:
                out["cancel_to_idle_s"] = idle - state["cancel"]
            else:
                out["finished_before_cancel"] = True          # the job was done before Cancel was pressed
        session.discard()
        app.processEvents()
        return out

    # The first job loads the model on the worker thread, as the editor's first diffusion job does: reported,
    # not part of the medians.
    first = one_job()
    print(f"first job (model load): longest stall {first['max_stall_ms']:.1f} ms", flush=True)
    fills = []
    for index in range(args.runs):
        result = one_job()
        fills.append(result)
        print(f"fill {index + 1}: longest stall {result['max_stall_ms']:.1f} ms (start {result['start_ms']:.1f}, "
              f"steps {result['steps_ms']:.1f}, result {result['finish_ms']:.1f}), p99 {result['p99_gap_ms']:.1f} ms, "
              f"step {result['step_s']:.3f} s, longest after: {result['longest'][0]['after']}", flush=True)
    step_s = sorted(f["step_s"] for f in fills)[len(fills) // 2]

    rng = random.Random(0)
    cancels = []
    for index in range(args.runs):
        # Press Cancel at a random moment inside step 3 (after step 2's preview arrived).
        result = one_job(lambda step, total: rng.uniform(0, 1000 * step_s) if step == 2 else None)
        cancels.append(result)
        print(f"cancel {index + 1}: {result.get('cancel_to_idle_s', float('nan')) * 1000:.0f} ms to idle", flush=True)
    finals = []
    for index in range(args.runs):
        # 30 ms after the last preview arrived: the worker has passed its last cancel check and decodes.
        result = one_job(lambda step, total: FINAL_DELAY_MS if step == total else None)
        finals.append(result)
        print(f"cancel during the final decode {index + 1}: "
              f"{result.get('cancel_to_idle_s', float('nan')) * 1000:.0f} ms to idle", flush=True)

    window.session.shutdown()
    window.state.history.stack.setClean()
    window.close()

    stall = summary([f["max_stall_ms"] for f in fills])
    stall_idle = summary([f["max_stall_until_idle_ms"] for f in fills])
    cancel = summary([c["cancel_to_idle_s"] for c in cancels if "cancel_to_idle_s" in c] or [float("nan")])
    final = summary([c["cancel_to_idle_s"] for c in finals if "cancel_to_idle_s" in c] or [float("nan")])
    step = {"median": step_s}
    all_paints = [p for f in fills for p in f["paint_ms"]]

    def entry(name, value, target, unit, **extra):
        return {"name": name, "value": round(value, 3), "target": target, "unit": unit,
                "passed": bool(value <= target), "benchmark": 5, **extra}
    phases = {key: summary([f[key] for f in fills]) for key in ("start_ms", "steps_ms", "finish_ms")}
    figures = [
        entry("longest main-thread stall over a whole fill", stall["median"], 16.0, "ms", worst=stall["max"]),
        entry("... while the steps run (a preview per step)", phases["steps_ms"]["median"], 16.0, "ms",
              worst=phases["steps_ms"]["max"]),
        entry("... from Fill to the first preview", phases["start_ms"]["median"], 16.0, "ms",
              worst=phases["start_ms"]["max"]),
        entry("... when the result arrives (variants strip, candidate)", phases["finish_ms"]["median"], 16.0, "ms",
              worst=phases["finish_ms"]["max"]),
        entry("Cancel to idle during a step / one step", cancel["median"] / step_s, 1.0, "steps",
              cancel_ms=round(1000 * cancel["median"], 1), worst_ms=round(1000 * cancel["max"], 1),
              step_ms=round(1000 * step_s, 1)),
        entry("Cancel to idle during the final VAE decode / one step", final["median"] / step_s, 1.0, "steps",
              cancel_ms=round(1000 * final["median"], 1), worst_ms=round(1000 * final["max"], 1),
              step_ms=round(1000 * step_s, 1)),
        entry("longest main-thread stall, first job (loads the model)", first["max_stall_ms"], 16.0, "ms"),
        entry("longest main-thread stall while the engine is imported after the window is shown (once)",
              preload_monitor.max_ms(), 250.0, "ms", preload_s=round(preload_s, 2)),
    ]
    return {"size": args.size, "family": args.family, "model": describe(args.size, args.family),
            "document": f"{side}x{side}", "mask": f"centred {box}x{box}", "steps": args.steps,
            "platform": os.environ.get("QT_QPA_PLATFORM", ""), "torch_imported_before_window": torch_preloaded,
            "stall_ms": stall, "stall_until_idle_ms": stall_idle, "phase_ms": phases,
            "step_s": step, "cancel_s": cancel, "cancel_final_decode_s": final, "first_job": first,
            "paint_ms": summary(all_paints) if all_paints else None,
            "fills": fills, "figures": figures}


if __name__ == "__main__":
    main()
