"""Hostile config folders and model folders: nothing a file names is ever imported, no pickled code runs,
and each refusal is one line naming what was refused.

A config folder here is a copy of resources/models/sd15 whose model_index.json names a module the test
writes into tmp_path (on sys.path); importing that module writes a marker file, so "never imported" is the
marker never appearing. The module is also the kind a user's machine has installed (this, venv.__main__).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine.diffusion.config_folder import ALLOWED, SCHEDULERS, check_config_folder, check_part_config
from app.engine.diffusion.devices import plan_device
from app.engine.events import EngineError
from app.engine.diffusion.model_files import CONFIG_ROOT, CheckpointInfo, ModelSource, inspect_checkpoint
from app.engine.diffusion.model_loader import load_model
from app.editor.model_library import ModelLibrary, describe_model
from tests.fuzzing import bounded

ROOT = Path(__file__).resolve().parent.parent
ZEN = "Beautiful is better than ugly"


@pytest.fixture
def hostile_module(tmp_path, monkeypatch):
    """(name, marker): a module on sys.path that writes `marker` when it is imported."""
    folder = tmp_path / "modules"
    folder.mkdir()
    name = f"lc_hostile_{uuid.uuid4().hex[:10]}"
    marker = tmp_path / "module-was-imported"
    (folder / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    monkeypatch.syspath_prepend(str(folder))
    return name, marker


def config_folder(tmp_path, **changes) -> Path:
    """resources/models/sd15 with model_index.json entries replaced (None removes one)."""
    folder = tmp_path / f"config-{uuid.uuid4().hex[:6]}"
    shutil.copytree(CONFIG_ROOT / "sd15", folder)
    index = json.loads((folder / "model_index.json").read_text())
    for key, value in changes.items():
        if value is None:
            index.pop(key, None)
        else:
            index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture
def checkpoint(tiny_models):
    """An SD 1.x single file (the tiny model), which the shipped sd15 config describes."""
    return tiny_models.path("sd15", form="single_file")


def load_with(checkpoint: Path, config: Path):
    return load_model(ModelSource("file", str(checkpoint), str(config)), plan_device("cpu", "auto", "auto"))


def copied_model(tmp_path, tiny_models, family: str = "sd15") -> Path:
    """A copy of the tiny diffusers folder of `family`, as tmp_path/model, to damage."""
    return Path(shutil.copytree(tiny_models.path(family), tmp_path / "model"))


def load_folder(folder: Path):
    return load_model(ModelSource("folder", str(folder)), plan_device("cpu", "auto", "auto"))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# -- config folders --------------------------------------------------------------------------------------

@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder", "scheduler", "tokenizer", "safety_checker",
                                  "feature_extractor", "image_encoder"])
def test_a_config_folder_naming_a_module_is_refused_when_added_and_loaded_and_never_imports_it(
        tmp_path, hostile_module, checkpoint, part, capfd):
    module, marker = hostile_module
    config = config_folder(tmp_path, **{part: [module, "Anything"]})
    library = ModelLibrary(tmp_path / "models.json")
    with pytest.raises(EngineError) as added:
        library.add(str(checkpoint), str(config))
    with pytest.raises(EngineError) as loaded:
        load_with(checkpoint, config)
    for error in (added, loaded):
        message = one_line(error)
        assert f"config folder {config.name}: model_index.json names {module}.Anything for '{part}'" in message
        assert "allowed" in message
    assert not marker.exists()
    assert module not in sys.modules
    assert library.entries() == []
    assert "Traceback" not in capfd.readouterr().err


def test_the_message_says_which_class_is_allowed(tmp_path, checkpoint):
    config = config_folder(tmp_path, unet=["this", "X"])
    with pytest.raises(EngineError) as error:
        describe_model(str(checkpoint), str(config))
    assert str(error.value) == (f"config folder {config.name}: model_index.json names this.X for 'unet'; only "
                                "diffusers.UNet2DConditionModel is allowed")


def test_an_installed_module_that_prints_is_never_imported(tmp_path, checkpoint, monkeypatch, capfd):
    monkeypatch.delitem(sys.modules, "this", raising=False)      # so an import would print again
    config = config_folder(tmp_path, unet=["this", "X"])
    for attempt in (lambda: describe_model(str(checkpoint), str(config)), lambda: load_with(checkpoint, config)):
        with pytest.raises(EngineError) as error:
            attempt()
        assert "this.X for 'unet'" in one_line(error)
    assert "this" not in sys.modules
    assert ZEN not in capfd.readouterr().out


def test_a_missing_module_is_one_line_and_no_traceback(tmp_path, checkpoint, caplog, capfd):
    config = config_folder(tmp_path, text_encoder=["no_such_module_anywhere", "CLIPTextModel"])
    with pytest.raises(EngineError) as error:
        load_with(checkpoint, config)
    assert "no_such_module_anywhere.CLIPTextModel for 'text_encoder'" in one_line(error)
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("changes, expected", [
    ({"evil": ["diffusers", "UNet2DConditionModel"]}, "names evil, which is not a part of a Stable Diffusion"),
    ({"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "names text_encoder_2, which is not"),
    ({"unet": "diffusers.UNet2DConditionModel"}, "not a [library, class] pair"),
    ({"unet": ["diffusers", "UNet2DConditionModel", "x"]}, "not a [library, class] pair"),
    ({"unet": None}, "model_index.json names no unet"),
    ({"scheduler": [None, None]}, "model_index.json names no scheduler"),
    ({"requires_safety_checker": "yes"}, "requires_safety_checker the value yes; it must be true or false"),
    ({"unet": ["diffusers", "UNet2DConditionModel\nline two"]}, "for 'unet'"),
])
def test_other_unusable_model_indexes_are_one_line(tmp_path, checkpoint, changes, expected):
    with pytest.raises(EngineError) as error:
        describe_model(str(checkpoint), str(config_folder(tmp_path, **changes)))
    assert expected in one_line(error)


def test_model_index_that_is_not_a_small_json_object_is_refused(tmp_path, checkpoint):
    config = config_folder(tmp_path)
    for content, expected in ((b"[1, 2]", "not a JSON object"), (b"[" * 50_000, "not valid JSON"),
                              (b"\xff\xfe{}", "not valid JSON"), (b" " * (1 << 20) + b"{}", "too large")):
        (config / "model_index.json").write_bytes(content)
        with pytest.raises(EngineError) as error:
            describe_model(str(checkpoint), str(config))
        assert expected in one_line(error) and "model_index.json" in str(error.value)


def test_a_config_folder_without_a_component_config_is_refused(tmp_path, checkpoint):
    config = config_folder(tmp_path)
    (config / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(EngineError) as error:
        load_with(checkpoint, config)
    assert one_line(error) == f"config folder {config.name} has no scheduler/scheduler_config.json"


def test_a_config_folder_with_nulls_and_any_allowed_scheduler_is_accepted_and_loads(tmp_path, tiny_models):
    """What pipelines write (optional parts as [null, null] or null) is accepted, and loads."""
    import diffusers

    checkpoint = tiny_models.path("sd15", form="single_file")
    config = tmp_path / "config"
    shutil.copytree(tiny_models.config_folder("sd15"), config)
    index = json.loads((config / "model_index.json").read_text())
    index.update(safety_checker=None, image_encoder=None, feature_extractor=["transformers", "CLIPImageProcessor"])
    (config / "model_index.json").write_text(json.dumps(index))
    model = load_with(checkpoint, config)
    assert model.family == "sd1" and model.unet.config.in_channels == 4
    for name in SCHEDULERS:
        index["scheduler"] = ["diffusers", name]
        (config / "model_index.json").write_text(json.dumps(index))
        check_config_folder(config, inspect_checkpoint(checkpoint), checkpoint.name)
        assert hasattr(diffusers, name)
    # The scheduler named is never built (the samplers make their own from its config), so one whose extra
    # dependency is missing here (LMS needs scipy) loads too.
    index["scheduler"] = ["diffusers", "LMSDiscreteScheduler"]
    (config / "model_index.json").write_text(json.dumps(index))
    assert load_with(checkpoint, config).scheduler_config["beta_schedule"] == "scaled_linear"


def test_every_allowed_class_of_a_loaded_part_exists_in_the_installed_libraries():
    import diffusers
    import transformers

    libraries = {"diffusers": diffusers, "transformers": transformers}
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        for library, name in ALLOWED[part]:
            assert hasattr(libraries[library], name), f"{library}.{name}"


def test_the_cli_refuses_a_hostile_config_folder_in_one_line(tmp_path, hostile_module, checkpoint):
    module, marker = hostile_module
    pixels = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "modules"), str(ROOT)]))
    for value, named in (([module, "Anything"], f"{module}.Anything"), (["this", "X"], "this.X"),
                         (["venv.__main__", "X"], "venv.__main__.X")):
        config = config_folder(tmp_path, unet=value)
        out = tmp_path / "out.png"
        result = subprocess.run([sys.executable, str(ROOT / "main.py"), "fill", str(tmp_path / "photo.png"),
                                 "--mask", str(tmp_path / "mask.png"), "-o", str(out), "--model", str(checkpoint),
                                 "--model-config", str(config), "--device", "cpu", "--steps", "1"],
                                capture_output=True, text=True, timeout=120, env=environment)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, result.stderr
        assert len(lines) == 1 and f"names {named} for 'unet'" in lines[0], result.stderr
        assert result.stdout == "" and ZEN not in result.stdout
        assert not out.exists()
    assert not marker.exists()


# -- component configs that would make building a part costly ----------------------------------------------

def changed_config(folder: Path, name: str, key: str, value) -> Path:
    path = folder / name
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    return folder


BOMBS = [   # (file, key, value, how the value is shown)
    ("scheduler/scheduler_config.json", "num_train_timesteps", 2_000_000_000, "2000000000"),   # tried 8 GB
    ("scheduler/scheduler_config.json", "num_train_timesteps", 1e8, "100000000.0"),            # 10 s, 763 MB
    ("scheduler/scheduler_config.json", "beta_end", float("nan"), "NaN"),
    ("scheduler/scheduler_config.json", "trained_betas", [0.01] * 100_000, "'[0.01, 0.01, "),
    ("text_encoder/config.json", "max_position_embeddings", 5e7, "50000000.0"),               # 400 MB
    ("text_encoder/config.json", "max_position_embeddings", 50_000_000, "50000000"),
    ("text_encoder/config.json", "vocab_size", 10**9, "1000000000"),
    ("text_encoder/config.json", "num_hidden_layers", 100_000, "100000"),
    ("unet/config.json", "block_out_channels", [320, 640, 10**7, 1280], "'[320, 640, 10000000, 1280]'"),
    ("unet/config.json", "layers_per_block", 10**6, "1000000"),
    ("unet/config.json", "transformer_layers_per_block", [1, 2, 10**5], "'[1, 2, 100000]'"),
    ("vae/config.json", "block_out_channels", [128] * 1000, "'[128, 128, "),
    ("vae/config.json", "latent_channels", "4", "4"),
]


@pytest.mark.parametrize("name, key, value, shown", BOMBS)
def test_a_config_folder_whose_part_config_would_exhaust_memory_is_refused_in_one_line(
        tmp_path, checkpoint, name, key, value, shown):
    config = changed_config(config_folder(tmp_path), name, key, value)
    with bounded(seconds=1.0, megabytes=16):
        with pytest.raises(EngineError) as added:
            describe_model(str(checkpoint), str(config))
    with pytest.raises(EngineError) as loaded:
        load_with(checkpoint, config)
    for error in (added, loaded):
        assert one_line(error).startswith(f"config folder {config.name}: {name} gives {key} the value {shown}")
        assert "; it must be " in str(error.value)


@pytest.mark.parametrize("name, key, value, shown", [bomb for bomb in BOMBS if not bomb[0].startswith("vae")] + [
    ("text_encoder_2/config.json", "max_position_embeddings", 5e7, "50000000.0")])
def test_a_diffusers_folder_whose_part_config_would_exhaust_memory_is_refused_in_one_line(
        tmp_path, tiny_models, name, key, value, shown):
    family = "sdxl" if name.startswith("text_encoder_2") else "sd15"
    folder = copied_model(tmp_path, tiny_models, family)
    changed_config(folder, name, key, value)
    with bounded(seconds=1.0, megabytes=16):
        with pytest.raises(EngineError) as added:
            describe_model(str(folder))
    with pytest.raises(EngineError) as loaded:
        load_folder(folder)
    for error in (added, loaded):
        assert one_line(error).startswith(f"model/{name} gives {key} the value {shown}")
        assert "; it must be " in str(error.value)


def test_a_text_encoder_config_far_larger_than_its_weights_is_refused_before_loading(tmp_path, tiny_models):
    """Each key within its bound, but together 13 billion parameters beside the tiny model's weights:
    transformers would make up the missing ones in memory (51 GB and more)."""
    folder = copied_model(tmp_path, tiny_models)
    for key, value in (("hidden_size", 4096), ("intermediate_size", 16384), ("num_hidden_layers", 64),
                       ("num_attention_heads", 32)):
        changed_config(folder, "text_encoder/config.json", key, value)
    with bounded(seconds=5.0, megabytes=64):
        with pytest.raises(EngineError) as loaded:
            load_folder(folder)
    assert one_line(loaded).startswith("model/text_encoder cannot be used: its config describes a text encoder "
                                       "of 13,")


def test_trained_betas_must_give_one_beta_per_timestep(tmp_path, checkpoint):
    config = changed_config(config_folder(tmp_path), "scheduler/scheduler_config.json", "trained_betas",
                            [0.01] * 10)
    with pytest.raises(EngineError) as error:
        describe_model(str(checkpoint), str(config))
    assert one_line(error) == (f"config folder {config.name}: scheduler/scheduler_config.json gives 10 "
                               "trained_betas for 1,000 timesteps (num_train_timesteps); it must give one for each")


def test_a_scheduler_config_is_checked_before_a_scheduler_is_built():
    from app.engine.diffusion.samplers import make_scheduler

    with bounded(seconds=0.5, megabytes=1):
        with pytest.raises(EngineError) as error:
            make_scheduler("dpmpp_2m_karras", {"num_train_timesteps": 2_000_000_000})
    assert one_line(error) == ("the model's scheduler config gives num_train_timesteps the value 2000000000; it "
                               "must be a whole number from 1 to 10,000")


def test_any_value_of_any_bounded_key_is_accepted_or_refused_in_one_line():
    from app.engine.diffusion.config_folder import PART_LIMITS

    odd = [10**400, -(10**400), -1, 0, 1, 77, 0.5, True, None, "4", [], [1] * 17, [[1, 2]], [[[1]]], {}, {"a": 1},
           float("nan"), float("inf"), 1e308, [0.5] * 1000, [float("nan")]]
    for part, limits in PART_LIMITS.items():
        for key in limits:
            for value in odd:
                try:
                    check_part_config(part, {key: value}, f"{part}/config.json")
                except EngineError as error:
                    assert "\n" not in str(error) and str(error).startswith(f"{part}/config.json gives ")
                    assert key in str(error)


def test_every_shipped_component_config_is_within_the_bounds():
    for path in sorted(CONFIG_ROOT.glob("*/*/*.json")):
        part = path.parent.name
        check_part_config(part, json.loads(path.read_text()), str(path))


# -- a config folder's own tokenizers ------------------------------------------------------------------------

def with_own_tokenizer(tmp_path, tiny_models) -> Path:
    """The tiny SD 1.x model's config folder, with a copy of its hub-layout tokenizer folder."""
    config = tmp_path / "config"
    shutil.copytree(tiny_models.config_folder("sd15"), config)
    if not (config / "tokenizer").is_dir():
        shutil.copytree(tiny_models.path("sd15") / "tokenizer", config / "tokenizer")
    return config


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer.json"])
def test_a_config_folder_tokenizer_file_over_its_bound_is_refused_unread(tmp_path, tiny_models, checkpoint,
                                                                          name):
    config = with_own_tokenizer(tmp_path, tiny_models)
    with open(config / "tokenizer" / name, "wb") as handle:
        handle.truncate(1 << 30)                 # 1 GiB, sparse
    with bounded(seconds=5.0, megabytes=64):
        with pytest.raises(EngineError) as error:
            load_with(checkpoint, config)
    assert one_line(error) == (f"config folder {config.name}: tokenizer/{name} is too large for a tokenizer "
                               "(1,073,741,824 bytes; at most 16,777,216 are read)")


