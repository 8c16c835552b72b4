"""The one request an engine receives: everything a generation depends on, frozen.

Engines never read widgets or settings; the UI and the CLI build a GenerationRequest and hand it over.
Arrays inside are read-only copies, so the document can change while a job runs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from app.core.document import any_painted, is_immutable
from app.core.geometry import Rect


PRECISIONS = ("auto", "float32", "float16", "bfloat16")
MEMORY_SAVING = ("auto", "on", "off")


class JobKind(str, enum.Enum):
    FILL = "fill"
    EXPAND = "expand"
    RESTYLE = "restyle"        # img2img of the whole image: no mask, the same size out


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 25
    guidance: float = 7.0
    strength: float = 1.0
    seed: int = 0
    variants: int = 1
    sampler: str = "dpmpp_2m_karras"

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 500:
            raise ValueError(f"steps must be between 1 and 500, got {self.steps}")
        if not 0.0 <= self.guidance <= 50.0:
            raise ValueError(f"guidance must be between 0 and 50, got {self.guidance}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be above 0 and at most 1, got {self.strength}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be between 0 and {2**32 - 1}, got {self.seed}")
        if not 1 <= self.variants <= 16:
            raise ValueError(f"variants must be between 1 and 16, got {self.variants}")


@dataclass(frozen=True)
class StyleOptions:
    """The chosen style as the engine needs it; built by app.editor.job_builder, the one place styles are applied.

    GenerationRequest.prompt / negative_prompt hold the styled text. With strength s below 1, engines
    that encode text blend the conditioning of base_prompt / base_negative_prompt (the same text with no
    style) and of the styled text by s, and apply the LoRA at lora_weight * s; s = 0 is exactly no style.
    """
    name: str = "None"
    strength: float = 1.0
    base_prompt: str = ""
    base_negative_prompt: str = ""
    lora: str = ""                 # absolute path of a .safetensors LoRA, "" for none
    lora_weight: float = 1.0       # the style's LoRA weight, before strength

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"style strength must be between 0 and 1, got {self.strength}")
        if not -10.0 <= self.lora_weight <= 10.0:
            raise ValueError(f"LoRA weight must be between -10 and 10, got {self.lora_weight}")

    @property
    def effective_lora_weight(self) -> float:
        """The weight the LoRA is applied at (0: not applied at all)."""
        return self.lora_weight * self.strength if self.lora else 0.0


@dataclass(frozen=True)
class MaskOptions:
    feather: int = 8      # px of soft edge added outside the painted mask when compositing (< 64)
    grow: int = 0         # px the mask is dilated before filling

    def __post_init__(self) -> None:
        if not 0 <= self.feather < 64:
            raise ValueError(f"feather must be between 0 and 63 px, got {self.feather}")
        if not 0 <= self.grow <= 256:
            raise ValueError(f"grow must be between 0 and 256 px, got {self.grow}")


@dataclass(frozen=True)
class OutpaintOptions:
    """The canvas rectangle in image coordinates; the image itself is Rect(0, 0, w, h)."""
    canvas: Rect

    @property
    def margins(self) -> tuple[int, int, int, int]:
        return -self.canvas.left, -self.canvas.top, self.canvas.right, self.canvas.bottom


CONTROL_KINDS = ("canny", "scribble", "lineart", "softedge", "depth", "normal", "pose", "tile", "inpaint")
MADE_FROM_THE_IMAGE = ("canny", "lineart", "softedge", "depth", "normal", "pose", "tile", "inpaint")  # need no image


@dataclass(frozen=True)
class ControlInput:
    """One ControlNet guiding a job. `image` is the control image in output coordinates (the canvas for
    Expand) as the user made it (a scribble, an imported depth or pose map); None makes it from the job's
    own pixels with the kind's preprocessor, pass by pass (canny, a depth or pose annotator, tile, inpaint)."""
    kind: str
    model: str                           # the ControlNet: a diffusers folder, a .safetensors file or a repo id
    image: np.ndarray | None = None      # H x W x 3 or 4 uint8, the size of the job's output
    weight: float = 1.0                  # conditioning scale; 0 is exactly no ControlNet
    start: float = 0.0                   # the share of the steps where it starts guiding ...
    end: float = 1.0                     # ... and stops
    low_threshold: int = 100             # canny
    high_threshold: int = 200
    blur: float = 0.0                    # tile: Gaussian sigma in px
    annotator: str = ""                  # depth / normal: a depth-estimation model; pose: a VitPose model
    model_config: str = ""               # single files: a diffusers ControlNet config folder (default: by family)
    guess_mode: bool = False             # the ControlNet sees no prompt; its residuals go to the conditional half
    detector: str = ""                   # pose: a person detector ("" = the whole image is one person)

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"unknown control kind '{self.kind}'; choose one of: {', '.join(CONTROL_KINDS)}")
        if not str(self.model).strip():
            raise ValueError(f"the {self.kind} control needs a ControlNet model")
        if not 0.0 <= self.weight <= 2.0:
            raise ValueError(f"control weight must be between 0 and 2, got {self.weight}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"control start and end must satisfy 0 <= start <= end <= 1, got {self.start} "
                             f"and {self.end}")
        if not 0 <= self.low_threshold <= self.high_threshold <= 1000:
            raise ValueError("canny thresholds must satisfy 0 <= low <= high <= 1000, got "
                             f"{self.low_threshold} and {self.high_threshold}")
        if not 0.0 <= self.blur <= 64.0:
            raise ValueError(f"tile blur must be between 0 and 64 px, got {self.blur}")
        if self.image is None:
            if self.kind not in MADE_FROM_THE_IMAGE:
                raise ValueError(f"a {self.kind} control needs an image: draw it on a control layer or give a file")
            return
        if self.kind == "inpaint":
            raise ValueError("an inpaint control is made from the job itself: it takes no image")
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"the {self.kind} control image must be an H x W x 3 or 4 uint8 array")
        object.__setattr__(self, "image", _frozen(image))


