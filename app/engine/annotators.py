"""Preprocessors ("annotators") that turn an image into a ControlNet control image.

Images are numpy uint8 arrays, H x W x 3 RGB (H x W x 4 RGBA where a function says so); every control image
keeps its input's H x W. Canny, scribble, line art, tile, inpaint and normal-from-depth are plain numpy/OpenCV;
depth runs a transformers depth-estimation model the user provides, pose a VitPose model (pose_annotator.py),
each a local folder or a repo id already in the Hugging Face cache: nothing is ever downloaded, only
safetensors weights are read, no remote code runs.
Importing this module is cheap: OpenCV, torch, transformers and huggingface_hub load when first needed.
"""
from __future__ import annotations

import gc
import inspect
import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.events import EngineError, first_line

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1024 * 1024          # a config.json larger than this is no model config: skipped
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MODEL_KINDS = {"depth": "depth-estimation model", "pose": "pose-estimation model (VitPose)",
               "detector": "person detector (an object-detection model with a 'person' class)"}
DEPTH_MODEL_TYPES = frozenset({"depth_anything", "prompt_depth_anything", "dpt", "glpn", "zoedepth", "depth_pro"})
METRIC_MODEL_TYPES = frozenset({"glpn", "zoedepth", "depth_pro", "prompt_depth_anything"})
NORMAL_REFERENCE_SIDE = 512             # normal_from_depth measures slopes per 1/512 of the image's long side
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


class AnnotatorError(EngineError):
    """A preprocessor problem the user can act on; its message is one line."""


@dataclass(frozen=True)
class ControlKind:
    name: str
    made_from_image: bool     # this module can make it from the job's own pixels ...
    needs_annotator: bool     # ... and doing so needs a model: a depth-estimation one, or a pose one
    importable: bool          # the user may give the control image instead (drawn or a file)
    summary: str


KINDS: dict[str, ControlKind] = {kind.name: kind for kind in (
    ControlKind("canny", True, False, True, "edges found with OpenCV Canny (low/high thresholds)"),
    ControlKind("scribble", False, False, True, "a drawing on a control layer or an imported one: white lines"),
    ControlKind("lineart", True, False, True, "line art of the image (difference of Gaussians, OpenCV), or a "
                "drawing, grey levels kept (lineart())"),
    ControlKind("softedge", True, False, True, "soft edges of the image (blurred multi-scale gradients, OpenCV), "
                "or an imported soft-edge (HED/PiDiNet) map"),
    ControlKind("depth", True, True, True, "a depth-estimation model's depth (near = bright) or a depth image"),
    ControlKind("normal", True, True, True, "normals from the depth model's depth, or an imported normal map"),
    ControlKind("pose", True, True, True, "OpenPose skeletons of the people in the image from a pose model "
                "(VitPose, with a person detector or the whole image as one person), or an imported skeleton"),
    ControlKind("tile", True, False, True, "no preprocessor: the image itself, optionally blurred"),
    ControlKind("inpaint", True, False, False, "no preprocessor: the image with the hole marked -1"),
)}


@dataclass(frozen=True)
class AnnotatorInfo:
    repo_id: str              # "" for a local folder
    kind: str                 # a MODEL_KINDS key: "depth", "pose" or "detector"
    path: Path                # the model folder (a cache snapshot for a repo)
    size_bytes: int

    @property
    def source(self) -> str:
        """What to give DepthAnnotator.load / PoseAnnotator.load: the repo id, else the folder."""
        return self.repo_id or str(self.path)


# ---------------------------------------------------------------------------------------------- image checks

def _check_image(image, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"the {what} must be a uint8 numpy array")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"the {what} must be H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the {what} is empty ({image.shape[1]} x {image.shape[0]} px)")
    return image


def _pixels(image) -> np.ndarray:
    """The image's RGB pixels (alpha dropped, grey repeated), a contiguous copy."""
    image = _check_image(image)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3].copy()


