"""The editing canvas: shows the document, its mask, its control layers and the canvas rectangle, and runs the
mask tools; on a control layer that is drawn on, the brush and the eraser paint that layer instead of the mask.

Widget coordinates = image coordinates * zoom + offset. The document image and the mask overlay are
cached as QImages that wrap numpy buffers (no copy); the overlay is refreshed only where the mask changed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QCursor, QImage, QPainter
from PySide6.QtWidgets import QWidget

from app.core.changes import MaskPatchChange
from app.core.geometry import Rect
from app.editor.editor_state import EditorState
from app.widgets import canvas_drawing as drawing
from app.widgets import canvas_tools as tools
from app.widgets.control_commands import ControlStroke
from app.widgets.mip_cache import MipCache
from app.widgets.qt_image import qimage_from_array

HINT = "Open an image (Ctrl+O), drop one here, or paste (Ctrl+V)"
BACKGROUND = QColor(38, 38, 40)
EDGE_CURSORS = {"l": Qt.SizeHorCursor, "r": Qt.SizeHorCursor, "t": Qt.SizeVerCursor,
                "b": Qt.SizeVerCursor, "tl": Qt.SizeFDiagCursor, "br": Qt.SizeFDiagCursor,
                "tr": Qt.SizeBDiagCursor, "bl": Qt.SizeBDiagCursor}


@dataclass
class _Gesture:
    kind: str                      # "pan", "stroke", "rect", "lasso", "object" or "edge"
    button: Qt.MouseButton
    start_widget: QPointF
    start_image: tuple[float, float]
    last_image: tuple[float, float]
    start_offset: QPointF = field(default_factory=QPointF)
    before: np.ndarray | None = None
    dirty: Rect = tools.EMPTY
    erase: bool = False
    subtract: bool = False
    points: list[tuple[float, float]] = field(default_factory=list)
    edges: str = ""
    start_canvas: Rect | None = None
    canvas: Rect | None = None
    start_zoom: float = 1.0
    fit: bool = False              # the view was fitted when the edge drag began
    modifiers: object = None       # the keys held when it began (Select object: how the result combines)
    control: ControlStroke | None = None     # a stroke on a control layer (not on the mask)


class CanvasView(QWidget):
    zoom_changed = Signal(float)
    cursor_moved = Signal(int, int)
    wand_clicked = Signal(int, int, object)          # image x, y, keyboard modifiers (magic wand tool)
    object_boxed = Signal(object, object)            # Rect in image pixels, modifiers (Select object tool)

    MIN_ZOOM = 1 / 64
    MAX_ZOOM = 32.0
    ZOOM_STEP = 1.25
    EDGE_GRAB = 6
    HANDLE = drawing.HANDLE
    FIT_MARGIN = 24

    def __init__(self, state: EditorState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self.setAccessibleName("Canvas")
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self.setMinimumSize(120, 90)
        self.state = state
        self._zoom = 1.0
        self._offset = QPointF(0.0, 0.0)
        self._auto_fit = True
        self._image: tuple[np.ndarray, QImage] | None = None
        self._mips = MipCache(self)
        self._mips.ready.connect(self.update)
        self._image_size: tuple[int, int] | None = None
        self._overlay: tuple[np.ndarray, QImage] | None = None
        self._overlay_of: np.ndarray | None = None      # the mask array the overlay was made from
        self._lut = tools.overlay_lut()
        self._preview: tuple[np.ndarray, QImage, Rect] | None = None      # array, its QImage, where
        self._candidate: tuple[np.ndarray, QImage, Rect] | None = None
        self._candidate_mips = MipCache(self)
        self._candidate_mips.ready.connect(self.update)
        self._mouse: QPointF | None = None
        self._hover_edges = ""
        self._space = False
        self._gesture: _Gesture | None = None
        self._checker = drawing.checker_brush()
        self._controls = drawing.ControlOverlays()

        state.document_replaced.connect(self._on_document_replaced)
        state.image_changed.connect(self._on_image_changed)
        state.mask_changed.connect(self._on_mask_changed)
        self._ants = drawing.MaskOutline()
        self._ants_timer = QTimer(self)
        self._ants_timer.setInterval(250)
        self._ants_timer.timeout.connect(self._march)
        state.canvas_changed.connect(self._on_canvas_changed)
        state.overlay_changed.connect(self._on_overlay_changed)
        state.tool_changed.connect(self._on_tool_changed)
        state.brush_changed.connect(self.update)
        self._rebuild_image()
        self._rebuild_overlay()
        self._on_overlay_changed()
        self._update_cursor()

    # -- view -------------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self._zoom

    @zoom.setter
    def zoom(self, value: float) -> None:
        self.set_zoom(value)

    @property
    def canvas_preview(self) -> Rect | None:
        """The canvas rectangle being dragged (not yet committed), or None."""
        g = self._gesture
        return g.canvas if g is not None and g.kind == "edge" else None

    def widget_to_image(self, pos: QPointF) -> tuple[float, float]:
        return ((pos.x() - self._offset.x()) / self._zoom, (pos.y() - self._offset.y()) / self._zoom)

    def image_to_widget(self, x, y: float | None = None) -> QPointF:
        """Accepts (x, y), a QPointF or an (x, y) tuple in image coordinates."""
        if y is None:
            x, y = (x.x(), x.y()) if isinstance(x, QPointF) else x
        return QPointF(x * self._zoom + self._offset.x(), y * self._zoom + self._offset.y())

    def image_rect_to_widget(self, rect: Rect) -> QRectF:
        top_left = self.image_to_widget(rect.x, rect.y)
        return QRectF(top_left.x(), top_left.y(), rect.w * self._zoom, rect.h * self._zoom)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under `anchor` (default: the widget centre) where it is."""
        zoom = min(max(float(zoom), self.MIN_ZOOM), self.MAX_ZOOM)
        if anchor is None:
            anchor = QPointF(self.width() / 2, self.height() / 2)
        ix, iy = self.widget_to_image(anchor)
        self._auto_fit = False
        self._set_view(zoom, QPointF(anchor.x() - ix * zoom, anchor.y() - iy * zoom))

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom * self.ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom / self.ZOOM_STEP)

    def zoom_100(self) -> None:
        self.set_zoom(1.0)
        self._offset = QPointF(round(self._offset.x()), round(self._offset.y()))

    def fit(self) -> None:
        """Show the whole canvas (and the image, where the canvas crops it) centred in the widget."""
        doc = self.state.document
        self._auto_fit = True
        if doc is None or self.width() <= 0 or self.height() <= 0:
            return
        area = doc.canvas.union(doc.image_rect)
        avail_w = max(self.width() - 2 * self.FIT_MARGIN, 16)
        avail_h = max(self.height() - 2 * self.FIT_MARGIN, 16)
        zoom = min(max(min(avail_w / area.w, avail_h / area.h), self.MIN_ZOOM), self.MAX_ZOOM)
        self._set_view(zoom, QPointF(self.width() / 2 - (area.x + area.w / 2) * zoom,
                                     self.height() / 2 - (area.y + area.h / 2) * zoom))

    def _set_view(self, zoom: float, offset: QPointF) -> None:
        changed = zoom != self._zoom
        self._zoom = zoom
        self._offset = QPointF(offset)
        self.update()
        if changed:
            self.zoom_changed.emit(zoom)

    def sizeHint(self) -> QSize:
        return QSize(800, 600)

    # -- caches -----------------------------------------------------------------------------------
    def _rebuild_image(self) -> None:
        doc = self.state.document
        self._image = None if doc is None else qimage_from_array(doc.image)
        self._mips.set_image(*(self._image or (None, None)), changed=True)     # updated in place, maybe
        self._image_size = None if doc is None else (doc.width, doc.height)

    def _rebuild_overlay(self) -> None:
        doc = self.state.document
        if doc is None:
            self._overlay = None
            return
        buf = self._lut[doc.mask]
        self._overlay = (buf, QImage(buf.data, doc.width, doc.height, buf.strides[0],
                                     QImage.Format_ARGB32_Premultiplied))
        self._overlay_of = doc.mask

    def _refresh_overlay(self, rect: Rect | None) -> None:
        doc = self.state.document
        if doc is None:
            return
        if rect is None or self._overlay is None or self._overlay[0].shape[:2] != doc.mask.shape:
            self._rebuild_overlay()
            self.update()
            return
        rect = rect.intersect(doc.image_rect)
        if rect.is_empty():
            return
        rows, cols = rect.slices()
        self._overlay[0][rows, cols] = self._lut[doc.mask[rows, cols]]
        self._overlay_of = doc.mask
        self.update(self._widget_update_rect(rect))

    def _widget_update_rect(self, rect: Rect) -> QRect:
        return self.image_rect_to_widget(rect).toAlignedRect().adjusted(-2, -2, 2, 2)

    # -- state signals ----------------------------------------------------------------------------
    def _on_document_replaced(self) -> None:
        self._controls.set_preview(None)
        self._sync_controls()
        self._rebuild_image()
        self._rebuild_overlay()
        self.fit()
        self.update()

    def _on_image_changed(self) -> None:
        doc = self.state.document
        old_size = self._image_size
        self._sync_controls()
        self._rebuild_image()
        # A layer edit leaves the mask alone, and the overlay of a 4096² mask takes a third of a second to
        # redo: only a mask that is another array now (undo of an Accept that cleared it, an Expand) needs it.
        if doc is None or self._overlay_of is not doc.mask or self._overlay is None:
            self._rebuild_overlay()
            self._ants.invalidate()
        if doc is not None and old_size != (doc.width, doc.height):
            self.fit()
        self.update()

    def _sync_controls(self) -> None:
        """The control overlays made anew for the document's layers; a stroke in progress is dropped."""
        g, self._gesture = self._gesture, None
        drawn_on = g.control.layer_id if g is not None and g.control is not None else 0
        self._controls.sync(self.state.document.layers.layers if self.state.document is not None else (), drawn_on)

    def set_control_preview(self, image: np.ndarray | None) -> None:
        """Show `image` (the image's size) over the image at CONTROL_PREVIEW_OPACITY; None hides it."""
        self._controls.set_preview(image)
        self.update()

    def _on_canvas_changed(self) -> None:
        if self._auto_fit:
            self.fit()
        self.update()

    def _on_mask_changed(self, rect) -> None:
        self._refresh_overlay(rect if isinstance(rect, Rect) else None)
        self._ants.invalidate()

    def _march(self) -> None:
        if self.state.document is None or not self.isVisible():
            self._ants_timer.stop()
            return
        if self.state.preview is not None:             # a job is painting previews: the ants hold still
            return
        box = self._ants.bounds()
        if box is not None:
            self._ants.phase = (self._ants.phase + 1) % 8
            self.update(self._widget_update_rect(box))   # only where the ants are

    def _on_overlay_changed(self) -> None:
        preview, candidate = self.state.preview, self.state.candidate
        before = self._preview[2] if self._preview is not None else None
        candidate_before = self._candidate
        self._preview = None if preview is None else (*qimage_from_array(preview[0]), preview[1])
        self._candidate = None if candidate is None else (*qimage_from_array(candidate[0]),
                                                          candidate[1])
        self._candidate_mips.set_image(*(self._candidate[:2] if self._candidate is not None else (None, None)))
        if candidate_before is None and self._candidate is None and before is not None and preview is not None:
            # A step's preview replaced the last one: repaint only where they lie, not the whole canvas.
            area = self.image_rect_to_widget(before.union(preview[1])).toAlignedRect().adjusted(-2, -2, 2, 2)
            self.update(area)
        else:
            self.update()

    def _on_tool_changed(self, _tool: str) -> None:
        self._hover_edges = self.edges_at(self._mouse) if self._mouse is not None and not self._space else ""
        self._update_cursor()
        self.update()

    # -- painting ---------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(event.rect(), BACKGROUND)
        doc = self.state.document
        if doc is None:
            p.setPen(QColor(170, 170, 175))
            p.drawText(self.rect().adjusted(16, 16, -16, -16), Qt.AlignCenter | Qt.TextWordWrap, HINT)
            p.end()
            return
        canvas = self.canvas_preview or doc.canvas
        image_w = self.image_rect_to_widget(doc.image_rect)
        canvas_w = self.image_rect_to_widget(canvas)
        p.setBrushOrigin(canvas_w.topLeft())
        p.fillRect(canvas_w, self._checker)
        if doc.has_alpha:
            p.fillRect(image_w, self._checker)
        candidate = self._candidate is not None and self.state.candidate is not None
        mips, target = ((self._candidate_mips, self.image_rect_to_widget(self._candidate[2])) if candidate
                        else (self._mips, image_w))
        image, exact = mips.image_for(self._zoom)
        p.setRenderHint(QPainter.SmoothPixmapTransform, exact and self._zoom < 2.0)
        p.drawImage(target, image)
        p.setRenderHint(QPainter.SmoothPixmapTransform, self._zoom < 2.0)
        if not candidate:
            if not canvas.contains_rect(doc.image_rect):
                drawing.darken_outside(p, image_w, canvas_w)
            self._controls.paint(p, self.image_rect_to_widget, image_w)
        if self._overlay is not None and not candidate:
            p.drawImage(image_w, self._overlay[1])
        # Over a variant only the ants show the mask (a stroke painted meanwhile too, once it ends), so the
        # variant can be judged, as Photoshop shows a selection over a generated result.
        self._paint_ants(p, doc)
        if not candidate and self._preview is not None and self.state.preview is not None:
            p.drawImage(self.image_rect_to_widget(self._preview[2]), self._preview[1])
        drawing.paint_canvas_frame(p, canvas_w)
        drawing.paint_gesture(p, self, self._gesture, canvas)
        self._paint_brush_cursor(p)
        p.end()

    def _paint_ants(self, p: QPainter, doc) -> None:
        stroking = self._gesture is not None and self._gesture.kind == "stroke"
        shown = self._ants.paint(p, doc.mask, not stroking, self._zoom, self._offset)
        if shown != self._ants_timer.isActive():
            self._ants_timer.start() if shown else self._ants_timer.stop()

    def _brush_cursor_visible(self) -> bool:
        g = self._gesture
        return (self._mouse is not None and self.state.document is not None
                and self.state.tool in ("brush", "eraser") and not self._space
                and (g.kind == "stroke" if g is not None else not self._hover_edges))

    def _brush_cursor_rect(self) -> QRect:
        r = self.state.brush_size * self._zoom / 2 + 3
        return QRectF(self._mouse.x() - r, self._mouse.y() - r, 2 * r, 2 * r).toAlignedRect()

    def _paint_brush_cursor(self, p: QPainter) -> None:
        if self._brush_cursor_visible():
            drawing.paint_brush_cursor(p, self._mouse, self.state.brush_size * self._zoom / 2)

    # -- hit testing and cursor ---------------------------------------------------------------------
    def edges_at(self, pos: QPointF) -> str:
        """Which canvas edges a press at `pos` would drag: "", "l", "t", "r", "b" or a corner ("tl")."""
        doc = self.state.document
        if doc is None:
            return ""
        c = self.image_rect_to_widget(doc.canvas)
        painting = self.state.tool != "canvas"
        ix, iy = self.widget_to_image(pos)
        if painting and 0 <= ix < doc.width and 0 <= iy < doc.height:
            return ""                         # over the image a painting tool paints, even on a handle
        tol = self.EDGE_GRAB if painting else self.EDGE_GRAB * 2
        x, y = pos.x(), pos.y()
        if not (c.left() - tol <= x <= c.right() + tol and c.top() - tol <= y <= c.bottom() + tol):
            return ""
        dl, dr, dt, db = abs(x - c.left()), abs(x - c.right()), abs(y - c.top()), abs(y - c.bottom())
        horizontal = "l" if dl <= tol and dl <= dr else "r" if dr <= tol else ""
        vertical = "t" if dt <= tol and dt <= db else "b" if db <= tol else ""
        return vertical + horizontal

    def _update_cursor(self) -> None:
        g = self._gesture
        if g is not None and g.kind == "pan" or g is None and self._space:
            shape = Qt.ClosedHandCursor if g is not None else Qt.OpenHandCursor
        elif g is not None and g.kind == "edge":
            shape = EDGE_CURSORS[g.edges]
        elif g is None and self._hover_edges:
            shape = EDGE_CURSORS[self._hover_edges]
        elif self.state.tool == "canvas":
            shape = Qt.OpenHandCursor
        else:
            shape = Qt.CrossCursor
        self.setCursor(QCursor(shape))

    # -- mouse ----------------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        if self._gesture is not None:
            event.accept()
            return
        pos = event.position()
        doc = self.state.document
        button = event.button()
        tool = self.state.tool
        img = self.widget_to_image(pos)
        edges = self.edges_at(pos) if button == Qt.LeftButton and not self._space else ""
        pans = self._space or tool == "canvas" and not edges
        if button == Qt.MiddleButton or button == Qt.LeftButton and pans:
            self._gesture = _Gesture("pan", button, pos, img, img,
                                     start_offset=QPointF(self._offset))
        elif button != Qt.LeftButton or doc is None:
            super().mousePressEvent(event)
            return
        elif edges:
            self._gesture = _Gesture("edge", button, pos, img, img, edges=edges,
                                     start_canvas=doc.canvas, canvas=doc.canvas,
                                     start_offset=QPointF(self._offset), start_zoom=self._zoom,
                                     fit=self._auto_fit)
        elif tool in ("brush", "eraser"):
            control = ControlStroke.on_layer(doc, self.state.active_layer)
            self._gesture = _Gesture("stroke", button, pos, img, img, erase=tool == "eraser", control=control,
                                     before=doc.begin_mask_edit() if control is None else None)
            self._stroke_to(img)
        elif tool in ("rect", "lasso"):
            subtract = bool(event.modifiers() & (Qt.ShiftModifier | Qt.AltModifier))
            self._gesture = _Gesture(tool, button, pos, img, img, subtract=subtract, points=[img])
        elif tool == "object":
            self._gesture = _Gesture("object", button, pos, img, img, points=[img], modifiers=event.modifiers())
        elif tool == "wand":
            x, y = math.floor(img[0]), math.floor(img[1])
            if doc.image_rect.contains_rect(Rect(x, y, 1, 1)):
                self.wand_clicked.emit(x, y, event.modifiers())
        self._update_cursor()
        self.update()
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        old_cursor = self._brush_cursor_rect() if self._brush_cursor_visible() else None
        self._mouse = QPointF(pos)
        img = self.widget_to_image(pos)
        if self.state.document is not None:
            self.cursor_moved.emit(math.floor(img[0]), math.floor(img[1]))
        g = self._gesture
        if g is None:
            edges = "" if self._space else self.edges_at(pos)
            if edges != self._hover_edges:
                self._hover_edges = edges
                self._update_cursor()
        elif g.kind == "pan":
            self._offset = g.start_offset + (pos - g.start_widget)
            self._auto_fit = False
            self.update()
        elif g.kind == "stroke":
            self._stroke_to(img)
        elif g.kind == "edge":
            self._drag_edges(g, pos)
        elif g.kind in ("rect", "lasso", "object"):
            last = self.image_to_widget(g.points[-1])
            if g.kind == "rect" or abs(pos.x() - last.x()) + abs(pos.y() - last.y()) >= 2:
                g.points.append(img)
            g.last_image = img
            self.update()
        if g is None or g.kind == "stroke":
            if old_cursor is not None:
                self.update(old_cursor)
            if self._brush_cursor_visible():
                self.update(self._brush_cursor_rect())
        event.accept()

    def mouseReleaseEvent(self, event) -> None:
        g = self._gesture
        if g is None or event.button() != g.button:
            if g is None:
                super().mouseReleaseEvent(event)
            return
        self._gesture = None
        doc = self.state.document
        if doc is not None:
            img = self.widget_to_image(event.position())
            if g.kind == "stroke":
                self._stroke_to(img, g)
                if g.control is not None:
                    self._controls.finish(g.control, self.state)
                else:
                    label = "Erase" if g.erase else "Brush stroke"
                    self.state.push_applied(MaskPatchChange.capture(doc, g.dirty, g.before, label))
            elif g.kind == "edge":
                self.state.set_canvas(g.canvas)
                if g.fit:
                    self.fit()
            elif g.kind in ("rect", "lasso"):
                self._apply_selection(g, img)
            elif g.kind == "object":
                box = tools.rect_from_points(g.start_image, img).intersect(doc.image_rect)
                if box.w >= 4 and box.h >= 4:
                    self.object_boxed.emit(box, g.modifiers)
        self._update_cursor()
        self.update()
        event.accept()

    def _drag_edges(self, g: _Gesture, pos: QPointF) -> None:
        """Move the dragged edges as far as the mouse went, measured in the view the drag began with, so
        the zoom-out or scroll that keeps them in sight does not move them further on its own."""
        x = (pos.x() - g.start_offset.x()) / g.start_zoom
        y = (pos.y() - g.start_offset.y()) / g.start_zoom
        g.canvas = tools.drag_canvas_edges(self.state.document.image_rect, g.start_canvas, g.edges,
                                           x - g.start_image[0], y - g.start_image[1],
                                           crop=self.state.tool == "canvas")
        zoom, offset = tools.view_following_edges(
            g.canvas, g.edges, g.start_zoom, (g.start_offset.x(), g.start_offset.y()),
            (self.width(), self.height()), self.HANDLE, g.fit, self.MIN_ZOOM)
        self._set_view(zoom, QPointF(*offset))

    def _stroke_to(self, img: tuple[float, float], g: _Gesture | None = None) -> None:
        g = g or self._gesture
        doc = self.state.document
        size, softness = self.state.brush_size, self.state.brush_softness
        if g.control is not None:                      # a control layer's drawing, shown as it is painted
            dirty = self._controls.stroke(g.control, doc.layers, g.last_image, img, size, softness, g.erase)
            if not dirty.is_empty():
                self.update(self._widget_update_rect(dirty))
        else:
            dirty = tools.paint_segment(doc.editable_mask(), g.last_image, img, size, softness, g.erase)
            if not dirty.is_empty():
                g.dirty = g.dirty.union(dirty)
                self._refresh_overlay(dirty)
        g.last_image = img

    def _apply_selection(self, g: _Gesture, img: tuple[float, float]) -> None:
        doc = self.state.document
        before = doc.begin_mask_edit()
        value = 0 if g.subtract else 255
        if g.kind == "rect":
            dirty = tools.fill_rect(doc.mask, tools.rect_from_points(g.start_image, img), value)
            label = "Rectangle selection"
        else:
            dirty = tools.fill_polygon(doc.mask, g.points + [img], value)
            label = "Lasso selection"
        if g.subtract:
            label = "Subtract " + label.lower()
        self.state.push_applied(MaskPatchChange.capture(doc, dirty, before, label))

    def cancel_gesture(self) -> None:
        """Abandon the drag in progress (Escape): a live stroke is painted back out, nothing is recorded."""
        g, self._gesture = self._gesture, None
        doc = self.state.document
        if g is not None and g.control is not None and doc is not None:
            self._controls.sync(doc.layers.layers, g.control.layer_id)
        elif g is not None and g.kind == "stroke" and doc is not None and not g.dirty.is_empty():
            rows, cols = g.dirty.slices()
            doc.editable_mask()[rows, cols] = g.before[rows, cols]
            self._refresh_overlay(g.dirty)
        elif g is not None and g.kind == "edge":
            self._set_view(g.start_zoom, g.start_offset)
        self._update_cursor()
        self.update()

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        if not delta:
            delta = event.pixelDelta().y()
        if delta and self.state.document is not None:
            self.set_zoom(self._zoom * self.ZOOM_STEP ** (delta / 120.0), event.position())
        event.accept()

    def leaveEvent(self, event) -> None:
        if self._mouse is not None and self._brush_cursor_visible():
            self.update(self._brush_cursor_rect())
        self._mouse = None
        super().leaveEvent(event)

    def resizeEvent(self, event) -> None:
        if self._auto_fit:
            self.fit()
        elif event.oldSize().isValid():
            d = event.size() - event.oldSize()
            self._offset += QPointF(d.width() / 2, d.height() / 2)
        super().resizeEvent(event)

    # -- keys ---------------------------------------------------------------------------------------
    def keyPressEvent(self, event) -> None:
        key = event.key()
        plain = not (event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier))
        tools_by_key = {Qt.Key_B: "brush", Qt.Key_E: "eraser", Qt.Key_M: "rect", Qt.Key_L: "lasso",
                        Qt.Key_W: "wand", Qt.Key_O: "object"}
        if key == Qt.Key_Space:
            if not event.isAutoRepeat():
                self._space = True
                self._hover_edges = ""
                self._update_cursor()
                self.update()
        elif key == Qt.Key_BracketLeft and plain:
            self.state.shrink_brush()
        elif key == Qt.Key_BracketRight and plain:
            self.state.grow_brush()
        elif key in tools_by_key and plain and not event.modifiers() & Qt.ShiftModifier:
            self.state.set_tool(tools_by_key[key])
        elif key == Qt.Key_Escape and self._gesture is not None:
            self.cancel_gesture()
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._update_cursor()
            self.update()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        self._space = False
        self._update_cursor()
        super().focusOutEvent(event)
