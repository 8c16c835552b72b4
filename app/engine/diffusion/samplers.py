"""Sampler names (what styles, the panel and the CLI say) and the diffusers schedulers behind them."""
from __future__ import annotations

from dataclasses import dataclass

from app.engine.diffusion.config_folder import check_part_config
from app.engine.events import EngineError


@dataclass(frozen=True)
class Sampler:
    name: str
    label: str                     # A1111's name, written into PNG parameters
    scheduler: str                 # diffusers class
    options: tuple = ()            # extra config values
    ancestral: bool = False        # adds fresh noise each step (needs the generators)


SAMPLERS = {s.name: s for s in (
    Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", True))),
    Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", False))),
    Sampler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler", (), True),
    Sampler("euler", "Euler", "EulerDiscreteScheduler"),
    Sampler("ddim", "DDIM", "DDIMScheduler", (("clip_sample", False), ("set_alpha_to_one", False))),
    Sampler("unipc", "UniPC", "UniPCMultistepScheduler"),
)}
# Names other tools write, so styles and pasted settings work.
ALIASES = {"dpm++ 2m karras": "dpmpp_2m_karras", "dpm++ 2m": "dpmpp_2m", "euler a": "euler_a",
           "euler_ancestral": "euler_a", "k_euler_a": "euler_a", "k_euler": "euler"}


def find_sampler(name: str) -> Sampler:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise EngineError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[key]


def make_scheduler(name: str, model_scheduler_config: dict):
    """A fresh scheduler of sampler `name` with the model's noise schedule and prediction type; EngineError
    when the schedule is not one a model has (the loader has refused such a config already)."""
    sampler = find_sampler(name)
    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
            "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
    config = {key: value for key, value in model_scheduler_config.items() if key in keep}
    check_part_config("scheduler", config, "the model's scheduler config")
    import diffusers

    # "leading" spacing (old SD configs) skips the noisiest timestep; every tool now uses trailing.
    config["timestep_spacing"] = "trailing"
    config.update(dict(sampler.options))
    scheduler_class = getattr(diffusers, sampler.scheduler)
    return scheduler_class.from_config(config)
