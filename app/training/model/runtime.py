"""Where a model trains and how: the device, mixed precision on GPUs, and each step's own randomness.

Every random draw of a step (which images, flips, masks, noise, timesteps, caption dropout) comes from
generators seeded by (seed, phase, step) alone, so a run resumed from a checkpoint draws exactly what an
uninterrupted one would, and on the CPU gives the same losses.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

PHASES = ("autoencoder", "diffusion")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None        # autocast's dtype on GPUs (bf16, else fp16); None: full fp32

    @property
    def gpu(self) -> bool:
        return self.device.type != "cpu"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def scaler(self):
        """Loss scaling, which fp16 needs and bf16 does not (a no-op then)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def describe(self) -> str:
        names = {torch.bfloat16: "bf16 mixed precision", torch.float16: "fp16 mixed precision"}
        return f"{self.device.type} ({names.get(self.amp_dtype, 'float32')})"


def choose_runtime(requested: str) -> Runtime:
    """The device asked for ("auto": a CUDA GPU, else Apple's, else the CPU); EngineError if it is not here.
    Mixed precision on CUDA only (MPS autocast is not complete enough for training)."""
    from app.engine.diffusion.devices import plan_device

    plan = plan_device(requested, "float32", memory_saving="off")
    amp = None
    if plan.device == "cuda":
        amp = torch.bfloat16 if plan.native_bf16 else torch.float16
    return Runtime(torch.device(plan.device), amp)


def step_seed(seed: int, phase: str, step: int) -> int:
    return int(np.random.SeedSequence([seed, PHASES.index(phase), step]).generate_state(1, np.uint64)[0] >> 1)


def step_generators(seed: int, phase: str, step: int) -> tuple[torch.Generator, np.random.Generator]:
    """The torch (CPU) and numpy generators of one step."""
    value = step_seed(seed, phase, step)
    return torch.Generator().manual_seed(value), np.random.default_rng(value)


@contextmanager
def seeded(seed: int):
    """Build models with torch's global generator seeded, leaving it as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def finite_loss(value: float, step: int, phase: str) -> None:
    from app.training.runs import TrainingError

    if not np.isfinite(value):
        raise TrainingError(f"the {phase} loss became invalid (NaN or infinity) at its step {step}: try another "
                            "--seed or a smaller --batch")


def module_state(prefix: str, module) -> dict:
    return {f"{prefix}.{key}": value for key, value in module.state_dict().items()}


def load_module_state(prefix: str, module, tensors: dict) -> None:
    from app.training.checkpoints import CheckpointError

    state = {key.removeprefix(f"{prefix}."): value for key, value in tensors.items() if key.startswith(f"{prefix}.")}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"the training checkpoint's {prefix} does not fit this config") from None


def optimizer_tensors(name: str, optimizer) -> tuple[dict, dict]:
    """An optimizer's state as checkpoint tensors (named `name`/optimizer.*) and JSON values."""
    from app.training.checkpoints import optimizer_state

    tensors, values = optimizer_state(optimizer)
    return {f"{name}/{key}": value for key, value in tensors.items()}, values


def restore_optimizer_tensors(name: str, optimizer, tensors: dict, values: dict) -> None:
    """The inverse of optimizer_tensors. The tensors stay on the CPU: load_state_dict moves each to its
    parameter's device, except the step counts, which non-fused optimizers keep on the CPU."""
    from app.training.checkpoints import restore_optimizer

    own = {key.removeprefix(f"{name}/"): value for key, value in tensors.items() if key.startswith(f"{name}/")}
    restore_optimizer(optimizer, own, values)
