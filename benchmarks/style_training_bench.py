"""Benchmark 14: learning a style (DreamBooth LoRA), seconds per training step.

    python benchmarks/style_training_bench.py                       # mid SD 1.5 inpainting, CPU, 128 px
    python benchmarks/style_training_bench.py --size sd15 --device cuda --resolution 512 --steps 500

  14  step     one step of the style trainer (`app.training.style_lora`: a batch drawn from the cached latent
               distributions, a random Fill-like mask and its masked-image latents, text conditioning, UNet
               forward and backward, gradient clipping, AdamW) against the bare floor: the same modules, the
               same batch, mask and timesteps, the same operations written out plainly in the benchmark, no
               trainer around them (target <= 1.05x)
  14b  whole   with --steps N: a whole run of N steps (model load and data encoding excluded, samples off),
               its wall time and the device's peak memory (GPU target: 500 SD 1.5 steps at 512 px < 3 min
               on an H100-class GPU)

Runs alternate (A, B, A, B, ...); the figure is the median of the per-run median step times.
Results go to benchmarks/results/training/<date>-<machine>.json; BENCHMARKS.md quotes them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.common import machine, machine_label, median  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "training"


def _images(folder: Path, count: int = 4) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"style{i}.png"
        Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _run(model: str, work: Path, args):
    from app.training.progress import Control
    from app.training.style_lora import _StyleRun
    from app.training.style_settings import StyleTrainingSettings

    settings = StyleTrainingSettings(images=tuple(_images(work / "images")), name="Bench", model=model,
                                     out=str(work / "run"), trigger="zkx", steps=max(args.steps, 1000),
                                     resolution=args.resolution, device=args.device, sample_every=0,
                                     checkpoint_every=100_000, batch=args.batch)
    run = _StyleRun(settings, lambda event: None, Control())
    run.prepare()
    return run


def _bare_step(run, step: int) -> None:
    """The trainer's step written out plainly on its own modules and data (no trainer code on the path but
    the data it drew)."""
    import torch

    from app.training import style_data

    model, data = run.model, run.data
    device, dtype = torch.device(model.plan.device), model.unet.dtype
    generator = torch.Generator().manual_seed(step)
    batch = data.instance.pick(run.memory.batch, generator)
    latents = batch.latents(generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    t = torch.randint(0, 1000, (latents.shape[0],), generator=generator).to(device)
    noisy = data.scheduler.add_noise(latents, noise, t)
    if model.inpaint:
        noisy = torch.cat([noisy, style_data.inpaint_condition(model, batch, generator).to(device)], dim=1)
    embeddings = torch.cat([data.cached[c].embeddings for c in batch.captions])
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        prediction = model.unet(noisy.to(dtype), t, encoder_hidden_states=embeddings, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run._parameters(), 1.0)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    float(loss.detach())


def _timed(step, count: int, sync) -> list[float]:
    times = []
    for _ in range(count):
        begin = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - begin)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mid", choices=("tiny", "mid", "sd15", "sdxl"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-run", type=int, default=6, help="steps per timed run")
    parser.add_argument("--steps", type=int, default=0, help="also time a whole run of this many steps (14b)")
    args = parser.parse_args()

    import torch

    from benchmarks.models import describe, model_folder

    family = "sdxl" if args.size == "sdxl" else "sd15"
    model = str(model_folder(args.size, family))
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as work:
        run = _run(model, Path(work), args)
        counter = iter(range(1, 10**9))
        for _ in range(2):                                   # warm up both paths
            run._step(next(counter))
            _bare_step(run, next(counter))
        trainer, bare = [], []
        for index in range(args.runs):
            pair = [("trainer", lambda: run._step(next(counter))), ("bare", lambda: _bare_step(run, next(counter)))]
            for name, step in pair if index % 2 == 0 else pair[::-1]:
                (trainer if name == "trainer" else bare).append(median(_timed(step, args.per_run, sync)))
        result = {"benchmark": "style_training", "model": describe(args.size, family), "size": args.size,
                  "resolution": args.resolution, "batch": args.batch, "device": args.device,
                  "machine": machine(args.device), "date": dt.date.today().isoformat(),
                  "trainer_s_per_step": median(trainer), "bare_s_per_step": median(bare),
                  "trainer_runs": trainer, "bare_runs": bare, "ratio": median(trainer) / median(bare)}
        if args.steps:
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            begin = time.perf_counter()
            run.plan_values = type(run.plan_values)(run.plan_values.rank, args.steps, run.plan_values.learning_rate,
                                                    run.plan_values.text_encoder, run.plan_values.what)
            run._loop(0)
            sync()
            result["whole_run"] = {"steps": args.steps, "seconds": time.perf_counter() - begin,
                                   "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
                                   if args.device == "cuda" else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{result['date']}-{machine_label(result['machine'])}-style-{args.size}-{args.resolution}px.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
