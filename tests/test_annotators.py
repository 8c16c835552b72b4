"""ControlNet preprocessors (app/engine/annotators.py): what a user relies on in the control images."""
import json
import pickle

import cv2
import numpy as np
import pytest

from app.engine import annotators
from app.engine.annotators import (KINDS, AnnotatorError, DepthAnnotator, canny, describe_annotator_folder,
                                   find_annotators, inpaint_condition, lineart, make_control_image,
                                   normal_from_depth, scribble, tile)
from app.engine.events import EngineError

SIZES = [(64, 64), (37, 53), (53, 37), (1, 9)]


def _rectangle(height=60, width=80, ink=255, page=0):
    image = np.full((height, width, 3), page, np.uint8)
    cv2.rectangle(image, (20, 15), (59, 44), (ink, ink, ink), thickness=-1)
    return image


def _strokes(height=48, width=64):
    """A boolean stroke mask: a polyline and a circle, drawn without anti-aliasing."""
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [np.array([[5, 5], [40, 20], [20, 40]], np.int32)], False, 255, 2, cv2.LINE_8)
    cv2.circle(mask, (48, 30), 9, 255, 1, cv2.LINE_8)
    return mask > 0


# ---------------------------------------------------------------------------------------------- canny

def test_canny_finds_the_border_of_a_rectangle():
    edges = canny(_rectangle())
    assert edges.shape == (60, 80, 3) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    assert (edges[..., 0] == edges[..., 2]).all()
    on = edges[..., 0] > 0
    assert on[15:45, 19:21].any() and on[15:45, 58:61].any()       # the left and right sides
    assert on[14:16, 20:60].any() and on[43:46, 20:60].any()       # top and bottom
    assert not on[20:40, 25:55].any()                              # inside stays black
    assert not on[:10].any() and not on[50:].any() and not on[:, :12].any()   # outside too


def test_canny_thresholds_change_how_much_is_found():
    photo = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), (0, 0), 1.5)
    counts = [int((canny(photo, low, high) > 0).sum()) for low, high in ((10, 30), (50, 100), (200, 400))]
    assert counts[0] > counts[1] > counts[2]


@pytest.mark.parametrize("low, high", [(-1, 10), (200, 100), (0, 1001)])
def test_canny_refuses_bad_thresholds(low, high):
    with pytest.raises(ValueError, match="0 <= low <= high <= 1000"):
        canny(_rectangle(), low, high)


# ------------------------------------------------------------------------------------ scribble / line art

def test_scribble_is_the_same_white_on_black_however_it_was_drawn():
    strokes = _strokes()
    expected = np.where(strokes, 255, 0).astype(np.uint8)

    pen = np.zeros((*strokes.shape, 4), np.uint8)          # a red pen on a transparent control layer ...
    pen[..., :3] = np.random.default_rng(2).integers(0, 256, (*strokes.shape, 3))   # ... over junk colour
    pen[strokes] = (200, 30, 30, 255)
    pen[..., 3] = np.where(strokes, 255, 0)
    dark_on_light = np.where(strokes[..., None], 20, 240).astype(np.uint8).repeat(3, axis=2)
    light_on_dark = np.where(strokes[..., None], 250, 10).astype(np.uint8).repeat(3, axis=2)
    white_on_black = np.repeat(expected[..., None], 3, axis=2)

    for drawing in (pen, dark_on_light, light_on_dark, white_on_black):
        result = scribble(drawing)
        assert result.shape == (*strokes.shape, 3) and result.dtype == np.uint8
        np.testing.assert_array_equal(result[..., 0], expected)
        assert (result[..., 0] == result[..., 1]).all() and (result[..., 1] == result[..., 2]).all()


def test_scribble_keeps_faint_pencil_and_drops_paper_noise():
    strokes = _strokes()
    page = np.random.default_rng(3).normal(245, 3, strokes.shape).clip(0, 255)
    pencil = np.where(strokes, 190, page).astype(np.uint8)
    np.testing.assert_array_equal(scribble(np.dstack([pencil] * 3))[..., 0] > 0, strokes)
    assert not scribble(np.dstack([page.astype(np.uint8)] * 3)).any()


def test_lineart_keeps_grey_levels_and_fixes_the_polarity():
    strokes = _strokes()
    soft = cv2.GaussianBlur(np.where(strokes, 255, 0).astype(np.uint8), (0, 0), 1.0)
    black_on_white = np.dstack([255 - soft] * 3)
    white_on_black = np.dstack([soft] * 3)
    for drawing in (black_on_white, white_on_black):
        result = lineart(drawing)
        np.testing.assert_array_equal(result[..., 0], soft)
        assert len(np.unique(result)) > 10                      # anti-aliasing kept, not thresholded


