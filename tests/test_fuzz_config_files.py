"""Fuzzing the readers of the editor's own JSON files: settings.json, models.json and styles.json.

Whatever a file holds, its reader returns usable values and reports the damage in lines of its own; it
never raises, stays within time and memory, and the bytes the user had are kept (in place, or beside it).
"""
import json
import math

from hypothesis import given
from hypothesis import strategies as st

from app.core.styles import DEFAULT_STYLES_PATH, NONE, Style, read_styles
from app.editor.model_library import ModelEntry, ModelLibrary
from app.editor.stored_settings import SCHEMA, SettingsStore
from tests.fuzzing import bounded

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
schema_keys = st.sampled_from(sorted(SCHEMA))


def mutated(data: bytes, draw_ops) -> bytes:
    for op, position, value in draw_ops:
        position %= max(len(data), 1)
        if op == 0:
            data = data[:position] + data[position + 1:]
        elif op == 1:
            data = data[:position] + bytes([value]) + data[position:]
        else:
            data = data[:position] + bytes([value]) + data[position + 1:]
    return data


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


def planted(factory, name: str, data: bytes):
    path = factory.mktemp(name.split(".")[0]) / name
    path.write_bytes(data)
    return path


def kept(path) -> set[bytes]:
    """The bytes of the file and of the copies its reader set aside."""
    return {p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


@given(st.dictionaries(schema_keys | st.text(max_size=20), json_values, max_size=12), edits)
def test_settings_reader(tmp_path_factory, settings, ops):
    data = mutated(json.dumps({"version": 1, "settings": settings}).encode(), ops)
    path = planted(tmp_path_factory, "settings.json", data)
    with bounded(seconds=2, megabytes=32):
        store = SettingsStore(path)
    for key, setting in SCHEMA.items():
        value = store.get(key)
        assert type(value) is setting.kind
        if setting.low is not None:
            assert setting.low <= value <= setting.high and math.isfinite(value)
    assert all("\n" not in line for line in store.problems)
    assert data in kept(path)


@given(st.binary(max_size=300))
def test_settings_reader_on_random_bytes(tmp_path_factory, data):
    path = planted(tmp_path_factory, "settings.json", data)
    with bounded(seconds=2, megabytes=16):
        store = SettingsStore(path)
    assert store.get("panel/steps") in range(1, 151)
    assert data in kept(path)


model_items = st.one_of(
    json_values,
    st.fixed_dictionaries({"location": st.text(max_size=30) | json_values,
                           "kind": st.sampled_from(["file", "folder", "repo", "other"]) | json_values},
                          optional={"label": st.text(max_size=20) | json_values,
                                    "config": st.text(max_size=20) | json_values}))


@given(st.lists(model_items, max_size=8), edits)
def test_model_list_reader(tmp_path_factory, items, ops):
    data = mutated(json.dumps({"version": 1, "models": items}).encode(), ops)
    path = planted(tmp_path_factory, "models.json", data)
    with bounded(seconds=2, megabytes=32):
        library = ModelLibrary(path)
    for entry in library.entries():
        assert isinstance(entry, ModelEntry) and entry.location.strip() and entry.kind in ("file", "folder", "repo")
        assert all(isinstance(v, str) for v in (entry.location, entry.label, entry.config))
    assert data in kept(path)
    assert all("\n" not in line for line in library.problems)


style_entries = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": st.text(max_size=20) | json_values,
                           "prompt": st.sampled_from(["{prompt}", "oil, {prompt}", "no placeholder"]) | json_values},
                          optional={key: json_values for key in ("negative_prompt", "sampler", "steps", "guidance",
                                                                 "lora", "lora_weight", "unknown")}))


@given(st.lists(style_entries, max_size=8), edits)
def test_styles_reader(tmp_path_factory, entries, ops):
    data = mutated(json.dumps(entries).encode(), ops)
    path = planted(tmp_path_factory, "styles.json", data)
    with bounded(seconds=2, megabytes=32):
        found = read_styles(path)
    assert found.styles[0] == NONE or found.styles[0].name.casefold() == "none"
    assert all(isinstance(style, Style) and "{prompt}" in style.prompt for style in found.styles)
    names = [style.name.casefold() for style in found.styles]
    assert len(names) == len(set(names))
    for style in found.styles:
        style.apply("a fox", "blur")                      # every style offered can be used
    assert all("\n" not in line for line in found.problems)
    assert path.read_bytes() == data                      # the reader never writes


def test_the_shipped_styles_read_without_problems():
    found = read_styles(DEFAULT_STYLES_PATH)
    assert found.problems == () and len(found.styles) > 10
