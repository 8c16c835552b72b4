"""Load a Stable Diffusion model's components (UNet, VAE, CLIP text encoders, tokenizers) with diffusers.

Diffusers folders load component by component; single files go through diffusers' from_single_file with
the config folder shipped for their family in resources/models, so no network is needed; repo ids are
downloaded into the standard Hugging Face cache first (only the files a diffusers folder needs).
"""
from __future__ import annotations

import functools
import json
import logging
import pickle
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from app.core.safe_files import FileTooLarge, read_bounded
from app.engine.diffusion.config_folder import CheckedConfig, check_config_folder, part_config, staged
from app.engine.diffusion.devices import DevicePlan
from app.engine.events import EngineError
from app.engine.diffusion.model_files import (CONFIG_ROOT, FOLDER_PARTS, TOKENIZER_DIR, CheckpointInfo, ModelSource,
                                    folder_class_labels, folder_weights, inspect_folder, inspect_tensors,
                                    read_checkpoint_tensors, refused_pickle, short_error)
from app.engine.diffusion.safetensors_header import TensorInfo

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]          # message, fraction done (0..1, or -1 when unknown)

PIPELINES = {("sd", False): "StableDiffusionPipeline", ("sd", True): "StableDiffusionInpaintPipeline",
             ("sdxl", False): "StableDiffusionXLPipeline", ("sdxl", True): "StableDiffusionXLInpaintPipeline"}
DOWNLOAD_PATTERNS = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer*/*",
                     "*/*.safetensors.index.json",
                     "unet/*.safetensors", "vae/*.safetensors", "text_encoder*/*.safetensors"]


@dataclass
class DiffusionModel:
    """Everything the denoising loop needs of one loaded model."""
    name: str
    family: str                  # "sd1", "sd2" or "sdxl"
    inpaint: bool
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    scheduler_config: dict
    plan: DevicePlan
    vae_dtype_name: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        """The side length, in pixels, the UNet was trained at (512, 768 or 1024 for real models)."""
        return int(self.unet.config.sample_size) * self.vae_scale

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def is_xl(self) -> bool:
        return self.family == "sdxl"

    def components(self) -> list:
        return [self.unet, self.vae, *self.text_encoders]

    def describe(self) -> str:
        names = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
        kind = "class-conditioned" if "class_labels" in self.extra else names[self.family]
        return f"{self.name} ({kind}{' inpainting' if self.inpaint else ''}, {self.plan.describe()})"


def load_model(source: ModelSource, plan: DevicePlan, progress: Progress | None = None) -> DiffusionModel:
    """Load `source` for `plan`; EngineError says in one line what is wrong with the model."""
    progress = progress or (lambda message, fraction: None)
    _quiet_libraries()
    try:
        if source.kind == "repo":
            folder = download_repo(source.location, progress)
            return _load_folder(folder, source.location, plan, progress)
        if source.kind == "folder":
            return _load_folder(Path(source.location), Path(source.location).name, plan, progress)
        return _load_single_file(Path(source.location), source.config, plan, progress)
    except EngineError:
        raise
    except pickle.UnpicklingError:      # torch.load(weights_only=True) inside a library refused a file
        raise EngineError(refused_pickle(f"a file of {source.name}")) from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        from app.engine.diffusion.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        log.warning("could not load %s", source.location, exc_info=exc)
        raise EngineError(f"could not load {source.name}: {short_error(exc)}") from None


