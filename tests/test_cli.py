"""The command line as a user runs it: `python main.py ...` in a subprocess."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture
def photo(tmp_path):
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


@pytest.fixture
def mask(tmp_path):
    m = np.zeros((96, 128), np.uint8)
    m[40:60, 50:80] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    return path, m


def test_styles_lists_none_and_real_styles():
    result = run("styles")
    assert result.returncode == 0
    names = result.stdout.split("\n")
    assert names[0] == "None" and len([n for n in names if n]) >= 13


def test_fill_writes_result_keeping_pixels_far_from_mask(photo, mask, tmp_path):
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--seed", "5", "--prompt", "grass")
    assert result.returncode == 0, result.stderr
    assert "step 1/" in result.stderr
    got = np.asarray(Image.open(out))
    assert got.shape == photo[1].shape
    far = np.ones((96, 128), bool)
    far[40 - 10:60 + 10, 50 - 10:80 + 10] = False      # mask plus the 8 px feather and margin
    assert np.array_equal(got[far], photo[1][far])
    # a smooth gradient filled from its surroundings stays close to the gradient
    hole = (slice(40, 60), slice(50, 80))
    assert np.abs(got[hole].astype(int) - photo[1][hole].astype(int)).mean() < 30
    params = Image.open(out).text["parameters"]
    assert params.startswith("grass") and "Seed: 5" in params


def test_fill_variants_are_written_as_numbered_files(photo, mask, tmp_path):
    out = tmp_path / "v.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--variants", "3", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in sorted(tmp_path.glob("v*.png"))] == ["v-2.png", "v-3.png", "v.png"]
    assert "Seed: 3" in Image.open(tmp_path / "v-3.png").text["parameters"]


def test_expand_grows_canvas_and_keeps_original(photo, tmp_path):
    out = tmp_path / "wide.jpg"
    result = run("expand", photo[0], "-o", tmp_path / "wide.png", "--left", "32", "--bottom", "16")
    assert result.returncode == 0, result.stderr
    got = np.asarray(Image.open(tmp_path / "wide.png"))
    assert got.shape == (96 + 16, 128 + 32, 3)
    assert np.array_equal(got[:96, 32:], photo[1])
    assert not out.exists()


def corrupt(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return p


def small_mask(tmp_path):
    p = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(p)
    return p


def empty_mask(tmp_path):
    p = tmp_path / "empty.png"
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(p)
    return p


@pytest.mark.parametrize("case, make_args, expected", [
    ("missing image", lambda t, ph, m: ["fill", t / "nope.png", "--mask", m], "nope.png"),
    ("corrupt image", lambda t, ph, m: ["fill", corrupt(t), "--mask", m], "broken.png"),
    ("missing mask", lambda t, ph, m: ["fill", ph, "--mask", t / "nomask.png"], "nomask.png"),
    ("mask of another size", lambda t, ph, m: ["fill", ph, "--mask", small_mask(t)], "same size"),
    ("empty mask", lambda t, ph, m: ["fill", ph, "--mask", empty_mask(t)], "empty"),
    ("unknown style", lambda t, ph, m: ["fill", ph, "--mask", m, "--style", "Nonexistent"], "unknown style"),
    ("missing model", lambda t, ph, m: ["fill", ph, "--mask", m, "--model", t / "no-model.safetensors"],
     "model not found"),
    ("nothing to expand", lambda t, ph, m: ["expand", ph], "nothing to expand"),
    ("negative expand", lambda t, ph, m: ["expand", ph, "--left", "-8"], "negative"),
    ("bad steps", lambda t, ph, m: ["fill", ph, "--mask", m, "--steps", "0"], "steps"),
    ("bad output format", lambda t, ph, m: ["fill", ph, "--mask", m, "-o", t / "out.gif"], "unsupported"),
    ("missing output folder", lambda t, ph, m: ["fill", ph, "--mask", m, "-o", t / "no" / "o.png"],
     "does not exist"),
    ("no mask option", lambda t, ph, m: ["fill", ph], "--mask"),
])
def test_bad_input_gives_one_line_and_no_output(case, make_args, expected, photo, mask, tmp_path):
    args = make_args(tmp_path, photo[0], mask[0])
    if "-o" not in args:
        args += ["-o", tmp_path / "out.png"]
    result = run(*args)
    assert result.returncode != 0, case
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{case}: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert expected.lower() in lines[0].lower(), f"{case}: {lines[0]}"
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.gif").exists()


# -- models -----------------------------------------------------------------------------------------------

SD1_KEYS = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": (4,),
            "first_stage_model.decoder.conv_in.weight": (4, 4, 3, 3)}


def sd1_keys_file(path):
    """Laid out like an SD 1.x checkpoint: passes the checks, but holds no usable weights."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({key: torch.zeros(shape) for key, shape in SD1_KEYS.items()}, str(path))
    return path


