"""Control layers in the editor window, driven like a user would: the Layers dock's "Add control layer" menu,
the Control panel's settings (each one undo step), the pen on a control layer, the overlay and the control
image preview on the canvas, Keep structure and "Add ControlNet…"."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app import MainWindow
from app.core.control_layers import CONTROL_KINDS, ControlSettings
from app.core.layers import Layer
from app.editor.model_library import ModelEntry, ModelLibrary
from app.widgets.control_commands import AddControlNetDialog
from app.widgets.control_panel import ADD_CONTROLNET
from tests.test_canvas import move, press, release
from tests.test_main_window import AnyModelRegistry, ScriptedEngine, make_window

W, H = 200, 120
GREY = 128
SD1_MODEL = ModelEntry("/models/dreamy.safetensors", "dreamy.safetensors — Stable Diffusion 1.x", "file",
                       family="sd1")
SD1_CANNY = ModelEntry("/controlnets/control_v11p_sd15_canny", "control_v11p_sd15_canny — SD 1.x canny",
                       "controlnet-folder", family="sd1", control="canny")
XL_CANNY = ModelEntry("/controlnets/diffusers_xl_canny", "diffusers_xl_canny — SDXL canny", "controlnet-folder",
                      family="sdxl", control="canny")
XL_DEPTH = ModelEntry("/controlnets/diffusers_xl_depth", "diffusers_xl_depth — SDXL depth", "controlnet-folder",
                      family="sdxl", control="depth")


@pytest.fixture
def settings(tmp_path):
    return tmp_path / "settings.json"


@pytest.fixture
def grey_image(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((H, W, 3), GREY, np.uint8)).save(path)
    return path


@pytest.fixture
def rectangle_image(tmp_path):
    """Black with a white rectangle over columns 50..149 and rows 30..89."""
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[30:90, 50:150] = 255
    path = tmp_path / "rectangle.png"
    Image.fromarray(pixels).save(path)
    return path


def shown_window(qtbot, settings, monkeypatch, image, library=None):
    window = make_window(qtbot, settings, ScriptedEngine(), library)
    monkeypatch.setattr(window, "_confirm_discard_changes", lambda: True)      # shown: closing would ask
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    assert window.open_image(image)
    qtbot.wait(20)
    return window


def add_control(qtbot, window, kind: str) -> Layer:
    """Add a control layer of `kind` from the Layers dock's menu, and wait for the Control panel."""
    action = next(a for a in window.layers_panel.control_menu.actions() if a.data() == kind)
    action.trigger()
    panel = window.control_panel
    qtbot.waitUntil(lambda: not panel.isHidden() and panel.kind_combo.currentData() == kind, timeout=2000)
    return window.state.document.layers.layers[-1]


def top_layer(window) -> Layer:
    return window.state.document.layers.layers[-1]


def undo(window) -> None:
    window.action_set["undo"].trigger()


def stroke(qtbot, canvas, points) -> None:
    press(qtbot, canvas, *points[0])
    for point in points[1:]:
        move(canvas, *point)
    release(qtbot, canvas, *points[-1])


def canvas_rgb(canvas, x: float, y: float) -> tuple[int, int, int]:
    image = canvas.grab().toImage()
    pos = canvas.image_to_widget(x, y).toPoint()
    colour = image.pixelColor(round(pos.x() * image.devicePixelRatio()), round(pos.y() * image.devicePixelRatio()))
    return colour.red(), colour.green(), colour.blue()


def is_tinted(rgb) -> bool:
    red, green, blue = rgb
    return green - red > 80 and blue - red > 80


# -- adding control layers --------------------------------------------------------------------------------

