"""The diffusion engine end to end on tiny random models of the real SD 1.5 / SDXL architectures.

Random weights say nothing about image quality; these tests check what a user relies on: sizes, pixels
kept, one preview per step, cancel and stop-early, seeds, native-size work, styles and model errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.core import imageops
from app.core.geometry import Rect
from app.core.styles import load_styles
from app.engine import job_plan
from app.engine.events import CancelToken, EngineError, EventKind
from app.engine.diffusion.model_manager import ModelManager
from app.engine.registry import EngineRegistry
from app.engine.request import GenerationRequest, JobKind, MaskOptions, OutpaintOptions, SamplingOptions
from app.engine.runner import run_job
from app.editor.job_builder import JobSettings, build_fill_request

pytest.importorskip("diffusers")
from app.engine.diffusion.engine import DiffusionEngine  # noqa: E402

MANAGER = ModelManager()          # one loaded model shared by the tests, as in the app


def photo(width: int = 320, height: int = 240, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + y) * 255 // (width + height)], axis=-1)
    noisy = base + rng.integers(-20, 20, base.shape)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    if channels == 4:
        image = np.dstack([image, np.full((height, width), 200, np.uint8)])
    return image


def box_mask(shape, rect: Rect) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    mask[rect.slices()] = 255
    return mask


def model_args(tiny_models, family="sd15", inpaint=False, form="folder") -> dict:
    path = tiny_models.path(family, inpaint, form)
    config = str(tiny_models.config_folder(family, inpaint)) if form == "single_file" else ""
    return dict(model=str(path), model_config=config, device="cpu")


def fill_request(tiny_models, image=None, mask=None, steps=3, seed=7, variants=1, sampler="dpmpp_2m_karras",
                 feather=8, **model) -> GenerationRequest:
    image = photo() if image is None else image
    mask = box_mask(image.shape, Rect(120, 80, 60, 50)) if mask is None else mask
    return GenerationRequest(JobKind.FILL, image, mask, prompt="a red ball",
                             sampling=SamplingOptions(steps=steps, seed=seed, variants=variants, sampler=sampler),
                             mask_options=MaskOptions(feather=feather), **(model or model_args(tiny_models)))


def run(request: GenerationRequest, cancel: CancelToken | None = None, on_event=None):
    events = []

    def emit(event):
        events.append(event)
        if on_event:
            on_event(event)
    engine = DiffusionEngine(request.model, MANAGER)
    run_job(engine, request, 1, emit, cancel or CancelToken())
    return events[-1], events[:-1]


def unet_inputs(monkeypatch_target):
    """Record the shape of every UNet input of the currently loaded model."""
    shapes = []
    handle = monkeypatch_target.unet.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes, handle


# -- loading --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,inpaint", [("sd15", False), ("sd15", True), ("sdxl", False), ("sdxl", True)])
def test_folder_and_single_file_give_the_same_fill(tiny_models, family, inpaint):
    folder_result, _ = run(fill_request(tiny_models, **model_args(tiny_models, family, inpaint, "folder")))
    file_result, _ = run(fill_request(tiny_models, **model_args(tiny_models, family, inpaint, "single_file")))
    assert folder_result.kind == EventKind.RESULT, folder_result.message
    assert file_result.kind == EventKind.RESULT, file_result.message
    assert MANAGER.current.inpaint == inpaint
    assert MANAGER.current.family == ("sdxl" if family == "sdxl" else "sd1")
    np.testing.assert_array_equal(folder_result.variants[0].image, file_result.variants[0].image)


def test_nine_channel_unet_gets_mask_and_masked_image(tiny_models):
    request = fill_request(tiny_models, **model_args(tiny_models, "sd15", True))
    run(request)                                         # loads the model
    shapes, handle = unet_inputs(MANAGER.current)
    try:
        result, _ = run(request)
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT
    assert shapes and all(shape[1] == 9 for shape in shapes)
    assert all(shape[0] == 2 for shape in shapes)         # classifier-free guidance: uncond + cond


def test_switching_models_frees_the_previous_one(tiny_models):
    manager = ModelManager()
    first = fill_request(tiny_models, **model_args(tiny_models, "sd15"))
    second = fill_request(tiny_models, **model_args(tiny_models, "sdxl"))
    for request in (first, first, second):
        engine = DiffusionEngine(request.model, manager)
        events = []
        run_job(engine, request, 1, events.append, CancelToken())
        assert events[-1].kind == EventKind.RESULT
    assert manager.loads == 2
    assert manager.current.family == "sdxl"
    manager.free()
    assert manager.current is None


# -- fill -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 4])
def test_fill_keeps_size_and_every_pixel_beyond_the_feather(tiny_models, channels):
    image = photo(channels=channels)
    mask = box_mask(image.shape, Rect(100, 60, 70, 40))
    result, _ = run(fill_request(tiny_models, image, mask, feather=6))
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == image.shape
    far = imageops.feather_mask(mask, 6) == 0
    np.testing.assert_array_equal(out[far], image[far])
    assert not np.array_equal(out[mask > 0], image[mask > 0])


def test_one_preview_per_step_inside_the_region(tiny_models):
    request = fill_request(tiny_models, steps=5)
    result, progress = run(request)
    previews = [e for e in progress if e.preview is not None]
    assert [e.step for e in previews] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 for e in previews)
    mask_box = imageops.mask_bounds(request.mask)
    for event in previews:
        assert event.preview.ndim == 3 and event.preview.shape[2] == 4     # RGBA: alpha is the mask
        assert event.preview_rect.contains_rect(mask_box)
        assert request.image_rect.contains_rect(event.preview_rect)
    assert result.kind == EventKind.RESULT


def test_same_seed_same_result_and_seeds_recorded(tiny_models):
    first, _ = run(fill_request(tiny_models, seed=11, variants=2))
    again, _ = run(fill_request(tiny_models, seed=11, variants=2))
    other, _ = run(fill_request(tiny_models, seed=12, variants=1))
    assert [v.seed for v in first.variants] == [11, 12]
    for a, b in zip(first.variants, again.variants):
        np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(first.variants[0].image, first.variants[1].image)
    assert not np.array_equal(first.variants[0].image, other.variants[0].image)
    assert "Seed: 12" in first.variants[1].parameters
    assert "Sampler: DPM++ 2M Karras" in first.variants[0].parameters


@pytest.mark.parametrize("sampler", ["euler_a", "euler", "ddim", "dpmpp_2m", "unipc"])
def test_every_sampler_fills(tiny_models, sampler):
    result, progress = run(fill_request(tiny_models, sampler=sampler, steps=3))
    assert result.kind == EventKind.RESULT, result.message
    assert len([e for e in progress if e.preview is not None]) == 3


def test_small_mask_on_large_canvas_runs_at_native_size(tiny_models):
    image = np.full((2048, 3072, 3), 120, np.uint8)
    mask = box_mask(image.shape, Rect(2000, 1500, 24, 24))
    request = fill_request(tiny_models, image, mask)
    run(fill_request(tiny_models))                       # make sure the model is loaded
    shapes, handle = unet_inputs(MANAGER.current)
    try:
        result, _ = run(request)
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT
    native_latent = MANAGER.current.native_size // MANAGER.current.vae_scale
    height, width = shapes[0][2:]
    assert abs(height * width - native_latent ** 2) <= 0.25 * native_latent ** 2
    assert result.variants[0].image.shape == image.shape


def test_partial_strength_runs_fewer_steps(tiny_models):
    request = fill_request(tiny_models, steps=10)
    request = GenerationRequest(**{**request.__dict__, "sampling": SamplingOptions(steps=10, strength=0.5, seed=1)})
    result, progress = run(request)
    assert result.kind == EventKind.RESULT
    assert [e.step for e in progress if e.preview is not None] == [1, 2, 3, 4, 5]


# -- cancel and stop early -------------------------------------------------------------------------------

def test_cancel_stops_within_one_step(tiny_models):
    token = CancelToken()
    steps_seen = []

    def on_event(event):
        if event.preview is not None:
            steps_seen.append(event.step)
            if event.step == 2:
                token.cancel()
    result, _ = run(fill_request(tiny_models, steps=8), token, on_event)
    assert result.kind == EventKind.CANCELLED
    assert steps_seen == [1, 2]


def test_stop_early_keeps_the_current_prediction(tiny_models):
    token = CancelToken()

    def on_event(event):
        if event.preview is not None and event.step == 2:
            token.finish()
    result, progress = run(fill_request(tiny_models, steps=8, variants=1), token, on_event)
    assert result.kind == EventKind.RESULT, result.message
    assert [e.step for e in progress if e.preview is not None] == [1, 2]
    assert len(result.variants) == 1
    assert result.variants[0].image.shape == photo().shape


# -- expand ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "single_file"])
def test_expand_keeps_the_image_and_fills_the_new_area(tiny_models, form):
    image = photo(200, 160)
    canvas = Rect(-48, -16, 200 + 48 + 64, 160 + 16)
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                                sampling=SamplingOptions(steps=3, seed=3), mask_options=MaskOptions(feather=4),
                                **model_args(tiny_models, "sdxl", True, form))
    result, progress = run(request)
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == (canvas.h, canvas.w, 3)
    inner = out[16 + 4:, 48 + 4:48 + 200 - 4]          # the image, less the feather band next to new area
    np.testing.assert_array_equal(inner, image[4:, 4:200 - 4])
    for event in progress:
        if event.preview_rect is not None:
            assert canvas.contains_rect(event.preview_rect)


# -- prompts and styles ----------------------------------------------------------------------------------

def test_style_reaches_the_text_encoder(tiny_models):
    styles = load_styles()
    style = next(s for s in styles if s.name != "None")
    settings = JobSettings(prompt="a lighthouse", style=style.name, seed=5, steps=2, variants=1,
                           **model_args(tiny_models))
    image = photo()
    request = build_fill_request(image, box_mask(image.shape, Rect(10, 10, 40, 40)), settings, styles)
    run(fill_request(tiny_models))
    seen = []
    encoder = MANAGER.current.text_encoders[0]
    handle = encoder.register_forward_pre_hook(lambda module, args, kwargs=None: seen.append(args[0]))
    try:
        result, _ = run(request)
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT
    tokenizer = MANAGER.current.tokenizers[0]
    decoded = " ".join(tokenizer.decode(ids[0], skip_special_tokens=True) for ids in seen)
    assert "lighthouse" in decoded
    styled_word = style.apply("a lighthouse", "")[0].replace("a lighthouse", "").split()[1].strip(",.").lower()
    assert styled_word in decoded
    assert result.variants[0].parameters.startswith(style.apply("a lighthouse", "")[0])


def test_long_prompts_are_encoded_in_windows(tiny_models):
    from app.engine.diffusion.text_encoding import encode_prompts

    run(fill_request(tiny_models))
    long_prompt = ", ".join(["a very detailed red brick lighthouse"] * 20)
    cond, uncond = encode_prompts(MANAGER.current, [long_prompt, ""], "cpu")
    assert cond.embeddings.shape[1] == 77 * 2 or cond.embeddings.shape[1] > 77
    assert cond.embeddings.shape == uncond.embeddings.shape


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_prompt_encodes_the_same_whatever_it_is_batched_with(tiny_models, family):
    from app.engine.diffusion.text_encoding import encode_prompts

    run(fill_request(tiny_models, **model_args(tiny_models, family)))
    long_prompt = ", ".join(["a lighthouse at dusk on a rocky coast"] * 12)      # two 75-token windows
    prompts = ["a lighthouse at dusk", "blurry, watermark, text", long_prompt]
    together = encode_prompts(MANAGER.current, prompts, "cpu")
    for prompt, batched in zip(prompts, together):
        [alone] = encode_prompts(MANAGER.current, [prompt], "cpu")
        width = alone.embeddings.shape[1]          # a short prompt batched with a long one gets padded windows
        torch.testing.assert_close(batched.embeddings[:, :width], alone.embeddings, rtol=1e-4, atol=1e-5)
        if family == "sdxl":
            assert batched.pooled.shape == alone.pooled.shape == (1, alone.pooled.shape[1])
            torch.testing.assert_close(batched.pooled, alone.pooled, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(together[0].embeddings, together[1].embeddings)


# -- model errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,expected", [
    (b"this is not a model", "not a readable .safetensors file"),
    (b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "not a readable .safetensors file"),
])
def test_corrupt_model_file_is_one_clear_line(tmp_path, content, expected):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    image = photo()
    request = GenerationRequest(JobKind.FILL, image, box_mask(image.shape, Rect(0, 0, 10, 10)),
                                model=str(path), device="cpu", sampling=SamplingOptions(steps=2))
    engine = EngineRegistry().create(str(path))
    events = []
    run_job(engine, request, 1, events.append, CancelToken())
    assert events[-1].kind == EventKind.ERROR
    assert expected in events[-1].message and "\n" not in events[-1].message


def test_wrong_kind_of_safetensors_is_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "detail.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)}, str(lora))
    from app.engine.diffusion.model_files import inspect_checkpoint

    with pytest.raises(EngineError, match="LoRA"):
        inspect_checkpoint(lora)


def test_incomplete_diffusers_folder_is_refused(tmp_path, tiny_models):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(tiny_models.path("sd15"), folder)
    shutil.rmtree(folder / "vae")
    from app.engine.diffusion.model_files import inspect_folder

    with pytest.raises(EngineError, match="vae/config.json is missing"):
        inspect_folder(folder)


def test_config_of_another_family_is_refused(tiny_models):
    request = fill_request(tiny_models, model=str(tiny_models.path("sdxl", False, "single_file")),
                           model_config=str(tiny_models.config_folder("sd15")), device="cpu")
    result, _ = run(request)
    assert result.kind == EventKind.ERROR
    assert "SDXL" in result.message and "config folder" in result.message


# -- out of memory ---------------------------------------------------------------------------------------

def _fail_unet_calls(model, monkeypatch, failures: int):
    """Make the next `failures` UNet calls raise torch's out-of-memory error."""
    import torch

    original = model.unet.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)
    monkeypatch.setattr(model.unet, "forward", forward)
    return calls


