"""Command line: the same engines as the editor, no window.

    latent-canvas [IMAGE]                       open the editor
    latent-canvas fill IMAGE --mask MASK -o OUT [options]
    latent-canvas expand IMAGE -o OUT [--left PX] [--top PX] [--right PX] [--bottom PX] [options]
    latent-canvas restyle IMAGE -o OUT --style NAME [--strength 0.55] --model MODEL [options]
    latent-canvas styles
    latent-canvas train-style IMAGES... --name NAME --model MODEL [--trigger WORD] [--preset fast|balanced|best]
    latent-canvas train-model FOLDER --out DIR --config tiny|small|base

Fill, expand and restyle take ControlNets (--control KIND[:IMAGE][:WEIGHT[:START:END]] with one --controlnet
MODEL each) and reference images (--reference IMAGE[:SCALE[:KIND]] with --ip-adapter FILE): app/cli_controls.py.

Every problem with the input ends the run with exit status 1 (2 for bad usage), one line on stderr, and
no output file written.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from app.cli_models import add_model_commands, run_model_command
from app.cli_training import add_training_commands, run_training_command
from app.cli_controls import (ControlUsageError, add_control_options, controls_from_args, parse_control,
                              parse_reference, references_from_args)
from app.core.geometry import Rect, canvas_from_margins
from app.core.imageio import ImageLoadError, ImageSaveError, load_image, load_mask, save_images
from app.core.styles import StyleError, read_all_styles
from app.editor.user_folders import user_styles_path
from app.engine.events import CancelToken, EngineError, EngineEvent, EventKind
from app.engine.registry import EngineRegistry
from app.engine.model_ids import path_exists, server_model
from app.engine.request import MEMORY_SAVING, PRECISIONS, SamplingOptions, ServerInput
from app.engine.runner import run_job
from app.editor.job_builder import (DEVICES, RESTYLE_STRENGTH, JobSettings, build_expand_request, build_fill_request,
                             build_restyle_request)
from app.editor.model_library import describe_model

COMMANDS = ("fill", "expand", "restyle", "styles", "train-style", "train-model", "models")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class UsageError(Exception):
    """Bad command-line usage; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(message)


def _add_generation_options(p: argparse.ArgumentParser, strength: float = 1.0, masked: bool = True) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="where to write the result")
    p.add_argument("--prompt", default="", help="what to paint (empty: continue the surroundings)")
    p.add_argument("--negative", default="", help="what to avoid")
    p.add_argument("--style", default="None", help="a style name (see `styles`)")
    p.add_argument("--style-strength", type=float, default=1.0, metavar="0..1",
                   help="how much of the style to use: 1 = all of it, 0 = none")
    p.add_argument("--model", default="classic",
                   help="classic, classic-ns, a .safetensors/.ckpt file, a diffusers folder, a Hugging Face "
                        "repo id, or CHECKPOINT@SERVER: a checkpoint on a ComfyUI server (HOST:PORT or URL)")
    p.add_argument("--server", action="append", default=[], metavar="URL",
                   help="a ComfyUI server to run on (repeatable: the variants spread over all that have the "
                        "checkpoint); its token, if it needs one, in LATENT_CANVAS_SERVER_TOKEN")
    p.add_argument("--model-config", default="", metavar="DIR",
                   help="a diffusers config folder for a single-file model whose family is unusual")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.0)
    repainted = "the masked area (Fill; 1 = all of it)" if masked else "the image"
    p.add_argument("--strength", type=float, default=strength, help=f"how much of {repainted} is repainted")
    p.add_argument("--seed", type=int, default=None, help="fixed seed (default: random)")
    p.add_argument("--variants", type=int, default=1, help="number of results (OUT, OUT-2, ...)")
    if masked:
        p.add_argument("--feather", type=int, default=8, help="soft edge of the fill in px (0-63)")
    add_control_options(p)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: float16 on a GPU, float32 on the CPU")
    p.add_argument("--memory-saving", default="auto", choices=MEMORY_SAVING,
                   help="attention slicing, VAE tiling and CPU offload (auto: by free GPU memory)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="latent-canvas",
                     description="Generative Fill, Expand and Restyle without the window.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fill = sub.add_parser("fill", help="fill the white area of MASK in IMAGE")
    fill.add_argument("image", type=Path)
    fill.add_argument("--mask", required=True, type=Path, help="same size as IMAGE, white = fill")
    _add_generation_options(fill)
    expand = sub.add_parser("expand", help="extend IMAGE outward and fill the new area")
    expand.add_argument("image", type=Path)
    for side in ("left", "top", "right", "bottom"):
        expand.add_argument(f"--{side}", type=int, default=0, metavar="PX", help=f"pixels added on the {side}")
    _add_generation_options(expand)
    restyle = sub.add_parser("restyle", help="repaint all of IMAGE in a style, keeping its structure "
                                             "(needs a diffusion --model)")
    restyle.add_argument("image", type=Path)
    _add_generation_options(restyle, strength=RESTYLE_STRENGTH, masked=False)
    sub.add_parser("styles", help="list the styles")
    add_training_commands(sub)
    add_model_commands(sub)
    return parser


def variant_paths(output: Path, count: int) -> list[Path]:
    return [output] + [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(2, count + 1)]


def _check_output(output: Path) -> None:
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"{output}: unsupported output format '{output.suffix}'; use .png, .jpg or .webp")
    if not output.parent.resolve().is_dir():
        raise UsageError(f"{output}: the folder {output.parent} does not exist")


