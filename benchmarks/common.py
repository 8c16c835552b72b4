"""Shared helpers: timing, statistics, the machine description, test images, child processes."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "a red ball on a wooden table, soft light"
NEGATIVE = "blurry, low quality"
GUIDANCE = 7.0
SAMPLER = "dpmpp_2m_karras"
RESULT_MARK = "BENCHMARK-RESULT "


def median(values) -> float:
    return float(statistics.median(values))


def summary(values) -> dict:
    """Median, min, max and all values (seconds unless said otherwise), rounded for the JSON."""
    values = [float(v) for v in values]
    return {"median": round(median(values), 6), "min": round(min(values), 6), "max": round(max(values), 6),
            "runs": len(values), "values": [round(v, 6) for v in values]}


def ratio_entry(name: str, numerator: dict, denominator: dict, target: float, **extra) -> dict:
    """A figure of the report: median(numerator) / median(denominator) against `target` (lower is better)."""
    ratio = numerator["median"] / denominator["median"] if denominator["median"] > 0 else float("inf")
    entry = {"name": name, "ratio": round(ratio, 4), "target": target, "passed": bool(ratio <= target),
             "numerator": numerator, "denominator": denominator}
    entry.update(extra)
    return entry


def rotated(items: list, shift: int) -> list:
    """`items` starting at index shift (mod len): each round runs the variants in a different order."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def photo(width: int, height: int, seed: int = 0):
    """A smooth gradient with noise: something like a photo, cheap to make at any size."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = x
    image[..., 1] = y
    image[..., 2] = (x + y) / 2
    noise = rng.integers(-12, 13, size=(min(height, 256), min(width, 256), 3), dtype=np.int16)
    reps = (-(-height // noise.shape[0]), -(-width // noise.shape[1]), 1)
    image = np.clip(image.astype(np.int16) + np.tile(noise, reps)[:height, :width], 0, 255).astype(np.uint8)
    return image


def box_mask(width: int, height: int, rect):
    import numpy as np

    mask = np.zeros((height, width), np.uint8)
    mask[rect.slices()] = 255
    return mask


def centred_rect(side: int, box: int):
    """A box x box square in the middle of a side x side image."""
    from app.core.geometry import Rect

    offset = (side - box) // 2
    return Rect(offset, offset, box, box)


def machine(device: str = "cpu") -> dict:
    import torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "device": device,
        "versions": _versions(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def machine_label(info: dict) -> str:
    if info.get("gpu"):
        return info["gpu"].replace("NVIDIA ", "").replace(" ", "-")
    return f"{info['host'][:20]}-cpu{info['cpu_count']}".replace(" ", "-")


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "diffusers", "transformers", "PySide6_Essentials", "numpy", "opencv-python-headless"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def rss_bytes() -> int:
    """The current resident set size (Linux), 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def emit_result(result: dict) -> None:
    """A child benchmark's answer: one marked JSON line on stdout, read by run_child."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_child(module: str, args: list[str], env: dict | None = None, timeout: float = 1800,
              log=print) -> dict:
    """Run `python -m benchmarks.<module> args` and return the JSON it emits; its other output is logged."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH")]))
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    result = None
    tail: list[str] = []
    for line in process.stdout:
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            continue
        line = line.rstrip("\n")
        if _noise(line):
            continue
        tail = (tail + [line])[-40:]
        log(f"  [{module}] {line}")
    code = process.wait(timeout=timeout)
    if result is None:
        raise RuntimeError(f"benchmarks.{module} exited with {code} after {time.perf_counter() - start:.0f} s "
                           f"without a result:\n" + "\n".join(tail))
    return result


def _noise(line: str) -> bool:
    """Library chatter that says nothing about the benchmark."""
    return ("requires torchvision" in line or "Writing model shards" in line
            or "Loading weights" in line or not line.strip())
