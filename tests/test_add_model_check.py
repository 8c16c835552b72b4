"""A single file is checked against the config it will load with when it is added, not at its first job.

The tiny models of tests/model_factory.py are Stable Diffusion by their key names but not by their sizes: the
shipped config of their family cannot hold them. Full-size files are written here as headers of the real
layout over a sparse data section, so a "2 GB" checkpoint costs a few hundred KB on disk.
"""
from __future__ import annotations

import functools
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from app.engine.diffusion.devices import plan_device
from app.engine.events import EngineError
from app.engine.diffusion.model_files import CONFIG_ROOT, resolve_source
from app.engine.diffusion.model_loader import inspect_single_file, load_model

FAMILIES = {"sd15": "sd1", "sd15-inpaint": "sd1", "sd2-v": "sd2", "sd2-inpaint": "sd2", "sdxl": "sdxl",
            "sdxl-inpaint": "sdxl"}      # the shipped configs a file's keys choose (sd2-base only when given)
CHECK_SECONDS = 3.0       # generous: about 0.1 s for a tiny model, 0.3-0.6 s for a real SDXL layout here


@functools.cache
def full_size_layout(config_name: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a real checkpoint of the shipped config `config_name`, in the model-site
    layout (for SD 2.x with OpenCLIP's 24 layers, the last of which the loader drops)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.model_factory import _open_clip_state, single_file_state_dict

    folder = CONFIG_ROOT / config_name
    with torch.device("meta"):
        parts = {"unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
                 "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
                 "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))}
        if FAMILIES[config_name] == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        state = single_file_state_dict(parts)
        if FAMILIES[config_name] == "sd2":
            open_clip = CLIPTextConfig.from_pretrained(folder / "text_encoder", num_hidden_layers=24,
                                                       projection_dim=1024)
            state = {key: value for key, value in state.items() if not key.startswith("cond_stage_model.")}
            state.update(_open_clip_state(CLIPTextModelWithProjection(open_clip), "cond_stage_model.model."))
    return {key: tuple(value.shape) for key, value in state.items()}


def write_sparse(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F16") -> Path:
    """A .safetensors file of `shapes` whose data section is a hole: every tensor zero, nothing written."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape) * 2
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + offset)
    return path


def full_size_checkpoint(path: Path, config_name: str = "sd15", **changes) -> Path:
    """A full-size checkpoint of `config_name`, with `changes` (name -> shape, or None to leave it out)."""
    shapes = {**full_size_layout(config_name), **changes}
    return write_sparse(path, {key: shape for key, shape in shapes.items() if shape is not None})


def timed_check(path: Path, config: str = ""):
    start = time.perf_counter()
    found = inspect_single_file(path, config)
    assert time.perf_counter() - start < CHECK_SECONDS
    return found


@pytest.fixture
def no_weights_read(monkeypatch):
    """The check reads a .safetensors file's header only: the libraries that read weights fail the test."""
    import safetensors
    import safetensors.torch

    def read_weights(*args, **kwargs):
        pytest.fail("the check read the file's weights")
    monkeypatch.setattr(safetensors, "safe_open", read_weights)
    monkeypatch.setattr(safetensors.torch, "load_file", read_weights)
    monkeypatch.setattr(safetensors.torch, "safe_open", read_weights, raising=False)


# -- the tiny models -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, inpaint", [("sd15", False), ("sd15", True), ("sdxl", False), ("sdxl", True)])
def test_a_tiny_file_without_its_config_is_refused_in_one_line(tiny_models, no_weights_read, family, inpaint):
    path = tiny_models.path(family, inpaint, "single_file")
    with pytest.raises(EngineError) as error:
        timed_check(path)
    message = str(error.value)
    channels = 9 if inpaint else 4
    assert message.startswith(f"{path.name} does not fit the ")
    assert f": its UNet conv_in.weight is 32x{channels}x3x3, the config needs 320x{channels}x3x3 (" in message
    assert message.endswith("; give its diffusers config folder as the model's config")
    assert "\n" not in message


@pytest.mark.parametrize("family, inpaint", [("sd15", False), ("sd15", True), ("sdxl", False), ("sdxl", True)])
def test_the_same_tiny_file_with_its_own_config_folder_is_accepted(tiny_models, no_weights_read, family, inpaint):
    config = tiny_models.config_folder(family, inpaint)
    info, checked = timed_check(tiny_models.path(family, inpaint, "single_file"), str(config))
    assert (info.inpaint, checked.path) == (inpaint, config.resolve())


def test_a_tiny_file_added_before_the_check_fails_its_first_job_with_the_same_line(tiny_models):
    """A list written by an older version still holds such files: loading one says what the check says."""
    path = tiny_models.path("sd15", False, "single_file")
    with pytest.raises(EngineError) as error:
        load_model(resolve_source(str(path)), plan_device("cpu"))
    assert str(error.value).startswith("sd15.safetensors does not fit the Stable Diffusion 1.x config sd15: its UNet "
                                       "conv_in.weight is 32x4x3x3, the config needs 320x4x3x3 (")


def test_a_config_folder_the_file_does_not_fit_is_named_without_the_hint(tiny_models, tmp_path):
    config = shutil.copytree(CONFIG_ROOT / "sd15", tmp_path / "my-config")
    with pytest.raises(EngineError) as error:
        inspect_single_file(tiny_models.path("sd15", False, "single_file"), str(config))
    message = str(error.value)
    assert message.startswith("sd15.safetensors does not fit the Stable Diffusion 1.x config my-config: its UNet ")
    assert "give its" not in message


def test_a_config_folder_that_builds_no_model_is_named(tiny_models, tmp_path):
    config = Path(shutil.copytree(tiny_models.config_folder("sd15"), tmp_path / "odd-blocks"))
    unet = json.loads((config / "unet" / "config.json").read_text())
    unet["down_block_types"] = ["NoSuchBlock2D", "DownBlock2D"]
    (config / "unet" / "config.json").write_text(json.dumps(unet))
    with pytest.raises(EngineError) as error:
        inspect_single_file(tiny_models.path("sd15", False, "single_file"), str(config))
    assert str(error.value).startswith("sd15.safetensors does not fit the Stable Diffusion 1.x config odd-blocks: the "
                                       "config's UNet cannot be built (")


def test_a_pickled_tiny_file_is_checked_the_same_way(tiny_models, tmp_path):
    from tests.model_factory import single_file_state_dict

    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": single_file_state_dict(tiny_models.components("sd15"))}, path)
    with pytest.raises(EngineError, match="its UNet conv_in.weight is 32x4x3x3, the config needs 320x4x3x3"):
        inspect_single_file(path)
    assert inspect_single_file(path, str(tiny_models.config_folder("sd15")))[0].family == "sd1"


# -- full-size files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("config_name", sorted(FAMILIES))
def test_full_size_files_of_every_family_fit_the_shipped_config(tmp_path, no_weights_read, config_name):
    path = full_size_checkpoint(tmp_path / f"{config_name}.safetensors", config_name)
    info, checked = timed_check(path)
    assert (info.family, checked.path.name) == (FAMILIES[config_name], config_name)


def test_a_real_sd15_header_has_about_1100_tensors():
    assert 1100 <= len(full_size_layout("sd15")) <= 1200


UNET_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
VAE_KEY = "first_stage_model.decoder.up.3.block.0.conv1.weight"


UNET_NAME = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


@pytest.mark.parametrize("changes, expected", [
    ({UNET_KEY: (320, 1024)}, f"its UNet {UNET_NAME} is 320x1024, the config needs 320x768"),
    ({UNET_KEY: None}, f"its UNet has no {UNET_NAME}, which the config needs"),
    ({VAE_KEY: (128, 256, 1, 1)},
     "its VAE decoder.up_blocks.0.resnets.0.conv1.weight is 128x256x1x1, the config needs 512x512x3x3"),
    ({"cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 4096)},
     "its text encoder encoder.layers.11.mlp.fc2.weight is 768x4096, the config needs 768x3072"),
])
def test_one_tensor_out_of_place_in_a_full_size_file_is_named(tmp_path, changes, expected):
    path = full_size_checkpoint(tmp_path / "odd.safetensors", "sd15", **changes)
    with pytest.raises(EngineError) as error:
        inspect_single_file(path)
    assert str(error.value) == (f"odd.safetensors does not fit the Stable Diffusion 1.x config sd15: {expected}; "
                                "give its diffusers config folder as the model's config")


def test_a_text_encoder_in_a_layout_the_loader_does_not_read_is_refused(tmp_path):
    """Old SD 1.x files without "text_model." in their CLIP names: diffusers' loader finds no text encoder."""
    old = "cond_stage_model.transformer.text_model."
    layout = {key.replace(old, "cond_stage_model.transformer."): shape
              for key, shape in full_size_layout("sd15").items()}
    path = write_sparse(tmp_path / "old-clip.safetensors", layout)
    with pytest.raises(EngineError, match="its text encoder is not laid out as the loader reads a CLIP text encoder"):
        inspect_single_file(path)


def test_tensors_no_part_loads_are_left_alone(tmp_path):
    """EMA copies, the VAE's training loss and DDPM buffers are in many real files; the loader skips them."""
    extra = {"model_ema.decay": (), "first_stage_model.loss.logvar": (), "betas": (1000,),
             "cond_stage_model.transformer.text_model.embeddings.position_ids": (1, 77)}
    path = full_size_checkpoint(tmp_path / "extras.safetensors", "sd15", **extra)
    assert inspect_single_file(path)[0].family == "sd1"


def test_an_sdxl_file_with_a_narrow_second_text_encoder_is_refused(tmp_path):
    layout = full_size_layout("sdxl")
    narrow = {key: (shape[0], 64) for key, shape in layout.items()
              if key == "conditioner.embedders.1.model.positional_embedding"}
    path = full_size_checkpoint(tmp_path / "narrow.safetensors", "sdxl", **narrow)
    with pytest.raises(EngineError) as error:
        inspect_single_file(path)
    expected = "its second text encoder text_model.embeddings.position_embedding.weight is 77x64, the config needs 77x1280"
    assert expected in str(error.value)


# -- the Add model dialog ------------------------------------------------------------------------------------

def check_as_added(text: str, config: str):
    """What the window's check returns for a single file (describe_model's result), from the engine's check."""
    from app.editor.model_library import ModelEntry

    path = Path(text)
    info, checked = inspect_single_file(path, config)
    return ModelEntry(str(path.resolve()), f"{path.name} — {info.label}", "file", str(checked.path) if config else "")


def open_dialog(qtbot, check, tmp_path):
    from app.widgets.add_model_dialog import AddModelDialog

    dialog = AddModelDialog(str(tmp_path), check=check)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def press_ok(qtbot, dialog):
    from PySide6.QtCore import Qt

    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)


def test_the_dialog_shows_the_line_and_stays_open_until_the_config_folder_is_given(qtbot, tiny_models, tmp_path):
    dialog = open_dialog(qtbot, check_as_added, tmp_path)
    path = tiny_models.path("sd15", False, "single_file")
    dialog.location_edit.setText(str(path))
    press_ok(qtbot, dialog)
    assert dialog.checking() and not dialog.ok_button.isEnabled()
    qtbot.waitUntil(lambda: bool(dialog.problem()), timeout=20000)
    assert dialog.isVisible() and dialog.entry is None and dialog.ok_button.isEnabled()
    assert dialog.problem().startswith("sd15.safetensors does not fit the Stable Diffusion 1.x config sd15: its UNet "
                                       "conv_in.weight is 32x4x3x3, the config needs 320x4x3x3 (")
    assert dialog.check_label.isVisible() and "\n" not in dialog.problem()
    config = tiny_models.config_folder("sd15")
    dialog.config_edit.setText(str(config))
    assert dialog.problem() == "" and not dialog.check_label.isVisible()       # the line was about other text
    with qtbot.waitSignal(dialog.accepted, timeout=20000):
        press_ok(qtbot, dialog)
    assert not dialog.isVisible()
    assert (dialog.entry.location, dialog.entry.config) == (str(path.resolve()), str(config.resolve()))


def test_an_edit_while_the_model_is_checked_drops_that_check(qtbot, tmp_path):
    import threading

    release, calls = threading.Event(), []

    def slow_check(text, config):
        calls.append(text)
        release.wait(10)
        raise EngineError(f"{text} is refused")
    dialog = open_dialog(qtbot, slow_check, tmp_path)
    dialog.location_edit.setText("first.safetensors")
    press_ok(qtbot, dialog)
    qtbot.waitUntil(lambda: calls == ["first.safetensors"], timeout=5000)
    dialog.location_edit.setText("second.safetensors")
    assert not dialog.checking() and dialog.ok_button.isEnabled()
    release.set()
    qtbot.wait(200)
    assert dialog.problem() == "" and dialog.isVisible() and dialog.entry is None


def test_a_check_that_fails_unexpectedly_gives_one_line(qtbot, tmp_path):
    def broken_check(text, config):
        raise RuntimeError("boom\nwith a second line")
    dialog = open_dialog(qtbot, broken_check, tmp_path)
    dialog.location_edit.setText("model.safetensors")
    press_ok(qtbot, dialog)
    qtbot.waitUntil(lambda: bool(dialog.problem()), timeout=5000)
    assert dialog.problem() == "Could not check the model: internal error (RuntimeError: boom with a second line)"


def test_cancel_while_checking_adds_nothing(qtbot, tmp_path):
    import threading

    release = threading.Event()

    def slow_check(text, config):
        release.wait(10)
        return "an entry"
    dialog = open_dialog(qtbot, slow_check, tmp_path)
    dialog.location_edit.setText("model.safetensors")
    accepted = []
    dialog.accepted.connect(lambda: accepted.append(True))
    press_ok(qtbot, dialog)
    dialog.reject()
    release.set()
    qtbot.wait(200)
    assert accepted == [] and dialog.entry is None


def test_without_a_check_the_dialog_only_collects_text(qtbot, tmp_path):
    dialog = open_dialog(qtbot, None, tmp_path)
    dialog.location_edit.setText("owner/name")
    with qtbot.waitSignal(dialog.accepted, timeout=1000):
        press_ok(qtbot, dialog)
    assert dialog.location() == "owner/name" and dialog.entry is None
