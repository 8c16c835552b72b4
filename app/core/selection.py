"""Selection tools: the masks behind the magic wand, colour range, object select and the Select menu.
Qt-free (numpy + OpenCV).

Conventions as in imageops: images are H x W x 3 (RGB) or H x W x 4 (RGBA) uint8, masks are H x W uint8
with 255 = selected and values between a soft edge. Every function is pure: inputs are never written and
each returns a new H x W uint8 mask (outline returns polylines). A soft mask counts as selected where it is
>= 128 wherever a yes/no answer is needed (grow, shrink, outline). The OpenCV calls release the GIL, so
the slow tools (object select, whole-image passes on large documents) can run on a worker thread.

Colour distance is the largest absolute difference over the R, G and B channels (alpha is not compared).
On RGBA images a fully transparent pixel (alpha 0) shows no colour: transparent pixels match each other and
nothing else.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from app.core import imageops
from app.core.geometry import Rect

COMBINE_MODES = ("replace", "add", "subtract", "intersect")

# The magic wand's flood fill steps to the 4 side neighbours only: a selection cannot leak through a
# one-pixel diagonal line, as in GIMP's fuzzy select with "diagonal neighbours" off.
WAND_CONNECTIVITY = 4

# GrabCut runs on a copy whose long side is at most this. Measured (benchmarks/selection_bench.py): its time
# grows faster than the area (0.8 s at 384, 1.5 s at 512, 4-6 s at 768 on 2 cores), while with the
# refinement below the edge stays within half a pixel of the true one from 384 up.
GRABCUT_SIDE = 512
# Around a box, the work area keeps this share of the box's long side (at least _MIN_MARGIN px) as
# known background; the rest of the image is left out, so a small box is worked on at a finer scale.
_MARGIN_SHARE = 0.125
_MIN_MARGIN = 16
# GrabCut fits 5-component colour models with k-means, which needs at least that many samples of each.
_MIN_SAMPLES = 5
# Full-resolution boundary refinement: a guided filter (He, Sun and Tang) fitted on the reduced copy,
# its linear coefficients upscaled and applied to the full-resolution grey image ("fast guided filter").
_GUIDE_RADIUS = 2            # box radius on the reduced copy
_GUIDE_EPS = 1e-3            # regulariser: grey steps much weaker than ~0.03 (8 levels) do not move the edge

_OPAQUE = np.where(np.arange(256) > 0, np.uint8(255), np.uint8(0))


# -- colour -------------------------------------------------------------------------------------------

def magic_wand(image: np.ndarray, x: int, y: int, tolerance: int, contiguous: bool = True) -> np.ndarray:
    """Pixels within `tolerance` (0-255, inclusive) of the seed pixel (x, y): with contiguous=True only
    those connected to the seed through such pixels (4-connected flood fill), else all of them. 0/255.

    A transparent seed on an RGBA image selects the transparent pixels, whatever their hidden colour.
    """
    _check_image(image)
    height, width = image.shape[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"the seed ({x}, {y}) lies outside the {width}x{height} image")
    tol = _level(tolerance, "tolerance")
    x, y = int(x), int(y)
    seed = image[y, x]
    rgba = image.shape[2] == 4
    if contiguous and not rgba:
        # Only the filled area is visited, so a small region is quick on any image size.
        return _flood(np.ascontiguousarray(image), x, y, (tol,) * 3)
    if rgba and seed[3] == 0:
        matching = cv2.inRange(image, (0, 0, 0, 0), (255, 255, 255, 0))
    else:
        matching = _near_colour(image, seed[:3], tol)
    # floodFill takes 1 or 3 channels: for RGBA, fill the seed's connected part of the one-channel match.
    return _flood(matching, x, y, 0) if contiguous else matching


def _flood(image: np.ndarray, x: int, y: int, diff) -> np.ndarray:
    """0/255: the pixels connected to (x, y) within `diff` of its value on every channel."""
    height, width = image.shape[:2]
    fill = np.zeros((height + 2, width + 2), np.uint8)
    flags = WAND_CONNECTIVITY | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    if not image.flags.writeable:        # MASK_ONLY leaves it alone, but OpenCV's binding wants it writable
        image = np.array(image, copy=True)
    cv2.floodFill(image, fill, (x, y), 0, diff, diff, flags)
    return np.ascontiguousarray(fill[1:-1, 1:-1])


def colour_range(image: np.ndarray, colour, tolerance: int, softness: int = 0) -> np.ndarray:
    """Pixels within `tolerance` of the RGB `colour` are 255; with softness > 0 the next `softness` levels
    of distance fall off linearly (255 * (tolerance + softness + 1 - d) / (softness + 1), kept in 1..254),
    then 0. Transparent RGBA pixels are never selected."""
    _check_image(image)
    tol = _level(tolerance, "tolerance")
    soft = int(softness)
    if soft < 0:
        raise ValueError(f"softness must be 0 or more, got {softness}")
    rgb = [int(v) for v in colour][:3]
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colour must be three levels 0-255, got {colour!r}")
    if soft == 0:
        return _near_colour(image, rgb, tol)
    distance = np.arange(256)
    falloff = np.where(distance <= tol, 255, 0)
    band = (distance > tol) & (distance <= tol + soft)
    falloff[band] = np.clip(np.rint(255 * (tol + soft + 1 - distance[band]) / (soft + 1)), 1, 254)
    falloff = falloff.astype(np.uint8)
    # The fall-off is non-increasing in the distance, so f(max over channels) = min over channels of f.
    tables = [falloff[np.abs(distance - level)] for level in rgb]
    if image.shape[2] == 4:
        tables.append(_OPAQUE)
    return _min_of_lookups(image, tables)


def _near_colour(image: np.ndarray, colour, tol: int) -> np.ndarray:
    """0/255: within `tol` of the RGB colour on every channel (and not transparent), in one OpenCV pass."""
    lower = tuple(max(int(v) - tol, 0) for v in colour)
    upper = tuple(min(int(v) + tol, 255) for v in colour)
    if image.shape[2] == 4:
        lower, upper = lower + (1,), upper + (255,)
    return cv2.inRange(image, lower, upper)


def _min_of_lookups(image: np.ndarray, tables: list[np.ndarray]) -> np.ndarray:
    channels = cv2.split(image)
    out = cv2.LUT(channels[0], tables[0])
    for channel, table in zip(channels[1:], tables[1:]):
        cv2.min(out, cv2.LUT(channel, table), dst=out)
    return out


# -- object -------------------------------------------------------------------------------------------

def select_object(image: np.ndarray, box: Rect | None = None, foreground: np.ndarray | None = None,
                  background: np.ndarray | None = None, iterations: int = 4) -> np.ndarray:
    """The object inside `box` and/or marked by strokes, separated from its background by GrabCut. 0/255.

    box: everything outside is background, inside probably the object. foreground / background: H x W
    masks, non-zero = surely object / surely background (foreground wins where both are painted). Without
    a box, unpainted pixels start as probably background and foreground strokes are needed. With a box,
    only the box (and any foreground strokes) with a margin around it is worked on: strokes beyond that
    change nothing. RGBA images are separated by their RGB.
    GrabCut runs on a copy reduced to GRABCUT_SIDE; the boundary is then refined on the full-resolution
    image by a guided filter, so it follows the real edges rather than the reduced pixels. Strokes should
    cover a few dozen pixels of the reduced copy to teach GrabCut the colours: a 1 px line on a large
    image may select little more than itself.
    """
    _check_image(image)
    height, width = image.shape[:2]
    whole = imageops.image_rect(image)
    sure_fg = _stroke(foreground, (height, width), "foreground")
    sure_bg = _stroke(background, (height, width), "background")
    if box is None and sure_fg is None:
        raise ValueError("select_object needs a box or foreground strokes")
    if iterations < 1:
        raise ValueError(f"iterations must be 1 or more, got {iterations}")
    if box is not None:
        box = box if isinstance(box, Rect) else Rect(*box)
        inside = box.intersect(whole)
        if inside.is_empty():
            raise ValueError(f"the box {box} is empty or lies outside the {width}x{height} image")
        area = inside if sure_fg is None else inside.union(imageops.mask_bounds(sure_fg))
        area = area.grown(max(_MIN_MARGIN, math.ceil(_MARGIN_SHARE * max(area.w, area.h)))).intersect(whole)
    else:
        inside, area = None, whole

    rgb = np.ascontiguousarray(image[area.slices()][..., :3])
    scale = min(1.0, GRABCUT_SIDE / max(area.w, area.h))
    size = (max(1, round(area.w * scale)), max(1, round(area.h * scale)))
    small = rgb if size == (area.w, area.h) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    labels = np.full(size[::-1], cv2.GC_BGD if inside is not None else cv2.GC_PR_BGD, np.uint8)
    if inside is not None:
        sx, sy = size[0] / area.w, size[1] / area.h
        left, top = math.floor((inside.left - area.left) * sx), math.floor((inside.top - area.top) * sy)
        right, bottom = math.ceil((inside.right - area.left) * sx), math.ceil((inside.bottom - area.top) * sy)
        labels[top:bottom, left:right] = cv2.GC_PR_FGD
    for stroke, label in ((sure_bg, cv2.GC_BGD), (sure_fg, cv2.GC_FGD)):
        if stroke is not None:
            labels[_reduced(stroke[area.slices()], size)] = label
    object_samples = np.count_nonzero((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
    if object_samples < _MIN_SAMPLES or labels.size - object_samples < _MIN_SAMPLES:
        raise ValueError("nothing to separate: the box and strokes leave no object or no background to learn")

    cv2.setRNGSeed(0)     # GrabCut seeds its colour models with k-means++: the same input, the same result
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(small, labels, None, models[0], models[1], int(iterations), cv2.GC_INIT_WITH_MASK)
    chosen = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)

    out = np.zeros((height, width), np.uint8)
    if small is rgb:
        out[area.slices()] = np.where(chosen, np.uint8(255), np.uint8(0))
    else:
        out[area.slices()] = _refine_upscaled(chosen, small, rgb)
    return out


def _stroke(mask: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    """A stroke mask as bool, None when absent or empty."""
    if mask is None:
        return None
    if mask.shape != shape:
        raise ValueError(f"the {name} strokes are {mask.shape[1::-1]} but the image is {shape[::-1]}")
    painted = mask > 0
    return painted if painted.any() else None


def _reduced(stroke: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Where a bool stroke covers any part of a reduced pixel (so thin strokes survive the reduction)."""
    if stroke.shape[::-1] == size:
        return stroke
    return cv2.resize(stroke.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 0


def _refine_upscaled(chosen: np.ndarray, small: np.ndarray, full: np.ndarray) -> np.ndarray:
    """0/255 full-size mask from the reduced GrabCut result: a guided filter's local linear model q = a*I + b
    (I the grey image, fitted on the reduced copy), upscaled and applied to the full-resolution grey image,
    thresholded at 0.5. Away from the boundary a = 0 and b is 0 or 1, so only the edge moves."""
    guide = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    wanted = chosen.astype(np.float32)
    window = (2 * _GUIDE_RADIUS + 1,) * 2
    mean_i = cv2.blur(guide, window)
    mean_p = cv2.blur(wanted, window)
    var_i = cv2.blur(guide * guide, window) - mean_i * mean_i
    cov_ip = cv2.blur(guide * wanted, window) - mean_i * mean_p
    a = cov_ip / (var_i + _GUIDE_EPS)
    b = mean_p - a * mean_i
    size = full.shape[1::-1]
    a = cv2.resize(cv2.blur(a, window), size, interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(cv2.blur(b, window), size, interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    cv2.multiply(a, grey, dst=a)
    cv2.add(a, b, dst=a)
    return np.where(a >= 0.5, np.uint8(255), np.uint8(0))


# -- Select menu --------------------------------------------------------------------------------------

def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """The selection (>= 128) dilated by a disc of radius `px`. 0/255."""
    _check_mask(mask)
    px = _radius(px)
    return _near_selection(mask, px, lambda part: imageops.grow_mask(part >= 128, px))


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """The selection (>= 128) eroded by a disc of radius `px`. 0/255. The image border does not erode: a
    selection that reaches the canvas edge stays there (Photoshop's default)."""
    _check_mask(mask)
    px = _radius(px)
    return _near_selection(mask, 1, lambda part: imageops.shrink_mask(part >= 128, px))


def feather(mask: np.ndarray, px: int) -> np.ndarray:
    """The mask blurred so its edge becomes a ramp reaching `px` pixels to each side, as Photoshop's Feather:
    a Gaussian of sigma px / 3 cut at px, so pixels farther than `px` from any edge keep their value
    exactly. Soft masks are blurred as they are. The image border is extended, not darkened."""
    _check_mask(mask)
    px = _radius(px)
    if px == 0:
        return mask.copy()
    side = 2 * px + 1
    return _near_selection(mask, px, lambda part: cv2.GaussianBlur(part, (side, side), px / 3,
                                                                   borderType=cv2.BORDER_REPLICATE))


def _near_selection(mask: np.ndarray, margin: int, operation) -> np.ndarray:
    """operation(part) over only the non-zero pixels' bounds grown by `margin` (all it can change); zero
    elsewhere. The part reaches the image border wherever the whole mask would."""
    out = np.zeros_like(mask)
    bounds = imageops.mask_bounds(mask)
    if bounds is not None:
        part = bounds.grown(margin).intersect(imageops.image_rect(mask))
        out[part.slices()] = operation(mask[part.slices()])
    return out


def combine(current: np.ndarray | None, new: np.ndarray, mode: str) -> np.ndarray:
    """A tool's result merged into the existing selection: "replace" (plain click), "add" (Shift: the
    larger value), "subtract" (Alt: min(current, 255 - new), so a soft new edge leaves a soft edge) or
    "intersect" (the smaller value). current=None means nothing is selected yet."""
    _check_mask(new)
    if mode not in COMBINE_MODES:
        raise ValueError(f"unknown selection mode {mode!r}; use one of {', '.join(COMBINE_MODES)}")
    if current is None:
        current = np.zeros_like(new)
    _check_mask(current)
    if current.shape != new.shape:
        raise ValueError(f"cannot combine a {current.shape[::-1]} selection with a {new.shape[::-1]} one")
    if mode == "replace":
        return new.copy()
    if mode == "add":
        return cv2.max(current, new)
    if mode == "subtract":
        return cv2.min(current, cv2.bitwise_not(new))
    return cv2.min(current, new)


def outline(mask: np.ndarray) -> list[np.ndarray]:
    """The selection boundary at 128 as closed polylines (N x 2 int32 (x, y) arrays, last point joins the
    first), for marching ants. Points are the outermost selected pixels' indices (the boundary runs through
    pixel centres: draw at +0.5 in image coordinates); straight runs are reduced to their end points;
    holes are outlined too, in no particular order. A lone pixel gives a one-point line."""
    _check_mask(mask)
    selected = cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)[1]
    contours, _ = cv2.findContours(selected, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1, 2) for contour in contours]


# -- checks -------------------------------------------------------------------------------------------

def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 or 4 uint8 image, got {image.dtype} {image.shape}")


def _check_mask(mask: np.ndarray) -> None:
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"expected an H x W uint8 mask, got {mask.dtype} {mask.shape}")


def _level(value, name: str) -> int:
    level = int(value)
    if level != value or not 0 <= level <= 255:
        raise ValueError(f"{name} must be a whole level 0-255, got {value}")
    return level


def _radius(px) -> int:
    radius = int(px)
    if radius != px or radius < 0:
        raise ValueError(f"the radius must be a whole number of pixels, 0 or more, got {px}")
    return radius