def test_out_of_memory_retries_one_variant_at_a_time(tiny_models, monkeypatch):
    run(fill_request(tiny_models))
    shapes, handle = unet_inputs(MANAGER.current)
    _fail_unet_calls(MANAGER.current, monkeypatch, failures=1)
    try:
        result, _ = run(fill_request(tiny_models, variants=3, steps=2))
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT, result.message
    assert [v.seed for v in result.variants] == [7, 8, 9]
    assert shapes[0][0] == 6                                # 3 variants at once (x2 for guidance) failed,
    assert {shape[0] for shape in shapes[1:]} == {2}        # then one at a time


def test_out_of_memory_that_persists_is_one_clear_line(tiny_models, monkeypatch):
    run(fill_request(tiny_models))
    _fail_unet_calls(MANAGER.current, monkeypatch, failures=10**6)
    result, _ = run(fill_request(tiny_models, variants=2, steps=2))
    MANAGER.free()                                          # the savers were switched on: start clean
    assert result.kind == EventKind.ERROR
    assert result.message.startswith("out of memory at ") and "\n" not in result.message


def test_large_expand_runs_native_windows_outward(tiny_models):
    image = photo(160, 120)
    canvas = Rect(-160, -120, 480, 360)                      # 3x the image on each axis
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                                sampling=SamplingOptions(steps=2, seed=4), mask_options=MaskOptions(feather=4),
                                **model_args(tiny_models, "sd15", True))
    run(fill_request(tiny_models, **model_args(tiny_models, "sd15", True)))
    shapes, handle = unet_inputs(MANAGER.current)
    try:
        result, progress = run(request)
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == (360, 480, 3)
    np.testing.assert_array_equal(out[120 + 4:240 - 4, 160 + 4:320 - 4], image[4:-4, 4:-4])
    windows = len(shapes) // 2
    assert windows >= 4
    native_latent = MANAGER.current.native_size // MANAGER.current.vae_scale
    assert all(shape[2] * shape[3] == native_latent ** 2 for shape in shapes)     # never shrunk
    previews = [e for e in progress if e.preview is not None]
    assert [e.step for e in previews] == list(range(1, 2 * windows + 1)) and progress[-1].total == 2 * windows
    # Each preview shows the whole new area: what is done so far plus the window being generated.
    assert all(e.preview_rect == canvas for e in previews)
    shown = [float((e.preview[..., 3] > 0).mean()) for e in previews]
    assert shown[0] < shown[-1] and shown == sorted(shown)


