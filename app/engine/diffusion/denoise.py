"""The denoising loop: latents, classifier-free guidance, inpainting conditioning, ControlNet residuals
(app.engine.diffusion.control) and latent blending.

One call denoises a batch of variants of one work region. After every step it hands the predicted clean
latent (x0) to `on_step`, which previews it, honours a cancel, or asks to stop early and keep x0.

Inpainting works with both kinds of UNet:
  * 9-channel inpainting UNets get [latents, mask, masked-image latents] concatenated on every step;
  * every UNet gets soft latent blending: after step i of n the original latents, re-noised to the next
    timestep, replace the new ones wherever the keep map is <= 1 - (i + 1) / n. A map value of 0 is kept
    on every step, 1 never, 0.5 for the first half: a feathered mask becomes a per-pixel strength.

Every step's UNet prediction is checked for NaN or infinity (damaged UNet weights), so that the error names
the UNet rather than the VAE that would decode the result.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from app.engine.diffusion.control import control_residuals, embeddings_made_once
from app.engine.diffusion.samplers import find_sampler, make_scheduler
from app.engine.diffusion.text_encoding import TextConditioning, blend, encode_prompts, invalid_values, zeros_like
from app.engine.events import EngineError

StepCallback = Callable[[int, int, torch.Tensor], bool]   # (step, total, x0) -> True to stop early


@dataclass
class DenoiseJob:
    init_latents: torch.Tensor              # (1 or B, C, h, w) the encoded (prefilled) region
    strength_map: torch.Tensor | None       # (1, 1, h, w) in [0, 1]: 1 = generate freely, 0 = keep
    inpaint_condition: torch.Tensor | None  # (1 or B, 1 + C, h, w) mask + masked-image latents (9-channel UNets)
    prompt: str
    negative_prompt: str
    guidance: float
    steps: int
    strength: float
    sampler: str
    seeds: list[int]
    pixel_size: tuple[int, int]             # (width, height) of the work region: SDXL's size conditioning
    # A style below full strength: the same prompts without the style, and the strength. The conditioning
    # is lerp(unstyled, styled, style_strength); at 0 only the unstyled prompts are encoded, at 1 only the
    # styled ones, so both ends are exactly "no style" and "the style".
    base_prompt: str | None = None
    base_negative_prompt: str | None = None
    style_strength: float = 1.0
    pure_noise: bool = False                # start from noise alone (a full-strength Fill: no ghost of
                                            # what is being removed); else the re-noised init latents
    controls: list = field(default_factory=list)   # control.ActiveControl: ControlNets guiding every step
    image_embeds: list = field(default_factory=list)   # IP-Adapter references: (2 or 1, tokens.., dim) each


def steps_to_run(steps: int, strength: float) -> int:
    return max(1, min(steps, int(round(steps * strength))))


def run_denoise(model, job: DenoiseJob, on_step: StepCallback) -> tuple[torch.Tensor, int]:
    """Denoise `len(job.seeds)` variants; returns (x0 latents of the last step run, steps run)."""
    device = torch.device(model.plan.device)
    dtype = model.unet.dtype
    with on_device(model, model.text_encoders):
        cond, uncond = _conditioning(model, job, device)
    guided = job.guidance > 1.0
    batch = len(job.seeds)

    scheduler = make_scheduler(job.sampler, model.scheduler_config)
    scheduler.set_timesteps(job.steps, device=device)
    count = steps_to_run(job.steps, job.strength)
    begin = (job.steps - count) * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)

    init = job.init_latents.to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1)   # 1 or batch
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in job.seeds]
    noise = torch.cat([torch.randn(init.shape[1:], generator=g, dtype=torch.float32)[None] for g in generators])
    noise = noise.to(device)
    if job.pure_noise and count == job.steps:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
    keep = None if job.strength_map is None else job.strength_map.to(device=device, dtype=torch.float32)

    embeddings = _batched(cond, uncond, batch, guided)
    class_labels = None
    if cond.class_labels is not None:
        if job.controls or job.image_embeds:
            raise EngineError(f"{model.name} is a class-conditioned model, which takes no ControlNet or reference "
                              "images")
        class_labels = cond.class_labels.expand(batch)
        if guided:
            class_labels = torch.cat([uncond.class_labels.expand(batch), class_labels])
    added = None
    if model.is_xl:
        width, height = job.pixel_size
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=dtype)
        pooled = torch.cat([uncond.pooled.expand(batch, -1), cond.pooled.expand(batch, -1)]) if guided \
            else cond.pooled.expand(batch, -1)
        added = {"text_embeds": pooled, "time_ids": time_ids.expand(pooled.shape[0], -1)}
    unet_added = added
    if job.image_embeds:
        unet_added = dict(added or {})
        unet_added["image_embeds"] = [_batched_embeds(e.to(device=device, dtype=dtype), batch, guided)
                                      for e in job.image_embeds]
    condition = None
    if job.inpaint_condition is not None:
        condition = job.inpaint_condition.to(device=device, dtype=dtype).expand(batch, -1, -1, -1)
        if guided:
            condition = torch.cat([condition, condition])
    step_options = {"generator": generators} if find_sampler(job.sampler).ancestral else {}

    x0 = init
    nets = [control.net for control in job.controls]
    with on_device(model, [model.unet, *nets]), embeddings_made_once(job.controls):
        for index, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            scaled = model_input[:batch]
            down = mid = None
            if job.controls:
                down, mid = control_residuals(job.controls, model_input, t, embeddings, added, batch, guided,
                                              index, len(timesteps))
            if condition is not None:
                model_input = torch.cat([model_input, condition], dim=1)
            prediction = model.unet(model_input.to(dtype), t, encoder_hidden_states=embeddings,
                                    class_labels=class_labels,
                                    added_cond_kwargs=unet_added, down_block_additional_residuals=down,
                                    mid_block_additional_residual=mid, return_dict=False)[0].float()
            finite = torch.isfinite(prediction).all()
            if guided:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + job.guidance * (conditional - unconditional)
            x0 = _predicted_x0(scheduler, model.prediction_type, scaled, prediction, t, begin + index)
            latents = scheduler.step(prediction, t, latents, return_dict=False, **step_options)[0]
            if keep is not None:
                latents, x0 = _blend(scheduler, latents, x0, init, noise, keep, timesteps, index)
            stop = on_step(index + 1, len(timesteps), x0)
            # Read after the preview of x0, which waits for this step already: no device wait of its own.
            if not bool(finite):
                raise invalid_values("the UNet", model, f" at step {index + 1} of {len(timesteps)}")
            if stop:
                return x0, index + 1
    return x0, len(timesteps)


def _conditioning(model, job: DenoiseJob, device) -> tuple[TextConditioning, TextConditioning]:
    """(positive, negative) conditioning; a style below full strength blends the unstyled and styled."""
    styled = [job.prompt, job.negative_prompt]
    base = [job.prompt if job.base_prompt is None else job.base_prompt,
            job.negative_prompt if job.base_negative_prompt is None else job.base_negative_prompt]
    strength = job.style_strength
    if base == styled or strength >= 1.0:
        return tuple(_encoded(model, styled, device))
    if strength <= 0.0:
        return tuple(_encoded(model, base, device))
    base_cond, base_uncond, cond, uncond = _encoded(model, base + styled, device)   # one call: same lengths
    return blend(base_cond, cond, strength), blend(base_uncond, uncond, strength)


def _encoded(model, prompts: list[str], device) -> list[TextConditioning]:
    """encode_prompts, with SDXL's zero conditioning for an empty negative prompt (every second prompt)."""
    encoded = encode_prompts(model, prompts, device)
    if model.is_xl:
        encoded = [zeros_like(c) if index % 2 and not prompts[index].strip() else c
                   for index, c in enumerate(encoded)]
    return encoded


