"""Accepting a made-up result through the real path (a GenerationRequest for the document as it is, and its
variant), for tests that need an accepted generation without running an engine."""
from __future__ import annotations

import numpy as np

from app.engine.events import Variant
from app.engine.request import GenerationRequest, JobKind, OutpaintOptions


def request_for(doc, result: np.ndarray) -> GenerationRequest:
    """A Fill of the whole image when `result` has the image's size, an Expand to the canvas otherwise."""
    if result.shape[:2] == (doc.height, doc.width):
        mask = np.full((doc.height, doc.width), 255, np.uint8)
        return GenerationRequest(JobKind.FILL, doc.shared_image(), mask, prompt="test")
    return GenerationRequest(JobKind.EXPAND, doc.shared_image(), outpaint=OutpaintOptions(doc.canvas),
                             prompt="test")


def accept_result(state, result: np.ndarray, parameters: str = "", seed: int = 0) -> bool:
    request = request_for(state.document, result)
    return state.accept(request, (Variant(np.ascontiguousarray(result), seed, parameters),), 0)
