"""Restyle image: img2img of the whole canvas in a style, in the engine, the editor and the command line."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction

from app.core.geometry import Rect
from app.core.styles import load_styles
from app.engine.classic import ClassicEngine
from app.engine.events import CancelToken, EventKind
from app.engine.request import GenerationRequest, JobKind, SamplingOptions
from app.engine.runner import run_job
from app.editor.job_builder import RESTYLE_STRENGTH, JobSettings, build_restyle_request
from tests.test_cli import run as run_cli, run_here
from tests.test_main_window import ScriptedEngine, make_window, settings  # noqa: F401 - fixture

pytest.importorskip("diffusers")
from tests.test_diffusion_engine import MANAGER, model_args, photo, run, unet_inputs  # noqa: E402


def restyle_request(tiny_models, image=None, strength=0.5, steps=4, seed=2, family="sd15", inpaint=False,
                    **extra) -> GenerationRequest:
    image = photo(200, 150) if image is None else image
    return GenerationRequest(JobKind.RESTYLE, image, prompt="an oil painting",
                             sampling=SamplingOptions(steps=steps, strength=strength, seed=seed),
                             **model_args(tiny_models, family, inpaint), **extra)


def test_request_takes_the_whole_image_and_no_mask():
    image = photo(40, 30)
    request = GenerationRequest(JobKind.RESTYLE, image)
    assert request.output_rect == request.image_rect
    with pytest.raises(ValueError, match="whole image"):
        GenerationRequest(JobKind.RESTYLE, image, mask=np.full((30, 40), 255, np.uint8))


def test_builder_uses_the_restyle_strength_and_the_style():
    styles = load_styles()
    image = photo(40, 30)
    request = build_restyle_request(image, JobSettings(prompt="a barn", style="Watercolor", strength=1.0, seed=4),
                                    styles)
    assert request.kind == JobKind.RESTYLE and request.mask is None
    assert request.sampling.strength == RESTYLE_STRENGTH == 0.55
    assert request.style.name == "Watercolor" and "a barn" in request.prompt and request.prompt != "a barn"
    lower = build_restyle_request(image, JobSettings(restyle_strength=0.3), styles)
    assert lower.sampling.strength == 0.3
    with pytest.raises(ValueError, match="strength"):
        build_restyle_request(image, JobSettings(restyle_strength=0.0), styles)


@pytest.mark.parametrize("channels", [3, 4])
def test_restyle_keeps_the_size_and_changes_pixels_everywhere(tiny_models, channels):
    image = photo(200, 150, channels=channels)
    result, _ = run(restyle_request(tiny_models, image))
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == image.shape
    changed = np.any(out[..., :3] != image[..., :3], axis=-1)
    assert changed.mean() > 0.9
    blocks = changed.reshape(150 // 10, 10, 200 // 10, 10).any(axis=(1, 3))
    assert blocks.all()                                     # no part of the image is left as it was
    if channels == 4:
        np.testing.assert_array_equal(out[..., 3], image[..., 3])
    assert "Mode: restyle" in result.variants[0].parameters
    assert "Denoising strength: 0.5" in result.variants[0].parameters


def test_lower_strength_runs_fewer_steps_and_stays_closer(tiny_models):
    image = photo(160, 128)
    outputs = {}
    for strength, expected in ((0.3, 3), (0.8, 8)):
        result, progress = run(restyle_request(tiny_models, image, strength=strength, steps=10))
        assert result.kind == EventKind.RESULT, result.message
        assert [e.step for e in progress if e.preview is not None] == list(range(1, expected + 1))
        for event in progress:
            if event.preview_rect is not None:
                assert event.preview_rect == Rect(0, 0, 160, 128)
        outputs[strength] = result.variants[0].image.astype(int)
    assert np.abs(outputs[0.3] - image).mean() < np.abs(outputs[0.8] - image).mean()


def test_a_big_image_runs_at_the_native_size(tiny_models):
    image = np.full((900, 1200, 3), 90, np.uint8)
    run(restyle_request(tiny_models, photo(64, 64), steps=2))          # the model is loaded
    shapes, handle = unet_inputs(MANAGER.current)
    try:
        result, _ = run(restyle_request(tiny_models, image, steps=2))
    finally:
        handle.remove()
    assert result.kind == EventKind.RESULT, result.message
    native_latent = MANAGER.current.native_size // MANAGER.current.vae_scale
    height, width = shapes[0][2:]
    assert abs(height * width - native_latent ** 2) <= 0.25 * native_latent ** 2
    assert abs(width / height - 1200 / 900) < 0.2
    assert result.variants[0].image.shape == image.shape


def test_restyle_with_an_inpainting_model(tiny_models):
    result, _ = run(restyle_request(tiny_models, photo(96, 96), steps=2, family="sdxl", inpaint=True))
    assert result.kind == EventKind.RESULT, result.message
    assert result.variants[0].image.shape == (96, 96, 3)


def test_the_classic_engine_refuses_restyle_in_one_line():
    events = []
    request = GenerationRequest(JobKind.RESTYLE, photo(40, 30))
    run_job(ClassicEngine(), request, 1, events.append, CancelToken())
    assert events[-1].kind == EventKind.ERROR
    assert events[-1].message == "Restyle needs a diffusion model; pick one in Model"


# -- the editor ---------------------------------------------------------------------------------------------

def test_restyle_button_and_menu_run_a_restyle_through_the_variants_strip(qtbot, settings, tmp_path):  # noqa: F811
    engine = ScriptedEngine()
    window = make_window(qtbot, settings, engine)
    button = window.panel.restyle_button
    action = window.findChild(QAction, "restyleAction")
    assert button.objectName() == "restyleButton" and button.accessibleName()
    assert action is not None and "Restyle" in action.text()
    assert not button.isEnabled() and not action.isEnabled()
    pixels = photo(64, 48)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    window.open_image(tmp_path / "p.png")
    assert button.isEnabled() and action.isEnabled()
    window.panel.style_combo.setCurrentText("Watercolor")
    window.panel.style_strength_slider.setValue(40)
    window.panel.restyle_strength_spin.setValue(0.35)
    with qtbot.waitSignal(window.session.variants_ready, timeout=10000, check_params_cb=lambda v: len(v) > 0):
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    request = engine.requests[-1]
    assert request.kind == JobKind.RESTYLE and request.mask is None
    assert request.sampling.strength == pytest.approx(0.35)
    assert request.style.name == "Watercolor" and request.style.strength == pytest.approx(0.4)
    assert window.strip.list.count() == 2
    assert window.state.candidate[1] == window.state.document.image_rect
    qtbot.mouseClick(window.strip.accept_button, Qt.MouseButton.LeftButton)
    assert window.state.document.image[0, 0].tolist() == [10, 20, 30]
    window.state.history.stack.undo()
    np.testing.assert_array_equal(window.state.document.image, pixels)
    with qtbot.waitSignal(window.session.variants_ready, timeout=10000, check_params_cb=lambda v: len(v) > 0):
        action.trigger()
    assert engine.requests[-1].kind == JobKind.RESTYLE


def test_style_strength_slider_defaults_to_full_and_survives_a_restart(qtbot, settings):  # noqa: F811
    window = make_window(qtbot, settings, ScriptedEngine())
    slider = window.panel.style_strength_slider
    assert slider.objectName() == "styleStrengthSlider"
    assert (slider.minimum(), slider.maximum(), slider.value()) == (0, 100, 100)
    assert window.panel.job_settings().style_strength == 1.0
    assert not slider.isEnabled()                          # style "None": nothing to scale
    window.panel.style_combo.setCurrentText("Cinematic")
    assert slider.isEnabled()
    slider.setValue(35)
    window.panel.restyle_strength_spin.setValue(0.7)
    window.close()
    again = make_window(qtbot, settings, ScriptedEngine())
    assert again.panel.style_strength_slider.value() == 35
    assert again.panel.job_settings().style_strength == pytest.approx(0.35)
    assert again.panel.job_settings().restyle_strength == pytest.approx(0.7)


# -- the command line -----------------------------------------------------------------------------------------

@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(photo(72, 56)).save(path)
    return path


def test_cli_restyle_writes_an_image_of_the_same_size(tiny_models, picture, tmp_path):
    out = tmp_path / "restyled.png"
    result = run_here("restyle", picture, "-o", out, "--style", "Watercolor", "--strength", "0.5",
                      "--style-strength", "0.5", "--model", tiny_models.path("sd15"), "--steps", "4",
                      "--seed", "9", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("step ")] == ["step 1/2", "step 2/2"]
    got = Image.open(out)
    assert got.size == (72, 56)
    params = got.text["parameters"]
    assert "Mode: restyle" in params and "Style: Watercolor, Style strength: 0.5" in params
    assert "Seed: 9" in params


@pytest.mark.parametrize("case, extra, expected, status", [
    ("classic engine", [], "restyle needs a diffusion model", 2),
    ("classic named", ["--model", "classic-ns"], "restyle needs a diffusion model", 2),
    ("strength 0", ["--model", "MODEL", "--strength", "0"], "strength", 1),
    ("strength too high", ["--model", "MODEL", "--strength", "1.5"], "strength", 1),
    ("bad style strength", ["--model", "MODEL", "--style-strength", "2"], "style strength", 1),
    ("unknown style", ["--model", "MODEL", "--style", "Nope"], "unknown style", 1),
    ("feather is not an option", ["--model", "MODEL", "--feather", "3"], "unrecognized arguments", 2),
    ("missing image", ["--model", "MODEL", "IMAGE=nope.png"], "nope.png", 1),
])
def test_cli_restyle_errors_are_one_line(tiny_models, picture, tmp_path, case, extra, expected, status):
    image = picture
    args = []
    for arg in extra:
        if arg == "MODEL":
            arg = str(tiny_models.path("sd15"))
        if arg.startswith("IMAGE="):
            image = tmp_path / arg.split("=", 1)[1]
            continue
        args.append(arg)
    out = tmp_path / "out.png"
    result = run_cli("restyle", image, "-o", out, *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, f"{case}: {result.stderr}"
    assert len(lines) == 1 and expected in lines[0].lower(), f"{case}: {result.stderr}"
    assert not out.exists()
