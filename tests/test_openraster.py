"""Projects as OpenRaster files (app/core/openraster.py): a layered document saved and opened without loss,
files from other programs opened as raster layers, damaged files refused with one line, and Krita, a second
reader, showing what was saved."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from app.core import openraster
from app.core.document import Document, NamedMask
from app.core.geometry import Rect
from app.core.layers import Generation, Layer, LayerStack, LayerVariant
from app.core.openraster import (
    ProjectError,
    load_project,
    load_project_with_notes,
    save_project,
)

NAME = "Ünïcødé layer ❄ 雪"
SETTINGS = {"prompt": "a red fox in snow ❄", "steps": 20, "guidance": 7.5, "negative": None, "tiled": True}


def rich_document(width: int = 64, height: int = 48) -> Document:
    """A background, a raster layer at a negative offset reaching past the canvas (opacity 0.37, a unicode
    name), a hidden generative layer with 3 variants (the second selected) and a mask, a half-transparent
    top layer, a painted mask, an extended canvas and parameters."""
    rng = np.random.default_rng(7)
    stack = LayerStack.from_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    stack = stack.added(Layer(0, NAME, rng.integers(0, 256, (30, 40, 4), dtype=np.uint8), -12, -7, opacity=0.37))
    variants = []
    for number in range(3):
        pixels = rng.integers(0, 256, (18 + number, 22, 4), dtype=np.uint8)
        pixels[..., 3] = np.where(rng.random(pixels.shape[:2]) < 0.6, 255, 0)
        variants.append(LayerVariant(pixels, 30 + number, 20 - number, seed=1000 + number,
                                     parameters=f"fox, Steps: 20, Seed: {1000 + number}"))
    fill_mask = (rng.random((20, 24)) * 255).astype(np.uint8)
    generation = Generation("fill", tuple(variants), selected=1, settings=dict(SETTINGS), mask=fill_mask,
                            mask_x=29, mask_y=18)
    stack = stack.added(Layer.generative(0, "Fill: a red fox", generation))
    stack = stack.changed(3, visible=False)
    top = rng.integers(0, 256, (10, width + 6, 4), dtype=np.uint8)
    top[..., 3] = np.linspace(0, 255, width + 6).astype(np.uint8)
    stack = stack.added(Layer(0, "Top", top, -3, height - 8))
    mask = np.zeros((height, width), np.uint8)
    mask[height // 5:height // 2, 5:25] = np.arange(20, dtype=np.uint8) * 13
    return Document(stack, mask, Rect(-16, -8, width + 32, height + 24), parameters="Steps: 20, Sampler: Euler a")


def assert_same_pixels(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
    assert np.array_equal(a, b)


def assert_same_document(back: Document, saved: Document) -> None:
    a, b = back.layers, saved.layers
    assert (a.width, a.height, a.next_id, len(a.layers)) == (b.width, b.height, b.next_id, len(b.layers))
    for got, want in zip(a.layers, b.layers):
        assert (got.id, got.name, got.x, got.y, got.visible, got.opacity, got.kind) == \
            (want.id, want.name, want.x, want.y, want.visible, want.opacity, want.kind)
        assert_same_pixels(got.pixels, want.pixels)
        assert not got.pixels.flags.writeable
        if want.generation is None:
            assert got.generation is None
            continue
        g, h = got.generation, want.generation
        assert (g.kind, g.selected, g.settings, g.mask_x, g.mask_y, len(g.variants)) == \
            (h.kind, h.selected, h.settings, h.mask_x, h.mask_y, len(h.variants))
        assert_same_pixels(g.mask, h.mask)
        for v, w in zip(g.variants, h.variants):
            assert (v.x, v.y, v.seed, v.parameters) == (w.x, w.y, w.seed, w.parameters)
            assert_same_pixels(v.pixels, w.pixels)
        assert g.current.pixels is got.pixels
    assert_same_pixels(back.mask, saved.mask)
    assert back.canvas == saved.canvas
    assert back.parameters == saved.parameters
    assert_same_pixels(back.image, saved.image)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_zip(members: list[tuple[str, bytes]], stored: tuple[str, ...] = ("mimetype",)) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")          # a duplicate name is what one case is made of
        for name, data in members:
            archive.writestr(name, data, zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def rewrite(data: bytes, changes: dict[str, bytes | None]) -> bytes:
    """The zip `data` with members replaced (None: removed), order and compression kept."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            content = changes.get(info.filename, source.read(info))
            if content is not None:
                archive.writestr(info.filename, content, info.compress_type)
    return buffer.getvalue()


