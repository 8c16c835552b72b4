"""Projects as OpenRaster (.ora) files: a layered Document saved and opened without loss. Qt-free.

`save_project(path, document)` writes the file all or nothing (app/core/safe_files.write_atomically).
`load_project(path)` gives the Document back; `load_project_with_notes(path)` also gives one line for each
thing the user should know (blend modes shown as normal, groups flattened, images converted). Both raise
ProjectError, one line naming the file, and nothing else.

Layout (see app/core/openraster_read.py, which reads it): `mimetype` (first, stored), `stack.xml`, one PNG
per layer under data/ (the layer's patch as it is, RGB or RGBA, at its own x/y: OpenRaster does not bound
offsets, and Krita and GIMP keep what lies outside the canvas, so negative offsets need no cropped copy),
`Thumbnails/thumbnail.png`, `mergedimage.png` (Document.image), and `latent-canvas/`: `document.json` and
the PNGs only Latent Canvas reads (variants that are not selected, generation masks, the document mask,
and each named mask: 8-bit grey, its patch over its bounding box, its name and offset in document.json).

A file from another program (no latent-canvas/ folder) opens as raster layers from stack.xml. A file whose
latent-canvas/ data is damaged raises ProjectError naming what is wrong: the generative data is never
dropped silently. Only when stack.xml or a data/ PNG differs from what Latent Canvas wrote (another program
edited the layers and kept our folder) are the layers opened from stack.xml, with a note.
"""
from __future__ import annotations

import errno
import io
import json
import time
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from app.core.document import Document
from app.core.imageio import ImageSaveError, encode_image
from app.core.openraster_read import (
    DOCUMENT_JSON,
    FORMAT,
    MERGED,
    MIMETYPE,
    OWN_FOLDER,
    STACK_XML,
    THUMBNAIL,
    ProjectError,
    one_line,
    read_project,
)
from app.core.safe_files import write_atomically
from app.core.stack_records import named_masks_entry, stack_entry

__all__ = ["ProjectError", "load_project", "load_project_with_notes", "save_project"]

THUMBNAIL_SIDE = 256


def load_project(path: str | Path) -> Document:
    return load_project_with_notes(path)[0]


def load_project_with_notes(path: str | Path) -> tuple[Document, list[str]]:
    """The project at `path` (document.path set to it) and notes on what could not be kept as it was."""
    return read_project(Path(path))


def save_project(path: str | Path, document: Document) -> None:
    path = Path(path)
    name = path.name or str(path)
    try:
        write_atomically(path, lambda handle: _write(handle, document))
    except ProjectError:
        raise
    except OSError as exc:
        raise ProjectError(one_line(f"cannot save {name}: {_os_problem(exc, path)}")) from None
    except MemoryError:
        raise ProjectError(f"cannot save {one_line(name)}: not enough memory") from None
    except ImageSaveError as exc:
        raise ProjectError(one_line(f"cannot save {name}: {exc}")) from None
    except (ValueError, TypeError) as exc:     # json: a setting that is no JSON value, or text that is no text
        lines = str(exc).splitlines()
        raise ProjectError(one_line(f"cannot save {name}: the layer data cannot be stored "
                                    f"({lines[0] if lines else type(exc).__name__})")) from None


