"""Benchmarks 1-4: the diffusion engine against diffusers' inpainting pipelines, the bare floor, itself
without previews, and itself on small and huge canvases. Run by benchmarks/run.py in a child process:

    python -m benchmarks.engine_bench ratios --size mid --family sd15 --runs 5 --steps 25
    python -m benchmarks.engine_bench scaling --size mid --family sd15 --runs 5 --steps 25 --expand-steps 8

Every variant runs once as a warm-up, then `runs` rounds, each round running every variant once in a
rotated order, so slow drifts of a shared machine hit all variants alike. Times are wall-clock seconds of
one whole job: for the engine app.engine.runner.run_job on a fresh DiffusionEngine sharing one loaded
model (as the editor does), request construction included in the scaling runs (from read-only images, as
the editor's documents are, so the request shares the image and copies the mask); for diffusers one
pipeline call with output_type="pil".
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import (GUIDANCE, NEGATIVE, PROMPT, SAMPLER, box_mask, centred_rect, emit_result,
                               photo, ratio_entry, rotated, summary)
from benchmarks.models import describe, model_folder, native_size

MASK_SHARE = 5 / 8       # a centred mask this share of the native side makes the engine's crop the whole image


class EngineRunner:
    """Runs fills/expands through run_job with one ModelManager, like the editor's worker thread."""

    def __init__(self, folder, device: str, precision: str) -> None:
        from app.engine.diffusion.model_manager import ModelManager

        self.folder = str(folder)
        self.device = device
        self.precision = precision
        self.manager = ModelManager()

    def fill_request(self, image, mask, steps: int, seed: int = 1):
        from app.engine.request import GenerationRequest, JobKind, MaskOptions, SamplingOptions

        return GenerationRequest(JobKind.FILL, image, mask, prompt=PROMPT, negative_prompt=NEGATIVE,
                                 model=self.folder, device=self.device, precision=self.precision,
                                 sampling=SamplingOptions(steps=steps, guidance=GUIDANCE, seed=seed,
                                                          sampler=SAMPLER),
                                 mask_options=MaskOptions(feather=8))

    def expand_request(self, image, canvas, steps: int, seed: int = 1):
        from app.engine.request import GenerationRequest, JobKind, OutpaintOptions, SamplingOptions

        return GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas), prompt=PROMPT,
                                 negative_prompt=NEGATIVE, model=self.folder, device=self.device,
                                 precision=self.precision,
                                 sampling=SamplingOptions(steps=steps, guidance=GUIDANCE, seed=seed,
                                                          sampler=SAMPLER))

    def run(self, request) -> tuple[float, list]:
        """(seconds, [(time, event)]) of one job; raises if it did not produce a result."""
        from app.engine.diffusion.engine import DiffusionEngine
        from app.engine.events import CancelToken, EventKind
        from app.engine.runner import run_job

        events = []
        engine = DiffusionEngine(self.folder, self.manager)
        start = time.perf_counter()
        run_job(engine, request, 1, lambda event: events.append((time.perf_counter(), event)), CancelToken())
        seconds = time.perf_counter() - start
        last = events[-1][1]
        if last.kind != EventKind.RESULT:
            raise RuntimeError(f"the engine did not produce a result: {last.kind.value} {last.message}")
        return seconds, events

    @property
    def model(self):
        return self.manager.current

    def plan(self, request):
        from app.engine.diffusion.engine import DiffusionEngine

        return DiffusionEngine(self.folder, self.manager)._plan(request, self.model)


def step_seconds(events) -> list[float]:
    """Intervals between consecutive step reports (the denoising steps, previews and emits included)."""
    steps = [(t, e) for t, e in events if e.kind.value == "progress" and e.step >= 1]
    return [b[0] - a[0] for a, b in zip(steps, steps[1:])]


