"""Autosave and crash recovery in the editor: work survives a killed process and is offered back once; damaged
recovery data is one line, set aside, and never stops the editor."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import MainWindow
from app.core.geometry import Rect
from app.editor.model_library import ModelLibrary
from tests.test_recovery import DAMAGE, saved_session
from tests.results import accept_result


def window_for(qtbot, tmp_path, delay_ms: int = 20) -> MainWindow:
    window = MainWindow(settings=tmp_path / "settings.json", library=ModelLibrary(tmp_path / "models.json"),
                        recovery_root=tmp_path / "recovery")
    window.autosave._timer.setInterval(delay_ms)
    qtbot.addWidget(window)
    return window


def crash(window: MainWindow) -> Path:
    """What a killed editor leaves: its recovery folder, under a pid that no longer runs."""
    window.autosave.wait()
    window.recovery._release_lock()                                   # a dead process holds no lock
    dead = window.recovery.folder.with_name("999999")
    window.recovery.folder.rename(dead)
    return dead


def paint(window: MainWindow, rect: Rect) -> None:
    mask = window.state.document.mask.copy()
    mask[rect.slices()] = 255
    window.state.set_mask(mask, "Paint mask")


def test_a_change_is_autosaved_and_a_new_editor_offers_it_back_with_its_history(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    assert window.open_image(photo[0])
    assert not window.recovery.folder.exists()                     # nothing unsaved yet: nothing written
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(10, 10, 20, 12))
    paint(window, Rect(40, 30, 8, 8))
    window.state.history.stack.undo()                               # the second stroke is redoable
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        pass
    dead = crash(window)

    asked = []
    again = window_for(qtbot, tmp_path)
    assert again.offer_recovery(lambda text: asked.append(text) or "recover")
    assert "photo.png, 64x48, 1 undo step" in asked[0]
    doc = again.state.document
    np.testing.assert_array_equal(doc.image, photo[1])
    assert doc.mask[10:22, 10:30].all() and not doc.mask[30:38, 40:48].any()
    assert not dead.exists() and again.has_unsaved_changes()
    stack = again.state.history.stack
    stack.redo()
    assert doc.mask[30:38, 40:48].all()
    stack.undo()
    stack.undo()
    assert not doc.mask.any()
    assert not again.offer_recovery(lambda text: "recover")         # offered once
    # The crashed folder became this editor's (renamed, not copied): there was never a moment without it.
    assert (again.recovery.folder / "session.json").is_file()


def test_recovering_when_the_disk_is_full_keeps_the_crashed_copy(qtbot, tmp_path, photo, monkeypatch):
    from app.core import recovery

    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(3, 3, 9, 9))
    crash(window)

    def full(path, array):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(recovery, "_write_array", full)
    again = window_for(qtbot, tmp_path)
    with qtbot.waitSignal(again.autosave.failed, timeout=5000):
        assert again.offer_recovery(lambda text: "recover")
    back = recovery.load(again.recovery.folder)                     # the crashed session is still on disk
    assert back.document.mask[3:12, 3:12].all()


def test_trimming_the_undo_history_keeps_the_recovery_copy(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path, delay_ms=5000)
    window.open_image(photo[0])
    history = window.state.history
    history.budget_bytes, history.min_levels = 40, 1     # every stroke (two 5x5 patches) goes over the budget
    paint(window, Rect(0, 0, 5, 5))
    window.autosave.save_now()
    window.autosave.wait()
    qtbot.wait(50)
    for left in range(10, 60, 10):
        paint(window, Rect(left, 10, 5, 5))                        # each push trims the oldest steps
    assert history.stack.count() < 6
    assert (window.recovery.folder / "session.json").is_file()


def test_not_now_keeps_the_work_for_later_and_discard_deletes_it(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(0, 0, 5, 5))
    dead = crash(window)
    later = window_for(qtbot, tmp_path)
    assert not later.offer_recovery(lambda text: "later") and dead.exists()
    assert not later.offer_recovery(lambda text: "discard") and not dead.exists()


def test_saving_or_closing_removes_the_recovery_copy(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(0, 0, 5, 5))
    assert (window.recovery.folder / "session.json").is_file()
    assert window.save_image(tmp_path / "saved.png")
    qtbot.waitUntil(lambda: not window.recovery.folder.exists(), timeout=5000)
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(20, 20, 5, 5))
    window.close()
    assert not window.recovery.folder.exists()


def test_damaged_recovery_data_is_one_line_and_the_editor_starts_empty(qtbot, tmp_path):
    folder = tmp_path / "recovery" / "999998"
    folder.mkdir(parents=True)
    (folder / "session.json").write_text("{broken")
    window = window_for(qtbot, tmp_path)
    assert not window.offer_recovery(lambda text: pytest.fail("a damaged session must not be offered"))
    assert window.last_error.startswith("Could not recover the last session: the recovery data")
    assert "\n" not in window.last_error and window.state.document is None
    assert not folder.exists() and folder.with_name("999998.damaged").is_dir()      # kept, never offered again
    assert window.last_error.endswith("it was set aside as 999998.damaged.")


def test_damaged_recovery_data_is_reported_beside_other_damaged_files(qtbot, tmp_path):
    (tmp_path / "settings.json").write_text("{broken")
    folder = tmp_path / "recovery" / "999998"
    folder.mkdir(parents=True)
    (folder / "session.json").write_text("{broken")
    window = window_for(qtbot, tmp_path)
    window.offer_recovery(lambda text: pytest.fail("a damaged session must not be offered"))
    line = window.statusBar().currentMessage()
    assert "The settings file settings.json was damaged" in line and "Could not recover the last session" in line
    assert window.recovery.crashed() == []


def test_a_failing_disk_is_reported_and_the_editor_keeps_working(qtbot, tmp_path, photo, monkeypatch):
    from app.core import recovery

    def full(path, array):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(recovery, "_write_array", full)
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    with qtbot.waitSignal(window.autosave.failed, timeout=5000) as failed:
        paint(window, Rect(0, 0, 5, 5))
    assert "No space left on device" in failed.args[0]
    assert window.state.document.mask[0:5, 0:5].all() and window.state.history.stack.canUndo()


WINDOW_DAMAGE = ["saved_at 1e20", "saved_at nan", "label 12", "parameters a dict", "parameters not unicode",
                 "canvas strings", "patch outside", "sizes do not chain", "manifest a folder",
                 "link outside the folder", "header claims 10^12 values"]


@pytest.mark.parametrize("case", WINDOW_DAMAGE)
def test_damaged_recovery_data_is_set_aside_with_one_line_and_never_offered_again(qtbot, tmp_path, case):
    damage, message = DAMAGE[case]
    folder = saved_session(tmp_path / "recovery", 999_997)
    damage(folder)
    window = window_for(qtbot, tmp_path)
    assert not window.offer_recovery(lambda text: pytest.fail("damaged recovery data must not be offered"))
    assert window.last_error.startswith("Could not recover the last session: the recovery data")
    assert message in window.last_error and "\n" not in window.last_error
    assert window.statusBar().currentMessage() == window.last_error
    assert window.state.document is None
    assert not folder.exists() and folder.with_name("999997.damaged").is_dir()
    again = window_for(qtbot, tmp_path)
    assert again.recovery.crashed() == []
    assert not again.offer_recovery(lambda text: pytest.fail("offered again")) and again.last_error == ""


def test_the_editor_starts_when_its_recovery_data_is_damaged(tmp_path):
    """The real launch (app.gui.run_editor): it used to end in an uncaught error and Qt's abort (exit 134)."""
    root = tmp_path / "data" / "LatentCanvas" / "Latent Canvas" / "recovery"
    folder = saved_session(root, 999_996)
    DAMAGE["saved_at 1e20"][0](folder)
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([sys.argv[0]])
QTimer.singleShot(0, app.quit)          # once the window is up and the recovery offer has been made
from app.gui import run_editor
sys.exit(run_editor([]))
"""
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not folder.exists() and folder.with_name("999996.damaged").is_dir()


def test_undoing_a_mask_patch_that_does_not_fit_is_refused_not_a_crash(tmp_path):
    """numpy's error for a patch of the wrong place, raised inside QUndoCommand.undo(), used to kill the
    process (PySide6 6.11 segfaults on it); the change now refuses in Python and the mask is untouched."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
