"""Fuzzing the crash-recovery reader (app/core/recovery_manifest.py through recovery.load): whatever a recovery
folder holds, load() gives back a session that is safe to use in every part, or one line (RecoveryError);
nothing else, within bounded time and memory, and without changing a byte of the folder."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.changes import CanvasChange, DocumentChange, MaskPatchChange
from app.core.imageio import MAX_PIXELS
from app.core.recovery import Recovered, RecoveryError, load
from tests.fuzzing import bounded
from tests.test_recovery import saved_session

PID = 999_201


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A saved session (a stroke, an accepted fill, a redoable canvas drag) every example starts from."""
    return saved_session(tmp_path_factory.mktemp("template"), PID)


def _manifest(folder: Path):
    return json.loads((folder / "session.json").read_text())


def _paths(value, prefix=()) -> list[tuple]:
    """Every place in a JSON value: the keys and indices leading to it."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


def _fresh(tmp_path: Path, template: Path) -> Path:
    folder = tmp_path / str(PID)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(template, folder)
    return folder


def _contents(folder: Path) -> dict[str, tuple]:
    return {p.name: (os.lstat(p).st_mode, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
            for p in folder.iterdir()}


def _load_checked(folder: Path) -> None:
    before = _contents(folder)
    with bounded(seconds=2.0, megabytes=64):
        try:
            back = load(folder)
        except RecoveryError as exc:
            back, message = None, str(exc)
    assert _contents(folder) == before, "load() changed the recovery folder"
    if back is None:
        assert message.startswith(f"the recovery data in {folder} is damaged") and "\n" not in message
    else:
        _assert_usable(back)


def _assert_usable(back: Recovered) -> None:
    """What the editor relies on once a session is recovered: the offer, the canvas, Save, and every step of
    undo and redo."""
    text = back.describe()
    assert isinstance(text, str) and "\n" not in text
    assert isinstance(back.saved_at, float) and math.isfinite(back.saved_at)
    assert type(back.index) is int and 0 <= back.index <= len(back.changes)
    for array in back.arrays.values():
        assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and not array.flags.writeable
    doc = back.document
    _assert_document(doc)
    assert doc.path is None or isinstance(doc.path, Path) and "\0" not in str(doc.path)
    for change in back.changes:
        assert isinstance(change, (MaskPatchChange, CanvasChange, DocumentChange))
        assert isinstance(change.label, str)
    for change in reversed(back.changes[:back.index]):
        change.revert(doc)
        _assert_document(doc)
    for change in back.changes:
        change.apply(doc)
        _assert_document(doc)


def _assert_document(doc) -> None:
    image, mask, canvas = doc.image, doc.mask, doc.canvas
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4)
    assert 1 <= image.shape[0] * image.shape[1] <= MAX_PIXELS
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2] and doc.editable_mask().flags.writeable
    assert all(type(v) is int for v in (canvas.x, canvas.y, canvas.w, canvas.h))
    assert canvas.w >= 1 and canvas.h >= 1 and canvas.w * canvas.h <= MAX_PIXELS
    assert not canvas.intersect(doc.image_rect).is_empty()
    assert isinstance(doc.parameters, str)
    doc.parameters.encode("utf-8")


def _values(names: list[str]):
    plain = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(-3, 100)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
             | st.sampled_from([*names, "../x.npy", "", ".lock", "session.json", 1e20, -1, 0, 60, 40,
                                "document", "mask", "canvas", [0, 0, 60, 40], [50, 35, 20, 10], "\ud800"]))
    return st.recursive(plain, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


def _nudged(original, names: list[str]):
    """A value of the same kind as `original`, near it: the mistakes a check could let through."""
    if isinstance(original, bool) or original is None:
        return st.none() | st.booleans()
    if isinstance(original, int):
        return st.integers(original - 2, original + 2) | st.integers(-100, 200)
    if isinstance(original, float):
        return st.floats(allow_nan=True, allow_infinity=True) | st.floats(original - 1e6, original + 1e6)
    if isinstance(original, str):
        return st.sampled_from([*names, "Paint mask", "mask", "canvas", "document", "/photos/x.png"])
    if isinstance(original, list) and len(original) == 4:
        return st.lists(st.integers(-100, 200), min_size=4, max_size=4)
    return _values(names)


@given(data=st.data())
def test_a_manifest_with_anything_in_any_place_is_loaded_whole_or_refused_in_one_line(tmp_path, template, data):
    folder = _fresh(tmp_path, template)
    manifest = _manifest(folder)
    places = _paths(manifest)
    names = sorted(p.name for p in folder.glob("*.npy"))
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from(places))
        how = data.draw(st.sampled_from(["nudge", "nudge", "anything", "delete"]))
        parent = manifest
        try:
            for key in place[:-1]:
                parent = parent[key]
            if how == "delete" and isinstance(parent, dict):
                del parent[place[-1]]
            else:
                near = _nudged(parent[place[-1]], names) if how == "nudge" else _values(names)
                parent[place[-1]] = data.draw(near)
        except (KeyError, IndexError, TypeError):
            continue                     # an earlier change removed this place
    (folder / "session.json").write_text(json.dumps(manifest))
    _load_checked(folder)


@given(data=st.data())
def test_a_manifest_truncated_or_overwritten_with_random_bytes_is_refused_in_one_line(tmp_path, template, data):
    folder = _fresh(tmp_path, template)
    original = (folder / "session.json").read_bytes()
    how = data.draw(st.sampled_from(["truncate", "overwrite", "random"]))
    if how == "truncate":
        damaged = original[:data.draw(st.integers(0, len(original) - 1))]
    elif how == "overwrite":
        start = data.draw(st.integers(0, len(original) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        damaged = original[:start] + patch + original[start + len(patch):]
    else:
        damaged = data.draw(st.binary(max_size=200))
    (folder / "session.json").write_bytes(damaged)
    _load_checked(folder)


DESCRIPTORS = ["|u1", "<u1", "|i1", "|b1", "<f8", "<i4", ">u2", "|O", "|V4", "<U3", [("a", "|u1")], "bogus"]


@given(data=st.data())
def test_an_array_with_any_header_is_loaded_whole_or_refused_in_one_line(tmp_path, template, data):
    folder = _fresh(tmp_path, template)
    target = folder / data.draw(st.sampled_from(sorted(p.name for p in folder.glob("*.npy"))))
    real_shape = np.load(target).shape
    shape = data.draw(st.one_of(
        st.just(real_shape), st.permutations(real_shape).map(tuple), st.just((*real_shape[:2], 4)),
        st.lists(st.integers(0, 64), max_size=3).map(tuple),
        st.lists(st.integers(-2, 10**7), max_size=4).map(tuple), st.just((10**6, 10**6))))
    header = {"descr": data.draw(st.just("|u1") | st.sampled_from(DESCRIPTORS)),
              "fortran_order": data.draw(st.sampled_from([False, False, True])), "shape": shape}
    count = math.prod(shape) if all(n >= 0 for n in shape) else 0
    size = data.draw(st.just(count) | st.integers(0, 5000))
    version = data.draw(st.sampled_from(["1.0", "1.0", "2.0", "raw"]))
    with open(target, "wb") as handle:
        if version == "raw":
            handle.write(b"\x93NUMPY" + data.draw(st.binary(max_size=64)))
        else:
            write = np.lib.format.write_array_header_1_0 if version == "1.0" else np.lib.format.write_array_header_2_0
            write(handle, header)
        handle.write(bytes(min(size, 10**6)))
    _load_checked(folder)
