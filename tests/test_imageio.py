import errno
import io
import itertools
import os
import stat
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from app.core import imageio
from app.core.imageio import (MAX_PIXELS, ImageLoadError, ImageSaveError, LoadedImage, load_image,
                              load_image_bytes, pixels_from_pil, read_parameters, save_image)

EXIF_IFD, USER_COMMENT, ORIENTATION = 0x8769, 0x9286, 0x0112
IS_ROOT = not hasattr(os, "geteuid") or os.geteuid() == 0


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width, height, depth, colour_type, rows: bytes, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def with_size(png: bytes, width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def load_pil(image: Image.Image, fmt: str = "PNG", **options) -> LoadedImage:
    return load_image_bytes(encoded(image, fmt, **options), f"test.{fmt.lower()}")


def s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def cmyk_to_grey_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile whose lut8 A2B0 maps any ink but K to mid grey (Lab 50, 0, 0)."""
    ramp = bytes(range(256))
    grid = b"".join(bytes([0 if k else (255 if not (c or m or y) else 128), 128, 128])
                    for c, m, y, k in itertools.product((0, 1), repeat=4))
    lut = (b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + ramp * 4 + grid + ramp * 3)
    d50 = s15(0.9642) + s15(1.0) + s15(0.8249)
    tags = [(b"A2B0", lut), (b"wtpt", b"XYZ " + bytes(4) + d50)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        body += bytes(-(offset + len(body)) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"prtrCMYKLab "
              + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


# ------------------------------------------------------------------------------------------ conversions

@pytest.mark.parametrize("values, expected", [
    ([0, 257, 32896, 65535], [0, 1, 128, 255]),
    ([1000, 128, 129, 65534], [4, 0, 1, 255]),
    ([385, 386, 32767, 32768], [1, 2, 127, 128]),
])
def test_16bit_grey_png_is_scaled_not_clipped(values, expected):
    loaded = load_pil(Image.fromarray(np.array([values], np.uint16)))
    assert loaded.pixels.shape == (1, 4, 3)
    assert loaded.pixels[0, :, 0].tolist() == expected
    assert (loaded.pixels[..., 0] == loaded.pixels[..., 2]).all()
    assert "16-bit image converted to 8-bit" in loaded.notes


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_wide_grey_modes_are_scaled(mode, dtype):
    values = np.array([0, 257, 32896, 65535], dtype)
    image = Image.frombytes(mode, (4, 1), values.tobytes())
    pixels, notes = pixels_from_pil(image)
    assert pixels[0, :, 1].tolist() == [0, 1, 128, 255]
    assert notes == ("16-bit image converted to 8-bit",)


@pytest.mark.parametrize("rgb16, rgb8", [
    ((65535, 0, 257), (255, 0, 1)),
    ((32896, 1000, 65535), (128, 4, 255)),
    ((0, 65535, 129), (0, 255, 1)),
])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_is_scaled_and_in_rgb_order(tmp_path, suffix, rgb16, rgb8):
    pixels = np.zeros((3, 5, 3), np.uint16)
    pixels[1, 2] = rgb16[::-1]  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / f"deep{suffix}"), pixels)
    loaded = load_image(tmp_path / f"deep{suffix}")
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (3, 5, 3)
    assert tuple(loaded.pixels[1, 2]) == rgb8
    assert "16-bit image converted to 8-bit" in loaded.notes


@pytest.mark.parametrize("alpha16, alpha8", [(0, 0), (1000, 4), (32896, 128), (65280, 254), (65535, 255)])
def test_16bit_rgba_png_alpha_is_scaled(tmp_path, alpha16, alpha8):
    pixels = np.full((2, 2, 4), 65535, np.uint16)
    pixels[..., 3] = alpha16
    cv2.imwrite(str(tmp_path / "deep.png"), pixels)
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.pixels.shape == (2, 2, 4)
    assert loaded.pixels[0, 0].tolist() == [255, 255, 255, alpha8]


@pytest.mark.parametrize("colour_type, values, trns, expected", [
    (4, [65535, 32896, 1000, 65280], b"", [[255, 255, 255, 128], [4, 4, 4, 254]]),
    (0, [1000, 2000], chunk(b"tRNS", struct.pack(">H", 1000)), [[4, 4, 4, 0], [8, 8, 8, 255]]),
])
def test_16bit_grey_transparency_is_kept(colour_type, values, trns, expected):
    rows = b"\0" + np.array(values, ">u2").tobytes()
    assert load_image_bytes(raw_png(2, 1, 16, colour_type, rows, trns), "g.png").pixels.tolist() == [expected]


def test_16bit_png_orientation_is_applied():
    rows = b"".join(b"\0" + np.array(row, ">u2").tobytes() for row in ([65535, 0], [0, 0]))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    loaded = load_image_bytes(raw_png(2, 2, 16, 0, rows, chunk(b"eXIf", exif.tobytes()[6:])), "o.png")
    assert loaded.pixels[..., 0].tolist() == [[0, 255], [0, 0]]


@pytest.mark.parametrize("transparent, shape", [(None, (2, 4, 3)), (1, (2, 4, 4))])
@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette(fmt, transparent, shape):
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.putdata([0, 1, 2, 1, 0, 1, 2, 2])
    options = {} if transparent is None else {"transparency": transparent}
    pixels = load_pil(image, fmt, **options).pixels
    assert pixels.shape == shape
    assert pixels[0, :3, :3].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    if transparent is not None:
        assert pixels[..., 3].tolist() == [[255, 0, 255, 0], [255, 0, 255, 255]]


@pytest.mark.parametrize("mode, value, expected", [
    ("1", 0, [0, 0, 0]),
    ("1", 1, [255, 255, 255]),
    ("L", 77, [77, 77, 77]),
    ("LA", (77, 0), [77, 77, 77, 0]),
    ("LA", (200, 90), [200, 200, 200, 90]),
    ("RGB", (1, 2, 3), [1, 2, 3]),
    ("RGBA", (1, 2, 3, 4), [1, 2, 3, 4]),
    ("RGBA", (9, 8, 7, 255), [9, 8, 7, 255]),
])
def test_simple_modes_through_png(mode, value, expected):
    pixels = load_pil(Image.new(mode, (3, 2), value)).pixels
    assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous and pixels.flags.writeable
    assert pixels.shape == (2, 3, len(expected))
    assert pixels[1, 2].tolist() == expected


@pytest.mark.parametrize("mode, value, expected", [
    ("RGBa", (100, 50, 0, 128), [199, 99, 0, 128]),
    ("La", (100, 128), [199, 199, 199, 128]),
    ("PA", None, None),
    ("HSV", (0, 255, 255), [255, 0, 0]),
    ("HSV", (85, 255, 255), [0, 255, 0]),
    ("YCbCr", (76, 85, 255), [254, 0, 0]),
    ("LAB", (136, 208, 195), [250, 3, 11]),
])
def test_other_modes(mode, value, expected):
    if mode == "PA":
        image = Image.new("P", (3, 2), 1)
        image.putpalette([0, 0, 0, 40, 50, 60] + [0] * 762)
        image = image.convert("PA")
        expected = [40, 50, 60, 255]
    else:
        image = Image.new(mode, (3, 2), value)
    pixels, _ = pixels_from_pil(image)
    assert np.abs(pixels[1, 2].astype(int) - expected).max() <= 2


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),
    ([0.0, 100.0, 255.0], [0, 100, 255]),
    ([0.0, 32896.0, 65535.0], [0, 128, 255]),
    ([-1.0, 0.0, 1.0e6], [0, 0, 255]),
    ([np.nan, 0.25, 1.0], [0, 64, 255]),
])
def test_float_images(values, expected):
    pixels, notes = pixels_from_pil(Image.fromarray(np.array([values], np.float32)))
    assert pixels[0, :, 0].tolist() == expected
    assert notes == ("floating-point image converted to 8-bit",)


CMYK_COLOURS = [
    ((0, 0, 0, 0), (255, 255, 255)),
    ((255, 0, 0, 0), (0, 255, 255)),
    ((0, 255, 255, 0), (255, 0, 0)),
    ((0, 0, 255, 0), (255, 255, 0)),
    ((0, 0, 0, 255), (0, 0, 0)),
    ((0, 0, 0, 128), (127, 127, 127)),
]


@pytest.mark.parametrize("cmyk, rgb", CMYK_COLOURS)
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_colours(fmt, cmyk, rgb):
    loaded = load_pil(Image.new("CMYK", (8, 8), cmyk), fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    assert loaded.pixels.shape == (8, 8, 3)
    assert np.abs(loaded.pixels[4, 4].astype(int) - rgb).max() <= 4
    assert loaded.notes == ("CMYK converted to RGB",)


def strip_adobe_marker(jpeg: bytes) -> bytes:
    position = 2
    while jpeg[position] == 0xFF and jpeg[position + 1] != 0xDA:
        length = struct.unpack(">H", jpeg[position + 2:position + 4])[0]
        if jpeg[position + 1] == 0xEE:
            return jpeg[:position] + jpeg[position + 2 + length:]
        position += 2 + length
    raise AssertionError("no Adobe marker")


@pytest.mark.parametrize("cmyk, rgb", CMYK_COLOURS[1:4])
def test_cmyk_jpeg_without_adobe_marker_is_not_inverted(cmyk, rgb):
    stored = tuple(255 - v for v in cmyk)  # Pillow writes inverted (Adobe) data
    data = strip_adobe_marker(encoded(Image.new("CMYK", (8, 8), stored), "JPEG", quality=100))
    loaded = load_image_bytes(data, "plain.jpg")
    assert np.abs(loaded.pixels[4, 4].astype(int) - rgb).max() <= 4


def test_cmyk_uses_embedded_profile():
    loaded = load_pil(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=100,
                      icc_profile=cmyk_to_grey_profile())
    assert np.abs(loaded.pixels[4, 4].astype(int) - 119).max() <= 6
    assert loaded.notes == ("CMYK converted to RGB using the embedded colour profile",)


@pytest.mark.parametrize("profile", [b"not a profile at all", Image.new("RGB", (1, 1)).tobytes() * 200])
def test_cmyk_with_unusable_profile_falls_back(profile):
    loaded = load_pil(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100, icc_profile=profile)
    assert np.abs(loaded.pixels[4, 4].astype(int) - (255, 0, 0)).max() <= 4
    assert loaded.notes == ("CMYK converted to RGB",)


ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation(orientation):
    stored = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    loaded = load_pil(Image.fromarray(stored), exif=exif.tobytes())
    assert loaded.pixels.tolist() == ORIENTED[orientation](stored).tolist()
    assert loaded.pixels.flags.c_contiguous


def test_jpeg_orientation_6_turns_40x20_upright():
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)
    stored[:10, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    pixels = load_pil(Image.fromarray(stored), "JPEG", quality=98, exif=exif.tobytes()).pixels
    assert pixels.shape == (40, 20, 3)
    assert np.abs(pixels[2, 17].astype(int) - (255, 0, 0)).max() <= 12
    assert np.abs(pixels[37, 17].astype(int) - (0, 0, 255)).max() <= 12
    assert np.abs(pixels[2, 2].astype(int) - (0, 0, 0)).max() <= 12


@pytest.mark.parametrize("fmt, options", [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animation_gives_first_frame_and_note(fmt, options):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
    loaded = load_image_bytes(data, "anim")
    assert loaded.pixels[0, 0, :3].tolist() == [255, 0, 0]
    assert "animated image: only the first frame was opened" in loaded.notes


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_one_pixel_images_load(mode):
    assert load_pil(Image.new(mode, (1, 1))).pixels.shape[:2] == (1, 1)


def test_camera_mpo_jpeg_is_a_plain_jpeg():
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    loaded = load_pil(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert (loaded.source_format, loaded.notes) == ("JPEG", ())
    assert np.abs(loaded.pixels[4, 4].astype(int) - (255, 0, 0)).max() <= 4


def test_16bit_falls_back_to_pillow_when_opencv_fails(monkeypatch):
    def broken(*args):
        raise cv2.error("no codec")
    monkeypatch.setattr(cv2, "imdecode", broken)
    ok, data = cv2.imencode(".png", np.full((2, 2, 3), 65535, np.uint16))
    assert load_image_bytes(data.tobytes(), "deep.png").pixels.tolist() == [[[255] * 3] * 2] * 2


# ------------------------------------------------------------------------------------------ load errors

def assert_one_line(error: pytest.ExceptionInfo, name: str, problem: str) -> None:
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{name}: ")
    assert problem in text


def photo_bytes(fmt: str) -> bytes:
    if fmt == "PNG16":
        deep = np.random.default_rng(2).integers(0, 65535, (64, 64, 3), np.uint16)
        return cv2.imencode(".png", deep)[1].tobytes()
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return encoded(Image.fromarray(noise), fmt)


@pytest.mark.parametrize("fmt, name", [("PNG", "photo.png"), ("JPEG", "photo.jpg"), ("WEBP", "photo.webp"),
                                       ("PNG16", "deep.png")])
def test_truncated_files_fail_at_load(tmp_path, fmt, name):
    data = photo_bytes(fmt)
    (tmp_path / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path / name)
    assert_one_line(error, name, "truncated or corrupt")


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"these are my notes, not a picture\n", "not an image (unrecognised format)"),
    (b"\x89PNG\r\n\x1a\n\0\0", "truncated or corrupt"),
])
def test_bad_contents(tmp_path, content, problem):
    (tmp_path / "notes.png").write_bytes(content)
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path / "notes.png")
    assert_one_line(error, "notes.png", problem)


@pytest.mark.parametrize("name, problem", [("x.png", "no such file"), ("folder.png", "is a folder")])
def test_missing_file_and_folder(tmp_path, name, problem):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path / name)
    assert_one_line(error, name, problem)


@pytest.mark.parametrize("real", [pytest.param(True, marks=pytest.mark.skipif(IS_ROOT, reason="root")),
                                  False])
def test_permission_denied(tmp_path, monkeypatch, real):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    (tmp_path / "locked.png").write_bytes(photo_bytes("PNG"))
    if real:
        (tmp_path / "locked.png").chmod(0)
    else:
        monkeypatch.setattr(imageio, "open", refuse, raising=False)
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path / "locked.png")
    assert_one_line(error, "locked.png", "permission denied")


@pytest.fixture
def no_decoding(monkeypatch):
    def forbidden(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(cv2, "imdecode", forbidden)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("width, height, text", [
    (20_000, 20_000, "20000 x 20000 is 400 megapixels"),
    (40_000, 40_000, "40000 x 40000 is 1600 megapixels"),
    (12_500, 12_500, "12500 x 12500 is 156.3 megapixels"),
    (150_001, 1_000, "150001 x 1000 is 150.1 megapixels"),
])
def test_too_large_is_refused_before_decoding(tmp_path, no_decoding, width, height, text):
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "huge.png").write_bytes(with_size(encoded(Image.new("RGB", (1, 1)), "PNG"), width, height))
    with pytest.raises(ImageLoadError) as error:
        load_image(tmp_path / "huge.png")
    assert_one_line(error, "huge.png", f"{text}; the limit is 150 megapixels")
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("warnings_are", [
    pytest.param("ignored", marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")),
    pytest.param("errors", marks=pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")),
])
@pytest.mark.parametrize("width, height", [(10_000, 10_000), (15_000, 10_000)])
def test_large_but_allowed_reaches_decoding(no_decoding, width, height, warnings_are):
    assert width * height <= MAX_PIXELS
    data = with_size(encoded(Image.new("RGB", (1, 1)), "PNG"), width, height)
    with pytest.raises(ImageLoadError) as error:
        load_image_bytes(data, "big.png")
    assert "megapixels" not in str(error.value)
    assert isinstance(error.value.__cause__, AssertionError)


# ------------------------------------------------------------------------------------------ parameters

PARAMETERS = "a lighthouse at dusk\nNegative prompt: blurry\nSteps: 25, Sampler: Euler a, CFG scale: 7"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp"])
@pytest.mark.parametrize("text", [PARAMETERS, "café – 東京 ✓", ""])
def test_parameters_round_trip(tmp_path, suffix, text):
    path = tmp_path / f"out{suffix}"
    save_image(path, np.full((8, 8, 3), 90, np.uint8), text)
    assert read_parameters(path) == text
    assert load_image(path).parameters == text
    if suffix == ".png":
        assert Image.open(path).text.get("parameters", "") == text


@pytest.mark.parametrize("suffix, text, prefix, body", [
    (".jpg", "plain", b"ASCII\0\0\0", b"plain"),
    (".jpg", "é", b"UNICODE\0", b"\0\xe9"),
    (".webp", "plain", b"ASCII\0\0\0", b"plain"),
])
def test_exif_user_comment_layout(tmp_path, suffix, text, prefix, body):
    save_image(tmp_path / f"out{suffix}", np.zeros((4, 4, 3), np.uint8), text)
    comment = Image.open(tmp_path / f"out{suffix}").getexif().get_ifd(EXIF_IFD)[USER_COMMENT]
    assert comment == prefix + body


@pytest.mark.parametrize("comment, text", [
    (b"UNICODE\0" + "Steps: 20 é".encode("utf-16-be"), "Steps: 20 é"),
    (b"UNICODE\0" + "Steps: 20 é".encode("utf-16-le"), "Steps: 20 é"),
    (b"ASCII\0\0\0Steps: 30\0", "Steps: 30"),
    (b"\0" * 8 + b"Steps: 40", "Steps: 40"),
])
def test_user_comment_written_by_other_tools(comment, text):
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    data = encoded(Image.new("RGB", (4, 4)), "JPEG", exif=exif.tobytes())
    assert load_image_bytes(data, "other.jpg").parameters == text


# ------------------------------------------------------------------------------------------ saving

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