def test_a_config_folder_tokenizer_is_built_from_a_copy_of_its_tokenizer_files_only(tmp_path, tiny_models,
                                                                                    checkpoint):
    """Nothing else in the folder is read: a chat template (which transformers would read) as large as
    1 GiB costs nothing."""
    config = with_own_tokenizer(tmp_path, tiny_models)
    merges = config / "tokenizer" / "merges.txt"
    merges.write_text("".join(merges.read_text(encoding="utf-8").splitlines(keepends=True)[:-10]),
                      encoding="utf-8")          # its own merges, so it is built from the folder
    with open(config / "tokenizer" / "chat_template.jinja", "wb") as handle:
        handle.truncate(1 << 30)
    with bounded(seconds=30.0, megabytes=256):
        model = load_with(checkpoint, config)
    assert model.tokenizers[0].chat_template is None
    assert model.tokenizers[0]("a red fox").input_ids[0] == 49406


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("key", ["vocab", "merges", "vocab_file", "merges_file", "tokenizer_file"])
def test_a_tokenizer_config_naming_other_files_never_makes_them_read(tmp_path, tiny_models, checkpoint, key):
    """tokenizer_config.json keys that name files would make transformers read a FIFO (hanging for ever),
    /dev/zero (until memory runs out) or anything else: only the keys a CLIP tokenizer needs are kept."""
    config = with_own_tokenizer(tmp_path, tiny_models)
    merges = config / "tokenizer" / "merges.txt"
    merges.write_text("".join(merges.read_text(encoding="utf-8").splitlines(keepends=True)[:-10]),
                      encoding="utf-8")          # its own merges, so it is built from the folder
    os.mkfifo(tmp_path / "pipe")
    (config / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({key: str(tmp_path / "pipe"),
                                                                            "model_max_length": 77}))
    with bounded(seconds=30.0, megabytes=256):
        model = load_with(checkpoint, config)
    assert model.tokenizers[0]("a red fox").input_ids[0] == 49406 and model.tokenizers[0].model_max_length == 77


