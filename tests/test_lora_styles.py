"""Style strength and style LoRAs: the styles file keys, the request, and the engine on tiny random models.

What a user relies on: strength 0 is exactly no style, 1 the full style, values between blend the text
conditioning; a style's LoRA changes the result, is scaled by its weight and the strength, and leaves the
model exactly as it was for the next job; an unusable LoRA file is one line naming it.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from app.core.geometry import Rect
from app.core.styles import Style, StyleError, load_styles
from app.engine.base import format_parameters
from app.engine.events import CancelToken, EventKind
from app.engine.request import GenerationRequest, JobKind, StyleOptions
from app.editor.job_builder import (JobSettings, build_expand_request, build_fill_request, build_restyle_request)

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from tests.test_diffusion_engine import MANAGER, box_mask, model_args, photo, run  # noqa: E402

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


# -- the styles file -------------------------------------------------------------------------------------

def write_styles(folder: Path, entries) -> Path:
    path = folder / "styles.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries), encoding="utf-8")
    return path


def test_lora_keys_load_with_paths_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "my styles"
    folder.mkdir()
    path = write_styles(folder, [
        {"name": "None", "prompt": "{prompt}"},
        {"name": "Ink", "prompt": "{prompt}, ink", "lora": "loras/ink.safetensors", "lora_weight": 0.7},
        {"name": "Home", "prompt": "{prompt}", "lora": "~/ink.SAFETENSORS"},
        {"name": "Abs", "prompt": "{prompt}", "lora": str(tmp_path / "abs.safetensors"), "lora_weight": -2},
    ])
    none, ink, home, absolute = load_styles(path)
    assert none.lora is None and none.lora_weight == 1.0
    assert ink.lora == str(folder.resolve() / "loras" / "ink.safetensors") and ink.lora_weight == 0.7
    assert home.lora == str(tmp_path / "home" / "ink.SAFETENSORS") and home.lora_weight == 1.0
    assert absolute.lora == str(tmp_path / "abs.safetensors") and absolute.lora_weight == -2.0
    assert isinstance(absolute.lora_weight, float)


def test_shipped_styles_still_load_without_loras():
    styles = load_styles()
    assert len(styles) == 1 + 18              # "None" and the 18 styles
    assert all(style.lora is None for style in styles)


@pytest.mark.parametrize("extra, problem", [
    ({"lora": 3}, "lora must be the path of a .safetensors file"),
    ({"lora": ""}, "lora must be the path of a .safetensors file"),
    ({"lora": "detail.ckpt"}, "lora must be a .safetensors file, got 'detail.ckpt'"),
    ({"lora": "detail"}, "lora must be a .safetensors file"),
    ({"lora": "a.safetensors", "lora_weight": "high"}, "lora_weight must be a number from -10 to 10"),
    ({"lora": "a.safetensors", "lora_weight": True}, "lora_weight must be a number from -10 to 10"),
    ({"lora": "a.safetensors", "lora_weight": 11}, "lora_weight must be a number from -10 to 10"),
    ({"lora_weight": 0.5}, "lora_weight is set but there is no lora"),
    ({"lora": "a.safetensors", "lora_scale": 0.5}, "unknown key 'lora_scale'"),
])
def test_bad_lora_keys_are_one_line(tmp_path, extra, problem):
    path = write_styles(tmp_path, [{"name": "Oil", "prompt": "{prompt}, oil", **extra}])
    with pytest.raises(StyleError) as error:
        load_styles(path)
    assert str(error.value).startswith("styles.json: style 'Oil'")
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_nan_lora_weight_is_refused(tmp_path):
    path = write_styles(tmp_path, '[{"name": "Oil", "prompt": "{prompt}", "lora": "a.safetensors", '
                                  '"lora_weight": NaN}]')
    with pytest.raises(StyleError, match="lora_weight must be a number"):
        load_styles(path)


# -- the request -----------------------------------------------------------------------------------------

STYLES = [Style("None", "{prompt}", ""),
          Style("Oil", "oil painting of {prompt}, thick impasto brush strokes", "photo, blurry",
                sampler="euler", steps=4, guidance=5.0, lora="/loras/oil.safetensors", lora_weight=0.8)]


@pytest.mark.parametrize("strength", [0.0, 0.4, 1.0])
def test_fill_expand_and_restyle_carry_the_same_style(strength):
    image = photo(64, 48)
    settings = JobSettings(prompt="a harbour", negative_prompt="text", style="oil", style_strength=strength,
                           steps=9, guidance=6.0, seed=3)
    requests = [build_fill_request(image, box_mask(image.shape, Rect(8, 8, 16, 16)), settings, STYLES),
                build_expand_request(image, Rect(-16, 0, 80, 48), settings, STYLES),
                build_restyle_request(image, settings, STYLES)]
    expected = StyleOptions("Oil", strength, "a harbour", "text", "/loras/oil.safetensors", 0.8)
    for request in requests:
        assert request.style == expected
        assert request.prompt == "oil painting of a harbour, thick impasto brush strokes"
        assert request.negative_prompt == "photo, blurry, text"
        s = request.sampling
        if strength > 0:                       # the style's settings apply
            assert (s.steps, s.guidance, s.sampler) == (4, 5.0, "euler")
        else:                                  # ... unless it is switched off
            assert (s.steps, s.guidance, s.sampler) == (9, 6.0, "dpmpp_2m_karras")
    assert requests[0].style.effective_lora_weight == pytest.approx(0.8 * strength)


def test_style_strength_out_of_range_is_refused():
    image = photo(32, 32)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="style strength must be between 0 and 1"):
            build_restyle_request(image, JobSettings(style="Oil", style_strength=bad), STYLES)


def test_parameters_mention_the_strength_only_below_one():
    image = photo(32, 32)
    full = build_restyle_request(image, JobSettings(style="Oil", seed=1), STYLES)
    half = build_restyle_request(image, JobSettings(style="Oil", style_strength=0.5, seed=1), STYLES)
    assert "Style strength" not in format_parameters(full, 1, "m")
    assert "Style: Oil, Style strength: 0.5, Mode: restyle" in format_parameters(half, 1, "m")


def test_a_bare_style_name_is_that_style_in_full():
    request = GenerationRequest(JobKind.RESTYLE, photo(16, 16), style="Cinematic")
    assert request.style == StyleOptions(name="Cinematic")
    assert request.style.effective_lora_weight == 0.0


# -- style strength in the engine ------------------------------------------------------------------------

def styled_fill(tiny_models, style="Oil", strength=1.0, family="sd15", styles=None, seed=5, lora=None,
                lora_weight=1.0, steps=2):
    styles = styles or [STYLES[0], Style("Oil", "oil painting of {prompt}, thick impasto brush strokes",
                                         "photo, blurry", sampler="euler", steps=3, guidance=5.0, lora=lora,
                                         lora_weight=lora_weight)]
    image = photo(96, 80)
    settings = JobSettings(prompt="a harbour", style=style, style_strength=strength, seed=seed, steps=steps,
                           **model_args(tiny_models, family))
    return build_fill_request(image, box_mask(image.shape, Rect(20, 20, 40, 30)), settings, styles)


def result_image(request):
    result, _ = run(request)
    assert result.kind == EventKind.RESULT, result.message
    return result.variants[0].image


def test_strength_zero_is_exactly_no_style_and_one_is_the_style(tiny_models):
    none = result_image(styled_fill(tiny_models, style="None"))
    zero = result_image(styled_fill(tiny_models, strength=0.0))
    full = result_image(styled_fill(tiny_models, strength=1.0))
    np.testing.assert_array_equal(zero, none)
    assert not np.array_equal(full, none)


def capture_text_conditioning(model):
    seen = []

    def hook(module, args, kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        seen.append((kwargs["encoder_hidden_states"].clone(),
                     None if added.get("text_embeds") is None else added["text_embeds"].clone()))
    return seen, model.unet.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_half_strength_conditioning_is_the_lerp(tiny_models, family):
    result_image(styled_fill(tiny_models, style="None", family=family))    # load the model
    seen, handle = capture_text_conditioning(MANAGER.current)
    first_calls = []
    try:
        for strength in (0.0, 1.0, 0.5):
            seen.clear()
            result_image(styled_fill(tiny_models, strength=strength, family=family))
            first_calls.append(seen[0])
    finally:
        handle.remove()
    (none, none_pooled), (full, full_pooled), (half, half_pooled) = first_calls
    assert not torch.equal(none, full)
    torch.testing.assert_close(half, torch.lerp(none, full, 0.5), rtol=0, atol=1e-6)
    if family == "sdxl":
        torch.testing.assert_close(half_pooled, torch.lerp(none_pooled, full_pooled, 0.5), rtol=0, atol=1e-6)


# -- LoRAs ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loras(tiny_models, tmp_path_factory):
    """A random LoRA for the tiny SD 1.5 UNet, in diffusers layout and in kohya layout (same weights)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("loras")
    unet = copy.deepcopy(tiny_models.components("sd15")["unet"])
    torch.manual_seed(11)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False))
    StableDiffusionLoraLoaderMixin.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                                     weight_name="diffusers.safetensors")
    kohya = {}
    for key, value in load_file(folder / "diffusers.safetensors").items():
        module, _, rest = key.partition(".lora_")
        name = "lora_unet_" + module.removeprefix("unet.").replace(".", "_")
        kohya[f"{name}.lora_{'down' if rest.startswith('A') else 'up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(kohya, str(folder / "kohya.safetensors"))
    return folder


def lora_layers(model) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for encoder in [model.unet, *model.text_encoders]
               for m in encoder.modules())


