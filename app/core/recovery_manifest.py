"""The recovery manifest (session.json) of a crash-recovery folder: written from a snapshot, and read back by
one validating reader. Qt-free; app/core/recovery.py writes and finds the folders.

`read(folder)` returns a Recovered whose every field is what the editor relies on (uint8 images of 3 or 4
channels within the pixel limit, masks of their image's size, named masks inside their image, integer
rectangles that fit the image at their point in the undo history, text that is text), or raises RecoveryError
with one line. It never raises anything else, whatever the folder holds, and it never writes to it.

Nothing is read into memory for an array before its .npy header has been read and checked: uint8, the shape
the manifest implies, and a file of exactly that many bytes. The pixels are then read as raw bytes into an
array of that shape, so nothing in a recovery folder is ever unpickled.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.changes import CanvasChange, Change, DocumentChange, MaskPatchChange
from app.core.document import Document, DocumentState, read_only
from app.core.geometry import Rect
from app.core.imageio import MAX_PIXELS
from app.core.layers import LayerStack
from app.core.safe_files import NotAFile, open_regular
from app.core.stack_records import (
    RecordError,
    named_masks_entry,
    parse_named_masks,
    parse_settings,
    parse_stack,
    show,
    stack_entry,
    text_value,
)

MANIFEST = "session.json"
FORMAT = 2                         # 2: layer stacks; 1 (one image per state) is still read
ARRAY_NAME = re.compile(r"[0-9a-f]{32}\.npy")      # what the writer names its arrays: uuid4().hex + ".npy"

MAX_MANIFEST_BYTES = 64 * 2**20
MAX_CHANGES = 100_000              # the writer keeps the newest this many steps
MAX_LABEL = 1_000                  # characters
MAX_PARAMETERS = 1_000_000
MAX_PATH = 32_768
MAX_COORDINATE = 2**31             # any rectangle's numbers, before the checks against the image
# All the pixels of one session. The undo history keeps 1 GiB, but always 5 steps however large they are:
# five accepted results at the pixel limit, each an RGBA image and its mask, fit.
MAX_TOTAL_BYTES = 8 * 2**30
# saved_at: between the first day of 1970 and the year 3000, where time.localtime works on every platform.
EARLIEST_SAVE, LATEST_SAVE = 86_400.0, 32_503_680_000.0


class RecoveryError(ValueError):
    """Recovery data that cannot be used, in one line."""


@dataclass
class Recovered:
    """A crashed session read back: the document as it was and its undo history."""
    document: Document
    changes: list[Change]
    index: int                          # the document is the state after changes[:index]
    saved_at: float
    folder: Path
    arrays: dict[str, np.ndarray]       # file name -> the array read from it (shared with the history)
    settings: dict | None = None        # the Generate panel's settings when it was saved

    def describe(self) -> str:
        name = _one_line(self.document.path.name) if self.document.path else "an unsaved image"
        try:
            when = time.strftime("%H:%M", time.localtime(self.saved_at))
        except (OverflowError, OSError, ValueError):
            when = "an unknown time"
        steps = f"{self.index} undo step{'s' if self.index != 1 else ''}"
        return f"{name}, {self.document.width}x{self.document.height}, {steps}, last saved at {when}"


# -- writing --------------------------------------------------------------------------------------------------

def manifest_for(document: Document, changes, index: int, saved_at: float, pid: int, ref,
                 settings: dict | None = None) -> dict:
    """The manifest of a snapshot; `ref(array)` writes an array (or finds it written) and gives its name."""
    changes, index = bounded_history(list(changes), index)
    manifest = {
        "format": FORMAT, "saved_at": saved_at, "pid": pid,
        "document": {"layers": stack_entry(document.layers, ref), "mask": ref(document.mask),
                     "canvas": _rect_entry(document.canvas), "path": str(document.path) if document.path else None,
                     "parameters": document.parameters},
        "changes": [_change_entry(change, ref) for change in changes],
        "index": index,
    }
    if document.named_masks:
        manifest["document"]["named_masks"] = named_masks_entry(document.named_masks, ref)
    if settings:
        manifest["settings"] = settings
    return manifest


def bounded_history(changes: list[Change], index: int) -> tuple[list[Change], int]:
    """At most MAX_CHANGES steps: the oldest undo steps go first, then the farthest redo steps."""
    drop = min(max(len(changes) - MAX_CHANGES, 0), index)
    changes, index = changes[drop:], index - drop
    return changes[:MAX_CHANGES], min(index, MAX_CHANGES)


def _rect_entry(rect: Rect) -> list[int]:
    return [int(rect.x), int(rect.y), int(rect.w), int(rect.h)]


def _state_entry(state: DocumentState, ref) -> dict:
    mask = None if state.mask is None else ref(state.mask)
    entry = {"layers": stack_entry(state.layers, ref), "mask": mask, "canvas": _rect_entry(state.canvas),
             "parameters": state.parameters}
    if state.named_masks is not None:            # absent: the step leaves the named masks as they are
        entry["named_masks"] = named_masks_entry(state.named_masks, ref)
    return entry


def _change_entry(change: Change, ref) -> dict:
    if isinstance(change, MaskPatchChange):
        return {"kind": "mask", "label": change.label, "rect": _rect_entry(change.rect),
                "before": ref(change.before), "after": ref(change.after)}
    if isinstance(change, CanvasChange):
        return {"kind": "canvas", "label": change.label, "before": _rect_entry(change.before),
                "after": _rect_entry(change.after)}
    if isinstance(change, DocumentChange):
        return {"kind": "document", "label": change.label, "before": _state_entry(change.before, ref),
                "after": _state_entry(change.after, ref)}
    raise TypeError(f"cannot save a {type(change).__name__} for recovery")


# -- reading --------------------------------------------------------------------------------------------------

class _Bad(Exception):
    """What is wrong with the recovery data, in words; read() adds which folder."""


@dataclass(frozen=True)
class _State:
    build: object                       # arrays by name -> the LayerStack
    mask: str
    canvas: Rect
    parameters: str
    size: tuple[int, int]               # the image's width and height
    named: object = None                # arrays by name -> the named masks; None: a step that keeps them


@dataclass(frozen=True)
class _Step:
    kind: str                           # "mask", "canvas" or "document"
    label: str
    before: object                      # a patch's file name, a canvas Rect, or a _State
    after: object
    rect: Rect | None = None            # where a mask patch goes


def read(folder: Path) -> Recovered:
    """The crashed session in `folder`, every part of it checked; RecoveryError (one line) otherwise."""
    folder = Path(folder)
    try:
        return _Reader(folder).read()
    except _Bad as bad:
        detail = str(bad)
    except Exception as exc:  # noqa: BLE001 - whatever is in the folder, the editor must still start
        lines = str(exc).splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    raise RecoveryError(_one_line(f"the recovery data in {folder} is damaged: {detail}")) from None


class _Reader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = _ArrayFiles(folder)

    def read(self) -> Recovered:
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode):
            raise _Bad("it is not a folder" if not stat.S_ISLNK(info.st_mode) else "it is a link, not a folder")
        top = _parse(self.folder / MANIFEST)
        if not isinstance(top, dict):
            raise _Bad(f"the manifest is {_show(top)}, not an object")
        if not _is_int(top.get("format")) or top["format"] not in (1, FORMAT):
            raise _Bad(f"recovery format {_show(top.get('format'))} is not {FORMAT}")
        saved_at = _saved_at(top.get("saved_at"))
        _integer(top, "pid", "pid", 0, 2**32)
        entry = _field(top, "document", dict, "document")
        document = self.state(entry, "document")
        path = _path(entry.get("path", _MISSING))
        entries = _field(top, "changes", list, "changes")
        if len(entries) > MAX_CHANGES:
            raise _Bad(f"{len(entries):,} undo steps; at most {MAX_CHANGES:,} are kept")
        steps = [self.step(item, f"changes[{i}]") for i, item in enumerate(entries)]
        index = top.get("index", _MISSING)
        if not _is_int(index):
            raise _Bad(f"undo position {_show(index)} is not a whole number")
        if not 0 <= index <= len(steps):
            raise _Bad(f"undo position {_show(index)} outside 0..{len(steps)}")
        _check_history(document.size, steps, index)
        settings = None
        if top.get("settings") is not None:
            try:
                settings = parse_settings(top["settings"], "settings")
            except RecordError as bad:
                raise _Bad(str(bad)) from None
        arrays = self.files.read_all()
        mask = arrays[document.mask].copy()          # the live mask is painted in place
        doc = Document(document.build(arrays), mask, document.canvas, path, document.parameters,
                       document.named(arrays))
        changes = [_change(step, arrays) for step in steps]
        return Recovered(doc, changes, index, saved_at, self.folder, arrays, settings)

    def state(self, entry: dict, where: str) -> _State:
        if "layers" in entry:
            try:
                (width, height), build = parse_stack(entry["layers"], self.files, f"{where}.layers")
            except RecordError as bad:
                raise _Bad(str(bad)) from None
            if width * height > MAX_PIXELS:
                raise _Bad(f"{where} is {width * height / 1e6:,.0f} megapixels; "
                           f"the limit is {MAX_PIXELS // 1_000_000}")
        else:                                        # format 1: one image
            image, (width, height) = self.files.image(entry.get("image", _MISSING), f"{where}.image")
            build = _single_image(image)
        if entry.get("mask", _MISSING) is None and where != "document":    # a step that keeps the mask
            mask = None
        else:
            mask = self.files.exact(entry.get("mask", _MISSING), (height, width), f"{where}.mask")
        canvas = _rect(entry.get("canvas", _MISSING), f"{where}.canvas")
        _check_canvas(canvas, (width, height), f"{where}.canvas")
        parameters = _text(entry.get("parameters", ""), f"{where}.parameters", MAX_PARAMETERS)
        named = entry.get("named_masks")                 # absent from older folders
        if named is None and where == "document":
            named = []
        if named is not None:
            try:
                named = parse_named_masks(named, self.files, f"{where}.named_masks", (width, height))
            except RecordError as bad:
                raise _Bad(str(bad)) from None
        return _State(build, mask, canvas, parameters, (width, height), named)

    def step(self, entry, where: str) -> _Step:
        if not isinstance(entry, dict):
            raise _Bad(f"{where} is {_show(entry)}, not an object")
        kind = entry.get("kind", _MISSING)
        label = _text(entry.get("label", _MISSING), f"{where}.label", MAX_LABEL)
        if kind == "mask":
            rect = _rect(entry.get("rect", _MISSING), f"{where}.rect")
            if rect.w < 0 or rect.h < 0:
                raise _Bad(f"{where}.rect has a negative size ({rect.w}x{rect.h})")
            before = self.files.exact(entry.get("before", _MISSING), (rect.h, rect.w), f"{where}.before")
            after = self.files.exact(entry.get("after", _MISSING), (rect.h, rect.w), f"{where}.after")
            return _Step("mask", label, before, after, rect)
        if kind == "canvas":
            return _Step("canvas", label, _rect(entry.get("before", _MISSING), f"{where}.before"),
                         _rect(entry.get("after", _MISSING), f"{where}.after"))
        if kind == "document":
            return _Step("document", label,
                         self.state(_field(entry, "before", dict, f"{where}.before"), f"{where}.before"),
                         self.state(_field(entry, "after", dict, f"{where}.after"), f"{where}.after"))
        raise _Bad(f"unknown change kind {_show(kind)} in {where}")


def _check_history(size: tuple[int, int], steps: list[_Step], index: int) -> None:
    """The document is the state after steps[:index]. Walk back from it through the undo steps, and forward
    through the redo steps, knowing the image's size at each step: every step must fit the image it meets."""
    before = size
    for i in range(index - 1, -1, -1):
        before = _check_step(steps[i], before, f"changes[{i}]", backward=True)
    after = size
    for i in range(index, len(steps)):
        after = _check_step(steps[i], after, f"changes[{i}]", backward=False)