def test_soft_brush_edges_are_partial_strength(tiny_models):
    image = photo()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[90:140, 100:200] = 60                                # a soft edge 20 px wide around the core
    mask[100:130, 120:180] = 255
    result, _ = run(fill_request(tiny_models, image, mask, feather=0))
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image.astype(int)
    soft_only = (mask == 60)
    core = mask == 255
    change_soft = np.abs(out[soft_only] - image[soft_only]).mean()
    change_core = np.abs(out[core] - image[core]).mean()
    assert 0 < change_soft < 0.5 * change_core                # changed, but less than the painted core
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])


def test_single_file_that_does_not_fit_the_shipped_config_says_so(tiny_models):
    """A tiny SDXL file is SDXL by its keys but not by its sizes: the shipped real config cannot hold it."""
    request = fill_request(tiny_models, model=str(tiny_models.path("sdxl", False, "single_file")), device="cpu")
    result, _ = run(request)
    assert result.kind == EventKind.ERROR
    assert result.message.startswith("sdxl.safetensors does not fit the SDXL config sdxl: ")
    assert "config folder" in result.message and "\n" not in result.message


def test_thin_strokes_reach_the_inpainting_mask(tiny_models):
    image = photo(640, 480)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[:, 300:302] = 255                                   # a 2 px wire across the whole image
    request = fill_request(tiny_models, image, mask, **model_args(tiny_models, "sd15", True))
    run(request)
    seen = []
    handle = MANAGER.current.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 4]))
    try:
        result, _ = run(request)
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT
    assert all(float(m.max()) == 1.0 for m in seen)          # the model is told to repaint the stroke


