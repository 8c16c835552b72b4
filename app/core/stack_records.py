"""A layer stack as JSON with its pixel arrays named, and the one validating reader of that JSON. Qt-free.

Crash recovery (app/core/recovery_manifest.py) and projects (app/core/openraster.py) both store stacks this
way; each brings its own array store. Writing: `stack_entry(stack, ref)`, where `ref(array)` stores an array
and gives its name. Reading: `parse_stack(entry, files, where)` checks every field and every array's shape
(through `files`, before any pixels are read) and returns the stack's size and a builder that makes the
LayerStack once the arrays are read: `builder(arrays)`, arrays by name. A document's named masks are stored
the same way: `named_masks_entry(masks, ref)` and `parse_named_masks(entry, files, where, size)`.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from app.core.control_layers import ControlSettings
from app.core.document import MAX_MASK_NAME, MAX_NAMED_MASKS, NamedMask, mask_name
from app.core.layers import KINDS, MAX_NAME, Generation, Layer, LayerStack, LayerVariant

GENERATION_KINDS = ("fill", "expand", "restyle")
MAX_LAYERS = 10_000
MAX_VARIANTS = 64
MAX_ID = 2**31 - 1
MAX_OFFSET = 2**31
MAX_SETTINGS = 64
MAX_SETTING_TEXT = 100_000
MAX_PARAMETERS = 1_000_000
MAX_SIDE = 2**20


class RecordError(ValueError):
    """What is wrong with a stored stack, in words (the caller says where it was stored)."""


class ArrayFiles(Protocol):
    def image(self, value, where: str) -> tuple[str, tuple[int, int]]:
        """The name and (width, height) of the H x W x 3 or 4 image `value` names."""

    def plane(self, value, where: str) -> tuple[str, tuple[int, int]]:
        """The name and (width, height) of the H x W mask `value` names."""


Builder = Callable[[dict[str, np.ndarray]], LayerStack]
NamedBuilder = Callable[[dict[str, np.ndarray]], tuple[NamedMask, ...]]


# -- writing ---------------------------------------------------------------------------------------------------

def stack_entry(stack: LayerStack, ref: Callable[[np.ndarray], str]) -> dict:
    return {"width": stack.width, "height": stack.height, "next_id": stack.next_id,
            "layers": [_layer_entry(layer, ref) for layer in stack.layers]}


def _layer_entry(layer: Layer, ref) -> dict:
    entry = {"id": layer.id, "name": layer.name, "kind": layer.kind, "x": layer.x, "y": layer.y,
             "visible": layer.visible, "opacity": layer.opacity}
    g = layer.generation
    if g is None:
        entry["pixels"] = ref(layer.pixels)
        if layer.control is not None:
            entry["control"] = layer.control.to_json()
        return entry
    entry["generation"] = {
        "kind": g.kind, "selected": g.selected, "settings": g.settings,
        "mask": None if g.mask is None else ref(g.mask), "mask_x": g.mask_x, "mask_y": g.mask_y,
        "variants": [{"pixels": ref(v.pixels), "x": v.x, "y": v.y, "seed": v.seed, "parameters": v.parameters}
                     for v in g.variants]}
    return entry


def named_masks_entry(masks: tuple[NamedMask, ...], ref: Callable[[np.ndarray], str]) -> list[dict]:
    return [{"name": m.name, "x": m.x, "y": m.y, "pixels": ref(m.pixels)} for m in masks]


# -- reading ---------------------------------------------------------------------------------------------------

def parse_stack(entry, files: ArrayFiles, where: str = "layers") -> tuple[tuple[int, int], Builder]:
    """The stack's (width, height) and its builder; RecordError (naming the field) for anything wrong."""
    entry = _object(entry, where)
    width = _int(entry, "width", where, 1, MAX_SIDE)
    height = _int(entry, "height", where, 1, MAX_SIDE)
    next_id = _int(entry, "next_id", where, 1, MAX_ID + 1)
    items = entry.get("layers")
    if not isinstance(items, list):
        raise RecordError(f"{where}.layers is {show(items)}, not a list")
    if len(items) > MAX_LAYERS:
        raise RecordError(f"{where} has {len(items):,} layers; at most {MAX_LAYERS:,} are read")
    layers = [_parse_layer(item, files, f"{where}.layers[{i}]") for i, item in enumerate(items)]
    ids = [layer_id for layer_id, _ in layers]
    if len(set(ids)) != len(ids):
        raise RecordError(f"{where}: two layers share an id")

    def build(arrays: dict[str, np.ndarray]) -> LayerStack:
        return LayerStack(width, height, tuple(make(arrays) for _, make in layers), next_id)

    return (width, height), build


