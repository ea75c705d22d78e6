"""The `rlcontrol` command.

    rlcontrol train CONFIG.yaml [--set key=value ...] [--seed S] [--steps N] [--run-dir DIR] [--resume] [--json]
                    [--actors K] [--ray-address ADDR]
    rlcontrol eval RUN_DIR [--episodes N] [--video] [--json]
    rlcontrol export RUN_DIR --out policy.onnx [--camera-size HxW [--crop-top F ...]] [--json]
    rlcontrol inspect policy.onnx [--sha256 HEX] [--json]
    rlcontrol bench-policy policy.onnx [--calls N] [--run RUN_DIR] [--json]
    rlcontrol pretrain-vae --env ENV --frames N --out vae.safetensors [--json]
    rlcontrol deploy --policy policy.onnx --robot sim [--env ENV] [--episodes N] [--duration S] [--rate HZ]
                     [--real-time-factor X] [--record BAG] [--json]
    rlcontrol bag-to-replay BAG --out replay.safetensors [--policy policy.onnx] [--json]
    rlcontrol sysid BAG --config CFG.yaml --out params.yaml [--json]
    rlcontrol finetune RUN_DIR [--policy policy.onnx] [--robot sim|none] [--out DIR] [--duration S | --episodes N]
                       [--keep-best|--no-keep-best] [--rollback|--no-rollback] [--min-episodes N]
                       [--confidence C] [...] [--json]
    rlcontrol finetune RUN_DIR [--out DIR] --restore-best [--dry-run] [--json]

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


def _finite_float(accept, wording: str):
    """argparse type: a finite float that `accept`s, else "expected {wording}"."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (accept(value) and value < float("inf")):
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text}")
        return value

    return parse


_positive_float = _finite_float(lambda v: v > 0, "a positive number")
_non_negative_float = _finite_float(lambda v: v >= 0, "a number >= 0")


_non_negative_int = _int_at_least(0)


def _camera_size(text: str) -> tuple[int, int]:
    """argparse type: HEIGHTxWIDTH, e.g. 480x640."""
    from rlcontrol.deploy.export import parse_camera_size

    try:
        return parse_camera_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share(text: str) -> float:
    """argparse type: a share of a batch in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), got {text}")
    return value


def _fraction(text: str) -> float:
    """argparse type: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction of the frame in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction of the frame in [0, 1), got {text}")
    return value


