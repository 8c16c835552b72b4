"""The Layers dock: the stack top first with thumbnails and eye toggles, drag to reorder, opacity, rename,
delete, merge down and flatten; for a generative layer, its variants to switch between with one click; "Add
control layer" with a menu of the ControlNet kinds (control layers are tagged in the list and drawn in the
canvas's control tint; the Control panel under the list shows the selected one's settings).

A thin view of EditorState: every change goes through its layer methods, so each is one undo step.
"""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.core.control_layers import CONTROL_KINDS, KIND_LABELS
from app.core.geometry import Rect
from app.core.layers import Layer, LayerStack, composite_rgba
from app.editor.editor_state import EditorState
from app.widgets.qt_image import to_qimage
from app.widgets.widget_tools import refresh_once_after

THUMB = 48
VARIANT_THUMB = 72
_CHECKER = 8
CONTROL_TAG = "[control]"
CONTROL_INK = (0, 220, 255)            # the canvas's control tint (canvas_drawing.CONTROL_TINT)
CONTROL_PAPER = (34, 44, 52)
LIST_ROWS = 4                          # the list's least height, in rows; 2 while the Control panel shows
NO_MERGE = "Control layers guide generation: they cannot be merged"


class LayersPanel(QWidget):
    add_control_requested = Signal(str)   # a control kind ("scribble", "canny", ...) from the Add menu

    def __init__(self, state: EditorState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("layersPanel")
        self.state = state
        self._thumbs: dict[tuple, QIcon] = {}     # (id(pixels), what) -> icon; pixel arrays never change
        self._held: dict[int, np.ndarray] = {}    # the arrays those ids belong to, so no id is reused
        self._updating = False
        self.list = QListWidget()
        self.list.setObjectName("layersList")
        self.list.setAccessibleName("Layers")
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setMinimumHeight(LIST_ROWS * (THUMB + 6))
        self._has_details = False
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.setToolTip("Tick to show a layer, untick to hide it; drag to reorder; double-click to rename")
        self.list.currentRowChanged.connect(self._row_changed)
        self.list.itemChanged.connect(self._item_changed)
        self.list.model().rowsMoved.connect(self._rows_moved)

        self.opacity = QSpinBox()
        self.opacity.setObjectName("layerOpacity")
        self.opacity.setAccessibleName("Layer opacity")
        self.opacity.setRange(0, 100)
        self.opacity.setSuffix(" %")
        self.opacity.setKeyboardTracking(False)
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.delete_button = self._button("Delete", "deleteLayerButton", "Delete the selected layer",
                                          self._delete)
        self.merge_button = self._button("Merge down", "mergeDownButton",
                                         "Merge the selected layer into the one below", self._merge)
        self.flatten_button = self._button("Flatten", "flattenButton", "Merge every visible layer into one",
                                           self.state.flatten)
        self.add_control_button = QPushButton("Add control layer")
        self.add_control_button.setObjectName("addControlLayerButton")
        self.add_control_button.setAccessibleName("Add control layer")
        self.add_control_button.setToolTip("A layer that guides Fill, Expand and Restyle through a ControlNet: "
                                           "draw a scribble on it, import a map, or make it from the image")
        self.control_menu = QMenu(self.add_control_button)
        self.control_menu.setObjectName("addControlLayerMenu")
        for kind in CONTROL_KINDS:
            action = self.control_menu.addAction(KIND_LABELS[kind])
            action.setObjectName(f"addControl_{kind}")
            action.setData(kind)
            action.triggered.connect(lambda _checked=False, k=kind: self.add_control_requested.emit(k))
        self.add_control_button.setMenu(self.control_menu)

        self.variants = QListWidget()
        self.variants.setObjectName("layerVariants")
        self.variants.setAccessibleName("Variants of this layer")
        self.variants.setViewMode(QListWidget.ViewMode.IconMode)
        self.variants.setFlow(QListWidget.Flow.LeftToRight)
        self.variants.setWrapping(False)
        self.variants.setMovement(QListWidget.Movement.Static)
        self.variants.setIconSize(QSize(VARIANT_THUMB, VARIANT_THUMB))
        self.variants.setGridSize(QSize(VARIANT_THUMB + 10, VARIANT_THUMB + 22))
        self.variants.setFixedHeight(VARIANT_THUMB + 44)           # one row, scrolled sideways
        self.variants.setToolTip("Click a variant to show it in this layer")
        self.variants.currentRowChanged.connect(self._variant_chosen)
        self.variants_label = QLabel("Variants")

        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity, 1)
        buttons = QHBoxLayout()
        for button in (self.delete_button, self.merge_button, self.flatten_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addLayout(opacity_row)
        layout.addLayout(buttons)
        layout.addWidget(self.add_control_button)
        layout.addWidget(self.variants_label)
        layout.addWidget(self.variants)
        self._details = layout

        self._refresh_timer = refresh_once_after(
            self, self.refresh, (state.image_changed, state.document_replaced, state.active_layer_changed))
        self.refresh()

    def add_details(self, widget: QWidget) -> None:
        """Put `widget` (the Control panel) under the list and its buttons; while it shows, the list may shrink
        to two rows, so that the dock does not take the Generate panel's room."""
        self._details.addWidget(widget)
        self._has_details = True

    def _button(self, text: str, name: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    # -- showing the stack --------------------------------------------------------------------------
    def refresh(self) -> None:
        self._refresh_timer.stop()
        doc = self.state.document
        layers = () if doc is None else doc.layers.layers
        self._updating = True
        try:
            self.list.clear()
            for layer in reversed(layers):                   # top first, as every editor shows them
                item = QListWidgetItem(self._layer_icon(layer), self._title(layer))
                item.setData(Qt.ItemDataRole.UserRole, layer.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEditable
                              | Qt.ItemFlag.ItemIsDragEnabled)
                item.setCheckState(Qt.CheckState.Checked if layer.visible else Qt.CheckState.Unchecked)
                item.setToolTip(self._tooltip(layer))
                self.list.addItem(item)
            row = self._row_of(self.state.active_layer)
            self.list.setCurrentRow(row if row is not None else (0 if layers else -1))
            self._show_active()
        finally:
            self._updating = False
        has = doc is not None
        self.flatten_button.setEnabled(has and len(layers) > 1)

    def _show_active(self) -> None:
        layer = self._active()
        self.opacity.blockSignals(True)
        self.opacity.setValue(round(layer.opacity * 100) if layer else 100)
        self.opacity.blockSignals(False)
        count = len(self.state.document.layers) if self.state.document is not None else 0
        self.opacity.setEnabled(layer is not None)
        self.delete_button.setEnabled(layer is not None and count > 1)
        self.add_control_button.setEnabled(self.state.document is not None)
        compact = self._has_details and layer is not None and layer.control is not None
        self.list.setMinimumHeight((2 if compact else LIST_ROWS) * (THUMB + 6))
        index = None if layer is None else self.state.document.layers.index_of(layer.id)
        below = self.state.document.layers.layers[index - 1] if index else None
        controls = below is not None and (layer.control is not None or below.control is not None)
        self.merge_button.setEnabled(bool(index) and not controls)
        self.merge_button.setToolTip(NO_MERGE if controls else "Merge the selected layer into the one below")
        self._show_variants(layer)

    def _show_variants(self, layer: Layer | None) -> None:
        generation = None if layer is None else layer.generation
        self.variants.blockSignals(True)
        self.variants.clear()
        if generation is not None:
            stack = self.state.document.layers
            area = generation.variants[0].rect
            for v in generation.variants[1:]:
                area = area.union(v.rect)
            for i, variant in enumerate(generation.variants):
                icon = self._variant_icon(stack, layer, i, area)
                item = QListWidgetItem(icon, str(i + 1))
                item.setToolTip(f"Variant {i + 1}, seed {variant.seed}\n{variant.parameters}".strip())
                self.variants.addItem(item)
            self.variants.setCurrentRow(generation.selected)
        self.variants.blockSignals(False)
        shown = generation is not None and len(generation.variants) > 1
        self.variants.setVisible(shown)
        self.variants_label.setVisible(shown)

    @staticmethod
    def _title(layer: Layer) -> str:
        text = layer.name
        if layer.control is not None:
            text += f"  {CONTROL_TAG}"
        if layer.opacity < 1.0:
            text += f"  ({round(layer.opacity * 100)} %)"
        return text

    @staticmethod
    def _edited_name(text: str, layer: Layer) -> str:
        """The name typed over a title, without the tag and the opacity _title added (if they were left)."""
        suffix = LayersPanel._title(layer)[len(layer.name):]
        text = text.strip()
        if suffix.strip() and text.endswith(suffix.strip()):
            text = text[:-len(suffix.strip())].strip()
        return text

    @staticmethod
    def _tooltip(layer: Layer) -> str:
        if layer.control is not None:
            model = layer.control.model or "none picked yet"
            return (f"Control layer ({layer.control.label}): guides generation through a ControlNet and is never "
                    f"part of the image\nControlNet: {model}")
        kind = "Generative layer" if layer.generation else "Layer"
        text = f"{kind}: {layer.rect.w}x{layer.rect.h} at ({layer.x}, {layer.y})"
        if layer.generation is not None:
            count = len(layer.generation.variants)
            text += f", variant {layer.generation.selected + 1} of {count}"
            prompt = layer.generation.settings.get("prompt")
            if isinstance(prompt, str) and prompt:
                text += f"\n{prompt}"
        return text

    def _layer_icon(self, layer: Layer) -> QIcon:
        key = (id(layer.pixels), "layer")
        icon = self._thumbs.get(key)
        if icon is None:
            small = thumbnail(layer.pixels, THUMB, control=layer.control is not None)
            icon = QIcon(QPixmap.fromImage(to_qimage(small)))
            self._thumbs[key] = icon
            self._keep(layer.pixels)
        return icon

    def _variant_icon(self, stack: LayerStack, layer: Layer, index: int, area: Rect) -> QIcon:
        variant = layer.generation.variants[index]
        key = (id(variant.pixels), "variant", area)
        icon = self._thumbs.get(key)
        if icon is None:
            shown = stack.replaced(layer.with_variant(index)).changed(layer.id, visible=True)
            view = composite_rgba(shown, area.grown(max(8, max(area.w, area.h) // 8)))
            icon = QIcon(QPixmap.fromImage(to_qimage(thumbnail(view, VARIANT_THUMB))))
            self._thumbs[key] = icon
            self._keep(variant.pixels)
        return icon

    def _keep(self, pixels: np.ndarray) -> None:
        # Icons are keyed by the array's id: hold the array so the id is never reused while cached.
        self._held[id(pixels)] = pixels
        if len(self._thumbs) > 512:
            self._thumbs.clear()
            self._held.clear()

    # -- user actions -------------------------------------------------------------------------------
    def _active(self) -> Layer | None:
        doc = self.state.document
        if doc is None:
            return None
        try:
            return doc.layers.get(self.state.active_layer)
        except KeyError:
            return None

    def _row_of(self, layer_id: int) -> int | None:
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == layer_id:
                return row
        return None

    def _row_changed(self, row: int) -> None:
        if self._updating or row < 0:
            return
        self.state.set_active_layer(int(self.list.item(row).data(Qt.ItemDataRole.UserRole)))

    def _item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        layer_id = int(item.data(Qt.ItemDataRole.UserRole))
        layer = self.state.document.layers.get(layer_id)
        visible = item.checkState() == Qt.CheckState.Checked
        if visible != layer.visible:
            self.state.set_layer_visible(layer_id, visible)
        elif item.text() != self._title(layer):
            name = self._edited_name(item.text(), layer)
            if name and name != layer.name:
                self.state.rename_layer(layer_id, name)
            else:
                self._refresh_timer.start()

    def _rows_moved(self, *_args) -> None:
        if self._updating:
            return
        ids = [int(self.list.item(row).data(Qt.ItemDataRole.UserRole)) for row in range(self.list.count())]
        self.state.reorder_layers(ids[::-1])             # the list is top first, the stack bottom first
        self._refresh_timer.start()

    def _opacity_changed(self, value: int) -> None:
        layer = self._active()
        if layer is not None and not self._updating:
            self.state.set_layer_opacity(layer.id, value / 100)

    def _delete(self) -> None:
        layer = self._active()
        if layer is not None:
            self.state.remove_layer(layer.id)

    def _merge(self) -> None:
        layer = self._active()
        if layer is not None:
            self.state.merge_down(layer.id)

    def _variant_chosen(self, row: int) -> None:
        layer = self._active()
        if layer is not None and row >= 0:
            self.state.select_variant(layer.id, row)


def thumbnail(pixels: np.ndarray, side: int, control: bool = False) -> np.ndarray:
    """At most side x side, area-averaged, over a checkerboard where it is transparent; a control layer's
    drawing in the control tint on a dark ground, framed in it."""
    height, width = pixels.shape[:2]
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    step = max(1, int(1 / scale) // 4)                # every n-th pixel first: a 4096² layer is 64 MB
    small = cv2.resize(np.ascontiguousarray(pixels[::step, ::step]), size, interpolation=cv2.INTER_AREA)
    if control:
        return _control_thumbnail(small)
    if small.shape[2] == 3:
        return small
    rows, cols = np.indices(small.shape[:2])
    board = np.where(((rows // _CHECKER) + (cols // _CHECKER)) % 2 == 0, 235, 200).astype(np.float32)
    alpha = small[..., 3:4].astype(np.float32) / 255
    out = small[..., :3].astype(np.float32) * alpha + board[..., None] * (1 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _control_thumbnail(small: np.ndarray) -> np.ndarray:
    if small.shape[2] == 4 and int(small[..., 3].min()) < 255:
        alpha = small[..., 3:4].astype(np.float32) / 255
        ink = np.array(CONTROL_INK, np.float32) * alpha + np.array(CONTROL_PAPER, np.float32) * (1 - alpha)
        out = np.clip(np.rint(ink), 0, 255).astype(np.uint8)
    else:
        out = np.ascontiguousarray(small[..., :3])
    out[[0, -1], :] = CONTROL_INK
    out[:, [0, -1]] = CONTROL_INK
    return out
