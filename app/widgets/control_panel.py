"""The Control panel: the settings of the selected control layer, under the Layers dock's list, shown only while
a control layer is selected: its kind, its ControlNet (or "Add ControlNet…"), how strongly and over which part
of the steps it guides, the canny thresholds, the tile blur, the depth or pose model (and a pose's person
detector), whether it is made from the image,
Import image… and Clear drawing, and "Show control image", which draws what the ControlNet will see over the
canvas.

A thin view of EditorState: each change is one set_control_settings call, so one undo step (a slider's drag is
one, on release). `install_control_layers` builds it and wires it into the main window.
"""
from __future__ import annotations

import html
from dataclasses import replace
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.core.control_layers import CONTROL_KINDS, DRAWN_KINDS, KIND_LABELS, MADE_FROM_THE_IMAGE, ControlSettings
from app.core.layers import Layer
from app.editor.editor_state import EditorState
from app.widgets.control_commands import FAMILY_NAMES, ControlCommands, ControlPreview, controlnet_choice, \
    has_drawing, preview_note
from app.widgets.generate_panel import ElidingCombo, ValueSlider
from app.widgets.widget_tools import named as _named, refresh_once_after

if TYPE_CHECKING:
    from app.widgets.main_window import MainWindow

ADD_CONTROLNET = "::add-controlnet"      # item data of the ControlNet picker's "Add ControlNet…"
CHOOSE_FOLDER = "::choose-folder"        # ... and of the annotator pickers' "Choose folder…"
NO_CONTROLNET = "Pick a ControlNet, or hide the layer."




