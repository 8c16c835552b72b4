import errno
import io
import itertools
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from app.core import imageio
from app.core.imageio import (MAX_PIXELS, ImageLoadError, LoadedImage, load_image, load_image_bytes, load_mask,
                              mask_from_pixels, pixels_from_pil, read_parameters, save_image)
from tests.fuzzing import bounded

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
        monkeypatch.setattr(imageio, "read_bounded", refuse)
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


def tiff_with_a_tag_past_its_end(pixels: bytes = b"\x10\xf0") -> bytes:
    """A 2 x 1 grey TIFF whose ImageDescription claims 100 kB beyond the end of the file."""
    entries = [(256, 3, 1, 2), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (270, 2, 100_000, 0x10000), (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 2)]
    strip = 8 + 2 + 12 * len(entries) + 4
    ifd = b"".join(struct.pack("<HHII" if kind == 4 or count > 1 else "<HHIH2x", tag, kind, count,
                               strip if tag == 273 else value) for tag, kind, count, value in entries)
    return b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + bytes(4) + pixels


def test_pillow_warnings_about_damaged_metadata_stay_quiet():
    """They would be stray lines on the command line's stderr; the pixels still load or fail in one line."""
    exif = b"II*\0\x08\0\0\0\x05\0" + bytes(10)        # an IFD of 5 entries cut off after the first
    png = raw_png(1, 1, 8, 0, b"\0\x80", chunk(b"eXIf", exif))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image_bytes(tiff_with_a_tag_past_its_end(), "t.tif").pixels[..., 0].tolist() == [[16, 240]]
        assert load_image_bytes(png, "e.png").pixels.tolist() == [[[128, 128, 128]]]
        with pytest.raises(ImageLoadError) as error:
            load_image_bytes(tiff_with_a_tag_past_its_end(pixels=b""), "cut.tif")
        with pytest.raises(ImageLoadError):
            load_image_bytes(with_size(encoded(Image.new("RGB", (1, 1)), "PNG"), 10_000, 10_000), "big.png")
    assert_one_line(error, "cut.tif", "truncated or corrupt")
    assert [str(warning.message) for warning in caught] == []


def inflating_to(megabytes: int) -> bytes:
    """A zlib stream of a few hundred KB that inflates to `megabytes` MB of zeros."""
    packer = zlib.compressobj(9)
    return b"".join(packer.compress(bytes(1 << 20)) for _ in range(megabytes)) + packer.flush()


def png_with_chunks(before_pixels: bytes = b"", after_pixels: bytes = b"", deep: bool = False) -> bytes:
    png = photo_bytes("PNG16" if deep else "PNG")
    first_idat, end = png.find(b"IDAT") - 4, png.rfind(b"IEND") - 4
    return png[:first_idat] + before_pixels + png[first_idat:end] + after_pixels + png[end:]


INFLATES_TO_200_MB = inflating_to(200)
TEXT_BOMB = chunk(b"zTXt", b"Comment\0\0" + INFLATES_TO_200_MB)
SMALL_TEXTS = b"".join(chunk(b"zTXt", b"note%d\0\0" % n + zlib.compress(bytes(1_000_000), 9)) for n in range(70))
METADATA_REFUSED = "refused: its metadata (PNG text chunks) would inflate past Pillow's limit; the pixels may be fine"


@pytest.mark.parametrize("case, data, problem, megabytes", [pytest.param(*row, id=row[0]) for row in [
    ("zTXt of 200 MB before the pixels", lambda: png_with_chunks(TEXT_BOMB), METADATA_REFUSED, 16),
    ("zTXt of 200 MB after the pixels", lambda: png_with_chunks(after_pixels=TEXT_BOMB), METADATA_REFUSED, 16),
    ("iTXt of 200 MB", lambda: png_with_chunks(chunk(b"iTXt", b"Comment\0\1\0\0\0" + INFLATES_TO_200_MB)),
     METADATA_REFUSED, 16),
    ("70 zTXt of 1 MB each", lambda: png_with_chunks(SMALL_TEXTS), METADATA_REFUSED, 80),   # Pillow keeps 64 MB
    ("16-bit PNG, zTXt before the pixels", lambda: png_with_chunks(TEXT_BOMB, deep=True), METADATA_REFUSED, 16),
    ("iCCP of 200 MB", lambda: png_with_chunks(chunk(b"iCCP", b"icc\0\0" + INFLATES_TO_200_MB)),
     "refused: its colour profile (PNG iCCP chunk) would inflate past Pillow's limit", 16),
]])
def test_png_metadata_that_would_inflate_past_the_limit_is_refused_as_such(tmp_path, case, data, problem,
                                                                          megabytes):
    (tmp_path / "photo.png").write_bytes(data())
    with bounded(seconds=2.0, megabytes=megabytes):
        with pytest.raises(ImageLoadError) as error:
            load_image(tmp_path / "photo.png")
    assert_one_line(error, "photo.png", problem)
    assert "truncated or corrupt" not in str(error.value)


def test_16bit_png_with_text_bomb_after_its_pixels_opens():
    """OpenCV decodes it and Pillow never reads past the pixels: the bomb is never inflated."""
    loaded = load_image_bytes(png_with_chunks(after_pixels=TEXT_BOMB, deep=True), "deep.png")
    assert loaded.pixels.shape == (64, 64, 3) and loaded.parameters == ""


