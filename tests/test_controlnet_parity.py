"""Our denoising loop with ControlNets equals diffusers' ControlNet pipelines on the same tiny models.

Both sides get the same model (loaded by our loader), the same ControlNet, prompts, seed, sampler and
control image; the VAE's latent sampling is pinned to its mean on the pipeline side (our encoder uses the
mean). Compared: the pipeline's final latents (output_type="latent") and our last x0, which for Euler's last
step to sigma 0 are the same quantity: float rounding only.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
)
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from app.engine.diffusion.control import ActiveControl
from app.engine.diffusion.denoise import DenoiseJob, run_denoise
from app.engine.diffusion.devices import plan_device
from app.engine.diffusion.model_files import resolve_source
from app.engine.diffusion.model_loader import load_model
from app.engine.diffusion.samplers import make_scheduler
from tests.control_factory import build_controlnet

SIZE = 64                    # pixels: 8 x 8 latents
STEPS = 4
PROMPT, NEGATIVE = "a red barn in the snow", "blurry"
SEED = 11
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def loaded(tiny_models):
    cache = {}

    def get(family: str, inpaint: bool):
        if (family, inpaint) not in cache:
            source = resolve_source(str(tiny_models.path(family, inpaint, "folder")))
            cache[family, inpaint] = load_model(source, plan_device("cpu", "float32", "off"))
        return cache[family, inpaint]
    return get


@pytest.fixture(scope="module")
def controlnets():
    return {family: build_controlnet(family, seed=3).eval() for family in ("sd15", "sdxl")}


@pytest.fixture(autouse=True)
def mean_latents(monkeypatch):
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)


def _image(seed: int) -> torch.Tensor:
    """(1, 3, SIZE, SIZE) in [0, 1]."""
    return torch.rand((1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def _mask() -> torch.Tensor:
    """(1, 1, SIZE, SIZE): 1 in a box whose edges fall on latent cells."""
    mask = torch.zeros((1, 1, SIZE, SIZE))
    mask[..., 16:48, 8:40] = 1.0
    return mask


def _encode(model, image01: torch.Tensor, hole: torch.Tensor | None = None) -> torch.Tensor:
    """The latents diffusers makes of an image in [0, 1]; with `hole`, of the masked image (0 in [-1, 1])."""
    pixels = image01 * 2 - 1
    if hole is not None:
        pixels = pixels * (hole < 0.5)
    vae = model.vae
    return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor


def _pipeline(cls, model, controlnet):
    parts = dict(vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
                 controlnet=controlnet, scheduler=make_scheduler("euler", model.scheduler_config))
    if model.is_xl:
        parts.update(text_encoder_2=model.text_encoders[1], tokenizer_2=model.tokenizers[1], add_watermarker=False)
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ours(model, controlnet, control_image, *, init, strength_map=None, condition=None, strength=1.0,
          weight=1.0, start=0.0, end=1.0, guess=False, guidance=6.0):
    controls = [ActiveControl(controlnet, control_image, weight, start, end, guess)]
    job = DenoiseJob(init, strength_map, condition, PROMPT, NEGATIVE, guidance, STEPS, strength, "euler", [SEED],
                     (SIZE, SIZE), pure_noise=True, controls=controls)
    with torch.inference_mode():
        x0, ran = run_denoise(model, job, lambda step, total, x0: False)
    assert ran == round(STEPS * strength)
    return x0


def _inpaint_inputs(model):
    image, mask = _image(1), _mask()
    with torch.inference_mode():
        init = _encode(model, image)
        masked = _encode(model, image, mask)
    cells = torch.nn.functional.interpolate(mask, size=(SIZE // 8, SIZE // 8))
    return image, mask, init, cells, torch.cat([cells, masked], dim=1)


@pytest.mark.parametrize("inpaint", [False, True], ids=["4-channel", "9-channel"])
@pytest.mark.parametrize("guess", [False, True], ids=["prompt", "guess-mode"])
def test_sd15_controlnet_inpaint_equals_diffusers(loaded, controlnets, inpaint, guess):
    model, net = loaded("sd15", inpaint), controlnets["sd15"]
    image, mask, init, cells, condition = _inpaint_inputs(model)
    control = _image(2)
    with torch.inference_mode():
        theirs = _pipeline(StableDiffusionControlNetInpaintPipeline, model, net)(
            PROMPT, image=image, mask_image=mask, control_image=control, height=SIZE, width=SIZE,
            num_inference_steps=STEPS, guidance_scale=6.0, negative_prompt=NEGATIVE, strength=1.0,
            controlnet_conditioning_scale=0.8, control_guidance_start=0.25, control_guidance_end=1.0,
            guess_mode=guess, generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    ours = _ours(model, net, control, init=init, strength_map=None if inpaint else cells,
                 condition=condition if inpaint else None, weight=0.8, start=0.25, guess=guess)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_sd15_controlnet_img2img_equals_diffusers(loaded, controlnets):
    model, net = loaded("sd15", False), controlnets["sd15"]
    image, control = _image(4), _image(5)
    with torch.inference_mode():
        init = _encode(model, image)
        theirs = _pipeline(StableDiffusionControlNetImg2ImgPipeline, model, net)(
            PROMPT, image=image, control_image=control, height=SIZE, width=SIZE, num_inference_steps=STEPS,
            guidance_scale=6.0, negative_prompt=NEGATIVE, strength=0.75, controlnet_conditioning_scale=1.2,
            control_guidance_start=0.0, control_guidance_end=0.5,
            generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    ours = _ours(model, net, control, init=init, strength=0.75, weight=1.2, end=0.5)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


@pytest.mark.parametrize("inpaint", [False, True], ids=["4-channel", "9-channel"])
def test_sdxl_controlnet_inpaint_equals_diffusers(loaded, controlnets, inpaint):
    model, net = loaded("sdxl", inpaint), controlnets["sdxl"]
    image, mask, init, cells, condition = _inpaint_inputs(model)
    control = _image(6)
    with torch.inference_mode():
        theirs = _pipeline(StableDiffusionXLControlNetInpaintPipeline, model, net)(
            PROMPT, image=image, mask_image=mask, control_image=control, height=SIZE, width=SIZE,
            num_inference_steps=STEPS, guidance_scale=6.0, negative_prompt=NEGATIVE, strength=1.0,
            controlnet_conditioning_scale=0.7, generator=torch.Generator().manual_seed(SEED),
            output_type="latent").images
    ours = _ours(model, net, control, init=init, strength_map=None if inpaint else cells,
                 condition=condition if inpaint else None, weight=0.7)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_weight_zero_and_a_range_outside_the_run_equal_no_controlnet_exactly(loaded, controlnets, family):
    model, net = loaded(family, False), controlnets[family]
    image, control = _image(7), _image(8)
    with torch.inference_mode():
        init = _encode(model, image)
    job = DenoiseJob(init, None, None, PROMPT, NEGATIVE, 6.0, STEPS, 1.0, "euler", [SEED], (SIZE, SIZE),
                     pure_noise=True)
    with torch.inference_mode():
        none, _ = run_denoise(model, job, lambda *a: False)
    zero = _ours(model, net, control, init=init, weight=0.0)
    empty_range = _ours(model, net, control, init=init, start=1.0, end=1.0)
    full = _ours(model, net, control, init=init)
    assert torch.equal(zero, none) and torch.equal(empty_range, none)
    assert (full - none).abs().max() > 1e-3           # and the ControlNet does guide when it is on


def test_two_controlnets_sum_their_residuals_as_diffusers_multi_controlnet(loaded, controlnets):
    model = loaded("sd15", False)
    first, second = controlnets["sd15"], build_controlnet("sd15", seed=9).eval()
    image, mask, init, cells, _ = _inpaint_inputs(model)
    a, b = _image(10), _image(12)
    with torch.inference_mode():
        theirs = _pipeline(StableDiffusionControlNetInpaintPipeline, model, [first, second])(
            PROMPT, image=image, mask_image=mask, control_image=[a, b], height=SIZE, width=SIZE,
            num_inference_steps=STEPS, guidance_scale=6.0, negative_prompt=NEGATIVE, strength=1.0,
            controlnet_conditioning_scale=[0.6, 1.1], control_guidance_start=[0.0, 0.5],
            control_guidance_end=[0.5, 1.0], generator=torch.Generator().manual_seed(SEED),
            output_type="latent").images
    controls = [ActiveControl(first, a, 0.6, 0.0, 0.5), ActiveControl(second, b, 1.1, 0.5, 1.0)]
    job = DenoiseJob(init, cells, None, PROMPT, NEGATIVE, 6.0, STEPS, 1.0, "euler", [SEED], (SIZE, SIZE),
                     pure_noise=True, controls=controls)
    with torch.inference_mode():
        ours, _ = run_denoise(model, job, lambda *a: False)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_a_control_image_is_embedded_once_per_run_not_on_every_step(loaded, controlnets, monkeypatch):
    model, net = loaded("sd15", False), controlnets["sd15"]
    calls = []
    embedding = type(net.controlnet_cond_embedding)
    original = embedding.forward
    monkeypatch.setattr(embedding, "forward", lambda self, cond: calls.append(cond.shape[0]) or original(self, cond))
    image, control = _image(13), _image(14)
    with torch.inference_mode():
        init = _encode(model, image)
    _ours(model, net, control, init=init)
    assert calls == [1]                                      # one image, once, for all steps and both halves
    assert "forward" not in vars(net.controlnet_cond_embedding)     # the module is as it was afterwards


def test_an_sdxl_union_controlnet_equals_diffusers_union_inpaint_pipeline(loaded):
    from diffusers import StableDiffusionXLControlNetUnionInpaintPipeline

    from app.engine.diffusion.control import union_mode_for
    from tests.control_factory import build_union_controlnet

    model, net = loaded("sdxl", False), build_union_controlnet(seed=4)
    image, mask, init, cells, _ = _inpaint_inputs(model)
    control = _image(15)
    mode = union_mode_for(net, "canny")
    with torch.inference_mode():
        theirs = _pipeline(StableDiffusionXLControlNetUnionInpaintPipeline, model, net)(
            PROMPT, image=image, mask_image=mask, control_image=[control], control_mode=[mode], height=SIZE,
            width=SIZE, num_inference_steps=STEPS, guidance_scale=6.0, negative_prompt=NEGATIVE, strength=1.0,
            controlnet_conditioning_scale=0.9, generator=torch.Generator().manual_seed(SEED),
            output_type="latent").images
    controls = [ActiveControl(net, control, 0.9, 0.0, 1.0, union_mode=mode)]
    job = DenoiseJob(init, cells, None, PROMPT, NEGATIVE, 6.0, STEPS, 1.0, "euler", [SEED], (SIZE, SIZE),
                     pure_noise=True, controls=controls)
    with torch.inference_mode():
        ours, _ = run_denoise(model, job, lambda *a: False)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)
    with pytest.raises(Exception, match="no inpaint mode"):
        union_mode_for(build_union_controlnet(modes=6), "inpaint")
