"""The diffusers config folder a single-file model is loaded with (the shipped one of its family, or one the
user gives: `--model-config DIR`, "Config folder" in Add model).

diffusers' from_single_file imports whatever module model_index.json names for a component and looks up the
class named beside it, so a folder naming ["some_installed_module", "X"] would run that module. The folder is
therefore read here first, within bounds, and only the library classes a Stable Diffusion pipeline of the
model's family uses are accepted (`check_config_folder`). Every component's config is checked too
(`check_part_config`, which diffusers folders go through as well): a config sizes what is built from it, so
`max_position_embeddings: 5e7` would allocate 400 MB and `num_train_timesteps: 2e9` 8 GB before any weight is
read; each key that sizes something is bounded far above what real models use.

The loader then gives diffusers a copy holding just what was checked (`staged`): the validated
model_index.json and the components' config files. The only other files of the folder ever read are its
tokenizers' (tokenizer/, tokenizer_2/), which model_loader.tokenizers_for reads within bounds and builds from
a copy of; weights, code and any other file in it are never read.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from app.engine.events import EngineError
from app.engine.diffusion.model_files import CheckpointInfo, read_json
from app.engine.diffusion.safetensors_header import shown_name

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
    return part_config(path, name.split("/")[0], f"{where}: {name}")


def part_config(path: Path, part: str, shown: str) -> dict:
    """The config file of `part` ("unet", "vae", "text_encoder", "text_encoder_2" or "scheduler") at
    `path`, read within bounds and checked (`check_part_config`); `shown` names it in messages."""
    return check_part_config(part, read_json(path, MAX_CONFIG_BYTES), shown)


def _check_family(unet: dict, info: CheckpointInfo, model_name: str, folder_name: str) -> None:
    xl = unet.get("addition_embed_type") == "text_time"
    inpaint = unet.get("in_channels", 4) == 9
    if xl != (info.family == "sdxl") or inpaint != info.inpaint:
        kind = ("an SDXL" if xl else "a Stable Diffusion 1.x/2.x") + (" inpainting" if inpaint else "")
        raise EngineError(f"{model_name} is a {info.label} model but its config folder {folder_name} describes "
                          f"{kind} model")


def _shown(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if _PLAIN.fullmatch(text) else shown_name(text, 60)


# -- what a part's config may say ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rule:
    accepts: Callable[[object], bool]
    says: str                                    # what the value must be, for the message


def _is_whole(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _whole(low: int, high: int, null: bool = False) -> _Rule:
    return _Rule(lambda v: _is_whole(v, low, high) or (null and v is None),
                 f"a whole number from {low:,} to {high:,}" + (", or null" if null else ""))


def _wholes(low: int, high: int, null: bool = False, most: int = 16) -> _Rule:
    """A number, or one per block (diffusers also takes a list of lists for transformer layers)."""
    def accepts(value, depth: int = 0) -> bool:
        if type(value) is list:
            return depth < 2 and 1 <= len(value) <= most and all(accepts(v, depth + 1) for v in value)
        return _is_whole(value, low, high) or (null and depth == 0 and value is None)
    return _Rule(accepts, f"a whole number from {low:,} to {high:,}, or a list of at most {most} of them"
                 + (", or null" if null else ""))


def _channels(high: int, most: int = 8) -> _Rule:
    return _Rule(lambda v: type(v) is list and 1 <= len(v) <= most and all(_is_whole(c, 1, high) for c in v),
                 f"a list of 1 to {most} whole numbers from 1 to {high:,}")


def _is_number(value, low: float, high: float, below_high: bool = False) -> bool:
    if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
        return False
    return low < value and (value < high if below_high else value <= high)


def _number(low: float, high: float, null: bool = False) -> _Rule:
    return _Rule(lambda v: _is_number(v, low, high) or (null and v is None),
                 f"a number above {low:g} and at most {high:g}" + (", or null" if null else ""))


def _fraction() -> _Rule:
    return _Rule(lambda v: _is_number(v, 0, 1, below_high=True), "a number above 0 and below 1")


def _one_of(*choices: str) -> _Rule:
    return _Rule(lambda v: type(v) is str and v in choices, "one of " + ", ".join(choices))


_BETAS = _Rule(lambda v: v is None or (type(v) is list and 1 <= len(v) <= 10_000
                                       and all(_is_number(b, 0, 1, below_high=True) for b in v)),
               "null or a list of at most 10,000 numbers above 0 and below 1")
_TRUE_OR_FALSE = _Rule(lambda v: type(v) is bool, "true or false")

# The keys that size what is built from a config (and the VAE's factors, which every decode divides by), with
# the largest value of a real SD 1.x/2.x/SDXL model in comments; no other key can make building a part costly.
_TEXT_ENCODER = {
    "vocab_size": _whole(1, 1_000_000),                      # 49,408
    "hidden_size": _whole(1, 16_384),                        # 1,280
    "intermediate_size": _whole(1, 65_536),                  # 5,120
    "num_hidden_layers": _whole(1, 128),                     # 32
    "num_attention_heads": _whole(1, 256),                   # 20
    "max_position_embeddings": _whole(77, 1024),             # 77, which every prompt window fills
    "projection_dim": _whole(1, 16_384),                     # 1,280
}
PART_LIMITS: dict[str, dict[str, _Rule]] = {
    "unet": {
        "sample_size": _whole(1, 256),                       # 128 (latent pixels: 1024 image pixels)
        "in_channels": _whole(1, 64), "out_channels": _whole(1, 64),                  # 9, 4
        "block_out_channels": _channels(8192),               # [320, 640, 1280, 1280]
        "layers_per_block": _wholes(1, 16),                  # 2
        "attention_head_dim": _wholes(1, 1024),              # [5, 10, 20]
        "num_attention_heads": _wholes(1, 1024, null=True),
        "cross_attention_dim": _wholes(1, 16_384),           # 2,048
        "transformer_layers_per_block": _wholes(1, 64),      # [1, 2, 10]
        "reverse_transformer_layers_per_block": _wholes(1, 64, null=True),
        "norm_num_groups": _whole(1, 1024),                  # 32
        "addition_embed_type_num_heads": _whole(1, 1024),    # 64
        "addition_time_embed_dim": _whole(1, 4096, null=True),                 # 256
        "projection_class_embeddings_input_dim": _whole(1, 65_536, null=True),  # 2,816
        "time_embedding_dim": _whole(1, 65_536, null=True),
        "time_cond_proj_dim": _whole(1, 65_536, null=True),
        "num_class_embeds": _whole(1, 10_000, null=True),
        "encoder_hid_dim": _whole(1, 16_384, null=True),
        "conv_in_kernel": _whole(1, 15), "conv_out_kernel": _whole(1, 15),     # 3
    },
    "vae": {
        "sample_size": _whole(8, 8192),                      # 1,024 (pixels: the tile size when tiling)
        "in_channels": _whole(1, 64), "out_channels": _whole(1, 64),          # 3
        "latent_channels": _whole(1, 64),                    # 4
        "block_out_channels": _channels(8192),               # [128, 256, 512, 512]
        "layers_per_block": _whole(1, 16),                   # 2
        "norm_num_groups": _whole(1, 1024),                  # 32
        "scaling_factor": _number(0, 100),                   # 0.18215
        "shift_factor": _number(-100, 100, null=True),
    },
    "text_encoder": _TEXT_ENCODER,
    "text_encoder_2": _TEXT_ENCODER,
    "scheduler": {                                           # what samplers.make_scheduler passes on
        "num_train_timesteps": _whole(1, 10_000),            # 1,000
        "beta_start": _fraction(), "beta_end": _fraction(),  # 0.00085, 0.012
        "beta_schedule": _one_of("linear", "scaled_linear", "squaredcos_cap_v2"),
        "trained_betas": _BETAS,
        "prediction_type": _one_of("epsilon", "v_prediction", "sample"),
        "steps_offset": _whole(0, 10_000),                   # 1
        "rescale_betas_zero_snr": _TRUE_OR_FALSE,
    },
}


def check_part_config(part: str, config: dict, shown: str) -> dict:
    """`config` (the config file of `part`, named `shown` in messages) when every key that sizes what is
    built from it is within PART_LIMITS; EngineError in one line naming the key and its value otherwise."""
    nested = config.get("text_config") if part.startswith("text_encoder") else None
    if nested is not None:                       # a whole CLIP config: transformers builds its text part
        if not isinstance(nested, dict):
            raise EngineError(f"{shown} gives text_config the value {_shown(nested)}; it must be an object")
        check_part_config(part, nested, f"{shown} (text_config)")
    for key, rule in PART_LIMITS[part].items():
        if key in config and not rule.accepts(config[key]):
            raise EngineError(f"{shown} gives {key} the value {_shown(config[key])}; it must be {rule.says}")
    betas, timesteps = config.get("trained_betas"), config.get("num_train_timesteps", 1000)
    if part == "scheduler" and betas is not None and len(betas) != timesteps:
        raise EngineError(f"{shown} gives {len(betas):,} trained_betas for {timesteps:,} timesteps "
                          "(num_train_timesteps); it must give one for each")
    return config


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
