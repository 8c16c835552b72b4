"""What a training run reports, and the commands it obeys.

A run calls `report(TrainingEvent)`; in its own process (app/training/process.py) each event is one JSON
line on stdout, which the editor reads (`TrainingEvent.from_line`). Commands (pause, resume, cancel) reach
the run through a `Control`, which the loop asks between steps: `control.checkpoint_due()` tells it to
stop where it is after saving, and `control.wait_while_paused()` blocks while paused.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from app.core.pause_control import PauseControl

KINDS = ("started", "step", "sample", "checkpoint", "note", "paused", "resumed", "done", "cancelled", "error")
MAX_LINE = 1 << 16


@dataclass(frozen=True)
class TrainingEvent:
    kind: str
    step: int = 0
    total: int = 0
    loss: float | None = None         # the step's loss ("step"), or the smoothed loss of the run so far
    eta_s: float | None = None        # seconds left, from the recent step times
    message: str = ""                 # one line for the user
    path: str = ""                    # "sample": the image written; "done": the result (LoRA file, folder)
    losses: list = field(default_factory=list)   # "started" on a resume: the loss curve so far

    def to_line(self) -> str:
        data = {key: value for key, value in asdict(self).items() if value not in (None, "", [], 0) or
                key == "kind"}
        return json.dumps(data, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_line(cls, line: str) -> "TrainingEvent | None":
        """The event of one stdout line; None for anything that is not one (a library's stray print)."""
        if len(line) > MAX_LINE:
            return None
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            return None
        try:
            event = cls(kind=data["kind"], step=_int(data.get("step", 0)), total=_int(data.get("total", 0)),
                        loss=_number(data.get("loss")), eta_s=_number(data.get("eta_s")),
                        message=str(data.get("message", ""))[:2000], path=str(data.get("path", ""))[:4096],
                        losses=[_number(value) for value in data.get("losses", [])[:1_000_000]
                                if _number(value) is not None])
        except (TypeError, ValueError, AttributeError):
            return None
        return event


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not a whole number")
    return value


def _number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("not a number")
    return float(value)


Report = Callable[[TrainingEvent], None]


class Cancelled(Exception):
    """The run was cancelled; the last checkpoint stays so it can be resumed."""


class Control(PauseControl):
    """Pause, resume and cancel, set from another thread (the command reader, a signal handler)."""

    def apply(self, command: str) -> bool:
        """Obey one command line ("pause", "resume", "cancel"); False for anything else."""
        action = {"pause": self.pause, "resume": self.resume, "cancel": self.cancel}.get(command.strip())
        if action is None:
            return False
        action()
        return True


class StepClock:
    """The ETA from the recent steps' durations (the first steps, slower while things warm up, fade out)."""

    def __init__(self, window: int = 20) -> None:
        self._times: list[float] = []
        self._window = window
        self._last = time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self._times = (self._times + [now - self._last])[-self._window:]
        self._last = now
        return self._times[-1]

    def eta(self, steps_left: int) -> float | None:
        if not self._times:
            return None
        return sorted(self._times)[len(self._times) // 2] * max(0, steps_left)


def describe_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
