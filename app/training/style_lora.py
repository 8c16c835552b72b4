"""Learn a style from a few images: DreamBooth LoRA on a Stable Diffusion model's UNet (and, optionally, its
text encoders), with peft, as diffusers' examples/dreambooth/train_dreambooth_lora.py does.

The base model is loaded by the editor's own loader (any file, folder or repo id Fill accepts; SD 1.x, 2.x,
SDXL; base or inpainting). Its weights stay frozen in the plan's precision (bf16 / fp16 on a GPU, with
autocast); the LoRA's weights are trained in fp32. Inpainting UNets learn with random masks, so the style
is learned the way Fill will use it. Each step's randomness comes from a generator seeded by the run's seed
and the step, so a resumed run goes on exactly as an uninterrupted one would.

The result is a kohya-layout .safetensors file (lora_unet_*, lora_te_* keys with their alphas), which
diffusers' load_lora_weights, A1111, ComfyUI and InvokeAI read.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from app.training import style_data
from app.training.checkpoints import load_checkpoint, optimizer_state, restore_optimizer, save_checkpoint
from app.training.memory import MemoryFallback
from app.training.loop import StepLoop
from app.training.progress import Control, Report, TrainingEvent
from app.training.runs import TrainingError, TrainingRun
from app.training.style_settings import MAX_IMAGES, MIN_IMAGES, StyleTrainingSettings, file_stem
from app.training.style_settings import settings_from_dict  # noqa: F401 - the training process reads it here

log = logging.getLogger(__name__)
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
WARMUP_FRACTION = 0.05
CHECKPOINT = "checkpoint"
ADAPTER = "style"


def train_style(settings: StyleTrainingSettings, report: Report, control: Control | None = None) -> None:
    """Train; ends with one "done" (path: the LoRA file), "cancelled" or "error" event."""
    _StyleRun.guarded(settings, report, control)


class _StyleRun(TrainingRun):

    # -- setting up -------------------------------------------------------------------------------------

    def run(self) -> tuple[str, str]:
        started = time.perf_counter()
        count = self.prepare()
        start = self._resume()
        self.report(TrainingEvent("started", step=start, total=self.plan.steps, losses=list(self.losses),
                                  message=f"Learning '{self.s.name}' from {count} images on "
                                          f"{self.model.describe()}"))
        self._loop(start)
        lora = self._save_lora()
        minutes = (time.perf_counter() - started) / 60
        return str(lora), (f"Learned the style '{self.s.name}' in {minutes:.1f} min ({self.plan.steps} "
                           f"steps, loss {np.mean(self.losses[-20:]):.4f}): {lora}")

    def prepare(self) -> int:
        """Read the images, load the model, encode the data, add the LoRA layers; the number of images."""
        from app.training.dataset import read_images

        images = read_images(list(self.s.images), self.s.captions or None, at_most=MAX_IMAGES)
        if images.skipped:
            self.report(TrainingEvent("note", message=f"Learning from {images.summary()}."))
        if len(images.images) < MIN_IMAGES:
            raise TrainingError(f"{images.summary()}: a style needs at least {MIN_IMAGES} readable images")
        self.out.mkdir(parents=True, exist_ok=True)
        self.model = self._load_model()
        self.data = style_data.prepare(self.model, images.images, self.s, self.report)
        self._add_adapters()
        self.optimizer = self._optimizer()
        return len(images.images)

    def fixed_loss(self, draws: int = 8) -> float:
        """The mean loss over `draws` fixed draws of images, noise and timesteps (no training): the same
        before and after a step only if the LoRA did not change, so comparable across a run."""
        for module in self.trained:
            module.eval()
        with torch.no_grad():
            losses = [float(self._loss(self.data.instance, torch.Generator().manual_seed(2**31 + i)))
                      for i in range(draws)]
        return float(np.mean(losses))

    def _load_model(self):
        from app.engine.diffusion.devices import plan_device
        from app.engine.diffusion.model_files import resolve_source
        from app.engine.diffusion.model_loader import load_model

        plan = plan_device(self.s.device, self.s.precision, memory_saving="off")
        if plan.device == "cuda" and self.s.precision == "auto" and plan.native_bf16:
            from dataclasses import replace

            plan = replace(plan, dtype_name="bfloat16")          # trains without loss scaling
        self.report(TrainingEvent("note", message=f"Loading {self.s.model}…"))
        model = load_model(resolve_source(self.s.model, self.s.model_config), plan,
                           lambda message, fraction: None)
        for module in model.components():
            module.requires_grad_(False)
        return model

    def _add_adapters(self) -> None:
        from diffusers.training_utils import cast_training_params

        rank = self.plan.rank
        with torch.random.fork_rng(devices=[]):              # the LoRA's first weights follow the run's seed
            torch.manual_seed(self.s.seed)
            trained = self._inject(rank)
        cast_training_params(trained, dtype=torch.float32)
        self.trained = trained
        checkpointing = self.s.gradient_checkpointing
        if checkpointing == "auto":
            device = self.model.plan.device
            free = torch.cuda.mem_get_info()[0] if device == "cuda" else 0
            checkpointing = "on" if device == "cuda" and (self.model.is_xl or free < 16 << 30) else "off"
        if checkpointing == "on":
            self._checkpointing()
        self.memory = MemoryFallback(self.s.batch, checkpointing == "on", self._checkpointing,
                                     self.model.plan.device, self.report)

    def _inject(self, rank: int) -> list:
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=UNET_TARGETS), self.model.unet, ADAPTER)
        trained = [self.model.unet]
        if self.plan.text_encoder:
            for encoder in self.model.text_encoders:
                inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                                   target_modules=TEXT_TARGETS), encoder, ADAPTER)
                trained.append(encoder)
        return trained

    def _checkpointing(self) -> None:
        self.model.unet.enable_gradient_checkpointing()
        if self.plan.text_encoder:
            for encoder in self.model.text_encoders:
                encoder.gradient_checkpointing_enable()

    def _parameters(self) -> list:
        return [p for module in self.trained for p in module.parameters() if p.requires_grad]

    def _optimizer(self):
        params = self._parameters()
        if self.model.plan.device == "cuda":
            try:
                import bitsandbytes

                return bitsandbytes.optim.AdamW8bit(params, lr=self.plan.learning_rate, weight_decay=1e-2)
            except ImportError:
                pass
        return torch.optim.AdamW(params, lr=self.plan.learning_rate, weight_decay=1e-2)

    # -- checkpoints ------------------------------------------------------------------------------------

    def _fingerprint(self) -> dict:
        """What a checkpoint must have been made with to be resumed here."""
        return {"model": self.s.model, "rank": self.plan.rank, "steps": self.plan.steps,
                "text_encoder": self.plan.text_encoder, "images": self.data.names,
                "resolution": self.data.resolution, "crop": self.s.crop, "prior": self.s.class_count,
                "seed": self.s.seed, "batch": self.s.batch}

    def _prefixes(self) -> list[str]:
        return ["unet", "text_encoder", "text_encoder_2"][:len(self.trained)]

    def _lora_state(self) -> dict:
        """The LoRA weights in PEFT's naming (unet.<module>.lora_A.weight, text_encoder.<module>...)."""
        marker = f".{ADAPTER}."
        return {f"{prefix}.{name.replace(marker, '.')}": value for prefix, module in zip(self._prefixes(), self.trained)
                for name, value in module.named_parameters() if "lora_" in name and marker in name}

    def _parameters_by_state_name(self) -> list:
        marker = f".{ADAPTER}."
        return [value for module in self.trained for name, value in module.named_parameters()
                if "lora_" in name and marker in name]

    def _save_checkpoint(self, step: int) -> None:
        tensors, values = optimizer_state(self.optimizer)
        tensors.update({f"lora.{name}": value for name, value in self._lora_state().items()})
        save_checkpoint(self.out / CHECKPOINT, step, tensors,
                        {"fingerprint": self._fingerprint(), "losses": self.losses[:step], "optimizer": values,
                         "batch": self.memory.batch})

    def _resume(self) -> int:
        if not self.s.resume:
            return 0
        checkpoint = load_checkpoint(self.out / CHECKPOINT)
        if checkpoint is None:
            self.report(TrainingEvent("note", message="No checkpoint to resume from: starting at step 0."))
            return 0
        if checkpoint.info.get("fingerprint") != self._fingerprint():
            raise TrainingError(f"the checkpoint in {self.out} was made with other settings (images, model, "
                                "rank or steps); start afresh or resume with the same settings")
        saved = {name.removeprefix("lora."): t for name, t in checkpoint.tensors.items() if name.startswith("lora.")}
        current = dict(zip(self._lora_state(), self._parameters_by_state_name()))
        if saved.keys() != current.keys():
            raise TrainingError(f"the checkpoint in {self.out} does not fit this model's LoRA layers")
        with torch.no_grad():
            for name, parameter in current.items():
                parameter.copy_(saved[name])
        self.optimizer = self._optimizer()
        # load_state_dict moves the moments to their parameters' device; Adam's step counts stay on the CPU.
        restore_optimizer(self.optimizer, {k: v for k, v in checkpoint.tensors.items() if k.startswith("optimizer.")},
                          checkpoint.info.get("optimizer", {}))
        self.losses = [float(x) for x in checkpoint.info.get("losses", [])][:checkpoint.step]
        self.memory.batch = int(checkpoint.info.get("batch", self.memory.batch))
        self.report(TrainingEvent("note", message=f"Resuming at step {checkpoint.step}."))
        return checkpoint.step

    # -- the loop ---------------------------------------------------------------------------------------

    def _loop(self, start: int) -> None:
        StepLoop(self.control, self.report, self.plan.steps, self.losses, self._save_checkpoint, self._sample,
                 self.s.sample_every, self.s.checkpoint_every).run(
            start, self.plan.steps, self._step, self.memory, lambda: self.optimizer.zero_grad(set_to_none=True))

    def _learning_rate(self, step: int) -> float:
        warmup = max(1, int(self.plan.steps * WARMUP_FRACTION))
        return self.plan.learning_rate * min(1.0, step / warmup)

    def _step(self, step: int) -> float:
        generator = torch.Generator().manual_seed(self.s.seed * 1_000_003 + step)
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(step)
        if not self.trained[0].training:          # after a sample (eval mode); walking every module costs
            for module in self.trained:
                module.train()
        loss = self._loss(self.data.instance, generator)
        if self.data.classes is not None:
            loss = loss + self.s.prior_weight * self._loss(self.data.classes, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise TrainingError(f"the loss became invalid (NaN) at step {step}: lower the learning rate")
        return value

    def _loss(self, examples: style_data.Examples, generator: torch.Generator) -> torch.Tensor:
        model = self.model
        device, dtype = torch.device(model.plan.device), model.unet.dtype
        batch = examples.pick(self.memory.batch, generator)
        latents = batch.latents(generator).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        scheduler = self.data.scheduler
        t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
        t = t.to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        target = noise if model.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
        if model.inpaint:
            noisy = torch.cat([noisy, style_data.inpaint_condition(model, batch, generator).to(device)], dim=1)
        embeddings, added = self.data.conditioning(batch, self.plan.text_encoder)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            prediction = model.unet(noisy.to(dtype), t, encoder_hidden_states=embeddings.to(dtype),
                                    added_cond_kwargs=added, return_dict=False)[0]
        return torch.nn.functional.mse_loss(prediction.float(), target.float())

    # -- samples and the result -------------------------------------------------------------------------

    def _sample(self, step: int) -> None:
        for module in self.trained:
            module.eval()
        image = style_data.sample(self.model, self.data, self.s)
        path = self.out / "samples" / f"step-{step:06d}.png"
        path.parent.mkdir(exist_ok=True)
        from app.core.imageio import save_image

        save_image(path, image)
        self.report(TrainingEvent("sample", step=step, total=self.plan.steps, path=str(path),
                                  message=self.data.sample_prompt))

    def _save_lora(self) -> Path:
        from safetensors.torch import save

        from app.core.safe_files import write_atomically

        state = kohya_state_dict(self._lora_state(), self.model.family)
        metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(self.plan.rank),
                    "ss_network_alpha": str(self.plan.rank),
                    "ss_base_model_version": {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
                    [self.model.family], "ss_steps": str(self.plan.steps),
                    "latent_canvas_style": self.s.name, "latent_canvas_trigger": self.s.trigger,
                    "latent_canvas_base_model": Path(self.s.model).name}
        data = save({k: v.detach().to("cpu", torch.float16).contiguous() for k, v in state.items()}, metadata)
        target = self.out / f"{file_stem(self.s.name)}.safetensors"
        write_atomically(target, lambda handle: handle.write(data))
        import shutil

        shutil.rmtree(self.out / CHECKPOINT, ignore_errors=True)     # done: nothing left to resume
        return target


def kohya_state_dict(peft_state: dict, family: str) -> dict:
    """PEFT-named LoRA weights (unet.*, text_encoder.*, text_encoder_2.*) in kohya's layout. SD 1.x / 2.x
    text-encoder keys are lora_te_* there (lora_te1_ / lora_te2_ mean SDXL's two encoders)."""
    from diffusers.utils import convert_state_dict_to_kohya

    state = convert_state_dict_to_kohya(peft_state)
    if family != "sdxl":
        state = {key.replace("lora_te1_", "lora_te_", 1) if key.startswith("lora_te1_") else key: value
                 for key, value in state.items()}
    return {key: value.float() if key.endswith(".alpha") else value for key, value in state.items()}
