import numpy as np
import pytest

from app.core import imageops
from app.core.geometry import Rect


def numbered(h: int, w: int, channels: int = 3) -> np.ndarray:
    """Every pixel distinct and non-zero, so offsets show up in the values."""
    values = np.arange(1, h * w + 1, dtype=np.int64).reshape(h, w)
    return np.stack([(values * (c + 1)) % 251 + 1 for c in range(channels)], axis=-1).astype(np.uint8)


# -- crop and pad -------------------------------------------------------------------------------

@pytest.mark.parametrize("rect, inside", [
    # rect in image coords (image is 10 wide, 8 high) -> part of the output that holds image pixels
    (Rect(2, 3, 4, 2), Rect(0, 0, 4, 2)),
    (Rect(-3, -2, 5, 5), Rect(3, 2, 2, 3)),
    (Rect(8, 6, 5, 4), Rect(0, 0, 2, 2)),
    (Rect(-2, -2, 14, 12), Rect(2, 2, 10, 8)),
    (Rect(20, 20, 3, 3), Rect(0, 0, 0, 0)),
])
def test_crop_places_pixels_and_zero_pads(rect, inside):
    image = numbered(8, 10)
    out = imageops.crop(image, rect)
    assert out.shape == (rect.h, rect.w, 3)
    expected_known = np.zeros((rect.h, rect.w), bool)
    expected_known[inside.slices()] = True
    assert (out.any(axis=2) == expected_known).all()
    for y, x in zip(*np.nonzero(expected_known)):
        assert (out[y, x] == image[y + rect.y, x + rect.x]).all()


@pytest.mark.parametrize("canvas, shape, image_at", [
    # canvas -> output (h, w), where image pixel (0, 0) lands (row, col), or None when cropped away
    (Rect(-4, -2, 18, 12), (12, 18), (2, 4)),
    (Rect(0, 0, 10, 16), (16, 10), (0, 0)),
    (Rect(-6, 0, 16, 8), (8, 16), (0, 6)),
    (Rect(3, -5, 10, 13), (13, 10), None),     # left 3 columns cut off
])
def test_pad_to_canvas_offsets_and_sizes(canvas, shape, image_at):
    image = numbered(8, 10)
    out = imageops.pad_to_canvas(image, canvas, "constant")
    assert out.shape[:2] == shape
    assert (out == imageops.crop(image, canvas)).all()
    if image_at is not None:
        assert (out[image_at] == image[0, 0]).all()
    else:
        assert (out[-canvas.y, 0] == image[0, 3]).all()


@pytest.mark.parametrize("canvas", [Rect(-3, -5, 17, 13), Rect(1, -7, 9, 21), Rect(-13, 2, 29, 3)])
def test_pad_and_known_region_are_snap_free(canvas):
    # Odd offsets and sizes are kept exactly; nothing is rounded to the 8 px grid.
    image = numbered(8, 10)
    for mode in ("constant", "edge", "reflect"):
        assert imageops.pad_to_canvas(image, canvas, mode).shape == (canvas.h, canvas.w, 3)
    known = imageops.known_region(image.shape, canvas)
    assert imageops.mask_bounds(known) == canvas.intersect(Rect(0, 0, 10, 8)).translated(-canvas.x, -canvas.y)


def test_pad_to_canvas_edge_replicates_and_handles_cropping_sides():
    image = numbered(8, 10)
    canvas = Rect(2, -3, 12, 14)          # crops 2 columns on the left, adds 4 on the right, 3 on top/bottom
    out = imageops.edge_stretch(image, canvas)
    assert out.shape == (14, 12, 3)
    assert (out[3:11, 0:8] == image[:, 2:]).all()
    assert (out[3:11, 8:] == image[:, 9:10]).all()            # right edge column repeated
    assert (out[0:3, 0:8] == image[0:1, 2:]).all()             # top edge row repeated
    assert (out[0, 11] == image[0, 9]).all()                   # corner takes the corner pixel
    assert (out[13, 0] == image[7, 2]).all()


def test_pad_to_canvas_reflect_mirrors():
    image = numbered(4, 5)
    out = imageops.pad_to_canvas(image, Rect(-2, 0, 7, 4), "reflect")
    assert (out[:, 0] == image[:, 1]).all() and (out[:, 1] == image[:, 0]).all()


