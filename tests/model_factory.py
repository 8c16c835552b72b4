"""Tiny random-weight Stable Diffusion models for tests, built locally (no model hub).

The models have the real SD 1.5 / SDXL architectures (text encoders, UNet, an 8x VAE, the real
CLIP tokenizer from resources/tokenizers/clip) at toy widths, so a CPU forward pass takes
milliseconds. They can be written in the two forms users bring:

* a diffusers folder (``save_diffusers_folder``), loadable with ``Pipeline.from_pretrained``;
* one ``.safetensors`` file in the original LDM key layout that model sites share
  (``save_single_file``), loadable with ``Pipeline.from_single_file(file, config=<folder>)``.

The single-file writer is the inverse of diffusers' ``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint`` and
``convert_open_clip_checkpoint``: loading it back gives tensors equal to the originals.

In tests use the session fixture ``tiny_models`` (tests/conftest.py), a ``TinyModels`` cache:
``tiny_models.path("sdxl", inpaint=True, form="single_file")``.
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

FAMILIES = ("sd15", "sdxl")
FORMS = ("folder", "single_file")
NATIVE_SIZE = 128  # UNet sample_size 16 latents x VAE factor 8
TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "resources" / "tokenizers" / "clip"

PIPELINES = {
    ("sd15", False): StableDiffusionPipeline,
    ("sd15", True): StableDiffusionInpaintPipeline,
    ("sdxl", False): StableDiffusionXLPipeline,
    ("sdxl", True): StableDiffusionXLInpaintPipeline,
}

# What diffusers' infer_diffusers_model_type reports for each single file.
MODEL_TYPES = {
    ("sd15", False): "v1",
    ("sd15", True): "inpainting",
    ("sdxl", False): "xl_base",
    ("sdxl", True): "xl_inpaint",
}

CLIP_L_HIDDEN = 32  # stands in for CLIP ViT-L/14 (768)
OPEN_CLIP_HIDDEN = 64  # stands in for OpenCLIP bigG (1280); must differ from CLIP-L, as the loader
OPEN_CLIP_PROJECTION = 48  # tells the two encoders apart by width. Projection != hidden so a
OPEN_CLIP_LAYERS = 10  # transposed text_projection cannot go unnoticed; resblocks.9 marks xl_base.
ADDITION_TIME_EMBED_DIM = 8
SCALING_FACTORS = {"sd15": 0.18215, "sdxl": 0.13025}

SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "timestep_spacing": "leading",
    "steps_offset": 1,
}


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

def _check(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _text_config(hidden: int, layers: int, heads: int, act: str, projection_dim: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection_dim,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


@functools.lru_cache(maxsize=None)
def _tokenizer(pad_token: str) -> CLIPTokenizer:
    """Built once per pad token (0.1 s each) and shared: tokenizers are not meant to be mutated."""
    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        model_max_length=77,
        pad_token=pad_token,
    )


def _unet(family: str, inpaint: bool) -> UNet2DConditionModel:
    common = dict(
        sample_size=16,
        in_channels=9 if inpaint else 4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
    )
    if family == "sd15":
        # Like SD 1.5: attention in the high-resolution blocks, conv projections.
        return UNet2DConditionModel(
            **common,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=8,
            cross_attention_dim=CLIP_L_HIDDEN,
        )
    # Like SDXL: no attention in the first block, linear projections, deeper transformers,
    # and the size/crop conditioning ("text_time") on top of the pooled OpenCLIP embedding.
    return UNet2DConditionModel(
        **common,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        cross_attention_dim=CLIP_L_HIDDEN + OPEN_CLIP_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=ADDITION_TIME_EMBED_DIM * 6 + OPEN_CLIP_PROJECTION,
    )


def _vae(family: str) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=NATIVE_SIZE,
        scaling_factor=SCALING_FACTORS[family],
    )


def build_components(family: str, inpaint: bool, seed: int = 0) -> dict:
    """Fresh components for ``PIPELINES[family, inpaint]``; the same seed gives the same weights."""
    _check(family)

    def seeded(make):
        torch.manual_seed(seed)
        return _vary_constants(make()).eval()

    components = {
        "unet": seeded(lambda: _unet(family, inpaint)),
        "vae": seeded(lambda: _vae(family)),
        "scheduler": EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG),
        "text_encoder": seeded(lambda: CLIPTextModel(
            _text_config(CLIP_L_HIDDEN, 2, 4, "quick_gelu", projection_dim=CLIP_L_HIDDEN))),
        "tokenizer": _tokenizer("<|endoftext|>"),
    }
    if family == "sdxl":
        components["text_encoder_2"] = seeded(lambda: CLIPTextModelWithProjection(
            _text_config(OPEN_CLIP_HIDDEN, OPEN_CLIP_LAYERS, 4, "gelu", projection_dim=OPEN_CLIP_PROJECTION)))
        # OpenCLIP pads with token 0, which is "!" in the CLIP vocabulary.
        components["tokenizer_2"] = _tokenizer("!")
    return components


@torch.no_grad()
def _vary_constants(module):
    """Jitter constant-initialised tensors (norm scales and shifts, zeroed biases) so that every
    tensor is distinct and a key mapped to the wrong place cannot load as an equal value."""
    for param in module.parameters():
        if param.ndim == 1 and param.numel() > 1 and torch.all(param == param[0]):
            param.add_(torch.randn_like(param) * 0.02)
    return module


def family_of(components: dict) -> str:
    return "sdxl" if "text_encoder_2" in components else "sd15"


def is_inpaint(components: dict) -> bool:
    return components["unet"].config.in_channels == 9


def pipeline_class(family: str, inpaint: bool) -> type:
    _check(family)
    return PIPELINES[family, inpaint]


def make_pipeline(components: dict):
    """The diffusers pipeline of the right class around ``components`` (shared, not copied)."""
    cls = pipeline_class(family_of(components), is_inpaint(components))
    modules = dict(components)
    if family_of(components) == "sd15":
        modules.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        modules.update(image_encoder=None, feature_extractor=None, add_watermarker=False)
    return cls(**modules)


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def save_diffusers_folder(components: dict, path) -> Path:
    """Write a diffusers folder (model_index.json + one subfolder per component, safetensors)."""
    path = Path(path)
    make_pipeline(components).save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if name in components:
            _hub_tokenizer_layout(components[name], path / name)
    return path


def _hub_tokenizer_layout(tokenizer: CLIPTokenizer, folder: Path) -> None:
    """Store the tokenizer as SD repos on the hub do (vocab.json + merges.txt, no tokenizer.json)
    rather than as transformers 5 saves it."""
    (folder / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / name, folder / name)
    specials = {k: str(getattr(tokenizer, k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")


def save_single_file(components: dict, path, dtype: torch.dtype | None = None,
                     with_buffers: bool = False) -> Path:
    """Write one .safetensors in the original (LDM / model-site) layout.

    ``dtype`` casts floating tensors (model sites mostly share fp16). ``with_buffers`` adds the
    non-weight tensors real checkpoints carry and loaders must skip: CLIP ``position_ids`` and,
    for SD 1.x, the DDPM schedule (``betas``, ``alphas_cumprod``).
    """
    path = Path(path)
    state = single_file_state_dict(components)
    if with_buffers:
        state.update(_buffers(components))
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def single_file_state_dict(components: dict) -> dict[str, torch.Tensor]:
    """All weights of ``components`` under their original LDM checkpoint keys."""
    unet, vae = components["unet"], components["vae"]
    parts = [
        {"model.diffusion_model." + _unet_key(k, unet.config): v for k, v in unet.state_dict().items()},
        {"first_stage_model." + _vae_key(k, len(vae.config.block_out_channels)): _vae_value(k, v)
         for k, v in vae.state_dict().items()},
        {_clip_prefix(components) + k: v for k, v in _text_model_state(components["text_encoder"]).items()},
    ]
    if "text_encoder_2" in components:
        parts.append(_open_clip_state(components["text_encoder_2"], "conditioner.embedders.1.model."))
    state = {k: v for part in parts for k, v in part.items()}
    if len(state) != sum(len(part) for part in parts):
        raise AssertionError("two weights were given the same LDM key")
    return state


def _clip_prefix(components: dict) -> str:
    return ("conditioner.embedders.0.transformer." if family_of(components) == "sdxl"
            else "cond_stage_model.transformer.")


def _buffers(components: dict) -> dict[str, torch.Tensor]:
    out = {_clip_prefix(components) + "text_model.embeddings.position_ids": torch.arange(77).unsqueeze(0)}
    if family_of(components) == "sd15":
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        out["betas"] = betas.float()
        out["alphas_cumprod"] = torch.cumprod(1.0 - betas, 0).float()
    return out


# UNet ------------------------------------------------------------------------------------------

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _unet_key(key: str, config) -> str:
    """diffusers UNet2DConditionModel key -> LDM ``openaimodel.UNetModel`` key.

    LDM numbers the UNet as flat sequences: ``input_blocks`` (conv_in, then per down block its
    resnets [+ attention] and a downsampler), ``middle_block`` (resnet, attention, resnet) and
    ``output_blocks`` (per up block layers_per_block + 1 resnets [+ attention], the last one
    carrying the upsampler after them). Attention (transformer) internals keep their names.
    """
    prefix, _, tail = key.rpartition(".")  # tail: weight / bias
    for new, old in _UNET_FIXED.items():
        if prefix == new:
            return f"{old}.{tail}"
    parts = prefix.split(".")
    per_block = config.layers_per_block + 1

    if parts[0] == "mid_block":  # a flat sequence: resnet, transformer, resnet
        rest = parts[3:]
        if parts[1] == "resnets":
            return ".".join(["middle_block", str(2 * int(parts[2])), _RESNET[rest[0]], *rest[1:], tail])
        return ".".join(["middle_block", "1", *rest, tail])

    block = int(parts[1])
    if parts[0] == "down_blocks":
        if parts[2] == "downsamplers":  # down_blocks.B.downsamplers.0.conv
            return f"input_blocks.{1 + block * per_block + config.layers_per_block}.0.op.{tail}"
        layer = int(parts[3])
        return _unet_layer("input_blocks", 1 + block * per_block + layer, parts[2], parts[4:], tail)

    if parts[0] == "up_blocks":
        if parts[2] == "upsamplers":  # after the last resnet (and its attention, if any)
            slot = 2 if config.up_block_types[block].startswith("CrossAttn") else 1
            return f"output_blocks.{block * per_block + per_block - 1}.{slot}.conv.{tail}"
        layer = int(parts[3])
        return _unet_layer("output_blocks", block * per_block + layer, parts[2], parts[4:], tail)

    raise KeyError(f"no LDM name for UNet key {key!r}")


def _unet_layer(blocks: str, index: int, kind: str, rest: list[str], tail: str) -> str:
    """An input/output block is a sequence too: resnet at .0, transformer (if any) at .1."""
    if kind == "resnets":
        rest = [_RESNET[rest[0]]] + rest[1:]
        return ".".join([blocks, str(index), "0", *rest, tail])
    if kind == "attentions":
        return ".".join([blocks, str(index), "1", *rest, tail])
    raise KeyError(f"unexpected UNet layer kind {kind!r}")


# VAE -------------------------------------------------------------------------------------------

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_key(key: str, num_blocks: int) -> str:
    """diffusers AutoencoderKL key -> LDM ``AutoencoderKL`` (first_stage_model) key.

    The LDM decoder numbers its up blocks from the lowest resolution up, i.e. in reverse.
    """
    prefix, _, tail = key.rpartition(".")
    parts = prefix.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key
    rest = ".".join(parts[1:])
    if rest == "conv_norm_out":
        return f"{side}.norm_out.{tail}"
    if rest in ("conv_in", "conv_out"):
        return key
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            return ".".join([side, f"mid.block_{int(parts[3]) + 1}", *_shortcut(parts[4:]), tail])
        module = ".".join(parts[4:])  # mid_block.attentions.0.<module>
        return f"{side}.mid.attn_1.{_VAE_ATTENTION[module]}.{tail}"
    block = int(parts[2])
    if parts[1] == "down_blocks":
        if parts[3] == "downsamplers":
            return f"{side}.down.{block}.downsample.conv.{tail}"
        return ".".join([side, "down", str(block), "block", parts[4], *_shortcut(parts[5:]), tail])
    if parts[1] == "up_blocks":
        ldm_block = num_blocks - 1 - block
        if parts[3] == "upsamplers":
            return f"{side}.up.{ldm_block}.upsample.conv.{tail}"
        return ".".join([side, "up", str(ldm_block), "block", parts[4], *_shortcut(parts[5:]), tail])
    raise KeyError(f"no LDM name for VAE key {key!r}")


def _shortcut(rest: list[str]) -> list[str]:
    return ["nin_shortcut" if p == "conv_shortcut" else p for p in rest]


def _vae_value(key: str, value: torch.Tensor) -> torch.Tensor:
    """LDM's mid-block attention uses 1x1 convolutions where diffusers uses linear layers."""
    if ".mid_block.attentions." in key and key.endswith("weight") and value.ndim == 2:
        return value[:, :, None, None]
    return value


