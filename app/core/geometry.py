"""Integer rectangles in image pixel coordinates.

The image always occupies Rect(0, 0, width, height). The canvas rectangle may reach beyond it on any
side (negative x/y or larger right/bottom): that extra area is what Expand outpaints.
"""
from __future__ import annotations

from dataclasses import dataclass

SNAP = 8


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @staticmethod
    def from_edges(left: int, top: int, right: int, bottom: int) -> "Rect":
        return Rect(int(left), int(top), int(right) - int(left), int(bottom) - int(top))

    @property
    def left(self) -> int:
        return self.x

    @property
    def top(self) -> int:
        return self.y

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def size(self) -> tuple[int, int]:
        return self.w, self.h

    @property
    def area(self) -> int:
        return max(self.w, 0) * max(self.h, 0)

    def is_empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def intersect(self, other: "Rect") -> "Rect":
        left, top = max(self.left, other.left), max(self.top, other.top)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(left, top, 0, 0)
        return Rect.from_edges(left, top, right, bottom)

    def union(self, other: "Rect") -> "Rect":
        if self.is_empty():
            return other
        if other.is_empty():
            return self
        return Rect.from_edges(min(self.left, other.left), min(self.top, other.top),
                               max(self.right, other.right), max(self.bottom, other.bottom))

    def translated(self, dx: int, dy: int) -> "Rect":
        return Rect(self.x + dx, self.y + dy, self.w, self.h)

    def grown(self, margin: int) -> "Rect":
        return Rect(self.x - margin, self.y - margin, self.w + 2 * margin, self.h + 2 * margin)

    def contains_rect(self, other: "Rect") -> bool:
        return (other.left >= self.left and other.top >= self.top
                and other.right <= self.right and other.bottom <= self.bottom)

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices for indexing an array whose origin is (0, 0)."""
        return slice(self.top, self.bottom), slice(self.left, self.right)


def snap(value: float, step: int = SNAP) -> int:
    """Round to the nearest multiple of step (halves away from zero)."""
    sign = -1 if value < 0 else 1
    return sign * int((abs(value) + step / 2) // step) * step


def canvas_margins(image: Rect, canvas: Rect) -> tuple[int, int, int, int]:
    """How far the canvas reaches beyond the image on each side (left, top, right, bottom).

    Negative values mean the canvas crops into the image on that side.
    """
    return (image.left - canvas.left, image.top - canvas.top,
            canvas.right - image.right, canvas.bottom - image.bottom)


def canvas_from_margins(image: Rect, left: int, top: int, right: int, bottom: int) -> Rect:
    return Rect.from_edges(image.left - left, image.top - top, image.right + right, image.bottom + bottom)


def expand_by_fraction(image: Rect, fraction: float, sides: str = "lrtb") -> Rect:
    """Canvas grown by `fraction` of the image size on the chosen sides, each margin snapped to 8 px."""
    dx = snap(image.w * fraction) if image.w * fraction >= SNAP / 2 else 0
    dy = snap(image.h * fraction) if image.h * fraction >= SNAP / 2 else 0
    return canvas_from_margins(image,
                               dx if "l" in sides else 0, dy if "t" in sides else 0,
                               dx if "r" in sides else 0, dy if "b" in sides else 0)


def expand_to_aspect(image: Rect, ratio_w: int, ratio_h: int) -> Rect:
    """Smallest canvas around the (centred) image with the given aspect ratio, margins snapped to 8 px.

    The canvas only grows: if the image is already wider than the ratio, height is added, else width.
    """
    target = ratio_w / ratio_h
    if image.w / image.h < target:
        extra = max(round(image.h * target) - image.w, 0)
        left = snap(extra / 2)
        right = snap(extra - left) if extra - left > 0 else 0
        return canvas_from_margins(image, left, 0, max(right, 0), 0)
    extra = max(round(image.w / target) - image.h, 0)
    top = snap(extra / 2)
    bottom = snap(extra - top) if extra - top > 0 else 0
    return canvas_from_margins(image, 0, top, 0, max(bottom, 0))
