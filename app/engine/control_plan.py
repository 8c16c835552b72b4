"""The control images of each pass of a job, for any backend: cropped to the pass's region and scaled to
the size the model runs at, so they follow the work region (every window of an Expand included).

A control the user made (a scribble, an imported depth or pose map) is cropped and scaled, then normalised
(lines white on black). One made from the job's own pixels is made per pass from the plan's base (the
image, or the prefilled canvas of an Expand) at the model's size: canny edges, depth from an annotator,
the image itself for tile, the image with its hole marked for inpaint. A window of an Expand reads what the
windows before it made (of the first variant, for all of them); edge kinds see no edges in the new area
not generated yet (its prefill is a guess, not structure).
"""
from __future__ import annotations

import cv2
import numpy as np

from app.engine import annotators
from app.engine.job_plan import JobPlan, Pass, resize
from app.engine.request import ControlInput, GenerationRequest

EDGE_KINDS = ("canny", "scribble", "lineart", "softedge")
NOT_FROM_THE_PREFILL = (*EDGE_KINDS, "pose")     # no edges or people from an Expand's guessed new area


def pass_control_images(request: GenerationRequest, plan: JobPlan, p: Pass, device: str = "cpu",
                        canvas: np.ndarray | None = None) -> list[np.ndarray]:
    """One control image per request.controls for pass `p`: uint8 H x W x 3 at p.size, or for inpaint
    float32 in [0, 1] with -1 where the pass generates. Kinds made from the image read `canvas` (what the
    earlier windows of an Expand made; default the plan's base)."""
    return [control_image(control, plan, p, device, canvas) for control in request.controls]


def control_image(control: ControlInput, plan: JobPlan, p: Pass, device: str = "cpu",
                  canvas: np.ndarray | None = None) -> np.ndarray:
    width, height = p.size
    if control.image is not None:
        crop = np.ascontiguousarray(control.image[p.region.slices()])
        scaled = resize(crop, (width, height))
        return annotators.make_control_image(control.kind, scaled, blur=control.blur, imported=True)
    pixels = np.ascontiguousarray(plan.pass_pixels(plan.base if canvas is None else canvas, p))
    hole = cv2.resize(p.hole, (width, height), interpolation=cv2.INTER_NEAREST)
    annotator = load_annotator(control.kind, control.annotator, control.detector, device)
    image = annotators.make_control_image(control.kind, pixels, hole=hole, low=control.low_threshold,
                                          high=control.high_threshold, blur=control.blur, annotator=annotator)
    if control.kind in NOT_FROM_THE_PREFILL and plan.known is not None:    # an Expand: its prefill is a guess
        image = np.where(hole[..., None] >= 128, np.uint8(0), image)
    return image


def load_annotator(kind: str, model: str, detector: str = "", device: str = "cpu"):
    """The model that makes a `kind` control from the image: a DepthAnnotator for depth and normal, a
    PoseAnnotator for pose, None for the rest; one line when the kind needs one and none is given."""
    if kind not in ("depth", "normal", "pose"):
        return None
    if not str(model).strip():
        needs, option, give = ("a pose model (VitPose)", "--pose-model", "a pose image") if kind == "pose" else \
            ("a depth-estimation model", "--annotator", "a depth image")
        raise annotators.AnnotatorError(f"a {kind} control made from the image needs {needs}: pick one for the "
                                        f"control layer (or pass {option}), or give {give}")
    if kind == "pose":
        from app.engine.pose_annotator import PoseAnnotator

        return PoseAnnotator.load(model, detector, device)
    return annotators.DepthAnnotator.load(model, device)
