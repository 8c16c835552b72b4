"""The layer stack and its compositing (app/core/layers.py), checked with tables of numbers."""
from __future__ import annotations

import numpy as np
import pytest

from app.core.changes import DocumentChange
from app.core.document import Document, DocumentState
from app.core.geometry import Rect
from app.core.layers import Generation, Layer, LayerStack, composite_rgba, variant_from_result


def _grey(value: int, h: int = 4, w: int = 6, channels: int = 3) -> np.ndarray:
    return np.full((h, w, channels), value, np.uint8)


def _rgba(rgb: int, alpha: int, h: int = 2, w: int = 2) -> np.ndarray:
    patch = np.full((h, w, 4), rgb, np.uint8)
    patch[..., 3] = alpha
    return patch


# (below, layer colour, layer alpha, opacity, expected pixel) over an opaque background
BLENDS = [
    (100, 200, 255, 1.0, 200),
    (100, 200, 0, 1.0, 100),
    (100, 200, 128, 1.0, 150),        # 100 + 100 * 128/255 = 150.2
    (100, 200, 255, 0.5, 150),
    (0, 255, 51, 1.0, 51),
    (10, 250, 255, 0.25, 70),
]


@pytest.mark.parametrize("below, colour, alpha, opacity, expected", BLENDS)
def test_a_layer_blends_over_an_opaque_background(below, colour, alpha, opacity, expected):
    stack = LayerStack.from_image(_grey(below))
    stack = stack.added(Layer(0, "top", _rgba(colour, alpha), 1, 1, opacity=opacity))
    out = composite_rgba(stack, stack.rect)
    assert out[1:3, 1:3, :3].min() == out[1:3, 1:3, :3].max() == expected
    assert out[0, 0, :3].tolist() == [below] * 3 and (out[..., 3] == 255).all()


# (rect of a layer, the area covered in a 6 x 4 canvas) : patches are clipped to the canvas, never wrapped
PLACES = [
    (Rect(-1, -1, 2, 2), [(0, 0)]),
    (Rect(5, 3, 3, 3), [(5, 3)]),
    (Rect(-10, 0, 2, 2), []),
    (Rect(2, 1, 2, 1), [(2, 1), (3, 1)]),
]


@pytest.mark.parametrize("rect, covered", PLACES)
def test_patches_land_where_they_are_placed(rect, covered):
    stack = LayerStack.from_image(_grey(0)).added(Layer(0, "dot", _grey(255, rect.h, rect.w), rect.x, rect.y))
    out = composite_rgba(stack, stack.rect)
    white = sorted((int(x), int(y)) for y, x in zip(*np.nonzero(out[..., 0] == 255)))
    assert white == sorted(covered)


def test_transparent_where_nothing_covers_and_over_blends_transparency():
    stack = LayerStack(4, 2, (Layer(1, "half", _rgba(200, 255, 2, 2)),))
    out = composite_rgba(stack, stack.rect)
    assert out[:, :2, 3].tolist() == [[255, 255]] * 2 and out[:, 2:, 3].tolist() == [[0, 0]] * 2
    stack = stack.added(Layer(0, "glass", _rgba(100, 128, 2, 4)))
    out = composite_rgba(stack, stack.rect)
    assert out[0, 0].tolist() == [150, 150, 150, 255]        # over opaque: 200 + (100 - 200) * 0.502
    assert out[0, 3].tolist() == [100, 100, 100, 128]        # over nothing: the layer as it is


def test_a_variant_shows_the_result_exactly_and_hiding_it_restores_the_image_below():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    result = photo.copy()
    result[10:20, 5:30] = rng.integers(0, 256, (10, 25, 3), dtype=np.uint8)
    result[12, 40] = photo[12, 40] + 1                      # a feathered edge pixel, one level off
    variant = variant_from_result(result, photo, seed=9)
    assert variant.rect == Rect(5, 10, 36, 10)             # the bounding box of what changed
    assert variant.pixels[2, 35, 3] == 255 and variant.pixels[0, 30, 3] == 0
    generation = Generation("fill", (variant,))
    stack = LayerStack.from_image(photo).added(Layer.generative(0, "Fill 1", generation))
    doc = Document(stack)
    np.testing.assert_array_equal(doc.image, result)
    doc.layers = stack.changed(stack.layers[-1].id, visible=False)
    np.testing.assert_array_equal(doc.image, photo)
    assert doc.image.shape == (40, 50, 3)


def test_an_expand_result_is_opaque_over_the_new_area():
    photo = _grey(90, 4, 4)
    canvas = Rect(-2, 0, 6, 4)
    result = _grey(90, 4, 6)
    result[:, :2] = 30
    reference = np.zeros((4, 6, 3), np.uint8)
    reference[:, 2:] = photo
    known = np.zeros((4, 6), np.uint8)
    known[:, 2:] = 255
    variant = variant_from_result(result, reference, reference_alpha=known)
    assert variant.rect == Rect(0, 0, 2, 4) and (variant.pixels[..., 3] == 255).all()
    stack = LayerStack.from_image(photo).resized(canvas)
    assert (stack.width, stack.height) == (6, 4) and stack.layers[0].rect == Rect(2, 0, 4, 4)
    doc = Document(stack.added(Layer.generative(0, "Expand", Generation("expand", (variant,)))))
    np.testing.assert_array_equal(doc.image, result)
    doc.layers = doc.layers.changed(doc.layers.layers[-1].id, visible=False)
    assert doc.image.shape == (4, 6, 4) and doc.image[:, :2, 3].max() == 0      # the new area is empty again


