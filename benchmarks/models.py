"""Random-weight inpainting models for the benchmarks, saved as diffusers folders (built once, cached).

Random weights make noise, not pictures; every step costs what the architecture costs. Sizes:

  tiny  tests/model_factory.py's toy SD 1.5 / SDXL inpainting models (native 128 px): plumbing checks.
  mid   the SD 1.5 / SDXL inpainting architectures (same block types, attention placement, CLIP text
        encoders, 8x VAE with 4 levels) at reduced widths, native 512 px, so one guided step costs
        ~0.1-0.3 s on a 2-core CPU and the VAE costs about what it costs next to the real UNet
        (real SD 1.5 on this CPU: UNet step with guidance 5.9 s, VAE encode 6.9 s, decode 9.7 s at 512).
  sd15  the real SD 1.5 inpainting architecture (resources/models/sd15-inpaint), native 512 px.
  sdxl  the real SDXL inpainting architecture (resources/models/sdxl-inpaint), native 1024 px.

ControlNets for them (controlnet_folder, benchmarks 9-10), random weights as well, saved as diffusers
ControlNet folders: tiny from tests/control_factory.py; mid ControlNetModel.from_unet of the mid UNet;
sd15 / sdxl the shipped configs resources/models/controlnet-sd15 / controlnet-sdxl. diffusers starts a
ControlNet's zero convolutions at zero; here they are drawn afresh, so its residuals are not zero.

    python benchmarks/models.py mid sd15      # build (or find) one and print its folder
    python benchmarks/models.py mid sd15 --controlnet
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = ("tiny", "mid", "sd15", "sdxl")
CACHE = Path(__file__).resolve().parent / ".cache" / "models"
VERSION = 2                     # bump when a recipe below changes: cached folders are rebuilt

# What each size builds: the families it covers (the first is the primary one).
FAMILIES = {"tiny": ("sd15", "sdxl"), "mid": ("sd15", "sdxl"), "sd15": ("sd15",), "sdxl": ("sdxl",)}

# The mid-size recipes, written out so BENCHMARKS.md can say exactly what ran.
MID_TEXT = dict(hidden=384, layers=6, heads=6)              # stands in for CLIP ViT-L/14 (768, 12 layers)
MID_TEXT_2 = dict(hidden=512, layers=6, heads=8, projection=512)   # for OpenCLIP bigG (1280, 32 layers)
MID_SD15_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=1, cross_attention_dim=MID_TEXT["hidden"],
)
MID_SDXL_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=1,
    block_out_channels=(64, 128, 256),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(1, 2, 4), transformer_layers_per_block=(1, 1, 2), use_linear_projection=True,
    cross_attention_dim=MID_TEXT["hidden"] + MID_TEXT_2["hidden"],
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=256 * 6 + MID_TEXT_2["projection"],
)
MID_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=16,
)
SCALING = {"sd15": 0.18215, "sdxl": 0.13025}
# The mid ControlNets: ControlNetModel.from_unet of the mid UNet (its encoder and middle block; 4-channel
# latents in, as real ControlNets take beside an inpainting UNet too), with the control-image embedding
# narrowed as the UNet is (real: (16, 32, 96, 256) for a 320-wide UNet). A forward then costs 0.35x the mid
# SD UNet's in FLOPs (0.37x for SDXL), as the real SD 1.5 pair does (0.35x; real SDXL 0.45x), at 512 px,
# counted with torch.utils.flop_counter.
MID_CONTROL_EMBEDDING = (4, 8, 16, 32)
CONTROLNET_CONFIGS = {"sd15": "controlnet-sd15", "sdxl": "controlnet-sdxl"}


def native_size(size: str, family: str) -> int:
    if size == "tiny":
        return 128
    if size == "sdxl" or (size == "sd15" and family == "sdxl"):
        return 1024
    return 512


def describe(size: str, family: str) -> str:
    """One line naming exactly what a (size, family) model is."""
    if size == "tiny":
        return (f"tiny {family} inpainting (tests/model_factory.py: UNet (32, 64), VAE (8, 16, 16, 16), "
                f"CLIP width 32), native 128 px")
    if size == "mid":
        unet = MID_SD15_UNET if family == "sd15" else MID_SDXL_UNET
        text = f"CLIP {MID_TEXT['hidden']}w x{MID_TEXT['layers']}"
        if family == "sdxl":
            text += f" + CLIP {MID_TEXT_2['hidden']}w x{MID_TEXT_2['layers']} (projection)"
        extra = f", transformer layers {unet['transformer_layers_per_block']}" if family == "sdxl" else ""
        return (f"mid {family} inpainting (the {family.upper()} inpainting layout at reduced width: UNet "
                f"{tuple(unet['block_out_channels'])} x{unet['layers_per_block']} layer/block, heads "
                f"{unet['attention_head_dim']}{extra}; VAE {MID_VAE['block_out_channels']} "
                f"x{MID_VAE['layers_per_block']}; {text}), native 512 px")
    folder = "sd15-inpaint" if family == "sd15" else "sdxl-inpaint"
    return f"{family} inpainting, real size (resources/models/{folder}), native {native_size(size, family)} px"


def model_folder(size: str, family: str, cache: Path = CACHE, dtype: str = "float32",
                 log=print) -> Path:
    """The diffusers folder of (size, family), building and saving it the first time (torch is imported only
    to build one, so a process that just needs the folder, like the UI benchmark, starts as the editor does)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    suffix = "" if dtype == "float32" else f"-{dtype}"
    folder = Path(cache) / f"{size}-{family}-inpaint{suffix}"
    stamp = folder / "benchmark_model.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return folder
    start = time.perf_counter()
    log(f"building {size} {family} inpainting model in {folder} ...")
    components = build(size, family)
    if dtype != "float32":
        import torch

        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if name in components:
                components[name].to(getattr(torch, dtype))
    if folder.exists():
        shutil.rmtree(folder)
    from tests.model_factory import save_diffusers_folder

    save_diffusers_folder(components, folder)
    stamp.write_text(json.dumps({"version": VERSION, "size": size, "family": family, "dtype": dtype,
                                 "description": describe(size, family)}, indent=2))
    log(f"  built in {time.perf_counter() - start:.0f} s")
    return folder


