"""The user's installed models: model files, diffusers folders and Hugging Face repo ids, kept in a JSON file.

Qt-free, so the editor and the command line check models the same way. Every model is checked when it is
added (`describe_model`), never when the list is loaded: a model whose file has since disappeared stays
listed, and a job run with it reports "model not found".
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from app.core.safe_files import read_json_file, set_aside, writable_text, write_text_atomically
from app.engine.events import EngineError
from app.engine.model_ids import server_model
from app.engine.diffusion.model_files import CheckpointInfo, inspect_folder, resolve_source

log = logging.getLogger(__name__)

MODEL_KINDS = ("file", "folder", "repo", "server")       # server: "CHECKPOINT@SERVER" on a ComfyUI server
CONTROLNET_KINDS = ("controlnet-file", "controlnet-folder", "controlnet-repo")   # older versions keep these as
KINDS = MODEL_KINDS + CONTROLNET_KINDS                                           # "a newer kind", untouched
FIELDS = ("location", "label", "kind", "config", "family", "control")
FAMILIES = ("", "sd1", "sd2", "sdxl")
FORMAT_VERSION = 1
MAX_FILE_BYTES = 8 << 20
MAX_TEXT = 4096


@dataclass(frozen=True)
class ModelEntry:
    location: str           # an absolute path, or owner/name for a Hugging Face repo
    label: str              # what the model picker shows, e.g. "name.safetensors — SDXL inpainting"
    kind: str               # "file", "folder" or "repo"
    config: str = ""        # single files: a diffusers config folder to load them with ("" = by family)
    family: str = ""        # ControlNets: "sd1", "sd2" or "sdxl"
    control: str = ""       # ControlNets: the control kind their name says ("canny", ...), "" when unknown

    @property
    def is_controlnet(self) -> bool:
        return self.kind in CONTROLNET_KINDS


def describe_model(location: str, config: str = "") -> ModelEntry:
    """Check what `location` is without loading its weights; EngineError says in one line what is wrong."""
    if not location.strip():
        raise EngineError("no model given: pick a file or a folder, or type a Hugging Face repo id")
    on_server = server_model(location.strip())
    if on_server is not None:
        return describe_server_model(*on_server)
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
        return ModelEntry(str(path), f"{path.name} — {CheckpointInfo(family, inpaint, None).label}", "folder",
                          family=family)
    from app.engine.diffusion.model_loader import inspect_single_file     # the loader's own check of file and config

    info, checked = inspect_single_file(path, source.config)
    config_dir = str(checked.path) if source.config else ""
    return ModelEntry(str(path), f"{path.name} — {info.label}", "file", config_dir, info.family)


def describe_server_model(checkpoint: str, server_text: str) -> ModelEntry:
    """A checkpoint on a ComfyUI server, checked there: the server answers and lists it (one line if not)."""
    from app.engine.comfy.client import ComfyClient, Server

    server = Server.parse(server_text)
    client = ComfyClient(server)
    try:
        client.system_stats()
        client.require_checkpoint(checkpoint)
    finally:
        client.close()
    return ModelEntry(f"{checkpoint}@{server.url}", f"{checkpoint} @ {server.name}", "server")


def describe_controlnet(location: str) -> ModelEntry:
    """Check the ControlNet at `location` without loading its weights; EngineError in one line otherwise."""
    from app.engine.diffusion.control import inspect_controlnet

    if not location.strip():
        raise EngineError("no ControlNet given: pick a file or a folder, or type a Hugging Face repo id")
    info = inspect_controlnet(location)
    return ModelEntry(info.location, info.label, f"controlnet-{info.kind}", "", info.family, info.control)


def controlnet_for(entries: list[ModelEntry], family: str | None, control: str) -> ModelEntry | None:
    """The first listed ControlNet of `family` (None: of any) made for `control` (canny, depth, inpaint ...)."""
    return next((e for e in entries if e.is_controlnet and family in (None, e.family) and e.control == control),
                None)


class ModelLibrary:
    """The list of models the user added, in the order they were added, saved after every change.

    A damaged list never stops the editor: entries that cannot be used are left out, the file as it was is
    kept beside it (models.json.damaged-<time>) before anything overwrites it, and `problems` says so. What a
    newer version wrote (a kind of model, a field this one does not know) is kept as it was. A list that
    cannot be read, or not set aside, is never overwritten: the library is read-only for the session."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.problems: list[str] = []
        self._stored = _Stored()
        self._read_only = ""            # why the file may not be written this session ("" = it may)
        self._load()

    def entries(self) -> list[ModelEntry]:
        """The diffusion models (what the Model picker lists)."""
        return [e for e in self._stored.entries if not e.is_controlnet]

    def controlnets(self) -> list[ModelEntry]:
        return [e for e in self._stored.entries if e.is_controlnet]

    def add_controlnet(self, location: str) -> ModelEntry:
        existing = self.find(location.strip())
        if existing is not None:
            return existing
        return self.add_checked(describe_controlnet(location))

    def find(self, location: str) -> ModelEntry | None:
        key = _normalised(location)
        return next((e for e in self._stored.entries if e.location in (location, key)), None)

    def add(self, location: str, config: str = "") -> ModelEntry:
        """Check the model and add it (or return the entry it already has). EngineError: nothing added."""
        existing = self.find(location.strip())
        if existing is not None:
            return existing
        return self.add_checked(describe_model(location, config))

    def add_checked(self, entry: ModelEntry) -> ModelEntry:
        """Add an entry describe_model made (on another thread, say), unless the model is listed already."""
        existing = self.find(entry.location)
        if existing is not None:
            return existing
        self._commit(self._stored.entries + [entry])
        return entry

    def remove(self, location: str) -> bool:
        """Forget a model (its files are left alone). False when it was not listed."""
        entry = self.find(location)
        if entry is None:
            return False
        self._commit([e for e in self._stored.entries if e is not entry])
        return True

    def rename(self, location: str, label: str) -> ModelEntry:
        """Give a listed model the name the picker shows; EngineError (one line) when the name cannot be used
        or the model is not listed. The model itself is left as it is."""
        text = " ".join(label.split())
        if not text:
            raise EngineError("a model's name cannot be empty")
        if len(text) > MAX_TEXT // 16 or not writable_text(text):
            raise EngineError(f"a model's name must be plain text of at most {MAX_TEXT // 16} characters")
        return self._replace(location, label=text)

    def set_config(self, location: str, config: str) -> ModelEntry:
        """Remember the config folder a listed single file loads with ("" = the one shipped for its family)."""
        entry = self.find(location)
        if entry is not None and entry.kind != "file":
            raise EngineError(f"{entry.label}: a config folder only applies to a single model file")
        if len(config) > MAX_TEXT or "\0" in config or not writable_text(config):
            raise EngineError("a config folder must be a path of plain text")
        return self._replace(location, config=config.strip())

    def _replace(self, location: str, **changes: str) -> ModelEntry:
        entry = self.find(location)
        if entry is None:
            raise EngineError(f"{location} is not in the model list")
        changed = replace(entry, **changes)
        self._commit([changed if e is entry else e for e in self._stored.entries])
        return changed

    # -- storage -----------------------------------------------------------------------------------------

    def _commit(self, entries: list[ModelEntry]) -> None:
        """Save `entries`, then use them; when saving fails the library stays as it was."""
        if self._read_only:
            raise EngineError(f"the model list {self.path} is left as it is ({self._read_only}): models cannot "
                              "be added or removed until it can be read")
        stored = self._stored
        models = [{**stored.extra.get(e.location, {}), **asdict(e)} for e in entries] + stored.foreign
        data = {**stored.other, "version": FORMAT_VERSION, "models": models}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise EngineError(f"could not save the model list {self.path}: {exc.strerror or exc}") from None
        stored.entries = entries

    def _load(self) -> None:
        found = read_json_file(self.path, MAX_FILE_BYTES)
        if found.missing:
            return
        if found.unreadable:
            self._read_only = f"it could not be read: {found.unreadable}"
            self._report(f"Could not read the model list {self.path} ({found.unreadable}); it is left as it is "
                         "and no models are listed.")
            return
        stored = _Stored(problem=found.damaged) if found.damaged else parse_model_list(found.data)
        if stored.problem:
            self._damaged(stored.problem, stored)
        else:
            self._stored = stored

    def _damaged(self, problem: str, stored: "_Stored") -> None:
        try:
            where = f"the file as it was is kept as {set_aside(self.path).name}"
        except OSError as exc:
            self._read_only = f"it is damaged and could not be set aside: {exc.strerror or exc}"
            self._report(f"The model list {self.path.name} is damaged ({problem}) and could not be set aside "
                         f"({exc.strerror or exc}); it is left as it is and no models are listed.")
            return
        count = len(stored.entries)
        listed = f"{count} model{'s' if count != 1 else ''} listed" if count else "no models listed"
        self._report(f"The model list {self.path.name} is damaged ({problem}); {listed}, {where}.")
        self._stored = stored
        stored.problem = ""
        if stored.entries or stored.foreign:
            try:
                self._commit(stored.entries)     # the readable part, as the new list
            except EngineError as exc:           # still listed, and in the list the next change writes
                self._report(str(exc))

    def _report(self, line: str) -> None:
        log.warning("%s", line)
        self.problems.append(line)


