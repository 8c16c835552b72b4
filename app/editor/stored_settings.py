"""The editor's remembered settings (panel values, brush, window geometry, last folders), Qt-free.

They live in one JSON file in the user's config folder, read through one typed reader: every value is
checked against its entry in SCHEMA (type, range, length) and a value that is missing takes its default;
one that is damaged (not a number, not finite, outside its range, of the wrong type, too long) takes its
default too and is named in `problems`: a setting is never silently turned into something extreme. A file
that is not a JSON object of settings is kept beside the original name (settings.json.damaged-<time>) and
the editor starts with the defaults; one that cannot be read is left as it is and never overwritten.
Saving is atomic (app/core/safe_files.py).

Qt's QSettings is not used: PySide6 stores any Python object it is given as a pickle and unpickles it when
the file is read, so a planted settings file could run code at every launch. This file holds only JSON; an
older version's QSettings file is taken over once by reading it as plain text (`migrate_qt_settings`).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from pathlib import Path

from app.core.safe_files import (read_bounded, read_json_file, set_aside, writable_text,
                                 write_text_atomically)

MAX_FILE_BYTES = 1 << 20
MAX_TEXT = 20_000
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Setting:
    key: str
    kind: type                        # int, float, bool, str or bytes
    default: object
    low: float | None = None
    high: float | None = None
    max_length: int = MAX_TEXT        # str and bytes
    label: str = ""                   # what the user is told was reset ("" = the key's last part)

    @property
    def name(self) -> str:
        return self.label or self.key.rsplit("/", 1)[-1].replace("_", " ")


SCHEMA: dict[str, Setting] = {s.key: s for s in (
    Setting("panel/prompt", str, ""),
    Setting("panel/negative", str, ""),
    Setting("panel/style", str, "None", max_length=200),
    Setting("panel/model", str, "", max_length=4096),
    Setting("panel/style_strength", int, 100, 0, 100),
    Setting("panel/steps", int, 25, 1, 150),
    Setting("panel/guidance", float, 7.0, 0.0, 30.0),
    Setting("panel/strength", float, 1.0, 0.05, 1.0),
    Setting("panel/restyle_strength", float, 0.55, 0.05, 1.0),
    Setting("panel/seed", int, 0, 0, 2**31 - 1),
    Setting("panel/random_seed", bool, True),
    Setting("panel/variants", int, 3, 1, 8),
    Setting("panel/feather", int, 8, 0, 63),
    Setting("panel/advanced", bool, False, label="Advanced settings shown"),
    Setting("panel/keep_structure", bool, False, label="Keep structure"),
    Setting("panel/ip_adapter", str, "", max_length=4096, label="IP-Adapter file"),
    Setting("panel/image_encoder", str, "", max_length=4096, label="image encoder folder"),
    Setting("brush/size", int, 64, 1, 2048, label="brush size"),
    Setting("brush/softness", float, 0.3, 0.0, 1.0, label="brush softness"),
    Setting("window/geometry", bytes, b"", max_length=4096, label="window position"),
    Setting("last_dir", str, "", max_length=4096, label="last folder"),
    Setting("last_model_dir", str, "", max_length=4096, label="last model folder"),
    Setting("export/quality", int, 95, 1, 100, label="export quality"),
    Setting("editor/keep_mask", bool, True, label="keep the mask after Accept"),
    Setting("welcome/shown", bool, False, label="welcome page shown"),
)}


def checked_values(prefix: str, values: dict) -> dict[str, object]:
    """The entries of `values` (keys without `prefix`) that are valid for their setting, typed; anything
    unknown or invalid is left out. For settings that come from elsewhere, such as a recovery copy."""
    kept = {}
    for key, value in values.items():
        setting = SCHEMA.get(prefix + str(key))
        if setting is not None and setting.kind is not bytes:
            checked, _ = _check(setting, value)
            if checked is not None:
                kept[key] = checked
    return kept


def value_range(key: str) -> tuple:
    """(low, high) of a numeric setting, for the widget that edits it."""
    setting = SCHEMA[key]
    return setting.kind(setting.low), setting.kind(setting.high)


class SettingsStore:
    """Typed settings backed by a JSON file. `get` never raises and always returns a valid value."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.problems: list[str] = []      # one short line each, for the status bar
        self._values: dict[str, object] = {}
        self._other: dict[str, object] = {}  # keys this version does not know (a newer one wrote them): kept
        self._writable = True                # False when the file could not be read nor set aside
        self._load()

    def get(self, key: str) -> object:
        return self._values.get(key, SCHEMA[key].default)

    def stored(self, prefix: str = "") -> dict[str, object]:
        """The valid values the file holds whose keys start with `prefix`, keyed without it."""
        return {key[len(prefix):]: value for key, value in self._values.items() if key.startswith(prefix)}

    def set(self, key: str, value: object) -> bool:
        """Remember `value`; False, and the old value kept, when it is not one this setting can have."""
        setting = SCHEMA[key]
        checked, _ = _check(setting, _stored_form(setting, value))
        if checked is None:
            return False
        self._values[key] = checked
        return True

    def save(self) -> None:
        """Write the file atomically; OSError when that is impossible (the old file is then untouched). A file
        that could not be read, nor set aside, is never overwritten."""
        if not self._writable:
            return
        values = {key: _stored_form(SCHEMA[key], value) for key, value in self._values.items()}
        data = {"version": FORMAT_VERSION, "settings": {**self._other, **values}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    # -- reading ----------------------------------------------------------------------------------------
    def _load(self) -> None:
        found = read_json_file(self.path, MAX_FILE_BYTES)
        if found.missing:
            return
        if found.unreadable:
            self._writable = False
            self.problems.append(f"Could not read the settings file {self.path} ({found.unreadable}); using the "
                                 "defaults, and it is left as it is.")
            return
        if found.damaged:
            self._set_aside(found.damaged)
            return
        stored = found.data.get("settings") if isinstance(found.data, dict) else None
        if not isinstance(stored, dict):
            self._set_aside("it is not an object of settings")
            return
        damaged = []
        for key, value in stored.items():
            setting = SCHEMA.get(key)
            if setting is None:
                kept = isinstance(key, str) and len(key) <= 200
                if kept and writable_text(key + json.dumps(value, ensure_ascii=False)):
                    self._other[key] = value
                continue
            checked, problem = _check(setting, value)
            if problem:
                damaged.append(setting.name)
            if checked is not None:
                self._values[key] = checked
        if damaged:
            self.problems.append(f"Some saved settings were damaged and were reset: {', '.join(damaged)}.")

    def _set_aside(self, why: str) -> None:
        try:
            where = f"kept as {set_aside(self.path).name}"
        except OSError as exc:
            self._writable = False
            where = f"it could not be set aside ({exc.strerror or exc}), so it is left as it is"
        self.problems.append(f"The settings file {self.path.name} was damaged ({why}); {where}; using the "
                             "defaults.")


def migrate_qt_settings(store: SettingsStore, old: Path) -> bool:
    """Take the values of an older version's QSettings INI file (Linux) into a store that has no file yet,
    reading it as plain text: values Qt would have to deserialise ("@Variant(...)", "@ByteArray(...)") and
    lists are skipped, so nothing in it is unpickled. True when something was taken."""
    if store.path.exists() or store.problems:           # a damaged file of this version: not the old one's turn
        return False
    try:
        text = read_bounded(old, MAX_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    section, taken = "", False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = "" if line == "[General]" else line[1:-1] + "/"
            continue
        key, equals, raw = line.partition("=")
        setting = SCHEMA.get(section + key.strip())
        value = _ini_value(raw.strip()) if equals and setting is not None and setting.kind is not bytes else None
        if value is None:
            continue
        if setting.kind in (int, float):
            try:
                value = setting.kind(value)
            except ValueError:
                continue
        elif setting.kind is bool:
            value = {"true": True, "false": False}.get(value)
        taken = store.set(setting.key, value) or taken
    return taken


_INI_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b",
                "f": "\f", "v": "\v", "'": "'", "?": "?", ";": ";", ",": ","}


def _ini_value(raw: str) -> str | None:
    """One plain string as Qt writes it into an INI file (quoted or not, with its escapes); None for the
    values this reader does not take (@-values, lists)."""
    if raw.startswith("@@"):                             # Qt's escape of a text that starts with "@"
        raw = raw[1:]
    elif raw.startswith("@"):
        return None
    out, quoted, index = [], False, 0
    while index < len(raw):
        character = raw[index]
        if character == '"':
            quoted = not quoted
        elif character == "," and not quoted:
            return None                                  # a list
        elif character == "\\" and index + 1 < len(raw):
            index += 1
            escaped = raw[index]
            if escaped == "x":
                digits = ""
                while index + 1 < len(raw) and len(digits) < 4 and raw[index + 1] in "0123456789abcdefABCDEF":
                    index += 1
                    digits += raw[index]
                out.append(chr(int(digits, 16)) if digits else "x")
            else:
                out.append(_INI_ESCAPES.get(escaped, escaped))
        else:
            out.append(character)
        index += 1
    text = "".join(out)
    try:                                                 # \xd83c\xdfa8: one character in two UTF-16 units
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None


def _stored_form(setting: Setting, value: object) -> object:
    """How a value is written to JSON: bytes as base64 text, everything else as itself."""
    if setting.kind is bytes and isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _check(setting: Setting, value: object) -> tuple[object | None, str]:
    """(the value to use, or None for the default; "" or what was wrong with the stored value)."""
    kind = setting.kind
    if kind is bool:
        return (value, "") if isinstance(value, bool) else (None, "not true or false")
    if kind is str:
        if not isinstance(value, str):
            return None, "not text"
        if len(value) > setting.max_length or "\0" in value or not writable_text(value):
            return None, "too long or not text"
        return value, ""
    if kind is bytes:
        if not isinstance(value, str) or len(value) > setting.max_length * 2:
            return None, "not base64 text"
        try:
            return base64.b64decode(value.encode("ascii"), validate=True), ""
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None, "not base64 text"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, "not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "not a finite number"
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            return None, "not a whole number"
    if not setting.low <= value <= setting.high:
        return None, f"outside {setting.low:g}..{setting.high:g}"
    return (int(value) if kind is int else float(value)), ""