# ------------------------------------------------------------------------------------- tile / inpaint

def test_tile_without_blur_is_an_identical_copy_and_blur_smooths():
    image = np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    same = tile(image)
    assert not np.shares_memory(same, image)
    np.testing.assert_array_equal(same, image)
    blurred = tile(image, blur=2.0)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(image.astype(int), axis=1)).mean() / 3
    with pytest.raises(ValueError):
        tile(image, blur=-1)


def test_inpaint_condition_is_minus_one_exactly_in_the_hole():
    image = np.random.default_rng(5).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    hole = np.zeros((37, 53), np.uint8)
    hole[10:20, 5:30] = 255
    hole[0, 0] = 127                                            # below 128: kept
    hole[36, 52] = 128                                          # 128 and up: generated
    condition = inpaint_condition(image, hole)
    assert condition.shape == (37, 53, 3) and condition.dtype == np.float32
    inside = hole >= 128
    assert (condition[inside] == -1.0).all()
    np.testing.assert_allclose(condition[~inside], image[~inside] / 255.0, rtol=0, atol=1e-7)
    assert condition[~inside].min() >= 0 and condition.max() <= 1
    with pytest.raises(ValueError):
        inpaint_condition(image, hole[:10])


# ------------------------------------------------------------------------------------------- normals

def test_normal_of_a_flat_depth_is_uniform_and_faces_the_viewer():
    normal = normal_from_depth(np.full((37, 53), 90, np.uint8))
    assert normal.shape == (37, 53, 3) and normal.dtype == np.uint8
    assert (normal == normal[0, 0]).all()
    assert tuple(normal[0, 0]) == (255, 127, 127)               # R = z, G = y, B = x


def test_normal_of_a_ramp_tilts_the_x_channel_only():
    ramp = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)     # nearer (brighter) to the right
    normal = normal_from_depth(ramp, background=0.0).astype(int)
    middle = normal[10:38, 10:54]
    assert (middle[..., 2] > 150).all()                          # B = +d(depth)/dx
    assert (np.abs(middle[..., 1] - 127) <= 1).all()             # G (y) untouched
    stronger = normal_from_depth(ramp, strength=3.0, background=0.0).astype(int)[10:38, 10:54]
    assert (stronger[..., 2] > middle[..., 2]).all() and (stronger[..., 0] < middle[..., 0]).all()
    down = normal_from_depth(np.ascontiguousarray(ramp.T), background=0.0).astype(int)[10:54, 10:38]
    assert (down[..., 1] > 150).all() and (np.abs(down[..., 2] - 127) <= 1).all()


def test_normal_background_threshold_flattens_the_far_part():
    ramp = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    normal = normal_from_depth(ramp, background=0.5)
    assert (normal[:, 5:25] == (255, 127, 127)).all()
    assert (normal[10:38, 40:60, 2] > 150).all()


# ------------------------------------------------------------------------------------ sizes and dispatch

@pytest.mark.parametrize("height, width", SIZES)
def test_every_kind_keeps_the_size(height, width):
    rng = np.random.default_rng(height * width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    hole = rng.integers(0, 256, (height, width), dtype=np.uint8)
    for kind in KINDS:
        if kind in ("depth", "normal", "pose"):
            result = make_control_image(kind, image, imported=True)
        else:
            result = make_control_image(kind, image, hole=hole)
        assert result.shape == (height, width, 3), kind
    assert normal_from_depth(image[..., 0]).shape == (height, width, 3)
    assert scribble(np.dstack([image, hole])).shape == (height, width, 3)


def test_kinds_match_the_request_model():
    from app.engine.request import CONTROL_KINDS, MADE_FROM_THE_IMAGE

    assert set(KINDS) == set(CONTROL_KINDS)
    assert {name for name, kind in KINDS.items() if kind.made_from_image} == set(MADE_FROM_THE_IMAGE)
    assert {name for name, kind in KINDS.items() if kind.needs_annotator} == {"depth", "normal", "pose"}
    assert KINDS["pose"].importable and not KINDS["inpaint"].importable


def test_make_control_image_dispatches_and_explains_what_is_missing():
    image = _rectangle()
    np.testing.assert_array_equal(make_control_image("canny", image, low=50, high=150), canny(image, 50, 150))
    np.testing.assert_array_equal(make_control_image("tile", image, blur=1.5), tile(image, 1.5))
    pose = np.random.default_rng(6).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(make_control_image("pose", pose, imported=True), pose)
    depth_image = pose[..., 0]
    np.testing.assert_array_equal(make_control_image("depth", depth_image, imported=True),
                                  np.dstack([depth_image] * 3))
    for kind in ("depth", "normal"):
        with pytest.raises(AnnotatorError, match=f"^{kind} needs a depth-estimation model.*--annotator"):
            make_control_image(kind, image)
    with pytest.raises(AnnotatorError, match=r"^pose needs a pose model \(VitPose\) to make it"):
        make_control_image("pose", image)
    with pytest.raises(AnnotatorError, match="hole"):
        make_control_image("inpaint", image)
    with pytest.raises(AnnotatorError, match="unknown control kind"):
        make_control_image("sketchy", image)
    assert issubclass(AnnotatorError, EngineError)


# ------------------------------------------------------------------------------------ depth annotator

def _save_tiny_depth_model(folder):
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=32, out_indices=[1, 2],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, reassemble_factors=[2, 1],
                                 neck_hidden_sizes=[8, 16], fusion_hidden_size=8, head_hidden_size=8)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True,
                      ensure_multiple_of=14).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory):
    return _save_tiny_depth_model(tmp_path_factory.mktemp("tiny_depth"))


