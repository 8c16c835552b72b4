"""The bare floor of a fill: text encoding + steps x UNet forward + VAE encode/decode, nothing else.

Written directly against the components of the engine's loaded model (the same modules, device and
dtypes) and a scheduler built by app.engine.diffusion.samplers.make_scheduler (the same one the engine and the
diffusers pipeline use), so what it does not do is what the engine adds: no work-region planning, no
resizing, no latent blending, no x0 prediction, no previews, no colour-drift correction, no compositing.

For a 9-channel inpainting UNet the one VAE encode is the masked image (the conditioning); a 4-channel
UNet encodes the image instead. Prompt and negative prompt are encoded in one batch.
"""
from __future__ import annotations

import numpy as np
import torch

from app.engine.diffusion.samplers import make_scheduler


@torch.inference_mode()
def floor_fill(model, image: np.ndarray, mask: np.ndarray, prompt: str, negative: str, steps: int,
               guidance: float, sampler: str, seed: int = 0) -> np.ndarray:
    """image: H x W x 3 uint8 at the model's work size; mask: H x W uint8 (255 = fill). Returns uint8."""
    device = torch.device(model.plan.device)
    dtype = model.unet.dtype
    height, width = mask.shape
    embeddings, added = _text(model, [negative, prompt], device, dtype, (width, height))

    vae = model.vae
    scale = float(vae.config.scaling_factor)
    pixels = image if not model.inpaint else np.where(mask[..., None] >= 128, 127, image).astype(np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].to(device, torch.float32)
    latents_in = vae.encode((x / 127.5 - 1.0).to(vae.dtype)).latent_dist.mean.float() * scale
    h, w = latents_in.shape[-2:]
    condition = None
    if model.inpaint:
        small = torch.from_numpy((mask >= 128).astype(np.float32))[None, None].to(device)
        small = torch.nn.functional.interpolate(small, size=(h, w))
        condition = torch.cat([small, latents_in], dim=1).to(dtype).repeat(2, 1, 1, 1)

    scheduler = make_scheduler(sampler, model.scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn((1, 4, h, w), generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        if condition is not None:
            model_input = torch.cat([model_input, condition], dim=1)
        prediction = model.unet(model_input.to(dtype), t, encoder_hidden_states=embeddings,
                                added_cond_kwargs=added, return_dict=False)[0].float()
        unconditional, conditional = prediction.chunk(2)
        prediction = unconditional + guidance * (conditional - unconditional)
        latents = scheduler.step(prediction, t, latents, return_dict=False)[0]

    decoded = vae.decode((latents / scale).to(vae.dtype)).sample.float()
    return ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _text(model, prompts: list[str], device, dtype, size: tuple[int, int]):
    """(embeddings (2, 77, D), SDXL added conditioning or None) for [negative, prompt] in one batch."""
    hidden, pooled = [], None
    for index, (tokenizer, encoder) in enumerate(zip(model.tokenizers, model.text_encoders)):
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        if model.is_xl:
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if index == 1:
                pooled = out.text_embeds
        else:
            hidden.append(encoder(ids)[0])
    embeddings = torch.cat(hidden, dim=-1).to(dtype)
    if not model.is_xl:
        return embeddings, None
    width, height = size
    time_ids = torch.tensor([[height, width, 0, 0, height, width]] * 2, device=device, dtype=dtype)
    return embeddings, {"text_embeds": pooled.to(dtype), "time_ids": time_ids}
