"""Fuzzing the OpenRaster reader (app/core/openraster_read.py through load_project_with_notes): whatever an
.ora holds, it gives back a Document the editor can use, or one line (ProjectError); nothing else, within
bounded time and memory."""
from __future__ import annotations

import io
import json
import zipfile
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import openraster
from app.core.document import Document
from app.core.openraster import ProjectError, load_project_with_notes
from tests.fuzzing import bounded
from tests.test_openraster import foreign_ora, rewrite, rich_document

JSON_NAME = "latent-canvas/document.json"


@pytest.fixture(scope="module")
def saved() -> bytes:
    buffer = io.BytesIO()
    openraster._write(buffer, rich_document(32, 24))
    return buffer.getvalue()


def _load_checked(tmp_path, data: bytes) -> None:
    path = tmp_path / "photo.ora"
    path.write_bytes(data)
    with bounded(seconds=2.0, megabytes=64):
        try:
            document, notes = load_project_with_notes(path)
        except ProjectError as exc:
            message = str(exc)
            assert "photo.ora" in message and "\n" not in message, message
            return
    _assert_usable(document, notes)


def _assert_usable(document: Document, notes: list[str]) -> None:
    assert all(isinstance(note, str) and "\n" not in note for note in notes)
    stack = document.layers
    assert stack.width >= 1 and stack.height >= 1
    for layer in stack.layers:
        assert layer.pixels.dtype == np.uint8 and layer.pixels.ndim == 3 and layer.pixels.shape[2] in (3, 4)
        assert not layer.pixels.flags.writeable
    assert document.mask.shape == (stack.height, stack.width) and document.mask.dtype == np.uint8
    assert not document.canvas.is_empty()
    image = document.image
    assert image.shape[:2] == (stack.height, stack.width) and image.dtype == np.uint8


def _paths(value, prefix=()) -> list[tuple]:
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["data/layer-1.png", "latent-canvas/mask.png", "latent-canvas/layer-3-mask.png",
                       "../../etc/passwd", "stack.xml", "mergedimage.png"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


@given(data=st.data())
def test_any_change_to_document_json_gives_a_document_or_one_line(tmp_path, saved, data):
    entry = json.loads(zipfile.ZipFile(io.BytesIO(saved)).read(JSON_NAME))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(entry)))
        target = entry
        for key in path[:-1]:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = data.draw(JSON_VALUES)
        if not isinstance(entry, dict):
            break
    _load_checked(tmp_path, rewrite(saved, {JSON_NAME: json.dumps(entry).encode()}))


@given(flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.none() | st.integers(0, 2**31))
def test_damaged_bytes_give_a_document_or_one_line(tmp_path, saved, flips, cut):
    raw = bytearray(saved)
    for at, value in flips:
        raw[at % len(raw)] = value
    if cut is not None:
        raw = raw[:cut % len(raw)]
    _load_checked(tmp_path, bytes(raw))


NAMES = st.sampled_from(["stack", "layer", "layer", "layer", "text"])
GOOD_SOURCES = ["data/top.png", "data/inner.png", "data/paper.png"]
NUMBERS = st.integers(-300, 300).map(str) | st.sampled_from(["1e9", "3.5", "nan", "999999999999", "x"])
ATTRIBUTES = st.fixed_dictionaries({"src": st.sampled_from(GOOD_SOURCES * 5 + ["../x.png", "", "data/none.png"])}, optional={
    "name": st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8),
    "x": NUMBERS, "y": NUMBERS,
    "opacity": st.sampled_from(["0", "0.25", "1", "0.7", "2", "-1", "nan", "half"]),
    "visibility": st.sampled_from(["visible", "hidden", "maybe"]),
    "composite-op": st.sampled_from(["svg:src-over", "svg:multiply", "svg:screen", ""])})


def _element(draw_tree) -> str:
    tag, attrs, children = draw_tree
    text = " ".join(f"{key}={quoteattr(value)}" for key, value in attrs.items())
    return f"<{tag} {text}>" + "".join(_element(child) for child in children) + f"</{tag}>"


TREES = st.recursive(st.tuples(NAMES, ATTRIBUTES, st.just([])),
                     lambda children: st.tuples(NAMES, ATTRIBUTES, st.lists(children, max_size=4)), max_leaves=12)


@given(tree=st.tuples(st.just("stack"), ATTRIBUTES, st.lists(TREES, max_size=5)),
       width=st.sampled_from(["100", "100", "100", "0", "abc", "200000"]), height=st.sampled_from(["80", "1"]))
def test_any_stack_xml_gives_a_document_or_one_line(tmp_path, tree, width, height):
    xml = f'<image w="{width}" h="{height}">{_element(tree)}</image>'.encode()
    _load_checked(tmp_path, foreign_ora(xml))
