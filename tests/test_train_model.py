"""`train-model`: a latent diffusion model of one's own, trained on the CPU with the tiny config at 32 px.

What a user relies on: the losses fall; the folder made loads through the editor's own loader and fills a
mask through the real engine (text- and class-conditioned); a resumed run goes on with the same steps and
losses as an uninterrupted one; unreadable images, a full disk and out-of-memory do not end a run; bad
settings are refused in one line; perceptual weights are never unpickled.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from app.core import imageops
from app.core.geometry import Rect
from app.engine.events import CancelToken, EngineError, EventKind
from app.engine.request import GenerationRequest, JobKind, MaskOptions, SamplingOptions
from app.engine.runner import run_job
from app.training.checkpoints import load_checkpoint
from app.training.model import cli
from app.training.model.autoencoder import load_perceptual
from app.training.model.settings import ModelTrainingSettings
from app.training.model.train import CHECKPOINT, settings_from_dict, train_model
from app.training.progress import Control

pytest.importorskip("diffusers")

SIZE = 32                    # training resolution of every run here: the tiny config at half its size


def write_images(folder, count: int, seed: int = 0, captions: bool = False) -> None:
    """Smooth coloured gradients with a little noise, 40 x 40 (cropped to 32 x 32 by the training)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:40, 0:40]
    for index in range(count):
        phase = rng.uniform(0, 255, 3)
        pixels = np.dstack([(x * 6 + phase[0]) % 256, (y * 6 + phase[1]) % 256, ((x + y) * 3 + phase[2]) % 256])
        pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image-{seed}-{index}.png")
        if captions:
            (folder / f"image-{seed}-{index}.txt").write_text(f"a gradient number {index}", encoding="utf-8")


def settings(folder, out, **changes) -> ModelTrainingSettings:
    values = dict(folder=str(folder), out=str(out), resolution=SIZE, steps_autoencoder=6, steps_diffusion=6,
                  batch=2, sample_every=0, checkpoint_every=1000, device="cpu")
    return ModelTrainingSettings(**{**values, **changes})


def train(chosen: ModelTrainingSettings, control: Control | None = None, on_event=None) -> list:
    events = []

    def report(event) -> None:
        events.append(event)
        if on_event:
            on_event(event)
    train_model(chosen, report, control or Control())
    return events


def step_losses(events) -> list[float]:
    return [event.loss for event in events if event.kind == "step"]


def fill(folder, prompt: str):
    """A Fill of a box through the real engine and loader; (result event, image, mask)."""
    from app.engine.diffusion.engine import DiffusionEngine
    from app.engine.diffusion.model_manager import ModelManager

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[Rect(30, 20, 30, 24).slices()] = 255
    request = GenerationRequest(JobKind.FILL, image, mask, prompt=prompt, model=str(folder), device="cpu",
                                sampling=SamplingOptions(steps=4, seed=5), mask_options=MaskOptions(feather=4))
    events = []
    run_job(DiffusionEngine(request.model, ModelManager()), request, 1, events.append, CancelToken())
    return events[-1], image, mask


def assert_fill_keeps_the_rest(result, image, mask) -> None:
    assert result.kind == EventKind.RESULT, result.message
    out = result.variants[0].image
    assert out.shape == image.shape
    far = imageops.feather_mask(mask, 4) == 0
    np.testing.assert_array_equal(out[far], image[far])
    assert not np.array_equal(out[mask > 0], image[mask > 0])


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, tiny_models):
    """30 autoencoder + 30 diffusion steps on 4 captioned images, conditioned on the tiny SD 1.5's CLIP."""
    root = tmp_path_factory.mktemp("text_model")
    write_images(root / "images", 4, captions=True)
    chosen = settings(root / "images", root / "model", steps_autoencoder=30, steps_diffusion=30, sample_every=20,
                      text_encoder=str(tiny_models.path("sd15", inpaint=False, form="folder")))
    return root / "model", train(chosen)


@pytest.fixture(scope="module")
def class_model(tmp_path_factory):
    """A class-conditioned model of two sub-folders (cats, dogs), with two unreadable files among them."""
    root = tmp_path_factory.mktemp("class_model")
    write_images(root / "pets" / "cats", 2, seed=1)
    write_images(root / "pets" / "dogs", 2, seed=2)
    (root / "pets" / "cats" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "pets" / "dogs" / "empty.jpg").write_bytes(b"")
    return root, train(settings(root / "pets", root / "model"))