def test_each_kind_from_the_dock_menu_adds_a_selected_control_layer_with_the_panel_shown(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    assert not window.layers_panel.add_control_button.isEnabled()           # no document yet
    window.open_image(photo[0])
    panel = window.control_panel
    assert panel.isHidden()
    before = window.state.document.image
    for kind in CONTROL_KINDS:
        layer = add_control(qtbot, window, kind)
        assert layer.kind == "control" and layer.control.kind == kind
        assert window.state.active_layer == layer.id and panel.layer() == layer
        assert window.layers_panel.list.item(0).text().startswith(layer.name)
        assert "[control]" in window.layers_panel.list.item(0).text()
        assert not window.layers_panel.merge_button.isEnabled()
    assert len(window.state.document.layers) == 1 + len(CONTROL_KINDS)
    assert np.array_equal(window.state.document.image, before)             # never part of the image
    window.state.set_active_layer(window.state.document.layers.layers[0].id)
    qtbot.waitUntil(panel.isHidden, timeout=2000)


def test_a_new_control_layer_takes_a_controlnet_of_its_kind_and_of_the_models_family(qtbot, settings, photo):
    library = ModelLibrary(settings.parent / "models.json")
    for entry in (SD1_MODEL, XL_CANNY, SD1_CANNY, XL_DEPTH):
        library.add_checked(entry)
    window = make_window(qtbot, settings, ScriptedEngine(), library)
    window.panel.model_combo.setCurrentIndex(window.panel.model_combo.findData(SD1_MODEL.location))
    window.open_image(photo[0])
    assert add_control(qtbot, window, "canny").control.model == SD1_CANNY.location       # the model's family
    assert add_control(qtbot, window, "depth").control.model == XL_DEPTH.location        # the only depth one
    assert add_control(qtbot, window, "scribble").control.model == ""                   # none made for it
    assert window.control_panel.model_combo.currentData() == ""
    assert "Pick a ControlNet" in window.control_panel.note_label.text()
    window.action_set["add_control_tile"].trigger()                                    # the Layer menu
    assert top_layer(window).control.kind == "tile"


# -- the Control panel ------------------------------------------------------------------------------------

def test_each_change_in_the_panel_is_one_undo_step(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    add_control(qtbot, window, "scribble")
    panel, stack = window.control_panel, window.state.history.stack
    steps = stack.count()
    panel.weight_slider.setValue(150)
    assert top_layer(window).control.weight == 1.5 and stack.count() == steps + 1
    panel.weight_slider.setSliderDown(True)                     # a drag: one step, when it is released
    for value in (140, 120, 90, 60):
        panel.weight_slider.setValue(value)
    assert top_layer(window).control.weight == 1.5
    panel.weight_slider.setSliderDown(False)
    assert top_layer(window).control.weight == 0.6 and stack.count() == steps + 2
    panel.start_spin.setValue(40)
    panel.end_spin.setValue(30)                                  # before the start: the start follows
    assert (top_layer(window).control.start, top_layer(window).control.end) == (0.3, 0.3)
    assert stack.count() == steps + 4
    undo(window)
    assert (top_layer(window).control.start, top_layer(window).control.end) == (0.4, 1.0)
    undo(window)
    undo(window)
    assert top_layer(window).control.weight == 1.5
    qtbot.waitUntil(lambda: panel.weight_slider.value() == 150, timeout=2000)       # the panel follows undo
    undo(window)
    assert top_layer(window).control == ControlSettings("scribble")


def test_the_kind_and_the_canny_thresholds_change_as_one_undo_step_each(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    add_control(qtbot, window, "scribble")
    panel, stack = window.control_panel, window.state.history.stack
    assert not panel.low_spin.isVisibleTo(panel)                 # a scribble has no thresholds
    steps = stack.count()
    panel.kind_combo.setCurrentIndex(panel.kind_combo.findData("canny"))
    layer = top_layer(window)
    assert layer.control.kind == "canny" and layer.name == "Canny edges control" and stack.count() == steps + 1
    qtbot.waitUntil(lambda: panel.low_spin.isVisibleTo(panel), timeout=2000)
    assert not panel.blur_spin.isVisibleTo(panel)
    panel.low_spin.setValue(50)
    assert top_layer(window).control.low == 50 and stack.count() == steps + 2
    panel.high_spin.setValue(30)                                 # below the low one: the low one follows
    assert (top_layer(window).control.low, top_layer(window).control.high) == (30, 30)
    undo(window)
    assert (top_layer(window).control.low, top_layer(window).control.high) == (50, 200)
    undo(window)
    undo(window)
    assert top_layer(window).control.kind == "scribble" and top_layer(window).name == "Scribble control"
    panel.kind_combo.setCurrentIndex(panel.kind_combo.findData("tile"))
    qtbot.waitUntil(lambda: panel.blur_spin.isVisibleTo(panel), timeout=2000)
    panel.blur_spin.setValue(4.5)
    assert top_layer(window).control.blur == 4.5
    panel.from_image_check.setChecked(False)
    assert not top_layer(window).control.from_image and top_layer(window).control.uses_layer_pixels


# -- the pen on a control layer ---------------------------------------------------------------------------

STROKE = [(30.0, 60.0), (70.0, 60.0), (110.0, 60.0), (150.0, 60.0)]


def test_the_brush_draws_on_a_scribble_layer_not_the_mask_as_one_undo_step(qtbot, settings, monkeypatch,
                                                                          grey_image):
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    layer = add_control(qtbot, window, "scribble")
    doc, canvas, stack = window.state.document, window.canvas, window.state.history.stack
    window.state.set_tool("brush")
    window.state.set_brush(size=10, softness=0.0)
    image, mask = np.array(doc.image), np.array(doc.mask)
    steps = stack.count()
    press(qtbot, canvas, *STROKE[0])
    move(canvas, *STROKE[1])
    assert is_tinted(canvas_rgb(canvas, 50, 60))                   # shown live, before the stroke ends
    move(canvas, *STROKE[2])
    release(qtbot, canvas, *STROKE[3])
    drawn = top_layer(window)
    assert drawn.id == layer.id and stack.count() == steps + 1
    assert stack.undoText() == "Draw on control layer"
    alpha = drawn.pixels[..., 3]
    for x in range(30, 151, 10):
        assert alpha[60, x] == 255 and drawn.pixels[60, x, :3].tolist() == [255, 255, 255]
    assert alpha[40, 90] == 0 and alpha[80, 90] == 0 and alpha[60, 10] == 0
    assert np.array_equal(doc.mask, mask) and not doc.has_mask()
    assert np.array_equal(doc.image, image)                         # the composite, bit for bit
    qtbot.wait(20)
    assert is_tinted(canvas_rgb(canvas, 90, 60))
    assert canvas_rgb(canvas, 90, 30) == (GREY, GREY, GREY)
    window.state.set_tool("eraser")
    stroke(qtbot, canvas, [(90.0, 60.0), (130.0, 60.0)])
    erased = top_layer(window).pixels[..., 3]
    assert erased[60, 110] == 0 and erased[60, 50] == 255 and stack.count() == steps + 2
    undo(window)
    assert top_layer(window).pixels[60, 110, 3] == 255
    undo(window)
    assert not top_layer(window).pixels[..., 3].any()
    qtbot.wait(20)
    assert canvas_rgb(canvas, 90, 60) == (GREY, GREY, GREY)


def test_on_a_raster_layer_or_a_control_made_from_the_image_the_brush_paints_the_mask(qtbot, settings,
                                                                                       monkeypatch, grey_image):
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    add_control(qtbot, window, "scribble")
    doc = window.state.document
    background = doc.layers.layers[0]
    window.state.set_active_layer(background.id)
    window.state.set_brush(size=10, softness=0.0)
    stroke(qtbot, window.canvas, STROKE)
    assert doc.mask[60, 90] == 255 and not top_layer(window).pixels[..., 3].any()
    window.state.clear_mask()
    add_control(qtbot, window, "canny")                    # made from the image: nothing to draw on
    stroke(qtbot, window.canvas, STROKE)
    assert doc.mask[60, 90] == 255 and not top_layer(window).pixels[..., 3].any()


def test_a_control_layer_elsewhere_is_drawn_on_in_its_own_coordinates(qtbot, settings, monkeypatch, grey_image):
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    state = window.state
    small = Layer(0, "Small scribble", np.zeros((40, 60, 4), np.uint8), 80, 40, control=ControlSettings())
    state.change_layers(state.document.layers.added(small), "Add layer")
    state.set_active_layer(top_layer(window).id)
    state.set_brush(size=6, softness=0.0)
    stroke(qtbot, window.canvas, [(70.0, 60.0), (100.0, 60.0), (160.0, 60.0)])
    pixels = top_layer(window).pixels
    assert pixels.shape == (40, 60, 4) and (top_layer(window).x, top_layer(window).y) == (80, 40)
    assert pixels[20, 0, 3] == 255 and pixels[20, 59, 3] == 255 and pixels[5, 20, 3] == 0
    assert not state.document.has_mask()


# -- the preview ------------------------------------------------------------------------------------------

def test_the_canny_preview_shows_the_edges_of_a_rectangle_and_follows_the_thresholds(qtbot, settings,
                                                                                       monkeypatch, rectangle_image):
    window = shown_window(qtbot, settings, monkeypatch, rectangle_image)
    panel = window.control_panel
    add_control(qtbot, window, "canny")
    assert panel.preview.image is None
    panel.preview_check.setChecked(True)
    qtbot.waitUntil(lambda: panel.preview.image is not None, timeout=3000)
    edges = panel.preview.image
    assert edges.shape == (H, W, 3)
    assert edges[40:80, 48:52].max() == 255 and edges[40:80, 148:152].max() == 255      # the sides
    assert edges[28:32, 70:130].max() == 255                                            # the top
    assert not edges[40:80, 60:140].any() and not edges[:20].any()                      # inside, above
    qtbot.wait(20)
    column = next(x for x in range(48, 52) if edges[60, x].max() == 255)
    assert min(canvas_rgb(window.canvas, column + 0.5, 60.5)) > 180                    # drawn over the canvas
    panel.low_spin.setValue(10)
    qtbot.waitUntil(lambda: panel.preview.image is not edges, timeout=3000)
    panel.preview_check.setChecked(False)
    assert panel.preview.image is None


def test_the_scribble_preview_is_the_drawing_in_white_on_black(qtbot, settings, monkeypatch, grey_image):
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    panel = window.control_panel
    add_control(qtbot, window, "scribble")
    window.state.set_brush(size=10, softness=0.0)
    stroke(qtbot, window.canvas, STROKE)
    panel.preview_check.setChecked(True)
    qtbot.waitUntil(lambda: panel.preview.image is not None, timeout=3000)
    assert panel.preview.image[60, 90].tolist() == [255, 255, 255]
    assert panel.preview.image[20, 90].tolist() == [0, 0, 0]
    add_control(qtbot, window, "inpaint")
    qtbot.waitUntil(lambda: panel.preview.image is None, timeout=3000)
    assert "made from the mask" in panel.note_label.text()


def test_a_depth_preview_runs_its_depth_model_off_the_ui_thread_and_a_bad_folder_is_one_line(
        qtbot, settings, monkeypatch, grey_image, tmp_path):
    import threading

    from app.engine import annotators

    threads = []

    class FakeDepth:
        def __call__(self, rgb):
            threads.append(threading.current_thread())
            return np.full((*rgb.shape[:2], 3), 77, np.uint8)

    monkeypatch.setattr(annotators.DepthAnnotator, "load", staticmethod(lambda source, device="cpu": FakeDepth()))
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    panel = window.control_panel
    layer = add_control(qtbot, window, "depth")
    qtbot.waitUntil(lambda: window.controls.annotators is not None, timeout=5000)     # the cache, looked at once
    window.controls.annotators = [annotators.AnnotatorInfo("someone/depth-small", "depth", tmp_path, 0)]
    window.controls.annotators_found.emit()
    statuses = []
    window.controls.status.connect(lambda text, error: statuses.append((text, error)))
    panel.preview.status.connect(lambda text, error: statuses.append((text, error)))
    panel.preview_check.setChecked(True)
    assert "Pick a depth model" in panel.note_label.text()
    combo = panel.annotator_combo
    combo.setCurrentIndex(combo.findData("someone/depth-small"))
    assert window.state.document.layers.get(layer.id).control.annotator == "someone/depth-small"
    qtbot.waitUntil(lambda: panel.preview.image is not None, timeout=5000)
    assert panel.preview.image[10, 10].tolist() == [77, 77, 77]
    assert threads and threads[0] is not threading.main_thread()
    assert ("Making the depth preview with someone/depth-small…", False) in statuses
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *args, **kwargs: str(tmp_path)))
    combo.setCurrentIndex(combo.findData("::choose-folder"))
    text, error = statuses[-1]
    assert error and "no config.json" in text and "\n" not in text
    assert window.state.document.layers.get(layer.id).control.annotator == "someone/depth-small"


def test_a_pose_layer_offers_pose_models_and_person_detectors_and_previews_off_the_ui_thread(
        qtbot, settings, monkeypatch, grey_image, tmp_path):
    import threading

    from app.engine import annotators
    from app.engine.pose_annotator import PoseAnnotator

    loads = []

    class FakePose:
        def __call__(self, rgb):
            loads.append(threading.current_thread())
            return np.full((*rgb.shape[:2], 3), 40, np.uint8)

    def load(source, detector="", device="cpu"):
        loads.append((source, detector))
        return FakePose()

    monkeypatch.setattr(PoseAnnotator, "load", staticmethod(load))
    window = shown_window(qtbot, settings, monkeypatch, grey_image)
    panel = window.control_panel
    layer = add_control(qtbot, window, "pose")
    assert not layer.control.uses_layer_pixels                  # a new pose layer is made from the image
    qtbot.waitUntil(lambda: window.controls.annotators is not None, timeout=5000)
    window.controls.annotators = [annotators.AnnotatorInfo("someone/depth-small", "depth", tmp_path, 0),
                                  annotators.AnnotatorInfo("usyd/vitpose", "pose", tmp_path, 0),
                                  annotators.AnnotatorInfo("peking/rtdetr", "detector", tmp_path, 0)]
    window.controls.annotators_found.emit()
    qtbot.waitUntil(lambda: panel.annotator_combo.findData("usyd/vitpose") >= 0, timeout=2000)
    combo = panel.annotator_combo
    assert panel.form.labelForField(combo).text() == "Pose model" and combo.findData("someone/depth-small") < 0
    assert not panel.detector_combo.isHidden() and panel.detector_combo.findData("peking/rtdetr") >= 0
    panel.preview_check.setChecked(True)
    assert "Pick a pose model" in panel.note_label.text()
    combo.setCurrentIndex(combo.findData("usyd/vitpose"))
    control = window.state.document.layers.get(layer.id).control
    assert (control.annotator, control.detector) == ("usyd/vitpose", "peking/rtdetr")    # the detector at hand
    qtbot.waitUntil(lambda: panel.preview.image is not None, timeout=5000)
    assert panel.preview.image[5, 5].tolist() == [40, 40, 40]
    assert ("usyd/vitpose", "peking/rtdetr") in loads and loads[-1] is not threading.main_thread()
    detectors = panel.detector_combo
    detectors.setCurrentIndex(detectors.findData(""))
    assert window.state.document.layers.get(layer.id).control.detector == ""
    undo(window)
    assert window.state.document.layers.get(layer.id).control.detector == "peking/rtdetr"
    panel.from_image_check.setChecked(False)                    # an imported skeleton: no models asked for
    qtbot.waitUntil(lambda: panel.detector_combo.isHidden() and panel.annotator_combo.isHidden(), timeout=2000)
    job = window.state.document.layers.get(layer.id).control
    assert job.uses_layer_pixels and job.annotator == "usyd/vitpose"


# -- Keep structure ---------------------------------------------------------------------------------------

def test_keep_structure_is_on_with_a_canny_controlnet_of_the_family_and_reaches_the_restyle(qtbot, settings,
                                                                                            monkeypatch, photo):
    library = ModelLibrary(settings.parent / "models.json")
    library.add_checked(SD1_MODEL)
    engine = ScriptedEngine()
    window = MainWindow(settings=settings, registry=AnyModelRegistry(engine), library=library)
    qtbot.addWidget(window)
    panel = window.panel
    panel.steps_spin.setValue(2)
    check = panel.keep_structure_check
    panel.model_combo.setCurrentIndex(panel.model_combo.findData(SD1_MODEL.location))
    assert check.toolTip().startswith("Restyle keeps the composition with a canny ControlNet")
    assert not check.isChecked()                                      # no canny ControlNet yet
    window.library.add_checked(SD1_CANNY)
    window.controls.controlnets_changed.emit()
    assert check.isChecked() and panel.job_settings().keep_structure
    assert "keep_structure" not in panel.saved_values()              # a default is not remembered as a choice
    window.open_image(photo[0])
    with qtbot.waitSignal(window.session.variants_ready, timeout=10000, check_params_cb=lambda v: len(v) > 0):
        window.restyle()
    controls = engine.requests[-1].controls
    assert [(c.kind, c.model) for c in controls] == [("canny", SD1_CANNY.location)]
    check.setChecked(False)                                           # the user's choice stays
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("classic"))
    panel.model_combo.setCurrentIndex(panel.model_combo.findData(SD1_MODEL.location))
    assert not check.isChecked() and not panel.job_settings().keep_structure
    assert panel.saved_values()["keep_structure"] is False