def load_pipeline(folder, family: str, device: str, dtype):
    import diffusers

    from app.engine.diffusion.samplers import make_scheduler

    if family == "sdxl":
        pipe = diffusers.StableDiffusionXLInpaintPipeline.from_pretrained(
            folder, dtype=dtype, local_files_only=True)
    else:
        pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
            folder, dtype=dtype, local_files_only=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    pipe.scheduler = make_scheduler(SAMPLER, dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def tune(module, compile_: bool, channels_last: bool):
    """The optional GPU speed-ups, applied alike to the engine's and the pipeline's modules."""
    import torch

    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile_:
        module = torch.compile(module)
    return module


def breakdown(runner, request, cuda: bool, extra_patches=(), extra_modules=()) -> dict:
    """Where one engine job's time goes: an extra run with timing wrappers around the engine's parts
    (synchronised on a GPU, so it is not one of the timed runs). Values are ms, with call counts.
    `extra_patches`: more (owner, function name, part) to time; `extra_modules`: more (module, part)."""
    import collections

    import torch

    from app.engine.diffusion import denoise, latent_codec
    from app.engine.diffusion import engine as diffusion_engine

    spent, calls = collections.defaultdict(float), collections.defaultdict(int)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(name, function):
        return _timed_call(function, name, spent, calls, sync)

    make_preview = latent_codec.make_preview
    patches = [(latent_codec, "encode", "VAE encode"), (latent_codec, "decode", "VAE decode"),
               (denoise, "encode_prompts", "text encoding"), (diffusion_engine, "plan_job", "work-region planning"),
               (diffusion_engine, "composite_pass", "scale back, colour drift, composite"), *extra_patches]
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, name in patches:
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    latent_codec.make_preview = lambda *a: timed("previews", make_preview(*a))
    handles = []                      # with --compile the UNet is the compiled wrapper: hooks stay outside the graph
    for module, name in ((runner.model.unet, "UNet"), *extra_modules):
        handles += forward_hooks(module, name, spent, calls, sync)
    try:
        total, _ = runner.run(request)
    finally:
        for handle in handles:
            handle.remove()
        for owner, attr, original in originals:
            setattr(owner, attr, original)
        latent_codec.make_preview = make_preview
    return _parts(spent, calls, total)


def pipeline_breakdown(pipe, run, cuda: bool, extra_modules=(), methods=None) -> dict:
    """The same split for one diffusers pipeline call: VAE encode/decode, text encoders, UNet, the rest;
    `extra_modules`: more (module, part); `methods`: the pipeline's own methods to time, name -> part."""
    import collections

    import torch

    spent, calls = collections.defaultdict(float), collections.defaultdict(int)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    modules = [(pipe.unet, "UNet"), (pipe.vae.encoder, "VAE encode"), (pipe.vae.decoder, "VAE decode")]
    modules += [(getattr(pipe, a), "text encoding") for a in ("text_encoder", "text_encoder_2")
                if getattr(pipe, a, None) is not None]
    handles = []
    for module, name in (*modules, *extra_modules):
        handles += forward_hooks(module, name, spent, calls, sync)
    for attr, name in (methods or {}).items():
        setattr(pipe, attr, _timed_call(getattr(pipe, attr), name, spent, calls, sync))   # instance attributes
    start = time.perf_counter()
    try:
        run()
    finally:
        total = time.perf_counter() - start
        for handle in handles:
            handle.remove()
        for attr in methods or {}:
            delattr(pipe, attr)
    return _parts(spent, calls, total)


def forward_hooks(module, name: str, spent, calls, sync) -> list:
    """Hooks that add each forward of `module` to spent[name] / calls[name]; remove them when done."""
    starts = {}

    def before(module_, args) -> None:
        sync()
        starts[name] = time.perf_counter()

    def after(module_, args, output) -> None:      # returns None: the output is left alone
        sync()
        spent[name] += time.perf_counter() - starts[name]
        calls[name] += 1
    return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


def _timed_call(function, name: str, spent, calls, sync):
    def wrapper(*args, **kwargs):
        sync()
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            sync()
            spent[name] += time.perf_counter() - start
            calls[name] += 1
    return wrapper


def _parts(spent, calls, total: float) -> dict:
    """Parts nested in others are not counted twice: encode/decode run inside the pass, not inside these."""
    parts = {name: {"ms": round(1000 * spent[name], 2), "calls": calls[name]} for name in spent}
    parts["everything else"] = {"ms": round(1000 * (total - sum(spent.values())), 2), "calls": 1}
    parts["total"] = {"ms": round(1000 * total, 2), "calls": 1}
    return parts


# -- benchmarks 1-3 ----------------------------------------------------------------------------------------

def ratios(args) -> dict:
    import torch
    from PIL import Image

    from app.engine.diffusion import latent_codec
    from benchmarks.floor import floor_fill

    side = native_size(args.size, args.family)
    folder = model_folder(args.size, args.family, dtype=args.model_dtype)
    image = photo(side, side)
    hole = centred_rect(side, round(side * MASK_SHARE / 8) * 8)
    mask = box_mask(side, side, hole)
    runner = EngineRunner(folder, args.device, args.precision)
    request = runner.fill_request(image, mask, args.steps)

    load_start = time.perf_counter()
    runner.run(runner.fill_request(image, mask, 1))          # loads the model, first-call overheads
    engine_load = time.perf_counter() - load_start
    model = runner.model
    work = runner.plan(request)
    passes = [(p.region.x, p.region.y, p.region.w, p.region.h, *p.size) for p in work.passes]
    if len(work.passes) != 1 or work.passes[0].size != (side, side) or work.passes[0].region.size != (side, side):
        raise RuntimeError(f"the engine would not work on the whole {side}x{side} image: {passes}")
    dtype = model.unet.dtype
    pipe = None
    if "pipeline" in args.variants:
        pipe = load_pipeline(folder, args.family, model.plan.device, dtype)
    if args.compile or args.channels_last:
        model.unet = tune(model.unet, args.compile, args.channels_last)
        if pipe is not None:
            pipe.unet = tune(pipe.unet, args.compile, args.channels_last)

    pil_image, pil_mask = Image.fromarray(image), Image.fromarray(mask)
    cuda = model.plan.device == "cuda"
    original_preview = latent_codec.make_preview

    def no_preview(model_, alpha, size):
        return lambda x0: None

    def timed(run):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        extra = run()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if cuda else 0
        return seconds, extra, peak

    def engine_run():
        return runner.run(request)[1]

    def engine_no_preview_run():
        latent_codec.make_preview = no_preview
        try:
            return runner.run(request)[1]
        finally:
            latent_codec.make_preview = original_preview

    def pipeline_run():
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=pil_image, mask_image=pil_mask, height=side,
             width=side, num_inference_steps=args.steps, guidance_scale=GUIDANCE, strength=1.0,
             generator=torch.Generator("cpu").manual_seed(1), output_type="pil")

    def floor_run():
        floor_fill(model, image, mask, PROMPT, NEGATIVE, args.steps, GUIDANCE, SAMPLER, seed=1)

    runs = {"engine": engine_run, "engine_no_preview": engine_no_preview_run, "pipeline": pipeline_run,
            "floor": floor_run}
    order = [name for name in ("engine", "pipeline", "floor", "engine_no_preview") if name in args.variants]
    times = {name: [] for name in order}
    steps = {name: [] for name in order}
    peaks = {name: 0 for name in order}
    for round_index in range(args.warmup + args.runs):
        for name in rotated(order, round_index):
            seconds, events, peak = timed(runs[name])
            label = "warm-up" if round_index < args.warmup else f"run {round_index - args.warmup + 1}"
            print(f"{args.family} {name:18s} {label:8s} {seconds:8.3f} s", flush=True)
            if round_index >= args.warmup:
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                if events:
                    steps[name].extend(step_seconds(events))

    # The preview itself, timed alone: what one call costs next to one step.
    preview = original_preview(model, work.passes[0].alpha, (side, side))
    x0 = torch.randn(1, model.latent_channels, side // model.vae_scale, side // model.vae_scale,
                     device=model.plan.device)
    preview(x0)
    calls = []
    for _ in range(50):
        start = time.perf_counter()
        preview(x0)
        calls.append(time.perf_counter() - start)

    parts = breakdown(runner, request, cuda) if "engine" in times else {}
    pipeline_parts = pipeline_breakdown(pipe, pipeline_run, cuda) if pipe is not None else {}
    stats = {name: summary(values) for name, values in times.items()}
    result = {
        "size": args.size, "family": args.family, "model": describe(args.size, args.family),
        "device": model.plan.describe(), "work_size": f"{side}x{side}", "image": f"{side}x{side}",
        "mask": f"centred {hole.w}x{hole.h}", "steps": args.steps, "guidance": GUIDANCE, "sampler": SAMPLER,
        "compile": args.compile, "channels_last": args.channels_last, "engine_passes": passes,
        "engine_first_job_s": round(engine_load, 3), "preview_decoder": type(preview).__name__,
        "preview_call_ms": round(1000 * float(np.median(calls)), 3),
        "times": stats, "engine_breakdown_ms": parts,
        "pipeline_breakdown_ms": pipeline_parts,
        "step_ms": {name: round(1000 * float(np.median(values)), 2) for name, values in steps.items() if values},
        "figures": [],
    }
    if "engine" in stats:
        e = stats["engine"]["median"]
        result["seconds_per_fill"] = e
        result["it_per_s"] = round(args.steps / e, 3)
        if "engine" in result["step_ms"]:
            result["step_it_per_s"] = round(1000 / result["step_ms"]["engine"], 3)
        if cuda:
            result["peak_vram_gib"] = {name: round(p / 2**30, 3) for name, p in peaks.items()}
    pipeline_name = ("StableDiffusionXLInpaintPipeline" if args.family == "sdxl"
                     else "StableDiffusionInpaintPipeline")
    if "pipeline" in stats:
        result["figures"].append(ratio_entry(f"engine / diffusers {pipeline_name}", stats["engine"],
                                             stats["pipeline"], 1.0, benchmark=1))
    if "floor" in stats:
        result["figures"].append(ratio_entry("engine / bare floor", stats["engine"], stats["floor"], 1.05,
                                             benchmark=2))
    if "engine_no_preview" in stats:
        result["figures"].append(ratio_entry("previews every step / no previews", stats["engine"],
                                             stats["engine_no_preview"], 1.03, benchmark=3))
    return result


