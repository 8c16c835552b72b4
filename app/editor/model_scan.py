"""Models ▸ Manage Models ▸ Add Folder…: what each .safetensors file in a folder is, told by its tensor names.

Qt-free, and slow enough on a folder of large files (each header is read and checked against the config it
would load with) that the window calls it on a worker thread. No weights are read and nothing is unpickled:
headers go through the bounded reader, and pickled checkpoints (.ckpt, .pt, .bin) are not scanned.

The folder's own files are scanned, and those one level down. A subfolder holding a model_index.json or a
config.json is one diffusers model (a pipeline or a ControlNet) and is checked as a whole, as Add Model…
would check it; so is the chosen folder itself when it is one.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.editor.model_library import ModelEntry, describe_controlnet, describe_model
from app.engine.diffusion.model_files import (CONFIG_ROOT, UNET_IN, identify_checkpoint, inspect_checkpoint,
                                              inspect_folder)
from app.engine.diffusion.safetensors_header import TensorInfo, read_safetensors_header
from app.engine.events import EngineError, first_line

log = logging.getLogger(__name__)

MAX_FILES = 500                  # more than any model folder holds; the rest are counted, not scanned
FAMILY_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}       # cross-attention width of a UNet
SD2_VARIANTS = {"base": "sd2-base", "v": "sd2-v"}
SD2_LABELS = {"base": "SD 2.x base (512 px)", "v": "SD 2.x v-model (768 px)"}
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k.*(lora_down|lora_A)")
_VAE_PREFIXES = ("encoder.down", "decoder.up", "decoder.conv_in", "encoder.conv_in", "first_stage_model.encoder.")


@dataclass(frozen=True)
class FoundModel:
    """One file (or diffusers folder) of a scanned folder and what it is."""
    path: Path
    kind: str                   # "base", "inpainting", "ControlNet", "LoRA", "VAE"; "" for no model this app uses
    family: str = ""            # "sd1", "sd2", "sdxl"; "" when unknown
    reason: str = ""            # why it is not added, in one line ("" when it is)
    entry: ModelEntry | None = None     # what the model list gets; None when nothing is added
    asks_variant: bool = False  # an SD 2.x file whose keys cannot tell base (epsilon, 512) from v (768)

    @property
    def addable(self) -> bool:
        return self.entry is not None

    def with_variant(self, variant: str) -> FoundModel:
        """This SD 2.x file as the base ("base") or v-model ("v") the user says it is: the config it loads
        with is remembered in its entry."""
        if self.entry is None or variant not in SD2_VARIANTS:
            raise ValueError(f"no SD 2.x variant {variant!r} for {self.path.name}")
        entry = replace(self.entry, config=str(CONFIG_ROOT / SD2_VARIANTS[variant]),
                        label=f"{self.path.name} — {SD2_LABELS[variant]}")
        return replace(self, entry=entry, asks_variant=False)


@dataclass
class ScanResult:
    folder: Path
    found: list[FoundModel] = field(default_factory=list)
    problem: str = ""           # the folder itself could not be scanned ("" when it could)
    not_scanned: int = 0        # .safetensors files over MAX_FILES

    @property
    def addable(self) -> list[FoundModel]:
        return [item for item in self.found if item.addable]

    @property
    def left_out(self) -> list[FoundModel]:
        return [item for item in self.found if not item.addable]

    @property
    def asking(self) -> list[FoundModel]:
        """The SD 2.x files the user is asked about (base or v-model) before they are added."""
        return [item for item in self.found if item.asks_variant and item.addable]

    def summary(self) -> str:
        if self.problem:
            return self.problem
        found = len(self.found)
        text = f"{self.folder.name}: {found} file{'s' if found != 1 else ''} scanned, {len(self.addable)} usable"
        if self.not_scanned:
            text += f"; {self.not_scanned} more were not scanned (at most {MAX_FILES} at a time)"
        return text


def scan_folder(folder: Path | str) -> ScanResult:
    """What each .safetensors file in `folder` (and one level down) is; never raises for a file it cannot use,
    which is listed with the one-line reason."""
    folder = Path(folder).expanduser()
    result = ScanResult(folder)
    if not folder.is_dir():
        result.problem = f"{folder} is not a folder"
        return result
    if _is_diffusers_folder(folder):
        result.found.append(identify_folder(folder))
        return result
    try:
        candidates = _candidates(folder)
    except OSError as exc:
        result.problem = f"could not read the folder {folder.name}: {exc.strerror or exc}"
        return result
    files = 0
    for path in candidates:
        if path.is_file():
            files += 1
            if files > MAX_FILES:
                result.not_scanned += 1
                continue
        try:
            result.found.append(identify_folder(path) if path.is_dir() else identify_file(path))
        except Exception as exc:  # noqa: BLE001 - one file's bug must not lose the others: one line, logged
            log.error("scanning %s failed", path, exc_info=exc)
            result.found.append(FoundModel(path, "", reason=f"{path.name}: could not be checked (internal error: "
                                                            f"{type(exc).__name__}: {first_line(exc)})"))
    return result


def _candidates(folder: Path) -> list[Path]:
    """The .safetensors files of `folder` and its subfolders, and its subfolders that are diffusers models,
    in name order. Hidden entries and links to folders are skipped (a link could lead anywhere)."""
    found: list[Path] = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and not child.is_symlink():
            if _is_diffusers_folder(child):
                found.append(child)
                continue
            try:
                inner = sorted(child.iterdir(), key=lambda p: p.name.lower())
            except OSError:
                continue
            found += [p for p in inner if _is_safetensors(p)]
        elif _is_safetensors(child):
            found.append(child)
    return found


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors" and not path.name.startswith(".") and path.is_file()


def _is_diffusers_folder(folder: Path) -> bool:
    """A diffusers pipeline (model_index.json) or one diffusers model (config.json beside its weights)."""
    if (folder / "model_index.json").is_file():
        return True
    return (folder / "config.json").is_file() and any(folder.glob("diffusion_pytorch_model*.safetensors"))


def identify_folder(folder: Path) -> FoundModel:
    """A diffusers pipeline folder or ControlNet folder, checked as Add Model… checks it."""
    if (folder / "model_index.json").is_file():
        try:
            entry = describe_model(str(folder))
        except EngineError as exc:
            return FoundModel(folder, "", reason=first_line(exc))
        _family, inpaint = inspect_folder(folder)
        return FoundModel(folder, "inpainting" if inpaint else "base", entry.family, entry=entry)
    try:
        entry = describe_controlnet(str(folder))
    except EngineError as exc:
        return FoundModel(folder, "", reason=f"{folder.name}: not a model this app uses ({first_line(exc)})")
    return FoundModel(folder, "ControlNet", entry.family, entry=entry)


def identify_file(path: Path) -> FoundModel:
    """What the .safetensors file `path` is, from its header; a checkpoint is also checked against the
    config it loads with, so that what is added is what a job can load."""
    try:
        header = read_safetensors_header(path)
    except EngineError as exc:
        return FoundModel(path, "", reason=first_line(exc))
    tensors = header.tensors
    if UNET_IN in tensors:
        return _checkpoint(path)
    if any("controlnet_cond_embedding" in key or "input_hint_block" in key for key in tensors):
        try:
            entry = describe_controlnet(str(path))
        except EngineError as exc:
            return FoundModel(path, "ControlNet", reason=first_line(exc))
        return FoundModel(path, "ControlNet", entry.family, entry=entry)
    if any("lora_" in key or ".lora_down." in key or ".lora_A." in key for key in list(tensors)[:2000]):
        return FoundModel(path, "LoRA", lora_family(tensors, header.metadata),
                          reason=f"{path.name} is a LoRA: it is used through a style (Styles ▸ Learn a style…, or "
                                 "a style's \"lora\" in your styles file), not as a model")
    if any(key.startswith(_VAE_PREFIXES) for key in list(tensors)[:2000]):
        return FoundModel(path, "VAE", reason=f"{path.name} is a VAE on its own; Latent Canvas uses the VAE "
                                              "inside each model")
    try:
        identify_checkpoint(tensors, lambda key: tensors[key].shape if key in tensors else None, path.name)
    except EngineError as exc:
        return FoundModel(path, "", reason=first_line(exc))
    return FoundModel(path, "", reason=f"{path.name}: not a model this app uses")


def _checkpoint(path: Path) -> FoundModel:
    try:
        info = inspect_checkpoint(path)
    except EngineError as exc:
        return FoundModel(path, "", reason=first_line(exc))
    kind = "inpainting" if info.inpaint else "base"
    try:
        entry = describe_model(str(path))
    except EngineError as exc:
        return FoundModel(path, kind, info.family, reason=first_line(exc))
    asks = info.family == "sd2" and not info.inpaint and info.v_prediction is None
    return FoundModel(path, kind, info.family, entry=entry, asks_variant=asks)


def lora_family(tensors: dict[str, TensorInfo], metadata: dict[str, str]) -> str:
    """The family a LoRA is for: its kohya metadata, else the width of its UNet cross-attention keys;
    "" when neither tells."""
    version = metadata.get("ss_base_model_version", "").lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith(("sd_v1", "sd_v2")):
        return "sd2" if version.startswith("sd_v2") else "sd1"
    if any(key.startswith(("lora_te2_", "text_encoder_2.")) for key in tensors):
        return "sdxl"
    width = next((info.shape[1] for key, info in tensors.items()
                  if _CROSS_ATTENTION_KEY.search(key) and len(info.shape) >= 2), None)
    return FAMILY_WIDTHS.get(width, "") if width is not None else ""
