"""Reading and writing image files as 8-bit RGB / RGBA numpy arrays. Qt-free.

Loading accepts whatever Pillow opens and normalises it: EXIF orientation applied, palette / grey /
premultiplied / CMYK / LAB / HSV / YCbCr converted, 16-bit and float data scaled (not clipped) to 8 bits,
animations reduced to their first frame. Everything the user should know about is listed in `notes`.
Every failure is an ImageLoadError / ImageSaveError whose text is one line naming the file.

A mask file (`load_mask`) is read the same way and reduced to H x W uint8: luminance times alpha, so
white fills, grey is a partial strength and transparent pixels never fill.

Saving goes through app/core/safe_files (temporary file beside the target, fsync, os.replace; a temporary
left by a killed save is removed by the next one) and stores the generation parameters where other
diffusion tools look for them: the PNG text chunk "parameters", or the EXIF UserComment of JPEG and WebP
files. `save_images` writes several files all or nothing.
"""
from __future__ import annotations

import errno
import io
import math
import numbers
import os
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from app.core.safe_files import (AtomicBatch, FileTooLarge, NotAFile, Writer, read_bounded, real_target,
                                 write_atomically)

MAX_PIXELS = 150_000_000
MAX_FILE_BYTES = 2 << 30            # 150 megapixels of 16-bit RGBA, uncompressed, is 1.2 GB
_MASK_BAND_PIXELS = 1 << 22      # a mask is computed in bands: its uint32 temporaries stay near 16 MB each

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65_535, "WEBP": 16_383}

_USER_COMMENT = 0x9286
_UNICODE = b"UNICODE\0"
_ASCII = b"ASCII\0\0\0"
_JIS = b"JIS\0\0\0\0\0"
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\0", b"MM\0*", b"BM")

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageLoadError(Exception):
    """An image could not be opened; str() is one line naming the file."""


class ImageSaveError(Exception):
    """An image could not be written; str() is one line naming the file."""


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray                 # H x W x 3 (RGB) or 4 (RGBA), uint8, C-contiguous
    source_format: str                 # Pillow's format name: "PNG", "JPEG", "WEBP", ...
    parameters: str = ""               # generation parameters stored in the file, if any
    notes: tuple[str, ...] = ()        # conversions the user should be told about

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4


# ----------------------------------------------------------------------------------------------- load

def load_image(path: str | os.PathLike) -> LoadedImage:
    path = Path(path)
    return load_image_bytes(_read_file(path), path.name)


def load_image_bytes(data: bytes, name: str = "clipboard") -> LoadedImage:
    if not data:
        raise ImageLoadError(f"{name}: empty file")
    with _pillow_quiet():
        return _decode(data, name)


def _decode(data: bytes, name: str) -> LoadedImage:
    image = _open(data, name)
    notes: list[str] = []
    pixels = _decode_wide_colour(image, data, notes)
    loaded = pixels is None
    if loaded:
        try:
            image.load()
        except MemoryError:
            raise ImageLoadError(f"{name}: not enough memory to open a {_size_text(image.size)} image") \
                from None
        except Exception as exc:  # Pillow raises many types for damaged data
            raise _damaged(name, exc) from exc
        pixels, conversion_notes = pixels_from_pil(image)
        notes.extend(conversion_notes)
    exif = _exif(image, loaded)
    orientation = _orientation(exif)
    if orientation in _TRANSPOSE:
        pixels = _apply_orientation(pixels, orientation)
    frames = _frame_count(image)         # once: a damaged TIFF can count differently on a second try
    if image.format == "TIFF" and frames > 1:
        notes.insert(0, "multi-page image: only the first page was opened")
    elif image.format != "MPO" and frames > 1:  # MPO: a camera JPEG with extra previews
        notes.insert(0, "animated image: only the first frame was opened")
    source_format = "JPEG" if image.format == "MPO" else image.format or ""
    return LoadedImage(pixels, source_format, _parameters_from(image, exif, loaded), tuple(notes))