def test_a_smaller_canvas_crops_nothing():
    stack = LayerStack.from_image(_grey(50, 4, 6)).resized(Rect(2, 0, 2, 4))
    assert stack.layers[0].rect == Rect(-2, 0, 6, 4) and stack.layers[0].pixels.shape == (4, 6, 3)
    back = stack.resized(Rect(-2, 0, 6, 4))
    assert back.layers[0].rect == Rect(0, 0, 6, 4)


def test_switching_a_variant_changes_the_pixels_and_keeps_the_others():
    photo = _grey(0, 4, 4)
    a = variant_from_result(_grey(10, 4, 4), photo, seed=1)
    b = variant_from_result(_grey(20, 4, 4), photo, seed=2)
    stack = LayerStack.from_image(photo).added(Layer.generative(0, "Fill", Generation("fill", (a, b))))
    top = stack.layers[-1].id
    assert int(Document(stack).image[0, 0, 0]) == 10
    second = stack.with_variant(top, 1)
    assert int(Document(second).image[0, 0, 0]) == 20
    assert second.get(top).generation.variants == (a, b) and second.get(top).generation.selected == 1
    with pytest.raises(ValueError):
        stack.with_variant(top, 2)
    with pytest.raises(ValueError):
        stack.with_variant(stack.layers[0].id, 0)           # a raster layer has no variants


# (edit, the stack's layer names bottom first)
ORDER = [
    (lambda s: s.moved(3, 0), ["c", "a", "b"]),
    (lambda s: s.moved(1, 9), ["b", "c", "a"]),
    (lambda s: s.removed(2), ["a", "c"]),
    (lambda s: s.changed(2, name="  new   name "), ["a", "new name", "c"]),
    (lambda s: s.added(Layer(0, "d", _grey(1, 1, 1)), 1), ["a", "d", "b", "c"]),
]


@pytest.mark.parametrize("edit, names", ORDER)
def test_order_rename_and_delete(edit, names):
    stack = LayerStack(2, 2, tuple(Layer(i, n, _grey(i, 1, 1)) for i, n in enumerate("abc", 1)))
    edited = edit(stack)
    assert [layer.name for layer in edited.layers] == names
    assert [layer.name for layer in stack.layers] == ["a", "b", "c"]      # the old stack is untouched


def test_merge_down_and_flatten_keep_the_view():
    stack = LayerStack.from_image(_grey(100, 4, 6))
    stack = stack.added(Layer(0, "half", _rgba(200, 128, 2, 2), 4, 2))
    stack = stack.added(Layer(0, "hidden", _grey(7, 4, 6), visible=False))
    view = composite_rgba(stack, stack.rect)
    merged = stack.merged_down(2)
    assert [layer.name for layer in merged.layers] == ["Background", "hidden"]
    np.testing.assert_array_equal(composite_rgba(merged, merged.rect), view)
    flat = stack.flattened()
    assert len(flat) == 1 and flat.layers[0].pixels.shape == (4, 6, 3)
    np.testing.assert_array_equal(flat.layers[0].pixels, view[..., :3])
    assert [layer.name for layer in stack.merged_down(3).layers] == ["Background", "half"]   # hidden: dropped
    with pytest.raises(ValueError):
        stack.merged_down(1)


# (change to the top layer, the area that must be redrawn)
AREAS = [
    (dict(visible=False), Rect(1, 1, 2, 2)),
    (dict(opacity=0.5), Rect(1, 1, 2, 2)),
    (dict(name="renamed"), None),
    (dict(x=3), Rect(1, 1, 4, 2)),
]


@pytest.mark.parametrize("change, area", AREAS)
def test_only_what_changed_is_redrawn(change, area):
    stack = LayerStack.from_image(_grey(0)).added(Layer(0, "top", _grey(9, 2, 2), 1, 1))
    assert stack.changed_area(stack.changed(2, **change)) == area


