"""The crop a diffusion job works on and the size it runs at: tables of numbers."""
from __future__ import annotations

import math

import pytest

from app.core.geometry import Rect
from app.core.work_region import context_for, needs_windows, plan_region, plan_windows, work_size

IMAGE = Rect(0, 0, 4000, 3000)


@pytest.mark.parametrize("focus,context,expected", [
    (Rect(1000, 1000, 100, 100), 32, Rect(968, 968, 164, 164)),        # grown on every side
    (Rect(0, 0, 100, 100), 32, Rect(0, 0, 132, 132)),                  # clipped at the corner
    (Rect(1000, 1000, 1000, 10), 32, Rect(1000 - 32, 1005 - 266, 1064, 532)),  # thin: widened to 2:1
    (Rect(3990, 0, 10, 3000), 32, Rect(3990 - 32 - 1458, 0, 1500, 3000)),      # widened inward at the edge
    (Rect(0, 0, 4000, 3000), 64, Rect(0, 0, 4000, 3000)),              # everything: the whole image
])
def test_plan_region(focus, context, expected):
    region = plan_region(focus, IMAGE, context)
    assert IMAGE.contains_rect(region)
    assert region.contains_rect(focus)
    assert region == expected
    assert max(region.w / region.h, region.h / region.w) <= 2.0 + 1e-9


def test_context_grows_with_the_mask_and_the_feather():
    assert context_for(Rect(0, 0, 10, 10)) == 32
    assert context_for(Rect(0, 0, 10, 10), feather=40) == 56
    assert context_for(Rect(0, 0, 1000, 200)) == 350


@pytest.mark.parametrize("size,native,multiple,expected", [
    ((164, 164), 512, 64, (512, 512)),          # a small crop is scaled up to the native area
    ((4000, 3000), 512, 64, (576, 448)),        # a large one down, keeping its shape
    ((1064, 532), 1024, 64, (1472, 704)),      # SDXL, 2:1
    ((100, 100), 128, 16, (128, 128)),          # tiny test models
    ((40000, 10), 512, 64, (1024, 64)),         # sides capped at twice native, at least one multiple
])
def test_work_size(size, native, multiple, expected):
    width, height = work_size(size, native, multiple)
    assert (width, height) == expected
    assert width % multiple == 0 and height % multiple == 0


@pytest.mark.parametrize("size", [(164, 164), (4000, 3000), (1064, 532), (640, 480)])
def test_work_area_is_close_to_native(size):
    width, height = work_size(size, 512, 64)
    assert abs(math.sqrt(width * height) - 512) < 64


def _unknown(canvas: Rect, image: Rect):
    import numpy as np

    unknown = np.ones((canvas.h, canvas.w), bool)
    unknown[image.translated(-canvas.x, -canvas.y).slices()] = False
    return unknown


@pytest.mark.parametrize("canvas,image,side", [
    (Rect(-256, 0, 512 + 512, 512), Rect(0, 0, 512, 512), 512),        # 256 px on left and right
    (Rect(-512, -512, 2048, 2048), Rect(0, 0, 1024, 1024), 512),       # 512 px all around
    (Rect(0, 0, 3000, 600), Rect(0, 0, 600, 600), 512),                # a long extension to the right
])
def test_windows_cover_the_new_area_and_each_has_context(canvas, image, side):
    import numpy as np

    unknown = _unknown(canvas, image)
    windows = plan_windows(unknown, side)
    covered = np.zeros_like(unknown)
    known = ~unknown
    bounds = Rect(0, 0, canvas.w, canvas.h)
    for window in windows:
        assert bounds.contains_rect(window) and window.w <= side and window.h <= side
        assert known[window.slices()].mean() >= 0.3          # grows outward from what is already there
        todo = unknown[window.slices()] & ~covered[window.slices()]
        assert todo.any()                                    # no wasted window
        covered[window.slices()] = True
        known[window.slices()] = True
    assert covered[unknown].all()
    new_area = int(unknown.sum())
    assert len(windows) <= 3 * new_area / (side * side) + 2   # cost follows the added area


def test_windows_only_when_one_crop_would_be_shrunk_too_far():
    assert not needs_windows(Rect(0, 0, 512, 640), 512)
    assert needs_windows(Rect(0, 0, 2048, 2048), 512)
    assert not needs_windows(Rect(0, 0, 1200, 1200), 1024)