# -- pickles inside a diffusers folder ----------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("part, safe_name, pickle_name", [
    ("text_encoder", "model.safetensors", "pytorch_model.bin"),
    ("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
])
def test_a_pickle_with_code_in_a_model_folder_is_refused_in_one_line_and_never_runs(
        tmp_path, tiny_models, part, safe_name, pickle_name, capfd, caplog):
    folder = copied_model(tmp_path, tiny_models)
    marker = tmp_path / "payload-ran"
    (folder / part / safe_name).unlink()
    (folder / part / pickle_name).write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    capfd.readouterr()
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    assert one_line(error) == (f"refused to load model/{part}/{pickle_name}: it holds Python objects or code, "
                               "not just weights (ask for a .safetensors version)")
    assert not marker.exists()
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if r.exc_info]


def test_plain_pickled_weights_in_a_model_folder_still_load(tmp_path, tiny_models):
    """torch.save'd tensors (what old repos ship) pass the same check and load as the .safetensors would."""
    from safetensors.torch import load_file

    folder = copied_model(tmp_path, tiny_models)
    weights = load_file(str(folder / "text_encoder" / "model.safetensors"))
    torch.save(weights, folder / "text_encoder" / "pytorch_model.bin")
    (folder / "text_encoder" / "model.safetensors").unlink()
    model = load_folder(folder)
    state = model.text_encoders[0].state_dict()
    key = next(k for k in weights if k.endswith("final_layer_norm.weight"))
    assert torch.equal(next(v for k, v in state.items() if k.endswith("final_layer_norm.weight")), weights[key])