def test_a_style_lora_changes_the_result_and_leaves_the_model_as_it_was(tiny_models, loras):
    before = result_image(styled_fill(tiny_models))
    with_lora = result_image(styled_fill(tiny_models, lora=str(loras / "diffusers.safetensors")))
    assert not np.array_equal(with_lora, before)
    kohya = result_image(styled_fill(tiny_models, lora=str(loras / "kohya.safetensors")))
    np.testing.assert_array_equal(kohya, with_lora)          # both layouts are read the same
    after = result_image(styled_fill(tiny_models))
    np.testing.assert_array_equal(after, before)
    assert lora_layers(MANAGER.current) == 0


def test_lora_weight_is_the_style_weight_times_the_strength(tiny_models, loras):
    from app.engine.diffusion import lora as lora_module

    path = str(loras / "diffusers.safetensors")
    result_image(styled_fill(tiny_models, lora=path, lora_weight=0.8, strength=0.5))
    assert lora_module.loaded(MANAGER.current) == str(Path(path).resolve())     # kept for the next job
    scales = [m.scaling["style"] for m in MANAGER.current.unet.modules()
              if "style" in (getattr(m, "scaling", None) or {})]
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        layers = sum(".lora_A." in key for key in handle.keys())
    assert len(scales) == layers and all(scale == pytest.approx(0.4) for scale in scales)   # alpha / r = 1
    half = result_image(styled_fill(tiny_models, lora=path, lora_weight=0.8, strength=0.5))
    full = result_image(styled_fill(tiny_models, lora=path, lora_weight=0.8, strength=1.0))
    assert not np.array_equal(half, full)
    none = result_image(styled_fill(tiny_models))
    assert lora_module.loaded(MANAGER.current) is None and lora_layers(MANAGER.current) == 0
    assert not np.array_equal(half, none)


