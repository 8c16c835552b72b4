"""Styles ▸ Learn a Style…: pick 3 to 50 images, name the style, start; then watch it learn.

Two pages in one window that does not block the editor: the setup (images, name, trigger word, base model,
preset and its overrides) and the run (progress with step and time left, the loss curve, the latest sample,
Pause / Resume and Cancel). The run itself is a TrainingJob in its own process (app/editor/training_jobs.py).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListView, QListWidget, QListWidgetItem, QProgressBar,
                               QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget)

from app.training.dataset import IMAGE_SUFFIXES, DatasetError, image_files
from app.training.progress import TrainingEvent, describe_seconds
from app.training.style_settings import MAX_IMAGES, MIN_IMAGES, PRESETS, StyleTrainingSettings, file_stem
from app.widgets.loss_curve import LossCurve

SAMPLE_SIDE = 256
THUMBNAIL = 72
TRIGGER_TIP = ("A made-up word the model does not know yet (e.g. 'zkx style'): it is put first in every "
               "caption and in the style's prompt, so the style is called up by it")


def _thumbnail(path: str) -> QIcon:
    """A small picture of the image, decoded at thumbnail size (an empty icon for what Qt cannot read;
    the training reads every image itself and says which it skips)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and size.width() > 0 and size.height() > 0:
        reader.setScaledSize(size.scaled(THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return QIcon(QPixmap.fromImage(image)) if not image.isNull() else QIcon()


class LearnStyleDialog(QDialog):
    start_requested = Signal(object)        # StyleTrainingSettings
    pause_requested = Signal()
    resume_requested = Signal()
    cancel_requested = Signal()
    use_requested = Signal(str)             # the learned style's name

    def __init__(self, models: list[tuple[str, str]], current_model: str, runs_folder: Path,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("learnStyleDialog")
        self.setWindowTitle("Learn a Style")
        self.setModal(False)
        self.runs_folder = runs_folder
        self.pages = QStackedWidget()
        self.pages.addWidget(self._setup_page())
        self.pages.addWidget(self._run_page())
        layout = QVBoxLayout(self)
        layout.addWidget(self.pages)
        self.resize(720, 640)
        self._run_settings: StyleTrainingSettings | None = None
        self.set_models(models, current_model)
        self.show_unfinished()

    # -- setup --------------------------------------------------------------------------------------------

    def _setup_page(self) -> QWidget:
        page = QWidget()
        self.image_list = QListWidget()
        self.image_list.setObjectName("styleImageList")
        self.image_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.image_list.setMinimumHeight(140)
        self.image_list.setViewMode(QListView.ViewMode.IconMode)
        self.image_list.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.image_list.setResizeMode(QListView.ResizeMode.Adjust)
        self.image_list.setMovement(QListView.Movement.Static)
        self.image_list.setSpacing(4)
        self.add_images_button = QPushButton("Add Images…")
        self.add_images_button.clicked.connect(self._choose_images)
        self.remove_images_button = QPushButton("Remove")
        self.remove_images_button.clicked.connect(self._remove_selected)
        self.image_count = QLabel()
        self.image_count.setObjectName("styleImageCount")
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("styleNameEdit")
        self.name_edit.setPlaceholderText("How the style is called in the Style list")
        self.trigger_edit = QLineEdit()
        self.trigger_edit.setObjectName("styleTriggerEdit")
        self.trigger_edit.setPlaceholderText("e.g. zkx style (optional)")
        self.trigger_edit.setToolTip(TRIGGER_TIP)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("styleModelCombo")
        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("stylePresetCombo")
        for name, preset in PRESETS.items():
            self.preset_combo.addItem(f"{name.capitalize()}: {preset.what}", name)
        self.preset_combo.setCurrentIndex(list(PRESETS).index("balanced"))
        self.steps_spin = QSpinBox()
        self.steps_spin.setObjectName("styleStepsSpin")
        self.steps_spin.setRange(0, 100_000)
        self.steps_spin.setSpecialValueText("the preset's")
        self.rank_spin = QSpinBox()
        self.rank_spin.setObjectName("styleRankSpin")
        self.rank_spin.setRange(0, 256)
        self.rank_spin.setSpecialValueText("the preset's")
        self.buckets_check = QCheckBox("Keep each whole picture (aspect-ratio buckets) instead of a centre crop")
        self.prior_check = QCheckBox("Prior preservation: also learn from images the model makes itself, so it "
                                     "keeps what it knew (slower)")
        self.resume_check = QCheckBox()
        self.resume_check.setObjectName("styleResumeCheck")
        self.name_edit.textChanged.connect(self._refresh)
        self.model_combo.currentIndexChanged.connect(self._refresh)
        self.start_button = QPushButton("Start Learning")
        self.start_button.setObjectName("startLearningButton")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self._start)
        self.problem_label = QLabel()
        self.problem_label.setObjectName("styleProblemLabel")
        self.problem_label.setWordWrap(True)
        self.unfinished_combo = QComboBox()
        self.unfinished_combo.setObjectName("unfinishedRunsCombo")
        self.resume_run_button = QPushButton("Resume")
        self.resume_run_button.setObjectName("resumeRunButton")
        self.resume_run_button.setToolTip("Go on from where that run stopped (its images and settings as they were)")
        self.resume_run_button.clicked.connect(self._resume_unfinished)
        self.unfinished_row = QWidget()
        row = QHBoxLayout(self.unfinished_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Unfinished:"))
        row.addWidget(self.unfinished_combo, 1)
        row.addWidget(self.resume_run_button)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_images_button)
        buttons.addWidget(self.remove_images_button)
        buttons.addStretch(1)
        buttons.addWidget(self.image_count)
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Trigger word", self.trigger_edit)
        form.addRow("Base model", self.model_combo)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Rank", self.rank_spin)
        form.addRow("", self.buckets_check)
        form.addRow("", self.prior_check)
        form.addRow("", self.resume_check)
        layout = QVBoxLayout(page)
        layout.addWidget(self.unfinished_row)
        layout.addWidget(QLabel(f"Images of the style ({MIN_IMAGES} to {MAX_IMAGES}; a NAME.txt beside an image "
                                "is its caption):"))
        layout.addWidget(self.image_list, 1)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.problem_label)
        end = QHBoxLayout()
        end.addStretch(1)
        end.addWidget(self.start_button)
        layout.addLayout(end)
        return page

    def set_models(self, models: list[tuple[str, str]], current_model: str) -> None:
        """The base models to learn on (location, label): the chosen one stays, else the editor's current
        model, else the first."""
        keep = self.model_combo.currentData() or current_model
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for location, label in models:
            self.model_combo.addItem(label, location)
        index = self.model_combo.findData(keep)
        self.model_combo.setCurrentIndex(index if index >= 0 else max(0, self.model_combo.findData(current_model)))
        self.model_combo.blockSignals(False)
        self._refresh()

    def add_images(self, paths: list[str]) -> None:
        """Add image files (or the images in folders); ones already listed are not added twice."""
        listed = {self.image_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.image_list.count())}
        try:
            files = [str(path) for path, _ in image_files(paths)]
        except DatasetError as exc:
            self.problem_label.setText(str(exc))
            return
        for path in files:
            if path not in listed:
                item = QListWidgetItem(_thumbnail(path), Path(path).name)
                item.setData(Qt.ItemDataRole.UserRole, path)
                item.setToolTip(path)
                self.image_list.addItem(item)
                listed.add(path)
        self._refresh()

    def show_unfinished(self) -> None:
        """Offer the runs that stopped before their end (cancelled, or the editor went down) to go on."""
        from app.editor.training_jobs import unfinished_style_runs

        self.unfinished_combo.clear()
        for settings, step in unfinished_style_runs(self.runs_folder):
            self.unfinished_combo.addItem(f"“{settings.name}”, at step {step} of {settings.plan.steps}", settings)
        self.unfinished_row.setVisible(self.unfinished_combo.count() > 0)

    def _resume_unfinished(self) -> None:
        settings = self.unfinished_combo.currentData()
        if settings is not None:
            self.start_requested.emit(replace(settings, resume=True))

    def images(self) -> list[str]:
        return [self.image_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.image_list.count())]

    def _choose_images(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        paths, _ = QFileDialog.getOpenFileNames(self, "Images of the style", "", f"Images ({patterns})")
        if paths:
            self.add_images(paths)

    def _remove_selected(self) -> None:
        for item in self.image_list.selectedItems():
            self.image_list.takeItem(self.image_list.row(item))
        self._refresh()

    def run_folder(self) -> Path:
        return self.runs_folder / file_stem(self.name_edit.text() or "style")

    def _checkpoint_step(self) -> int | None:
        from app.training.checkpoints import checkpoint_step

        return checkpoint_step(self.run_folder() / "checkpoint") if self.name_edit.text().strip() else None

    def _refresh(self) -> None:
        count = len(self.images())
        self.image_count.setText(f"{count} image{'s' if count != 1 else ''}")
        problem = ""
        if count < MIN_IMAGES:
            problem = f"Add at least {MIN_IMAGES} images."
        elif count > MAX_IMAGES:
            problem = f"A style learns from at most {MAX_IMAGES} images; remove {count - MAX_IMAGES}."
        elif not self.name_edit.text().strip():
            problem = "Give the style a name."
        elif self.model_combo.count() == 0:
            problem = "Add a Stable Diffusion model first (Models ▸ Add Model…): a style is learned on top of one."
        self.problem_label.setText(problem)
        self.start_button.setEnabled(not problem)
        step = self._checkpoint_step() if not problem else None
        self.resume_check.setVisible(step is not None)
        self.resume_check.setText(f"Go on from the checkpoint at step {step} (an earlier run of this style)")
        self.resume_check.setChecked(step is not None)

    def settings(self) -> StyleTrainingSettings:
        """What the form says; ValueError (one line) if it cannot be trained."""
        return StyleTrainingSettings(
            images=tuple(self.images()), name=self.name_edit.text().strip(), model=self.model_combo.currentData(),
            out=str(self.run_folder()), trigger=self.trigger_edit.text().strip(),
            preset=self.preset_combo.currentData(), steps=self.steps_spin.value() or None,
            rank=self.rank_spin.value() or None, crop="buckets" if self.buckets_check.isChecked() else "centre",
            prior_preservation=self.prior_check.isChecked(),
            resume=self.resume_check.isVisible() and self.resume_check.isChecked())

    def _start(self) -> None:
        try:
            settings = self.settings()
        except ValueError as exc:
            self.problem_label.setText(str(exc))
            return
        self.start_requested.emit(settings)

    # -- the run ------------------------------------------------------------------------------------------

    def _run_page(self) -> QWidget:
        page = QWidget()
        self.run_title = QLabel()
        self.run_title.setObjectName("trainingTitle")
        self.run_title.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainingProgress")
        self.progress.setFormat("Starting…")
        self.curve = LossCurve()
        self.sample_label = QLabel("The first sample appears here")
        self.sample_label.setObjectName("trainingSample")
        self.sample_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.sample_label.setFixedSize(SAMPLE_SIDE, SAMPLE_SIDE)
        self.sample_caption = QLabel()
        self.sample_caption.setWordWrap(True)
        self.sample_caption.setMaximumWidth(SAMPLE_SIDE)
        self.status_label = QLabel()
        self.status_label.setObjectName("trainingStatus")
        self.status_label.setWordWrap(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseTrainingButton")
        self.pause_button.clicked.connect(self._pause_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelTrainingButton")
        self.cancel_button.setToolTip("Stop; the last checkpoint is kept, so the run can go on later")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.use_button = QPushButton("Use This Style")
        self.use_button.setObjectName("useStyleButton")
        self.use_button.clicked.connect(lambda: self.use_requested.emit(self._style_name))
        self.new_button = QPushButton("Learn Another…")
        self.new_button.clicked.connect(self.show_setup)
        self.go_on_button = QPushButton("Resume")
        self.go_on_button.setObjectName("goOnButton")
        self.go_on_button.setToolTip("Go on from the last checkpoint")
        self.go_on_button.clicked.connect(lambda: self.start_requested.emit(replace(self._run_settings, resume=True)))
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        middle = QHBoxLayout()
        middle.addWidget(self.curve, 1)
        sample = QVBoxLayout()
        sample.addWidget(self.sample_label)
        sample.addWidget(self.sample_caption)
        sample.addStretch(1)
        middle.addLayout(sample)
        buttons = QHBoxLayout()
        for button in (self.pause_button, self.cancel_button, self.go_on_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for button in (self.new_button, self.use_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(page)
        layout.addWidget(self.run_title)
        layout.addWidget(self.progress)
        layout.addLayout(middle, 1)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        return page

    def show_setup(self) -> None:
        self.show_unfinished()
        self._refresh()
        self.pages.setCurrentIndex(0)

    def show_run(self, settings: StyleTrainingSettings, model_label: str) -> None:
        self._style_name = settings.name
        self._run_settings = settings
        plan = settings.plan
        self.run_title.setText(f"Learning the style “{settings.name}” from {len(settings.images)} images on "
                               f"{model_label}: rank {plan.rank}, {plan.steps} steps.")
        self.progress.setRange(0, plan.steps)
        self.progress.setValue(0)
        self.progress.setFormat("Starting the training process…")
        self.curve.set_losses([], plan.steps)
        self.sample_label.setPixmap(QPixmap())
        self.sample_label.setText("The first sample appears here")
        self.sample_caption.clear()
        self.status_label.clear()
        self._set_running(True)
        self.pages.setCurrentIndex(1)

    def _set_running(self, running: bool, done: bool = False, resumable: bool = False) -> None:
        self.pause_button.setText("Pause")
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self.go_on_button.setVisible(resumable)
        self.use_button.setVisible(done)
        self.new_button.setVisible(not running)

    def _pause_clicked(self) -> None:
        if self.pause_button.text() == "Pause":
            self.pause_button.setEnabled(False)
            self.pause_requested.emit()
        else:
            self.resume_requested.emit()

    def show_event(self, event: TrainingEvent) -> None:
        """Draw one event of the run."""
        if event.kind == "started":
            self.curve.set_losses(event.losses, event.total)
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.step)
            self.progress.setFormat(f"step {event.step}/{event.total}")
            self.status_label.setText(event.message)
        elif event.kind == "step":
            self.curve.add(event.loss if event.loss is not None else float("nan"), event.total)
            self.progress.setValue(event.step)
            self.progress.setFormat(f"step {event.step}/{event.total} · loss {event.loss:.4f} · "
                                    f"{describe_seconds(event.eta_s)} left")
        elif event.kind == "sample":
            pixmap = QPixmap(event.path)
            if not pixmap.isNull():
                self.sample_label.setPixmap(pixmap.scaled(SAMPLE_SIDE, SAMPLE_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                          Qt.TransformationMode.SmoothTransformation))
            self.sample_caption.setText(f"Sample at step {event.step}: “{event.message}”")
        elif event.kind == "paused":
            self.pause_button.setText("Resume")
            self.pause_button.setEnabled(True)
            self.progress.setFormat(f"Paused at step {event.step}/{event.total} (a checkpoint is saved)")
        elif event.kind == "resumed":
            self.pause_button.setText("Pause")
            self.pause_button.setEnabled(True)
            self.status_label.setText(f"Resumed at step {event.step}.")
        elif event.kind in ("note", "checkpoint"):
            self.status_label.setText(event.message)
        elif event.kind in ("done", "cancelled", "error"):
            from app.training.checkpoints import checkpoint_step

            folder = Path(self._run_settings.out) / "checkpoint"
            resumable = event.kind != "done" and checkpoint_step(folder) is not None
            self._set_running(False, done=event.kind == "done", resumable=resumable)
            self.status_label.setText(event.message)
            if event.kind == "done":
                self.progress.setValue(self.progress.maximum())
                self.progress.setFormat("Done")
            else:
                self.progress.setFormat("Cancelled" if event.kind == "cancelled" else "Stopped by an error")
                self._refresh()
