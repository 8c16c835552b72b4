"""Benchmarks 9-10: a Fill guided by one ControlNet (a scribble) through the engine, against diffusers'
ControlNet inpaint pipeline, and what one ControlNet costs per step. Run by benchmarks/run.py in a child
process:

    python -m benchmarks.control_bench --size mid --family sd15 --runs 5 --steps 25

The job is benchmark 1's (benchmarks/engine_bench.py): the model's native-size photo, a centred mask 5/8
of its side (the engine's crop is then the whole image), 25 steps, DPM++ 2M Karras, guidance 7, strength
1, the same prompts and seed; plus one ControlNet of the model's architecture (benchmarks/models.py's
controlnet_folder, random weights, a diffusers ControlNet folder) at weight 1 over every step, with a
scribble drawn at the image's size as its control image. Four variants run side by side:

  engine_control    run_job on a fresh DiffusionEngine (as engine_bench does), the request with one
                    ControlInput("scribble", <ControlNet folder>, image=<scribble>): the ControlNet is loaded
                    by app.engine.diffusion.control.load_controlnet beside the model, its control image made
                    per pass by app.engine.control_plan
  pipeline_control  diffusers' StableDiffusion(XL)ControlNetInpaintPipeline made with from_pipe from the
                    benchmark-1 pipeline (the same folder's modules) and ControlNetModel.from_pretrained of
                    the same ControlNet folder, given the same scribble as control_image
  engine            the same engine job without the ControlNet (benchmark 1's engine variant)
  pipeline          diffusers' StableDiffusion(XL)InpaintPipeline (benchmark 1's), sharing its modules with
                    pipeline_control

Every variant runs once as a warm-up, then `runs` rounds, each running every variant once in a rotated
order. Figures: 9 = engine_control / pipeline_control (whole jobs, target <= 1.0x); 10 = seconds per step
with the ControlNet / without, for the engine and for diffusers (no target: what a ControlNet costs).
Seconds per step are the intervals between consecutive steps (the engine's progress events, previews
included; the pipelines' callback_on_step_end), a median per run, then the median of the runs. One extra
run of each ControlNet variant, with timing hooks on the parts, says where the time goes.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.common import (GUIDANCE, NEGATIVE, PROMPT, SAMPLER, box_mask, centred_rect, emit_result,
                               median, photo, ratio_entry, rotated, summary)
from benchmarks.engine_bench import (MASK_SHARE, EngineRunner, breakdown, load_pipeline, pipeline_breakdown,
                                     step_seconds, tune)
from benchmarks.models import controlnet_folder, describe, describe_controlnet, model_folder, native_size

VARIANTS = ("engine_control", "pipeline_control", "engine", "pipeline")
CONTROL_KIND = "scribble"
CONTROL_WEIGHT = 1.0
CONTROL_IMAGE_PART = "control image (crop, scale, normalise)"


def scribble_image(side: int) -> np.ndarray:
    """A user's scribble at side x side: black strokes on white paper (RGB), as an imported drawing is."""
    import cv2

    page = np.full((side, side, 3), 255, np.uint8)
    s = side / 512
    ink, width = (0, 0, 0), max(1, round(4 * s))
    cv2.circle(page, (round(256 * s), round(250 * s)), round(110 * s), ink, width, cv2.LINE_AA)      # a ball
    cv2.line(page, (round(40 * s), round(380 * s)), (round(472 * s), round(380 * s)), ink, width, cv2.LINE_AA)
    cv2.line(page, (round(70 * s), round(380 * s)), (round(40 * s), round(500 * s)), ink, width, cv2.LINE_AA)
    cv2.line(page, (round(442 * s), round(380 * s)), (round(472 * s), round(500 * s)), ink, width, cv2.LINE_AA)
    points = np.array([[round(x * s), round(y * s)] for x, y in ((60, 120), (120, 60), (200, 90), (300, 40),
                                                                  (420, 110), (470, 70))], np.int32)
    cv2.polylines(page, [points], False, ink, width, cv2.LINE_AA)                                # a horizon
    return page


def info_entry(name: str, numerator: dict, denominator: dict, **extra) -> dict:
    """A ratio of medians reported without a target (informational): target and passed are None."""
    entry = ratio_entry(name, numerator, denominator, 0.0, **extra)
    entry["target"], entry["passed"] = None, None
    return entry


def engine_parts(runner, request, net, cuda: bool) -> dict:
    """engine_bench.breakdown's split of one engine job, with the ControlNet's forward and the control
    images added."""
    from app.engine.diffusion import engine as diffusion_engine

    return breakdown(runner, request, cuda, [(diffusion_engine, "pass_control_images", CONTROL_IMAGE_PART)],
                     [(net, "ControlNet")])


def pipeline_parts(pipe, run, cuda: bool) -> dict:
    """engine_bench.pipeline_breakdown's split of one diffusers call, with the ControlNet's forward and
    prepare_control_image (the control image's resize and conversion) added when the pipeline has them."""
    net = getattr(pipe, "controlnet", None)
    modules = [] if net is None else [(net, "ControlNet")]
    methods = {"prepare_control_image": CONTROL_IMAGE_PART} if hasattr(pipe, "prepare_control_image") else {}
    return pipeline_breakdown(pipe, run, cuda, modules, methods)