@dataclass
class _Stored:
    """A model list as read: its usable entries, and what this version leaves as it found it."""
    entries: list[ModelEntry] = field(default_factory=list)
    extra: dict[str, dict] = field(default_factory=dict)     # location -> fields this version does not know
    foreign: list[dict] = field(default_factory=list)        # entries of a kind this version does not know
    other: dict = field(default_factory=dict)                # top-level keys this version does not know
    problem: str = ""                                        # what was damaged ("" = nothing)


def parse_model_list(data: object) -> _Stored:
    """The entries of a saved model list, what a newer version wrote, and what was damaged."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return _Stored(problem="expected an object with a 'models' list")
    stored = _Stored(other={k: v for k, v in data.items() if k not in ("version", "models")})
    bad = 0
    for item in data["models"]:
        entry = _entry_from(item)
        if entry is not None:
            if all(e.location != entry.location for e in stored.entries):
                stored.entries.append(entry)
                unknown = {k: v for k, v in item.items() if k not in FIELDS}
                if unknown:
                    stored.extra[entry.location] = unknown
        elif _is_newer_kind(item):
            stored.foreign.append(item)
        else:
            bad += 1
    stored.problem = f"{bad} entr{'ies' if bad != 1 else 'y'} could not be read" if bad else ""
    return stored


def _entry_from(item: object) -> ModelEntry | None:
    if not isinstance(item, dict):
        return None
    values = {key: item.get(key, "") for key in FIELDS}
    if not all(isinstance(v, str) and len(v) <= MAX_TEXT and "\0" not in v and writable_text(v)
               for v in values.values()):
        return None
    if not values["location"].strip() or values["kind"] not in KINDS:
        return None
    if values["family"] not in FAMILIES:
        values["family"] = ""            # a family a later version knows: unknown here, checked when used
    return ModelEntry(values["location"], values["label"] or values["location"], values["kind"], values["config"],
                      values["family"], values["control"][:40])


def _is_newer_kind(item: object) -> bool:
    """An entry of a kind of model a later version knows: well formed, but not one of KINDS."""
    if not (isinstance(item, dict) and isinstance(item.get("kind"), str) and item["kind"] not in KINDS
            and isinstance(item.get("location"), str) and bool(item["location"].strip())):
        return False
    text = json.dumps(item, ensure_ascii=False)
    return len(text) <= 4 * MAX_TEXT and writable_text(text)



def _normalised(location: str) -> str:
    """How `location` is stored: repo ids as typed, paths absolute (they need not exist any more)."""
    from app.engine.model_ids import looks_like_repo_id

    text = location.strip()
    path = Path(text).expanduser()
    if (looks_like_repo_id(text) or server_model(text) is not None) and not path.exists():
        return text
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return text
