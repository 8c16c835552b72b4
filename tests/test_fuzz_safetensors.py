"""Fuzzing the bounded .safetensors header reader with random and mutated files.

Whatever the bytes, the reader answers within `bounded`'s time and memory with either a header the
safetensors library itself reads the same way, or one EngineError line naming the file; and it never
changes the file.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.engine.events import EngineError
from app.engine.diffusion.safetensors_header import DTYPE_BYTES, read_safetensors_header
from tests.fuzzing import bounded

NAME = "fuzzed.safetensors"

names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=40)
tensors = st.lists(st.tuples(names, st.sampled_from(sorted(DTYPE_BYTES)),
                             st.lists(st.integers(0, 5), max_size=4)), max_size=8, unique_by=lambda t: t[0])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def valid_file(entries, metadata=None) -> tuple[dict, bytes]:
    """(header, data) of a well-formed file holding `entries` (name, dtype, shape), back to back."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, dtype, shape in entries:
        size = DTYPE_BYTES[dtype]
        for dimension in shape:
            size *= dimension
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, bytes(range(256)) * (offset // 256) + bytes(range(offset % 256))


def encode(header, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


@st.composite
def mutated_files(draw) -> bytes:
    entries = draw(tensors)
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3))
    header, data = valid_file(entries, metadata)
    how = draw(st.sampled_from(["valid", "field", "metadata", "length", "bytes", "truncate", "nesting",
                                "not utf-8", "extra"]))
    if how == "field" and entries:
        name = draw(st.sampled_from([e[0] for e in entries]))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = draw(json_values | st.lists(st.integers(-2**66, 2**66), max_size=3))
    elif how == "metadata":
        header["__metadata__"] = draw(json_values)
    elif how == "length":
        raw = json.dumps(header).encode()
        length = draw(st.integers(0, 2**64 - 1) | st.integers(max(0, len(raw) - 4), len(raw) + 4))
        return encode(raw, data, length)
    elif how == "bytes":
        raw = bytearray(json.dumps(header).encode())
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(raw)))
            raw[position:position + draw(st.integers(0, 3))] = draw(st.binary(max_size=3))
        return encode(bytes(raw), data)
    elif how == "truncate":
        whole = encode(header, data)
        return whole[:draw(st.integers(0, len(whole)))]
    elif how == "nesting":
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        header[draw(names)] = "__nest__"
        raw = json.dumps(header).replace('"__nest__"', opener * depth + closer * depth)
        return encode(raw.encode(), data)
    elif how == "not utf-8":
        raw = json.dumps(header, ensure_ascii=False).encode()
        position = draw(st.integers(0, len(raw)))
        return encode(raw[:position] + draw(st.binary(min_size=1, max_size=4)) + raw[position:], data)
    elif how == "extra":
        header[draw(names)] = draw(json_values)
    return encode(header, data)


def check(path, content: bytes) -> None:
    path.write_bytes(content)
    header = None
    with bounded(seconds=1.0, megabytes=32):
        try:
            header = read_safetensors_header(path)
        except EngineError as error:
            message = str(error)
            assert "\n" not in message and NAME in message, message
    assert path.read_bytes() == content
    if header is not None:                 # what passes here is what the library reads
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            expected = {key: (handle.get_slice(key).get_dtype(), tuple(handle.get_slice(key).get_shape()))
                        for key in handle.keys()}
        assert {key: (info.dtype, info.shape) for key, info in header.tensors.items()} == expected


@pytest.fixture
def path(tmp_path):
    return tmp_path / NAME


@given(content=st.binary(max_size=2048))
def test_random_bytes(path, content):
    check(path, content)


@given(body=st.binary(max_size=2048))
def test_random_headers_with_a_matching_length(path, body):
    check(path, encode(b"{" + body, b""))


@given(content=mutated_files())
def test_mutated_headers(path, content):
    check(path, content)


@given(entries=tensors)
def test_valid_files_are_read_as_the_library_reads_them(path, entries):
    header, data = valid_file(entries, {"format": "pt"})
    content = encode(header, data)
    check(path, content)
    assert list(read_safetensors_header(path).tensors) == [e[0] for e in entries]
