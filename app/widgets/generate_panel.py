"""The generation panel: prompt, style, model, sampling settings, Fill/Expand/Restyle/Cancel and progress.

It stays narrow whatever the model names (the pickers elide them, the tooltips hold them in full), keeps the
rarely changed settings in a collapsed "Advanced" group, and greys out what the chosen engine does not use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QAbstractSlider, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                               QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QMainWindow, QSlider, QSpinBox, QStyle, QStyleOptionComboBox, QStylePainter,
                               QToolButton, QVBoxLayout, QWidget)

from app.core.styles import Style
from app.editor.job_builder import RESTYLE_STRENGTH, JobSettings
from app.editor.model_library import ModelEntry, controlnet_for
from app.editor.stored_settings import SCHEMA, value_range
from app.engine.classic import ENGINE_IDS as CLASSIC_ENGINES
from app.engine.classic import RESTYLE_NEEDS_DIFFUSION
from app.widgets.references_panel import ReferencesPanel
from app.widgets.widget_tools import named as _named

ADD_MODEL = "::add-model"        # item data of the model picker's "Add model…" entry
PANEL_CHARS = 40                 # the panel's preferred width, in average characters
PICKER_CHARS = 16                # what a picker needs at least, in characters; longer names are elided
MODEL_TIP = "The engine or model that paints; add your own with \"Add model…\""
CLASSIC_IGNORES = ("Not used by the classic engine: it continues the surroundings with OpenCV. Pick a "
                   "diffusion model in Model to use it.")
CLASSIC_PROMPT = ("The classic engine reads no prompt: it continues the surroundings. Pick a diffusion model "
                  "in Model to describe what to paint.")
PROMPT_HINT = "Describe what to paint. Empty: continue the surroundings."
KEEP_STRUCTURE_TIP = "Restyle keeps the composition with a canny ControlNet, so strength 0.8 still keeps the layout"




class ValueSlider(QSlider):
    """A horizontal slider with a label (`value_label`, placed by its owner) that shows its value as text,
    e.g. "{} px": kept current however the value is set, signals blocked or not."""

    def __init__(self, text: str, low: int, high: int, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self._text = text
        self.value_label = QLabel()
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setRange(low, high)
        metrics = self.value_label.fontMetrics()
        self.value_label.setMinimumWidth(max(metrics.horizontalAdvance(text.format(v)) for v in (low, high)) + 4)
        self.value_label.setText(text.format(self.value()))

    def show_value(self, value: int) -> None:
        """Show `value`, which may lie beyond the range (the slider then sits at its end), without emitting
        valueChanged."""
        blocked = self.blockSignals(True)
        self.setValue(value)
        self.blockSignals(blocked)
        self.value_label.setText(self._text.format(value))

    def sliderChange(self, change: QAbstractSlider.SliderChange) -> None:
        super().sliderChange(change)
        if change == QAbstractSlider.SliderChange.SliderValueChange:
            self.value_label.setText(self._text.format(self.value()))


class ElidingCombo(QComboBox):
    """A picker as narrow as PICKER_CHARS that shows a longer current name elided in the middle (the list
    elides its entries the same way; each entry's tooltip has it in full)."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(PICKER_CHARS)
        self.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def paintEvent(self, event) -> None:
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        option.currentText = self.fontMetrics().elidedText(option.currentText, Qt.TextElideMode.ElideMiddle,
                                                           field.width() - 4)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)


