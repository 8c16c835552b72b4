"""The "Add model" dialog: a model file, a diffusers folder or a Hugging Face repo id, plus an optional
config folder for single files of an unusual family. It only collects text; the window checks and adds."""
from __future__ import annotations

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QVBoxLayout, QWidget)

MODEL_FILE_FILTER = "Model files (*.safetensors *.ckpt *.pt *.bin);;All files (*)"


def _named(widget: QWidget, name: str, accessible: str) -> QWidget:
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    return widget


class AddModelDialog(QDialog):
    def __init__(self, start_dir: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("addModelDialog")
        self.setAccessibleName("Add model")
        self.setWindowTitle("Add model")
        self.start_dir = start_dir
        intro = QLabel("Pick a Stable Diffusion 1.x, 2.x or SDXL model: a single .safetensors file, a "
                       "diffusers folder, or type a Hugging Face repo id such as owner/name (downloaded on "
                       "first use).")
        intro.setWordWrap(True)
        self.location_edit = _named(QLineEdit(), "modelLocationEdit", "Model file, folder or repo id")
        self.location_edit.setPlaceholderText("owner/name, or choose a file or folder")
        self.file_button = _named(QPushButton("File…"), "modelFileButton", "Choose a model file")
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

        self.file_button.clicked.connect(self.choose_file)
        self.folder_button.clicked.connect(self.choose_folder)
        self.config_button.clicked.connect(self.choose_config)
        self.location_edit.textChanged.connect(lambda text: self.ok_button.setEnabled(bool(text.strip())))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        location_row = QHBoxLayout()
        location_row.addWidget(self.location_edit, 1)
        location_row.addWidget(self.file_button)
        location_row.addWidget(self.folder_button)
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_edit, 1)
        config_row.addWidget(self.config_button)
        form = QFormLayout()
        form.addRow("Model", location_row)
        form.addRow("Config", config_row)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.resize(620, self.sizeHint().height())

    def location(self) -> str:
        return self.location_edit.text().strip()

    def config(self) -> str:
        return self.config_edit.text().strip()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", self.start_dir, MODEL_FILE_FILTER)
        if path:
            self.location_edit.setText(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder", self.start_dir)
        if path:
            self.location_edit.setText(path)

    def choose_config(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a diffusers config folder", self.start_dir)
        if path:
            self.config_edit.setText(path)
