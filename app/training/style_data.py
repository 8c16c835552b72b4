"""A style training's data, made once before the first step: each image cropped to its training shape and
encoded by the VAE (the latent distribution kept, so every step draws a fresh latent from it), the captions'
text conditionings, the class images of prior preservation, and the samples drawn along the way."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.training.dataset import TrainingImage, bucket_for, centre_crop, cover, to_tensor, with_trigger
from app.training.progress import Report, TrainingEvent
from app.training.style_settings import StyleTrainingSettings

DEFAULT_CLASS_PROMPT = "an image"
CLASS_IMAGES_PER_IMAGE, MIN_CLASS_IMAGES = 5, 20
SAMPLE_GUIDANCE = 7.0
SAMPLER = "euler"


@dataclass
class Example:
    mean: torch.Tensor               # (C, h, w) the VAE's latent distribution for the crop (CPU, fp32)
    std: torch.Tensor
    pixels: torch.Tensor             # (3, H, W) in [-1, 1]: the masked image of inpainting UNets
    caption: str


@dataclass
class Batch:
    examples: list[Example]
    scale: float
    shift: float

    def latents(self, generator: torch.Generator) -> torch.Tensor:
        drawn = [e.mean + e.std * torch.randn(e.mean.shape, generator=generator) for e in self.examples]
        return (torch.stack(drawn) - self.shift) * self.scale

    @property
    def captions(self) -> list[str]:
        return [example.caption for example in self.examples]

    @property
    def pixel_size(self) -> tuple[int, int]:
        return int(self.examples[0].pixels.shape[2]), int(self.examples[0].pixels.shape[1])


@dataclass
class Examples:
    """Examples grouped by shape (a batch is of one shape)."""
    by_shape: dict = field(default_factory=dict)     # (w, h) -> [Example]
    scale: float = 1.0
    shift: float = 0.0

    def add(self, example: Example) -> None:
        self.by_shape.setdefault((int(example.pixels.shape[2]), int(example.pixels.shape[1])), []).append(example)

    def pick(self, size: int, generator: torch.Generator) -> Batch:
        shapes = sorted(self.by_shape)
        counts = torch.tensor([len(self.by_shape[s]) for s in shapes], dtype=torch.float64)
        shape = shapes[int(torch.multinomial(counts, 1, generator=generator))]
        group = self.by_shape[shape]
        chosen = torch.randint(0, len(group), (size,), generator=generator).tolist() if size < len(group) or \
            len(group) == 1 else torch.randperm(len(group), generator=generator)[:size].tolist()
        return Batch([group[i] for i in chosen], self.scale, self.shift)


@dataclass
class StyleData:
    names: list[str]
    resolution: int
    scheduler: object
    instance: Examples
    classes: Examples | None
    sample_prompt: str
    model: object = None
    cached: dict = field(default_factory=dict)           # caption -> TextConditioning (frozen text encoders)

    def conditioning(self, batch: Batch, train_text: bool) -> tuple[torch.Tensor, dict | None]:
        """The batch's text embeddings and (SDXL) added conditioning: fresh from the text encoders while
        they train, else the ones encoded at the start."""
        from app.engine.diffusion.text_encoding import encode_prompts

        model = self.model
        device = torch.device(model.plan.device)
        conds = encode_prompts(model, batch.captions, device) if train_text else \
            [self.cached[caption] for caption in batch.captions]
        embeddings = torch.cat([c.embeddings for c in conds])
        if not model.is_xl:
            return embeddings, None
        width, height = batch.pixel_size
        time_ids = torch.tensor([[height, width, 0, 0, height, width]] * len(conds), device=device,
                                dtype=model.unet.dtype)
        return embeddings, {"text_embeds": torch.cat([c.pooled for c in conds]), "time_ids": time_ids}


def prepare(model, images: list[TrainingImage], s: StyleTrainingSettings, report: Report) -> StyleData:
    from diffusers import DDPMScheduler

    from app.engine.diffusion.text_encoding import encode_prompts

    resolution = s.resolution or model.native_size
    scale, shift = float(model.vae.config.scaling_factor), float(getattr(model.vae.config, "shift_factor", 0) or 0)
    report(TrainingEvent("note", message=f"Encoding {len(images)} images at {resolution} px…"))
    instance = Examples(scale=scale, shift=shift)
    for image in images:
        if s.crop == "buckets":
            crop = cover(image.pixels, *bucket_for(image.pixels.shape[1], image.pixels.shape[0], resolution))
        else:
            crop = centre_crop(image.pixels, resolution)
        instance.add(_example(model, crop, with_trigger(image.caption, s.trigger)))
    first = images[0].caption
    sample_prompt = s.sample_prompt.strip() or with_trigger(first, s.trigger) or "a picture"
    class_prompt = s.class_prompt.strip() or DEFAULT_CLASS_PROMPT
    prompts = sorted({e.caption for group in instance.by_shape.values() for e in group} | {class_prompt})
    with torch.no_grad():
        cached = dict(zip(prompts, encode_prompts(model, prompts, torch.device(model.plan.device))))
    data = StyleData([image.name for image in images], resolution,
                     DDPMScheduler.from_config(_training_schedule(model.scheduler_config)), instance, None,
                     sample_prompt, model, cached)
    if s.prior_preservation:
        data.classes = _class_examples(model, data, s, class_prompt, len(images), report)
    return data


def _training_schedule(config: dict) -> dict:
    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "rescale_betas_zero_snr")
    return {key: value for key, value in config.items() if key in keep}


def _example(model, crop: np.ndarray, caption: str) -> Example:
    pixels = to_tensor(crop)
    vae = model.vae
    with torch.no_grad():
        dist = vae.encode(pixels[None].to(model.plan.device, vae.dtype)).latent_dist
    mean, std = dist.mean[0].float().cpu(), dist.std[0].float().cpu()
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        from app.engine.events import EngineError

        raise EngineError("the VAE produced invalid values while encoding a training image")
    return Example(mean, std, pixels, caption)


def _class_examples(model, data: StyleData, s: StyleTrainingSettings, prompt: str, count: int,
                    report: Report) -> Examples:
    """Images of the class the model itself makes (prior preservation), kept in class_images/ so a resumed
    run reuses them."""
    from app.core.imageio import ImageLoadError, load_image, save_image

    wanted = s.class_images or max(MIN_CLASS_IMAGES, CLASS_IMAGES_PER_IMAGE * count)
    folder = Path(s.out).expanduser() / "class_images"
    folder.mkdir(parents=True, exist_ok=True)
    examples = Examples(scale=data.instance.scale, shift=data.instance.shift)
    for index in range(wanted):
        path = folder / f"class-{index:04d}.png"
        try:
            pixels = load_image(path).pixels[..., :3]
            if pixels.shape[:2] != (data.resolution, data.resolution):
                raise ImageLoadError("another size")
        except (ImageLoadError, OSError):
            report(TrainingEvent("note", message=f"Making class image {index + 1} of {wanted} ('{prompt}')…"))
            pixels = generate(model, data, prompt, s.seed + 10_000 + index, s.sample_steps)
            save_image(path, pixels)
        examples.add(_example(model, pixels, prompt))
    return examples


def inpaint_condition(model, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    """(B, 1 + C, h, w): a random mask (all of it, a rectangle, or a band along one edge, as Fill and Expand
    paint them) and the latents of the image with the masked part blanked."""
    from torch.nn.functional import interpolate

    pixels = torch.stack([e.pixels for e in batch.examples])
    b, _, height, width = pixels.shape
    h, w = height // model.vae_scale, width // model.vae_scale
    masks = torch.zeros(b, 1, h, w)
    for i in range(b):
        kind = float(torch.rand((), generator=generator))
        if kind < 0.25:
            masks[i] = 1
        elif kind < 0.75:
            mh, mw = (int(torch.randint(max(1, n // 4), n + 1, (), generator=generator)) for n in (h, w))
            top, left = int(torch.randint(0, h - mh + 1, (), generator=generator)), \
                int(torch.randint(0, w - mw + 1, (), generator=generator))
            masks[i, :, top:top + mh, left:left + mw] = 1
        else:
            side, depth = int(torch.randint(0, 4, (), generator=generator)), \
                int(torch.randint(max(1, min(h, w) // 8), max(2, min(h, w) // 2), (), generator=generator))
            region = {0: (slice(None), slice(0, depth)), 1: (slice(None), slice(w - depth, w)),
                      2: (slice(0, depth), slice(None)), 3: (slice(h - depth, h), slice(None))}[side]
            masks[i, :, region[0], region[1]] = 1
    masked = pixels * (1 - interpolate(masks, size=(height, width), mode="nearest"))
    return torch.cat([masks, _encode_mean(model, masked)], dim=1)


def _encode_mean(model, pixels: torch.Tensor) -> torch.Tensor:
    vae = model.vae
    scale, shift = float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", 0) or 0)
    with torch.no_grad():
        latents = vae.encode(pixels.to(model.plan.device, vae.dtype)).latent_dist.mean.float().cpu()
    return (latents - shift) * scale


def generate(model, data: StyleData, prompt: str, seed: int, steps: int) -> np.ndarray:
    """One image of `prompt` from pure noise at the training resolution, through the editor's own denoising
    loop (with the LoRA as trained so far)."""
    from app.engine.diffusion.denoise import DenoiseJob, run_denoise
    from app.engine.diffusion.latent_codec import decode

    size = data.resolution
    h = w = size // model.vae_scale
    condition = None
    if model.inpaint:
        grey = torch.zeros(1, 3, size, size)
        condition = torch.cat([torch.ones(1, 1, h, w), _encode_mean(model, grey)], dim=1)
    job = DenoiseJob(init_latents=torch.zeros(1, model.latent_channels, h, w), strength_map=None,
                     inpaint_condition=condition, prompt=prompt, negative_prompt="", guidance=SAMPLE_GUIDANCE,
                     steps=steps, strength=1.0, sampler=SAMPLER, seeds=[seed], pixel_size=(size, size),
                     pure_noise=True)
    with torch.no_grad():
        x0, _ = run_denoise(model, job, lambda step, total, latents: False)
        return decode(model, x0)[0]


def sample(model, data: StyleData, s: StyleTrainingSettings) -> np.ndarray:
    """The run's sample: the sample prompt at the run's seed, the same every time, so samples compare."""
    return generate(model, data, data.sample_prompt, s.seed, s.sample_steps)
