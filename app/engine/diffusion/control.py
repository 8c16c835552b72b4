"""ControlNets: loading them safely beside a model, and their residuals in the denoising loop.

A ControlNet comes as a diffusers folder (config.json + diffusion_pytorch_model.safetensors), a single file
(the original `control_model.*` layout of SD 1.x files, or diffusers names as most SDXL files have), loaded
with the config shipped for the model's family in resources/models/controlnet-*, or a Hugging Face repo id.
It must be of the model's family: its cross-attention width and its added conditioning match the UNet's.
An SDXL union ControlNet (ControlNetUnionModel, a folder or repo id) runs each control in its kind's mode.

In the loop every active ControlNet sees the UNet's (4-channel, scaled) latents, the text embeddings and its
control image, and its down- and mid-block residuals are summed and added to the UNet's, as diffusers'
ControlNet pipelines do: guess mode gives the ControlNet the conditional half only (zeros for the rest), and
its weight times "is this step inside [start, end]" is its conditioning scale. A ControlNet whose scale is 0
at a step is not run, so a weight of 0, or a range outside the run, is exactly no ControlNet.
"""
from __future__ import annotations

import logging
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.engine.diffusion.config_folder import MAX_CONFIG_BYTES, check_part_config
from app.engine.diffusion.model_files import (
    CONFIG_ROOT, PICKLE_SUFFIXES, SAFE_SUFFIXES, check_weight_dtypes, check_weight_sizes, read_checkpoint_tensors,
    read_json, refused_pickle, short_error,
)
from app.engine.events import EngineError
from app.engine.model_ids import looks_like_repo_id

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]

MAX_CONTROLNET_BYTES = 16 << 30          # an SDXL ControlNet in F32 is 5 GB; union ones a little more
FAMILY_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
SHIPPED_CONFIGS = {"sd1": "controlnet-sd15", "sdxl": "controlnet-sdxl"}
DOWNLOAD_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors",
                     "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model-*.safetensors"]
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
CLASSES = ("ControlNetModel", "ControlNetUnionModel")
# A union ControlNet's mode for each kind (xinsir/controlnet-union-sdxl-1.0 and its promax, as diffusers'
# union pipelines number them: openpose, depth, hed/pidi/scribble, canny/lineart/mlsd, normal, segment, tile,
# repaint).
UNION_MODES = {"pose": 0, "depth": 1, "scribble": 2, "softedge": 2, "canny": 3, "lineart": 3, "normal": 4,
               "tile": 6, "inpaint": 7}


@dataclass
class ActiveControl:
    """One ControlNet of a pass: its model, its control image as a tensor and when and how much it guides."""
    net: Any                    # diffusers ControlNetModel
    image: Any                  # (1, 3, H, W) float tensor: [0, 1], or -1 where the inpaint ControlNet fills
    weight: float
    start: float
    end: float
    guess_mode: bool = False
    dtype: Any = None           # the net's (diffusers finds it by walking every module: read it once)
    union_mode: int | None = None   # a union ControlNet: the mode of this control's kind

    def __post_init__(self) -> None:
        if self.dtype is None:
            self.dtype = self.net.dtype

    def scale_at(self, index: int, count: int) -> float:
        """The conditioning scale at step `index` of `count`: the weight inside [start, end], else 0 (as
        diffusers' controlnet_keep)."""
        outside = index / count < self.start or (index + 1) / count > self.end
        return 0.0 if outside else self.weight


@contextmanager
def embeddings_made_once(controls: list[ActiveControl]):
    """Within it, each ControlNet embeds a control image once, not on every step: the embedding depends on
    the image alone, and the image is one image expanded over the batch (rows identical by construction)."""
    wrapped = []
    for net in {id(c.net): c.net for c in controls}.values():
        module = net.controlnet_cond_embedding
        original, made = module.forward, {}

        def forward(cond, original=original, made=made):
            if cond.shape[0] > 1 and cond.stride(0) != 0:
                return original(cond)                          # distinct rows: nothing to share
            key = (cond.data_ptr(), cond.dtype, cond.device, tuple(cond.shape[1:]))
            if key not in made:
                made[key] = original(cond[:1])
            return made[key].expand(cond.shape[0], *made[key].shape[1:])
        module.forward = forward
        wrapped.append(module)
    try:
        yield
    finally:
        for module in wrapped:
            del module.forward                                  # the class's own again


