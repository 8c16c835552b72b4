"""The user's installed models: model files, diffusers folders and Hugging Face repo ids, kept in a JSON file.

Qt-free, so the editor and the command line check models the same way. Every model is checked when it is
added (`describe_model`), never when the list is loaded: a model whose file has since disappeared stays
listed, and a job run with it reports "model not found".
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from app.engine.events import EngineError
from app.engine.model_files import CheckpointInfo, inspect_checkpoint, inspect_folder, resolve_source

log = logging.getLogger(__name__)

KINDS = ("file", "folder", "repo")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelEntry:
    location: str           # an absolute path, or owner/name for a Hugging Face repo
    label: str              # what the model picker shows, e.g. "name.safetensors — SDXL inpainting"
    kind: str               # "file", "folder" or "repo"
    config: str = ""        # single files: a diffusers config folder to load them with ("" = by family)


def describe_model(location: str, config: str = "") -> ModelEntry:
    """Check what `location` is without loading its weights; EngineError says in one line what is wrong."""
    if not location.strip():
        raise EngineError("no model given: pick a file or a folder, or type a Hugging Face repo id")
    source = resolve_source(location, config.strip())
    if source.kind == "repo":
        if config.strip():
            raise EngineError("a config folder only applies to a single model file, not to a repo id")
        return ModelEntry(source.location, f"{source.location} (Hugging Face)", "repo")
    path = Path(source.location)
    if source.kind == "folder":
        if config.strip():
            raise EngineError("a config folder only applies to a single model file, not to a folder")
        family, inpaint = inspect_folder(path)
        return ModelEntry(str(path), f"{path.name} — {CheckpointInfo(family, inpaint, None).label}", "folder")
    info = inspect_checkpoint(path)
    config_dir = ""
    if source.config:
        config_path = Path(source.config).expanduser()
        if not (config_path / "model_index.json").is_file():
            raise EngineError(f"{source.config} is not a diffusers config folder (no model_index.json)")
        config_dir = str(config_path.resolve())
    return ModelEntry(str(path), f"{path.name} — {info.label}", "file", config_dir)


class ModelLibrary:
    """The list of models the user added, in the order they were added, saved after every change."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._entries: list[ModelEntry] = self._load()

    def entries(self) -> list[ModelEntry]:
        return list(self._entries)

    def find(self, location: str) -> ModelEntry | None:
        key = _normalised(location)
        return next((e for e in self._entries if e.location in (location, key)), None)

    def add(self, location: str, config: str = "") -> ModelEntry:
        """Check the model and add it (or return the entry it already has). EngineError: nothing added."""
        existing = self.find(location.strip())
        if existing is not None:
            return existing
        entry = describe_model(location, config)
        existing = self.find(entry.location)
        if existing is not None:
            return existing
        self._commit(self._entries + [entry])
        return entry

    def remove(self, location: str) -> bool:
        """Forget a model (its files are left alone). False when it was not listed."""
        entry = self.find(location)
        if entry is None:
            return False
        self._commit([e for e in self._entries if e is not entry])
        return True

    # -- storage -----------------------------------------------------------------------------------------

    def _commit(self, entries: list[ModelEntry]) -> None:
        """Save `entries`, then use them; when saving fails the library stays as it was."""
        data = {"version": FORMAT_VERSION, "models": [asdict(e) for e in entries]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump(data, file, indent=2, ensure_ascii=False)
                    file.write("\n")
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise EngineError(f"could not save the model list {self.path}: {exc.strerror or exc}") from None
        self._entries = entries

    def _load(self) -> list[ModelEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("could not read the model list %s: %s; starting with an empty one", self.path, exc)
            return []
        try:
            return _parse(text)
        except ValueError as exc:
            bad = self.path.with_suffix(".json.bad")
            log.warning("the model list %s is damaged (%s); starting with an empty one, the old file is kept "
                        "as %s", self.path, exc, bad.name)
            try:
                os.replace(self.path, bad)
            except OSError as move_error:
                log.warning("could not keep %s as %s: %s", self.path, bad, move_error)
            return []


def _parse(text: str) -> list[ModelEntry]:
    """The entries of a saved model list; ValueError when it is not one."""
    data = json.loads(text)       # json.JSONDecodeError is a ValueError
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError("expected an object with a 'models' list")
    entries = []
    for item in data["models"]:
        if not isinstance(item, dict):
            raise ValueError("a model is not an object")
        values = {key: item.get(key, "") for key in ("location", "label", "kind", "config")}
        if not all(isinstance(v, str) for v in values.values()) or not values["location"] \
                or values["kind"] not in KINDS:
            raise ValueError(f"invalid model entry {item!r:.80}")
        entries.append(ModelEntry(values["location"], values["label"] or values["location"], values["kind"],
                                  values["config"]))
    return entries


def _normalised(location: str) -> str:
    """How `location` is stored: repo ids as typed, paths absolute (they need not exist any more)."""
    from app.engine.registry import looks_like_repo_id

    text = location.strip()
    path = Path(text).expanduser()
    if looks_like_repo_id(text) and not path.exists():
        return text
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return text