def ratios(args) -> dict:
    import torch
    from diffusers import (ControlNetModel, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionXLControlNetInpaintPipeline)
    from PIL import Image

    from app.engine.diffusion.samplers import make_scheduler
    from app.engine.request import ControlInput

    side = native_size(args.size, args.family)
    folder = model_folder(args.size, args.family, dtype=args.model_dtype)
    net_folder = controlnet_folder(args.size, args.family, dtype=args.model_dtype)
    image = photo(side, side)
    hole = centred_rect(side, round(side * MASK_SHARE / 8) * 8)
    mask = box_mask(side, side, hole)
    scribble = scribble_image(side)
    runner = EngineRunner(folder, args.device, args.precision)
    plain = runner.fill_request(image, mask, args.steps)
    control = ControlInput(CONTROL_KIND, str(net_folder), image=scribble, weight=CONTROL_WEIGHT)
    controlled = dataclasses.replace(plain, controls=(control,))

    load_start = time.perf_counter()
    runner.run(dataclasses.replace(controlled, sampling=dataclasses.replace(controlled.sampling, steps=1)))
    engine_load = time.perf_counter() - load_start               # the model and the ControlNet, first calls
    model = runner.model
    work = runner.plan(controlled)
    passes = [(p.region.x, p.region.y, p.region.w, p.region.h, *p.size) for p in work.passes]
    if len(work.passes) != 1 or work.passes[0].size != (side, side) or work.passes[0].region.size != (side, side):
        raise RuntimeError(f"the engine would not work on the whole {side}x{side} image: {passes}")
    nets = model.extra["controlnets"]
    key = next(iter(nets))
    dtype = model.unet.dtype
    device = model.plan.device
    cuda = device == "cuda"

    pipe = load_pipeline(folder, args.family, device, dtype)
    their_net = ControlNetModel.from_pretrained(net_folder, torch_dtype=dtype, local_files_only=True,
                                                use_safetensors=True).to(device).eval()
    control_class = (StableDiffusionXLControlNetInpaintPipeline if args.family == "sdxl"
                     else StableDiffusionControlNetInpaintPipeline)
    control_pipe = control_class.from_pipe(pipe, controlnet=their_net)
    control_pipe.scheduler = make_scheduler(SAMPLER, dict(pipe.scheduler.config))     # its own, same config
    control_pipe.set_progress_bar_config(disable=True)
    if args.compile or args.channels_last:
        model.unet = tune(model.unet, args.compile, args.channels_last)
        nets[key] = tune(nets[key], args.compile, args.channels_last)
        pipe.unet = control_pipe.unet = tune(pipe.unet, args.compile, args.channels_last)
        control_pipe.controlnet = tune(control_pipe.controlnet, args.compile, args.channels_last)

    pil_image, pil_mask, pil_scribble = Image.fromarray(image), Image.fromarray(mask), Image.fromarray(scribble)
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=pil_image, mask_image=pil_mask, height=side,
                  width=side, num_inference_steps=args.steps, guidance_scale=GUIDANCE, strength=1.0,
                  output_type="pil")

    def pipeline_call(which, **extra):
        marks = []

        def on_step(pipe_, index, t, kwargs):
            marks.append(time.perf_counter())
            return kwargs
        output = which(**common, **extra, generator=torch.Generator("cpu").manual_seed(1),
                       callback_on_step_end=on_step)
        return [b - a for a, b in zip(marks, marks[1:])], np.asarray(output.images[0])

    def engine_run(request):
        _, events = runner.run(request)
        return step_seconds(events), events[-1][1].variants[0].image

    runs = {
        "engine_control": lambda: engine_run(controlled),
        "pipeline_control": lambda: pipeline_call(control_pipe, control_image=pil_scribble,
                                                  controlnet_conditioning_scale=CONTROL_WEIGHT),
        "engine": lambda: engine_run(plain),
        "pipeline": lambda: pipeline_call(pipe),
    }
    order = [name for name in VARIANTS if name in args.variants]
    times = {name: [] for name in order}
    step_runs = {name: [] for name in order}        # one median step per run
    steps_all = {name: [] for name in order}
    peaks = {name: 0 for name in order}
    outputs = {}
    for round_index in range(args.warmup + args.runs):
        for name in rotated(order, round_index):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            intervals, output = runs[name]()
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            label = "warm-up" if round_index < args.warmup else f"run {round_index - args.warmup + 1}"
            step = median(intervals) if intervals else float("nan")
            print(f"{args.family} {name:17s} {label:8s} {seconds:8.3f} s  step {1000 * step:7.1f} ms", flush=True)
            outputs[name] = output
            if round_index >= args.warmup:
                times[name].append(seconds)
                step_runs[name].append(step)
                steps_all[name].extend(intervals)
                if cuda:
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated())

    # The ControlNet's own forward, timed alone on the step's input (guided: a batch of 2).
    net_ms, unet_ms = _forward_ms(model, nets[key], side, cuda)

    parts = engine_parts(runner, controlled, nets[key], cuda) if "engine_control" in times else {}
    their_parts = pipeline_parts(control_pipe, runs["pipeline_control"], cuda) if "pipeline_control" in times else {}

    stats = {name: summary(values) for name, values in times.items()}
    step_stats = {name: summary(values) for name, values in step_runs.items() if values}
    changed = {}
    for with_net, without in (("engine_control", "engine"), ("pipeline_control", "pipeline")):
        if with_net in outputs and without in outputs:
            difference = np.abs(outputs[with_net].astype(np.int16) - outputs[without].astype(np.int16))
            changed[with_net] = round(float(difference.mean()), 3)
    result = {
        "size": args.size, "family": args.family, "model": describe(args.size, args.family),
        "controlnet": describe_controlnet(args.size, args.family), "control": f"{CONTROL_KIND}, weight "
        f"{CONTROL_WEIGHT:g}, start 0, end 1", "device": model.plan.describe(), "work_size": f"{side}x{side}",
        "image": f"{side}x{side}", "mask": f"centred {hole.w}x{hole.h}", "steps": args.steps,
        "guidance": GUIDANCE, "sampler": SAMPLER, "compile": args.compile, "channels_last": args.channels_last,
        "engine_passes": passes, "engine_first_job_s": round(engine_load, 3),
        "controlnet_forward_ms": net_ms, "unet_forward_ms": unet_ms,
        "control_changes_output": changed,
        "times": stats, "step_s": step_stats,
        "step_ms": {name: round(1000 * float(np.median(v)), 2) for name, v in steps_all.items() if v},
        "engine_breakdown_ms": parts, "pipeline_breakdown_ms": their_parts, "figures": [],
    }
    if cuda:
        result["peak_vram_gib"] = {name: round(p / 2**30, 3) for name, p in peaks.items()}
    name = control_class.__name__
    if "engine_control" in stats and "pipeline_control" in stats:
        result["figures"].append(ratio_entry(f"ControlNet fill: engine / diffusers {name}",
                                             stats["engine_control"], stats["pipeline_control"], 1.0,
                                             benchmark=9))
    if "engine_control" in step_stats and "engine" in step_stats:
        result["figures"].append(info_entry("one ControlNet per step: engine with / without",
                                            step_stats["engine_control"], step_stats["engine"], benchmark=10,
                                            unit="s per step"))
    if "pipeline_control" in step_stats and "pipeline" in step_stats:
        plain_name = "StableDiffusionXLInpaintPipeline" if args.family == "sdxl" else "StableDiffusionInpaintPipeline"
        result["figures"].append(info_entry(f"one ControlNet per step: diffusers {name} / {plain_name}",
                                            step_stats["pipeline_control"], step_stats["pipeline"], benchmark=10,
                                            unit="s per step"))
    return result


