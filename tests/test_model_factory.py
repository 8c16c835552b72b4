"""The tiny test models round-trip: in-memory components == diffusers folder == single file.

The app's loader tests trust tests/model_factory.py, so this checks it against diffusers' own
loaders: every tensor must come back exactly equal, in both forms, for all four models.
"""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.loaders.single_file_utils import infer_diffusers_model_type  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from tests import model_factory as mf  # noqa: E402

MODELS = [("sd15", False), ("sd15", True), ("sdxl", False), ("sdxl", True)]
MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(autouse=True, scope="module")
def _quiet_diffusers():
    diffusers_logging.disable_progress_bar()
    yield
    diffusers_logging.enable_progress_bar()


def assert_same_weights(expected: dict, loaded, cast=None):
    for name in MODULES:
        if name not in expected:
            continue
        want, got = expected[name].state_dict(), getattr(loaded, name).state_dict()
        assert set(got) == set(want), name
        for key, value in want.items():
            value = value.to(cast) if cast else value
            assert torch.equal(value.to(got[key].dtype), got[key]), f"{name}.{key}"


def test_same_seed_same_weights(tiny_models):
    again = mf.build_components("sd15", False, seed=0)
    other = mf.build_components("sd15", False, seed=1)
    cached = tiny_models.components("sd15", False)
    for name in ("unet", "vae", "text_encoder"):
        for key, value in cached[name].state_dict().items():
            assert torch.equal(value, again[name].state_dict()[key])
    assert not torch.equal(cached["unet"].conv_in.weight, other["unet"].conv_in.weight)


@pytest.mark.parametrize("family", mf.FAMILIES)
def test_architecture(tiny_models, family):
    parts = tiny_models.components(family, inpaint=True)
    unet, vae = parts["unet"], parts["vae"]
    assert unet.config.in_channels == 9 and unet.config.sample_size * 8 == mf.NATIVE_SIZE
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, mf.NATIVE_SIZE, mf.NATIVE_SIZE)).latent_dist.mode()
    assert latents.shape == (1, 4, 16, 16)
    assert vae.config.scaling_factor == mf.SCALING_FACTORS[family]
    assert parts["tokenizer"].pad_token == "<|endoftext|>" and len(parts["tokenizer"]) == 49408
    if family == "sdxl":
        te2 = parts["text_encoder_2"].config
        assert unet.config.cross_attention_dim == parts["text_encoder"].config.hidden_size + te2.hidden_size
        assert unet.config.projection_class_embeddings_input_dim == (
            unet.config.addition_time_embed_dim * 6 + te2.projection_dim)
        assert parts["tokenizer_2"].pad_token == "!"


@pytest.mark.parametrize("family,inpaint", MODELS)
def test_folder_round_trip(tiny_models, family, inpaint):
    folder = tiny_models.path(family, inpaint, "folder")
    cls = mf.pipeline_class(family, inpaint)
    assert mf.model_index(folder)["_class_name"] == cls.__name__
    pipe = cls.from_pretrained(folder, local_files_only=True)
    assert_same_weights(tiny_models.components(family, inpaint), pipe)
    assert pipe.tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("family,inpaint", MODELS)
def test_single_file_round_trip(tiny_models, family, inpaint):
    components = tiny_models.components(family, inpaint)
    path = tiny_models.path(family, inpaint, "single_file")
    checkpoint = load_file(str(path))
    assert infer_diffusers_model_type(checkpoint) == mf.MODEL_TYPES[family, inpaint]
    # One key per tensor (OpenCLIP stacks q, k, v): no two keys collapse onto the same LDM key.
    expected = sum(len(components[n].state_dict()) for n in MODULES if n in components)
    if family == "sdxl":
        expected -= 4 * components["text_encoder_2"].config.num_hidden_layers
    assert len(checkpoint) == expected

    cls = mf.pipeline_class(family, inpaint)
    pipe = cls.from_single_file(str(path), config=str(tiny_models.path(family, inpaint)),
                                local_files_only=True)
    assert_same_weights(components, pipe)


def test_fp16_single_file_with_buffers(tiny_models, tmp_path):
    """Model-site files are mostly fp16 and carry extra buffers the loader must skip."""
    components = tiny_models.components("sd15", False)
    path = mf.save_single_file(components, tmp_path / "half.safetensors", torch.float16, with_buffers=True)
    checkpoint = load_file(str(path))
    assert checkpoint["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in checkpoint
    pipe = mf.PIPELINES["sd15", False].from_single_file(
        str(path), config=str(tiny_models.path("sd15", False)), local_files_only=True)
    assert_same_weights(components, pipe, cast=torch.float16)


def test_ldm_layout_keys(tiny_models):
    """Spot checks of the original layout that model sites share."""
    sd15 = mf.single_file_state_dict(tiny_models.components("sd15", False))
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in sd15
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd15  # upsampler, no attention
    sdxl_parts = tiny_models.components("sdxl", False)
    sdxl = mf.single_file_state_dict(sdxl_parts)
    assert "model.diffusion_model.label_emb.0.0.weight" in sdxl
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sdxl  # upsampler after attention
    open_clip = "conditioner.embedders.1.model."
    projection = sdxl_parts["text_encoder_2"].text_projection.weight
    assert torch.equal(sdxl[open_clip + "text_projection"], projection.T)
    hidden = sdxl_parts["text_encoder_2"].config.hidden_size
    assert sdxl[open_clip + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * hidden, hidden)
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in sdxl
