import numpy as np
import pytest

from app.core import imageops
from app.core.geometry import Rect
from app.engine.base import format_parameters
from app.engine.classic import ClassicEngine
from app.engine.events import CancelToken, EngineError, EventKind
from app.engine.registry import EngineRegistry
from app.engine.request import (GenerationRequest, JobKind, MaskOptions, OutpaintOptions,
                                SamplingOptions)
from app.engine.runner import run_job

MAGENTA = (255, 0, 255)


def gradient(h: int, w: int, channels: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 120 + 40 * np.sin(xx / 37 + yy / 53)], -1)
    if channels == 4:
        image = np.concatenate([image, np.full((h, w, 1), 200.0)], -1)
    return image.astype(np.uint8)


def textured(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 12, (h, w, 1))
    return np.clip(gradient(h, w).astype(np.float32) + noise, 0, 255).astype(np.uint8)


def fill_request(image, mask, variants=1, feather=8, grow=0, seed=7, **kwargs) -> GenerationRequest:
    return GenerationRequest(JobKind.FILL, image, mask, sampling=SamplingOptions(seed=seed, variants=variants),
                             mask_options=MaskOptions(feather=feather, grow=grow), **kwargs)


def expand_request(image, canvas: Rect, variants=1, seed=3) -> GenerationRequest:
    return GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                             sampling=SamplingOptions(seed=seed, variants=variants))


def generate(request, engine=None):
    events = []
    variants = (engine or ClassicEngine()).generate(request, 1, events.append, CancelToken())
    return variants, events


def rect_mask(shape, rect: Rect) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    mask[rect.slices()] = 255
    return mask


# -- fill -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["telea", "ns"])
@pytest.mark.parametrize("feather, grow", [(0, 0), (8, 0), (6, 5)])
def test_fill_keeps_every_pixel_outside_the_feather_bit_identical(method, feather, grow):
    image = textured(180, 240)
    mask = rect_mask(image.shape, Rect(70, 50, 90, 60))
    (variant,), _ = generate(fill_request(image, mask, feather=feather, grow=grow), ClassicEngine(method))
    assert variant.image.shape == image.shape and variant.image.dtype == np.uint8
    alpha = imageops.feather_mask(imageops.grow_mask(mask, grow), feather)
    untouched = alpha == 0
    assert untouched.sum() > 0.5 * untouched.size
    assert (variant.image[untouched] == image[untouched]).all()
    assert (variant.image[mask > 0] != image[mask > 0]).any()


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_fill_replaces_a_contrasting_hole_with_the_surrounding_colours(method):
    smooth = gradient(200, 260)
    hole = Rect(80, 60, 100, 80)
    image = smooth.copy()
    image[hole.slices()] = MAGENTA
    (variant,), _ = generate(fill_request(image, rect_mask(image.shape, hole)), ClassicEngine(method))
    filled = variant.image[hole.slices()].astype(int)
    assert not (filled == MAGENTA).all(axis=-1).any()
    assert np.abs(filled - smooth[hole.slices()].astype(int)).mean() < 20
    # no streaks or steps: neighbouring pixels inside the fill stay close
    assert np.abs(np.diff(filled, axis=1)).mean() < 4 and np.abs(np.diff(filled, axis=0)).mean() < 4


def test_large_fill_is_a_smooth_continuation():
    smooth = gradient(512, 512)
    hole = Rect(96, 96, 320, 320)             # 39% of the image
    image = smooth.copy()
    image[hole.slices()] = MAGENTA
    (variant,), _ = generate(fill_request(image, rect_mask(image.shape, hole)))
    filled = variant.image[hole.slices()].astype(int)
    assert np.abs(filled - smooth[hole.slices()].astype(int)).mean() < 30
    assert np.percentile(np.abs(np.diff(filled, axis=1)), 99) <= 6


