"""What a style training is asked to do: the images, the base model, the preset and its overrides.

The settings travel to the training process as JSON (`settings_from_dict` reads them back, refusing
anything it does not know), so they hold plain values only.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass

MIN_IMAGES, MAX_IMAGES = 3, 50
CROPS = ("centre", "buckets")
SWITCHES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Preset:
    rank: int
    steps: int
    learning_rate: float
    text_encoder: bool
    what: str


PRESETS = {
    "fast": Preset(4, 400, 2e-4, False, "rank 4, 400 steps: a first look at the style"),
    "balanced": Preset(8, 800, 1e-4, False, "rank 8, 800 steps: most styles"),
    "best": Preset(16, 1500, 1e-4, True, "rank 16, 1500 steps, text encoder too: fine detail, slowest"),
}


@dataclass(frozen=True)
class StyleTrainingSettings:
    images: tuple[str, ...]               # image files, or folders of them
    name: str                             # the style's name in the dropdown
    model: str                            # the base model: a file, a diffusers folder or a repo id
    out: str                              # the run's folder: the LoRA, checkpoint/, samples/, class_images/
    model_config: str = ""
    trigger: str = ""                     # a word put first in every caption and in the style's template
    captions: str = ""                    # a folder of NAME.txt captions (default: beside the images)
    preset: str = "balanced"
    steps: int | None = None              # None: the preset's
    rank: int | None = None
    learning_rate: float | None = None
    train_text_encoder: bool | None = None
    resolution: int | None = None         # None: the model's native size (512 for SD 1.5, 1024 for SDXL)
    crop: str = "centre"                  # "buckets" keeps each whole picture at its aspect ratio
    batch: int = 1
    prior_preservation: bool = False      # also learn from images the model makes of `class_prompt`
    class_prompt: str = ""                # default: "an image"
    class_images: int = 0                 # default with prior preservation: 5 per training image, 20 at least
    prior_weight: float = 1.0
    sample_every: int = 100               # steps between samples (0: only at the end)
    sample_prompt: str = ""               # default: the trigger word and the first image's caption
    sample_steps: int = 20
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"               # auto: bf16 (or fp16) on a GPU, fp32 on the CPU
    gradient_checkpointing: str = "auto"  # auto: on a GPU for SDXL or below 16 GB free; never on the CPU
    checkpoint_every: int = 100
    resume: bool = False

    def __post_init__(self) -> None:
        if not self.images or not all(isinstance(path, str) and path for path in self.images):
            raise ValueError("no images given")
        check_style_name(self.name)
        for name, value, choices in (("preset", self.preset, PRESETS), ("crop", self.crop, CROPS),
                                     ("gradient_checkpointing", self.gradient_checkpointing, SWITCHES),
                                     ("device", self.device, DEVICES), ("precision", self.precision, PRECISIONS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        for name, value, low, high in (("steps", self.steps, 1, 100_000), ("rank", self.rank, 1, 256),
                                       ("batch", self.batch, 1, 64), ("class_images", self.class_images, 0, 1000),
                                       ("sample_every", self.sample_every, 0, 100_000),
                                       ("sample_steps", self.sample_steps, 1, 150),
                                       ("checkpoint_every", self.checkpoint_every, 1, 100_000),
                                       ("resolution", self.resolution, 64, 2048), ("seed", self.seed, 0, 2**32 - 1)):
            whole = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and (not whole or not low <= value <= high):
                raise ValueError(f"{name} must be a whole number from {low} to {high}")
        if self.resolution is not None and self.resolution % 64:
            raise ValueError("resolution must be a multiple of 64")
        for name, value, high in (("learning_rate", self.learning_rate, 1.0), ("prior_weight", self.prior_weight, 10)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or not 0 < value <= high):
                raise ValueError(f"{name} must be a number above 0 and at most {high:g}")
        if len(self.trigger) > 100 or "\n" in self.trigger:
            raise ValueError("the trigger word must be one line of at most 100 characters")
        if not self.model.strip():
            raise ValueError("no base model given")

    @property
    def plan(self) -> Preset:
        """The preset with the overrides applied."""
        preset = PRESETS[self.preset]
        return Preset(self.rank or preset.rank, self.steps or preset.steps, self.learning_rate or
                      preset.learning_rate, preset.text_encoder if self.train_text_encoder is None
                      else self.train_text_encoder, preset.what)

    @property
    def class_count(self) -> int:
        return 0 if not self.prior_preservation else self.class_images

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images"] = list(self.images)
        return data


def check_style_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the style needs a name")
    if len(name.strip()) > 100 or any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        raise ValueError("the style's name must be one line of at most 100 characters")


def settings_from_dict(data: dict) -> StyleTrainingSettings:
    """The settings a job file holds; TypeError or ValueError (one line) for anything else."""
    from app.training.runs import settings_from

    return settings_from(StyleTrainingSettings, data, tuples=("images",))


def file_stem(name: str) -> str:
    """A file name for the style's LoRA: its name with anything unsafe in a file name replaced."""
    stem = re.sub(r"[^\w.-]+", "-", unicodedata.normalize("NFKC", name.strip())).strip("-.")
    return stem[:80] or "style"
