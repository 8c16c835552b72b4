"""The command line's ControlNets: --control KIND[:IMAGE][:WEIGHT[:START:END]] with one --controlnet each."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.cli_controls import ControlUsageError, parse_control, parse_reference
from tests.reference_factory import save_reference_models
from tests.test_cli import mask, photo, run, run_here  # noqa: F401 - fixtures


@pytest.mark.parametrize("text, expected", [
    ("canny", ("canny", "", 1.0, 0.0, 1.0)),
    ("canny:0.6", ("canny", "", 0.6, 0.0, 1.0)),
    ("depth:0.5:0.1:0.9", ("depth", "", 0.5, 0.1, 0.9)),
    ("scribble:lines.png", ("scribble", "lines.png", 1.0, 0.0, 1.0)),
    ("scribble:lines.png:0.9:0:0.8", ("scribble", "lines.png", 0.9, 0.0, 0.8)),
    ("pose:C:/art/pose 1.png:1.1", ("pose", "C:/art/pose 1.png", 1.1, 0.0, 1.0)),
    ("Tile", ("tile", "", 1.0, 0.0, 1.0)),
])
def test_control_values_are_read_as_written(text, expected):
    assert parse_control(text) == expected


@pytest.mark.parametrize("text, message", [
    ("sketch", "unknown kind 'sketch'"),
    ("canny:0.5:0.2", "WEIGHT, or WEIGHT:START:END"),
])
def test_control_values_that_cannot_be_read_are_named(text, message):
    with pytest.raises(ControlUsageError, match=message):
        parse_control(text)


@pytest.fixture
def lines(tmp_path):
    drawing = np.full((96, 128, 3), 255, np.uint8)        # dark lines on paper, as drawn in another program
    drawing[30:34, 20:110] = 0
    drawing[20:80, 60:64] = 0
    path = tmp_path / "lines.png"
    Image.fromarray(drawing).save(path)
    return path


def test_fill_and_expand_with_controlnets(tiny_models, tiny_controlnets, photo, mask, lines, tmp_path):  # noqa: F811
    net = tiny_controlnets.path("sd15")
    out = tmp_path / "fill.png"
    result = run_here("fill", photo[0], "--mask", mask[0], "-o", out, "--model", tiny_models.path("sd15"),
                      "--steps", "2", "--seed", "3", "--device", "cpu", "--control", f"scribble:{lines}:0.9",
                      "--controlnet", net, "--control", "canny:0.5:0:0.5", "--controlnet", net)
    assert result.returncode == 0, result.stderr
    filled = np.asarray(Image.open(out))
    assert filled.shape == photo[1].shape
    far = np.ones(mask[1].shape, bool)
    far[30:70, 40:90] = False
    np.testing.assert_array_equal(filled[far], photo[1][far])

    out = tmp_path / "expand.png"
    result = run_here("expand", photo[0], "--right", "32", "-o", out, "--model", tiny_models.path("sd15"),
                      "--steps", "2", "--seed", "3", "--device", "cpu", "--control", f"scribble:{lines}",
                      "--controlnet", net)
    assert result.returncode == 0, result.stderr
    expanded = np.asarray(Image.open(out))
    assert expanded.shape == (96, 160, 3)
    np.testing.assert_array_equal(expanded[:, :120], photo[1][:, :120])


def test_a_pose_made_from_the_input_with_a_pose_model_and_a_person_detector(  # noqa: F811
        tiny_models, tiny_controlnets, photo, mask, tmp_path):  # noqa: F811
    from tests.pose_factory import save_person_detector, save_pose_model

    pose, people = save_pose_model(tmp_path / "vitpose"), save_person_detector(tmp_path / "people")
    out = tmp_path / "posed.png"
    common = ("fill", photo[0], "--mask", mask[0], "-o", out, "--model", tiny_models.path("sd15"), "--steps", "2",
              "--device", "cpu", "--control", "pose:0.8", "--controlnet", tiny_controlnets.path("sd15"))
    result = run_here(*common, "--pose-model", pose, "--pose-detector", people)
    assert result.returncode == 0, result.stderr
    filled = np.asarray(Image.open(out))
    far = np.ones(mask[1].shape, bool)
    far[30:70, 40:90] = False
    np.testing.assert_array_equal(filled[far], photo[1][far])
    out.unlink()
    result = run_here(*common)                 # refused before any model loads
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip() == ("latent-canvas: error: --control pose: made from the input, it needs a pose "
                                     "model (VitPose): pass --pose-model MODEL, or give the pose image as "
                                     "--control pose:IMAGE")


@pytest.mark.parametrize("extra, expected", [
    (["--control", "canny"], "give one --controlnet for each --control (1 --control, 0 --controlnet)"),
    (["--control", "scribble", "--controlnet", "x/y"], "a scribble control needs an image"),
    (["--control", "canny:3", "--controlnet", "x/y"], "control weight must be between 0 and 2"),
    (["--control", "canny", "--controlnet", "x/y", "--canny", "a:b"], "--canny a:b: give two whole numbers"),
])
def test_control_options_that_cannot_work_are_one_line(extra, expected, photo, mask, tmp_path):  # noqa: F811
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, *extra)
    assert result.returncode == 2 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_control_image_of_another_size_is_one_line(photo, mask, tmp_path):  # noqa: F811
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(small)
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--control", f"depth:{small}", "--controlnet",
                 "x/y")
    assert result.returncode == 1
    assert "small.png is 10x10; a control image must be 128x96" in result.stderr and not out.exists()


def test_the_classic_engine_with_a_control_is_one_line(photo, mask, tmp_path):  # noqa: F811
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--control", "canny", "--controlnet", "x/y")
    assert result.returncode == 1 and "ControlNets guide a diffusion model" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [
    ("ref.png", ("ref.png", 0.6, "general")),
    ("ref.png:0.9", ("ref.png", 0.9, "general")),
    ("C:/art/ref.png:1.2:style", ("C:/art/ref.png", 1.2, "style")),
    ("ref:style.png", ("ref:style.png", 0.6, "general")),
])
def test_reference_values_are_read_as_written(text, expected):
    assert parse_reference(text) == expected


def test_restyle_with_a_reference_image(tiny_models, photo, tmp_path):  # noqa: F811
    from app.engine.diffusion.devices import plan_device
    from app.engine.diffusion.model_files import resolve_source
    from app.engine.diffusion.model_loader import load_model

    model = load_model(resolve_source(str(tiny_models.path("sd15"))), plan_device("cpu", "float32", "off"))
    adapter, _ = save_reference_models(model.unet, tmp_path / "ip", "sd15")
    reference = tmp_path / "reference.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(reference)
    out = tmp_path / "styled.png"
    result = run_here("restyle", photo[0], "-o", out, "--model", tiny_models.path("sd15"), "--steps", "2",
                      "--seed", "1", "--device", "cpu", "--reference", f"{reference}:0.8:style", "--ip-adapter", adapter)
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == photo[1].shape
    result = run_here("restyle", photo[0], "-o", out, "--model", tiny_models.path("sd15"), "--reference", reference)
    assert result.returncode == 2 and "--reference needs --ip-adapter" in result.stderr