def build(size: str, family: str) -> dict:
    """Fresh random components (unet, vae, text encoder(s), tokenizer(s), scheduler) of (size, family)."""
    import torch

    if size == "tiny":
        from tests.model_factory import build_components

        return build_components(family, inpaint=True)
    if size in ("sd15", "sdxl"):
        from benchmarks.random_checkpoint import build as build_real
        from tests.model_factory import SD_SCHEDULER_CONFIG

        components = build_real("sd15-inpaint" if family == "sd15" else "sdxl-inpaint",
                                "cuda" if torch.cuda.is_available() else "cpu")
        components["scheduler"] = _scheduler(SD_SCHEDULER_CONFIG)
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if name in components:
                components[name].eval()
        return components
    return _build_mid(family, torch)


def _scheduler(config: dict):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**config)


def _build_mid(family: str, torch) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tests.model_factory import SD_SCHEDULER_CONFIG, _text_config, _tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(MID_SD15_UNET if family == "sd15" else MID_SDXL_UNET))
    vae = AutoencoderKL(**MID_VAE, scaling_factor=SCALING[family], force_upcast=family == "sdxl")
    t = MID_TEXT
    components = {
        "unet": unet.eval(), "vae": vae.eval(), "scheduler": _scheduler(SD_SCHEDULER_CONFIG),
        "text_encoder": CLIPTextModel(_text_config(t["hidden"], t["layers"], t["heads"], "quick_gelu",
                                                   projection_dim=t["hidden"])).eval(),
        "tokenizer": _tokenizer("<|endoftext|>"),
    }
    if family == "sdxl":
        t2 = MID_TEXT_2
        components["text_encoder_2"] = CLIPTextModelWithProjection(
            _text_config(t2["hidden"], t2["layers"], t2["heads"], "gelu", projection_dim=t2["projection"])).eval()
        components["tokenizer_2"] = _tokenizer("!")
    return components