def test_the_composite_redrawn_in_parts_equals_one_drawn_whole():
    rng = np.random.default_rng(4)
    doc = Document(LayerStack.from_image(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    for step in range(25):
        stack = doc.layers
        kind = step % 5
        if kind in (0, 1) or len(stack) < 3:
            h, w = rng.integers(1, 12, 2)
            patch = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
            stack = stack.added(Layer(0, f"p{step}", patch, int(rng.integers(-5, 38)), int(rng.integers(-5, 28))))
        elif kind == 2:
            stack = stack.changed(stack.layers[-1].id, visible=not stack.layers[-1].visible)
        elif kind == 3:
            stack = stack.moved(stack.layers[-1].id, 1)
        else:
            stack = stack.changed(stack.layers[1].id, opacity=float(rng.random()))
        doc.layers = stack
        whole = Document(stack).image
        np.testing.assert_array_equal(doc.image, whole, err_msg=f"step {step}")


def test_fifty_fills_on_a_4096_image_cost_their_patches_not_the_image():
    photo = np.zeros((4096, 4096, 3), np.uint8)
    photo.setflags(write=False)
    doc = Document(LayerStack.from_image(photo))
    costs = []
    for i in range(50):
        patch = np.full((256, 256, 4), i, np.uint8)
        patch[..., 3] = 255
        before = doc.snapshot()
        after = DocumentState(doc.layers.added(Layer(0, f"Fill {i}", patch, 60 * i, 40 * i)), before.mask,
                              before.canvas, "")
        change = DocumentChange(before, after)
        change.apply(doc)
        costs.append(change.nbytes)
    assert max(costs) == 256 * 256 * 4 and sum(costs) < 14 * 2**20      # 12.5 MiB for all 50
    hide = DocumentChange(doc.snapshot(), DocumentState(doc.layers.changed(2, visible=False), doc.mask,
                                                        doc.canvas, ""))
    assert hide.nbytes == 0


def test_bad_layers_are_refused_in_words():
    with pytest.raises(ValueError, match="uint8"):
        Layer(1, "x", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="opacity"):
        Layer(1, "x", _grey(0, 1, 1), opacity=1.5)
    with pytest.raises(ValueError, match="share an id"):
        LayerStack(2, 2, (Layer(1, "a", _grey(0, 1, 1)), Layer(1, "b", _grey(0, 1, 1))))
    with pytest.raises(ValueError, match="at least one variant"):
        Generation("fill", ())


def test_an_rgba_image_comes_back_exactly_colour_under_transparency_too():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    image[:2, :2, 3] = 0                                    # transparent pixels keep their colour in the file
    stack = LayerStack.from_image(image)
    np.testing.assert_array_equal(Document(stack).image, image)
    top = stack.added(Layer(0, "dot", _grey(50, 1, 1), 5, 5))
    expected = image.copy()
    expected[5, 5] = (50, 50, 50, 255)
    np.testing.assert_array_equal(Document(top).image, expected)


def _random_layer(rng, width: int, height: int) -> Layer:
    channels = int(rng.choice([3, 4]))
    h, w = int(rng.integers(1, height + 10)), int(rng.integers(1, width + 10))
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if channels == 4 and rng.random() < 0.5:
        pixels[..., 3] = rng.choice([0, 255])
    return Layer(0, "x", pixels, int(rng.integers(-10, width)), int(rng.integers(-10, height)),
                 opacity=float(rng.choice([1.0, 1.0, 0.5, 0.0])))


def test_the_composite_kept_up_to_date_always_equals_one_made_afresh():
    """Any sequence of edits, with the composite held and released on the way: redrawn in parts it equals
    the whole drawn at once, bit for bit (channels, colour under transparency), and a held one never
    changes."""
    rng = np.random.default_rng(11)
    edits = ["add", "visible", "opacity", "move", "remove", "merge", "flatten", "resize", "hold", "release",
             "reorder"]
    for trial in range(120):
        width, height = int(rng.integers(2, 20)), int(rng.integers(2, 20))
        base = rng.integers(0, 256, (height, width, int(rng.choice([3, 3, 4]))), dtype=np.uint8)
        doc = Document.from_image(base)
        held = []
        for step in range(12):
            stack, ids = doc.layers, [layer.id for layer in doc.layers.layers]
            edit = edits[int(rng.integers(len(edits)))]
            pick = int(rng.choice(ids))
            try:
                if edit == "add":
                    stack = stack.added(_random_layer(rng, width, height), int(rng.integers(0, len(ids) + 1)))
                elif edit == "visible":
                    stack = stack.changed(pick, visible=not stack.get(pick).visible)
                elif edit == "opacity":
                    stack = stack.changed(pick, opacity=float(rng.choice([0.0, 0.3, 1.0])))
                elif edit == "move":
                    stack = stack.moved(pick, int(rng.integers(0, len(ids) + 1)))
                elif edit == "reorder":
                    stack = stack.reordered(list(rng.permutation(ids)))
                elif edit == "remove" and len(ids) > 1:
                    stack = stack.removed(pick)
                elif edit == "merge":
                    stack = stack.merged_down(pick)
                elif edit == "flatten":
                    stack = stack.flattened()
                elif edit == "resize":
                    stack = stack.resized(Rect(int(rng.integers(-5, 6)), int(rng.integers(-5, 6)),
                                               int(rng.integers(1, width + 6)), int(rng.integers(1, height + 6))))
                elif edit == "hold":
                    image = doc.shared_image()
                    held.append((image, image.copy()))
                elif edit == "release" and held:
                    doc.release_image(held.pop(0)[0])
            except ValueError:
                pass                                         # e.g. merging the bottom layer: refused
            doc.layers = stack
            width, height = stack.width, stack.height
            fresh = Document(stack).image
            assert doc.image.shape == fresh.shape and np.array_equal(doc.image, fresh), (trial, step, edit)
            for image, copy in held:
                assert np.array_equal(image, copy), (trial, step, edit)
