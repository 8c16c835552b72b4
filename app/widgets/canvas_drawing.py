"""What the canvas draws around the document: the checkerboard, the canvas frame with its handles, the size
label of an edge drag, the brush cursor (in widget coordinates), and the control layers over the image."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

from app.core.geometry import Rect
from app.widgets.qt_image import qimage_from_array

HANDLE = 8                     # px side of the frame's handles
CONTROL_TINT = (0, 220, 255)   # a control layer's drawing, at CONTROL_OPACITY of its coverage
CONTROL_OPACITY = 0.7
CONTROL_MAP_OPACITY = 0.55     # an opaque imported map (depth, pose) is shown as it is, at this opacity
CONTROL_PREVIEW_OPACITY = 0.8  # "Show control image"


def checker_brush() -> QBrush:
    tile = QPixmap(16, 16)
    tile.fill(QColor(78, 78, 82))
    p = QPainter(tile)
    p.fillRect(0, 0, 8, 8, QColor(100, 100, 104))
    p.fillRect(8, 8, 8, 8, QColor(100, 100, 104))
    p.end()
    return QBrush(tile)


def paint_canvas_frame(p: QPainter, rect: QRectF) -> None:
    """A dashed black-and-white frame with a handle at each corner and in the middle of each side."""
    p.setRenderHint(QPainter.Antialiasing, False)
    p.setBrush(Qt.NoBrush)
    p.setPen(QPen(QColor(0, 0, 0), 1))
    p.drawRect(rect)
    dashed = QPen(QColor(255, 255, 255), 1, Qt.DashLine)
    dashed.setDashPattern([4, 4])
    p.setPen(dashed)
    p.drawRect(rect)
    p.setPen(QPen(QColor(0, 0, 0), 1))
    p.setBrush(QColor(255, 255, 255))
    for x in (rect.left(), rect.center().x(), rect.right()):
        for y in (rect.top(), rect.center().y(), rect.bottom()):
            if x != rect.center().x() or y != rect.center().y():
                p.drawRect(QRectF(x - HANDLE / 2, y - HANDLE / 2, HANDLE, HANDLE))


def darken_outside(p: QPainter, image: QRectF, canvas: QRectF) -> None:
    """Shade the part of the image the canvas crops away."""
    outside = QPainterPath()
    outside.addRect(image)
    inside = QPainterPath()
    inside.addRect(canvas)
    p.fillPath(outside.subtracted(inside), QColor(0, 0, 0, 130))


def paint_size_label(p: QPainter, text: str, frame: QRectF, font: QFont, area: QSizeF) -> None:
    """`text` in a dark rounded box under `frame`, kept inside a widget of size `area`."""
    font = QFont(font)
    font.setPointSizeF(max(font.pointSizeF(), 9.0))
    p.setFont(font)
    metrics = p.fontMetrics()
    box = QRectF(0, 0, metrics.horizontalAdvance(text) + 12, metrics.height() + 6)
    box.moveCenter(QPointF(frame.center().x(), frame.bottom() + 10 + box.height() / 2))
    box.moveLeft(min(max(box.left(), 4.0), area.width() - box.width() - 4))
    box.moveTop(min(max(box.top(), 4.0), area.height() - box.height() - 4))
    p.setPen(Qt.NoPen)
    p.setBrush(QColor(0, 0, 0, 190))
    p.drawRoundedRect(box, 4, 4)
    p.setPen(QColor(255, 255, 255))
    p.drawText(box, Qt.AlignCenter, text)


def paint_gesture(p: QPainter, view, g, canvas: Rect) -> None:
    """What a drag on the canvas `view` shows while it lasts: the rectangle or lasso being drawn, or the size of
    the canvas whose edges are dragged."""
    from app.widgets.canvas_tools import rect_from_points

    if g is None:
        return
    p.setBrush(Qt.NoBrush)
    pen = QPen(QColor(80, 160, 255) if g.subtract else QColor(255, 255, 255), 1, Qt.DashLine)
    if g.kind in ("rect", "object"):
        p.setPen(pen)
        p.drawRect(view.image_rect_to_widget(rect_from_points(g.start_image, g.last_image)))
    elif g.kind == "lasso" and len(g.points) > 1:
        p.setPen(pen)
        p.drawPolyline(QPolygonF([view.image_to_widget(pt) for pt in g.points + [g.points[0]]]))
    elif g.kind == "edge":
        paint_size_label(p, f"{canvas.w} x {canvas.h}", view.image_rect_to_widget(canvas), view.font(),
                         QSizeF(view.size()))


def paint_brush_cursor(p: QPainter, centre: QPointF, radius: float) -> None:
    """A white circle inside a black one, visible on any image."""
    p.setRenderHint(QPainter.Antialiasing, True)
    p.setBrush(Qt.NoBrush)
    p.setPen(QPen(QColor(0, 0, 0, 200), 1))
    p.drawEllipse(centre, radius + 1, radius + 1)
    p.setPen(QPen(QColor(255, 255, 255, 230), 1))
    p.drawEllipse(centre, radius, radius)


class MaskOutline:
    """The mask's marching ants: its outline at half strength, traced once per mask change (not while a
    stroke is being painted) and drawn as two dashed lines whose dashes move with `phase`."""

    def __init__(self) -> None:
        self._path = None
        self._dirty = True
        self.phase = 0

    def invalidate(self) -> None:
        self._dirty = True

    def bounds(self):
        """The outline's bounding box in image pixels (a Rect), None when there is none."""
        from app.core.geometry import Rect

        if self._path is None or self._path.isEmpty():
            return None
        r = self._path.boundingRect().toAlignedRect()
        return Rect(r.x() - 1, r.y() - 1, r.width() + 2, r.height() + 2)

    def path(self, mask, tracing_allowed: bool):
        from PySide6.QtGui import QPainterPath

        from app.core.selection import outline

        if self._dirty and tracing_allowed and mask is not None:
            path = QPainterPath()
            for line in outline(mask):
                if len(line) < 2:
                    continue
                path.moveTo(float(line[0][0]) + 0.5, float(line[0][1]) + 0.5)
                for x, y in line[1:]:
                    path.lineTo(float(x) + 0.5, float(y) + 0.5)
                path.closeSubpath()
            self._path, self._dirty = path, False
        return self._path

    def paint(self, p: QPainter, mask, tracing_allowed: bool, zoom: float, offset: QPointF) -> bool:
        """Draw the ants at this zoom and offset; False when there is no outline to show."""
        from PySide6.QtGui import QTransform

        path = self.path(mask, tracing_allowed)
        if path is None or path.isEmpty():
            return False
        p.save()
        p.setTransform(QTransform(zoom, 0, 0, zoom, offset.x(), offset.y()))
        p.setBrush(Qt.NoBrush)
        for colour, offset in ((QColor(0, 0, 0), 0), (QColor(255, 255, 255), 4)):
            pen = QPen(colour, 0)               # cosmetic: one device pixel at any zoom
            pen.setDashPattern([4, 4])
            pen.setDashOffset(self.phase + offset)
            p.setPen(pen)
            p.drawPath(path)
        p.restore()
        return True


