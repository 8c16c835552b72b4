"""Faults injected on the CPU: a VAE that overflows to NaN, out of memory in the VAE decode, image sizes
that are not multiples of 8, and a hundred start/cancel cycles on the engine thread.

The diffusion tests run the real engine on the tiny random models of tests/model_factory.py, loaded by the
app's own loader into this file's own ModelManager, which is freed after every test that changes a loaded
model (its VAE precision, its memory savers), so no other test sees a patched model. What is checked is
what a user relies on: a result of the right size, pixels beyond the feather bit for bit, one-line errors,
and exactly one terminal event per job.
"""
from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.core import imageops
from app.core.geometry import Rect
from app.engine.base import Engine
from app.engine.events import CancelToken, EngineEvent, EventKind, Variant
from app.engine.diffusion.model_manager import ModelManager
from app.engine.registry import EngineRegistry
from app.engine.request import GenerationRequest, JobKind, MaskOptions, OutpaintOptions, SamplingOptions
from app.engine.runner import run_job
from app.engine.worker import EngineController
from tests.test_diffusion_engine import box_mask, photo    # the shared test image and mask

MANAGER = ModelManager()          # this file's own: models patched here never reach other test files


# -- helpers ---------------------------------------------------------------------------------------------

def model_args(tiny_models, inpaint: bool = False) -> dict:
    return dict(model=str(tiny_models.path("sd15", inpaint, "folder")), device="cpu")


def fill_request(tiny_models, image=None, mask=None, *, seed=7, variants=1, feather=6, inpaint=False):
    image = photo(160, 120) if image is None else image
    mask = box_mask(image.shape, Rect(60, 40, 40, 30)) if mask is None else mask
    return GenerationRequest(JobKind.FILL, image, mask, prompt="a red ball",
                             sampling=SamplingOptions(steps=2, seed=seed, variants=variants),
                             mask_options=MaskOptions(feather=feather), **model_args(tiny_models, inpaint))


def run(request: GenerationRequest) -> list[EngineEvent]:
    from app.engine.diffusion.engine import DiffusionEngine

    events: list[EngineEvent] = []
    run_job(DiffusionEngine(request.model, MANAGER), request, 1, events.append, CancelToken())
    return events


def terminal(events: list[EngineEvent]) -> EngineEvent:
    """The job's one terminal event, which must also be its last."""
    ends = [e for e in events if e.kind != EventKind.PROGRESS]
    assert len(ends) == 1, [(e.kind, e.message) for e in ends]
    assert events[-1] is ends[0]
    return ends[0]


def far_from(mask: np.ndarray, feather: int) -> np.ndarray:
    """Pixels the composite must leave bit-identical: beyond the feather of `mask`."""
    return imageops.feather_mask(mask, feather) == 0


@pytest.fixture
def loaded(tiny_models):
    """The tiny SD 1.5 model loaded through the app's loader; freed afterwards, since tests here change it."""
    pytest.importorskip("diffusers")
    events = run(fill_request(tiny_models))
    assert terminal(events).kind == EventKind.RESULT, terminal(events).message
    yield MANAGER.current
    MANAGER.free()


def patch_decode(monkeypatch, vae, fault):
    """Route model.vae.decode through `fault(call, original, z)`; returns the list of calls, each a dict of
    what the decode saw (latent batch, the VAE's precision, whether tiling was on)."""
    original = vae.decode
    calls: list[dict] = []

    def decode(z, *args, **kwargs):
        call = dict(batch=z.shape[0], dtype=vae.dtype, tiling=bool(getattr(vae, "use_tiling", False)))
        calls.append(call)
        return fault(call, lambda: original(z, *args, **kwargs), z)
    monkeypatch.setattr(vae, "decode", decode)
    return calls


def nan_like_decode(vae, z):
    import torch

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    b, _, h, w = z.shape
    return SimpleNamespace(sample=torch.full((b, 3, h * scale, w * scale), float("nan"), dtype=z.dtype))


def out_of_memory():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")


