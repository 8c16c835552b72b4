"""The planning of a job, shared by every backend: where it works, at what size, and how results go back.

For each job: a crop around the area to generate (app.core.work_region), new canvas area prefilled (edge
stretch + smoothing), the size the model runs the crop at; after generation: scale back, remove the colour
drift on the known surroundings and composite with the feathered mask, so pixels outside it stay
bit-identical. A backend only turns a pass's pixels (and control images) into generated pixels.

An Expand whose single crop would have to shrink a lot (a big canvas) runs in passes: native-size windows,
each overlapping what is already there, filled one after another outward from the image.

Restyle is one pass over the whole image, scaled to the model's native area and back, fully composited.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.core import imageops
from app.core.geometry import Rect
from app.core.work_region import context_for, needs_windows, plan_region, plan_windows, work_size
from app.engine.request import GenerationRequest, JobKind

DRIFT_RING = 24            # px of known pixels around the generated area used to measure colour drift
PREFILL_REACH = 512        # px of image the Expand prefill reads beyond the new area
OVERVIEW_SIDE = 1024       # longest side of the previews of a windowed Expand


@dataclass
class Pass:
    region: Rect              # the crop the model works on, in output coordinates
    hole: np.ndarray          # region-sized uint8, 255 = generate in this pass
    alpha: np.ndarray         # region-sized float32 composite alpha (the feathered hole)
    size: tuple[int, int]     # (width, height) the model runs at


@dataclass
class JobPlan:
    """One job's geometry, in output coordinates (the image for Fill and Restyle, the canvas for Expand)."""
    base: np.ndarray          # the output before generation: the image, or the stretched, prefilled canvas
    passes: list[Pass]
    fill_alpha: np.ndarray | None   # RGBA outputs: the alpha generated pixels get
    offset: tuple[int, int]   # output coordinates -> image coordinates
    known: np.ndarray | None = None  # Expand: output-sized bool, True where the canvas holds the image

    def pass_pixels(self, canvas: np.ndarray, p: Pass) -> np.ndarray:
        """The RGB the model gets for pass `p`: the canvas's crop scaled to the pass's size."""
        return resize(canvas[p.region.slices()][..., :3], p.size)


def plan_job(request: GenerationRequest, native: int, multiple: int) -> JobPlan:
    """The plan for `request` on a model that works best at `native`² with sides a multiple of `multiple`."""
    if request.kind == JobKind.RESTYLE:
        return _plan_restyle(request, native, multiple)
    if request.kind == JobKind.FILL:
        return _plan_fill(request, native, multiple)
    return _plan_expand(request, native, multiple)


def _plan_expand(request: GenerationRequest, native: int, multiple: int) -> JobPlan:
    feather = request.mask_options.feather
    canvas = request.outpaint.canvas
    base = imageops.edge_stretch(request.image, canvas)
    known = imageops.known_region(request.image.shape, canvas)
    hole = np.where(known == 0, 255, 0).astype(np.uint8)
    limits = Rect(0, 0, base.shape[1], base.shape[0])
    hole_bounds = imageops.mask_bounds(hole)
    reach = hole_bounds.grown(PREFILL_REACH).intersect(limits)
    base[reach.slices()][..., :3] = imageops.smooth_fill(
        np.ascontiguousarray(base[reach.slices()][..., :3]), hole[reach.slices()] == 0)
    fill_alpha = base[..., 3].copy() if base.shape[2] == 4 else None
    offset = (canvas.x, canvas.y)

    def make_pass(region: Rect, region_hole: np.ndarray) -> Pass:
        return Pass(region, region_hole, imageops.feather_mask(region_hole, feather),
                    work_size(region.size, native, multiple))

    focus = hole_bounds.grown(feather).intersect(limits)
    region = plan_region(focus, limits, context_for(hole_bounds, feather))
    if not needs_windows(region, native):
        return JobPlan(base, [make_pass(region, hole[region.slices()])], fill_alpha, offset, known > 0)
    passes = []
    remaining = hole > 0
    near = hole_bounds.grown(native).intersect(limits)      # every window touching the new area lies here
    for window in plan_windows(remaining[near.slices()], native):
        window = window.translated(near.x, near.y)
        passes.append(make_pass(window, np.where(remaining[window.slices()], 255, 0).astype(np.uint8)))
        remaining[window.slices()] = False
    return JobPlan(base, passes, fill_alpha, offset, known > 0)