@pytest.fixture(autouse=True)
def _fresh_cache():
    annotators.free()
    yield
    annotators.free()


def test_depth_annotator_makes_a_normalised_depth_the_input_size(depth_model):
    annotator = DepthAnnotator.load(str(depth_model))
    image = np.random.default_rng(7).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    control = annotator(image)
    assert control.shape == (37, 53, 3) and control.dtype == np.uint8
    assert control.min() == 0 and control.max() == 255
    grey = annotator.depth(np.dstack([image, np.full((37, 53), 255, np.uint8)]))      # RGBA accepted
    assert grey.shape == (37, 53) and grey.dtype == np.uint8
    np.testing.assert_array_equal(control[..., 1], grey)
    normal = make_control_image("normal", image, annotator=annotator)
    assert normal.shape == (37, 53, 3)
    np.testing.assert_array_equal(make_control_image("depth", image, annotator=annotator), control)


def test_a_second_load_comes_from_the_cache(depth_model, monkeypatch):
    first = DepthAnnotator.load(str(depth_model))
    monkeypatch.setattr(annotators, "load_model", lambda *args: pytest.fail("loaded twice"))
    assert DepthAnnotator.load(str(depth_model)) is first
    annotators.free()
    with pytest.raises(pytest.fail.Exception, match="loaded twice"):
        DepthAnnotator.load(str(depth_model))