import numpy as np
from PySide6.QtCore import QCoreApplication
from app.core.changes import MaskPatchChange
from app.core.document import Document
from app.core.geometry import Rect
from app.editor.editor_state import EditorState
app = QCoreApplication([])
state = EditorState()
state.document = Document.from_image(np.zeros((40, 60, 3), np.uint8))
patch = np.full((10, 20), 255, np.uint8)
state.history.restore([MaskPatchChange(Rect(50, 35, 20, 10), patch * 0, patch)], 1)
state.history.failed.connect(lambda line: print("refused:", line))
state.history.stack.undo()
print("mask untouched:", not state.document.mask.any())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert "does not fit the 60x40 mask" in result.stdout and "mask untouched: True" in result.stdout


def test_ctrl_z_after_recovering_strokes_at_the_image_edges_works(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    paint(window, Rect(0, 0, 8, 8))
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(56, 40, 8, 8))                            # the bottom right corner
    crash(window)
    again = window_for(qtbot, tmp_path)
    assert again.offer_recovery(lambda text: "recover")
    doc, stack = again.state.document, again.state.history.stack
    stack.undo()
    assert doc.mask[0:8, 0:8].all() and not doc.mask[40:48, 56:64].any()
    stack.undo()
    assert not doc.mask.any()
    stack.redo()
    stack.redo()
    assert doc.mask[40:48, 56:64].all()


