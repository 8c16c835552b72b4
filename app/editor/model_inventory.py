"""Every model installed for Latent Canvas, what it is and what it takes on disk, and deleting one. Qt-free.

Installed means: each entry of the model list (models, ControlNets, checkpoints on a ComfyUI server), each
LoRA a style uses, and each repo in the Hugging Face cache of a kind the app uses (a diffusers pipeline, a
ControlNet, a VAE, a TAESD preview decoder, a depth or pose annotator) that the list does not name.

Nothing here loads weights: kinds and families come from config files and .safetensors headers (the bounded
reader), and a file that cannot be read is listed all the same, with what its entry says.
Deleting removes a Hugging Face cache repo as a whole, through huggingface_hub; anything outside the cache
is removed only as the plan names it (`DeletePlan.outside_cache`), so the window can ask about each path.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from app.editor.model_library import ModelEntry
from app.engine.diffusion.model_files import UNET_IN, read_json
from app.engine.diffusion.safetensors_header import read_safetensors_header
from app.engine.events import EngineError

log = logging.getLogger(__name__)

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
WIDTH_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}      # a UNet's cross-attention width
RECOMMENDED_KINDS = {"inpainting": "inpainting", "preview": "preview decoder", "controlnet": "ControlNet",
                     "annotator": "annotator", "base": "base", "vae": "VAE"}
TAESD_FAMILIES = {"madebyollin/taesd": "sd1", "madebyollin/taesdxl": "sdxl"}     # latent_codec.TAESD_REPOS
SOURCE_FILE, SOURCE_FOLDER, SOURCE_HUB, SOURCE_SERVER = "file", "folder", "Hugging Face cache", "ComfyUI server"


@dataclass(frozen=True)
class InstalledModel:
    name: str                   # what the manager lists: the entry's label, a repo id, a LoRA's file name
    location: str               # a path, an owner/name repo id, or CHECKPOINT@SERVER
    family: str                 # "SD 1.x", "SD 2.x", "SDXL", or "" when unknown
    kind: str                   # "base", "inpainting", "ControlNet", "LoRA", "VAE", "preview decoder", "annotator"
    size_on_disk: int | None    # bytes (a folder's files, a cached repo's blobs); None when not on this disk
    source: str                 # "file", "folder", "Hugging Face cache" or "ComfyUI server"
    in_hf_cache: bool
    listed: bool                # in the model list (a LoRA or a cache-only repo is not)
    entry: ModelEntry | None = None
    repo_id: str = ""           # the Hugging Face cache repo it is, or lies in ("" when none)
    used_by: tuple[str, ...] = ()   # a LoRA: the styles that use it

    @property
    def label(self) -> str:
        return self.name

    @property
    def on_disk(self) -> bool:
        return self.size_on_disk is not None

    def reveal_path(self, cache_dir=None) -> Path | None:
        """The folder a file manager opens to show this model; None when it is not on this disk."""
        if not self.on_disk:
            return None
        if self.source == SOURCE_HUB and self.repo_id:
            return _repo_folder(_cache_root(cache_dir), self.repo_id)
        path = Path(self.location)
        return path if path.is_dir() else path.parent


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a model from disk removes, found before anything is removed."""
    model: InstalledModel
    paths: tuple[Path, ...] = ()            # every file or folder removed
    outside_cache: tuple[Path, ...] = ()    # those of them outside the Hugging Face cache
    repo_id: str = ""                       # the cache repo removed as a whole ("" for none)
    size: int = 0
    notes: tuple[str, ...] = ()             # what else the user should know (styles that use a LoRA, ...)
    problem: str = ""                       # why nothing can be deleted ("" when it can)

    @property
    def any_outside_cache(self) -> bool:
        return bool(self.outside_cache)

    def question(self) -> str:
        """The question the window asks before deleting: every path outside the cache by name."""
        if self.problem:
            return self.problem
        lines = [f"Delete {self.model.name} from disk ({format_size(self.size)})? This cannot be undone."]
        if self.repo_id:
            lines.append(f"Its copy of {self.repo_id} in the Hugging Face cache is removed as a whole (every "
                         "revision).")
        if self.outside_cache:
            lines.append("These are outside the Hugging Face cache and will be deleted:")
            lines += [f"    {path}" for path in self.outside_cache]
        return "\n".join(lines + list(self.notes))


# -- listing -----------------------------------------------------------------------------------------------

def installed_models(library, styles: Iterable = (), cache_dir=None) -> list["InstalledModel"]:
    """Every installed model: the library's (its order), the LoRAs of `styles`, then cache-only repos."""
    return inventory(library.entries() + library.controlnets(), styles, cache_dir)


