"""Learning a style (DreamBooth LoRA) on tiny random models: what a user relies on.

Training lowers the loss; the LoRA file is in kohya's layout, loads through diffusers' own loader and the
editor's style loader, changes the result, and at weight 0 is exactly no LoRA; a cancelled run resumes with
the same steps and losses as one that never stopped; bad images, a full disk and running out of memory are
handled with one line each and lose nothing.
"""
from __future__ import annotations

import errno
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.training import checkpoints
from app.training.checkpoints import load_checkpoint
from app.training.progress import Control, TrainingEvent
from app.training.style_lora import _StyleRun, train_style
from app.training.style_settings import StyleTrainingSettings, settings_from_dict

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from tests.test_diffusion_engine import MANAGER, run  # noqa: E402
from tests.test_lora_styles import lora_layers, result_image, styled_fill  # noqa: E402

KOHYA_KEY = re.compile(r"lora_(unet|te|te1|te2)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)")


def style_images(folder, count=4, corrupt=0):
    """`count` random pictures of several shapes (a caption beside the first), and `corrupt` broken files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"art{i}.png"
        Image.fromarray(rng.integers(0, 256, (96 + 16 * i, 128, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "art0.txt").write_text("a red barn in a field\n")
    for i in range(corrupt):
        path = folder / f"broken{i}.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        paths.append(str(path))
    return paths


def settings(tiny_models, tmp_path, family="sd15", inpaint=False, **overrides):
    values = dict(images=tuple(style_images(tmp_path / "images")), name="Ink", trigger="zkx",
                  model=str(tiny_models.path(family, inpaint, "folder")), out=str(tmp_path / "run"), steps=20,
                  sample_every=10, sample_steps=3, checkpoint_every=10, device="cpu")
    values.update(overrides)
    return StyleTrainingSettings(**values)


def train(s, control=None, on_event=None):
    events = []

    def report(event):
        events.append(event)
        if on_event:
            on_event(event)
    train_style(s, report, control or Control())
    return events


def final(events) -> TrainingEvent:
    ends = [e for e in events if e.kind in ("done", "cancelled", "error")]
    assert len(ends) == 1, [e.kind for e in events]
    return ends[0]


@pytest.fixture(scope="module")
def learned(tiny_models, tmp_path_factory):
    """One 20-step run on the tiny SD 1.5 model: (settings, events)."""
    s = settings(tiny_models, tmp_path_factory.mktemp("learned"), learning_rate=5e-3)
    return s, train(s)


@pytest.mark.parametrize("inpaint", [False, True])
def test_thirty_steps_on_four_images_lower_the_loss(tiny_models, tmp_path, inpaint):
    run_ = _StyleRun(settings(tiny_models, tmp_path, inpaint=inpaint, steps=30, learning_rate=1e-3,
                              sample_every=0), lambda event: None, Control())
    run_.prepare()
    before = run_.fixed_loss()
    run_._loop(0)
    after = run_.fixed_loss()
    assert after < before - 0.01, (before, after)
    assert len(run_.losses) == 30


def test_a_run_reports_steps_samples_and_its_lora(learned):
    s, events = learned
    done = final(events)
    assert done.kind == "done", done.message
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == list(range(1, 21)) and all(e.total == 20 for e in steps)
    assert all(np.isfinite(e.loss) for e in steps) and steps[-1].eta_s == 0
    samples = [e for e in events if e.kind == "sample"]
    assert [e.step for e in samples] == [10, 20]
    assert all(Image.open(e.path).size == (128, 128) for e in samples)
    assert samples[0].message == "zkx, a red barn in a field"          # the trigger word, then the caption
    assert done.path.endswith("Ink.safetensors")
    assert not (Path(s.out) / "checkpoint").exists()             # done: nothing left to resume


def test_the_lora_keys_are_kohya_ones(learned, tiny_models, tmp_path):
    from safetensors import safe_open

    with safe_open(final(learned[1]).path, "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(KOHYA_KEY.fullmatch(key) for key in keys), [k for k in keys if not KOHYA_KEY.fullmatch(k)]
    assert all(key.startswith("lora_unet_") for key in keys)
    assert metadata["ss_network_dim"] == "8" and metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["latent_canvas_trigger"] == "zkx"
    with_text = train(settings(tiny_models, tmp_path, steps=2, train_text_encoder=True, sample_every=0))
    with safe_open(final(with_text).path, "pt") as f:
        prefixes = {key.split("_")[1] for key in f.keys()}
    assert prefixes == {"unet", "te"}              # SD 1.x: lora_te_, as kohya and A1111 name it


def test_diffusers_own_loader_reads_the_lora_and_it_changes_the_output(learned, tiny_models):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_models.path("sd15", False, "folder")),
                                                   safety_checker=None, requires_safety_checker=False)

    def image():
        return pipe("a house", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(3)).images[0]
    before = image()
    pipe.load_lora_weights(final(learned[1]).path, adapter_name="ink")
    assert "ink" in pipe.get_active_adapters()
    targets = [n for n, _ in pipe.unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
    assert sum(1 for name, _ in pipe.unet.named_modules() if name.endswith("lora_A.ink")) == len(targets) > 0
    assert not np.allclose(image(), before)


def test_the_style_loader_uses_it_and_weight_zero_is_no_lora(learned, tiny_models):
    lora = final(learned[1]).path
    plain = result_image(styled_fill(tiny_models))
    styled = result_image(styled_fill(tiny_models, lora=lora))
    assert not np.array_equal(styled, plain)
    np.testing.assert_array_equal(result_image(styled_fill(tiny_models, lora=lora, lora_weight=0.0)), plain)
    no_style = result_image(styled_fill(tiny_models, style="None"))
    np.testing.assert_array_equal(result_image(styled_fill(tiny_models, lora=lora, strength=0.0)), no_style)
    assert lora_layers(MANAGER.current) == 0


def test_a_learned_sdxl_lora_on_an_sd15_model_is_one_line(tiny_models, tmp_path):
    events = train(settings(tiny_models, tmp_path, family="sdxl", steps=2, sample_every=0))
    lora = final(events).path
    result, _ = run(styled_fill(tiny_models, lora=lora))
    assert result.kind.name == "ERROR" and "\n" not in result.message
    assert result.message.startswith("LoRA Ink.safetensors is an SDXL LoRA"), result.message


def test_a_cancelled_run_resumes_with_the_same_steps_and_losses(tiny_models, tmp_path):
    whole = train(settings(tiny_models, tmp_path / "a", sample_every=0))
    control = Control()
    first = train(settings(tiny_models, tmp_path / "b", sample_every=0), control,
                  on_event=lambda e: control.cancel() if e.kind == "step" and e.step == 7 else None)
    assert final(first).kind == "cancelled" and "step 7" in final(first).message
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoint").step == 7
    second = train(settings(tiny_models, tmp_path / "b", sample_every=0, resume=True))
    started = next(e for e in second if e.kind == "started")
    assert started.step == 7 and len(started.losses) == 7
    resumed = [e for e in second if e.kind == "step"]
    assert [e.step for e in resumed] == list(range(8, 21))
    losses = started.losses + [e.loss for e in resumed]
    np.testing.assert_allclose(losses, [e.loss for e in whole if e.kind == "step"], rtol=1e-5)
    a, b = (load_lora(final(events).path) for events in (whole, second))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def load_lora(path):
    from safetensors.torch import load_file

    return load_file(path)


def test_pause_saves_a_checkpoint_and_resume_goes_on(tiny_models, tmp_path):
    control = Control()
    seen = []

    def on_event(event):
        seen.append(event.kind)
        if event.kind == "step" and event.step == 3:
            control.pause()
        if event.kind == "paused":
            threading.Timer(0.3, control.resume).start()
    events = train(settings(tiny_models, tmp_path, steps=6, sample_every=0), control, on_event)
    assert final(events).kind == "done"
    assert seen.index("paused") < seen.index("resumed") and seen.count("step") == 6
    paused = next(e for e in events if e.kind == "paused")
    assert paused.step == 3


def test_unreadable_images_are_skipped_and_counted(tiny_models, tmp_path):
    images = style_images(tmp_path / "images", count=4, corrupt=2)
    events = train(settings(tiny_models, tmp_path, images=tuple(images), steps=2, sample_every=0))
    assert final(events).kind == "done"
    note = next(e.message for e in events if e.kind == "note" and "skipped" in e.message)
    assert note.startswith("Learning from 4 images; 2 skipped as unreadable (")
    too_few = style_images(tmp_path / "few", count=2, corrupt=2)
    end = final(train(settings(tiny_models, tmp_path, images=tuple(too_few), steps=2)))
    assert end.kind == "error" and "\n" not in end.message
    assert end.message.startswith("2 images; 2 skipped as unreadable") and "at least 3" in end.message


def test_a_full_disk_while_saving_keeps_the_last_good_checkpoint_and_goes_on(tiny_models, tmp_path, monkeypatch):
    real = checkpoints.write_atomically
    calls, kept = [], []

    def full_disk(target, write):
        calls.append(target.name)
        if len(calls) == 2:                  # the second checkpoint's weights
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real(target, write)

    def on_event(event):
        if event.kind == "note" and "Could not save" in event.message:
            kept.append(load_checkpoint(tmp_path / "run" / "checkpoint"))
    monkeypatch.setattr(checkpoints, "write_atomically", full_disk)
    events = train(settings(tiny_models, tmp_path, steps=30, checkpoint_every=10, sample_every=0), on_event=on_event)
    assert final(events).kind == "done"
    note = next(e.message for e in events if e.kind == "note" and "Could not save" in e.message)
    assert note == ("Could not save the checkpoint at step 20 (No space left on device); the last one saved is "
                    "kept. Going on.")
    assert kept[0].step == 10 and len(kept[0].info["losses"]) == 10
    assert not list((tmp_path / "run").rglob(".*.tmp"))


def test_a_full_disk_when_cancelling_fails_in_one_line_and_keeps_the_last_checkpoint(tiny_models, tmp_path,
                                                                                    monkeypatch):
    real = checkpoints.write_atomically
    control = Control()

    def on_event(event):
        if event.kind == "step" and event.step == 12:
            monkeypatch.setattr(checkpoints, "write_atomically", full)
            control.cancel()

    def full(target, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
    monkeypatch.setattr(checkpoints, "write_atomically", real)
    end = final(train(settings(tiny_models, tmp_path, steps=30, checkpoint_every=10, sample_every=0), control,
                      on_event))
    assert end.kind == "error" and "No space left on device" in end.message and "\n" not in end.message
    assert load_checkpoint(tmp_path / "run" / "checkpoint").step == 10
    monkeypatch.setattr(checkpoints, "write_atomically", real)
    resumed = train(settings(tiny_models, tmp_path, steps=30, checkpoint_every=10, sample_every=0, resume=True))
    assert final(resumed).kind == "done" and next(e for e in resumed if e.kind == "started").step == 10


def test_out_of_memory_switches_on_gradient_checkpointing_and_goes_on(tiny_models, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    real = UNet2DConditionModel.forward
    failed = []

    def forward(self, *args, **kwargs):
        if self.training and not failed:
            failed.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    events = train(settings(tiny_models, tmp_path, steps=3, sample_every=0))
    assert final(events).kind == "done"
    note = next(e.message for e in events if e.kind == "note" and "memory" in e.message)
    assert note == "Out of memory: switched on gradient checkpointing (slower, needs less memory); going on."
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3]


def test_prior_preservation_makes_class_images_once(tiny_models, tmp_path):
    s = settings(tiny_models, tmp_path, steps=2, sample_every=0, prior_preservation=True, class_images=3)
    events = train(s)
    assert final(events).kind == "done"
    made = sorted((tmp_path / "run" / "class_images").glob("*.png"))
    assert len(made) == 3 and all(Image.open(p).size == (128, 128) for p in made)
    again = train(s)
    assert not any("class image" in e.message for e in again if e.kind == "note")


def test_aspect_ratio_buckets_keep_each_picture_whole(tiny_models, tmp_path):
    from app.training.dataset import bucket_for, buckets

    assert bucket_for(1600, 900, 512) == (704, 384) and bucket_for(900, 1600, 512) == (384, 704)
    assert bucket_for(1000, 1000, 512) == (512, 512)
    assert all(w % 64 == 0 and h % 64 == 0 and 0.8 < w * h / 512 ** 2 < 1.2 for w, h in buckets(512))
    events = train(settings(tiny_models, tmp_path, steps=2, sample_every=0, crop="buckets"))
    assert final(events).kind == "done"


@pytest.mark.parametrize("change, problem", [
    ({"surprise": 1}, "unknown setting 'surprise'"),
    ({"steps": 0}, "steps must be a whole number from 1 to 100000"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"preset": "ultra"}, "preset must be one of fast, balanced, best"),
    ({"learning_rate": float("nan")}, "learning_rate must be a number above 0"),
    ({"name": " "}, "the style needs a name"),
    ({"images": []}, "no images given"),
    ({"resolution": 100}, "resolution must be a multiple of 64"),
])
def test_settings_from_a_job_file_refuse_what_they_do_not_know(change, problem):
    data = dict(images=["a.png"], name="Ink", model="m", out="o")
    data.update(change)
    with pytest.raises((ValueError, TypeError), match=re.escape(problem)):
        settings_from_dict(data)


def test_presets_and_overrides():
    s = StyleTrainingSettings(images=("a",), name="x", model="m", out="o", preset="fast")
    assert (s.plan.rank, s.plan.steps, s.plan.text_encoder) == (4, 400, False)
    s = StyleTrainingSettings(images=("a",), name="x", model="m", out="o", preset="best", steps=10, rank=2)
    assert (s.plan.rank, s.plan.steps, s.plan.text_encoder) == (2, 10, True)
    assert settings_from_dict(s.to_dict()) == s
