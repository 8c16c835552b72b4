"""A training run in its own process (app/training/process.py), watched from the editor.

The editor never trains in its own process: a run holds gigabytes and minutes of GPU time, and a crash in
it must not take the user's image with it. `TrainingJob` starts `python -m app.training JOB.json`, turns its
stdout lines into `TrainingEvent`s, sends pause / resume / cancel on its stdin, and reports one final event
however the process ends (its own, or "stopped unexpectedly" with the last line it wrote on stderr).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from app.core.safe_files import read_json_file, write_text_atomically
from app.training.progress import TrainingEvent

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("done", "cancelled", "error")
STDERR_KEPT = 8192


def gpu_of(device: str) -> str:
    """The accelerator a run or job set to `device` uses ("cuda", "mps"), or "" for the CPU."""
    if device == "cpu":
        return ""
    if device in ("cuda", "mps"):
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    backend = getattr(torch.backends, "mps", None)
    return "mps" if backend is not None and backend.is_available() else ""


class TrainingJob(QObject):
    event = Signal(object)          # every TrainingEvent, the final one included
    finished = Signal(object)       # the final TrainingEvent (done, cancelled or error), once

    def __init__(self, kind: str, settings: dict, title: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.kind = kind
        self.settings = settings
        self.title = title                   # "the style 'Ink'": what the user is told is training
        self.gpu = gpu_of(settings.get("device", "auto"))
        self.step = self.total = 0
        self.paused = False
        self.final: TrainingEvent | None = None
        self._buffer = b""
        self._stderr = b""
        self._process: QProcess | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self.final is None

    def start(self) -> None:
        out = Path(self.settings["out"]).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        job = out / "job.json"
        write_text_atomically(job, json.dumps({"kind": self.kind, "settings": self.settings}, indent=1))
        process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        paths = [str(ROOT)] + ([environment.value("PYTHONPATH")] if environment.contains("PYTHONPATH") else [])
        environment.insert("PYTHONPATH", ":".join(paths) if sys.platform != "win32" else ";".join(paths))
        environment.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(str(out))
        process.readyReadStandardOutput.connect(self._read_events)
        process.readyReadStandardError.connect(self._read_errors)
        process.finished.connect(self._ended)
        process.errorOccurred.connect(self._failed_to_start)
        self._process = process
        process.start(sys.executable, ["-m", "app.training", str(job)])

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def cancel(self) -> None:
        self._send("cancel")

    def stop(self, wait_ms: int = 15000) -> None:
        """Cancel and wait for the run to save its checkpoint and end (the window is closing); kill it
        if it does not end in time."""
        process = self._process
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        if self.final is None:
            self.cancel()
        process.closeWriteChannel()             # a run whose stdin closes cancels itself, too
        if not process.waitForFinished(wait_ms):
            process.kill()
            process.waitForFinished(3000)

    def _send(self, command: str) -> None:
        if self.running:
            self._process.write(f"{command}\n".encode())

    def _read_events(self) -> None:
        self._buffer += bytes(self._process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = TrainingEvent.from_line(line.decode("utf-8", "replace"))
            if event is not None:
                self._deliver(event)

    def _read_errors(self) -> None:
        self._stderr = (self._stderr + bytes(self._process.readAllStandardError()))[-STDERR_KEPT:]

    def _deliver(self, event: TrainingEvent) -> None:
        if self.final is not None:
            return
        if event.kind in ("step", "started", "paused", "resumed", "checkpoint", "sample"):
            self.step, self.total = event.step or self.step, event.total or self.total
        if event.kind in ("paused", "resumed"):
            self.paused = event.kind == "paused"
        if event.kind in FINAL:
            self.final = event
        self.event.emit(event)
        if event.kind in FINAL:
            self.finished.emit(event)

    def _ended(self, code: int, status) -> None:
        self._read_events()
        self._read_errors()
        if self.final is None:
            lines = [line for line in self._stderr.decode("utf-8", "replace").splitlines() if line.strip()]
            last = f": {lines[-1].strip()[:200]}" if lines else ""
            self._deliver(TrainingEvent("error", step=self.step, total=self.total,
                                        message=f"The training process stopped unexpectedly (exit code {code})"
                                                f"{last}. Its last checkpoint is kept: Resume goes on from it."))

    def _failed_to_start(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.final is None:
            self._deliver(TrainingEvent("error", message=f"could not start the training process "
                                                         f"({self._process.errorString()})"))


def gpu_conflict(job: TrainingJob | None, request_device: str, local_model: bool) -> str:
    """Why a generation may not start now: a training holds the GPU it would use. "" when it may."""
    if job is None or not job.running or not job.gpu or not local_model or gpu_of(request_device) != job.gpu:
        return ""
    where = f" (step {job.step}/{job.total})" if job.total else ""
    return (f"The GPU is busy training {job.title}{where}. Wait for it, or cancel it in the training window "
            "(it can resume later from its checkpoint), then try again.")


def unfinished_style_runs(runs_folder: Path) -> list[tuple[object, int]]:
    """The style runs in `runs_folder` that stopped before the end (cancelled, or the editor or the machine
    went down) and can go on: (their settings, the checkpoint's step), most recent first."""
    from app.training.checkpoints import checkpoint_step
    from app.training.style_settings import settings_from_dict

    found = []
    folders = sorted((p for p in Path(runs_folder).glob("*") if (p / "checkpoint" / "state.json").is_file()),
                     key=lambda p: (p / "checkpoint" / "state.json").stat().st_mtime, reverse=True)
    for folder in folders:
        job = read_json_file(folder / "job.json", 1 << 20).data
        try:
            settings = settings_from_dict(job.get("settings")) if isinstance(job, dict) else None
        except (TypeError, ValueError):
            continue
        step = checkpoint_step(folder / "checkpoint")
        if settings is not None and step is not None and Path(settings.out).expanduser() == folder:
            found.append((settings, step))
    return found
