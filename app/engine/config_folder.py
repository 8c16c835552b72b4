"""The diffusers config folder a single-file model is loaded with (the shipped one of its family, or one the
user gives: `--model-config DIR`, "Config folder" in Add model).

diffusers' from_single_file imports whatever module model_index.json names for a component and looks up the
class named beside it, so a folder naming ["some_installed_module", "X"] would run that module. The folder is
therefore read here first, within bounds, and only the library classes a Stable Diffusion pipeline of the
model's family uses are accepted (`check_config_folder`). The loader then gives diffusers a copy holding just
what was checked (`staged`): the validated model_index.json and the components' config files, so nothing
else in the folder (weights, code, a file changed since the check) is ever read.
"""
from __future__ import annotations

import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from app.engine.events import EngineError
from app.engine.model_files import CheckpointInfo, read_json
from app.engine.safetensors_header import shown_name

MAX_INDEX_BYTES = 64 << 10        # model_index.json (real ones: about 600 bytes)
MAX_CONFIG_BYTES = 1 << 20        # a component's config.json (a UNet's: about 2 KB)

SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler",
              "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
              "LCMScheduler", "TCDScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
TOKENIZERS = (("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast"))
ALLOWED = {
    "unet": (("diffusers", "UNet2DConditionModel"),),
    "vae": (("diffusers", "AutoencoderKL"),),
    "text_encoder": (("transformers", "CLIPTextModel"),),
    "text_encoder_2": (("transformers", "CLIPTextModelWithProjection"),),
    "tokenizer": TOKENIZERS,
    "tokenizer_2": TOKENIZERS,
    "scheduler": tuple(("diffusers", name) for name in SCHEDULERS),
    # Never loaded (the loader passes None for them), but a folder saved from a pipeline may name them.
    # CLIPFeatureExtractor is the name older folders use for what transformers now calls CLIPImageProcessor.
    "safety_checker": (("stable_diffusion", "StableDiffusionSafetyChecker"),),
    "feature_extractor": (("transformers", "CLIPImageProcessor"), ("transformers", "CLIPFeatureExtractor")),
    "image_encoder": (("transformers", "CLIPVisionModelWithProjection"),),
}
NOT_LOADED = ("safety_checker", "feature_extractor", "image_encoder")
PARTS = {"sd": ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "safety_checker", "feature_extractor",
                "image_encoder"),
         "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler",
                  "feature_extractor", "image_encoder")}
OPTIONS = {"sd": ("requires_safety_checker",),
           "sdxl": ("force_zeros_for_empty_prompt", "add_watermarker", "requires_aesthetics_score")}
REQUIRED = {"sd": ("unet", "vae", "text_encoder", "scheduler"),
            "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")}
_PLAIN = re.compile(r"[A-Za-z0-9_.]{1,100}")


@dataclass(frozen=True)
class CheckedConfig:
    path: Path                                   # the folder, resolved
    index: dict                                  # model_index.json as diffusers gets it
    configs: dict[str, dict] = field(default_factory=dict)   # "unet/config.json" -> its contents


def check_config_folder(path: Path | str, info: CheckpointInfo, model_name: str) -> CheckedConfig:
    """The config folder `path` for the single file `model_name` (a model of `info`'s family), checked;
    EngineError in one line when it is not one, describes another kind of model, or names any class but
    those the family's pipeline uses."""
    folder = Path(path).expanduser()
    if not (folder / "model_index.json").is_file():
        raise EngineError(f"{path} is not a diffusers config folder (no model_index.json)")
    folder = folder.resolve()
    where = f"config folder {folder.name}"
    index = read_json(folder / "model_index.json", MAX_INDEX_BYTES)
    unet = _config(folder, "unet/config.json", where)
    _check_family(unet, info, model_name, folder.name)
    kind = "sdxl" if info.family == "sdxl" else "sd"
    staged: dict = {key: value for key, value in index.items()
                    if key in ("_class_name", "_diffusers_version") and isinstance(value, str)}
    for key, value in index.items():
        if key.startswith("_"):
            continue                             # diffusers reads no part and no option from these
        if key in OPTIONS[kind]:
            if value is not None and not isinstance(value, bool):
                raise EngineError(f"{where}: model_index.json gives {key} the value {_shown(value)}; it must be "
                                  "true or false")
            continue
        if key not in PARTS[kind]:
            raise EngineError(f"{where}: model_index.json names {_shown(key)}, which is not a part of "
                              f"{'an SDXL' if kind == 'sdxl' else 'a Stable Diffusion'} pipeline")
        staged[key] = _checked_part(key, value, where)
    for key in REQUIRED[kind]:
        if staged.get(key, [None])[0] is None:
            raise EngineError(f"{where}: model_index.json names no {key}")
    configs = {"unet/config.json": unet}
    for key in REQUIRED[kind][1:]:
        name = f"{key}/{'scheduler_config.json' if key == 'scheduler' else 'config.json'}"
        configs[name] = _config(folder, name, where)
    return CheckedConfig(folder, staged, configs)


def _checked_part(key: str, value, where: str) -> list:
    """[library, class] as diffusers gets it: [None, None] for a part that is not loaded."""
    if value is None or value == [None, None]:
        return [None, None]
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise EngineError(f"{where}: model_index.json gives {key!r} the value {_shown(value)}, not a "
                          "[library, class] pair")
    pair = (value[0], value[1])
    if pair not in ALLOWED[key]:
        allowed = "the diffusers schedulers of Stable Diffusion pipelines" if key == "scheduler" else \
            " or ".join(".".join(p) for p in ALLOWED[key])
        raise EngineError(f"{where}: model_index.json names {_shown(pair[0])}.{_shown(pair[1])} for {key!r}; "
                          f"only {allowed} {'are' if key == 'scheduler' else 'is'} allowed")
    return [None, None] if key in NOT_LOADED else list(pair)


def _config(folder: Path, name: str, where: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise EngineError(f"{where} has no {name}")
    return read_json(path, MAX_CONFIG_BYTES)


def _check_family(unet: dict, info: CheckpointInfo, model_name: str, folder_name: str) -> None:
    xl = unet.get("addition_embed_type") == "text_time"
    inpaint = unet.get("in_channels", 4) == 9
    if xl != (info.family == "sdxl") or inpaint != info.inpaint:
        kind = ("an SDXL" if xl else "a Stable Diffusion 1.x/2.x") + (" inpainting" if inpaint else "")
        raise EngineError(f"{model_name} is a {info.label} model but its config folder {folder_name} describes "
                          f"{kind} model")


def _shown(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:60]
    return text if _PLAIN.fullmatch(text) else shown_name(text, 60)


@contextmanager
def staged(checked: CheckedConfig) -> Iterator[Path]:
    """A temporary folder holding only what `checked` holds, for from_single_file(config=...)."""
    with tempfile.TemporaryDirectory(prefix="latent-canvas-config-") as temp:
        root = Path(temp)
        (root / "model_index.json").write_text(json.dumps(checked.index), encoding="utf-8")
        for name, config in checked.configs.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(json.dumps(config), encoding="utf-8")
        yield root