def _forward_ms(model, net, side: int, cuda: bool, calls: int = 5) -> tuple[float, float]:
    """Median ms of one ControlNet forward and one UNet forward alone, on a guided step's batch of 2."""
    import torch

    device, dtype = model.plan.device, model.unet.dtype
    latent = side // model.vae_scale
    generator = torch.Generator("cpu").manual_seed(0)
    x = torch.randn((2, 4, latent, latent), generator=generator).to(device, dtype)
    unet_x = torch.randn((2, model.unet.config.in_channels, latent, latent), generator=generator).to(device, dtype)
    hint = torch.rand((2, 3, side, side), generator=generator).to(device, dtype)
    width = model.unet.config.cross_attention_dim
    text = torch.randn((2, 77, width), generator=generator).to(device, dtype)
    t = torch.tensor(500.0, device=device)
    added = None
    if model.is_xl:
        pooled = model.unet.config.projection_class_embeddings_input_dim - 6 * model.unet.config.addition_time_embed_dim
        added = {"text_embeds": torch.randn((2, pooled), generator=generator).to(device, dtype),
                 "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * 2, device=device, dtype=dtype)}

    def timed(run) -> float:
        values = []
        for index in range(calls + 1):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            if index:                               # the first call is a warm-up
                values.append(time.perf_counter() - start)
        return round(1000 * median(values), 2)

    with torch.inference_mode():
        net_ms = timed(lambda: net(x, t, encoder_hidden_states=text, controlnet_cond=hint, added_cond_kwargs=added,
                                   return_dict=False))
        unet_ms = timed(lambda: model.unet(unet_x, t, encoder_hidden_states=text, added_cond_kwargs=added,
                                           return_dict=False))
    return net_ms, unet_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mid")
    parser.add_argument("--family", default="sd15", choices=("sd15", "sdxl"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model-dtype", default="float32", help="dtype the model folders are saved in")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    emit_result(ratios(args))


if __name__ == "__main__":
    main()
