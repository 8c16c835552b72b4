"""The editor window's layout as a user sees it: the Generate panel's width with long model names, the view
staying put when the variants strip comes and goes, and progress the classic engine can honestly report."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtWidgets import (QAbstractButton, QAbstractSpinBox, QComboBox, QDockWidget, QLabel, QScrollArea,
                               QSlider, QToolButton, QWidget)

from app import MainWindow
from app.editor import stored_settings
from app.editor.model_library import ModelLibrary
from tests.test_generate_panel import long_entries
from tests.test_main_window import ScriptedEngine, make_window, run_fill


@pytest.fixture
def settings(tmp_path):
    return tmp_path / "settings.json"


def long_names_window(qtbot, settings, size):
    library = ModelLibrary(settings.parent / "models.json")
    for entry in long_entries():
        library.add_checked(entry)
    window = MainWindow(settings=settings, library=library)
    qtbot.addWidget(window)
    window.resize(*size)
    combo = window.panel.model_combo
    combo.setCurrentIndex(combo.findData(long_entries()[2].location))
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(20)
    return window


def assert_nothing_clipped(panel: QWidget, scroll: QScrollArea) -> None:
    assert not scroll.horizontalScrollBar().isVisible()
    assert panel.width() <= scroll.viewport().width()
    kinds = (QAbstractSpinBox, QAbstractButton, QComboBox, QSlider, QLabel, QToolButton)
    for widget in panel.findChildren(QWidget):
        if not isinstance(widget, kinds) or not widget.isVisible() or widget.parent() is None:
            continue
        left = widget.mapTo(panel, widget.rect().topLeft()).x()
        assert left >= 0 and left + widget.width() <= panel.width(), widget.objectName() or widget
        if not (isinstance(widget, QLabel) and widget.wordWrap()):
            assert widget.width() >= widget.minimumSizeHint().width(), widget.objectName() or widget


@pytest.mark.parametrize("size, share", [((1600, 1000), 0.30), ((1024, 700), 0.38)])
def test_long_model_names_neither_widen_nor_clip_the_generate_panel(qtbot, settings, size, share):
    window = long_names_window(qtbot, settings, size)
    panel = window.panel
    scroll = panel.parentWidget().parentWidget()
    assert isinstance(scroll, QScrollArea)
    dock = window.findChild(QDockWidget, "generateDock")
    assert dock.width() <= share * window.width()
    assert_nothing_clipped(panel, scroll)
    panel.findChild(QToolButton, "advancedToggle").click()
    qtbot.wait(20)
    assert dock.width() <= share * window.width()
    assert_nothing_clipped(panel, scroll)


def test_the_advanced_group_stays_open_across_a_restart(qtbot, settings, monkeypatch):
    if "panel/advanced" not in stored_settings.SCHEMA:     # until the settings schema lists it
        monkeypatch.setitem(stored_settings.SCHEMA, "panel/advanced",
                            stored_settings.Setting("panel/advanced", bool, False))
    window = make_window(qtbot, settings, ScriptedEngine())
    toggle = window.panel.findChild(QToolButton, "advancedToggle")
    assert not toggle.isChecked()
    toggle.click()
    window.close()
    again = make_window(qtbot, settings, ScriptedEngine())
    assert again.panel.findChild(QToolButton, "advancedToggle").isChecked()
    assert again.panel.steps_spin.isVisibleTo(again.panel)


def test_the_view_keeps_its_zoom_while_the_variants_strip_comes_and_goes(qtbot, settings, photo, monkeypatch):
    window = make_window(qtbot, settings, ScriptedEngine())
    monkeypatch.setattr(window, "_confirm_discard_changes", lambda: True)   # shown: closing would ask
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    qtbot.wait(20)
    canvas = window.canvas
    zoom, corner = canvas.zoom, canvas.image_to_widget(0, 0)
    zooms = []
    canvas.zoom_changed.connect(zooms.append)
    run_fill(qtbot, window)
    qtbot.wait(20)
    assert window.strip.list.isVisible()
    assert canvas.zoom == zoom and canvas.image_to_widget(0, 0) == corner
    window.session.discard()
    qtbot.wait(20)
    assert not window.strip.list.isVisible() and window.strip.hint.isVisible()
    assert canvas.zoom == zoom and canvas.image_to_widget(0, 0) == corner
    assert zooms == []


def test_a_classic_fill_never_reports_steps_it_does_not_take(qtbot, settings, photo):
    window = MainWindow(settings=settings)
    qtbot.addWidget(window)
    window.panel.steps_spin.setValue(25)
    window.open_image(photo[0])
    window.state.set_mask(np.pad(np.full((16, 16), 255, np.uint8), ((16, 16), (24, 24))), "Paint")
    texts = []
    window.session.progress.connect(lambda *_: texts.append(window.panel.progress_bar.text()))
    with qtbot.waitSignal(window.session.variants_ready, timeout=20000, check_params_cb=lambda v: len(v) > 0):
        window.fill()
    texts.append(window.panel.progress_bar.text())
    assert len(texts) > 3 and not any("step" in text for text in texts)
    assert texts[-1].lower().startswith("done")
    parameters = window.session.variants[0].parameters
    assert "Steps" not in parameters and "CFG" not in parameters and "Seed:" in parameters