def test_fill_rgba_fills_alpha_too():
    image = gradient(120, 160, channels=4)
    hole = Rect(50, 40, 50, 40)
    image[hole.slices()] = (255, 0, 255, 0)
    (variant,), _ = generate(fill_request(image, rect_mask(image.shape, hole), feather=0))
    assert variant.image.shape == (120, 160, 4)
    assert np.abs(variant.image[hole.slices()][..., 3].astype(int) - 200).max() <= 2
    outside = rect_mask(image.shape, hole) == 0
    assert (variant.image[outside] == image[outside]).all()


def test_fill_of_the_whole_image_is_a_clear_error():
    image = gradient(40, 40)
    with pytest.raises(EngineError, match="whole image"):
        generate(fill_request(image, np.full((40, 40), 255, np.uint8)))


def test_small_mask_on_a_huge_image_works_locally():
    image = np.zeros((6000, 6000, 3), np.uint8)
    image[..., 1] = 90
    mask = rect_mask(image.shape, Rect(3000, 4000, 40, 40))
    (variant,), events = generate(fill_request(image, mask))
    assert variant.image.shape == image.shape
    previews = [e for e in events if e.preview is not None]
    assert previews
    for event in previews:
        assert event.preview_rect.contains_rect(Rect(3000, 4000, 40, 40))
        assert event.preview_rect.w <= 400 and event.preview_rect.h <= 400
        assert event.preview.shape[:2] == (event.preview_rect.h, event.preview_rect.w)
    outside_work = variant.image.copy()
    outside_work[previews[-1].preview_rect.slices()] = image[previews[-1].preview_rect.slices()]
    assert np.array_equal(outside_work, image)


# -- expand ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("canvas", [
    Rect(-40, -30, 240, 180),        # all sides
    Rect(0, 0, 220, 120),            # right only
    Rect(0, -50, 160, 170),          # top only
])
def test_expand_keeps_the_original_and_continues_its_edges(canvas):
    image = gradient(120, 160)
    (variant,), _ = generate(expand_request(image, canvas))
    out = variant.image
    assert out.shape == (canvas.h, canvas.w, 3)
    inside = Rect(0, 0, 160, 120).translated(-canvas.x, -canvas.y)
    assert (out[inside.slices()] == image).all()
    stretched = imageops.edge_stretch(image, canvas).astype(int)
    new = imageops.known_region(image.shape, canvas) == 0
    near = new & (imageops.distance_outside(~new) <= 12)
    assert np.abs(out[near].astype(int) - stretched[near]).mean() < 10
    assert np.abs(out[new].astype(int) - stretched[new]).mean() < 40


def test_expand_cuts_off_the_side_the_canvas_crops():
    image = gradient(120, 160)
    canvas = Rect(20, 0, 200, 120)         # crops 20 px on the left, adds 60 px on the right
    (variant,), _ = generate(expand_request(image, canvas))
    assert variant.image.shape == (120, 200, 3)
    assert (variant.image[:, :140] == image[:, 20:]).all()


def test_expand_rgba_new_area_is_opaque():
    image = gradient(80, 100, channels=4)
    image[:, :10, 3] = 0
    canvas = Rect(-20, -10, 140, 100)
    (variant,), _ = generate(expand_request(image, canvas))
    out = variant.image
    assert out.shape == (100, 140, 4)
    assert (out[10:90, 20:120] == image).all()
    new = imageops.known_region(image.shape, canvas) == 0
    assert (out[new][:, 3] == 255).all()


# -- progress, cancel, variants -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fill", "expand"])
@pytest.mark.parametrize("count", [1, 3])
def test_progress_is_ordered_and_previews_come_first(kind, count):
    image = textured(100, 140)
    if kind == "fill":
        request = fill_request(image, rect_mask(image.shape, Rect(40, 30, 40, 30)), variants=count)
    else:
        request = expand_request(image, Rect(-20, -20, 180, 140), variants=count)
    events = []
    run_job(ClassicEngine(), request, 9, events.append, CancelToken())
    kinds = [e.kind for e in events]
    assert kinds[-1] == EventKind.RESULT and kinds.count(EventKind.RESULT) == 1
    progress = events[:-1]
    assert all(e.kind == EventKind.PROGRESS and e.job_id == 9 for e in progress)
    total = progress[0].total
    assert total >= 3 and len(progress) == total
    assert [e.step for e in progress] == list(range(1, total + 1))
    previews = [e for e in progress if e.preview is not None]
    assert previews
    for event in previews:
        assert request.output_rect.contains_rect(event.preview_rect)
        assert event.preview.shape[:2] == (event.preview_rect.h, event.preview_rect.w)
        if kind == "expand":
            assert event.preview_rect == request.outpaint.canvas
    assert len(events[-1].variants) == count


