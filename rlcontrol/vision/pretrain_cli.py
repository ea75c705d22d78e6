"""`rlcontrol pretrain-vae` (also `python -m rlcontrol.vision.pretrain`): flags and handler.

    rlcontrol pretrain-vae --env ENV --frames N --out vae.safetensors [--pixel-size 64] [--latent-dim 32]
                           [--epochs E] [--batch-size B] [--beta B] [--seed S] [--json]

Kept apart from rlcontrol/vision/pretrain.py so that building the command line imports no
torch or OpenCV: the heavy module is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rlcontrol.errors import UserError

DESCRIPTION = "Pretrain a VAE image encoder on frames from random-action episodes."
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2 (argparse's default also prints usage)
        raise UserError(message)


def _at_least(minimum: float, kind: type = int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {text}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The pretrain-vae flags, on `p` (this module's own parser, or `rlcontrol pretrain-vae`)."""
    p.add_argument("--env", required=True, help="environment id, e.g. dmc:cartpole-swingup")
    # frames >= 0 here so that 0 gets the specific message from pretrain_vae
    p.add_argument("--frames", required=True, type=_at_least(0), help="frames to collect")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors); the grid goes to .png")
    p.add_argument("--pixel-size", type=_at_least(1), default=64, help="rendered frame size (default 64)")
    p.add_argument("--latent-dim", type=_at_least(1), default=32, help="latent size (default 32)")
    p.add_argument("--epochs", type=_at_least(1), default=10, help="passes over the frames (default 10)")
    p.add_argument("--batch-size", type=_at_least(1), default=64, help="default 64")
    p.add_argument("--lr", type=_at_least(1e-12, float), default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--beta", type=_at_least(0.0, float), default=1.0, help="KL weight (default 1)")
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--threads", type=_at_least(1), default=1, help="torch threads (default 1)")
    p.add_argument("--max-episode-steps", type=_at_least(1), default=None,
                   help="cut random episodes after this many steps (more, shorter episodes)")
    p.add_argument("--env-kwargs", default="{}",
                   help="task keywords as a JSON object, e.g. the camera pose ranges of a domain-randomized "
                        "run or a stand-in's env_kwargs: the frames the encoder will meet")
    p.add_argument("--crop-top", type=_at_least(0.0, float), default=0.0,
                   help="fraction of rows to drop at the top (e.g. sky), then resize back to --pixel-size")
    p.add_argument("--grayscale", action="store_true", help="train on grayscale frames")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(_Parser(prog="rlcontrol pretrain-vae", description=DESCRIPTION))


def run(args: argparse.Namespace) -> dict:
    """Do what the parsed flags say; prints a one-line summary unless --json. Raises UserError."""
    from rlcontrol.vision.preprocess import ImagePreprocessing
    from rlcontrol.vision.pretrain import pretrain_vae

    try:
        preprocessing = ImagePreprocessing(crop_top=args.crop_top, grayscale=args.grayscale,
                                           out_size=(args.pixel_size, args.pixel_size))
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as error:
        raise UserError(f"--env-kwargs is not JSON: {error}") from None
    if not isinstance(env_kwargs, dict):
        raise UserError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    if args.max_episode_steps is not None:
        env_kwargs["max_episode_steps"] = args.max_episode_steps
    summary = pretrain_vae(args.env, args.frames, args.out, pixel_size=args.pixel_size,
                           latent_dim=args.latent_dim, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, beta=args.beta, seed=args.seed, threads=args.threads,
                           preprocessing=preprocessing, env_kwargs=env_kwargs, force=args.force)
    if not args.json:
        print(f"trained on {summary['frames']} frames, {summary['steps']} steps: loss {summary['initial_loss']:.1f} -> "
              f"{summary['final_loss']:.1f}; wrote {summary['out']} and {summary['png']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        args = build_parser().parse_args(argv)
        summary = run(args)
    except UserError as error:
        print(f"rlcontrol: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlcontrol: interrupted; no output was written unless it is complete", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary))
    return 0
