"""Crash recovery: what a killed editor wrote is read back exactly; damaged or hostile data is one clear line,
whatever the folder holds."""
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
from app.core.layers import LayerStack
from app.core.recovery import RecoveryError, RecoveryStore, load, take_snapshot
from app.core.safe_files import TEMP_TAG, is_temporary


def _session():
    """A document after: a stroke, an accepted fill, a canvas drag; then one undo (the drag is redoable)."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    doc = Document.from_image(first, Path("/photos/cat.png"))
    before = doc.mask.copy()
    doc.mask[5:15, 10:30] = 255
    stroke = MaskPatchChange.capture(doc, Rect(10, 5, 20, 10), before, "Paint mask")
    filled = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    accept = DocumentChange(doc.snapshot(), DocumentState(LayerStack.from_image(filled), np.zeros((40, 60), np.uint8),
                                                          Rect(0, 0, 60, 40), "seed 7"), "Accept")
    accept.apply(doc)
    drag = CanvasChange(doc.canvas, Rect(0, 0, 90, 40))
    doc.editable_mask()[30:35, 0:5] = 128                       # painted after the last step: only in the live mask
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
    np.testing.assert_array_equal(back.document.image, Document(changes[1].before.layers).image)
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
    assert first == second                   # nothing written again (the live mask is shared until painted)
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
    doc.editable_mask()[:] = 0
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


def saved_session(root: Path, pid: int) -> Path:
    """The folder a crashed editor left for _session(): 60x40, a stroke, an accepted fill, a redoable drag."""
    doc, changes, index = _session()
    store = RecoveryStore(root, pid=pid)
    store.save(take_snapshot(doc, changes, index))
    store._release_lock()
    return store.folder


def edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "session.json").read_text())
    edit(manifest)
    (folder / "session.json").write_text(json.dumps(manifest))


def named(folder: Path, *keys) -> Path:
    """The file the manifest names at `keys`, e.g. ("document", "mask")."""
    entry = json.loads((folder / "session.json").read_text())
    for key in keys:
        entry = entry[key]
    return folder / entry


def raw_npy(path: Path, descr: str, shape: tuple, payload: bytes) -> None:
    """A .npy file with any header at all, followed by `payload`."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(payload)


def _new_array(folder: Path, array: np.ndarray) -> str:
    name = f"{os.urandom(16).hex()}.npy"
    np.save(folder / name, array)
    return name


def _sizes_that_do_not_chain(folder: Path) -> None:
    """The accepted fill's after-state becomes 50x30 while the document (the state after it) is 60x40."""
    image = _new_array(folder, np.zeros((30, 50, 3), np.uint8))
    mask = _new_array(folder, np.zeros((30, 50), np.uint8))
    layers = {"width": 50, "height": 30, "next_id": 2, "layers": [
        {"id": 1, "name": "Background", "kind": "raster", "x": 0, "y": 0, "visible": True, "opacity": 1.0,
         "pixels": image}]}
    edit_manifest(folder, lambda m: m["changes"][1]["after"].update(layers=layers, mask=mask, canvas=[0, 0, 50, 30]))


def _link_outside(folder: Path) -> None:
    mask = named(folder, "document", "mask")
    outside = folder.parent / "outside.npy"
    outside.write_bytes(mask.read_bytes())
    mask.unlink()
    mask.symlink_to(outside)


def _manifest_is_a_folder(folder: Path) -> None:
    (folder / "session.json").unlink()
    (folder / "session.json").mkdir()


def _document(**values):
    return lambda f: edit_manifest(f, lambda m: m["document"].update(values))


def _background(**values):
    return lambda f: edit_manifest(f, lambda m: m["document"]["layers"]["layers"][0].update(values))


def _stroke(**values):
    return lambda f: edit_manifest(f, lambda m: m["changes"][0].update(values))


def _top(**values):
    return lambda f: edit_manifest(f, lambda m: m.update(values))


def _named_masks(count: int = 1, patch: tuple = (4, 4), where: tuple = ("document",), **values):
    """`count` named masks in the manifest entry at `where`, each a patch of shape `patch`, with `values`."""
    def damage(folder: Path) -> None:
        pixels = _new_array(folder, np.full(patch, 255, np.uint8))
        masks = [{"name": f"mask {i}", "x": 0, "y": 0, "pixels": pixels, **values} for i in range(count)]

        def put(manifest):
            entry = manifest
            for key in where:
                entry = entry[key]
            entry["named_masks"] = masks
        edit_manifest(folder, put)
    return damage


