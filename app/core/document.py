"""The open document: pixels, mask and canvas rectangle. Qt-free.

Coordinates are image pixels: the image occupies Rect(0, 0, width, height); `canvas` may reach beyond it
(the area Expand outpaints) or crop into it. The mask is image-sized, uint8, 255 = fill, values between
are a soft edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.core.geometry import Rect


@dataclass
class Document:
    image: np.ndarray                 # H x W x 3 (RGB) or 4 (RGBA), uint8
    mask: np.ndarray                  # H x W uint8
    canvas: Rect
    path: Path | None = None
    parameters: str = ""              # generation settings of the last accepted result

    @staticmethod
    def from_image(image: np.ndarray, path: Path | None = None, parameters: str = "") -> "Document":
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError("a document image must be H x W x 3 or 4 uint8")
        h, w = image.shape[:2]
        return Document(np.ascontiguousarray(image), np.zeros((h, w), np.uint8), Rect(0, 0, w, h),
                        path, parameters)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def image_rect(self) -> Rect:
        return Rect(0, 0, self.width, self.height)

    @property
    def has_alpha(self) -> bool:
        return self.image.shape[2] == 4

    def has_mask(self) -> bool:
        return any_painted(self.mask)

    # The mask is edited in place by the brush, and shared without a copy by the generation request that
    # reads it: shared_mask() marks it read-only, and the next edit works on a copy of it.
    def shared_mask(self) -> np.ndarray:
        """The mask, read-only from now on, for a request to keep without copying it."""
        self.mask.setflags(write=False)
        return self.mask

    def editable_mask(self) -> np.ndarray:
        """The mask, writable (a copy of it if it was shared)."""
        if not self.mask.flags.writeable:
            self.mask = self.mask.copy()
        return self.mask

    def begin_mask_edit(self) -> np.ndarray:
        """Before an edit: the mask's content as an array no one will write (for undo), with `mask` left
        writable. One copy either way: a shared mask is itself that array."""
        if self.mask.flags.writeable:
            return self.mask.copy()
        before = self.mask
        self.mask = before.copy()
        return before

    def is_extended(self) -> bool:
        """True when the canvas reaches beyond the image on at least one side (Expand has work)."""
        return not self.image_rect.contains_rect(self.canvas)

    def nbytes(self) -> int:
        return int(self.image.nbytes + self.mask.nbytes)

    def __setattr__(self, name: str, value) -> None:
        if name == "image":
            value = read_only(value)
        super().__setattr__(name, value)

    def snapshot(self) -> "DocumentState":
        return DocumentState(self.image, self.mask.copy(), self.canvas, self.parameters)

    def restore(self, state: "DocumentState") -> None:
        self.image = state.image
        self.mask = state.mask.copy()
        self.canvas = state.canvas
        self.parameters = state.parameters


@dataclass(frozen=True)
class DocumentState:
    """Everything an accepted result replaces; images are never mutated in place, so they are shared."""
    image: np.ndarray
    mask: np.ndarray
    canvas: Rect
    parameters: str

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes + self.mask.nbytes)


def read_only(image: np.ndarray) -> np.ndarray:
    """The image, contiguous and marked read-only in place: document images are replaced, never written, so
    history states and generation requests can share them without copies."""
    image = np.ascontiguousarray(image)
    if is_immutable(image):
        return image
    if image.base is not None:             # a view: its owner could still change or free the pixels
        image = image.copy()
    image.setflags(write=False)
    return image


def any_painted(mask: np.ndarray) -> bool:
    """True if any pixel of the H x W uint8 mask is non-zero; stops at the first one."""
    return bool(cv2.hasNonZero(np.ascontiguousarray(mask)))


def is_immutable(array: np.ndarray) -> bool:
    """True when no one can write these pixels: the array and every array it views are read-only."""
    while isinstance(array, np.ndarray):
        if array.flags.writeable:
            return False
        array = array.base
    return array is None or isinstance(array, bytes)