def _batched(cond: TextConditioning, uncond: TextConditioning, batch: int, guided: bool) -> torch.Tensor:
    positive = cond.embeddings.expand(batch, -1, -1)
    return torch.cat([uncond.embeddings.expand(batch, -1, -1), positive]) if guided else positive


def _batched_embeds(embeds: torch.Tensor, batch: int, guided: bool) -> torch.Tensor:
    """One reference's embeddings, (negative, positive) or (positive,), repeated for every variant."""
    if not guided:
        return embeds[-1:].expand(batch, *embeds.shape[1:])
    negative, positive = embeds[:1], embeds[1:2]
    return torch.cat([negative.expand(batch, *embeds.shape[1:]), positive.expand(batch, *embeds.shape[1:])])


def _predicted_x0(scheduler, prediction_type: str, sample: torch.Tensor, prediction: torch.Tensor, t,
                  sigma_index: int) -> torch.Tensor:
    """The clean latent the model predicts, from the UNet's (variance-preserving) input at this step."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > sigma_index:
        sigma = float(sigmas[sigma_index])
        alpha_bar = 1.0 / (1.0 + sigma * sigma)
    else:
        alpha_bar = float(scheduler.alphas_cumprod[int(t)])
    a, s = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
    if prediction_type == "v_prediction":
        return a * sample - s * prediction
    if prediction_type == "sample":
        return prediction
    return (sample - s * prediction) / a


def _blend(scheduler, latents, x0, init, noise, keep, timesteps, index):
    """Put the original back where the strength map says it is still kept after this step."""
    remaining = len(timesteps) - index - 1
    threshold = remaining / len(timesteps)
    kept = (keep <= threshold).to(latents.dtype)
    if remaining > 0:
        original = scheduler.add_noise(init, noise, timesteps[index + 1:index + 2].repeat(init.shape[0]))
    else:
        original = init
    latents = latents * (1 - kept) + original * kept
    x0 = x0 * (1 - kept) + init * kept
    return latents, x0


@contextmanager
def on_device(model, modules: list):
    """With CPU offload, move `modules` to the device only while they run."""
    if not model.plan.offload:
        yield
        return
    for module in modules:
        module.to(model.plan.device)
    try:
        yield
    finally:
        for module in modules:
            module.to("cpu")
        from app.engine.diffusion.devices import free_device_memory

        free_device_memory(model.plan.device)
