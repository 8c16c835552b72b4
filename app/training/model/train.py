"""Train a latent diffusion model of one's own: a KL autoencoder (phase 1, app/training/model/autoencoder.py),
then a 9-channel inpainting UNet on its latents (phase 2, app/training/model/diffusion.py), exported as a
diffusers folder the editor (and diffusers) loads like any model:

    model_index.json            StableDiffusionInpaintPipeline
    unet/                       config.json, diffusion_pytorch_model.safetensors (the EMA weights)
    vae/                        config.json (scaling_factor: the one measured), its safetensors
    text_encoder/, tokenizer/   the frozen CLIP text encoder and tokenizer it was trained with (text models)
    class_labels.json           the labels a prompt picks, in class order (class models, which have no
                                text encoder: the editor reads this instead)
    scheduler/                  scheduler_config.json (the DDPM schedule it was trained with)

The parts are written into a folder beside them first; then each replaces the old one and model_index.json
is written last, so a failure while writing (a full disk) leaves the previous export as it was.

Steps are counted over both phases (1 .. A are the autoencoder's, A + 1 .. A + D the UNet's). A checkpoint
(out/checkpoint) remembers the phase, the weights, the optimizers, the EMA and the loss curve; it is saved
every `checkpoint_every` steps, when the run pauses or is cancelled, as the diffusion phase begins and at
the end, so `--resume` goes on from any of them, and with more --steps-diffusion trains a finished model on.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from app.core.safe_files import write_text_atomically
from app.training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from app.training.model.configs import SCHEDULER_CONFIG
from app.training.model.settings import MIN_IMAGES, ModelTrainingSettings
from app.training.model.settings import settings_from_dict  # noqa: F401 - the training process reads it here
from app.training.loop import StepLoop
from app.training.progress import Control, Report, TrainingEvent
from app.training.runs import TrainingError, TrainingRun

CHECKPOINT = "checkpoint"
SAMPLES = "samples"
CHECKPOINT_VERSION = 1
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "class_labels.json")
CLASS_LABELS = "class_labels.json"
STAGING = ".export-new"
OLD = ".export-old"


def train_model(settings: ModelTrainingSettings, report: Report, control: Control | None = None) -> None:
    """Train; ends with one "done" (path: the model folder), "cancelled" or "error" event."""
    _ModelRun.guarded(settings, report, control)


class _ModelRun(TrainingRun):

    # -- setting up -------------------------------------------------------------------------------------

    def run(self) -> tuple[str, str]:
        from app.training.dataset import read_images
        from app.training.model.conditioning import ClassConditioner, TextConditioner
        from app.training.model.data import prepare_data
        from app.training.model.runtime import choose_runtime

        started = time.perf_counter()
        folder = Path(self.s.folder).expanduser()
        if not folder.is_dir():
            raise TrainingError(f"{folder}: no such folder of images")
        if self.out.resolve().is_relative_to(folder.resolve()):
            raise TrainingError(f"--out {self.out} is inside the image folder {folder}: its samples would become "
                                "training images; choose a folder outside it")
        images = read_images([folder], labelled=True)
        if images.skipped:
            self.report(TrainingEvent("note", message=f"Training on {images.summary()}."))
        if len(images.images) < MIN_IMAGES:
            raise TrainingError(f"{folder.name}: {images.summary()}; a model needs at least {MIN_IMAGES} readable "
                                "images")
        self.runtime = choose_runtime(self.s.device)
        self.data = prepare_data(images, folder, self.plan.resolution, classes=not self.s.text_encoder)
        self.conditioner = TextConditioner(self.s.text_encoder, self.runtime.device) if self.s.text_encoder \
            else ClassConditioner(self.data.labels, self.runtime.device)
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = self._checkpoint()
        step = checkpoint.step if checkpoint else 0
        phase = checkpoint.info["phase"] if checkpoint else "autoencoder"
        self.losses = [float(x) for x in checkpoint.info.get("losses", [])][:step] if checkpoint else []
        self.report(TrainingEvent("started", step=step, total=self.plan.total, losses=list(self.losses),
                                  message=f"Training a {self.plan.config.name} model on {self.data.count} images "
                                          f"({self._conditioning()}) at {self.plan.resolution} px on "
                                          f"{self.runtime.describe()}"))
        if phase == "autoencoder":
            vae, checkpoint = self._autoencoder(checkpoint, step), None
        else:
            vae = self._trained_vae(checkpoint)
        diffusion = self._diffusion(vae, checkpoint)
        self._loop(diffusion, max(step, self.plan.steps_autoencoder), self.plan.steps_autoencoder, self.plan.total)
        with diffusion.averaged() as unet:
            export_model(self.out, diffusion.vae, unet, diffusion.scaling_factor, self.conditioner)
        self._save(diffusion, self.plan.total, must=False)
        minutes = (time.perf_counter() - started) / 60
        diffusion_losses = self.losses[self.plan.steps_autoencoder:]
        recent = np.mean(diffusion_losses[-20:]) if diffusion_losses else float("nan")
        return str(self.out), (f"Trained a {self.plan.config.name} model in {minutes:.1f} min "
                               f"({self.plan.steps_autoencoder} autoencoder + {self.plan.steps_diffusion} diffusion "
                               f"steps, diffusion loss {recent:.4f}){self._prompts()}: {self.out}")

    def _conditioning(self) -> str:
        if self.conditioner.kind == "text":
            captioned = sum(1 for caption in self.data.captions if caption)
            return f"{captioned} with captions, text encoder {Path(self.conditioner.source).name}"
        labels = self.data.labels
        shown = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
        return f"{len(labels)} class{'es' if len(labels) != 1 else ''}: {shown}"

    def _prompts(self) -> str:
        if self.conditioner.kind == "text":
            return ""
        return f"; in the editor the prompt picks the class ({', '.join(self.data.labels[:5])}" + \
            (", …" if len(self.data.labels) > 5 else "") + "), an empty prompt any"

    def _fingerprint(self) -> dict:
        """What a checkpoint must have been made with to be resumed here (more diffusion steps may follow)."""
        conditioning = f"text:{self.conditioner.source}" if self.conditioner.kind == "text" else \
            "classes:" + "\0".join(self.data.labels)
        return {"version": CHECKPOINT_VERSION, "config": self.plan.config.name, "resolution": self.plan.resolution,
                "steps_autoencoder": self.plan.steps_autoencoder, "batch": self.plan.batch, "seed": self.s.seed,
                "images": self.data.fingerprint(), "conditioning": conditioning}

    def _checkpoint(self):
        folder = self.out / CHECKPOINT
        if not self.s.resume:
            if (folder / "state.json").exists():
                raise TrainingError(f"{self.out} already holds a training checkpoint: add --resume to go on from "
                                    "it, or choose another --out")
            return None
        checkpoint = load_checkpoint(folder)
        if checkpoint is None:
            self.report(TrainingEvent("note", message="No checkpoint to resume from: starting at step 0."))
            return None
        if checkpoint.info.get("fingerprint") != self._fingerprint():
            raise TrainingError(f"the checkpoint in {self.out} was made with other settings (images, config, "
                                "resolution, batch, seed, text encoder or autoencoder steps); resume with the "
                                "same settings or choose another --out")
        phase = checkpoint.info.get("phase")
        if phase not in ("autoencoder", "diffusion"):
            raise CheckpointError(f"the training checkpoint in {self.out} is damaged (no phase)")
        if checkpoint.step > self.plan.total:
            raise TrainingError(f"the checkpoint is at step {checkpoint.step}, past the {self.plan.total} steps "
                                "asked for: give more --steps-diffusion")
        if checkpoint.step == self.plan.total:
            self.report(TrainingEvent("note", message=f"The checkpoint is at the last step ({checkpoint.step}): "
                                                      "exporting the model again (more --steps-diffusion would "
                                                      "train it on)."))
        else:
            self.report(TrainingEvent("note", message=f"Resuming at step {checkpoint.step} ({phase})."))
        return checkpoint

    # -- the phases -------------------------------------------------------------------------------------

    def _autoencoder(self, checkpoint, step: int):
        from app.training.model.autoencoder import AutoencoderPhase

        phase = AutoencoderPhase(self.plan, self.data, self.runtime, self.s.seed, self.report)
        if checkpoint is not None:
            phase.restore(checkpoint.tensors, checkpoint.info)
            self._restore_memory(phase, checkpoint.info)
        self._loop(phase, step, 0, self.plan.steps_autoencoder)
        return phase.vae

    def _trained_vae(self, checkpoint):
        from app.training.model.configs import build_vae
        from app.training.model.runtime import load_module_state

        vae = build_vae(self.plan.config, self.plan.resolution)
        load_module_state("vae", vae, checkpoint.tensors)
        return vae

    def _diffusion(self, vae, checkpoint):
        from app.training.model.diffusion import DiffusionPhase

        phase = DiffusionPhase(self.plan, self.data, self.runtime, self.s.seed, vae, self.conditioner, self.report)
        if checkpoint is not None:
            phase.restore(checkpoint.tensors, checkpoint.info)
            self._restore_memory(phase, checkpoint.info)
        else:
            scale = phase.measure_scaling_factor()
            self.report(TrainingEvent("note", message=f"The autoencoder is trained; its latents' scaling factor "
                                                      f"is {scale:.5f}. Training the UNet."))
            self._save(phase, self.plan.steps_autoencoder, must=False)
        return phase

    @staticmethod
    def _restore_memory(phase, info: dict) -> None:
        phase.memory.batch = int(info.get("batch", phase.memory.batch))
        if info.get("checkpointing") and not phase.memory.checkpointing:
            phase.enable_checkpointing()
            phase.memory.checkpointing = True

    # -- the loop ---------------------------------------------------------------------------------------

    def _loop(self, phase, start: int, offset: int, end: int) -> None:
        """Steps start + 1 .. end (counted over both phases) of `phase`, whose own steps begin after `offset`."""
        from app.training.model.runtime import step_generators

        def step(number: int) -> float:
            generator, numbers = step_generators(self.s.seed, phase.name, number - offset)
            return phase.step(number - offset, generator, numbers)
        StepLoop(self.control, self.report, self.plan.total, self.losses, lambda number: self._write(phase, number),
                 lambda number: self._sample(phase, number), self.plan.sample_every,
                 self.plan.checkpoint_every).run(start, end, step, phase.memory, phase.zero_grad, label=phase.name)

    # -- checkpoints and samples ------------------------------------------------------------------------

    def _save(self, phase, step: int, must: bool) -> None:
        """Save a checkpoint of `phase` at `step` (see app.training.loop for what a failure does)."""
        StepLoop(self.control, self.report, self.plan.total, self.losses, lambda number: self._write(phase, number),
                 lambda number: None, 0, 1).checkpoint(step, must)

    def _write(self, phase, step: int) -> None:
        tensors, info = phase.state()
        info.update(phase=phase.name, fingerprint=self._fingerprint(), losses=self.losses[:step],
                    batch=phase.memory.batch, checkpointing=phase.memory.checkpointing)
        save_checkpoint(self.out / CHECKPOINT, step, tensors, info)

    def _sample(self, phase, step: int) -> None:
        from app.core.imageio import save_image

        if phase.name == "autoencoder":
            image, message = phase.sample(), "autoencoder: the first images over their reconstructions"
        else:
            image, shown = phase.sample()
            message = f"diffusion: an inpainting sample for {shown!r}" if shown else \
                "diffusion: an unconditional inpainting sample"
        path = self.out / SAMPLES / f"step-{step:07d}-{phase.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, image)
        self.report(TrainingEvent("sample", step=step, total=self.plan.total, path=str(path), message=message))


# -- the model folder -------------------------------------------------------------------------------------

def export_model(out: Path, vae, unet, scaling_factor: float, conditioner) -> Path:
    """Write the model folder (the module's docstring says what it holds) into `out`; returns `out`."""
    staging, old = out / STAGING, out / OLD
    for folder in (staging, old):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_parts(staging, vae, unet, scaling_factor, conditioner)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old.mkdir()
    for part in PARTS:
        if (out / part).exists():
            os.replace(out / part, old / part)
        if (staging / part).exists():
            os.replace(staging / part, out / part)
    write_text_atomically(out / "model_index.json", (staging / "model_index.json").read_text("utf-8"))
    for folder in (staging, old):
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _write_parts(staging: Path, vae, unet, scaling_factor: float, conditioner) -> None:
    import diffusers

    vae.register_to_config(scaling_factor=scaling_factor)
    vae.save_pretrained(staging / "vae", safe_serialization=True)
    unet.save_pretrained(staging / "unet", safe_serialization=True)
    (staging / "scheduler").mkdir()
    (staging / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULER_CONFIG, "_diffusers_version": diffusers.__version__}, indent=2), encoding="utf-8")
    index = {"_class_name": "StableDiffusionInpaintPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False}
    if conditioner.kind == "text":
        conditioner.encoder.save_pretrained(staging / "text_encoder", safe_serialization=True)
        conditioner.tokenizer.save_pretrained(staging / "tokenizer")
        index.update(text_encoder=["transformers", "CLIPTextModel"], tokenizer=["transformers", "CLIPTokenizer"])
    else:
        (staging / CLASS_LABELS).write_text(json.dumps({"labels": conditioner.labels}, indent=2,
                                                       ensure_ascii=False), encoding="utf-8")
        index.update(text_encoder=[None, None], tokenizer=[None, None])
    (staging / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
