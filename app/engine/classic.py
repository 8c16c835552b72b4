"""Classic (non-diffusion) Generative Fill and Expand with OpenCV: works on any machine, no model.

Fill works coarse to fine on a crop around the mask, so its cost follows the mask, not the image:
  1. at a reduced scale, blend a cv2.inpaint result (carries edges into the hole) with smooth_fill
     (a streak-free smooth continuation), and upscale that as the guess inside the hole;
  2. at full resolution, re-inpaint a thin band across the hole border to hide the seam, and add grain
     matched to the surrounding texture so the fill is not flatter than its surroundings;
  3. composite with the feathered mask; pixels where the feather is 0 are the input, bit for bit.
Expand stretches the edges into the new area, smooth-fills it, re-inpaints a thin band along the seam and
adds texture; the original pixels inside the canvas are never touched.

The engine is deterministic; variants differ by recipe (method, scale, radii, texture source) and seed.
It reads no prompt or style and takes no steps, guidance, sampler or strength: its progress counts its
stages, and a result's `parameters` text names only what it used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from app.core import imageops
from app.core.geometry import Rect
from app.engine.base import Emit, Engine, format_parameters
from app.engine.events import CancelToken, EngineError, Variant
from app.engine.request import GenerationRequest, JobKind

METHODS = {
    "telea": (cv2.INPAINT_TELEA, "OpenCV Telea"),
    "ns": (cv2.INPAINT_NS, "OpenCV Navier-Stokes"),
}
_OTHER = {"telea": "ns", "ns": "telea"}
ENGINE_IDS = ("classic", "classic-ns")       # the registry ids of the Telea and Navier-Stokes engines

GRAIN_STRENGTH = 0.8          # share of the surrounding high-frequency contrast added as grain
SEAM_BAND = 6                 # px of new area next to the original re-inpainted in Expand
STRUCTURE_REACH = 0.06        # how deep inpainted structure reaches into a hole, as a share of the crop
EXPAND_CONTEXT = 512          # px of original image the Expand smoothing reads beyond the new area
RESTYLE_NEEDS_DIFFUSION = "Restyle needs a diffusion model; pick one in Model"


@dataclass(frozen=True)
class _FillRecipe:
    method: str
    coarse_side: int         # long side of the crop during the coarse pass
    inpaint_radius: int
    structure: float         # weight of the inpainted guess against the smooth one


@dataclass(frozen=True)
class _ExpandRecipe:
    method: str
    max_radius: int          # largest smoothing radius: smaller keeps colours more local
    mirrored_detail: bool    # continue the image's own fine detail (mirrored) near the seam


class ClassicEngine(Engine):
    def __init__(self, method: str = "telea") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown inpainting method {method!r}; use 'telea' or 'ns'")
        self.method = method
        self.id = ENGINE_IDS[0] if method == "telea" else ENGINE_IDS[1]
        self.label = f"Classic fill ({METHODS[method][1]})"

    def generate(self, request: GenerationRequest, job_id: int, emit: Emit,
                 cancel: CancelToken) -> tuple[Variant, ...]:
        if request.kind == JobKind.RESTYLE:
            raise EngineError(RESTYLE_NEEDS_DIFFUSION)
        if request.controls or request.references:
            what = "ControlNets" if request.controls else "Reference images"
            raise EngineError(f"{what} guide a diffusion model; the classic fill has none: pick a Stable "
                              "Diffusion model, or remove them")
        if request.kind == JobKind.FILL:
            return self._fill(request, job_id, emit, cancel)
        return self._expand(request, job_id, emit, cancel)

    def _parameters(self, request: GenerationRequest, seed: int, method: str) -> str:
        """The prompt lines as every engine writes them, then a settings line of only what this engine used."""
        lines = format_parameters(request, seed, self.label).splitlines()[:-1]
        width, height = request.output_rect.size
        fields = [f"Seed: {seed}", f"Size: {width}x{height}", f"Engine: {self.id}",
                  f"Method: {METHODS[method][1]}"]
        if request.kind == JobKind.FILL:
            fields += [f"Feather: {request.mask_options.feather}", f"Grow: {request.mask_options.grow}"]
        fields.append(f"Mode: {request.kind.value}")
        return "\n".join([*lines, ", ".join(fields)])

    # -- recipes ----------------------------------------------------------------------------------

    def fill_recipe(self, index: int) -> _FillRecipe:
        own, other = self.method, _OTHER[self.method]
        recipes = (_FillRecipe(own, 384, 5, 0.5), _FillRecipe(other, 256, 9, 0.65),
                   _FillRecipe(own, 512, 3, 0.35), _FillRecipe(other, 320, 7, 0.5))
        return recipes[index % len(recipes)]

    def expand_recipe(self, index: int) -> _ExpandRecipe:
        own, other = self.method, _OTHER[self.method]
        recipes = (_ExpandRecipe(own, 256, True), _ExpandRecipe(other, 512, True),
                   _ExpandRecipe(own, 256, False), _ExpandRecipe(other, 128, True))
        return recipes[index % len(recipes)]

    # -- fill -------------------------------------------------------------------------------------

    def _fill(self, request: GenerationRequest, job_id: int, emit: Emit,
              cancel: CancelToken) -> tuple[Variant, ...]:
        image, options = request.image, request.mask_options
        count = request.sampling.variants
        total = 1 + 3 * count
        bounds = imageops.mask_bounds(request.mask)
        context = int(np.clip(max(bounds.w, bounds.h) // 2, 32, 384))
        work = bounds.grown(options.grow + options.feather + context).intersect(request.image_rect)
        original = image[work.slices()]
        painted = request.mask[work.slices()]
        hole = imageops.grow_mask(painted, options.grow)          # everything painted is filled in ...
        if hole.all():
            grown = f" (grown by {options.grow} px)" if options.grow else ""
            raise EngineError(f"the mask{grown} covers the whole image: there is nothing around it to fill from")
        core, soft = imageops.split_soft_mask(painted, options.grow)
        alpha = imageops.fill_alpha(core, soft, options.feather)  # ... and faint paint blends it in partly
        self.report(emit, cancel, job_id, 1, total, message="preparing the fill")

        variants = []
        step = 1
        for index in range(count):
            recipe = self.fill_recipe(index)
            seed = request.sampling.seed + index
            note = f"variant {index + 1} of {count}"
            guess, scale = _coarse_guess(original, hole, recipe)
            step += 1
            self.report(emit, cancel, job_id, step, total, guess, work, f"coarse fill, {note}")
            refined = _refine_fill(guess, original, hole, recipe, scale, options.feather, seed)
            step += 1
            self.report(emit, cancel, job_id, step, total, refined, work, f"refining, {note}")
            blended = imageops.composite(original, refined, alpha)
            result = image.copy()
            result[work.slices()] = blended
            step += 1
            self.report(emit, cancel, job_id, step, total, blended, work, f"blending, {note}")
            variants.append(Variant(result, seed, self._parameters(request, seed, recipe.method)))
        return tuple(variants)

    # -- expand -----------------------------------------------------------------------------------

    def _expand(self, request: GenerationRequest, job_id: int, emit: Emit,
                cancel: CancelToken) -> tuple[Variant, ...]:
        image, canvas = request.image, request.outpaint.canvas
        count = request.sampling.variants
        total = 1 + 3 * count
        stretched = imageops.edge_stretch(image, canvas)      # never written to: it is shown as a preview
        known = imageops.known_region(image.shape, canvas)
        new_area = imageops.mask_bounds(known == 0)
        work = new_area.grown(EXPAND_CONTEXT).intersect(Rect(0, 0, canvas.w, canvas.h))
        work_known = known[work.slices()]
        distance = imageops.distance_outside(work_known)
        texture = _local_contrast(stretched[work.slices()][..., :3], work_known > 0)
        self.report(emit, cancel, job_id, 1, total, stretched, canvas, "stretching the edges")

        variants = []
        step = 1
        for index in range(count):
            recipe = self.expand_recipe(index)
            seed = request.sampling.seed + index
            note = f"variant {index + 1} of {count}"
            radii = tuple(r for r in imageops.SMOOTH_FILL_RADII if r <= recipe.max_radius)
            smooth = stretched.copy()
            smooth[work.slices()] = imageops.smooth_fill(stretched[work.slices()], work_known, radii)
            step += 1
            self.report(emit, cancel, job_id, step, total, smooth, canvas, f"smoothing, {note}")

            refined = smooth.copy()
            mirrored = (imageops.pad_to_canvas(image, work.translated(canvas.x, canvas.y), "reflect")
                        if recipe.mirrored_detail else None)
            refined[work.slices()] = _refine_expand(smooth[work.slices()], work_known, distance, recipe,
                                                    texture, mirrored, min(image.shape[:2]), seed)
            step += 1
            self.report(emit, cancel, job_id, step, total, refined, canvas, f"refining the seam, {note}")

            result = refined.copy()
            np.copyto(result, stretched, where=(known > 0)[..., None])
            step += 1
            self.report(emit, cancel, job_id, step, total, result, canvas, f"finishing, {note}")
            variants.append(Variant(result, seed, self._parameters(request, seed, recipe.method)))
        return tuple(variants)


# -- fill stages ----------------------------------------------------------------------------------

def _coarse_guess(original: np.ndarray, hole: np.ndarray, recipe: _FillRecipe) -> tuple[np.ndarray, float]:
    """The crop with its hole replaced by an upscaled low-resolution fill; also returns the scale used."""
    height, width = hole.shape
    scale = min(1.0, recipe.coarse_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(original, size, interpolation=cv2.INTER_AREA)
        small_hole = np.where(cv2.resize(hole, size, interpolation=cv2.INTER_AREA) > 0, 255, 0).astype(np.uint8)
    else:
        small, small_hole = original, hole
    if small_hole.all():
        small_hole = imageops.shrink_mask(small_hole, 1)
    known = small_hole == 0
    colour = np.ascontiguousarray(small[..., :3])
    smooth = imageops.smooth_fill(colour, known).astype(np.float32)
    structure = cv2.inpaint(colour, small_hole, recipe.inpaint_radius, METHODS[recipe.method][0])
    # Inpainting carries edges in from the border but streaks where its fronts meet deep inside the hole,
    # so its weight fades with the distance from the border; the smooth fill carries the middle.
    depth = imageops.distance_outside(known.astype(np.uint8))
    reach = max(4.0, STRUCTURE_REACH * max(small_hole.shape))
    weight = (recipe.structure * np.exp(-depth / np.float32(reach)))[..., None]
    mixed = smooth + (structure.astype(np.float32) - smooth) * weight
    channels = [mixed]
    if original.shape[2] == 4:
        channels.append(imageops.smooth_fill(np.ascontiguousarray(small[..., 3]), known)
                        .astype(np.float32)[..., None])
    small_fill = np.concatenate(channels, axis=2)
    if scale < 1.0:
        small_fill = cv2.resize(small_fill, (width, height), interpolation=cv2.INTER_LINEAR)
    guess = original.copy()
    inside = hole > 0
    guess[inside] = np.clip(np.rint(small_fill[inside]), 0, 255).astype(np.uint8)
    return guess, scale


def _refine_fill(guess: np.ndarray, original: np.ndarray, hole: np.ndarray, recipe: _FillRecipe,
                 scale: float, feather: int, seed: int) -> np.ndarray:
    """Full-resolution pass: re-inpaint a band across the hole border, then add matched grain inside."""
    inner = min(12, max(2, math.ceil(1.0 / scale) + 1))
    outer = min(feather, inner)
    band = imageops.grow_mask(hole, outer) & ~imageops.shrink_mask(hole, inner)
    flag = METHODS[recipe.method][0]
    refined = guess.copy()
    refined[..., :3] = cv2.inpaint(np.ascontiguousarray(guess[..., :3]), band, 3, flag)
    if guess.shape[2] == 4:
        refined[..., 3] = cv2.inpaint(np.ascontiguousarray(guess[..., 3]), band, 3, flag)
    inside = hole > 0
    amplitude = _local_contrast(original[..., :3], ~inside)
    return _add_texture(refined, inside, _grain(inside.shape, amplitude, np.random.default_rng(seed)))


# -- expand stages --------------------------------------------------------------------------------

def _refine_expand(smooth: np.ndarray, known: np.ndarray, distance: np.ndarray, recipe: _ExpandRecipe,
                   texture: np.ndarray, mirrored: np.ndarray | None, image_side: int, seed: int) -> np.ndarray:
    """Re-inpaint the new pixels next to the seam, then add texture to the whole new area."""
    unknown = known == 0
    seam = np.where(unknown & (distance <= SEAM_BAND), 255, 0).astype(np.uint8)
    out = smooth.copy()
    if seam.any():
        out[..., :3] = cv2.inpaint(np.ascontiguousarray(smooth[..., :3]), seam, 5, METHODS[recipe.method][0])
    rng = np.random.default_rng(seed)
    if mirrored is None:
        return _add_texture(out, unknown, _grain(unknown.shape, texture, rng))
    fade_length = 0.1 * image_side + 8.0
    fade = np.exp(-distance / np.float32(fade_length)).astype(np.float32)
    detail = mirrored[..., :3].astype(np.float32)
    detail -= cv2.GaussianBlur(detail, (0, 0), 1.5)
    # Soft-limit the detail to the local texture contrast so mirrored edges do not show as ghosts.
    limit = (2.0 * texture + 1.0)[..., None]
    detail = limit * np.tanh(detail / limit)
    detail *= fade[..., None]
    detail += _grain(unknown.shape, texture * (1.0 - fade), rng)[..., None]
    return _add_texture(out, unknown, detail)


# -- texture --------------------------------------------------------------------------------------

def _local_contrast(rgb: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per-pixel standard deviation of the fine detail (luma minus its blur) around the known pixels,
    continued smoothly into the unknown ones (float32, same size as `known`)."""
    luma = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = luma - cv2.GaussianBlur(luma, (0, 0), 1.2)
    weight = known.astype(np.float32)
    size = (17, 17)
    energy = cv2.blur(detail * detail * weight, size) / np.maximum(cv2.blur(weight, size), 1e-3)
    # Known pixels next to the unknown area see blurred-in garbage only through `weight`, so this is clean.
    energy = imageops.smooth_fill(energy.astype(np.float32), known)
    return np.sqrt(np.maximum(energy, 0.0)).astype(np.float32)


def _grain(shape: tuple[int, int], amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seeded luma grain with the given per-pixel contrast, plus a +-1 dither.

    The dither stops smooth gradients banding and makes seeds differ even on flat images.
    """
    grain = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), 0.7)
    grain *= np.float32(GRAIN_STRENGTH / max(float(grain.std()), 1e-6))
    grain *= amplitude
    grain += rng.random(shape, dtype=np.float32)
    grain -= rng.random(shape, dtype=np.float32)
    return grain


def _add_texture(image: np.ndarray, where: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """`image` with `texture` (H x W or H x W x 3 float) added to its colour channels at `where`."""
    if texture.ndim == 2:
        texture = texture[..., None]
    colour = image[..., :3].astype(np.float32)
    colour += texture
    np.rint(colour, out=colour)
    np.clip(colour, 0, 255, out=colour)
    out = image.copy()
    np.copyto(out[..., :3], colour.astype(np.uint8), where=where[..., None])
    return out
