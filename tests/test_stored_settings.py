"""The remembered settings: typed, clamped, never unpickled, and a damaged file never stops the editor."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.editor.stored_settings import SCHEMA, SettingsStore


def write(path: Path, settings: dict) -> Path:
    path.write_text(json.dumps({"version": 1, "settings": settings}))
    return path


@pytest.mark.parametrize("key, stored, expected", [
    ("panel/seed", 99999999999999999999, 0),             # out of range: the default, never an extreme
    ("panel/steps", 99999999999999999999, 25),
    ("panel/steps", -3, 25),
    ("panel/steps", 151, 25),
    ("panel/steps", 30.5, 25),                          # not a whole number: the default
    ("panel/steps", "30", 25),
    ("panel/steps", True, 25),
    ("panel/steps", None, 25),
    ("panel/steps", [1, 2], 25),
    ("panel/style_strength", math.inf, 100),
    ("panel/guidance", math.nan, 7.0),
    ("brush/softness", math.nan, 0.3),
    ("brush/softness", 5, 0.3),
    ("panel/random_seed", "true", True),
    ("panel/prompt", 42, ""),
    ("panel/prompt", "x" * 30_000, ""),
    ("panel/prompt", "a\0b", ""),
    ("last_dir", "/x\ud800", ""),                        # a lone surrogate: valid JSON, but not writable text
    ("window/geometry", "hello!", b""),
    ("window/geometry", {"a": 1}, b""),
    ("last_dir", ["/tmp"], ""),
])
def test_every_damaged_value_falls_back_to_its_default_and_is_reported(tmp_path, key, stored, expected):
    store = SettingsStore(write(tmp_path / "settings.json", {key: stored, "panel/variants": 4}))
    value = store.get(key)
    assert value == expected and type(value) is SCHEMA[key].kind
    assert store.get("panel/variants") == 4                 # the good values around it are kept
    [line] = store.problems
    assert SCHEMA[key].name in line and "\n" not in line


@pytest.mark.parametrize("key, stored, expected", [("panel/steps", 30.0, 30), ("panel/guidance", 12, 12.0)])
def test_numbers_of_the_other_json_kind_are_taken_as_they_are(tmp_path, key, stored, expected):
    store = SettingsStore(write(tmp_path / "settings.json", {key: stored}))
    assert store.get(key) == expected and type(store.get(key)) is SCHEMA[key].kind and store.problems == []


def test_good_values_round_trip_through_the_file(tmp_path):
    path = tmp_path / "settings.json"
    store = SettingsStore(path)
    assert store.problems == [] and store.stored() == {}
    for key, value in (("panel/prompt", "a red boat, at dusk"), ("panel/seed", 1234), ("panel/guidance", 6.5),
                       ("panel/random_seed", False), ("window/geometry", b"\x01\xd9\xd0\xcb"),
                       ("brush/softness", 0.25)):
        assert store.set(key, value)
    assert not store.set("panel/steps", "many")             # refused, nothing stored
    store.save()
    again = SettingsStore(path)
    assert again.problems == []
    assert again.stored("panel/") == {"prompt": "a red boat, at dusk", "seed": 1234, "guidance": 6.5,
                                      "random_seed": False}
    assert again.get("window/geometry") == b"\x01\xd9\xd0\xcb" and again.get("panel/steps") == 25


def test_keys_of_a_newer_version_are_kept(tmp_path):
    path = write(tmp_path / "settings.json", {"panel/future_thing": [1, 2], "panel/steps": 40})
    store = SettingsStore(path)
    assert store.problems == [] and store.get("panel/steps") == 40
    store.save()
    assert json.loads(path.read_text())["settings"]["panel/future_thing"] == [1, 2]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"settings": 3}', b"\xff\xfe\x00",
                                     b"[" * 50_000 + b"]" * 50_000, b""])
def test_a_damaged_file_is_kept_aside_and_the_defaults_used(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_bytes(content)
    store = SettingsStore(path)
    assert store.get("panel/steps") == 25
    [kept] = list(tmp_path.glob("settings.json.damaged-*"))
    assert kept.read_bytes() == content and not path.exists()
    [line] = store.problems
    assert "settings.json" in line and kept.name in line


def test_a_huge_file_is_not_read(tmp_path):
    path = tmp_path / "settings.json"
    with open(path, "wb") as handle:
        handle.truncate(200 << 20)
    store = SettingsStore(path)
    assert "too large" in store.problems[0] and store.get("panel/steps") == 25


def test_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    from app.core import safe_files

    path = write(tmp_path / "settings.json", {"panel/steps": 40})
    store = SettingsStore(path)
    store.set("panel/steps", 50)

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safe_files.os, "replace", full)
    with pytest.raises(OSError):
        store.save()
    monkeypatch.undo()
    assert SettingsStore(path).get("panel/steps") == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_a_planted_pickle_in_qt_settings_never_runs(tmp_path):
    """PySide6's QSettings unpickles Python objects stored in it when it reads its file; the editor keeps its
    own JSON file, and takes an older version's QSettings values over by reading that file as text."""
    marker = tmp_path / "pwned"
    root = str(Path(__file__).resolve().parent.parent)
    plant = f"""
from PySide6.QtCore import QSettings
class Evil:
    def __reduce__(self):
        return (open, ({str(marker)!r}, "w"))
planted = QSettings("LatentCanvas", "Latent Canvas")
planted.setValue("panel/prompt", Evil())
planted.setValue("panel/negative", 'blurry, "low" quality')
planted.setValue("panel/steps", 30)
planted.setValue("brush/size", 99)
planted.sync()
"""
    launch = f"""
import sys
sys.path.insert(0, {root!r})
from PySide6.QtWidgets import QApplication
app = QApplication([])
app.setOrganizationName("LatentCanvas"); app.setApplicationName("Latent Canvas")
from app.widgets.main_window import MainWindow
window = MainWindow(recovery_root={str(tmp_path / "recovery")!r})
print("taken:", window.panel.negative_edit.toPlainText(), window.panel.steps_spin.value(), window.state.brush_size,
      repr(window.panel.prompt_edit.toPlainText()))
window.close()
print("started")
"""
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               QT_QPA_PLATFORM="offscreen")
    subprocess.run([sys.executable, "-c", plant], env=env, check=True, timeout=60)
    assert any((tmp_path / "config").rglob("*.conf")) and not marker.exists()
    done = subprocess.run([sys.executable, "-c", launch], env=env, capture_output=True, text=True, timeout=120)
    assert "started" in done.stdout, done.stderr[-2000:]
    assert not marker.exists()
    # The plain values of the old file are taken over (read as text); the pickled one is skipped.
    assert "taken: blurry, \"low\" quality 30 99 ''" in done.stdout


