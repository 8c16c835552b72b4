"""Control layers: layers that guide a generation through a ControlNet instead of being painted. Qt-free.

A control layer sits in the stack like any layer but is never composited into the image (nor exported). Its
settings say which ControlNet it drives and how strongly; its pixels are what the user drew with the pen
(white strokes whose alpha is the coverage) or imported (a drawing, a depth or pose map). Kinds made from the
image itself (canny, depth, normal, tile, inpaint) need no pixels: their control image is made from the
pixels the job works on, pass by pass. A hidden control layer guides nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from app.core.geometry import Rect

CONTROL_KINDS = ("canny", "scribble", "lineart", "softedge", "depth", "normal", "pose", "tile", "inpaint")
MADE_FROM_THE_IMAGE = ("canny", "lineart", "softedge", "depth", "normal", "pose", "tile", "inpaint")
DRAWN_KINDS = ("scribble", "lineart", "softedge")        # the pen draws on these
KIND_LABELS = {"canny": "Canny edges", "scribble": "Scribble", "lineart": "Line art", "softedge": "Soft edge",
               "depth": "Depth", "normal": "Normal map", "pose": "Pose", "tile": "Tile / blur",
               "inpaint": "Inpaint"}
MAX_MODEL_TEXT = 4096


@dataclass(frozen=True)
class ControlSettings:
    kind: str = "scribble"
    model: str = ""               # the ControlNet: a folder, a .safetensors file or a repo id
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low: int = 100                # canny thresholds
    high: int = 200
    blur: float = 0.0             # tile
    annotator: str = ""           # made from the image: depth / normal a depth-estimation model, pose VitPose
    from_image: bool = True       # kinds that can: made from the job's pixels (False: from this layer's pixels)
    detector: str = ""            # pose made from the image: a person detector ("" = the image is one person)

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"unknown control kind {str(self.kind)[:40]!r}")
        for name, low, high in (("weight", 0.0, 2.0), ("start", 0.0, 1.0), ("end", 0.0, 1.0), ("blur", 0.0, 64.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ValueError(f"control {name} must be between {low:g} and {high:g}, got {str(value)[:40]}")
            object.__setattr__(self, name, float(value))
        if self.start > self.end:
            raise ValueError(f"control start {self.start:g} is after its end {self.end:g}")
        for name in ("low", "high"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= 1000:
                raise ValueError(f"canny {name} threshold must be a whole number from 0 to 1000, got {str(value)[:40]}")
        if self.low > self.high:
            raise ValueError(f"canny low threshold {self.low} is above the high one {self.high}")
        for name in ("model", "annotator", "detector"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_MODEL_TEXT:
                raise ValueError(f"control {name} must be text of at most {MAX_MODEL_TEXT} characters")
        if not isinstance(self.from_image, bool):
            raise ValueError("control from_image must be true or false")

    @property
    def uses_layer_pixels(self) -> bool:
        return self.kind not in MADE_FROM_THE_IMAGE or not self.from_image

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(value) -> "ControlSettings":
        """The settings a stored record holds; ValueError in words for anything that is not one."""
        if not isinstance(value, dict):
            raise ValueError(f"control settings are {type(value).__name__}, not an object")
        known = set(ControlSettings.__dataclass_fields__)
        unknown = [key for key in value if key not in known]
        if unknown:
            raise ValueError(f"control settings have an unknown field {str(unknown[0])[:40]!r}")
        if value.get("kind") == "pose" and "detector" not in value:
            value = {**value, "from_image": False}   # stored before poses could be made: its image is imported
        return ControlSettings(**value)


def empty_control_pixels(width: int, height: int) -> np.ndarray:
    """A transparent canvas-sized patch for a new control layer (the pen draws into its alpha)."""
    return np.zeros((height, width, 4), np.uint8)


def placed_control_image(pixels: np.ndarray, x: int, y: int, output: Rect) -> np.ndarray:
    """A control layer's pixels on the job's output area (document coordinates), with the layer's channels:
    RGBA strokes transparent (which guides nothing) where the layer does not reach; an RGB image (an imported
    drawing or map) its own background colour there (the paper of a drawing, the black of a depth or pose
    map), so that nothing reads as a line or a shape. Read-only, so a request takes it without a copy."""
    out = np.zeros((output.h, output.w, pixels.shape[2]), np.uint8)
    if pixels.shape[2] == 3 and pixels.size:
        out[...] = np.median(pixels[::8, ::8].reshape(-1, 3), axis=0).astype(np.uint8)
    layer = Rect(x, y, int(pixels.shape[1]), int(pixels.shape[0]))
    part = layer.intersect(output)
    if not part.is_empty():
        out[part.y - output.y:part.bottom - output.y, part.x - output.x:part.right - output.x] = \
            pixels[part.y - y:part.bottom - y, part.x - x:part.right - x]
    out.setflags(write=False)
    return out
