"""Tiny random-weight ControlNets for tests, built locally (no model hub).

``build_controlnet(family)`` makes a diffusers ``ControlNetModel`` that fits the tiny UNet of
tests/model_factory.py for that family (SD 1.5 or SDXL): the same down/mid blocks, widths,
cross-attention width and, for SDXL, the "text_time" size/crop conditioning. Its conditioning
embedding has four stages, so it takes the control image at pixel size (latent size x 8) as the
real ones do. Every weight is drawn afresh from a seeded generator: diffusers starts the "zero
convolutions" at zero, which would make a ControlNet that changes nothing.

It can be written in the two forms users bring:

* a diffusers folder (``save_controlnet_folder``), loadable with ``ControlNetModel.from_pretrained``;
* one ``.safetensors`` file (``save_controlnet_single_file``), loadable with
  ``ControlNetModel.from_single_file(file, config=<folder>)``. For SD 1.5 it is in the original
  lllyasviel layout (``control_model.input_blocks...``, ``zero_convs``, ``input_hint_block``,
  ``middle_block_out``), written as the inverse of diffusers' ``convert_controlnet_checkpoint``.
  For SDXL it is in diffusers' own key layout, as SDXL ControlNets are shared (e.g.
  ``diffusers_xl_canny_full.safetensors``): diffusers has no LDM mapping for them.

In tests make one ``TinyControlNets`` per session, e.g. in a session fixture::

    @pytest.fixture(scope="session")
    def tiny_controlnets(tmp_path_factory):
        return TinyControlNets(tmp_path_factory.mktemp("controlnets"))

(``tiny_controlnets_fixture`` does exactly that) and ask it for
``tiny_controlnets.path("sd15", "single_file")``; the matching config folder is
``tiny_controlnets.path("sd15", "folder")``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

from tests.model_factory import FAMILIES, FORMS, NATIVE_SIZE, _check, _unet, _unet_key

VAE_FACTOR = 8
LATENT_SIZE = NATIVE_SIZE // VAE_FACTOR
# Four stages = three stride-2 convolutions = the VAE factor 8. diffusers' SD 1.5 converter also
# hard-codes this depth: it expects the last hint convolution at input_hint_block.14.
CONDITIONING_CHANNELS = (4, 8, 16, 16)
LDM_PREFIX = "control_model."
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "resources" / "models"
SHIPPED_CONFIGS = {"sd15": CONFIG_ROOT / "controlnet-sd15", "sdxl": CONFIG_ROOT / "controlnet-sdxl"}

# What diffusers' infer_diffusers_model_type reports for each tiny single file.
MODEL_TYPES = {"sd15": "controlnet", "sdxl": "controlnet_xl_large"}


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

def build_controlnet(family: str, seed: int = 0, global_pool: bool = False) -> ControlNetModel:
    """A tiny ControlNet for the tiny ``family`` UNet; the same seed gives the same weights.

    ``global_pool`` sets ``global_pool_conditions`` (as "shuffle"-style ControlNets have), which
    makes every residual a per-channel mean (1x1 spatially).
    """
    _check(family)
    controlnet = ControlNetModel.from_unet(
        _unet(family, inpaint=False),
        conditioning_embedding_out_channels=CONDITIONING_CHANNELS,
        load_weights_from_unet=False,
    )
    if global_pool:
        controlnet.register_to_config(global_pool_conditions=True)
    return randomize(controlnet, seed).eval()


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every parameter from a generator seeded with ``seed`` (the global RNG is untouched).

    Matrices and kernels get N(0, 1/fan_in), which keeps activations around unit size through
    the blocks; norm scales 1 + N(0, 0.1); biases N(0, 0.05). So no tensor is zero or constant,
    and no two tensors are equal, so a key loaded into the wrong place cannot go unnoticed.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            fan_in = param[0].numel()
            param.normal_(0.0, fan_in ** -0.5, generator=generator)
        elif name.endswith("weight"):
            param.normal_(1.0, 0.1, generator=generator)
        else:
            param.normal_(0.0, 0.05, generator=generator)
    return module


def example_inputs(controlnet: ControlNetModel, batch: int = 1, seed: int = 0) -> dict:
    """Keyword arguments for ``controlnet(**inputs)`` and, without ``controlnet_cond``, for the
    matching tiny UNet: latents, timestep, prompt embeddings, a pixel-size control image and,
    for SDXL, the pooled embedding and size/crop ids."""
    config = controlnet.config
    generator = torch.Generator().manual_seed(seed)
    latent = LATENT_SIZE
    inputs = {
        "sample": torch.randn(batch, config.in_channels, latent, latent, generator=generator),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(batch, 8, config.cross_attention_dim, generator=generator),
        "controlnet_cond": torch.rand(batch, config.conditioning_channels, latent * VAE_FACTOR,
                                      latent * VAE_FACTOR, generator=generator),
    }
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=generator),
            "time_ids": torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]]).repeat(batch, 1),
        }
    return inputs


def family_of(controlnet: ControlNetModel) -> str:
    return "sdxl" if controlnet.config.addition_embed_type == "text_time" else "sd15"


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def save_controlnet_folder(controlnet: ControlNetModel, path) -> Path:
    """Write a diffusers folder: config.json + diffusion_pytorch_model.safetensors."""
    path = Path(path)
    controlnet.save_pretrained(path, safe_serialization=True)
    return path


def save_controlnet_single_file(controlnet: ControlNetModel, path, family: str | None = None,
                                dtype: torch.dtype | None = None, prefix: str = LDM_PREFIX) -> Path:
    """Write one .safetensors in the layout such files have in the wild for ``family``.

    SD 1.5: the original ControlNet (cldm) keys under ``prefix`` ("control_model."; pass "" for
    the bare layout some repos use, e.g. thibaud/controlnet-sd21). SDXL: diffusers keys.
    ``dtype`` casts floating tensors (shared files are mostly fp16).
    """
    family = family or family_of(controlnet)
    _check(family)
    if family == "sd15":
        state = ldm_state_dict(controlnet.state_dict(), controlnet.config, prefix)
    else:
        state = dict(controlnet.state_dict())
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def ldm_state_dict(state: dict[str, torch.Tensor], config,
                   prefix: str = LDM_PREFIX) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet state dict under the original cldm ``ControlNet`` keys.

    Works on meta tensors too, so it can lay out a full-size model without its weights.
    """
    out = {prefix + controlnet_ldm_key(key, config): value for key, value in state.items()}
    if len(out) != len(state):
        raise AssertionError("two weights were given the same LDM key")
    return out


