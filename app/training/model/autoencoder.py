"""Phase 1: the KL autoencoder, trained with Latent Diffusion's loss.

    L = |x - D(z)|  (+ LPIPS(x, D(z)) when it can be used)  + 1e-6 KL(q(z|x) || N(0, I))  + lambda G

The reconstruction and KL terms are summed per image and the KL weight set against them as in the
taming-transformers / LDM recipe (both here divided by the pixel count, which keeps their ratio). After
`gan_start` steps a PatchGAN discriminator P joins: hinge loss for it, G = -P(D(z)) for the autoencoder, weighted
by lambda = 0.5 ||grad NLL|| / ||grad G|| at the decoder's last layer (the recipe's adaptive weight), so the
adversarial term never outweighs reconstruction.

The perceptual term (LPIPS on VGG16, as LDM trains its VAEs) is used only when everything it needs is already
on this machine: the `lpips` package (which brings torchvision), the ImageNet VGG16 weights torchvision keeps
in its cache (TORCH_HOME/hub/checkpoints/vgg16-397923af.pth) and LPIPS's own linear layers (shipped inside
the package). Nothing is downloaded: the package's own loaders would fetch VGG16 from the network and read
its files with a plain unpickler, so the network is built without weights and both files are read here
through torch.load(weights_only=True), which loads tensors and never code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.training.memory import MemoryFallback
from app.training.model.configs import build_vae
from app.training.model.data import ModelData
from app.training.model.runtime import (Runtime, finite_loss, load_module_state, module_state, optimizer_tensors,
                                        restore_optimizer_tensors, seeded)
from app.training.progress import Report, TrainingEvent

KL_WEIGHT = 1e-6
PERCEPTUAL_WEIGHT = 1.0
GAN_WEIGHT = 0.5
MAX_ADAPTIVE_WEIGHT = 1e4
VGG_FILE = "vgg16-397923af.pth"
# LPIPS cuts VGG16's `features` into five slices after each ReLU it compares: features[0:4] ... [23:30].
VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN: strided 4x4 convolutions, a logit per overlapping patch of the image."""

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        stack: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for level in range(1, layers + 1):
            wider = channels * min(2 ** level, 8)
            stride = 2 if level < layers else 1
            stack += [nn.Conv2d(width, wider, 4, stride, 1, bias=False), nn.BatchNorm2d(wider),
                      nn.LeakyReLU(0.2, True)]
            width = wider
        stack.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.layers = nn.Sequential(*stack)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean())


def adaptive_weight(nll: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, MAX_ADAPTIVE_WEIGHT).detach() * GAN_WEIGHT


# -- the perceptual term ---------------------------------------------------------------------------------

class PerceptualLoss:
    """The LPIPS distance of two image batches in [-1, 1], (B,) per image; frozen."""

    def __init__(self, network) -> None:
        self.network = network

    def __call__(self, a, b):
        return self.network(a, b).flatten()

    def to(self, device) -> "PerceptualLoss":
        self.network.to(device)
        return self