def test_keep_structure_is_off_by_default_without_a_canny_controlnet_of_the_family(qtbot, settings):
    library = ModelLibrary(settings.parent / "models.json")
    for entry in (SD1_MODEL, XL_CANNY):
        library.add_checked(entry)
    window = make_window(qtbot, settings, ScriptedEngine(), library)
    panel = window.panel
    panel.model_combo.setCurrentIndex(panel.model_combo.findData(SD1_MODEL.location))
    assert not panel.keep_structure_check.isChecked() and not panel.job_settings().keep_structure


# -- Add ControlNet… --------------------------------------------------------------------------------------

# The tiny ControlNets' cross-attention width (32) is no real family's: they are listed with family "" and
# checked against the model when a job uses them.

def test_add_controlnet_from_the_models_menu_adds_it_to_the_library(qtbot, settings, tiny_controlnets,
                                                                     monkeypatch, photo):
    file = tiny_controlnets.path("sd15", "single_file")
    window = make_window(qtbot, settings, ScriptedEngine())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(file), "")))
    window.action_set["add_controlnet"].trigger()
    dialog = window.findChild(AddControlNetDialog)
    assert dialog is not None and not dialog.ok_button.isEnabled()
    qtbot.mouseClick(dialog.file_button, Qt.MouseButton.LeftButton)
    assert dialog.location() == str(file)
    with qtbot.waitSignal(window.controls.controlnet_check_finished, timeout=10000) as finished:
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    entry = finished.args[0]
    assert entry is not None and entry.family == "" and entry.is_controlnet
    assert [e.location for e in window.library.controlnets()] == [str(file.resolve())]
    assert window.library.entries() == []                        # not a diffusion model: not in the Model list
    window.open_image(photo[0])
    add_control(qtbot, window, "scribble")
    combo = window.control_panel.model_combo
    assert combo.findData(entry.location) >= 0
    assert entry.label in [combo.itemText(i) for i in range(combo.count())]


