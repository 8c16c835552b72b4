"""What the canvas draws around the document: the checkerboard, the canvas frame with its handles, the size
label of an edge drag and the brush cursor. All in widget coordinates."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen, QPixmap

HANDLE = 8                     # px side of the frame's handles


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