def _quiet_libraries() -> None:
    """The libraries' own progress bars and notices would flood the CLI; loading reports through `progress`."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


# -- single files ---------------------------------------------------------------------------------------

def _load_single_file(path: Path, config: str, plan: DevicePlan, progress: Progress) -> DiffusionModel:
    import diffusers

    progress(f"reading {path.name}", -1)
    info, checked = inspect_single_file(path, config)
    tokenizers = tokenizers_for(checked.path, info.family, f"config folder {checked.path.name}: ")
    # Every other part is given, so diffusers loads nothing but the UNet, the VAE and the text encoders; the
    # scheduler's config is the checked one (the samplers make their own schedulers from it).
    kwargs = {"tokenizer": tokenizers[0], "scheduler": None, "feature_extractor": None, "image_encoder": None}
    if info.family == "sdxl":
        kwargs.update(tokenizer_2=tokenizers[1], add_watermarker=False)
    else:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline_class = getattr(diffusers, PIPELINES[("sdxl" if info.family == "sdxl" else "sd", info.inpaint)])
    progress(f"loading {info.label} weights from {path.name}", -1)
    try:
        with staged(checked) as config_dir:
            pipe = pipeline_class.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                                   torch_dtype=plan.dtype, **kwargs)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        from app.engine.diffusion.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        hint = "" if config else " (an unusual variant? give its diffusers config folder as the model's config)"
        raise EngineError(f"{path.name} does not fit the {info.label} config {checked.path.name}: "
                          f"{short_error(exc, 100)}{hint}") from None
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if info.family == "sdxl" else [])
    scheduler_config = dict(checked.configs["scheduler/scheduler_config.json"])
    if info.v_prediction:
        scheduler_config["prediction_type"] = "v_prediction"
    return _finish(DiffusionModel(path.stem, info.family, info.inpaint, pipe.unet, pipe.vae, encoders,
                                  tokenizers, scheduler_config, plan))


# -- a single file against its config ----------------------------------------------------------------------
# from_single_file builds each part from the config and renames the file's tensors to that part's names
# (diffusers' convert_* functions): a file whose names or sizes differ from what the config builds fails
# there, or loads with parts left unfilled. The same happens here on the meta device (shapes, no memory):
# a tensor of the file becomes an empty meta tensor of its shape, each part is built from the config the
# way from_single_file builds it, and diffusers' own conversion renames the tensors.

def inspect_single_file(path: Path, config: str = "") -> tuple[CheckpointInfo, CheckedConfig]:
    """What the single file `path` holds and the config folder it loads with (`config`, else the one shipped
    for its family), its tensor names and shapes checked against every part that config builds; EngineError
    in one line otherwise. Reads the file's header (a pickle: its tensor table), never its weights."""
    tensors = read_checkpoint_tensors(path)
    info = inspect_tensors(tensors, path.name)
    checked = check_config_folder(Path(config) if config else CONFIG_ROOT / info.config_name, info, path.name)
    problem = config_mismatch(tensors, info, checked)
    if problem:
        hint = "" if config else "; give its diffusers config folder as the model's config"
        raise EngineError(f"{path.name} does not fit the {info.label} config {checked.path.name}: {problem}{hint}")
    return info, checked