def _os_problem(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == getattr(errno, "EDQUOT", None):
        return "the disk quota is exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied (cannot write in {path.parent})"
    if exc.errno == errno.EROFS:
        return "the disk is read-only"
    if exc.errno == errno.ENOENT and not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    if exc.errno == errno.EISDIR or path.is_dir():
        return "a folder with that name already exists"
    return f"cannot write the file ({exc.strerror or exc})"


# -- writing ------------------------------------------------------------------------------------------------------

def _member_names(document: Document) -> dict[int, tuple[str, np.ndarray]]:
    """id(array) -> (member name, array) for every array the document holds: each layer's pixels under data/
    (for a generative layer, its selected variant's), everything else under latent-canvas/. An array two
    layers share is stored once."""
    names: dict[int, tuple[str, np.ndarray]] = {}
    layers = document.layers.layers
    for layer in layers:
        names.setdefault(id(layer.pixels), (f"data/layer-{layer.id}.png", layer.pixels))
    for layer in layers:
        g = layer.generation
        if g is None:
            continue
        for number, variant in enumerate(g.variants, 1):
            names.setdefault(id(variant.pixels),
                             (f"{OWN_FOLDER}layer-{layer.id}-variant-{number}.png", variant.pixels))
        if g.mask is not None:
            names.setdefault(id(g.mask), (f"{OWN_FOLDER}layer-{layer.id}-mask.png", g.mask))
    names.setdefault(id(document.mask), (f"{OWN_FOLDER}mask.png", document.mask))
    for number, named in enumerate(document.named_masks, 1):
        names.setdefault(id(named.pixels), (f"{OWN_FOLDER}named-mask-{number}.png", named.pixels))
    return names


def _write(handle, document: Document) -> None:
    names = _member_names(document)
    layers = document.layers
    entry = {"format": FORMAT,
             "layers": stack_entry(layers, lambda array: names[id(array)][0]),
             "mask": names[id(document.mask)][0],
             "canvas": [document.canvas.x, document.canvas.y, document.canvas.w, document.canvas.h],
             "parameters": document.parameters}
    if document.named_masks:                       # optional: projects saved before named masks have none
        entry["named_masks"] = named_masks_entry(document.named_masks, lambda array: names[id(array)][0])
    stack_xml = _stack_xml(document, names)
    written = {STACK_XML: zlib.crc32(stack_xml)}
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        def put(member: str, data: bytes, method: int = zipfile.ZIP_STORED) -> None:
            info = zipfile.ZipInfo(member, stamp)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)

        put("mimetype", MIMETYPE)                  # first and stored, as the spec requires
        put(STACK_XML, stack_xml, zipfile.ZIP_DEFLATED)
        for member, array in names.values():       # PNG is compressed already: stored
            data = _png(array)
            put(member, data)
            if member.startswith("data/"):
                written[member] = zlib.crc32(data)
        image = document.image
        put(THUMBNAIL, _thumbnail(image))
        put(MERGED, _png(image))
        entry["written"] = written
        put(DOCUMENT_JSON, json.dumps(entry, ensure_ascii=False, allow_nan=False).encode("utf-8"),
            zipfile.ZIP_DEFLATED)


def _stack_xml(document: Document, names: dict[int, tuple[str, np.ndarray]]) -> bytes:
    image = ElementTree.Element("image", {"version": "0.0.5", "w": str(document.width),
                                          "h": str(document.height), "xres": "72", "yres": "72"})
    stack = ElementTree.SubElement(image, "stack")
    for layer in reversed(document.layers.layers):             # the first child is the topmost
        ElementTree.SubElement(stack, "layer", {
            "name": _xml_text(layer.name), "src": names[id(layer.pixels)][0],
            "x": str(layer.x), "y": str(layer.y), "opacity": repr(layer.opacity),
            # Control layers are never part of the image: other readers must not show them either.
            "visibility": "visible" if layer.visible and layer.control is None else "hidden",
            "composite-op": "svg:src-over"})
    return ElementTree.tostring(image, encoding="utf-8", xml_declaration=True)


def _xml_text(text: str) -> str:
    """`text` with the characters XML 1.0 cannot hold replaced (the exact name is in document.json)."""
    return "".join(c if c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd"
                   or c >= "\U00010000" else "\ufffd" for c in text)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    if array.ndim == 2:                            # a mask: 8-bit grey
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=6)
    else:
        encode_image(Path("layer.png"), array)(buffer)
    return buffer.getvalue()


def _thumbnail(image: np.ndarray) -> bytes:
    picture = Image.fromarray(np.ascontiguousarray(image))
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