def load_perceptual(device) -> tuple[PerceptualLoss | None, str]:
    """(the loss, "") when LPIPS can be built from local files, else (None, the note saying why not)."""
    try:
        import lpips
        import torch
    except ImportError:
        return None, "perceptual loss left out: the lpips package is not installed (it is optional)"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILE
    linear = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "vgg.pth"
    for path, what in ((backbone, "the VGG16 weights"), (linear, "LPIPS's linear layers")):
        if not path.is_file():
            return None, f"perceptual loss left out: {what} are not at {path} (nothing is downloaded)"
    try:
        network = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False)
        features = torch.load(str(backbone), map_location="cpu", weights_only=True)
        network.net.load_state_dict(_sliced(features), strict=True)
        lins = torch.load(str(linear), map_location="cpu", weights_only=True)
        missing = [key for key in network.state_dict() if key.startswith("lin") and key not in lins]
        if missing:
            raise KeyError(missing[0])
        network.load_state_dict(lins, strict=False)
    except (pickle.UnpicklingError, RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
        text = " ".join(str(exc).split())[:120] or type(exc).__name__
        return None, f"perceptual loss left out: its weights could not be read ({text})"
    network.eval().requires_grad_(False)
    return PerceptualLoss(network).to(device), ""


def _sliced(features: dict) -> dict:
    """torchvision's VGG16 keys (features.N.weight) as LPIPS's network names them (sliceK.N.weight)."""
    renamed = {}
    for key, value in features.items():
        if not key.startswith("features."):
            continue                         # the classifier, which LPIPS does not use
        index = int(key.split(".")[1])
        slice_number = next(k for k, (low, high) in enumerate(VGG_SLICES, 1) if low <= index < high)
        renamed[f"slice{slice_number}.{key.removeprefix('features.')}"] = value
    return renamed


# -- the phase ------------------------------------------------------------------------------------------

class AutoencoderPhase:
    name = "autoencoder"

    def __init__(self, plan, data: ModelData, runtime: Runtime, seed: int, report: Report,
                 use_perceptual: bool = True) -> None:
        config = plan.config
        self.plan, self.data, self.runtime, self.report = plan, data, runtime, report
        with seeded(seed):
            self.vae = build_vae(config, plan.resolution)
            self.discriminator = PatchDiscriminator(config.disc_channels, config.disc_layers)
        device = runtime.device
        self.vae.to(device).train()
        self.discriminator.to(device).train()
        self.perceptual, note = load_perceptual(device) if use_perceptual else (None, "")
        if note:
            report(TrainingEvent("note", message=note))
        lr = config.autoencoder_lr
        self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9),
                                                weight_decay=0.0)
        self.scaler = runtime.scaler()
        checkpointing = config.checkpointing and runtime.gpu
        if checkpointing:
            self.enable_checkpointing()
        self.memory = MemoryFallback(plan.batch, checkpointing, self.enable_checkpointing,
                                     device.type, report)

    def adversarial(self, step: int) -> bool:
        return step > self.plan.config.gan_start

    def step(self, step: int, generator: torch.Generator, numbers: np.random.Generator) -> float:
        """One optimisation step (`step` counts from 1 within the phase); returns its reconstruction loss
        (the reconstruction and KL terms)."""
        device = self.runtime.device
        indices = self.data.pick(self.memory.batch, generator)
        images = self.data.images(indices, generator, device)
        eps = torch.randn((len(indices), self.vae.config.latent_channels, *self._latent_size()),
                          generator=generator).to(device)
        adversarial = self.adversarial(step)
        with self.runtime.autocast():
            posterior = self.vae.encode(images).latent_dist
            latents = posterior.mean + posterior.std * eps
            rebuilt = self.vae.decode(latents).sample.float()
        rec = (images - rebuilt).abs().mean(dim=(1, 2, 3))
        if self.perceptual is not None:
            with self.runtime.autocast():
                rec = rec + PERCEPTUAL_WEIGHT * self.perceptual(images, rebuilt).float()
        nll = rec.mean()
        kl = posterior.kl().float().sum() / images.numel()
        loss = nll + KL_WEIGHT * kl
        reported = float(loss.detach())
        finite_loss(reported, step, "autoencoder")
        if adversarial:
            self.discriminator.requires_grad_(False)
            with self.runtime.autocast():
                generator_loss = -self.discriminator(rebuilt).float().mean()
            weight = adaptive_weight(nll, generator_loss, self.vae.decoder.conv_out.weight)
            loss = loss + weight * generator_loss
            self.discriminator.requires_grad_(True)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        if adversarial:
            with self.runtime.autocast():
                real = self.discriminator(images).float()
                fake = self.discriminator(rebuilt.detach()).float()
            disc_loss = hinge_discriminator_loss(real, fake)
            self.disc_optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(disc_loss).backward()
            self.scaler.step(self.disc_optimizer)
        self.scaler.update()
        return reported

    def _latent_size(self) -> tuple[int, int]:
        side = self.plan.resolution // self.plan.config.vae_factor
        return side, side

    def enable_checkpointing(self) -> None:
        self.vae.enable_gradient_checkpointing()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.disc_optimizer.zero_grad(set_to_none=True)

    # -- checkpoints ------------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict]:
        tensors = {**module_state("vae", self.vae), **module_state("discriminator", self.discriminator)}
        own, values = optimizer_tensors("autoencoder", self.optimizer)
        disc, disc_values = optimizer_tensors("discriminator", self.disc_optimizer)
        return {**tensors, **own, **disc}, {"optimizers": {"autoencoder": values, "discriminator": disc_values},
                                            "scaler": self.scaler.state_dict()}

    def restore(self, tensors: dict, info: dict) -> None:
        load_module_state("vae", self.vae, tensors)
        load_module_state("discriminator", self.discriminator, tensors)
        values = info.get("optimizers", {})
        restore_optimizer_tensors("autoencoder", self.optimizer, tensors, values.get("autoencoder", {}))
        restore_optimizer_tensors("discriminator", self.disc_optimizer, tensors, values.get("discriminator", {}))
        if info.get("scaler"):
            self.scaler.load_state_dict(info["scaler"])

    # -- samples ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self) -> np.ndarray:
        """The first four images over their reconstructions (the posterior means)."""
        self.vae.eval()
        try:
            images = self.data.images(torch.arange(min(4, self.data.count)), None, self.runtime.device)
            rebuilt = self.vae.decode(self.vae.encode(images).latent_dist.mean).sample
        finally:
            self.vae.train()
        return grid([images, rebuilt])


def grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of (B, 3, H, W) images in [-1, 1] as one H x W x 3 uint8 picture."""
    lines = [torch.cat(list(row), dim=-1) for row in rows]
    picture = torch.cat(lines, dim=-2).float().clamp(-1, 1)
    return ((picture + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
