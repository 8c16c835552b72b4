"""Command line: `train-style` (learn a style from a few images) and `train-model` (a latent diffusion model
of one's own). Both run in this process with progress on stderr; Ctrl+C cancels, keeping the checkpoint, and
`--resume` goes on from it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.training.style_settings import DEVICES, PRECISIONS, PRESETS


def add_training_commands(sub) -> None:
    style = sub.add_parser("train-style", help="learn a style from 3 to 50 images (a LoRA), added to the styles")
    style.add_argument("images", nargs="+", help="image files, or folders of them")
    style.add_argument("--name", required=True, help="the style's name in the style list")
    style.add_argument("--model", required=True, help="the base model: a .safetensors file, a diffusers folder "
                                                      "or a Hugging Face repo id (SD 1.x, 2.x or SDXL)")
    style.add_argument("--model-config", default="", metavar="DIR", help="a config folder for an unusual file")
    style.add_argument("--trigger", default="", metavar="WORD", help="a word that calls up the style (put "
                                                                     "first in every caption and the style)")
    style.add_argument("--captions", default="", metavar="DIR", help="NAME.txt captions (default: beside the "
                                                                     "images)")
    style.add_argument("--preset", default="balanced", choices=PRESETS,
                       help="; ".join(f"{name}: {preset.what}" for name, preset in PRESETS.items()))
    style.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    style.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the preset's)")
    style.add_argument("--learning-rate", type=float, default=None)
    style.add_argument("--text-encoder", action=argparse.BooleanOptionalAction, default=None,
                       help="also train the text encoder (default: the preset's)")
    style.add_argument("--resolution", type=int, default=None, metavar="PX",
                       help="training size (default: the model's own: 512 for SD 1.5, 1024 for SDXL)")
    style.add_argument("--buckets", action="store_true", help="keep each whole picture at its aspect ratio "
                                                              "instead of a centre crop")
    style.add_argument("--batch", type=int, default=1)
    style.add_argument("--prior-preservation", action="store_true",
                       help="also learn from images the model makes of --class-prompt, so it keeps what it knew")
    style.add_argument("--class-prompt", default="", help="what the class images show (default: 'an image')")
    style.add_argument("--class-images", type=int, default=0, help="how many (default: 5 per image, 20 at least)")
    style.add_argument("--sample-every", type=int, default=100, metavar="N",
                       help="write a sample image every N steps (0: only at the end)")
    style.add_argument("--sample-prompt", default="", help="the samples' prompt (default: the trigger word and "
                                                           "the first caption)")
    style.add_argument("--seed", type=int, default=0)
    style.add_argument("--weight", type=float, default=1.0, help="the LoRA weight of the style added")
    style.add_argument("--device", default="auto", choices=DEVICES)
    style.add_argument("--precision", default="auto", choices=PRECISIONS)
    style.add_argument("--gradient-checkpointing", default="auto", choices=("auto", "on", "off"))
    style.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="the run's folder (default: learned-styles/NAME in the app's config folder)")
    style.add_argument("--resume", action="store_true", help="go on from the checkpoint in the run's folder")
    style.add_argument("--no-style", action="store_true", help="only write the LoRA; add no style")

    model = sub.add_parser("train-model", help="train a latent diffusion model of your own (autoencoder, then "
                                               "an inpainting UNet); tiny is a CPU toy, small and base need a GPU")
    from app.training.model.cli import add_arguments

    add_arguments(model)


def run_training_command(args: argparse.Namespace, usage_error: type[Exception]) -> int:
    from app.training.console import run_in_console

    if args.command == "train-model":
        from app.training.model.cli import settings_from_args
        from app.training.model.train import train_model

        try:
            settings = settings_from_args(args)
        except (TypeError, ValueError) as exc:
            raise usage_error(str(exc)) from None
        return run_in_console(train_model, settings)
    return _train_style(args, usage_error, run_in_console)


def _train_style(args: argparse.Namespace, usage_error: type[Exception], run_in_console) -> int:
    from app.core.styles import StyleError, learned_style_entry, read_all_styles, save_user_style
    from app.editor.user_folders import learned_styles_folder, user_styles_path
    from app.training.console import ConsoleReport
    from app.training.style_lora import train_style
    from app.training.style_settings import StyleTrainingSettings, file_stem

    shipped = read_all_styles(None).styles
    if not args.no_style and any(s.name.casefold() == args.name.strip().casefold() for s in shipped):
        raise usage_error(f"--name {args.name}: that is a built-in style's name; choose another")
    out = args.out or learned_styles_folder() / file_stem(args.name)
    try:
        settings = StyleTrainingSettings(
            images=tuple(str(p) for p in args.images), name=args.name, model=args.model, out=str(out),
            model_config=args.model_config, trigger=args.trigger, captions=args.captions, preset=args.preset,
            steps=args.steps, rank=args.rank, learning_rate=args.learning_rate, train_text_encoder=args.text_encoder,
            resolution=args.resolution, crop="buckets" if args.buckets else "centre", batch=args.batch,
            prior_preservation=args.prior_preservation, class_prompt=args.class_prompt,
            class_images=args.class_images, sample_every=args.sample_every, sample_prompt=args.sample_prompt,
            seed=args.seed, device=args.device, precision=args.precision,
            gradient_checkpointing=args.gradient_checkpointing, resume=args.resume)
    except (TypeError, ValueError) as exc:
        raise usage_error(str(exc)) from None
    captured: list[ConsoleReport] = []

    def train(s, report, control) -> None:
        captured.append(report)
        train_style(s, report, control)

    status = run_in_console(train, settings)
    if status or args.no_style:
        return status
    lora = captured[0].result
    try:
        save_user_style(user_styles_path(), learned_style_entry(args.name, args.trigger, lora, args.weight), shipped)
    except StyleError as exc:
        print(f"latent-canvas: error: the LoRA is at {lora} but the style could not be added: {exc}",
              file=sys.stderr)
        return 1
    print(f"added the style '{args.name.strip()}': use it with --style \"{args.name.strip()}\"", file=sys.stderr)
    return 0