def inventory(entries: list[ModelEntry], styles: Iterable = (), cache_dir=None) -> list[InstalledModel]:
    """installed_models for a copy of the library's entries (what a worker thread is given)."""
    cache = _HubCache(cache_dir)
    recommended = recommended_kinds()
    models = [_listed(entry, cache, recommended) for entry in entries]
    covered = {model.repo_id for model in models if model.repo_id}
    models += _loras(styles, cache)
    for repo_id, repo in sorted(cache.repos.items(), key=lambda item: item[0].lower()):
        if repo_id not in covered:
            found = _cached_repo(repo, recommended)
            if found is not None:
                models.append(found)
    return models


def recommended_kinds() -> dict[str, tuple[str, str]]:
    """repo id -> (kind, family) of the recommended models list; {} when it cannot be read."""
    from app.editor.recommended_models import read_recommended

    try:
        return {item.repo: (RECOMMENDED_KINDS.get(item.kind, ""), item.family) for item in read_recommended()}
    except EngineError:
        return {}


class _HubCache:
    """The model repos of the Hugging Face cache (none when it is missing or cannot be scanned)."""

    def __init__(self, cache_dir) -> None:
        self.root = _cache_root(cache_dir)
        self.info = None
        self.repos: dict = {}
        try:
            import huggingface_hub

            self.info = huggingface_hub.scan_cache_dir(self.root)
        except Exception as exc:  # noqa: BLE001 - CacheNotFound, a file instead of a folder, unreadable
            log.info("no Hugging Face cache to list models from (%s)", type(exc).__name__)
            return
        self.repos = {repo.repo_id: repo for repo in self.info.repos if repo.repo_type == "model"}

    def repo_of(self, path: Path) -> str:
        """The repo id of the cache folder `path` lies in ("" when outside the cache)."""
        return repo_of_path(path, self.root)


def _cache_root(cache_dir) -> Path:
    from app.engine.hub_download import cache_root

    root = cache_root(cache_dir)
    try:
        return root.resolve()
    except (OSError, RuntimeError):
        return root.absolute()


def _repo_folder(root: Path, repo_id: str) -> Path:
    from app.engine.hub_download import repo_folder

    return repo_folder(root, repo_id)


def repo_of_path(path: Path, root: Path) -> str:
    """The repo id of the cache repo folder (models--owner--name) that `path` lies in; "" for none."""
    try:
        relative = Path(path).resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return ""
    top = relative.parts[0] if relative.parts else ""
    if not top.startswith("models--") or top.count("--") < 2:
        return ""
    return top.removeprefix("models--").replace("--", "/", 1)


def _best_snapshot(repo) -> Path | None:
    if not repo.revisions:
        return None
    return max(repo.revisions, key=lambda rev: ("main" in rev.refs, rev.last_modified)).snapshot_path


def _listed(entry: ModelEntry, cache: _HubCache, recommended: dict) -> InstalledModel:
    family = entry.family
    if entry.kind == "server":
        kind = "inpainting" if "inpaint" in entry.location.lower() else "base"
        return InstalledModel(entry.label, entry.location, FAMILY_NAMES.get(family, ""), kind, None, SOURCE_SERVER,
                              False, True, entry)
    if entry.kind.endswith("repo"):
        repo = cache.repos.get(entry.location)
        folder = _repo_folder(cache.root, entry.location)
        size = repo.size_on_disk if repo is not None else (folder_size(folder) if folder.is_dir() else None)
        kind = "ControlNet" if entry.is_controlnet else "base"
        snapshot = _best_snapshot(repo) if repo is not None else None
        if snapshot is not None and not entry.is_controlnet:
            family, inpaint = pipeline_facts(snapshot, family)
            kind = "inpainting" if inpaint else "base"
        elif entry.location in recommended:
            kind = recommended[entry.location][0] or kind
            family = family or recommended[entry.location][1]
        return InstalledModel(entry.label, entry.location, FAMILY_NAMES.get(family, ""), kind, size, SOURCE_HUB,
                              size is not None, True, entry, entry.location if size is not None else "")
    path = Path(entry.location)
    folder = entry.kind.endswith("folder")
    if entry.is_controlnet:
        kind = "ControlNet"
    elif folder:
        family, inpaint = pipeline_facts(path, family)
        kind = "inpainting" if inpaint else "base"
    else:
        family, inpaint = checkpoint_facts(path, family, entry.label)
        kind = "inpainting" if inpaint else "base"
    size = (folder_size(path) if path.is_dir() else None) if folder else file_size(path)
    repo_id = cache.repo_of(path)
    return InstalledModel(entry.label, entry.location, FAMILY_NAMES.get(family, ""), kind, size,
                          SOURCE_FOLDER if folder else SOURCE_FILE, bool(repo_id), True, entry, repo_id)


