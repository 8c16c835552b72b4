"""The References section of the Generate panel: up to MAX_REFERENCES reference images an IP-Adapter shows the
model (each with its scale and kind: general, style only or composition only), the IP-Adapter file and,
optionally, its CLIP image encoder folder.

The images are not remembered across sessions; the two paths are (GeneratePanel.saved_values). References
without an IP-Adapter file, or with the classic engine, are left out of the job, and the section says so in
its note, so Fill, Expand and Restyle still run.
"""
from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QToolButton, QVBoxLayout, QWidget)

from app.core.imageio import ImageLoadError, load_image
from app.engine.request import ReferenceInput
from app.widgets.qt_image import to_qimage
from app.widgets.widget_tools import named as _named

MAX_REFERENCES = 4
MAX_SIDE = 1024            # kept at most this long a side: the image encoder sees 224 px anyway
THUMB = 48
DEFAULT_SCALE = 60         # %
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff);;All files (*)"
ADAPTER_FILTER = "IP-Adapter (*.safetensors);;All files (*)"
SECTION_TIP = ("Reference images show the model what you mean instead of telling it: an IP-Adapter passes each "
               "one to the model beside the prompt. Needs a diffusion model and an IP-Adapter file of its family.")
KINDS = (("general", "General", "All of the reference: its subject, its look and its layout"),
         ("style", "Style", "Its look only (colours, light, texture, medium), not what it shows or where"),
         ("composition", "Composition", "Its layout only (where things are, their shapes), not how they look"))
SCALE_TIP = "How strongly the reference guides: 60 % is a good start, 100 % follows it closely, more drowns the prompt"
NO_ADAPTER = "Pick an IP-Adapter file for the reference images."
LEFT_OUT = "Until then they are left out: Fill, Expand and Restyle run without them."
CLASSIC = ("The classic fill uses no reference images, so they are left out. Pick a diffusion model in Model to "
           "use them.")




def reduced(pixels: np.ndarray, longest: int = MAX_SIDE) -> np.ndarray:
    """`pixels` with its longer side at most `longest` (aspect kept), RGB or RGBA as it was."""
    height, width = pixels.shape[:2]
    if max(height, width) <= longest:
        return pixels
    factor = longest / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(np.ascontiguousarray(pixels), size, interpolation=cv2.INTER_AREA)


class ReferenceRow(QFrame):
    """One reference: its thumbnail, scale, kind and a remove button."""
    changed = Signal()
    remove_requested = Signal(object)        # this row

    def __init__(self, reference: ReferenceInput, name: str, size: tuple[int, int],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from app.widgets.generate_panel import ValueSlider        # generate_panel imports this module

        self.setObjectName("referenceRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.name = name
        self._reference = reference
        self.thumbnail = _named(QLabel(), "referenceThumbnail", f"Reference {name}",
                                f"{name}, {size[0]} x {size[1]} px")
        self.thumbnail.setFixedSize(THUMB, THUMB)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        small = reduced(reference.image, THUMB * 2)
        pixmap = QPixmap.fromImage(to_qimage(small))
        self.thumbnail.setPixmap(pixmap.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))
        self.kind_combo = _named(QComboBox(), "referenceKindCombo", "Reference kind",
                                 "What the model takes from the reference: all of it, its look only (Style) or "
                                 "its layout only (Composition)")
        for kind, label, tip in KINDS:
            self.kind_combo.addItem(label, kind)
            self.kind_combo.setItemData(self.kind_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.kind_combo.setCurrentIndex(self.kind_combo.findData(reference.kind))
        self.scale_slider = _named(ValueSlider("{} %", 0, 200), "referenceScaleSlider", "Reference scale", SCALE_TIP)
        self.scale_slider.setSingleStep(5)
        self.scale_slider.setPageStep(20)
        self.scale_slider.setValue(round(reference.scale * 100))
        self.scale_slider.value_label.setToolTip(SCALE_TIP)
        self.remove_button = _named(QToolButton(), "referenceRemoveButton", "Remove reference",
                                    f"Remove the reference {name}")
        self.remove_button.setText("✕")
        self.remove_button.setAutoRaise(True)
        self.kind_combo.currentIndexChanged.connect(self._edited)
        self.scale_slider.valueChanged.connect(self._edited)
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))

        grid = QGridLayout(self)
        grid.setContentsMargins(4, 4, 4, 4)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        grid.addWidget(self.thumbnail, 0, 0, 2, 1)
        grid.addWidget(self.kind_combo, 0, 1)
        grid.addWidget(self.remove_button, 0, 2, 1, 2, Qt.AlignmentFlag.AlignRight)
        grid.addWidget(self.scale_slider, 1, 1, 1, 2)
        grid.addWidget(self.scale_slider.value_label, 1, 3)
        grid.setColumnStretch(1, 1)

    def reference(self) -> ReferenceInput:
        return self._reference

    def _edited(self) -> None:
        self._reference = replace(self._reference, scale=self.scale_slider.value() / 100,
                                  kind=self.kind_combo.currentData())
        self.changed.emit()


