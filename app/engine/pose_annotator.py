"""Pose control images: the people in an image, their body keypoints and the skeleton a pose ControlNet reads.

People are found by a person detector (any transformers object-detection model with a "person" class, e.g.
RT-DETR), or without one the whole image is taken as one person. A VitPose model (transformers
VitPoseForPoseEstimation) estimates each person's 17 COCO keypoints, which are drawn as the OpenPose body
skeleton the SD pose ControlNets were trained on: 18 points (COCO's 17 and a neck between the shoulders),
limbs as ellipses at 60 % of their colour and joints as discs, in OpenPose's fixed colours on black.
Models load as annotators.py loads a depth model: a folder or a repo id in the HF cache, safetensors only.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.annotators import (
    AnnotatorError,
    _failure,
    _pixels,
    cached,
    check_folder,
    load_model,
    load_processor,
    resolve,
)

log = logging.getLogger(__name__)

KEYPOINT_SCORE = 0.3         # a keypoint VitPose is less sure of is left out (OpenPose's own threshold)
PERSON_SCORE = 0.5           # a detection less sure than this is nobody
OVERLAP = 0.5                # detections overlapping more than this (IoU) are one person
MAX_PEOPLE = 20
STICK_PER_512 = 4            # limb half-width and joint radius in px per 512 px of the long side

# OpenPose's 18 body points in COCO's 17; -1 is the neck, the midpoint of the shoulders (COCO 5 and 6).
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


@dataclass(frozen=True)
class Person:
    keypoints: np.ndarray     # 17 x 2 float, COCO order, image pixels (x, y)
    scores: np.ndarray        # 17 float, VitPose's confidence per keypoint


def openpose_points(person: Person, threshold: float = KEYPOINT_SCORE) -> tuple[np.ndarray, np.ndarray]:
    """(18 x 2 points, 18 bools: found) in OpenPose's order; the neck is found when both shoulders are."""
    keypoints = np.asarray(person.keypoints, np.float64).reshape(17, 2)
    found = np.asarray(person.scores, np.float64).reshape(17) >= threshold
    points = np.zeros((18, 2))
    valid = np.zeros(18, bool)
    for index, coco in enumerate(OPENPOSE_FROM_COCO):
        if coco >= 0:
            points[index], valid[index] = keypoints[coco], found[coco]
        elif found[5] and found[6]:
            points[index], valid[index] = (keypoints[5] + keypoints[6]) / 2, True
    valid &= np.isfinite(points).all(axis=1)
    return points, valid


