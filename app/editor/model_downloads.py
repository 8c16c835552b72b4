"""Getting models from the Hugging Face Hub into the user's library: one repo after another, each fetched
in one weight variant (app.engine.hub_download), checked, then listed where the editor picks models.

`install_repo` is Qt-free (the command line uses it); `DownloadJob` runs it on a thread for the window and
reports through Qt signals, with Pause, Resume and Cancel.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal

from app.editor.model_library import ModelEntry, ModelLibrary
from app.engine.events import EngineError
from app.engine.hub_download import DownloadCancelled, DownloadControl, DownloadProgress, DownloadStopped, HubDownload
from app.engine.hub_files import DownloadPlan, plan_download

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    repo_id: str
    folder: Path              # the cache snapshot
    kind: str                 # "model", "controlnet", "preview decoder", "annotator"
    entry: ModelEntry | None  # what the library lists (None for kinds found in the cache when needed)
    plan: DownloadPlan


def kind_of_folder(folder: Path) -> str:
    """What a downloaded repo is, from its configs (never by running anything in it)."""
    if (folder / "model_index.json").is_file():
        return "model"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    name = str(config.get("_class_name", "")) if isinstance(config, dict) else ""
    if name in ("ControlNetModel", "ControlNetUnionModel"):
        return "controlnet"
    if name == "AutoencoderTiny":
        return "preview decoder"
    if isinstance(config, dict) and "model_type" in config:
        return "annotator"
    return "unknown"


def install_repo(repo_id: str, library: ModelLibrary | None, progress: Callable[[DownloadProgress], None] | None = None,
                 control: DownloadControl | None = None, cache_dir: str | Path | None = None,
                 endpoint: str | None = None, on_plan: Callable[[DownloadPlan], None] | None = None) -> Installed:
    """Download `repo_id` and list it in `library`. EngineError (one line) when it cannot be fetched or is not
    a model the editor uses: then nothing is listed; DownloadCancelled: partial files removed, nothing listed."""
    plan = plan_download(repo_id, endpoint)
    if on_plan is not None:
        on_plan(plan)
    download = HubDownload(plan, cache_dir, progress, control, endpoint)
    folder = download.run()
    kind = kind_of_folder(folder)
    entry = None
    if library is not None:
        if kind == "model":
            entry = library.find(repo_id) or library.add_checked(_checked_entry(repo_id, folder))
        elif kind == "controlnet":
            entry = library.add_controlnet(repo_id)
        elif kind == "unknown":
            raise EngineError(f"{repo_id} is downloaded but is not a model the editor uses (no model_index.json "
                              "or known config.json)")
    return Installed(repo_id, folder, kind, entry, plan)


def _checked_entry(repo_id: str, folder: Path) -> ModelEntry:
    """The library entry of a downloaded diffusers model, checked as a folder (configs and weights)."""
    from app.engine.diffusion.model_files import CheckpointInfo, folder_weights, inspect_folder

    family, inpaint = inspect_folder(folder)
    for part in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ()):
        folder_weights(folder, part)
    label = _recommended_title(repo_id) or f"{repo_id} — {CheckpointInfo(family, inpaint, None).label}"
    return ModelEntry(repo_id, label, "repo")


def _recommended_title(repo_id: str) -> str:
    """The title the welcome page gave this repo (what the Model picker then shows); "" for other repos."""
    from app.editor.recommended_models import read_recommended

    try:
        return next((m.title for m in read_recommended() if m.repo == repo_id), "")
    except EngineError:
        return ""


class DownloadJob(QObject):
    """Downloads repos one after another on a thread. Signals reach the window's thread (queued)."""

    planned = Signal(str, object)          # repo id, DownloadPlan (sizes as the Hub gives them)
    progressed = Signal(object)            # DownloadProgress
    one_done = Signal(object)              # Installed
    finished = Signal(str, str)            # "done" | "cancelled" | "stopped" | "error", one line for the user

    def __init__(self, repos: list[str], library: ModelLibrary | None, cache_dir: str | Path | None = None,
                 endpoint: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.repos = list(repos)
        self.library = library
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.control = DownloadControl()
        self.installed: list[Installed] = []
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-download", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    def stop(self, seconds: float = 5.0) -> None:
        """Stop for good but keep what arrived (the window closing): the next download goes on from it."""
        self.control.stop()
        self.wait(seconds)

    def wait(self, seconds: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(seconds)
        return not self.running

    def _run(self) -> None:
        try:
            for repo in self.repos:
                done = install_repo(repo, self.library, self.progressed.emit, self.control, self.cache_dir,
                                    self.endpoint, lambda plan, repo=repo: self.planned.emit(repo, plan))
                self.installed.append(done)
                self.one_done.emit(done)
        except DownloadCancelled:
            self.finished.emit("cancelled", "Download cancelled; its partial files are removed.")
            return
        except DownloadStopped:
            self.finished.emit("stopped", "Download stopped; what arrived is kept and the next one goes on from it.")
            return
        except EngineError as exc:
            self.finished.emit("error", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never a silent dead thread
            log.exception("download failed")
            self.finished.emit("error", f"the download failed ({type(exc).__name__}: {exc})")
            return
        names = ", ".join(i.repo_id for i in self.installed)
        self.finished.emit("done", f"Downloaded {names}.")
