"""Reading OpenRaster (.ora) projects, within bounds, and the layout both the reader and the writer
(app/core/openraster.py, the public API) use. Qt-free.

An .ora is a zip: `mimetype` first, stored, holding "image/openraster"; `stack.xml`, the layer tree (in each
<stack> the first child is the topmost); the layer PNGs it names under data/; `mergedimage.png`, the
composite; `Thumbnails/thumbnail.png`. Latent Canvas adds a folder of its own, which other programs ignore:
`latent-canvas/document.json` (the layer stack as app/core/stack_records writes it, every array named by a
PNG member, with the mask, the canvas, the parameters and the CRC-32 of stack.xml and each data/ member) and
the PNGs only it uses: variants that are not selected, generation masks, the document mask and the named
masks (8-bit grey; a named mask's patch covers its bounding box, its name and offset are in document.json).
A layer's pixels, the selected variant's for a generative layer, are its data/ PNG, named by both.

Nothing in the file is trusted. The zip's central directory is sized from its end record before zipfile
parses it; only stored and deflated members are read (zipfile bounds deflate's output, not bzip2's or
LZMA's), each into memory under limits on its claimed and its real size and on the total. Member names are
only looked up in the zip's directory: none is ever joined to a path, nothing is extracted. stack.xml is
parsed by expat with any DTD refused, so no entity can expand, and bounded in size, elements and depth.
Images are decoded by app/core/imageio under its pixel limit, once their PNG headers have been checked
against the limits. Every failure is a ProjectError of one line.
"""
from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from app.core.document import Document, read_only
from app.core.geometry import Rect
from app.core.imageio import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ImageLoadError,
    load_image_bytes,
    mask_from_pixels,
)
from app.core.layers import Layer, LayerStack
from app.core.safe_files import NotAFile, open_regular, writable_text
from app.core.stack_records import (
    MAX_LAYERS,
    MAX_OFFSET,
    MAX_PARAMETERS,
    RecordError,
    parse_named_masks,
    parse_stack,
    show,
)

MIMETYPE = b"image/openraster"
STACK_XML = "stack.xml"
MERGED = "mergedimage.png"
THUMBNAIL = "Thumbnails/thumbnail.png"
OWN_FOLDER = "latent-canvas/"
DOCUMENT_JSON = OWN_FOLDER + "document.json"
FORMAT = 1
OWN_NAME = re.compile(r"(data|latent-canvas)/[A-Za-z0-9_.-]{1,120}\.png")

MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 16 * 2**20
MAX_XML_BYTES = 16 * 2**20
MAX_JSON_BYTES = 64 * 2**20
MAX_IMAGE_BYTES = MAX_FILE_BYTES
MAX_READ_BYTES = 8 * 2**30           # everything read from one file, uncompressed
MAX_PIXEL_BYTES = 8 * 2**30          # every decoded image of one file together
MAX_ELEMENTS = 200_000
MAX_DEPTH = 64
_READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_PNG = b"\x89PNG\r\n\x1a\n"


class ProjectError(Exception):
    """A project that cannot be opened or saved; str() is one line naming the file."""


class _NotOra(Exception):
    """Why the file is no OpenRaster file at all."""


class _Bad(Exception):
    """What is wrong with an OpenRaster file, in words."""


def read_project(path: Path) -> tuple[Document, list[str]]:
    path = Path(path)
    name = path.name or str(path)
    try:
        with _open(path) as handle:
            return _Reader(handle, path).read()
    except _NotOra as exc:
        text = f"{name} is not an OpenRaster file: {exc}"
    except _Bad as exc:
        text = f"cannot open {name}: {exc}"
    except MemoryError:
        text = f"cannot open {name}: not enough memory"
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, the caller gets one line
        lines = str(exc).splitlines()
        text = f"cannot open {name}: {type(exc).__name__}" + (f": {lines[0]}" if lines else "")
    raise ProjectError(one_line(text)) from None


def _open(path: Path):
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise _Bad("no such file") from None
    except IsADirectoryError:
        raise _Bad("it is a folder, not a file") from None
    except NotAFile:
        raise _Bad("it is not a regular file (a pipe, a device or a socket)") from None
    except PermissionError:
        raise _Bad("permission denied") from None
    except OSError as exc:
        raise _Bad(f"cannot read the file ({exc.strerror or exc})") from None


