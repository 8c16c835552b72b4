"""IP-Adapter references: our loop equals diffusers' pipeline with the same adapter, image encoder and image;
the UNet is left as it was; kinds reach their layers; bad adapters and encoders are one line."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from app.engine.diffusion import ip_adapter
from app.engine.diffusion.denoise import DenoiseJob, run_denoise
from app.engine.diffusion.samplers import make_scheduler
from app.engine.events import EventKind
from app.engine.request import ReferenceInput
from tests.reference_factory import save_reference_models
from tests.test_controlnet_parity import NEGATIVE, PROMPT, SEED, SIZE, STEPS, _inpaint_inputs, loaded  # noqa: F401
from tests.test_diffusion_engine import fill_request, run

REFERENCE = np.random.default_rng(3).integers(0, 256, (48, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def references(loaded, tmp_path_factory):  # noqa: F811
    files = {}
    for family in ("sd15", "sdxl"):
        files[family] = save_reference_models(loaded(family, False).unet, tmp_path_factory.mktemp(family), family)
    return files


@pytest.fixture(autouse=True)
def mean_latents(monkeypatch):
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)


def test_a_reference_equals_diffusers_ip_adapter_pipeline(loaded, references):  # noqa: F811
    model = loaded("sd15", False)
    adapter, encoder_dir = references["sd15"]
    image, mask, init, cells, _ = _inpaint_inputs(model)
    processor = CLIPImageProcessor.from_pretrained(encoder_dir)
    encoder = CLIPVisionModelWithProjection.from_pretrained(encoder_dir)
    pipe = StableDiffusionInpaintPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0], unet=model.unet,
        scheduler=make_scheduler("euler", model.scheduler_config), safety_checker=None,
        feature_extractor=processor, image_encoder=encoder, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    before = dict(model.unet.attn_processors)
    pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name, image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    with torch.inference_mode():
        theirs = pipe(PROMPT, image=image, mask_image=mask, ip_adapter_image=REFERENCE, height=SIZE, width=SIZE,
                      num_inference_steps=STEPS, guidance_scale=6.0, negative_prompt=NEGATIVE, strength=1.0,
                      generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    pipe.unload_ip_adapter()
    model.unet.set_attn_processor(before)
    with ip_adapter.applied(model, str(adapter), str(encoder_dir), [ReferenceInput(REFERENCE, 0.7)], True) as embeds:
        job = DenoiseJob(init, cells, None, PROMPT, NEGATIVE, 6.0, STEPS, 1.0, "euler", [SEED], (SIZE, SIZE),
                         pure_noise=True, image_embeds=embeds)
        with torch.inference_mode():
            ours, _ = run_denoise(model, job, lambda *a: False)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    job = DenoiseJob(init, cells, None, PROMPT, NEGATIVE, 6.0, STEPS, 1.0, "euler", [SEED], (SIZE, SIZE),
                     pure_noise=True)
    with torch.inference_mode():
        plain, _ = run_denoise(model, job, lambda *a: False)
    assert (plain - ours).abs().max() > 1e-3                       # the reference does change the result


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_unet_is_as_before_after_a_job_with_references(loaded, references, family):  # noqa: F811
    model = loaded(family, False)
    adapter, encoder_dir = references[family]
    before = {name: type(p) for name, p in model.unet.attn_processors.items()}
    with ip_adapter.applied(model, str(adapter), str(encoder_dir), [ReferenceInput(REFERENCE, 0.5, "style"),
                                                                    ReferenceInput(REFERENCE, 1.0)], True):
        scales = {name: p.scale for name, p in model.unet.attn_processors.items() if hasattr(p, "to_k_ip")}
    assert {name: type(p) for name, p in model.unet.attn_processors.items()} == before
    assert model.unet.encoder_hid_proj is None and model.unet.config.encoder_hid_dim_type is None
    style = "up_blocks.0.attentions.1" if family == "sdxl" else "up_blocks.1"
    for name, (style_scale, general) in scales.items():
        assert general == 1.0 and style_scale == (0.5 if name.startswith(style) else 0.0)


def test_references_through_the_engine(tiny_models, references):
    adapter, encoder_dir = references["sd15"]
    request = fill_request(tiny_models, seed=5)
    with_reference = replace(request, references=(ReferenceInput(REFERENCE, 0.8),), ip_adapter=str(adapter))
    guided, _ = run(with_reference)                            # the encoder is found beside the adapter
    plain, _ = run(request)
    assert guided.kind == EventKind.RESULT, guided.message
    mask = request.mask > 0
    assert not np.array_equal(guided.variants[0].image[mask], plain.variants[0].image[mask])
    zero, _ = run(replace(with_reference, references=(ReferenceInput(REFERENCE, 0.0),)))
    np.testing.assert_array_equal(zero.variants[0].image, plain.variants[0].image)


def test_an_adapter_of_another_family_is_one_clear_line(tiny_models, references):
    adapter, encoder_dir = references["sdxl"]
    request = replace(fill_request(tiny_models), references=(ReferenceInput(REFERENCE),), ip_adapter=str(adapter),
                      image_encoder=str(encoder_dir))
    result, _ = run(request)
    assert result.kind == EventKind.ERROR
    assert "does not fit the model" in result.message and "another family" in result.message


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing.safetensors", "IP-Adapter not found"),
    (lambda tmp: (tmp / "adapter.bin").write_bytes(b"x") and tmp / "adapter.bin", "never unpickled"),
    (lambda tmp: (tmp / "bad.safetensors").write_bytes(b"\x00" * 32) and tmp / "bad.safetensors", "bad.safetensors"),
])
def test_a_bad_adapter_is_one_clear_line(tiny_models, tmp_path, make, expected):
    request = replace(fill_request(tiny_models), references=(ReferenceInput(REFERENCE),),
                      ip_adapter=str(make(tmp_path)), image_encoder=str(tmp_path))
    result, _ = run(request)
    assert result.kind == EventKind.ERROR and expected in result.message and "\n" not in result.message


def test_references_need_an_adapter_and_sane_values():
    with pytest.raises(ValueError, match="need an IP-Adapter"):
        replace(_plain_request(), references=(ReferenceInput(REFERENCE),))
    with pytest.raises(ValueError, match="scale must be between 0 and 2"):
        ReferenceInput(REFERENCE, 3.0)
    with pytest.raises(ValueError, match="unknown reference kind"):
        ReferenceInput(REFERENCE, 1.0, "colour")


def _plain_request():
    from app.core.geometry import Rect
    from app.engine.request import GenerationRequest, JobKind
    from tests.test_diffusion_engine import box_mask, photo

    image = photo()
    return GenerationRequest(JobKind.FILL, image, box_mask(image.shape, Rect(10, 10, 20, 20)))


def test_references_work_with_attention_slicing_and_an_out_of_memory_retry(tiny_models, references, monkeypatch):
    from tests.test_diffusion_engine import MANAGER, _fail_unet_calls

    adapter, _ = references["sd15"]
    request = replace(fill_request(tiny_models, seed=4, variants=2), references=(ReferenceInput(REFERENCE, 0.8),),
                      ip_adapter=str(adapter), memory_saving="on")
    MANAGER.free()                                 # loaded afresh with the savers on
    sliced, _ = run(request)
    assert sliced.kind == EventKind.RESULT, sliced.message
    model = MANAGER.current
    before = {name: type(p).__name__ for name, p in model.unet.attn_processors.items()}
    assert set(before.values()) == {"SlicedAttnProcessor"}          # as the memory savers left them
    _fail_unet_calls(model, monkeypatch, failures=1)
    retried, _ = run(replace(request, sampling=replace(request.sampling, variants=1)))   # -> the memory savers
    assert retried.kind == EventKind.RESULT, retried.message
    assert {name: type(p).__name__ for name, p in model.unet.attn_processors.items()} == before
    assert model.unet.encoder_hid_proj is None
    MANAGER.free()
