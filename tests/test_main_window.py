"""The editor window driven like a user would, with a scripted engine standing in for diffusion."""
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import QDialog, QWidget

from app import MainWindow
from app.core.geometry import Rect
from app.engine.base import Engine, format_parameters
from app.engine.events import EngineEvent, Variant
from app.engine.registry import EngineRegistry
from app.editor.model_library import ModelLibrary
from app.widgets.generate_panel import ADD_MODEL

NAMED = ["canvas", "promptEdit", "negativePromptEdit", "styleCombo", "styleStrengthSlider", "modelCombo",
         "stepsSpin", "restyleStrengthSpin", "seedSpin", "fillButton", "expandButton", "restyleButton",
         "cancelButton", "finishButton", "progressBar", "acceptButton", "discardButton"]


class ScriptedEngine(Engine):
    """Emits a solid-colour preview per step; the result is the input with the output area painted.
    Stop & keep (cancel.finish_requested) ends it after the current step, which it records."""
    id = "scripted"
    label = "Scripted test engine"

    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.gate = gate
        self.fail = fail
        self.finished_at: int | None = None
        self.requests = []

    def generate(self, request, job_id, emit, cancel):
        self.requests.append(request)
        if self.fail:
            raise RuntimeError("boom")
        out = request.output_rect
        total = request.sampling.steps
        for step in range(1, total + 1):
            if self.gate is not None:
                while not self.gate.wait(0.01) and not cancel.finish_requested:
                    cancel.check()
            cancel.check()
            emit(EngineEvent.progress(job_id, step, total, np.full((out.h, out.w, 3), step, np.uint8), out))
            if cancel.finish_requested:
                self.finished_at = step
                break
        variants = []
        for i in range(request.sampling.variants):
            image = np.zeros((out.h, out.w, 3), np.uint8)
            image[...] = (10 * (i + 1), 20, 30)
            seed = request.sampling.seed + i
            variants.append(Variant(image, seed, format_parameters(request, seed, self.label)))
        return tuple(variants)


@pytest.fixture
def settings(tmp_path):
    return tmp_path / "settings.json"


def make_window(qtbot, settings, engine, library=None):
    registry = EngineRegistry()
    registry.register("scripted", "Scripted test engine", lambda: engine)
    if library is None:       # next to the settings file, so a "restart" with the same settings sees it
        library = ModelLibrary(Path(settings).parent / "models.json")
    window = MainWindow(settings=settings, registry=registry, library=library)
    qtbot.addWidget(window)
    index = window.panel.model_combo.findData("scripted")
    window.panel.model_combo.setCurrentIndex(index)
    window.panel.steps_spin.setValue(4)
    window.panel.variants_spin.setValue(2)
    return window


def test_window_builds_hidden_with_named_accessible_widgets(qtbot, settings):
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    assert not window.isVisible()
    for name in NAMED:
        widget = window.findChild(QWidget, name)
        assert widget is not None, name
        assert widget.accessibleName(), name
    assert window.action_set["undo"].shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
    assert window.action_set["redo"].shortcut().matches(QKeySequence(QKeySequence.StandardKey.Redo))
    assert window.panel.model_combo.currentText() == "Classic fill (OpenCV Telea)"


def test_open_enables_fill_only_after_a_mask(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    assert window.open_image(photo[0])
    assert window.state.tool == "brush"
    assert np.array_equal(window.state.document.image, photo[1])
    assert not window.panel.fill_button.isEnabled() and not window.panel.expand_button.isEnabled()
    window.state.set_mask(np.pad(np.full((8, 8), 255, np.uint8), ((10, 30), (10, 46))), "Paint")
    assert window.panel.fill_button.isEnabled() and not window.panel.expand_button.isEnabled()
    window.action_set["expand_lrtb_50"].trigger()
    assert window.panel.expand_button.isEnabled()


def run_fill(qtbot, window):
    with qtbot.waitSignal(window.session.variants_ready, timeout=10000,
                          check_params_cb=lambda v: len(v) > 0):
        qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)