class _Reader:
    def __init__(self, handle, path: Path) -> None:
        self.archive = Archive(handle)
        self.path = path
        self.notes: list[str] = []

    def read(self) -> tuple[Document, list[str]]:
        self.archive.check_mimetype()
        if DOCUMENT_JSON in self.archive:
            document = self._own()
            if document is not None:
                return document, self.notes
            self.notes.append("its layers were changed by another program after Latent Canvas saved it: they "
                              "are opened as that program left them, without the variants and masks of "
                              "generative layers")
        elif any(name.startswith(OWN_FOLDER) for name in self.archive.members):
            raise _Bad(f"it has a {OWN_FOLDER} folder without {DOCUMENT_JSON}")
        return self._foreign(), self.notes

    # -- what Latent Canvas saved ------------------------------------------------------------------------------
    def _own(self) -> Document | None:
        raw = self.archive.read(DOCUMENT_JSON, MAX_JSON_BYTES)
        try:
            top = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Bad(f"{DOCUMENT_JSON} is not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _Bad(f"{DOCUMENT_JSON} is not JSON ({why})") from None
        if not isinstance(top, dict):
            raise _Bad(f"{DOCUMENT_JSON} holds {show(top)}, not an object")
        version = top.get("format")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _Bad(f"{DOCUMENT_JSON}: format is {show(version)}, not a version number")
        if version > FORMAT:
            raise _Bad(f"it was saved by a newer Latent Canvas (project format {version}); this one reads "
                       f"format {FORMAT}")
        if not self._unchanged(top.get("written")):
            return None
        files = OwnFiles(self.archive)
        try:
            (width, height), build = parse_stack(top.get("layers"), files, "stack")
            if width * height > MAX_PIXELS:
                raise RecordError(f"the image is {width} x {height}, over the {MAX_PIXELS // 1_000_000} "
                                  "megapixel limit")
            mask, size = files.plane(top.get("mask"), "mask")
            if size != (width, height):
                raise RecordError(f"the mask is {size[0]} x {size[1]}, not {width} x {height}")
            canvas = _canvas(top.get("canvas"), width, height)
            parameters = top.get("parameters", "")
            if not isinstance(parameters, str) or len(parameters) > MAX_PARAMETERS or not writable_text(parameters):
                raise RecordError(f"parameters is {show(parameters)}, not text of up to {MAX_PARAMETERS:,} "
                                  "characters")
            named = parse_named_masks(top.get("named_masks", []), files, "named_masks", (width, height))
        except RecordError as bad:
            raise _Bad(f"{DOCUMENT_JSON}: {bad}") from None
        arrays = files.read_all()
        try:
            stack = build(arrays)
        except ValueError as exc:
            raise _Bad(f"{DOCUMENT_JSON}: {exc}") from None
        return Document(stack, arrays[mask].copy(), canvas, self.path, parameters, named(arrays))

    def _unchanged(self, written) -> bool:
        """Whether stack.xml and the data/ members are still those Latent Canvas wrote beside its folder."""
        if not isinstance(written, dict) or STACK_XML not in written or len(written) > MAX_MEMBERS:
            raise _Bad(f"{DOCUMENT_JSON}: written is {show(written)}, not the CRC-32s of the members it was saved with")
        for name, crc in written.items():
            if not isinstance(crc, int) or isinstance(crc, bool):
                raise _Bad(f"{DOCUMENT_JSON}: written[{show(name)}] is {show(crc)}, not a CRC-32")
            info = self.archive.members.get(name)
            if info is None or info.CRC != crc:
                return False
        return not any(name.startswith("data/") and name not in written for name in self.archive.members)

    # -- what any program saved ------------------------------------------------------------------------------
    def _foreign(self) -> Document:
        if STACK_XML not in self.archive:
            raise _Bad(f"it has no {STACK_XML}")
        root = parse_xml(self.archive.read(STACK_XML, MAX_XML_BYTES), STACK_XML)
        if root.tag != "image":
            raise _Bad(f"{STACK_XML}: the root element is <{root.tag[:40]}>, not <image>")
        width = _number(root, "w", None, 1, 2**31)
        height = _number(root, "h", None, 1, 2**31)
        if width * height > MAX_PIXELS:
            raise _Bad(f"the image is {width} x {height}, over the {MAX_PIXELS // 1_000_000} megapixel limit")
        top = next((child for child in root.children if child.tag == "stack"), None)
        if top is None:
            raise _Bad(f"{STACK_XML} has no <stack> in its <image>")
        tree = _Tree()
        tree.walk(top, 0, 0, True, 1.0)
        if not tree.layers:
            raise _Bad(f"{STACK_XML} holds no layers")
        layers = []
        pixel_bytes = 0
        converted: Counter[str] = Counter()
        for index, item in enumerate(reversed(tree.layers)):
            what = f"layer '{item.name[:60]}'"
            src = _source(item.src, what, self.archive)
            header = png_header(self.archive.head(src, 26))
            if header is not None and header[0] * header[1] > MAX_PIXELS:
                raise _Bad(f"{what}: {src} is {header[0]} x {header[1]}, over the {MAX_PIXELS // 1_000_000} "
                           "megapixel limit")
            try:
                loaded = load_image_bytes(self.archive.read(src, MAX_IMAGE_BYTES), src)
            except ImageLoadError as exc:
                raise _Bad(f"{what}: {exc}") from None
            pixel_bytes += loaded.pixels.nbytes
            if pixel_bytes > MAX_PIXEL_BYTES:
                raise _Bad(f"its layers hold over {MAX_PIXEL_BYTES >> 30} GiB of pixels")
            converted.update(loaded.notes)
            layers.append(Layer(index + 1, item.name, read_only(loaded.pixels), item.x, item.y, item.visible,
                                item.opacity))
        self.notes.extend(tree.notes())
        self.notes.extend(f"{note} ({count} layer{'s' if count > 1 else ''})" for note, count in converted.items())
        return Document(LayerStack(width, height, tuple(layers), len(layers) + 1), path=self.path)


@dataclass(frozen=True)
class _Found:
    src: str
    name: str
    x: int
    y: int
    visible: bool
    opacity: float


@dataclass
class _Tree:
    """The layers of a stack.xml, topmost first, nested stacks flattened into them."""
    layers: list[_Found] = field(default_factory=list)
    blends: Counter = field(default_factory=Counter)
    groups: int = 0
    faded_groups: int = 0
    skipped: Counter = field(default_factory=Counter)

    def walk(self, node: Node, dx: int, dy: int, visible: bool, opacity: float) -> None:
        for child in node.children:
            if child.tag not in ("stack", "layer"):
                self.skipped[child.tag[:40]] += 1
                continue
            where = f"<{child.tag}> '{child.attrs.get('name', '')[:60]}'"
            x = dx + _number(child, "x", 0, -MAX_OFFSET, MAX_OFFSET, where)
            y = dy + _number(child, "y", 0, -MAX_OFFSET, MAX_OFFSET, where)
            if abs(x) > MAX_OFFSET or abs(y) > MAX_OFFSET:
                raise _Bad(f"{STACK_XML}: {where} lies beyond {MAX_OFFSET:,} pixels")
            shown = visible and child.attrs.get("visibility", "visible") != "hidden"
            alpha = opacity * _opacity(child, where)
            blend = child.attrs.get("composite-op", "svg:src-over")
            if blend != "svg:src-over":
                self.blends[blend[:40]] += 1
            if child.tag == "stack":
                self.groups += 1
                self.faded_groups += alpha < opacity
                self.walk(child, x, y, shown, alpha)
                continue
            if "src" not in child.attrs:
                raise _Bad(f"{STACK_XML}: {where} has no src")
            if len(self.layers) >= MAX_LAYERS:
                raise _Bad(f"{STACK_XML} holds over {MAX_LAYERS:,} layers")
            self.layers.append(_Found(child.attrs["src"], child.attrs.get("name", "Layer"), x, y, shown, alpha))

    def notes(self) -> list[str]:
        notes = []
        count = sum(self.blends.values())
        if count:
            modes = ", ".join(sorted(self.blends))
            notes.append(f"{count} layer{'s use' if count > 1 else ' uses'} blend mode{'s' if len(self.blends) > 1 else ''} "
                         f"this editor does not have ({modes}): shown as normal")
        if self.groups:
            notes.append(f"{self.groups} layer group{'s were' if self.groups > 1 else ' was'} flattened into the "
                         "layer list, keeping the order of their layers")
        if self.faded_groups:
            notes.append("a group's opacity was given to each of its layers, which looks different where they "
                         "overlap")
        if self.skipped:
            kinds = ", ".join(f"<{tag}>" for tag in sorted(self.skipped))
            count = sum(self.skipped.values())
            notes.append(f"{count} element{'s' if count > 1 else ''} this editor does not read "
                         f"{'were' if count > 1 else 'was'} skipped ({kinds})")
        return notes


def _source(src: str, what: str, archive: Archive) -> str:
    if not src or len(src) > 1000 or src.startswith(("/", "\\")) or "\\" in src or "\0" in src \
            or ".." in src.split("/") or ":" in src.split("/")[0]:
        raise _Bad(f"{what}: src {show(src)} is not the name of an entry inside the file")
    if src not in archive:
        raise _Bad(f"{what}: its image {show(src)} is not in the file")
    return src


def _number(node: Node, key: str, default: int | None, low: int, high: int, where: str = "<image>") -> int:
    text = node.attrs.get(key)
    if text is None:
        if default is None:
            raise _Bad(f"{STACK_XML}: {where} has no {key}")
        return default
    try:
        value = float(text.strip()) if "." in text or "e" in text.lower() else int(text.strip())
    except ValueError:
        raise _Bad(f"{STACK_XML}: {where} has {key}={show(text)}, not a number") from None
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise _Bad(f"{STACK_XML}: {where} has {key}={show(text)}, not a whole number in {low}..{high}")
    return int(value)


def _opacity(node: Node, where: str) -> float:
    text = node.attrs.get("opacity")
    if text is None:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise _Bad(f"{STACK_XML}: {where} has opacity={show(text)}, not a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{STACK_XML}: {where} has opacity={show(text)}, not a number")
    return min(max(value, 0.0), 1.0)


def _canvas(value, width: int, height: int) -> Rect:
    if not isinstance(value, list) or len(value) != 4 \
            or not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**31 for v in value):
        raise RecordError(f"canvas is {show(value)}, not 4 whole numbers")
    canvas = Rect(*value)
    if canvas.w < 1 or canvas.h < 1 or canvas.w * canvas.h > MAX_PIXELS:
        raise RecordError(f"canvas is {canvas.w} x {canvas.h}, not a canvas within the pixel limit")
    if canvas.intersect(Rect(0, 0, width, height)).is_empty():
        raise RecordError(f"canvas ({canvas.x}, {canvas.y}) {canvas.w} x {canvas.h} does not overlap the "
                          f"{width} x {height} image")
    return canvas