def test_a_recovered_result_keeps_its_parameters_and_save_writes_them(qtbot, tmp_path, photo):
    from app.core.imageio import read_parameters

    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    assert accept_result(window.state, 255 - photo[1], "a red door\nSteps: 20, Seed: 7")
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(5, 5, 10, 10))
    crash(window)
    again = window_for(qtbot, tmp_path)
    assert again.offer_recovery(lambda text: "recover")
    assert again.state.document.parameters == "a red door\nSteps: 20, Seed: 7"
    assert again.save_image(tmp_path / "saved.png")
    assert read_parameters(tmp_path / "saved.png") == "a red door\nSteps: 20, Seed: 7"
    again.state.history.stack.undo()
    again.state.history.stack.undo()
    assert again.state.document.parameters == ""
    np.testing.assert_array_equal(again.state.document.image, photo[1])


def test_recover_brings_back_the_panel_settings_of_the_crashed_session(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    panel = window.panel
    panel.prompt_edit.setPlainText("a lighthouse at dusk")
    panel.steps_spin.setValue(37)
    panel.style_combo.setCurrentIndex(2)
    style = panel.style_combo.currentText()
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(5, 5, 10, 10))
    crash(window)                                   # no clean close: the settings file was never written
    again = window_for(qtbot, tmp_path)
    assert again.panel.prompt_edit.toPlainText() == "" and again.panel.steps_spin.value() == 25
    assert again.offer_recovery(lambda text: "recover")
    assert again.panel.prompt_edit.toPlainText() == "a lighthouse at dusk"
    assert again.panel.steps_spin.value() == 37 and again.panel.style_combo.currentText() == style


def test_recovered_layers_come_back_with_their_variants(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    paint(window, Rect(5, 5, 10, 10))
    assert accept_result(window.state, 255 - photo[1], "seed 1", seed=1)
    window.state.set_layer_visible(window.state.document.layers.layers[-1].id, False)
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        paint(window, Rect(20, 20, 4, 4))
    crash(window)
    again = window_for(qtbot, tmp_path)
    assert again.offer_recovery(lambda text: "recover")
    layers = again.state.document.layers.layers
    assert [layer.kind for layer in layers] == ["raster", "generative"] and not layers[1].visible
    np.testing.assert_array_equal(again.state.document.image, photo[1])
    again.state.history.stack.undo()                # the last stroke
    again.state.history.stack.undo()                # shown again
    np.testing.assert_array_equal(again.state.document.image, 255 - photo[1])