def _json_object(text: str) -> dict:
    """argparse type: a JSON object such as '{"object_set": "test"}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _stand_in(text: str) -> dict | str:
    """argparse type: a stand-in JSON object, or a preset's name (e.g. lane-car) checked by the launcher."""
    if text.strip().startswith("{") or not text.replace("-", "").replace("_", "").isalnum():
        return _json_object(text)
    return text.strip()


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
    tr.add_argument("--actors", type=_positive_int, metavar="K",
                    help="actor workers on Ray, each with its own environment and exploration noise "
                         "(distributed.num_actors; 1: in process, no Ray)")
    tr.add_argument("--ray-address", metavar="ADDR",
                    help="join this Ray cluster (HOST:PORT, ray://HOST:PORT, or 'auto'; default: start a local one; "
                         "'local' forces a local one, also for one actor)")

    ev = sub.add_parser("eval", help="evaluate a trained run's deterministic policy")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=_positive_int, default=10)
    ev.add_argument("--video", action="store_true", help="also write RUN_DIR/eval_video.mp4")
    ev.add_argument("--seed", type=_non_negative_int, default=None, help="evaluation seed (default: the run's)")
    ev.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="export a run's policy to ONNX and check it against PyTorch")
    ex.add_argument("run_dir")
    ex.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    ex.add_argument("--parity-samples", type=_positive_int, default=1000,
                    help="random and recorded observations each for the parity check (default 1000)")
    ex.add_argument("--camera-size", type=_camera_size, metavar="HxW",
                    help="image inputs take the camera's uint8 (H, W, 3) RGB frames, e.g. 480x640; the graph crops "
                         "and resizes them to the training size (default: the training-size (C, H, W) input)")
    for edge in ("top", "bottom", "left", "right"):
        ex.add_argument(f"--crop-{edge}", type=_fraction, default=None, metavar="F",
                        help=f"with --camera-size, drop this fraction of the frame's {'height' if edge in ('top', 'bottom') else 'width'} "
                             f"at the {edge} before resizing (default 0)")
    ex.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="validate an exported policy and print its metadata")
    ins.add_argument("policy")
    ins.add_argument("--sha256", help="refuse the file unless its sha256 is this")
    ins.add_argument("--json", action="store_true")

    bp = sub.add_parser("bench-policy", help="single-observation latency: onnxruntime vs eager PyTorch")
    bp.add_argument("policy")
    bp.add_argument("--calls", type=_positive_int, default=10_000, help="timed calls per backend (default 10000)")
    bp.add_argument("--run", help="run folder for the eager PyTorch side (default: the one recorded at export)")
    bp.add_argument("--json", action="store_true")

    dp = sub.add_parser("deploy", help="run an exported policy through ROS 2 against the simulated robot")
    dp.add_argument("--policy", required=True, help="an exported policy.onnx")
    dp.add_argument("--robot", default="sim", help="'sim': the MuJoCo robot node (the only built-in robot)")
    dp.add_argument("--env", help="task for the simulated robot (default: the policy's training task)")
    dp.add_argument("--env-kwargs", type=_json_object, default=None,
                    help='task keywords for the simulated robot as a JSON object, e.g. \'{"object_set": "test"}\'')
    dp.add_argument("--episodes", type=_positive_int, default=None, help="stop after N episodes (default 2)")
    dp.add_argument("--duration", type=_positive_float, default=None, help="stop after S seconds")
    dp.add_argument("--rate", type=_positive_float, default=None, help="control rate in Hz (default: the policy's)")
    dp.add_argument("--real-time-factor", type=_positive_float, default=1.0,
                    help="simulated seconds per wall-clock second (default 1: real time)")
    dp.add_argument("--trigger", choices=("observation", "timer"), default="observation",
                    help="policy node ticks on each complete observation (default; what training did) or on a timer")
    dp.add_argument("--realtime-priority", type=_non_negative_int, default=0,
                    help="SCHED_FIFO priority for the control thread (needs permission; 0: off)")
    dp.add_argument("--record", help="write observations, commands, rewards and episodes to this rosbag2 (MCAP)")
    dp.add_argument("--record-topics", default="",
                    help="extra topics to record, comma-separated (e.g. /joint_states for rlcontrol sysid, /estop)")
    dp.add_argument("--stand-in", type=_stand_in, default=None,
                    help="hidden physics, latency, noise and task keywords (env_kwargs) of the simulated robot, as a "
                         "JSON object or a preset name (lane-car): a stand-in for a real robot the policy was not "
                         "trained on (docs/sim2real.md)")
    dp.add_argument("--seed", type=_non_negative_int, default=0)
    dp.add_argument("--json", action="store_true")

    fp = sub.add_parser("finetune", help="fine-tune a run live over ROS 2: the on-board learner (and with --robot sim "
                                         "the simulated stand-in robot and the policy node)")
    fp.add_argument("run_dir", help="the sim training run (config.yaml, checkpoints/) to fine-tune")
    fp.add_argument("--policy", help="the deployed policy.onnx (default: export the run's policy.pt into --out)")
    fp.add_argument("--out", help="exported policies, transition log, learner state, logs (default RUN_DIR/finetune)")
    fp.add_argument("--robot", default="sim", choices=("sim", "none"),
                    help="sim: also start the simulated robot and the policy node; none: the learner only")
    fp.add_argument("--stand-in", type=_stand_in, default=None,
                    help='the simulated robot\'s hidden physics, latency, noise and task keywords as a JSON object, '
                         'e.g. \'{"latency_steps": [2, 2], "physics": {"actuator_gain": [0.7, 0.7]}}\', or a preset '
                         'name (lane-car)')
    fp.add_argument("--episodes", type=_positive_int, default=None, help="stop after N episodes")
    fp.add_argument("--duration", type=_positive_float, default=None, help="stop after S seconds (default 300)")
    fp.add_argument("--real-time-factor", type=_positive_float, default=1.0, help="simulated robot speed (sim only)")
    fp.add_argument("--updates-per-transition", type=_positive_float, default=1.0)
    fp.add_argument("--learning-starts", type=_non_negative_int, default=500, help="transitions before the first update")
    fp.add_argument("--export-every", type=_positive_int, default=1000, help="updates between pushed policies")
    fp.add_argument("--lr-scale", type=_positive_float, default=1.0, help="learning rates times this while fine-tuning")
    fp.add_argument("--critic-warmup", type=_non_negative_int, default=0, help="first updates train the critic only")
    fp.add_argument("--sim-replay-ratio", type=_share, default=0.0,
                    help="share of each batch from the sim run's own replay (default 0: robot data only)")
    fp.add_argument("--policy-averaging", type=_share, default=0.005,
                    help="push a Polyak average of the actor, updated at this rate per update (default 0.005; "
                         "0: the actor itself)")
    fp.add_argument("--exploration-std", type=_non_negative_float, default=0.2,
                    help="with --robot sim: Gaussian noise on the policy node's commands, in normalized units "
                         "(a fraction of each action's half range), so the learner sees actions around the policy's "
                         "(default 0.2; 0: deterministic commands; with --robot none set the robot's policy node "
                         "parameter exploration_std)")
    fp.add_argument("--train-between-episodes", action="store_true",
                    help="as Learning to Drive in a Day: the learner does the updates each episode allows while the "
                         "robot waits before the next one (with --robot sim the simulated robot waits; a real robot's "
                         "launch reads /finetune/trained_through); without it the learner trains while the robot drives")
    fp.add_argument("--lockstep", action="store_true",
                    help="with --robot sim: the simulated robot steps only once the policy node answered its last "
                         "observation, so a loaded machine slows the robot instead of adding command latency (the "
                         "stand-in's latency alone; without it, late commands are counted per episode)")
    fp.add_argument("--fsync", choices=("every", "interval", "none"), default="interval",
                    help="transition log fsync policy (default interval: at most ~0.1 s lost to a power cut)")
    fp.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=False,
                    help="hold each new version until the running one has --min-episodes episodes, roll back, and "
                         "end the session on the best version by the rule (default off until the repeatability "
                         "measurements choose; docs/sim2real.md, Keeping the best version)")
    fp.add_argument("--rollback", action=argparse.BooleanOptionalAction, default=True,
                    help="with --keep-best: go back to the best version when the running one is clearly worse: its "
                         "upper confidence bound below the best's lower bound (default on)")
    fp.add_argument("--min-episodes", type=_int_at_least(2), default=3,
                    help="whole robot episodes (same exploration std, no e-stop) a version needs to be compared "
                         "(default 3)")
    fp.add_argument("--confidence", type=_finite_float(lambda v: 0.5 < v < 1.0, "a number between 0.5 and 1 "
                                                       "(exclusive)"), default=0.9,
                    help="one-sided confidence level of the Student-t bounds on each version's mean return (default 0.9)")
    fp.add_argument("--stop-on-plateau", action=argparse.BooleanOptionalAction, default=False,
                    help="end the session once the robot's returns plateau: the last --plateau-window episodes lie "
                         "within --plateau-tolerance x their gain over the first policy; the robot stays on the "
                         "version that drove the last of them (docs/sim2real.md, Stopping on a plateau)")
    fp.add_argument("--plateau-window", type=_int_at_least(2), default=10,
                    help="with --stop-on-plateau: recent episodes that must agree (default 10)")
    fp.add_argument("--plateau-tolerance", type=_finite_float(lambda v: 0.0 < v < 1.0, "a number between 0 and 1 "
                                                              "(exclusive)"), default=0.05,
                    help="with --stop-on-plateau: their spread as a share of their gain (default 0.05)")
    fp.add_argument("--restore-best", action="store_true",
                    help="instead of fine-tuning: push the best version by the rule over OUT's logs to the running "
                         "policy node (after the learner was killed)")
    fp.add_argument("--dry-run", action="store_true", help="with --restore-best: only print which version it would push")
    fp.add_argument("--seed", type=_non_negative_int, default=0)
    fp.add_argument("--json", action="store_true")

    from rlcontrol.vision import pretrain_cli

    pretrain_cli.add_arguments(sub.add_parser("pretrain-vae", help="pretrain a VAE image encoder on random-episode frames"))

    try:
        from ros_nodes import bag_tools
    except ImportError:  # ROS 2 extras not installed: the command is simply absent
        bag_tools = None
    if bag_tools is not None:
        bag_tools.add_parser(sub)

    sy = sub.add_parser("sysid", help="fit simulator parameters and latency to a recorded bag's joint trajectories")
    sy.add_argument("bag", help="rosbag2 folder (or .mcap file) with /robot/applied_command and /joint_states")
    sy.add_argument("--config", required=True, help="configs/sysid_<task>.yaml: task, parameter bounds, latency candidates")
    sy.add_argument("--out", required=True, help="params.yaml to write (atomically): fit, errors, randomization snippet")
    sy.add_argument("--json", action="store_true")
    return parser


