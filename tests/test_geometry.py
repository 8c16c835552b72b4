import pytest

from app.core.geometry import (Rect, canvas_from_margins, canvas_margins, expand_by_fraction,
                               expand_to_aspect, snap)


@pytest.mark.parametrize("value, expected", [
    (0, 0), (3, 0), (4, 8), (7.9, 8), (12, 16), (-3, 0), (-4, -8), (-13, -16), (100, 104), (99, 96),
])
def test_snap_to_8(value, expected):
    assert snap(value) == expected


@pytest.mark.parametrize("a, b, expected", [
    (Rect(0, 0, 10, 10), Rect(5, 5, 10, 10), Rect(5, 5, 5, 5)),
    (Rect(0, 0, 10, 10), Rect(-5, -5, 10, 10), Rect(0, 0, 5, 5)),
    (Rect(0, 0, 10, 10), Rect(2, 3, 4, 5), Rect(2, 3, 4, 5)),
])
def test_intersect(a, b, expected):
    assert a.intersect(b) == expected


def test_disjoint_intersection_is_empty():
    assert Rect(0, 0, 10, 10).intersect(Rect(20, 20, 5, 5)).is_empty()


@pytest.mark.parametrize("image, canvas, margins", [
    (Rect(0, 0, 100, 50), Rect(0, 0, 100, 50), (0, 0, 0, 0)),
    (Rect(0, 0, 100, 50), Rect(-16, -8, 132, 66), (16, 8, 16, 8)),
    (Rect(0, 0, 100, 50), Rect(8, 0, 120, 50), (-8, 0, 28, 0)),
])
def test_margins_round_trip(image, canvas, margins):
    assert canvas_margins(image, canvas) == margins
    assert canvas_from_margins(image, *margins) == canvas


@pytest.mark.parametrize("w, h, fraction, sides, margins", [
    (400, 200, 0.25, "lrtb", (104, 48, 104, 48)),   # 100 px snaps to 104, 50 px to 48
    (400, 200, 0.5, "lr", (200, 0, 200, 0)),
    (400, 200, 0.5, "b", (0, 0, 0, 104)),
    (400, 200, 0.5, "t", (0, 104, 0, 0)),
    (10, 10, 0.25, "lrtb", (0, 0, 0, 0)),           # 2.5 px is less than half a snap step
])
def test_expand_by_fraction(w, h, fraction, sides, margins):
    image = Rect(0, 0, w, h)
    assert canvas_margins(image, expand_by_fraction(image, fraction, sides)) == margins


@pytest.mark.parametrize("w, h, ratio, expected_size", [
    (400, 400, (16, 9), (712, 400)),     # 711.1 wide needed -> margins 160 + 152 snapped
    (400, 400, (1, 1), (400, 400)),
    (800, 400, (1, 1), (800, 800)),
    (400, 300, (4, 3), (400, 300)),
])
def test_expand_to_aspect(w, h, ratio, expected_size):
    canvas = expand_to_aspect(Rect(0, 0, w, h), *ratio)
    assert canvas.size == expected_size
    left, top, right, bottom = canvas_margins(Rect(0, 0, w, h), canvas)
    assert all(m >= 0 and m % 8 == 0 for m in (left, top, right, bottom))
    assert abs(left - right) <= 8 and abs(top - bottom) <= 8
