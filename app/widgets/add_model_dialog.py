"""The "Add model" dialog: a model file, a diffusers folder or a Hugging Face repo id, plus an optional
config folder for single files of an unusual family.

Given a `check` (text, config -> the entry to add; EngineError when the model cannot be used), OK runs it on a
background thread: a model it refuses keeps the dialog open with the one line it gives, so that the user can
fix what it names (often: give the file's config folder); one it accepts closes the dialog, and `entry`
holds what it returned. Without a check the dialog only collects text and the window checks and adds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QVBoxLayout, QWidget)

from app.editor.background import BackgroundCall
from app.engine.events import EngineError
from app.widgets.widget_tools import named as _named

log = logging.getLogger(__name__)
MODEL_FILE_FILTER = "Model files (*.safetensors *.ckpt *.pt *.bin);;All files (*)"




def run_check(check: Callable[[str, str], object], location: str, config: str,
              generation: int, what: str = "model") -> tuple[int, object | None, str]:
    """On the worker thread: (generation, `check`'s entry or None, "" or the one line it refused with). Not a
    method of the dialog, whose last reference could then be this thread's (a Qt object must not be deleted
    here)."""
    try:
        return generation, check(location, config), ""
    except EngineError as exc:
        return generation, None, " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 - a bug must not take the dialog down: one line, logged
        log.error("checking a %s failed", what, exc_info=exc)
        line = " ".join(str(exc).split())
        return generation, None, f"Could not check the {what}: internal error ({type(exc).__name__}: {line})"


class AddModelDialog(QDialog):
    WHAT = "model"                      # what is checked, in messages
    TITLE = "Add model"
    NAME = "addModelDialog"
    INTRO = ("Pick a Stable Diffusion 1.x, 2.x or SDXL model: a single .safetensors file, a diffusers folder, or "
             "type a Hugging Face repo id such as owner/name (downloaded on first use), or "
             "CHECKPOINT@HOST:PORT for a checkpoint on a ComfyUI server.")
    FILE_FILTER = MODEL_FILE_FILTER
    FOLDER_TITLE = "Choose a diffusers model folder"
    WITH_CONFIG = True                  # the optional config folder row

    def __init__(self, start_dir: str, parent: QWidget | None = None,
                 check: Callable[[str, str], object] | None = None) -> None:
        super().__init__(parent)
        self.entry: object | None = None          # what `check` returned for the model accepted
        self._check = check
        self._generation = 0                       # the check whose outcome counts; an edit starts a new one
        self.setObjectName(self.NAME)
        self.setAccessibleName(self.TITLE)
        self.setWindowTitle(self.TITLE)
        self.start_dir = start_dir
        intro = QLabel(self.INTRO)
        intro.setWordWrap(True)
        what = self.WHAT[:1].upper() + self.WHAT[1:]          # "Model", "ControlNet"
        self.location_edit = _named(QLineEdit(), "modelLocationEdit", f"{what} file, folder or repo id")
        self.location_edit.setPlaceholderText("owner/name, or choose a file or folder")
        self.file_button = _named(QPushButton("File…"), "modelFileButton", f"Choose a {self.WHAT} file")
        self.folder_button = _named(QPushButton("Folder…"), "modelFolderButton", "Choose a diffusers folder")
        self.config_edit = _named(QLineEdit(), "modelConfigEdit", "Config folder")
        self.config_edit.setPlaceholderText("optional, single files only: a diffusers config folder")
        self.config_edit.setToolTip("Only for a single file whose family is unusual; normally left empty")
        self.config_button = _named(QPushButton("Browse…"), "modelConfigButton", "Choose a config folder")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setObjectName("addModelOkButton")
        self.ok_button.setEnabled(False)
        self.check_label = _named(QLabel(""), "addModelCheckLabel", f"{what} check")
        self.check_label.setWordWrap(True)
        self.check_label.hide()

        self.file_button.clicked.connect(self.choose_file)
        self.folder_button.clicked.connect(self.choose_folder)
        self.config_button.clicked.connect(self.choose_config)
        self.location_edit.textChanged.connect(self._edited)
        self.config_edit.textChanged.connect(self._edited)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        location_row = QHBoxLayout()
        location_row.addWidget(self.location_edit, 1)
        location_row.addWidget(self.file_button)
        location_row.addWidget(self.folder_button)
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_edit, 1)
        config_row.addWidget(self.config_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        if self.WITH_CONFIG:
            form = QFormLayout()
            form.addRow("Model", location_row)
            form.addRow("Config", config_row)
            layout.addLayout(form)
        else:
            for widget in (self.config_edit, self.config_button):
                widget.setParent(self)
                widget.hide()
            layout.addLayout(location_row)
        layout.addWidget(self.check_label)
        layout.addWidget(self.buttons)
        self.resize(620, self.sizeHint().height())

    def location(self) -> str:
        return self.location_edit.text().strip()

    def config(self) -> str:
        return self.config_edit.text().strip()

    def problem(self) -> str:
        """The line the last check refused the model with ("" when none did)."""
        return self.check_label.text() if self.check_label.property("problem") else ""

    def checking(self) -> bool:
        """True while the model typed last is being checked."""
        return bool(self.check_label.property("checking"))

    def accept(self) -> None:
        if self._check is None or not self.location():
            super().accept()
            return
        self._generation += 1
        name = Path(self.location()).name or self.location()
        self._say(f"Checking {name}…", checking=True)
        self.ok_button.setEnabled(False)
        call = BackgroundCall(run_check, self._check, self.location(), self.config(), self._generation, self.WHAT,
                              parent=self)
        call.finished.connect(self._checked)
        call.start()

    def _checked(self, outcome: tuple[int, object | None, str] | None, error: Exception | None) -> None:
        if outcome is None:                        # _run_check itself failed
            outcome = (self._generation, None, f"Could not check the {self.WHAT}: internal error ({error!r})")
        if outcome[0] != self._generation or not self.isVisible():
            return                                 # an earlier check, or the dialog was closed meanwhile
        _generation, entry, problem = outcome
        if problem:
            self._say(problem, problem=True)
            self.ok_button.setEnabled(bool(self.location()))
            return
        self.entry = entry
        super().accept()

    def _edited(self, *_args) -> None:
        if self.check_label.property("checking"):
            self._generation += 1                  # the running check is of text that is no longer there
        if self.check_label.isVisible():
            self._say("")
        self.ok_button.setEnabled(bool(self.location()))

    def _say(self, text: str, checking: bool = False, problem: bool = False) -> None:
        self.check_label.setText(text)
        self.check_label.setProperty("checking", checking)
        self.check_label.setProperty("problem", problem)
        self.check_label.setVisible(bool(text))
        self.check_label.setAccessibleDescription(text)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Choose a {self.WHAT} file", self.start_dir, self.FILE_FILTER)
        if path:
            self.location_edit.setText(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.FOLDER_TITLE, self.start_dir)
        if path:
            self.location_edit.setText(path)

    def choose_config(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers config folder", self.start_dir)
        if path:
            self.config_edit.setText(path)
