"""Control layers in the Qt-free document: never composited, kept through projects and recovery, turned into
a job's ControlNets by app/editor/control_jobs with one line for what cannot guide."""
from __future__ import annotations

import zipfile
from xml.etree import ElementTree

import numpy as np
import pytest

from app.core.control_layers import ControlSettings, empty_control_pixels, placed_control_image
from app.core.document import Document
from app.core.geometry import Rect
from app.core.layers import Layer, LayerStack
from app.core.openraster import load_project, save_project
from app.core.recovery import RecoveryStore, load, take_snapshot
from app.editor.control_jobs import inpaint_control, layer_controls, structure_control
from app.editor.model_library import ModelEntry
from app.engine.request import ControlInput

RNG = np.random.default_rng(5)
IMAGE = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def _strokes() -> np.ndarray:
    pixels = empty_control_pixels(60, 40)
    pixels[10:14, 5:50] = 255
    return pixels


def _document(settings: ControlSettings | None = None, pixels=None) -> Document:
    control = Layer(0, "Lines", _strokes() if pixels is None else pixels, control=settings or
                    ControlSettings("scribble", "some/controlnet", weight=0.7, start=0.1, end=0.9))
    return Document(LayerStack.from_image(IMAGE).added(control))


def test_a_control_layer_is_never_part_of_the_image():
    doc = _document()
    np.testing.assert_array_equal(doc.image, IMAGE)
    assert doc.layers.flattened().layers[-1].control is not None       # flatten keeps the guide, on top
    np.testing.assert_array_equal(doc.layers.flattened().layers[0].pixels, IMAGE)
    with pytest.raises(ValueError, match="cannot be merged"):
        doc.layers.merged_down(doc.layers.layers[-1].id)


@pytest.mark.parametrize("values, message", [
    (dict(kind="sketch"), "unknown control kind"),
    (dict(weight=2.5), "weight must be between 0 and 2"),
    (dict(weight=float("nan")), "weight must be between"),
    (dict(start=0.9, end=0.1), "is after its end"),
    (dict(low=300, high=100), "above the high one"),
    (dict(low=1.5), "whole number"),
    (dict(model=7), "must be text"),
])
def test_control_settings_refuse_bad_values_in_words(values, message):
    with pytest.raises(ValueError, match=message):
        ControlSettings(**values)


def test_stored_control_settings_with_an_unknown_field_are_refused():
    with pytest.raises(ValueError, match="unknown field 'evil'"):
        ControlSettings.from_json({"kind": "canny", "evil": 1})
    assert ControlSettings.from_json(ControlSettings("depth", "x", annotator="a/b").to_json()).annotator == "a/b"


def test_a_pose_layer_stored_before_poses_were_made_from_the_image_keeps_its_imported_image():
    old = {"kind": "pose", "model": "x", "weight": 1.0, "start": 0.0, "end": 1.0, "low": 100, "high": 200,
           "blur": 0.0, "annotator": "", "from_image": True}            # a record without "detector"
    assert ControlSettings.from_json(old).uses_layer_pixels
    made = ControlSettings("pose", "x", annotator="v/pose", detector="d/people")
    back = ControlSettings.from_json(made.to_json())
    assert back == made and not back.uses_layer_pixels


def test_a_project_keeps_control_layers_and_other_readers_never_show_them(tmp_path):
    doc = _document()
    path = tmp_path / "guided.ora"
    save_project(path, doc)
    back = load_project(path)
    layer = back.layers.layers[-1]
    assert layer.control == doc.layers.layers[-1].control and layer.visible
    np.testing.assert_array_equal(layer.pixels, _strokes())
    np.testing.assert_array_equal(back.image, IMAGE)
    with zipfile.ZipFile(path) as archive:
        stack = ElementTree.fromstring(archive.read("stack.xml"))
        merged = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(archive.open("mergedimage.png")))
    assert [e.get("visibility") for e in stack.iter("layer")] == ["hidden", "visible"]
    np.testing.assert_array_equal(merged[..., :3], IMAGE)


def test_recovery_keeps_control_layers(tmp_path):
    doc = _document(ControlSettings("canny", "a/b", low=50, high=150))
    store = RecoveryStore(tmp_path)
    back = load(store.save(take_snapshot(doc, [], 0)).parent).document
    assert back.layers.layers[-1].control == ControlSettings("canny", "a/b", low=50, high=150)


