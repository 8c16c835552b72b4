"""The curated models the welcome page offers (resources/recommended_models.json), and what this machine can run.

Qt-free: the welcome page, the Models menu and `latent-canvas models` read the same list the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.engine.events import EngineError
from app.engine.model_ids import looks_like_repo_id

LIST_PATH = Path(__file__).resolve().parents[2] / "resources" / "recommended_models.json"
KINDS = {"inpainting": "inpainting model", "base": "base model", "preview": "preview decoder",
         "controlnet": "ControlNet", "annotator": "annotator"}
MAX_LIST_BYTES = 1 << 20


@dataclass(frozen=True)
class Recommended:
    name: str                 # what `latent-canvas models download NAME` takes
    title: str
    repo: str
    kind: str                 # a key of KINDS
    family: str               # "sd1", "sdxl", or "" for annotators
    download_bytes: int
    disk_bytes: int
    good_for: str
    needs: str
    gpu_memory_gb: float      # 0: a CPU runs it too
    licence: str
    licence_url: str
    when: str | float         # "always", "gpu", or the GPU memory (GB) it is picked from

    @property
    def adds_to_library(self) -> bool:
        return self.kind in ("inpainting", "base", "controlnet")

    def fits(self, machine: "Machine") -> bool:
        if self.when == "always":
            return True
        if machine.gpu_name == "":
            return False
        return self.when == "gpu" or machine.gpu_memory_gb >= float(self.when)


@dataclass(frozen=True)
class Machine:
    gpu_name: str             # "" when there is no usable GPU
    gpu_memory_gb: float
    free_disk_bytes: int
    cache_dir: str

    def describe(self) -> str:
        from app.engine.hub_download import describe_bytes

        gpu = (f"{self.gpu_name} with {self.gpu_memory_gb:.0f} GB" if self.gpu_name
               else "no GPU the editor can use (models run on the CPU, slowly)")
        return f"{gpu}; {describe_bytes(self.free_disk_bytes)} free for models in {home_short(self.cache_dir)}"


def home_short(path: str | Path) -> str:
    """`path` with the home folder written as ~ (what a user reads more easily than /home/NAME/...)."""
    try:
        rest = Path(path).relative_to(Path.home())
    except ValueError:
        return str(path)
    return str(Path("~") / rest) if rest.parts else "~"


def read_recommended(path: Path = LIST_PATH) -> list[Recommended]:
    """The curated list; EngineError in one line when it is missing or damaged."""
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            raise EngineError(f"the recommended models list {path.name} is too large")
        data = json.loads(path.read_text(encoding="utf-8"))
        models = data["models"]
        found = [_entry(item) for item in models]
    except OSError as exc:
        raise EngineError(f"the recommended models list {path} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"the recommended models list {path.name} is damaged ({type(exc).__name__}: {exc})") \
            from None
    names = [m.name for m in found]
    if len(set(names)) != len(names):
        raise EngineError(f"the recommended models list {path.name} names a model twice")
    return found


def _entry(item: dict) -> Recommended:
    needs = item.get("needs", {})
    entry = Recommended(str(item["name"]), str(item["title"]), str(item["repo"]), str(item["kind"]),
                        str(item.get("family", "")), int(item["download_bytes"]), int(item["disk_bytes"]),
                        str(item.get("good_for", "")), str(needs.get("note", "")), float(needs.get("gpu_memory_gb", 0)),
                        str(item.get("licence", "")), str(item.get("licence_url", "")), item.get("when", "always"))
    if entry.kind not in KINDS:
        raise ValueError(f"{entry.name}: unknown kind {entry.kind!r}")
    if not looks_like_repo_id(entry.repo):
        raise ValueError(f"{entry.name}: {entry.repo!r} is not a Hugging Face repo id")
    if not (entry.when in ("always", "gpu") or isinstance(entry.when, (int, float))):
        raise ValueError(f"{entry.name}: 'when' must be 'always', 'gpu' or a GPU memory in GB")
    return entry


def find_recommended(name: str, models: list[Recommended] | None = None) -> Recommended | None:
    """The entry called `name`, or the one for repo id `name`."""
    models = read_recommended() if models is None else models
    return next((m for m in models if name in (m.name, m.repo)), None)


def look_at_machine(cache_dir: str | Path | None = None) -> Machine:
    """The GPU (CUDA or Apple's MPS) and its memory, and the free disk where the Hugging Face cache is."""
    from app.engine.hub_download import cache_root, free_bytes
    from app.engine.preload import wait_if_started

    name, memory = "", 0.0
    wait_if_started()                   # torch imported on two threads at once can fail
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            name, memory = props.name, props.total_memory / 2**30
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            import os

            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            name, memory = "Apple GPU", total / 2**30 * 0.6      # it shares the machine's memory
    except Exception:  # noqa: BLE001 - a broken driver: no usable GPU
        name, memory = "", 0.0
    root = cache_root(cache_dir)
    try:
        free = free_bytes(root)
    except OSError:
        free = 0
    return Machine(name, memory, free, str(root))


def recommend(machine: Machine, models: list[Recommended] | None = None) -> list[Recommended]:
    """The entries the welcome page ticks for `machine`, in the list's order."""
    models = read_recommended() if models is None else models
    return [m for m in models if m.fits(machine)]


def is_installed(model: Recommended, cache_dir: str | Path | None = None) -> bool:
    """True when the Hugging Face cache holds a complete download of the entry (its refs/main is written last)."""
    from app.engine.hub_download import cache_root, repo_folder

    folder = repo_folder(cache_root(cache_dir), model.repo)
    try:
        commit = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return False
    return bool(commit) and (folder / "snapshots" / commit).is_dir()