def cmd_train(args) -> dict:
    from rlcontrol.config import load_config
    from rlcontrol.training.loop import train

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.steps is not None:
        overrides.append(f"train.total_env_steps={args.steps}")
    if args.actors is not None:
        overrides.append(f"distributed.num_actors={args.actors}")
    config = load_config(args.config, overrides)
    if args.ray_address is not None:
        if not args.ray_address.strip():
            raise UserError("--ray-address: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
        # Set after YAML parsing: an address is a plain string (YAML would read some as numbers).
        config.distributed.ray_address = args.ray_address.strip()
    run_dir = Path(args.run_dir or Path("runs") / f"{Path(args.config).stem}-seed{config.seed}")
    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    if not args.json:
        actors = ""
        if "transitions_per_actor" in summary:
            actors = f" with {summary['num_actors']} actors ({summary['restarts']} restarts)"
        print(f"trained {summary['env_steps']} env steps{actors} at {summary['env_steps_per_s']:.0f} steps/s; "
              f"eval return {summary['eval_return']:.1f}; run folder {summary['run_dir']}")
    return summary


def cmd_eval(args) -> dict:
    from rlcontrol.training.evaluate_run import evaluate_run

    summary = evaluate_run(args.run_dir, episodes=args.episodes, video=args.video, seed=args.seed)
    if not args.json:
        print(f"mean return {summary['mean_return']:.1f} +- {summary['std_return']:.1f} over {summary['episodes']} episodes")
    return summary


def cmd_export(args) -> dict:
    from rlcontrol.deploy.export import export_run

    summary = export_run(args.run_dir, args.out, parity_samples=args.parity_samples, camera=_camera_input(args))
    if not args.json:
        p = summary["parity"]
        print(f"wrote {summary['out']} ({summary['bytes'] / 1024:.0f} KiB, sha256 {summary['sha256']})")
        if "camera" in summary:
            c = summary["camera"]
            crops = ", ".join(f"{k} {v:g}" for k, v in c["crop"].items() if v) or "none"
            nets = ", ".join(f"{n} -> {tuple(s)}" for n, s in c["network_inputs"].items())
            print(f"camera input: uint8 (N, {c['size'][0]}, {c['size'][1]}, 3) RGB (HWC); in the graph: crop ({crops}), "
                  f"INTER_AREA resize: {nets}")
        print(f"parity vs PyTorch: max |diff| {p['max_abs_diff_random']:.1e} on {p['samples_per_set']} random and "
              f"{p['max_abs_diff_recorded']:.1e} on {p['samples_per_set']} recorded observations "
              f"(tolerance {p['tolerance']:.0e})")
    return summary


def _camera_input(args):
    from rlcontrol.deploy.export import CROP_EDGES, CameraInput

    crops = {f"crop_{e}": getattr(args, f"crop_{e}") for e in CROP_EDGES if getattr(args, f"crop_{e}") is not None}
    if args.camera_size is None:
        if crops:
            raise UserError(f"--{next(iter(crops)).replace('_', '-')} needs --camera-size (it crops the camera frame)")
        return None
    return CameraInput(args.camera_size, **crops)


def cmd_inspect(args) -> dict:
    from rlcontrol.deploy import runtime

    info = runtime.load(args.policy, expected_sha256=args.sha256, warmup=1).describe()
    if not args.json:
        obs = ", ".join(_describe_input(o) for o in info["observations"])
        acts = ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, lo, hi in zip(info["action_names"], info["action_low"], info["action_high"]))
        lines = [("file", info["path"]), ("sha256", info["sha256"]), ("provider", info["provider"]),
                 ("algorithm", info["algorithm"]), ("env", info["env_id"]), ("observations", obs), ("actions", acts),
                 ("control period", f"{info['control_period']:g} s"), ("normalization", info["obs_normalization"]),
                 ("config sha256", info["config_sha256"]), ("checkpoint sha256", info["checkpoint_sha256"]),
                 ("toolkit version", info["version"]), *sorted(info["extra"].items())]
        for key, value in lines:
            print(f"{key + ':':<19}{value}")
    return info


