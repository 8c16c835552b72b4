"""ControlNets through the whole engine: loading (folder, single file), one-line errors, control images that
follow the work region, pixels kept outside the feather, and "weight 0 is no ControlNet" end to end."""
from __future__ import annotations

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file

from app.core import imageops
from app.core.geometry import Rect
from app.engine.control_plan import control_image
from app.engine.events import EventKind
from app.engine.job_plan import plan_job, resize
from app.engine.request import ControlInput, GenerationRequest, JobKind, OutpaintOptions, SamplingOptions
from tests.test_diffusion_engine import box_mask, fill_request, model_args, photo, run
from tests.test_model_sources import offline_hub  # noqa: F401 - fixture


def _scribble(shape) -> np.ndarray:
    """A control-layer drawing: white strokes in the alpha of a transparent RGBA image."""
    drawing = np.zeros((shape[0], shape[1], 4), np.uint8)
    drawing[90:96, 100:200] = 255
    drawing[60:140, 150:155] = 255
    return drawing


def _with_controls(request: GenerationRequest, *controls: ControlInput) -> GenerationRequest:
    return replace(request, controls=tuple(controls))


def _result(request):
    result, _ = run(request)
    assert result.kind == EventKind.RESULT, result.message
    return result.variants[0].image


@pytest.mark.parametrize("form", ["folder", "single_file"])
def test_a_scribble_guides_a_fill_and_keeps_every_pixel_beyond_the_feather(tiny_models, tiny_controlnets, form):
    image = photo()
    mask = box_mask(image.shape, Rect(110, 60, 80, 60))
    base = fill_request(tiny_models, image, mask, feather=6)
    net = str(tiny_controlnets.path("sd15", form))
    config = str(tiny_controlnets.config_folder("sd15")) if form == "single_file" else ""
    guided = _result(_with_controls(base, ControlInput("scribble", net, _scribble(image.shape), model_config=config)))
    plain = _result(base)
    far = imageops.feather_mask(mask, 6) == 0
    np.testing.assert_array_equal(guided[far], image[far])
    assert not np.array_equal(guided[mask > 0], plain[mask > 0])


def test_folder_and_single_file_controlnets_give_the_same_fill(tiny_models, tiny_controlnets):
    base = fill_request(tiny_models)
    drawing = _scribble(base.image.shape)
    folder = _result(_with_controls(base, ControlInput("scribble", str(tiny_controlnets.path("sd15")), drawing)))
    single = _result(_with_controls(base, ControlInput(
        "scribble", str(tiny_controlnets.path("sd15", "single_file")), drawing,
        model_config=str(tiny_controlnets.config_folder("sd15")))))
    np.testing.assert_array_equal(folder, single)


def test_weight_zero_through_the_engine_is_exactly_no_controlnet(tiny_models, tiny_controlnets):
    base = fill_request(tiny_models, seed=3)
    off = ControlInput("canny", str(tiny_controlnets.path("sd15")), weight=0.0)
    outside = ControlInput("canny", str(tiny_controlnets.path("sd15")), start=1.0, end=1.0)
    plain = _result(base)
    np.testing.assert_array_equal(_result(_with_controls(base, off)), plain)
    np.testing.assert_array_equal(_result(_with_controls(base, outside)), plain)


def test_restyle_with_canny_made_from_the_image(tiny_models, tiny_controlnets):
    image = photo()
    request = GenerationRequest(JobKind.RESTYLE, image, prompt="an oil painting",
                                sampling=SamplingOptions(steps=4, strength=0.75, seed=2), **model_args(tiny_models))
    guided = _result(_with_controls(request, ControlInput("canny", str(tiny_controlnets.path("sd15")))))
    assert guided.shape == image.shape
    assert not np.array_equal(guided, _result(request))


def test_sdxl_fill_with_a_controlnet(tiny_models, tiny_controlnets):
    request = fill_request(tiny_models, **model_args(tiny_models, "sdxl", inpaint=True))
    out = _result(_with_controls(request, ControlInput("tile", str(tiny_controlnets.path("sdxl")))))
    assert out.shape == request.image.shape


def test_control_images_follow_every_window_of_an_expand():
    image = photo(200, 150)
    canvas = Rect(-700, -10, 1600, 170)
    drawing = np.random.default_rng(4).integers(0, 256, (canvas.h, canvas.w, 3), dtype=np.uint8)
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                                controls=(ControlInput("depth", "some/controlnet", drawing),
                                          ControlInput("canny", "some/controlnet")))
    plan = plan_job(request, 128, 64)
    assert len(plan.passes) > 2
    for p in plan.passes:
        given = control_image(request.controls[0], plan, p)
        assert given.shape == (p.size[1], p.size[0], 3)
        np.testing.assert_array_equal(given, resize(np.ascontiguousarray(drawing[p.region.slices()]), p.size))
        edges = control_image(request.controls[1], plan, p)
        assert edges.shape == given.shape
        new = cv2.resize(p.hole, p.size, interpolation=cv2.INTER_NEAREST) >= 128
        assert new.any() and not edges[new].any()     # the prefill is a guess: no edges are made from it


