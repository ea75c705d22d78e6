"""Learning to Drive in a Day, live over ROS 2, on a car the policy never saw (issue 20, item 4).

    # (a) a domain-randomized sim camera policy, fine-tuned live on the stand-in car
    python -m benchmarks.lane_live finetune --out runs/live [--sim-steps 30000] [--finetune-s 225] [--rtf 4]
        [--updates-per-transition 1] [--train-between-episodes] [--name lane_live_finetune]
    # (b) from scratch, as the paper did: a VAE pretrained only on the stand-in's random-action frames,
    #     then live DDPG + prioritized replay; episodes and robot minutes until the route is first driven
    python -m benchmarks.lane_live scratch --out runs/live [--episodes 40] [--rtf 2] [--seed 0]
        [--updates-per-transition 8] [--no-train-between-episodes] [--sessions 1]
    # each VAE's reconstruction error on the training cameras' frames and on the stand-in's
    python -m benchmarks.lane_live encoders --out runs/live [--frames 1000]

The stand-in is the `lane-car` preset (sim2real/stand_in.py, docs/sim2real.md "A stand-in car for lane
following"): the camera 0.3 m lower and 6 degrees further down, the wheels 0.05 rad off the command,
commands two steps late and roads that look like no training road, applied by the simulated robot
node alone. Both arms go through `rlcontrol finetune --robot sim`: the robot publishes its camera as
sensor_msgs/Image, the policy node drives, the fine-tuning node learns from each frame once and pushes
camera-in, command-out versions. Robot time = transitions the learner took x the 0.1 s control period.

(a) Steps, each reused when its output exists in --out (so an interrupted run continues):
    vae       a VAE on 20,000 random-action frames of the training cameras (configs/
              ddpg_lane_following_vae_dr.yaml's camera ranges, the training looks)
    sim       DDPG + PER on that config (camera pose, steering offset and latency randomized inside
              ranges that exclude the stand-in's), --sim-steps env steps (resumed with --resume)
    evaluate  the sim policy's deterministic returns on EVAL_SEEDS in its own randomized simulator
              and on the stand-in: the gap
    finetune  `rlcontrol finetune` on the stand-in for --finetune-s wall seconds at --rtf
    versions  every exported version on the stand-in: the share of the gap closed over robot minutes
(b) Steps: vae (frames of the stand-in's camera: the random-action drive a user would record on the
    car), run (an untrained agent with that encoder, its config otherwise configs/
    ddpg_lane_following_vae.yaml), live (`rlcontrol finetune --episodes N --train-between-episodes`: the
    robot waits after each episode while the learner does the updates it allows, the paper's
    protocol; --no-train-between-episodes learns while the robot drives). Reported: the first
    episode that drives the whole 250 m route (with the exploration noise, the paper's criterion),
    its robot minutes, and the takeovers: episodes the car ended by leaving its lane, where the
    paper's safety driver took over (the task ends the episode there itself).

Results: benchmarks/results/lane_live_{finetune,scratch}.json and docs/figures/lane_live_*.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import git_commit
from benchmarks.sim2real_finetune import (
    CONTROL_LOOP_KEYS,
    EVAL_SEEDS,
    _sha256,
    curve_summary,
    export_times,
    gap_share,
    rlcontrol,
    select_versions,
    version_files,
)

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "rlc:lane-following"
STAND_IN = "lane-car"
ROUTE = 250.0
PERIOD_S = 0.1
DR_CONFIG = "configs/ddpg_lane_following_vae_dr.yaml"
SCRATCH_CONFIG = "configs/ddpg_lane_following_vae.yaml"
# The training cameras, as the DR config draws them (the steering offset and latency do not show in a frame).
DR_FRAMES = {"camera_height": [1.25, 1.55], "camera_pitch": [9.0, 15.0], "appearance_family": "training"}


def stand_in():
    from sim2real.stand_in import StandIn

    return StandIn.from_dict(STAND_IN)


def pretrain(out: Path, env_kwargs: dict, frames: int, epochs: int) -> Path:
    if not out.exists():
        rlcontrol("pretrain-vae", "--env", ENV_ID, "--frames", frames, "--epochs", epochs, "--out", out,
                  "--pixel-size", 64, "--threads", 1, "--env-kwargs", json.dumps(env_kwargs), timeout=4 * 3600)
    return out


# ---------------------------------------------------------------------- evaluation in process
def drive(policy_path: Path, env) -> dict:
    """Deterministic episodes on EVAL_SEEDS: returns (m along the lane) and routes completed."""
    from rlcontrol.deploy import runtime
    from rlcontrol.deploy.rollout import episode_returns

    returns = episode_returns(runtime.load(policy_path), env, EVAL_SEEDS)
    return {"returns": returns, "mean": float(np.mean(returns)),
            "completed": sum(r >= ROUTE - 1e-6 for r in returns)}


def sim_env(run_dir: Path):
    """The sim policy's own simulator: its config's task with its randomization, as evaluation sees it."""
    from rlcontrol.config import load_config
    from rlcontrol.training import builders

    return builders.make_env(load_config(run_dir / "config.yaml").env, 7, evaluation=True)


def stand_in_env():
    import envs
    from sim2real.randomization import RandomizedEnv

    hidden = stand_in()
    env = envs.make(ENV_ID, seed=7, pixels=True, pixel_size=64, include_state=True, obs_format="dict",
                    **hidden.env_kwargs)
    return RandomizedEnv(env, hidden.randomization, seed=7)


def evaluate(path: Path, env_factory, cache: dict, key: str, cache_path: Path) -> dict:
    digest = _sha256(path)
    entry = cache.get(key)
    if not entry or entry.get("sha256") != digest or entry.get("eval_seeds") != EVAL_SEEDS:
        env = env_factory()
        try:
            entry = {"sha256": digest, "eval_seeds": EVAL_SEEDS, **drive(path, env)}
        finally:
            env.close()
        cache[key] = entry
        cache_path.write_text(json.dumps(cache, indent=1))
    return entry


# ---------------------------------------------------------------------- (a) fine-tuning a DR policy
def finetune_arm(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = pretrain(out / "vae_lane_dr.safetensors", DR_FRAMES, 20000, args.vae_epochs)
    sim = out / "sim"
    if not (sim / "summary.json").exists():
        resume = ["--resume"] if (sim / "checkpoints").is_dir() else []
        rlcontrol("train", DR_CONFIG, "--run-dir", sim, "--steps", args.sim_steps, "--no-progress",
                  "--set", f"agent.encoders.pixels.vae_path={vae}", *resume, timeout=12 * 3600)
    policy = out / "sim_policy.onnx"
    if not policy.exists():
        rlcontrol("export", sim, "--out", policy)
    cache_path = out / "lane_evals.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    in_sim = evaluate(policy, lambda: sim_env(sim), cache, "sim_policy_in_sim", cache_path)
    on_stand_in = evaluate(policy, stand_in_env, cache, "sim_policy_on_stand_in", cache_path)
    print(f"sim policy: {in_sim['mean']:.1f} in its simulator, {on_stand_in['mean']:.1f} on the stand-in", flush=True)
    baseline_path = out / "control_loop_baseline.json"
    if not baseline_path.exists():  # the policy node alone on the stand-in: its latency without a learner
        deployed = rlcontrol("deploy", "--policy", policy, "--robot", "sim", "--duration", 60, "--real-time-factor",
                             args.rtf, "--stand-in", STAND_IN, timeout=600)
        baseline_path.write_text(json.dumps({"seconds": 60, "real_time_factor": args.rtf,
                                             **{k: deployed.get("diagnostics", {}).get(k) for k in CONTROL_LOOP_KEYS}},
                                            indent=1))
    baseline = json.loads(baseline_path.read_text())
    name = args.name or "lane_live_finetune"
    session_dir = out / name.removeprefix("lane_live_")  # "finetune" for the default name
    session_path = session_dir.with_suffix(".json")
    if not session_path.exists():
        between = ["--train-between-episodes"] if args.train_between_episodes else []
        session = rlcontrol("finetune", sim, "--out", session_dir, "--stand-in", STAND_IN, "--duration",
                            args.finetune_s, "--real-time-factor", args.rtf, "--learning-starts", args.learning_starts,
                            "--export-every", args.export_every, "--updates-per-transition",
                            args.updates_per_transition, *between, timeout=args.finetune_s + 1800)
        session_path.write_text(json.dumps(session, indent=1))
    session = json.loads(session_path.read_text())
    times = export_times(session_dir, PERIOD_S)
    files = version_files(session_dir)
    curve = [{"version": 0, "robot_s": 0.0, "mean": on_stand_in["mean"], "completed": on_stand_in["completed"],
              "gap_closed": 0.0}]
    for version in select_versions(list(files), args.eval_every_version):
        if version not in times:
            continue
        key = f"v{version:04d}" if session_dir.name == "finetune" else f"{session_dir.name}/v{version:04d}"
        entry = evaluate(files[version], stand_in_env, cache, key, cache_path)
        curve.append({"version": version, **times[version], "mean": entry["mean"], "completed": entry["completed"],
                      "gap_closed": gap_share(entry["mean"], on_stand_in["mean"], in_sim["mean"])})
        print(f"v{version}: robot {times[version]['robot_s'] / 60:.1f} min, {entry['mean']:.1f} on the stand-in "
              f"({curve[-1]['gap_closed']})", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "stand_in": stand_in().to_dict(),
              "sim_steps": args.sim_steps, "real_time_factor": args.rtf, "finetune_s": args.finetune_s,
              "train_between_episodes": args.train_between_episodes,
              "updates_per_transition": args.updates_per_transition,
              "eval_seeds": EVAL_SEEDS, "sim_policy": {"in_sim": in_sim, "on_stand_in": on_stand_in},
              "gap": in_sim["mean"] - on_stand_in["mean"], "curve": curve, "summary": curve_summary(curve),
              "control_loop_without_learner": baseline,
              "session": {k: session.get(k) for k in ("wall_s", "stopped_by", "policy_status", "control_loop",
                                                      "exit_codes")},
              "learner": {k: session.get("learner_status", {}).get(k) for k in ("logged", "bad_images",
                                                                               "append_failures", "learner")}}
    write(result, name)
    plot_finetune(result, ROOT / "docs" / "figures" / f"{name}.png")
    return result


# ---------------------------------------------------------------------- (b) from scratch, live
def untrained_run(run_dir: Path, vae: Path, seed: int) -> Path:
    """A run folder `rlcontrol finetune` can start from: the config, an untrained agent, its checkpoint."""
    import yaml

    from rlcontrol.training.untrained import write_untrained_run

    if (run_dir / "checkpoints").is_dir():
        return run_dir
    data = yaml.safe_load((ROOT / SCRATCH_CONFIG).read_text())
    data["seed"] = seed
    data["agent"]["encoders"]["pixels"]["vae_path"] = str(vae.resolve())
    return write_untrained_run(data, run_dir)


def scratch_arm(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = pretrain(out / "vae_lane_standin.safetensors", stand_in().env_kwargs, 20000, args.vae_epochs)
    run = untrained_run(out / f"scratch-run-s{args.seed}", vae, args.seed)
    name = args.name or (f"lane_live_scratch_between_s{args.seed}" if args.train_between_episodes
                         else f"lane_live_scratch_s{args.seed}")
    session_dir = out / name.removeprefix("lane_live_")
    sessions = []
    # Session k > 1 continues the same learner (resumed from its last export and the log) on new
    # roads (the robot's seed + k - 1): one long drive, cut where the robot process restarted.
    for k in range(1, args.sessions + 1):
        session_path = session_dir.with_name(session_dir.name + ("" if k == 1 else f"-{k}")).with_suffix(".json")
        if not session_path.exists():
            between = ["--train-between-episodes"] if args.train_between_episodes else []
            # the robot starts where the last session left it (else on policy-v0000, the untrained one)
            policy = ["--policy", sessions[-1]["policy_status"]["path"]] if sessions else []
            session = rlcontrol("finetune", run, "--out", session_dir, *policy, "--stand-in", STAND_IN,
                                "--episodes", args.episodes, "--duration", args.max_s, "--real-time-factor", args.rtf,
                                "--learning-starts", args.learning_starts, "--export-every", args.export_every,
                                "--updates-per-transition", args.updates_per_transition, *between,
                                "--exploration-std", args.exploration_std, "--seed", args.seed + k - 1,
                                timeout=args.max_s + 1800)
            session_path.write_text(json.dumps(session, indent=1))
        sessions.append(json.loads(session_path.read_text()))
    episodes = [e for session in sessions for e in session["episodes"]]
    learner = sessions[-1].get("learner_status", {}).get("learner", {})
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "seed": args.seed,
              "stand_in": stand_in().to_dict(), "real_time_factor": args.rtf,
              "train_between_episodes": args.train_between_episodes,
              "updates_per_transition": args.updates_per_transition, "learning_starts": args.learning_starts,
              "exploration_std": args.exploration_std, "sessions": len(sessions),
              "learner": {k: learner.get(k) for k in ("updates", "transitions", "version")},
              "waited_s": round(sum(e.get("waited_s") or 0.0 for e in episodes), 1),
              "late_commands": sum(e.get("late_commands") or 0 for e in episodes),
              **route_summary(episodes),
              "session": [{k: session.get(k) for k in ("wall_s", "stopped_by", "policy_status", "control_loop",
                                                       "exit_codes")} for session in sessions]}
    write(result, name)
    return result


def route_summary(episodes: list[dict]) -> dict:
    """The live episodes, in order: the first to drive the whole route (1-based, with the robot minutes
    of every episode up to and including it), and the takeovers: episodes ended by leaving the lane."""
    robot_s, first, takeovers, before_first = 0.0, None, 0, 0
    for i, episode in enumerate(episodes, 1):
        robot_s += (episode.get("steps") or 0) * PERIOD_S
        completed = episode["return"] >= ROUTE - 1e-6
        if first is None and completed:
            first = {"episode": i, "robot_min": round(robot_s / 60, 3), "version": episode.get("policy_version")}
        if episode.get("terminated") and not completed:
            takeovers += 1
            before_first += int(first is None)
    return {"episodes": len(episodes), "first_route": first, "takeovers": takeovers,
            "takeovers_before_first_route": before_first,
            "routes_completed": sum(e["return"] >= ROUTE - 1e-6 for e in episodes),
            "returns": [round(e["return"], 2) for e in episodes], "robot_min": round(robot_s / 60, 3)}


# ---------------------------------------------------------------------- the encoders' view of the stand-in
def encoders_check(args) -> dict:
    """Per-pixel reconstruction error (MSE, frames in [0, 1]) of each VAE on random-action frames of
    the training cameras and of the stand-in's: how far outside an encoder's data the other camera is."""
    import torch

    from rlcontrol.vision.pretrain import collect_frames
    from rlcontrol.vision.vae import load_vae

    out = Path(args.out)
    cameras = {"training cameras": DR_FRAMES, "stand-in camera": stand_in().env_kwargs}
    frames = {name: collect_frames(ENV_ID, args.frames, seed=11, pixel_size=64, env_kwargs=kwargs)
              for name, kwargs in cameras.items()}
    table = {}
    for vae_name, path in (("VAE of the training cameras", out / "vae_lane_dr.safetensors"),
                           ("VAE of the stand-in's frames", out / "vae_lane_standin.safetensors")):
        model, _ = load_vae(path)
        with torch.no_grad():
            table[vae_name] = {name: float(((model.reconstruct(torch.as_tensor(f)) -
                                             torch.as_tensor(f).float() / 255.0) ** 2).mean())
                               for name, f in frames.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "frames": args.frames,
              "reconstruction_mse": table}
    write(result, "lane_live_encoders")
    return result


# ---------------------------------------------------------------------- output
def write(result: dict, name: str) -> None:
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in result if k not in ("curve", "returns", "session")}, indent=1))


def plot_finetune(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p["robot_s"] / 60 for p in curve], [p["mean"] for p in curve], "o-", label="fine-tuned versions")
    ax.axhline(result["sim_policy"]["in_sim"]["mean"], ls="--", c="g", label="sim policy in its simulator")
    ax.axhline(result["sim_policy"]["on_stand_in"]["mean"], ls=":", c="r", label="sim policy on the stand-in")
    ax.set_xlabel("robot minutes")
    ax.set_ylabel(f"m along the lane ({len(EVAL_SEEDS)} episodes)")
    ax.set_title("lane-car stand-in: live fine-tuning of a camera policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="arm", required=True)
    a = sub.add_parser("finetune")
    a.add_argument("--sim-steps", type=int, default=30000)
    a.add_argument("--finetune-s", type=float, default=225.0)  # 15 robot minutes at rtf 4
    a.add_argument("--learning-starts", type=int, default=500)
    a.add_argument("--export-every", type=int, default=250)
    a.add_argument("--eval-every-version", type=int, default=1)
    a.add_argument("--updates-per-transition", type=float, default=1.0)
    a.add_argument("--train-between-episodes", action=argparse.BooleanOptionalAction, default=False)
    c = sub.add_parser("encoders", help="each VAE's reconstruction error on training and stand-in frames")
    c.add_argument("--frames", type=int, default=1000)
    b = sub.add_parser("scratch")
    b.add_argument("--episodes", type=int, default=40)
    b.add_argument("--max-s", type=float, default=1800.0)
    b.add_argument("--learning-starts", type=int, default=100)
    b.add_argument("--export-every", type=int, default=1000)
    b.add_argument("--updates-per-transition", type=float, default=8.0)
    b.add_argument("--train-between-episodes", action=argparse.BooleanOptionalAction, default=True)
    b.add_argument("--exploration-std", type=float, default=0.2)
    b.add_argument("--sessions", type=int, default=1, help="sessions of --episodes each, the learner resumed")
    b.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="runs/live")
    for p in (a, b):
        p.add_argument("--out", default="runs/live")
        p.add_argument("--rtf", type=float, default=4.0 if p is a else 2.0)
        p.add_argument("--vae-epochs", type=int, default=12)
        p.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    {"finetune": finetune_arm, "scratch": scratch_arm, "encoders": encoders_check}[args.arm](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
