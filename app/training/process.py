"""A training run in its own process: `python -m app.training JOB.json`.

JOB.json is {"kind": "style" | "model", "settings": {...}}, the settings of app.training.style_lora or
app.training.model. Events go to stdout as JSON lines (app.training.progress.TrainingEvent); everything a
library prints goes to stderr instead. Commands come on stdin, one per line: pause, resume, cancel. When
stdin closes (the editor quit or crashed) the run cancels itself, keeping its last checkpoint.
"""
from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

from app.core.safe_files import read_json_file
from app.training.progress import Control, TrainingEvent

# kind -> (module, its settings reader, its training function): fixed here, never taken from the job file.
TRAINERS = {"style": ("app.training.style_lora", "settings_from_dict", "train_style"),
            "model": ("app.training.model.train", "settings_from_dict", "train_model")}
MAX_JOB_BYTES = 1 << 20


def _read_commands(control: Control, stream) -> None:
    for line in stream:
        control.apply(line)
    control.cancel()


def main(argv: list[str]) -> int:
    events = sys.stdout
    sys.stdout = sys.stderr                  # stray prints must not break the event stream

    def report(event: TrainingEvent) -> None:
        events.write(event.to_line() + "\n")
        events.flush()

    if len(argv) != 1:
        report(TrainingEvent("error", message="usage: python -m app.training JOB.json"))
        return 2
    read = read_json_file(Path(argv[0]), MAX_JOB_BYTES)
    job = read.data if isinstance(read.data, dict) else {}
    trainer = TRAINERS.get(job.get("kind"))
    if trainer is None or not isinstance(job.get("settings"), dict):
        problem = read.unreadable or read.damaged or "not a training job"
        report(TrainingEvent("error", message=f"{argv[0]}: {problem}"))
        return 2
    module = importlib.import_module(trainer[0])
    try:
        settings = getattr(module, trainer[1])(job["settings"])
    except (TypeError, ValueError) as exc:
        report(TrainingEvent("error", message=f"the training's settings are not usable: {exc}"))
        return 2
    control = Control()
    threading.Thread(target=_read_commands, args=(control, sys.stdin), daemon=True).start()
    getattr(module, trainer[2])(settings, report, control)
    return 0