# -- 1. NaN from the VAE -----------------------------------------------------------------------------------

def test_half_precision_vae_nan_is_decoded_again_in_fp32(tiny_models, loaded, monkeypatch):
    import torch

    request = fill_request(tiny_models)
    reference = terminal(run(request))                   # the whole model in fp32: no fault
    assert reference.kind == EventKind.RESULT
    loaded.vae.to(torch.float16)                         # as on a GPU: the VAE in half precision
    calls = patch_decode(monkeypatch, loaded.vae,
                         lambda call, real, z: nan_like_decode(loaded.vae, z) if call["dtype"] == torch.float16
                         else real())
    result = terminal(run(request))
    assert result.kind == EventKind.RESULT, result.message
    assert [c["dtype"] for c in calls] == [torch.float16, torch.float32]     # NaN in fp16, then once in fp32
    assert loaded.vae.dtype == torch.float16                                 # the chosen precision is back
    out, image, mask = result.variants[0].image, request.image, request.mask
    assert out.shape == image.shape
    far = far_from(mask, 6)
    np.testing.assert_array_equal(out[far], image[far])
    hole = out[mask > 0].astype(int)
    assert np.count_nonzero(hole.max(axis=-1) == 0) < 0.01 * len(hole)      # not a black (NaN) patch
    assert not np.array_equal(out[mask > 0], image[mask > 0])               # and something was generated
    # The fp32 redo gives what an fp32 VAE gives (the fp16 encode differs only by rounding).
    expected = reference.variants[0].image[mask > 0].astype(int)
    assert np.abs(hole - expected).mean() < 2.0


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_vae_that_always_gives_nan_ends_in_one_error_line_and_no_result(tiny_models, loaded, monkeypatch,
                                                                        precision):
    import torch

    loaded.vae.to(getattr(torch, precision))
    calls = patch_decode(monkeypatch, loaded.vae, lambda call, real, z: nan_like_decode(loaded.vae, z))
    events = run(fill_request(tiny_models))
    result = terminal(events)
    assert result.kind == EventKind.ERROR
    assert EventKind.RESULT not in [e.kind for e in events]
    assert "\n" not in result.message and "NaN" in result.message and "VAE" in result.message
    expected = [torch.float16, torch.float32] if precision == "float16" else [torch.float32]
    assert [c["dtype"] for c in calls] == expected       # fp16 is retried in fp32 once; fp32 is not retried
    assert loaded.vae.dtype == getattr(torch, precision)


# -- 1b. NaN from the UNet or the text encoder: the error names the part whose weights are damaged -----------

