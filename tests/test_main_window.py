"""The editor window driven like a user would, with a scripted engine standing in for diffusion."""
import threading

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import QWidget

from app import MainWindow
from app.core.geometry import Rect
from app.engine.base import Engine, format_parameters
from app.engine.events import EngineEvent, Variant
from app.engine.registry import EngineRegistry

NAMED = ["canvas", "promptEdit", "negativePromptEdit", "styleCombo", "modelCombo", "stepsSpin",
         "seedSpin", "fillButton", "expandButton", "cancelButton", "progressBar", "acceptButton",
         "discardButton"]


class ScriptedEngine(Engine):
    """Emits a solid-colour preview per step; the result is the input with the output area painted."""
    id = "scripted"
    label = "Scripted test engine"

    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.gate = gate
        self.fail = fail

    def generate(self, request, job_id, emit, cancel):
        if self.fail:
            raise RuntimeError("boom")
        out = request.output_rect
        total = request.sampling.steps
        for step in range(1, total + 1):
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    cancel.check()
            cancel.check()
            emit(EngineEvent.progress(job_id, step, total, np.full((out.h, out.w, 3), step, np.uint8), out))
        variants = []
        for i in range(request.sampling.variants):
            image = np.zeros((out.h, out.w, 3), np.uint8)
            image[...] = (10 * (i + 1), 20, 30)
            seed = request.sampling.seed + i
            variants.append(Variant(image, seed, format_parameters(request, seed, self.label)))
        return tuple(variants)


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def make_window(qtbot, settings, engine):
    registry = EngineRegistry()
    registry.register("scripted", "Scripted test engine", lambda: engine)
    window = MainWindow(settings=settings, registry=registry)
    qtbot.addWidget(window)
    index = window.panel.model_combo.findData("scripted")
    window.panel.model_combo.setCurrentIndex(index)
    window.panel.steps_spin.setValue(4)
    window.panel.variants_spin.setValue(2)
    return window


@pytest.fixture
def photo(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


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
    assert not window.state.document.has_mask() and window.state.candidate is None
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
    assert window.state.candidate is None and not window.strip.isVisibleTo(window)
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
    assert window.save_image(out)
    assert not window.has_unsaved_changes() and "*" not in window.windowTitle()
    text = Image.open(out).text["parameters"]
    assert "Seed:" in text and "Mode: fill" in text


def test_paste_and_copy_through_clipboard(qtbot, settings, photo):
    window = make_window(qtbot, settings, ScriptedEngine())
    window.open_image(photo[0])
    window.copy_image()
    window.state.set_document(None)
    window.paste()
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
    window.close()
    again = make_window(qtbot, settings, ScriptedEngine())
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