# -- saving and opening our own projects ------------------------------------------------------------------------

def test_round_trip_keeps_every_field_and_the_composite(tmp_path):
    document = rich_document()
    path = tmp_path / "project.ora"
    save_project(path, document)
    back, notes = load_project_with_notes(path)
    assert notes == []
    assert back.path == path
    assert [layer.name for layer in back.layers.layers] == ["Background", NAME, "Fill: a red fox", "Top"]
    assert (back.layers.get(2).x, back.layers.get(2).y, back.layers.get(2).opacity) == (-12, -7, 0.37)
    assert back.layers.get(3).generation.selected == 1 and not back.layers.get(3).visible
    assert back.canvas == Rect(-16, -8, 96, 72)
    assert_same_document(back, document)
    assert back.mask.flags.writeable                    # the brush paints the live mask in place
    save_project(path, back)                            # and again, over the first file
    assert_same_document(load_project(path), document)


def test_round_trip_of_an_rgba_image_and_shared_arrays(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    pixels.setflags(write=False)
    stack = LayerStack.from_image(pixels).added(Layer(0, "copy", pixels, 2, 3))
    assert stack.layers[0].pixels is stack.layers[1].pixels
    document = Document(stack)
    save_project(tmp_path / "a.ora", document)
    names = zipfile.ZipFile(tmp_path / "a.ora").namelist()
    assert [n for n in names if n.endswith(".png") and n.startswith("data/")] == ["data/layer-1.png"]
    back = load_project(tmp_path / "a.ora")
    assert_same_document(back, document)
    assert back.layers.layers[0].pixels is back.layers.layers[1].pixels
    assert back.image.shape == (9, 13, 4)


def test_the_selected_variant_is_the_layer_png_stored_once(tmp_path):
    document = rich_document()
    save_project(tmp_path / "p.ora", document)
    archive = zipfile.ZipFile(tmp_path / "p.ora")
    entry = json.loads(archive.read("latent-canvas/document.json"))
    generation = entry["layers"]["layers"][2]["generation"]
    names = [variant["pixels"] for variant in generation["variants"]]
    assert names == ["latent-canvas/layer-3-variant-1.png", "data/layer-3.png", "latent-canvas/layer-3-variant-3.png"]
    assert generation["mask"] == "latent-canvas/layer-3-mask.png"
    assert entry["mask"] == "latent-canvas/mask.png" and entry["format"] == 1
    selected = np.array(Image.open(io.BytesIO(archive.read("data/layer-3.png"))))
    assert_same_pixels(selected, document.layers.get(3).generation.variants[1].pixels)
    mask = Image.open(io.BytesIO(archive.read("latent-canvas/mask.png")))
    assert mask.mode == "L" and mask.size == (64, 48)
    assert_same_pixels(np.array(mask), document.mask)
    rgb = Image.open(io.BytesIO(archive.read("data/layer-1.png")))
    assert rgb.mode == "RGB"
    assert sum(name.endswith(".png") for name in archive.namelist()) == 4 + 2 + 1 + 1 + 2


def test_mimetype_is_the_first_member_stored_with_exact_content(tmp_path):
    save_project(tmp_path / "p.ora", rich_document())
    first = zipfile.ZipFile(tmp_path / "p.ora").infolist()[0]
    assert (first.filename, first.compress_type, first.file_size) == ("mimetype", zipfile.ZIP_STORED, 16)
    raw = (tmp_path / "p.ora").read_bytes()
    assert raw[:4] == b"PK\x03\x04" and raw[30:38] == b"mimetype" and raw[38:54] == b"image/openraster"


def test_stack_xml_follows_the_spec(tmp_path):
    document = rich_document(600, 300)
    save_project(tmp_path / "p.ora", document)
    archive = zipfile.ZipFile(tmp_path / "p.ora")
    names = set(archive.namelist())
    root = ElementTree.fromstring(archive.read("stack.xml"))
    assert root.tag == "image" and root.get("version") == "0.0.5"
    assert (int(root.get("w")), int(root.get("h"))) == (600, 300)
    stacks = root.findall("stack")
    assert len(stacks) == 1 and len(root) == 1
    layers = list(stacks[0])
    assert [layer.tag for layer in layers] == ["layer"] * 4
    assert [layer.get("name") for layer in layers] == ["Top", "Fill: a red fox", NAME, "Background"]
    assert all(layer.get("src") in names for layer in layers)
    assert all(layer.get("composite-op") == "svg:src-over" for layer in layers)
    assert [(int(layer.get("x")), int(layer.get("y"))) for layer in layers] == [(-3, 292), (31, 19), (-12, -7), (0, 0)]
    assert [float(layer.get("opacity")) for layer in layers] == [1.0, 1.0, 0.37, 1.0]
    assert [layer.get("visibility") for layer in layers] == ["visible", "hidden", "visible", "visible"]
    merged = np.array(Image.open(io.BytesIO(archive.read("mergedimage.png"))))
    assert_same_pixels(merged, document.image)
    thumbnail = Image.open(io.BytesIO(archive.read("Thumbnails/thumbnail.png")))
    assert thumbnail.size == (256, 128)
    top = np.array(Image.open(io.BytesIO(archive.read(layers[0].get("src")))))
    assert_same_pixels(top, document.layers.get(4).pixels)


def test_names_xml_cannot_hold_are_kept_in_the_json(tmp_path):
    stack = LayerStack.from_image(np.zeros((4, 4, 3), np.uint8), name="bell\x07 and \x01 ok")
    save_project(tmp_path / "p.ora", Document(stack))
    root = ElementTree.fromstring(zipfile.ZipFile(tmp_path / "p.ora").read("stack.xml"))
    assert root.find("stack/layer").get("name") == "bell\ufffd and \ufffd ok"
    assert load_project(tmp_path / "p.ora").layers.layers[0].name == "bell\x07 and \x01 ok"


def test_text_that_is_not_text_is_refused_with_one_line(tmp_path):
    stack = LayerStack.from_image(np.zeros((4, 4, 3), np.uint8), name="half \ud800 a character")
    with pytest.raises(ProjectError) as caught:
        save_project(tmp_path / "p.ora", Document(stack))
    assert str(caught.value).startswith("cannot save p.ora: the layer data cannot be stored") and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.ora"
    save_project(path, rich_document())
    before = path.read_bytes()
    calls = []

    def full(array):
        calls.append(array.shape)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(array)

    real = openraster._png
    monkeypatch.setattr(openraster, "_png", full)
    with pytest.raises(ProjectError) as caught:
        save_project(path, rich_document(32, 32))
    assert str(caught.value) == "cannot save p.ora: the disk is full"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.ora"]


def test_saving_into_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ProjectError) as caught:
        save_project(tmp_path / "nowhere" / "p.ora", rich_document())
    assert str(caught.value) == f"cannot save p.ora: the folder {tmp_path / 'nowhere'} does not exist"