def _describe_input(o: dict) -> str:
    text = f"{o['name']}{tuple(o['shape'])} {o['dtype']} history {o['history']}"
    if o.get("layout") == "HWC":
        prep = o["preprocessing"]
        crops = ", ".join(f"{e} {prep[f'crop_{e}']:g}" for e in ("top", "bottom", "left", "right") if prep[f"crop_{e}"])
        channels = 1 if prep["grayscale"] else 3
        text += (f" HWC camera frame -> crop ({crops or 'none'}){', grayscale' if prep['grayscale'] else ''}, "
                 f"resize to ({channels}, {prep['out_size'][0]}, {prep['out_size'][1]}) in the graph")
    elif o.get("layout") == "CHW":
        text += " CHW"
    return text


def cmd_bench_policy(args) -> dict:
    from rlcontrol.deploy.bench import bench_policy

    result = bench_policy(args.policy, calls=args.calls, run_dir=args.run)
    if not args.json:
        for name in ("onnxruntime", "torch_eager"):
            if name in result:
                r = result[name]
                print(f"{name:<12} p50 {r['p50_us']:7.1f} us  p99 {r['p99_us']:7.1f} us  max {r['max_us']:8.1f} us "
                      f"({r['calls']} calls)")
        if "speedup_p50" in result:
            print(f"onnxruntime is {result['speedup_p50']:.1f}x faster at p50, {result['speedup_p99']:.1f}x at p99 "
                  f"({result['provider']}, 1 thread)")
        else:
            print(result["note"])
    return result


