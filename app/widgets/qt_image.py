"""Conversions between numpy pixel arrays (RGB/RGBA uint8) and QImage."""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage


def qimage_from_array(array: np.ndarray) -> tuple[np.ndarray, QImage]:
    """A QImage sharing the memory of a uint8 H x W (x 1/3/4) array; keep the returned array alive."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = np.ascontiguousarray(array[:, :, 0])
    formats = {2: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888,
               4: QImage.Format.Format_RGBA8888}
    fmt = formats[array.shape[2] if array.ndim == 3 else 2]
    h, w = array.shape[:2]
    return array, QImage(array.data, w, h, array.strides[0], fmt)


def to_qimage(pixels: np.ndarray) -> QImage:
    """A QImage that owns a copy of the pixels (safe to keep after the array changes)."""
    return qimage_from_array(pixels)[1].copy()


def from_qimage(image: QImage) -> np.ndarray:
    """RGB or RGBA uint8 array from any QImage; alpha is kept only if the image has it."""
    has_alpha = image.hasAlphaChannel()
    fmt = QImage.Format.Format_RGBA8888 if has_alpha else QImage.Format.Format_RGB888
    converted = image.convertToFormat(fmt)
    w, h, c = converted.width(), converted.height(), 4 if has_alpha else 3
    stride = converted.bytesPerLine()
    buffer = np.frombuffer(converted.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    # A copy: the buffer belongs to `converted`, which Python frees when this function returns.
    return np.array(buffer[:, : w * c].reshape(h, w, c), copy=True)
