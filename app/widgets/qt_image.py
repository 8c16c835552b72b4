"""Conversions between numpy pixel arrays (RGB/RGBA uint8) and QImage."""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage


def to_qimage(pixels: np.ndarray) -> QImage:
    """A QImage that owns a copy of the pixels (safe to keep after the array changes)."""
    pixels = np.ascontiguousarray(pixels)
    h, w, c = pixels.shape
    fmt = QImage.Format.Format_RGBA8888 if c == 4 else QImage.Format.Format_RGB888
    return QImage(pixels.data, w, h, w * c, fmt).copy()


def from_qimage(image: QImage) -> np.ndarray:
    """RGB or RGBA uint8 array from any QImage; alpha is kept only if the image has it."""
    has_alpha = image.hasAlphaChannel()
    fmt = QImage.Format.Format_RGBA8888 if has_alpha else QImage.Format.Format_RGB888
    converted = image.convertToFormat(fmt)
    w, h, c = converted.width(), converted.height(), 4 if has_alpha else 3
    stride = converted.bytesPerLine()
    buffer = np.frombuffer(converted.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    return np.ascontiguousarray(buffer[:, : w * c].reshape(h, w, c))