@pytest.mark.parametrize("kind", ["fill", "expand"])
def test_cancel_after_first_progress_stops_without_result(kind):
    image = textured(100, 140)
    if kind == "fill":
        request = fill_request(image, rect_mask(image.shape, Rect(40, 30, 40, 30)), variants=2)
    else:
        request = expand_request(image, Rect(-20, -20, 180, 140), variants=2)
    token = CancelToken()
    events = []

    def emit(event):
        events.append(event)
        if event.kind == EventKind.PROGRESS:
            token.cancel()

    run_job(ClassicEngine(), request, 4, emit, token)
    assert [e.kind for e in events] == [EventKind.PROGRESS, EventKind.CANCELLED]
    assert events[-1].job_id == 4


@pytest.mark.parametrize("kind", ["fill", "expand"])
@pytest.mark.parametrize("image_kind", ["textured", "flat"])
def test_variants_differ_and_carry_their_seed(kind, image_kind):
    image = textured(120, 160) if image_kind == "textured" else np.full((120, 160, 3), 128, np.uint8)
    if kind == "fill":
        request = fill_request(image, rect_mask(image.shape, Rect(50, 40, 60, 40)), variants=4, seed=100)
    else:
        request = expand_request(image, Rect(-30, -30, 220, 180), variants=4, seed=100)
    variants, _ = generate(request)
    assert [v.seed for v in variants] == [100, 101, 102, 103]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(variants[i].image, variants[j].image), (i, j)
    for v in variants:
        assert f"Seed: {v.seed}," in v.parameters
        assert f"Mode: {kind}" in v.parameters


def test_engine_ids_and_labels():
    assert (ClassicEngine().id, ClassicEngine().label) == ("classic", "Classic fill (OpenCV Telea)")
    assert (ClassicEngine("ns").id, ClassicEngine("ns").label) == ("classic-ns",
                                                                   "Classic fill (OpenCV Navier-Stokes)")
    with pytest.raises(ValueError):
        ClassicEngine("patchmatch")


# -- parameters text and registry ---------------------------------------------------------------------

def test_format_parameters_a1111_layout():
    image = gradient(64, 96)
    request = expand_request(image, Rect(-16, 0, 128, 64), seed=5)
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=request.outpaint, prompt="a red barn",
                                negative_prompt="blurry, low quality", style="Cinematic",
                                sampling=SamplingOptions(steps=30, guidance=7.5, strength=0.8, seed=5))
    text = format_parameters(request, 42, "Classic fill (OpenCV Telea)")
    assert text.splitlines() == [
        "a red barn",
        "Negative prompt: blurry, low quality",
        "Steps: 30, Sampler: dpmpp_2m_karras, CFG scale: 7.5, Seed: 42, Size: 128x64, "
        "Model: Classic fill (OpenCV Telea), Denoising strength: 0.8, Style: Cinematic, Mode: expand",
    ]


def test_format_parameters_omits_empty_negative_and_quotes_commas():
    image = gradient(32, 32)
    request = fill_request(image, rect_mask(image.shape, Rect(4, 4, 8, 8)), prompt="")
    lines = format_parameters(request, 1, "Engine, with comma", sampler="OpenCV Telea").splitlines()
    assert len(lines) == 2 and lines[0] == ""
    assert 'Model: "Engine, with comma",' in lines[1] and "Sampler: OpenCV Telea," in lines[1]
    assert lines[1].endswith("Mode: fill") and "Size: 32x32" in lines[1]