def draw_pose(people: list[Person], height: int, width: int) -> np.ndarray:
    """The OpenPose skeletons of `people`, uint8 H x W x 3 (black where nobody is)."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(1, round(STICK_PER_512 * max(height, width) / 512))
    skeletons = [openpose_points(person) for person in people]
    for points, valid in skeletons:
        for index, (a, b) in enumerate(LIMBS):
            if not (valid[a] and valid[b]):
                continue
            (x0, y0), (x1, y1) = points[a], points[b]
            centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
            half_length = int(round(math.hypot(x1 - x0, y1 - y0) / 2))
            angle = int(round(math.degrees(math.atan2(y1 - y0, x1 - x0))))
            polygon = cv2.ellipse2Poly(centre, (half_length, stick), angle, 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in COLOURS[index]])
    for points, valid in skeletons:
        for index in np.flatnonzero(valid):
            x, y = points[index]
            cv2.circle(canvas, (int(round(x)), int(round(y))), stick, COLOURS[index], thickness=-1)
    return canvas


class PoseAnnotator:
    """A loaded pose model (and person detector): PoseAnnotator.load(pose, detector)(rgb) -> the pose image."""

    def __init__(self, model, processor, detector, detector_processor, device: str, label: str) -> None:
        self.model = model
        self.processor = processor
        self.detector = detector
        self.detector_processor = detector_processor
        self.device = device
        self.label = label

    @classmethod
    def load(cls, source: str, detector: str = "", device: str = "cpu", *, cache_dir=None) -> PoseAnnotator:
        """The VitPose model at `source` and the person detector at `detector` ("" = none: the whole image is
        one person), folders or repo ids in the HF cache `cache_dir`, on `device`; the last one loaded is kept."""
        folder, label = resolve(source, cache_dir, "pose")
        found = resolve(detector, cache_dir, "detector") if str(detector).strip() else None
        key = ("pose", str(folder), str(found[0]) if found else "", device)
        return cached(key, lambda: cls._load(folder, label, found, device))

    @classmethod
    def _load(cls, folder: Path, label: str, detector: tuple[Path, str] | None, device: str) -> PoseAnnotator:
        from transformers import AutoModelForObjectDetection, VitPoseForPoseEstimation

        labels = check_folder(folder, label, "pose").get("id2label")
        keypoints = len(labels) if isinstance(labels, dict) else 2         # transformers' default num_labels
        if keypoints != 17:
            raise AnnotatorError(f"{label} estimates {keypoints} keypoints, not COCO's 17: choose a VitPose model "
                                 "trained on COCO")
        processor = load_processor(folder, label)
        model = load_model(folder, label, VitPoseForPoseEstimation, device, "the pose model")
        if detector is None:
            return cls(model, processor, None, None, device, label)
        detector_folder, detector_label = detector
        check_folder(detector_folder, detector_label, "detector")
        detector_processor = load_processor(detector_folder, detector_label)
        detector_model = load_model(detector_folder, detector_label, AutoModelForObjectDetection, device,
                                    "the person detector")
        return cls(model, processor, detector_model, detector_processor, device, label)

    def __call__(self, rgb) -> np.ndarray:
        """The pose control image: every person's skeleton (draw_pose), uint8 H x W x 3 the input's size."""
        pixels = _pixels(rgb)
        return draw_pose(self.people(pixels), *pixels.shape[:2])

    def people(self, rgb) -> list[Person]:
        """Everyone found in the image with their keypoints; [] when the detector finds nobody."""
        pixels = _pixels(rgb)
        try:
            boxes = self._person_boxes(pixels)
            if not boxes:
                log.info("the person detector found nobody: the pose image is empty")
                return []
            return self._keypoints(pixels, boxes)
        except AnnotatorError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _failure(exc, f"pose estimation with {self.label} failed",
                           f"estimating poses with {self.label} on {self.device}") from exc

    def _person_boxes(self, pixels: np.ndarray) -> list[list[float]]:
        """People as COCO boxes [x, y, width, height]: the detector's, or the whole image without one."""
        import cv2
        import torch

        height, width = pixels.shape[:2]
        if self.detector is None:
            return [[0.0, 0.0, float(width), float(height)]]
        inputs = self.detector_processor(images=pixels, return_tensors="pt")
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        with torch.inference_mode():
            outputs = self.detector(**inputs)
        found = self.detector_processor.post_process_object_detection(
            outputs, threshold=PERSON_SCORE, target_sizes=[(height, width)])[0]
        labels = self.detector.config.id2label
        boxes, scores = [], []
        for box, label, score in zip(found["boxes"].tolist(), found["labels"].tolist(), found["scores"].tolist()):
            x0, y0 = max(0.0, box[0]), max(0.0, box[1])
            x1, y1 = min(float(width), box[2]), min(float(height), box[3])
            if str(labels.get(int(label), "")).strip().lower() == "person" and x1 - x0 >= 1 and y1 - y0 >= 1:
                boxes.append([x0, y0, x1 - x0, y1 - y0])
                scores.append(float(score))
        if not boxes:
            return []
        keep = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, PERSON_SCORE, OVERLAP)).reshape(-1)
        keep = sorted(keep.tolist(), key=lambda index: -scores[index])[:MAX_PEOPLE]
        return [boxes[index] for index in keep]

    def _keypoints(self, pixels: np.ndarray, boxes: list[list[float]]) -> list[Person]:
        import torch

        inputs = self.processor(images=pixels, boxes=[boxes], return_tensors="pt")
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        backbone = getattr(self.model.config, "backbone_config", None)
        if getattr(backbone, "num_experts", 1) > 1:       # ViTPose+: its expert for COCO's keypoints is 0
            inputs["dataset_index"] = torch.zeros(len(boxes), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        outputs.heatmaps = outputs.heatmaps.float().cpu()
        results = self.processor.post_process_pose_estimation(outputs, boxes=[boxes])[0]
        people = []
        for result in results:
            keypoints = result["keypoints"].float().numpy().reshape(17, 2)
            people.append(Person(keypoints, result["scores"].float().numpy().reshape(17)))
        return people
