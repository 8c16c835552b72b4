"""Generative Fill, Expand and Restyle with a Stable Diffusion model (SD 1.x, 2.x, SDXL; base or inpainting).

For each job: plan a crop around the area to generate (app.core.work_region), prefill new canvas area
(edge stretch + smoothing), scale the crop to the model's native size, encode it, denoise every variant
with a preview after each step, decode, scale back, remove the colour drift on the known surroundings
and composite with the feathered mask, so pixels outside it stay bit-identical.

An Expand whose single crop would have to shrink a lot (a big canvas) runs in passes instead: native-size
windows, each overlapping what is already there, filled one after another outward from the image.

Restyle is img2img of the whole image: one pass over all of it, scaled to the model's native area and back
(so a big image loses fine detail), fully composited, at the request's strength.

A style's LoRA (request.style) is applied around the job by app.engine.lora and its text conditioning is
blended by the style strength in app.engine.denoise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from app.core import imageops
from app.core.geometry import Rect
from app.core.work_region import context_for, needs_windows, plan_region, plan_windows, work_size
from app.engine import lora
from app.engine.base import Emit, Engine, format_parameters
from app.engine.events import CancelToken, Cancelled, EngineError, Variant
from app.engine.request import GenerationRequest, JobKind

log = logging.getLogger(__name__)

DRIFT_RING = 24            # px of known pixels around the generated area used to measure colour drift
PREFILL_REACH = 512        # px of image the Expand prefill reads beyond the new area
OVERVIEW_SIDE = 1024       # longest side of the previews of a windowed Expand


@dataclass
class _Pass:
    region: Rect              # the crop the model works on, in output coordinates
    hole: np.ndarray          # region-sized uint8, 255 = generate in this pass
    alpha: np.ndarray         # region-sized float32 composite alpha (the feathered hole)
    size: tuple[int, int]     # (width, height) the model runs at


@dataclass
class _Work:
    """One job's geometry, in output coordinates (the image for Fill, the canvas for Expand)."""
    base: np.ndarray          # the output before generation: the image, or the stretched, prefilled canvas
    passes: list[_Pass]
    fill_alpha: np.ndarray | None   # RGBA outputs: the alpha generated pixels get
    offset: tuple[int, int]   # output coordinates -> image coordinates


