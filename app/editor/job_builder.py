"""Turn what the user chose (panel or command line) into a frozen GenerationRequest.

The one place where styles are applied and random seeds are drawn, so Fill, Expand, Restyle, the editor
and the CLI all treat them identically. A style strength s in [0, 1] scales the style: the request carries
the styled and the unstyled prompts, s and the style's LoRA (StyleOptions); the style's sampler, steps and
guidance apply when s > 0. At s = 0 the request generates exactly what style "None" would.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from app.core.geometry import Rect
from app.core.styles import Style, find_style, unstyled
from app.engine.request import (ControlInput, GenerationRequest, JobKind, MaskOptions, OutpaintOptions, ServerInput,
                                ReferenceInput, SamplingOptions, StyleOptions)

DEVICES = ("auto", "cpu", "cuda", "mps")
RESTYLE_STRENGTH = 0.55        # repaints the surface, keeps the composition


@dataclass(frozen=True)
class JobSettings:
    prompt: str = ""
    negative_prompt: str = ""
    style: str = "None"
    style_strength: float = 1.0    # 0 = no style at all .. 1 = the full style
    model: str = "classic"
    model_config: str = ""         # single model files: a diffusers config folder ("" = by family)
    steps: int = 25
    guidance: float = 7.0
    strength: float = 1.0          # Fill's img2img strength (Expand always uses 1)
    restyle_strength: float = RESTYLE_STRENGTH   # Restyle's: how much of the image is repainted
    seed: int | None = None        # None draws a random seed per job
    variants: int = 1
    device: str = "auto"
    precision: str = "auto"
    memory_saving: str = "auto"
    feather: int = 8
    controls: tuple[ControlInput, ...] = ()   # ControlNets, their images already in output coordinates
    references: tuple[ReferenceInput, ...] = ()   # IP-Adapter reference images
    ip_adapter: str = ""
    image_encoder: str = ""
    servers: tuple[ServerInput, ...] = ()   # ComfyUI servers a "NAME@SERVER" model spreads its variants over
    keep_structure: bool = False   # Restyle: guided by a canny ControlNet of the model's family (the editor)


def fit_control_image(control: np.ndarray, image_shape: tuple[int, ...], output: Rect, name: str) -> np.ndarray:
    """A control image (`name` in messages) in the output's coordinates: one of the output's size as it is;
    one of the input image's size, on an Expand, placed where the image lies on the canvas (black around it,
    which guides nothing); any other size is refused in one line."""
    height, width = control.shape[:2]
    if (width, height) == (output.w, output.h):
        return control
    if (height, width) == tuple(image_shape[:2]):
        placed = np.zeros((output.h, output.w, control.shape[2]), np.uint8)
        placed[-output.y:-output.y + height, -output.x:-output.x + width] = control
        return placed
    wanted = f"{image_shape[1]}x{image_shape[0]}"
    if (output.w, output.h) != (image_shape[1], image_shape[0]):
        wanted += f" (the image) or {output.w}x{output.h} (the expanded canvas)"
    raise ValueError(f"{name} is {width}x{height}; a control image must be {wanted}")


def random_seed() -> int:
    return random.SystemRandom().randrange(0, 2**32)


def _common(settings: JobSettings, styles: list[Style]) -> dict:
    if settings.device not in DEVICES:
        raise ValueError(f"unknown device '{settings.device}'; choose one of: {', '.join(DEVICES)}")
    style = find_style(styles, settings.style)
    strength = settings.style_strength
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"style strength must be between 0 and 1, got {strength:g}")
    prompt, negative = style.apply(settings.prompt, settings.negative_prompt)
    base_prompt, base_negative = unstyled(settings.prompt, settings.negative_prompt)
    styled = strength > 0        # the style's own sampling settings apply unless it is switched off
    sampling = SamplingOptions(
        steps=(style.steps if styled else None) or settings.steps,
        guidance=style.guidance if styled and style.guidance is not None else settings.guidance,
        strength=settings.strength,
        seed=random_seed() if settings.seed is None else settings.seed,
        variants=settings.variants,
        sampler=(style.sampler if styled else None) or SamplingOptions.sampler,
    )
    options = StyleOptions(name=style.name, strength=strength, base_prompt=base_prompt,
                           base_negative_prompt=base_negative, lora=style.lora or "",
                           lora_weight=style.lora_weight)
    return dict(prompt=prompt, negative_prompt=negative, style=options, model=settings.model,
                model_config=settings.model_config, device=settings.device, precision=settings.precision,
                memory_saving=settings.memory_saving, sampling=sampling,
                mask_options=MaskOptions(feather=settings.feather), controls=settings.controls,
                references=settings.references, ip_adapter=settings.ip_adapter, image_encoder=settings.image_encoder,
                servers=settings.servers)


def build_fill_request(image: np.ndarray, mask: np.ndarray, settings: JobSettings,
                       styles: list[Style]) -> GenerationRequest:
    return GenerationRequest(kind=JobKind.FILL, image=image, mask=mask, **_common(settings, styles))


def build_expand_request(image: np.ndarray, canvas: Rect, settings: JobSettings,
                         styles: list[Style]) -> GenerationRequest:
    # Expand always paints the new area from scratch: strength below 1 would keep the prefill's blur.
    settings = replace(settings, strength=1.0)
    return GenerationRequest(kind=JobKind.EXPAND, image=image, outpaint=OutpaintOptions(canvas),
                             **_common(settings, styles))


def build_restyle_request(image: np.ndarray, settings: JobSettings, styles: list[Style]) -> GenerationRequest:
    """img2img of the whole image at settings.restyle_strength: the style repaints it, the structure stays."""
    settings = replace(settings, strength=settings.restyle_strength)
    return GenerationRequest(kind=JobKind.RESTYLE, image=image, **_common(settings, styles))