def _plan_fill(request: GenerationRequest, native: int, multiple: int) -> JobPlan:
    """One pass over a crop around the mask. Only the mask's neighbourhood is read: the cost of planning
    follows the mask, not the image."""
    options = request.mask_options
    mask, image = request.mask, request.image
    limits = Rect(0, 0, mask.shape[1], mask.shape[0])
    painted = imageops.mask_bounds(mask)
    near = painted.grown(max(0, options.grow)).intersect(limits)     # all the grown hole can reach
    hole, soft = imageops.split_soft_mask(mask[near.slices()], options.grow)
    hole_bounds = imageops.mask_bounds(hole).translated(near.x, near.y)
    if soft is not None:
        hole_bounds = hole_bounds.union(painted)
    focus = hole_bounds.grown(options.feather).intersect(limits)
    region = plan_region(focus, limits, context_for(hole_bounds, options.feather))
    inside = region.translated(-near.x, -near.y)
    region_hole = imageops.crop(hole, inside)
    alpha = imageops.fill_alpha(region_hole, None if soft is None else imageops.crop(soft, inside),
                                options.feather)
    # RGBA images: generated pixels are opaque (a broadcast view, no image-sized array).
    fill_alpha = np.broadcast_to(np.uint8(255), mask.shape) if image.shape[2] == 4 else None
    return JobPlan(image, [Pass(region, region_hole, alpha, work_size(region.size, native, multiple))],
                   fill_alpha, (0, 0))


def _plan_restyle(request: GenerationRequest, native: int, multiple: int) -> JobPlan:
    """The whole image is the region, generated everywhere (alpha 1), its own alpha channel kept."""
    image = request.image
    height, width = image.shape[:2]
    whole = Rect(0, 0, width, height)
    hole = np.full((height, width), 255, np.uint8)
    everywhere = np.ones((height, width), np.float32)
    fill_alpha = image[..., 3].copy() if image.shape[2] == 4 else None
    return JobPlan(image, [Pass(whole, hole, everywhere, work_size(whole.size, native, multiple))],
                   fill_alpha, (0, 0))


def composite_pass(plan: JobPlan, p: Pass, canvas: np.ndarray, generated: np.ndarray,
                   in_place: bool = False) -> np.ndarray:
    """Scale a pass's generated RGB back, remove colour drift, composite with the feathered mask, paste into
    the canvas (a new one unless `in_place`)."""
    region_h, region_w = p.hole.shape
    out = resize(generated, (region_w, region_h))
    current = canvas[p.region.slices()]
    ring = imageops.ring_around(p.hole, 2, DRIFT_RING)
    out = imageops.correct_colour_drift(out, current, ring, p.alpha > 0)
    if plan.fill_alpha is not None:
        out = np.dstack([out, plan.fill_alpha[p.region.slices()]])
    result = canvas if in_place else canvas.copy()
    result[p.region.slices()] = imageops.composite(current, out, p.alpha)
    return result


class Overview:
    """Previews of a windowed Expand: everything generated so far plus the current window's step, at most
    OVERVIEW_SIDE pixels on a side, so the canvas shows the whole new area filling in, not one window."""

    def __init__(self, plan: JobPlan) -> None:
        bounds = plan.passes[0].region
        for p in plan.passes[1:]:
            bounds = bounds.union(p.region)
        self.bounds = bounds
        self.rect = bounds.translated(*plan.offset)
        self.scale = min(1.0, OVERVIEW_SIDE / max(bounds.w, bounds.h))
        self.size = (max(1, round(bounds.w * self.scale)), max(1, round(bounds.h * self.scale)))
        self.rgb = resize(np.ascontiguousarray(plan.base[bounds.slices()][..., :3]), self.size).copy()
        self.alpha = np.zeros(self.size[::-1], np.uint8)

    def _place(self, region: Rect) -> Rect:
        x, y = region.x - self.bounds.x, region.y - self.bounds.y
        left, top = round(x * self.scale), round(y * self.scale)
        right, bottom = round((x + region.w) * self.scale), round((y + region.h) * self.scale)
        return Rect(left, top, max(1, right - left), max(1, bottom - top)).intersect(
            Rect(0, 0, *self.size))

    def update(self, canvas: np.ndarray, p: Pass) -> None:
        """A pass finished: take its generated pixels into the overview."""
        place = self._place(p.region)
        self.rgb[place.slices()] = resize(np.ascontiguousarray(canvas[p.region.slices()][..., :3]), place.size)
        done = resize(p.hole, place.size) > 0
        self.alpha[place.slices()][done] = 255

    def compose(self, step_preview: np.ndarray, p: Pass) -> np.ndarray:
        out = np.dstack([self.rgb, self.alpha])
        place = self._place(p.region)
        patch = resize(step_preview, place.size).astype(np.float32)
        target = out[place.slices()].astype(np.float32)
        weight = patch[..., 3:] / 255
        target[..., :3] += (patch[..., :3] - target[..., :3]) * weight
        target[..., 3] = np.maximum(target[..., 3], patch[..., 3])
        out[place.slices()] = np.rint(target).astype(np.uint8)
        return out


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` at (width, height) `size`: area averaging when shrinking, bicubic when growing."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
