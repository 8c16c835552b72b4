"""The staging strip under the canvas: finished variants as thumbnails of the region they changed, with
Accept, Keep all and Discard. It is always there (a hint stands in for the list while nothing waits), so
the canvas never changes size (and the view never jumps) as variants come and go."""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from app.core.geometry import Rect
from app.engine.events import Variant
from app.widgets.qt_image import to_qimage

THUMB = 96
SHARPEN_EVERY_MS = 40         # between the region thumbnails that replace the whole-image ones


class VariantsStrip(QWidget):
    variant_selected = Signal(int)
    accepted = Signal()
    accepted_all = Signal()
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
        self.accept_button.setToolTip("Add the selected variant as a new layer (Enter)")
        self.keep_all_button = QPushButton("Keep all")
        self.keep_all_button.setObjectName("keepAllButton")
        self.keep_all_button.setToolTip("Add the selected variant as a new layer and keep the others in it, to "
                                        "switch to later in the Layers panel (Ctrl+Alt+A)")
        self.keep_all_button.clicked.connect(self.accepted_all)
        self.discard_button = QPushButton("Discard")
        self.discard_button.setObjectName("discardButton")
        self.discard_button.setAccessibleName("Discard")
        self.discard_button.setToolTip("Leave the image as it was (Esc). Left/Right: the other variants; "
                                       "hold \\ to see the image before")
        self.accept_button.clicked.connect(self.accepted)
        self.discard_button.clicked.connect(self.discarded)
        buttons = QVBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.keep_all_button)
        buttons.addWidget(self.discard_button)
        buttons.addStretch(1)
        self.hint = QLabel("Variants appear here after Generative Fill, Expand or Restyle: Left/Right to compare, "
                           "hold \\ to see the image before, Enter to accept.")
        self.hint.setObjectName("variantsHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setFixedHeight(THUMB + 40)
        self.hint.setEnabled(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint, 1)
        layout.addLayout(buttons)
        self.variants: tuple[Variant, ...] = ()
        self._generation = 0                # which set_variants the delayed region thumbnails belong to
        self.set_variants(())

    def set_variants(self, variants: tuple[Variant, ...], region: Rect | None = None) -> None:
        """Show `variants`; `region` (in the variants' own pixels) is what their thumbnails show."""
        self.variants = tuple(variants)
        self._generation += 1
        self.list.blockSignals(True)
        self.list.clear()
        for i, variant in enumerate(self.variants):
            # The ready-made whole-image thumbnail now; the region's, cut from the full result, one per event
            # after, so a big result never holds the window up while the strip fills.
            item = QListWidgetItem(_icon(variant.thumbnail if variant.thumbnail is not None else variant.image),
                                   f"{i + 1} · seed {variant.seed}")
            item.setToolTip(variant.parameters)
            self.list.addItem(item)
            if region is not None:
                # Apart, not all at once: zero-delay timers run back to back and would add up to one stall.
                QTimer.singleShot(SHARPEN_EVERY_MS * (i + 1), self,
                                  lambda i=i, g=self._generation: self._sharpen(i, region, g))
        self.list.blockSignals(False)
        has = bool(self.variants)
        self.accept_button.setEnabled(has)
        self.keep_all_button.setEnabled(len(self.variants) > 1)
        self.discard_button.setEnabled(has)
        self.list.setVisible(has)            # the strip keeps its place: the canvas never changes size
        self.hint.setVisible(not has)
        if has:
            self.list.setCurrentRow(0)
            self.variant_selected.emit(0)

    def _sharpen(self, index: int, region: Rect, generation: int) -> None:
        if generation != self._generation or index >= len(self.variants):
            return                                       # other variants came meanwhile
        small = region_thumbnail(self.variants[index], region)
        self.list.item(index).setIcon(_icon(small))

    def current(self) -> Variant | None:
        row = self.list.currentRow()
        return self.variants[row] if 0 <= row < len(self.variants) else None

    def step(self, delta: int) -> None:
        """Show the next (delta 1) or previous (-1) variant, wrapping around."""
        count = len(self.variants)
        if count:
            self.list.setCurrentRow((max(self.list.currentRow(), 0) + delta) % count)

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self.variants):
            self.variant_selected.emit(row)


def _icon(pixels: np.ndarray) -> QIcon:
    return QIcon(QPixmap.fromImage(to_qimage(pixels)).scaled(
        THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))


def region_thumbnail(variant: Variant, region: Rect | None) -> np.ndarray:
    """The part of the variant a small fill changed, so variants can be told apart; the whole image (its
    ready-made thumbnail) when the region is most of it."""
    image = variant.image
    height, width = image.shape[:2]
    whole = Rect(0, 0, width, height)
    if region is not None:
        region = region.intersect(whole)
    if region is None or region.is_empty() or region.area * 2 > whole.area:
        return image if variant.thumbnail is None else variant.thumbnail
    crop = image[region.slices()]
    scale = min(1.0, 2 * THUMB / max(region.w, region.h))
    size = (max(1, round(region.w * scale)), max(1, round(region.h * scale)))
    step = max(1, int(1 / scale) // 4)
    return cv2.resize(np.ascontiguousarray(crop[::step, ::step]), size, interpolation=cv2.INTER_AREA)