def _imported(image) -> np.ndarray:
    """A control image the user gave, as RGB: grey repeated, RGBA composited over black (transparent = none)."""
    image = _check_image(image)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.uint16)
        return ((image[:, :, :3] * alpha + 127) // 255).astype(np.uint8)
    return _pixels(image)


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


# ------------------------------------------------------------------------------------ the plain preprocessors

def canny(rgb, low: int = 100, high: int = 200) -> np.ndarray:
    """OpenCV Canny edges of the grey image: white (255) edges on black, as the SD canny ControlNets expect."""
    import cv2

    if not 0 <= low <= high <= 1000:
        raise ValueError(f"canny thresholds must satisfy 0 <= low <= high <= 1000, got {low} and {high}")
    grey = cv2.cvtColor(_pixels(rgb), cv2.COLOR_RGB2GRAY)
    return _grey3(cv2.Canny(grey, float(low), float(high)))


def _ink(drawing) -> np.ndarray:
    """How much of a line each pixel is, 0..1 (float32 H x W).

    RGBA with any transparency (a control layer painted with a pen): the alpha, whatever the colour. Otherwise
    (an imported drawing, or a fully opaque RGBA) the dominant background is the per-channel median; a light
    page's lines are what is darker than it, a dark page's what is lighter, in whichever channel differs most
    (so coloured ink counts), scaled so the page is 0 and pure black (or white) ink is 1."""
    drawing = _check_image(drawing, "drawing")
    if drawing.ndim == 3 and drawing.shape[2] == 4 and drawing[:, :, 3].min() < 255:
        return drawing[:, :, 3].astype(np.float32) / 255.0
    rgb = _pixels(drawing).astype(np.float32)
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 1_000_000)))    # ~1 M samples are plenty
    page = np.median(rgb[::step, ::step].reshape(-1, 3), axis=0)
    if page.mean() >= 128:                     # dark lines on a light page
        ink = (page - rgb) / np.maximum(page, 1.0)
    else:                                      # light lines on a dark page
        ink = (rgb - page) / np.maximum(255.0 - page, 1.0)
    return np.clip(ink.max(axis=2), 0.0, 1.0)


def scribble(drawing) -> np.ndarray:
    """A drawing as pure white (255) lines on black (0).

    RGBA (a transparent control layer): lines are where alpha > 0. RGB (an imported drawing): the polarity
    follows the dominant background (see _ink), and the line/page split is Otsu's threshold on the ink,
    never below 1/8 of full contrast so paper grain and JPEG noise stay black."""
    import cv2

    drawing = _check_image(drawing, "drawing")
    if drawing.ndim == 3 and drawing.shape[2] == 4 and drawing[:, :, 3].min() < 255:
        return _grey3(np.where(drawing[:, :, 3] > 0, 255, 0).astype(np.uint8))
    ink = np.rint(_ink(drawing) * 255).astype(np.uint8)
    otsu, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return _grey3(np.where(ink > max(otsu, 32), 255, 0).astype(np.uint8))


def lineart(drawing) -> np.ndarray:
    """Like scribble (same polarity handling) but keeping grey levels: anti-aliased line art and soft edges
    become white-on-black with their soft edges intact."""
    return _grey3(np.rint(_ink(drawing) * 255).astype(np.uint8))


