"""What a model the user points at is, found without loading its weights or running anything in it.

A model is a diffusers folder, a single checkpoint file (.safetensors, or .ckpt/.pt/.pth/.bin read only
through torch.load(weights_only=True)) or a Hugging Face repo id. Single files are told apart by their
key names and the UNet's input channels, the way model sites' files are laid out:
  SD 1.x  cond_stage_model.transformer.*            SD 2.x  cond_stage_model.model.* (OpenCLIP)
  SDXL    conditioner.embedders.{0,1}.*             inpainting: a 9-channel first UNet convolution
A .safetensors header is read by the bounded reader of app.engine.diffusion.safetensors_header, never by the library
that loads the weights; every weight a model part loads must be floating point (`check_weight_dtypes`), and
no file may make the loader read more than a model of its family can hold (`check_weight_sizes`). Whether
a single file's tensors fit the config it loads with is model_loader.inspect_single_file's question.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from app.core.safe_files import FileTooLarge, read_bounded
from app.engine.events import EngineError
from app.engine.diffusion.safetensors_header import DTYPE_BYTES, TensorInfo, read_safetensors_header, shown_name

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
RESOURCES = Path(__file__).resolve().parents[3] / "resources"
CONFIG_ROOT = RESOURCES / "models"
TOKENIZER_DIR = RESOURCES / "tokenizers" / "clip"
MAX_JSON_BYTES = 4 << 20         # a config or a shard index (real ones: a few KB; an SDXL UNet index ~100 KB)
# The dtypes a Stable Diffusion model's weights can have (fp8 checkpoints are shared too); integers only
# for index buffers.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")
INTEGER_BUFFERS = ("position_ids", "num_batches_tracked")
SINGLE_FILE_PARTS = (("model.diffusion_model.", "UNet"), ("first_stage_model.loss.", ""),
                     ("first_stage_model.", "VAE"), ("cond_stage_model.", "text encoder"),
                     ("conditioner.embedders.", "text encoder"))
CLASS_LABELS = "class_labels.json"       # a class-conditioned model's labels (it has no text encoder)
FOLDER_PARTS = {"unet": "UNet", "vae": "VAE", "text_encoder": "text encoder",
                "text_encoder_2": "second text encoder"}
# What a file may make the loader read (from_single_file reads a checkpoint whole). The largest real tensor is
# SDXL's second text encoder's token embedding, 49,408 x 1,280: 253 MB in F32. A full-precision SDXL
# checkpoint is 14 GB, 24 GB with an F32 EMA copy of its UNet; an SD 1.x one with its EMA copy 7.7 GB. Each
# limit holds the largest real file in F64 (twice F32) with room to spare.
GIB = 1 << 30
MAX_TENSOR_BYTES = 2 * GIB
MAX_DATA_BYTES = {"sd1": 24 * GIB, "sd2": 24 * GIB, "sdxl": 64 * GIB}     # all of a single file's tensors
MAX_EXTRA_BYTES = {"sd1": 12 * GIB, "sd2": 12 * GIB, "sdxl": 32 * GIB}    # those no model part loads
MAX_PART_BYTES = {"unet": 24 * GIB, "vae": 2 * GIB, "text_encoder": 4 * GIB, "text_encoder_2": 8 * GIB}
MAX_PICKLE_BYTES = max(MAX_DATA_BYTES.values())
# torch.load's notes about a file it then refuses (an unusual pickle protocol, a TorchScript archive); the
# one line load_pickled_state_dict gives says what matters. The TorchScript note is attributed to its caller.
TORCH_LOAD_NOTES = ((r"Detected pickle protocol \d+ in the checkpoint", r"torch\."),
                    (r"'torch\.load' received a zip file that looks like a TorchScript", re.escape(__name__)))


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
    from app.engine.model_ids import looks_like_repo_id

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

def read_checkpoint_tensors(path: Path) -> dict[str, TensorInfo]:
    """The name, dtype and shape of every tensor of a checkpoint, loading as little as possible: a
    .safetensors file's header only; a pickled one through torch.load(weights_only=True)."""
    if path.suffix.lower() in SAFE_SUFFIXES:
        return read_safetensors_header(path).tensors
    return tensor_table(load_pickled_state_dict(path))


