"""Turn what the user chose (panel or command line) into a frozen GenerationRequest.

The one place where styles are applied and random seeds are drawn, so Fill, Expand, the editor and the
CLI all treat them identically.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from app.core.geometry import Rect
from app.core.styles import Style, find_style
from app.engine.request import GenerationRequest, JobKind, MaskOptions, OutpaintOptions, SamplingOptions

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class JobSettings:
    prompt: str = ""
    negative_prompt: str = ""
    style: str = "None"
    model: str = "classic"
    model_config: str = ""         # single model files: a diffusers config folder ("" = by family)
    steps: int = 25
    guidance: float = 7.0
    strength: float = 1.0
    seed: int | None = None        # None draws a random seed per job
    variants: int = 1
    device: str = "auto"
    feather: int = 8


def random_seed() -> int:
    return random.SystemRandom().randrange(0, 2**32)


def _common(settings: JobSettings, styles: list[Style]) -> dict:
    if settings.device not in DEVICES:
        raise ValueError(f"unknown device '{settings.device}'; choose one of: {', '.join(DEVICES)}")
    style = find_style(styles, settings.style)
    prompt, negative = style.apply(settings.prompt, settings.negative_prompt)
    sampling = SamplingOptions(
        steps=style.steps or settings.steps,
        guidance=style.guidance if style.guidance is not None else settings.guidance,
        strength=settings.strength,
        seed=random_seed() if settings.seed is None else settings.seed,
        variants=settings.variants,
        sampler=style.sampler or SamplingOptions.sampler,
    )
    return dict(prompt=prompt, negative_prompt=negative, style=style.name, model=settings.model,
                model_config=settings.model_config, device=settings.device, sampling=sampling,
                mask_options=MaskOptions(feather=settings.feather))


def build_fill_request(image: np.ndarray, mask: np.ndarray, settings: JobSettings,
                       styles: list[Style]) -> GenerationRequest:
    return GenerationRequest(kind=JobKind.FILL, image=image, mask=mask, **_common(settings, styles))


def build_expand_request(image: np.ndarray, canvas: Rect, settings: JobSettings,
                         styles: list[Style]) -> GenerationRequest:
    # Expand always paints the new area from scratch: strength below 1 would keep the prefill's blur.
    settings = replace(settings, strength=1.0)
    return GenerationRequest(kind=JobKind.EXPAND, image=image, outpaint=OutpaintOptions(canvas),
                             **_common(settings, styles))
