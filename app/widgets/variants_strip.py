"""The strip of finished variants under the canvas, with Accept and Discard."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from app.engine.events import Variant
from app.widgets.qt_image import to_qimage

THUMB = 96


class VariantsStrip(QWidget):
    variant_selected = Signal(int)
    accepted = Signal()
    discarded = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("variantsStrip")
        self.list = QListWidget()
        self.list.setObjectName("variantsList")
        self.list.setAccessibleName("Variants")
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setFlow(QListWidget.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setFixedHeight(THUMB + 40)
        self.list.setMovement(QListWidget.Movement.Static)
        self.list.currentRowChanged.connect(self._row_changed)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setObjectName("acceptButton")
        self.accept_button.setAccessibleName("Accept")
        self.accept_button.setToolTip("Keep the selected variant (Enter)")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setObjectName("discardButton")
        self.discard_button.setAccessibleName("Discard")
        self.discard_button.setToolTip("Leave the image as it was (Esc)")
        self.accept_button.clicked.connect(self.accepted)
        self.discard_button.clicked.connect(self.discarded)
        buttons = QVBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.discard_button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.variants: tuple[Variant, ...] = ()
        self.set_variants(())

    def set_variants(self, variants: tuple[Variant, ...]) -> None:
        self.variants = tuple(variants)
        self.list.blockSignals(True)
        self.list.clear()
        for i, variant in enumerate(self.variants):
            small = variant.image if variant.thumbnail is None else variant.thumbnail
            pixmap = QPixmap.fromImage(to_qimage(small)).scaled(
                THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            item = QListWidgetItem(QIcon(pixmap), f"{i + 1} · seed {variant.seed}")
            item.setToolTip(variant.parameters)
            self.list.addItem(item)
        self.list.blockSignals(False)
        has = bool(self.variants)
        self.accept_button.setEnabled(has)
        self.discard_button.setEnabled(has)
        self.setVisible(has)
        if has:
            self.list.setCurrentRow(0)
            self.variant_selected.emit(0)

    def current(self) -> Variant | None:
        row = self.list.currentRow()
        return self.variants[row] if 0 <= row < len(self.variants) else None

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self.variants):
            self.variant_selected.emit(row)
