"""Saving images (app/core/imageio.py: save_image, save_images): formats, atomic replacement, the one-line
errors, temporaries left by a killed save, and several files written all or nothing."""
import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core import imageio
from app.core.imageio import ImageSaveError, load_image, read_parameters, save_image, save_images
from app.core.safe_files import TEMP_TAG

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = not hasattr(os, "geteuid") or os.geteuid() == 0


def assert_one_line(error: pytest.ExceptionInfo, name: str, problem: str) -> None:
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{name}: ")
    assert problem in text


def gradient(channels: int) -> np.ndarray:
    y, x = np.mgrid[0:32, 0:48]
    planes = [x * 5, y * 7, (x + y) * 3, 255 - y * 4][:channels]
    return np.ascontiguousarray(np.stack(planes, axis=-1).astype(np.uint8))


@pytest.mark.parametrize("suffix, quality, tolerance", [
    (".png", 95, 0), (".webp", 100, 0), (".webp", 95, 16), (".jpg", 95, 16), (".jpeg", 80, 24),
])
@pytest.mark.parametrize("channels", [3, 4])
def test_save_round_trip(tmp_path, suffix, quality, tolerance, channels):
    pixels = gradient(channels)
    save_image(tmp_path / f"out{suffix}", pixels, quality=quality)
    loaded = load_image(tmp_path / f"out{suffix}")
    kept = channels if suffix in (".png", ".webp") else 3
    assert loaded.pixels.shape == (32, 48, kept)
    expected = pixels if kept == channels else imageio._flatten_over_white(pixels)
    assert np.abs(loaded.pixels.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize("rgba, rgb", [
    ((255, 0, 0, 0), (255, 255, 255)),
    ((0, 0, 0, 255), (0, 0, 0)),
    ((0, 0, 255, 128), (127, 127, 255)),
    ((200, 100, 0, 64), (241, 216, 191)),
])
def test_rgba_jpeg_is_flattened_over_white(tmp_path, rgba, rgb):
    save_image(tmp_path / "flat.jpg", np.full((16, 16, 4), rgba, np.uint8), quality=100)
    pixels = load_image(tmp_path / "flat.jpg").pixels
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels[8, 8].astype(int) - rgb).max() <= 3


def folder_names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("target", ["os.replace", "os.fsync", "encoder"])
def test_failed_save_leaves_old_file_untouched(tmp_path, monkeypatch, target):
    path = tmp_path / "keep.png"
    save_image(path, gradient(3), "old")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        if target == "encoder":
            args[1].write(b"half an image")
        raise OSError(errno.EIO, "Input/output error")
    if target == "encoder":
        monkeypatch.setattr(Image.Image, "save", fail)
    else:
        monkeypatch.setattr(os, target.split(".")[1], fail)
    with pytest.raises(ImageSaveError) as error:
        save_image(path, gradient(4), "new")
    assert_one_line(error, "keep.png", "")
    assert path.read_bytes() == before
    assert folder_names(tmp_path) == ["keep.png"]