# -- benchmark 4 ---------------------------------------------------------------------------------------------

def scaling(args) -> dict:
    from app.core.geometry import Rect

    native = native_size(args.size, args.family)
    folder = model_folder(args.size, args.family, dtype=args.model_dtype)
    runner = EngineRunner(folder, args.device, args.precision)
    small, big, huge = native, args.expand_canvas, args.fill_canvas
    box = Rect(native * 3 // 8, native * 3 // 8, native // 4, native // 4)      # the same small mask
    add, more = native // 2, native * 2                                           # +256 / +1024 at 512
    # Read-only, as the editor's document images are (app.core.document.read_only): requests share them.
    from app.core.document import read_only

    images = {small: read_only(photo(small, small)), big: read_only(photo(big, big, seed=1)),
              huge: read_only(photo(huge, huge, seed=2))}
    masks = {small: box_mask(small, small, box), huge: box_mask(huge, huge, box)}
    cases = {
        f"fill {small}^2": lambda: runner.fill_request(images[small], masks[small], args.steps),
        f"fill {huge}^2": lambda: runner.fill_request(images[huge], masks[huge], args.steps),
        f"expand {small}^2 +{add}": lambda: runner.expand_request(images[small], Rect(0, 0, small + add, small),
                                                                   args.expand_steps),
        f"expand {big}^2 +{add}": lambda: runner.expand_request(images[big], Rect(0, 0, big + add, big),
                                                                 args.expand_steps),
        f"expand {small}^2 +{more}": lambda: runner.expand_request(images[small],
                                                                    Rect(0, 0, small + more, small),
                                                                    args.expand_steps),
    }
    added = {f"expand {small}^2 +{add}": add * small, f"expand {big}^2 +{add}": add * big,
             f"expand {small}^2 +{more}": more * small}
    runner.run(cases[f"fill {small}^2"]())                 # load the model
    info = {}
    for name, make in cases.items():
        request = make()
        start = time.perf_counter()
        work = runner.plan(request)                 # DiffusionEngine._plan alone, timed once
        info[name] = {"passes": len(work.passes), "plan_ms": round(1000 * (time.perf_counter() - start), 1),
                      "work_sizes": sorted({f"{w}x{h}" for w, h in (p.size for p in work.passes)})}
        del request, work
    times = {name: [] for name in cases}
    build = {name: [] for name in cases}
    order = list(cases)
    for round_index in range(args.warmup + args.runs):
        for name in rotated(order, round_index):
            start = time.perf_counter()
            request = cases[name]()
            built = time.perf_counter() - start
            seconds, _ = runner.run(request)
            seconds += built
            del request
            label = "warm-up" if round_index < args.warmup else f"run {round_index - args.warmup + 1}"
            print(f"{name:22s} {label:8s} {seconds:8.3f} s (request {built * 1000:.0f} ms)", flush=True)
            if round_index >= args.warmup:
                times[name].append(seconds)
                build[name].append(built)
    stats = {name: summary(values) for name, values in times.items()}
    for name in cases:
        info[name]["request_build_ms"] = round(1000 * float(np.median(build[name])), 1)
    figures = [ratio_entry(f"fill: {box.w}x{box.h} mask on {huge}^2 / on {small}^2 canvas",
                           stats[f"fill {huge}^2"], stats[f"fill {small}^2"], 1.2, benchmark=4)]

    def per_area(name_big: str, name_small: str, label: str) -> dict:
        area_ratio = added[name_big] / added[name_small]
        entry = ratio_entry(label, stats[name_big], stats[name_small], round(1.2 * area_ratio, 3), benchmark=4,
                            area_ratio=area_ratio)
        entry["per_added_pixel_ratio"] = round(entry["ratio"] / area_ratio, 4)
        return entry
    figures.append(per_area(f"expand {big}^2 +{add}", f"expand {small}^2 +{add}",
                            f"expand: +{add} px on one side of {big}^2 / of {small}^2"))
    figures.append(per_area(f"expand {small}^2 +{more}", f"expand {small}^2 +{add}",
                            f"expand: +{more} / +{add} px on one side of {small}^2"))
    return {"size": args.size, "family": args.family, "model": describe(args.size, args.family),
            "device": runner.model.plan.describe(), "steps": args.steps, "expand_steps": args.expand_steps,
            "mask": f"{box.w}x{box.h} at ({box.x}, {box.y})", "work_size": f"{native}x{native} (area)",
            "cases": info, "times": stats, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("ratios", "scaling"))
    parser.add_argument("--size", default="mid")
    parser.add_argument("--family", default="sd15", choices=("sd15", "sdxl"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model-dtype", default="float32", help="dtype the model folder is saved in")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--expand-steps", type=int, default=8, help="steps of the Expand cases (scaling)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default="engine,pipeline,floor,engine_no_preview")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fill-canvas", type=int, default=8192)
    parser.add_argument("--expand-canvas", type=int, default=4096)
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    emit_result(ratios(args) if args.part == "ratios" else scaling(args))


if __name__ == "__main__":
    main()
