"""What a model learns from: the training images, cropped to its size once, with their captions and
classes; and the masks its inpainting UNet learns to fill.

Classes are the sub-folders of the image folder (their names are the labels); images directly in the
folder belong to a class named after the folder itself, so a flat folder is one class.

Masks are brush strokes, outpaint bands at the image's edges, boxes, and now and then the whole image (so
the model also generates from nothing, as Expand and a full Fill ask). A mask is 1 where the model
generates. The UNet gets it per latent cell, a cell being "generate" if any of its pixels is, and the
masked image is greyed over exactly those cells: the engine's Fill builds its 9-channel input the same way
(app/engine/diffusion/engine.py), so training and use agree.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from app.training.dataset import TrainingImages, centre_crop
from app.training.runs import TrainingError

MAX_LABEL = 100
MAX_CLASSES = 9_999          # the editor's bound on a UNet's class embeddings is 10,000, one of them unconditional
MASK_KINDS = (("strokes", 0.45), ("bands", 0.25), ("box", 0.2), ("everything", 0.1))


@dataclass
class ModelData:
    pixels: torch.Tensor              # (N, 3, H, W) uint8
    names: list[str]
    captions: list[str]
    classes: torch.Tensor             # (N,) int64, indices into labels
    labels: list[str]

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def resolution(self) -> int:
        return int(self.pixels.shape[-1])

    def fingerprint(self) -> str:
        """What the images and their captions and labels are, in a few bytes (a resume must train on these)."""
        digest = hashlib.sha256()
        for name, caption, label in zip(self.names, self.captions, self.classes.tolist()):
            digest.update(f"{name}\0{caption}\0{label}\n".encode("utf-8"))
        return digest.hexdigest()[:32]

    def pick(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """`size` image indices: distinct ones while the set has enough."""
        if size <= self.count:
            return torch.randperm(self.count, generator=generator)[:size]
        return torch.randint(self.count, (size,), generator=generator)

    def images(self, indices: torch.Tensor, generator: torch.Generator | None, device) -> torch.Tensor:
        """The images at `indices` as floats in [-1, 1] on `device`; each flipped left to right by a coin
        toss of `generator` (None: as they are)."""
        batch = self.pixels[indices].float() / 127.5 - 1.0
        if generator is not None:
            flip = torch.rand(len(indices), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return batch.to(device)


def prepare_data(images: TrainingImages, folder: Path, resolution: int, classes: bool = True) -> ModelData:
    """Crop every image to resolution x resolution (centre crops) and number the classes (whose labels are
    checked when the model is to be class-conditioned)."""
    own = folder.expanduser().resolve().name or "images"
    labels_of = [image.label or own for image in images.images]
    labels = sorted(set(labels_of), key=lambda label: (label.casefold(), label))
    if classes:
        check_labels(labels)
    index = {label: number for number, label in enumerate(labels)}
    pixels = np.stack([centre_crop(image.pixels, resolution) for image in images.images])
    return ModelData(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                     [image.name if not image.label else f"{image.label}/{image.name}" for image in images.images],
                     [image.caption for image in images.images],
                     torch.tensor([index[label] for label in labels_of], dtype=torch.int64), labels)


def check_labels(labels: list[str]) -> None:
    """Labels a prompt can pick in the editor: one line each, distinct whatever their case."""
    if len(labels) > MAX_CLASSES:
        raise TrainingError(f"{len(labels)} classes (sub-folders): a model takes at most {MAX_CLASSES}")
    seen: dict[str, str] = {}
    for label in labels:
        if len(label) > MAX_LABEL or any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in label):
            raise TrainingError(f"the sub-folder name {label[:40]!r} cannot be a class label (at most "
                                f"{MAX_LABEL} characters on one line)")
        key = " ".join(label.casefold().split())
        if key in seen:
            raise TrainingError(f"the sub-folders {seen[key]!r} and {label!r} differ only in case or spaces; a "
                                "prompt could not tell them apart")
        seen[key] = label


# -- masks ----------------------------------------------------------------------------------------------

def random_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size float32 mask of one of MASK_KINDS, drawn from `rng`."""
    kind = rng.choice([name for name, _ in MASK_KINDS], p=[share for _, share in MASK_KINDS])
    if kind == "strokes":
        return brush_strokes(size, rng)
    if kind == "bands":
        return outpaint_bands(size, rng)
    if kind == "box":
        return box(size, rng)
    return np.ones((size, size), np.float32)


def brush_strokes(size: int, rng: np.random.Generator) -> np.ndarray:
    """One to four strokes of a round brush, each a polyline of two to six segments."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        width = max(1, int(size * rng.uniform(0.04, 0.16)))
        point = rng.uniform(0, size, 2)
        for _ in range(int(rng.integers(2, 7))):
            angle = rng.uniform(0, 2 * np.pi)
            length = size * rng.uniform(0.1, 0.4)
            end = np.clip(point + length * np.array([np.cos(angle), np.sin(angle)]), 0, size - 1)
            cv2.line(mask, _xy(point), _xy(end), 1, width, cv2.LINE_8)
            cv2.circle(mask, _xy(end), width // 2, 1, -1)
            point = end
    return mask.astype(np.float32)


def outpaint_bands(size: int, rng: np.random.Generator) -> np.ndarray:
    """A band along one or more of the image's edges, as Expand asks the model to fill."""
    mask = np.zeros((size, size), np.float32)
    edges = [edge for edge in range(4) if rng.random() < 0.4] or [int(rng.integers(0, 4))]
    for edge in edges:
        band = max(1, int(size * rng.uniform(0.1, 0.5)))
        if edge == 0:
            mask[:band] = 1
        elif edge == 1:
            mask[-band:] = 1
        elif edge == 2:
            mask[:, :band] = 1
        else:
            mask[:, -band:] = 1
    return mask


def box(size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    width, height = (int(size * rng.uniform(0.2, 0.7)) for _ in range(2))
    left, top = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    mask[top:top + height, left:left + width] = 1
    return mask


def _xy(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0])), int(round(point[1]))


def inpaint_inputs(images: torch.Tensor, masks: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cells, masked images): `masks` (B, 1, H, W) per latent cell of `factor` pixels (1 if any pixel of
    the cell is), and `images` (B, 3, H, W in [-1, 1]) with those cells grey (0)."""
    cells = torch.nn.functional.max_pool2d(masks, factor)
    hole = torch.nn.functional.interpolate(cells, scale_factor=factor, mode="nearest")
    return cells, images * (1 - hole)


def sample_mask(size: int) -> np.ndarray:
    """The fixed mask of the training's samples: a centre box and a band along the right edge."""
    mask = np.zeros((size, size), np.float32)
    mask[size // 4:size * 5 // 8, size // 4:size * 5 // 8] = 1
    mask[:, size * 7 // 8:] = 1
    return mask