# -- training -----------------------------------------------------------------------------------------------

def test_thirty_steps_lower_the_autoencoder_and_the_diffusion_loss(text_model):
    _, events = text_model
    assert events[-1].kind == "done", events[-1].message
    steps = [event for event in events if event.kind == "step"]
    assert [event.step for event in steps] == list(range(1, 61)) and {event.total for event in steps} == {60}
    autoencoder = [event.loss for event in steps if event.message == "autoencoder"]
    diffusion = [event.loss for event in steps if event.message == "diffusion"]
    assert len(autoencoder) == len(diffusion) == 30
    assert np.mean(autoencoder[-5:]) < 0.7 * np.mean(autoencoder[:5])
    assert np.mean(diffusion[-5:]) < 0.9 * np.mean(diffusion[:5])


def test_samples_are_written_for_both_phases(text_model):
    _, events = text_model
    samples = [event for event in events if event.kind == "sample"]
    assert [event.step for event in samples] == [20, 30, 40, 60]
    for event in samples:
        image = np.asarray(Image.open(event.path))
        assert image.ndim == 3 and image.shape[0] % SIZE == 0 and image.std() > 0
    assert samples[0].message.startswith("autoencoder") and samples[-1].message.startswith("diffusion")


def test_text_model_folder_loads_and_fills_in_the_editor(text_model):
    from app.engine.diffusion.devices import plan_device
    from app.engine.diffusion.model_files import inspect_folder, resolve_source
    from app.engine.diffusion.model_loader import load_model

    folder, events = text_model
    assert events[-1].path == str(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert all((folder / part / "config.json").is_file() for part in ("unet", "vae", "text_encoder"))
    assert (folder / "scheduler" / "scheduler_config.json").is_file()
    assert not list(folder.glob("*/*.bin"))                     # weights are safetensors only
    assert inspect_folder(folder) == ("sd1", True)
    model = load_model(resolve_source(str(folder)), plan_device("cpu"))
    assert model.unet.config.in_channels == 9 and model.native_size == SIZE
    scale = model.vae.config.scaling_factor
    assert scale != 1.0 and 0.01 <= scale <= 100
    assert_fill_keeps_the_rest(*fill(folder, "a gradient number 2"))


def test_class_model_loads_and_the_prompt_picks_the_class(class_model):
    root, events = class_model
    assert events[-1].kind == "done", events[-1].message
    folder = root / "model"
    assert json.loads((folder / "class_labels.json").read_text()) == {"labels": ["cats", "dogs"]}
    assert not (folder / "text_encoder").exists()
    for prompt in ("Dogs", "", "  cats "):
        assert_fill_keeps_the_rest(*fill(folder, prompt))
    result, _, _ = fill(folder, "a horse")
    assert result.kind == EventKind.ERROR
    assert "\n" not in result.message and "cats, dogs" in result.message and "a horse" in result.message


def test_class_labels_reach_the_unet(class_model):
    from app.engine.diffusion.devices import plan_device
    from app.engine.diffusion.model_files import resolve_source
    from app.engine.diffusion.model_loader import load_model
    from app.engine.diffusion.text_encoding import encode_prompts

    model = load_model(resolve_source(str(class_model[0] / "model")), plan_device("cpu"))
    cond, uncond = encode_prompts(model, ["DOGS", ""], "cpu")
    assert cond.class_labels.tolist() == [1] and uncond.class_labels.tolist() == [2]
    with pytest.raises(EngineError, match="negative prompt must be one of its labels"):
        encode_prompts(model, ["cats", "blurry"], "cpu")


def test_a_class_model_refuses_a_style_lora_a_controlnet_and_references_in_one_line(class_model, tmp_path):
    from dataclasses import replace

    from app.engine.diffusion.engine import DiffusionEngine
    from app.engine.diffusion.model_manager import ModelManager
    from app.engine.request import ControlInput, ReferenceInput, StyleOptions

    folder = str(class_model[0] / "model")
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.full((64, 64), 255, np.uint8)
    base = GenerationRequest(JobKind.FILL, image, mask, prompt="cats", model=folder, device="cpu",
                             sampling=SamplingOptions(steps=2, seed=1))
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"unused: refused before it is read")
    for request in (replace(base, style=StyleOptions(name="Ink", lora=str(lora))),
                    replace(base, controls=(ControlInput("canny", "unused", image=image),)),
                    replace(base, references=(ReferenceInput(image),), ip_adapter="unused")):
        events = []
        run_job(DiffusionEngine(folder, ModelManager()), request, 1, events.append, CancelToken())
        assert events[-1].kind == EventKind.ERROR and "\n" not in events[-1].message
        assert events[-1].message.startswith("model is a class-conditioned model: it takes no ControlNet"), \
            events[-1].message