@pytest.mark.parametrize("code, problem", [
    (errno.ENOSPC, "the disk is full"),
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only"),
])
def test_save_errors_are_one_line(tmp_path, monkeypatch, code, problem):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "fsync" if code == errno.ENOSPC else "open", fail)
    with pytest.raises(ImageSaveError) as error:
        save_image(tmp_path / "x.png", gradient(3))
    assert_one_line(error, "x.png", problem)
    assert folder_names(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(ImageSaveError) as error:
        save_image(tmp_path / "nowhere" / "x.png", gradient(3))
    assert_one_line(error, "x.png", "does not exist")


@pytest.mark.skipif(IS_ROOT, reason="root writes everywhere")
def test_read_only_folder_for_real(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ImageSaveError) as error:
            save_image(tmp_path / "x.png", gradient(3))
    finally:
        tmp_path.chmod(0o755)
    assert_one_line(error, "x.png", "permission denied")


def test_permission_bits_are_kept(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "shared.png"
    save_image(path, gradient(3))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    save_image(path, gradient(4))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_image(path).pixels.shape[2] == 4


def test_saving_through_a_symlink_keeps_the_link(tmp_path):
    (tmp_path / "real.png").write_bytes(b"old")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    save_image(tmp_path / "link.png", gradient(3))
    assert (tmp_path / "link.png").is_symlink()
    assert load_image(tmp_path / "real.png").pixels.shape == (32, 48, 3)


@pytest.mark.parametrize("name, suffix", [("x.bmp", ".bmp"), ("x.xyz", ".xyz"), ("x", "(none)")])
def test_unsupported_suffix(tmp_path, name, suffix):
    with pytest.raises(ImageSaveError) as error:
        save_image(tmp_path / name, gradient(3))
    assert str(error.value) == f"{name}: unsupported format '{suffix}': use .png, .jpg or .webp"
    assert folder_names(tmp_path) == []


@pytest.mark.parametrize("shape, dtype", [((4, 4), np.uint8), ((4, 4, 3), np.float32), ((4, 4, 2), np.uint8),
                                          ((0, 4, 3), np.uint8)])
def test_bad_arrays_are_refused(tmp_path, shape, dtype):
    with pytest.raises(ImageSaveError) as error:
        save_image(tmp_path / "x.png", np.zeros(shape, dtype))
    assert_one_line(error, "x.png", "expected H x W x 3 or 4 uint8")


def test_too_long_parameters_for_jpeg(tmp_path):
    with pytest.raises(ImageSaveError) as error:
        save_image(tmp_path / "x.jpg", gradient(3), "é" * 40_000)
    assert_one_line(error, "x.jpg", "save as .png")
    assert folder_names(tmp_path) == []


def test_non_contiguous_input_is_saved_correctly(tmp_path):
    pixels = gradient(4)[:, ::-1]
    save_image(tmp_path / "view.png", pixels)
    assert load_image(tmp_path / "view.png").pixels.tolist() == pixels.tolist()


# ------------------------------------------------------------------------------------------ killed saves

STALLING_SAVE = """
import io, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from PIL import Image
from app.core.imageio import save_image

encode = Image.Image.save

def half_then_stall(self, handle, *args, **kwargs):
    whole = io.BytesIO()
    encode(self, whole, *args, **kwargs)
    handle.write(whole.getvalue()[:len(whole.getvalue()) // 2])
    handle.flush()
    print("half written", flush=True)
    time.sleep(120)

Image.Image.save = half_then_stall
save_image({target!r}, np.full((256, 256, 3), 7, np.uint8), "new")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_save_killed_mid_write_leaves_a_named_temporary_that_the_next_save_removes(tmp_path):
    target = tmp_path / "photo.png"
    save_image(target, gradient(3), "old")
    before = target.read_bytes()
    script = STALLING_SAVE.format(root=str(ROOT), target=str(target))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "half written\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    left = [name for name in folder_names(tmp_path) if name != "photo.png"]
    assert len(left) == 1 and left[0].startswith(".photo.png.") and TEMP_TAG in left[0]
    assert TEMP_TAG == "latent-canvas-partial"
    assert (tmp_path / left[0]).stat().st_size > 0
    assert target.read_bytes() == before

    save_image(tmp_path / "other.png", gradient(4))
    assert folder_names(tmp_path) == ["other.png", "photo.png"]
    assert target.read_bytes() == before
    assert read_parameters(target) == "old"


def test_a_temporary_of_a_running_save_is_left_alone(tmp_path):
    """Our own process is alive: its temporary may be a save in progress on another thread."""
    ours = tmp_path / f".a.png.{TEMP_TAG}-{os.getpid()}-0123456789ab.tmp"
    ours.write_bytes(b"in progress")
    save_image(tmp_path / "b.png", gradient(3))
    assert ours.read_bytes() == b"in progress"


# ------------------------------------------------------------------------------------------ several files

def variants(count: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 40 * index, np.uint8) for index in range(1, count + 1)]


def test_save_images_writes_every_file(tmp_path):
    files = [(tmp_path / name, pixels, f"seed {n}")
             for n, (name, pixels) in enumerate(zip(["v.png", "v-2.jpg", "v-3.webp"], variants(3)))]
    save_images(files, quality=100)
    assert folder_names(tmp_path) == ["v-2.jpg", "v-3.webp", "v.png"]
    for path, pixels, parameters in files:
        assert np.abs(load_image(path).pixels.astype(int) - pixels).max() <= 2
        assert read_parameters(path) == parameters


def fail_on_second(monkeypatch, owner, name):
    real = getattr(owner, name)
    calls = []

    def second_fails(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            names = [str(arg) for arg in args if isinstance(arg, (str, os.PathLike))]   # os.replace's own
            raise OSError(errno.EIO, "Input/output error", *names[:1], None, *names[1:2])
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, second_fails)


@pytest.mark.parametrize("fault, problem", [
    ("encoder", "cannot write the file (Input/output error)"),
    ("rename", "cannot write the file (Input/output error)"),
    ("folder", "a folder with that name already exists"),
    ("bad array", "expected H x W x 3 or 4 uint8"),
])
def test_save_images_is_all_or_nothing(tmp_path, monkeypatch, fault, problem):
    (tmp_path / "keep.txt").write_text("a file of the user's")
    paths = [tmp_path / "v.png", tmp_path / "v-2.png", tmp_path / "v-3.png"]
    pixels = variants(3)
    if fault == "encoder":
        paths[0].write_bytes(b"an earlier result")
        fail_on_second(monkeypatch, Image.Image, "save")
    elif fault == "rename":
        fail_on_second(monkeypatch, os, "replace")
    elif fault == "folder":
        paths[1].mkdir()
    else:
        pixels[1] = np.zeros((8, 8), np.uint8)
    before = folder_names(tmp_path)
    with pytest.raises(ImageSaveError) as error:
        save_images([(path, image, "") for path, image in zip(paths, pixels)])
    assert_one_line(error, "v-2.png", problem)
    assert folder_names(tmp_path) == before
    if fault == "encoder":
        assert paths[0].read_bytes() == b"an earlier result"
