"""Benchmarks 11-13: the ComfyUI engine against real ComfyUI servers on 127.0.0.1.

    python benchmarks/comfy_bench.py --start ../shared/comfyui/start.sh      # starts its own servers
    python benchmarks/comfy_bench.py --url http://127.0.0.1:8188 [--second-url ...]
    python benchmarks/comfy_bench.py --start ... --only servers --threads-per-server 1   # two "machines"

  11  overhead   a Fill through the engine (planning, upload, graph, progress and previews, result checks,
                 composite) against the same workflow submitted to the same server directly with httpx and
                 websockets (upload, POST /prompt, wait on /ws, /history, /view); target <= 1.05x
  12  previews   the engine with the server's previews decoded and drawn against ignoring them
  13  servers    variants per minute of one request on two servers against one (target >= 1.8x on two
                 machines; two servers on one machine share its cores)

Runs alternate (A, B, A, B, ...) and every figure is a median ratio of one run. Results go to
benchmarks/results/comfy/<date>-<machine>.json; BENCHMARKS.md quotes them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.common import machine, machine_label, median  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "comfy"
CHECKPOINT = "sd15_random_inpaint.safetensors"


def _photo(height=384, width=512) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([(x * 255 // width), (y * 255 // height), ((x + y) % 64) * 4]).astype(np.uint8)


def _request(url: str, steps: int, seed: int, variants: int = 1, servers=()):
    from app.engine.request import GenerationRequest, JobKind, MaskOptions, SamplingOptions

    image = _photo()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[120:260, 160:360] = 255
    return GenerationRequest(JobKind.FILL, image, mask, prompt="a stone", model=f"{CHECKPOINT}@{url}",
                             sampling=SamplingOptions(steps=steps, seed=seed, variants=variants),
                             mask_options=MaskOptions(feather=8), servers=tuple(servers))


def _engine_fill(request) -> float:
    from app.engine.events import CancelToken, EventKind
    from app.engine.registry import EngineRegistry
    from app.engine.runner import run_job

    events = []
    start = time.perf_counter()
    run_job(EngineRegistry().create(request.model), request, 1, events.append, CancelToken())
    elapsed = time.perf_counter() - start
    if events[-1].kind != EventKind.RESULT:
        raise SystemExit(f"the engine's fill failed: {events[-1].message}")
    return elapsed


def _direct_fill(url: str, request, seed: int) -> float:
    """The engine's workflow for this request's one pass, submitted by hand: the baseline of benchmark 11."""
    import httpx
    from PIL import Image
    from websockets.sync.client import connect

    from app.engine.comfy import engine as comfy_engine
    from app.engine.comfy.workflow import PassInputs, build_graph
    from app.engine.job_plan import plan_job

    plan = plan_job(request, comfy_engine.NATIVE_SIDE, comfy_engine.MULTIPLE)
    (p,) = plan.passes
    import cv2

    hole = cv2.resize(p.hole, p.size, interpolation=cv2.INTER_NEAREST)
    crop = np.dstack([plan.pass_pixels(plan.base, p), 255 - hole])
    start = time.perf_counter()
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG", compress_level=1)
    client_id = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=120) as http, \
            connect(f"ws{url[4:]}/ws?clientId={client_id}", max_size=1 << 24) as ws:
        name = http.post("/upload/image", files={"image": (f"direct-{client_id}.png", buffer.getvalue())},
                         data={"overwrite": "true"}).json()["name"]
        graph = build_graph(request, PassInputs(name, seed, CHECKPOINT, True))
        prompt_id = http.post("/prompt", json={"prompt": graph, "client_id": client_id}).json()["prompt_id"]
        while True:
            message = ws.recv(timeout=300)
            if isinstance(message, str):
                event = json.loads(message)
                data = event.get("data") or {}
                if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
        images = http.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["result"]["images"]
        body = http.get("/view", params=images[0]).content
        np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    return time.perf_counter() - start


def _alternate(runs: int, first, second) -> tuple[list[float], list[float]]:
    a, b = [], []
    for index in range(runs):
        a.append(first(index))
        b.append(second(index))
        print(f"  run {index + 1}: {a[-1]:.2f} s / {b[-1]:.2f} s", file=sys.stderr, flush=True)
    return a, b


def _started(script: str, threads: int = 0) -> tuple[str, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "COMFY_EXTRA_ARGS": "--cache-none"}
    if threads:                       # each server on its own share of the cores, as on its own machine
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([script, str(port)], capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{script} {port} failed:\n{done.stderr[-2000:]}")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return values["COMFY_URL"], port


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="", help="a running server on 127.0.0.1")
    parser.add_argument("--second-url", default="", help="a second running server (benchmark 13)")
    parser.add_argument("--start", default="", help="a start script (../shared/comfyui/start.sh)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--side", type=int, default=256, help="the size the crops run at (the engine's native)")
    parser.add_argument("--variants", type=int, default=4, help="variants of benchmark 13's request")
    parser.add_argument("--only", default="overhead,previews,servers")
    parser.add_argument("--threads-per-server", type=int, default=0,
                        help="servers started here get this many CPU threads each (0: all), so two servers on "
                             "one machine stand for two machines with that many cores")
    args = parser.parse_args(argv)
    from app.engine.comfy import engine as comfy_engine
    from app.engine.request import ServerInput

    comfy_engine.NATIVE_SIDE = args.side
    started = []
    url = args.url or ""
    if not url:
        if not args.start:
            raise SystemExit("give --url of a running server or --start with its start script")
        url, port = _started(args.start, args.threads_per_server)
        started.append(port)
    only = set(args.only.split(","))
    results: dict = {"date": dt.date.today().isoformat(), "machine": machine_label(machine()), "steps": args.steps,
                     "side": args.side, "runs": args.runs, "threads_per_server": args.threads_per_server,
                     "benchmarks": {}}
    try:
        _engine_fill(_request(url, 1, 999))                      # the server loads the checkpoint once
        if "overhead" in only:
            print("11 overhead: engine / direct", file=sys.stderr)
            engine, direct = _alternate(args.runs, lambda i: _engine_fill(_request(url, args.steps, 100 + i)),
                                        lambda i: _direct_fill(url, _request(url, args.steps, 200 + i), 200 + i))
            results["benchmarks"]["overhead"] = {"engine_s": engine, "direct_s": direct,
                                                 "ratio": median(engine) / median(direct), "target": 1.05}
        if "previews" in only:
            print("12 previews: on / off", file=sys.stderr)
            decode = comfy_engine.decode_preview

            def off(index):
                comfy_engine.decode_preview = lambda data: None
                try:
                    return _engine_fill(_request(url, args.steps, 400 + index))
                finally:
                    comfy_engine.decode_preview = decode
            on, without = _alternate(args.runs, lambda i: _engine_fill(_request(url, args.steps, 300 + i)), off)
            results["benchmarks"]["previews"] = {"on_s": on, "off_s": without, "ratio": median(on) / median(without)}
        if "servers" in only:
            second = args.second_url
            if not second and args.start:
                second, port = _started(args.start, args.threads_per_server)
                started.append(port)
            if second:
                _engine_fill(_request(second, 1, 998))
                print("13 servers: one / two", file=sys.stderr)
                runs = max(1, args.runs // 2)
                one, two = _alternate(runs, lambda i: _engine_fill(_request(url, args.steps, 500 + i, args.variants)),
                                      lambda i: _engine_fill(_request(url, args.steps, 600 + i, args.variants,
                                                                      (ServerInput(url), ServerInput(second)))))
                per_minute = [60 * args.variants / s for s in one], [60 * args.variants / s for s in two]
                results["benchmarks"]["servers"] = {
                    "one_s": one, "two_s": two, "variants": args.variants,
                    "one_per_minute": median(per_minute[0]), "two_per_minute": median(per_minute[1]),
                    "speedup": median(one) / median(two), "target": 1.8}
            else:
                print("13 skipped: no second server (--second-url or --start)", file=sys.stderr)
    finally:
        for port in started:
            subprocess.run([args.start, "--stop", str(port)], capture_output=True, timeout=60)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{results['date']}-{results['machine']}-{'-'.join(sorted(results['benchmarks']))}.json"
    out.write_text(json.dumps(results, indent=1))
    for name, entry in results["benchmarks"].items():
        figure = entry.get("ratio", entry.get("speedup"))
        print(f"{name}: {figure:.3f}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