# ------------------------------------------------------------------------------------------ masks

def mask_file(mode: str, values: list) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.array([values], np.uint16))
    image = Image.new(mode, (len(values), 1))
    if mode == "P":
        image.putpalette([255, 255, 255, 100, 100, 100, 0, 0, 0, 255, 255, 255] + [0] * 756)
    image.putdata(values)
    return image


MASK_FILES = [
    # mode, pixels written, file format and options, mask read (255 = fill)
    ("L", [0, 1, 66, 128, 131, 197, 254, 255], "PNG", {}, [0, 1, 66, 128, 131, 197, 254, 255]),
    ("LA", [(255, 255), (255, 128), (255, 0), (100, 255), (200, 51), (0, 255)], "PNG", {},
     [255, 128, 0, 100, 40, 0]),
    ("RGB", [(255, 255, 255), (0, 0, 0), (131, 131, 131), (255, 0, 0), (0, 255, 0), (0, 0, 255), (66, 66, 66)],
     "PNG", {}, [255, 0, 131, 76, 150, 29, 66]),
    ("RGBA", [(255, 255, 255, 255), (255, 255, 255, 0), (255, 255, 255, 128), (128, 128, 128, 255),
              (255, 0, 0, 255), (200, 200, 200, 51)], "PNG", {}, [255, 0, 128, 128, 76, 40]),
    ("P", [0, 1, 2, 3], "PNG", {}, [255, 100, 0, 255]),
    ("P", [0, 1, 2, 3], "PNG", {"transparency": b"\xff\xff\xff\x80"}, [255, 100, 0, 128]),
    ("P", [0, 1, 2, 3], "GIF", {"transparency": 3}, [255, 100, 0, 0]),
    ("1", [0, 255, 255, 0], "PNG", {}, [0, 255, 255, 0]),
    ("I;16", [0, 257, 32896, 33667, 65535], "PNG", {}, [0, 1, 128, 131, 255]),
]


@pytest.mark.parametrize("mode, values, fmt, options, expected", MASK_FILES,
                         ids=[f"{row[0]}-{row[2]}-{'transparent' if row[3] else 'opaque'}" for row in MASK_FILES])
def test_mask_files_read_as_luminance_times_alpha(tmp_path, mode, values, fmt, options, expected):
    path = tmp_path / f"mask.{fmt.lower()}"
    mask_file(mode, values).save(path, fmt, **options)
    assert Image.open(path).mode == mode
    mask = load_mask(path)
    assert mask.dtype == np.uint8 and mask.shape == (1, len(values)) and mask.flags.c_contiguous
    assert mask[0].tolist() == expected


def test_a_mask_larger_than_one_band_is_read_whole(monkeypatch):
    monkeypatch.setattr(imageio, "_MASK_BAND_PIXELS", 64)
    pixels = np.random.default_rng(3).integers(0, 256, (37, 10, 4), dtype=np.uint8)
    wide = pixels.astype(np.uint64)
    grey = (wide[..., 0] * 299 + wide[..., 1] * 587 + wide[..., 2] * 114 + 500) // 1000
    assert np.array_equal(mask_from_pixels(pixels), (grey * wide[..., 3] + 127) // 255)


def test_a_bad_mask_file_is_one_line(tmp_path):
    (tmp_path / "mask.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(ImageLoadError) as error:
        load_mask(tmp_path / "mask.png")
    assert_one_line(error, "mask.png", "truncated or corrupt")


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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_pipe_a_device_or_a_huge_file_named_like_an_image_is_one_line_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with open(tmp_path / "huge.png", "wb") as handle:
        handle.truncate(20 << 30)                     # sparse: 20 GB that take no disk
    for path, problem in ((tmp_path / "pipe.png", "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                          (tmp_path / "huge.png", "the file is 20.0 GB; image files of up to 2 GB are opened")):
        for reader in (load_image, imageio.load_mask):
            start = time.perf_counter()
            with pytest.raises(ImageLoadError) as error:
                reader(path)
            assert_one_line(error, path.name, problem)
            assert time.perf_counter() - start < 1


def test_a_tiff_of_many_pages_opens_its_first_page_quickly(tmp_path):
    """Counting pages takes time quadratic in their number (20,000 took 4 s, 100,000 83 s)."""
    count, entries = 20_000, ((256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
                              (277, 3, 1), (278, 3, 1), (279, 4, 1))       # 1x1 grey pages sharing one strip
    size = 2 + 12 * len(entries) + 4
    data = bytearray(b"II*\0" + struct.pack("<I", 12) + b"\x80\0\0\0")
    for page in range(count):
        data += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            data += struct.pack("<HHI", tag, kind, 1) + struct.pack("<I" if kind == 4 else "<H2x", value)
        data += struct.pack("<I", 12 + (page + 1) * size if page < count - 1 else 0)
    (tmp_path / "pages.tif").write_bytes(bytes(data))
    start = time.perf_counter()
    loaded = load_image(tmp_path / "pages.tif")
    assert time.perf_counter() - start < 1
    assert loaded.pixels.shape == (1, 1, 3) and loaded.notes[0] == "multi-page image: only the first page was opened"
