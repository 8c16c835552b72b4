"""What a model training is asked to do: the folder of images, the config and its overrides.

The settings travel to the training process as JSON (`settings_from_dict` reads them back, refusing
anything it does not know), so they hold plain values only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from app.training.model.configs import CONFIGS, ModelConfig

DEVICES = ("auto", "cpu", "cuda", "mps")
MIN_IMAGES = 4
MAX_STEPS = 10_000_000


@dataclass(frozen=True)
class Plan:
    """The config with the settings' overrides applied."""
    config: ModelConfig
    resolution: int
    steps_autoencoder: int
    steps_diffusion: int
    batch: int
    sample_every: int
    checkpoint_every: int

    @property
    def total(self) -> int:
        return self.steps_autoencoder + self.steps_diffusion


@dataclass(frozen=True)
class ModelTrainingSettings:
    folder: str                           # the images; sub-folders are the classes of a class-conditioned model
    out: str                              # the model folder made, with checkpoint/ and samples/ in it
    config: str = "tiny"
    steps_autoencoder: int | None = None  # None: the config's
    steps_diffusion: int | None = None
    batch: int | None = None
    resolution: int | None = None
    text_encoder: str = ""                # a diffusers folder with text_encoder/ and tokenizer/; "": classes
    device: str = "auto"
    resume: bool = False
    seed: int = 0
    sample_every: int | None = None       # 0: samples only at the end of each phase
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        for name in ("folder", "out"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"no {'image folder' if name == 'folder' else 'output folder'} given")
        if not isinstance(self.text_encoder, str):
            raise TypeError("text_encoder must be a folder's path")
        for name, value, choices in (("config", self.config, CONFIGS), ("device", self.device, DEVICES)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if not isinstance(self.resume, bool):
            raise TypeError("resume must be true or false")
        for name, value, low, high in (("steps_autoencoder", self.steps_autoencoder, 1, MAX_STEPS),
                                       ("steps_diffusion", self.steps_diffusion, 1, MAX_STEPS),
                                       ("batch", self.batch, 1, 512), ("resolution", self.resolution, 16, 2048),
                                       ("seed", self.seed, 0, 2**32 - 1),
                                       ("sample_every", self.sample_every, 0, MAX_STEPS),
                                       ("checkpoint_every", self.checkpoint_every, 1, MAX_STEPS)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not low <= value <= high):
                raise ValueError(f"{name} must be a whole number from {low} to {high}")
        multiple = CONFIGS[self.config].multiple
        if self.resolution is not None and self.resolution % multiple:
            raise ValueError(f"resolution must be a multiple of {multiple} for the {self.config} config")

    @property
    def plan(self) -> Plan:
        config = CONFIGS[self.config]

        def given(value, default):
            return default if value is None else value
        return Plan(config, given(self.resolution, config.resolution),
                    given(self.steps_autoencoder, config.steps_autoencoder),
                    given(self.steps_diffusion, config.steps_diffusion), given(self.batch, config.batch),
                    given(self.sample_every, config.sample_every), given(self.checkpoint_every,
                                                                         config.checkpoint_every))

    def to_dict(self) -> dict:
        return asdict(self)


def settings_from_dict(data: dict) -> ModelTrainingSettings:
    """The settings a job file holds; TypeError or ValueError (one line) for anything else."""
    from app.training.runs import settings_from

    return settings_from(ModelTrainingSettings, data)