# -- the zip ------------------------------------------------------------------------------------------------------

class Archive:
    """A zip read within bounds: its members by name, each read whole into memory under a limit."""

    def __init__(self, handle) -> None:
        self.size = _check_directory(handle)
        try:
            self.zip = zipfile.ZipFile(handle)
        except zipfile.BadZipFile:
            raise _NotOra("it is not a zip archive") from None
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Bad(f"it holds {len(infos):,} entries; at most {MAX_MEMBERS:,} are read")
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in self.members:
                raise _Bad(f"it holds two entries named {show(info.filename)}")
            self.members[info.filename] = info
        self.first = infos[0].filename if infos else None
        self.total = 0

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def check_mimetype(self) -> None:
        if self.first != "mimetype":
            raise _NotOra("its first entry is not 'mimetype'" if "mimetype" in self else "it has no 'mimetype' entry")
        content = self.read("mimetype", 256)
        if content != MIMETYPE:
            shown = show(content.decode("utf-8", "replace"))
            raise _NotOra(f"its mimetype is {shown}, not '{MIMETYPE.decode()}'")

    def read(self, name: str, limit: int) -> bytes:
        info = self._info(name, limit)
        self.total += info.file_size
        if self.total > MAX_READ_BYTES:
            raise _Bad(f"its entries hold over {MAX_READ_BYTES >> 30} GiB")
        data = self._read(info, limit + 1)
        if len(data) != info.file_size:
            raise _Bad(f"{show(name)} is damaged: it holds {len(data):,} bytes, its entry says {info.file_size:,}")
        return data

    def head(self, name: str, count: int) -> bytes:
        """The first `count` bytes of a member (its header), without reading the rest."""
        return self._read(self._info(name, MAX_IMAGE_BYTES), count)

    def _info(self, name: str, limit: int) -> zipfile.ZipInfo:
        info = self.members[name]
        if info.compress_type not in _READABLE:
            raise _Bad(f"{show(name)} is compressed with method {info.compress_type}; only stored and deflated "
                       "entries are read")
        if info.flag_bits & 0x1:
            raise _Bad(f"{show(name)} is encrypted")
        if info.file_size > limit:
            raise _Bad(f"{show(name)} claims {info.file_size:,} bytes uncompressed; at most {limit:,} are read")
        if info.compress_size > self.size:
            raise _Bad(f"{show(name)} claims {info.compress_size:,} compressed bytes, more than the file holds")
        return info

    def _read(self, info: zipfile.ZipInfo, count: int) -> bytes:
        try:
            with self.zip.open(info) as member:
                return member.read(count)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile and zlib raise many kinds for damaged data
            lines = str(exc).splitlines()
            raise _Bad(f"{show(info.filename)} is damaged ({lines[0] if lines else type(exc).__name__})") from None


