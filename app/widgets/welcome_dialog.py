"""The welcome page (first launch, and Models ▸ Get Models… later): what this machine can run, the curated
models with their sizes and needs, and one click to download them with a progress bar, Pause and Cancel.

A view: DownloadJob (app.editor.model_downloads) does the work; ModelCommands wires it to the window."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QScrollArea, QVBoxLayout, QWidget)

from app.editor.recommended_models import KINDS, Machine, Recommended
from app.engine.hub_download import DISK_MARGIN, DownloadProgress, describe_bytes


class ModelRow(QFrame):
    """One recommended model: a tick box with its title, then size, use, needs and licence."""

    def __init__(self, model: Recommended, ticked: bool, installed: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.setObjectName(f"welcomeRow_{model.name}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(1)
        self.check = QCheckBox(f"{model.title}  —  {describe_bytes(model.download_bytes)}")
        self.check.setObjectName(f"welcomeCheck_{model.name}")
        self.check.setChecked(ticked and not installed)
        self.check.setEnabled(not installed)
        if installed:
            self.check.setText(f"{model.title}  —  installed")
        font = self.check.font()
        font.setBold(True)
        self.check.setFont(font)
        layout.addWidget(self.check)
        kind = KINDS[model.kind]
        details = QLabel(f"{kind[:1].upper()}{kind[1:]}: {model.good_for}.<br>"
                         f"Needs {model.needs}. {describe_bytes(model.disk_bytes)} on disk. "
                         f"Licence: <a href=\"{model.licence_url}\">{model.licence}</a>.")
        self.details = details
        details.setWordWrap(True)
        details.setOpenExternalLinks(True)
        details.setContentsMargins(24, 0, 0, 0)
        layout.addWidget(details)

    @property
    def chosen(self) -> bool:
        return self.check.isEnabled() and self.check.isChecked()


class WelcomeDialog(QDialog):
    download_requested = Signal(list)      # the Recommended entries ticked
    pause_requested = Signal()
    resume_requested = Signal()
    cancel_requested = Signal()
    server_requested = Signal()

    def __init__(self, machine: Machine, models: list[Recommended], ticked: list[Recommended],
                 installed: set[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeDialog")
        self.setWindowTitle("Welcome to Latent Canvas")
        self.machine = machine
        self.resize(720, 640)
        layout = QVBoxLayout(self)
        intro = QLabel("<h2>Welcome to Latent Canvas</h2>Generative Fill and Expand paint with a latent diffusion "
                       "model on your own machine. Pick what to download (ticked: what suits this machine); the "
                       "classic engine works without any.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.machine_label = QLabel(f"This machine: {machine.describe()}.")
        self.machine_label.setObjectName("welcomeMachine")
        self.machine_label.setWordWrap(True)
        layout.addWidget(self.machine_label)
        if not machine.gpu_name:
            server = QHBoxLayout()
            hint = QLabel("Without a GPU a fill takes a minute or more. A ComfyUI server on a machine with a GPU "
                          "runs them in seconds.")
            hint.setWordWrap(True)
            server.addWidget(hint, 1)
            self.server_button = QPushButton("Connect a Server…")
            self.server_button.setObjectName("welcomeServerButton")
            self.server_button.clicked.connect(self.server_requested)
            server.addWidget(self.server_button)
            layout.addLayout(server)
        self.rows = [ModelRow(m, m in ticked, m.repo in installed) for m in models]
        holder = QWidget()
        rows = QVBoxLayout(holder)
        for row in self.rows:
            rows.addWidget(row)
            row.check.toggled.connect(self._update_total)
        rows.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        layout.addWidget(scroll, 1)
        self.total_label = QLabel()
        self.total_label.setObjectName("welcomeTotal")
        self.total_label.setWordWrap(True)
        layout.addWidget(self.total_label)
        self.progress = QProgressBar()
        self.progress.setObjectName("welcomeProgress")
        self.progress.setRange(0, 1000)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.status = QLabel()
        self.status.setObjectName("welcomeStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("welcomePauseButton")
        self.pause_button.clicked.connect(self._pause_clicked)
        self.cancel_button = QPushButton("Cancel Download")
        self.cancel_button.setObjectName("welcomeCancelButton")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.later_button = QPushButton("Not Now")
        self.later_button.setObjectName("welcomeLaterButton")
        self.later_button.clicked.connect(self.reject)
        self.download_button = QPushButton("Download Selected")
        self.download_button.setObjectName("welcomeDownloadButton")
        self.download_button.setDefault(True)
        self.download_button.clicked.connect(self._download_clicked)
        for button in (self.pause_button, self.cancel_button, self.later_button, self.download_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self._downloading = False
        self._batch: list[Recommended] = []
        self._paused = False
        self._set_downloading(False)
        self._update_total()

    # -- state -------------------------------------------------------------------------------------------

    def chosen(self) -> list[Recommended]:
        return [row.model for row in self.rows if row.chosen]

    def row(self, name: str) -> ModelRow:
        return next(r for r in self.rows if r.model.name == name)

    def _update_total(self, *_args) -> None:
        chosen = self.chosen()
        total = sum(m.download_bytes for m in chosen)
        left = self.machine.free_disk_bytes - sum(m.disk_bytes for m in chosen)
        if self._downloading:
            size = describe_bytes(sum(m.download_bytes for m in self._batch))
            self.total_label.setText(f"Downloading {len(self._batch)}: about {size}.")
        elif not chosen:
            self.total_label.setText("Nothing ticked.")
        elif left < DISK_MARGIN:
            self.total_label.setText(f"<b>Not enough disk space:</b> {describe_bytes(total)} to download, "
                                     f"{describe_bytes(self.machine.free_disk_bytes)} free in "
                                     f"{self.machine.cache_dir}.")
        else:
            self.total_label.setText(f"{len(chosen)} to download: {describe_bytes(total)}; "
                                     f"{describe_bytes(left)} stays free.")
        self.download_button.setEnabled(bool(chosen) and left >= DISK_MARGIN and not self._downloading)

    def _set_downloading(self, downloading: bool) -> None:
        self._downloading = downloading
        self.progress.setVisible(downloading or self.progress.value() > 0)
        self.pause_button.setVisible(downloading)
        self.cancel_button.setVisible(downloading)
        self.later_button.setText("Close" if downloading else "Not Now")
        for row in self.rows:
            row.check.setEnabled(not downloading and not row.check.text().endswith("installed"))
        self._update_total()

    def _download_clicked(self) -> None:
        chosen = self.chosen()
        if chosen:
            self._paused = False
            self._batch = chosen
            self.pause_button.setText("Pause")
            self._set_downloading(True)
            self.status.setText(f"Asking the Hugging Face hub for {chosen[0].title}…")
            self.download_requested.emit(chosen)

    def _pause_clicked(self) -> None:
        self._paused = not self._paused
        self.pause_button.setText("Resume" if self._paused else "Pause")
        (self.pause_requested if self._paused else self.resume_requested).emit()

    # -- what the job reports ----------------------------------------------------------------------------

    def show_progress(self, step: DownloadProgress, index: int, count: int) -> None:
        fraction = step.done / step.total if step.total else 0.0
        self.progress.setValue(int(fraction * 1000))
        state = "Paused" if step.paused else "Downloading"
        self.status.setText(f"{state} {step.repo_id} ({index} of {count}): {describe_bytes(step.done)} of "
                            f"{describe_bytes(step.total)}{step.pace}")

    def show_installed(self, name: str) -> None:
        row = self.row(name)
        row.check.setChecked(False)
        row.check.setText(f"{row.model.title}  —  installed")
        row.check.setEnabled(False)

    def show_finished(self, status: str, line: str) -> None:
        self._set_downloading(False)
        if status == "done":
            self.progress.setValue(1000)
            self.later_button.setText("Start")
            self.status.setText(f"{line} Paint a mask on a photo and press Generative Fill.")
        else:
            self.status.setText(line)