def test_a_repo_id_loads_from_the_cache_and_is_listed(depth_model, tmp_path):
    snapshot = _fake_repo(tmp_path / "hub", "someone/tiny-depth", json.loads((depth_model / "config.json").read_text()))
    for name in ("model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((depth_model / name).read_bytes())
    annotator = DepthAnnotator.load("someone/tiny-depth", cache_dir=tmp_path / "hub")
    assert annotator(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30, 3)
    [info] = find_annotators(cache_dir=tmp_path / "hub")
    assert (info.repo_id, info.kind, info.path, info.source) == ("someone/tiny-depth", "depth", snapshot,
                                                                 "someone/tiny-depth")
    assert info.size_bytes > (snapshot / "model.safetensors").stat().st_size


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickle_weights_are_refused_without_unpickling(depth_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((depth_model / name).read_bytes())
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    for attempt in (lambda: DepthAnnotator.load(str(folder)), lambda: describe_annotator_folder(folder)):
        with pytest.raises(AnnotatorError, match="only pickle weights .pytorch_model.bin.*safetensors") as caught:
            attempt()
        assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_a_clip_folder_is_not_a_depth_model(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=16)
    CLIPTextModel(config).save_pretrained(tmp_path / "clip")
    with pytest.raises(AnnotatorError, match="is not a depth-estimation model .*CLIPTextModel"):
        DepthAnnotator.load(str(tmp_path / "clip"))


def test_one_line_errors_for_missing_damaged_and_undownloaded_models(depth_model, tmp_path, monkeypatch):
    def fails(source, match, **kwargs):
        with pytest.raises(AnnotatorError, match=match) as caught:
            DepthAnnotator.load(source, **kwargs)
        assert "\n" not in str(caught.value)

    fails(str(tmp_path / "nowhere"), "no depth-estimation model folder at")
    fails("owner/missing-depth", r"owner/missing-depth is not downloaded.*hf download owner/missing-depth",
          cache_dir=tmp_path / "empty-hub")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (damaged / name).write_bytes((depth_model / name).read_bytes())
    (damaged / "model.safetensors").write_bytes((depth_model / "model.safetensors").read_bytes()[:300])
    fails(str(damaged), "weights of .* could not be loaded")

    import torch

    import transformers

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail")

    monkeypatch.setattr(transformers.AutoModelForDepthEstimation, "from_pretrained", out_of_memory)
    fails(str(depth_model), "^out of memory loading the depth model")


# ------------------------------------------------------------------------------------------- discovery

def _fake_repo(hub, repo_id, config, commit="0123456789abcdef0123456789abcdef01234567"):
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot


def test_find_annotators_lists_depth_pose_and_person_detection_models_only(tmp_path):
    hub = tmp_path / "hub"
    _fake_repo(hub, "depth-anything/Depth-Anything-V2-Small-hf",
               {"architectures": ["DepthAnythingForDepthEstimation"], "model_type": "depth_anything"})
    _fake_repo(hub, "Intel/dpt-hybrid-midas", {"model_type": "dpt"})
    _fake_repo(hub, "openai/clip-vit-base-patch32", {"architectures": ["CLIPModel"], "model_type": "clip"})
    _fake_repo(hub, "Intel/dpt-large-ade", {"architectures": ["DPTForSemanticSegmentation"], "model_type": "dpt"})
    huge = _fake_repo(hub, "someone/huge-config", {"architectures": ["DPTForDepthEstimation"]})
    (huge / "config.json").write_text(json.dumps({"architectures": ["DPTForDepthEstimation"],
                                                  "padding": "x" * (1024 * 1024)}))
    (hub / "models--broken").mkdir()                            # a damaged entry is skipped
    _fake_repo(hub, "usyd-community/vitpose-base-simple", {"architectures": ["VitPoseForPoseEstimation"],
                                                           "model_type": "vitpose"})
    _fake_repo(hub, "PekingU/rtdetr_r50vd_coco_o365", {"architectures": ["RTDetrForObjectDetection"],
                                                       "id2label": {"0": "person", "1": "bicycle"}})
    _fake_repo(hub, "someone/cat-detector", {"architectures": ["RTDetrForObjectDetection"],
                                             "id2label": {"0": "cat"}})
    found = find_annotators(cache_dir=hub)
    assert [(info.repo_id, info.kind) for info in found] == [
        ("depth-anything/Depth-Anything-V2-Small-hf", "depth"), ("Intel/dpt-hybrid-midas", "depth"),
        ("PekingU/rtdetr_r50vd_coco_o365", "detector"), ("usyd-community/vitpose-base-simple", "pose")]
    assert all((info.path / "config.json").is_file() for info in found)


def test_find_annotators_tolerates_a_missing_or_odd_cache(tmp_path):
    assert find_annotators(cache_dir=tmp_path / "none") == []
    (tmp_path / "file").write_text("not a cache")
    assert find_annotators(cache_dir=tmp_path / "file") == []


def test_describe_annotator_folder(depth_model, tmp_path):
    info = describe_annotator_folder(depth_model)
    assert (info.repo_id, info.kind, info.path, info.source) == ("", "depth", depth_model.resolve(),
                                                                 str(depth_model.resolve()))
    assert info.size_bytes >= (depth_model / "model.safetensors").stat().st_size
    with pytest.raises(AnnotatorError, match="no depth-estimation model folder"):
        describe_annotator_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotatorError, match="no config.json"):
        describe_annotator_folder(tmp_path / "empty")


@pytest.mark.parametrize("make", [annotators.lines_of, annotators.soft_edges_of])
def test_line_art_and_soft_edges_of_a_photo_follow_its_outlines_and_leave_flat_areas_black(make):
    image = np.full((96, 128, 3), 200, np.uint8)
    image[30:70, 40:90] = 40                                  # a dark box on a light ground
    out = make(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all()                 # grey, white on black
    border = out[28:33, 45:85, 0].max(), out[67:72, 45:85, 0].max()
    assert min(border) > 100                                  # strong along the outline
    assert out[:10, :10].max() == 0 and out[45:55, 60:70].max() < 30     # nothing on flat areas
    assert make(np.full((37, 53, 3), 90, np.uint8)).max() == 0


def test_line_art_and_soft_edges_made_from_the_image_or_imported():
    image = np.full((64, 64, 3), 220, np.uint8)
    image[20:44, 20:44] = 30
    np.testing.assert_array_equal(annotators.make_control_image("lineart", image), annotators.lines_of(image))
    np.testing.assert_array_equal(annotators.make_control_image("softedge", image), annotators.soft_edges_of(image))
    np.testing.assert_array_equal(annotators.make_control_image("lineart", image, imported=True),
                                  annotators.lineart(image))