def _check_outputs_spare_inputs(args: argparse.Namespace) -> None:
    """No result may be written over a file the run reads: the same path, a link to it (symbolic or hard),
    or another spelling of it on a case-insensitive file system."""
    inputs = [("image", args.image)]
    if getattr(args, "mask", None) is not None:
        inputs.append(("mask", args.mask))
    if Path(args.model).is_file():
        inputs.append(("model", Path(args.model)))
    for text in getattr(args, "control", []):
        image = parse_control(text)[1]
        if image:
            inputs.append(("control image", Path(image)))
    for text in getattr(args, "reference", []):
        inputs.append(("reference image", Path(parse_reference(text)[0])))
    SamplingOptions(variants=args.variants)         # a count out of range is refused before its paths are made
    for number, output in enumerate(variant_paths(args.output, args.variants), start=1):
        for role, source in inputs:
            if _same_file(output, source):
                which = f"the output {output}" if number == 1 else f"variant {number} ({output})"
                raise UsageError(f"{which} would overwrite the input {role} {source}; choose another -o")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:         # either one does not exist (yet), so they are not one file
        return False


def _settings(args: argparse.Namespace) -> JobSettings:
    strengths = dict(restyle_strength=args.strength) if args.command == "restyle" else dict(strength=args.strength)
    servers = _servers(args)                  # first: a bare --model becomes CHECKPOINT@SERVER
    return JobSettings(prompt=args.prompt, negative_prompt=args.negative, style=args.style,
                       style_strength=args.style_strength, model=args.model, model_config=args.model_config,
                       steps=args.steps, guidance=args.guidance, seed=args.seed, variants=args.variants,
                       device=args.device, precision=args.precision, memory_saving=args.memory_saving,
                       feather=getattr(args, "feather", JobSettings.feather), servers=servers,
                       **strengths)


def _servers(args: argparse.Namespace) -> tuple[ServerInput, ...]:
    """--server URLs (with the token of LATENT_CANVAS_SERVER_TOKEN); a bare --model then runs on the first."""
    import os

    from app.engine.comfy.client import Server, ServerError

    token = os.environ.get("LATENT_CANVAS_SERVER_TOKEN", "")
    servers = []
    for text in args.server:
        try:
            servers.append(ServerInput(Server.parse(text).url, token))
        except ServerError as exc:
            raise UsageError(f"--server {text}: {exc}") from None
    if servers and server_model(args.model) is None:
        if args.model in ("classic", "classic-ns") or path_exists(args.model):
            raise UsageError("--server runs a checkpoint of that server: give --model CHECKPOINT (as the server "
                             "names it)")
        args.model = f"{args.model}@{servers[0].url}"
    return tuple(servers)


class _ProgressPrinter:
    """One stderr line per denoising step, and each new status message of step 0 (loading a model,
    download progress) once: repeats are skipped so a download does not flood the terminal."""

    def __init__(self) -> None:
        self._last = ""

    def __call__(self, event: EngineEvent) -> None:
        if event.kind != EventKind.PROGRESS:
            return
        line = " ".join(event.message.split()) if event.step == 0 else f"step {event.step}/{event.total}"
        if event.notice:
            line = "note: " + " ".join(event.message.split())
        if line and line != self._last:
            self._last = line
            print(line, file=sys.stderr, flush=True)