def _check_step(step: _Step, size: tuple[int, int], where: str, backward: bool) -> tuple[int, int]:
    """Check one step against the image size on its near side; the size on its far side."""
    width, height = size
    if step.kind == "mask":
        if not Rect(0, 0, width, height).contains_rect(step.rect):
            r = step.rect
            raise _Bad(f"{where}: the mask patch at ({r.x}, {r.y}) {r.w}x{r.h} lies outside the "
                       f"{width}x{height} image")
        return size
    if step.kind == "canvas":
        _check_canvas(step.before, size, f"{where}.before")
        _check_canvas(step.after, size, f"{where}.after")
        return size
    near, far = (step.after, step.before) if backward else (step.before, step.after)
    if near.size != size:
        side = "after" if backward else "before"
        raise _Bad(f"{where}: the image {side} this step is {near.size[0]}x{near.size[1]}, "
                   f"but the history around it has {width}x{height}")
    return far.size


def _check_canvas(canvas: Rect, size: tuple[int, int], where: str) -> None:
    if canvas.w < 1 or canvas.h < 1:
        raise _Bad(f"{where} is {canvas.w}x{canvas.h}, not a canvas")
    if canvas.w * canvas.h > MAX_PIXELS:
        raise _Bad(f"{where} is {canvas.w * canvas.h / 1e6:,.0f} megapixels; "
                   f"the limit is {MAX_PIXELS // 1_000_000}")
    if canvas.intersect(Rect(0, 0, *size)).is_empty():
        raise _Bad(f"{where} ({canvas.x}, {canvas.y}) {canvas.w}x{canvas.h} does not overlap the "
                   f"{size[0]}x{size[1]} image")


