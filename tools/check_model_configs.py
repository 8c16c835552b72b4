"""Sanity-check the offline diffusers config folders in resources/models/.

The app passes each folder as ``config=`` to ``from_single_file(...,
local_files_only=True)``. This script builds every component from its config
on the meta device (no weights, no downloads), prints parameter counts and
checks them against the published totals of the real models, plus the
architecture values that single-file loading depends on.

Usage: python tools/check_model_configs.py   (exits non-zero on any mismatch)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

MODELS = Path(__file__).resolve().parent.parent / "resources" / "models"

# Parameter totals of the released weights (UNet2DConditionModel.num_parameters() etc.).
# Inpainting UNets add 5 input channels to conv_in: 5 * 320 * 3 * 3 = 14,400 weights.
UNET_SD15, UNET_SD2, UNET_SDXL = 859_520_964, 865_910_724, 2_567_463_684
CONV_IN_EXTRA = 14_400
VAE = 83_653_863
CLIP_L, OPENCLIP_H, OPENCLIP_BIGG = 123_060_480, 340_387_840, 694_659_840

FAMILIES = {
    # name: (pipeline, unet params, text_encoder params, text_encoder_2 params,
    #        pixels, cross_attention_dim, unet in_channels, prediction_type, vae scaling_factor)
    "sd15": ("StableDiffusionPipeline", UNET_SD15, CLIP_L, None, 512, 768, 4, "epsilon", 0.18215),
    "sd15-inpaint": ("StableDiffusionInpaintPipeline", UNET_SD15 + CONV_IN_EXTRA, CLIP_L, None,
                     512, 768, 9, "epsilon", 0.18215),
    "sd2-v": ("StableDiffusionPipeline", UNET_SD2, OPENCLIP_H, None, 768, 1024, 4, "v_prediction", 0.18215),
    "sd2-base": ("StableDiffusionPipeline", UNET_SD2, OPENCLIP_H, None, 512, 1024, 4, "epsilon", 0.18215),
    "sd2-inpaint": ("StableDiffusionInpaintPipeline", UNET_SD2 + CONV_IN_EXTRA, OPENCLIP_H, None,
                    512, 1024, 9, "epsilon", 0.18215),
    "sdxl": ("StableDiffusionXLPipeline", UNET_SDXL, CLIP_L, OPENCLIP_BIGG, 1024, 2048, 4, "epsilon", 0.13025),
    "sdxl-inpaint": ("StableDiffusionXLInpaintPipeline", UNET_SDXL + CONV_IN_EXTRA, CLIP_L, OPENCLIP_BIGG,
                     1024, 2048, 9, "epsilon", 0.13025),
}
TOLERANCE = 0.001  # 0.1 %

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)
        print(f"    FAIL: {what}")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_count(name: str, component: str, got: int, want: int) -> None:
    ok = abs(got - want) <= TOLERANCE * want
    print(f"  {component:<15} {got:>14,d} params ({got / 1e6:9.2f}M, expected {want / 1e6:.2f}M)"
          f"{'' if ok else '  <-- MISMATCH'}")
    check(ok, f"{name}/{component}: {got:,d} params, expected {want:,d}")


def unused_keys(cls, config: dict) -> set[str]:
    _, unused, _ = cls.extract_init_dict(dict(config))
    return {k for k in unused if not k.startswith("_")}


def check_family(name: str, spec: tuple) -> None:
    pipeline, unet_n, te_n, te2_n, pixels, xattn, in_ch, prediction, scaling = spec
    folder = MODELS / name
    print(f"[{name}]")
    index = load(folder / "model_index.json")
    check(index["_class_name"] == pipeline, f"{name}: pipeline {index['_class_name']} != {pipeline}")

    # model_index.json must cover the pipeline's signature, as from_single_file reads it.
    pipe_cls = getattr(diffusers, pipeline)
    expected, optional_kwargs = pipe_cls._get_signature_keys(pipe_cls)
    listed = {k for k in index if not k.startswith("_") and k not in optional_kwargs}
    required = set(expected) - set(pipe_cls._optional_components)
    check(listed <= set(expected), f"{name}: model_index lists unknown components {listed - set(expected)}")
    check(required <= listed, f"{name}: model_index misses components {required - listed}")
    for tok in ("tokenizer", "tokenizer_2"):
        if tok in expected:
            check(index.get(tok) == ["transformers", "CLIPTokenizer"], f"{name}: {tok} entry {index.get(tok)}")
    for absent in ("safety_checker", "feature_extractor"):
        if absent in index:
            check(index[absent] == [None, None], f"{name}: {absent} should be [null, null]")
    if "requires_safety_checker" in optional_kwargs:
        check(index.get("requires_safety_checker") is False, f"{name}: requires_safety_checker must be false")

    # UNet
    unet_cfg = load(folder / "unet" / "config.json")
    check(not unused_keys(UNet2DConditionModel, unet_cfg), f"{name}: unet keys ignored by diffusers")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
    check_count(name, "unet", count(unet), unet_n)
    c = unet.config
    check(c.sample_size * 8 == pixels, f"{name}: unet sample_size*8 = {c.sample_size * 8}, expected {pixels}")
    check(c.cross_attention_dim == xattn, f"{name}: cross_attention_dim {c.cross_attention_dim} != {xattn}")
    check(c.in_channels == in_ch and c.out_channels == 4,
          f"{name}: unet in/out channels {c.in_channels}/{c.out_channels}")
    if name == "sd2-v":
        check(c.upcast_attention is True, f"{name}: SD 2.1 768-v needs upcast_attention true")

    # VAE
    vae_cfg = load(folder / "vae" / "config.json")
    check(not unused_keys(AutoencoderKL, vae_cfg), f"{name}: vae keys ignored by diffusers")
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_cfg)
    check_count(name, "vae", count(vae), VAE)
    check(vae.config.scaling_factor == scaling, f"{name}: vae scaling_factor {vae.config.scaling_factor} != {scaling}")
    if te2_n:
        check(vae.config.force_upcast is True, f"{name}: SDXL vae needs force_upcast true")

    # Text encoders
    te_cfg = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    with torch.device("meta"):
        te = CLIPTextModel(te_cfg)
    check_count(name, "text_encoder", count(te), te_n)
    check(index["text_encoder"] == ["transformers", "CLIPTextModel"], f"{name}: text_encoder class")
    if te2_n:
        te2_cfg = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
        with torch.device("meta"):
            te2 = CLIPTextModelWithProjection(te2_cfg)
        check_count(name, "text_encoder_2", count(te2), te2_n)
        check(index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"],
              f"{name}: text_encoder_2 class")
        # UNet context = concat of both encoders' penultimate states (768 + 1280).
        check(te_cfg.hidden_size + te2_cfg.hidden_size == xattn, f"{name}: encoder widths do not sum to {xattn}")
        # add_embedding input = pooled text_embeds (projection_dim) + 6 time ids * addition_time_embed_dim.
        # (The refiner, with one 1280 encoder and 5 ids, would be 2560.)
        check(c.addition_embed_type == "text_time", f"{name}: addition_embed_type {c.addition_embed_type}")
        check(c.addition_time_embed_dim == 256, f"{name}: addition_time_embed_dim {c.addition_time_embed_dim}")
        want_proj = te2_cfg.projection_dim + 6 * c.addition_time_embed_dim
        check(c.projection_class_embeddings_input_dim == want_proj == 2816,
              f"{name}: projection_class_embeddings_input_dim {c.projection_class_embeddings_input_dim} != {want_proj}")
    else:
        check(te_cfg.hidden_size == xattn, f"{name}: text hidden_size {te_cfg.hidden_size} != {xattn}")
        check(c.addition_embed_type is None, f"{name}: unexpected addition_embed_type")

    # Scheduler
    sched_cfg = load(folder / "scheduler" / "scheduler_config.json")
    check(index["scheduler"] == ["diffusers", sched_cfg["_class_name"]], f"{name}: scheduler class mismatch")
    sched = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    got = sched.config.prediction_type
    print(f"  scheduler       {type(sched).__name__}, prediction_type={got}")
    check(got == prediction, f"{name}: prediction_type {got} != {prediction}")


def main() -> int:
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    for name, spec in FAMILIES.items():
        check_family(name, spec)
    extra = sorted(p.name for p in MODELS.iterdir() if p.is_dir() and p.name not in FAMILIES)
    if extra:
        print(f"note: unchecked folders {extra}")
    print(f"\n{'FAILED: ' + str(len(failures)) + ' problem(s)' if failures else 'all model configs OK'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
