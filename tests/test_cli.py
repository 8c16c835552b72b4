"""The command line as a user runs it: `python main.py ...` in a subprocess; in-process (app.cli.run, run_here)
only where a fault is injected or a model is loaded (torch is imported already)."""
import errno
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def run_here(*args) -> subprocess.CompletedProcess:
    """`run` in this process, for commands that load a model: torch and diffusers are imported already,
    which spares the seconds a fresh interpreter spends importing them. Same result: status, stdout, stderr."""
    from contextlib import redirect_stderr, redirect_stdout

    from app.cli import run as cli_run

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = cli_run(argv)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


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


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`latent-canvas styles | head -1`: the pipe closes before the list is written."""
    child = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "styles"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdout.close()
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1 and err == ""


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


def over_pillows_limit(tmp_path):
    """A PNG header claiming 10000 x 10000 (past Pillow's 89-megapixel warning, within our 150) and no pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    png = buffer.getvalue()
    ihdr = b"IHDR" + struct.pack(">II", 10_000, 10_000) + png[24:29]
    p = tmp_path / "huge.png"
    p.write_bytes(png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:])
    return p


def tiff_of_23299_samples(tmp_path):
    """Pillow logs an error about it (and then refuses it)."""
    entries = [(256, 3, 1, 2), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 23299), (278, 3, 1, 1), (279, 4, 1, 2)]
    strip = 8 + 2 + 12 * len(entries) + 4
    ifd = b"".join(struct.pack("<HHI" + ("I" if kind == 4 else "H2x"), tag, kind, count,
                               strip if tag == 273 else value) for tag, kind, count, value in entries)
    p = tmp_path / "samples.tif"
    p.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + bytes(4) + b"\x10\xf0")
    return p


def empty_mask(tmp_path):
    p = tmp_path / "empty.png"
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(p)
    return p