def _parse_layer(entry, files: ArrayFiles, where: str):
    entry = _object(entry, where)
    layer_id = _int(entry, "id", where, 1, MAX_ID)
    name = text_value(entry.get("name"), f"{where}.name", MAX_NAME * 4)
    kind = entry.get("kind", "raster")
    if kind not in KINDS:
        raise RecordError(f"{where}.kind is {show(kind)}, not one of {', '.join(KINDS)}")
    x = _int(entry, "x", where, -MAX_OFFSET, MAX_OFFSET)
    y = _int(entry, "y", where, -MAX_OFFSET, MAX_OFFSET)
    visible = entry.get("visible", True)
    if not isinstance(visible, bool):
        raise RecordError(f"{where}.visible is {show(visible)}, not true or false")
    opacity = _fraction(entry.get("opacity", 1.0), f"{where}.opacity")
    if kind in ("raster", "control"):
        if entry.get("generation") is not None:
            raise RecordError(f"{where} is a {kind} layer with generation data")
        control = None
        if kind == "control":
            try:
                control = ControlSettings.from_json(entry.get("control"))
            except (TypeError, ValueError) as exc:
                raise RecordError(f"{where}.control: {exc}") from None
        pixels, _ = files.image(entry.get("pixels"), f"{where}.pixels")
        return layer_id, lambda arrays: Layer(layer_id, name, arrays[pixels], x, y, visible, opacity, control=control)
    make_generation = _parse_generation(entry.get("generation"), files, f"{where}.generation")

    def make(arrays):
        generation = make_generation(arrays)
        layer = Layer.generative(layer_id, name, generation)
        return Layer(layer_id, name, layer.pixels, layer.x, layer.y, visible, opacity, generation)

    return layer_id, make


def _parse_generation(entry, files: ArrayFiles, where: str):
    entry = _object(entry, where)
    kind = entry.get("kind")
    if kind not in GENERATION_KINDS:
        raise RecordError(f"{where}.kind is {show(kind)}, not one of {', '.join(GENERATION_KINDS)}")
    items = entry.get("variants")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_VARIANTS:
        raise RecordError(f"{where}.variants must be a list of 1 to {MAX_VARIANTS} variants")
    variants = []
    for i, item in enumerate(items):
        at = f"{where}.variants[{i}]"
        item = _object(item, at)
        pixels, _ = files.image(item.get("pixels"), f"{at}.pixels")
        variants.append((pixels, _int(item, "x", at, -MAX_OFFSET, MAX_OFFSET),
                         _int(item, "y", at, -MAX_OFFSET, MAX_OFFSET), _int(item, "seed", at, 0, 2**32 - 1),
                         text_value(item.get("parameters", ""), f"{at}.parameters", MAX_PARAMETERS)))
    selected = _int(entry, "selected", where, 0, len(variants) - 1)
    settings = parse_settings(entry.get("settings", {}), f"{where}.settings")
    mask = None
    if entry.get("mask") is not None:
        mask, _ = files.plane(entry.get("mask"), f"{where}.mask")
    mask_x = _int(entry, "mask_x", where, -MAX_OFFSET, MAX_OFFSET) if "mask_x" in entry else 0
    mask_y = _int(entry, "mask_y", where, -MAX_OFFSET, MAX_OFFSET) if "mask_y" in entry else 0

    def make(arrays):
        return Generation(kind, tuple(LayerVariant(arrays[p], vx, vy, seed, text) for p, vx, vy, seed, text in variants),
                          selected, settings, None if mask is None else arrays[mask], mask_x, mask_y)

    return make


