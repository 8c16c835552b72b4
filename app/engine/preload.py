"""Import the diffusion stack on a background thread as soon as the editor window is up.

Importing torch runs its C++ static initialisers while holding the GIL (about 150 ms on a 2-core machine),
diffusers and transformers add 50-100 ms holds of their own. Whatever thread imports them, the UI thread
cannot run meanwhile. Done lazily by the first Fill, those stalls would land while the user watches the
first job's previews; done right after the window appears, they land in the first second of the session,
before anyone can have clicked. The editor's cold start is unchanged: nothing is imported before the
window is shown.

The objects those imports create (millions) are then moved out of the garbage collector's reach
(gc.freeze): otherwise every full collection scans them all, a 150 ms stall of every thread that can strike
at any moment, in the middle of a job or of a brush stroke. The shared CLIP tokenizers are built here too
(a 45 ms hold each), not by the first model load.
"""
from __future__ import annotations

import gc
import importlib
import logging
import threading
import time

log = logging.getLogger(__name__)

MODULES = ("torch", "transformers", "diffusers", "app.engine.diffusion.latent_codec", "app.engine.diffusion.denoise",
           "app.engine.diffusion.model_loader", "app.engine.diffusion.engine")
# diffusers and transformers import their classes lazily, on first attribute access: these are the ones a
# first job touches (models, pipelines for single files, schedulers, tokenizer).
ATTRIBUTES = {
    "diffusers": ("UNet2DConditionModel", "AutoencoderKL", "AutoencoderTiny", "StableDiffusionPipeline",
                  "StableDiffusionInpaintPipeline", "StableDiffusionXLPipeline", "StableDiffusionXLInpaintPipeline",
                  "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler",
                  "EulerDiscreteScheduler", "UniPCMultistepScheduler"),
    "transformers": ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"),
}

_lock = threading.Lock()
_done = threading.Event()
_stopping = threading.Event()
_thread: threading.Thread | None = None
STOP_WAIT_S = 15.0


def preload(modules: tuple[str, ...] = MODULES) -> threading.Event:
    """Start importing `modules` on a background thread (once per process); the returned event is set when
    the imports have finished, failed imports included (the first job then reports the failure)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, args=(modules,), name="engine-preload")
            _thread.start()
    return _done


def wait_if_started(timeout: float = 120.0) -> None:
    """Let a preload that has started finish first: two threads importing torch at once can fail, and a
    job's objects must not be frozen with the libraries'."""
    if _thread is not None:
        _done.wait(timeout)


def stop(timeout: float = STOP_WAIT_S) -> bool:
    """The editor is quitting: import nothing more and let the import under way finish, so the interpreter
    does not shut down under a thread that is importing (which fails with a traceback, or worse). True when
    no preload thread is left running."""
    _stopping.set()
    thread = _thread
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()


def _run(modules: tuple[str, ...]) -> None:
    start = time.perf_counter()
    try:
        for name in modules:
            if _stopping.is_set():
                return
            module = importlib.import_module(name)
            for attribute in ATTRIBUTES.get(name, ()):
                getattr(module, attribute)
            if name == "transformers":
                _quiet_transformers()
            gc.freeze()
        if _stopping.is_set():
            return
        _warm_transformers()
        _warm_tokenizers()
        gc.freeze()
        log.info("diffusion engine imported in %.1f s", time.perf_counter() - start)
    except Exception:  # noqa: BLE001 - a broken install is reported by the first job that needs it
        if _stopping.is_set():
            log.debug("preload ended by the editor quitting", exc_info=True)
        else:
            log.exception("could not preload the diffusion engine")
    finally:
        _done.set()


def _quiet_transformers() -> None:
    """transformers' notices (that CLIPImageProcessor would like torchvision, which Stable Diffusion never
    needs) would print on every launch; the engine reports what matters itself."""
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - only quieter output
        log.debug("transformers' logging was left as it is", exc_info=True)


def _warm_transformers() -> None:
    """transformers compiles ~1000 regular expressions of checkpoint-conversion rules the first time any model
    loads, then caches them for the process: build that cache now, not during the first job. Best effort: an
    internal of transformers 5, skipped if it moves."""
    try:
        from transformers import conversion_mapping

        conversion_mapping.get_checkpoint_conversion_mapping("clip_text_model")
    except Exception:  # noqa: BLE001 - only a warm-up
        log.debug("transformers' conversion mapping was not pre-built", exc_info=True)


def _warm_tokenizers() -> None:
    """Build the shared CLIP tokenizers (both padding tokens) that the first model load would build."""
    try:
        from app.engine.diffusion.model_loader import shipped_tokenizer

        for pad in ("<|endoftext|>", "!"):
            shipped_tokenizer(pad)
    except Exception:  # noqa: BLE001 - only a warm-up; the model load reports a real problem
        log.debug("the CLIP tokenizers were not pre-built", exc_info=True)