def read_parameters(path: str | os.PathLike) -> str:
    """The generation parameters stored in an image file ("" when it has none), without decoding pixels."""
    path = Path(path)
    data = _read_file(path)
    with _pillow_quiet():
        image = _open(data, path.name)
        return _parameters_from(image, _exif(image, loaded=False), loaded=False)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file (any mode load_image reads, oriented like it) as H x W uint8: 255 = fill, grey = that
    strength, transparent = never fill. ImageLoadError as load_image raises it."""
    return mask_from_pixels(load_image(path).pixels)


def mask_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3|4 uint8 -> H x W uint8: Rec. 601 luminance (grey v stays v), times alpha where there is one."""
    height = pixels.shape[0]
    mask = np.empty(pixels.shape[:2], np.uint8)
    rows = max(1, _MASK_BAND_PIXELS // max(1, pixels.shape[1]))
    for top in range(0, height, rows):
        band = pixels[top:top + rows].astype(np.uint32)
        grey = (band[..., 0] * 299 + band[..., 1] * 587 + band[..., 2] * 114 + 500) // 1000
        if pixels.shape[2] == 4:
            grey = (grey * band[..., 3] + 127) // 255
        mask[top:top + rows] = grey
    return mask


def pixels_from_pil(image: Image.Image) -> tuple[np.ndarray, tuple[str, ...]]:
    """A loaded Pillow image of any mode as H x W x 3|4 uint8 (C-contiguous), plus notes on conversions."""
    mode = image.mode
    notes: list[str] = []
    if mode in ("RGB", "RGBA") and "transparency" not in image.info:
        out = image
    elif mode.startswith("I") or mode == "F":
        grey, note = _grey_to_8bit(image)
        notes.append(note)
        channels = [grey] * 3
        transparent = image.info.get("transparency")
        if isinstance(transparent, int) and not isinstance(transparent, bool):
            channels.append(np.where(np.asarray(image) == transparent, 0, 255).astype(np.uint8))
        return np.ascontiguousarray(np.stack(channels, axis=-1)), tuple(notes)
    elif mode == "CMYK":
        out, note = _cmyk_to_rgb(image)
        notes.append(note)
    elif mode in ("LAB", "HSV", "YCbCr"):
        out = image.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    elif mode == "La":
        out = image.convert("LA").convert("RGBA")
    elif image.has_transparency_data:
        out = image.convert("RGBA")
    else:
        out = image.convert("RGB")
    return np.array(out, dtype=np.uint8, order="C"), tuple(notes)


def _read_file(path: Path) -> bytes:
    name = path.name or str(path)
    try:
        return read_bounded(path, MAX_FILE_BYTES)
    except FileTooLarge:
        try:
            size = f"{os.stat(path).st_size / 2**30:.1f} GB"
        except OSError:
            size = "too large"
        raise ImageLoadError(f"{name}: the file is {size}; image files of up to {MAX_FILE_BYTES >> 30} GB are "
                             "opened") from None
    except NotAFile:
        raise ImageLoadError(f"{name}: not a regular file (a pipe, a device or a socket), not an image") \
            from None
    except MemoryError:
        raise ImageLoadError(f"{name}: not enough memory to read the file") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{name}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageLoadError(f"{name}: permission denied") from None
    except OSError as exc:
        if path.is_dir():
            raise ImageLoadError(f"{name}: is a folder, not an image file") from None
        raise ImageLoadError(f"{name}: cannot read the file ({exc.strerror or exc})") from None


@contextmanager
def _pillow_quiet():
    """Pillow's warnings would be stray stderr lines beside the one-line error: it warns of damaged metadata
    it skips (UserWarning), and of images over its pixel limit, where this module applies MAX_PIXELS."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _open(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        size = _header_size(data)
        if size is None:
            raise ImageLoadError(f"{name}: the image is larger than the {MAX_PIXELS // 1_000_000} "
                                 "megapixel limit") from exc
        raise ImageLoadError(_too_large(name, size)) from exc
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise ImageLoadError(f"{name}: the file is truncated or corrupt") from None
        raise ImageLoadError(f"{name}: not an image (unrecognised format)") from None
    except Exception as exc:
        raise _damaged(name, exc) from exc
    if image.width * image.height > MAX_PIXELS:
        raise ImageLoadError(_too_large(name, image.size))
    if image.width < 1 or image.height < 1:
        raise ImageLoadError(f"{name}: the image has no pixels ({image.width} x {image.height})")
    return image


_METADATA_LIMITS = ("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK",
                    "Too much memory used in text chunks")


def _damaged(name: str, exc: Exception) -> ImageLoadError:
    """What Pillow's failure to open or decode means, in one line. Its refusal of PNG metadata that would
    inflate past its limits (a zTXt/iTXt/iCCP decompression bomb) is a ValueError like any damage."""
    if isinstance(exc, ValueError) and str(exc).startswith(_METADATA_LIMITS):
        reader = {frame.name for frame in traceback.extract_tb(exc.__traceback__)}
        what = "colour profile (PNG iCCP chunk)" if "chunk_iCCP" in reader else "metadata (PNG text chunks)"
        return ImageLoadError(f"{name}: refused: its {what} would inflate past Pillow's limit; the pixels "
                              "may be fine, so strip the metadata and open it again")
    return ImageLoadError(f"{name}: the file is truncated or corrupt")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing Pillow's bomb check (used only for the message)."""
    Image.init()
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        try:
            if accept and not accept(data[:16]):
                continue
            return factory(io.BytesIO(data), "").size
        except Exception:
            continue
    return None


def _too_large(name: str, size: tuple[int, int]) -> str:
    width, height = size
    megapixels = math.ceil(width * height / 100_000) / 10
    return (f"{name}: {width} x {height} is {megapixels:g} megapixels; "
            f"the limit is {MAX_PIXELS / 1_000_000:g} megapixels")


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]} x {size[1]}"