# Text encoders ---------------------------------------------------------------------------------

def _text_model_state(model) -> dict[str, torch.Tensor]:
    """HF CLIP state dict with the ``text_model.`` prefix (transformers >= 5.6 drops it for
    CLIPTextModel), as stored under ``cond_stage_model.transformer.`` in LDM checkpoints."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if not key.startswith("text_model.") and key != "text_projection.weight":
            key = "text_model." + key
        state[key] = value
    return state


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _open_clip_state(model: CLIPTextModelWithProjection, prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection -> OpenCLIP ``model.*`` keys (SDXL's second text encoder).

    OpenCLIP keeps q/k/v stacked in ``attn.in_proj_weight`` and applies the projection as
    ``x @ text_projection``, so it stores the transpose of HF's linear weight.
    """
    hf = _text_model_state(model)
    out = {
        "token_embedding.weight": hf.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": hf.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": hf.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": hf.pop("text_model.final_layer_norm.bias"),
        "text_projection": hf.pop("text_projection.weight").T.contiguous(),
    }
    for i in range(model.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for tail in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{tail}"] = torch.cat(
                [hf.pop(f"{src}self_attn.{p}_proj.{tail}") for p in "qkv"])
            for new, old in _OPEN_CLIP_LAYER.items():
                out[f"{dst}{old}.{tail}"] = hf.pop(f"{src}{new}.{tail}")
    if hf:
        raise KeyError(f"no OpenCLIP name for {sorted(hf)}")
    return {prefix + k: v for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Cache for session-scoped fixtures
# ---------------------------------------------------------------------------------------------

class TinyModels:
    """Builds each tiny model at most once per session and writes it under ``root`` on demand.

    ``path(family, inpaint, form)`` returns the folder (form "folder") or the .safetensors file
    (form "single_file"); a single file's diffusers config is ``path(family, inpaint, "folder")``.
    """

    def __init__(self, root, seed: int = 0):
        self.root = Path(root)
        self.seed = seed
        self._components: dict[tuple[str, bool], dict] = {}
        self._paths: dict[tuple[str, bool, str], Path] = {}

    def components(self, family: str, inpaint: bool = False) -> dict:
        """The in-memory components; shared between callers, so do not modify them."""
        key = (family, inpaint)
        if key not in self._components:
            self._components[key] = build_components(family, inpaint, self.seed)
        return self._components[key]

    def path(self, family: str, inpaint: bool = False, form: str = "folder") -> Path:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        key = (family, inpaint, form)
        if key not in self._paths:
            name = f"{family}{'-inpaint' if inpaint else ''}"
            components = self.components(family, inpaint)
            if form == "folder":
                self._paths[key] = save_diffusers_folder(components, self.root / name)
            else:
                self._paths[key] = save_single_file(components, self.root / f"{name}.safetensors")
        return self._paths[key]

    def config_folder(self, family: str, inpaint: bool = False) -> Path:
        return self.path(family, inpaint, "folder")


def model_index(folder) -> dict:
    return json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
