"""The pose annotator: OpenPose skeletons drawn from keypoints (a table of pixels), tiny VitPose and RT-DETR
models loaded through the real loader, people found or not, pose controls made per pass, and one-line errors
for every wrong model folder."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from app.engine import annotators
from app.engine.annotators import AnnotatorError, describe_annotator_folder, find_annotators, make_control_image
from app.engine.pose_annotator import COLOURS, MAX_PEOPLE, Person, PoseAnnotator, draw_pose, openpose_points
from tests.pose_factory import save_person_detector, save_pose_model
from tests.test_annotators import _Exploit

COCO = {"nose": 0, "left_eye": 1, "right_eye": 2, "left_shoulder": 5, "right_shoulder": 6, "left_elbow": 7}


def _person(**points) -> Person:
    """A person with only the named COCO keypoints found (score 0.9), the others at (0, 0) with score 0.1."""
    keypoints = np.zeros((17, 2))
    scores = np.full(17, 0.1)
    for name, xy in points.items():
        keypoints[COCO[name]] = xy
        scores[COCO[name]] = 0.9
    return Person(keypoints, scores)


def _dim(colour):
    return [int(c * 0.6) for c in colour]


# ------------------------------------------------------------------------------------------------ drawing

def test_openpose_order_adds_the_neck_between_both_shoulders_only():
    points, valid = openpose_points(_person(nose=(256, 100), left_shoulder=(316, 200), right_shoulder=(196, 200)))
    assert valid.tolist() == [True, True, True, False, False, True] + [False] * 12
    np.testing.assert_array_equal(points[[0, 1, 2, 5]], [[256, 100], [256, 200], [196, 200], [316, 200]])
    _, valid = openpose_points(_person(nose=(256, 100), left_shoulder=(316, 200)))
    assert valid.tolist() == [True, False, False, False, False, True] + [False] * 12


@pytest.mark.parametrize("xy, expected", [
    ((256, 100), COLOURS[0]),            # the nose's disc
    ((256, 200), COLOURS[1]),            # the neck's
    ((196, 200), COLOURS[2]),            # the right shoulder's
    ((316, 200), COLOURS[5]),            # the left shoulder's
    ((226, 200), _dim(COLOURS[0])),      # limb 0: neck - right shoulder, at 60 %
    ((286, 200), _dim(COLOURS[1])),      # limb 1: neck - left shoulder
    ((256, 150), _dim(COLOURS[12])),     # limb 12: neck - nose
    ((256, 160), _dim(COLOURS[12])),
    ((261, 150), (0, 0, 0)),             # beside the neck-nose limb (its half-width is 4 px at 512 px)
    ((400, 400), (0, 0, 0)),             # nobody there
    ((100, 300), (0, 0, 0)),             # the left elbow is unsure: not drawn
])
def test_a_skeleton_is_drawn_in_openpose_colours(xy, expected):
    person = _person(nose=(256, 100), left_shoulder=(316, 200), right_shoulder=(196, 200))
    person.scores[COCO["left_elbow"]] = 0.29
    person.keypoints[COCO["left_elbow"]] = (100, 300)
    image = draw_pose([person], 512, 512)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    x, y = xy
    assert image[y, x].tolist() == list(expected)


def test_only_palette_colours_and_black_are_drawn_and_nobody_is_black():
    person = _person(nose=(40, 20), left_eye=(45, 15), right_eye=(35, 15), left_shoulder=(55, 50),
                     right_shoulder=(25, 50), left_elbow=(60, 80))
    image = draw_pose([person, _person(nose=(90, 90))], 120, 100)
    allowed = {(0, 0, 0), *map(tuple, COLOURS), *(tuple(_dim(c)) for c in COLOURS)}
    assert {tuple(c) for c in image.reshape(-1, 3).tolist()} <= allowed
    assert image[90, 90].tolist() == list(COLOURS[0])                # the second person's nose
    assert not draw_pose([], 30, 40).any()


# ------------------------------------------------------------------------------------------------ models

@pytest.fixture(scope="module")
def pose_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_models")
    return {"pose": save_pose_model(root / "vitpose"), "people": save_person_detector(root / "people"),
            "nobody": save_person_detector(root / "nobody", finds_people=False),
            "cats": save_person_detector(root / "cats", person_label="cat-owner")}


@pytest.fixture(autouse=True)
def _fresh_cache():
    annotators.free()
    yield
    annotators.free()


def _photo(height=90, width=120):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_without_a_detector_the_whole_image_is_one_person(pose_models):
    annotator = PoseAnnotator.load(str(pose_models["pose"]))
    image = _photo()
    [person] = annotator.people(image)
    assert person.keypoints.shape == (17, 2) and (person.scores >= 0.3).all()
    control = annotator(image)
    assert control.shape == (90, 120, 3) and control.dtype == np.uint8 and control.any()
    np.testing.assert_array_equal(control, draw_pose([person], 90, 120))
    np.testing.assert_array_equal(make_control_image("pose", image, annotator=annotator), control)


def test_a_person_detector_finds_the_people_to_estimate(pose_models):
    annotator = PoseAnnotator.load(str(pose_models["pose"]), str(pose_models["people"]))
    image = _photo(80, 100)
    boxes = annotator._person_boxes(image)
    assert 1 <= len(boxes) <= MAX_PEOPLE
    for x, y, w, h in boxes:
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= 100 + 1e-3 and y + h <= 80 + 1e-3
    people = annotator.people(image)
    assert len(people) == len(boxes)
    np.testing.assert_array_equal(annotator(image), draw_pose(people, 80, 100))


def test_nobody_found_is_an_empty_pose_image_not_an_error(pose_models):
    annotator = PoseAnnotator.load(str(pose_models["pose"]), str(pose_models["nobody"]))
    assert annotator.people(_photo()) == []
    assert not annotator(_photo()).any()


def test_the_last_pose_annotator_is_kept(pose_models):
    first = PoseAnnotator.load(str(pose_models["pose"]), str(pose_models["people"]))
    assert PoseAnnotator.load(str(pose_models["pose"]), str(pose_models["people"])) is first
    assert PoseAnnotator.load(str(pose_models["pose"])) is not first           # another detector: another one
    assert len(annotators._CACHE) == 1


def _fails(match, *args, **kwargs):
    with pytest.raises(AnnotatorError, match=match) as caught:
        PoseAnnotator.load(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_wrong_model_folders_get_one_line_each(pose_models, tmp_path):
    pose, people = str(pose_models["pose"]), str(pose_models["people"])
    _fails("no pose-estimation model folder at", str(tmp_path / "nowhere"))
    _fails(r"is not a pose-estimation model \(VitPose\) .*RTDetrForObjectDetection", people)
    _fails(r"is not a person detector .*VitPoseForPoseEstimation", pose, pose)
    _fails(r"cats is not a person detector", pose, str(pose_models["cats"]))
    _fails("no person detector folder at", pose, str(tmp_path / "no-detector"))
    _fails(r"owner/pose is not downloaded.*hf download owner/pose", "owner/pose", cache_dir=tmp_path / "hub")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (pickled / name).write_bytes((pose_models["pose"] / name).read_bytes())
    marker = tmp_path / "unpickled"
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    _fails(r"only pickle weights .pytorch_model.bin.*safetensors", str(pickled))
    assert not marker.exists()
    seven = tmp_path / "seven"
    seven.mkdir()
    config = json.loads((pose_models["pose"] / "config.json").read_text())
    (seven / "config.json").write_text(json.dumps({**config, "id2label": {str(i): str(i) for i in range(7)}}))
    for name in ("model.safetensors", "preprocessor_config.json"):
        (seven / name).write_bytes((pose_models["pose"] / name).read_bytes())
    _fails(r"seven estimates 7 keypoints, not COCO's 17: choose a VitPose model trained on COCO$", str(seven))


def test_pose_and_detector_folders_are_described_by_kind(pose_models):
    info = describe_annotator_folder(pose_models["pose"], "pose")
    assert (info.kind, info.source) == ("pose", str(pose_models["pose"].resolve()))
    assert describe_annotator_folder(pose_models["people"], "detector").kind == "detector"
    with pytest.raises(AnnotatorError, match="is not a depth-estimation model"):
        describe_annotator_folder(pose_models["pose"])


def test_cached_pose_models_are_found_by_repo_id_and_load(pose_models, tmp_path):
    hub = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo_id, folder in (("usyd-community/vitpose-base-simple", pose_models["pose"]),
                            ("PekingU/rtdetr_r50vd_coco_o365", pose_models["people"])):
        repo = hub / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True)
        for file in folder.iterdir():
            (repo / "snapshots" / commit / file.name).write_bytes(file.read_bytes())
    found = {info.kind: info.source for info in find_annotators(cache_dir=hub)}
    assert found == {"pose": "usyd-community/vitpose-base-simple", "detector": "PekingU/rtdetr_r50vd_coco_o365"}
    annotator = PoseAnnotator.load(found["pose"], found["detector"], cache_dir=hub)
    assert annotator(_photo(40, 50)).shape == (40, 50, 3)


# ------------------------------------------------------------------------------------------- in a job

def test_a_pose_made_from_the_image_follows_each_pass_and_not_an_expands_prefill(pose_models):
    import cv2

    from app.core.geometry import Rect
    from app.engine.control_plan import control_image
    from app.engine.job_plan import plan_job
    from app.engine.request import ControlInput, GenerationRequest, JobKind, OutpaintOptions

    image = _photo(150, 200)
    pose = ControlInput("pose", "some/controlnet", annotator=str(pose_models["pose"]))
    request = GenerationRequest(JobKind.EXPAND, image, outpaint=OutpaintOptions(Rect(-60, 0, 320, 150)),
                                controls=(pose,))
    plan = plan_job(request, 128, 64)
    annotator = PoseAnnotator.load(str(pose_models["pose"]))
    for p in plan.passes:
        made = control_image(pose, plan, p)
        pixels = np.ascontiguousarray(plan.pass_pixels(plan.base, p))
        new = cv2.resize(p.hole, p.size, interpolation=cv2.INTER_NEAREST) >= 128
        expected = annotator(pixels)
        expected[new] = 0
        np.testing.assert_array_equal(made, expected)
        assert made.shape == (p.size[1], p.size[0], 3) and made[~new].any()


def test_a_pose_fill_through_the_engine_is_guided_and_keeps_the_pixels_beyond_the_feather(
        pose_models, tiny_models, tiny_controlnets):
    from dataclasses import replace

    from app.core import imageops
    from app.core.geometry import Rect
    from app.engine.events import EventKind
    from app.engine.request import ControlInput
    from tests.test_diffusion_engine import box_mask, fill_request, photo, run

    image = photo()
    mask = box_mask(image.shape, Rect(110, 60, 80, 60))
    base = fill_request(tiny_models, image, mask, feather=6)
    net = str(tiny_controlnets.path("sd15"))
    guided, _ = run(replace(base, controls=(ControlInput("pose", net, annotator=str(pose_models["pose"]),
                                                         detector=str(pose_models["people"])),)))
    plain, _ = run(base)
    assert guided.kind == plain.kind == EventKind.RESULT, guided.message
    far = imageops.feather_mask(mask, 6) == 0
    np.testing.assert_array_equal(guided.variants[0].image[far], image[far])
    assert not np.array_equal(guided.variants[0].image[mask > 0], plain.variants[0].image[mask > 0])
    missing, _ = run(replace(base, controls=(ControlInput("pose", net),)))
    assert missing.kind == EventKind.ERROR
    assert "a pose control made from the image needs a pose model (VitPose)" in missing.message
    assert "\n" not in missing.message
