"""The training process and its files: the JSON-lines events, the commands on stdin (a closed stdin cancels),
the job file, atomic checkpoints; the user's styles file a learned style goes into; `train-style` on the
command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.styles import StyleError, learned_style_entry, read_all_styles, save_user_style
from app.training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from app.training.progress import Control, TrainingEvent

ROOT = Path(__file__).resolve().parent.parent
torch = pytest.importorskip("torch")


# -- events and commands ---------------------------------------------------------------------------------

def test_an_event_is_one_json_line_and_reads_back():
    event = TrainingEvent("step", step=3, total=10, loss=0.25, eta_s=12.5, message="step 3/10")
    line = event.to_line()
    assert "\n" not in line and TrainingEvent.from_line(line) == event
    started = TrainingEvent("started", step=2, total=10, losses=[1.0, 0.5])
    assert TrainingEvent.from_line(started.to_line()) == started


@pytest.mark.parametrize("line", ["", "hello", "[1]", '{"kind": "explode"}', '{"kind": "step", "step": "3"}',
                                  '{"kind": "step", "loss": NaN}', '{"kind": "step", "step": true}',
                                  "{" * 100_000, '{"kind": "step", "losses": [1, "x"]}'])
def test_lines_that_are_not_events_are_passed_over(line):
    assert TrainingEvent.from_line(line) is None


def test_control_commands():
    control = Control()
    assert control.apply("pause\n") and control.paused
    assert control.apply("resume") and not control.paused
    assert not control.apply("rm -rf /") and not control.cancelled
    control.pause()
    assert control.apply("cancel") and control.cancelled and not control.paused   # a paused run wakes to end


# -- checkpoints -----------------------------------------------------------------------------------------

def test_checkpoints_replace_each_other_and_keep_one_weights_file(tmp_path):
    save_checkpoint(tmp_path, 10, {"w": torch.ones(2)}, {"losses": [1.0]})
    save_checkpoint(tmp_path, 20, {"w": torch.full((2,), 2.0)}, {"losses": [1.0, 0.5]})
    found = load_checkpoint(tmp_path)
    assert found.step == 20 and found.info == {"losses": [1.0, 0.5]}
    assert torch.equal(found.tensors["w"], torch.full((2,), 2.0))
    assert [p.name for p in tmp_path.glob("weights-*")] == ["weights-0000020.safetensors"]
    assert load_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / "state.json").write_text("{"), "state.json: it is not valid JSON"),
    (lambda f: (f / "state.json").write_text('{"step": -1, "weights": "weights-0000010.safetensors"}'),
     "does not say which step"),
    (lambda f: (f / "state.json").write_text('{"step": 1, "weights": "../../etc/passwd"}'), "does not say which"),
    (lambda f: (f / "weights-0000010.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}garbage"), "weights-0000010"),
])
def test_a_damaged_checkpoint_is_one_line(tmp_path, damage, problem):
    save_checkpoint(tmp_path, 10, {"w": torch.ones(2)}, {})
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=problem) as caught:
        load_checkpoint(tmp_path)
    assert "\n" not in str(caught.value)


# -- the process -----------------------------------------------------------------------------------------

def start_process(job: Path) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "app.training", str(job)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment, text=True)


def test_a_closed_stdin_cancels_the_run_and_keeps_its_checkpoint(tiny_models, tmp_path):
    from tests.test_style_training import settings

    job = tmp_path / "job.json"
    s = settings(tiny_models, tmp_path, steps=5000, sample_every=0, checkpoint_every=1000)
    job.write_text(json.dumps({"kind": "style", "settings": s.to_dict()}))
    process = start_process(job)
    kinds = []
    for line in process.stdout:
        event = TrainingEvent.from_line(line)
        assert event is not None, line             # nothing but events on stdout
        kinds.append(event.kind)
        if event.kind == "step" and event.step == 3:
            process.stdin.close()                  # the editor went away
        if event.kind in ("done", "cancelled", "error"):
            final = event
            break
    assert process.wait(timeout=60) == 0
    assert final.kind == "cancelled", final.message
    kept = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert kept is not None and kept.step >= 3 and len(kept.info["losses"]) == kept.step
    assert kinds[0] == "note" and "started" in kinds


@pytest.mark.parametrize("content, problem", [
    ("not json", "it is not valid JSON"),
    ('{"kind": "python", "settings": {}}', "not a training job"),
    ('{"kind": "style", "settings": {"images": ["a"], "name": "x", "model": "m", "out": "o", "code": 1}}',
     "unknown setting 'code'"),
])
def test_a_bad_job_file_is_one_error_event(tmp_path, content, problem):
    job = tmp_path / "job.json"
    job.write_text(content)
    result = subprocess.run([sys.executable, "-m", "app.training", str(job)], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120, stdin=subprocess.DEVNULL)
    events = [TrainingEvent.from_line(line) for line in result.stdout.splitlines()]
    assert len(events) == 1 and events[0].kind == "error" and problem in events[0].message
    assert result.returncode == 2


# -- the user's styles -----------------------------------------------------------------------------------

def test_a_learned_style_is_added_after_the_shipped_ones(tmp_path):
    path = tmp_path / "styles.json"
    lora = tmp_path / "Ink.safetensors"
    save_user_style(path, learned_style_entry("Ink", "zkx", lora, 0.8))
    found = read_all_styles(path)
    shipped = read_all_styles(None).styles
    assert [s.name for s in found.styles] == [s.name for s in shipped] + ["Ink"] and not found.problems
    ink = found.styles[-1]
    assert (ink.prompt, ink.lora, ink.lora_weight) == ("zkx, {prompt}", str(lora), 0.8)
    assert ink.apply("a cat", "") == ("zkx, a cat", "")
    save_user_style(path, learned_style_entry("ink", "", lora))              # the same name again: replaced
    assert [s.name for s in read_all_styles(path).styles][-1] == "ink"
    assert len(json.loads(path.read_text())) == 1


def test_a_built_in_name_is_refused_and_a_damaged_file_never_overwritten(tmp_path):
    path = tmp_path / "styles.json"
    with pytest.raises(StyleError, match="built-in style"):
        save_user_style(path, learned_style_entry("Watercolor", "", tmp_path / "w.safetensors"))
    assert not path.exists()
    path.write_text("[{broken")
    with pytest.raises(StyleError, match="not valid JSON"):
        save_user_style(path, learned_style_entry("Ink", "", tmp_path / "i.safetensors"))
    assert path.read_text() == "[{broken"
    found = read_all_styles(path)
    assert [s.name for s in found.styles] == [s.name for s in read_all_styles(None).styles]
    assert found.problems == ("styles.json: not valid JSON (Expecting property name enclosed in double quotes at "
                              "line 1, column 3); your own styles are left out.",)


def test_a_user_style_named_like_a_shipped_one_is_left_out_and_said(tmp_path):
    path = tmp_path / "styles.json"
    path.write_text(json.dumps([{"name": "Anime", "prompt": "mine {prompt}"}, {"name": "Mine", "prompt": "{prompt}"}]))
    found = read_all_styles(path)
    assert [s.name for s in found.styles][-1] == "Mine"
    assert next(s for s in found.styles if s.name == "Anime").prompt != "mine {prompt}"
    assert found.problems == ("styles.json: style 'Anime' has the name of a built-in style (left out).",)


# -- the command line ------------------------------------------------------------------------------------

def test_train_style_on_the_command_line_adds_a_style_fill_uses(tiny_models, tmp_path, monkeypatch, capsys, photo):
    import numpy as np
    from PIL import Image

    from app.cli import run
    from tests.test_style_training import style_images

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    model = str(tiny_models.path("sd15", True, "folder"))
    images = style_images(tmp_path / "images")
    status = run(["train-style", *images, "--name", "My Ink", "--trigger", "zkx", "--model", model, "--steps", "4",
                  "--sample-every", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "step 4/4 · loss " in err and "sample at step 2: " in err
    assert err.strip().endswith("added the style 'My Ink': use it with --style \"My Ink\"")
    assert run(["styles"]) == 0 and capsys.readouterr().out.splitlines()[-1] == "My Ink"
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert run(["fill", str(photo[0]), "--mask", str(tmp_path / "mask.png"), "-o", str(out), "--model", model,
                "--style", "My Ink", "--style-strength", "0.5", "--steps", "2", "--seed", "1"]) == 0
    assert "Style: My Ink" in Image.open(out).info.get("parameters", "")


@pytest.mark.parametrize("args, problem", [
    (["--name", "Anime"], "that is a built-in style's name"),
    (["--name", "x", "--steps", "0"], "steps must be a whole number from 1 to 100000"),
    (["--name", "x", "--resolution", "100"], "resolution must be a multiple of 64"),
])
def test_train_style_usage_errors_are_one_line(tmp_path, monkeypatch, capsys, args, problem):
    from app.cli import run

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert run(["train-style", "a.png", "--model", "m", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err


def test_train_style_with_unreadable_images_fails_in_one_line(tmp_path, monkeypatch, capsys, tiny_models):
    from app.cli import run

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    assert run(["train-style", str(bad), str(bad), str(bad), "--name", "x", "--device", "cpu",
                "--model", str(tiny_models.path("sd15", False, "folder"))]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("0 images; 3 skipped as unreadable")