REFERENCE_KINDS = ("general", "style", "composition")


@dataclass(frozen=True)
class ReferenceInput:
    """A reference image an IP-Adapter shows the model: all of it (general), its style or its composition."""
    image: np.ndarray                    # H x W x 3 or 4 uint8, any size (the image encoder scales it)
    scale: float = 0.6
    kind: str = "general"

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) < 1:
            raise ValueError("a reference image must be an H x W x 3 or 4 uint8 array")
        object.__setattr__(self, "image", _frozen(image))
        if not 0.0 <= self.scale <= 2.0:
            raise ValueError(f"reference scale must be between 0 and 2, got {self.scale}")
        if self.kind not in REFERENCE_KINDS:
            raise ValueError(f"unknown reference kind '{self.kind}'; choose one of: {', '.join(REFERENCE_KINDS)}")


@dataclass(frozen=True)
class ServerInput:
    """A ComfyUI server a job may run on; its token is never written anywhere (not in repr either)."""
    url: str                             # http(s)://host:port[/path] or host:port
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not str(self.url).strip():
            raise ValueError("a server needs an address")


@dataclass(frozen=True)
class GenerationRequest:
    kind: JobKind
    image: np.ndarray                     # H x W x 3 or 4, uint8, read-only
    mask: np.ndarray | None = None        # H x W uint8, 255 = fill (fill jobs)
    outpaint: OutpaintOptions | None = None  # expand jobs
    prompt: str = ""
    negative_prompt: str = ""
    style: StyleOptions = field(default_factory=StyleOptions)   # a bare name means that style in full
    model: str = "classic"                # an engine id, a model file or folder, or a Hugging Face repo id
    model_config: str = ""                # single files: a diffusers config folder (default: by family)
    device: str = "auto"                  # auto, cpu, cuda or mps
    precision: str = "auto"               # auto (fp16 on GPUs, fp32 on the CPU), float32, float16, bfloat16
    memory_saving: str = "auto"           # auto (by free GPU memory), on or off
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    mask_options: MaskOptions = field(default_factory=MaskOptions)
    controls: tuple[ControlInput, ...] = ()
    references: tuple[ReferenceInput, ...] = ()
    ip_adapter: str = ""                  # the IP-Adapter .safetensors the references go through
    image_encoder: str = ""               # its CLIP vision encoder ("" = the image_encoder folder beside it)
    servers: tuple[ServerInput, ...] = ()  # model "NAME@SERVER": more ComfyUI servers to spread variants over

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError("image must be an H x W x 3 or 4 uint8 array")
        object.__setattr__(self, "image", _frozen(image))
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        if self.memory_saving not in MEMORY_SAVING:
            raise ValueError(f"memory saving must be one of: {', '.join(MEMORY_SAVING)}")
        if isinstance(self.style, str):
            object.__setattr__(self, "style", StyleOptions(name=self.style))
        if self.kind == JobKind.FILL:
            if self.mask is None:
                raise ValueError("a fill needs a mask")
            mask = np.asarray(self.mask)
            if mask.shape != image.shape[:2] or mask.dtype != np.uint8:
                raise ValueError(f"mask must be a {image.shape[1]}x{image.shape[0]} uint8 array, "
                                 f"got {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}")
            if not any_painted(mask):
                raise ValueError("the mask is empty: paint the area to fill first")
            object.__setattr__(self, "mask", _frozen(mask))
        elif self.kind == JobKind.EXPAND:
            if self.outpaint is None:
                raise ValueError("an expand needs the canvas rectangle")
            c = self.outpaint.canvas
            image_rect = Rect(0, 0, image.shape[1], image.shape[0])
            if c.is_empty() or c.intersect(image_rect).is_empty():
                raise ValueError("the canvas must overlap the image")
            if image_rect.contains_rect(c):
                raise ValueError("nothing to expand: the canvas does not reach beyond the image")
            if self.mask is not None:
                object.__setattr__(self, "mask", _frozen(np.asarray(self.mask)))
        elif self.kind == JobKind.RESTYLE:
            if self.mask is not None or self.outpaint is not None:
                raise ValueError("a restyle works on the whole image: it takes no mask or canvas")
        else:
            raise ValueError(f"unknown job kind {self.kind!r}")
        object.__setattr__(self, "controls", tuple(self.controls))
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "servers", tuple(self.servers))
        if self.references and not self.ip_adapter.strip():
            raise ValueError("reference images need an IP-Adapter model")
        if self.kind == JobKind.RESTYLE and any(c.kind == "inpaint" for c in self.controls):
            raise ValueError("an inpaint control guides Fill and Expand; a restyle has no hole to fill")
        out = self.output_rect
        for control in self.controls:
            if control.image is not None and control.image.shape[:2] != (out.h, out.w):
                raise ValueError(f"the {control.kind} control image is {control.image.shape[1]}x"
                                 f"{control.image.shape[0]}; this job needs {out.w}x{out.h}")

    @property
    def image_rect(self) -> Rect:
        return Rect(0, 0, self.image.shape[1], self.image.shape[0])

    @property
    def output_rect(self) -> Rect:
        """Where the result lies, in image coordinates: the canvas for Expand, the image otherwise."""
        return self.outpaint.canvas if self.kind == JobKind.EXPAND else self.image_rect


def _frozen(array: np.ndarray) -> np.ndarray:
    if is_immutable(array):                  # a document's image: shared, not copied
        return array
    copy = np.array(array, copy=True)
    copy.setflags(write=False)
    return copy