@pytest.mark.parametrize("case, make_args, expected", [
    ("missing image", lambda t, ph, m: ["fill", t / "nope.png", "--mask", m], "nope.png"),
    ("corrupt image", lambda t, ph, m: ["fill", corrupt(t), "--mask", m], "broken.png"),
    ("header past Pillow's limit, no pixels", lambda t, ph, m: ["fill", over_pillows_limit(t), "--mask", m],
     "huge.png: the file is truncated or corrupt"),
    ("a TIFF Pillow logs about", lambda t, ph, m: ["fill", tiff_of_23299_samples(t), "--mask", m],
     "samples.tif: the file is truncated or corrupt"),
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
    from app.editor.job_builder import build_fill_request

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
    result = run_here("fill", photo[0], "--mask", mask[0], "-o", out, "--model", model,
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


# -- outputs never replace inputs; all variants or none -----------------------------------------------------

def case_insensitive(folder: Path) -> bool:
    probe = folder / "Case-Probe.tmp"
    probe.write_bytes(b"")
    try:
        return (folder / "case-probe.tmp").exists()
    finally:
        probe.unlink()


@pytest.mark.parametrize("case, make_args", [
    ("variant 2 is the image", lambda t: ["fill", t / "photo-2.png", "--mask", t / "mask.png", "-o",
                                          t / "photo.png", "--variants", "2"]),
    ("the output is the image", lambda t: ["expand", t / "photo.png", "--left", "8", "-o", t / "photo.png"]),
    ("the output is the mask", lambda t: ["fill", t / "photo.png", "--mask", t / "mask.png", "-o", t / "mask.png"]),
    ("another spelling of the image", lambda t: ["fill", t / "photo.png", "--mask", t / "mask.png", "-o",
                                                 t / "sub" / ".." / "photo.png"]),
    ("a symbolic link to the image", lambda t: ["fill", t / "photo.png", "--mask", t / "mask.png", "-o",
                                                t / "link.png"]),
    ("variant 3 is a hard link to the mask", lambda t: ["fill", t / "photo.png", "--mask", t / "mask.png", "-o",
                                                        t / "hard.png", "--variants", "3"]),
    ("the image in other letter case", lambda t: ["fill", t / "photo.png", "--mask", t / "mask.png", "-o",
                                                  t / "PHOTO.PNG"]),
])
def test_an_output_that_is_an_input_is_refused_before_any_work(case, make_args, photo, mask, tmp_path):
    if "letter case" in case and not case_insensitive(tmp_path):
        pytest.skip("this file system tells letter cases apart")
    (tmp_path / "photo-2.png").write_bytes(photo[0].read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(photo[0])
    os.link(mask[0], tmp_path / "hard-3.png")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    result = run(*make_args(tmp_path))
    assert result.returncode == 2, f"{case}: {result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "would overwrite the input" in lines[0], f"{case}: {result.stderr}"
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before, case


def test_a_variant_that_cannot_be_written_leaves_no_output_at_all(photo, mask, tmp_path):
    (tmp_path / "v-2.png").mkdir()
    result = run("fill", photo[0], "--mask", mask[0], "-o", tmp_path / "v.png", "--variants", "3", "--seed", "1")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if not line.startswith("step ")] == [
        "latent-canvas: error: v-2.png: a folder with that name already exists"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mask.png", "photo.png", "v-2.png"]
    assert not any((tmp_path / "v-2.png").iterdir())


@pytest.mark.parametrize("fault", ["encoder", "rename"])
def test_a_later_variant_failing_keeps_every_earlier_file_as_it_was(fault, photo, mask, tmp_path, monkeypatch,
                                                                   capsys):
    from app import cli

    (tmp_path / "v-3.png").write_bytes(b"the result of an earlier run")
    owner, name = (Image.Image, "save") if fault == "encoder" else (os, "replace")
    real, calls = getattr(owner, name), []

    def second_fails(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2 and fault == "rename":
            raise OSError(errno.EIO, "Input/output error", str(args[0]), None, str(args[1]))
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, second_fails)
    status = cli.run(["fill", str(photo[0]), "--mask", str(mask[0]), "-o", str(tmp_path / "v.png"),
                      "--variants", "3", "--seed", "1"])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("step ")]
    assert status == 1
    assert errors == ["latent-canvas: error: v-2.png: cannot write the file (Input/output error)"]
    # After a failed rename, v.png (already in place) is taken back; v-3.png was never reached.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mask.png", "photo.png", "v-3.png"]
    assert (tmp_path / "v-3.png").read_bytes() == b"the result of an earlier run"


# -- masks as files ------------------------------------------------------------------------------------------

def noise_photo(tmp_path):
    pixels = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    return tmp_path / "noise.png", pixels


def test_a_grey_and_transparent_mask_file_fills_what_it_says(tmp_path):
    """White fills; grey 131 (which the old reader took for 0) is at least mid-grey, so it is filled too; white
    but fully transparent never fills. --feather 0: all else is kept exactly."""
    path, pixels = noise_photo(tmp_path)
    rgba = np.zeros((96, 128, 4), np.uint8)
    rgba[30:70, 40:90] = (131, 131, 131, 255)
    rgba[40:60, 50:80] = (255, 255, 255, 255)
    rgba[5:20, 5:30] = (255, 255, 255, 0)
    Image.fromarray(rgba).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    result = run("fill", path, "--mask", tmp_path / "mask.png", "-o", out, "--feather", "0", "--seed", "2")
    assert result.returncode == 0, result.stderr
    got = np.asarray(Image.open(out))
    painted = np.zeros((96, 128), bool)
    painted[30:70, 40:90] = True
    assert np.array_equal(got[~painted], pixels[~painted])
    ring = painted.copy()
    ring[40:60, 50:80] = False
    changed = (got != pixels).any(axis=-1)
    assert changed[ring].mean() > 0.9 and changed[40:60, 50:80].mean() > 0.9


def soft_edge_files(tmp_path):
    """A photo black on the left, white on the right, and a mask of grey 100 around a white core."""
    photo_pixels = np.zeros((64, 64, 3), np.uint8)
    photo_pixels[:, 32:] = 255
    Image.fromarray(photo_pixels).save(tmp_path / "halves.png")
    grey = np.zeros((64, 64), np.uint8)
    grey[8:56, 8:56] = 100
    grey[20:44, 20:44] = 255
    Image.fromarray(grey).save(tmp_path / "mask.png")
    return ["fill", tmp_path / "halves.png", "--mask", tmp_path / "mask.png", "-o", tmp_path / "out.png",
            "--feather", "0", "--seed", "4"], photo_pixels, grey


def assert_soft_edge_blended(tmp_path, photo_pixels, grey):
    """Grey 100 is a strength of 100/255: over black the result stays at most 100, over white at least 155
    (result = original + strength x (generated - original)); the white core is generated freely."""
    got = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    soft = grey == 100
    assert np.array_equal(got[grey == 0], photo_pixels[grey == 0])
    assert got[soft & (photo_pixels[..., 0] == 0)].max() <= 101
    assert got[soft & (photo_pixels[..., 0] == 255)].min() >= 154
    assert (got[soft] != photo_pixels[soft]).any()


def test_a_soft_grey_edge_blends_partially_with_a_diffusion_model(tiny_models, tmp_path, capsys):
    """In-process: torch is loaded already."""
    from app import cli

    args, photo_pixels, grey = soft_edge_files(tmp_path)
    args += ["--model", tiny_models.path("sd15"), "--steps", "2", "--device", "cpu"]
    assert cli.run([str(arg) for arg in args]) == 0, capsys.readouterr().err
    assert_soft_edge_blended(tmp_path, photo_pixels, grey)


@pytest.mark.parametrize("model", ["classic", "classic-ns"])
def test_a_soft_grey_edge_blends_partially_with_the_classic_engine(tmp_path, model):
    args, photo_pixels, grey = soft_edge_files(tmp_path)
    result = run(*args, "--model", model)
    assert result.returncode == 0, result.stderr
    assert_soft_edge_blended(tmp_path, photo_pixels, grey)


def test_a_damaged_styles_file_leaves_out_what_it_cannot_use_and_says_so(photo, mask, tmp_path, monkeypatch,
                                                                      capsys):
    from app.cli import run as cli_run
    from app.core import styles

    broken = tmp_path / "styles.json"
    broken.write_text('[{"name": "None", "prompt": "{prompt}"}, {"name": "Ink", "prompt": "no placeholder"}]')
    monkeypatch.setattr(styles, "DEFAULT_STYLES_PATH", broken)
    out = tmp_path / "out.png"
    assert cli_run(["fill", str(photo[0]), "--mask", str(mask[0]), "-o", str(out), "--steps", "2"]) == 0
    assert out.is_file()
    err = capsys.readouterr().err
    assert "note: styles.json: style 'Ink': the prompt template has no {prompt} (left out)." in err
    assert cli_run(["fill", str(photo[0]), "--mask", str(mask[0]), "-o", str(tmp_path / "ink.png"),
                    "--style", "Ink"]) == 1
    assert "unknown style 'Ink'; choose one of: None" in capsys.readouterr().err
    assert not (tmp_path / "ink.png").exists()