def lines_of(rgb) -> np.ndarray:
    """Line art of a photo, white lines on black: an extended difference of Gaussians (XDoG) of the grey
    image, its ink soft-thresholded, so outlines and strong texture stay and flat areas go. Not a learned
    line-art annotator: it follows edges, not an artist's choice of lines."""
    import cv2

    grey = cv2.cvtColor(_pixels(rgb)[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    scale = max(grey.shape) / 512
    fine = cv2.GaussianBlur(grey, (0, 0), 0.8 * max(scale, 0.5))
    coarse = cv2.GaussianBlur(grey, (0, 0), 1.6 * max(scale, 0.5))
    difference = fine - 0.98 * coarse            # below 0 on the dark side of every edge, about 0 on flat areas
    ink = np.clip(-np.tanh(40.0 * (difference + 0.005)), 0.0, 1.0)
    return _grey3(np.rint(ink * 255).astype(np.uint8))


def soft_edges_of(rgb) -> np.ndarray:
    """Soft edges of a photo, white on black: gradient magnitudes at three scales, summed, normalised and
    blurred, as HED/PiDiNet maps look (thick, soft, confident on outlines). Made with OpenCV, not a learned
    edge detector."""
    import cv2

    grey = cv2.cvtColor(_pixels(rgb)[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    scale = max(grey.shape) / 512
    total = np.zeros_like(grey)
    for sigma in (1.0, 2.0, 4.0):
        smooth = cv2.GaussianBlur(grey, (0, 0), sigma * max(scale, 0.5))
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        total += np.sqrt(gx * gx + gy * gy)
    peak = float(np.percentile(total, 99.5))
    if peak <= 1e-6:
        return _grey3(np.zeros(grey.shape, np.uint8))
    edges = cv2.GaussianBlur(np.clip(total / peak, 0, 1), (0, 0), 1.0 * max(scale, 0.5)) ** 0.8
    return _grey3(np.rint(np.clip(edges, 0, 1) * 255).astype(np.uint8))


def tile(rgb, blur: float = 0.0) -> np.ndarray:
    """The tile/blur control: the image itself, Gaussian-blurred with sigma `blur` px (0 = an unchanged copy)."""
    import cv2

    if not blur >= 0:
        raise ValueError(f"tile blur must be 0 or more px, got {blur}")
    pixels = _pixels(rgb)
    if blur == 0:
        return pixels
    return cv2.GaussianBlur(pixels, (0, 0), sigmaX=float(blur), sigmaY=float(blur),
                            borderType=cv2.BORDER_REFLECT_101)


def inpaint_condition(rgb, hole) -> np.ndarray:
    """control_v11p_sd15_inpaint's control image: float32 H x W x 3, pixels / 255 in [0, 1] and -1.0 in every
    channel where `hole` (uint8 H x W, >= 128 = to generate; bool accepted) is set."""
    pixels = _pixels(rgb)
    if not isinstance(hole, np.ndarray) or hole.shape[:2] != pixels.shape[:2]:
        shape = getattr(hole, "shape", None)
        raise ValueError(f"the hole must be an H x W array the image's size {pixels.shape[:2]}, got {shape}")
    if hole.ndim == 3:
        hole = hole[:, :, 0]
    hole = hole if hole.dtype == bool else hole >= 128
    condition = pixels.astype(np.float32) / 255.0
    condition[hole] = -1.0
    return condition


def normal_from_depth(depth_grey, strength: float = 1.0, background: float = 0.4) -> np.ndarray:
    """A normal map from a depth map (near = bright), the classic "normal_midas" way, uint8 H x W x 3.

    The depth's Sobel gradients (3x3) give x and y, z is the constant 2 pi, and [x, y, z] is normalised and
    mapped to 0..255 by n * 127.5 + 127.5. Pixels whose min-max normalised depth is below `background` count
    as background: x = y = 0 there (facing the camera). Gradients are measured in grey levels per 1/512 of the
    image's long side, so a picture's normals do not depend on its resolution, and multiplied by `strength`.

    Channel convention, as the control_sd15_normal ControlNet was trained (the original app flipped the
    annotator's x, y, z to BGR before feeding the model; controlnet_aux bakes the same flip in):
      R = z (towards the viewer; 255 on a flat depth),
      G = +d(depth)/dy, y down the rows: G > 128 where the depth grows downwards (a surface facing up),
      B = +d(depth)/dx, x along the columns: B > 128 where the depth grows to the right (facing left).
    A flat depth is uniformly (255, 128, 128) minus rounding: (255, 127, 127)."""
    import cv2

    depth = _check_image(depth_grey, "depth map")
    if depth.ndim == 3:
        depth = cv2.cvtColor(_pixels(depth), cv2.COLOR_RGB2GRAY)
    depth = depth.astype(np.float32)
    scale = strength * max(depth.shape) / NORMAL_REFERENCE_SIDE
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE) * scale
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE) * scale
    z = np.full_like(x, 2.0 * np.pi)
    span = float(depth.max() - depth.min())
    relative = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    x[relative < background] = 0.0
    y[relative < background] = 0.0
    normal = np.stack([z, y, x], axis=2)
    normal /= np.sqrt(np.sum(normal ** 2, axis=2, keepdims=True))
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------- depth-estimation models

def _failure(exc: BaseException, what: str, doing: str) -> AnnotatorError:
    """One line for an exception: out of memory (any torch backend) while `doing`, else `what`: its text."""
    from app.engine.diffusion.devices import is_out_of_memory

    if is_out_of_memory(exc):
        return AnnotatorError(f"out of memory {doing}: close other models, use a smaller image or the CPU")
    return AnnotatorError(f"{what}: {first_line(exc)}")


def _read_config(path: Path) -> dict | None:
    """config.json as a dict, or None when it is over MAX_CONFIG_BYTES, unreadable or no JSON object."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        config = json.loads(data) if len(data) <= MAX_CONFIG_BYTES else None
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _architectures(config: dict) -> list[str]:
    names = config.get("architectures")
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def _is_depth_config(config: dict) -> bool:
    names = _architectures(config)
    if names:
        return any(name.endswith("ForDepthEstimation") for name in names)
    return config.get("model_type") in DEPTH_MODEL_TYPES


def _is_pose_config(config: dict) -> bool:
    return config.get("model_type") == "vitpose" or "VitPoseForPoseEstimation" in _architectures(config)


def _is_person_detector(config: dict) -> bool:
    labels = config.get("id2label")
    detects = any(name.endswith("ForObjectDetection") for name in _architectures(config))
    return detects and isinstance(labels, dict) and any(str(label).strip().lower() == "person"
                                                         for label in labels.values())


def model_kind(config: dict) -> str | None:
    """Which MODEL_KINDS model a transformers config.json describes, or None."""
    for kind, test in (("depth", _is_depth_config), ("pose", _is_pose_config), ("detector", _is_person_detector)):
        if test(config):
            return kind
    return None


def check_folder(folder: Path, label: str, kind: str = "depth") -> dict:
    """The folder's config if it is a usable model folder of `kind` (MODEL_KINDS), else AnnotatorError."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise AnnotatorError(f"{label} is not a transformers model folder: it has no config.json")
    config = _read_config(config_path)
    if config is None:
        raise AnnotatorError(f"{label} has an unreadable config.json (not JSON, or over 1 MB)")
    if model_kind(config) != kind:
        names = _architectures(config)
        described = str(names[0] if names else config.get("model_type") or "no type")
        raise AnnotatorError(f"{label} is not a {MODEL_KINDS[kind]} (its config.json describes {described})")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(path.name for path in folder.iterdir() if path.suffix.lower() in PICKLE_SUFFIXES)
        if pickled:
            raise AnnotatorError(f"{label} has only pickle weights ({pickled[0]}), which are never loaded: "
                                 "convert them to model.safetensors")
        raise AnnotatorError(f"{label} has no model.safetensors weights")
    if not (folder / "preprocessor_config.json").is_file():
        raise AnnotatorError(f"{label} has no preprocessor_config.json: save the model's image processor with it")
    return config


def _local_folder(path, kind: str = "depth") -> Path:
    what = MODEL_KINDS[kind].split(" (")[0]
    folder = Path(path).expanduser()
    if not folder.exists():
        raise AnnotatorError(f"no {what} folder at {folder}")
    if not folder.is_dir():
        raise AnnotatorError(f"{folder} is a file, not a {what} folder")
    return folder.resolve()


def resolve(source: str, cache_dir=None, kind: str = "depth") -> tuple[Path, str]:
    """(model folder, label) for a local folder or a repo id in the Hugging Face cache."""
    text = str(source).strip()
    if not text:
        raise AnnotatorError(f"no {MODEL_KINDS[kind].split(' (')[0]} given: pass a model folder or a Hugging "
                             "Face repo id")
    if Path(text).expanduser().exists() or not _REPO_ID.fullmatch(text):
        return _local_folder(text, kind), text
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(text, local_files_only=True, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError) or an unusable cache entry
        raise AnnotatorError(f"{text} is not downloaded (and is no folder here): fetch it with "
                             f"`hf download {text}`") from None
    return Path(folder), text


_CACHE: OrderedDict[tuple[str, ...], object] = OrderedDict()
_CACHE_SIZE = 1
_LOCK = threading.Lock()


def cached(key: tuple[str, ...], build):
    """The annotator cached under `key` (its folders and device), else build() cached in its place: one
    annotator model is kept at a time, the old one let go before the next loads."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.popitem(last=False)
            gc.collect()
        annotator = build()
        _CACHE[key] = annotator
        return annotator


class DepthAnnotator:
    """A loaded depth-estimation model: DepthAnnotator.load(source)(rgb) -> the depth control image.

    Depth polarity: near = bright, min-max normalised to 0..255, as ControlNet depth models (trained on
    MiDaS) expect. Relative models (Depth Anything, DPT/MiDaS) predict disparity, which already is near =
    large; metric models (ZoeDepth, GLPN, Depth Pro, metric Depth Anything) predict distances, which are
    turned into disparity (1 / distance) first."""

    def __init__(self, model, processor, device: str, label: str, metric: bool) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.label = label
        self.metric = metric

    @classmethod
    def load(cls, source: str, device: str = "cpu", *, cache_dir=None) -> DepthAnnotator:
        """The model at `source` (a folder, or a repo id in the HF cache `cache_dir`, default the user's)
        on `device`, from the one-entry cache when it was the last one loaded."""
        folder, label = resolve(source, cache_dir)
        return cached(("depth", str(folder), device), lambda: cls._load(folder, label, device))

    @classmethod
    def _load(cls, folder: Path, label: str, device: str) -> DepthAnnotator:
        config = check_folder(folder, label)
        metric = (config.get("model_type") in METRIC_MODEL_TYPES
                  or config.get("depth_estimation_type") == "metric")
        from transformers import AutoModelForDepthEstimation

        processor = load_processor(folder, label)
        model = load_model(folder, label, AutoModelForDepthEstimation, device, "the depth model")
        return cls(model, processor, device, label, metric)

    def depth(self, rgb) -> np.ndarray:
        """The predicted depth, near = bright, normalised to 0..255, uint8 H x W the input's size."""
        pixels = _pixels(rgb)
        height, width = pixels.shape[:2]
        try:
            prediction = self._predict(pixels, height, width)
        except Exception as exc:  # noqa: BLE001
            raise _failure(exc, f"depth estimation with {self.label} failed",
                           f"estimating depth with {self.label} on {self.device}") from exc
        if self.metric:
            prediction = 1.0 / np.maximum(prediction, 1e-6)
        prediction = np.nan_to_num(prediction, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(prediction.min()), float(prediction.max())
        if high - low <= 1e-12:
            return np.zeros((height, width), np.uint8)
        return np.rint((prediction - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)

    def __call__(self, rgb) -> np.ndarray:
        """The depth control image: depth() as uint8 H x W x 3."""
        return _grey3(self.depth(rgb))

    def _predict(self, pixels: np.ndarray, height: int, width: int) -> np.ndarray:
        import torch

        inputs = self.processor(images=pixels, return_tensors="pt")
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        with torch.inference_mode():
            outputs = self.model(**inputs)
        post_process = getattr(self.processor, "post_process_depth_estimation", None)
        if post_process is not None:
            kwargs = {"target_sizes": [(height, width)]}
            if "source_sizes" in inspect.signature(post_process).parameters:     # ZoeDepth removes its padding
                kwargs["source_sizes"] = [(height, width)]
            depth = post_process(outputs, **kwargs)[0]["predicted_depth"]
        else:
            depth = outputs.predicted_depth
        depth = depth.float().reshape(1, 1, *depth.shape[-2:])
        if tuple(depth.shape[-2:]) != (height, width):
            depth = torch.nn.functional.interpolate(depth, size=(height, width), mode="bicubic",
                                                    align_corners=False)
        return depth[0, 0].cpu().numpy().astype(np.float64)


def load_processor(folder: Path, label: str):
    """The folder's transformers image processor; one line when it is unusable."""
    try:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure is the user's file to fix: one line
        raise AnnotatorError(f"{label} has an unusable preprocessor_config.json: {first_line(exc)}") from exc


def load_model(folder: Path, label: str, auto_class, device: str, what: str):
    """The transformers model in `folder` through `auto_class`, on `device` for inference: safetensors only,
    no remote code, weights that fit it; one line for anything else."""
    doing = f"loading {what} {label} on {device}"
    try:
        model, info = auto_class.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                 trust_remote_code=False, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001
        raise _failure(exc, f"the weights of {label} could not be loaded (damaged or incomplete file?)",
                       doing) from exc
    missing = len(info.get("missing_keys") or ())
    if missing and missing * 2 >= len(model.state_dict()):
        raise AnnotatorError(f"the weights of {label} do not fit its config.json ({missing} tensors missing)")
    if missing:
        log.warning("%s: %d tensors missing from the weights, left as initialised", label, missing)
    try:
        return model.to(device).eval().requires_grad_(False)
    except Exception as exc:  # noqa: BLE001 - no such device, a driver problem, out of memory
        raise _failure(exc, f"cannot run {what} {label} on {device}", doing) from exc


def free() -> None:
    """Drop the cached annotator model and give its memory back."""
    with _LOCK:
        devices = {key[-1] for key in _CACHE}
        _CACHE.clear()
    if devices:
        from app.engine.diffusion.devices import free_device_memory

        for device in devices:          # collects garbage, then empties the CUDA / MPS caches
            free_device_memory(device)


# --------------------------------------------------------------------------------------------- discovery

def find_annotators(cache_dir=None) -> list[AnnotatorInfo]:
    """Depth-estimation, pose-estimation and person-detection models in the local Hugging Face cache
    (`cache_dir`, default the user's), by repo id. A missing or damaged cache gives []; a damaged repo in it
    is skipped."""
    try:
        import huggingface_hub

        cache = huggingface_hub.scan_cache_dir(cache_dir)
    except Exception as exc:  # noqa: BLE001 - CacheNotFound, a file instead of a folder, unreadable
        log.info("no Hugging Face cache to search for annotator models (%s)", type(exc).__name__)
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        try:
            revision = max(repo.revisions, key=lambda rev: ("main" in rev.refs, rev.last_modified))
            config = _read_config(revision.snapshot_path / "config.json")
        except (OSError, ValueError):
            continue
        kind = None if config is None else model_kind(config)
        if kind is not None:
            found.append(AnnotatorInfo(repo.repo_id, kind, revision.snapshot_path, revision.size_on_disk))
    return sorted(found, key=lambda info: info.repo_id.lower())


def describe_annotator_folder(path, kind: str = "depth") -> AnnotatorInfo:
    """An AnnotatorInfo for a local model folder of `kind` (MODEL_KINDS); AnnotatorError (one line) if it is
    none."""
    folder = _local_folder(path, kind)
    check_folder(folder, str(path), kind)
    size = sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())
    return AnnotatorInfo("", kind, folder, size)


# ---------------------------------------------------------------------------------------------- dispatch

def make_control_image(kind: str, rgb, *, hole=None, low: int = 100, high: int = 200, blur: float = 0.0,
                       annotator=None, imported: bool = False) -> np.ndarray:
    """The control image of `kind` (see KINDS) from `rgb`, the input's size.

    `rgb` is the job's own pixels, or with imported=True a control image the user gave: depth, normal and
    pose images then pass through as RGB, canny/lineart/softedge maps are normalised by lineart(). A scribble
    is always a drawing (scribble()); lineart/softedge made from the image are lines_of() / soft_edges_of(),
    imported ones go through lineart(). `annotator` makes depth and normal (a DepthAnnotator) or pose (a
    PoseAnnotator) from the image.
    inpaint returns float32 (inpaint_condition), the rest uint8 H x W x 3."""
    if kind not in KINDS:
        raise AnnotatorError(f"unknown control kind '{kind}'; choose one of: {', '.join(KINDS)}")
    if kind == "scribble":
        return scribble(rgb)
    if kind in ("lineart", "softedge") and not imported:
        return lines_of(rgb) if kind == "lineart" else soft_edges_of(rgb)
    if kind in ("lineart", "softedge") or (kind == "canny" and imported):
        return lineart(rgb)
    if imported and kind in ("depth", "normal", "pose"):
        return _imported(rgb)
    if kind == "canny":
        return canny(rgb, low, high)
    if kind == "tile":
        return tile(rgb, blur)
    if kind == "inpaint":
        if imported:
            raise AnnotatorError("an inpaint control is made from the job itself: it takes no image")
        if hole is None:
            raise AnnotatorError("inpaint needs the hole to generate: select or mask the area first")
        return inpaint_condition(rgb, hole)
    if annotator is None:
        what = "its depth" if kind == "normal" else "it"
        model, option = ("a pose model (VitPose)", "--pose-model") if kind == "pose" else \
            ("a depth-estimation model", "--annotator")
        raise AnnotatorError(f"{kind} needs {model} to make {what}: pick one in the control's annotator "
                             f"setting or pass {option} (or give a ready-made image)")
    if kind in ("depth", "pose"):
        return annotator(rgb)
    return normal_from_depth(annotator.depth(rgb))
