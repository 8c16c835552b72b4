"""The generation panel: prompt, style, model, sampling settings, Fill/Expand/Restyle/Cancel and progress."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QPlainTextEdit, QProgressBar, QPushButton, QSlider, QSpinBox, QVBoxLayout,
                               QWidget)

from app.core.styles import Style
from app.editor.job_builder import RESTYLE_STRENGTH, JobSettings
from app.editor.model_library import ModelEntry
from app.editor.stored_settings import value_range

ADD_MODEL = "::add-model"        # item data of the model picker's "Add model…" entry


def _named(widget: QWidget, name: str, accessible: str) -> QWidget:
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    return widget


class GeneratePanel(QWidget):
    fill_requested = Signal()
    expand_requested = Signal()
    restyle_requested = Signal()
    cancel_requested = Signal()
    finish_requested = Signal()         # Stop & keep: end the job now, keeping the current preview
    add_model_requested = Signal()

    def __init__(self, styles: list[Style], engines: list[tuple[str, str]], parent: QWidget | None = None,
                 models: Sequence[ModelEntry] = ()):
        super().__init__(parent)
        self.setObjectName("generatePanel")
        self.prompt_edit = _named(QPlainTextEdit(), "promptEdit", "Prompt")
        self.prompt_edit.setPlaceholderText("Describe what to paint. Empty: continue the surroundings.")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setFixedHeight(80)
        self.negative_edit = _named(QPlainTextEdit(), "negativePromptEdit", "Negative prompt")
        self.negative_edit.setPlaceholderText("What to avoid (optional)")
        self.negative_edit.setTabChangesFocus(True)
        self.negative_edit.setFixedHeight(50)
        self.style_combo = _named(QComboBox(), "styleCombo", "Style")
        self._styles = {style.name: style for style in styles}
        for style in styles:
            self.style_combo.addItem(style.name)
            if style.lora:
                self.style_combo.setItemData(self.style_combo.count() - 1,
                                             f"Uses the LoRA {Path(style.lora).name} at {style.lora_weight:g}",
                                             Qt.ItemDataRole.ToolTipRole)
        self.style_strength_slider = _named(QSlider(Qt.Orientation.Horizontal), "styleStrengthSlider",
                                            "Style strength")
        self.style_strength_slider.setRange(*value_range("panel/style_strength"))
        self.style_strength_slider.setSingleStep(5)
        self.style_strength_slider.setPageStep(25)
        self.style_strength_slider.setValue(100)
        self.style_strength_slider.setToolTip("How much of the style to use: 100 % is the full style, 0 % is "
                                              "no style (its prompt, LoRA and settings are blended in by this)")
        self.style_strength_label = QLabel("100 %")
        self.style_strength_label.setMinimumWidth(40)
        self.style_strength_slider.valueChanged.connect(lambda v: self.style_strength_label.setText(f"{v} %"))
        self.style_combo.currentTextChanged.connect(self._style_chosen)
        self.model_combo = _named(QComboBox(), "modelCombo", "Model")
        self.model_combo.setToolTip("The engine or model that paints; add your own with \"Add model…\"")
        self._configs: dict[str, str] = {}         # library location -> its config folder
        self._model_index = 0                       # the last real choice, restored after "Add model…"
        self.set_models(engines, models)
        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.steps_spin = _named(QSpinBox(), "stepsSpin", "Steps")
        self.steps_spin.setRange(*value_range("panel/steps"))
        self.steps_spin.setValue(25)
        self.guidance_spin = _named(QDoubleSpinBox(), "guidanceSpin", "Guidance scale")
        self.guidance_spin.setRange(*value_range("panel/guidance"))
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setValue(7.0)
        self.strength_spin = _named(QDoubleSpinBox(), "strengthSpin", "Strength")
        self.strength_spin.setRange(*value_range("panel/strength"))
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setValue(1.0)
        self.strength_spin.setToolTip("Fill: how much of the masked area is repainted (1 = all of it)")
        self.restyle_strength_spin = _named(QDoubleSpinBox(), "restyleStrengthSpin", "Restyle strength")
        self.restyle_strength_spin.setRange(*value_range("panel/restyle_strength"))
        self.restyle_strength_spin.setSingleStep(0.05)
        self.restyle_strength_spin.setValue(RESTYLE_STRENGTH)
        self.restyle_strength_spin.setToolTip("Restyle: how much of the image is repainted; lower keeps more of "
                                              "its structure (and runs fewer steps)")
        self.seed_spin = _named(QSpinBox(), "seedSpin", "Seed")
        self.seed_spin.setRange(*value_range("panel/seed"))
        self.random_seed_check = _named(QCheckBox("Random"), "randomSeedCheck", "Random seed")
        self.random_seed_check.setChecked(True)
        self.random_seed_check.toggled.connect(lambda on: self.seed_spin.setEnabled(not on))
        self.seed_spin.setEnabled(False)
        self.variants_spin = _named(QSpinBox(), "variantsSpin", "Number of variants")
        self.variants_spin.setRange(*value_range("panel/variants"))
        self.variants_spin.setValue(3)
        self.feather_spin = _named(QSpinBox(), "featherSpin", "Edge feather in pixels")
        self.feather_spin.setRange(*value_range("panel/feather"))
        self.feather_spin.setValue(8)
        self.feather_spin.setSuffix(" px")

        self.fill_button = _named(QPushButton("Generative Fill"), "fillButton", "Generative Fill")
        self.fill_button.setToolTip("Fill the masked area (Ctrl+Enter)")
        self.expand_button = _named(QPushButton("Expand"), "expandButton", "Expand")
        self.expand_button.setToolTip("Fill the area the canvas was dragged out to (Ctrl+Shift+Enter)")
        self.restyle_button = _named(QPushButton("Restyle"), "restyleButton", "Restyle image")
        self.restyle_button.setToolTip("Repaint the whole image in the chosen style, keeping its structure; "
                                       "needs a diffusion model (Ctrl+Shift+R)")
        self.cancel_button = _named(QPushButton("Cancel"), "cancelButton", "Cancel")
        self.cancel_button.setToolTip("Stop and throw the job away (Esc)")
        self.finish_button = _named(QPushButton("Stop && keep"), "finishButton", "Stop and keep")
        self.finish_button.setToolTip("Stop now and keep the current preview as the result")
        self.progress_bar = _named(QProgressBar(), "progressBar", "Progress")
        self.progress_bar.setValue(0)
        self.status_label = _named(QLabel(""), "statusLabel", "Status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.fill_button.clicked.connect(self.fill_requested)
        self.expand_button.clicked.connect(self.expand_requested)
        self.restyle_button.clicked.connect(self.restyle_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.finish_button.clicked.connect(self.finish_requested)

        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.random_seed_check)
        style_strength_row = QHBoxLayout()
        style_strength_row.addWidget(self.style_strength_slider, 1)
        style_strength_row.addWidget(self.style_strength_label)
        form = QFormLayout()
        form.addRow("Style", self.style_combo)
        form.addRow("Style strength", style_strength_row)
        form.addRow("Model", self.model_combo)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Guidance", self.guidance_spin)
        form.addRow("Fill strength", self.strength_spin)
        form.addRow("Restyle strength", self.restyle_strength_spin)
        form.addRow("Seed", seed_row)
        form.addRow("Variants", self.variants_spin)
        form.addRow("Feather", self.feather_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.fill_button)
        buttons.addWidget(self.expand_button)
        buttons.addWidget(self.restyle_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt_edit)
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative_edit)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        stop_row = QHBoxLayout()
        stop_row.addWidget(self.cancel_button)
        stop_row.addWidget(self.finish_button)
        layout.addLayout(stop_row)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.set_state(can_fill=False, can_expand=False, busy=False)
        self._style_chosen(self.style_combo.currentText())

    def set_state(self, can_fill: bool, can_expand: bool, busy: bool, can_restyle: bool = False) -> None:
        self.fill_button.setEnabled(can_fill and not busy)
        self.expand_button.setEnabled(can_expand and not busy)
        self.restyle_button.setEnabled(can_restyle and not busy)
        self.cancel_button.setEnabled(busy)
        self.finish_button.setEnabled(busy)
        if busy != getattr(self, "_busy", None):
            self._busy = busy
            self._update_progress_format()

    def _style_chosen(self, name: str) -> None:
        """The strength slider means nothing for a style that changes nothing (such as "None")."""
        style = self._styles.get(name)
        plain = style is None or (style.prompt.strip() == "{prompt}" and not style.negative_prompt.strip()
                                  and not style.lora and style.sampler is None and style.steps is None
                                  and style.guidance is None)
        self.style_strength_slider.setEnabled(not plain)

    # -- the model picker ----------------------------------------------------------------------------
    def set_models(self, engines: Sequence[tuple[str, str]], models: Sequence[ModelEntry],
                   select: str | None = None) -> None:
        """Rebuild the picker: built-in engines, the user's models, then "Add model…". Selects `select`
        when listed, otherwise keeps the current choice (or the first engine)."""
        combo = self.model_combo
        wanted = select if select is not None else self.selected_model()
        combo.blockSignals(True)
        combo.clear()
        for engine_id, label in engines:
            combo.addItem(label, engine_id)
        self._configs = {}
        for entry in models:
            combo.addItem(entry.label, entry.location)
            combo.setItemData(combo.count() - 1, entry.location, Qt.ItemDataRole.ToolTipRole)
            self._configs[entry.location] = entry.config
        combo.insertSeparator(combo.count())
        combo.addItem("Add model…", ADD_MODEL)
        index = combo.findData(wanted) if wanted else -1
        self._model_index = index if index >= 0 else 0
        combo.setCurrentIndex(self._model_index)
        combo.blockSignals(False)

    def selected_model(self) -> str:
        """The id or location of the chosen engine or model ("" when the picker is empty)."""
        data = self.model_combo.itemData(self._model_index) if self.model_combo.count() else None
        return data if isinstance(data, str) and data != ADD_MODEL else ""

    def selected_library_model(self) -> str | None:
        """The location of the chosen model when it is one the user added, else None."""
        model = self.selected_model()
        return model if model in self._configs else None

    def _model_chosen(self, index: int) -> None:
        if self.model_combo.itemData(index) == ADD_MODEL:
            self.model_combo.blockSignals(True)
            self.model_combo.setCurrentIndex(self._model_index)
            self.model_combo.blockSignals(False)
            self.add_model_requested.emit()
        elif index >= 0:
            self._model_index = index

    def set_progress(self, step: int, total: int) -> None:
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(step)
        self._update_progress_format()

    def _update_progress_format(self) -> None:
        if getattr(self, "_busy", False):
            self.progress_bar.setFormat("step %v/%m")
        elif 0 < self.progress_bar.value() < self.progress_bar.maximum():
            self.progress_bar.setFormat("stopped at step %v/%m")
        elif self.progress_bar.value() > 0:
            self.progress_bar.setFormat("done: %m steps")
        else:
            self.progress_bar.setFormat("Ready")

    def set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet("color: #e06060;" if error else "")
        self.status_label.setText(text)

    def job_settings(self) -> JobSettings:
        return JobSettings(
            prompt=self.prompt_edit.toPlainText().strip(),
            negative_prompt=self.negative_edit.toPlainText().strip(),
            style=self.style_combo.currentText() or "None",
            style_strength=self.style_strength_slider.value() / 100,
            model=self.selected_model() or "classic",
            model_config=self._configs.get(self.selected_model(), ""),
            steps=self.steps_spin.value(),
            guidance=self.guidance_spin.value(),
            strength=self.strength_spin.value(),
            restyle_strength=self.restyle_strength_spin.value(),
            seed=None if self.random_seed_check.isChecked() else self.seed_spin.value(),
            variants=self.variants_spin.value(),
            feather=self.feather_spin.value(),
        )

    # -- persistence: app/editor/stored_settings.py reads the values back typed and within these widgets' ranges ---
    def saved_values(self) -> dict[str, object]:
        return {"prompt": self.prompt_edit.toPlainText(), "negative": self.negative_edit.toPlainText(),
                "style": self.style_combo.currentText(), "model": self.selected_model(),
                "style_strength": self.style_strength_slider.value(),
                "steps": self.steps_spin.value(), "guidance": self.guidance_spin.value(),
                "strength": self.strength_spin.value(), "restyle_strength": self.restyle_strength_spin.value(),
                "seed": self.seed_spin.value(),
                "random_seed": self.random_seed_check.isChecked(), "variants": self.variants_spin.value(),
                "feather": self.feather_spin.value()}

    def restore_values(self, values: dict[str, object]) -> None:
        """Put back values saved by saved_values (already checked: each of its type and range)."""
        if "prompt" in values:
            self.prompt_edit.setPlainText(values["prompt"])
        if "negative" in values:
            self.negative_edit.setPlainText(values["negative"])
        style_index = self.style_combo.findText(values.get("style", ""))
        if style_index >= 0:
            self.style_combo.setCurrentIndex(style_index)
        model = values.get("model")
        model_index = self.model_combo.findData(model) if model else -1
        if model_index >= 0 and model != ADD_MODEL:        # only a model that is still listed
            self.model_combo.setCurrentIndex(model_index)
        for key, widget in (("steps", self.steps_spin), ("guidance", self.guidance_spin),
                            ("strength", self.strength_spin), ("style_strength", self.style_strength_slider),
                            ("restyle_strength", self.restyle_strength_spin), ("seed", self.seed_spin),
                            ("variants", self.variants_spin), ("feather", self.feather_spin)):
            if key in values:
                widget.setValue(values[key])
        if "random_seed" in values:
            self.random_seed_check.setChecked(values["random_seed"])
