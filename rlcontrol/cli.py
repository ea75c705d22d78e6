"""The `rlcontrol` command.

    rlcontrol train CONFIG.yaml [--set key=value ...] [--seed S] [--steps N] [--run-dir DIR] [--resume] [--json]
    rlcontrol eval RUN_DIR [--episodes N] [--video] [--json]

Bad input (a config, a flag, a file) prints one line `rlcontrol: error: ...` on stderr and
exits with code 2; with --json the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlcontrol import __version__
from rlcontrol.errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints usage too)
        raise UserError(message)


def _int_at_least(minimum: int):
    """argparse type: a whole number >= minimum, with a one-line message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlcontrol", description="Continuous-control RL for robots.")
    parser.add_argument("--version", action="version", version=f"rlcontrol {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tr = sub.add_parser("train", help="train an agent from a YAML config")
    tr.add_argument("config", help="configs/<algo>_<task>.yaml")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set agent.actor_lr=1e-3 (repeatable)")
    tr.add_argument("--seed", type=_non_negative_int, help="random seed (overrides the config's)")
    tr.add_argument("--steps", type=_positive_int, help="environment steps to train (train.total_env_steps)")
    tr.add_argument("--run-dir", help="output folder (default: runs/<config name>-seed<S>)")
    tr.add_argument("--resume", action="store_true", help="continue from the run folder's last complete checkpoint")
    tr.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="evaluate a trained run's deterministic policy")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=_positive_int, default=10)
    ev.add_argument("--video", action="store_true", help="also write RUN_DIR/eval_video.mp4")
    ev.add_argument("--seed", type=_non_negative_int, default=None, help="evaluation seed (default: the run's)")
    ev.add_argument("--json", action="store_true")
    return parser


def cmd_train(args) -> dict:
    from rlcontrol.config import load_config
    from rlcontrol.training.loop import train

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.steps is not None:
        overrides.append(f"train.total_env_steps={args.steps}")
    config = load_config(args.config, overrides)
    run_dir = Path(args.run_dir or Path("runs") / f"{Path(args.config).stem}-seed{config.seed}")
    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    if not args.json:
        print(f"trained {summary['env_steps']} env steps at {summary['env_steps_per_s']:.0f} steps/s; "
              f"eval return {summary['eval_return']:.1f}; run folder {summary['run_dir']}")
    return summary


def cmd_eval(args) -> dict:
    from rlcontrol.training.evaluate_run import evaluate_run

    summary = evaluate_run(args.run_dir, episodes=args.episodes, video=args.video, seed=args.seed)
    if not args.json:
        print(f"mean return {summary['mean_return']:.1f} +- {summary['std_return']:.1f} over {summary['episodes']} episodes")
    return summary


COMMANDS = {"train": cmd_train, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        args = build_parser().parse_args(argv)
        result = COMMANDS[args.command](args)
    except UserError as exc:
        print(f"rlcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlcontrol: interrupted; the last complete checkpoint is kept (continue with --resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if getattr(args, "json", False):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
