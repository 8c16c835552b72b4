"""Crash recovery: what a killed editor wrote is read back exactly, and damaged data is one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core import recovery
from app.core.changes import CanvasChange, DocumentChange, MaskPatchChange
from app.core.document import Document, DocumentState
from app.core.geometry import Rect
from app.core.recovery import RecoveryStore, load, take_snapshot


def _session():
    """A document after: a stroke, an accepted fill, a canvas drag; then one undo (the drag is redoable)."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    doc = Document.from_image(first, Path("/photos/cat.png"))
    before = doc.mask.copy()
    doc.mask[5:15, 10:30] = 255
    stroke = MaskPatchChange.capture(doc, Rect(10, 5, 20, 10), before, "Paint mask")
    filled = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    accept = DocumentChange(doc.snapshot(), DocumentState(filled, np.zeros((40, 60), np.uint8),
                                                          Rect(0, 0, 60, 40), "seed 7"), "Accept")
    accept.apply(doc)
    drag = CanvasChange(doc.canvas, Rect(0, 0, 90, 40))
    doc.mask[30:35, 0:5] = 128                       # painted after the last step: only in the live mask
    return doc, [stroke, accept, drag], 2


def test_a_saved_session_comes_back_exactly(tmp_path):
    doc, changes, index = _session()
    store = RecoveryStore(tmp_path, pid=999_001)
    store.save(take_snapshot(doc, changes, index))
    assert RecoveryStore(tmp_path, pid=999_002).crashed() == []     # its editor still holds the folder
    store._release_lock()                                           # the editor dies
    (found,) = RecoveryStore(tmp_path, pid=999_002).crashed()
    back = load(found)
    np.testing.assert_array_equal(back.document.image, doc.image)
    np.testing.assert_array_equal(back.document.mask, doc.mask)
    assert back.document.canvas == doc.canvas and back.document.path == doc.path
    assert back.index == 2 and [type(c) for c in back.changes] == [MaskPatchChange, DocumentChange, CanvasChange]
    # Undo all the way gives the original image and an empty mask; redo gives the state again.
    for change in reversed(back.changes[:back.index]):
        change.revert(back.document)
    np.testing.assert_array_equal(back.document.image, changes[1].before.image)
    assert not back.document.mask.any()
    for change in back.changes:
        change.apply(back.document)
    assert back.document.canvas == Rect(0, 0, 90, 40)
    assert "cat.png, 60x40, 2 undo steps" in back.describe()


def test_unchanged_arrays_are_written_once_and_unused_ones_removed(tmp_path):
    doc, changes, index = _session()
    store = RecoveryStore(tmp_path, pid=999_003)
    store.save(take_snapshot(doc, changes, index))
    first = {p.name for p in store.folder.glob("*.npy")}
    store.save(take_snapshot(doc, changes, index))
    second = {p.name for p in store.folder.glob("*.npy")}
    assert len(first & second) == len(first) - 1              # only the live mask was written again
    store.save(take_snapshot(doc, changes[:1], 1))             # history trimmed: the fill's images go
    assert len(list(store.folder.glob("*.npy"))) < len(second)
    store.clear()
    assert not store.folder.exists()


def test_a_crash_while_writing_keeps_the_previous_save(tmp_path, monkeypatch):
    doc, changes, index = _session()
    store = RecoveryStore(tmp_path, pid=999_004)
    store.save(take_snapshot(doc, changes, index))

    def disk_full(path, array):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(recovery, "_write_array", disk_full)
    doc.mask[:] = 0
    with pytest.raises(OSError):
        store.save(take_snapshot(doc, changes, index))
    back = load(store.folder)
    assert back.document.mask[30, 0] == 128                    # the last complete save


def test_running_editors_are_not_offered_and_a_reused_pid_keeps_the_old_work(tmp_path):
    doc, changes, index = _session()
    running = RecoveryStore(tmp_path, pid=999_004)
    running.save(take_snapshot(doc, changes, index))
    assert RecoveryStore(tmp_path, pid=999_005).crashed() == []     # its lock is held: it is running
    # After a reboot the dead editor's pid may belong to a live process: its released lock still tells.
    crashed = RecoveryStore(tmp_path, pid=os.getppid())
    crashed.save(take_snapshot(doc, changes, index))
    crashed._release_lock()
    assert [f.name for f in RecoveryStore(tmp_path, pid=999_005).crashed()] == [str(os.getppid())]
    RecoveryStore.discard(crashed.folder)
    first = RecoveryStore(tmp_path, pid=999_006)
    first.save(take_snapshot(doc, changes, index))
    first._release_lock()
    recovery._CLAIMED.discard(tmp_path / "999006")              # as if this were another process
    again = RecoveryStore(tmp_path, pid=999_006)                # a new editor got the crashed one's pid
    assert [f.name.startswith("999006-") for f in again.crashed()] == [True]


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "session.json").write_text("{not json"), "damaged"),
    (lambda f: (f / "session.json").write_text(json.dumps({"format": 99})), "recovery format"),
    (lambda f: [p.unlink() for p in f.glob("*.npy")], "damaged"),
    (lambda f: _replace_manifest(f, lambda m: m["document"].update(image="../../etc/passwd")), "bad array name"),
    (lambda f: _replace_manifest(f, lambda m: m.update(index=7)), "undo position"),
    (lambda f: _pickle_in_array(f), "damaged"),
])
def test_damaged_recovery_data_is_one_clear_line(tmp_path, damage, message):
    doc, changes, index = _session()
    store = RecoveryStore(tmp_path, pid=999_007)
    store.save(take_snapshot(doc, changes, index))
    damage(store.folder)
    with pytest.raises(ValueError, match=message) as info:
        load(store.folder)
    assert "\n" not in str(info.value)


def _replace_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "session.json").read_text())
    edit(manifest)
    (folder / "session.json").write_text(json.dumps(manifest))


def _pickle_in_array(folder: Path) -> None:
    manifest = json.loads((folder / "session.json").read_text())
    target = folder / manifest["document"]["mask"]
    np.save(target, np.array([{"payload": 1}], dtype=object), allow_pickle=True)


def test_a_killed_editor_process_leaves_a_recoverable_session(tmp_path):
    code = f"""
import os, sys, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from app.core.document import Document
from app.core.recovery import RecoveryStore, take_snapshot
doc = Document.from_image(np.full((16, 16, 3), 77, np.uint8))
doc.mask[2:4, 2:4] = 255
RecoveryStore({str(tmp_path)!r}).save(take_snapshot(doc, [], 0))
os.kill(os.getpid(), 9)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == -9
    (found,) = RecoveryStore(tmp_path).crashed()
    back = load(found)
    assert int(back.document.image[0, 0, 0]) == 77 and back.document.mask[2:4, 2:4].all()
