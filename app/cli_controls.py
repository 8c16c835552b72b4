"""The command line's guidance options: ControlNets (--control KIND[:IMAGE][:WEIGHT[:START:END]] with
--controlnet MODEL each) and IP-Adapter references (--reference IMAGE[:SCALE[:KIND]] with --ip-adapter FILE).

    --control canny                      edges of the input, weight 1, all steps
    --control depth:0.6 --annotator DIR  a depth map of the input made with a depth-estimation model
    --control pose --pose-model DIR --pose-detector DIR   the skeletons of the people in the input
    --control scribble:lines.png:0.9:0:0.8
    --controlnet lllyasviel/control_v11p_sd15_canny      one per --control, in the same order

IMAGE (a path: it may itself hold colons) is the control image as it is; omitted, the control is made from
the input (canny, lineart, softedge, depth, normal, pose, tile, inpaint). It has the input's size, or on
expand the canvas's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from app.core.geometry import Rect
from app.core.imageio import load_image
from app.editor.job_builder import fit_control_image
from app.engine.request import CONTROL_KINDS, REFERENCE_KINDS, ControlInput, ReferenceInput


class ControlUsageError(Exception):
    """A --control or --controlnet that cannot be used as written."""


def add_control_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", action="append", default=[], metavar="KIND[:IMAGE][:WEIGHT[:START:END]]",
                   help=f"guide with a ControlNet (repeatable); KIND: {'|'.join(CONTROL_KINDS)}; IMAGE omitted = "
                        "made from the input; START and END: shares of the steps (0..1)")
    p.add_argument("--controlnet", action="append", default=[], metavar="MODEL",
                   help="the ControlNet of each --control, in order: a diffusers folder, a .safetensors file "
                        "or a Hugging Face repo id")
    p.add_argument("--controlnet-config", default="", metavar="DIR",
                   help="a ControlNet config folder for single-file ControlNets of an unusual layout")
    p.add_argument("--annotator", default="", metavar="MODEL",
                   help="depth / normal controls made from the input: a transformers depth-estimation model "
                        "(a folder, or a repo id already downloaded, e.g. depth-anything/Depth-Anything-V2-Small-hf)")
    p.add_argument("--pose-model", default="", metavar="MODEL",
                   help="pose controls made from the input: a transformers VitPose model (a folder, or a repo id "
                        "already downloaded, e.g. usyd-community/vitpose-base-simple)")
    p.add_argument("--pose-detector", default="", metavar="MODEL",
                   help="the person detector of --pose-model: a transformers object-detection model with a "
                        "'person' class (e.g. PekingU/rtdetr_r50vd_coco_o365); omitted, the input is one person")
    p.add_argument("--reference", action="append", default=[], metavar="IMAGE[:SCALE[:KIND]]",
                   help="a reference image shown to the model through --ip-adapter (repeatable); SCALE 0..2 "
                        "(default 0.6); KIND: general|style|composition")
    p.add_argument("--ip-adapter", default="", metavar="FILE",
                   help="the IP-Adapter .safetensors for --reference (e.g. h94/IP-Adapter's "
                        "models/ip-adapter_sd15.safetensors)")
    p.add_argument("--image-encoder", default="", metavar="DIR",
                   help="the IP-Adapter's CLIP vision encoder folder (default: the image_encoder folder beside it)")
    p.add_argument("--canny", default="100:200", metavar="LOW:HIGH", help="the canny control's thresholds")
    p.add_argument("--tile-blur", type=float, default=0.0, metavar="PX", help="the tile control's blur")


def parse_control(text: str) -> tuple[str, str, float, float, float]:
    """(kind, image path or "", weight, start, end) of one --control value."""
    parts = text.split(":")
    kind = parts[0].strip().lower()
    if kind not in CONTROL_KINDS:
        raise ControlUsageError(f"--control {text}: unknown kind '{parts[0]}'; choose one of: "
                                f"{', '.join(CONTROL_KINDS)}")
    rest = parts[1:]
    numbers: list[float] = []
    while rest and len(numbers) < 3 and _is_number(rest[-1]):
        numbers.insert(0, float(rest.pop()))
    if len(numbers) == 2:
        raise ControlUsageError(f"--control {text}: give WEIGHT, or WEIGHT:START:END (start and end together)")
    image = ":".join(rest)
    weight, start, end = 1.0, 0.0, 1.0
    if len(numbers) == 1:
        weight = numbers[0]
    elif len(numbers) == 3:
        weight, start, end = numbers
    return kind, image, weight, start, end


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() not in ("", "nan", "inf", "-inf") and "nan" not in text.lower()


def controls_from_args(args: argparse.Namespace, image_shape: tuple[int, ...], output: Rect) -> tuple[ControlInput, ...]:
    """The ControlInputs of the command line, their images read and placed in output coordinates."""
    specs = [parse_control(text) for text in args.control]
    models = list(args.controlnet)
    if not specs and not models:
        return ()
    if len(models) != len(specs):
        raise ControlUsageError(f"give one --controlnet for each --control ({len(specs)} --control, "
                                f"{len(models)} --controlnet)")
    low, high = _thresholds(args.canny)
    controls = []
    for (kind, image_path, weight, start, end), model in zip(specs, models):
        image = None
        if image_path:
            path = Path(image_path)
            image = fit_control_image(load_image(path).pixels, image_shape, output, path.name)
        annotator = args.pose_model if kind == "pose" else args.annotator
        if not image_path and kind in ("depth", "normal", "pose") and not annotator.strip():
            needs, option = ("a pose model (VitPose)", "--pose-model") if kind == "pose" else \
                ("a depth-estimation model", "--annotator")
            raise ControlUsageError(f"--control {kind}: made from the input, it needs {needs}: pass {option} "
                                    f"MODEL, or give the {kind} image as --control {kind}:IMAGE")
        try:
            controls.append(ControlInput(kind, model, image, weight, start, end, low, high, args.tile_blur,
                                         annotator, args.controlnet_config, detector=args.pose_detector))
        except ValueError as exc:
            raise ControlUsageError(f"--control {kind}: {exc}") from None
    return tuple(controls)


def parse_reference(text: str) -> tuple[str, float, str]:
    """(image path, scale, kind) of one --reference value."""
    parts = text.split(":")
    kind = "general"
    if len(parts) > 2 and parts[-1].strip().lower() in REFERENCE_KINDS and _is_number(parts[-2]):
        kind = parts.pop().strip().lower()
    scale = 0.6
    if len(parts) > 1 and _is_number(parts[-1]):
        scale = float(parts.pop())
    return ":".join(parts), scale, kind


def references_from_args(args: argparse.Namespace) -> tuple[ReferenceInput, ...]:
    specs = [parse_reference(text) for text in args.reference]
    if specs and not args.ip_adapter.strip():
        raise ControlUsageError("--reference needs --ip-adapter (an IP-Adapter .safetensors file)")
    if args.ip_adapter.strip() and not specs:
        raise ControlUsageError("--ip-adapter needs at least one --reference image")
    references = []
    for path, scale, kind in specs:
        try:
            references.append(ReferenceInput(load_image(Path(path)).pixels, scale, kind))
        except ValueError as exc:
            raise ControlUsageError(f"--reference {path}: {exc}") from None
    return tuple(references)


def _thresholds(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise ControlUsageError(f"--canny {text}: give two whole numbers, LOW:HIGH (e.g. 100:200)") from None
    return low, high
