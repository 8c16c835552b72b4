"""Area-averaged reductions of a big image for drawing it zoomed out, made off the UI thread.

Drawing a 4096² image at 25 % with smooth scaling on every repaint is slow, so the canvas draws a cached
reduction at the power of two below the zoom (no aliasing, a quarter of the pixels per level). Making that
reduction takes ~10 ms at 4096² and ~40 ms at 8192², which would stall the first paint after a result
arrives or the zoom changes; so it is made on a thread (cv2.resize releases the GIL), and until it is
ready the full image is drawn with plain sampling, which costs only the widget's pixels.
"""
from __future__ import annotations

import math
import threading

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.widgets.qt_image import qimage_from_array


def mip_level(zoom: float, shape: tuple[int, ...]) -> int:
    """The reduction level (1/2**level) to draw at `zoom`: the largest with 2**level <= 1/zoom."""
    level = int(math.floor(math.log2(1.0 / zoom))) if zoom < 0.5 else 0
    while level > 0 and (shape[0] >> level < 2 or shape[1] >> level < 2):
        level -= 1
    return level


class MipCache(QObject):
    ready = Signal()                              # a reduction became available: repaint
    _made = Signal(int, int, object)              # generation, level, array (from the worker thread)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pixels: np.ndarray | None = None
        self._full: QImage | None = None
        self._levels: dict[int, tuple[np.ndarray, QImage]] = {}
        self._pending: set[int] = set()
        self._stale: set[int] = set()             # levels of pixels since written in place: shown until remade
        self._generation = 0
        self._made.connect(self._store)

    def set_image(self, pixels: np.ndarray | None, full: QImage | None, changed: bool = False) -> None:
        """A new image (None: none); reductions of the previous one are dropped, late ones ignored. The same
        array again keeps them; with `changed` (its pixels were written in place, as the document's composite
        is) they are made again, and each old one is drawn until its new one is ready (a frame or two), which
        costs less than drawing the full image unreduced meanwhile."""
        if pixels is not None and pixels is self._pixels:
            if changed:
                self._generation += 1
                self._stale = set(self._levels)
                self._pending.clear()
            self._full = full
            return
        self._generation += 1
        self._stale = set()
        self._pixels, self._full = pixels, full
        self._levels.clear()
        self._pending.clear()

    def image_for(self, zoom: float) -> tuple[QImage, bool]:
        """(image to draw, whether it is the right reduction). While a reduction is being made this is the
        full image and False: draw it without smoothing."""
        level = mip_level(zoom, self._pixels.shape)
        if level == 0:
            return self._full, True
        if level in self._levels:
            if level in self._stale and level not in self._pending:
                self._pending.add(level)
                threading.Thread(target=self._make, args=(self._generation, self._pixels, level),
                                 name="canvas-mip", daemon=True).start()
            return self._levels[level][1], True
        if level not in self._pending:
            self._pending.add(level)
            threading.Thread(target=self._make, args=(self._generation, self._pixels, level),
                             name="canvas-mip", daemon=True).start()
        return self._full, False

    def wait(self, timeout: float = 5.0) -> None:
        """Tests: block until no reduction is being made (their results still arrive as queued signals)."""
        for thread in [t for t in threading.enumerate() if t.name == "canvas-mip"]:
            thread.join(timeout)

    def _make(self, generation: int, pixels: np.ndarray, level: int) -> None:
        f = 1 << level
        size = (max(math.ceil(pixels.shape[1] / f), 1), max(math.ceil(pixels.shape[0] / f), 1))
        self._made.emit(generation, level, cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))

    def _store(self, generation: int, level: int, array: np.ndarray) -> None:
        if generation != self._generation:
            return
        self._pending.discard(level)
        self._stale.discard(level)
        self._levels[level] = qimage_from_array(array)
        self.ready.emit()