@pytest.mark.parametrize("weight, strength", [(0.0, 1.0), (1.0, 0.0)])
def test_weight_or_strength_zero_is_no_lora(tiny_models, loras, weight, strength):
    plain = result_image(styled_fill(tiny_models, strength=strength))
    zero = result_image(styled_fill(tiny_models, lora=str(loras / "diffusers.safetensors"),
                                    lora_weight=weight, strength=strength))
    np.testing.assert_array_equal(zero, plain)


def test_cancel_mid_job_with_a_lora_leaves_the_next_job_exact(tiny_models, loras):
    before = result_image(styled_fill(tiny_models, steps=4))
    token = CancelToken()

    def on_event(event):
        if event.preview is not None and event.step == 1:
            token.cancel()
    result, _ = run(styled_fill(tiny_models, lora=str(loras / "diffusers.safetensors"), steps=4), token, on_event)
    assert result.kind == EventKind.CANCELLED
    np.testing.assert_array_equal(result_image(styled_fill(tiny_models, steps=4)), before)


def corrupt(folder: Path) -> Path:
    path = folder / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return path


def truncated(folder: Path) -> Path:
    path = folder / "cut.safetensors"
    path.write_bytes((Path(__file__).parent / "conftest.py").read_bytes()[:40])
    return path


def header_of_many_tensors(folder: Path) -> Path:
    """A header listing 200,000 empty tensors: refused from its header, before diffusers parses it."""
    entry = '"lora_unet_%07d.lora_down.weight":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}'
    header = ("{" + ",".join(entry % i for i in range(200_000)) + "}").encode()
    path = folder / "many.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


def not_a_lora(folder: Path) -> Path:
    from safetensors.torch import save_file

    path = folder / "weights.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(2, 2)}, str(path))
    return path


def for_another_model(folder: Path) -> Path:
    from safetensors.torch import save_file

    path = folder / "flux.safetensors"
    save_file({"transformer.single_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 2),
               "transformer.single_blocks.0.attn.to_q.lora_B.weight": torch.zeros(2, 2)}, str(path))
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda folder: folder / "missing.safetensors", "LoRA not found: "),
    (corrupt, "LoRA broken.safetensors is not a readable .safetensors file"),
    (truncated, "LoRA cut.safetensors is not a readable .safetensors file"),
    (header_of_many_tensors, "LoRA many.safetensors is not a readable .safetensors file: its header lists 200,000"),
    (not_a_lora, "weights.safetensors is not a LoRA"),
    (for_another_model, "LoRA flux.safetensors has no weights for"),
])
def test_an_unusable_lora_file_is_one_line_naming_it(tiny_models, tmp_path, make, expected):
    before = result_image(styled_fill(tiny_models))
    path = make(tmp_path)
    result, _ = run(styled_fill(tiny_models, lora=str(path)))
    assert result.kind == EventKind.ERROR
    assert result.message.startswith(expected), result.message
    assert path.name in result.message and "\n" not in result.message
    assert lora_layers(MANAGER.current) == 0
    np.testing.assert_array_equal(result_image(styled_fill(tiny_models)), before)


def test_a_lora_of_another_family_is_one_line_and_undone(tiny_models, loras, capfd):
    run(styled_fill(tiny_models, family="sdxl"))
    capfd.readouterr()
    result, _ = run(styled_fill(tiny_models, family="sdxl", lora=str(loras / "kohya.safetensors")))
    assert result.kind == EventKind.ERROR
    assert result.message.startswith("LoRA kohya.safetensors does not fit ") and "SDXL" in result.message
    assert "\n" not in result.message
    assert "Error(s)" not in capfd.readouterr().err            # diffusers' own multi-line log is silenced
    assert lora_layers(MANAGER.current) == 0
