"""The Generate panel on its own: the value sliders, the Advanced group, the model picker's long names and
what the classic engine does not use."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QToolButton

from app.core.styles import read_styles
from app.editor.model_library import ModelEntry
from app.widgets.generate_panel import GeneratePanel

ENGINES = [("classic", "Classic fill (OpenCV Telea)"), ("classic-ns", "Classic fill (OpenCV Navier-Stokes)"),
           ("scripted", "Scripted test engine")]


def long_entries(count: int = 3) -> list[ModelEntry]:
    """Model entries whose labels are 80 characters long, as long file names make them."""
    entries = []
    for i in range(count):
        name = f"photoreal-{i}-merged-inpainting-v{i}.{i}-pruned-emaonly-fp16-final.safetensors"
        label = f"{name} — SDXL inpainting"[:80].ljust(80, "x")
        entries.append(ModelEntry(f"/models/{name}", label, "file"))
    return entries


@pytest.fixture
def panel(qtbot):
    widget = GeneratePanel(read_styles().styles, ENGINES, models=long_entries())
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def choose(panel, model_id):
    combo = panel.model_combo
    combo.setCurrentIndex(combo.findData(model_id))


# -- sliders that show their value ------------------------------------------------------------------------

def test_a_value_slider_shows_its_value_even_when_set_with_signals_blocked(qtbot):
    from app.widgets.generate_panel import ValueSlider

    slider = ValueSlider("{} px", 1, 512)
    qtbot.addWidget(slider)
    slider.setValue(64)
    assert slider.value_label.text() == "64 px"
    slider.blockSignals(True)
    slider.setValue(100)
    slider.blockSignals(False)
    assert slider.value_label.text() == "100 px"
    seen = []
    slider.valueChanged.connect(seen.append)
    slider.show_value(1000)                     # beyond the slider: it sits at its end, the label tells the truth
    assert slider.value() == 512 and slider.value_label.text() == "1000 px" and seen == []
    metrics = slider.value_label.fontMetrics()
    assert slider.value_label.minimumWidth() >= metrics.horizontalAdvance("512 px")


def test_the_style_strength_shows_its_percentage(panel):
    panel.style_combo.setCurrentText("Cinematic")
    panel.style_strength_slider.setValue(35)
    assert panel.style_strength_label.text() == "35 %"


# -- the Advanced group ---------------------------------------------------------------------------------------

def test_rarely_used_settings_sit_in_a_collapsed_advanced_group(panel):
    toggle = panel.findChild(QToolButton, "advancedToggle")
    assert toggle is not None and toggle.isCheckable() and toggle.accessibleName()
    assert not toggle.isChecked() and toggle.arrowType() == Qt.ArrowType.RightArrow
    advanced = [panel.steps_spin, panel.guidance_spin, panel.strength_spin, panel.seed_spin,
                panel.random_seed_check, panel.feather_spin]
    everyday = [panel.prompt_edit, panel.negative_edit, panel.style_combo, panel.model_combo,
                panel.variants_spin, panel.restyle_strength_spin, panel.fill_button, panel.expand_button,
                panel.restyle_button, panel.progress_bar]
    assert not any(widget.isVisible() for widget in advanced)
    assert all(widget.isVisible() for widget in everyday)
    toggle.click()
    assert all(widget.isVisible() for widget in advanced)
    assert toggle.arrowType() == Qt.ArrowType.DownArrow
    assert panel.saved_values().get("advanced", True) is True
    toggle.click()
    assert not any(widget.isVisible() for widget in advanced)
    panel.restore_values({"advanced": True})
    assert toggle.isChecked() and panel.steps_spin.isVisible()


# -- long model names -------------------------------------------------------------------------------------

def test_long_model_names_keep_the_picker_narrow_with_the_full_name_in_the_tooltip(panel):
    combo = panel.model_combo
    entry = long_entries()[1]
    index = combo.findData(entry.location)
    assert entry.label in combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert entry.location in combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    combo.setCurrentIndex(index)
    assert entry.label in combo.toolTip()
    assert combo.currentText() == entry.label and panel.selected_model() == entry.location
    assert combo.minimumSizeHint().width() <= 20 * combo.fontMetrics().averageCharWidth() + 60
    assert combo.sizeHint().width() < combo.fontMetrics().horizontalAdvance(entry.label) / 2
    assert panel.sizeHint().width() <= 40 * panel.fontMetrics().averageCharWidth() + 80


# -- what the classic engine does not use -------------------------------------------------------------------

def test_the_classic_engine_greys_out_the_settings_it_ignores_and_restyle(qtbot, panel):
    panel.style_combo.setCurrentText("Cinematic")
    panel.set_state(can_fill=True, can_expand=True, busy=False, can_restyle=True)
    ignored = [panel.steps_spin, panel.guidance_spin, panel.strength_spin, panel.restyle_strength_spin,
               panel.style_combo, panel.style_strength_slider]
    used = [panel.variants_spin, panel.feather_spin, panel.random_seed_check, panel.fill_button,
            panel.expand_button, panel.prompt_edit]
    for engine in ("classic", "classic-ns"):
        choose(panel, "scripted")
        with qtbot.waitSignal(panel.capabilities_changed, timeout=1000):
            choose(panel, engine)
        assert not panel.engine_can_restyle()
        assert not any(widget.isEnabled() for widget in ignored)
        assert all("classic engine" in widget.toolTip() for widget in ignored)
        assert all(widget.isEnabled() for widget in used)
        assert not panel.restyle_button.isEnabled()
        assert "diffusion model" in panel.restyle_button.toolTip()
    with qtbot.waitSignal(panel.capabilities_changed, timeout=1000):
        choose(panel, "scripted")
    assert panel.engine_can_restyle() and panel.restyle_button.isEnabled()
    assert all(widget.isEnabled() for widget in ignored)
    assert "classic engine" not in panel.steps_spin.toolTip()
    assert panel.strength_spin.toolTip().startswith("Fill: how much")


def test_classic_progress_counts_its_stages_not_steps(panel):
    choose(panel, "classic")
    panel.set_state(can_fill=True, can_expand=False, busy=True)
    panel.set_progress(4, 10)
    assert "step" not in panel.progress_bar.text() and "40" in panel.progress_bar.text()
    panel.set_progress(10, 10)
    panel.set_state(can_fill=True, can_expand=False, busy=False)
    assert "step" not in panel.progress_bar.text() and panel.progress_bar.text().lower().startswith("done")
    choose(panel, "scripted")
    panel.set_state(can_fill=True, can_expand=False, busy=True)
    panel.set_progress(4, 25)
    assert panel.progress_bar.text() == "step 4/25"


def test_the_progress_bar_says_ready_before_any_job(panel):
    assert panel.progress_bar.text() == "Ready"