def test_registry_lists_and_creates_engines():
    registry = EngineRegistry()
    assert registry.entries() == [("classic", "Classic fill (OpenCV Telea)"),
                                  ("classic-ns", "Classic fill (OpenCV Navier-Stokes)")]
    assert registry.create("classic-ns").id == "classic-ns"
    assert registry.create("").id == "classic" and registry.create(None).id == "classic"
    registry.register("fake", "Fake engine", lambda: ClassicEngine("ns"))
    assert registry.entries()[-1] == ("fake", "Fake engine")
    with pytest.raises(ValueError):
        registry.register("fake", "Again", lambda: ClassicEngine())


def test_registry_explains_unknown_models(tmp_path):
    registry = EngineRegistry()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(EngineError, match="^model not found: .*nope"):
        registry.create(str(missing))
    # Existing files and repo ids become diffusion engines; what is wrong with them shows when a job runs.
    assert type(registry.create(str(weights))).__name__ == "DiffusionEngine"
    assert registry.create("runwayml/stable-diffusion-inpainting").id == "runwayml/stable-diffusion-inpainting"
    with pytest.raises(EngineError, match="^model not found: ./models/sd.ckpt"):
        registry.create("./models/sd.ckpt")


# -- what the classic engine records and reports ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fill", "expand"])
def test_parameters_name_only_what_the_classic_engine_used(kind):
    image = textured(120, 160)
    sampling = SamplingOptions(steps=25, guidance=7.0, strength=0.6, seed=40, variants=2, sampler="euler_a")
    if kind == "fill":
        request = GenerationRequest(JobKind.FILL, image, rect_mask(image.shape, Rect(50, 40, 40, 30)),
                                    prompt="a red barn", style="Cinematic", sampling=sampling,
                                    mask_options=MaskOptions(feather=6, grow=3))
    else:
        request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(Rect(-16, 0, 192, 120)),
                                    prompt="a red barn", style="Cinematic", sampling=sampling)
    variants, _ = generate(request)
    first, second = (v.parameters.splitlines() for v in variants)
    assert first[0] == "a red barn"
    for ignored in ("Steps:", "CFG scale:", "Sampler:", "Denoising strength:", "Style:", "euler_a"):
        assert ignored not in variants[0].parameters and ignored not in variants[1].parameters
    size = "160x120" if kind == "fill" else "192x120"
    assert first[-1].startswith(f"Seed: 40, Size: {size}, Engine: classic, Method: OpenCV Telea, ")
    assert second[-1].startswith(f"Seed: 41, Size: {size}, Engine: classic, Method: OpenCV Navier-Stokes, ")
    assert first[-1].endswith("Feather: 6, Grow: 3, Mode: fill" if kind == "fill" else "Method: OpenCV Telea, "
                                                                                      "Mode: expand")


@pytest.mark.parametrize("kind", ["fill", "expand"])
def test_progress_counts_the_classic_stages_whatever_the_steps_setting(kind):
    image = textured(100, 140)
    totals = set()
    for steps in (1, 25, 150):
        sampling = SamplingOptions(steps=steps, seed=1, variants=2)
        if kind == "fill":
            request = GenerationRequest(JobKind.FILL, image, rect_mask(image.shape, Rect(40, 30, 40, 30)),
                                        sampling=sampling)
        else:
            request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(Rect(-20, 0, 160, 100)),
                                        sampling=sampling)
        _, events = generate(request)
        assert [e.step for e in events] == list(range(1, events[0].total + 1))
        totals.add(events[0].total)
    assert totals == {7}                   # one preparation stage, then three per variant


def test_classic_engine_ids_are_the_registry_ids():
    from app.engine.classic import ENGINE_IDS

    registry = EngineRegistry()
    assert {engine_id for engine_id, _ in registry.entries()} == set(ENGINE_IDS)
    assert {ClassicEngine(method).id for method in ("telea", "ns")} == set(ENGINE_IDS)