def config_mismatch(tensors: dict[str, TensorInfo], info: CheckpointInfo, checked: CheckedConfig) -> str:
    """The first tensor the config needs that the file lacks or holds in another shape, as "its UNet
    conv_in.weight is 32x4x3x3, the config needs 320x4x3x3 (...)"; "" when the file fits every part."""
    import torch

    _quiet_libraries()
    checkpoint = {key: torch.empty(value.shape, device="meta") for key, value in tensors.items()}
    parts = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if info.family == "sdxl" else ())
    for part in parts:
        shown = FOLDER_PARTS[part]
        try:
            model, config = _meta_part(part, json.dumps(checked.configs[f"{part}/config.json"]))
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, OSError) as exc:
            return f"the config's {shown} cannot be built ({short_error(exc, 80)})"
        try:
            converted, recognised = _converted(part, model, config, checkpoint, info.family)
        except KeyError as exc:
            return f"its {shown} has no {str(exc.args[0])[:120] if exc.args else 'weight'}, which the config needs"
        except (IndexError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
            return f"its {shown} cannot be renamed to the config's parts ({short_error(exc, 80)})"
        problem = _first_difference(model, converted)
        if problem:
            return f"its {shown} {problem}"
        if not recognised:
            return f"its {shown} is not laid out as the loader reads a CLIP text encoder"
    return ""


@functools.lru_cache(maxsize=8)
def _meta_part(part: str, config_text: str) -> tuple[Any, dict]:
    """The model `part` built from the config file `config_text` as from_single_file builds it, on the meta
    device, and the config it was built from. Building a real SDXL UNet so takes about a second; the shipped
    configs are built once per process. torch.device is a per-thread mode, unlike accelerate's
    init_empty_weights, which patches torch for every thread (a job may be loading a model meanwhile)."""
    import diffusers
    import torch
    import transformers

    with tempfile.TemporaryDirectory(prefix="latent-canvas-config-") as temp, torch.device("meta"):
        (Path(temp) / "config.json").write_text(config_text, encoding="utf-8")
        if part in ("unet", "vae"):
            cls = diffusers.UNet2DConditionModel if part == "unet" else diffusers.AutoencoderKL
            config = cls.load_config(temp, local_files_only=True)
            return cls.from_config(config), config
        cls = transformers.CLIPTextModel if part == "text_encoder" else transformers.CLIPTextModelWithProjection
        return cls(cls.config_class.from_pretrained(temp, local_files_only=True)), {}


def _converted(part: str, model, config: dict, checkpoint: dict, family: str) -> tuple[dict, bool]:
    """The file's tensors of `part` under the part's own names, as from_single_file renames them, and whether
    the loader would find them at all (a text encoder in none of the layouts it reads would not be)."""
    from diffusers.loaders import single_file_utils as convert

    if part == "unet":
        return convert.convert_ldm_unet_checkpoint(checkpoint, config), True
    if part == "vae":
        return convert.convert_ldm_vae_checkpoint(checkpoint, config), True
    # Which text encoder of the file fills this one is told by key names and widths, as
    # create_diffusers_clip_model_from_ldm tells it; when none fits, the family's own is compared.
    text_model = getattr(model, "text_model", model)
    width = text_model.embeddings.position_embedding.weight.shape[-1]
    names = convert.CHECKPOINT_KEY_NAMES

    def fits(kind: str) -> bool:
        return names[kind] in checkpoint and checkpoint[names[kind]].shape[-1] == width
    recognised = True
    if names["clip"] in checkpoint or fits("clip_sdxl"):
        prefix = ""
    elif names["open_clip"] in checkpoint:
        prefix = "cond_stage_model.model."
    elif fits("open_clip_sdxl"):
        prefix = "conditioner.embedders.1.model."
    else:                 # the loader would find none: the family's own says what differs
        recognised = False
        prefix = "conditioner.embedders.1.model." if part == "text_encoder_2" else \
            "cond_stage_model.model." if family == "sd2" else ""
    converted = convert.convert_open_clip_checkpoint(model, checkpoint, prefix=prefix) if prefix else \
        convert.convert_ldm_clip_checkpoint(checkpoint)
    if text_model is model:
        converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
    return converted, recognised


def _first_difference(model, converted: dict) -> str:
    """What the first of the model's weights that `converted` lacks or holds in another shape is; "" if none.
    Extra tensors are left out, as the loader leaves them out."""
    differences = []
    for key, weight in model.named_parameters():
        given = converted.get(key)
        if given is None:
            differences.append(f"has no {key}, which the config needs")
        elif tuple(given.shape) != tuple(weight.shape):
            differences.append(f"{key} is {_dimensions(given.shape)}, the config needs {_dimensions(weight.shape)}")
    if not differences:
        return ""
    more = len(differences) - 1
    return differences[0] + (f" ({more:,} more of its tensors differ)" if more else "")


def _dimensions(shape) -> str:
    return "x".join(str(size) for size in shape) if len(shape) else "a single number"


# -- diffusers folders -----------------------------------------------------------------------------------

def _load_folder(folder: Path, name: str, plan: DevicePlan, progress: Progress) -> DiffusionModel:
    import diffusers
    import transformers

    family, inpaint = inspect_folder(folder)            # every part's config checked among the rest
    labels = folder_class_labels(folder)                # a class-conditioned model has no text encoder
    parts = ["unet", "vae"] if labels is not None else \
        ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    scheduler_path = folder / "scheduler" / "scheduler_config.json"
    if not scheduler_path.is_file():
        scheduler_path = CONFIG_ROOT / ("sdxl" if family == "sdxl" else "sd15") / "scheduler" / scheduler_path.name
    scheduler_config = part_config(scheduler_path, "scheduler",
                                   f"{scheduler_path.parent.parent.name}/scheduler/{scheduler_path.name}")
    tokenizers = tokenizers_for(folder, family, f"{folder.name}/") if labels is None else []
    weights = {part: folder_weights(folder, part) for part in parts}

    def options(part: str) -> dict:
        safe, variant = weights[part]
        return dict(torch_dtype=plan.dtype, local_files_only=True, subfolder=part, use_safetensors=safe,
                    variant=variant or None)
    progress(f"loading {name}: UNet", 0.1)
    unet = diffusers.UNet2DConditionModel.from_pretrained(folder, **options("unet"))
    progress(f"loading {name}: VAE", 0.6)
    vae = diffusers.AutoencoderKL.from_pretrained(folder, **options("vae"))
    if labels is not None:
        return _finish(DiffusionModel(name, family, inpaint, unet, vae, [], [], scheduler_config, plan,
                                      extra={"class_labels": labels}))
    progress(f"loading {name}: text encoder", 0.7)
    encoders = [transformers.CLIPTextModel.from_pretrained(folder, **options("text_encoder"))]
    if family == "sdxl":
        encoders.append(transformers.CLIPTextModelWithProjection.from_pretrained(
            folder, **options("text_encoder_2")))
    return _finish(DiffusionModel(name, family, inpaint, unet, vae, encoders, tokenizers, scheduler_config, plan))


def tokenizers_for(folder: Path, family: str, where: str = "") -> list:
    """The model's CLIP tokenizers: its own if it has them, else (single files) the shipped vocabulary's.
    A folder's own are read within TOKENIZER_FILES' bounds and built from a copy of just those files;
    `where` ("config folder X: ", "model/") begins the name of a file in messages."""
    def load(sub: str, pad: str):
        own = folder / sub
        if not ((own / "vocab.json").is_file() and (own / "merges.txt").is_file()):
            return shipped_tokenizer(pad)
        files = _tokenizer_files(own, f"{where}{sub}/")
        if _is_shipped_vocabulary(files, pad):
            return shipped_tokenizer(pad)
        from transformers import CLIPTokenizer

        with tempfile.TemporaryDirectory(prefix="latent-canvas-tokenizer-") as temp:
            for name, file in files.items():
                data = file.read()
                if name in TOKENIZER_SETTINGS:
                    data = _tokenizer_settings(data, TOKENIZER_SETTINGS[name], f"{where}{sub}/{name}")
                (Path(temp) / name).write_bytes(data)
            return CLIPTokenizer.from_pretrained(temp, local_files_only=True)

    # SD 2.x and SDXL's second encoder are OpenCLIP models, which pad with "!" (token 0).
    if family == "sdxl":
        return [load("tokenizer", "<|endoftext|>"), load("tokenizer_2", "!")]
    return [load("tokenizer", "!" if family == "sd2" else "<|endoftext|>")]


# The files a CLIP tokenizer is built from, and the most of each that is read (the shipped vocabulary is
# 0.96 MB, its merges 0.52 MB, a CLIP tokenizer.json 3.6 MB, the settings a few KB).
TOKENIZER_FILES = {"vocab.json": 16 << 20, "merges.txt": 16 << 20, "tokenizer.json": 16 << 20,
                   "tokenizer_config.json": 1 << 20, "special_tokens_map.json": 1 << 20,
                   "added_tokens.json": 1 << 20}


# What a tokenizer's settings files may say. Other keys are dropped: some name files to read instead of the
# copied ones ("vocab", "merges", "vocab_file", "tokenizer_file"), which could be a FIFO or /dev/zero.
_TOKENS = {"bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens"}
TOKENIZER_SETTINGS = {
    "tokenizer_config.json": _TOKENS | {"add_prefix_space", "clean_up_tokenization_spaces", "do_lower_case",
                                        "errors", "model_max_length", "added_tokens_decoder", "padding_side",
                                        "truncation_side", "model_input_names"},
    "special_tokens_map.json": _TOKENS,
}


def _tokenizer_settings(data: bytes, allowed: set[str], shown: str) -> bytes:
    """A tokenizer settings file with only the keys a CLIP tokenizer needs."""
    try:
        settings = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EngineError(f"{shown} is not valid JSON: {short_error(exc, 80)}") from None
    if not isinstance(settings, dict):
        raise EngineError(f"{shown} is not a JSON object")
    return json.dumps({key: value for key, value in settings.items() if key in allowed}).encode("utf-8")


class _TokenizerFile(NamedTuple):
    size: int
    read: Callable[[], bytes]                    # its bytes (read once), or EngineError in one line


def _tokenizer_files(folder: Path, shown: str) -> dict[str, _TokenizerFile]:
    """Each of TOKENIZER_FILES in `folder`, by name; EngineError in one line when one is over its bound
    (measured before anything is read)."""
    def reader(path: Path, limit: int) -> Callable[[], bytes]:
        @functools.cache
        def read() -> bytes:
            try:
                return read_bounded(path, limit)
            except FileTooLarge as exc:
                raise EngineError(f"{shown}{path.name} is too large for a tokenizer ({exc})") from None
            except OSError as exc:
                raise EngineError(f"could not read {shown}{path.name}: {exc.strerror or exc}") from None
        return read
    files = {}
    for name, limit in TOKENIZER_FILES.items():
        path = folder / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size > limit:
            raise EngineError(f"{shown}{name} is too large for a tokenizer ({size:,} bytes; at most {limit:,} are "
                              "read)")
        files[name] = _TokenizerFile(size, reader(path, limit))
    return files


# Building a CLIP tokenizer parses a 49k-word vocabulary and 48k merges in one call that holds the GIL for
# about 45 ms: a stall of the editor's UI thread when it happens during a job. Nearly every model uses the
# same vocabulary, so the tokenizers are built once per process (the engine only reads them), and the
# background preload builds them before the first job.
_shipped: dict[str, Any] = {}
_shipped_lock = threading.Lock()
_STANDARD_SPECIALS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}


