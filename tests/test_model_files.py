"""Telling model files apart without loading them, and never running code from them."""
from __future__ import annotations

import json
import math
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from app.engine.events import EngineError
from app.engine.diffusion.model_files import identify_checkpoint, inspect_checkpoint, resolve_source
from app.engine.diffusion.safetensors_header import DTYPE_BYTES, read_safetensors_header
from tests.fuzzing import bounded

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


# -- the bounded safetensors header reader --------------------------------------------------------------------

def write_header(path, header, data: bytes = b""):
    """A .safetensors file with `header` (a dict, or raw bytes) and `data` after it."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def many_empty_tensors(count: int, key: str = '"data_offsets"') -> bytes:
    entry = '"t%07d":{"dtype":"F32","shape":[0],' + key + ':[0,0]}'
    return ("{" + ",".join(entry % i for i in range(count)) + "}").encode()


def test_a_header_listing_too_many_tensors_is_refused_quickly_and_in_little_memory(tmp_path):
    path = write_header(tmp_path / "many.safetensors", many_empty_tensors(200_000))
    with bounded(seconds=1.0, megabytes=40):
        with pytest.raises(EngineError) as error:
            inspect_checkpoint(path)
    assert str(error.value) == ("many.safetensors is not a readable .safetensors file: its header lists 200,000 "
                                "tensors; a model has at most 50,000")


def test_escaped_names_cannot_hide_tensors_from_the_count(tmp_path):
    path = write_header(tmp_path / "escaped.safetensors", many_empty_tensors(60_000, '"data\\u005foffsets"'))
    with bounded(seconds=1.0, megabytes=40):
        with pytest.raises(EngineError, match="its header lists 60,000 tensors; a model has at most 50,000"):
            inspect_checkpoint(path)


@pytest.mark.parametrize("metadata", [False, True])
@pytest.mark.parametrize("count, refused", [(50_000, False), (50_001, True)])
def test_the_tensor_limit_is_exact_with_or_without_metadata(tmp_path, metadata, count, refused):
    body = many_empty_tensors(count)
    if metadata:
        body = b'{"__metadata__":{"format":"pt"},' + body[1:]
    path = write_header(tmp_path / "limit.safetensors", body)
    if not refused:
        assert len(read_safetensors_header(path).tensors) == count
        return
    with pytest.raises(EngineError) as error:
        read_safetensors_header(path)
    assert str(error.value).endswith(f"its header lists {count:,} tensors; a model has at most 50,000")


def test_a_header_over_the_size_limit_is_refused_from_its_length_alone(tmp_path):
    path = tmp_path / "huge-header.safetensors"
    with open(path, "wb") as handle:            # 90 MB claimed and present (sparse), none of it read
        handle.write((90_000_000).to_bytes(8, "little") + b"{")
        handle.truncate(8 + 90_000_000)
    with bounded(seconds=1.0, megabytes=1):
        with pytest.raises(EngineError, match="its header is 90,000,000 bytes; a model's is at most 33,554,432"):
            inspect_checkpoint(path)


@pytest.mark.parametrize("body, expected", [
    (b'{"t":{"dtype":"F32","shape":[' + b"[]," * 600_000 + b'0],"data_offsets":[0,0]}}', "holds 1,200,00"),
    (b'{"t":' + b"[" * 1_100_000 + b"]" * 1_100_000 + b"}", "holds 1,100,001 values"),
    (b'{"t":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
])
def test_headers_that_would_be_costly_to_parse_are_refused_cheaply(tmp_path, body, expected):
    path = write_header(tmp_path / "costly.safetensors", body)
    with bounded(seconds=1.0, megabytes=40):
        with pytest.raises(EngineError, match=expected):
            inspect_checkpoint(path)


def test_punctuation_inside_strings_is_not_counted_as_structure(tmp_path):
    """kohya LoRAs keep JSON texts (tag frequencies) in their metadata: their braces and commas are text."""
    tags = json.dumps({"10_style": {f"tag {i}": i for i in range(550_000)}})
    metadata = {"ss_tag_frequency": tags, "quoted": '\\"{[:,' * 1000}
    header = {"__metadata__": metadata, "lora_unet_a.lora_down.weight":
              {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}
    path = write_header(tmp_path / "kohya.safetensors", header, b"\0\0")
    raw = json.dumps(header)
    assert raw.count(",") + raw.count(":") > 1_000_000           # over the limit, counted as text
    with bounded(seconds=1.5, megabytes=80):
        read = read_safetensors_header(path)
    assert read.metadata == metadata and list(read.tensors) == ["lora_unet_a.lora_down.weight"]


GOOD = {"__metadata__": {"format": "pt"}, "a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}}


def changed(**entries):
    header = json.loads(json.dumps(GOOD))
    for name, entry in entries.items():
        header[name] = entry
    return header


@pytest.mark.parametrize("header, data, expected", [
    (GOOD, b"\0" * 19, "tensor 'b' lies outside the file's 19 data bytes"),
    (GOOD, b"\0" * 21, "its tensors take 20 bytes but the file holds 21 after the header"),
    (changed(a={"dtype": "Q4", "shape": [2, 3], "data_offsets": [0, 12]}), b"\0" * 20, "unknown dtype 'Q4'"),
    (changed(a={"dtype": "F16", "shape": [-2, -3], "data_offsets": [0, 12]}), b"\0" * 20, "invalid shape"),
    (changed(a={"dtype": "F16", "shape": [True, 3], "data_offsets": [0, 12]}), b"\0" * 20, "invalid shape"),
    (changed(a={"dtype": "F16", "shape": [2.0, 3], "data_offsets": [0, 12]}), b"\0" * 20, "invalid shape"),
    (changed(a={"dtype": "F16", "shape": [2, 3], "data_offsets": [-1, 12]}), b"\0" * 20, "invalid data_offsets"),
    (changed(a={"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 2**70]}), b"\0" * 20, "invalid data_offsets"),
    (changed(a={"dtype": "F16", "shape": [2, 3], "data_offsets": [12, 0]}), b"\0" * 20, "lies outside"),
    (changed(a={"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 12]}), b"\0" * 20,
     "tensor 'a' takes 12 bytes but its shape and dtype need 16"),
    (changed(a={"dtype": "F16", "shape": [2, 3], "data_offsets": [8, 20]}), b"\0" * 20, "overlap or leave gaps"),
    (changed(a={"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12], "x": 1}), b"\0" * 20,
     "not described by exactly a dtype, a shape and data_offsets"),
    (changed(__metadata__={"format": 1}), b"\0" * 20, "__metadata__ is not a map of strings"),
    (changed(**{"a\nb": {"dtype": "F16", "shape": [2, 3], "data_offsets": [20, 20]}}), b"\0" * 20,
     "tensor 'a\\nb' takes 0 bytes"),
    (changed(**{"x" * 2000: {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]}}), b"\0" * 20,
     "a tensor name is 2,000 characters long"),
    (b'["not", "an", "object"]', b"", "its header is not a JSON object"),
    (b'{"a": \xff}', b"", "its header is not UTF-8 text"),
    (b'{"a": 1', b"", "its header is not valid JSON"),
    (b"", b"", "its header is not a JSON object"),
])
def test_every_entry_of_a_header_is_checked(tmp_path, header, data, expected):
    path = write_header(tmp_path / "odd.safetensors", header, data)
    with pytest.raises(EngineError) as error:
        read_safetensors_header(path)
    message = str(error.value)
    assert message.startswith("odd.safetensors is not a readable .safetensors file: ") and "\n" not in message
    assert expected in message, message


def test_the_header_reader_agrees_with_the_safetensors_library(tiny_models):
    from safetensors import safe_open

    for path in (tiny_models.path("sd15", form="single_file"),
                 tiny_models.path("sdxl", form="folder") / "text_encoder_2" / "model.safetensors"):
        header = read_safetensors_header(path)
        with safe_open(str(path), framework="pt") as handle:
            expected = {key: (handle.get_slice(key).get_dtype(), tuple(handle.get_slice(key).get_shape()))
                        for key in handle.keys()}
            assert handle.metadata() == (header.metadata or None)
        assert {key: (info.dtype, info.shape) for key, info in header.tensors.items()} == expected


# -- dtypes a model cannot have ------------------------------------------------------------------------------

def tiny_state(tiny_models, family="sd15"):
    from tests.model_factory import single_file_state_dict

    return dict(single_file_state_dict(tiny_models.components(family)))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("prefix, part", [("model.diffusion_model.", "UNet"), ("first_stage_model.", "VAE"),
                                          ("cond_stage_model.", "text encoder")])
def test_integer_weights_are_refused_naming_the_part_and_the_dtype(tmp_path, tiny_models, suffix, prefix, part):
    state = {key: value.to(torch.int8) if key.startswith(prefix) else value
             for key, value in tiny_state(tiny_models).items()}
    path = tmp_path / f"quantised{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    with pytest.raises(EngineError) as error:
        inspect_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"quantised{suffix} cannot be used: its {part} weight '{prefix}")
    assert message.endswith(" is I8, but a Stable Diffusion model's weights are floating point "
                            "(F16, BF16, F32, F64, F8_E4M3, F8_E5M2)")


def test_float_weights_of_every_precision_and_integer_buffers_are_accepted(tmp_path, tiny_models):
    from tests.model_factory import save_single_file

    for dtype in (torch.float16, torch.bfloat16, torch.float8_e4m3fn):
        path = save_single_file(tiny_models.components("sd15"), tmp_path / f"m-{dtype}.safetensors".replace(
            "torch.", ""), dtype=dtype, with_buffers=True)        # int64 position_ids among them
        assert inspect_checkpoint(path).family == "sd1"
    state = tiny_state(tiny_models)
    state["first_stage_model.loss.discriminator.main.1.num_batches_tracked"] = torch.tensor(3)
    state["model_ema.num_updates"] = torch.tensor(10, dtype=torch.int32)
    torch.save(state, tmp_path / "full-ema.ckpt")
    assert inspect_checkpoint(tmp_path / "full-ema.ckpt").family == "sd1"


# -- what a file may make the loader read -------------------------------------------------------------------

GB = 10**9


def sparse_checkpoint(path, extra: dict, keys=(UNET, SD1, VAE)):
    """A .safetensors file with small tensors under `keys` and the `extra` ones (name -> (dtype, shape)); the
    data section is a hole (truncate), so a file of any size costs a few KB on disk."""
    entries = {key: ("F16", [320, 4, 3, 3] if key == UNET else [2]) for key in keys} | extra
    header, offset = {}, 0
    for name, (dtype, shape) in entries.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + offset)
    return path


def test_a_sparse_file_claiming_a_100_gb_tensor_is_refused_from_its_header(tmp_path):
    path = sparse_checkpoint(tmp_path / "sparse.safetensors", {"junk": ("U8", [100 * GB])})
    assert path.stat().st_size > 100 * GB and path.stat().st_blocks * 512 < 1 << 20
    with bounded(seconds=1.0, megabytes=4):
        with pytest.raises(EngineError) as error:
            inspect_checkpoint(path)
    assert str(error.value) == ("sparse.safetensors cannot be used: its tensor 'junk' takes 100,000,000,000 bytes; "
                                "no Stable Diffusion model's tensor takes more than 2,147,483,648")


TWO_GB = ("F32", [500_000_000])                 # 2,000,000,000 bytes: just under the limit of one tensor


@pytest.mark.parametrize("extra, expected", [
    ({f"model_ema.w{i}": TWO_GB for i in range(7)},
     "14,000,000,000 bytes of its tensors belong to no model part (EMA copies, training state); no Stable "
     "Diffusion 1.x model holds more than 12,884,901,888 of those"),
    ({f"model.diffusion_model.w{i}": TWO_GB for i in range(13)},
     "its tensors take 26,000,023,048 bytes; no Stable Diffusion 1.x model takes more than 25,769,803,776"),
])
def test_a_file_claiming_more_than_its_family_holds_is_refused(tmp_path, extra, expected):
    path = sparse_checkpoint(tmp_path / "large.safetensors", extra)
    with bounded(seconds=1.0, megabytes=4):
        with pytest.raises(EngineError) as error:
            inspect_checkpoint(path)
    assert str(error.value) == f"large.safetensors cannot be used: {expected}"


def test_files_as_large_as_real_full_precision_checkpoints_with_ema_are_accepted(tmp_path):
    """SD 1.x with an F32 EMA copy is 7.7 GB; SDXL in F32 14 GB, 24 GB with its EMA copy."""
    sd1 = sparse_checkpoint(tmp_path / "sd1-ema.safetensors", {f"model.diffusion_model.w{i}": TWO_GB
                                                               for i in range(2)} |
                            {f"model_ema.w{i}": TWO_GB for i in range(2)})
    assert inspect_checkpoint(sd1).family == "sd1"
    xl = sparse_checkpoint(tmp_path / "xl-ema.safetensors", {f"model.diffusion_model.w{i}": TWO_GB
                                                             for i in range(7)} |
                           {f"model_ema.w{i}": TWO_GB for i in range(5)}, keys=(UNET, XL_L, XL_G, VAE))
    assert inspect_checkpoint(xl).family == "sdxl"


def test_a_ckpt_claiming_a_100_gb_tensor_is_refused(tmp_path):
    state = {UNET: torch.zeros(320, 4, 3, 3), SD1: torch.zeros(4), VAE: torch.zeros(2),
             "junk": torch.empty(100 * GB, dtype=torch.uint8, device="meta")}      # its shape, and no bytes
    torch.save({"state_dict": state}, tmp_path / "junk.ckpt")
    with pytest.raises(EngineError) as error:
        inspect_checkpoint(tmp_path / "junk.ckpt")
    assert str(error.value) == ("junk.ckpt cannot be used: its tensor 'junk' takes 100,000,000,000 bytes; no "
                                "Stable Diffusion model's tensor takes more than 2,147,483,648")


def test_a_pickle_larger_than_any_checkpoint_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.ckpt"
    with open(path, "wb") as handle:
        handle.truncate(70 * GB)
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: pytest.fail("torch.load read the file"))
    with bounded(seconds=1.0, megabytes=1):
        with pytest.raises(EngineError) as error:
            inspect_checkpoint(path)
    assert str(error.value) == ("huge.ckpt cannot be used: it is 70,000,000,000 bytes; no Stable Diffusion "
                                "checkpoint takes more than 68,719,476,736")


# -- warnings ---------------------------------------------------------------------------------------------

def test_torch_notes_about_a_refused_file_stay_quiet(tmp_path):
    scripted, protocol4 = tmp_path / "scripted.pt", tmp_path / "protocol4.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # torch.jit's, while the test writes the file
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(scripted))
    torch.save({UNET: torch.zeros(2)}, protocol4, pickle_protocol=4)
    for path, expected in ((scripted, "scripted.pt is not a readable checkpoint"),
                           (protocol4, "refused to load protocol4.ckpt")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # a note that escaped would be raised here
            with pytest.raises(EngineError, match=expected):
                inspect_checkpoint(path)


def test_loading_a_pickle_leaves_no_warning_filter_behind_when_another_thread_uses_catch_warnings(
        tmp_path, monkeypatch):
    """The UI thread (the image reader) enters catch_warnings while a model is checked on a background
    thread, and leaves it after the check: with catch_warnings in the check, the UI thread's exit put
    the check's "ignore everything" back, for the whole process, for good."""
    path = tmp_path / "model.ckpt"
    torch.save({UNET: torch.zeros(320, 4, 3, 3), SD1: torch.zeros(4), VAE: torch.zeros(2)}, path)
    real_load, other_thread = torch.load, warnings.catch_warnings()

    def load_while_the_ui_thread_enters_catch_warnings(*args, **kwargs):
        other_thread.__enter__()
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        return real_load(*args, **kwargs)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        monkeypatch.setattr(torch, "load", load_while_the_ui_thread_enters_catch_warnings)
        inspect_checkpoint(path)
        other_thread.__exit__(None, None, None)
        added = [entry for entry in warnings.filters if entry not in before]
        assert all(action == "ignore" and message is not None for action, message, *_ in added), added
