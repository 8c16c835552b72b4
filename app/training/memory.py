"""Out of memory while training: lower what costs memory, say so, and go on."""
from __future__ import annotations

from typing import Callable

from app.engine.diffusion.devices import free_device_memory, is_out_of_memory
from app.training.progress import Report, TrainingEvent


class MemoryFallback:
    """What to lower when a step runs out of memory: first gradient checkpointing is switched on (if it is
    not), then the batch is halved, down to 1. `lower(exc)` is True when the step should be tried again."""

    def __init__(self, batch: int, checkpointing: bool, enable_checkpointing: Callable[[], None], device: str,
                 report: Report) -> None:
        self.batch = batch
        self.checkpointing = checkpointing
        self._enable = enable_checkpointing
        self._device = device
        self._report = report

    def lower(self, exc: BaseException) -> bool:
        if not is_out_of_memory(exc):
            return False
        free_device_memory(self._device)
        if not self.checkpointing:
            self._enable()
            self.checkpointing = True
            change = "switched on gradient checkpointing (slower, needs less memory)"
        elif self.batch > 1:
            self.batch //= 2
            change = f"lowered the batch to {self.batch}"
        else:
            return False
        self._report(TrainingEvent("note", message=f"Out of memory: {change}; going on."))
        return True
