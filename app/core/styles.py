"""Prompt styles: named templates wrapped around the user's prompt. Qt-free.

resources/styles.json holds a JSON list; the first entry is "None". Each entry is an object:

    name              text, unique (case-insensitive), shown in the style menu
    prompt            template text containing {prompt}, where the user's prompt goes
    negative_prompt   text added to the user's negative prompt (optional, default "")
    sampler           sampler name to use with this style (optional)
    steps             whole number of denoising steps, at least 1 (optional)
    guidance          classifier-free guidance scale, a number above 0 (optional)
    lora              a LoRA to apply with this style (optional): the path of a .safetensors file in kohya /
                      A1111 or diffusers layout, made for the model family it is used with. A relative path
                      is taken from the folder holding the styles file; "~" means the home folder. The file
                      is only opened when a job uses the style.
    lora_weight       how strongly the LoRA applies, a number from -10 to 10 (optional, default 1; needs lora)

Other keys are rejected so that a misspelt key is noticed instead of being silently ignored.

A job's style strength (0..1) scales a style: at 1 the style is applied in full, at 0 it is as if no
style were chosen; in between, the text conditioning is blended and the LoRA weight scaled (see
app/job_builder.py and app/engine/denoise.py).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STYLES_PATH = Path(__file__).resolve().parents[2] / "resources" / "styles.json"
PLACEHOLDER = "{prompt}"
_KEYS = {"name", "prompt", "negative_prompt", "sampler", "steps", "guidance", "lora", "lora_weight"}
LORA_SUFFIX = ".safetensors"
MAX_LORA_WEIGHT = 10.0


class StyleError(Exception):
    """A styles file is unusable or a style name is unknown; str() is one line."""


def _tidy(text: str) -> str:
    """Collapse whitespace, drop empty comma-separated items and stray separators at either end."""
    text = re.sub(r"\s+", " ", text)
    items = (item.strip() for item in text.split(","))
    text = ", ".join(item for item in items if item)
    text = re.sub(r" +([.;:!?])", r"\1", text)
    return text.lstrip(" ,.;:").rstrip(" ,;:")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    lora: str | None = None          # absolute path of a .safetensors LoRA
    lora_weight: float = 1.0

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The user's prompt placed in the template, and the style's negative joined with the user's."""
        filled = self.prompt.replace(PLACEHOLDER, _tidy(prompt or ""))
        negatives = (_tidy(self.negative_prompt), _tidy(negative or ""))
        return _tidy(filled), ", ".join(part for part in negatives if part)


def unstyled(prompt: str, negative: str) -> tuple[str, str]:
    """The user's prompt and negative prompt as a job without any style uses them (tidied)."""
    return _tidy(prompt or ""), _tidy(negative or "")


def load_styles(path: str | os.PathLike | None = None) -> list[Style]:
    path = Path(path) if path is not None else DEFAULT_STYLES_PATH
    name = path.name

    def fail(problem: str) -> StyleError:
        return StyleError(f"{name}: {problem}")

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("no such file") from None
    except UnicodeDecodeError:
        raise fail("not valid JSON (the file is not UTF-8 text)") from None
    except OSError as exc:
        raise fail(f"cannot read the file ({exc.strerror or exc})") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(entries, list):
        raise fail("expected a JSON list of styles")
    if not entries:
        raise fail("the list of styles is empty")

    styles: list[Style] = []
    seen: set[str] = set()
    folder = path.resolve().parent
    for number, entry in enumerate(entries, start=1):
        style = _parse_entry(entry, number, fail, folder)
        key = style.name.casefold()
        if key in seen:
            raise fail(f"duplicate style name '{style.name}'")
        seen.add(key)
        styles.append(style)
    return styles


def _parse_entry(entry: object, number: int, fail, folder: Path) -> Style:
    if not isinstance(entry, dict):
        raise fail(f"entry {number} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise fail(f"entry {number} has no name")
    name = name.strip()
    label = f"style '{name}'"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise fail(f"{label} has unknown key '{unknown[0]}'")
    template = entry.get("prompt")
    if not isinstance(template, str):
        raise fail(f"{label} has no prompt")
    if PLACEHOLDER not in template:
        raise fail(f"{label}: the prompt template has no {PLACEHOLDER}")
    negative = entry.get("negative_prompt", "")
    if not isinstance(negative, str):
        raise fail(f"{label}: negative_prompt must be text")
    sampler = entry.get("sampler")
    if sampler is not None and (not isinstance(sampler, str) or not sampler.strip()):
        raise fail(f"{label}: sampler must be a sampler name")
    steps = entry.get("steps")
    if steps is not None:
        if isinstance(steps, float) and steps.is_integer():
            steps = int(steps)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise fail(f"{label}: steps must be a whole number of at least 1")
    guidance = entry.get("guidance")
    if guidance is not None:
        number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
        if not number or not 0 < guidance < math.inf:
            raise fail(f"{label}: guidance must be a number above 0")
        guidance = float(guidance)
    lora = entry.get("lora")
    if lora is not None:
        if not isinstance(lora, str) or not lora.strip() or "\n" in lora:
            raise fail(f"{label}: lora must be the path of a {LORA_SUFFIX} file")
        lora_path = Path(lora.strip()).expanduser()
        if lora_path.suffix.lower() != LORA_SUFFIX:
            raise fail(f"{label}: lora must be a {LORA_SUFFIX} file, got '{lora_path.name}'")
        lora = str(lora_path if lora_path.is_absolute() else folder / lora_path)
    lora_weight = entry.get("lora_weight", 1.0)
    number = isinstance(lora_weight, (int, float)) and not isinstance(lora_weight, bool)
    if not number or not -MAX_LORA_WEIGHT <= lora_weight <= MAX_LORA_WEIGHT:
        raise fail(f"{label}: lora_weight must be a number from {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}")
    if "lora_weight" in entry and lora is None:
        raise fail(f"{label}: lora_weight is set but there is no lora")
    return Style(name, template, negative, sampler.strip() if sampler else None, steps, guidance, lora,
                 float(lora_weight))


def find_style(styles: list[Style], name: str) -> Style:
    wanted = (name or "").strip().casefold()
    for style in styles:
        if style.name.casefold() == wanted:
            return style
    choices = ", ".join(style.name for style in styles)
    raise StyleError(f"unknown style '{name}'; choose one of: {choices}")