def test_a_pickle_beside_safetensors_weights_is_never_read(tmp_path, tiny_models):
    folder = copied_model(tmp_path, tiny_models)
    marker = tmp_path / "payload-ran"
    for part, name in (("unet", "diffusion_pytorch_model.bin"), ("text_encoder", "pytorch_model.bin")):
        (folder / part / name).write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    model = load_folder(folder)
    assert model.family == "sd1" and not marker.exists()


def test_integer_weights_in_a_model_folder_are_refused_naming_the_part_and_dtype(tmp_path, tiny_models):
    folder = copied_model(tmp_path, tiny_models)
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    weights = {k: v.to(torch.int8) for k, v in load_file(str(path)).items()}
    save_file(weights, str(path))
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    message = one_line(error)
    assert message.startswith("model/unet/diffusion_pytorch_model.safetensors cannot be used: its UNet weight ")
    assert " is I8, but a Stable Diffusion model's weights are floating point" in message


def test_a_damaged_header_in_a_model_folder_is_one_line_naming_the_file(tmp_path, tiny_models):
    folder = copied_model(tmp_path, tiny_models)
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    assert one_line(error).startswith("model/vae/diffusion_pytorch_model.safetensors is not a readable "
                                      ".safetensors file: ")


def test_a_model_folder_part_claiming_more_than_such_a_part_holds_is_refused_unread(tmp_path, tiny_models):
    """Two 1.5 GB tensors as a VAE's weights (a real one is 0.3 GB in F32), in a sparse file."""
    folder = copied_model(tmp_path, tiny_models)
    header = {f"w{i}": {"dtype": "F32", "shape": [375_000_000], "data_offsets": [i * 1_500_000_000,
                                                                               (i + 1) * 1_500_000_000]}
              for i in range(2)}
    raw = json.dumps(header).encode()
    with open(folder / "vae" / "diffusion_pytorch_model.safetensors", "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + 3_000_000_000)
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    assert one_line(error) == ("model/vae cannot be used: its tensors take 3,000,000,000 bytes; no Stable "
                               "Diffusion VAE takes more than 2,147,483,648")


def test_a_model_folder_pickle_larger_than_such_a_part_is_refused_before_torch_reads_it(tmp_path, tiny_models):
    folder = copied_model(tmp_path, tiny_models)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with open(folder / "vae" / "diffusion_pytorch_model.bin", "wb") as handle:
        handle.truncate(3_000_000_000)           # sparse
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    assert one_line(error) == ("model/vae/diffusion_pytorch_model.bin cannot be used: it is 3,000,000,000 bytes; "
                               "no Stable Diffusion VAE takes more than 2,147,483,648")


def test_a_shard_index_naming_a_file_outside_the_folder_is_refused(tmp_path, tiny_models):
    folder = copied_model(tmp_path, tiny_models)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    index = {"weight_map": {"conv_in.weight": "../../elsewhere.safetensors"}}
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(EngineError) as error:
        load_folder(folder)
    assert "'../../elsewhere.safetensors', which is not a file beside it" in one_line(error)


@pytest.mark.parametrize("info", [CheckpointInfo("sd1", False, None), CheckpointInfo("sd1", True, None),
                                  CheckpointInfo("sd2", False, False), CheckpointInfo("sd2", False, True),
                                  CheckpointInfo("sd2", True, None), CheckpointInfo("sdxl", False, None),
                                  CheckpointInfo("sdxl", True, None)])
def test_every_shipped_config_folder_passes_the_check(info):
    checked = check_config_folder(CONFIG_ROOT / info.config_name, info, "model.safetensors")
    assert checked.index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert "scheduler/scheduler_config.json" in checked.configs