class ReferencesPanel(QWidget):
    """The References section, folded like Advanced (its toggle counts the references and says when they are
    left out); `references()` is what a job takes from it."""
    status = Signal(str, bool)        # one status-bar line: (text, is an error)
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("referencesPanel")
        self.setAccessibleName("Reference images")
        self.toggle = _named(QToolButton(), "referencesToggle", "Reference images", SECTION_TIP)
        self.toggle.setCheckable(True)
        self.toggle.setAutoRaise(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.body = QFrame()
        self.body.setObjectName("referencesFrame")
        self.body.setFrameShape(QFrame.Shape.StyledPanel)
        self.toggle.toggled.connect(self.show_body)
        self.rows: list[ReferenceRow] = []
        self._classic = False
        self._last_dir = ""
        self.add_button = _named(QPushButton("Add reference image…"), "addReferenceButton", "Add reference image",
                                 f"{SECTION_TIP}\n\nUp to {MAX_REFERENCES} images.")
        self.adapter_edit = _named(QLineEdit(), "ipAdapterEdit", "IP-Adapter file",
                                   "The IP-Adapter .safetensors file the references go through, e.g. h94/IP-Adapter's "
                                   "models/ip-adapter_sd15.safetensors; it must fit the model's family")
        self.adapter_edit.setPlaceholderText("No IP-Adapter file")
        self.adapter_edit.setClearButtonEnabled(True)
        self.adapter_button = _named(QPushButton("Choose…"), "ipAdapterButton", "Choose the IP-Adapter file",
                                     "Choose the IP-Adapter .safetensors file")
        self.encoder_edit = _named(QLineEdit(), "imageEncoderEdit", "Image encoder folder",
                                   "The CLIP vision encoder folder the IP-Adapter needs; empty: the image_encoder "
                                   "folder beside the adapter file (as h94/IP-Adapter lays them out)")
        self.encoder_edit.setPlaceholderText("Beside the adapter")
        self.encoder_edit.setClearButtonEnabled(True)
        self.encoder_button = _named(QPushButton("Choose…"), "imageEncoderButton", "Choose the image encoder folder",
                                     "Choose the CLIP image encoder folder (only if it is not beside the adapter)")
        self.note_label = _named(QLabel(""), "referencesNoteLabel", "References note")
        self.note_label.setWordWrap(True)
        self.note_label.setTextFormat(Qt.TextFormat.RichText)

        self.add_button.clicked.connect(self.choose_reference)
        self.adapter_button.clicked.connect(self.choose_adapter)
        self.encoder_button.clicked.connect(self.choose_encoder)
        self.adapter_edit.textChanged.connect(self._refresh)
        self.encoder_edit.textChanged.connect(self.changed)

        self.rows_layout = QVBoxLayout()
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(4)
        self.paths = QWidget()
        form = QFormLayout(self.paths)
        form.setContentsMargins(0, 0, 0, 0)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        for label, edit, button in (("IP-Adapter", self.adapter_edit, self.adapter_button),
                                    ("Image encoder (optional)", self.encoder_edit, self.encoder_button)):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(button)
            form.addRow(label, row)
        body = QVBoxLayout(self.body)
        body.setContentsMargins(6, 6, 6, 6)
        body.addLayout(self.rows_layout)
        body.addWidget(self.add_button)
        body.addWidget(self.paths)
        body.addWidget(self.note_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.show_body(False)
        self._refresh()

    def show_body(self, shown: bool) -> None:
        if self.toggle.isChecked() != shown:
            self.toggle.setChecked(shown)              # comes back here through toggled
            return
        self.body.setVisible(shown)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    # -- what a job takes ------------------------------------------------------------------------------------
    def all_references(self) -> tuple[ReferenceInput, ...]:
        return tuple(row.reference() for row in self.rows)

    def left_out_reason(self) -> str:
        """Why the references are left out of a job ("" when they go in, or there are none)."""
        if not self.rows:
            return ""
        if self._classic:
            return CLASSIC
        if not self.adapter_path():
            return f"{NO_ADAPTER} {LEFT_OUT}"
        return ""

    def references(self) -> tuple[ReferenceInput, ...]:
        """The references a job uses: none while they are left out (see left_out_reason)."""
        return () if self.left_out_reason() else self.all_references()

    def adapter_path(self) -> str:
        return self.adapter_edit.text().strip()

    def encoder_path(self) -> str:
        return self.encoder_edit.text().strip()

    def set_adapter_path(self, path: str) -> None:
        self.adapter_edit.setText(path)

    def set_encoder_path(self, path: str) -> None:
        self.encoder_edit.setText(path)

    def set_classic(self, classic: bool) -> None:
        """The classic engine is chosen: it uses no references."""
        self._classic = classic
        self._refresh()

    # -- adding and removing ---------------------------------------------------------------------------------
    def choose_reference(self) -> bool:
        if len(self.rows) >= MAX_REFERENCES:
            return False
        path, _ = QFileDialog.getOpenFileName(self, "Add reference image", self._last_dir, IMAGE_FILTER)
        return bool(path) and self.add_reference_file(path)

    def add_reference_file(self, path: str | Path) -> bool:
        """Load `path` as a new reference; a file that cannot be read is one status line and adds nothing."""
        path = Path(path)
        if len(self.rows) >= MAX_REFERENCES:
            self.status.emit(f"At most {MAX_REFERENCES} reference images; remove one first.", True)
            return False
        try:
            loaded = load_image(path)
        except (ImageLoadError, OSError) as exc:
            self.status.emit(" ".join(str(exc).split()) or f"Could not read {path.name}.", True)
            return False
        self._last_dir = str(path.parent)
        self.add_reference(loaded.pixels, path.name)
        self.status.emit(f"Added the reference image {path.name}.", False)
        return True

    def add_reference(self, pixels: np.ndarray, name: str, scale: float = DEFAULT_SCALE / 100,
                      kind: str = "general") -> ReferenceRow:
        size = (int(pixels.shape[1]), int(pixels.shape[0]))
        row = ReferenceRow(ReferenceInput(reduced(pixels), scale, kind), name, size, self)
        row.changed.connect(self.changed)
        row.remove_requested.connect(self.remove_row)
        self.rows.append(row)
        self.show_body(True)
        self.rows_layout.addWidget(row)
        row.show()                                   # now, not when the layout gets to it
        self._refresh()
        return row

    def remove_row(self, row: ReferenceRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            self.rows_layout.removeWidget(row)
            row.deleteLater()
            self._refresh()

    # -- the adapter and encoder -----------------------------------------------------------------------------
    def _start_dir(self, current: str) -> str:
        return str(Path(current).expanduser().parent) if current else self._last_dir

    def choose_adapter(self) -> bool:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the IP-Adapter file",
                                              self._start_dir(self.adapter_path()), ADAPTER_FILTER)
        if path:
            self.set_adapter_path(path)
        return bool(path)

    def choose_encoder(self) -> bool:
        start = self.encoder_path() or self._start_dir(self.adapter_path())
        path = QFileDialog.getExistingDirectory(self, "Choose the image encoder folder", start)
        if path:
            self.set_encoder_path(path)
        return bool(path)

    def _refresh(self) -> None:
        full = len(self.rows) >= MAX_REFERENCES
        self.add_button.setEnabled(not full)
        self.add_button.setText(f"{MAX_REFERENCES} references (the most)" if full else "Add reference image…")
        self.paths.setVisible(bool(self.rows))      # only asked for once there is a reference
        reason = self.left_out_reason()
        if self._classic and self.rows:
            self.note_label.setText(html.escape(CLASSIC))
        elif reason:
            self.note_label.setText(f'<span style="color: #e06060;">{html.escape(NO_ADAPTER)}</span> '
                                    f"{html.escape(LEFT_OUT)}")
        else:
            self.note_label.setText("")
        self.note_label.setVisible(bool(reason))
        count = f" ({len(self.rows)}{', left out' if reason else ''})" if self.rows else ""
        self.toggle.setText(f"References{count}")
        self.changed.emit()