def _exif(image: Image.Image, loaded: bool) -> Image.Exif:
    """The image's EXIF. Pillow's PNG getexif() decodes the pixels to look past the image data, so an
    undecoded PNG only gets the eXIf chunk that precedes it."""
    try:
        if loaded or image.format != "PNG":
            return image.getexif()
        exif = Image.Exif()
        if image.info.get("exif"):
            exif.load(image.info["exif"])
        return exif
    except Exception:
        return Image.Exif()


def _orientation(exif: Image.Exif) -> int:
    try:
        return int(exif.get(ExifTags.Base.Orientation, 1))
    except (TypeError, ValueError):
        return 1


def _frame_count(image: Image.Image) -> int:
    """1, or 2 for "more than one": counting every page of a TIFF takes time quadratic in the pages."""
    try:
        return 2 if getattr(image, "is_animated", False) else 1
    except Exception:
        return 1


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Same transpositions as ImageOps.exif_transpose, applied to the final 8-bit pixels."""
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    turned = Image.fromarray(pixels, mode).transpose(_TRANSPOSE[orientation])
    return np.array(turned, dtype=np.uint8, order="C")


def _rawmode(image: Image.Image) -> str:
    if not image.tile:
        return ""
    args = image.tile[0].args
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _decode_wide_colour(image: Image.Image, data: bytes, notes: list[str]) -> np.ndarray | None:
    """16-bit colour PNG/TIFF/PPM via OpenCV: Pillow 13 opens them as 8-bit RGB(A)/LA keeping only the
    high byte of each sample. Returns None to let Pillow decode instead."""
    if image.mode not in ("RGB", "RGBA", "LA") or ";16" not in _rawmode(image):
        return None
    import cv2

    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:  # cv2.error: let Pillow decode and report
        return None
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        return None
    if decoded.shape[:2] != (image.height, image.width):
        return None
    code = cv2.COLOR_BGRA2RGBA if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
    rgb = cv2.cvtColor(decoded, code)
    notes.append("16-bit image converted to 8-bit")
    return np.ascontiguousarray(_scale_16_to_8(rgb))


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _grey_to_8bit(image: Image.Image) -> tuple[np.ndarray, str]:
    values = np.asarray(image)
    if image.mode == "F":
        floats = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(floats.min()), float(floats.max())) if floats.size else (0.0, 0.0)
        if low >= 0 and high <= 1.0:
            scaled = floats * 255
        elif low >= 0 and high <= 255:
            scaled = floats
        elif low >= 0 and high <= 65535:
            scaled = floats * 255 / 65535
        else:
            scaled = (floats - low) * 255 / ((high - low) or 1.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "floating-point image converted to 8-bit"
    ints = values.astype(np.int64)
    low, high = (int(ints.min()), int(ints.max())) if ints.size else (0, 0)
    if low >= 0 and high <= 65535:
        return _scale_16_to_8(ints), "16-bit image converted to 8-bit"
    scaled = ((ints - low) * 255 + (high - low) // 2) // max(high - low, 1)
    return scaled.astype(np.uint8), "32-bit image converted to 8-bit"


def _cmyk_to_rgb(image: Image.Image) -> tuple[Image.Image, str]:
    if image.format == "JPEG" and "adobe" not in image.info:
        # Pillow always assumes Adobe's inverted CMYK; without the Adobe marker the data is not inverted.
        image = image.point([255 - v for v in range(256)] * 4)
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                  outputMode="RGB")
            if converted is not None:
                return converted, "CMYK converted to RGB using the embedded colour profile"
        except Exception:  # a broken or mismatched profile: fall back to the plain conversion
            pass
    return image.convert("RGB"), "CMYK converted to RGB"


def _parameters_from(image: Image.Image, exif: Image.Exif, loaded: bool) -> str:
    try:
        value = image.info.get("parameters")
        if not value and loaded and image.format == "PNG":
            value = image.text.get("parameters")  # text chunks after the image data
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and value:
            return value
        comment = exif.get_ifd(ExifTags.IFD.Exif).get(_USER_COMMENT)
        return decode_user_comment(comment) if comment else ""
    except Exception:
        return ""


def decode_user_comment(raw: bytes | str) -> str:
    """The text of an EXIF UserComment: 8-byte charset prefix, then the characters."""
    if isinstance(raw, str):
        return raw.rstrip("\0")
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            text = body.decode("utf-16", "replace")
        else:
            # The spec says "byte order of the EXIF header"; A1111/piexif always write big-endian.
            # Mostly-Latin text shows its zero bytes on the even offsets when big-endian.
            even_zeros, odd_zeros = body[0::2].count(0), body[1::2].count(0)
            text = body.decode("utf-16-le" if odd_zeros > even_zeros else "utf-16-be", "replace")
    elif prefix == _ASCII:
        text = body.decode("ascii", "replace")
    elif prefix == _JIS:
        text = body.decode("shift_jis", "replace")
    else:
        text = (body if prefix == b"\0" * 8 else raw).decode("utf-8", "replace")
    return text.rstrip("\0")


def encode_user_comment(text: str) -> bytes:
    if text.isascii():
        return _ASCII + text.encode("ascii")
    return _UNICODE + text.encode("utf-16-be")


# ----------------------------------------------------------------------------------------------- save

def save_image(path: str | os.PathLike, pixels: np.ndarray, parameters: str = "", quality: int = 95) -> None:
    """Write `pixels` as `path` (PNG, JPEG or WebP by its suffix), all or nothing: on any failure the old file
    is untouched and no temporary stays. Through a symbolic link, the file it points at is replaced."""
    path = Path(path)
    write = encode_image(path, pixels, parameters, quality)
    try:
        write_atomically(path, write)
    except Exception as exc:
        raise _save_error(path, exc) from exc


def save_images(files: Iterable[tuple[str | os.PathLike, np.ndarray, str]], quality: int = 95) -> None:
    """Write several (path, pixels, parameters) all or nothing: every one is checked, then encoded into a
    temporary beside its target, and only when all are ready are they renamed into place. On a failure none
    of the targets is new and no temporary stays; the ImageSaveError names the file that failed."""
    encoded = [(Path(path), encode_image(path, pixels, parameters, quality)) for path, pixels, parameters in files]
    batch = AtomicBatch()
    for path, write in encoded:
        try:
            batch.add(path, write)
        except Exception as exc:
            raise _save_error(path, exc) from exc
    try:
        batch.commit()
    except Exception as exc:
        failed = [path for path, _ in encoded if str(real_target(path)) == getattr(exc, "filename2", None)]
        raise _save_error((failed or [encoded[0][0]])[0], exc) from exc


def encode_image(path: str | os.PathLike, pixels: np.ndarray, parameters: str = "", quality: int = 95) -> Writer:
    """Check that `pixels` can be saved as `path` (format, array, size, quality) and return the writer that
    encodes them into an open binary file. ImageSaveError, naming the file, when they cannot."""
    path = Path(path)
    name = path.name or str(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_FORMATS:
        shown = path.suffix or "(none)"
        raise ImageSaveError(f"{name}: unsupported format '{shown}': use .png, .jpg or .webp")
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise ImageSaveError(f"{name}: quality must be a whole number from 1 to 100, not {quality!r}")
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise ImageSaveError(f"{name}: cannot save an array of shape {array.shape} and type {array.dtype}; "
                             "expected H x W x 3 or 4 uint8")
    fmt = SAVE_FORMATS[suffix]
    limit = _MAX_SIDE[fmt]
    size = (array.shape[1], array.shape[0])
    if max(size) > limit:
        raise ImageSaveError(f"{name}: {_size_text(size)} is too large for {suffix} (at most {limit} "
                             "pixels on a side); save as .png")
    options = _save_options(fmt, parameters, int(quality))

    def write(handle) -> None:      # the Pillow copy of the pixels is made only now, one file at a time
        if fmt == "JPEG" and array.shape[2] == 4:
            image = Image.fromarray(_flatten_over_white(array), "RGB")
        else:
            image = Image.fromarray(np.ascontiguousarray(array), "RGBA" if array.shape[2] == 4 else "RGB")
        image.save(handle, format=fmt, **options)
    return write


def _flatten_over_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.uint32)
    rgb = rgba[..., :3].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _save_options(fmt: str, parameters: str, quality: int) -> dict:
    if fmt == "PNG":
        options: dict = {"compress_level": 6}
        if parameters:
            from PIL.PngImagePlugin import PngInfo
            info = PngInfo()
            info.add_text("parameters", parameters)
            options["pnginfo"] = info
        return options
    options = {"quality": quality}
    if fmt == "JPEG":
        options["subsampling"] = 0 if quality >= 90 else 2
    elif quality == 100:
        options = {"lossless": True, "quality": 100}
    if parameters:
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[_USER_COMMENT] = encode_user_comment(parameters)
        options["exif"] = exif.tobytes()
    return options


def _save_error(path: Path, exc: Exception) -> ImageSaveError:
    target = real_target(path)
    return ImageSaveError(f"{path.name or path}: {_save_problem(exc, target.parent, target)}")


def _save_problem(exc: Exception, folder: Path, path: Path) -> str:
    if isinstance(exc, OSError):
        code = exc.errno
        if code == errno.ENOENT and not folder.is_dir():
            return f"the folder {folder} does not exist"
        if code in (errno.EACCES, errno.EPERM):
            return f"permission denied (cannot write in {folder})"
        if code == errno.ENOSPC:
            return "the disk is full"
        if code == errno.EROFS:
            return "the disk is read-only"
        if code == errno.EISDIR or path.is_dir():
            return "a folder with that name already exists"
        if code == getattr(errno, "EDQUOT", None):
            return "the disk quota is exceeded"
        if exc.strerror:
            return f"cannot write the file ({exc.strerror})"
    if isinstance(exc, ValueError) and "EXIF data is too long" in str(exc):
        return "the generation parameters are too long for JPEG metadata; save as .png instead"
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot encode the image ({first_line})"

