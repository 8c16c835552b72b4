"""The images a training learns from: read through the editor's bounded image reader, unreadable files
skipped and counted, captions from text files beside the images, and crops to the training size (a centre
crop, or aspect-ratio buckets that keep the whole picture)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.core.imageio import ImageLoadError, load_image
from app.core.safe_files import FileTooLarge, read_bounded

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_CAPTION_BYTES = 4096
MAX_FILES = 100_000              # a folder larger than this is not a training set a desktop app reads
BUCKET_STEP = 64                 # bucket sides are multiples of this (the VAE's 8 x the UNet's 8)
BUCKET_RATIOS = (1.0, 4 / 3, 3 / 2, 16 / 9, 2.0)


class DatasetError(Exception):
    """The images cannot make a training set; str() is one line."""


@dataclass(frozen=True)
class TrainingImage:
    name: str
    pixels: np.ndarray              # H x W x 3 uint8 (alpha flattened over white)
    caption: str = ""
    label: str = ""                 # the sub-folder it came from (class-conditioned training)


@dataclass
class TrainingImages:
    images: list[TrainingImage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (file name, why), one line each

    def summary(self) -> str:
        text = f"{len(self.images)} image{'s' if len(self.images) != 1 else ''}"
        if self.skipped:
            name, why = self.skipped[0]
            more = f" and {len(self.skipped) - 1} more" if len(self.skipped) > 1 else ""
            text += f"; {len(self.skipped)} skipped as unreadable ({why}{more})"
        return text

    @property
    def labels(self) -> list[str]:
        return sorted({image.label for image in self.images})


def image_files(paths: list[str | os.PathLike], labelled: bool = False) -> list[tuple[Path, str]]:
    """The image files named, or found in the folders named (with their sub-folders when `labelled`, each
    sub-folder's name as the label), in a stable order. Files of other kinds in a folder are passed over;
    a file named explicitly is kept whatever its suffix (it is then read, or skipped as unreadable)."""
    found: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            if labelled:
                for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    found += [(file, sub.name) for file in _images_in(sub)]
            found += [(file, "") for file in _images_in(path)]
        elif path.exists():
            found.append((path, ""))
        else:
            raise DatasetError(f"{path}: no such file or folder")
        if len(found) > MAX_FILES:
            raise DatasetError(f"over {MAX_FILES} images: choose a smaller folder")
    return found


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def read_images(paths: list[str | os.PathLike], captions: str | os.PathLike | None = None, labelled: bool = False,
                at_most: int | None = None) -> TrainingImages:
    """Every readable image of `paths` with its caption: NAME.txt in `captions` if given, else beside the
    image, else "". Unreadable images are skipped and listed; `at_most` refuses a larger set."""
    files = image_files(paths, labelled)
    if at_most is not None and len(files) > at_most:
        raise DatasetError(f"{len(files)} images given; a style learns from at most {at_most}")
    result = TrainingImages()
    for path, label in files:
        try:
            pixels = _rgb(load_image(path).pixels)
        except (ImageLoadError, OSError) as exc:
            result.skipped.append((path.name, str(exc).removeprefix(f"{path.name}: ")))
            continue
        result.images.append(TrainingImage(path.name, pixels, read_caption(path, captions), label))
    return result


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] == 3:
        return pixels
    alpha = pixels[..., 3:].astype(np.float32) / 255.0
    return np.round(pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def read_caption(image: Path, folder: str | os.PathLike | None = None) -> str:
    """The caption of `image`: the text of NAME.txt (in `folder`, or beside the image), whitespace
    collapsed; "" when there is none or it is not readable UTF-8 text."""
    place = Path(folder).expanduser() / f"{image.stem}.txt" if folder else image.with_suffix(".txt")
    try:
        text = read_bounded(place, MAX_CAPTION_BYTES).decode("utf-8")
    except (FileNotFoundError, FileTooLarge, UnicodeDecodeError, OSError):
        return ""
    return " ".join(text.replace("\0", " ").split())


def with_trigger(caption: str, trigger: str) -> str:
    """The caption a style trains on: the trigger word first (once), then the image's own caption."""
    trigger = trigger.strip()
    if not trigger or caption.casefold().startswith(trigger.casefold()):
        return caption or trigger
    return f"{trigger}, {caption}" if caption else trigger


def centre_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """`pixels` scaled so its shorter side is `size`, then its centre `size` x `size` square."""
    return cover(pixels, size, size)


def cover(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`pixels` scaled to cover width x height (keeping its aspect ratio), centre-cropped to it."""
    h, w = pixels.shape[:2]
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return np.ascontiguousarray(resized[top:top + height, left:left + width])


def buckets(size: int) -> list[tuple[int, int]]:
    """Training shapes (width, height) of about size x size pixels, sides multiples of BUCKET_STEP, for
    square, landscape and portrait pictures."""
    shapes = []
    for ratio in BUCKET_RATIOS:
        width = max(BUCKET_STEP, round(size * ratio ** 0.5 / BUCKET_STEP) * BUCKET_STEP)
        height = max(BUCKET_STEP, round(size / ratio ** 0.5 / BUCKET_STEP) * BUCKET_STEP)
        shapes += [(width, height), (height, width)]
    return sorted(set(shapes))


def bucket_for(width: int, height: int, size: int) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the picture's (compared as log ratios)."""
    ratio = np.log(width / height)
    return min(buckets(size), key=lambda shape: (abs(np.log(shape[0] / shape[1]) - ratio), shape))


def to_tensor(pixels: np.ndarray):
    """H x W x 3 uint8 -> a 3 x H x W float32 torch tensor in [-1, 1], as the VAE takes it."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 127.5 - 1.0