def damaged_single_file(tiny_models, tmp_path, key_prefix: str, value: float):
    """The tiny SD 1.5 model as a single file with every weight under `key_prefix` set to `value`."""
    import torch
    from safetensors.torch import save_file

    from tests.model_factory import single_file_state_dict

    state = single_file_state_dict(tiny_models.components("sd15"))
    hit = [key for key in state if key.startswith(key_prefix)]
    assert hit, key_prefix
    state = {key: torch.full_like(v, value) if key in hit else v for key, v in state.items()}
    path = tmp_path / "damaged.safetensors"
    save_file({key: v.contiguous() for key, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("key_prefix, value, part", [
    ("model.diffusion_model.out.2.", float("nan"), "the UNet produced invalid values (NaN or infinity) at step 1 "
                                                   "of 2: the model's UNet weights are damaged"),
    ("model.diffusion_model.input_blocks.0.0.", float("inf"), "the UNet produced invalid values"),
    ("cond_stage_model.transformer.text_model.final_layer_norm.", float("nan"),
     "the text encoder produced invalid values (NaN or infinity): the model's text encoder weights are damaged"),
])
def test_nan_weights_are_blamed_on_the_part_that_holds_them_not_the_vae(tiny_models, tmp_path, key_prefix, value,
                                                                         part):
    pytest.importorskip("diffusers")
    path = damaged_single_file(tiny_models, tmp_path, key_prefix, value)
    request = GenerationRequest(JobKind.FILL, photo(160, 120), box_mask((120, 160), Rect(60, 40, 40, 30)),
                                prompt="a red ball", sampling=SamplingOptions(steps=2, seed=7), model=str(path),
                                model_config=str(tiny_models.config_folder("sd15")), device="cpu")
    try:
        events = run(request)
    finally:
        MANAGER.free()
    result = terminal(events)
    assert result.kind == EventKind.ERROR
    assert result.message.startswith(part), result.message
    assert "VAE" not in result.message and "\n" not in result.message


@pytest.mark.parametrize("finish", [False, True])
def test_the_unet_check_is_read_after_the_steps_preview_and_a_finish_on_that_step_still_fails(loaded, monkeypatch,
                                                                                              finish):
    """The NaN check waits for nothing of its own: it is read after the step's preview of x0, which has
    waited for the step already. Finish pressed on that step still ends in the error, never a NaN result."""
    import torch

    from app.engine.diffusion.denoise import DenoiseJob, run_denoise
    from app.engine.events import EngineError

    forward = loaded.unet.forward
    monkeypatch.setattr(loaded.unet, "forward",
                        lambda *args, **kwargs: (torch.full_like(forward(*args, **kwargs)[0], float("nan")),))
    job = DenoiseJob(torch.zeros(1, 4, 8, 8), None, None, "a red ball", "", 5.0, 2, 1.0, "euler", [7], (64, 64))
    previews = []

    def on_step(step, total, x0):
        previews.append(step)
        return finish
    with pytest.raises(EngineError) as error:
        run_denoise(loaded, job, on_step)
    assert str(error.value).startswith("the UNet produced invalid values (NaN or infinity) at step 1 of 2")
    assert previews == [1]


# -- 2. out of memory in the VAE decode --------------------------------------------------------------------

def test_out_of_memory_in_vae_decode_retries_one_variant_at_a_time(tiny_models, loaded, monkeypatch):
    # What each seed gives on its own, without any fault.
    alone = [terminal(run(fill_request(tiny_models, seed=seed))).variants[0].image for seed in (7, 8)]

    def fail_first(call, real, z):
        if len(calls) == 1:
            raise out_of_memory()
        return real()
    calls = patch_decode(monkeypatch, loaded.vae, fail_first)
    request = fill_request(tiny_models, seed=7, variants=2)
    result = terminal(run(request))
    assert result.kind == EventKind.RESULT, result.message
    assert [c["batch"] for c in calls] == [2, 1, 1]      # both at once ran out, then one at a time
    assert [v.seed for v in result.variants] == [7, 8]
    for variant, expected in zip(result.variants, alone):
        np.testing.assert_array_equal(variant.image, expected)
    assert not any(c["tiling"] for c in calls)           # one retry sufficed: no memory savers yet
    far = far_from(request.mask, 6)
    np.testing.assert_array_equal(result.variants[0].image[far], request.image[far])


def _fits_only_tiled(call, real, z):
    """A VAE decode that runs out of memory unless tiling is on."""
    if not call["tiling"]:
        raise out_of_memory()
    return real()


def test_out_of_memory_in_vae_decode_until_tiled_still_gives_the_result(tiny_models, loaded, monkeypatch):
    calls = patch_decode(monkeypatch, loaded.vae, _fits_only_tiled)
    request = fill_request(tiny_models)
    result = terminal(run(request))
    assert result.kind == EventKind.RESULT, result.message
    assert calls[-1]["tiling"] and not any(c["tiling"] for c in calls[:-1])
    assert len(calls) <= 3 and loaded.extra.get("memory_savers") is True
    out = result.variants[0].image
    assert out.shape == request.image.shape
    far = far_from(request.mask, 6)
    np.testing.assert_array_equal(out[far], request.image[far])


def test_out_of_memory_with_one_variant_goes_straight_to_the_memory_savers(tiny_models, loaded, monkeypatch):
    calls = patch_decode(monkeypatch, loaded.vae, _fits_only_tiled)
    result = terminal(run(fill_request(tiny_models, variants=1)))
    assert result.kind == EventKind.RESULT, result.message
    assert [c["tiling"] for c in calls] == [False, True]  # not a second, identical, untiled attempt


def test_out_of_memory_in_vae_decode_that_persists_is_one_clear_line(tiny_models, loaded, monkeypatch):
    def always(call, real, z):
        raise out_of_memory()
    calls = patch_decode(monkeypatch, loaded.vae, always)
    events = run(fill_request(tiny_models, variants=2))
    result = terminal(events)
    assert result.kind == EventKind.ERROR
    assert EventKind.RESULT not in [e.kind for e in events]
    assert "\n" not in result.message
    assert re.fullmatch(r"out of memory at \d+x\d+, even with attention slicing and VAE tiling: .+",
                        result.message), result.message
    assert calls[-1]["tiling"] and len(calls) <= 3     # gave up only after the savers, not in an endless loop


# -- 3. sizes that are not multiples of 8 ------------------------------------------------------------------

@pytest.mark.parametrize("width,height,channels,spot", [
    (101, 67, 3, Rect(37, 21, 23, 17)),         # wide, mask inside
    (67, 101, 3, Rect(44, 80, 23, 21)),         # tall, mask touching the right and bottom edges
    (101, 67, 4, Rect(3, 29, 19, 13)),          # RGBA, mask near the left edge
])
def test_fill_of_an_odd_size_keeps_its_size_and_every_pixel_beyond_the_feather(tiny_models, width, height,
                                                                                 channels, spot):
    pytest.importorskip("diffusers")
    image = photo(width, height, channels, seed=width + channels)
    mask = box_mask(image.shape, spot)
    request = fill_request(tiny_models, image, mask, feather=5)
    result = terminal(run(request))
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == (height, width, channels)
    far = far_from(mask, 5)
    assert far.sum() > 0.5 * far.size
    np.testing.assert_array_equal(out[far], image[far])
    assert not np.array_equal(out[mask > 0][:, :3], image[mask > 0][:, :3])
    if channels == 4:
        assert (out[mask > 0][:, 3] == 255).all()       # generated pixels are opaque


@pytest.mark.parametrize("channels", [3, 4])
def test_expand_of_an_odd_size_to_an_odd_canvas_keeps_the_original(tiny_models, channels):
    pytest.importorskip("diffusers")
    width, height, feather = 101, 67, 4
    image = photo(width, height, channels, seed=3)
    canvas = Rect(-13, -7, width + 13 + 21, height + 7 + 5)     # 135 x 79, new area on every side
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas), prompt="a field",
                                sampling=SamplingOptions(steps=2, seed=5), mask_options=MaskOptions(feather=feather),
                                **model_args(tiny_models, inpaint=True))
    result = terminal(run(request))
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == (canvas.h, canvas.w, channels)
    known = imageops.known_region(image.shape, canvas)
    placed = np.zeros_like(out)
    placed[known > 0] = image.reshape(-1, channels)
    far = far_from(np.where(known > 0, 0, 255).astype(np.uint8), feather)
    assert far.sum() == (height - 2 * feather) * (width - 2 * feather)     # the image less a feather band
    np.testing.assert_array_equal(out[far], placed[far])
    new = known == 0
    assert out[new][:, :3].std() > 0                  # the new area holds generated pixels, not one colour


