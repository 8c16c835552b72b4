"""Seconds per training step of `train-model` (app/training/model), against bare diffusers.

    python benchmarks/train_model_bench.py [--config tiny] [--runs 5] [--steps 10] [--device cpu]

For each kind of step, ours and a bare one of the same model, batch and size alternate (A, B, A, B, ...),
each run timing --steps steps after a warm-up; every figure is the median of --runs runs:

  autoencoder        our step before the adversarial term starts: L1 + KL, AdamW
  autoencoder + GAN  our step after it: the PatchGAN's generator term with its adaptive weight, and the
                     discriminator's own hinge step
  diffusion          our UNet step: masks drawn, images and masked images encoded by the frozen VAE,
                     epsilon loss, gradient clipping, AdamW, the EMA update (class-conditioned: no text
                     encoder to load)
  diffusion, VAE in  the same against the bare UNet step plus a bare encode of as many images (twice the
                     batch) by the same VAE: the latents our step must make, which the bare step is handed

The bare steps are what diffusers' own training examples do with the same modules: for the autoencoder,
encode, sample, decode, L1 + KL, backward, AdamW step (the same bare step is the denominator of both
autoencoder figures, so the GAN's ratio is what it costs); for the UNet, its forward on ready-made
9-channel inputs, MSE, backward, AdamW step. Their ratio is our overhead. Results go to
benchmarks/results/training/<date>-<machine>-model-<config>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, machine_label, ratio_entry, summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "training"
IMAGES = 16


def _data(resolution: int):
    import numpy as np
    import torch

    from app.training.model.data import ModelData

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:resolution, 0:resolution]
    pixels = []
    for _ in range(IMAGES):
        phase = rng.uniform(0, 255, 3)
        image = np.dstack([(x * 4 + phase[0]) % 256, (y * 4 + phase[1]) % 256, ((x + y) * 2 + phase[2]) % 256])
        pixels.append(np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8))
    tensor = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    classes = torch.arange(IMAGES) % 2
    return ModelData(tensor, [f"{i}.png" for i in range(IMAGES)], [""] * IMAGES, classes, ["a", "b"])


class _Steps:
    """Our three steps and the two bare ones, built once; each callable runs one step."""

    def __init__(self, plan, device: str) -> None:
        import torch

        from app.training.model.autoencoder import KL_WEIGHT, AutoencoderPhase
        from app.training.model.conditioning import ClassConditioner
        from app.training.model.configs import build_unet, build_vae
        from app.training.model.diffusion import DiffusionPhase
        from app.training.model.runtime import choose_runtime, step_generators

        self.plan = plan
        config, side = plan.config, plan.resolution
        runtime = choose_runtime(device)
        data = _data(side)
        quiet = lambda event: None  # noqa: E731
        self.autoencoder = AutoencoderPhase(plan, data, runtime, 0, quiet, use_perceptual=False)
        self.diffusion = DiffusionPhase(plan, data, runtime, 0, build_vae(config, side),
                                        ClassConditioner(data.labels, runtime.device), quiet)
        self.diffusion.measure_scaling_factor()
        self._generators = step_generators
        self._count = 0
        dev = runtime.device
        torch.manual_seed(0)
        self.bare_vae = build_vae(config, side).to(dev).train()
        self.bare_vae_optimizer = torch.optim.AdamW(self.bare_vae.parameters(), lr=config.autoencoder_lr,
                                                    betas=(0.5, 0.9), weight_decay=0.0)
        self.images = data.images(torch.arange(plan.batch), None, dev)
        self.kl_weight = KL_WEIGHT
        self.bare_unet = build_unet(config, side, None, len(data.labels)).to(dev).train()
        self.bare_unet_optimizer = torch.optim.AdamW(self.bare_unet.parameters(), lr=config.diffusion_lr,
                                                     weight_decay=1e-2)
        latent = side // config.vae_factor
        self.unet_input = torch.randn(plan.batch, 9, latent, latent, device=dev)
        self.noise = torch.randn(plan.batch, 4, latent, latent, device=dev)
        self.timesteps = torch.randint(0, 1000, (plan.batch,), device=dev)
        self.labels = torch.randint(0, 2, (plan.batch,), device=dev)

    def _next(self, phase: str):
        self._count += 1
        return self._generators(0, phase, self._count)

    def ours_autoencoder(self) -> None:
        self.autoencoder.step(1, *self._next("autoencoder"))            # step 1: before the GAN starts

    def ours_autoencoder_gan(self) -> None:
        self.autoencoder.step(self.plan.config.gan_start + 1, *self._next("autoencoder"))

    def ours_diffusion(self) -> None:
        self.diffusion.step(self.plan.config.warmup + 1, *self._next("diffusion"))

    def bare_autoencoder(self) -> None:
        posterior = self.bare_vae.encode(self.images).latent_dist
        rebuilt = self.bare_vae.decode(posterior.sample()).sample
        loss = (rebuilt - self.images).abs().mean() + self.kl_weight * posterior.kl().sum() / self.images.numel()
        self.bare_vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.bare_vae_optimizer.step()

    def bare_diffusion_and_encode(self) -> None:
        import torch

        with torch.no_grad():
            self.diffusion.vae.encode(torch.cat([self.images, self.images])).latent_dist.sample()
        self.bare_diffusion()

    def bare_diffusion(self) -> None:
        import torch

        prediction = self.bare_unet(self.unet_input, self.timesteps, encoder_hidden_states=None,
                                    class_labels=self.labels).sample
        loss = torch.nn.functional.mse_loss(prediction, self.noise)
        self.bare_unet_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.bare_unet_optimizer.step()


def _seconds_per_step(step, count: int, device: str) -> float:
    import torch

    def synchronise() -> None:
        if device == "cuda":
            torch.cuda.synchronize()
    synchronise()
    start = time.perf_counter()
    for _ in range(count):
        step()
    synchronise()
    return (time.perf_counter() - start) / count


def _alternate(ours, bare, runs: int, steps: int, device: str) -> tuple[list[float], list[float]]:
    for step in (ours, bare):
        _seconds_per_step(step, max(3, steps // 2), device)              # warm-up: oneDNN builds its kernels
    a, b = [], []
    for index in range(runs):
        pair = ((ours, a), (bare, b)) if index % 2 == 0 else ((bare, b), (ours, a))
        for step, into in pair:
            into.append(_seconds_per_step(step, steps, device))
    return a, b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from app.training.model.settings import ModelTrainingSettings

    plan = ModelTrainingSettings("-", "-", config=args.config).plan
    steps = _Steps(plan, args.device)
    figures = []
    for name, ours, bare in (("autoencoder", steps.ours_autoencoder, steps.bare_autoencoder),
                             ("autoencoder + GAN", steps.ours_autoencoder_gan, steps.bare_autoencoder),
                             ("diffusion", steps.ours_diffusion, steps.bare_diffusion),
                             ("diffusion, VAE in", steps.ours_diffusion, steps.bare_diffusion_and_encode)):
        print(f"{name}: ours / bare diffusers", file=sys.stderr)
        a, b = _alternate(ours, bare, args.runs, args.steps, args.device)
        entry = ratio_entry(name, summary(a), summary(b), target=float("inf"))
        entry.pop("passed")
        entry.pop("target")
        figures.append(entry)
        print(f"  {entry['numerator']['median']:.4f} s / {entry['denominator']['median']:.4f} s per step = "
              f"{entry['ratio']:.3f}x", file=sys.stderr)
    info = machine(args.device)
    result = {"date": dt.date.today().isoformat(), "machine": info, "config": args.config,
              "resolution": plan.resolution, "batch": plan.batch, "runs": args.runs, "steps_per_run": args.steps,
              "figures": figures}
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{result['date']}-{machine_label(info)}-model-{args.config}.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
