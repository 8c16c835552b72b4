"""What a model the user points at is, found without loading its weights or running anything in it.

A model is a diffusers folder, a single checkpoint file (.safetensors, or .ckpt/.pt/.pth/.bin read only
through torch.load(weights_only=True)) or a Hugging Face repo id. Single files are told apart by their
key names and the UNet's input channels, the way model sites' files are laid out:
  SD 1.x  cond_stage_model.transformer.*            SD 2.x  cond_stage_model.model.* (OpenCLIP)
  SDXL    conditioner.embedders.{0,1}.*             inpainting: a 9-channel first UNet convolution
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from app.engine.events import EngineError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
RESOURCES = Path(__file__).resolve().parent.parent.parent / "resources"
CONFIG_ROOT = RESOURCES / "models"
TOKENIZER_DIR = RESOURCES / "tokenizers" / "clip"


@dataclass(frozen=True)
class ModelSource:
    kind: str                 # "folder", "file" or "repo"
    location: str             # a path, or owner/name
    config: str = ""          # single files: a diffusers config folder to use instead of the shipped one

    @property
    def name(self) -> str:
        return self.location if self.kind == "repo" else Path(self.location).name


@dataclass(frozen=True)
class CheckpointInfo:
    family: str               # "sd1", "sd2" or "sdxl"
    inpaint: bool
    v_prediction: bool | None  # True/False when the file says so, None when it does not

    @property
    def config_name(self) -> str:
        """The shipped config folder for this family (resources/models/<name>)."""
        if self.family == "sd1":
            return "sd15-inpaint" if self.inpaint else "sd15"
        if self.family == "sd2":
            return "sd2-inpaint" if self.inpaint else ("sd2-base" if self.v_prediction is False else "sd2-v")
        return "sdxl-inpaint" if self.inpaint else "sdxl"

    @property
    def label(self) -> str:
        names = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}
        return names[self.family] + (" inpainting" if self.inpaint else "")


def resolve_source(text: str, config: str = "") -> ModelSource:
    """Turn what the user typed or picked into a ModelSource, or say in one line what is wrong."""
    from app.engine.registry import looks_like_repo_id

    text = text.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource("folder", str(path.resolve()))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise EngineError(f"{path.name}: not a model file (expected .safetensors, or .ckpt/.pt/.bin)")
        return ModelSource("file", str(path.resolve()), config)
    if looks_like_repo_id(text):
        return ModelSource("repo", text)
    raise EngineError(f"model not found: {text}")


# -- single files -----------------------------------------------------------------------------------

def read_checkpoint_keys(path: Path) -> tuple[list[str], Callable[[str], tuple[int, ...] | None]]:
    """The tensor names of a checkpoint and a way to ask one's shape, loading as little as possible."""
    if path.suffix.lower() in SAFE_SUFFIXES:
        return _safetensors_keys(path)
    state = load_pickled_state_dict(path)
    return list(state), lambda key: tuple(state[key].shape) if key in state else None


def _safetensors_keys(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys
                      if key == UNET_IN or key.endswith("text_projection")}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise EngineError(f"{path.name} is not a readable .safetensors file (corrupt or truncated): "
                          f"{short_error(exc)}") from None
    return keys, shapes.get


def load_pickled_state_dict(path: Path) -> dict:
    """A .ckpt/.pt/.bin state dict through torch.load(weights_only=True): plain tensors only, never code."""
    import torch

    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)   # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        raise EngineError(f"refused to load {path.name}: it holds Python objects or code, not just weights "
                          f"(ask for a .safetensors version): {short_error(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EngineError(f"{path.name} is not a readable checkpoint (corrupt or truncated): {short_error(exc)}") \
            from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise EngineError(f"{path.name} does not hold a state dict of weights")
    return data