def _tint_lut() -> np.ndarray:
    """256 x 4: a drawing's alpha -> its premultiplied RGBA pixel in CONTROL_TINT at CONTROL_OPACITY."""
    shown = np.arange(256, dtype=np.float32) * CONTROL_OPACITY
    lut = np.empty((256, 4), np.uint8)
    for channel, value in enumerate(CONTROL_TINT):
        lut[:, channel] = np.rint(shown * (value / 255.0))
    lut[:, 3] = np.rint(shown)
    return lut


_TINT = _tint_lut()


def control_overlay_pixels(rgba: np.ndarray, tinted: bool) -> np.ndarray:
    """A control layer's pixels as the canvas shows them, premultiplied RGBA (QImage.Format_RGBA8888_Premultiplied):
    its drawing in CONTROL_TINT (`tinted`) or, for an opaque imported map, its own colours, faded."""
    alpha = rgba[..., 3] if rgba.shape[2] == 4 else np.full(rgba.shape[:2], 255, np.uint8)
    if tinted:
        return _TINT[alpha]
    shown = alpha.astype(np.uint16) * round(CONTROL_MAP_OPACITY * 256) >> 8
    out = np.empty((*rgba.shape[:2], 4), np.uint8)
    out[..., :3] = (rgba[..., :3] * shown[..., None] + 127) // 255
    out[..., 3] = shown
    return out


