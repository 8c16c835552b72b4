"""The welcome page as a new user meets it: the machine looked at, the models that suit it ticked with their
sizes, one click to download from the (stand-in) Hub with a progress bar, Pause and Cancel, then a Fill with
the model downloaded; a second launch offline uses it without asking again."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app import MainWindow
from app.editor.model_library import ModelLibrary
from app.editor.recommended_models import Machine
from tests.hub_standin import SD15, TAESD, UNET16
from tests.window_fill import assert_kept_far_from_the_mask, fill_a_mask

BIG_DISK = 500 << 30


@pytest.fixture
def cpu_machine(online, monkeypatch):
    machine = Machine("", 0.0, BIG_DISK, str(online))
    monkeypatch.setattr("app.widgets.model_commands.look_at_machine", lambda cache_dir=None: machine)
    return machine


def new_window(qtbot, tmp_path):
    window = MainWindow(settings=tmp_path / "settings.json", library=ModelLibrary(tmp_path / "models.json"))
    qtbot.addWidget(window)
    return window


def test_first_launch_one_click_downloads_and_the_model_fills(qtbot, tmp_path, hub, online, cpu_machine, photo,
                                                               monkeypatch):
    window = new_window(qtbot, tmp_path)
    dialog = window.models.welcome_if_first_launch()
    assert dialog is not None and dialog.isVisible()
    assert "no GPU the editor can use" in dialog.machine_label.text()
    assert [m.name for m in dialog.chosen()] == ["sd15-inpainting", "taesd"]        # what a CPU machine gets
    assert dialog.row("sd15-inpainting").check.text() == "Stable Diffusion 1.5 Inpainting  —  2.1 GB"
    assert dialog.row("controlnet-canny-sd15").details.text().startswith("ControlNet: Keeps the edges")
    assert dialog.server_button.isVisible()
    assert dialog.total_label.text().startswith("2 to download: 2.1 GB;")

    with qtbot.waitSignal(window.models.downloads_finished, timeout=60_000) as finished:
        qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
        assert dialog.progress.isVisible() and dialog.cancel_button.isVisible()
        assert dialog.total_label.text() == "Downloading 2: about 2.1 GB."
    assert finished.args == ["done", f"Downloaded {SD15}, {TAESD}."]
    assert dialog.progress.value() == 1000
    assert dialog.later_button.text() == "Start"
    assert dialog.row("sd15-inpainting").check.text().endswith("installed")
    assert [(e.location, e.label) for e in window.library.entries()] == [(SD15, "Stable Diffusion 1.5 Inpainting")]
    assert window.panel.selected_model() == SD15
    assert all(".fp16." in p for p in hub.fetched(SD15) if p.endswith(".safetensors"))

    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    variant = fill_a_mask(qtbot, window, photo)
    assert_kept_far_from_the_mask(variant, photo[1])
    assert not np.array_equal(variant[12:28, 12:38], photo[1][12:28, 12:38])

    again = new_window(qtbot, tmp_path)                  # the second launch: no welcome, the model listed
    assert again.models.welcome_if_first_launch() is None
    assert again.panel.model_combo.findData(SD15) >= 0


def test_pause_and_cancel_from_the_welcome_page_leave_nothing_listed(qtbot, tmp_path, hub, online, cpu_machine):
    window = new_window(qtbot, tmp_path)
    dialog = window.models.get_models()
    dialog.row("taesd").check.setChecked(False)
    hub.faults.rate = 3_000_000            # a second or two for the model, so the click lands mid-download

    def pause_in_the_unet(step):
        if step.file == UNET16 and dialog.pause_button.text() == "Pause":
            qtbot.mouseClick(dialog.pause_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    window.models.job.progressed.connect(pause_in_the_unet)
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Paused"), timeout=30_000)
    assert dialog.pause_button.text() == "Resume"
    with qtbot.waitSignal(window.models.downloads_finished, timeout=30_000) as finished:
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] == "cancelled"
    assert dialog.status.text() == "Download cancelled; its partial files are removed."
    assert window.library.entries() == []
    assert not list(online.rglob("*.incomplete"))
    assert dialog.download_button.isEnabled()


def test_not_enough_disk_space_is_said_before_anything_starts(qtbot, tmp_path, online, monkeypatch):
    machine = Machine("RTX 4090", 24.0, 1 << 30, str(online))
    monkeypatch.setattr("app.widgets.model_commands.look_at_machine", lambda cache_dir=None: machine)
    window = new_window(qtbot, tmp_path)
    dialog = window.models.get_models()
    assert "sdxl-inpainting" in [m.name for m in dialog.chosen()]                   # the GPU has room for it
    assert dialog.total_label.text().startswith("<b>Not enough disk space:</b> 10.6 GB to download, 1.1 GB free")
    assert not dialog.download_button.isEnabled()
    assert not hasattr(dialog, "server_button")