def test_placed_control_images_follow_the_output_area():
    pixels = np.full((4, 6, 3), 200, np.uint8)
    placed = placed_control_image(pixels, 2, 1, Rect(-3, 0, 12, 6))
    assert placed.shape == (6, 12, 3)                         # an RGB image stays RGB, its background around
    assert (placed == 200).all()
    pixels[1:3, 1:5] = 0
    placed = placed_control_image(pixels, 2, 1, Rect(-3, 0, 12, 6))
    assert (placed[2:4, 6:10] == 0).all() and (placed == 200).sum() == (72 - 8) * 3
    strokes = placed_control_image(_strokes(), 0, 0, Rect(-10, 0, 80, 40))
    assert strokes.shape == (40, 80, 4) and not strokes[:, :10].any()
    np.testing.assert_array_equal(strokes[:, 10:70], _strokes())


def test_an_imported_drawing_on_an_expand_canvas_stays_lines():
    from app.engine import annotators

    drawing = np.full((40, 60, 3), 255, np.uint8)              # dark lines on paper, imported into the layer
    drawing[20:22, 5:55] = 0
    placed = placed_control_image(drawing, 0, 0, Rect(-20, 0, 100, 40))
    lines = annotators.make_control_image("scribble", placed, imported=True)
    assert (lines[..., 0] > 0).sum() == 2 * 50                 # the line alone, not the whole drawing's area


def test_visible_control_layers_become_the_jobs_controls():
    doc = _document()
    (control,) = layer_controls(doc, doc.image_rect)
    assert (control.kind, control.model, control.weight, control.start, control.end) == \
        ("scribble", "some/controlnet", 0.7, 0.1, 0.9)
    np.testing.assert_array_equal(control.image[..., 3], _strokes()[..., 3])
    placed = placed_control_image(_strokes(), 0, 0, doc.image_rect)
    assert ControlInput("scribble", "m", placed).image is placed          # the request keeps it: no second copy
    canvas = Rect(-10, 0, 80, 40)
    (expanded,) = layer_controls(doc, canvas)
    assert expanded.image.shape == (40, 80, 4) and not expanded.image[:, :10].any()
    hidden = Document(doc.layers.changed(doc.layers.layers[-1].id, visible=False))
    assert layer_controls(hidden, hidden.image_rect) == ()


def test_made_from_the_image_needs_no_pixels_and_a_restyle_skips_inpaint():
    doc = _document(ControlSettings("canny", "a/b"), pixels=empty_control_pixels(60, 40))
    (control,) = layer_controls(doc, doc.image_rect)
    assert control.image is None
    inpaint = _document(ControlSettings("inpaint", "a/b"), pixels=empty_control_pixels(60, 40))
    assert layer_controls(inpaint, inpaint.image_rect, restyle=True) == ()


@pytest.mark.parametrize("settings, pixels, message", [
    (ControlSettings("scribble", ""), None, "pick a ControlNet for the control layer 'Lines'"),
    (ControlSettings("scribble", "a/b"), empty_control_pixels(60, 40), "the control layer 'Lines' is empty"),
    (ControlSettings("canny", "a/b", from_image=False), empty_control_pixels(60, 40), "is empty"),
])
def test_a_control_layer_that_cannot_guide_is_named(settings, pixels, message):
    doc = _document(settings, pixels)
    with pytest.raises(ValueError, match=message):
        layer_controls(doc, doc.image_rect)


LIBRARY = [ModelEntry("/m/canny-xl", "canny xl", "controlnet-folder", "", "sdxl", "canny"),
           ModelEntry("/m/canny", "canny", "controlnet-folder", "", "sd1", "canny"),
           ModelEntry("/m/inpaint", "inpaint", "controlnet-file", "", "sd1", "inpaint"),
           ModelEntry("/m/model", "model", "folder", "", "sd1")]


def test_keep_structure_and_the_inpaint_controlnet_come_from_the_library():
    assert structure_control(LIBRARY, "sd1").model == "/m/canny"
    assert structure_control(LIBRARY, "sdxl").model == "/m/canny-xl"
    assert structure_control(LIBRARY, "sd2") is None
    unknown = [ModelEntry("/m/odd-canny", "odd", "controlnet-folder", "", "", "canny")]
    assert structure_control(LIBRARY + unknown, "sd2").model == "/m/odd-canny"     # checked by the engine
    assert inpaint_control(LIBRARY, "sd1", inpaint_model=False).kind == "inpaint"
    assert inpaint_control(LIBRARY, "sd1", inpaint_model=True) is None
    assert inpaint_control(LIBRARY, "sdxl", inpaint_model=False) is None
