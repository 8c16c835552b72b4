"""A training's loss curve: every step's loss (faint) and its running average (bold), drawn as it grows."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

SMOOTHING = 0.9          # the running average's weight of the past (an exponential moving average)
MAX_POINTS = 2000        # longer curves are drawn from evenly spaced steps


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """The exponential moving average of `values`, debiased so its first points are not pulled to 0."""
    result, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        result.append(average / (1 - weight ** index))
    return result


class LossCurve(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lossCurve")
        self.setAccessibleName("Loss curve")
        self.setMinimumSize(320, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.losses: list[float] = []
        self.total = 0

    def set_losses(self, losses: list[float], total: int) -> None:
        self.losses = [value for value in losses if math.isfinite(value)]
        self.total = total
        self.update()

    def add(self, loss: float, total: int) -> None:
        if math.isfinite(loss):
            self.losses.append(loss)
        self.total = total
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        margin_left, margin = 52, 8
        plot = QRectF(margin_left, margin, self.width() - margin_left - margin, self.height() - 2 * margin - 14)
        text = self.palette().text().color()
        painter.setPen(QPen(text, 1))
        painter.drawRect(plot)
        if not self.losses:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "The loss appears here as training runs")
            return
        low, high = min(self.losses), max(self.losses)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        steps = max(self.total, len(self.losses), 2)
        painter.drawText(QRectF(0, plot.top() - 6, margin_left - 4, 14),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{high:.3g}")
        painter.drawText(QRectF(0, plot.bottom() - 8, margin_left - 4, 14),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{low:.3g}")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 1, plot.width(), 14),
                         Qt.AlignmentFlag.AlignRight, f"step {len(self.losses)} of {steps}")

        def path(values: list[float]) -> QPainterPath:
            every = max(1, len(values) // MAX_POINTS)
            line = QPainterPath()
            for index in range(0, len(values), every):
                x = plot.left() + plot.width() * (index + 1) / steps
                y = plot.bottom() - plot.height() * (values[index] - low) / (high - low)
                line.lineTo(QPointF(x, y)) if index else line.moveTo(QPointF(x, y))
            return line

        accent = self.palette().highlight().color()
        faint = QColor(accent)
        faint.setAlpha(90)
        painter.setPen(QPen(faint, 1))
        painter.drawPath(path(self.losses))
        painter.setPen(QPen(accent, 2))
        painter.drawPath(path(smoothed(self.losses)))