@pytest.mark.parametrize("fault", ["read", "set aside"])
def test_a_file_that_cannot_be_read_or_set_aside_is_never_overwritten(tmp_path, monkeypatch, fault):
    from app.editor import stored_settings

    path = tmp_path / "settings.json"
    content = "{damaged" if fault == "set aside" else json.dumps({"version": 1, "settings": {"panel/steps": 40}})
    path.write_text(content)

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")
    from app.core import safe_files

    monkeypatch.setattr(safe_files, "read_bounded", fail) if fault == "read" else \
        monkeypatch.setattr(stored_settings, "set_aside", fail)
    store = SettingsStore(path)
    [line] = store.problems
    assert "left as it is" in line and store.get("panel/steps") == 25
    store.set("panel/steps", 50)
    store.save()
    assert path.read_text() == content


def test_damaged_copies_never_overwrite_each_other(tmp_path):
    path = tmp_path / "settings.json"
    for content in ("{first", "{second", "{third"):
        path.write_text(content)
        SettingsStore(path)
    assert sorted(p.read_text() for p in tmp_path.glob("settings.json.damaged-*")) == ["{first", "{second", "{third"]


def test_an_older_versions_qt_settings_are_taken_as_text(tmp_path):
    from app.editor.stored_settings import migrate_qt_settings

    old = tmp_path / "Latent Canvas.conf"
    old.write_text('[General]\nlast_dir=/home/u/Pictures\n\n[panel]\nprompt="a boat, at dusk; \\\\ \\"x\\" \\x263a"\n'
                   'negative=a, b\nsteps=30\nguidance=lots\nrandom_seed=false\nstyle=@Variant(\\0\\0\\0\\x7f)\n'
                   '[window]\ngeometry=@ByteArray(\\x1\\x2)\n')
    store = SettingsStore(tmp_path / "settings.json")
    assert migrate_qt_settings(store, old)
    assert store.stored() == {"last_dir": "/home/u/Pictures", "panel/prompt": 'a boat, at dusk; \\ "x" \u263a',
                              "panel/steps": 30, "panel/random_seed": False}
    store.save()
    assert not migrate_qt_settings(SettingsStore(tmp_path / "settings.json"), old)   # only into a new store


def test_qt_escapes_of_at_signs_and_characters_beyond_the_basic_plane_are_read(tmp_path):
    from app.editor.stored_settings import migrate_qt_settings

    old = tmp_path / "Latent Canvas.conf"
    old.write_text('[panel]\nprompt=@@at the start \\xd83c\\xdfa8\nnegative=\\xd800 alone\n')
    store = SettingsStore(tmp_path / "settings.json")
    migrate_qt_settings(store, old)
    assert store.stored("panel/") == {"prompt": "@at the start \U0001f3a8"}
    store.save()                                           # and it can be written back


def test_a_newer_versions_key_that_cannot_be_written_back_is_dropped(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"version": 1, "settings": {"panel/future": "\\ud800", "panel/later": [1], "panel/steps": 40}}')
    store = SettingsStore(path)
    store.save()                                           # a lone surrogate would make the save raise
    assert json.loads(path.read_text())["settings"] == {"panel/later": [1], "panel/steps": 40}