def test_pad_to_canvas_rejects_unknown_mode():
    with pytest.raises(ValueError):
        imageops.pad_to_canvas(numbered(4, 4), Rect(-1, -1, 6, 6), "wrap-around")


@pytest.mark.parametrize("canvas, known_rect, count", [
    (Rect(-4, -2, 18, 12), Rect(4, 2, 10, 8), 80),
    (Rect(3, 0, 12, 8), Rect(0, 0, 7, 8), 56),
    (Rect(0, -8, 10, 16), Rect(0, 8, 10, 8), 80),
    (Rect(-1, -1, 5, 5), Rect(1, 1, 4, 4), 16),
])
def test_known_region(canvas, known_rect, count):
    mask = imageops.known_region((8, 10, 3), canvas)
    assert mask.shape == (canvas.h, canvas.w) and mask.dtype == np.uint8
    assert int((mask == 255).sum()) == count
    assert (mask[known_rect.slices()] == 255).all()
    assert set(np.unique(mask)) <= {0, 255}


# -- masks ----------------------------------------------------------------------------------------

def dot_mask(size: int = 41) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[size // 2, size // 2] = 255
    return mask


@pytest.mark.parametrize("px, reach", [(0, 0), (1, 1), (3, 3), (10, 10), (20, 20)])
def test_grow_mask_is_a_disc(px, reach):
    grown = imageops.grow_mask(dot_mask(61), px)
    centre = 30
    assert grown[centre, centre + reach] == 255 and grown[centre, centre + reach + 1] == 0
    assert grown[centre + reach, centre] == 255
    if px >= 3:   # a disc, not a square: the diagonal corner stays out
        assert grown[centre + reach, centre + reach] == 0


@pytest.mark.parametrize("px", [2, 4, 8, 16, 30])
@pytest.mark.parametrize("distance, expected", [
    ("0", "one"), ("half", "middle"), ("px", "small"), ("px+1", "zero"), ("far", "zero"),
])
def test_feather_values_by_distance(px, distance, expected):
    mask = np.zeros((81, 81), np.uint8)
    mask[30:51, 10:41] = 255                        # right edge of the painted block is column 40
    alpha = imageops.feather_mask(mask, px)
    assert alpha.dtype == np.float32
    offset = {"0": 0, "half": px // 2, "px": px, "px+1": px + 1, "far": px + 9}[distance]
    value = float(alpha[40, 40 + offset])
    if expected == "one":
        assert value == 1.0
    elif expected == "middle":
        assert 0.35 < value < 0.8
    elif expected == "small":
        assert 0.0 < value < 0.3
    else:
        assert value == 0.0


def test_feather_is_monotonic_and_zero_beyond_px_everywhere():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 25:35] = 255
    alpha = imageops.feather_mask(mask, 8)
    row = alpha[30, 34:50]
    assert (np.diff(row) <= 0).all()
    distance = imageops.distance_outside(mask)
    assert (alpha[distance > 8] == 0.0).all()
    assert (alpha[mask > 0] == 1.0).all()
    assert (alpha[(distance > 0) & (distance <= 8)] > 0).all()


def test_feather_zero_px_is_the_hard_mask():
    mask = dot_mask()
    assert (imageops.feather_mask(mask, 0) == (mask > 0)).all()


# -- composite --------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha_value, expect", [(0.0, "base"), (1.0, "fill"), (0.5, "mid"), (0.25, "quarter")])
def test_composite_ends_are_bit_identical_and_middle_rounds(alpha_value, expect):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    fill = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    alpha = np.full((16, 16), alpha_value, np.float32)
    out = imageops.composite(base, fill, alpha)
    assert out.dtype == np.uint8
    exact = np.rint(base.astype(np.float64) * (1 - alpha_value) + fill.astype(np.float64) * alpha_value)
    if expect == "base":
        assert (out == base).all()
    elif expect == "fill":
        assert (out == fill).all()
    else:
        assert np.abs(out.astype(int) - exact.astype(int)).max() <= 1


def test_composite_with_feather_leaves_far_pixels_untouched():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    fill = 255 - base
    mask = np.zeros((50, 50), np.uint8)
    mask[20:30, 20:30] = 255
    out = imageops.composite(base, fill, imageops.feather_mask(mask, 5))
    assert (out[:14] == base[:14]).all() and (out[:, 36:] == base[:, 36:]).all()
    assert (out[20:30, 20:30] == fill[20:30, 20:30]).all()


@pytest.mark.parametrize("shape", [(40, 50, 3), (40, 50, 4), (40, 50)])
@pytest.mark.parametrize("partial_share", [0.05, 0.5, 1.0])
def test_composite_mixes_a_narrow_band_and_a_whole_soft_mask_alike(shape, partial_share):
    """Few partial pixels (a feather band) and mostly partial ones (a soft mask) take different paths; both
    must give base * (1 - a) + fill * a rounded, with bit-exact ends."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, shape, dtype=np.uint8)
    fill = rng.integers(0, 256, shape, dtype=np.uint8)
    alpha = rng.choice([0.0, 1.0], size=shape[:2]).astype(np.float32)
    partial = rng.random(shape[:2]) < partial_share
    alpha[partial] = rng.uniform(0.01, 0.99, int(partial.sum()))
    out = imageops.composite(base, fill, alpha)
    a = alpha if len(shape) == 2 else alpha[..., None]
    expected = np.rint(base.astype(np.float64) + (fill.astype(np.float64) - base) * a)
    assert out.shape == base.shape and np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert (out[alpha == 0] == base[alpha == 0]).all() and (out[alpha == 1] == fill[alpha == 1]).all()


@pytest.mark.parametrize("distance, in_ring", [(0, False), (2, False), (3, True), (10, True), (24, True),
                                               (25, False), (40, False)])
def test_ring_around_a_hole_is_the_band_between_its_radii(distance, in_ring):
    mask = np.zeros((101, 101), np.uint8)
    mask[40:61, 40:61] = 255                            # a 21 px square; its right edge is column 60
    ring = imageops.ring_around(mask, 2, 24)
    assert ring.dtype == np.uint8 and set(np.unique(ring)) <= {0, 255}
    assert (ring[50, 60 + distance] == 255) == in_ring


def test_ring_around_a_full_or_empty_mask_is_empty():
    assert not imageops.ring_around(np.full((8, 8), 255, np.uint8), 2, 24).any()
    assert not imageops.ring_around(np.zeros((8, 8), np.uint8), 2, 24).any()


# -- fills ----------------------------------------------------------------------------------------------

def test_smooth_fill_keeps_known_pixels_and_continues_smoothly():
    yy, xx = np.mgrid[0:200, 0:300]
    image = np.stack([xx * 255 // 299, yy * 255 // 199, np.full_like(xx, 90)], -1).astype(np.uint8)
    holed = image.copy()
    holed[60:140, 100:220] = (255, 0, 255)
    known = np.full((200, 300), 255, np.uint8)
    known[60:140, 100:220] = 0
    out = imageops.smooth_fill(holed, known)
    assert (out[known > 0] == image[known > 0]).all()
    hole = out[60:140, 100:220].astype(int)
    assert np.abs(hole - image[60:140, 100:220].astype(int)).mean() < 25
    # smooth: no jumps between neighbours inside the hole
    assert np.abs(np.diff(hole, axis=0)).max() <= 6 and np.abs(np.diff(hole, axis=1)).max() <= 6


def test_smooth_fill_rgba_makes_new_area_opaque():
    image = np.zeros((64, 64, 4), np.uint8)
    image[:, :32] = (10, 200, 30, 120)
    known = np.zeros((64, 64), np.uint8)
    known[:, :32] = 255
    out = imageops.smooth_fill(image, known)
    assert (out[:, 32:, 3] == 255).all() and (out[:, :32] == image[:, :32]).all()
    assert np.abs(out[:, 32:, :3].astype(int) - [10, 200, 30]).max() <= 1


def test_colour_match_moves_region_statistics_toward_ring():
    rng = np.random.default_rng(3)
    reference = np.clip(rng.normal(120, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
    fill = reference.copy()
    fill[16:48, 16:48] = np.clip(rng.normal(200, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
    region = np.zeros((64, 64), np.uint8)
    region[16:48, 16:48] = 255
    ring = imageops.grow_mask(region, 8) & ~region
    out = imageops.colour_match(fill, reference, region, ring)
    before = abs(fill[16:48, 16:48].mean() - 120)
    after = abs(out[16:48, 16:48].mean() - 120)
    assert after < before / 4
    assert (out[region == 0] == fill[region == 0]).all()
