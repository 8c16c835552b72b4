"""A style's LoRA on the loaded model, for the jobs that use it, through diffusers' own LoRA loaders.

diffusers reads both layouts LoRAs are shared in (kohya / A1111 `lora_unet_*`, `lora_te*_*` keys, and the
diffusers / PEFT `unet.*.lora_A` keys), converts them and injects PEFT layers into the UNet and the text
encoder(s): StableDiffusionLoraLoaderMixin for SD 1.x/2.x, StableDiffusionXLLoraLoaderMixin for SDXL,
hosted by a lightweight object around the model's own components (no pipeline is built).

Only .safetensors files are read, never pickles; their header is checked by the bounded reader of
app.engine.diffusion.safetensors_header before diffusers opens them. `applied(model, path, weight)` is entered around
every job: with a LoRA, the adapter is loaded (or, when the same unchanged file is already loaded from the
previous job, kept) and set to `weight`; without one, any adapter still loaded is unloaded first, which
puts the model's original layers back, so results are bit for bit those of a model that never had a LoRA.
A file that cannot be used is reported as one EngineError line naming it, after undoing a partial load.
"""
from __future__ import annotations

import functools
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from app.engine.events import EngineError
from app.engine.diffusion.model_files import short_error
from app.engine.diffusion.safetensors_header import read_safetensors_header

log = logging.getLogger(__name__)

ADAPTER = "style"               # the adapter name the loaded LoRA gets
_LOADED = "lora"                # model.extra key: (path, size, mtime) of the LoRA file loaded now
_SDXL_PREFIXES = ("lora_te1_", "lora_te2_", "text_encoder_2.")
_FAMILIES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


@contextmanager
def applied(model, path: str, weight: float, report: Callable[[str], None] | None = None):
    """Run the block with the LoRA at `path` applied at `weight`; with no path or weight 0, with none."""
    if not path or weight == 0:
        unload(model)
        yield
        return
    file = Path(path).expanduser()
    identity = _identity(file)
    host = _host(model)
    if model.extra.get(_LOADED) != identity:
        unload(model)
        if report is not None:
            report(f"applying LoRA {file.name}")
        _load(model, host, file)
        model.extra[_LOADED] = identity
    try:
        with _quiet():
            host.set_adapters(ADAPTER, weight)
    except Exception as exc:  # noqa: BLE001 - undone, then one line
        unload(model)
        raise EngineError(f"LoRA {file.name} could not be applied: {short_error(exc)}") from None
    yield


def unload(model) -> None:
    """Take any LoRA off `model`: its original layers are back in place (a no-op without one)."""
    if _LOADED not in model.extra:
        return
    model.extra.pop(_LOADED, None)
    with _quiet():
        _host(model).unload_lora_weights()


def loaded(model) -> str | None:
    """The path of the LoRA on `model` now, if any."""
    entry = model.extra.get(_LOADED)
    return entry[0] if entry else None


def _identity(file: Path) -> tuple[str, int, int]:
    if file.suffix.lower() != ".safetensors":
        raise EngineError(f"LoRA {file.name}: only .safetensors LoRA files are supported")
    try:
        stat = file.resolve().stat()
    except (OSError, ValueError):
        raise EngineError(f"LoRA not found: {file}") from None
    if not file.is_file():
        raise EngineError(f"LoRA not found: {file} (not a file)")
    return str(file.resolve()), stat.st_size, stat.st_mtime_ns


def _read_keys(file: Path) -> tuple[list[str], str]:
    """The LoRA's tensor names and the family its kohya metadata names ("" if none), from its header through
    the bounded reader, before diffusers reads it."""
    header = read_safetensors_header(file, f"LoRA {file.name}")
    version = header.metadata.get("ss_base_model_version", "").lower()
    family = "sdxl" if version.startswith("sdxl") else "sd2" if version.startswith("sd_v2") else \
        "sd1" if version.startswith("sd_v1") else ""
    return list(header.tensors), family


def _load(model, host, file: Path) -> None:
    from app.engine.diffusion.devices import is_out_of_memory

    try:
        import peft  # noqa: F401 - diffusers' LoRA loading runs on it
    except ImportError:
        raise EngineError(f"LoRA {file.name} needs the peft package: pip install 'peft>=0.13'") from None
    keys, made_for = _read_keys(file)
    if not keys or not any("lora" in key for key in keys):
        raise EngineError(f"{file.name} is not a LoRA (it holds no LoRA weights)")
    family = _FAMILIES.get(model.family, model.family)
    if made_for and (made_for == "sdxl") != model.is_xl:
        raise EngineError(f"LoRA {file.name} is an {_FAMILIES[made_for]} LoRA; {model.name} is an {family} model")
    try:
        with _quiet():
            host.load_lora_weights(str(file), adapter_name=ADAPTER, use_safetensors=True, local_files_only=True)
        if not any(ADAPTER in names for names in host.get_list_adapters().values()):
            raise EngineError(f"LoRA {file.name} has no weights for {model.name} ({family}): it was made for "
                              "another kind of model")
    except Exception as exc:  # noqa: BLE001 - undo the partial load, then one line
        _undo(host)
        if isinstance(exc, EngineError) or is_out_of_memory(exc):
            raise
        log.warning("could not apply the LoRA %s", file, exc_info=exc)
        if any(key.startswith(_SDXL_PREFIXES) for key in keys) and not model.is_xl:
            raise EngineError(f"LoRA {file.name} is an SDXL LoRA; {model.name} is an {family} model") from None
        if isinstance(exc, (RuntimeError, ValueError)) and ("size mismatch" in str(exc)
                                                            or "not found in the base model" in str(exc)):
            raise EngineError(f"LoRA {file.name} does not fit {model.name} ({family}): it was made for another "
                              "model family") from None
        raise EngineError(f"LoRA {file.name} could not be applied: {short_error(exc)}") from None


def _undo(host) -> None:
    try:
        with _quiet():
            host.unload_lora_weights()
    except Exception:  # noqa: BLE001 - already failing; keep the first error
        log.exception("could not undo a partial LoRA load")


def _host(model):
    """A LoRA-loader object whose unet / text_encoder(s) are the model's own modules."""
    sd_host, xl_host = _host_classes()
    return xl_host(model) if model.is_xl else sd_host(model)


@functools.lru_cache(maxsize=None)
def _host_classes():
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    class _Host:
        hf_device_map = None             # diffusers asks pipelines this before checking for offload hooks

        def __init__(self, model) -> None:
            self.unet = model.unet
            self.text_encoder = model.text_encoders[0]
            if len(model.text_encoders) > 1:
                self.text_encoder_2 = model.text_encoders[1]

        @property
        def components(self) -> dict:
            return {name: getattr(self, name) for name in self._lora_loadable_modules if hasattr(self, name)}

    class SDHost(_Host, StableDiffusionLoraLoaderMixin):
        pass

    class XLHost(_Host, StableDiffusionXLLoraLoaderMixin):
        pass
    return SDHost, XLHost


@contextmanager
def _quiet():
    """diffusers logs (multi-line) errors and PEFT warns while loading; the EngineError line says it all.
    The warnings are filtered by their modules, not inside catch_warnings: that is not thread-safe (this runs
    on the engine's thread while the UI thread reads images) and could leave an "ignore all" behind."""
    import diffusers

    for module in (r"peft(\.|$)", r"diffusers(\.|$)"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity(logging.CRITICAL + 10)
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(level)

