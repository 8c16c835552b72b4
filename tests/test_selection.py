import numpy as np
import pytest

from app.core import selection
from app.core.geometry import Rect
from app.core.imageops import mask_bounds

COLOURS = {".": (10, 10, 10), "r": (200, 50, 50), "g": (40, 180, 60)}


def picture(rows: list[str]) -> np.ndarray:
    """An RGB image drawn with one character per pixel (see COLOURS)."""
    return np.array([[COLOURS[c] for c in row] for row in rows], np.uint8)


def marks(rows: list[str]) -> np.ndarray:
    """A 0/255 mask drawn with "#" for selected pixels."""
    return np.array([[255 if c == "#" else 0 for c in row] for row in rows], np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


# -- magic wand -------------------------------------------------------------------------------------

TWO_REGIONS = picture([
    "........",
    ".rrr....",
    ".rrr..r.",
    ".rr..rr.",
    "....rrr.",
    "........",
    "g.......",
    "gg......",
])


@pytest.mark.parametrize("seed, contiguous, expected", [
    ((1, 1), True, [
        "........",
        ".###....",
        ".###....",
        ".##.....",
        "........",
        "........",
        "........",
        "........"]),
    ((6, 4), True, [
        "........",
        "........",
        "......#.",
        ".....##.",
        "....###.",
        "........",
        "........",
        "........"]),
    ((1, 1), False, [
        "........",
        ".###....",
        ".###..#.",
        ".##..##.",
        "....###.",
        "........",
        "........",
        "........"]),
    ((0, 0), True, [                 # the background around both red regions, not the green corner
        "########",
        "#...####",
        "#...##.#",
        "#..##..#",
        "####...#",
        "########",
        ".#######",
        "..######"]),
    ((0, 7), False, [
        "........",
        "........",
        "........",
        "........",
        "........",
        "........",
        "#.......",
        "##......"]),
])
def test_magic_wand_contiguous_and_global(seed, contiguous, expected):
    out = selection.magic_wand(TWO_REGIONS, *seed, tolerance=20, contiguous=contiguous)
    assert out.dtype == np.uint8 and out.shape == (8, 8)
    assert (out == marks(expected)).all()


def test_magic_wand_fill_is_four_connected():
    image = picture([
        "r...",
        ".r..",
        "..rr",
    ])
    assert (selection.magic_wand(image, 0, 0, 0) == marks(["#...", "....", "...."])).all()
    assert (selection.magic_wand(image, 3, 2, 0) == marks(["....", "....", "..##"])).all()


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("tolerance", [0, 1, 7, 60, 99])
def test_magic_wand_tolerance_is_inclusive(tolerance, contiguous):
    seed = np.array([100, 120, 140])
    rows = []
    # Each row: the seed colour, then one channel off by +t, -t (in) and +(t + 1) / -(t + 1) (out).
    for channel in range(3):
        step = np.eye(3, dtype=int)[channel]
        rows.append([seed, seed + tolerance * step, seed - tolerance * step, seed + (tolerance + 1) * step])
        rows.append([seed, seed - tolerance * step, seed + tolerance * step, seed - (tolerance + 1) * step])
    image = np.array(rows, np.uint8)
    out = selection.magic_wand(image, 0, 0, tolerance, contiguous=contiguous)
    assert (out == np.tile(np.uint8([255, 255, 255, 0]), (6, 1))).all()


def test_magic_wand_full_tolerance_selects_everything():
    image = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 255], [0, 255, 0]]], np.uint8)
    assert (selection.magic_wand(image, 0, 0, 255) == 255).all()
    assert (selection.magic_wand(image, 1, 1, 254, contiguous=False) == [[0, 0], [0, 255]]).all()


@pytest.mark.parametrize("x, y", [(-1, 0), (0, -1), (8, 0), (0, 8), (100, 100)])
def test_magic_wand_seed_outside_raises(x, y):
    with pytest.raises(ValueError, match="outside the 8x8 image"):
        selection.magic_wand(TWO_REGIONS, x, y, 10)