def cmd_deploy(args) -> dict:
    try:
        from ros_nodes.launch import deploy
    except ImportError as exc:
        from rlcontrol.errors import UserError as _UserError

        raise _UserError(f"ROS 2 is not installed ({exc.name}); run scripts/setup.sh ros") from None
    episodes = args.episodes if args.episodes or args.duration else 2
    summary = deploy(args.policy, env_id=args.env, env_kwargs=args.env_kwargs, robot=args.robot, duration=args.duration, episodes=episodes,
                     rate_hz=args.rate, real_time_factor=args.real_time_factor, record=args.record, seed=args.seed,
                     trigger=args.trigger, realtime_priority=args.realtime_priority, stand_in=args.stand_in,
                     record_topics=tuple(t.strip() for t in args.record_topics.split(",") if t.strip()))
    if not args.json:
        d = summary["diagnostics"]
        returns = ", ".join(f"{r:.1f}" for r in summary["returns"])
        print(f"deployed through ROS 2: {summary['episodes']} episodes on {summary['env_id']}, returns [{returns}]")
        if d:
            print(f"policy node: observation-to-command latency p50 {d.get('obs_to_command_p50_ms', 0):.2f} ms, "
                  f"p99 {d.get('obs_to_command_p99_ms', 0):.2f} ms over {d.get('obs_to_command_count', 0)} observations; "
                  f"tick compute p99 {d.get('latency_p99_ms', 0):.2f} ms; watchdog trips {d.get('stale_trips', 0)}, "
                  f"non-finite {d.get('nonfinite_obs', 0) + d.get('nonfinite_action', 0)}")
    return summary


