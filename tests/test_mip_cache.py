"""Zoomed-out drawing uses area-averaged reductions made off the UI thread."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.widgets.mip_cache import MipCache, mip_level
from app.widgets.qt_image import qimage_from_array, from_qimage


@pytest.mark.parametrize("zoom, shape, level", [
    (1.0, (4096, 4096), 0), (0.6, (4096, 4096), 0), (0.5, (4096, 4096), 0), (0.49, (4096, 4096), 1), (0.3, (4096, 4096), 1),
    (0.25, (4096, 4096), 2), (0.1, (4096, 4096), 3), (0.001, (8, 4096), 2),    # never below 2 px a side
])
def test_mip_level_is_the_power_of_two_below_the_zoom(zoom, shape, level):
    assert mip_level(zoom, shape) == level


def test_a_reduction_is_made_in_the_background_and_then_drawn(qtbot):
    pixels = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    cache = MipCache()
    cache.set_image(*qimage_from_array(pixels))
    with qtbot.waitSignal(cache.ready, timeout=5000):
        first, exact = cache.image_for(0.25)
        assert not exact and first.width() == 600             # the full image until the reduction is ready
    image, exact = cache.image_for(0.25)
    assert exact and (image.width(), image.height()) == (150, 100)
    expected = cv2.resize(pixels, (150, 100), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(from_qimage(image), expected)


def test_a_reduction_of_a_replaced_image_is_dropped(qtbot):
    cache = MipCache()
    old = np.zeros((400, 400, 3), np.uint8)
    new = np.full((400, 400, 3), 200, np.uint8)
    cache.set_image(*qimage_from_array(old))
    cache.image_for(0.25)                                      # starts making the old one's
    cache.set_image(*qimage_from_array(new))
    cache.wait()
    qtbot.wait(50)                                             # the old result arrives: ignored
    with qtbot.waitSignal(cache.ready, timeout=5000):
        cache.image_for(0.25)
    image, exact = cache.image_for(0.25)
    assert exact and int(from_qimage(image)[0, 0, 0]) == 200


@pytest.mark.parametrize("channels, width", [(3, 64), (4, 10), (3, 10)])
def test_pixels_read_from_a_qimage_outlive_it(channels, width):
    """A pasted or dropped image becomes a document: its pixels must not point into a freed QImage."""
    import gc

    from PySide6.QtGui import QImage

    pixels = np.random.default_rng(1).integers(0, 256, (12, width, channels), dtype=np.uint8)
    image = qimage_from_array(pixels)[1].copy()
    out = from_qimage(image)
    del image
    gc.collect()
    assert out.flags.owndata and out.base is None
    np.testing.assert_array_equal(out, pixels)
    _ = [QImage(64, 64, QImage.Format.Format_RGB888) for _ in range(50)]     # reuse the freed memory
    np.testing.assert_array_equal(out, pixels)