def test_model_config_reaches_the_request(photo, mask, tmp_path):
    from app.cli import _settings, build_parser
    from app.core.styles import load_styles
    from app.job_builder import build_fill_request

    args = build_parser().parse_args(["fill", str(photo[0]), "--mask", str(mask[0]), "-o", "out.png",
                                      "--model", "m.safetensors", "--model-config", str(tmp_path)])
    request = build_fill_request(photo[1], mask[1], _settings(args), load_styles())
    assert request.model == "m.safetensors" and request.model_config == str(tmp_path)


def text_file_as_model(t):
    (t / "x.safetensors").write_text("just some text")
    return t / "x.safetensors"


def config_folder(t):
    (t / "cfg").mkdir(exist_ok=True)
    (t / "cfg" / "model_index.json").write_text("{}")
    return t / "cfg"


@pytest.mark.parametrize("case, extra, expected, status", [
    ("missing model with a config", lambda t: ["--model", t / "gone.safetensors", "--model-config", t],
     "model not found: ", 1),
    ("text file named .safetensors", lambda t: ["--model", text_file_as_model(t)],
     "x.safetensors is not a readable .safetensors file", 1),
    ("config folder without model_index.json",
     lambda t: ["--model", sd1_keys_file(t / "m.safetensors"), "--model-config", t / "no-config"],
     "no-config is not a diffusers config folder", 1),
    ("config for a built-in engine", lambda t: ["--model-config", config_folder(t)],
     "--model-config only applies to a single model file", 2),
    ("config for a repo id", lambda t: ["--model", "owner/name", "--model-config", config_folder(t)],
     "config folder only applies to a single model file", 1),
])
def test_unusable_models_give_one_line_before_any_loading(case, extra, expected, status, photo, mask,
                                                         tmp_path):
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, *extra(tmp_path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, f"{case}: {result.stderr}"
    assert len(lines) == 1 and expected in lines[0], f"{case}: {result.stderr}"
    assert not out.exists()


def test_a_single_file_model_runs_with_its_config_folder(tiny_models, photo, mask, tmp_path):
    """The tiny model's widths match no shipped config: it only loads with --model-config."""
    model = tiny_models.path("sd15", form="single_file")
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--model", model,
                 "--model-config", tiny_models.config_folder("sd15"), "--steps", "2", "--seed", "3",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert any(line.startswith("loading ") and model.name in line for line in lines)
    assert all(a != b for a, b in zip(lines, lines[1:]))           # no message repeated line after line
    assert [line for line in lines if line.startswith("step ")] == ["step 1/2", "step 2/2"]
    assert np.asarray(Image.open(out)).shape == photo[1].shape
    assert "Seed: 3" in Image.open(out).text["parameters"]


@pytest.mark.parametrize("extra, expected", [
    (["--precision", "float16", "--device", "cpu"], "float16 is not supported on the CPU; use float32 or bfloat16"),
    (["--device", "cuda"], "device cuda was requested but"),
])
def test_device_choices_the_machine_cannot_honour_are_one_line(extra, expected, tiny_models, photo, mask, tmp_path):
    import torch

    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out.png"
    result = run("fill", photo[0], "--mask", mask[0], "-o", out, "--model", tiny_models.path("sd15"),
                 "--steps", "1", *extra)
    assert result.returncode == 1
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