def test_a_class_model_without_its_labels_is_refused(class_model, tmp_path):
    import shutil

    from app.engine.diffusion.model_files import inspect_folder

    folder = tmp_path / "unlabelled"
    shutil.copytree(class_model[0] / "model", folder, ignore=shutil.ignore_patterns(CHECKPOINT))
    (folder / "class_labels.json").write_text(json.dumps({"labels": ["cats"]}))
    with pytest.raises(EngineError, match="1 labels, but its UNet has 3 class embeddings"):
        inspect_folder(folder)
    (folder / "class_labels.json").unlink()
    with pytest.raises(EngineError, match="text_encoder/config.json is missing"):
        inspect_folder(folder)


def test_unreadable_images_are_skipped_and_counted(class_model):
    _, events = class_model
    notes = [event.message for event in events if event.kind == "note"]
    assert any("4 images; 2 skipped as unreadable" in note for note in notes)
    assert events[0].kind == "note" and next(e for e in events if e.kind == "started").total == 12


def test_too_few_images_is_one_line(tmp_path):
    write_images(tmp_path / "few", 3)
    (tmp_path / "few" / "bad.png").write_bytes(b"nope")
    events = train(settings(tmp_path / "few", tmp_path / "out"))
    assert events[-1].kind == "error"
    assert "3 images; 1 skipped" in events[-1].message and "at least 4" in events[-1].message
    assert "\n" not in events[-1].message


def test_out_inside_the_image_folder_is_refused(tmp_path):
    write_images(tmp_path / "images", 4)
    events = train(settings(tmp_path / "images", tmp_path / "images" / "model"))
    assert events[-1].kind == "error" and "inside the image folder" in events[-1].message
    assert not (tmp_path / "images" / "model").exists()


def test_perceptual_loss_is_left_out_with_a_note(class_model, monkeypatch):
    _, events = class_model
    if "lpips" not in sys.modules:
        assert any(e.message.startswith("perceptual loss left out:") for e in events if e.kind == "note")
    monkeypatch.setitem(sys.modules, "lpips", None)           # not installed
    loss, note = load_perceptual("cpu")
    assert loss is None and note.startswith("perceptual loss left out: the lpips package")