def _check_model(registry: EngineRegistry, model: str, config: str) -> None:
    """Fail before any loading when the model or its config folder is unusable (one line)."""
    if model in registry or server_model(model) is not None:
        if config:
            raise UsageError(f"--model-config only applies to a single model file, not to the {model} engine")
        return
    describe_model(model, config)


def _styles() -> list:
    """The styles; a damaged styles file leaves out what it cannot use and says so, as the editor does."""
    found = read_all_styles(user_styles_path())
    for problem in found.problems:
        print(f"note: {problem}", file=sys.stderr)
    return found.styles


def _expand_canvas(args: argparse.Namespace, image) -> Rect:
    margins = (args.left, args.top, args.right, args.bottom)
    if any(m < 0 for m in margins):
        raise UsageError("--left/--top/--right/--bottom must not be negative")
    if not any(margins):
        raise UsageError("nothing to expand: give --left, --top, --right or --bottom in pixels")
    canvas = canvas_from_margins(Rect(0, 0, image.shape[1], image.shape[0]), *margins)
    if canvas.area > 150_000_000:
        raise UsageError(f"the expanded canvas {canvas.w}x{canvas.h} is over the 150 megapixel limit")
    return canvas


def _generate(args: argparse.Namespace) -> int:
    _check_output(args.output)
    _check_outputs_spare_inputs(args)
    registry = EngineRegistry()
    if args.command == "restyle" and (args.model.strip() or registry.default_id) in registry:
        raise UsageError("restyle needs a diffusion model: give --model with a .safetensors file, a diffusers "
                         "folder or a Hugging Face repo id")
    loaded = load_image(args.image)
    for note in loaded.notes:
        print(f"note: {args.image.name}: {note}", file=sys.stderr)
    image = loaded.pixels
    styles = _styles()
    settings = _settings(args)
    output = Rect(0, 0, image.shape[1], image.shape[0])
    if args.command == "expand":
        output = _expand_canvas(args, image)
    settings = replace(settings, controls=controls_from_args(args, image.shape, output),
                       references=references_from_args(args), ip_adapter=args.ip_adapter.strip(),
                       image_encoder=args.image_encoder.strip())
    if args.command == "fill":
        mask = load_mask(args.mask)
        if mask.shape != image.shape[:2]:
            raise UsageError(f"{args.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but the "
                             f"image is {image.shape[1]}x{image.shape[0]}; they must be the same size")
        if not mask.any():
            raise UsageError(f"{args.mask}: the mask is empty (no white pixels): nothing to fill")
        request = build_fill_request(image, mask, settings, styles)
    elif args.command == "restyle":
        request = build_restyle_request(image, settings, styles)
    else:
        request = build_expand_request(image, output, settings, styles)

    engine = registry.create(request.model)
    _check_model(registry, request.model.strip() or registry.default_id, request.model_config)
    outcome: list[EngineEvent] = []
    progress = _ProgressPrinter()

    def emit(event: EngineEvent) -> None:
        progress(event)
        if event.kind != EventKind.PROGRESS:
            outcome.append(event)

    run_job(engine, request, 1, emit, CancelToken())
    final = outcome[-1]
    if final.kind == EventKind.ERROR:
        raise EngineError(final.message)
    if final.kind != EventKind.RESULT:
        raise EngineError("the job was cancelled")
    written = list(zip(variant_paths(args.output, len(final.variants)), final.variants))
    save_images([(path, variant.image, variant.parameters) for path, variant in written])
    for path, variant in written:
        print(f"wrote {path} (seed {variant.seed})", file=sys.stderr)
    return 0


def _command(args: argparse.Namespace) -> int:
    if args.command == "styles":
        for style in _styles():
            print(style.name)
        return 0
    if args.command == "models":
        return run_model_command(args, UsageError)
    if args.command in ("train-style", "train-model"):
        return run_training_command(args, UsageError)
    return _generate(args)


def run(argv: list[str]) -> int:
    # Library warnings (with their tracebacks) would bury the one-line error; internal errors still log.
    logging.basicConfig(level=logging.ERROR, format="latent-canvas: %(levelname)s: %(name)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.CRITICAL)     # what it logs about a bad file, ImageLoadError says
    try:
        status = _command(build_parser().parse_args(argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:             # `latent-canvas models list | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (UsageError, ControlUsageError) as exc:
        print(f"latent-canvas: error: {exc}", file=sys.stderr)
        return 2
    except (ImageLoadError, ImageSaveError, StyleError, EngineError, ValueError) as exc:
        print(f"latent-canvas: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("latent-canvas: cancelled", file=sys.stderr)
        return 130