def test_fill_shows_previews_then_variants_and_accept_is_one_undo_step(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    previews = []
    window.state.overlay_changed.connect(lambda: previews.append(window.state.preview))
    run_fill(qtbot, window)
    assert sum(p is not None for p in previews) == 4          # one preview per step
    assert window.panel.progress_bar.value() == 4 and window.panel.progress_bar.maximum() == 4
    assert window.strip.isVisibleTo(window) and window.strip.list.count() == 2
    assert window.state.candidate is not None and window.state.candidate[0][0, 0, 0] == 10
    window.strip.list.setCurrentRow(1)
    assert window.state.candidate[0][0, 0, 0] == 20
    assert np.array_equal(window.state.document.image, photo[1])      # nothing committed yet
    steps_before = window.state.history.stack.count()
    qtbot.mouseClick(window.strip.accept_button, Qt.MouseButton.LeftButton)
    assert window.state.document.image[0, 0].tolist() == [20, 20, 30]
    assert window.state.history.stack.count() == steps_before + 1
    assert window.state.document.has_mask() and window.state.candidate is None     # kept to iterate on
    window.action_set["undo"].trigger()
    assert np.array_equal(window.state.document.image, photo[1])
    assert window.state.document.has_mask()


def test_discard_leaves_document_as_it_was(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    run_fill(qtbot, window)
    count = window.state.history.stack.count()
    qtbot.mouseClick(window.strip.discard_button, Qt.MouseButton.LeftButton)
    assert window.state.candidate is None and not window.strip.list.isVisibleTo(window) and window.strip.hint.isVisibleTo(window)
    assert np.array_equal(window.state.document.image, photo[1])
    assert window.state.history.stack.count() == count


def test_cancel_stops_job_and_keeps_document(qtbot, settings, photo):
    gate = threading.Event()
    window = make_window(qtbot, settings, ScriptedEngine(gate))
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)
    assert window.session.busy and window.panel.cancel_button.isEnabled()
    assert not window.panel.fill_button.isEnabled()
    with qtbot.waitSignal(window.session.busy_changed, timeout=5000, check_params_cb=lambda busy: not busy):
        qtbot.mouseClick(window.panel.cancel_button, Qt.MouseButton.LeftButton)
    assert not window.session.busy and window.session.variants == ()
    assert window.state.preview is None
    assert np.array_equal(window.state.document.image, photo[1])
    assert "cancel" in window.panel.status_label.text().lower()
    assert window.panel.fill_button.isEnabled()


def test_opening_another_image_mid_job_cancels_it_and_its_result_never_lands(qtbot, settings, photo, tmp_path):
    gate = threading.Event()
    window = make_window(qtbot, settings, ScriptedEngine(gate))
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)
    assert window.session.busy
    other = np.full((20, 30, 3), 90, np.uint8)
    Image.fromarray(other).save(tmp_path / "other.png")
    assert window.open_image(tmp_path / "other.png")
    assert not window.session.busy
    gate.set()                                    # the old job could now run to its end
    qtbot.wait(300)
    assert window.session.variants == () and window.state.candidate is None
    np.testing.assert_array_equal(window.state.document.image, other)


def test_engine_error_is_one_line_and_next_job_works(qtbot, settings, photo):
    engine = ScriptedEngine(fail=True)
    window = make_window(qtbot, settings, engine)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    with qtbot.waitSignal(window.session.busy_changed, timeout=5000, check_params_cb=lambda busy: not busy):
        window.fill()
    assert "boom" in window.last_error and "\n" not in window.last_error
    engine.fail = False
    run_fill(qtbot, window)
    assert window.strip.list.count() == 2


def test_expand_with_classic_engine_grows_the_image(qtbot, settings, photo):
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    window.open_image(photo[0])
    window.state.set_canvas(Rect(-16, 0, 64 + 32, 48 + 8))
    with qtbot.waitSignal(window.session.variants_ready, timeout=20000, check_params_cb=lambda v: len(v) > 0):
        window.expand()
    window.accept_current()
    doc = window.state.document
    assert doc.image.shape == (56, 96, 3) and doc.canvas == Rect(0, 0, 96, 56)
    assert np.array_equal(doc.image[:48, 16:80], photo[1])


def test_open_bad_file_reports_one_line_and_keeps_document(qtbot, settings, photo, tmp_path):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert not window.open_image(bad)
    assert "bad.png" in window.last_error and "\n" not in window.last_error
    assert np.array_equal(window.state.document.image, photo[1])


