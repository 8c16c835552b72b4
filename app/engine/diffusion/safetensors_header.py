"""A bounded reader of .safetensors headers: the names, dtypes and shapes of the tensors, never their data.

The format: an 8-byte little-endian length N, then N bytes of UTF-8 JSON,
  {"__metadata__": {str: str}, "<tensor name>": {"dtype": "F16", "shape": [ints], "data_offsets": [b, e]}}
then the data section, every tensor's bytes back to back in offset order, filling it exactly.

A hostile header can be cheap to write and costly to parse (1.5 million empty tensors are a 90 MB file that
took the safetensors library 8-15 s and 1.3 GB to open), so everything is bounded before json.loads sees it:
the header's size, then how many objects and values its structure holds. Those are counted on the header
with its strings taken out, so no name or escape sequence can hide structure from the count. Every entry is
then checked the way the safetensors library checks it (a known dtype, a shape of non-negative integers,
offsets that tile the data section exactly and match the shape), so what passes here also loads there.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from app.engine.events import EngineError

MAX_HEADER_BYTES = 32 << 20    # SDXL checkpoints (~2,500 tensors) are under 1 MB; kohya LoRA metadata a few MB
MAX_TENSORS = 50_000
MAX_VALUES = 20 * MAX_TENSORS  # a tensor's entry is about 10-15 JSON values (its shape's dimensions among them)
MAX_NAME = 1024                # characters of a tensor name (real ones: under 150)
MAX_DIMENSIONS = 16
MAX_METADATA = 10_000          # __metadata__ entries (kohya LoRAs: about 60)

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
               "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
               "I64": 8, "U64": 8, "F64": 8, "C64": 8}

_CHUNK = 1 << 20


class TensorInfo(NamedTuple):
    dtype: str                  # a safetensors dtype name: "F16", "BF16", "F32", "I64", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]      # in the order the header lists them
    metadata: dict[str, str]


def read_safetensors_header(path: Path, label: str = "") -> SafetensorsHeader:
    """The validated header of the .safetensors file `path`; EngineError (one line, naming the file as
    `label`, or by its name) when it is not one or exceeds what a model can hold."""
    name = label or Path(path).name

    def refuse(reason: str) -> EngineError:
        return EngineError(f"{name} is not a readable .safetensors file: {reason}")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise refuse(f"it is only {len(prefix)} bytes long")
            length = int.from_bytes(prefix, "little")
            if length > size - 8:
                raise refuse(f"its header claims {length:,} bytes but the file holds {size - 8:,} after the "
                             "length (truncated, or another kind of file)")
            if length > MAX_HEADER_BYTES:
                raise refuse(f"its header is {length:,} bytes; a model's is at most {MAX_HEADER_BYTES:,}")
            raw = handle.read(length)
    except OSError as exc:
        raise EngineError(f"could not read {name}: {exc.strerror or exc}") from None
    if len(raw) < length:
        raise refuse("it was truncated while being read")
    return _parse(raw, size - 8 - length, refuse)


def _parse(raw: bytes, data_size: int, refuse) -> SafetensorsHeader:
    if not raw.startswith(b"{"):
        raise refuse("its header is not a JSON object")
    others = 1 + (b'"__metadata__"' in raw)   # the objects that are no tensor's: the header, __metadata__
    objects, values = _structure_counts(raw, MAX_TENSORS + others)
    if objects - others > MAX_TENSORS:
        raise refuse(f"its header lists {objects - others:,} tensors; a model has at most {MAX_TENSORS:,}")
    if values > MAX_VALUES:
        raise refuse(f"its header holds {values:,} values; a model's holds at most {MAX_VALUES:,}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise refuse("its header is not UTF-8 text") from None
    except RecursionError:
        raise refuse("its header nests too deeply") from None
    except ValueError as exc:
        raise refuse(f"its header is not valid JSON ({' '.join(str(exc).split())[:80]})") from None
    if not isinstance(data, dict):
        raise refuse("its header is not a JSON object")
    metadata = data.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise refuse("its __metadata__ is not a map of strings")
    if len(metadata) > MAX_METADATA:
        raise refuse(f"its __metadata__ has {len(metadata):,} entries; at most {MAX_METADATA:,} are allowed")
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int]] = []
    for tensor, entry in data.items():
        info, span = _entry(tensor, entry, data_size, refuse)
        tensors[tensor] = info
        spans.append(span)
    spans.sort()
    end_of_data = 0
    for begin, end in spans:
        if begin != end_of_data:
            raise refuse("its tensors' data overlap or leave gaps")
        end_of_data = end
    if end_of_data != data_size:
        raise refuse(f"its tensors take {end_of_data:,} bytes but the file holds {data_size:,} after the "
                     "header")
    return SafetensorsHeader(tensors, metadata)


def _structure_counts(raw: bytes, max_objects: int) -> tuple[int, int]:
    """(objects, values) a JSON text holds, at most: its "{", and its ":", "," and "[", outside strings.

    Counting them everywhere is an upper bound that a model's header stays far below; only when it is over
    `max_objects` or MAX_VALUES (a large metadata text full of punctuation, or a hostile header) are the
    strings taken out, for the exact count, in chunks:
    with escaped backslashes and quotes removed, a byte is inside a string when an odd number of quotes
    precede it."""
    def count(text: bytes, chars: bytes) -> int:
        return sum(text.count(bytes([char])) for char in chars)
    objects, values = raw.count(b"{"), count(raw, b":,[")
    if objects <= max_objects and values <= MAX_VALUES:
        return objects, values
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    objects = values = inside = 0
    for start in range(0, len(plain), _CHUNK):
        chunk = np.frombuffer(plain, np.uint8, min(_CHUNK, len(plain) - start), start)
        in_string = np.bitwise_xor.accumulate((chunk == ord('"')).view(np.uint8)) ^ inside
        outside = in_string == 0
        objects += int(np.count_nonzero(outside & (chunk == ord("{"))))
        values += sum(int(np.count_nonzero(outside & (chunk == char))) for char in b":,[")
        inside = int(in_string[-1])
    return objects, values


def _entry(tensor: str, entry, data_size: int, refuse) -> tuple[TensorInfo, tuple[int, int]]:
    """One tensor's (dtype, shape) and (begin, end) in the data section, checked."""
    if len(tensor) > MAX_NAME:
        raise refuse(f"a tensor name is {len(tensor):,} characters long; at most {MAX_NAME:,} are allowed")
    if type(entry) is not dict or len(entry) != 3 or not ("dtype" in entry and "shape" in entry
                                                          and "data_offsets" in entry):
        raise refuse(f"tensor {shown_name(tensor)} is not described by exactly a dtype, a shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if type(dtype) is not str or dtype not in DTYPE_BYTES:
        raise refuse(f"tensor {shown_name(tensor)} has the unknown dtype {shown_name(str(dtype), 20)}")
    if type(shape) is not list or len(shape) > MAX_DIMENSIONS or not _sizes(shape):
        raise refuse(f"tensor {shown_name(tensor)} has an invalid shape (a list of at most {MAX_DIMENSIONS} sizes)")
    if type(offsets) is not list or len(offsets) != 2 or not _sizes(offsets):
        raise refuse(f"tensor {shown_name(tensor)} has invalid data_offsets (two byte positions)")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise refuse(f"tensor {shown_name(tensor)} lies outside the file's {data_size:,} data bytes "
                     f"(offsets {begin:,} to {end:,})")
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - begin != expected:
        raise refuse(f"tensor {shown_name(tensor)} takes {end - begin:,} bytes but its shape and dtype need "
                     f"{expected:,}")
    return TensorInfo(dtype, tuple(shape)), (begin, end)


def _sizes(values: list) -> bool:
    """Integers in [0, 2**63) (not booleans, not floats)."""
    for value in values:
        if type(value) is not int or not 0 <= value < 2**63:
            return False
    return True


def shown_name(text: str, limit: int = 80) -> str:
    """A name from a file as it can go into a one-line message: quoted, escaped, shortened."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")