def test_the_inpaint_control_marks_the_hole_of_each_pass():
    image = photo()
    mask = box_mask(image.shape, Rect(100, 60, 40, 30))
    request = GenerationRequest(JobKind.FILL, image, mask, controls=(ControlInput("inpaint", "some/controlnet"),))
    plan = plan_job(request, 128, 64)
    (p,) = plan.passes
    condition = control_image(request.controls[0], plan, p)
    assert condition.dtype == np.float32 and condition.shape == (p.size[1], p.size[0], 3)
    hole = cv2.resize(p.hole, p.size, interpolation=cv2.INTER_NEAREST) >= 128
    assert hole.any() and (condition[hole] == -1).all() and (condition[~hole] >= 0).all()


def test_a_controlnet_of_another_family_is_one_clear_line(tiny_models, tiny_controlnets):
    request = _with_controls(fill_request(tiny_models), ControlInput("tile", str(tiny_controlnets.path("sdxl"))))
    result, _ = run(request)
    assert result.kind == EventKind.ERROR
    assert "is for SDXL" in result.message and "SD 1.x" in result.message and "\n" not in result.message


@pytest.mark.parametrize("damage, expected", [
    ("missing", "ControlNet not found"),
    ("garbage", "controlnet.safetensors"),
    ("pickled folder", "never unpickled"),
    ("union", "could not load the ControlNet union"),           # a union config over plain weights
    ("not a controlnet", "is not a ControlNet"),
])
def test_a_bad_controlnet_is_one_clear_line_and_the_image_is_untouched(tmp_path, tiny_models, tiny_controlnets,
                                                                       damage, expected):
    import torch

    target = tmp_path / "controlnet.safetensors"
    if damage == "garbage":
        target.write_bytes(b"\x00" * 64)
    elif damage == "pickled folder":
        target = tmp_path / "folder"
        shutil.copytree(tiny_controlnets.path("sd15"), target)
        (target / "diffusion_pytorch_model.safetensors").rename(target / "diffusion_pytorch_model.bin")
    elif damage == "union":
        target = tmp_path / "union"
        shutil.copytree(tiny_controlnets.path("sd15"), target)
        config = (target / "config.json").read_text().replace('"ControlNetModel"', '"ControlNetUnionModel"')
        (target / "config.json").write_text(config)
    elif damage == "not a controlnet":
        save_file({"weight": torch.zeros(2, 2)}, str(target))
    request = fill_request(tiny_models)
    before = request.image.copy()
    result, _ = run(_with_controls(request, ControlInput("tile", str(target))))
    assert result.kind == EventKind.ERROR
    assert expected in result.message and "\n" not in result.message
    np.testing.assert_array_equal(request.image, before)


def test_depth_made_from_the_image_without_an_annotator_is_one_clear_line(tiny_models, tiny_controlnets):
    result, _ = run(_with_controls(fill_request(tiny_models), ControlInput("depth", str(tiny_controlnets.path("sd15")))))
    assert result.kind == EventKind.ERROR
    assert "depth-estimation model" in result.message


def test_the_classic_engine_refuses_controls_in_one_line():
    from app.engine.classic import ClassicEngine
    from app.engine.events import CancelToken
    from app.engine.runner import run_job

    image = photo()
    request = GenerationRequest(JobKind.FILL, image, box_mask(image.shape, Rect(10, 10, 20, 20)),
                                controls=(ControlInput("canny", "some/controlnet"),))
    events = []
    run_job(ClassicEngine("telea"), request, 1, events.append, CancelToken())
    assert events[-1].kind == EventKind.ERROR and "ControlNets guide a diffusion model" in events[-1].message


@pytest.mark.parametrize("control, message", [
    (dict(kind="sketch", model="m"), "unknown control kind"),
    (dict(kind="canny", model=""), "needs a ControlNet model"),
    (dict(kind="canny", model="m", weight=3.0), "weight must be between 0 and 2"),
    (dict(kind="canny", model="m", start=0.8, end=0.2), "start <= end"),
    (dict(kind="scribble", model="m"), "needs an image"),
    (dict(kind="canny", model="m", low_threshold=300, high_threshold=100), "canny thresholds"),
])
def test_control_inputs_refuse_bad_values_in_words(control, message):
    with pytest.raises(ValueError, match=message):
        ControlInput(**control)