# -- files from other programs ----------------------------------------------------------------------------------

FOREIGN_XML = b"""<?xml version='1.0' encoding='UTF-8'?>
<image version="0.0.5" w="100" h="80" xres="300" yres="300">
  <stack>
    <layer name="Top" src="data/top.png" x="10" y="-5" composite-op="svg:multiply"/>
    <stack name="Group" x="3" y="4" visibility="hidden">
      <layer name="Inner" src="data/inner.png" x="1" y="2" opacity="0.5"/>
    </stack>
    <layer name="Paper" src="data/paper.png"/>
    <text name="A caption"/>
  </stack>
</image>"""


def foreign_layers():
    rng = np.random.default_rng(11)
    return {"data/top.png": rng.integers(0, 256, (20, 30, 4), dtype=np.uint8),
            "data/inner.png": rng.integers(0, 256, (15, 12, 3), dtype=np.uint8),
            "data/paper.png": rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)}


def foreign_ora(stack_xml: bytes = FOREIGN_XML, extra: list[tuple[str, bytes]] = ()) -> bytes:
    members = [("mimetype", b"image/openraster"), ("stack.xml", stack_xml)]
    members += [(name, png_bytes(pixels)) for name, pixels in foreign_layers().items()]
    members += [("mergedimage.png", png_bytes(np.zeros((80, 100, 3), np.uint8))), *extra]
    return build_zip(members)