def union_mode_for(net, kind: str) -> int | None:
    """The mode a union ControlNet runs a `kind` control in (None for a plain ControlNet); EngineError when
    it has none for that kind."""
    if type(net).__name__ != "ControlNetUnionModel":
        return None
    mode = UNION_MODES.get(kind)
    if mode is None or mode >= int(net.config.num_control_type):
        raise EngineError(f"this union ControlNet has no {kind} mode")
    return mode


def control_residuals(controls: list[ActiveControl], model_input, t, embeddings, added, batch: int,
                      guided: bool, index: int, count: int):
    """(down residuals, mid residual) of every ControlNet active at this step, summed; (None, None) when
    none is."""
    import torch

    down, mid = None, None
    for control in controls:
        scale = control.scale_at(index, count)
        if scale == 0.0:
            continue
        guess = control.guess_mode or bool(getattr(control.net.config, "global_pool_conditions", False))
        half = guess and guided                         # the conditional half only
        sample = model_input[batch:] if half else model_input
        hidden = embeddings[batch:] if half else embeddings
        extra = None if added is None else {k: (v[batch:] if half else v) for k, v in added.items()}
        dtype = control.dtype
        image = control.image.to(device=sample.device, dtype=dtype).expand(sample.shape[0], -1, -1, -1)
        if control.union_mode is None:
            d, m = control.net(sample.to(dtype), t, encoder_hidden_states=hidden, controlnet_cond=image,
                               conditioning_scale=scale, guess_mode=guess, added_cond_kwargs=extra,
                               return_dict=False)
        else:
            kinds = torch.zeros((sample.shape[0], control.net.config.num_control_type), dtype=hidden.dtype,
                                device=sample.device)
            kinds[:, control.union_mode] = 1
            d, m = control.net(sample.to(dtype), t, encoder_hidden_states=hidden, controlnet_cond=[image],
                               control_type=kinds, control_type_idx=[control.union_mode], conditioning_scale=scale,
                               guess_mode=guess, added_cond_kwargs=extra, return_dict=False)
        if half:
            d = [torch.cat([torch.zeros_like(r), r]) for r in d]
            m = torch.cat([torch.zeros_like(m), m])
        if down is None:
            down, mid = list(d), m
        else:
            down = [a + b for a, b in zip(down, d)]
            mid = mid + m
    return down, mid


# -- loading --------------------------------------------------------------------------------------------

def load_controlnets(model, controls, progress: Progress | None = None) -> list:
    """The ControlNet of each control, loaded beside the model. A job with ControlNets first drops those an
    earlier job left that it does not use, so only its own take memory; a job without any keeps them (a Fill
    with and one without a ControlNet, one after the other, read it from disk once)."""
    cache = model.extra.setdefault("controlnets", {})
    wanted = {(c.model, c.model_config) for c in controls}
    for key in [key for key in cache if controls and key not in wanted]:
        del cache[key]
    return [load_controlnet(model, c.model, c.model_config, progress) for c in controls]


def load_controlnet(model, location: str, config: str = "", progress: Progress | None = None):
    """The ControlNet at `location` for `model` (loaded once per model: kept in model.extra), on the model's
    device and precision; EngineError in one line when it is missing, damaged or of another family."""
    progress = progress or (lambda message, fraction: None)
    cache = model.extra.setdefault("controlnets", {})
    key = (location, config)
    if key in cache:
        return cache[key]
    try:
        net = _load(model, location, config, progress)
    except EngineError:
        raise
    except pickle.UnpicklingError:
        raise EngineError(refused_pickle(f"the ControlNet {Path(location).name}")) from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        from app.engine.diffusion.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        log.warning("could not load the ControlNet %s", location, exc_info=exc)
        raise EngineError(f"could not load the ControlNet {Path(location).name}: {short_error(exc)}") from None
    check_family(net.config, model, _shown(location))
    net.eval()
    net.requires_grad_(False)
    if model.plan.attention_slicing or model.extra.get("memory_savers"):
        net.set_attention_slice("auto")
    if not model.plan.offload:
        net.to(model.plan.device)
    cache[key] = net
    return net


