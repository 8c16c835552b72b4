"""Training checkpoints that survive a crash and a full disk.

A checkpoint is a folder holding `weights-STEP.safetensors` (the trained tensors and the optimizer's) and
`state.json` (the step, the loss curve, the run's settings, and which weights file is current). The
weights are written first, each file through a temporary and a rename; state.json is switched to them last.
So whatever fails while saving (a full disk, a crash, a kill), state.json still names complete weights,
and older weights are deleted only once the new ones are in place. Nothing here is unpickled.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from app.core.safe_files import read_json_file, write_atomically, write_text_atomically

STATE = "state.json"
MAX_STATE_BYTES = 64 << 20
_WEIGHTS = re.compile(r"weights-(\d{7,})\.safetensors")


class CheckpointError(Exception):
    """A checkpoint cannot be used; str() is one line."""


@dataclass
class Checkpoint:
    step: int
    tensors: dict                                  # name -> torch.Tensor (on the CPU)
    info: dict = field(default_factory=dict)       # everything else saved with it (JSON)


def save_checkpoint(folder: Path, step: int, tensors: dict, info: dict) -> Path:
    """Save atomically; returns the weights file. OSError (a full disk) leaves the last good checkpoint."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"weights-{step:07d}.safetensors"
    data = save({name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()})
    write_atomically(weights, lambda handle: handle.write(data))
    state = {"step": step, "weights": weights.name, **info}
    write_text_atomically(folder / STATE, json.dumps(state, allow_nan=False))
    for old in folder.glob("weights-*.safetensors"):
        if old != weights and _WEIGHTS.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return weights


def checkpoint_step(folder: Path) -> int | None:
    """The step of the checkpoint in `folder` from its state.json alone (cheap: the weights are not read);
    None when there is none or it is damaged."""
    read = read_json_file(Path(folder) / STATE, MAX_STATE_BYTES)
    state = read.data if isinstance(read.data, dict) else {}
    step, name = state.get("step"), state.get("weights")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(name, str) \
            or not _WEIGHTS.fullmatch(name) or not (Path(folder) / name).is_file():
        return None
    return step


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint saved in `folder`; None if there is none. CheckpointError when it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE).exists():
        return None
    read = read_json_file(folder / STATE, MAX_STATE_BYTES)
    if read.unreadable or read.damaged:
        raise CheckpointError(f"the training checkpoint in {folder} is damaged: {STATE}: "
                              f"{read.unreadable or read.damaged}")
    state = read.data
    step, name = state.get("step") if isinstance(state, dict) else None, None
    if isinstance(state, dict):
        name = state.get("weights")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(name, str) \
            or not _WEIGHTS.fullmatch(name):
        raise CheckpointError(f"the training checkpoint in {folder} is damaged (state.json does not say which "
                              "step it is)")
    try:
        tensors = load_file(str(folder / name))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"the training checkpoint in {folder} is damaged ({name}: {exc})") from None
    info = {key: value for key, value in state.items() if key not in ("step", "weights")}
    return Checkpoint(step, tensors, info)


def optimizer_state(optimizer) -> tuple[dict, dict]:
    """An optimizer's state as tensors (for safetensors) and JSON (its other values)."""
    import torch

    tensors, values = {}, {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                values[f"{index}.{key}"] = value
    return tensors, values


def restore_optimizer(optimizer, tensors: dict, values: dict) -> None:
    """Load what optimizer_state saved into an optimizer made the same way (its param groups are its own)."""
    state: dict = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            index, _, key = name.removeprefix("optimizer.").partition(".")
            state.setdefault(int(index), {})[key] = tensor
    for name, value in values.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()
    if state and max(state) >= sum(len(group["params"]) for group in current["param_groups"]):
        raise CheckpointError("the training checkpoint does not fit these settings (another rank or model?)")
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
