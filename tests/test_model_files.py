"""Telling model files apart without loading them, and never running code from them."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from app.engine.events import EngineError
from app.engine.model_files import identify_checkpoint, inspect_checkpoint, resolve_source

UNET = "model.diffusion_model.input_blocks.0.0.weight"
SD1 = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
SD2 = "cond_stage_model.model.ln_final.weight"
XL_G = "conditioner.embedders.1.model.ln_final.weight"
XL_L = "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"
REFINER = "conditioner.embedders.0.model.ln_final.weight"
VAE = "first_stage_model.decoder.conv_in.weight"


def identify(keys: list[str], channels: int = 4):
    shapes = {UNET: (320, channels, 3, 3)} if UNET in keys else {}
    return identify_checkpoint(keys, shapes.get, "model.safetensors")


@pytest.mark.parametrize("keys,channels,family,inpaint,config", [
    ([UNET, SD1, VAE], 4, "sd1", False, "sd15"),
    ([UNET, SD1, VAE], 9, "sd1", True, "sd15-inpaint"),
    ([UNET, SD2, VAE], 4, "sd2", False, "sd2-v"),
    ([UNET, SD2, VAE], 9, "sd2", True, "sd2-inpaint"),
    ([UNET, XL_L, XL_G, VAE], 4, "sdxl", False, "sdxl"),
    ([UNET, XL_L, XL_G, VAE], 9, "sdxl", True, "sdxl-inpaint"),
])
def test_families_by_key_names(keys, channels, family, inpaint, config):
    info = identify(keys, channels)
    assert (info.family, info.inpaint, info.config_name) == (family, inpaint, config)


def test_v_prediction_marker_picks_the_768_config():
    assert identify([UNET, SD2, VAE, "v_pred"]).v_prediction is True
    assert identify([UNET, SD2, VAE, "v_pred"]).config_name == "sd2-v"


@pytest.mark.parametrize("keys,channels,message", [
    ([UNET, REFINER, VAE], 4, "SDXL refiner"),
    ([UNET, SD1], 4, "no VAE weights"),
    ([UNET, SD1, VAE], 8, "8 input channels"),
    ([UNET, VAE], 4, "no text encoder"),
    (["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"], 4, "LoRA"),
    (["encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight"], 4, "VAE on its own"),
    (["down_blocks.0.resnets.0.conv1.weight", "conv_in.weight"], 4, "whole diffusers folder"),
    (["double_blocks.0.img_attn.norm.key_norm.scale"], 4, "flux"),
    (["something.else"], 4, "not a Stable Diffusion checkpoint"),
])
def test_what_else_a_file_is_is_named(keys, channels, message):
    with pytest.raises(EngineError, match=message):
        identify(keys, channels)


def test_plain_ckpt_state_dict_is_read(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {UNET: torch.zeros(320, 9, 3, 3), SD1: torch.zeros(4), VAE: torch.zeros(2)}}, path)
    info = inspect_checkpoint(path)
    assert (info.family, info.inpaint) == ("sd1", True)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps({"state_dict": {UNET: _Payload(marker)}}))
    with pytest.raises(EngineError, match="refused to load evil"):
        inspect_checkpoint(path)
    assert not marker.exists()


def test_pickle_renamed_safetensors_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(EngineError, match="not a readable .safetensors file"):
        inspect_checkpoint(path)
    assert not marker.exists()


def test_safetensors_header_checks(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({UNET: torch.zeros(320, 4, 3, 3), SD1: torch.zeros(4), VAE: torch.zeros(2)}, str(good))
    assert inspect_checkpoint(good).family == "sd1"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    for path in (truncated, huge):
        with pytest.raises(EngineError, match="not a readable .safetensors file"):
            inspect_checkpoint(path)


def test_resolve_source(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    assert resolve_source(str(tmp_path)).kind == "folder"
    assert resolve_source(str(tmp_path / "model.safetensors"), "cfg").config == "cfg"
    assert resolve_source("owner/model-name").kind == "repo"
    with pytest.raises(EngineError, match="not a model file"):
        resolve_source(str(tmp_path / "notes.txt"))
    with pytest.raises(EngineError, match="model not found"):
        resolve_source(str(tmp_path / "missing.safetensors"))