def tensor_table(state: Mapping) -> dict[str, TensorInfo]:
    """The TensorInfo of each tensor of a loaded state dict (anything else in it is left out)."""
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
             torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    return {key: TensorInfo(names.get(value.dtype, str(value.dtype).removeprefix("torch.")), tuple(value.shape))
            for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def load_pickled_state_dict(path: Path, label: str = "", limit: int = MAX_PICKLE_BYTES,
                            holder: str = "Stable Diffusion checkpoint") -> dict:
    """A .ckpt/.pt/.bin state dict through torch.load(weights_only=True): plain tensors only, never code.
    `label` names the file in messages (default: its name); a file over `limit` bytes, more than any
    `holder` takes, is refused before torch reads it (the legacy format is read whole)."""
    import torch

    name = label or path.name
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise EngineError(f"could not read {name}: {exc.strerror or exc}") from None
    if size > limit:
        raise EngineError(f"{name} cannot be used: it is {size:,} bytes; no {holder} takes more than {limit:,}")
    quiet_torch_load()
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)   # legacy (non-zip) format
    except pickle.UnpicklingError:
        raise EngineError(refused_pickle(name)) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EngineError(f"{name} is not a readable checkpoint (corrupt or truncated): {short_error(exc)}") \
            from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise EngineError(f"{name} does not hold a state dict of weights")
    return data


def quiet_torch_load() -> None:
    """Ignore TORCH_LOAD_NOTES. Added before every load rather than scoped with catch_warnings, which is not
    thread-safe (a check runs off the UI thread) and could leave a process-wide filter behind; adding the
    same filter again only moves it to the front, which also restores it after another thread's
    catch_warnings dropped it."""
    for message, module in TORCH_LOAD_NOTES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)


def refused_pickle(name: str) -> str:
    return (f"refused to load {name}: it holds Python objects or code, not just weights "
            "(ask for a .safetensors version)")


def check_weight_dtypes(tensors: Mapping[str, TensorInfo], name: str, part_of: Callable[[str], str]) -> None:
    """EngineError when a weight of a model part (`part_of(key)`: "UNet", ...; "" for what no part loads)
    is not floating point: an integer UNet would be cast and run, giving noise."""
    for key, info in tensors.items():
        if info.dtype in FLOAT_DTYPES or key.rsplit(".", 1)[-1] in INTEGER_BUFFERS:
            continue
        part = part_of(key)
        if part:
            raise EngineError(f"{name} cannot be used: its {part} weight {shown_name(key)} is {info.dtype}, but "
                              f"a Stable Diffusion model's weights are floating point ({', '.join(FLOAT_DTYPES)})")


def check_weight_sizes(tensors: Mapping[str, TensorInfo], name: str, part_of: Callable[[str], str],
                       limits: tuple[int, int], holder: str) -> None:
    """EngineError when one tensor, the tensors no model part loads (`part_of(key)` is ""), or all of them
    together (`limits`: the bounds of all, and of those) take more than any `holder` ("SDXL model", ...)."""
    total = extra = 0
    for key, info in tensors.items():
        size = math.prod(info.shape) * DTYPE_BYTES.get(info.dtype, 16)
        if size > MAX_TENSOR_BYTES:
            raise EngineError(f"{name} cannot be used: its tensor {shown_name(key)} takes {size:,} bytes; no "
                              f"Stable Diffusion model's tensor takes more than {MAX_TENSOR_BYTES:,}")
        total += size
        extra += 0 if part_of(key) else size
    if extra > limits[1]:
        raise EngineError(f"{name} cannot be used: {extra:,} bytes of its tensors belong to no model part (EMA "
                          f"copies, training state); no {holder} holds more than {limits[1]:,} of those")
    if total > limits[0]:
        raise EngineError(f"{name} cannot be used: its tensors take {total:,} bytes; no {holder} takes more "
                          f"than {limits[0]:,}")