def test_a_foreign_ora_opens_as_raster_layers_with_notes(tmp_path):
    path = tmp_path / "krita.ora"
    path.write_bytes(foreign_ora())
    document, notes = load_project_with_notes(path)
    layers = document.layers.layers
    assert (document.width, document.height, document.path) == (100, 80, path)
    assert [(layer.id, layer.name, layer.x, layer.y, layer.visible, layer.opacity, layer.kind) for layer in layers] == [
        (1, "Paper", 0, 0, True, 1.0, "raster"),
        (2, "Inner", 4, 6, False, 0.5, "raster"),
        (3, "Top", 10, -5, True, 1.0, "raster")]
    pixels = foreign_layers()
    for layer, name in zip(layers, ["data/paper.png", "data/inner.png", "data/top.png"]):
        assert_same_pixels(layer.pixels, pixels[name])
    assert document.canvas == Rect(0, 0, 100, 80) and not document.mask.any() and document.parameters == ""
    assert notes == ["1 layer uses blend mode this editor does not have (svg:multiply): shown as normal",
                     "1 layer group was flattened into the layer list, keeping the order of their layers",
                     "1 element this editor does not read was skipped (<text>)"]
    assert document.layers.next_id == 4


def test_a_project_whose_layers_another_program_changed_opens_from_stack_xml(tmp_path):
    path = tmp_path / "p.ora"
    save_project(path, rich_document())
    data = path.read_bytes()
    xml = zipfile.ZipFile(io.BytesIO(data)).read("stack.xml").replace(b'name="Top"', b'name="Top, edited"')
    path.write_bytes(rewrite(data, {"stack.xml": xml}))
    document, notes = load_project_with_notes(path)
    assert [layer.name for layer in document.layers.layers] == ["Background", NAME, "Fill: a red fox", "Top, edited"]
    assert all(layer.generation is None for layer in document.layers.layers)
    assert notes[0].startswith("its layers were changed by another program after Latent Canvas saved it")
    assert_same_pixels(document.image, rich_document().image)