def _load(model, location: str, config: str, progress: Progress):
    import diffusers

    path = Path(location).expanduser()
    dtype = model.plan.dtype
    if path.is_dir():
        return _load_folder(path, model, progress)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise EngineError(f"{path.name}: not a ControlNet file (expected .safetensors)")
        folder = _single_file_config(path, config, model)
        progress(f"loading the ControlNet {path.name}", -1)
        try:
            return diffusers.ControlNetModel.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                              torch_dtype=dtype)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            from app.engine.diffusion.devices import is_out_of_memory

            if is_out_of_memory(exc):
                raise
            raise EngineError(f"the ControlNet {path.name} does not fit the config {folder.name}: "
                              f"{short_error(exc, 100)}") from None
    if looks_like_repo_id(location):
        return _load_folder(_download(location, progress), model, progress, location)
    raise EngineError(f"ControlNet not found: {location}")


def _load_folder(folder: Path, model, progress: Progress, name: str = ""):
    import diffusers

    dtype = model.plan.dtype
    name = name or folder.name
    if not (folder / "config.json").is_file():
        raise EngineError(f"{name} is not a diffusers ControlNet folder (no config.json)")
    config = controlnet_config(folder, name)
    check_family(config, model, name)                                  # before any weights are read
    weights = folder / "diffusion_pytorch_model.safetensors"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if not weights.is_file() and not index.is_file():
        pickled = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        raise EngineError(f"{name} holds no diffusion_pytorch_model.safetensors"
                          + (f" (only {pickled[0]}, which is never unpickled: get the .safetensors weights)"
                             if pickled else ""))
    if weights.is_file():
        tensors = read_checkpoint_tensors(weights)
        check_weight_dtypes(tensors, f"{name}/{weights.name}", lambda key: "ControlNet")
        check_weight_sizes(tensors, name, lambda key: "ControlNet", (MAX_CONTROLNET_BYTES, MAX_CONTROLNET_BYTES),
                           "ControlNet")
    progress(f"loading the ControlNet {name}", -1)
    kind = getattr(diffusers, config.get("_class_name", "ControlNetModel"))     # one of CLASSES, checked
    return kind.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, use_safetensors=True)


def controlnet_config(folder: Path, name: str) -> dict:
    """The ControlNet config.json of `folder`, read within bounds and checked; EngineError otherwise."""
    config = read_json(folder / "config.json", MAX_CONFIG_BYTES)
    kind = config.get("_class_name", "ControlNetModel")
    if kind not in CLASSES:
        raise EngineError(f"{name} is a {kind!s:.60}, not a ControlNet")
    check_part_config("unet", config, f"{name}/config.json")
    embedding = config.get("conditioning_embedding_out_channels", [16, 32, 96, 256])
    if not (isinstance(embedding, list) and 1 <= len(embedding) <= 8
            and all(type(c) is int and 1 <= c <= 4096 for c in embedding)):
        raise EngineError(f"{name}/config.json gives conditioning_embedding_out_channels the value "
                          f"{str(embedding)[:60]}; it must be a list of at most 8 whole numbers from 1 to 4096")
    if config.get("in_channels", 4) != 4:
        raise EngineError(f"{name}: a ControlNet with {config.get('in_channels')} input channels is not supported")
    return config


def _single_file_config(path: Path, config: str, model) -> Path:
    """The config folder a single-file ControlNet loads with: `config`, else the one shipped for the model's
    family; the file's tensors are read (a header, or weights_only) and checked first."""
    tensors = read_checkpoint_tensors(path)
    check_weight_dtypes(tensors, path.name, lambda key: "ControlNet")
    check_weight_sizes(tensors, path.name, lambda key: "ControlNet", (MAX_CONTROLNET_BYTES, MAX_CONTROLNET_BYTES),
                       "ControlNet")
    if not any("controlnet_cond_embedding" in key or "input_hint_block" in key for key in tensors):
        raise EngineError(f"{path.name} is not a ControlNet (it has no control-image embedding)")
    if any(key.endswith("task_embedding") for key in tensors):
        raise EngineError(f"{path.name} is a union ControlNet: add its diffusers folder (or repo id), which "
                          "says how it is built")
    width = next((info.shape[1] for key, info in sorted(tensors.items())
                  if key.endswith("attn2.to_k.weight") and len(info.shape) == 2), None)
    expected = int(_width(model.unet.config.cross_attention_dim))
    if width is not None and width != expected:
        raise EngineError(f"the ControlNet {path.name} is for {_family_of_width(width)}; the model "
                          f"{model.name} is {FAMILY_NAMES.get(model.family, model.family)}")
    if config:
        folder = Path(config).expanduser()
    elif model.family in SHIPPED_CONFIGS:
        folder = CONFIG_ROOT / SHIPPED_CONFIGS[model.family]
    else:
        raise EngineError(f"no ControlNet config ships for {FAMILY_NAMES.get(model.family, model.family)}: give "
                          f"the config folder of {path.name} (its config.json) as the ControlNet's config")
    controlnet_config(folder, f"config folder {folder.name}")
    return folder