def cmd_finetune(args) -> dict:
    if args.dry_run and not args.restore_best:
        raise UserError("--dry-run goes with --restore-best")
    try:
        from ros_nodes.finetune_launch import finetune, restore_best
    except ImportError as exc:
        raise UserError(f"ROS 2 is not installed ({exc.name}); run scripts/setup.sh ros") from None
    if args.restore_best:
        return _restore_best(args, restore_best)
    duration = args.duration if args.duration or args.episodes else 300.0
    summary = finetune(args.run_dir, policy=args.policy, out=args.out, robot=args.robot, stand_in=args.stand_in,
                       duration=duration, episodes=args.episodes, real_time_factor=args.real_time_factor,
                       seed=args.seed, updates_per_transition=args.updates_per_transition,
                       learning_starts=args.learning_starts, export_every=args.export_every, lr_scale=args.lr_scale,
                       critic_warmup=args.critic_warmup, sim_replay_ratio=args.sim_replay_ratio,
                       policy_averaging=args.policy_averaging,
                       fsync=args.fsync, exploration_std=args.exploration_std, keep_best=args.keep_best,
                       rollback=args.rollback, min_episodes=args.min_episodes, confidence=args.confidence,
                       stop_on_plateau=args.stop_on_plateau, plateau_window=args.plateau_window,
                       plateau_tolerance=args.plateau_tolerance, train_between_episodes=args.train_between_episodes,
                       lockstep=args.lockstep, quiet=args.json)
    if not args.json:
        p, learner = summary["policy_status"], summary["learner_status"].get("learner", {})
        first, last = summary["first_mean"], summary["last_mean"]
        trend = f", mean return first 3 {first:.1f} -> last 3 {last:.1f}" if first is not None else ""
        print(f"fine-tuned {summary['run_dir']} for {summary['wall_s']:.0f} s: {len(summary['episodes'])} episodes"
              f"{trend}; learner at v{learner.get('version')} after {learner.get('updates')} updates on "
              f"{learner.get('transitions')} transitions; policy node runs v{p.get('version')} "
              f"({p.get('accepted', 0)} accepted, {p.get('refused', 0)} refused)")
        _print_versions(summary.get("versions") or [], args.confidence)
    return summary


def _print_versions(table: list[dict], confidence: float) -> None:
    from sim2real.version_selection import format_table

    if table:
        print("versions (episodes under the compared exploration std):")
        print("\n".join(format_table(table, confidence)))


def _restore_best(args, restore_best) -> dict:
    out = args.out or str(Path(args.run_dir) / "finetune")
    result = restore_best(out, min_episodes=args.min_episodes, confidence=args.confidence, dry_run=args.dry_run)
    if not args.json:
        if result["dry_run"]:
            print(f"best version by the rule: v{result['best_version']} ({result['path']}): {result['reason']}")
        elif result["pushed_version"] is None:
            print(f"nothing pushed: {result['reason']}")
        else:
            print(f"the policy node runs v{result['best_version']}'s weights again as v{result['pushed_version']}: "
                  f"{result['reason']}")
        _print_versions(result["table"], args.confidence)
    return result


def cmd_bag_to_replay(args) -> dict:
    from ros_nodes import bag_tools

    return bag_tools.run(args)  # prints its own one-line summary unless --json


def cmd_pretrain_vae(args) -> dict:
    from rlcontrol.vision import pretrain_cli

    return pretrain_cli.run(args)


def cmd_sysid(args) -> dict:
    try:
        import rosbags  # noqa: F401 - the bag reader
    except ImportError as exc:
        raise UserError(f"reading bags needs rosbags ({exc.name}); run scripts/setup.sh ros") from None
    from ros_nodes.joint_recording import read_recording
    from sim2real.sysid import load_config, run_sysid, summary_line

    config = load_config(args.config)  # its errors first: a bad config needs no bag read
    summary = run_sysid(read_recording(args.bag), config, args.out, source=args.bag)
    if not args.json:
        print(f"{summary_line(summary)}; wrote {summary['out']}")
    return summary


COMMANDS = {"pretrain-vae": cmd_pretrain_vae, "train": cmd_train, "eval": cmd_eval, "export": cmd_export, "inspect": cmd_inspect,
            "bench-policy": cmd_bench_policy, "deploy": cmd_deploy, "bag-to-replay": cmd_bag_to_replay,
            "finetune": cmd_finetune}

COMMANDS["sysid"] = cmd_sysid


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