def controlnet_ldm_key(key: str, config) -> str:
    """diffusers ``ControlNetModel`` key -> original cldm ``ControlNet`` key (without prefix).

    The encoder (time embedding, conv_in, down and mid blocks) is numbered like the LDM UNet's
    ``input_blocks`` / ``middle_block``. What is ControlNet's own:

    * ``controlnet_cond_embedding`` -> ``input_hint_block``, a flat Sequential of convolutions
      with a SiLU after each, so the convolutions sit at the even indices 0, 2, ..., 14;
    * ``controlnet_down_blocks.N`` -> ``zero_convs.N.0`` (one per input block);
    * ``controlnet_mid_block`` -> ``middle_block_out.0``.
    """
    prefix, _, tail = key.rpartition(".")
    parts = prefix.split(".")
    if parts[0] == "controlnet_cond_embedding":
        return f"input_hint_block.{_hint_index(parts, config)}.{tail}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{tail}"
    if parts[0] == "controlnet_mid_block":
        return f"middle_block_out.0.{tail}"
    return _unet_key(key, config)


def _hint_index(parts: list[str], config) -> int:
    convolutions = 2 * len(config.conditioning_embedding_out_channels)  # conv_in, blocks, conv_out
    if convolutions != 8:
        raise ValueError("diffusers' converter only reads 4-stage conditioning embeddings "
                         f"(conv_out at input_hint_block.14), not {config.conditioning_embedding_out_channels}")
    if parts[1] == "conv_in":
        return 0
    if parts[1] == "blocks":
        return 2 * (int(parts[2]) + 1)
    if parts[1] == "conv_out":
        return 2 * (convolutions - 1)
    raise KeyError(f"no LDM name for conditioning embedding part {'.'.join(parts)!r}")


# ---------------------------------------------------------------------------------------------
# Cache for session-scoped fixtures
# ---------------------------------------------------------------------------------------------

class TinyControlNets:
    """Builds each tiny ControlNet at most once per session and writes it under ``root`` on demand.

    ``path(family, form)`` returns the folder (form "folder") or the .safetensors file (form
    "single_file"); a single file's diffusers config is ``path(family, "folder")``.
    """

    def __init__(self, root, seed: int = 0):
        self.root = Path(root)
        self.seed = seed
        self._models: dict[tuple[str, bool], ControlNetModel] = {}
        self._paths: dict[tuple[str, str], Path] = {}

    def controlnet(self, family: str, global_pool: bool = False) -> ControlNetModel:
        """The in-memory model; shared between callers, so do not modify it."""
        key = (family, global_pool)
        if key not in self._models:
            self._models[key] = build_controlnet(family, self.seed, global_pool)
        return self._models[key]

    def path(self, family: str, form: str = "folder") -> Path:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        key = (family, form)
        if key not in self._paths:
            name = f"controlnet-{family}"
            if form == "folder":
                self._paths[key] = save_controlnet_folder(self.controlnet(family), self.root / name)
            else:
                self._paths[key] = save_controlnet_single_file(
                    self.controlnet(family), self.root / f"{name}.safetensors", family)
        return self._paths[key]

    def config_folder(self, family: str) -> Path:
        return self.path(family, "folder")


def tiny_controlnets_fixture(tmp_path_factory) -> TinyControlNets:
    """Body for a session fixture: ``return tiny_controlnets_fixture(tmp_path_factory)``."""
    return TinyControlNets(tmp_path_factory.mktemp("controlnets"))


__all__ = [
    "FAMILIES", "FORMS", "MODEL_TYPES", "SHIPPED_CONFIGS", "TinyControlNets", "build_controlnet",
    "controlnet_ldm_key", "example_inputs", "ldm_state_dict", "randomize", "save_controlnet_folder",
    "save_controlnet_single_file", "tiny_controlnets_fixture",
]


def build_union_controlnet(seed: int = 0, modes: int = 8):
    """A tiny random SDXL union ControlNet (diffusers ControlNetUnionModel) fitting the tiny SDXL UNet: its
    condition transformer as wide as the UNet's first block, `modes` control types."""
    from diffusers import ControlNetUnionModel

    unet = _unet("sdxl", False)
    shaped = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 16, 16),
                                            load_weights_from_unet=False)
    config = {key: value for key, value in shaped.config.items() if not key.startswith("_")}
    width = unet.config.block_out_channels[0]
    config.update(num_trans_channel=width, num_trans_head=4, num_proj_channel=width, num_control_type=modes)
    return randomize(ControlNetUnionModel(**config), seed).eval()
