"""The step loop every training runs: pause and cancel between steps (each saving a checkpoint), out of memory
lowered and the step tried again, the loss and the time left reported every step, samples and periodic
checkpoints. A periodic checkpoint that cannot be written (a full disk) is a note: the last good one stays
and the run goes on; one the run stops on (pause, cancel) must be written, or the run fails."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from app.training.memory import MemoryFallback
from app.training.progress import Cancelled, Control, Report, StepClock, TrainingEvent


@dataclass
class StepLoop:
    control: Control
    report: Report
    total: int                                   # the run's last step (the progress bar's end)
    losses: list                                 # every step's loss so far; steps append to it
    save: Callable[[int], None]                  # writes the checkpoint of a step; OSError when it cannot
    sample: Callable[[int], None]
    sample_every: int
    checkpoint_every: int

    def run(self, start: int, end: int, step: Callable[[int], float], memory: MemoryFallback,
            zero_grad: Callable[[], None], label: str = "") -> None:
        """Steps start + 1 .. end: `step(n)` trains step n and returns its loss."""
        clock = StepClock()
        done = start
        while done < end:
            self._obey(done)
            if done == start:
                clock.restart()             # from the first step, not from loading and encoding
            try:
                loss = step(done + 1)
            except Exception as exc:        # noqa: BLE001 - only out of memory is retried
                zero_grad()
                if memory.lower(exc):
                    continue
                raise
            done += 1
            clock.tick()
            self.losses.append(loss)
            self.report(TrainingEvent("step", step=done, total=self.total, loss=loss,
                                      eta_s=clock.eta(self.total - done), message=label or f"step {done}/{self.total}"))
            if (self.sample_every and done % self.sample_every == 0) or done == end:
                self.sample(done)
            if done % self.checkpoint_every == 0 and done < self.total:
                self.checkpoint(done, must=False)

    def checkpoint(self, step: int, must: bool) -> None:
        """Save a checkpoint at `step`; see the module's note for what a failure does."""
        try:
            self.save(step)
        except OSError as exc:
            if must:
                raise
            self.report(TrainingEvent("note", step=step, total=self.total,
                                      message=f"Could not save the checkpoint at step {step} "
                                              f"({exc.strerror or exc}); the last one saved is kept. Going on."))
            return
        self.report(TrainingEvent("checkpoint", step=step, total=self.total,
                                  message=f"Saved a checkpoint at step {step}."))

    def _obey(self, step: int) -> None:
        if self.control.paused and not self.control.cancelled:
            self.checkpoint(step, must=True)
            self.report(TrainingEvent("paused", step=step, total=self.total, message=f"Paused at step {step}."))
            self.control.wait_while_paused()
            if not self.control.cancelled:
                self.report(TrainingEvent("resumed", step=step, total=self.total, message=f"Resumed at step {step}."))
        if self.control.cancelled:
            if not step:
                raise Cancelled("Cancelled before the first step.")
            self.checkpoint(step, must=True)
            raise Cancelled(f"Cancelled at step {step}; the checkpoint is kept, so resuming goes on from there.")