def test_stop_before_the_first_step_is_a_cancel(tiny_models):
    token = CancelToken()
    token.finish()
    result, _ = run(fill_request(tiny_models), token)
    assert result.kind == EventKind.CANCELLED


def _reference_fill_plan(mask: np.ndarray, grow: int, feather: int, native: int):
    """The Fill plan computed over the whole image, as the formulas read: what the engine must reproduce
    while reading only the mask's neighbourhood."""
    from app.core.work_region import context_for, plan_region

    limits = Rect(0, 0, mask.shape[1], mask.shape[0])
    core = mask >= 128
    hole = imageops.grow_mask(core if core.any() else mask, grow)
    soft = np.where(hole > 0, 0, mask).astype(np.float32) / 255
    bounds = imageops.mask_bounds(hole)
    if soft.any():
        bounds = bounds.union(imageops.mask_bounds(mask))
    region = plan_region(bounds.grown(feather).intersect(limits), limits, context_for(bounds, feather))
    alpha = np.maximum(imageops.feather_mask(hole[region.slices()], feather), soft[region.slices()])
    return region, hole[region.slices()], alpha


@pytest.mark.parametrize("spot, grow, soft_edge", [
    (Rect(1500, 1700, 40, 30), 0, False),        # a small mask far from the edges
    (Rect(0, 0, 25, 60), 6, False),              # touching the top-left corner, grown
    (Rect(1990, 900, 58, 20), 3, True),          # touching the right edge, with a soft brush rim
    (Rect(700, 2000, 300, 48), 0, True),         # a wide stroke along the bottom
])
def test_fill_plan_on_a_large_image_matches_the_whole_image_formulas(spot, grow, soft_edge):
    mask = np.zeros((2048, 2048), np.uint8)
    mask[spot.slices()] = 255
    if soft_edge:
        rim = imageops.grow_mask(mask, 5) & ~mask
        mask[rim > 0] = 90                                 # painted below 128: partial strength
    image = np.zeros((2048, 2048, 3), np.uint8)
    request = GenerationRequest(JobKind.FILL, image, mask, mask_options=MaskOptions(feather=8, grow=grow),
                                model="planning only", device="cpu")
    work = job_plan._plan_fill(request, 512, 64)
    region, hole, alpha = _reference_fill_plan(mask, grow, 8, 512)
    (p,) = work.passes
    assert p.region == region
    np.testing.assert_array_equal(p.hole, hole)
    np.testing.assert_allclose(p.alpha, alpha, atol=1e-6)       # float32 rounding of the same formulas


def test_windowed_expand_gives_each_variant_its_own_canvas(tiny_models):
    image = photo(160, 120)
    kept = image.copy()
    canvas = Rect(-160, 0, 480, 120)
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                                sampling=SamplingOptions(steps=1, seed=4, variants=2),
                                mask_options=MaskOptions(feather=4), **model_args(tiny_models, "sd15", True))
    result, _ = run(request)
    assert result.kind == EventKind.RESULT, result.message
    first, second = (v.image for v in result.variants)
    np.testing.assert_array_equal(image, kept)                       # the request's image is never written
    for out in (first, second):
        np.testing.assert_array_equal(out[4:-4, 160 + 4:320 - 4], image[4:-4, 4:-4])
    assert first is not second and not np.array_equal(first[:, :150], second[:, :150])
