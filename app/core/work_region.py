"""Where a diffusion job works and at what size: a crop around the area to generate, with context.

The crop is the generated area's bounds plus context on every side, clipped to the image, then widened
along its short side (still inside the image) until it is no more elongated than MAX_ASPECT. It is then
scaled so its area matches the model's native area (512², 768², 1024²), with sides rounded to the
UNet's size multiple: the cost follows the mask, not the canvas, and small masks get full detail.
"""
from __future__ import annotations

import math

from app.core.geometry import Rect

MAX_ASPECT = 2.0
MIN_CONTEXT = 32
CONTEXT_SHARE = 0.35        # context on each side, as a share of the generated area's longer side
MAX_SIDE = 2.0              # no side of the work size exceeds this many native sides


def context_for(focus: Rect, feather: int = 0) -> int:
    return max(MIN_CONTEXT, feather + 16, int(round(CONTEXT_SHARE * max(focus.w, focus.h))))


def plan_region(focus: Rect, limits: Rect, context: int, max_aspect: float = MAX_ASPECT) -> Rect:
    """The crop to work on: `focus` grown by `context`, inside `limits`, at most `max_aspect` : 1."""
    region = focus.grown(context).intersect(limits)
    if region.is_empty():
        return region
    if region.w > max_aspect * region.h:
        region = _widen(region, limits, axis="y", target=math.ceil(region.w / max_aspect))
    elif region.h > max_aspect * region.w:
        region = _widen(region, limits, axis="x", target=math.ceil(region.h / max_aspect))
    return region


def _widen(region: Rect, limits: Rect, axis: str, target: int) -> Rect:
    """Grow `region` along `axis` to `target` length, centred, shifted back inside `limits`."""
    if axis == "y":
        start, length, lo, hi = region.y, region.h, limits.top, limits.bottom
    else:
        start, length, lo, hi = region.x, region.w, limits.left, limits.right
    target = min(target, hi - lo)
    if target <= length:
        return region
    new_start = start - (target - length) // 2
    new_start = max(lo, min(new_start, hi - target))
    if axis == "y":
        return Rect(region.x, new_start, region.w, target)
    return Rect(new_start, region.y, target, region.h)


def work_size(size: tuple[int, int], native: int, multiple: int) -> tuple[int, int]:
    """(width, height) to run the model at for a crop of `size`: the native area, sides a multiple."""
    width, height = size
    scale = native / math.sqrt(max(1, width * height))
    limit = max(multiple, int(MAX_SIDE * native) // multiple * multiple)

    def side(length: int) -> int:
        return int(min(limit, max(multiple, round(length * scale / multiple) * multiple)))
    return side(width), side(height)


WINDOW_MIN_KNOWN = 0.3      # a window must be at least this share known (original or already generated)
SINGLE_PASS_SCALE = 0.75    # one crop is fine while it is scaled down no further than this


def needs_windows(region: Rect, native: int) -> bool:
    """True when one crop would be shrunk so much that new content would come out blurred."""
    return native / math.sqrt(max(1, region.w * region.h)) < SINGLE_PASS_SCALE


def plan_windows(unknown, side: int, min_known: float = WINDOW_MIN_KNOWN) -> list[Rect]:
    """Overlapping side x side windows that together cover every unknown pixel, in the order to fill them.

    `unknown` is an H x W bool array. Each window is chosen greedily: among windows on a side/4 grid
    whose known share (original pixels plus those filled by earlier windows) is at least `min_known`, the
    one that fills the most unknown pixels; so generation grows outward from the image with context.
    """
    import numpy as np

    remaining = np.array(unknown, dtype=bool)
    height, width = remaining.shape
    win_w, win_h = min(side, width), min(side, height)
    stride = max(8, side // 4)
    xs = sorted({*range(0, width - win_w + 1, stride), width - win_w})
    ys = sorted({*range(0, height - win_h + 1, stride), height - win_h})
    area = win_w * win_h
    windows: list[Rect] = []
    while remaining.any():
        counts = remaining.astype(np.int32).cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        table = np.pad(counts, ((1, 0), (1, 0)))
        best, best_score = None, (-1.0, -1)
        for y in ys:
            for x in xs:
                todo = int(table[y + win_h, x + win_w] - table[y, x + win_w] - table[y + win_h, x] + table[y, x])
                if todo == 0:
                    continue
                known_share = 1.0 - todo / area
                score = (1.0 if known_share >= min_known else known_share, todo)
                if score > best_score:
                    best, best_score = Rect(x, y, win_w, win_h), score
        windows.append(best)
        remaining[best.slices()] = False
    return windows