class _Planted:
    """What a hostile weights file could hold: loading it by unpickling would run `marker.touch()`."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_perceptual_weights_are_never_unpickled(tmp_path, monkeypatch):
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, package / "weights" / "v0.1" / "vgg.pth")
    fake = types.ModuleType("lpips")
    fake.__file__ = str(package / "__init__.py")

    class LPIPS(torch.nn.Module):
        def __init__(self, **options) -> None:
            super().__init__()
            self.net = torch.nn.Module()
    fake.LPIPS = LPIPS
    monkeypatch.setitem(sys.modules, "lpips", fake)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    loss, note = load_perceptual("cpu")
    assert loss is None and "VGG16 weights are not at" in note
    (hub / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"features.0.weight": _Planted(marker)}, hub / "checkpoints" / "vgg16-397923af.pth")
    loss, note = load_perceptual("cpu")
    assert loss is None and "could not be read" in note
    assert not marker.exists()


# -- resuming and reliability ------------------------------------------------------------------------------

def test_resume_continues_the_same_steps_and_losses(tmp_path):
    import threading

    write_images(tmp_path / "images", 4)
    pausing = Control()

    def pause_at_three(event) -> None:
        if event.kind == "step" and event.step == 3:
            pausing.pause()
            threading.Timer(0.3, pausing.resume).start()
    whole = train(settings(tmp_path / "images", tmp_path / "whole"), pausing, pause_at_three)
    assert whole[-1].kind == "done", whole[-1].message
    kinds = [event.kind for event in whole]
    assert kinds.index("checkpoint") + 1 == kinds.index("paused") == kinds.index("resumed") - 1
    assert next(event for event in whole if event.kind == "paused").step == 3
    stops = iter([4, 9])                # once in each phase
    stop = {"at": next(stops)}

    def cancel_at(event) -> None:
        if event.kind == "step" and event.step == stop["at"]:
            control.cancel()
    parts = []
    for resume in (False, True, True):
        control = Control()
        events = train(settings(tmp_path / "images", tmp_path / "parts", resume=resume), control, cancel_at)
        parts.append((events, load_checkpoint(tmp_path / "parts" / CHECKPOINT)))
        stop["at"] = next(stops, None)
    (first, saved_first), (second, saved_second), (third, _) = parts
    assert first[-1].kind == "cancelled"
    assert first[-1].message == "Cancelled at step 4; the checkpoint is kept, so resuming goes on from there."
    assert (saved_first.step, saved_first.info["phase"]) == (4, "autoencoder")
    assert (saved_second.step, saved_second.info["phase"]) == (9, "diffusion")
    started = next(event for event in second if event.kind == "started")
    assert started.step == 4 and started.losses == step_losses(first)
    assert second[-1].kind == "cancelled" and [e.step for e in second if e.kind == "step"] == list(range(5, 10))
    assert third[-1].kind == "done", third[-1].message
    assert step_losses(first) + step_losses(second) + step_losses(third) == step_losses(whole)
    from safetensors.torch import load_file

    for part in ("unet", "vae"):
        a = load_file(tmp_path / "whole" / part / "diffusion_pytorch_model.safetensors")
        b = load_file(tmp_path / "parts" / part / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(a[key], b[key]) for key in a)
    longer = train(settings(tmp_path / "images", tmp_path / "parts", steps_diffusion=8, resume=True))
    assert longer[-1].kind == "done" and [e.step for e in longer if e.kind == "step"] == [13, 14]


def test_a_full_disk_and_out_of_memory_do_not_end_the_run(tmp_path, monkeypatch):
    from app.core import safe_files
    from app.training import checkpoints
    from app.training.model.autoencoder import AutoencoderPhase

    saves = {"count": 0}

    def disk_fills_up(target, write):
        saves["count"] += 1
        if saves["count"] == 1:
            return safe_files.write_atomically(target, write)

        def partly(handle):
            handle.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return safe_files.write_atomically(target, partly)
    monkeypatch.setattr(checkpoints, "write_atomically", disk_fills_up)
    real_step, failed = AutoencoderPhase.step, []

    def out_of_memory_once(phase, *args):
        if not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real_step(phase, *args)
    monkeypatch.setattr(AutoencoderPhase, "step", out_of_memory_once)
    write_images(tmp_path / "images", 4)
    events = train(settings(tmp_path / "images", tmp_path / "out", steps_autoencoder=4, steps_diffusion=2,
                            checkpoint_every=2))
    assert events[-1].kind == "done", events[-1].message
    notes = [event.message for event in events if event.kind == "note"]
    assert any(note.startswith("Out of memory: switched on gradient checkpointing") for note in notes)
    assert any("Could not save the checkpoint at step 4 (No space left on device); the last one saved is kept"
               in note for note in notes)
    kept = load_checkpoint(tmp_path / "out" / CHECKPOINT)
    assert kept.step == 2 and kept.info["phase"] == "autoencoder" and len(kept.info["losses"]) == 2
    assert sorted(p.name for p in (tmp_path / "out" / CHECKPOINT).iterdir()) == ["state.json",
                                                                                  "weights-0000002.safetensors"]
    monkeypatch.undo()
    resumed = train(settings(tmp_path / "images", tmp_path / "out", steps_autoencoder=4, steps_diffusion=2,
                             checkpoint_every=2, resume=True))
    assert next(e for e in resumed if e.kind == "started").step == 2
    assert resumed[-1].kind == "done", resumed[-1].message


def test_an_earlier_run_is_not_overwritten_or_resumed_with_other_settings(class_model):
    root, _ = class_model
    fresh = train(settings(root / "pets", root / "model"))
    assert fresh[-1].kind == "error" and "--resume" in fresh[-1].message
    other = train(settings(root / "pets", root / "model", seed=7, resume=True))
    assert other[-1].kind == "error" and "other settings" in other[-1].message


# -- the training process and the command line ----------------------------------------------------------------

def test_the_training_process_runs_a_model_job(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    from app.training.progress import TrainingEvent

    write_images(tmp_path / "images", 4)
    job = tmp_path / "job.json"
    chosen = settings(tmp_path / "images", tmp_path / "model", steps_autoencoder=2, steps_diffusion=2)
    job.write_text(json.dumps({"kind": "model", "settings": chosen.to_dict()}))
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, "-m", "app.training", str(job)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=dict(os.environ, PYTHONPATH=str(root)))
    events = []
    for line in process.stdout:
        event = TrainingEvent.from_line(line)
        assert event is not None, line                 # nothing but events on stdout
        events.append(event)
        if event.kind in ("done", "cancelled", "error"):
            break
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    assert events[-1].kind == "done", events[-1].message
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3, 4]
    assert {e.message for e in events if e.kind == "step"} == {"autoencoder", "diffusion"}
    assert (tmp_path / "model" / "model_index.json").is_file()


def test_train_model_on_the_command_line(tmp_path, capsys):
    from app.cli import run

    write_images(tmp_path / "images", 4)
    arguments = ["train-model", str(tmp_path / "images"), "--out", str(tmp_path / "model"), "--resolution", "32",
                 "--steps-autoencoder", "2", "--steps-diffusion", "2", "--batch", "2", "--device", "cpu"]
    assert run(arguments) == 0
    assert "Trained a tiny model" in capsys.readouterr().err
    assert (tmp_path / "model" / "class_labels.json").is_file()
    assert run(arguments) == 1                          # the checkpoint is there: --resume or another --out
    assert "add --resume" in capsys.readouterr().err
    assert run(arguments[:-2] + ["--device", "cpu", "--batch", "0"]) == 2


# -- settings -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,expected", [
    ({"colour": "red"}, "unknown setting 'colour'"),
    ({"config": "huge"}, "config must be one of tiny, small, base"),
    ({"steps_diffusion": 0}, "steps_diffusion must be a whole number"),
    ({"batch": "4"}, "batch must be a whole number"),
    ({"resolution": 60}, "resolution must be a multiple of 8"),
    ({"resolution": 96, "config": "base"}, "resolution must be a multiple of 64"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"device": "tpu"}, "device must be one of"),
    ({"folder": ""}, "no image folder given"),
    ({"resume": "yes"}, "resume must be true or false"),
])
def test_settings_from_dict_refuses_bad_values(change, expected):
    data = {"folder": "images", "out": "model", **change}
    with pytest.raises((TypeError, ValueError), match=expected):
        settings_from_dict(data)


def test_settings_round_trip_and_the_cli_fills_them():
    chosen = ModelTrainingSettings("images", "model", config="small", steps_diffusion=50, text_encoder="sd15")
    assert settings_from_dict(chosen.to_dict()) == chosen
    assert chosen.plan.steps_autoencoder == 20_000 and chosen.plan.steps_diffusion == 50
    assert chosen.plan.resolution == 256 and chosen.plan.total == 20_050
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["pics", "--out", "made", "--config", "tiny", "--steps-autoencoder", "10",
                              "--steps-diffusion", "20", "--batch", "2", "--resolution", "48", "--resume",
                              "--seed", "3", "--sample-every", "5", "--device", "cpu"])
    made = cli.settings_from_args(args)
    assert (made.folder, made.out, made.steps_autoencoder, made.steps_diffusion, made.batch, made.resolution,
            made.resume, made.seed, made.sample_every, made.device) == ("pics", "made", 10, 20, 2, 48, True, 3, 5,
                                                                        "cpu")
    with pytest.raises(ValueError, match="multiple of 8"):
        cli.settings_from_args(parser.parse_args(["pics", "--out", "made", "--resolution", "50"]))