def test_save_writes_parameters_and_marks_clean(qtbot, settings, photo, tmp_path):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    run_fill(qtbot, window)
    window.accept_current()
    assert window.has_unsaved_changes() and "*" in window.windowTitle()
    out = tmp_path / "saved.png"
    assert window.save_image(out)                     # an export: flattened, with the parameters
    text = Image.open(out).text["parameters"]
    assert "Seed:" in text and "Mode: fill" in text
    assert np.array_equal(np.asarray(Image.open(out)), window.state.document.image)
    assert window.has_unsaved_changes()               # the layers are not in a PNG: still unsaved
    assert window.save_image(tmp_path / "saved.ora")
    assert not window.has_unsaved_changes() and "*" not in window.windowTitle()


def test_paste_and_copy_through_clipboard(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    window.files.copy()
    window.state.set_document(None)
    window.files.paste()
    assert window.state.document is not None
    assert np.array_equal(window.state.document.image, photo[1])
    assert QGuiApplication.clipboard().image().width() == 64


def test_settings_survive_a_restart(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.panel.prompt_edit.setPlainText("a red boat")
    window.panel.style_combo.setCurrentIndex(2)
    style = window.panel.style_combo.currentText()
    window.panel.random_seed_check.setChecked(False)
    window.panel.seed_spin.setValue(1234)
    window.state.set_brush(size=99)
    window.resize(1000, 700)
    window.close()
    again = make_window(qtbot, settings, ScriptedEngine())
    assert again.height() == 700          # the window's geometry came back (offscreen, widths are clamped)
    assert again.panel.prompt_edit.toPlainText() == "a red boat"
    assert again.panel.style_combo.currentText() == style
    assert again.panel.job_settings().seed == 1234
    assert again.state.brush_size == 99


def test_closing_mid_job_shuts_worker_down(qtbot, settings, photo):
    gate = threading.Event()
    window = make_window(qtbot, settings, ScriptedEngine(gate))
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    window.fill()
    assert window.session.busy
    window.state.history.stack.setClean()
    window.close()
    assert window.session.controller.thread.isFinished()


# -- Stop & keep ------------------------------------------------------------------------------------------

def test_stop_and_keep_ends_the_job_with_the_current_step_as_the_result(qtbot, settings, photo):
    engine = ScriptedEngine(threading.Event())       # never opened: each step waits for a cancel or finish
    window = make_window(qtbot, settings, engine)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    assert not window.panel.finish_button.isEnabled()
    statuses = []
    window.session.status.connect(lambda text, error: statuses.append(text))
    qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)
    assert window.panel.finish_button.isEnabled() and window.panel.cancel_button.isEnabled()
    with qtbot.waitSignal(window.session.variants_ready, timeout=5000, check_params_cb=lambda v: len(v) > 0):
        qtbot.mouseClick(window.panel.finish_button, Qt.MouseButton.LeftButton)
    assert engine.finished_at == 1
    assert "Stopping after this step…" in statuses
    assert window.strip.list.count() == 2 and window.state.candidate is not None
    assert not window.session.busy and not window.panel.finish_button.isEnabled()
    assert "ready" in window.panel.status_label.text()
    assert window.panel.progress_bar.text().startswith("stopped at step 1/")
    window.accept_current()
    assert window.state.document.image[0, 0].tolist() == [10, 20, 30]


def test_stop_and_keep_when_idle_does_nothing(qtbot, settings):
    window = make_window(qtbot, settings, ScriptedEngine())
    statuses = []
    window.session.status.connect(lambda text, error: statuses.append(text))
    window.session.finish_early()
    assert statuses == [] and not window.session.busy


# -- the model picker and the model library ---------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    """A full-size SD 1.x layout over an empty data section (enough to be checked, not to be run)."""
    pytest.importorskip("torch")
    from tests.test_add_model_check import full_size_checkpoint

    path = tmp_path / "models" / "dreamy.safetensors"
    path.parent.mkdir()
    return full_size_checkpoint(path, "sd15")


class AnyModelRegistry(EngineRegistry):
    """Hands out the scripted engine for every model id, so jobs with added models run instantly."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def create(self, model_id=None):
        return self.engine


def add_model(qtbot, window, text, config=""):
    """Add a model as the dialog does and wait for its check (on a background thread): the entry or None."""
    with qtbot.waitSignal(window.model_check_finished, timeout=10000) as finished:
        window.add_model_from_text(text, config)
    return finished.args[0]


def model_labels(window):
    combo = window.panel.model_combo
    return [combo.itemText(i) for i in range(combo.count())]


def test_model_picker_lists_engines_then_added_models_then_add_model(qtbot, settings, checkpoint, tmp_path):
    library = ModelLibrary(tmp_path / "library.json")
    entry = library.add(str(checkpoint))
    repo = library.add("someone/some-model")
    window = make_window(qtbot, settings, ScriptedEngine(), library)
    assert model_labels(window) == ["Classic fill (OpenCV Telea)", "Classic fill (OpenCV Navier-Stokes)",
                                    "Scripted test engine", "dreamy.safetensors — Stable Diffusion 1.x",
                                    "someone/some-model (Hugging Face)", "", "Add model…"]
    combo = window.panel.model_combo
    assert combo.itemData(3) == entry.location and combo.itemData(4) == repo.location
    combo.setCurrentIndex(4)
    assert window.panel.job_settings().model == "someone/some-model"


def test_choosing_add_model_opens_the_dialog_and_keeps_the_selection(qtbot, settings):
    window = make_window(qtbot, settings, ScriptedEngine())
    combo = window.panel.model_combo
    with qtbot.waitSignal(window.panel.add_model_requested, timeout=1000):
        combo.setCurrentIndex(combo.findData(ADD_MODEL))
    assert combo.currentText() == "Scripted test engine"
    assert window.panel.job_settings().model == "scripted"
    dialog = window.findChild(QDialog, "addModelDialog")
    assert dialog is not None and dialog.isVisible()
    assert not dialog.ok_button.isEnabled()           # nothing typed or chosen yet
    dialog.reject()
    assert window.library.entries() == []


def test_adding_a_bad_model_file_shows_one_line_and_adds_nothing(qtbot, settings, tmp_path):
    window = make_window(qtbot, settings, ScriptedEngine())
    fake = tmp_path / "x.safetensors"
    fake.write_text("a text file, not a model")
    labels = model_labels(window)
    assert add_model(qtbot, window, str(fake)) is None
    assert "x.safetensors" in window.last_error and "not a readable .safetensors file" in window.last_error
    assert "\n" not in window.last_error and window.panel.status_label.text() == window.last_error
    assert window.library.entries() == [] and model_labels(window) == labels
    assert window.panel.job_settings().model == "scripted"


def test_an_added_model_is_selected_and_stays_across_a_restart(qtbot, settings, checkpoint):
    window = make_window(qtbot, settings, ScriptedEngine())
    entry = add_model(qtbot, window, str(checkpoint))
    assert entry is not None
    assert window.panel.model_combo.currentText() == "dreamy.safetensors — Stable Diffusion 1.x"
    assert window.panel.job_settings().model == str(checkpoint.resolve())
    assert window.panel.job_settings().model_config == ""
    assert window.action_set["remove_model"].isEnabled()
    window.close()
    again = MainWindow(settings=settings, library=ModelLibrary(window.library.path))
    qtbot.addWidget(again)
    assert entry.label in model_labels(again)
    assert again.panel.job_settings().model == str(checkpoint.resolve())
    again.close()
    ModelLibrary(window.library.path).remove(entry.location)        # gone from the list meanwhile
    third = MainWindow(settings=settings, library=ModelLibrary(window.library.path))
    qtbot.addWidget(third)
    assert third.panel.model_combo.currentData() == "classic"
    assert third.panel.model_combo.currentText() == "Classic fill (OpenCV Telea)"


def test_the_add_model_dialog_adds_a_file_with_its_config_and_jobs_use_both(qtbot, settings, checkpoint,
                                                                           tmp_path, photo):
    import shutil

    from app.engine.diffusion.model_files import CONFIG_ROOT

    config = Path(shutil.copytree(CONFIG_ROOT / "sd15", tmp_path / "odd-config"))
    engine = ScriptedEngine()
    window = MainWindow(settings=settings, registry=AnyModelRegistry(engine),
                        library=ModelLibrary(tmp_path / "library.json"))
    qtbot.addWidget(window)
    dialog = window.add_model_dialog()
    dialog.location_edit.setText(str(checkpoint))
    dialog.config_edit.setText(str(config))
    with qtbot.waitSignal(window.model_check_finished, timeout=10000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert [e.location for e in window.library.entries()] == [str(checkpoint.resolve())]
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    run_fill(qtbot, window)
    assert engine.requests[-1].model == str(checkpoint.resolve())
    assert engine.requests[-1].model_config == str(config.resolve())


def test_remove_selected_model_takes_it_off_the_list_only(qtbot, settings, checkpoint):
    window = make_window(qtbot, settings, ScriptedEngine())
    entry = add_model(qtbot, window, str(checkpoint))
    window.action_set["remove_model"].trigger()
    assert window.library.entries() == [] and entry.label not in model_labels(window)
    assert window.panel.job_settings().model == "classic"
    assert not window.action_set["remove_model"].isEnabled()
    assert checkpoint.is_file()
    assert not window.remove_selected_model()            # a built-in engine cannot be removed
    assert "Only models you added" in window.last_error


@pytest.mark.parametrize("edit", ["brush stroke", "clear_mask", "invert_mask"])
def test_editing_the_mask_during_a_fill_changes_the_document_not_the_running_job(qtbot, settings, photo, edit):
    from tests.test_canvas import drag

    gate = threading.Event()
    engine = ScriptedEngine(gate)
    window = make_window(qtbot, settings, engine)
    window.open_image(photo[0])
    window.state.set_mask(tools_rect_mask(), "Paint")
    painted = window.state.document.mask
    qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(engine.requests) == 1, timeout=5000)
    job_mask = engine.requests[0].mask
    assert np.shares_memory(job_mask, painted)           # the request shares the mask: no copy on the UI thread
    if edit == "brush stroke":
        window.canvas.resize(640, 480)
        window.canvas.fit()
        window.state.set_brush(size=8, softness=0.0)
        drag(qtbot, window.canvas, [(40, 40), (50, 40), (60, 40)])
    else:
        window.action_set[edit].trigger()
    doc_mask = window.state.document.mask
    assert not np.array_equal(doc_mask, tools_rect_mask())                        # the edit landed ...
    np.testing.assert_array_equal(job_mask, tools_rect_mask())                    # ... not in the job's mask
    gate.set()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=5000)
    window.action_set["undo"].trigger()                                          # the edit is one undo step
    np.testing.assert_array_equal(window.state.document.mask, tools_rect_mask())
    window.action_set["redo"].trigger()
    np.testing.assert_array_equal(window.state.document.mask, doc_mask)


def tools_rect_mask() -> np.ndarray:
    mask = np.zeros((48, 64), np.uint8)
    mask[30:40, 5:20] = 255
    return mask


def test_damaged_settings_models_and_styles_never_stop_the_editor(qtbot, settings, tmp_path, monkeypatch):
    import json

    from app.core import styles as styles_module

    settings.write_text(json.dumps({"version": 1, "settings": {
        "panel/seed": 99999999999999999999, "panel/steps": "lots", "panel/style_strength": float("inf"),
        "brush/softness": float("nan"), "window/geometry": "hello", "panel/prompt": "kept"}}))
    models = Path(settings).parent / "models.json"
    models.write_text("{damaged")
    bad_styles = tmp_path / "styles.json"
    bad_styles.write_text('[{"name": "None", "prompt": "{prompt}"}, {"name": "Oil", "prompt": "no placeholder"}]')
    monkeypatch.setattr(styles_module, "DEFAULT_STYLES_PATH", bad_styles)
    window = MainWindow(settings=settings, library=ModelLibrary(models))
    qtbot.addWidget(window)
    line = window.statusBar().currentMessage()
    assert "\n" not in line
    assert "Some saved settings were damaged and were reset: seed, steps, style strength, brush softness, " \
           "window position." in line
    for named in ("models.json", "styles.json", "Oil"):
        assert named in line
    assert window.panel.prompt_edit.toPlainText() == "kept"
    assert window.panel.steps_spin.value() == 25 and window.panel.seed_spin.value() == 0
    assert window.panel.style_strength_slider.value() == 100 and window.state.brush_softness == 0.3
    assert [window.panel.style_combo.itemText(i) for i in range(window.panel.style_combo.count())] == ["None"]
    assert list(Path(settings).parent.glob("models.json.damaged-*"))
    window.close()
    again = MainWindow(settings=settings, library=ModelLibrary(models))   # repaired: not reported again
    qtbot.addWidget(again)
    assert "settings" not in again.statusBar().currentMessage()
    assert "models.json" not in again.statusBar().currentMessage()


def test_closing_the_window_while_a_model_is_checked_is_harmless(qtbot, settings, checkpoint):
    import gc
    import threading

    window = make_window(qtbot, settings, ScriptedEngine())
    window.add_model_from_text(str(checkpoint))
    window.close()
    window.deleteLater()
    del window
    gc.collect()
    qtbot.waitUntil(lambda: not any(t.name == "background-call" for t in threading.enumerate()), timeout=10000)
    qtbot.wait(50)                                  # the finished signal, if it came, had nobody to reach


def test_the_brush_controls_show_their_values(qtbot, settings):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.state.set_brush(size=64, softness=0.3)
    assert window.size_slider.value_label.text() == "64 px"
    assert window.softness_slider.value_label.text() == "30 %"
    assert window.size_slider.value_label.parent() is window.size_slider.parent()     # beside it, in the toolbar
    window.state.set_brush(size=900)                  # beyond the slider, as "]" can make it
    assert window.size_slider.value_label.text() == "900 px" and window.state.brush_size == 900
    window.softness_slider.setValue(100)
    assert window.softness_slider.value_label.text() == "100 %" and window.state.brush_softness == 1.0
    window.close()
    again = make_window(qtbot, settings, ScriptedEngine())
    assert again.state.brush_size == 900 and again.size_slider.value_label.text() == "900 px"


def test_restyle_is_off_while_the_classic_engine_is_chosen(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    restyle = window.action_set["restyle"]
    assert restyle.isEnabled() and window.panel.restyle_button.isEnabled()
    combo = window.panel.model_combo
    combo.setCurrentIndex(combo.findData("classic"))
    assert not restyle.isEnabled() and not window.panel.restyle_button.isEnabled()
    combo.setCurrentIndex(combo.findData("scripted"))
    assert restyle.isEnabled() and window.panel.restyle_button.isEnabled()


def test_staging_actions_are_enabled_only_while_variants_wait(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    assert not window.action_set["accept"].isEnabled() and not window.action_set["discard"].isEnabled()
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    run_fill(qtbot, window)
    assert window.action_set["keep_all"].isEnabled() and window.action_set["discard"].isEnabled()
    window.action_set["discard"].trigger()
    assert not window.session.variants and not window.action_set["accept"].isEnabled()


def test_the_help_menu_lists_the_windows_shortcuts(qtbot, settings):
    from app.widgets.help_dialogs import show_shortcut_sheet

    window = make_window(qtbot, settings, ScriptedEngine())
    titles = [action.text() for action in window.menuBar().actions()]
    assert titles[-1] == "&Help"
    sheet = show_shortcut_sheet(window)
    commands = {row[1] for row in sheet.rows()}
    assert {"Merge Down", "Accept and Keep All Variants", "Export Image…", "Magic Wand (Shift adds, Alt subtracts)"} <= commands
    sheet.close()


class NoticeEngine(ScriptedEngine):
    """A ScriptedEngine that says mid-job, as a notice, that a server dropped, then reports plain steps."""

    def generate(self, request, job_id, emit, cancel):
        emit(EngineEvent.progress(job_id, 1, 4, message="gpu:8188 dropped the connection during the job: its "
                                                        "variant runs again on another server", notice=True))
        emit(EngineEvent.progress(job_id, 2, 4, message="step 2/4"))
        return super().generate(request, job_id, emit, cancel)


def test_a_notice_stays_in_the_status_until_the_variants_are_ready_and_is_repeated_there(qtbot, settings, photo):
    window = make_window(qtbot, settings, NoticeEngine())
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    statuses = []
    window.session.status.connect(lambda text, error: statuses.append((text, error)))
    run_fill(qtbot, window)
    notice = "gpu:8188 dropped the connection during the job: its variant runs again on another server"
    assert (notice, True) in statuses and ("step 2/4", False) not in statuses
    assert window.panel.status_label.text() == f"2 variants ready: pick one, then Accept or Discard. {notice}."
    window.session.discard()
    run_fill(qtbot, window)                          # the next job starts without the last one's notices
    assert window.panel.status_label.text().count(notice) == 1