def test_add_controlnet_from_the_panel_gives_it_to_the_layer_and_a_bad_one_is_one_line(qtbot, settings,
                                                                                       tiny_controlnets, photo,
                                                                                       monkeypatch, tmp_path):
    file, folder = tiny_controlnets.path("sd15", "single_file"), tmp_path / "a-unet"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    layer = add_control(qtbot, window, "scribble")
    combo = window.control_panel.model_combo
    combo.setCurrentIndex(combo.findData(ADD_CONTROLNET))
    dialog = window.findChild(AddControlNetDialog)
    assert dialog is not None
    qtbot.waitUntil(lambda: combo.currentData() == "", timeout=2000)   # the picker stays on the layer's own
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *args, **kwargs: str(folder)))
    qtbot.mouseClick(dialog.folder_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(dialog.problem()), timeout=10000)
    assert "a-unet is a UNet2DConditionModel, not a ControlNet" in dialog.problem()
    assert "\n" not in dialog.problem()
    assert dialog.isVisible() and window.library.controlnets() == []
    dialog.location_edit.setText(str(file))
    with qtbot.waitSignal(window.controls.controlnet_check_finished, timeout=10000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert window.state.document.layers.get(layer.id).control.model == str(file.resolve())
    qtbot.waitUntil(lambda: combo.currentData() == str(file.resolve()), timeout=2000)


def test_import_image_fills_the_layer_scaled_to_the_canvas_and_clear_empties_it(qtbot, settings, monkeypatch,
                                                                                photo, tmp_path):
    drawing = np.full((24, 32, 3), 255, np.uint8)
    drawing[10:14, :] = 0
    path = tmp_path / "drawing.png"
    Image.fromarray(drawing).save(path)
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])                                   # 64 x 48
    layer = add_control(qtbot, window, "depth")
    statuses = []
    window.controls.status.connect(lambda text, error: statuses.append(text))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *args, **kwargs: (str(path), "")))
    steps = window.state.history.stack.count()
    window.control_panel.import_button.click()
    imported = window.state.document.layers.get(layer.id)
    assert imported.pixels.shape == (48, 64, 3) and imported.pixels[24, 30].tolist() == [0, 0, 0]
    assert not imported.control.from_image and window.state.history.stack.count() == steps + 1
    assert "scaled from 32 x 24 to 64 x 48" in statuses[-1]
    qtbot.waitUntil(lambda: window.control_panel.clear_button.isEnabled(), timeout=2000)
    window.control_panel.clear_button.click()
    assert not window.state.document.layers.get(layer.id).pixels[..., 3].any()


def test_the_shortcut_sheet_lists_the_pen_on_a_control_layer_and_add_control_layer(qtbot, settings, photo):
    from app.widgets.help_dialogs import show_shortcut_sheet

    window = make_window(qtbot, settings, ScriptedEngine())
    sheet = show_shortcut_sheet(window)
    rows = sheet.rows()
    assert any("control layer" in command and keys == "B" for _menu, command, keys in rows)
    assert ("Layer", "New Scribble Control Layer (draw on it with the Brush)", "Ctrl+Shift+N") in rows
    sheet.close()
    window.open_image(photo[0])
    window.action_set["add_scribble_layer"].trigger()
    assert window.state.document.layers.layers[-1].control.kind == "scribble"