def parse_named_masks(entry, files: ArrayFiles, where: str, size: tuple[int, int]) -> NamedBuilder:
    """The builder of the named masks of a (width, height) image; RecordError (naming the field) for anything
    wrong: a name that is no mask name or is used twice, a patch that is no mask or leaves the image."""
    if not isinstance(entry, list):
        raise RecordError(f"{where} is {show(entry)}, not a list")
    if len(entry) > MAX_NAMED_MASKS:
        raise RecordError(f"{where} holds {len(entry):,} masks; at most {MAX_NAMED_MASKS} are kept")
    width, height = size
    found: list[tuple[str, str, int, int]] = []
    for i, item in enumerate(entry):
        at = f"{where}[{i}]"
        item = _object(item, at)
        name = text_value(item.get("name"), f"{at}.name", MAX_MASK_NAME)
        try:
            usable = mask_name(name) == name
        except ValueError:
            usable = False
        if not usable:
            raise RecordError(f"{at}.name is {show(name)}, not a mask name (one line of text, trimmed)")
        if any(name == other for other, *_ in found):
            raise RecordError(f"{where}: two masks are named {show(name)}")
        x = _int(item, "x", at, 0, width - 1)
        y = _int(item, "y", at, 0, height - 1)
        pixels, (w, h) = files.plane(item.get("pixels"), f"{at}.pixels")
        if x + w > width or y + h > height:
            raise RecordError(f"{at}: its {w} x {h} patch at ({x}, {y}) lies outside the {width} x {height} image")
        found.append((name, pixels, x, y))
    return lambda arrays: tuple(NamedMask(name, arrays[pixels], x, y) for name, pixels, x, y in found)


def parse_settings(value, where: str) -> dict:
    """A generation's settings: a flat object of JSON scalars (text, numbers, true/false, null)."""
    value = _object(value, where)
    if len(value) > MAX_SETTINGS:
        raise RecordError(f"{where} has {len(value)} entries; at most {MAX_SETTINGS} are read")
    kept = {}
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 100:
            raise RecordError(f"{where} has a bad key {show(key)}")
        if isinstance(item, str):
            item = text_value(item, f"{where}.{key}", MAX_SETTING_TEXT)
        elif isinstance(item, float) and not math.isfinite(item):
            raise RecordError(f"{where}.{key} is {item}, not a number")
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise RecordError(f"{where}.{key} is {show(item)}, not text, a number or true/false")
        kept[key] = item
    return kept


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise RecordError(f"{where} is {show(value)}, not an object")
    return value


def _int(entry: dict, key: str, where: str, low: int, high: int) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{where}.{key} is {show(value)}, not a whole number")
    if not low <= value <= high:
        raise RecordError(f"{where}.{key} is {value}, outside {low}..{high}")
    return value


def _fraction(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise RecordError(f"{where} is {show(value)}, not a number from 0 to 1")
    return float(value)


def text_value(value, where: str, limit: int) -> str:
    """Stored text: a str of at most `limit` characters that UTF-8 can write; RecordError otherwise."""
    if not isinstance(value, str):
        raise RecordError(f"{where} is {show(value)}, not text")
    if len(value) > limit:
        raise RecordError(f"{where} is {len(value):,} characters long; at most {limit:,} are kept")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{where} is not valid Unicode text") from None
    return value


def show(value) -> str:
    """A stored value in a few characters, for a message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        return "a huge number"
    return "null" if value is None else repr(value)