def checkpoint_facts(path: Path, family: str, label: str = "") -> tuple[str, bool]:
    """(family, inpainting) of a single file: its header's UNet input channels; a pickled or unreadable file
    by what its name and label say."""
    if path.suffix.lower() == ".safetensors":
        try:
            tensors = read_safetensors_header(path).tensors
        except EngineError:
            tensors = {}
        if UNET_IN in tensors:
            shape = tensors[UNET_IN].shape
            if not family:
                family = "sdxl" if any(k.startswith("conditioner.embedders.1.") for k in tensors) else \
                    "sd2" if any(k.startswith("cond_stage_model.model.") for k in tensors) else "sd1"
            return family, len(shape) > 1 and shape[1] == 9
    return family, "inpaint" in f"{path.name} {label}".lower()


def pipeline_facts(folder: Path, family: str = "") -> tuple[str, bool]:
    """(family, inpainting) of a diffusers pipeline folder from its unet/config.json; (family, False) when it
    cannot be read."""
    try:
        unet = read_json(folder / "unet" / "config.json")
    except EngineError:
        return family, False
    if not family:                      # as model_files.inspect_folder tells them
        family = "sdxl" if unet.get("addition_embed_type") == "text_time" else \
            "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
    return family, unet.get("in_channels") == 9


def _controlnet_family(config: dict) -> str:
    """As control.inspect_controlnet tells them; "" for an unusual cross-attention width."""
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    width = config.get("cross_attention_dim", 768)
    width = width[0] if isinstance(width, list) and width else width
    return WIDTH_FAMILIES.get(width, "") if isinstance(width, int) else ""


def _loras(styles: Iterable, cache: _HubCache) -> list[InstalledModel]:
    from app.editor.model_scan import lora_family

    users: dict[str, list[str]] = {}
    for style in styles:
        if getattr(style, "lora", None):
            users.setdefault(str(Path(style.lora)), []).append(style.name)
    found = []
    for location, names in users.items():
        path = Path(location)
        try:
            header = read_safetensors_header(path)
            family = lora_family(header.tensors, header.metadata)
        except EngineError:
            family = ""
        repo_id = cache.repo_of(path)
        found.append(InstalledModel(path.name, location, FAMILY_NAMES.get(family, ""), "LoRA", file_size(path),
                                    SOURCE_FILE, bool(repo_id), False, None, repo_id, tuple(names)))
    return found


def _cached_repo(repo, recommended: dict) -> InstalledModel | None:
    """A cache repo the list does not name, if it is of a kind the app uses."""
    from app.engine.annotators import model_kind

    kind, family = recommended.get(repo.repo_id, ("", ""))
    if repo.repo_id in TAESD_FAMILIES:
        kind, family = "preview decoder", TAESD_FAMILIES[repo.repo_id]
    snapshot = _best_snapshot(repo)
    if snapshot is not None and (snapshot / "model_index.json").is_file():
        family, inpaint = pipeline_facts(snapshot, family)
        kind = "inpainting" if inpaint else "base"
    elif snapshot is not None and (snapshot / "config.json").is_file():
        try:
            config = read_json(snapshot / "config.json")
        except EngineError:
            config = {}
        name = config.get("_class_name")
        if name in ("ControlNetModel", "ControlNetUnionModel"):
            kind, family = "ControlNet", family or _controlnet_family(config)
        elif name == "AutoencoderTiny":
            kind = "preview decoder"
        elif name == "AutoencoderKL":
            kind = "VAE"
        elif model_kind(config) is not None:
            kind = "annotator"
    if not kind:
        return None
    return InstalledModel(repo.repo_id, repo.repo_id, FAMILY_NAMES.get(family, ""), kind, repo.size_on_disk,
                          SOURCE_HUB, True, False, None, repo.repo_id)


def file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size if Path(path).is_file() else None
    except OSError:
        return None