def shipped_tokenizer(pad: str):
    """The CLIP tokenizer of resources/tokenizers/clip with `pad` as its padding token, shared."""
    with _shipped_lock:
        if pad not in _shipped:
            from transformers import CLIPTokenizer

            _shipped[pad] = CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
                                          model_max_length=77, pad_token=pad)
        return _shipped[pad]


def _is_shipped_vocabulary(files: dict[str, _TokenizerFile], pad: str) -> bool:
    """True if a tokenizer folder's `files` hold the shipped vocabulary and merges, byte for byte,
    the standard special tokens with `pad`, and nothing that would change how it tokenizes (added tokens,
    tokenizer.json). The vocabulary and merges are read only when their sizes are the shipped files'."""
    if "tokenizer.json" in files or "added_tokens.json" in files:
        return False
    specials: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if name in files:
            try:
                settings = json.loads(files[name].read().decode("utf-8"))
            except (ValueError, RecursionError):        # UnicodeDecodeError is a ValueError
                return False
            if not isinstance(settings, dict):
                return False
            specials.update(settings)
    added = specials.get("added_tokens_decoder") or {}
    if not isinstance(added, dict) or set(added) - {"49406", "49407"}:
        return False
    expected = dict(_STANDARD_SPECIALS, pad_token=pad)
    for key, value in expected.items():
        declared = specials.get(key, "<|endoftext|>" if key == "pad_token" else value)
        if isinstance(declared, dict):
            declared = declared.get("content")
        if declared != value:
            return False
    shipped = ("vocab.json", "merges.txt")
    if any(files[name].size != (TOKENIZER_DIR / name).stat().st_size for name in shipped):
        return False
    return all(files[name].read() == (TOKENIZER_DIR / name).read_bytes() for name in shipped)


