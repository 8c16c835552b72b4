"""The tiny test ControlNets do something, and round-trip through both file forms exactly.

The app's ControlNet tests trust tests/control_factory.py, so this checks it against diffusers
itself: the residuals must be non-zero and change the tiny UNet's prediction, and every tensor
must come back exactly equal from a folder and from a single file. The shipped full-size configs
(resources/models/controlnet-*) are checked on the meta device, without weights.
"""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from accelerate import init_empty_weights  # noqa: E402
from diffusers import ControlNetModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_controlnet_checkpoint,
    infer_diffusers_model_type,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tests import control_factory as cf  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _quiet_diffusers():
    diffusers_logging.disable_progress_bar()
    yield
    diffusers_logging.enable_progress_bar()


def run(controlnet, unet, inputs, use_controlnet=True):
    """The UNet's noise prediction, with the ControlNet's residuals added or without them."""
    unet_inputs = {k: v for k, v in inputs.items() if k != "controlnet_cond"}
    with torch.no_grad():
        if not use_controlnet:
            return unet(**unet_inputs).sample
        down, mid = controlnet(**inputs, return_dict=False)
        return unet(**unet_inputs, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample


def assert_same_weights(want: ControlNetModel, got: ControlNetModel):
    want, got = want.state_dict(), got.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(value, got[key]), key


# ---------------------------------------------------------------------------------------------
# The tiny models
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", cf.FAMILIES)
def test_residuals_are_nonzero_and_steer_the_unet(tiny_controlnets, tiny_models, family):
    controlnet = tiny_controlnets.controlnet(family)
    unet = tiny_models.components(family)["unet"]
    inputs = cf.example_inputs(controlnet)
    assert inputs["controlnet_cond"].shape[-1] == unet.config.sample_size * cf.VAE_FACTOR

    with torch.no_grad():
        down, mid = controlnet(**inputs, return_dict=False)
    assert len(down) == len(controlnet.controlnet_down_blocks)
    for residual in (*down, mid):
        assert torch.isfinite(residual).all()
        assert residual.abs().mean() > 0.1

    plain, steered = run(controlnet, unet, inputs, False), run(controlnet, unet, inputs)
    assert torch.isfinite(steered).all()
    assert (plain - steered).abs().max() > 0.1

    other_image = dict(inputs, controlnet_cond=1 - inputs["controlnet_cond"])
    assert not torch.allclose(run(controlnet, unet, other_image), steered)


def test_same_seed_same_weights(tiny_controlnets):
    again, other = cf.build_controlnet("sd15", seed=0), cf.build_controlnet("sd15", seed=1)
    assert_same_weights(tiny_controlnets.controlnet("sd15"), again)
    assert not torch.equal(again.controlnet_mid_block.weight, other.controlnet_mid_block.weight)


@pytest.mark.parametrize("family", cf.FAMILIES)
def test_fits_the_tiny_unet(tiny_models, tiny_controlnets, family):
    controlnet, unet = tiny_controlnets.controlnet(family), tiny_models.components(family)["unet"]
    for name in ("down_block_types", "block_out_channels", "cross_attention_dim",
                 "addition_embed_type", "projection_class_embeddings_input_dim"):
        assert controlnet.config[name] == unet.config[name], name
    assert len(controlnet.config.conditioning_embedding_out_channels) == 4


def test_global_pool(tiny_controlnets):
    controlnet = tiny_controlnets.controlnet("sd15", global_pool=True)
    assert controlnet.config.global_pool_conditions
    with torch.no_grad():
        down, mid = controlnet(**cf.example_inputs(controlnet), return_dict=False)
    assert all(r.shape[-2:] == (1, 1) for r in (*down, mid))


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", cf.FAMILIES)
def test_folder_round_trip(tiny_controlnets, family):
    folder = tiny_controlnets.path(family, "folder")
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert_same_weights(tiny_controlnets.controlnet(family), ControlNetModel.from_pretrained(folder))


@pytest.mark.parametrize("family", cf.FAMILIES)
def test_single_file_round_trip(tiny_controlnets, family):
    path = tiny_controlnets.path(family, "single_file")
    loaded = ControlNetModel.from_single_file(
        str(path), config=str(tiny_controlnets.config_folder(family)), local_files_only=True)
    assert_same_weights(tiny_controlnets.controlnet(family), loaded)


@pytest.mark.parametrize("family", cf.FAMILIES)
def test_single_file_layout(tiny_controlnets, family):
    keys = set(load_file(str(tiny_controlnets.path(family, "single_file"))))
    assert infer_diffusers_model_type(dict.fromkeys(keys)) == cf.MODEL_TYPES[family]
    if family == "sd15":
        assert all(k.startswith("control_model.") for k in keys)
        for key in ("time_embed.0.weight", "input_hint_block.0.weight", "input_hint_block.14.weight",
                    "zero_convs.5.0.weight", "middle_block_out.0.weight", "input_blocks.3.0.op.weight",
                    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.2.out_layers.3.bias"):
            assert "control_model." + key in keys, key
    else:
        assert keys == set(tiny_controlnets.controlnet(family).state_dict())


def test_bare_and_fp16_single_file(tiny_controlnets, tmp_path):
    controlnet = tiny_controlnets.controlnet("sd15")
    path = cf.save_controlnet_single_file(controlnet, tmp_path / "bare.safetensors", "sd15",
                                          dtype=torch.float16, prefix="")
    assert "time_embed.0.weight" in load_file(str(path))
    loaded = ControlNetModel.from_single_file(
        str(path), config=str(tiny_controlnets.config_folder("sd15")), local_files_only=True)
    half = ControlNetModel.from_config(controlnet.config)
    half.load_state_dict({k: v.half().float() for k, v in controlnet.state_dict().items()})
    assert_same_weights(half, loaded.float())


# ---------------------------------------------------------------------------------------------
# The shipped full-size configs
# ---------------------------------------------------------------------------------------------

def empty_shipped(family: str) -> ControlNetModel:
    with init_empty_weights():
        return ControlNetModel.from_config(ControlNetModel.load_config(cf.SHIPPED_CONFIGS[family]))


@pytest.mark.parametrize("family, params, tensors, zero_convs", [
    ("sd15", 361_279_120, 340, 12),
    ("sdxl", 1_251_014_160, 844, 9),
])
def test_shipped_config_builds(family, params, tensors, zero_convs):
    model = empty_shipped(family)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == tensors
    assert len(model.controlnet_down_blocks) == zero_convs
    assert model.controlnet_cond_embedding.conv_in.weight.shape == (16, 3, 3, 3)
    assert model.controlnet_cond_embedding.conv_out.weight.shape == (320, 256, 3, 3)
    assert model.controlnet_mid_block.weight.shape == (1280, 1280, 1, 1)


def test_shipped_sd15_shapes():
    model = empty_shipped("sd15")
    attn = model.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert attn.to_k.weight.shape == (320, 768) and attn.heads == 8
    assert model.down_blocks[0].attentions[0].proj_in.weight.ndim == 4  # conv projection
    assert not hasattr(model, "add_embedding") or model.add_embedding is None


def test_shipped_sdxl_shapes():
    model = empty_shipped("sdxl")
    assert type(model.down_blocks[0]).__name__ == "DownBlock2D"
    assert len(model.down_blocks[2].attentions[0].transformer_blocks) == 10
    attn = model.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    assert attn.to_k.weight.shape == (640, 2048) and attn.heads == 10
    assert model.down_blocks[1].attentions[0].proj_in.weight.ndim == 2  # linear projection
    assert model.add_embedding.linear_1.weight.shape == (1280, 2816)
    assert infer_diffusers_model_type(model.state_dict()) == "controlnet_xl_large"


def test_shipped_sd15_accepts_the_original_layout():
    """A full-size SD 1.5 file in the lllyasviel layout (laid out on the meta device) is detected
    as a ControlNet and maps back onto exactly the model's keys and shapes."""
    model = empty_shipped("sd15")
    state = model.state_dict()
    original = cf.ldm_state_dict(state, model.config)
    assert original["control_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 768)
    assert infer_diffusers_model_type(original) == "controlnet"

    converted = convert_controlnet_checkpoint(original, dict(model.config))
    assert set(converted) == set(state)
    assert all(converted[k].shape == state[k].shape for k in state)

    loaded = ControlNetModel.from_single_file(
        original, config=str(cf.SHIPPED_CONFIGS["sd15"]), local_files_only=True, device="meta")
    assert loaded.config.cross_attention_dim == 768