def identify_checkpoint(keys: Iterable[str], shape_of: Callable[[str], tuple[int, ...] | None],
                        name: str) -> CheckpointInfo:
    """Which Stable Diffusion family a single file holds; EngineError names what else it is."""
    keys = list(keys)
    has = _prefix_test(keys)
    unet_in = shape_of(UNET_IN)
    if unet_in is None:
        raise EngineError(f"{name}: {_what_else(keys)}")
    if has("conditioner.embedders.1.model."):
        family = "sdxl"
    elif has("conditioner.embedders.0.model."):
        raise EngineError(f"{name} is an SDXL refiner, which cannot fill on its own; use an SDXL base or "
                          "inpainting model")
    elif has("cond_stage_model.model."):
        family = "sd2"
    elif has("cond_stage_model.transformer."):
        family = "sd1"
    else:
        raise EngineError(f"{name} has a UNet but no text encoder Latent Canvas knows "
                          "(supported: Stable Diffusion 1.x, 2.x and SDXL)")
    if not has("first_stage_model."):
        raise EngineError(f"{name} has no VAE weights (first_stage_model.*), so it cannot be used alone")
    channels = unet_in[1] if len(unet_in) > 1 else 0
    if channels not in (4, 9):
        raise EngineError(f"{name}: a UNet with {channels} input channels is not a text-to-image or "
                          "inpainting model (instruct or depth models are not supported)")
    v_prediction = True if "v_pred" in keys else None
    return CheckpointInfo(family, channels == 9, v_prediction)


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    keys, shape_of = read_checkpoint_keys(path)
    return identify_checkpoint(keys, shape_of, path.name)


def _prefix_test(keys: list[str]) -> Callable[[str], bool]:
    return lambda prefix: any(key.startswith(prefix) for key in keys)


def _what_else(keys: list[str]) -> str:
    """A one-line guess at what a file without an SD UNet is."""
    if any("lora_" in key or ".lora_down." in key or ".lora_A." in key for key in keys[:2000]):
        return "this is a LoRA, not a full model; add it to a style instead"
    if any(key.startswith(("encoder.down", "decoder.up", "decoder.conv_in")) for key in keys[:2000]):
        return "this is a VAE on its own, not a full model"
    if any(key.startswith(("down_blocks.", "conv_in.")) for key in keys[:2000]):
        return "this is one diffusers component; point at the whole diffusers folder instead"
    try:
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type

        kind = infer_diffusers_model_type(dict.fromkeys(keys))
    except Exception:  # noqa: BLE001 - the guess needs shapes for some families; then we know less
        kind = ""
    if kind and kind not in ("v1", "v2", "inpainting", "xl_base", "xl_inpaint"):
        return f"this looks like a {kind} model; Latent Canvas supports Stable Diffusion 1.x, 2.x and SDXL"
    return "not a Stable Diffusion checkpoint (no UNet weights found)"


# -- diffusers folders --------------------------------------------------------------------------------

def inspect_folder(folder: Path) -> tuple[str, bool]:
    """(family, inpaint) of a diffusers folder; EngineError names a missing or foreign component."""
    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part / "config.json").is_file():
            raise EngineError(f"{folder.name} is not a complete diffusers model: its {part}/config.json "
                              "is missing")
    unet = _read_json(folder / "unet" / "config.json")
    if unet.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise EngineError(f"{folder.name}: a {unet.get('_class_name')} model is not supported "
                          "(supported: Stable Diffusion 1.x, 2.x and SDXL)")
    channels = unet.get("in_channels", 4)
    if channels not in (4, 9):
        raise EngineError(f"{folder.name}: a UNet with {channels} input channels is not supported")
    if unet.get("addition_embed_type") == "text_time":
        if not (folder / "text_encoder_2" / "config.json").is_file():
            raise EngineError(f"{folder.name} is an SDXL refiner or incomplete: text_encoder_2 is missing")
        family = "sdxl"
    else:
        family = "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
    return family, channels == 9


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path.parent.name}/{path.name} is not valid JSON: {short_error(exc)}") from None
    if not isinstance(data, dict):
        raise EngineError(f"{path.parent.name}/{path.name} is not a JSON object")
    return data


def short_error(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
