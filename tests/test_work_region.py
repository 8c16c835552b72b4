"""The crop a diffusion job works on and the size it runs at: tables of numbers."""
from __future__ import annotations

import math

import pytest

from app.core.geometry import Rect
from app.core.work_region import context_for, plan_region, work_size

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