# -- the Hugging Face hub -----------------------------------------------------------------------------------

def download_repo(repo_id: str, progress: Progress) -> Path:
    """Fetch the diffusers-format files of `repo_id` into the HF cache (or find them there offline)."""
    folder = fetch_snapshot(repo_id, DOWNLOAD_PATTERNS, progress, "model")
    if not (folder / "unet").is_dir():
        raise EngineError(f"{repo_id} is not a diffusers-format Stable Diffusion model (no unet folder); "
                          "download its .safetensors file and add that instead")
    return folder


def fetch_snapshot(repo_id: str, patterns: list[str], progress: Progress, what: str) -> Path:
    """The files of `repo_id` matching `patterns` from the HF cache, or else downloaded into it in one weight
    variant (app.engine.hub_download); `what` ("model", "ControlNet") names it in the one line a failure gives."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise EngineError(f"the Hugging Face cache's copy of {repo_id} cannot be read ({short_error(exc)})") from None
    if constants.HF_HUB_OFFLINE:
        raise EngineError(f"{'' if what == 'model' else f'the {what} '}{repo_id} is not downloaded yet and the "
                          "Hugging Face hub cannot be reached (offline?)")
    from app.engine.hub_download import DownloadProgress, download_model, describe_bytes

    def report(step: DownloadProgress) -> None:
        progress(f"downloading {repo_id}: {describe_bytes(step.done)} of {describe_bytes(step.total)}{step.pace}",
                 step.done / step.total if step.total else -1)
    return download_model(repo_id, progress=report)


# -- placing on the device ---------------------------------------------------------------------------------

def _finish(model: DiffusionModel) -> DiffusionModel:
    import torch

    plan = model.plan
    force_upcast = bool(getattr(model.vae.config, "force_upcast", False))
    model.vae_dtype_name = plan.vae_dtype_name(force_upcast)
    if model.vae.dtype != getattr(torch, model.vae_dtype_name):
        model.vae.to(dtype=getattr(torch, model.vae_dtype_name))
    if plan.device == "cpu":
        # oneDNN's convolutions run the VAE 8 % (encode) to 20 % (decode) faster in channels-last at SD 1.5's
        # size; the UNet is 10 % slower so, and stays as it is (BENCHMARKS.md).
        model.vae.to(memory_format=torch.channels_last)
    for module in model.components():
        module.eval()
        module.requires_grad_(False)
    if plan.attention_slicing:
        model.unet.set_attention_slice("auto")
    if plan.vae_tiling:
        model.vae.enable_tiling()
    if not plan.offload:
        for module in model.components():
            module.to(plan.device)
    return model