# -- 4. start and cancel on the engine thread --------------------------------------------------------------

class ScriptedEngine(Engine):
    """"wait": one step, then waits until cancelled; "quick": two steps and a result."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.id = f"fault-{behaviour}"
        self.label = f"Fault {behaviour} engine"

    def generate(self, request, job_id, emit, cancel):
        emit(EngineEvent.progress(job_id, 1, 2, message="step 1"))
        cancel.check()
        if self.behaviour == "wait":
            deadline = time.monotonic() + 10.0
            while not cancel.cancelled and time.monotonic() < deadline:
                time.sleep(0.001)
            cancel.check()
            raise AssertionError("the job was never cancelled")
        emit(EngineEvent.progress(job_id, 2, 2, message="step 2"))
        return (Variant(np.array(request.image), request.sampling.seed, f"job {job_id}"),)


def scripted_request(behaviour: str) -> GenerationRequest:
    image = np.full((24, 32, 3), 90, np.uint8)
    return GenerationRequest(JobKind.FILL, image, box_mask(image.shape, Rect(8, 8, 8, 8)), model=f"fault-{behaviour}")


def test_a_hundred_start_cancel_cycles_leave_no_result_no_thread_and_a_working_engine(qtbot):
    registry = EngineRegistry(builtin=False)
    for behaviour in ("wait", "quick"):
        registry.register(f"fault-{behaviour}", behaviour, lambda b=behaviour: ScriptedEngine(b))
    controller = EngineController(registry)
    try:
        events: list[EngineEvent] = []
        controller.event.connect(events.append)
        raw: list[EngineEvent] = []                       # every job's events as the worker sends them
        controller.worker.event.connect(raw.append, Qt.ConnectionType.DirectConnection)
        busy: list[bool] = []
        controller.busy_changed.connect(busy.append)

        def is_event(kind, job_id):
            return lambda e: e.kind == kind and e.job_id == job_id

        with qtbot.waitSignal(controller.event, check_params_cb=is_event(EventKind.RESULT, 1), timeout=5000):
            controller.start(scripted_request("quick"))             # warm-up: the worker thread is running
        threads = threading.active_count()

        cancelled_ids, counts = [], []
        for cycle in range(100):
            if cycle % 10 == 0:                                     # every tenth: cancel while it runs
                with qtbot.waitSignal(controller.event, timeout=5000,
                                      check_params_cb=is_event(EventKind.PROGRESS, controller.current_job + 1)):
                    job = controller.start(scripted_request("wait"))
            else:                                                   # the others: before the worker sees them
                job = controller.start(scripted_request("wait"))
            assert controller.busy
            controller.cancel()
            assert not controller.busy
            assert events[-1].kind == EventKind.CANCELLED and events[-1].job_id == job   # before cancel returned
            if cycle % 10 == 5:                                     # idle a while: nothing more comes of it
                qtbot.wait(50)
                assert not controller.busy and events[-1].job_id == job
                assert not [e for e in raw if e.job_id == job]      # cancelled before it was handed over
            cancelled_ids.append(job)
            counts.append(threading.active_count())

        with qtbot.waitSignal(controller.event, timeout=10000,
                              check_params_cb=lambda e: e.kind in (EventKind.RESULT, EventKind.ERROR)) as blocker:
            final = controller.start(scripted_request("quick"))
        qtbot.wait(50)                                              # anything still queued arrives
        assert blocker.args[0].kind == EventKind.RESULT, blocker.args[0].message

        assert blocker.args[0].job_id == final == cancelled_ids[-1] + 1
        assert blocker.args[0].variants[0].parameters == f"job {final}"
        assert len(set(cancelled_ids)) == 100
        for job in cancelled_ids:
            mine = [e.kind for e in events if e.job_id == job and e.kind != EventKind.PROGRESS]
            assert mine == [EventKind.CANCELLED], (job, mine)
            worker_said = [e.kind for e in raw if e.job_id == job and e.kind != EventKind.PROGRESS]
            # the engine stopped with no result: jobs cancelled while running report CANCELLED, the others
            # were cancelled before they were handed to the engine thread and never ran
            assert worker_said == ([EventKind.CANCELLED] if (job - 2) % 10 == 0 else []), (job, worker_said)
        assert [e.kind for e in events].count(EventKind.CANCELLED) == 100
        assert not controller.busy and busy[-1] is False
        assert busy == [True, False] * (len(busy) // 2)
        assert max(counts) <= threads and threading.active_count() <= threads
    finally:
        assert controller.shutdown(timeout_ms=5000)
