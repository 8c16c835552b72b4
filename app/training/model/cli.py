"""`latent-canvas train-model FOLDER --out DIR --config tiny|small|base`: its arguments and settings."""
from __future__ import annotations

import argparse

from app.training.model.configs import CONFIGS
from app.training.model.settings import DEVICES, ModelTrainingSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER",
                        help="the training images; NAME.txt beside an image is its caption (with --text-encoder), "
                             "sub-folders are classes (without it)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the model folder to make (its checkpoint/ and samples/ go in it too)")
    parser.add_argument("--config", default="tiny", choices=CONFIGS,
                        help="; ".join(f"{name}: {config.what}" for name, config in CONFIGS.items()))
    parser.add_argument("--steps-autoencoder", type=int, default=None, metavar="N",
                        help="autoencoder training steps (default: the config's)")
    parser.add_argument("--steps-diffusion", type=int, default=None, metavar="N",
                        help="UNet training steps (default: the config's); more than a finished run's, with "
                             "--resume, trains it on")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: the config's)")
    parser.add_argument("--resolution", type=int, default=None, metavar="PX",
                        help="training size in pixels (default: the config's: 64, 256 or 512)")
    parser.add_argument("--text-encoder", default="", metavar="DIR",
                        help="a diffusers model folder (an SD 1.5 one, say) whose text_encoder/ and tokenizer/ "
                             "condition the model on captions; without it the sub-folders' names are classes")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-every", type=int, default=None, metavar="N",
                        help="write a sample image to DIR/samples every N steps (0: at the end of each phase only)")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="save a checkpoint every N steps (default: the config's)")


def settings_from_args(args: argparse.Namespace) -> ModelTrainingSettings:
    """The settings of parsed arguments; ValueError (one line) for values out of bounds."""
    return ModelTrainingSettings(
        folder=str(args.folder), out=str(args.out), config=args.config, steps_autoencoder=args.steps_autoencoder,
        steps_diffusion=args.steps_diffusion, batch=args.batch, resolution=args.resolution,
        text_encoder=str(args.text_encoder), device=args.device, resume=args.resume, seed=args.seed,
        sample_every=args.sample_every, checkpoint_every=args.checkpoint_every)
