"""A Generative Fill in the real window, as a user makes one: a photo opened, a mask painted, Fill pressed."""
from __future__ import annotations

import numpy as np

MASK_ROWS, MASK_COLUMNS = slice(10, 30), slice(10, 40)
NEAR_ROWS, NEAR_COLUMNS = slice(0, 40), slice(0, 50)          # the mask, its feather and the blend margin


def fill_a_mask(qtbot, window, photo) -> np.ndarray:
    """Open `photo` (path, pixels of 64x48), mask a box, Fill with 2 steps and 1 variant; the variant's pixels."""
    window.open_image(photo[0])
    mask = np.zeros((48, 64), np.uint8)
    mask[MASK_ROWS, MASK_COLUMNS] = 255
    window.state.set_mask(mask, "Paint")
    window.panel.steps_spin.setValue(2)
    window.panel.variants_spin.setValue(1)
    with qtbot.waitSignal(window.session.variants_ready, timeout=60_000, check_params_cb=lambda v: len(v) > 0):
        window.fill()
    return window.session.variants[0].image


def assert_kept_far_from_the_mask(variant: np.ndarray, pixels: np.ndarray) -> None:
    far = np.ones(pixels.shape[:2], bool)
    far[NEAR_ROWS, NEAR_COLUMNS] = False
    np.testing.assert_array_equal(variant[far], pixels[far])
