"""Mask rasterising and canvas-edge arithmetic for the canvas tools. Qt-free (numpy and cv2 only).

Points are float image coordinates: pixel (col, row) covers [col, col + 1) x [row, row + 1), so its
centre is (col + 0.5, row + 0.5). Every function that writes the mask clips to it and returns the Rect it
may have changed (empty when nothing could change).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from app.core.geometry import SNAP, Rect, snap

EMPTY = Rect(0, 0, 0, 0)


def brush_alpha(dist: np.ndarray, radius: float, softness: float) -> np.ndarray:
    """Coverage in [0, 1] at distance `dist` from the stroke centre line.

    softness 0 is a hard disc (only 0 or 1); softness s fades over the outer s * radius with a smoothstep.
    """
    if softness <= 0.0:
        return (dist <= radius).astype(np.float32)
    ramp = max(radius * min(softness, 1.0), 1e-3)
    a = np.clip((radius - dist) / ramp, 0.0, 1.0)
    return a * a * (3.0 - 2.0 * a)


def _capsule(mask: np.ndarray, p: tuple[float, float], q: tuple[float, float], radius: float,
             softness: float, erase: bool) -> Rect:
    h, w = mask.shape
    left = max(math.floor(min(p[0], q[0]) - radius), 0)
    right = min(math.ceil(max(p[0], q[0]) + radius), w)
    top = max(math.floor(min(p[1], q[1]) - radius), 0)
    bottom = min(math.ceil(max(p[1], q[1]) + radius), h)
    if right <= left or bottom <= top:
        return EMPTY
    xs = (np.arange(left, right, dtype=np.float32) + 0.5 - p[0])[None, :]
    ys = (np.arange(top, bottom, dtype=np.float32) + 0.5 - p[1])[:, None]
    dx, dy = q[0] - p[0], q[1] - p[1]
    length2 = dx * dx + dy * dy
    if length2 > 1e-9:
        t = np.clip((xs * dx + ys * dy) / length2, 0.0, 1.0)
        ex, ey = xs - t * dx, ys - t * dy
    else:
        ex, ey = xs, ys
    dist = np.sqrt(ex * ex + ey * ey)
    value = np.rint(brush_alpha(dist, radius, softness) * 255.0).astype(np.uint8)
    region = mask[top:bottom, left:right]
    if erase:
        np.minimum(region, 255 - value, out=region)
    else:
        np.maximum(region, value, out=region)
    return Rect.from_edges(left, top, right, bottom)


def paint_segment(mask: np.ndarray, a: tuple[float, float], b: tuple[float, float], diameter: float,
                  softness: float, erase: bool = False) -> Rect:
    """Paint (or erase) the stroke from a to b into mask in place.

    The result equals stamping dabs at every point of the segment with zero spacing: each pixel gets the
    coverage of its distance to the segment, combined with max() (brush) or min() (eraser), so crossing
    the same spot again never accumulates. Long segments are cut into pieces about one brush wide so the
    work stays proportional to the painted area rather than to the segment's bounding box.
    """
    radius = max(float(diameter), 1.0) / 2.0
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    pieces = max(1, int(length // max(2.0 * radius, 8.0)))
    dirty = EMPTY
    for i in range(pieces):
        t0, t1 = i / pieces, (i + 1) / pieces
        p = (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0)
        q = (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)
        dirty = dirty.union(_capsule(mask, p, q, radius, softness, erase))
    return dirty


def rect_from_points(a: tuple[float, float], b: tuple[float, float]) -> Rect:
    """The pixel rectangle spanned by two drag points, edges rounded to the nearest pixel boundary."""
    return Rect.from_edges(round(min(a[0], b[0])), round(min(a[1], b[1])),
                           round(max(a[0], b[0])), round(max(a[1], b[1])))


def fill_rect(mask: np.ndarray, rect: Rect, value: int) -> Rect:
    h, w = mask.shape
    rect = rect.intersect(Rect(0, 0, w, h))
    if rect.is_empty():
        return EMPTY
    rows, cols = rect.slices()
    mask[rows, cols] = value
    return rect


def fill_polygon(mask: np.ndarray, points: list[tuple[float, float]], value: int) -> Rect:
    """Fill the closed polygon through `points`; a pixel is inside when its centre is."""
    if len(points) < 3:
        return EMPTY
    shift = 4
    scale = 1 << shift
    pts = np.array([[round((x - 0.5) * scale), round((y - 0.5) * scale)] for x, y in points], np.int32)
    h, w = mask.shape
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    bounds = Rect.from_edges(math.floor(min(xs)) - 1, math.floor(min(ys)) - 1,
                             math.ceil(max(xs)) + 1, math.ceil(max(ys)) + 1).intersect(Rect(0, 0, w, h))
    if bounds.is_empty():
        return EMPTY
    cv2.fillPoly(mask, [pts], int(value), cv2.LINE_8, shift)
    return bounds


def overlay_lut(rgb: tuple[int, int, int] = (255, 40, 40), opacity: float = 0.45,
                floor: float = 0.2) -> np.ndarray:
    """256 x 4 table from mask value to a premultiplied pixel in QImage.Format_ARGB32_Premultiplied
    byte order on little-endian machines (B, G, R, A).

    Mask value 0 is transparent; 1..255 rise from `floor` to `opacity`, so the faint rim of a soft stroke
    (which Fill does use, blending it in partly) stays clearly visible instead of fading to nothing.
    """
    values = np.arange(256, dtype=np.float32)
    alpha = np.where(values > 0, 255.0 * (floor + (opacity - floor) * values / 255.0), 0.0)
    alpha = np.rint(alpha)
    lut = np.empty((256, 4), np.uint8)
    for i, channel in enumerate((rgb[2], rgb[1], rgb[0])):
        lut[:, i] = np.rint(alpha * channel / 255.0).astype(np.uint8)
    lut[:, 3] = alpha.astype(np.uint8)
    return lut


def _floor_snap(value: int) -> int:
    return (value // SNAP) * SNAP


def _ceil_snap(value: int) -> int:
    return -((-value) // SNAP) * SNAP


def drag_canvas_edges(image: Rect, start: Rect, edges: str, dx: float, dy: float, crop: bool = True) -> Rect:
    """The canvas after moving `edges` ("l", "t", "r", "b" or a corner such as "tl") of `start` by
    (dx, dy) image pixels.

    Each moved edge's offset from the matching image edge snaps to a multiple of 8; the canvas keeps at
    least 8 x 8 px and overlaps the image by at least 8 px in each direction. With `crop` False no edge
    moves inside the image, nor further in than it started.
    """
    left, top, right, bottom = start.left, start.top, start.right, start.bottom
    if "l" in edges:
        offset = snap(left + dx - image.left)
        left = image.left + min(offset, _floor_snap(min(image.right, right) - SNAP - image.left))
    if "r" in edges:
        offset = snap(right + dx - image.right)
        right = image.right + max(offset, _ceil_snap(max(image.left, left) + SNAP - image.right))
    if "t" in edges:
        offset = snap(top + dy - image.top)
        top = image.top + min(offset, _floor_snap(min(image.bottom, bottom) - SNAP - image.top))
    if "b" in edges:
        offset = snap(bottom + dy - image.bottom)
        bottom = image.bottom + max(offset, _ceil_snap(max(image.top, top) + SNAP - image.bottom))
    if not crop:
        left, top = min(left, max(image.left, start.left)), min(top, max(image.top, start.top))
        right, bottom = max(right, min(image.right, start.right)), max(bottom, min(image.bottom, start.bottom))
    return Rect.from_edges(left, top, right, bottom)


def view_following_edges(canvas: Rect, edges: str, zoom: float, offset: tuple[float, float],
                         view: tuple[float, float], margin: float, zoom_out: bool,
                         min_zoom: float) -> tuple[float, tuple[float, float]]:
    """The (zoom, offset) that keeps the dragged `edges` of `canvas` at least `margin` px inside a view of
    size `view`, starting from the view (zoom, offset) the drag began with.

    Edges in sight change nothing. Otherwise the view zooms out about the opposite side (`zoom_out`), so that
    side stays where it is on screen, or scrolls at the same zoom.
    """
    axes = ((canvas.left, canvas.right, "l" in edges, "r" in edges, view[0], offset[0]),
            (canvas.top, canvas.bottom, "t" in edges, "b" in edges, view[1], offset[1]))
    if not zoom_out:
        shifted = []
        for low, high, moves_low, moves_high, size, start in axes:
            shift = 0.0
            if moves_high:
                shift = min(0.0, size - margin - (high * zoom + start))
            if moves_low:
                shift = max(shift, margin - (low * zoom + start))
            shifted.append(start + shift)
        return zoom, (shifted[0], shifted[1])
    new_zoom = zoom
    for low, high, moves_low, moves_high, size, start in axes:
        span = max(high - low, 1)
        if moves_high and high * zoom + start > size - margin:
            new_zoom = min(new_zoom, (size - margin - (low * zoom + start)) / span)
        if moves_low and low * zoom + start < margin:
            new_zoom = min(new_zoom, (high * zoom + start - margin) / span)
    new_zoom = max(new_zoom, min_zoom)
    offsets = []
    for low, high, moves_low, moves_high, size, start in axes:
        anchor = low if moves_high else high if moves_low else (low + high) / 2
        offsets.append(anchor * zoom + start - anchor * new_zoom)
    return new_zoom, (offsets[0], offsets[1])
