"""Pixels <-> latents: the full VAE for inputs and results, a linear map for per-step previews.

The VAE decodes in its own precision; a half-precision decode that overflows (NaN or inf, the SDXL VAE
in fp16) is retried in fp32, and a result that is still not finite is an error, never a black image.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from app.engine.diffusion.denoise import on_device
from app.engine.events import EngineError

# Least-squares maps from the 4 latent channels to RGB in [-1, 1] (rows: channels; columns: R, G, B).
SD_FACTORS = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
              (-0.2120, -0.2616, -0.7177))
SDXL_FACTORS = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                (-0.3165, -0.2492, -0.2188))
SDXL_BIAS = (0.1084, -0.0175, -0.0011)
# Tiny autoencoders (AutoencoderTiny, ~2.4 M parameters) trained to decode SD / SDXL latents; used for
# previews when they are in the Hugging Face cache, never downloaded by the engine itself.
TAESD_REPOS = {False: "madebyollin/taesd", True: "madebyollin/taesdxl"}
LINEAR_PREVIEW_SCALE = 2

log = logging.getLogger(__name__)


def _scale_shift(vae) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


def encode(model, images: list[np.ndarray]) -> torch.Tensor:
    """H x W x 3 uint8 images (one size) -> (B, C, H/8, W/8) float32 latents (the distributions' means:
    deterministic). A GPU encodes them in one batch; the CPU one by one, which is faster there."""
    if model.plan.device == "cpu" and len(images) > 1:
        return torch.cat([_encode(model, [image]) for image in images])
    return _encode(model, images)


def _encode(model, images: list[np.ndarray]) -> torch.Tensor:
    vae = model.vae
    x = torch.from_numpy(np.stack([image[..., :3] for image in images])).permute(0, 3, 1, 2)   # a copy
    x = x.to(model.plan.device, torch.float32) / 127.5 - 1.0
    if model.plan.device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)     # as the VAE's weights there (model_loader)
    scale, shift = _scale_shift(vae)
    with on_device(model, [vae]), torch.inference_mode():
        latents = vae.encode(x.to(vae.dtype)).latent_dist.mean.float()
        if not torch.isfinite(latents).all() and vae.dtype != torch.float32:
            latents = _in_fp32(vae, lambda: vae.encode(x).latent_dist.mean.float())
    if not torch.isfinite(latents).all():
        raise EngineError("the VAE produced invalid values while encoding the image")
    return (latents - shift) * scale


def decode(model, latents: torch.Tensor) -> list[np.ndarray]:
    """(B, C, h, w) latents -> B images H x W x 3 uint8."""
    vae = model.vae
    scale, shift = _scale_shift(vae)
    z = latents.float() / scale + shift
    with on_device(model, [vae]), torch.inference_mode():
        images = vae.decode(z.to(vae.dtype)).sample.float()
        if not torch.isfinite(images).all() and vae.dtype != torch.float32:
            images = _in_fp32(vae, lambda: vae.decode(z).sample.float())
    if not torch.isfinite(images).all():
        raise EngineError("the VAE produced invalid values (NaN) while decoding; no result was made")
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(image) for image in images]


def _in_fp32(vae, run):
    half = vae.dtype
    vae.to(torch.float32)
    try:
        return run()
    finally:
        vae.to(half)


def make_preview(model, alpha: np.ndarray, work_size: tuple[int, int]):
    """The per-step preview for one work region: TAESD when its weights are cached, else the linear map.

    `alpha` is the region's composite alpha (float, any size): the preview is RGBA with it resized, so only
    the area being generated shows over the document.
    """
    decoder = preview_decoder(model)
    if decoder is not None:
        size = work_size
    else:
        scale = model.vae_scale // LINEAR_PREVIEW_SCALE
        size = (work_size[0] // scale, work_size[1] // scale)
    preview_alpha = np.rint(255 * cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)).astype(np.uint8)
    return TaesdPreview(decoder, preview_alpha) if decoder is not None else LinearPreview(model, preview_alpha)


def preview_decoder(model):
    """The model family's TAESD decoder if it is in the Hugging Face cache (looked up once per model)."""
    if "taesd" not in model.extra:
        model.extra["taesd"] = _load_taesd(model)
    return model.extra["taesd"]


def _load_taesd(model):
    repo = TAESD_REPOS[model.is_xl]
    try:
        import huggingface_hub
        from diffusers import AutoencoderTiny

        folder = huggingface_hub.snapshot_download(repo, local_files_only=True,
                                                   allow_patterns=["config.json", "*.safetensors"])
        decoder = AutoencoderTiny.from_pretrained(folder, torch_dtype=model.plan.dtype, local_files_only=True,
                                                  use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - not cached (the usual case) or unusable: linear previews
        log.info("no TAESD preview decoder (%s): using linear previews", type(exc).__name__)
        return None
    if decoder.config.latent_channels != model.latent_channels:
        return None
    return decoder.to(model.plan.device).eval().requires_grad_(False)


class TaesdPreview:
    """Previews decoded by TAESD at the work size, a few milliseconds per step on a GPU."""

    def __init__(self, decoder, alpha: np.ndarray) -> None:
        self.decoder = decoder
        self.alpha = alpha

    def __call__(self, x0: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            image = self.decoder.decode(x0[:1].to(self.decoder.dtype)).sample[0].float()
            rgb = ((image.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.dstack([rgb, self.alpha[:rgb.shape[0], :rgb.shape[1]]])


class LinearPreview:
    """Cheap x0 previews: a 4x3 matrix per pixel, on the device, upscaled 2x; RGBA with the given alpha."""

    def __init__(self, model, alpha: np.ndarray | None) -> None:
        factors = SDXL_FACTORS if model.is_xl else SD_FACTORS
        bias = SDXL_BIAS if model.is_xl else (0.0, 0.0, 0.0)
        device = torch.device(model.plan.device)
        self.channels = model.latent_channels
        self.factors = torch.tensor(factors, device=device)
        self.bias = torch.tensor(bias, device=device).view(3, 1, 1)
        self.alpha = alpha                    # uint8 at the preview size, or None for opaque

    def __call__(self, x0: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            latent = x0[0].float()
            if latent.shape[0] != self.channels or self.channels != 4:
                rgb = latent[:3] if latent.shape[0] >= 3 else latent[:1].expand(3, -1, -1)
            else:
                rgb = torch.einsum("chw,cr->rhw", latent, self.factors) + self.bias
            rgb = torch.nn.functional.interpolate(rgb[None], scale_factor=LINEAR_PREVIEW_SCALE, mode="bilinear",
                                                  align_corners=False)[0]
            rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        if self.alpha is None:
            return rgb
        return np.dstack([rgb, self.alpha[:rgb.shape[0], :rgb.shape[1]]])
