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
app/editor/job_builder.py and app/engine/diffusion/denoise.py).
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from app.core.safe_files import FileTooLarge, read_bounded

DEFAULT_STYLES_PATH = Path(__file__).resolve().parents[2] / "resources" / "styles.json"
PLACEHOLDER = "{prompt}"
_KEYS = {"name", "prompt", "negative_prompt", "sampler", "steps", "guidance", "lora", "lora_weight"}
LORA_SUFFIX = ".safetensors"
MAX_LORA_WEIGHT = 10.0
MAX_NAME = 100
MAX_STEPS = 500                  # as a job's SamplingOptions accepts
MAX_GUIDANCE = 50.0


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


NONE = Style("None", PLACEHOLDER, "")
MAX_FILE_BYTES = 4 << 20


@dataclass(frozen=True)
class StyleSet:
    """The styles the editor offers, and what was wrong with the file they came from (one line each)."""
    styles: list[Style]
    problems: tuple[str, ...] = ()


def load_styles(path: str | os.PathLike | None = None) -> list[Style]:
    """Every style in the file; StyleError (one line) if anything in it is wrong."""
    path = Path(path) if path is not None else DEFAULT_STYLES_PATH
    fail = _failure(path)
    styles: list[Style] = []
    for number, entry in enumerate(_entries(path), start=1):
        _add(styles, _parse_entry(entry, number, fail, path.resolve().parent), fail)
    return styles


def read_styles(path: str | os.PathLike | None = None) -> StyleSet:
    """The usable styles of the file, never failing: an entry that is wrong is left out, a file that cannot
    be used at all leaves only "None", and each problem is reported. "None" always comes first."""
    path = Path(path) if path is not None else DEFAULT_STYLES_PATH
    fail = _failure(path)
    try:
        entries = _entries(path)
    except StyleError as exc:
        return StyleSet([NONE], (f"{exc}; only the style None is available.",))
    styles: list[Style] = []
    problems = []
    for number, entry in enumerate(entries, start=1):
        try:
            _add(styles, _parse_entry(entry, number, fail, path.resolve().parent), fail)
        except StyleError as exc:
            problems.append(f"{exc} (left out).")
    plain = [style for style in styles if style.name.casefold() == NONE.name.casefold()]
    styles = (plain or [NONE]) + [style for style in styles if style not in plain]
    return StyleSet(styles, tuple(problems[:1] + ([f"{len(problems) - 1} more styles were left out."]
                                                  if len(problems) > 1 else [])))


def _failure(path: Path):
    return lambda problem: StyleError(f"{path.name}: {problem}")


def _entries(path: Path) -> list:
    fail = _failure(path)
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise fail("no such file") from None
    except FileTooLarge:
        raise fail(f"the file is over {MAX_FILE_BYTES >> 20} MB, too large for a styles file") from None
    except OSError as exc:
        raise fail(f"cannot read the file ({exc.strerror or exc})") from None
    try:
        entries = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("not valid JSON (the file is not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise fail("not valid JSON (nested too deeply)") from None
    if not isinstance(entries, list):
        raise fail("expected a JSON list of styles")
    if not entries:
        raise fail("the list of styles is empty")
    return entries


def _add(styles: list[Style], style: Style, fail) -> None:
    if any(other.name.casefold() == style.name.casefold() for other in styles):
        raise fail(f"duplicate style name '{style.name}'")
    styles.append(style)


def _parse_entry(entry: object, number: int, fail, folder: Path) -> Style:
    if not isinstance(entry, dict):
        raise fail(f"entry {number} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail(f"entry {number} has no name")
    if any(unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp") for character in name):
        raise fail(f"entry {number}: the name holds control characters")
    if len(name.strip()) > MAX_NAME:
        raise fail(f"entry {number}: the name is over {MAX_NAME} characters")
    name = name.strip()
    label = f"style '{name}'"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise fail(f"{label} has unknown key {str(unknown[0])[:40]!r}")
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
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise fail(f"{label}: steps must be a whole number from 1 to {MAX_STEPS}")
    guidance = entry.get("guidance")
    if guidance is not None:
        number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
        if not number or not 0 < guidance <= MAX_GUIDANCE:
            raise fail(f"{label}: guidance must be a number above 0 and at most {MAX_GUIDANCE:g}")
        guidance = float(guidance)
    lora = entry.get("lora")
    if lora is not None:
        if not isinstance(lora, str) or not lora.strip() or "\n" in lora or "\0" in lora or len(lora) > 4096:
            raise fail(f"{label}: lora must be the path of a {LORA_SUFFIX} file")
        try:
            lora_path = Path(lora.strip()).expanduser()
        except RuntimeError:            # "~someone" of a user this machine does not have
            raise fail(f"{label}: lora: cannot find the home folder of {lora.split('/')[0][:40]!r}") from None
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


# -- the user's own styles (learned with Styles ▸ Learn a style…) --------------------------------------------

def read_all_styles(user_path: str | os.PathLike | None, path: str | os.PathLike | None = None) -> StyleSet:
    """The shipped styles, then the user's own from `user_path` (if it exists). A user style named like a
    shipped one is left out and said so; a damaged user file leaves the shipped styles usable."""
    shipped = read_styles(path)
    if user_path is None or not Path(user_path).exists():
        return shipped
    own = read_styles(user_path)
    taken = {style.name.casefold() for style in shipped.styles}
    problems = list(shipped.problems) + [p.replace("; only the style None is available.", "; your own styles "
                                                   "are left out.") for p in own.problems]
    styles = list(shipped.styles)
    for style in own.styles[1:] if own.styles[0] is NONE else own.styles:
        if style.name.casefold() in taken:
            if style.name.casefold() != NONE.name.casefold():
                problems.append(f"{Path(user_path).name}: style '{style.name}' has the name of a built-in style "
                                "(left out).")
            continue
        taken.add(style.name.casefold())
        styles.append(style)
    return StyleSet(styles, tuple(problems))


def learned_style_entry(name: str, trigger: str, lora: str | os.PathLike, weight: float = 1.0) -> dict:
    """The styles-file entry of a learned style: the trigger word leads the prompt, the LoRA at `weight`."""
    trigger = _tidy(trigger or "")
    template = f"{trigger}, {PLACEHOLDER}" if trigger else PLACEHOLDER
    return {"name": name.strip(), "prompt": template, "lora": str(lora), "lora_weight": weight}


def save_user_style(user_path: str | os.PathLike, entry: dict, shipped: list[Style] | None = None) -> Style:
    """Add `entry` to the user's styles file (replacing a style of the same name), written atomically; the
    parsed Style. StyleError (one line) if the entry is wrong, the name is a built-in style's, or the file
    cannot be used (a damaged file is never overwritten)."""
    from app.core.safe_files import write_text_atomically

    path = Path(user_path)
    fail = _failure(path)
    style = _parse_entry(entry, 1, fail, path.resolve().parent)
    shipped = read_styles().styles if shipped is None else shipped
    if any(s.name.casefold() == style.name.casefold() for s in shipped):
        raise fail(f"'{style.name}' is the name of a built-in style; choose another name")
    entries = _entries(path) if path.exists() else []
    entries = [e for e in entries if not (isinstance(e, dict) and isinstance(e.get("name"), str)
                                          and e["name"].strip().casefold() == style.name.casefold())]
    entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_text_atomically(path, json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise fail(f"cannot write the file ({exc.strerror or exc})") from None
    return style