# (damage done to a saved session, what the one line must say)
DAMAGE = {
    "not json": (lambda f: (f / "session.json").write_text("{not json"), "not JSON"),
    "empty manifest": (lambda f: (f / "session.json").write_text(""), "not JSON"),
    "manifest a list": (lambda f: (f / "session.json").write_text("[]"), "the manifest is a list"),
    "manifest a folder": (_manifest_is_a_folder, "session.json is a folder"),
    "format 99": (lambda f: (f / "session.json").write_text(json.dumps({"format": 99})), "recovery format 99"),
    "format true": (_top(format=True), "recovery format True"),
    "saved_at 1e20": (_top(saved_at=1e20), "saved_at is 1e+20"),
    "saved_at nan": (_top(saved_at=float("nan")), "saved_at is nan"),
    "saved_at -inf": (_top(saved_at=float("-inf")), "saved_at is -inf"),
    "saved_at text": (_top(saved_at="yesterday"), "saved_at is 'yesterday'"),
    "label 12": (_stroke(label=12), "changes[0].label is 12, not text"),
    "label null": (_stroke(label=None), "changes[0].label is null, not text"),
    "label a list": (_stroke(label=["Paint"]), "changes[0].label is a list, not text"),
    "parameters a dict": (_document(parameters={"seed": 7}), "document.parameters is an object, not text"),
    "parameters not unicode": (_document(parameters="\ud800"), "document.parameters is not valid Unicode"),
    "path with a nul": (_document(path="/photos/a\0b.png"), "document.path is not a file name"),
    "relative path": (_document(path="photos/a.png"), "document.path is not an absolute path"),
    "canvas strings": (_document(canvas=["1", "2", "3", "4"]), "document.canvas is a list, not 4 whole numbers"),
    "canvas empty": (_document(canvas=[0, 0, 0, 0]), "document.canvas is 0x0, not a canvas"),
    "canvas floats": (_document(canvas=[0, 0, 1e9, 1e9]), "not 4 whole numbers"),
    "canvas too large": (_document(canvas=[0, 0, 10**9, 10**9]), "the limit is 150"),
    "canvas of bools": (_document(canvas=[True, 0, 1, 1]), "not 4 whole numbers"),
    "canvas far away": (_document(canvas=[5000, 5000, 64, 64]), "does not overlap the 60x40 image"),
    "patch outside": (_stroke(rect=[50, 35, 20, 10]), "changes[0]: the mask patch at (50, 35) 20x10 lies outside"),
    "patch negative": (_stroke(rect=[-45, 0, 20, 10]), "lies outside the 60x40 image"),
    "patch of another size": (_stroke(rect=[10, 5, 10, 10]), "changes[0].before"),
    "object dtype": (lambda f: raw_npy(named(f, "document", "mask"), "|O", (40, 60), b"\0" * 100),
                     "holds object values, not uint8"),
    "pickled array": (lambda f: np.save(named(f, "document", "mask"), np.array([{"payload": 1}], dtype=object),
                                        allow_pickle=True), "holds object values, not uint8"),
    "float64 image": (lambda f: np.save(named(f, "document", "layers", "layers", 0, "pixels"), np.zeros((40, 60, 3))),
                      "holds float64 values, not uint8"),
    "1-D mask": (lambda f: np.save(named(f, "document", "mask"), np.zeros(2400, np.uint8)),
                 "document.mask"),
    "header claims 10^12 values": (lambda f: raw_npy(named(f, "document", "mask"), "|u1", (10**6, 10**6),
                                                     b"\0" * 100), "claims 1,000,000,000,000 values"),
    "array cut short": (lambda f: raw_npy(named(f, "document", "mask"), "|u1", (40, 60), b"\0" * 100),
                        "holds 100 bytes of pixels; its header says 2,400"),
    "arrays missing": (lambda f: [p.unlink() for p in f.glob("*.npy")], "is missing"),
    "sizes do not chain": (_sizes_that_do_not_chain, "changes[1]: the image after this step is 50x30"),
    "index out of range": (_top(index=7), "undo position 7 outside 0..3"),
    "index a float": (_top(index=1.5), "undo position 1.5 is not a whole number"),
    "index text": (_top(index="2"), "undo position '2' is not a whole number"),
    "changes a dict": (_top(changes={"0": {}}), "changes is an object, not a list"),
    "kind unknown": (_stroke(kind="brush"), "unknown change kind 'brush'"),
    "name outside the folder": (_background(pixels="../x.npy"), "bad array name '../x.npy'"),
    "name of a system file": (_background(pixels="../../etc/passwd"), "bad array name"),
    "link outside the folder": (_link_outside, "is a link, not a file"),
    "layer opacity 2": (_background(opacity=2), "document.layers.layers[0].opacity is 2, not a number from 0 to 1"),
    "layer kind unknown": (_background(kind="vector"), "document.layers.layers[0].kind is 'vector'"),
    "layer visible text": (_background(visible="yes"), "visible is 'yes', not true or false"),
    "layer id a float": (_background(id=1.5), "document.layers.layers[0].id is 1.5, not a whole number"),
    "layer far away": (_background(x=2**40), "outside"),
    "raster with generation data": (_background(generation={"kind": "fill"}), "a raster layer with generation"),
    "generative without variants": (_background(kind="generative", generation={"kind": "fill", "variants": []}),
                                    "variants must be a list of 1 to 64"),
    "layers not a list": (_document(layers={"width": 60, "height": 40, "next_id": 2, "layers": {}}),
                          "document.layers.layers is an object, not a list"),
    "settings a list": (_top(settings=[1]), "settings is a list, not an object"),
    "settings nested": (_top(settings={"prompt": {"a": 1}}), "settings.prompt is an object, not text"),
    "named mask name a number": (_named_masks(name=5), "document.named_masks[0].name is 5, not text"),
    "named mask name untrimmed": (_named_masks(name=" sky"), "document.named_masks[0].name is ' sky', not a mask name"),
    "named mask names twice": (_named_masks(2, name="sky"), "document.named_masks: two masks are named 'sky'"),
    "named mask patch 3-D": (_named_masks(patch=(4, 4, 3)), "is 4 x 4 x 3, not an H x W mask"),
    "named mask outside": (_named_masks(x=58), "document.named_masks[0]: its 4 x 4 patch at (58, 0) lies outside"),
    "named mask at -1": (_named_masks(y=-1), "document.named_masks[0].y is -1, outside 0..39"),
    "65 named masks": (_named_masks(65), "document.named_masks holds 65 masks; at most 64 are kept"),
    "named masks an object": (_document(named_masks={"sky": 1}), "document.named_masks is an object, not a list"),
    "named mask in a step": (_named_masks(where=("changes", 1, "before"), name=[1]),
                             "changes[1].before.named_masks[0].name is a list, not text"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_recovery_data_is_one_clear_line(tmp_path, case):
    damage, message = DAMAGE[case]
    folder = saved_session(tmp_path, 999_007)
    damage(folder)
    with pytest.raises(RecoveryError) as info:
        load(folder)
    text = str(info.value)
    assert text.startswith(f"the recovery data in {folder} is damaged: ") and "\n" not in text
    assert message in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_in_place_of_an_array_is_refused_without_waiting(tmp_path):
    folder = saved_session(tmp_path, 999_008)
    mask = named(folder, "document", "mask")
    mask.unlink()
    os.mkfifo(mask)                      # opening it to read would wait for a writer for ever
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n" \
           f"from app.core.recovery import load, RecoveryError\n" \
           f"try:\n    load({str(folder)!r})\nexcept RecoveryError as e:\n    print(e)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "is special, not a file" in result.stdout


def test_a_valid_session_comes_back_with_every_part_checked(tmp_path):
    """The checks refuse nothing a real editor writes: patches at the image's edges, an accepted result of
    another size, its canvas drag redoable, generation parameters in every state."""
    doc = Document.from_image(np.zeros((48, 64, 3), np.uint8), Path("/photos/dog.jpg"), "seed 1")
    before = doc.mask.copy()
    doc.mask[40:48, 56:64] = 255
    corner = MaskPatchChange.capture(doc, Rect(56, 40, 8, 8), before, "Paint mask")
    grown = np.zeros((64, 96, 4), np.uint8)
    expand = DocumentChange(doc.snapshot(), DocumentState(LayerStack.from_image(grown), np.zeros((64, 96), np.uint8),
                                                          Rect(0, 0, 96, 64), "seed 2"), "Accept")
    expand.apply(doc)
    drag = CanvasChange(doc.canvas, Rect(-16, 0, 112, 64))
    store = RecoveryStore(tmp_path, pid=999_009)
    store.save(take_snapshot(doc, [corner, expand, drag], 2))
    back = load(store.folder)
    assert back.document.image.shape == (64, 96, 4) and back.document.parameters == "seed 2"
    assert not back.document.image.flags.writeable and back.document.mask.flags.writeable
    for change in reversed(back.changes[:2]):
        change.revert(back.document)
    assert back.document.parameters == "seed 1" and back.document.mask[40:48, 56:64].sum() == 0
    for change in back.changes:
        change.apply(back.document)
    assert back.document.canvas == Rect(-16, 0, 112, 64) and back.document.mask.shape == (64, 96)


@pytest.mark.parametrize("rect", [Rect(50, 35, 20, 10), Rect(-45, 0, 20, 10), Rect(10, 5, 10, 10)])
def test_a_mask_patch_that_does_not_fit_is_refused_and_the_mask_is_untouched(rect):
    doc = Document.from_image(np.zeros((40, 60, 3), np.uint8))
    patch = MaskPatchChange(rect, np.zeros((10, 20), np.uint8), np.full((10, 20), 255, np.uint8))
    for step in (patch.apply, patch.revert):
        with pytest.raises(ValueError, match="does not fit the 60x40 mask"):
            step(doc)
    assert not doc.mask.any()


def test_describe_never_raises(tmp_path):
    back = load(saved_session(tmp_path, 999_010))
    for when in (1e20, float("nan"), -1e300):
        back.saved_at = when
        assert "last saved at an unknown time" in back.describe()


def test_crashed_skips_what_it_cannot_read_and_never_raises(tmp_path, monkeypatch):
    good = saved_session(tmp_path, 999_011)
    blocked = saved_session(tmp_path, 999_012)
    (tmp_path / "notes.txt").write_text("not a session")                    # not a folder
    (tmp_path / "photos").mkdir()                                           # not an editor's folder
    (tmp_path / "999013").symlink_to(good, target_is_directory=True)        # a link: not offered
    real_stat, real_lstat = os.stat, os.lstat

    def denied(real):
        def stat(path, *args, **kwargs):
            if str(blocked) in os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path, *args, **kwargs)
        return stat
    monkeypatch.setattr(os, "stat", denied(real_stat))
    monkeypatch.setattr(os, "lstat", denied(real_lstat))
    assert RecoveryStore(tmp_path, pid=999_014).crashed() == [good]
    monkeypatch.undo()
    assert RecoveryStore(tmp_path / "notes.txt", pid=999_014).crashed() == []   # a root that is a file
    assert RecoveryStore(tmp_path / "missing", pid=999_014).crashed() == []


def test_a_folder_set_aside_twice_under_one_pid_is_never_offered_again(tmp_path):
    for _ in range(2):
        folder = saved_session(tmp_path, 999_015)
        edit_manifest(folder, lambda m: m.update(saved_at="broken"))
        recovery._CLAIMED.discard(folder)                                    # the next editor is another process
        kept = RecoveryStore.set_aside(folder)
        assert kept.name.endswith(".damaged") and not folder.exists()
    assert len(list(tmp_path.glob("999015*.damaged"))) == 2
    assert RecoveryStore(tmp_path, pid=999_016).crashed() == []


def test_temporaries_are_cleaned_up_once_their_writer_is_gone_and_never_read(tmp_path):
    doc, changes, index = _session()
    store = RecoveryStore(tmp_path, pid=999_017)
    store.save(take_snapshot(doc, changes, index))
    dead = store.folder / f".session.json.{TEMP_TAG}-999999999-0123456789ab.tmp"             # a killed save
    alive = store.folder / f".{'a' * 32}.npy.{TEMP_TAG}-{os.getppid()}-0123456789ab.tmp"     # a running writer
    dead.write_bytes(b"half an array")
    alive.write_bytes(b"{")
    store.save(take_snapshot(doc, changes, index))
    assert not dead.exists() and alive.exists()
    assert load(store.folder).index == index
    assert not [p for p in store.folder.iterdir() if is_temporary(p) and p != alive]


def test_a_history_longer_than_the_reader_keeps_is_saved_without_its_oldest_steps(tmp_path, monkeypatch):
    from app.core import recovery_manifest

    monkeypatch.setattr(recovery_manifest, "MAX_CHANGES", 3)
    doc = Document.from_image(np.zeros((8, 8, 3), np.uint8))
    strokes = []
    for i in range(5):
        before = doc.mask.copy()
        doc.mask[i, :] = 255
        strokes.append(MaskPatchChange.capture(doc, Rect(0, i, 8, 1), before, f"Stroke {i}"))
    store = RecoveryStore(tmp_path, pid=999_018)
    store.save(take_snapshot(doc, strokes, 4))        # the last stroke undone
    back = load(store.folder)
    assert [c.label for c in back.changes] == ["Stroke 2", "Stroke 3", "Stroke 4"] and back.index == 2


def test_a_folder_without_named_masks_reads_with_none_and_named_masks_come_back(tmp_path):
    from app.core.document import NamedMask
    from app.core.recovery import Snapshot

    folder = saved_session(tmp_path, 999_019)
    assert "named_masks" not in json.loads((folder / "session.json").read_text())["document"]
    assert load(folder).document.named_masks == ()
    doc, changes, index = _session()
    doc.named_masks = (NamedMask.of("sky", doc.mask), NamedMask.of("corner", np.pad(np.full((2, 3), 9, np.uint8),
                                                                                    ((38, 0), (57, 0)))))
    store = RecoveryStore(tmp_path, pid=999_020)
    store.save(Snapshot(doc, tuple(changes), index, 1_700_000_000.0))
    back = load(store.folder).document
    assert [(m.name, m.rect) for m in back.named_masks] == [("sky", Rect(0, 30, 5, 5)), ("corner", Rect(57, 38, 3, 2))]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(back.named_masks, doc.named_masks))


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