@pytest.mark.parametrize("tolerance", [-1, 256, 2.5])
def test_magic_wand_rejects_bad_tolerance(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        selection.magic_wand(TWO_REGIONS, 0, 0, tolerance)


# Alpha 0 pixels hide colours; the two left columns are transparent, the rest opaque red / dark.
RGBA = np.array([
    [[200, 50, 50, 0], [1, 2, 3, 0], [200, 50, 50, 255], [10, 10, 10, 255]],
    [[9, 9, 9, 0], [10, 10, 10, 255], [200, 50, 50, 128], [10, 10, 10, 255]],
    [[10, 10, 10, 255], [10, 10, 10, 255], [10, 10, 10, 255], [77, 7, 7, 0]],
], np.uint8)


@pytest.mark.parametrize("seed, contiguous, expected", [
    ((0, 0), True, ["##..", "#...", "...."]),
    ((0, 0), False, ["##..", "#...", "...#"]),
    ((2, 0), True, ["..#.", "..#.", "...."]),          # partly transparent still has its colour
    ((3, 0), False, ["...#", ".#.#", "###."]),         # the transparent pixels hiding (10, 10, 10) stay out
])
def test_magic_wand_transparent_pixels_match_each_other_only(seed, contiguous, expected):
    out = selection.magic_wand(RGBA, *seed, tolerance=5, contiguous=contiguous)
    assert (out == marks(expected)).all()


# -- colour range -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tolerance, softness, distances, expected", [
    (10, 0, [0, 9, 10, 11, 12, 255], [255, 255, 255, 0, 0, 0]),
    (10, 4, [0, 10, 11, 12, 13, 14, 15, 40], [255, 255, 204, 153, 102, 51, 0, 0]),
    (0, 1, [0, 1, 2], [255, 128, 0]),
    (250, 10, [250, 251, 252, 253, 254, 255], [255, 232, 209, 185, 162, 139]),
    (3, 300, [3, 4, 5, 255], [255, 254, 253, 42]),
    (0, 0, [0, 1], [255, 0]),
])
def test_colour_range_falloff(tolerance, softness, distances, expected):
    # The distance lies in the green channel; red and blue are off by less than it.
    colour = (0, 0, 0)
    image = np.array([[[min(d, 3), d, d // 2] for d in distances]], np.uint8)
    out = selection.colour_range(image, colour, tolerance, softness)
    assert out[0].tolist() == expected


def test_colour_range_uses_the_largest_channel_difference():
    image = np.array([[[103, 100, 100], [100, 88, 100], [100, 100, 113], [113, 88, 113]]], np.uint8)
    assert selection.colour_range(image, (100, 100, 100), 12)[0].tolist() == [255, 255, 0, 0]
    assert selection.colour_range(image, (100, 100, 100), 12, softness=1)[0].tolist() == [255, 255, 128, 128]


def test_colour_range_leaves_transparent_pixels_out():
    assert selection.colour_range(RGBA, (10, 10, 10), 0).tolist() == [[0, 0, 0, 255], [0, 255, 0, 255],
                                                                      [255, 255, 255, 0]]


@pytest.mark.parametrize("colour, tolerance, softness", [
    ((0, 0), 10, 0), ((0, 0, 256), 10, 0), ((0, 0, 0), 300, 0), ((0, 0, 0), 10, -1)])
def test_colour_range_rejects_bad_arguments(colour, tolerance, softness):
    with pytest.raises(ValueError):
        selection.colour_range(TWO_REGIONS, colour, tolerance, softness)


# -- object select ----------------------------------------------------------------------------------

def disc_scene(side: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (radius side * 0.28) on a noisy dark background, and its true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    truth = (xx - side * 0.5) ** 2 + (yy - side * 0.45) ** 2 <= (side * 0.28) ** 2
    image = rng.integers(10, 70, (side, side, 3)).astype(np.int16)
    image[truth] = rng.integers(190, 250, (np.count_nonzero(truth), 3))
    return image.astype(np.uint8), np.where(truth, np.uint8(255), np.uint8(0))


@pytest.fixture(params=["full", "reduced"])
def working_side(request, monkeypatch):
    """GrabCut at the image's own size, or on a reduced copy refined at full size."""
    if request.param == "reduced":
        monkeypatch.setattr(selection, "GRABCUT_SIDE", 48)
    return request.param


def test_select_object_from_a_box(working_side):
    image, truth = disc_scene(128)
    out = selection.select_object(image, Rect(24, 14, 82, 82))
    assert out.dtype == np.uint8 and out.shape == truth.shape
    assert set(np.unique(out)) <= {0, 255}
    assert iou(out, truth) > 0.9
    # Refined at full size, the edge lies on the true one even from the reduced copy (mismatched pixels
    # per pixel of perimeter; the reduced result upscaled alone is about 0.5 px off here).
    perimeter = 2 * np.pi * 128 * 0.28
    assert np.count_nonzero((out > 0) != (truth > 0)) / perimeter < 0.25


def test_select_object_from_strokes_only(working_side):
    image, truth = disc_scene(128)
    foreground = np.zeros_like(truth)
    foreground[56:59, 45:86] = 255                      # a 3 px line across the disc
    background = np.zeros_like(truth)
    background[4, :] = background[:, 4] = background[123, :] = background[:, 123] = 255
    out = selection.select_object(image, foreground=foreground, background=background)
    assert iou(out, truth) > 0.9
    out = selection.select_object(image, foreground=foreground)
    assert iou(out, truth) > 0.9


def test_select_object_box_and_strokes_together():
    image, truth = disc_scene(96)
    foreground = np.zeros_like(truth)
    foreground[40:44, 40:44] = 255
    out = selection.select_object(image, Rect(18, 10, 62, 62), foreground=foreground, iterations=2)
    assert iou(out, truth) > 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"box": Rect(200, 10, 20, 20)}, "empty or lies outside"),
    ({"box": Rect(-30, -30, 30, 30)}, "empty or lies outside"),
    ({"box": Rect(10, 10, 0, 20)}, "empty or lies outside"),
    ({"box": Rect(-5, -5, 200, 200)}, "nothing to separate"),       # no background left to learn
    ({"box": Rect(40, 40, 2, 2)}, "nothing to separate"),           # too few object pixels
    ({}, "needs a box or foreground strokes"),
    ({"background": np.full((64, 64), 255, np.uint8)}, "needs a box or foreground strokes"),
    ({"box": Rect(0, 0, 10, 10), "foreground": np.zeros((8, 8), np.uint8)}, "strokes are"),
])
def test_select_object_without_anything_to_separate_raises(kwargs, message):
    image, _ = disc_scene(64)
    with pytest.raises(ValueError, match=message):
        selection.select_object(image, **kwargs)


def test_select_object_is_repeatable():
    image, _ = disc_scene(64)
    first = selection.select_object(image, Rect(10, 6, 44, 44))
    assert (selection.select_object(image, Rect(10, 6, 44, 44)) == first).all()


# -- grow, shrink, feather --------------------------------------------------------------------------

@pytest.mark.parametrize("px", [1, 2, 5, 16, 17, 20])
def test_grow_a_single_pixel_reaches_px_in_each_direction(px):
    mask = np.zeros((64, 64), np.uint8)
    mask[30, 25] = 255
    out = selection.grow(mask, px)
    assert mask_bounds(out) == Rect(25 - px, 30 - px, 2 * px + 1, 2 * px + 1)
    assert (out[30, 25 - px:26 + px] == 255).all() and (out[30 - px:31 + px, 25] == 255).all()
    assert set(np.unique(out)) == {0, 255}
    if px >= 2:
        assert out[30 - px, 25 - px] == 0                  # a disc, not a square


@pytest.mark.parametrize("px, bounds", [
    (0, Rect(10, 12, 10, 8)),
    (3, Rect(7, 9, 16, 14)),
    (20, Rect(0, 0, 40, 40)),                                # clipped by the image
])
def test_grow_a_rectangle(px, bounds):
    mask = np.zeros((40, 40), np.uint8)
    mask[12:20, 10:20] = 255
    out = selection.grow(mask, px)
    assert mask_bounds(out) == bounds
    assert (out[12:20, 10 - px if px < 10 else 0:20 + px] == 255).all()


@pytest.mark.parametrize("px, bounds", [
    (0, Rect(10, 10, 10, 10)),
    (1, Rect(11, 11, 8, 8)),
    (2, Rect(12, 12, 6, 6)),
    (4, Rect(14, 14, 2, 2)),
    (5, None),
])
def test_shrink_a_square(px, bounds):
    mask = np.zeros((30, 30), np.uint8)
    mask[10:20, 10:20] = 255
    out = selection.shrink(mask, px)
    assert mask_bounds(out) == bounds
    if bounds is not None:
        assert np.count_nonzero(out) == bounds.area            # still a full square
        assert (out[bounds.slices()] == 255).all()


def test_shrink_does_not_erode_at_the_image_border():
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    assert mask_bounds(selection.shrink(mask, 3)) == Rect(0, 0, 7, 20)
    assert (selection.shrink(np.full((8, 8), 255, np.uint8), 3) == 255).all()


@pytest.mark.parametrize("values, px, expected", [
    # a soft mask counts as selected from 128 on
    ([0, 127, 0, 0, 0], 0, [0, 0, 0, 0, 0]),
    ([0, 128, 0, 0, 0], 0, [0, 255, 0, 0, 0]),
    ([0, 0, 200, 0, 0], 1, [0, 255, 255, 255, 0]),
    ([0, 0, 127, 0, 0], 1, [0, 0, 0, 0, 0]),
])
def test_grow_of_a_soft_mask_thresholds_at_128(values, px, expected):
    mask = np.array([values], np.uint8)
    assert selection.grow(mask, px)[0].tolist() == expected


def test_shrink_of_a_soft_mask_thresholds_at_128():
    mask = np.array([[0, 128, 255, 255, 200, 127]], np.uint8)
    assert selection.shrink(mask, 0)[0].tolist() == [0, 255, 255, 255, 255, 0]
    assert selection.shrink(mask, 1)[0].tolist() == [0, 0, 255, 255, 0, 0]


@pytest.mark.parametrize("px", [1, 2, 4, 8])
def test_feather_softens_both_sides_of_the_edge(px):
    mask = np.zeros((60, 60), np.uint8)
    mask[15:45, 15:45] = 255
    out = selection.feather(mask, px)
    row = out[30].astype(int)
    # Near the left edge (between columns 14 and 15), inside and out, the values are strictly soft...
    for k in range(1, max(1, px // 2) + 1):
        assert 0 < row[15 - k] < 128 < row[14 + k] < 255
        assert abs(row[15 - k] + row[14 + k] - 255) <= 1          # ...and the ramp is symmetric
    assert (np.diff(row[:30]) >= 0).all()
    # Pixels farther than px from every edge keep their values exactly.
    far = np.ones_like(mask, bool)
    far[15 - px:15 + px, :] = far[45 - px:45 + px, :] = False
    far[:, 15 - px:15 + px] = far[:, 45 - px:45 + px] = False
    assert (out[far] == mask[far]).all()


def test_feather_of_zero_and_of_an_empty_mask():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 3:7] = 180
    assert (selection.feather(mask, 0) == mask).all()
    assert (selection.feather(np.zeros((10, 10), np.uint8), 4) == 0).all()


def test_feather_keeps_a_selection_at_the_image_border_selected():
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    out = selection.feather(mask, 3)
    assert (out[:, :7] == 255).all() and (out[:, 13:] == 0).all()


@pytest.mark.parametrize("function", [selection.grow, selection.shrink, selection.feather])
@pytest.mark.parametrize("px", [-1, 1.5])
def test_radius_must_be_a_whole_number(function, px):
    with pytest.raises(ValueError, match="radius"):
        function(np.zeros((4, 4), np.uint8), px)


# -- combine ----------------------------------------------------------------------------------------

CURRENT = np.array([[0, 0, 255, 255, 128, 200, 60]], np.uint8)
NEW = np.array([[0, 255, 0, 255, 128, 100, 200]], np.uint8)


@pytest.mark.parametrize("mode, expected", [
    ("replace", [0, 255, 0, 255, 128, 100, 200]),
    ("add", [0, 255, 255, 255, 128, 200, 200]),
    ("subtract", [0, 0, 255, 0, 127, 155, 55]),
    ("intersect", [0, 0, 0, 255, 128, 100, 60]),
])
def test_combine_truth_table(mode, expected):
    out = selection.combine(CURRENT, NEW, mode)
    assert out.dtype == np.uint8 and out[0].tolist() == expected


@pytest.mark.parametrize("mode, expected", [
    ("replace", NEW[0].tolist()), ("add", NEW[0].tolist()), ("subtract", [0] * 7), ("intersect", [0] * 7)])
def test_combine_with_no_selection_yet(mode, expected):
    assert selection.combine(None, NEW, mode)[0].tolist() == expected


def test_combine_rejects_unknown_modes_and_other_sizes():
    with pytest.raises(ValueError, match="unknown selection mode"):
        selection.combine(CURRENT, NEW, "xor")
    with pytest.raises(ValueError, match="cannot combine"):
        selection.combine(CURRENT, np.zeros((2, 7), np.uint8), "add")


# -- outline ----------------------------------------------------------------------------------------

def test_outline_of_a_rectangle_is_its_four_corners():
    mask = np.zeros((12, 10), np.uint8)
    mask[3:8, 2:7] = 255
    lines = selection.outline(mask)
    assert len(lines) == 1
    assert lines[0].dtype == np.int32 and lines[0].shape == (4, 2)
    assert {tuple(p) for p in lines[0].tolist()} == {(2, 3), (6, 3), (6, 7), (2, 7)}


@pytest.mark.parametrize("value, count", [(255, 2), (128, 2), (127, 0)])
def test_outline_of_a_frame_has_outer_and_inner_lines(value, count):
    mask = np.zeros((20, 20), np.uint8)
    mask[2:18, 2:18] = value
    mask[6:14, 6:14] = 0
    lines = selection.outline(mask)
    assert len(lines) == count
    corners = sorted(sorted(map(tuple, line.tolist())) for line in lines)
    if count:
        assert corners[0] == [(2, 2), (2, 17), (17, 2), (17, 17)]
        # The hole is traced through the ring's pixels around it, 8-connected: its corners are cut.
        assert corners[1] == [(5, 6), (5, 13), (6, 5), (6, 14), (13, 5), (13, 14), (14, 6), (14, 13)]


def test_outline_of_an_empty_mask():
    assert selection.outline(np.zeros((5, 5), np.uint8)) == []


# -- purity -----------------------------------------------------------------------------------------

def _calls():
    image, truth = disc_scene(64)
    rgba = np.dstack([image, np.full((64, 64), 200, np.uint8)])
    fg = np.zeros((64, 64), np.uint8)
    fg[28, 25:38] = 255
    soft = selection.feather(truth, 3)
    return [
        ("magic_wand", lambda: selection.magic_wand(image, 30, 30, 60), (image,)),
        ("magic_wand global", lambda: selection.magic_wand(image, 30, 30, 60, contiguous=False), (image,)),
        ("magic_wand rgba", lambda: selection.magic_wand(rgba, 30, 30, 60), (rgba,)),
        ("colour_range", lambda: selection.colour_range(rgba, (220, 220, 220), 30, 20), (rgba,)),
        ("select_object", lambda: selection.select_object(image, Rect(10, 6, 44, 44), foreground=fg),
         (image, fg)),
        ("grow", lambda: selection.grow(soft, 3), (soft,)),
        ("shrink", lambda: selection.shrink(soft, 3), (soft,)),
        ("feather", lambda: selection.feather(soft, 3), (soft,)),
        ("combine", lambda: selection.combine(soft, truth, "subtract"), (soft, truth)),
        ("combine replace", lambda: selection.combine(soft, truth, "replace"), (soft, truth)),
        ("outline", lambda: selection.outline(soft), (soft,)),
    ]


@pytest.mark.parametrize("index", range(len(_calls())), ids=[name for name, _, _ in _calls()])
def test_inputs_are_unchanged_and_results_are_new(index):
    name, call, inputs = _calls()[index]
    before = [array.copy() for array in inputs]
    result = call()
    for array, copy in zip(inputs, before):
        assert (array == copy).all()
    results = result if isinstance(result, list) else [result]
    for out in results:
        if not name.startswith("outline"):
            assert out.dtype == np.uint8 and out.shape == (64, 64)
        assert not any(np.shares_memory(out, array) for array in inputs)


@pytest.mark.parametrize("call", [
    lambda: selection.magic_wand(np.zeros((4, 4), np.uint8), 0, 0, 1),
    lambda: selection.colour_range(np.zeros((4, 4, 2), np.uint8), (0, 0, 0), 1),
    lambda: selection.select_object(np.zeros((4, 4, 3), np.float32), Rect(0, 0, 2, 2)),
    lambda: selection.grow(np.zeros((4, 4), bool), 1),
    lambda: selection.outline(np.zeros((4, 4, 3), np.uint8)),
])
def test_wrong_array_kinds_are_refused(call):
    with pytest.raises(ValueError, match="expected"):
        call()


def test_the_magic_wand_reads_a_read_only_image():
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, 4:] = 90
    image.setflags(write=False)                  # the document's composite is read-only
    mask = selection.magic_wand(image, 6, 2, 0)
    assert mask[:, 4:].min() == 255 and mask[:, :4].max() == 0
