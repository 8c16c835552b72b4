"""Which files of a Hugging Face repo a model needs: one weight variant, safetensors before pickles.

Qt-free and network-free: `choose_files` works on the file names the Hub lists, `plan_download` asks the Hub
for them (with sizes and hashes) through huggingface_hub's own API client.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from app.engine.events import EngineError

# What a model folder holds besides weights: configs, tokenizers, a scheduler, class labels.
CONFIG_NAMES = re.compile(r"(.*/)?[^/]+\.json|(.*/)?(vocab\.json|merges\.txt|spiece\.model|tokenizer\.model)")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Folders of a diffusers pipeline the editor never loads.
UNUSED_PARTS = {"safety_checker", "feature_extractor", "image_encoder"}
SKIPPED = re.compile(r"(.*/)?(\.gitattributes|README\.md|LICEN[CS]E.*)|.*\.(png|jpe?g|gif|webp|md|ckpt|pt|pth|onnx|"
                     r"onnx_data|msgpack|h5|tflite|mlmodel|gguf|pb|ot)")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema|no_ema)(?=[.-])")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
PREFERRED_VARIANTS = ("fp16", "")


class DownloadError(EngineError):
    """A download that cannot go on, in one line."""


@dataclass(frozen=True)
class HubFile:
    path: str                # in the repo, "unet/diffusion_pytorch_model.fp16.safetensors"
    size: int
    sha256: str = ""         # LFS files: the content's sha256 (the cache's blob name)
    blob_id: str = ""        # git's blob id: the cache's blob name for small files

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    commit: str
    files: tuple[HubFile, ...]
    variant: str             # "fp16", or "" for the full-precision files
    gated: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def variant_of(name: str) -> str:
    match = _VARIANT.search(posixpath.basename(name))
    return match.group(1) if match else ""


def weight_group(path: str) -> str:
    """The weights `path` is one file (or shard) of, whatever its variant: "unet/diffusion_pytorch_model"."""
    folder, name = posixpath.split(path)
    name = _VARIANT.sub("", name)
    name = _SHARD.sub("", name)
    for suffix in (".safetensors.index.json", ".bin.index.json") + WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = {"pytorch_model": "model"}.get(name, name)       # transformers' .bin and .safetensors names differ
    return posixpath.join(folder, stem)


def is_weight(path: str) -> bool:
    plain = _VARIANT.sub("", path)
    return plain.endswith(WEIGHT_SUFFIXES) or plain.endswith((".safetensors.index.json", ".bin.index.json"))


def choose_files(paths: list[str]) -> tuple[list[str], str]:
    """The files a model needs out of a repo's `paths`, and the weight variant chosen ("fp16" or "").

    A diffusers pipeline (model_index.json at the top) keeps the parts' folders only, never a single-file
    checkpoint beside them; every weight is taken in one variant, fp16 where the repo has it, safetensors
    before .bin, and .bin only where a weight has no safetensors at all."""
    pipeline = "model_index.json" in paths
    kept = [p for p in paths if not SKIPPED.fullmatch(p) and not _unused(p, pipeline)]
    configs = [p for p in kept if CONFIG_NAMES.fullmatch(p) and not is_weight(p)]
    groups: dict[str, list[str]] = {}
    for path in kept:
        if is_weight(path):
            groups.setdefault(weight_group(path), []).append(path)
    chosen_variant = ""
    weights: list[str] = []
    for files in groups.values():
        picked, variant = _pick(files)
        weights += picked
        chosen_variant = chosen_variant or variant
    return sorted(set(configs) | set(weights)), chosen_variant


def _unused(path: str, pipeline: bool) -> bool:
    if not pipeline:
        return False
    top = path.split("/", 1)
    at_top = len(top) == 1
    return (at_top and is_weight(path)) or top[0] in UNUSED_PARTS


def _pick(files: list[str]) -> tuple[list[str], str]:
    """One variant and one format of one weight's files (a shard index with its shards, or one file)."""
    for kind in (".safetensors", ".bin"):
        for variant in PREFERRED_VARIANTS:
            picked = [f for f in files if variant_of(f) == variant and kind in posixpath.basename(f)]
            if picked:
                return picked, variant
    return [], ""


# -- asking the Hub --------------------------------------------------------------------------------------

def endpoint_now(endpoint: str | None = None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def plan_download(repo_id: str, endpoint: str | None = None, token: str | bool | None = None) -> DownloadPlan:
    """Ask the Hub what `repo_id` holds and pick the files to fetch; DownloadError in one line otherwise."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint_now(endpoint), token=token)
    try:
        info = api.model_info(repo_id, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - every failure of the Hub's client becomes one line
        raise hub_error(exc, repo_id) from None
    listed = {s.rfilename: s for s in info.siblings or []}
    names, variant = choose_files(list(listed))
    if not any(is_weight(n) for n in names):
        raise DownloadError(f"{repo_id} holds no .safetensors or .bin weights the editor can load")
    files = []
    for name in names:
        sibling = listed[name]
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None or not (sibling.blob_id or lfs is not None):
            raise DownloadError(f"the Hub gave no size or hash for {repo_id}/{name}; try again later")
        files.append(HubFile(name, int(size), lfs.sha256 if lfs is not None else "", sibling.blob_id or ""))
    return DownloadPlan(repo_id, info.sha or "", tuple(files), variant, bool(info.gated))


def hub_error(exc: BaseException, repo_id: str) -> DownloadError:
    """One line for what huggingface_hub raised while asking about or fetching `repo_id`."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(exc, GatedRepoError):
        return DownloadError(gated_line(repo_id))
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)):
        return DownloadError(f"no model {repo_id} on the Hugging Face hub (or it is private: log in with "
                             "`hf auth login`)")
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(f"cannot download {repo_id}: HF_HUB_OFFLINE is set")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "")
        return DownloadError(f"the Hugging Face hub refused {repo_id} (HTTP {status}); try again later")
    from app.engine.diffusion.model_files import short_error

    return DownloadError(f"the Hugging Face hub cannot be reached for {repo_id} ({short_error(exc)}); "
                         "check the connection and try again")


def gated_line(repo_id: str) -> str:
    return (f"{repo_id} is gated: accept its terms at https://huggingface.co/{repo_id}, then log in with "
            "`hf auth login` (or set HF_TOKEN) and try again")
