"""Selection tools on a large document: how long each one takes, against the UI's 16 ms frame.

The document is a 4096 x 4096 RGB "photo" (benchmarks.common.photo: smooth gradients with noise) with
shapes drawn on it: a shaded red disc (the object to select, its true mask known), a flat blue square,
and small dots. Each tool is timed on it (median of --runs, after one warm-up call); a tool whose median
fits in one frame can run on the UI thread as the user clicks, the others belong on a worker thread with
a busy cursor. A second table measures GrabCut's working size: time, and how far the selected disc's
edge lies from the true one (mismatched pixels / true perimeter, px), with and without the full-resolution
guided-filter refinement.

    python -m benchmarks.selection_bench --runs 5
"""
from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np

from benchmarks.common import emit_result, photo, summary

FRAME_MS = 16.0
SIDE = 4096
WORKING_SIDES = (256, 384, 512, 768, 1024)


def scene(side: int = SIDE, seed: int = 0) -> dict:
    """The benchmark document and what is known about it: the disc's true mask, seeds, box and strokes."""
    image = photo(side, side, seed)
    centre, radius = (side * 9 // 20, side // 2), side * 9 // 40
    disc = np.zeros((side, side), np.uint8)
    cv2.circle(disc, centre, radius, 255, -1)
    # The disc's shading: brighter towards its upper left, with the document's noise kept on top.
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    shade = (0.75 + 0.35 * (1 - xx - yy))[..., None] * np.float32([230, 60, 40])
    noise = image.astype(np.int16) - cv2.blur(image, (9, 9)).astype(np.int16)
    shaded = np.clip(shade + noise, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    for x, y in rng.integers(0, side, (400, 2)):
        cv2.circle(image, (int(x), int(y)), int(rng.integers(3, 20)), (250, 250, 240), -1)
    np.copyto(image, shaded, where=disc[..., None] > 0)
    square = (side * 3 // 4, side // 10, side // 8)            # x, y, size: flat blue, no noise
    image[square[1]:square[1] + square[2], square[0]:square[0] + square[2]] = (40, 70, 200)
    margin = radius // 10
    box = (centre[0] - radius - margin, centre[1] - radius - margin, 2 * (radius + margin), 2 * (radius + margin))
    foreground = np.zeros_like(disc)
    cv2.line(foreground, (centre[0] - radius // 2, centre[1]), (centre[0] + radius // 2, centre[1]), 255, 9)
    background = np.zeros_like(disc)
    cv2.circle(background, centre, radius + 2 * margin, 255, 9)
    return {"image": image, "disc": disc, "centre": centre, "radius": radius, "box": box,
            "square_seed": (square[0] + square[2] // 2, square[1] + square[2] // 2),
            "foreground": foreground, "background": background}


def timed(function, runs: int) -> dict:
    """summary() of `runs` calls in ms, after one warm-up call (page faults, OpenCV's first-use set-up)."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return summary(times)


def edge_error(mask: np.ndarray, truth: np.ndarray, radius: int) -> float:
    """Mean distance of the selected edge from the true circle, px: mismatched pixels / perimeter."""
    return float(np.count_nonzero((mask >= 128) != (truth >= 128)) / (2 * math.pi * radius))


def tool_cases(s: dict) -> list[tuple[str, str, object]]:
    from app.core import selection
    from app.core.geometry import Rect

    image, disc = s["image"], s["disc"]
    cx, cy = s["centre"]
    sx, sy = s["square_seed"]
    noisy = selection.magic_wand(image, 40, 40, 20, contiguous=False)
    soft = selection.feather(disc, 8)
    return [
        ("magic_wand", "contiguous, flat square (1.6 % of the image)",
         lambda: selection.magic_wand(image, sx, sy, 10)),
        ("magic_wand", "contiguous, shaded disc (16 %)", lambda: selection.magic_wand(image, cx, cy, 90)),
        ("magic_wand", "global", lambda: selection.magic_wand(image, cx, cy, 32, contiguous=False)),
        ("colour_range", "softness 0", lambda: selection.colour_range(image, (230, 60, 40), 32)),
        ("colour_range", "softness 24", lambda: selection.colour_range(image, (230, 60, 40), 32, 24)),
        ("select_object", "box around the disc", lambda: selection.select_object(image, Rect(*s["box"]))),
        ("select_object", "strokes only, whole image",
         lambda: selection.select_object(image, foreground=s["foreground"], background=s["background"])),
        ("grow", "disc, 4 px", lambda: selection.grow(disc, 4)),
        ("grow", "disc, 32 px", lambda: selection.grow(disc, 32)),
        ("shrink", "disc, 8 px", lambda: selection.shrink(disc, 8)),
        ("feather", "disc, 16 px", lambda: selection.feather(disc, 16)),
        ("combine", "add", lambda: selection.combine(disc, noisy, "add")),
        ("combine", "subtract", lambda: selection.combine(disc, noisy, "subtract")),
        ("outline", "disc (1 contour)", lambda: selection.outline(soft)),
        ("outline", f"noisy global wand ({len(selection.outline(noisy))} contours)",
         lambda: selection.outline(noisy)),
    ]


def working_sides(s: dict, runs: int) -> list[dict]:
    """select_object with the box at several GRABCUT_SIDE values, refined and plainly upscaled."""
    from app.core import selection
    from app.core.geometry import Rect

    refine = selection._refine_upscaled

    def plain(chosen, small, full):
        """No refinement: the reduced result upscaled bilinearly, thresholded at 128."""
        upscaled = cv2.resize(chosen.astype(np.uint8) * np.uint8(255), full.shape[1::-1],
                              interpolation=cv2.INTER_LINEAR)
        return np.where(upscaled >= 128, np.uint8(255), np.uint8(0))

    rows = []
    default = selection.GRABCUT_SIDE
    try:
        for side in WORKING_SIDES:
            selection.GRABCUT_SIDE = side
            row = {"side": side}
            for name, step in (("refined", refine), ("upscaled", plain)):
                selection._refine_upscaled = step
                row[f"{name}_ms"] = timed(lambda: selection.select_object(s["image"], Rect(*s["box"])), runs)
                mask = selection.select_object(s["image"], Rect(*s["box"]))
                row[f"{name}_edge_px"] = round(edge_error(mask, s["disc"], s["radius"]), 3)
            rows.append(row)
            print(f"working side {side}: {row['refined_ms']['median']:.0f} ms, edge error "
                  f"{row['refined_edge_px']} px refined, {row['upscaled_edge_px']} px upscaled", flush=True)
    finally:
        selection.GRABCUT_SIDE = default
        selection._refine_upscaled = refine
    return rows


def run(args) -> dict:
    s = scene(args.side)
    rows = []
    for tool, case, function in tool_cases(s):
        runs = max(1, args.runs // 2) if tool == "select_object" else args.runs
        result = timed(function, runs)
        rows.append({"tool": tool, "case": case, "ms": result,
                     "fits_frame": bool(result["median"] <= FRAME_MS)})
        print(f"{tool} ({case}): {result['median']:.1f} ms", flush=True)
    sides = working_sides(s, max(1, args.runs // 2)) if args.working_sides else []
    return {"document": f"{args.side}x{args.side} RGB", "frame_ms": FRAME_MS,
            "opencv_threads": cv2.getNumThreads(), "tools": rows, "working_sides": sides}


def markdown(result: dict) -> str:
    title = (f"Selection tools on a {result['document']} document (OpenCV threads: {result['opencv_threads']}), "
             f"median of the runs:")
    lines = [title, "",
             "| tool | case | median ms | min ms | where |", "|---|---|---:|---:|---|"]
    for row in result["tools"]:
        where = "UI thread (fits a 16 ms frame)" if row["fits_frame"] else "worker thread, busy cursor"
        lines.append(f"| {row['tool']} | {row['case']} | {row['ms']['median']:.1f} | {row['ms']['min']:.1f} "
                     f"| {where} |")
    if result["working_sides"]:
        lines += ["", "GrabCut working side (box around the disc): time and mean edge error vs the true disc",
                  "", "| long side | refined ms | refined edge px | upscaled only ms | upscaled edge px |",
                  "|---:|---:|---:|---:|---:|"]
        for row in result["working_sides"]:
            lines.append(f"| {row['side']} | {row['refined_ms']['median']:.0f} | {row['refined_edge_px']} "
                         f"| {row['upscaled_ms']['median']:.0f} | {row['upscaled_edge_px']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--side", type=int, default=SIDE, help="side of the square document, px")
    parser.add_argument("--no-working-sides", dest="working_sides", action="store_false",
                        help="skip the GrabCut working-size table")
    args = parser.parse_args()
    result = run(args)
    print()
    print(markdown(result))
    emit_result(result)


if __name__ == "__main__":
    main()