class GeneratePanel(QWidget):
    fill_requested = Signal()
    expand_requested = Signal()
    restyle_requested = Signal()
    cancel_requested = Signal()
    finish_requested = Signal()         # Stop & keep: end the job now, keeping the current preview
    add_model_requested = Signal()
    capabilities_changed = Signal()     # the chosen engine changed what it uses (see engine_can_restyle)

    def __init__(self, styles: list[Style], engines: list[tuple[str, str]], parent: QWidget | None = None,
                 models: Sequence[ModelEntry] = ()):
        super().__init__(parent)
        self.setObjectName("generatePanel")
        self.prompt_edit = _named(QPlainTextEdit(), "promptEdit", "Prompt")
        self.prompt_edit.setPlaceholderText(PROMPT_HINT)
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setFixedHeight(80)
        self.negative_edit = _named(QPlainTextEdit(), "negativePromptEdit", "Negative prompt")
        self.negative_edit.setPlaceholderText("What to avoid (optional)")
        self.negative_edit.setTabChangesFocus(True)
        self.negative_edit.setFixedHeight(50)
        self.style_combo = _named(ElidingCombo(), "styleCombo", "Style")
        self._styles: dict[str, Style] = {}
        self._fill_styles(styles)
        self.style_strength_slider = _named(ValueSlider("{} %", *value_range("panel/style_strength")),
                                            "styleStrengthSlider", "Style strength")
        self.style_strength_slider.setSingleStep(5)
        self.style_strength_slider.setPageStep(25)
        self.style_strength_slider.setValue(100)
        self.style_strength_slider.setToolTip("How much of the style to use: 100 % is the full style, 0 % is "
                                              "no style (its prompt, LoRA and settings are blended in by this)")
        self.style_strength_label = self.style_strength_slider.value_label
        self.style_combo.currentTextChanged.connect(self._style_chosen)
        self.model_combo = _named(ElidingCombo(), "modelCombo", "Model")
        self.model_combo.setToolTip(MODEL_TIP)
        self._configs: dict[str, str] = {}         # library location -> its config folder
        self._model_index = 0                       # the last real choice, restored after "Add model…"
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
        self.keep_structure_check = _named(QCheckBox("Keep structure"), "keepStructureCheck", "Keep structure")
        self.keep_structure_check.setToolTip(KEEP_STRUCTURE_TIP)
        self.keep_structure_check.toggled.connect(self._keep_structure_toggled)
        self._controlnets: list[ModelEntry] = []    # the library's, for Keep structure's default
        self._families: dict[str, str] = {}         # library location -> its family ("sd1", "sdxl", ...)
        self._keep_structure_chosen = False         # the user set Keep structure: no default overrides it
        self._defaulting = False
        self.advanced_toggle = _named(QToolButton(), "advancedToggle", "Advanced settings")
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setAutoRaise(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setToolTip("Steps, guidance, fill strength, seed and feather")
        self.advanced_frame = QFrame()
        self.advanced_frame.setObjectName("advancedFrame")
        self.advanced_toggle.toggled.connect(self._show_advanced)

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
        self.finish_button.setToolTip("Stop now and keep the current preview as the result (on a ComfyUI server: "
                                      "keep the variants already finished)")
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
        self._unused_by_classic = (self.style_combo, self.style_strength_slider, self.steps_spin,
                                   self.guidance_spin, self.strength_spin, self.restyle_strength_spin,
                                   self.keep_structure_check)
        self._tooltips = {widget: widget.toolTip() for widget in
                          (*self._unused_by_classic, self.restyle_button, self.prompt_edit)}
        self._classic: bool | None = None           # whether the chosen engine is the classic one
        self._job_classic = False                   # ... and whether the running job's was
        self._can_restyle = False
        self._busy = False
        self.references_panel = ReferencesPanel()       # IP-Adapter reference images
        self.references_panel.status.connect(self._reference_status)
        self._build_layout()
        self.set_models(engines, models)
        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.set_state(can_fill=False, can_expand=False, busy=False)
        self._style_chosen(self.style_combo.currentText())
        self._show_advanced(False)
        self._update_progress_format()

    def _build_layout(self) -> None:
        style_strength_row = QHBoxLayout()
        style_strength_row.addWidget(self.style_strength_slider, 1)
        style_strength_row.addWidget(self.style_strength_label)
        form = QFormLayout()
        form.addRow("Style", self.style_combo)
        form.addRow("Style strength", style_strength_row)
        form.addRow("Model", self.model_combo)
        form.addRow("Variants", self.variants_spin)
        form.addRow("Restyle strength", self.restyle_strength_spin)
        form.addRow("", self.keep_structure_check)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.random_seed_check)
        advanced = QFormLayout(self.advanced_frame)
        advanced.setContentsMargins(0, 0, 0, 0)
        advanced.addRow("Steps", self.steps_spin)
        advanced.addRow("Guidance", self.guidance_spin)
        advanced.addRow("Fill strength", self.strength_spin)
        advanced.addRow("Seed", seed_row)
        advanced.addRow("Feather", self.feather_spin)
        buttons = QGridLayout()
        buttons.addWidget(self.fill_button, 0, 0, 1, 2)
        buttons.addWidget(self.expand_button, 1, 0)
        buttons.addWidget(self.restyle_button, 1, 1)
        stop_row = QHBoxLayout()
        stop_row.addWidget(self.cancel_button)
        stop_row.addWidget(self.finish_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt_edit)
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative_edit)
        layout.addLayout(form)
        layout.addWidget(self.advanced_toggle)
        layout.addWidget(self.advanced_frame)
        layout.addWidget(self.references_panel)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addLayout(stop_row)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

    def sizeHint(self) -> QSize:
        """PANEL_CHARS wide, or what the contents need at least (with room for a vertical scroll bar)."""
        hint = super().sizeHint()
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        width = max(self.fontMetrics().averageCharWidth() * PANEL_CHARS,
                    self.minimumSizeHint().width() + scroll_bar)
        return QSize(width, hint.height())

    def _show_advanced(self, shown: bool) -> None:
        self.advanced_frame.setVisible(shown)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def set_state(self, can_fill: bool, can_expand: bool, busy: bool, can_restyle: bool = False) -> None:
        self._can_restyle = can_restyle
        self.fill_button.setEnabled(can_fill and not busy)
        self.expand_button.setEnabled(can_expand and not busy)
        self.restyle_button.setEnabled(can_restyle and not busy and self.engine_can_restyle())
        self.cancel_button.setEnabled(busy)
        self.finish_button.setEnabled(busy)
        if busy != self._busy:
            self._busy = busy
            if busy:
                self._job_classic = bool(self._classic)
            self._update_progress_format()

    def _fill_styles(self, styles: list[Style]) -> None:
        self._styles = {style.name: style for style in styles}
        for style in styles:
            self.style_combo.addItem(style.name)
            if style.lora:
                self.style_combo.setItemData(self.style_combo.count() - 1,
                                             f"Uses the LoRA {Path(style.lora).name} at {style.lora_weight:g}",
                                             Qt.ItemDataRole.ToolTipRole)

    def set_styles(self, styles: list[Style], select: str = "") -> None:
        """A new style list (a style was learned): `select` is chosen, else the current style stays."""
        current = select or self.style_combo.currentText()
        self.style_combo.blockSignals(True)
        self.style_combo.clear()
        self._fill_styles(styles)
        index = self.style_combo.findText(current)
        self.style_combo.setCurrentIndex(max(0, index))
        self.style_combo.blockSignals(False)
        self._style_chosen(self.style_combo.currentText())

    def _style_chosen(self, name: str) -> None:
        """The strength slider means nothing for a style that changes nothing (such as "None")."""
        style = self._styles.get(name)
        plain = style is None or (style.prompt.strip() == "{prompt}" and not style.negative_prompt.strip()
                                  and not style.lora and style.sampler is None and style.steps is None
                                  and style.guidance is None)
        self.style_strength_slider.setEnabled(not plain and not self._classic)

    # -- what the chosen engine uses ----------------------------------------------------------------
    def engine_can_restyle(self) -> bool:
        """False for the classic engine, which cannot restyle (Restyle needs a diffusion model)."""
        return not self._classic

    def _apply_capabilities(self) -> None:
        """Grey out, saying why, what the classic engine ignores: it reads neither prompt nor style and takes
        no steps, guidance or strength; it does use the seed, the variants and the feather."""
        classic = (self.selected_model() or "classic") in CLASSIC_ENGINES
        label = self.model_combo.itemText(self._model_index) if self.model_combo.count() else ""
        self.model_combo.setToolTip(f"{label}\n\n{MODEL_TIP}" if label else MODEL_TIP)
        if classic == self._classic:
            return
        self._classic = classic
        for widget in self._unused_by_classic:
            widget.setEnabled(not classic)
            widget.setToolTip(CLASSIC_IGNORES if classic else self._tooltips[widget])
        self._style_chosen(self.style_combo.currentText())
        self.references_panel.set_classic(classic)
        self.restyle_button.setEnabled(self._can_restyle and not self._busy and not classic)
        self.restyle_button.setToolTip(RESTYLE_NEEDS_DIFFUSION if classic else self._tooltips[self.restyle_button])
        self.prompt_edit.setPlaceholderText(CLASSIC_PROMPT if classic else PROMPT_HINT)
        self.prompt_edit.viewport().update()          # Qt repaints a changed placeholder only on the next event
        self.prompt_edit.setToolTip(CLASSIC_PROMPT if classic else self._tooltips[self.prompt_edit])
        self.capabilities_changed.emit()

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
            combo.setItemData(combo.count() - 1, label, Qt.ItemDataRole.ToolTipRole)
        self._configs, self._families = {}, {}
        for entry in models:
            combo.addItem(entry.label, entry.location)
            combo.setItemData(combo.count() - 1, f"{entry.label}\n{entry.location}", Qt.ItemDataRole.ToolTipRole)
            self._configs[entry.location] = entry.config
            self._families[entry.location] = entry.family
        combo.insertSeparator(combo.count())
        combo.addItem("Add model…", ADD_MODEL)
        index = combo.findData(wanted) if wanted else -1
        self._model_index = index if index >= 0 else 0
        combo.setCurrentIndex(self._model_index)
        combo.blockSignals(False)
        self._apply_capabilities()
        self._default_keep_structure()

    # -- Keep structure ------------------------------------------------------------------------------------
    def model_family(self) -> str:
        """The family of the chosen model when it is one the user added ("" for an engine or unknown)."""
        return self._families.get(self.selected_model(), "")

    def set_controlnets(self, controlnets: Sequence[ModelEntry]) -> None:
        """The library's ControlNets: Keep structure is on by default when one is a canny ControlNet of the
        chosen model's family (until the user sets it)."""
        self._controlnets = list(controlnets)
        self._default_keep_structure()

    def _default_keep_structure(self) -> None:
        if self._keep_structure_chosen:
            return
        family = self.model_family()
        self._defaulting = True
        try:
            self.keep_structure_check.setChecked(bool(family) and controlnet_for(self._controlnets, family,
                                                                                 "canny") is not None)
        finally:
            self._defaulting = False

    def _keep_structure_toggled(self, _on: bool) -> None:
        if not self._defaulting:
            self._keep_structure_chosen = True

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
            self._apply_capabilities()
            self._default_keep_structure()

    def set_progress(self, step: int, total: int) -> None:
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(step)
        self._update_progress_format()

    def _update_progress_format(self) -> None:
        """Diffusion counts denoising steps; the classic engine's stages are no steps, so it shows a share."""
        value, maximum = self.progress_bar.value(), self.progress_bar.maximum()
        if self._job_classic:
            formats = ("%p %", "stopped at %p %", "done")
        else:
            formats = ("step %v/%m", "stopped at step %v/%m", "done: %m steps")
        if self._busy:
            self.progress_bar.setFormat(formats[0])
        elif 0 < value < maximum:
            self.progress_bar.setFormat(formats[1])
        elif value > 0:
            self.progress_bar.setFormat(formats[2])
        else:
            self.progress_bar.setFormat("Ready")

    def set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet("color: #e06060;" if error else "")
        self.status_label.setText(text)

    def _reference_status(self, text: str, error: bool) -> None:
        """A line of the References section, here and in the window's status bar."""
        self.set_status(text, error)
        window = self.window()
        if isinstance(window, QMainWindow):
            window.statusBar().showMessage(text, 0 if error else 8000)

    def job_settings(self) -> JobSettings:
        references = self.references_panel.references()     # none while they are left out (its note says why)
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
            keep_structure=self.keep_structure_check.isChecked(),
            references=references,
            ip_adapter=self.references_panel.adapter_path() if references else "",
            image_encoder=self.references_panel.encoder_path() if references else "",
        )

    # -- persistence: app/editor/stored_settings.py reads the values back typed and within these widgets' ranges ---
    def saved_values(self) -> dict[str, object]:
        """The values to remember, those the settings schema knows."""
        values = {"prompt": self.prompt_edit.toPlainText(), "negative": self.negative_edit.toPlainText(),
                "style": self.style_combo.currentText(), "model": self.selected_model(),
                "style_strength": self.style_strength_slider.value(),
                "steps": self.steps_spin.value(), "guidance": self.guidance_spin.value(),
                "strength": self.strength_spin.value(), "restyle_strength": self.restyle_strength_spin.value(),
                "seed": self.seed_spin.value(),
                "random_seed": self.random_seed_check.isChecked(), "variants": self.variants_spin.value(),
                "feather": self.feather_spin.value(), "advanced": self.advanced_toggle.isChecked(),
                "ip_adapter": self.references_panel.adapter_path(),
                "image_encoder": self.references_panel.encoder_path()}
        if self._keep_structure_chosen:               # only the user's own choice: else the default decides
            values["keep_structure"] = self.keep_structure_check.isChecked()
        return {key: value for key, value in values.items() if f"panel/{key}" in SCHEMA}

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
        if "advanced" in values:
            self.advanced_toggle.setChecked(values["advanced"])
        if "ip_adapter" in values:
            self.references_panel.set_adapter_path(values["ip_adapter"])
        if "image_encoder" in values:
            self.references_panel.set_encoder_path(values["image_encoder"])
        if "keep_structure" in values:                     # a remembered choice is the user's
            self.keep_structure_check.setChecked(values["keep_structure"])
            self._keep_structure_chosen = True
