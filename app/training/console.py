"""A training run in the terminal: progress on stderr, Ctrl+C cancels (keeping the last checkpoint)."""
from __future__ import annotations

import signal
import sys
from typing import Callable

from app.training.progress import Control, TrainingEvent, describe_seconds


class ConsoleReport:
    """One stderr line per event; step lines at most every `every` steps (and the last)."""

    def __init__(self, every: int = 10, stream=None) -> None:
        self.every = every
        self.stream = stream or sys.stderr
        self.result = ""
        self.final: TrainingEvent | None = None

    def __call__(self, event: TrainingEvent) -> None:
        if event.kind == "step":
            if event.step % self.every and event.step != event.total:
                return
            line = f"step {event.step}/{event.total} · loss {event.loss:.4f} · {describe_seconds(event.eta_s)} left"
        elif event.kind == "sample":
            line = f"sample at step {event.step}: {event.path}"
        elif event.kind == "note":
            line = f"note: {event.message}"
        else:
            line = event.message
        if event.kind in ("done", "cancelled", "error"):
            self.final = event
            self.result = event.path
        if line:
            print(line, file=self.stream, flush=True)


def run_in_console(train: Callable, settings, every: int = 10) -> int:
    """Run `train(settings, report, control)`; 0 when done, 1 on an error (one line), 130 when cancelled."""
    control = Control()
    report = ConsoleReport(every)
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(signum, frame) -> None:
        if control.cancelled:               # a second Ctrl+C: stop at once
            raise KeyboardInterrupt
        print("cancelling after this step (the last checkpoint is kept)…", file=sys.stderr, flush=True)
        control.cancel()

    signal.signal(signal.SIGINT, interrupt)
    try:
        train(settings, report, control)
    finally:
        signal.signal(signal.SIGINT, previous)
    final = report.final
    if final is None or final.kind == "error":
        return 1
    return 130 if final.kind == "cancelled" else 0
