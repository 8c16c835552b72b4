"""Models ▸ Get Models… (the welcome page, also shown on first launch) and Models ▸ Manage Models… in the main
window: the dialogs, the download behind the first, and what a finished download changes (the model listed
and chosen in the Model list)."""
from __future__ import annotations

import weakref

from PySide6.QtCore import QObject, Signal

from app.editor.model_downloads import DownloadJob, Installed
from app.editor.recommended_models import (Recommended, find_recommended, is_installed, look_at_machine,
                                           read_recommended, recommend)
from app.engine.events import EngineError
from app.widgets.welcome_dialog import WelcomeDialog


class ModelCommands(QObject):
    downloads_finished = Signal(str, str)      # status, line (as DownloadJob.finished)

    def __init__(self, window, cache_dir=None, endpoint: str | None = None) -> None:
        super().__init__(window)
        self._window = weakref.ref(window)
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.welcome: WelcomeDialog | None = None
        self.manager = None
        self.job: DownloadJob | None = None

    @property
    def window(self):
        return self._window()

    # -- the welcome page ------------------------------------------------------------------------------

    def welcome_if_first_launch(self) -> WelcomeDialog | None:
        """The welcome page, once: on the first launch with no diffusion model listed."""
        window = self.window
        if window.settings.get("welcome/shown") or window.library.entries():
            return None
        window.settings.set("welcome/shown", True)
        return self.get_models()

    def get_models(self) -> WelcomeDialog | None:
        """Open (or bring back) the welcome page."""
        if self.welcome is not None:
            self.welcome.show()
            self.welcome.raise_()
            return self.welcome
        try:
            models = read_recommended()
        except EngineError as exc:
            self.window.show_error(str(exc))
            return None
        machine = look_at_machine(self.cache_dir)
        installed = {m.repo for m in models if is_installed(m, self.cache_dir)}
        dialog = WelcomeDialog(machine, models, recommend(machine, models), installed, self.window)
        dialog.download_requested.connect(self.download)
        dialog.pause_requested.connect(lambda: self.job and self.job.pause())
        dialog.resume_requested.connect(lambda: self.job and self.job.resume())
        dialog.cancel_requested.connect(lambda: self.job and self.job.cancel())
        dialog.server_requested.connect(self.window.servers_dialog)
        dialog.finished.connect(self._welcome_closed)
        self.welcome = dialog
        dialog.show()
        return dialog

    def _welcome_closed(self, _result: int) -> None:
        if self.job is None or not self.job.running:
            self.welcome = None              # reopened fresh (what is installed may have changed)

    def download(self, chosen: list[Recommended]) -> DownloadJob | None:
        if self.job is not None and self.job.running:
            self.window._show_status("A download is running already; one at a time.", True)
            return None
        job = DownloadJob([m.repo for m in chosen], self.window.library, self.cache_dir, self.endpoint, self)
        job.progressed.connect(self._progressed)
        job.one_done.connect(self._one_done)
        job.finished.connect(self._finished)
        self.job = job
        job.start()
        return job

    def _progressed(self, step) -> None:
        if self.welcome is not None and self.job is not None:
            count = len(self.job.repos)
            self.welcome.show_progress(step, min(len(self.job.installed) + 1, count), count)

    def _one_done(self, done: Installed) -> None:
        model = find_recommended(done.repo_id)
        if self.welcome is not None and model is not None:
            self.welcome.show_installed(model.name)
        if done.entry is not None and done.kind == "model":
            self.window._rebuild_models(select=done.entry.location)
            self.window._show_status(f"Downloaded {done.entry.label}: chosen in the Model list.", False)
        elif done.kind == "controlnet":
            self.window._show_status(f"Downloaded the ControlNet {done.repo_id}.", False)

    def _finished(self, status: str, line: str) -> None:
        if self.welcome is not None:
            self.welcome.show_finished(status, line)
        if status == "error":
            self.window.show_error(line)
        elif status != "done":
            self.window._show_status(line, False)
        self.downloads_finished.emit(status, line)

    # -- the manager -----------------------------------------------------------------------------------

    def manage(self):
        from app.core.styles import read_all_styles
        from app.editor.user_folders import user_styles_path
        from app.widgets.model_manager_dialog import open_model_manager

        dialog = open_model_manager(self.window, self.window.library, lambda: read_all_styles(user_styles_path()),
                                    cache_dir=self.cache_dir)
        if dialog is not self.manager:
            dialog.models_changed.connect(lambda: self.window._rebuild_models())
            self.manager = dialog
        return dialog

    def shutdown(self) -> None:
        """The window closes: a running download stops and keeps what arrived, to go on next time."""
        if self.job is not None and self.job.running:
            self.job.stop()