class DiffusionEngine(Engine):
    def __init__(self, model_id: str, manager=None) -> None:
        from app.engine.model_manager import MODELS

        self.id = model_id
        self.label = model_id
        self.manager = manager or MODELS

    def close(self) -> None:
        self.manager.free()

    def generate(self, request: GenerationRequest, job_id: int, emit: Emit,
                 cancel: CancelToken) -> tuple[Variant, ...]:
        import torch

        from app.engine.devices import plan_device
        from app.engine.model_files import resolve_source
        from app.engine.samplers import find_sampler

        sampler = find_sampler(request.sampling.sampler)
        source = resolve_source(request.model, request.model_config)
        plan = plan_device(request.device, request.precision, request.memory_saving)
        self.label = source.name

        def loading(message: str, fraction: float) -> None:
            self.report(emit, cancel, job_id, 0, request.sampling.steps, message=message)
        model = self.manager.get(source, plan, loading)
        work = self._plan(request, model)
        sizes = sorted({p.size for p in work.passes})
        where = f"{len(work.passes)} windows of " if len(work.passes) > 1 else ""
        self.report(emit, cancel, job_id, 0, request.sampling.steps,
                    message=f"{model.describe()}: working at {where}{sizes[-1][0]}x{sizes[-1][1]}")
        style = request.style
        with lora.applied(model, style.lora, style.effective_lora_weight,
                          lambda message: loading(message, -1)):
            with torch.inference_mode():
                return self._generate(request, model, work, sampler, job_id, emit, cancel)

    # -- geometry -------------------------------------------------------------------------------------

    def _plan(self, request: GenerationRequest, model) -> _Work:
        feather = request.mask_options.feather
        multiple = model.vae_scale * 2 ** (len(model.unet.config.down_block_types) - 1)
        native = model.native_size
        if request.kind == JobKind.RESTYLE:
            return self._plan_restyle(request, native, multiple)
        if request.kind == JobKind.FILL:
            return self._plan_fill(request, native, multiple)
        canvas = request.outpaint.canvas
        base = imageops.edge_stretch(request.image, canvas)
        hole = np.where(imageops.known_region(request.image.shape, canvas) == 0, 255, 0).astype(np.uint8)
        limits = Rect(0, 0, base.shape[1], base.shape[0])
        hole_bounds = imageops.mask_bounds(hole)
        reach = hole_bounds.grown(PREFILL_REACH).intersect(limits)
        base[reach.slices()][..., :3] = imageops.smooth_fill(
            np.ascontiguousarray(base[reach.slices()][..., :3]), hole[reach.slices()] == 0)
        fill_alpha = base[..., 3].copy() if base.shape[2] == 4 else None
        offset = (canvas.x, canvas.y)

        def make_pass(region: Rect, region_hole: np.ndarray) -> _Pass:
            return _Pass(region, region_hole, imageops.feather_mask(region_hole, feather),
                         work_size(region.size, native, multiple))

        focus = hole_bounds.grown(feather).intersect(limits)
        region = plan_region(focus, limits, context_for(hole_bounds, feather))
        if not needs_windows(region, native):
            return _Work(base, [make_pass(region, hole[region.slices()])], fill_alpha, offset)
        passes = []
        remaining = hole > 0
        near = hole_bounds.grown(native).intersect(limits)      # every window touching the new area lies here
        for window in plan_windows(remaining[near.slices()], native):
            window = window.translated(near.x, near.y)
            passes.append(make_pass(window, np.where(remaining[window.slices()], 255, 0).astype(np.uint8)))
            remaining[window.slices()] = False
        return _Work(base, passes, fill_alpha, offset)

    @staticmethod
    def _plan_fill(request: GenerationRequest, native: int, multiple: int) -> _Work:
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
        return _Work(image, [_Pass(region, region_hole, alpha, work_size(region.size, native, multiple))],
                     fill_alpha, (0, 0))

    @staticmethod
    def _plan_restyle(request: GenerationRequest, native: int, multiple: int) -> _Work:
        """The whole image is the region, generated everywhere (alpha 1), its own alpha channel kept."""
        image = request.image
        height, width = image.shape[:2]
        whole = Rect(0, 0, width, height)
        hole = np.full((height, width), 255, np.uint8)
        everywhere = np.ones((height, width), np.float32)
        fill_alpha = image[..., 3].copy() if image.shape[2] == 4 else None
        return _Work(image, [_Pass(whole, hole, everywhere, work_size(whole.size, native, multiple))],
                     fill_alpha, (0, 0))

    # -- generation -----------------------------------------------------------------------------------

    def _generate(self, request, model, work: _Work, sampler, job_id, emit, cancel) -> tuple[Variant, ...]:
        from app.engine.denoise import steps_to_run

        s = request.sampling
        seeds = [(s.seed + index) % 2**32 for index in range(s.variants)]
        batch = _batch_limit(model)
        per_pass = steps_to_run(s.steps, s.strength)
        variants: list[Variant] = []
        done = 0
        while seeds and not cancel.finish_requested:
            chunk = seeds[:batch]
            total = done + per_pass * len(work.passes) * -(-len(seeds) // batch)
            canvases = [work.base] * len(chunk)
            overview = _Overview(work) if len(work.passes) > 1 else None
            ran_chunk = 0
            try:
                for p in work.passes:
                    def on_step(step: int, x0, preview, rect, base_step=done + ran_chunk, total=total, p=p) -> bool:
                        image = preview(x0)
                        if overview is not None:
                            image, rect = overview.compose(image, p), overview.rect
                        self.report(emit, cancel, job_id, base_step + step, total, image, rect,
                                    message=f"step {base_step + step}/{total}")
                        return cancel.finish_requested
                    canvases, ran = self._run_pass(model, request, work, p, canvases, chunk, sampler, on_step)
                    ran_chunk += ran
                    if overview is not None:
                        overview.update(canvases[0], p)
                    if cancel.finish_requested:
                        break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                batch = _after_out_of_memory(exc, model, len(chunk), work.passes[0].size)   # what ran
                continue
            done += ran_chunk
            for seed, canvas in zip(chunk, canvases):
                variants.append(Variant(canvas, seed, format_parameters(request, seed, model.name,
                                                                        sampler=sampler.label)))
            seeds = seeds[len(chunk):]
        if not variants and cancel.finish_requested:
            raise Cancelled()          # stopped before the first step: nothing to keep
        return tuple(variants)

    def _run_pass(self, model, request, work: _Work, p: _Pass, canvases: list[np.ndarray], seeds: list[int],
                  sampler, on_step) -> tuple[list[np.ndarray], int]:
        """Generate p.hole in every canvas (one per seed); returns the new canvases and the steps run."""
        import torch

        from app.engine import latent_codec
        from app.engine.denoise import DenoiseJob, run_denoise

        width, height = p.size
        latent_size = (width // model.vae_scale, height // model.vae_scale)
        shared = all(c is canvases[0] for c in canvases)
        pixels = [_resize(c[p.region.slices()][..., :3], (width, height)) for c in canvases[:1 if shared else None]]
        strength_map = None        # Restyle generates everywhere: nothing to blend back
        if request.kind != JobKind.RESTYLE:
            strength_map = torch.from_numpy(cv2.resize(p.alpha, latent_size, interpolation=cv2.INTER_AREA))
            strength_map = strength_map[None, None]
        condition = None
        if model.inpaint:
            # A latent cell is "generate" if any hole pixel falls in it, so thin strokes are not lost; the
            # masked image is greyed by that same mask, so the two inputs always agree.
            cells = cv2.resize((p.hole >= 128).astype(np.float32), latent_size, interpolation=cv2.INTER_AREA) > 0
            hole_px = cv2.resize(cells.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
            greyed = [np.where(hole_px[..., None] > 0, np.uint8(127), px) for px in pixels]
            # The image's own latents too, even for a full-strength fill that starts from noise: they hold the
            # kept cells in place, and the masked image's would carry its grey into the cells at the hole's
            # edge and into the ring the colour drift is measured on. One more VAE encode buys that.
            both = latent_codec.encode(model, greyed + pixels)
            masked, init = both[:len(pixels)], both[len(pixels):]
            mask_latent = torch.from_numpy(cells).to(masked.device, torch.float32)
            condition = torch.cat([mask_latent[None, None].expand(len(pixels), -1, -1, -1), masked], dim=1)
        else:
            init = latent_codec.encode(model, pixels)
        preview = latent_codec.make_preview(model, p.alpha, (width, height))
        rect = p.region.translated(*work.offset)
        s, style = request.sampling, request.style
        job = DenoiseJob(init, strength_map, condition, request.prompt, request.negative_prompt,
                         s.guidance, s.steps, s.strength, sampler.name, seeds, (width, height),
                         style.base_prompt, style.base_negative_prompt, style.strength,
                         pure_noise=request.kind == JobKind.FILL)
        x0, ran = run_denoise(model, job, lambda step, steps, x0: on_step(step, x0, preview, rect))
        images = latent_codec.decode(model, x0)
        # Each variant's canvas is copied from work.base once; later windows of that variant paint into it.
        in_place = not (shared and len(images) > 1) and canvases[0] is not work.base
        if shared:
            canvases = [canvases[0]] * len(images)
        return [self._composite(work, p, canvas, image, in_place)
                for canvas, image in zip(canvases, images)], ran

    def _composite(self, work: _Work, p: _Pass, canvas: np.ndarray, generated: np.ndarray,
                   in_place: bool = False) -> np.ndarray:
        """Scale back, remove colour drift, composite with the feathered mask, paste into the canvas (a new
        one unless `in_place`)."""
        region_h, region_w = p.hole.shape
        out = _resize(generated, (region_w, region_h))
        current = canvas[p.region.slices()]
        ring = imageops.ring_around(p.hole, 2, DRIFT_RING)
        out = imageops.correct_colour_drift(out, current, ring, p.alpha > 0)
        if work.fill_alpha is not None:
            out = np.dstack([out, work.fill_alpha[p.region.slices()]])
        result = canvas if in_place else canvas.copy()
        result[p.region.slices()] = imageops.composite(current, out, p.alpha)
        return result


class _Overview:
    """Previews of a windowed Expand: everything generated so far plus the current window's step, at most
    OVERVIEW_SIDE pixels on a side, so the canvas shows the whole new area filling in, not one window."""

    def __init__(self, work: _Work) -> None:
        bounds = work.passes[0].region
        for p in work.passes[1:]:
            bounds = bounds.union(p.region)
        self.bounds = bounds
        self.rect = bounds.translated(*work.offset)
        self.scale = min(1.0, OVERVIEW_SIDE / max(bounds.w, bounds.h))
        self.size = (max(1, round(bounds.w * self.scale)), max(1, round(bounds.h * self.scale)))
        self.rgb = _resize(np.ascontiguousarray(work.base[bounds.slices()][..., :3]), self.size).copy()
        self.alpha = np.zeros(self.size[::-1], np.uint8)

    def _place(self, region: Rect) -> Rect:
        x, y = region.x - self.bounds.x, region.y - self.bounds.y
        left, top = round(x * self.scale), round(y * self.scale)
        right, bottom = round((x + region.w) * self.scale), round((y + region.h) * self.scale)
        return Rect(left, top, max(1, right - left), max(1, bottom - top)).intersect(
            Rect(0, 0, *self.size))

    def update(self, canvas: np.ndarray, p: _Pass) -> None:
        """A pass finished: take its generated pixels into the overview."""
        place = self._place(p.region)
        self.rgb[place.slices()] = _resize(np.ascontiguousarray(canvas[p.region.slices()][..., :3]), place.size)
        done = _resize(p.hole, place.size) > 0
        self.alpha[place.slices()][done] = 255

    def compose(self, step_preview: np.ndarray, p: _Pass) -> np.ndarray:
        out = np.dstack([self.rgb, self.alpha])
        place = self._place(p.region)
        patch = _resize(step_preview, place.size).astype(np.float32)
        target = out[place.slices()].astype(np.float32)
        weight = patch[..., 3:] / 255
        target[..., :3] += (patch[..., :3] - target[..., :3]) * weight
        target[..., 3] = np.maximum(target[..., 3], patch[..., 3])
        out[place.slices()] = np.rint(target).astype(np.uint8)
        return out


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _batch_limit(model) -> int:
    """Variants denoised together: up to 4 on the CPU, by free memory on a GPU."""
    if model.plan.device == "cpu":
        return 4
    if model.plan.device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
        need = (3 if model.is_xl else 1) * 1024 ** 3
        return max(1, min(4, int(free // need) - 2))
    return 1


def _after_out_of_memory(exc: BaseException, model, batch: int, size: tuple[int, int]) -> int:
    """Re-raise anything but out-of-memory; otherwise free memory and return a smaller batch to retry with,
    or switch on the memory savers, or give up with one clear line."""
    from app.engine.devices import free_device_memory, is_out_of_memory

    if not is_out_of_memory(exc):
        raise exc
    free_device_memory(model.plan.device)
    if batch > 1:
        log.warning("out of memory with %d variants at once; retrying one at a time", batch)
        return 1
    if not model.extra.get("memory_savers"):
        log.warning("out of memory; retrying with attention slicing and VAE tiling")
        model.unet.set_attention_slice("auto")
        model.vae.enable_tiling()
        model.extra["memory_savers"] = True
        return 1
    raise EngineError(f"out of {'GPU ' if model.plan.device != 'cpu' else ''}memory at {size[0]}x{size[1]}, "
                      "even with attention slicing and VAE tiling: close other GPU programs, use a smaller "
                      "mask or --device cpu") from None