def _check_directory(handle) -> int:
    """The file's size, once its zip end record says the central directory is within bounds."""
    size = handle.seek(0, 2)
    tail_size = min(size, 22 + 65_535 + 20)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise _NotOra("it is not a zip archive")
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        handle.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = handle.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, directory = struct.unpack_from("<QQ", record, 32)
    if entries > MAX_MEMBERS:
        raise _Bad(f"it claims {entries:,} entries; at most {MAX_MEMBERS:,} are read")
    if directory > MAX_DIRECTORY_BYTES:
        raise _Bad(f"its zip directory claims {directory:,} bytes; at most {MAX_DIRECTORY_BYTES:,} are read")
    handle.seek(0)
    return size


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, or None when `data` is no PNG."""
    if len(data) < 26 or not data.startswith(_PNG) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">IIBB", data[16:26])


class OwnFiles:
    """The PNG members document.json names (app/core/stack_records' ArrayFiles): each one's header is
    checked when it is first named, and all are decoded once the whole record has been checked."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.pixel_bytes = 0

    def image(self, value, where: str) -> tuple[str, tuple[int, int]]:
        name, shape = self._shape(value, where, plane=False)
        return name, (shape[1], shape[0])

    def plane(self, value, where: str) -> tuple[str, tuple[int, int]]:
        name, shape = self._shape(value, where, plane=True)
        return name, (shape[1], shape[0])

    def _shape(self, value, where: str, plane: bool) -> tuple[str, tuple[int, ...]]:
        if not isinstance(value, str) or not OWN_NAME.fullmatch(value):
            raise RecordError(f"{where} is {show(value)}, not the name of a PNG entry")
        if value not in self.archive:
            raise RecordError(f"{where}: {value} is not in the file")
        if value not in self.shapes:
            header = png_header(self.archive.head(value, 26))
            if header is None:
                raise RecordError(f"{where}: {value} is not a PNG")
            width, height, depth, colour = header
            channels = {0: 1, 2: 3, 6: 4}.get(colour) if depth == 8 else None
            if channels is None:
                raise RecordError(f"{where}: {value} is a PNG of colour type {colour} at {depth} bits, not 8-bit "
                                  "grey, RGB or RGBA")
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                raise RecordError(f"{where}: {value} is {width} x {height}, outside the "
                                  f"{MAX_PIXELS // 1_000_000} megapixel limit")
            self.pixel_bytes += width * height * channels
            if self.pixel_bytes > MAX_PIXEL_BYTES:
                raise RecordError(f"its images hold over {MAX_PIXEL_BYTES >> 30} GiB of pixels")
            self.shapes[value] = (height, width) if channels == 1 else (height, width, channels)
        shape = self.shapes[value]
        if (len(shape) == 2) != plane:
            raise RecordError(f"{where}: {value} is {'an image' if plane else 'a mask'}, not "
                              f"{'a mask' if plane else 'an image'}")
        return value, shape

    def read_all(self) -> dict[str, np.ndarray]:
        arrays = {}
        for name, shape in self.shapes.items():
            try:
                pixels = load_image_bytes(self.archive.read(name, MAX_IMAGE_BYTES), name).pixels
            except ImageLoadError as exc:
                raise _Bad(str(exc)) from None
            if len(shape) == 2 and pixels.shape[:2] == shape:
                pixels = mask_from_pixels(pixels)
            if pixels.shape != shape:
                raise _Bad(f"{name} decodes to {' x '.join(map(str, pixels.shape))}, its header says "
                           f"{' x '.join(map(str, shape))}")
            arrays[name] = read_only(pixels)
        return arrays


# -- stack.xml ------------------------------------------------------------------------------------------------------

@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)


def parse_xml(data: bytes, name: str) -> Node:
    """The element tree of an XML document, refusing any DTD (and so every entity declaration) and bounded
    in elements and depth."""
    parser = expat.ParserCreate()
    open_nodes: list[Node] = []
    found: list[Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if len(found) >= MAX_ELEMENTS:
            raise _Bad(f"{name} has over {MAX_ELEMENTS:,} elements")
        if len(open_nodes) >= MAX_DEPTH:
            raise _Bad(f"{name} nests elements over {MAX_DEPTH} deep")
        node = Node(tag, attrs)
        if open_nodes:
            open_nodes[-1].children.append(node)
        open_nodes.append(node)
        found.append(node)

    def refuse(*_args) -> None:
        raise _Bad(f"{name} declares a DTD (<!DOCTYPE>), which OpenRaster does not use: refused, as its "
                   "entities could expand without bound")

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: open_nodes.pop()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise _Bad(f"{name} is not XML ({expat.ErrorString(exc.code)} at line {exc.lineno}, column "
                   f"{exc.offset})") from None
    if not found:
        raise _Bad(f"{name} holds no element")
    return found[0]


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)