def check_text_encoder_fits_weights(config: dict, tensors: Mapping[str, TensorInfo], name: str) -> None:
    """EngineError when a CLIP text encoder's config describes far more parameters than its weights hold:
    transformers would make up the missing ones, in memory (a config of 64 layers of 4096 beside 16 KB of
    weights asks for 51 GB)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden, inner = int(text.get("hidden_size", 512)), int(text.get("intermediate_size", 2048))
    layers = int(text.get("num_hidden_layers", 12))
    described = (int(text.get("vocab_size", 49408)) + int(text.get("max_position_embeddings", 77))) * hidden \
        + layers * (4 * hidden * hidden + 2 * hidden * inner)
    held = sum(math.prod(info.shape) for info in tensors.values())
    if described > 2 * held + 1_000_000:
        raise EngineError(f"{name} cannot be used: its config describes a text encoder of {described:,} "
                          f"parameters, but its weights hold {held:,}")


def single_file_part(key: str) -> str:
    """The model part a single file's tensor belongs to ("" for EMA copies, the VAE's training loss, ...)."""
    return next((part for prefix, part in SINGLE_FILE_PARTS if key.startswith(prefix)), "")


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
    """What a single file holds, from its header (or its pickled tensors), with its dtypes checked."""
    return inspect_tensors(read_checkpoint_tensors(path), path.name)


def inspect_tensors(tensors: Mapping[str, TensorInfo], name: str) -> CheckpointInfo:
    """What the single file `name` holds, from its tensor table, with its dtypes and sizes checked."""
    info = identify_checkpoint(tensors, lambda key: tensors[key].shape if key in tensors else None, name)
    check_weight_dtypes(tensors, name, single_file_part)
    check_weight_sizes(tensors, name, single_file_part,
                       (MAX_DATA_BYTES[info.family], MAX_EXTRA_BYTES[info.family]), f"{info.label} model")
    return info


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
    """(family, inpaint) of a diffusers folder; EngineError names a missing or foreign component, or a
    component config that is not within bounds (config_folder.check_part_config)."""
    from app.engine.diffusion.config_folder import part_config

    class_model = (folder / CLASS_LABELS).is_file()
    for part in ("unet", "vae") + (() if class_model else ("text_encoder",)):
        if not (folder / part / "config.json").is_file():
            raise EngineError(f"{folder.name} is not a complete diffusers model: its {part}/config.json "
                              "is missing")
    unet = read_json(folder / "unet" / "config.json")
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
    text_parts = () if class_model else ("text_encoder",) + (("text_encoder_2",) if family == "sdxl" else ())
    for part in ("unet", "vae") + text_parts:
        part_config(folder / part / "config.json", part, f"{folder.name}/{part}/config.json")
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        part_config(folder / "scheduler" / "scheduler_config.json", "scheduler",
                    f"{folder.name}/scheduler/scheduler_config.json")
    folder_class_labels(folder, unet)
    return family, channels == 9


def folder_class_labels(folder: Path, unet: dict | None = None) -> list[str] | None:
    """The labels of a class-conditioned model (made by `latent-canvas train-model` without a text encoder),
    in class order, from its CLASS_LABELS; None for a text-conditioned model. Its UNet has one class
    embedding per label and one more, the unconditional class; EngineError in one line otherwise."""
    unet = read_json(folder / "unet" / "config.json") if unet is None else unet
    classes = unet.get("num_class_embeds")
    if not (folder / CLASS_LABELS).is_file():
        if classes is not None:
            raise EngineError(f"{folder.name}: its UNet is class-conditioned but it has no {CLASS_LABELS} (the "
                              "prompts that pick its classes)")
        return None
    labels = read_json(folder / CLASS_LABELS).get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) and label.strip() and len(label) <= 100
                                               for label in labels):
        raise EngineError(f"{folder.name}/{CLASS_LABELS} has no list of labels (one line of text each)")
    if type(classes) is not int or classes != len(labels) + 1:
        raise EngineError(f"{folder.name}/{CLASS_LABELS} gives {len(labels)} labels, but its UNet has "
                          f"{classes if type(classes) is int else 'no'} class embeddings; it needs one per label "
                          "and one more (the unconditional class)")
    return labels


WEIGHT_VARIANTS = ("", "fp16", "bf16")       # a folder's full-precision weights first, else a variant's


def with_variant(name: str, variant: str) -> str:
    """A weight file's name in `variant` as diffusers and transformers write it: "model.fp16.safetensors",
    "model.safetensors.index.fp16.json"."""
    if not variant:
        return name
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.{variant}.{suffix}"


def check_folder_weights(folder: Path, part: str) -> bool:
    """Check the weights diffusers or transformers will load for `part` of a diffusers folder: a
    .safetensors header through the bounded reader, a pickle through torch.load(weights_only=True); every
    weight floating point. True when they are .safetensors: load with use_safetensors=True, so that no
    pickle beside them is read instead."""
    return folder_weights(folder, part)[0]


def folder_weights(folder: Path, part: str) -> tuple[bool, str]:
    """check_folder_weights, and the weight variant to load ("" for the plain files, "fp16" for a folder that
    holds only *.fp16.safetensors, as a one-variant download does)."""
    where = folder / part
    stem = "diffusion_pytorch_model" if part in ("unet", "vae") else "model"
    candidates = ((f"{stem}.safetensors", True), (f"{'pytorch_model' if stem == 'model' else stem}.bin", False))
    shown, limit = FOLDER_PARTS.get(part, part), MAX_PART_BYTES[part]
    for weights, safe in candidates:
        for variant in WEIGHT_VARIANTS:
            files = _weight_files(where, weights, f"{folder.name}/{part}", variant)
            if files:
                _check_part_files(folder, part, files, safe, shown, limit)
                return safe, variant
    raise EngineError(f"{folder.name}/{part} holds no weights ({candidates[0][0]} or {candidates[1][0]})")


def _check_part_files(folder: Path, part: str, files: list[Path], safe: bool, shown: str, limit: int) -> None:
    where = folder / part
    every: dict[str, TensorInfo] = {}
    for file in files:
        label = f"{folder.name}/{part}/{file.name}"
        tensors = read_safetensors_header(file, label).tensors if safe else \
            tensor_table(load_pickled_state_dict(file, label, limit, f"Stable Diffusion {shown}"))
        check_weight_dtypes(tensors, label, lambda key: shown)
        every.update({key if key not in every else f"{file.name}:{key}": info for key, info in tensors.items()})
    check_weight_sizes(every, f"{folder.name}/{part}", lambda key: shown, (limit, limit),
                       f"Stable Diffusion {shown}")
    if part.startswith("text_encoder"):
        from app.engine.diffusion.config_folder import part_config

        config = part_config(where / "config.json", part, f"{folder.name}/{part}/config.json")
        check_text_encoder_fits_weights(config, every, f"{folder.name}/{part}")


def _weight_files(where: Path, weights: str, shown: str, variant: str = "") -> list[Path]:
    """`weights` (in `variant`) itself, or the shards its .index.json names (plain file names beside it)."""
    if (where / with_variant(weights, variant)).is_file():
        return [where / with_variant(weights, variant)]
    index = where / with_variant(f"{weights}.index.json", variant)
    if not index.is_file():
        return []
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise EngineError(f"{shown}/{index.name} has no weight_map")
    shards = []
    for shard in sorted(set(map(str, weight_map.values()))):
        if Path(shard).name != shard or shard in (".", ".."):
            raise EngineError(f"{shown}/{index.name} names {shown_name(shard)}, which is not a file beside it")
        if not (where / shard).is_file():
            raise EngineError(f"{shown} is incomplete: {shown_name(shard)} is missing")
        shards.append(where / shard)
    return shards


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> dict:
    """A small JSON object file (a config, an index), read within `limit` bytes; EngineError otherwise."""
    shown = f"{path.parent.name}/{path.name}"
    try:
        data = json.loads(read_bounded(path, limit).decode("utf-8"))
    except FileTooLarge as exc:
        raise EngineError(f"{shown} is too large for a config ({exc})") from None
    except (OSError, ValueError, RecursionError) as exc:      # UnicodeDecodeError is a ValueError
        raise EngineError(f"{shown} is not valid JSON: {short_error(exc)}") from None
    if not isinstance(data, dict):
        raise EngineError(f"{shown} is not a JSON object")
    return data


def short_error(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
