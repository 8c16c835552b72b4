"""Styles ▸ Learn a Style… driven like a user: four images, a name, Start; the run in its own process with
its loss curve and samples; the new style in the Style list, used in a Fill at 50 %. Also the window's
refusals (too few images, a built-in name) and a training that holds the GPU refusing a Fill with why."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app import MainWindow
from app.editor.model_library import ModelLibrary
from app.editor.training_jobs import TrainingJob, gpu_conflict
from app.editor.user_folders import user_styles_path
from app.training.progress import TrainingEvent
from tests.test_style_training import style_images
from tests.window_fill import assert_kept_far_from_the_mask, fill_a_mask

pytest.importorskip("peft")


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A config folder of this test's own: learned styles do not leak into other tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def window_with_model(qtbot, tmp_path, tiny_models):
    library = ModelLibrary(tmp_path / "models.json")
    model = str(tiny_models.path("sd15", True, "folder"))
    library.add(model)
    window = MainWindow(settings=tmp_path / "settings.json", library=library)
    qtbot.addWidget(window)
    window.panel.model_combo.setCurrentIndex(window.panel.model_combo.findData(model))
    return window, model


def test_learn_a_style_watch_it_and_fill_with_it_at_half_strength(qtbot, tmp_path, tiny_models, config, photo):
    window, model = window_with_model(qtbot, tmp_path, tiny_models)
    window.action_set["learn_style"].trigger()
    dialog = window.training.dialog
    assert dialog.isVisible() and not dialog.isModal()
    assert dialog.model_combo.currentData() == model
    assert not dialog.start_button.isEnabled() and "at least 3" in dialog.problem_label.text()
    dialog.add_images(style_images(tmp_path / "images"))
    dialog.name_edit.setText("Ink Wash Mine")
    dialog.trigger_edit.setText("zkx")
    dialog.steps_spin.setValue(12)
    assert dialog.start_button.isEnabled() and dialog.image_count.text() == "4 images"
    events = []
    window.training.run_started.connect(lambda job: job.event.connect(events.append))
    with qtbot.waitSignal(window.training.run_finished, timeout=180_000) as blocker:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    done = blocker.args[0]
    assert done.kind == "done", done.message
    assert dialog.pages.currentIndex() == 1
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 13))
    assert len(dialog.curve.losses) == 12 and dialog.progress.value() == 12
    assert not dialog.sample_label.pixmap().isNull()          # the sample at the last step
    assert "Ink Wash Mine" in window.panel._styles
    assert window.panel.style_combo.currentText() == "Ink Wash Mine"
    stored = json.loads(user_styles_path().read_text())
    assert stored == [{"name": "Ink Wash Mine", "prompt": "zkx, {prompt}", "lora": done.path, "lora_weight": 1.0}]

    window.panel.model_combo.setCurrentIndex(0)                # the classic engine, which uses no style
    qtbot.mouseClick(dialog.use_button, Qt.MouseButton.LeftButton)
    assert window.panel.style_strength_slider.value() == 50
    assert window.panel.selected_model() == model              # the model the style was learned on
    variant = fill_a_mask(qtbot, window, photo)
    request = window.session.request
    assert request.style.name == "Ink Wash Mine" and request.style.strength == 0.5
    assert request.style.lora == done.path and request.style.effective_lora_weight == 0.5
    assert "zkx" in request.prompt
    assert_kept_far_from_the_mask(variant, photo[1])


def test_a_built_in_name_is_refused_and_nothing_starts(qtbot, tmp_path, tiny_models, config):
    window, _ = window_with_model(qtbot, tmp_path, tiny_models)
    dialog = window.training.learn_style()
    dialog.add_images(style_images(tmp_path / "images"))
    dialog.name_edit.setText("watercolor")
    dialog.start_button.click()
    assert "built-in style" in dialog.problem_label.text()
    assert window.training.job is None and dialog.pages.currentIndex() == 0


def test_a_checkpoint_of_an_earlier_run_is_offered_to_resume(qtbot, tmp_path, tiny_models, config):
    from app.training.checkpoints import save_checkpoint

    import torch

    window, _ = window_with_model(qtbot, tmp_path, tiny_models)
    dialog = window.training.learn_style()
    dialog.add_images(style_images(tmp_path / "images"))
    save_checkpoint(dialog.runs_folder / "Mine" / "checkpoint", 40, {"x": torch.zeros(1)}, {})
    dialog.name_edit.setText("Mine")
    assert dialog.resume_check.isVisibleTo(dialog) and dialog.resume_check.isChecked()
    assert "step 40" in dialog.resume_check.text()
    assert dialog.settings().resume
    dialog.name_edit.setText("Other")
    assert not dialog.resume_check.isVisibleTo(dialog) and not dialog.settings().resume


class HeldJob(TrainingJob):
    """A training that holds the GPU (no process: `running` is what the window asks)."""

    def __init__(self):
        super().__init__("style", {"out": "unused", "device": "cuda"}, "the style “Ink”")
        self.step, self.total = 120, 800

    @property
    def running(self) -> bool:
        return True

    def stop(self, wait_ms: int = 0) -> None:
        pass


def test_a_training_on_the_gpu_refuses_a_gpu_fill_with_the_reason(qtbot, tmp_path, tiny_models, config, photo,
                                                                  monkeypatch):
    from app.editor import training_jobs

    monkeypatch.setattr(training_jobs, "gpu_of", lambda device: "" if device == "cpu" else "cuda")  # a GPU here
    window, _ = window_with_model(qtbot, tmp_path, tiny_models)
    window.training.job = HeldJob()
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    assert not window.session.fill(window.panel.job_settings())
    assert window.last_error.startswith("The GPU is busy training the style “Ink” (step 120/800). Wait for it")
    assert not window.session.busy
    assert gpu_conflict(window.training.job, "cpu", True) == ""          # a CPU fill may run beside it
    assert gpu_conflict(window.training.job, "cuda", False) == ""        # a server or classic fill too


def test_a_process_that_dies_is_one_final_error(qtbot, tmp_path):
    job = TrainingJob("style", {"out": str(tmp_path / "run"), "images": [], "name": "x", "model": "m",
                                "device": "cpu"}, "the style “x”")
    with qtbot.waitSignal(job.finished, timeout=60_000) as blocker:
        job.start()
    job.stop()
    event: TrainingEvent = blocker.args[0]
    assert event.kind == "error" and "\n" not in event.message
    assert event.message.startswith("the training's settings are not usable: no images given")


def test_cancel_keeps_the_checkpoint_and_resume_goes_on_to_the_end(qtbot, tmp_path, tiny_models, config):
    window, _ = window_with_model(qtbot, tmp_path, tiny_models)
    dialog = window.training.learn_style()
    dialog.add_images(style_images(tmp_path / "images"))
    dialog.name_edit.setText("Halfway")
    dialog.steps_spin.setValue(30)
    jobs = []
    window.training.run_started.connect(jobs.append)
    window.training.run_started.connect(lambda job: job.event.connect(
        lambda e: job.cancel() if e.kind == "step" and e.step == 3 else None))
    with qtbot.waitSignal(window.training.run_finished, timeout=120_000) as blocker:
        dialog.start_button.click()
    cancelled = blocker.args[0]
    assert cancelled.kind == "cancelled" and "the checkpoint is kept" in cancelled.message
    assert dialog.go_on_button.isVisibleTo(dialog) and not dialog.use_button.isVisibleTo(dialog)
    assert "Halfway" not in window.panel._styles
    window.training.run_started.disconnect()
    window.training.run_started.connect(jobs.append)
    with qtbot.waitSignal(window.training.run_finished, timeout=180_000) as blocker:
        dialog.go_on_button.click()
    assert blocker.args[0].kind == "done", blocker.args[0].message
    assert jobs[1].settings["resume"] and "Halfway" in window.panel._styles


def test_a_run_the_editor_lost_is_offered_on_the_next_open(qtbot, tmp_path, tiny_models, config):
    from app.editor.user_folders import learned_styles_folder
    from app.training.progress import Control
    from app.training.style_lora import train_style
    from tests.test_style_training import settings

    s = settings(tiny_models, tmp_path, out=str(learned_styles_folder() / "Lost"), name="Lost", steps=12,
                 sample_every=0)
    (learned_styles_folder() / "Lost").mkdir(parents=True)
    (learned_styles_folder() / "Lost" / "job.json").write_text(json.dumps({"kind": "style", "settings": s.to_dict()}))
    control = Control()
    train_style(s, lambda e: control.cancel() if e.kind == "step" and e.step == 5 else None, control)
    window, _ = window_with_model(qtbot, tmp_path, tiny_models)
    dialog = window.training.learn_style()
    assert dialog.unfinished_row.isVisibleTo(dialog)
    assert dialog.unfinished_combo.currentText() == "“Lost”, at step 5 of 12"
    events = []
    window.training.run_started.connect(lambda job: job.event.connect(events.append))
    with qtbot.waitSignal(window.training.run_finished, timeout=120_000) as blocker:
        dialog.resume_run_button.click()
    assert blocker.args[0].kind == "done", blocker.args[0].message
    assert next(e for e in events if e.kind == "started").step == 5
    assert [e.step for e in events if e.kind == "step"] == list(range(6, 13))