def _change(step: _Step, arrays: dict[str, np.ndarray]) -> Change:
    if step.kind == "mask":
        return MaskPatchChange(step.rect, arrays[step.before], arrays[step.after], step.label)
    if step.kind == "canvas":
        return CanvasChange(step.before, step.after, step.label)
    return DocumentChange(_document_state(step.before, arrays), _document_state(step.after, arrays), step.label)


def _document_state(state: _State, arrays: dict[str, np.ndarray]) -> DocumentState:
    mask = None if state.mask is None else arrays[state.mask]
    named = None if state.named is None else state.named(arrays)
    return DocumentState(state.build(arrays), mask, state.canvas, state.parameters, named)


def _single_image(name: str):
    return lambda arrays: LayerStack.from_image(arrays[name])


# -- the .npy files -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    offset: int                         # where the pixels start
    size: int                           # of the whole file


class _ArrayFiles:
    """The arrays a manifest names: each header is checked when the name is first met, and the pixels of all
    of them are read once everything else has been checked."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.headers: dict[str, _Header] = {}
        self.total = 0

    def image(self, value, where: str) -> tuple[str, tuple[int, int]]:
        """The name and (width, height) of the H x W x 3 or 4 image named `value`."""
        name, shape = self._shape(value, where)
        if len(shape) != 3 or shape[2] not in (3, 4) or shape[0] < 1 or shape[1] < 1:
            raise _Bad(f"{where} ({name}) is {_shape_text(shape)}, not an H x W x 3 or 4 image")
        if shape[0] * shape[1] > MAX_PIXELS:
            raise _Bad(f"{where} ({name}) is {shape[0] * shape[1] / 1e6:,.0f} megapixels; "
                       f"the limit is {MAX_PIXELS // 1_000_000}")
        return name, (shape[1], shape[0])

    def plane(self, value, where: str) -> tuple[str, tuple[int, int]]:
        """The name and (width, height) of the H x W mask named `value`."""
        name, shape = self._shape(value, where)
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1 or shape[0] * shape[1] > MAX_PIXELS:
            raise _Bad(f"{where} ({name}) is {_shape_text(shape)}, not an H x W mask")
        return name, (shape[1], shape[0])

    def exact(self, value, shape: tuple[int, ...], where: str) -> str:
        name, found = self._shape(value, where)
        if found != shape:
            raise _Bad(f"{where} ({name}) is {_shape_text(found)}, not {_shape_text(shape)}")
        return name

    def _shape(self, value, where: str) -> tuple[str, tuple[int, ...]]:
        if not isinstance(value, str) or not ARRAY_NAME.fullmatch(value):
            raise _Bad(f"bad array name {_show(value)} in {where}")
        if value not in self.headers:
            try:
                with _open_regular(self.folder / value, value) as handle:
                    header = _read_header(handle, value)
            except _Bad as bad:
                raise _Bad(f"{where}: {bad}") from None
            self.total += header.size - header.offset
            if self.total > MAX_TOTAL_BYTES:
                raise _Bad(f"the arrays hold over {MAX_TOTAL_BYTES // 2**30} GiB")
            self.headers[value] = header
        return value, self.headers[value].shape

    def read_all(self) -> dict[str, np.ndarray]:
        """Every named array, read-only, read as raw bytes after its header was checked again."""
        arrays = {}
        for name, expected in self.headers.items():
            with _open_regular(self.folder / name, name) as handle:
                if _read_header(handle, name) != expected:
                    raise _Bad(f"{name} changed while it was read")
                array = np.empty(expected.shape, np.uint8)
                view, filled = memoryview(array.reshape(-1)), 0
                while filled < array.size:
                    count = handle.readinto(view[filled:])
                    if not count:
                        raise _Bad(f"{name} ends early")
                    filled += count
            array.setflags(write=False)
            arrays[name] = read_only(array)
        return arrays


def _read_header(handle, name: str) -> _Header:
    """The header of a .npy file, checked: version 1 or 2, uint8, C order, at most 3 dimensions and an RGBA
    image's worth of pixels, and a file of exactly the header plus those pixels."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise _Bad(f"{name} is a .npy file of version {version[0]}.{version[1]}, not 1.0 or 2.0")
    if dtype != np.dtype(np.uint8) or dtype.hasobject:
        raise _Bad(f"{name} holds {dtype} values, not uint8")
    if fortran_order:
        raise _Bad(f"{name} is in Fortran order")
    if len(shape) > 3 or any(n < 0 for n in shape):
        raise _Bad(f"{name} is {_shape_text(shape)}, not an image, mask or patch")
    count = math.prod(shape)
    if count > 4 * MAX_PIXELS:
        raise _Bad(f"{name} claims {count:,} values; an image holds at most {4 * MAX_PIXELS:,}")
    offset, size = handle.tell(), os.fstat(handle.fileno()).st_size
    if size != offset + count:
        raise _Bad(f"{name} holds {size - offset:,} bytes of pixels; its header says {count:,}")
    return _Header(tuple(shape), offset, size)


