"""The denoising loop's pieces: x0 for previews, latent blending, samplers and step counts."""
from __future__ import annotations

import pytest
import torch

from app.engine.diffusion.denoise import _blend, _predicted_x0, steps_to_run
from app.engine.events import EngineError
from app.engine.diffusion.samplers import find_sampler, make_scheduler

SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1}


@pytest.mark.parametrize("sampler", ["euler", "euler_a", "ddim"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_x0_matches_the_schedulers_own(sampler, prediction):
    """Schedulers that report pred_original_sample must agree with the x0 the previews use."""
    scheduler = make_scheduler(sampler, {**SD_SCHEDULE, "prediction_type": prediction})
    scheduler.set_timesteps(10)
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 8, 8) * scheduler.init_noise_sigma
    for index, t in enumerate(scheduler.timesteps[:4]):
        model_input = scheduler.scale_model_input(latents, t)
        output = torch.randn_like(latents)
        ours = _predicted_x0(scheduler, prediction, model_input, output, t, index)
        step = scheduler.step(output, t, latents, generator=torch.Generator().manual_seed(index))
        torch.testing.assert_close(ours, step.pred_original_sample, rtol=1e-4, atol=1e-4)
        latents = step.prev_sample


@pytest.mark.parametrize("sampler", ["dpmpp_2m_karras", "dpmpp_2m", "unipc"])
def test_x0_of_an_exact_prediction_is_the_clean_latent(sampler):
    """With the true noise as the model's output, x0 is exactly the clean latent we started from."""
    scheduler = make_scheduler(sampler, SD_SCHEDULE)
    scheduler.set_timesteps(12)
    torch.manual_seed(1)
    clean, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for index in (0, 5, 10):
        t = scheduler.timesteps[index]
        sigma = float(scheduler.sigmas[index])
        noisy = (clean + sigma * noise) / (1 + sigma * sigma) ** 0.5      # variance-preserving input
        x0 = _predicted_x0(scheduler, "epsilon", noisy, noise, t, index)
        torch.testing.assert_close(x0, clean, rtol=1e-4, atol=1e-4)


def test_blend_keeps_zero_always_one_never_half_for_the_first_half():
    scheduler = make_scheduler("euler", SD_SCHEDULE)
    scheduler.set_timesteps(4)
    timesteps = scheduler.timesteps
    init = torch.full((1, 1, 1, 3), 5.0)
    noise = torch.zeros_like(init)
    keep = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    kept_after = []
    for index in range(4):
        scheduler._step_index = index + 1                    # as after scheduler.step
        latents = torch.full_like(init, -1.0)
        blended, _ = _blend(scheduler, latents, latents.clone(), init, noise, keep, timesteps, index)
        kept_after.append([bool(v != -1.0) for v in blended.flatten()])
    assert kept_after == [[True, True, False], [True, True, False], [True, False, False], [True, False, False]]


@pytest.mark.parametrize("steps,strength,expected", [(25, 1.0, 25), (25, 0.5, 12), (10, 0.05, 1), (4, 0.6, 2)])
def test_steps_to_run(steps, strength, expected):
    assert steps_to_run(steps, strength) == expected


def test_sampler_names_and_aliases():
    assert find_sampler("DPM++ 2M Karras").name == "dpmpp_2m_karras"
    assert find_sampler("Euler a").name == "euler_a"
    with pytest.raises(EngineError, match="unknown sampler 'plms'"):
        find_sampler("plms")


def test_scheduler_takes_the_models_prediction_type():
    scheduler = make_scheduler("dpmpp_2m_karras", {**SD_SCHEDULE, "prediction_type": "v_prediction"})
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.use_karras_sigmas