def folder_size(folder: Path) -> int:
    """The bytes of the files under `folder`, each counted once (a linked file by its target's size); links
    to folders are not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                info = os.stat(os.path.join(parent, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def format_size(size: int | None) -> str:
    """Decimal units, as the Hub and the welcome page give sizes; "—" for an unknown size."""
    from app.engine.hub_download import describe_bytes

    return "—" if size is None else describe_bytes(size)


# -- deleting ----------------------------------------------------------------------------------------------

def delete_plan(model: InstalledModel, cache_dir=None) -> DeletePlan:
    """What deleting `model` from disk would remove; `problem` says why nothing can be."""
    root = _cache_root(cache_dir)
    if model.source == SOURCE_SERVER:
        return DeletePlan(model, problem=f"{model.name} is on the ComfyUI server, not on this disk: remove it from "
                                         "the list instead")
    notes: tuple[str, ...] = ()
    if model.used_by:
        styles = ", ".join(model.used_by)
        notes = (f"Styles that use this LoRA ({styles}) will say it is missing.",)
    repo_id = model.repo_id or (model.location if model.source == SOURCE_HUB else "")
    if repo_id:
        folder = _repo_folder(root, repo_id)
        if not folder.is_dir() or folder.is_symlink():
            return DeletePlan(model, problem=f"{repo_id} is not in the Hugging Face cache {root}: there is nothing "
                                             "on disk to delete")
        kept = _links_out_of(folder, root)
        if kept:
            notes += (f"{kept} of its files link to files outside the cache; those files are kept.",)
        size = model.size_on_disk if model.source == SOURCE_HUB and model.on_disk else folder_size(folder)
        return DeletePlan(model, (folder,), (), repo_id, size, notes)
    path = Path(model.location)
    if not path.exists() and not path.is_symlink():
        return DeletePlan(model, problem=f"{path} is not on disk any more: there is nothing to delete")
    problem = _unsafe_to_delete(path, root)
    if problem:
        return DeletePlan(model, problem=problem)
    size = folder_size(path) if path.is_dir() else (file_size(path) or 0)
    return DeletePlan(model, (path,), (path,), "", size, notes)


def _unsafe_to_delete(path: Path, root: Path) -> str:
    """Why `path` must not be removed as a model ("" when it may): a link to a folder, the home folder, a
    folder holding the Hugging Face cache, a top-level folder."""
    if path.is_dir() and path.is_symlink():
        return f"{path} is a link to a folder; delete the folder it leads to yourself"
    resolved = path.resolve()
    home = Path.home().resolve()
    if len(resolved.parts) <= 2 or resolved == home or resolved in home.parents:
        return f"{resolved} is not deleted: it is not a model's own file or folder"
    if resolved == root or resolved in root.parents:
        return f"{resolved} holds the Hugging Face cache; it is not deleted"
    return ""


def _links_out_of(folder: Path, root: Path) -> int:
    count = 0
    for parent, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            path = Path(parent) / name
            if path.is_symlink() and root not in path.resolve().parents:
                count += 1
    return count


def delete_from_disk(model: InstalledModel, library=None, cache_dir=None) -> DeletePlan:
    """Delete `model`'s files as delete_plan(model) says, then forget it in `library`; the plan carried out.
    EngineError in one line when it cannot be deleted (the list is then left as it was)."""
    plan = delete_plan(model, cache_dir)
    if plan.problem:
        raise EngineError(plan.problem)
    if plan.repo_id:
        _delete_repo(plan.repo_id, plan.paths[0], _cache_root(cache_dir))
    else:
        path = plan.paths[0]
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            raise EngineError(f"could not delete {path}: {exc.strerror or exc}") from None
    if library is not None:
        for entry in library.entries() + library.controlnets():
            if entry.location == model.location or _removed_with(entry, plan):
                library.remove(entry.location)
    return plan


def _removed_with(entry: ModelEntry, plan: DeletePlan) -> bool:
    """True when `plan` deleted what `entry` names (a repo, or a path inside what was removed)."""
    if entry.kind.endswith("repo"):
        return bool(plan.repo_id) and entry.location == plan.repo_id
    if entry.kind == "server":
        return False
    path = Path(entry.location)
    return any(path == removed or removed in path.parents for removed in plan.paths)


def _delete_repo(repo_id: str, folder: Path, root: Path) -> None:
    """Remove a cache repo through huggingface_hub (its snapshots, refs and blobs), then what it left."""
    import huggingface_hub

    try:
        info = huggingface_hub.scan_cache_dir(root)
        repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
        if repo is not None and repo.revisions:
            strategy = info.delete_revisions(*(rev.commit_hash for rev in repo.revisions))
            # Revisions are picked by hash from every repo: one another repo shares must not take it along.
            touched = set(strategy.repos) | set(strategy.snapshots) | set(strategy.refs) | set(strategy.blobs)
            if all(path == folder or folder in path.parents for path in touched):
                strategy.execute()
            else:
                log.warning("another cached repo shares a revision of %s; removing only its folder", repo_id)
    except Exception as exc:  # noqa: BLE001 - a damaged cache: the folder is removed below all the same
        log.warning("huggingface_hub could not delete %s (%s); removing its folder", repo_id, type(exc).__name__)
    try:
        if folder.exists():
            shutil.rmtree(folder)          # never follows links: they are removed, not what they lead to
    except OSError as exc:
        raise EngineError(f"could not delete {folder}: {exc.strerror or exc}") from None
