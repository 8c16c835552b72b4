"""The frame every training run has: one final event (done, cancelled or error), errors as one line."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from app.training.checkpoints import CheckpointError
from app.training.dataset import DatasetError
from app.training.progress import Cancelled, Control, Report, TrainingEvent

log = logging.getLogger(__name__)


def settings_from(cls, data: object, tuples: tuple[str, ...] = ()):
    """A settings dataclass from the JSON a job file holds (lists become tuples for the `tuples` fields);
    TypeError or ValueError, one line, for a key it does not have or a value it refuses."""
    from dataclasses import fields

    if not isinstance(data, dict):
        raise TypeError("the settings are not an object")
    unknown = sorted(set(data) - {field.name for field in fields(cls)})
    if unknown:
        raise ValueError(f"unknown setting {str(unknown[0])[:40]!r}")
    values = {key: tuple(value) if key in tuples and isinstance(value, list) else value
              for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise TypeError(" ".join(str(exc).split())) from None


class TrainingRun:
    """What every run holds: its settings (`s`) and their plan of steps, where it reports, the user's Pause
    and Cancel, its output folder and the losses so far. `run` returns (path, what was made)."""

    def __init__(self, settings, report: Report, control: Control) -> None:
        self.s = settings
        self.plan = settings.plan
        self.report = report
        self.control = control
        self.out = Path(settings.out).expanduser()
        self.losses: list[float] = []

    def run(self) -> tuple[str, str]:
        raise NotImplementedError

    @classmethod
    def guarded(cls, settings, report: Report, control: Control | None = None) -> None:
        """Run it; ends with one "done", "cancelled" or "error" event."""
        guarded(lambda: cls(settings, report, control or Control()).run(), report)


class TrainingError(Exception):
    """The run cannot go on; str() is one line."""


def guarded(body: Callable[[], tuple[str, str]], report: Report) -> None:
    """Run `body` (which returns the result's path and a line saying what was made) and end with exactly
    one final event."""
    from app.engine.diffusion.devices import is_out_of_memory
    from app.engine.diffusion.model_files import short_error
    from app.engine.events import EngineError

    try:
        path, message = body()
    except Cancelled as exc:
        report(TrainingEvent("cancelled", message=str(exc) or "Training cancelled."))
    except (TrainingError, DatasetError, CheckpointError, EngineError) as exc:
        report(TrainingEvent("error", message=str(exc)))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        report(TrainingEvent("error", message=f"could not write the training's files{where}: "
                                              f"{exc.strerror or exc}"))
    except Exception as exc:            # noqa: BLE001 - the run must end with one line whatever broke
        if is_out_of_memory(exc):
            report(TrainingEvent("error", message="out of memory even at batch 1 with gradient checkpointing: "
                                                  "lower the resolution or the rank"))
        else:
            log.exception("training failed")
            report(TrainingEvent("error", message=f"training failed: {short_error(exc)}"))
    else:
        report(TrainingEvent("done", path=path, message=message))
