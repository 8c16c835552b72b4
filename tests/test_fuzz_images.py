"""Fuzzing the image and mask readers (app/core/imageio.py: load_image, load_mask) with Hypothesis.

Each example is a small valid image (many modes, six formats) with its bytes mutated (bits flipped, cut
short, bytes inserted, spans or PNG chunks duplicated or dropped), or plain random bytes. Whatever it is, the
reader answers within bounded time and memory, without a warning, with either a well-formed result or an
ImageLoadError of one line naming the file, and the file is left byte for byte as it was, with nothing written
beside it.
"""
from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from app.core.imageio import MAX_PIXELS, ImageLoadError, LoadedImage, load_image, load_mask
from tests.fuzzing import bounded

MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\0", b"MM\0*", b"RIFF\0\0\0\0WEBP"]


def encode(mode: str, fmt: str, width: int, height: int, seed: int) -> bytes:
    """A valid file: the image in `mode` where the format can store it, else converted to RGB."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        image = Image.fromarray(rng.integers(0, 256, (height, width, bands), dtype=np.uint8).squeeze(-1)
                                if bands == 1 else rng.integers(0, 256, (height, width, bands), dtype=np.uint8),
                                "L" if bands == 1 else None)
        image = image.convert(mode) if image.mode != mode else image
    for candidate in (image, image.convert("RGB")):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, format=fmt)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise AssertionError(f"{fmt} cannot store RGB")


def png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each whole chunk after the PNG signature."""
    spans, position = [], 8
    while position + 12 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        end = position + 12 + length
        if end > len(data):
            break
        spans.append((position, end))
        position = end
    return spans


@st.composite
def mutation(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "drop", "chunk"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "flip" and data:
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    length = draw(st.integers(1, 64))
    if kind == "duplicate":
        return data[:at + length] + data[at:at + length] + data[at + length:]
    if kind == "drop":
        return data[:at] + data[at + length:]
    spans = png_chunks(data) if data.startswith(b"\x89PNG") else []
    if not spans:
        return data[:at] + data[at:at + length] * 2 + data[at + length:]
    start, end = spans[draw(st.integers(0, len(spans) - 1))]
    return data[:end] + data[start:end] * draw(st.integers(1, 3)) + data[end:]


@st.composite
def damaged_images(draw) -> tuple[bytes, str]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    data = encode(draw(st.sampled_from(MODES)), fmt, draw(st.integers(1, 12)), draw(st.integers(1, 12)),
                  draw(st.integers(0, 2**16)))
    for _ in range(draw(st.integers(0, 3))):
        data = draw(mutation(data))
    return data, FORMATS[fmt]


@st.composite
def random_files(draw) -> tuple[bytes, str]:
    data = draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=512))
    return data, draw(st.sampled_from(sorted(FORMATS.values())))


FILES = st.one_of(damaged_images(), damaged_images(), random_files())


def claimed_pixels(data: bytes) -> int:
    """The pixels the header asks for (a 40-byte GIF may claim a 9995 x 3629 canvas, and it is a valid GIF)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except Exception:      # unreadable, or over Pillow's own limit: refused before any pixel
            return 0
    return width * height if width * height <= MAX_PIXELS else 0


def read_fuzzed(read, data: bytes, suffix: str):
    """read(path) of a file holding `data`: its result, or the ImageLoadError's one line. Memory and time may
    follow the pixels the file claims (up to MAX_PIXELS, the decompression-bomb limit), and nothing else."""
    pixels = claimed_pixels(data)
    limits = dict(seconds=2.0 + pixels * 50e-9, megabytes=64.0 + pixels * 12 / 2**20)
    with tempfile.TemporaryDirectory(prefix="latent-canvas-fuzz-") as folder:
        path = Path(folder) / f"fuzzed{suffix}"
        path.write_bytes(data)
        with warnings.catch_warnings(record=True) as caught, bounded(**limits):
            warnings.simplefilter("always")
            try:
                result = read(path)
            except ImageLoadError as exc:
                result = str(exc)
        assert [str(warning.message) for warning in caught] == []      # no stray lines on stderr
        assert path.read_bytes() == data
        assert os.listdir(folder) == [path.name]
    if isinstance(result, str):
        assert result.startswith(f"{path.name}: ") and "\n" not in result and len(result) < 300, result
    return result


@given(FILES)
def test_the_image_reader_answers_every_file(case):
    result = read_fuzzed(load_image, *case)
    if isinstance(result, str):
        return
    assert isinstance(result, LoadedImage)
    pixels = result.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= 1 and pixels.shape[1] >= 1 and pixels.flags.c_contiguous
    assert isinstance(result.parameters, str) and isinstance(result.source_format, str)
    assert all(isinstance(note, str) and "\n" not in note for note in result.notes)


@given(FILES)
def test_the_mask_reader_answers_every_file(case):
    result = read_fuzzed(load_mask, *case)
    if isinstance(result, str):
        return
    assert isinstance(result, np.ndarray) and result.dtype == np.uint8 and result.ndim == 2
    assert result.shape[0] >= 1 and result.shape[1] >= 1 and result.flags.c_contiguous