def test_a_control_image_of_the_wrong_size_is_refused():
    image = photo()
    with pytest.raises(ValueError, match="this job needs 320x240"):
        GenerationRequest(JobKind.FILL, image, box_mask(image.shape, Rect(10, 10, 20, 20)),
                          controls=(ControlInput("scribble", "m", np.zeros((10, 10, 3), np.uint8)),))


def test_a_controlnet_repo_id_loads_from_the_hub_cache_and_one_not_there_is_one_line(tiny_models, tiny_controlnets,
                                                                                     offline_hub):  # noqa: F811
    from tests.test_model_sources import install_in_hub_cache

    install_in_hub_cache(offline_hub, "tester/tiny-controlnet", tiny_controlnets.path("sd15"))
    base = fill_request(tiny_models)
    drawing = _scribble(base.image.shape)
    by_repo = _result(_with_controls(base, ControlInput("scribble", "tester/tiny-controlnet", drawing)))
    by_folder = _result(_with_controls(base, ControlInput("scribble", str(tiny_controlnets.path("sd15")), drawing)))
    np.testing.assert_array_equal(by_repo, by_folder)
    result, _ = run(_with_controls(base, ControlInput("scribble", "tester/no-controlnet", drawing)))
    assert result.kind == EventKind.ERROR
    assert result.message == ("the ControlNet tester/no-controlnet is not downloaded yet and the Hugging Face hub "
                              "cannot be reached (offline?)")


def test_a_windowed_expand_with_controls_keeps_the_image_and_guides_every_window(tiny_models, tiny_controlnets,
                                                                                   monkeypatch):
    from app.engine.diffusion import engine as diffusion_engine
    from app.engine.request import MaskOptions

    image = photo(160, 120)
    canvas = Rect(-160, -120, 480, 360)
    sizes = []
    original = diffusion_engine._active_controls

    def recorded(request, work, p, nets, device, canvas_pixels):
        active = original(request, work, p, nets, device, canvas_pixels)
        sizes.append((p.size, [tuple(a.image.shape[2:]) for a in active]))
        return active
    monkeypatch.setattr(diffusion_engine, "_active_controls", recorded)
    net = str(tiny_controlnets.path("sd15"))
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(canvas),
                                sampling=SamplingOptions(steps=2, seed=4), mask_options=MaskOptions(feather=4),
                                controls=(ControlInput("canny", net), ControlInput("inpaint", net, weight=0.5)),
                                **model_args(tiny_models, "sd15"))
    out = _result(request)
    assert out.shape == (360, 480, 3)
    np.testing.assert_array_equal(out[120 + 4:240 - 4, 160 + 4:320 - 4], image[4:-4, 4:-4])
    assert len(sizes) >= 4
    for size, shapes in sizes:
        assert all(shape == (size[1], size[0]) for shape in shapes)


def test_an_sdxl_union_controlnet_folder_guides_a_fill_and_its_single_file_is_one_line(tiny_models, tmp_path):
    from tests.control_factory import build_union_controlnet, save_controlnet_folder

    net = build_union_controlnet(seed=2)
    folder = save_controlnet_folder(net, tmp_path / "tiny-union")
    request = fill_request(tiny_models, **model_args(tiny_models, "sdxl", inpaint=False))
    guided = _result(_with_controls(request, ControlInput("canny", str(folder))))
    plain = _result(request)
    mask = request.mask > 0
    assert not np.array_equal(guided[mask], plain[mask])
    single = tmp_path / "union.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(single))
    result, _ = run(_with_controls(request, ControlInput("canny", str(single), model_config=str(folder))))
    assert result.kind == EventKind.ERROR and "is a union ControlNet: add its diffusers folder" in result.message


def test_controlnets_are_kept_across_a_job_without_any_and_dropped_for_other_ones(tiny_models, tiny_controlnets):
    from tests.test_diffusion_engine import MANAGER

    base = fill_request(tiny_models)
    drawing = _scribble(base.image.shape)
    folder = str(tiny_controlnets.path("sd15"))
    _result(_with_controls(base, ControlInput("scribble", folder, drawing)))
    net = MANAGER.current.extra["controlnets"][(folder, "")]
    _result(base)                                                      # no ControlNet: kept, not reloaded
    assert MANAGER.current.extra["controlnets"][(folder, "")] is net
    single = str(tiny_controlnets.path("sd15", "single_file"))
    _result(_with_controls(base, ControlInput("scribble", single, drawing,
                                              model_config=str(tiny_controlnets.config_folder("sd15")))))
    assert list(MANAGER.current.extra["controlnets"]) == [(single, str(tiny_controlnets.config_folder("sd15")))]
