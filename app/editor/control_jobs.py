"""The ControlNets of a job, from the document's control layers and the model library. Qt-free.

Every visible control layer becomes one ControlInput: its settings, and its pixels placed on the job's output
area when its kind uses them (a scribble, an imported map); kinds made from the image carry no pixels. With
"Keep structure" a Restyle with no control layer of its own is guided by a canny ControlNet
of the model's family from the library. A Fill or Expand with a base SD 1.x model uses the library's SD 1.x
inpaint ControlNet when one is listed and no control layer is an inpaint one already.
"""
from __future__ import annotations

import numpy as np

from app.core.control_layers import placed_control_image
from app.core.document import Document
from app.core.geometry import Rect
from app.editor.model_library import ModelEntry, controlnet_for
from app.engine.request import ControlInput



def layer_controls(doc: Document, output: Rect, restyle: bool = False) -> tuple[ControlInput, ...]:
    """One ControlInput per visible control layer (bottom first); ValueError naming the layer when one
    cannot guide (no ControlNet picked, nothing drawn)."""
    controls = []
    for layer in doc.layers.layers:
        settings = layer.control
        if settings is None or not layer.visible:
            continue
        if restyle and settings.kind == "inpaint":
            continue                     # it fills holes; a restyle has none
        if not settings.model.strip():
            raise ValueError(f"pick a ControlNet for the control layer '{layer.name}' (or hide it)")
        image = None
        if settings.uses_layer_pixels:
            image = placed_control_image(layer.pixels, layer.x, layer.y, output)
            if not _has_content(image):
                raise ValueError(f"the control layer '{layer.name}' is empty here: draw on it with the pen, "
                                 "import an image into it, or hide it")
        controls.append(ControlInput(settings.kind, settings.model, image, settings.weight, settings.start,
                                     settings.end, settings.low, settings.high, settings.blur, settings.annotator,
                                     detector=settings.detector))
    return tuple(controls)


def structure_control(controlnets: list[ModelEntry], family: str | None, weight: float = 1.0) -> ControlInput | None:
    """What keeps a Restyle's composition: a canny ControlNet of `family` (None: of any), made from the image."""
    entry = controlnet_for(controlnets, family, "canny") or controlnet_for(    # else one of unknown family,
        [e for e in controlnets if not e.family], None, "canny")              # which the engine checks on use
    return None if entry is None else ControlInput("canny", entry.location, None, weight, 0.0, 1.0)


def inpaint_control(controlnets: list[ModelEntry], family: str, inpaint_model: bool) -> ControlInput | None:
    """The SD 1.x inpaint ControlNet for a Fill or Expand with a base (4-channel) SD 1.x model, if listed."""
    if inpaint_model or family != "sd1":
        return None
    entry = controlnet_for(controlnets, "sd1", "inpaint")
    return None if entry is None else ControlInput("inpaint", entry.location, None, 1.0, 0.0, 1.0)


def _has_content(image: np.ndarray) -> bool:
    if image.shape[2] == 4:
        return bool(image[..., 3].any())
    return bool(image.any())