class ControlPanel(QGroupBox):
    preview_changed = Signal(object)      # what "Show control image" shows (H x W x 3 uint8), None for nothing

    def __init__(self, state: EditorState, commands: ControlCommands, parent: QWidget | None = None) -> None:
        super().__init__("Control layer", parent)
        self.setObjectName("controlPanel")
        self.setAccessibleName("Control layer settings")
        self.state = state
        self.commands = commands
        self._updating = False
        self.kind_combo = _named(QComboBox(), "controlKindCombo", "Control kind",
                                 "What the ControlNet follows: a drawing, edges, depth, a pose, the image itself")
        for kind in CONTROL_KINDS:
            self.kind_combo.addItem(KIND_LABELS[kind], kind)
        self.model_combo = _named(ElidingCombo(), "controlNetCombo", "ControlNet",
                                  "The ControlNet this layer drives; it must be of the model's family")
        self.weight_slider = self._slider("{} %", 0, 200, "controlWeightSlider", "Control strength",
                                          "How strongly the layer guides: 100 % is the ControlNet's usual weight")
        self.start_spin = self._spin(QSpinBox(), "controlStartSpin", "Control start")
        self.start_spin.setToolTip("The share of the steps done before the layer starts to guide")
        self.end_spin = self._spin(QSpinBox(), "controlEndSpin", "Control end")
        self.end_spin.setToolTip("The share of the steps done when the layer stops guiding")
        for spin in (self.start_spin, self.end_spin):
            spin.setRange(0, 100)
            spin.setSingleStep(5)
            spin.setSuffix(" %")
        self.low_spin = self._spin(QSpinBox(), "cannyLowSpin", "Canny low threshold")
        self.high_spin = self._spin(QSpinBox(), "cannyHighSpin", "Canny high threshold")
        for spin in (self.low_spin, self.high_spin):
            spin.setRange(0, 1000)
            spin.setToolTip("Canny thresholds: lower finds more edges, higher only the strong ones")
        self.blur_spin = self._spin(QDoubleSpinBox(), "tileBlurSpin", "Tile blur")
        self.blur_spin.setRange(0.0, 64.0)
        self.blur_spin.setSingleStep(0.5)
        self.blur_spin.setSuffix(" px")
        self.blur_spin.setToolTip("Blur the image first, so the ControlNet keeps its colours and layout, not its "
                                  "detail")
        self.annotator_combo = _named(ElidingCombo(), "annotatorCombo", "Depth model",
                                      "The depth-estimation model that makes the depth from the image")
        self.detector_combo = _named(ElidingCombo(), "detectorCombo", "Person detector",
                                     "The object-detection model that finds the people whose poses are estimated; "
                                     "without one the whole image is taken as one person")
        self.from_image_check = _named(QCheckBox("Made from the image"), "controlFromImageCheck",
                                       "Made from the image", "On: made from the image each time you generate. "
                                       "Off: from this layer's pixels (draw on it or import a map)")
        self.import_button = _named(QPushButton("Import image…"), "controlImportButton", "Import image",
                                    "Load a drawing, a depth, normal or pose map into this layer")
        self.clear_button = _named(QPushButton("Clear drawing"), "controlClearButton", "Clear drawing",
                                   "Erase everything drawn or imported on this layer")
        self.preview_check = _named(QCheckBox("Show control image"), "controlPreviewCheck", "Show control image",
                                    "Show over the canvas what the ControlNet will see for the whole image")
        self.note_label = _named(QLabel(""), "controlNoteLabel", "Control layer note")
        self.note_label.setWordWrap(True)
        self.note_label.setTextFormat(Qt.TextFormat.RichText)
        self.preview = ControlPreview(self)

        self.kind_combo.currentIndexChanged.connect(self._kind_chosen)
        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.annotator_combo.currentIndexChanged.connect(self._annotator_chosen)
        self.detector_combo.currentIndexChanged.connect(self._detector_chosen)
        self.weight_slider.valueChanged.connect(self._weight_slid)
        self.weight_slider.sliderReleased.connect(self._weight_released)
        self.start_spin.valueChanged.connect(lambda v: self._steps(start=v / 100))
        self.end_spin.valueChanged.connect(lambda v: self._steps(end=v / 100))
        self.low_spin.valueChanged.connect(lambda v: self._thresholds(low=v))
        self.high_spin.valueChanged.connect(lambda v: self._thresholds(high=v))
        self.blur_spin.valueChanged.connect(lambda v: self._commit(blur=float(v)))
        self.from_image_check.toggled.connect(lambda on: self._commit(from_image=bool(on)))
        self.import_button.clicked.connect(lambda: self.commands.import_image(self.state.active_layer))
        self.clear_button.clicked.connect(lambda: self.commands.clear_drawing(self.state.active_layer))
        self.preview_check.toggled.connect(lambda _on: self.refresh())
        self.preview.changed.connect(self.preview_changed)
        commands.controlnets_changed.connect(self.refresh)
        commands.annotators_found.connect(self.refresh)
        self._build_layout()

        self._refresh_timer = refresh_once_after(
            self, self.refresh, (state.image_changed, state.document_replaced, state.active_layer_changed))
        self.refresh()

    def _slider(self, text: str, low: int, high: int, name: str, accessible: str, tip: str) -> ValueSlider:
        slider = _named(ValueSlider(text, low, high), name, accessible, tip)
        slider.setSingleStep(5)
        slider.setPageStep(10)
        return slider

    @staticmethod
    def _spin(spin, name: str, accessible: str):
        spin.setKeyboardTracking(False)            # typed values count once, on Enter or leaving the field
        return _named(spin, name, accessible)

    def _build_layout(self) -> None:
        self.form = QFormLayout()
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow("Kind", self.kind_combo)
        self.form.addRow("ControlNet", self.model_combo)
        weight = QHBoxLayout()
        weight.addWidget(self.weight_slider, 1)
        weight.addWidget(self.weight_slider.value_label)
        self.form.addRow("Strength", weight)
        steps = QHBoxLayout()
        steps.addWidget(self.start_spin, 1)
        steps.addWidget(QLabel("to"))
        steps.addWidget(self.end_spin, 1)
        self.form.addRow("Steps", steps)
        self._thresholds_row = QHBoxLayout()
        self._thresholds_row.addWidget(self.low_spin, 1)
        self._thresholds_row.addWidget(QLabel("to"))
        self._thresholds_row.addWidget(self.high_spin, 1)
        self.form.addRow("Thresholds", self._thresholds_row)
        self.form.addRow("Blur", self.blur_spin)
        self.form.addRow("Depth model", self.annotator_combo)
        self.form.addRow("People", self.detector_combo)
        self.form.addRow(self.from_image_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.clear_button)
        self.form.addRow(buttons)
        self.form.addRow(self.preview_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(self.form)
        layout.addWidget(self.note_label)

    # -- showing the selected layer -------------------------------------------------------------------------
    def layer(self) -> Layer | None:
        """The selected layer when it is a control layer."""
        return self.commands.control_layer(self.state.active_layer)

    def refresh(self) -> None:
        self._refresh_timer.stop()
        layer = self.layer()
        self.setVisible(layer is not None)
        if layer is None:
            self.preview.request(None)
            return
        settings = layer.control
        self._updating = True
        try:
            self.kind_combo.setCurrentIndex(self.kind_combo.findData(settings.kind))
            self._fill_models(settings)
            self._fill_annotators(settings)
            self.weight_slider.setValue(round(settings.weight * 100))
            self.start_spin.setValue(round(settings.start * 100))
            self.end_spin.setValue(round(settings.end * 100))
            self.low_spin.setValue(settings.low)
            self.high_spin.setValue(settings.high)
            self.blur_spin.setValue(settings.blur)
            self.from_image_check.setChecked(settings.from_image)
        finally:
            self._updating = False
        kind = settings.kind
        made_from_image = not settings.uses_layer_pixels
        self.form.setRowVisible(self._thresholds_row, kind == "canny" and made_from_image)
        self.form.setRowVisible(self.blur_spin, kind == "tile")
        self.form.setRowVisible(self.annotator_combo, kind in ("depth", "normal", "pose") and made_from_image)
        self.form.setRowVisible(self.detector_combo, kind == "pose" and made_from_image)
        label = self.form.labelForField(self.annotator_combo)
        if label is not None:
            label.setText("Pose model" if kind == "pose" else "Depth model")
        self.annotator_combo.setAccessibleName("Pose model" if kind == "pose" else "Depth model")
        self.form.setRowVisible(self.from_image_check, kind in MADE_FROM_THE_IMAGE and kind != "inpaint")
        self.import_button.setEnabled(kind != "inpaint")
        self.clear_button.setEnabled(settings.uses_layer_pixels and has_drawing(layer.pixels))
        self.note_label.setText(self._note(layer))
        self._request_preview()

    def _note(self, layer: Layer) -> str:
        """What to do with the layer, as rich text: first, in red, that it needs a ControlNet."""
        settings = layer.control
        lines = []
        if settings.kind == "inpaint":
            lines.append("Made from the mask when you Fill or Expand.")
        elif not settings.uses_layer_pixels:
            lines.append("Made from the image each time you generate.")
        elif settings.kind in DRAWN_KINDS:
            lines.append("Brush (B) draws, Eraser (E) erases.")
        else:
            lines.append(f"Import a {settings.label.lower()} image, or draw with the Brush (B).")
        if self.preview_check.isChecked() and preview_note(settings):
            lines.append(preview_note(settings))
        text = "<br>".join(html.escape(line) for line in lines)
        if not settings.model:
            text = f'<span style="color: #e06060;">{html.escape(NO_CONTROLNET)}</span><br>{text}'
        return text

    def _fill_models(self, settings: ControlSettings) -> None:
        combo = self.model_combo
        combo.clear()
        combo.addItem("Pick a ControlNet…", "")
        for entry in self.commands.window.library.controlnets():
            made_for = [FAMILY_NAMES.get(entry.family, ""), KIND_LABELS.get(entry.control, "")]
            about = ", ".join(text for text in made_for if text)
            combo.addItem(entry.label, entry.location)
            combo.setItemData(combo.count() - 1, f"{entry.label}{f' ({about})' if about else ''}\n{entry.location}",
                              Qt.ItemDataRole.ToolTipRole)
        if settings.model and combo.findData(settings.model) < 0:
            combo.addItem(settings.model, settings.model)          # not in the library: a project from elsewhere
        combo.insertSeparator(combo.count())
        combo.addItem("Add ControlNet…", ADD_CONTROLNET)
        combo.setCurrentIndex(max(combo.findData(settings.model), 0))
        combo.setToolTip(f"{combo.currentText()}\n\nThe ControlNet this layer drives; it must be of the model's "
                         "family")

    def _fill_annotators(self, settings: ControlSettings) -> None:
        pose = settings.kind == "pose"
        if settings.kind in ("depth", "normal", "pose"):
            self.commands.find_annotators()
        self._fill_models_of(self.annotator_combo, "pose" if pose else "depth", settings.annotator,
                             "None (import a pose image)" if pose else "None (import a map)")
        self._fill_models_of(self.detector_combo, "detector", settings.detector, "None: the image is one person")

    def _fill_models_of(self, combo: QComboBox, kind: str, current: str, none: str) -> None:
        """The annotator models of `kind` found in the HF cache or chosen, "Choose folder…" last."""
        combo.clear()
        combo.addItem(none, "")
        for info in self.commands.annotators or ():
            if info.kind == kind and combo.findData(info.source) < 0:
                combo.addItem(info.repo_id or info.path.name, info.source)
                combo.setItemData(combo.count() - 1, str(info.path), Qt.ItemDataRole.ToolTipRole)
        if current and combo.findData(current) < 0:
            combo.addItem(current, current)
        combo.insertSeparator(combo.count())
        combo.addItem("Choose folder…", CHOOSE_FOLDER)
        combo.setCurrentIndex(max(combo.findData(current), 0))

    # -- changes ----------------------------------------------------------------------------------------------
    def _commit(self, **changes) -> bool:
        """The selected layer's settings with `changes`, one undo step; False when nothing changed."""
        layer = self.layer()
        if layer is None or self._updating:
            return False
        try:
            settings = replace(layer.control, **changes)
        except ValueError as exc:
            self.commands.status.emit(" ".join(str(exc).split()), True)
            self._refresh_timer.start()
            return False
        return self.state.set_control_settings(layer.id, settings)

    def _kind_chosen(self, index: int) -> None:
        """A new kind keeps its ControlNet when that fits it, else takes the best listed one; a layer still
        named after its kind is renamed with it (the same undo step)."""
        layer = self.layer()
        kind = self.kind_combo.itemData(index)
        if layer is None or self._updating or kind is None or kind == layer.control.kind:
            return
        old = layer.control
        library = self.commands.window.library
        entry = library.find(old.model) if old.model else None
        fitting = controlnet_choice(library.controlnets(), self.commands.model_family(), kind)
        model = fitting if fitting and (entry is None or entry.control != kind) else old.model
        settings = replace(old, kind=kind, model=model)
        changes = {"control": settings}
        if layer.name == f"{old.label} control":
            changes["name"] = f"{settings.label} control"
        self.state.change_layers(self.state.document.layers.changed(layer.id, **changes), "Control kind")

    def _model_chosen(self, index: int) -> None:
        if self._updating:
            return
        data = self.model_combo.itemData(index)
        if data == ADD_CONTROLNET:
            self._refresh_timer.start()                 # back to the layer's own until one is added
            self.commands.add_controlnet_dialog(for_layer=self.state.active_layer)
        elif isinstance(data, str):
            self._commit(model=data)

    def _annotator_chosen(self, index: int) -> None:
        if self._updating:
            return
        data = self.annotator_combo.itemData(index)
        layer = self.layer()
        pose = layer is not None and layer.control.kind == "pose"
        if data == CHOOSE_FOLDER:
            self._refresh_timer.start()
            self.commands.choose_annotator_folder(self.state.active_layer, "pose" if pose else "depth")
        elif isinstance(data, str):
            detectors = [info for info in self.commands.annotators or () if info.kind == "detector"]
            if pose and data and not layer.control.detector and detectors:
                self._commit(annotator=data, detector=detectors[0].source)   # a detector at hand: use it
            else:
                self._commit(annotator=data)

    def _detector_chosen(self, index: int) -> None:
        if self._updating:
            return
        data = self.detector_combo.itemData(index)
        if data == CHOOSE_FOLDER:
            self._refresh_timer.start()
            self.commands.choose_annotator_folder(self.state.active_layer, "detector")
        elif isinstance(data, str):
            self._commit(detector=data)

    def _weight_slid(self, _value: int) -> None:
        if not self.weight_slider.isSliderDown():       # keys, wheel, clicks; a drag counts once, on release
            self._weight_released()

    def _weight_released(self) -> None:
        self._commit(weight=self.weight_slider.value() / 100)

    def _steps(self, start: float | None = None, end: float | None = None) -> None:
        """A new start pushes the end along (and a new end the start), as start never comes after the end."""
        layer = self.layer()
        if layer is None or self._updating:
            return
        if start is not None:
            self._commit(start=start, end=max(start, layer.control.end))
        else:
            self._commit(end=end, start=min(end, layer.control.start))

    def _thresholds(self, low: int | None = None, high: int | None = None) -> None:
        layer = self.layer()
        if layer is None or self._updating:
            return
        if low is not None:
            self._commit(low=low, high=max(low, layer.control.high))
        else:
            self._commit(high=high, low=min(high, layer.control.low))

    def _request_preview(self) -> None:
        layer = self.layer()
        if not self.preview_check.isChecked() or layer is None:
            self.preview.request(None)
        else:
            self.preview.request(layer.control, self.state.document, layer)


def install_control_layers(window: "MainWindow") -> ControlCommands:
    """The control-layer commands and the Control panel of `window`, wired in: the panel under the Layers
    dock's list, its preview on the canvas, its lines in the status bar, the ControlNets in the Generate panel
    (Keep structure's default)."""
    commands = ControlCommands(window)
    panel = ControlPanel(window.state, commands, window.layers_panel)
    window.layers_panel.add_details(panel)
    window.layers_panel.add_control_requested.connect(commands.add_control_layer)
    panel.preview_changed.connect(window.canvas.set_control_preview)
    commands.status.connect(window._show_status)
    panel.preview.status.connect(window._show_status)
    commands.controlnets_changed.connect(lambda: window.panel.set_controlnets(window.library.controlnets()))
    window.panel.set_controlnets(window.library.controlnets())
    window.control_panel = panel
    return commands
