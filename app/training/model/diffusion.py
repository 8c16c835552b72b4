"""Phase 2: the 9-channel inpainting UNet, trained on the autoencoder's latents.

Each step takes images, draws a mask for each (app/training/model/data.py), encodes the images and the
masked images with the frozen VAE, noises the image latents at random DDPM timesteps and teaches the UNet
to predict that noise (epsilon) from [noisy latents, mask, masked-image latents]: Stable Diffusion
inpainting's input, in StableDiffusionInpaintPipeline's channel order. The latents are scaled by
1 / their standard deviation over the training images (the VAE config's scaling_factor), so the UNet sees
unit-variance latents as SD's does. An exponential moving average of the UNet's weights is kept; it is
what samples use and what the exported model holds.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from app.training.memory import MemoryFallback
from app.training.model.autoencoder import grid
from app.training.model.configs import SCHEDULER_CONFIG, build_unet
from app.training.model.data import ModelData, inpaint_inputs, random_mask, sample_mask
from app.training.model.runtime import (Runtime, finite_loss, load_module_state, module_state, optimizer_tensors,
                                        restore_optimizer_tensors, seeded)
from app.training.progress import Report

EMA_DECAY = 0.9999
SCALING_IMAGES = 256            # images whose latents set the scaling factor
SAMPLE_STEPS = 25
SAMPLE_GUIDANCE = 3.0
SAMPLE_SEED = 1234


class DiffusionPhase:
    name = "diffusion"

    def __init__(self, plan, data: ModelData, runtime: Runtime, seed: int, vae, conditioner,
                 report: Report) -> None:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.training_utils import EMAModel

        config = plan.config
        self.plan, self.data, self.runtime, self.conditioner = plan, data, runtime, conditioner
        self.vae = vae.to(runtime.device).eval().requires_grad_(False)
        self.scaling_factor = 1.0
        with seeded(seed + 1):
            self.unet = build_unet(config, plan.resolution, conditioner.cross_attention_dim, conditioner.classes)
        self.unet.to(runtime.device).train()
        self.ema = EMAModel(self.unet.parameters(), decay=EMA_DECAY, use_ema_warmup=True, inv_gamma=1.0,
                            power=2 / 3, model_cls=UNet2DConditionModel, model_config=self.unet.config)
        self.ema.to(runtime.device)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.diffusion_lr, weight_decay=1e-2)
        self.scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
        self.scaler = runtime.scaler()
        checkpointing = config.checkpointing and runtime.gpu
        if checkpointing:
            self.enable_checkpointing()
        self.memory = MemoryFallback(plan.batch, checkpointing, self.enable_checkpointing,
                                     runtime.device.type, report)

    @torch.no_grad()
    def measure_scaling_factor(self) -> float:
        """1 / the standard deviation of the latents of (up to SCALING_IMAGES of) the training images: of
        the posterior, its means' spread plus its own variance."""
        total = squares = 0.0
        count = 0
        for start in range(0, min(self.data.count, SCALING_IMAGES), 8):
            indices = torch.arange(start, min(start + 8, self.data.count, SCALING_IMAGES))
            posterior = self.vae.encode(self.data.images(indices, None, self.runtime.device)).latent_dist
            mean, variance = posterior.mean.double(), posterior.var.double()
            total += float(mean.sum())
            squares += float((mean * mean + variance).sum())
            count += mean.numel()
        centre = total / count
        std = max(squares / count - centre * centre, 0.0) ** 0.5
        self.scaling_factor = float(min(100.0, max(0.01, 1.0 / max(std, 1e-8))))
        return self.scaling_factor

    def _learning_rate(self, step: int) -> float:
        return self.plan.config.diffusion_lr * min(1.0, step / max(1, self.plan.config.warmup))

    def step(self, step: int, generator: torch.Generator, numbers: np.random.Generator) -> float:
        device, factor = self.runtime.device, self.plan.config.vae_factor
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate(step)
        indices = self.data.pick(self.memory.batch, generator)
        images = self.data.images(indices, generator, device)
        batch = len(indices)
        masks = torch.from_numpy(np.stack([random_mask(self.plan.resolution, numbers) for _ in range(batch)]))
        cells, masked = inpaint_inputs(images, masks[:, None].to(device), factor)
        side = self.plan.resolution // factor
        eps = torch.randn((batch, self.vae.config.latent_channels, side, side), generator=generator).to(device)
        noise = torch.randn(eps.shape, generator=generator).to(device)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), generator=generator)
        timesteps = timesteps.to(device)
        condition = self.conditioner.training(self.data, indices, generator)
        with torch.no_grad(), self.runtime.autocast():
            posterior = self.vae.encode(torch.cat([images, masked])).latent_dist
        mean, std = posterior.mean.float(), posterior.std.float()
        latents = (mean[:batch] + std[:batch] * eps) * self.scaling_factor
        masked_latents = mean[batch:] * self.scaling_factor
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        with self.runtime.autocast():
            prediction = self.unet(torch.cat([noisy, cells, masked_latents], dim=1), timesteps, **condition,
                                   return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        value = float(loss.detach())
        finite_loss(value, step, "diffusion")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.step(self.unet.parameters())
        return value

    def enable_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    # -- checkpoints ------------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict]:
        tensors = {**module_state("vae", self.vae), **module_state("unet", self.unet)}
        tensors.update({f"ema.{index:05d}": shadow for index, shadow in enumerate(self.ema.shadow_params)})
        own, values = optimizer_tensors("unet", self.optimizer)
        return {**tensors, **own}, {"optimizers": {"unet": values}, "scaler": self.scaler.state_dict(),
                                    "ema_step": self.ema.optimization_step, "scaling_factor": self.scaling_factor}

    def restore(self, tensors: dict, info: dict) -> None:
        from app.training.checkpoints import CheckpointError

        self.scaling_factor = float(info["scaling_factor"])
        if not any(key.startswith("unet.") for key in tensors):
            return                           # saved as the phase began: the UNet is as built
        load_module_state("unet", self.unet, tensors)
        shadows = [tensors.get(f"ema.{index:05d}") for index in range(len(self.ema.shadow_params))]
        if any(shadow is None or shadow.shape != own.shape for shadow, own in zip(shadows, self.ema.shadow_params)):
            raise CheckpointError("the training checkpoint's EMA weights do not fit this config")
        with torch.no_grad():
            for own, shadow in zip(self.ema.shadow_params, shadows):
                own.copy_(shadow)
        self.ema.optimization_step = int(info.get("ema_step", 0))
        restore_optimizer_tensors("unet", self.optimizer, tensors, info.get("optimizers", {}).get("unet", {}))
        if info.get("scaler"):
            self.scaler.load_state_dict(info["scaler"])

    @contextmanager
    def averaged(self):
        """With the UNet holding its EMA weights (samples, export); its own weights back afterwards."""
        self.ema.store(self.unet.parameters())
        self.ema.copy_to(self.unet.parameters())
        try:
            yield self.unet
        finally:
            self.ema.restore(self.unet.parameters())

    # -- samples ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self) -> tuple[np.ndarray, str]:
        """The first image with the fixed sample mask filled (EMA weights, DDIM, a fixed seed), beside the
        masked input; and what it was conditioned on."""
        from diffusers import DDIMScheduler

        device, factor = self.runtime.device, self.plan.config.vae_factor
        image = self.data.images(torch.tensor([0]), None, device)
        mask = torch.from_numpy(sample_mask(self.plan.resolution))[None, None].to(device)
        cells, masked = inpaint_inputs(image, mask, factor)
        masked_latents = self.vae.encode(masked).latent_dist.mean * self.scaling_factor
        cond, uncond, shown = self.conditioner.guided(self.data, 0)
        scheduler = DDIMScheduler.from_config({**SCHEDULER_CONFIG, "_class_name": "DDIMScheduler"})
        scheduler.set_timesteps(SAMPLE_STEPS, device=device)
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        latents = torch.randn(masked_latents.shape, generator=generator).to(device) * scheduler.init_noise_sigma
        self.unet.eval()
        try:
            with self.averaged():
                for t in scheduler.timesteps:
                    model_input = torch.cat([scheduler.scale_model_input(latents, t), cells, masked_latents], 1)
                    with self.runtime.autocast():
                        conditional = self.unet(model_input, t, **cond, return_dict=False)[0].float()
                        unconditional = self.unet(model_input, t, **uncond, return_dict=False)[0].float()
                    prediction = unconditional + SAMPLE_GUIDANCE * (conditional - unconditional)
                    latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        finally:
            self.unet.train()
        result = self.vae.decode(latents / self.scaling_factor).sample
        return grid([torch.cat([masked, result])]), shown