def _open_regular(path: Path, name: str):
    """`path` opened for reading if it is a regular file in its folder: not a link, a folder, a pipe or a
    device (a pipe would block the reader for ever)."""
    try:
        return open_regular(path, follow_links=False)
    except FileNotFoundError:
        raise _Bad(f"{name} is missing") from None
    except IsADirectoryError:
        raise _Bad(f"{name} is a folder, not a file") from None
    except NotAFile as exc:
        raise _Bad(f"{name} is {'a link' if exc.kind == 'link' else 'special'}, not a file") from None


# -- the manifest's values ------------------------------------------------------------------------------------

_MISSING = object()


def _parse(path: Path):
    with _open_regular(path, MANIFEST) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_MANIFEST_BYTES:
            raise _Bad(f"{MANIFEST} is {size:,} bytes; at most {MAX_MANIFEST_BYTES:,} are read")
        data = handle.read(size + 1)     # read(n) sets aside n bytes: ask for what fstat says, and a byte more
    if len(data) > size:
        raise _Bad(f"{MANIFEST} grew while it was read")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Bad(f"{MANIFEST} is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Bad(f"{MANIFEST} is not JSON ({why})") from None


def _field(entry: dict, key: str, kind: type, where: str):
    value = entry.get(key, _MISSING)
    if not isinstance(value, kind):
        raise _Bad(f"{where} is {_show(value)}, not {'an object' if kind is dict else 'a list'}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(entry: dict, key: str, where: str, low: int, high: int) -> int:
    value = entry.get(key, _MISSING)
    if not _is_int(value) or not low <= value <= high:
        raise _Bad(f"{where} is {_show(value)}, not a whole number in {low}..{high}")
    return value


def _saved_at(value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not EARLIEST_SAVE <= value <= LATEST_SAVE:
        raise _Bad(f"saved_at is {_show(value)}, not a time between 1970 and 3000")
    try:
        time.localtime(value)
    except (OverflowError, OSError, ValueError):
        raise _Bad(f"saved_at {value!r} is not a time this system can show") from None
    return float(value)


def _rect(value, where: str) -> Rect:
    if not isinstance(value, list) or len(value) != 4 or not all(_is_int(v) for v in value):
        raise _Bad(f"{where} is {_show(value)}, not 4 whole numbers")
    if any(abs(v) > MAX_COORDINATE for v in value):
        raise _Bad(f"{where} has a number beyond {MAX_COORDINATE:,}")
    return Rect(*value)


def _text(value, where: str, limit: int) -> str:
    if value is _MISSING:
        raise _Bad(f"{where} is missing, not text")
    try:
        return text_value(value, where, limit)
    except RecordError as bad:
        raise _Bad(str(bad)) from None


def _path(value) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Bad(f"document.path is {_show(value)}, not text")
    if len(value) > MAX_PATH or "\0" in value:
        raise _Bad("document.path is not a file name (too long, or it holds a NUL)")
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        raise _Bad("document.path is not a file name this system can use") from None
    if not Path(value).is_absolute():         # Save would write it relative to wherever the editor started
        raise _Bad("document.path is not an absolute path")
    return Path(value)


def _show(value) -> str:
    """A value of the manifest in a few characters, for a message."""
    return "missing" if value is _MISSING else show(value)


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape) + (" (1-D)" if len(shape) == 1 else "") if shape else "a scalar"


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)
