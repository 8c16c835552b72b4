"""Styles ▸ Learn a Style… in the main window: the dialog, the training process behind it, and what a
finished run changes (the new style in the Style list, chosen). One training runs at a time; while it holds
the GPU, a generation that needs the GPU is refused with the reason (GenerationSession.blocked)."""
from __future__ import annotations

import weakref
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.core.styles import StyleError, learned_style_entry, read_all_styles, save_user_style
from app.editor.training_jobs import TrainingJob, gpu_conflict
from app.editor.user_folders import learned_styles_folder, user_styles_path
from app.engine.model_ids import server_model
from app.training.progress import TrainingEvent
from app.widgets.learn_style_dialog import LearnStyleDialog

LOCAL_KINDS = ("file", "folder", "repo")
LEARNED_STRENGTH = 50               # the Style strength a just-learned style starts at (%)


class TrainingCommands(QObject):
    run_started = Signal(object)         # the TrainingJob
    run_finished = Signal(object)        # its final TrainingEvent, once the style is added (when done)

    def __init__(self, window) -> None:
        super().__init__(window)
        self._window = weakref.ref(window)      # the window owns this object: a cycle would keep it alive
        self.dialog: LearnStyleDialog | None = None
        self.job: TrainingJob | None = None
        self._settings = None
        window.session.blocked = self.blocks

    @property
    def window(self):
        return self._window()

    def learn_style(self) -> LearnStyleDialog:
        """Open (or bring back) the Learn a Style window."""
        models = [(e.location, e.label) for e in self.window.library.entries() if e.kind in LOCAL_KINDS]
        if self.dialog is not None:
            self.dialog.set_models(models, self.window.panel.selected_model())
        else:
            self.dialog = LearnStyleDialog(models, self.window.panel.selected_model(), learned_styles_folder(),
                                           self.window)
            self.dialog.start_requested.connect(self.start)
            self.dialog.pause_requested.connect(lambda: self.job and self.job.pause())
            self.dialog.resume_requested.connect(lambda: self.job and self.job.resume())
            self.dialog.cancel_requested.connect(lambda: self.job and self.job.cancel())
            self.dialog.use_requested.connect(self.use_style)
        if self.dialog.pages.currentIndex() == 0:
            self.dialog.show_unfinished()
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def start(self, settings) -> None:
        if self.job is not None and self.job.running:
            self.window._show_status(f"Already training {self.job.title}: one training at a time.", True)
            return
        if any(s.name.casefold() == settings.name.casefold() for s in read_all_styles(None).styles):
            self.dialog.problem_label.setText(f"“{settings.name}” is a built-in style's name; choose another.")
            return
        if self.window.session.busy and self._uses_gpu_now(settings.device):
            self.dialog.problem_label.setText("A generation is running on the GPU: start when it has finished.")
            return
        if self._uses_gpu_now(settings.device):
            self._free_editor_model()
        self._settings = settings
        self.job = TrainingJob("style", settings.to_dict(), f"the style “{settings.name}”", self)
        self.job.event.connect(self.dialog.show_event)
        self.job.finished.connect(self._finished)
        combo = self.dialog.model_combo
        index = combo.findData(settings.model)
        self.dialog.show_run(settings, combo.itemText(index) if index >= 0 else Path(settings.model).name)
        self.run_started.emit(self.job)
        self.job.start()

    def _uses_gpu_now(self, device: str) -> bool:
        from app.editor.training_jobs import gpu_of

        return bool(gpu_of(device))

    def _free_editor_model(self) -> None:
        """Training needs the GPU memory the editor's loaded model holds; it loads again at the next Fill."""
        if self.window.session.busy:
            return
        from app.engine.diffusion.model_manager import MODELS

        MODELS.free()

    def _finished(self, event: TrainingEvent) -> None:
        try:
            self._conclude(event)
        finally:
            self.run_finished.emit(event)

    def _conclude(self, event: TrainingEvent) -> None:
        settings = self._settings
        if event.kind != "done":
            self.window._show_status(f"Learning the style “{settings.name}”: {event.message}",
                                     event.kind == "error")
            return
        try:
            save_user_style(user_styles_path(), learned_style_entry(settings.name, settings.trigger, event.path))
        except StyleError as exc:
            self.dialog.status_label.setText(f"The LoRA is at {event.path}, but the style could not be added: {exc}")
            return
        self._reload_styles(select=settings.name)
        self.window._show_status(f"Learned the style “{settings.name}”: chosen in the Style list"
                                 + (f" (it puts “{settings.trigger}” first in the prompt)" if settings.trigger
                                    else ""), False)

    def _reload_styles(self, select: str = "") -> None:
        found = read_all_styles(user_styles_path())
        self.window.session.styles = found.styles
        self.window.panel.set_styles(found.styles, select)

    def use_style(self, name: str) -> None:
        """Choose the learned style in the panel at half strength, ready for a Fill (on the model it was
        learned on, when the classic engine is chosen)."""
        self._reload_styles(select=name)
        panel = self.window.panel
        if panel.selected_library_model() is None and self._settings is not None:   # the classic engine: no style
            index = panel.model_combo.findData(self._settings.model)
            if index >= 0:
                panel.model_combo.setCurrentIndex(index)
        panel.style_strength_slider.setValue(LEARNED_STRENGTH)
        self.window.raise_()
        self.window.activateWindow()

    def blocks(self, request) -> str:
        """Why `request` may not run now ("" when it may): the training holds the GPU it needs."""
        registry = self.window.registry
        local = (request.model.strip() or registry.default_id) not in registry and server_model(request.model) is None
        return gpu_conflict(self.job, request.device, local)

    def shutdown(self) -> None:
        """The window is closing: the training cancels, keeping its checkpoint for a later Resume."""
        if self.job is not None:
            self.job.stop()