@dataclass
class _ShownControl:
    source: np.ndarray          # the layer pixels this was made from
    tinted: bool
    pixels: np.ndarray          # control_overlay_pixels of them, which `image` wraps
    image: QImage
    rect: Rect                  # where the layer lies, in image coordinates
    opacity: float


class ControlOverlays:
    """The control layers as the canvas shows them over the image (never part of it): one premultiplied
    image per visible control layer, remade only when its pixels are another array, and changed in place
    where a pen stroke paints."""

    def __init__(self) -> None:
        self._shown: dict[int, _ShownControl] = {}
        self._preview: tuple[np.ndarray, QImage] | None = None     # "Show control image", over the image

    def set_preview(self, image: np.ndarray | None) -> None:
        self._preview = None if image is None else qimage_from_array(image)

    def sync(self, layers, drawn_on: int = 0) -> None:
        """Show the visible control layers of `layers` (bottom first); the layer `drawn_on` by a stroke that
        did not end is made anew (the stroke was drawn into its overlay)."""
        self._shown.pop(drawn_on, None)
        shown = {}
        for layer in layers:
            if layer.control is None or not layer.visible:
                continue
            old = self._shown.get(layer.id)
            if old is not None and old.source is layer.pixels:
                old.rect, old.opacity = layer.rect, layer.opacity
                shown[layer.id] = old
            else:
                shown[layer.id] = self._made(layer.pixels, layer.rect, layer.opacity)
        self._shown = shown

    @staticmethod
    def _made(pixels: np.ndarray, rect: Rect, opacity: float) -> _ShownControl:
        tinted = pixels.shape[2] == 4 and int(pixels[..., 3].min()) < 255
        out = control_overlay_pixels(pixels, tinted)
        image = QImage(out.data, out.shape[1], out.shape[0], out.strides[0],
                       QImage.Format.Format_RGBA8888_Premultiplied)
        return _ShownControl(pixels, tinted, out, image, rect, opacity)

    def finish(self, stroke, state) -> None:
        """End a ControlStroke: its pixels become the layer's, one undo step, and the overlay it was drawn into
        stays (it shows them already)."""
        from app.widgets.control_commands import STROKE_LABEL

        pixels = stroke.result()
        if pixels is None:
            return
        shown = self._shown.get(stroke.layer_id)
        if shown is not None and shown.tinted:
            shown.source = pixels
        state.set_layer_pixels(stroke.layer_id, pixels, STROKE_LABEL)

    def stroke(self, stroke, layers, a: tuple[float, float], b: tuple[float, float], diameter: float,
               softness: float, erase: bool) -> Rect:
        """Paint a ControlStroke from a to b and show what it has so far (a hidden layer shows while it is drawn
        on); what changed, in image coordinates."""
        dirty = stroke.paint(a, b, diameter, softness, erase)
        if dirty.is_empty():
            return dirty
        shown = self._shown.get(stroke.layer_id)
        if shown is None:
            layer = layers.get(stroke.layer_id)
            shown = self._shown[layer.id] = self._made(layer.pixels, layer.rect, max(layer.opacity, 0.5))
        part = Rect(dirty.x - stroke.x, dirty.y - stroke.y, dirty.w, dirty.h)
        rows, cols = part.slices()
        shown.pixels[rows, cols] = control_overlay_pixels(stroke.pixels_in(part), shown.tinted)
        return dirty

    def paint(self, p: QPainter, to_widget: Callable[[Rect], QRectF], image: QRectF) -> None:
        """The control layers, then the preview over `image` (the image's rectangle in the widget)."""
        for shown in self._shown.values():
            if shown.opacity > 0:
                p.setOpacity(shown.opacity)
                p.drawImage(to_widget(shown.rect), shown.image)
        if self._preview is not None:
            p.setOpacity(CONTROL_PREVIEW_OPACITY)
            p.drawImage(image, self._preview[1])
        p.setOpacity(1.0)
