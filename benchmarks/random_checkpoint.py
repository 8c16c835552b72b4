"""Write a random-weight checkpoint with a real Stable Diffusion architecture (from resources/models).

Used for timings and for checking that the shipped configs load real-size single files offline.
Random weights make noise, not pictures; the cost of every step is the real one.

    python benchmarks/random_checkpoint.py sd15 /tmp/sd15-random.safetensors [--dtype float16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.engine.diffusion.model_files import CONFIG_ROOT, inspect_folder  # noqa: E402
from app.engine.diffusion.model_loader import tokenizers_for  # noqa: E402


def build(family: str, device: str = "cpu") -> dict:
    """Random components of resources/models/<family>; `device` is where the weights are made (random
    initialisation of a real-size UNet takes a minute on a CPU and a second on a GPU)."""
    import diffusers
    import transformers

    folder = CONFIG_ROOT / family
    torch.manual_seed(0)
    with torch.device(device):
        components = _models(diffusers, transformers, folder)
    tokenizers = tokenizers_for(folder, inspect_folder(folder)[0])      # the app's own, with its pad tokens
    components.update(zip(("tokenizer", "tokenizer_2"), tokenizers))
    components["scheduler"] = diffusers.EulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    return components


def _models(diffusers, transformers, folder: Path) -> dict:
    components = {
        "unet": diffusers.UNet2DConditionModel.from_config(
            diffusers.UNet2DConditionModel.load_config(folder / "unet")),
        "vae": diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder / "vae")),
        "text_encoder": transformers.CLIPTextModel(
            transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder")),
    }
    if (folder / "text_encoder_2").is_dir():
        components["text_encoder_2"] = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    return components


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("family", help="a folder name under resources/models, e.g. sd15 or sdxl")
    parser.add_argument("output", type=Path)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"])
    args = parser.parse_args()
    from tests.model_factory import save_single_file

    start = time.perf_counter()
    components = build(args.family)
    save_single_file(components, args.output, dtype=getattr(torch, args.dtype))
    print(f"{args.output}: {args.output.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
