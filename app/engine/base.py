"""The interface every generation engine implements, and the PNG `parameters` text they all write.

Engines are Qt-free and synchronous: `generate` runs on a worker thread, reports through `emit` and
returns the variants; the runner turns the return value or the exception into the one terminal event.
"""
from __future__ import annotations

import abc
from typing import Callable

import numpy as np

from app.core.geometry import Rect
from app.engine.events import CancelToken, EngineEvent, Variant
from app.engine.request import GenerationRequest

Emit = Callable[[EngineEvent], None]


class Engine(abc.ABC):
    id: str = ""
    label: str = ""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest, job_id: int, emit: Emit,
                 cancel: CancelToken) -> tuple[Variant, ...]:
        """Produce request.sampling.variants results for `request`.

        Calls emit(EngineEvent.progress(...)) as work advances and cancel.check() between steps, so a
        cancel raises Cancelled within one step. Raises EngineError for problems the user can act on.
        Never emits RESULT, ERROR or CANCELLED itself: that is run_job's job.
        """

    def close(self) -> None:
        """Release memory held between jobs (models, caches). The engine may be used again afterwards."""

    def report(self, emit: Emit, cancel: CancelToken, job_id: int, step: int, total: int,
               preview: np.ndarray | None = None, preview_rect: Rect | None = None,
               message: str = "", notice: bool = False) -> None:
        """Emit one PROGRESS event (a `notice`: the user must see its message), then honour a pending cancel."""
        cancel.check()
        emit(EngineEvent.progress(job_id, step, total, preview, preview_rect, message, notice))
        cancel.check()


def format_parameters(request: GenerationRequest, seed: int, engine_label: str, *,
                      sampler: str | None = None, prompt: str | None = None,
                      negative_prompt: str | None = None) -> str:
    """The A1111-style `parameters` text other diffusion tools read from a PNG.

    Line 1 is the prompt, then "Negative prompt: ..." when there is one, then the settings line. Engines
    that apply request.style pass the styled `prompt` / `negative_prompt` (default: the request's own).
    `engine_label` is written as the model; `sampler` defaults to request.sampling.sampler.
    """
    s = request.sampling
    width, height = request.output_rect.size
    fields = [
        ("Steps", str(s.steps)),
        ("Sampler", sampler if sampler is not None else s.sampler),
        ("CFG scale", f"{s.guidance:g}"),
        ("Seed", str(seed)),
        ("Size", f"{width}x{height}"),
        ("Model", engine_label),
        ("Denoising strength", f"{s.strength:g}"),
        ("Style", request.style.name or "None"),
    ]
    if request.style.strength < 1.0:
        fields.append(("Style strength", f"{request.style.strength:g}"))
    for index, control in enumerate(request.controls):
        fields.append((f"ControlNet {index}", f"Module: {control.kind}, Model: {_model_name(control.model)}, "
                                              f"Weight: {control.weight:g}, Guidance Start: {control.start:g}, "
                                              f"Guidance End: {control.end:g}"))
    fields.append(("Mode", request.kind.value))
    lines = [_one_line(request.prompt if prompt is None else prompt)]
    negative = _one_line(request.negative_prompt if negative_prompt is None else negative_prompt)
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {_field_value(value)}" for key, value in fields))
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _model_name(location: str) -> str:
    """A model as other tools name it: a file or folder by its name (no path of the user's), a repo id whole."""
    text = location.strip().replace("\\", "/").rstrip("/")
    return text if text.count("/") == 1 and not text.startswith((".", "~")) else text.rsplit("/", 1)[-1]


def _field_value(value: str) -> str:
    """Quote values that would break the comma-separated `key: value` list, as A1111 does."""
    value = _one_line(value)
    if any(c in value for c in ',:"'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value
