"""The References section of the Generate panel: adding reference images, their scale and kind, the IP-Adapter
file, what a job takes from it, and the two paths remembered across sessions."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QFileDialog

from app.core.styles import read_styles
from app.editor.stored_settings import SCHEMA, SettingsStore
from app.widgets.generate_panel import GeneratePanel
from app.widgets.references_panel import MAX_REFERENCES, ReferenceRow

ENGINES = [("scripted", "Scripted test engine"), ("classic", "Classic fill (OpenCV Telea)")]
ADAPTER = "/models/ip-adapter_sd15.safetensors"


@pytest.fixture
def panel(qtbot):
    widget = GeneratePanel(read_styles().styles, ENGINES)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def picture(tmp_path):
    pixels = np.zeros((24, 40, 3), np.uint8)
    pixels[:, :20] = (200, 30, 30)
    path = tmp_path / "ref.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def pick_file(monkeypatch, path):
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))


def add(panel, monkeypatch, path):
    pick_file(monkeypatch, path)
    panel.references_panel.toggle.setChecked(True)          # as the user opens the section
    panel.references_panel.add_button.click()


def rows(panel) -> list[ReferenceRow]:
    return panel.references_panel.rows


def test_an_added_reference_is_a_row_and_goes_into_the_job_with_an_adapter(panel, picture, monkeypatch):
    path, pixels = picture
    section = panel.references_panel
    assert not section.paths.isVisible()                    # nothing to ask for until there is a reference
    add(panel, monkeypatch, path)
    assert len(rows(panel)) == 1 and rows(panel)[0].isVisible()
    assert rows(panel)[0].thumbnail.pixmap() is not None and not rows(panel)[0].thumbnail.pixmap().isNull()
    assert section.paths.isVisible()
    pick_file(monkeypatch, ADAPTER)
    section.adapter_button.click()
    assert section.adapter_edit.text() == ADAPTER
    settings = panel.job_settings()
    assert len(settings.references) == 1
    reference = settings.references[0]
    assert np.array_equal(reference.image, pixels)
    assert reference.scale == pytest.approx(0.6) and reference.kind == "general"
    assert settings.ip_adapter == ADAPTER and settings.image_encoder == ""
    assert not section.note_label.isVisible()


def test_scale_and_kind_reach_the_job_and_remove_drops_the_reference(panel, picture, monkeypatch):
    path, _ = picture
    panel.references_panel.set_adapter_path(ADAPTER)
    add(panel, monkeypatch, path)
    add(panel, monkeypatch, path)
    first, second = rows(panel)
    first.scale_slider.setValue(125)
    assert first.scale_slider.value_label.text() == "125 %"
    second.kind_combo.setCurrentIndex(second.kind_combo.findData("style"))
    references = panel.job_settings().references
    assert [(r.scale, r.kind) for r in references] == [(pytest.approx(1.25), "general"),
                                                       (pytest.approx(0.6), "style")]
    first.remove_button.click()
    assert rows(panel) == [second]
    assert [(r.scale, r.kind) for r in panel.job_settings().references] == [(pytest.approx(0.6), "style")]
    second.remove_button.click()
    settings = panel.job_settings()
    assert settings.references == () and settings.ip_adapter == ""
    assert not panel.references_panel.paths.isVisible()


def test_without_an_adapter_the_references_are_left_out_and_the_note_says_so(panel, picture, monkeypatch):
    path, _ = picture
    add(panel, monkeypatch, path)
    note = panel.references_panel.note_label
    assert note.isVisible() and "Pick an IP-Adapter file" in note.text() and "#e06060" in note.text()
    assert "left out" in note.text()
    settings = panel.job_settings()
    assert settings.references == () and settings.ip_adapter == ""
    panel.references_panel.set_adapter_path(ADAPTER)
    assert not note.isVisible() and len(panel.job_settings().references) == 1


def test_the_classic_engine_leaves_the_references_out_and_says_so(panel, picture, monkeypatch):
    path, _ = picture
    panel.references_panel.set_adapter_path(ADAPTER)
    add(panel, monkeypatch, path)
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("classic"))
    assert panel.job_settings().references == ()
    assert "classic" in panel.references_panel.note_label.text()
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("scripted"))
    assert len(panel.job_settings().references) == 1


def test_the_section_is_folded_until_used_and_its_toggle_counts_the_references(panel, picture):
    path, _ = picture
    section = panel.references_panel
    assert not section.toggle.isChecked() and not section.add_button.isVisible()
    assert section.toggle.text() == "References"
    assert section.add_reference_file(path)                 # opens the section to show the new row
    assert section.toggle.isChecked() and section.rows[0].isVisible()
    assert section.toggle.text() == "References (1, left out)"
    section.set_adapter_path(ADAPTER)
    assert section.toggle.text() == "References (1)"
    section.toggle.click()
    assert not section.rows[0].isVisible() and len(panel.job_settings().references) == 1   # folded, still used


def test_a_corrupt_image_is_one_status_line_and_adds_nothing(panel, tmp_path, monkeypatch):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = []
    panel.references_panel.status.connect(lambda text, error: lines.append((text, error)))
    add(panel, monkeypatch, bad)
    assert rows(panel) == []
    assert len(lines) == 1 and lines[0][1] and "broken.png" in lines[0][0] and "\n" not in lines[0][0]
    assert panel.status_label.text() == lines[0][0]


def test_a_cancelled_dialog_adds_nothing_and_at_most_four_fit(panel, picture, monkeypatch):
    path, _ = picture
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    panel.references_panel.add_button.click()
    assert rows(panel) == []
    for _ in range(MAX_REFERENCES):
        add(panel, monkeypatch, path)
    assert len(rows(panel)) == MAX_REFERENCES and not panel.references_panel.add_button.isEnabled()
    assert not panel.references_panel.add_reference_file(path)
    assert len(rows(panel)) == MAX_REFERENCES


def test_a_large_reference_is_kept_small(panel, tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.full((3000, 1500, 3), 90, np.uint8)).save(path)
    assert panel.references_panel.add_reference_file(path)
    image = rows(panel)[0].reference().image
    assert image.shape == (1024, 512, 3)


def test_the_adapter_and_encoder_paths_survive_a_restart(panel, qtbot, tmp_path, monkeypatch):
    assert "panel/ip_adapter" in SCHEMA and "panel/image_encoder" in SCHEMA
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: "/models/image_encoder"))
    panel.references_panel.set_adapter_path(ADAPTER)
    panel.references_panel.encoder_button.click()
    values = panel.saved_values()
    assert values["ip_adapter"] == ADAPTER and values["image_encoder"] == "/models/image_encoder"
    store = SettingsStore(tmp_path / "settings.json")
    for key, value in values.items():
        assert store.set(f"panel/{key}", value), key
    store.save()
    again = GeneratePanel(read_styles().styles, ENGINES)
    qtbot.addWidget(again)
    again.restore_values(SettingsStore(tmp_path / "settings.json").stored("panel/"))
    assert again.references_panel.adapter_path() == ADAPTER
    assert again.references_panel.encoder_path() == "/models/image_encoder"
    assert again.references_panel.rows == []                   # the images themselves are not remembered