def check_family(config, model, shown: str) -> None:
    """EngineError when the ControlNet (its config) is not of `model`'s family."""
    value = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    width = _width(value("cross_attention_dim", 1280))
    expected = _width(model.unet.config.cross_attention_dim)
    xl = value("addition_embed_type") == "text_time"
    if width != expected or xl != model.is_xl:
        what = "SDXL" if xl else _family_of_width(width)
        raise EngineError(f"the ControlNet {shown} is for {what}; the model {model.name} is "
                          f"{FAMILY_NAMES.get(model.family, model.family)}")


def _width(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _family_of_width(width: int) -> str:
    return FAMILY_WIDTHS.get(width, f"a model with cross-attention width {width}")


def _shown(location: str) -> str:
    return location if looks_like_repo_id(location) and not Path(location).exists() else Path(location).name


def _download(repo_id: str, progress: Progress) -> Path:
    from app.engine.diffusion.model_loader import fetch_snapshot

    return fetch_snapshot(repo_id, DOWNLOAD_PATTERNS, progress, "ControlNet")


# -- what a ControlNet is, without loading it ----------------------------------------------------------------

CONTROL_NAME_HINTS = (("inpaint", "inpaint"), ("canny", "canny"), ("depth", "depth"), ("scribble", "scribble"),
                      ("lineart", "lineart"), ("softedge", "softedge"), ("hed", "softedge"), ("normal", "normal"),
                      ("openpose", "pose"), ("pose", "pose"), ("tile", "tile"), ("blur", "tile"))


@dataclass(frozen=True)
class ControlNetInfo:
    family: str            # "sd1", "sd2" or "sdxl"; "" for an unusual width (checked against the model on use)
    control: str           # the control kind its name says ("canny", ...), "" when it does not say
    kind: str              # "file", "folder" or "repo"
    location: str

    @property
    def label(self) -> str:
        name = self.location if self.kind == "repo" else Path(self.location).name
        what = f" ({self.control})" if self.control else ""
        family = f"{FAMILY_NAMES[self.family]} " if self.family in FAMILY_NAMES else ""
        return f"{name} — {family}ControlNet{what}"


def control_kind_of(name: str) -> str:
    """The control kind a ControlNet's name says (control_v11p_sd15_canny: canny), "" when none."""
    lowered = name.lower()
    return next((kind for hint, kind in CONTROL_NAME_HINTS if hint in lowered), "")


def inspect_controlnet(location: str) -> ControlNetInfo:
    """Family and kind of the ControlNet at `location` from its config or its tensors' shapes (no weights are
    read); a repo id is taken as it is, its family from its name. EngineError in one line otherwise."""
    text = location.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EngineError(f"{path.name} is not a diffusers ControlNet folder (no config.json)")
        config = controlnet_config(path, path.name)
        xl = config.get("addition_embed_type") == "text_time"
        width = _width(config.get("cross_attention_dim", 768))
        family = "sdxl" if xl else {768: "sd1", 1024: "sd2"}.get(width, "")
        return ControlNetInfo(family, control_kind_of(path.name), "folder", str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise EngineError(f"{path.name}: not a ControlNet file (expected .safetensors)")
        tensors = read_checkpoint_tensors(path)
        if not any("controlnet_cond_embedding" in key or "input_hint_block" in key for key in tensors):
            raise EngineError(f"{path.name} is not a ControlNet (it has no control-image embedding)")
        check_weight_dtypes(tensors, path.name, lambda key: "ControlNet")
        xl = any(key.endswith("add_embedding.linear_1.weight") or "label_emb" in key for key in tensors)
        width = next((info.shape[1] for key, info in sorted(tensors.items())
                      if key.endswith("attn2.to_k.weight") and len(info.shape) == 2), 768)
        family = "sdxl" if xl else {768: "sd1", 1024: "sd2"}.get(width, "")
        return ControlNetInfo(family, control_kind_of(path.name), "file", str(path.resolve()))
    if looks_like_repo_id(text):
        family = "sdxl" if "xl" in text.lower() else ("sd2" if "sd21" in text.lower() else "sd1")
        return ControlNetInfo(family, control_kind_of(text), "repo", text)
    raise EngineError(f"ControlNet not found: {text}")
