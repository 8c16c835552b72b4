"""The one event type an engine reports through, and the cancel token it watches."""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from app.core.geometry import Rect


class EventKind(str, enum.Enum):
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"
    CANCELLED = "cancelled"


THUMBNAIL_SIDE = 192           # px: the variants strip shows 96 px icons, sharp on 2x screens


@dataclass(frozen=True)
class Variant:
    image: np.ndarray         # the whole output (request.output_rect sized), H x W x C uint8
    seed: int
    parameters: str          # the PNG `parameters` text describing how it was made
    thumbnail: np.ndarray | None = None    # at most THUMBNAIL_SIDE px a side, made on the engine's thread

    def with_thumbnail(self) -> "Variant":
        """This variant with its thumbnail made (an area average of the image), so the UI thread never has
        to scale a full-size result."""
        if self.thumbnail is not None:
            return self
        import cv2

        height, width = self.image.shape[:2]
        scale = min(1.0, THUMBNAIL_SIDE / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Every n-th pixel first (still 4+ per thumbnail pixel to average): an 8192² result is 200 MB.
        step = max(1, int(1 / scale) // 4)
        thumbnail = cv2.resize(np.ascontiguousarray(self.image[::step, ::step]), size,
                               interpolation=cv2.INTER_AREA)
        return replace(self, thumbnail=thumbnail)


@dataclass(frozen=True)
class EngineEvent:
    kind: EventKind
    job_id: int = 0
    step: int = 0
    total: int = 0
    # PROGRESS: an optional preview of `preview_rect` (in image coordinates, inside the output rect)
    preview: np.ndarray | None = None
    preview_rect: Rect | None = None
    variants: tuple[Variant, ...] = field(default_factory=tuple)   # RESULT
    message: str = ""                                              # ERROR (one line) or status text
    notice: bool = False         # PROGRESS: `message` is something the user must hear of (a server dropped)

    @staticmethod
    def progress(job_id: int, step: int, total: int, preview: np.ndarray | None = None,
                 preview_rect: Rect | None = None, message: str = "", notice: bool = False) -> "EngineEvent":
        return EngineEvent(EventKind.PROGRESS, job_id, step, total, preview, preview_rect, message=message,
                           notice=notice)

    @staticmethod
    def result(job_id: int, variants: tuple[Variant, ...]) -> "EngineEvent":
        return EngineEvent(EventKind.RESULT, job_id, variants=variants)

    @staticmethod
    def error(job_id: int, message: str) -> "EngineEvent":
        return EngineEvent(EventKind.ERROR, job_id, message=message)

    @staticmethod
    def cancelled(job_id: int) -> "EngineEvent":
        return EngineEvent(EventKind.CANCELLED, job_id, message="cancelled")


class Cancelled(Exception):
    """Raised inside an engine when its cancel token is set; the runner turns it into an event."""


class EngineError(Exception):
    """A problem the user can act on; its message is shown as one line."""


class CancelToken:
    """Thread-safe flags the UI sets and the engine checks between steps: cancel (throw the job away) and
    finish (stop now and keep what the current step predicts as the result)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._finish = threading.Event()

    def finish(self) -> None:
        self._finish.set()

    @property
    def finish_requested(self) -> bool:
        return self._finish.is_set()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def first_line(problem) -> str:
    """An exception's (or any text's) first non-empty line, at most 200 characters: what a message quotes."""
    lines = [line.strip() for line in str(problem).splitlines() if line.strip()]
    text = lines[0] if lines else type(problem).__name__
    return text if len(text) <= 200 else text[:197] + "..."
