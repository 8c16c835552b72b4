"""Latent Canvas benchmarks: is the engine as fast as the hardware allows, and does the UI never stall?

The one command (from the project folder, with the project's environment):

    python benchmarks/run.py                      # the default run: mid-size models on the CPU, ~16 min
    python benchmarks/run.py --size sd15 --device cuda [--compile] [--channels-last]
    python benchmarks/run.py --size sdxl --device cuda
    python benchmarks/run.py --report-only        # rebuild BENCHMARKS.md from benchmarks/results/*.json

It runs, each in its own child process (python -m benchmarks.<module>):

  1-3 engine_bench ratios   the engine against diffusers' StableDiffusion(XL)InpaintPipeline on the same
                            folder, the bare floor (benchmarks/floor.py) and itself with a no-op preview
  4   engine_bench scaling  a small mask filled on native^2 and 8192^2 canvases; Expand by native/2 px on
                            native^2 and 4096^2, and by native/2 and 2*native px on native^2
  5   ui_bench              main-thread stalls and Cancel latency in a real MainWindow (offscreen), with
                            2048^2 and 4096^2 documents
  6   startup_bench         process start to the window painted, torch not imported
  7   memory_bench          peak RSS and undo history after 50 accepted fills on a 4096^2 document
  9   control_bench         a Fill guided by one ControlNet (a scribble): the engine against diffusers'
                            StableDiffusion(XL)ControlNetInpaintPipeline on the same folders
  10  control_bench         seconds per step with one ControlNet / without, for the engine and for
                            diffusers (informational, no target)

and writes benchmarks/results/<date>-<machine>.json, then regenerates the tables in BENCHMARKS.md from
every results file (benchmarks/report.py). Models are random-weight diffusers folders built on first use
into benchmarks/.cache/models (benchmarks/models.py): timings only. Every figure is a ratio or value
measured in this one run, with medians over --runs runs (at least 5 for a report).
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

from benchmarks.common import ROOT, machine, machine_label, run_child  # noqa: E402
from benchmarks.models import FAMILIES, SIZES, controlnet_folder, describe, model_folder  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("engine", "scaling", "ui", "startup", "memory", "control")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mid", choices=SIZES,
                        help="model size: tiny (plumbing), mid (default, CPU), sd15 / sdxl (real architectures)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    parser.add_argument("--precision", default="auto", help="the engine's precision (auto: fp16 on GPUs)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant (medians; at least 5)")
    parser.add_argument("--steps", type=int, default=25, help="steps of the fills in benchmarks 1-4 and 9-10")
    parser.add_argument("--expand-steps", type=int, default=None,
                        help="steps of the Expand cases of benchmark 4 (default: 6 on the CPU, --steps on GPUs)")
    parser.add_argument("--ui-steps", type=int, default=8, help="steps of the fills in benchmark 5")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (engine and diffusers)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last UNet (engine and diffusers)")
    parser.add_argument("--ui-documents", default="2048,4096",
                        help="comma-separated document sides for the UI benchmark (one run of it per side)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true", help="only regenerate BENCHMARKS.md")
    args = parser.parse_args(argv)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.only) - set(PARTS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if args.expand_steps is None:
        args.expand_steps = 6 if args.device == "cpu" else args.steps
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from benchmarks.report import write_report

    if args.report_only:
        print(f"wrote {write_report(args.results, args.report)}")
        return 0
    started = time.perf_counter()
    when = dt.datetime.now(dt.timezone.utc)
    info = machine(args.device)
    label = machine_label(info)
    if args.runs < 5:
        print(f"note: --runs {args.runs} is below the 5 runs a report needs; results are marked as a smoke run")
    model_dtype = "float32" if args.device == "cpu" else "float16"
    common = ["--size", args.size, "--device", args.device, "--precision", args.precision,
              "--model-dtype", model_dtype]
    tuning = (["--compile"] if args.compile else []) + (["--channels-last"] if args.channels_last else [])
    families = FAMILIES[args.size]
    for family in families:                 # build the models up front, outside every timing
        model_folder(args.size, family, dtype=model_dtype)
        if "control" in args.only:
            controlnet_folder(args.size, family, dtype=model_dtype)

    out = {"date": when.strftime("%Y-%m-%d"), "time_utc": when.strftime("%H:%M"), "machine": info,
           "label": label, "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "config": {"size": args.size, "device": args.device, "precision": args.precision, "runs": args.runs,
                      "steps": args.steps, "expand_steps": args.expand_steps, "ui_steps": args.ui_steps,
                      "compile": args.compile, "channels_last": args.channels_last, "model_dtype": model_dtype,
                      "models": {f: describe(args.size, f) for f in families}},
           "smoke": args.runs < 5, "benchmarks": {}, "errors": {}}
    jobs = []
    if "engine" in args.only:
        for family in families:
            jobs.append((f"engine_{family}", "engine_bench",
                         ["ratios", *common, "--family", family, "--steps", str(args.steps), "--runs",
                          str(args.runs), *tuning]))
    if "scaling" in args.only:
        jobs.append(("scaling", "engine_bench",
                     ["scaling", *common, "--family", families[0], "--steps", str(args.steps), "--expand-steps",
                      str(args.expand_steps), "--runs", str(args.runs), *tuning]))
    if "ui" in args.only:
        for side in [int(s) for s in args.ui_documents.split(",") if s.strip()]:
            jobs.append((f"ui_{side}", "ui_bench",
                         ["--size", args.size, "--family", families[0], "--device", args.device, "--model-dtype",
                          model_dtype, "--steps", str(args.ui_steps), "--runs", str(args.runs), "--document",
                          str(side)]))
    if "startup" in args.only:
        jobs.append(("startup", "startup_bench", ["--runs", str(args.runs)]))
    if "memory" in args.only:
        jobs.append(("memory", "memory_bench", ["--fills", "50", "--document", "4096"]))
    if "control" in args.only:
        for family in families:
            jobs.append((f"control_{family}", "control_bench",
                         [*common, "--family", family, "--steps", str(args.steps), "--runs", str(args.runs),
                          *tuning]))

    for name, module, child_args in jobs:
        print(f"== {name}: python -m benchmarks.{module} {' '.join(child_args)}", flush=True)
        start = time.perf_counter()
        try:
            result = run_child(module, child_args)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not lose the others
            print(f"!! {name} failed: {exc}", flush=True)
            out["errors"][name] = str(exc)[-4000:]
            continue
        result["wall_s"] = round(time.perf_counter() - start, 1)
        result["ran_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        out["benchmarks"][name] = result
        for figure in result.get("figures", []):
            print(f"   {_figure_line(figure)}", flush=True)

    out["wall_s"] = round(time.perf_counter() - started, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.size == "mid" else f"-{args.size}"
    suffix += "-compile" if args.compile else ""
    suffix += "-channels-last" if args.channels_last else ""
    suffix += "-smoke" if out["smoke"] else ""
    path = args.results / f"{out['date']}-{label}{suffix}.json"
    if set(args.only) != set(PARTS) and path.is_file():
        out = _merged(json.loads(path.read_text(encoding="utf-8")), out)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({out['wall_s']:.0f} s)")
    print(f"wrote {write_report(args.results, args.report)}")
    return 1 if out["errors"] else 0


def _merged(earlier: dict, now: dict) -> dict:
    """A partial rerun (--only) updates the parts it ran in the same day's results file and keeps the rest;
    each part records when it ran, and the command line records both runs."""
    merged = dict(earlier)
    merged["benchmarks"] = {**earlier.get("benchmarks", {}), **now["benchmarks"]}
    merged["errors"] = {k: v for k, v in earlier.get("errors", {}).items() if k not in now["benchmarks"]}
    merged["errors"].update(now["errors"])
    merged["command"] = f"{earlier['command']}; then {now['command']}"
    merged["wall_s"] = round(earlier.get("wall_s", 0) + now["wall_s"], 1)
    merged["smoke"] = bool(earlier.get("smoke")) or now["smoke"]
    return merged


def _figure_line(figure: dict) -> str:
    verdict = "info" if figure["passed"] is None else "pass" if figure["passed"] else "MISS"
    if "ratio" in figure and figure["target"] is None:
        return f"[{verdict}] {figure['name']}: {figure['ratio']:.3f}x (no target)"
    if "ratio" in figure:
        return f"[{verdict}] {figure['name']}: {figure['ratio']:.3f}x (target <= {figure['target']}x)"
    return f"[{verdict}] {figure['name']}: {figure['value']} {figure.get('unit', '')} (target <= {figure['target']})"


if __name__ == "__main__":
    sys.exit(main())