# -- damaged files ----------------------------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def _claiming_huge_size(data: bytes, member: str) -> bytes:
    """`data` with the central directory entry of `member` claiming 4 GB uncompressed."""
    raw = bytearray(data)
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46:at + 46 + length] == member.encode():
            struct.pack_into("<I", raw, at + 24, 0xFFFF_FFF0)
            return bytes(raw)
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no {member} in the directory")


ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE image [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
]>
<image w="10" h="10"><stack><layer name="&e;" src="data/paper.png"/></stack></image>"""


def _saved() -> bytes:
    buffer = io.BytesIO()
    openraster._write(buffer, rich_document())
    return buffer.getvalue()


def _edited_json(edit) -> bytes:
    data = _saved()
    entry = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("latent-canvas/document.json"))
    edit(entry)
    return rewrite(data, {"latent-canvas/document.json": json.dumps(entry).encode()})


def _set(path: tuple, value):
    def edit(entry):
        target = entry
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _not_first() -> bytes:
    return build_zip([("stack.xml", FOREIGN_XML), ("mimetype", b"image/openraster")])


def _corrupt_stored_member() -> bytes:
    data = bytearray(foreign_ora())
    at = data.find(b"IDAT", data.find(b"data/top.png"))
    data[at + 8] ^= 0xFF
    return bytes(data)


def _variant_path(entry):
    entry["layers"]["layers"][2]["generation"]["variants"][0]["pixels"] = "../../etc/passwd"


def _saved_with_a_named_mask() -> bytes:
    document = rich_document()
    document.named_masks = (NamedMask.of("sky", document.mask),)
    buffer = io.BytesIO()
    openraster._write(buffer, document)
    return buffer.getvalue()


def _edited_named_mask(edit) -> bytes:
    data = _saved_with_a_named_mask()
    entry = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("latent-canvas/document.json"))
    edit(entry)
    return rewrite(data, {"latent-canvas/document.json": json.dumps(entry).encode()})


def _many_named_masks(entry):
    entry["named_masks"] = [dict(entry["named_masks"][0], name=f"mask {i}") for i in range(65)]


DAMAGE = {
    "not a zip": (lambda: b"just some text, not an archive " * 40, "is not an OpenRaster file: it is not a zip archive"),
    "empty file": (lambda: b"", "is not an OpenRaster file: it is not a zip archive"),
    "truncated zip": (lambda: foreign_ora()[:-30], "is not an OpenRaster file"),
    "mimetype wrong": (lambda: build_zip([("mimetype", b"image/png"), ("stack.xml", FOREIGN_XML)]),
                       "its mimetype is 'image/png', not 'image/openraster'"),
    "mimetype not first": (_not_first, "is not an OpenRaster file: its first entry is not 'mimetype'"),
    "no mimetype": (lambda: build_zip([("stack.xml", FOREIGN_XML)]), "it has no 'mimetype' entry"),
    "stack.xml missing": (lambda: build_zip([("mimetype", b"image/openraster")]), "it has no stack.xml"),
    "stack.xml not XML": (lambda: foreign_ora(b"<image w='1' h='1'><stack></image>"), "stack.xml is not XML (mismatched tag"),
    "stack.xml root": (lambda: foreign_ora(b"<svg/>"), "the root element is <svg>, not <image>"),
    "no layers": (lambda: foreign_ora(b"<image w='4' h='4'><stack/></image>"), "stack.xml holds no layers"),
    "bad offset": (lambda: foreign_ora(FOREIGN_XML.replace(b'x="10"', b'x="ten"')), "has x='ten', not a number"),
    "src missing": (lambda: foreign_ora(FOREIGN_XML.replace(b"data/inner.png", b"data/missing.png")),
                    "layer 'Inner': its image 'data/missing.png' is not in the file"),
    "src escapes": (lambda: foreign_ora(FOREIGN_XML.replace(b"data/inner.png", b"../../etc/passwd"),
                                        [("../../etc/passwd", b"root:x:0:0")]),
                    "src '../../etc/passwd' is not the name of an entry inside the file"),
    "png bomb": (lambda: foreign_ora(FOREIGN_XML.replace(b"data/paper.png", b"data/huge.png"),
                                     [("data/huge.png", _png_claiming(100_000, 100_000))]),
                 "layer 'Paper': data/huge.png is 100000 x 100000, over the 150 megapixel limit"),
    "entity bomb": (lambda: foreign_ora(ENTITY_BOMB), "declares a DTD"),
    "huge claimed size": (lambda: _claiming_huge_size(foreign_ora(), "stack.xml"),
                          "'stack.xml' claims 4,294,967,280 bytes uncompressed; at most 16,777,216 are read"),
    "huge layer claim": (lambda: _claiming_huge_size(foreign_ora(), "data/top.png"), "'data/top.png' claims 4,294,967,280"),
    "bad CRC": (_corrupt_stored_member, "'data/top.png' is damaged (Bad CRC-32"),
    "two stack.xml": (lambda: build_zip([("mimetype", b"image/openraster"), ("stack.xml", FOREIGN_XML),
                                         ("stack.xml", b"<image/>")]), "it holds two entries named 'stack.xml'"),
    "json not JSON": (lambda: rewrite(_saved(), {"latent-canvas/document.json": b"{\"format\": 1,"}),
                      "latent-canvas/document.json is not JSON"),
    "json newer": (lambda: _edited_json(_set(("format",), 9)), "saved by a newer Latent Canvas (project format 9)"),
    "json selected": (lambda: _edited_json(_set(("layers", "layers", 2, "generation", "selected"), 3)),
                      "stack.layers[2].generation.selected is 3, outside 0..2"),
    "json variant missing": (lambda: _edited_json(_set(("layers", "layers", 2, "generation", "variants", 2, "pixels"),
                                                       "latent-canvas/gone.png")),
                             "stack.layers[2].generation.variants[2].pixels: latent-canvas/gone.png is not in the file"),
    "json variant escapes": (lambda: _edited_json(_variant_path), "'../../etc/passwd', not the name of a PNG entry"),
    "json canvas": (lambda: _edited_json(_set(("canvas",), [500, 500, 10, 10])), "does not overlap the 64 x 48 image"),
    "json mask size": (lambda: rewrite(_saved(), {"latent-canvas/mask.png": png_bytes(np.zeros((5, 5), np.uint8))}),
                       "the mask is 5 x 5, not 64 x 48"),
    "json variant not png": (lambda: rewrite(_saved(), {"latent-canvas/layer-3-variant-1.png": b"GIF89a...."}),
                             "latent-canvas/layer-3-variant-1.png is not a PNG"),
    "json variant bomb": (lambda: rewrite(_saved(), {"latent-canvas/layer-3-variant-3.png": _png_claiming(90_000, 90_000)}),
                          "is 90000 x 90000, outside the 150 megapixel limit"),
    "json no written": (lambda: _edited_json(lambda entry: entry.pop("written")), "written is null, not the CRC-32s of the members it was saved with"),
    "folder without json": (lambda: rewrite(_saved(), {"latent-canvas/document.json": None}),
                            "it has a latent-canvas/ folder without latent-canvas/document.json"),
    "json named mask name a number": (lambda: _edited_named_mask(_set(("named_masks", 0, "name"), 5)),
                                      "latent-canvas/document.json: named_masks[0].name is 5, not text"),
    "json named mask an image": (lambda: rewrite(_saved_with_a_named_mask(), {
        "latent-canvas/named-mask-1.png": png_bytes(np.zeros((4, 4, 3), np.uint8))}),
        "named_masks[0].pixels: latent-canvas/named-mask-1.png is an image, not a mask"),
    "json named mask outside": (lambda: _edited_named_mask(_set(("named_masks", 0, "x"), 60)),
                                "named_masks[0]: its 19 x 15 patch at (60, 9) lies outside the 64 x 48 image"),
    "json 65 named masks": (lambda: _edited_named_mask(_many_named_masks),
                            "named_masks holds 65 masks; at most 64 are kept"),
    "json named mask escapes": (lambda: _edited_named_mask(_set(("named_masks", 0, "pixels"), "../../etc/passwd")),
                                "named_masks[0].pixels is '../../etc/passwd', not the name of a PNG entry"),
    "json named masks a dict": (lambda: _edited_named_mask(_set(("named_masks",), {})),
                                "named_masks is an object, not a list"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_files_give_one_line(tmp_path, case):
    make, expected = DAMAGE[case]
    path = tmp_path / "photo.ora"
    path.write_bytes(make())
    with pytest.raises(ProjectError) as caught:
        load_project(path)
    message = str(caught.value)
    assert "\n" not in message and "photo.ora" in message, message
    assert expected in message, message


def test_a_path_that_is_no_file_is_one_line(tmp_path):
    with pytest.raises(ProjectError, match=r"^cannot open gone\.ora: no such file$"):
        load_project(tmp_path / "gone.ora")
    with pytest.raises(ProjectError, match=r"^cannot open folder\.ora: it is a folder, not a file$"):
        (tmp_path / "folder.ora").mkdir()
        load_project(tmp_path / "folder.ora")


# -- a second reader --------------------------------------------------------------------------------------------

def test_krita_shows_what_was_saved(tmp_path):
    """Krita opens a saved project and exports its composite: the same pixels, within one level where Krita
    keeps opacity in 8 bits (0.37 becomes 94/255). Krita's first run builds its resource database (~25 s, kept
    in the system's temporary folder for the next runs, which take ~3 s)."""
    krita = shutil.which("krita")
    if krita is None:
        pytest.skip("krita is not installed (apt-get install krita): the second-reader check needs it")
    command = [krita]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            pytest.skip("krita needs a display: install xvfb (xvfb-run) to run it headless")
        command = [xvfb, "-a", krita]
    document = rich_document()
    path, out = tmp_path / "project.ora", tmp_path / "krita.png"
    save_project(path, document)
    home = Path(tempfile.gettempdir()) / "latent-canvas-tests-krita"     # its resources, built once
    env = dict(os.environ, **{key: str(home / key.lower()) for key in
                              ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")})
    done = subprocess.run([*command, str(path), "--export", "--export-filename", str(out)],
                          check=False, capture_output=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    shown = np.array(Image.open(out).convert("RGBA"))
    assert shown.shape == (48, 64, 4) and int(shown[..., 3].min()) == 255
    difference = np.abs(shown[..., :3].astype(int) - document.image.astype(int))
    assert int(difference.max()) <= 1, int(difference.max())
    layer = document.layers.get(2)
    outside = np.ones((48, 64), bool)
    outside[max(layer.y, 0):layer.y + 30, max(layer.x, 0):layer.x + 40] = False
    assert int(difference.max(axis=2)[outside].max()) == 0       # bit-equal away from the 0.37 layer