def describe_controlnet(size: str, family: str) -> str:
    """One line naming exactly what the (size, family) ControlNet is."""
    if size == "tiny":
        return f"tiny {family} ControlNet (tests/control_factory.py, embedding (4, 8, 16, 16))"
    if size == "mid":
        unet = MID_SD15_UNET if family == "sd15" else MID_SDXL_UNET
        return (f"mid {family} ControlNet (ControlNetModel.from_unet of the mid UNet: encoder "
                f"{tuple(unet['block_out_channels'])} + middle block, 4-channel latents in, control embedding "
                f"{MID_CONTROL_EMBEDDING}, zero convs re-randomised)")
    return (f"{family} ControlNet, real size (resources/models/{CONTROLNET_CONFIGS[family]}), zero convs "
            f"re-randomised")


def controlnet_folder(size: str, family: str, cache: Path = CACHE, dtype: str = "float32",
                      log=print) -> Path:
    """The diffusers ControlNet folder (config.json + safetensors) of (size, family), built the first time."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    suffix = "" if dtype == "float32" else f"-{dtype}"
    folder = Path(cache) / f"{size}-{family}-controlnet{suffix}"
    stamp = folder / "benchmark_model.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return folder
    import torch

    start = time.perf_counter()
    log(f"building {size} {family} ControlNet in {folder} ...")
    net = build_controlnet(size, family)
    if dtype != "float32":
        net.to(getattr(torch, dtype))
    if folder.exists():
        shutil.rmtree(folder)
    net.save_pretrained(folder, safe_serialization=True)
    stamp.write_text(json.dumps({"version": VERSION, "size": size, "family": family, "dtype": dtype,
                                 "description": describe_controlnet(size, family)}, indent=2))
    log(f"  built in {time.perf_counter() - start:.0f} s")
    return folder


def build_controlnet(size: str, family: str):
    """A fresh random ControlNet that fits the (size, family) UNet, its zero convolutions not zero."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    if size == "tiny":
        from tests.control_factory import build_controlnet as build_tiny

        return build_tiny(family, seed=0)          # every weight drawn afresh already
    torch.manual_seed(0)
    if size == "mid":
        unet = UNet2DConditionModel(**(MID_SD15_UNET if family == "sd15" else MID_SDXL_UNET))    # the model's
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=MID_CONTROL_EMBEDDING)
        # The inpainting UNet takes 9 channels (latents, mask, masked image); a ControlNet takes the latents.
        inpaint_in = net.conv_in
        net.conv_in = torch.nn.Conv2d(4, inpaint_in.out_channels, inpaint_in.kernel_size,
                                      padding=inpaint_in.padding)
        with torch.no_grad():
            net.conv_in.weight.copy_(inpaint_in.weight[:, :4])
            net.conv_in.bias.copy_(inpaint_in.bias)
        net.register_to_config(in_channels=4)
    else:
        from app.engine.diffusion.model_files import CONFIG_ROOT

        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            config = ControlNetModel.load_config(CONFIG_ROOT / CONTROLNET_CONFIGS[family])
            net = ControlNetModel.from_config(config)
    torch.manual_seed(1)
    for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
        conv.reset_parameters()                  # diffusers' zero_module: a ControlNet that changes nothing
    return net.eval()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", choices=SIZES)
    parser.add_argument("family", choices=("sd15", "sdxl"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--controlnet", action="store_true", help="the ControlNet of (size, family) instead")
    args = parser.parse_args()
    build_folder = controlnet_folder if args.controlnet else model_folder
    print(build_folder(args.size, args.family, args.cache, args.dtype))


if __name__ == "__main__":
    main()
