"""The sim2real demonstration: a policy trained in simulation meets a "real robot" stand-in it was
not trained on, and four ways of dealing with the gap are measured on the same stand-in episodes.

    python -m benchmarks.sim2real_finetune [--out runs/sim2real] [--finetune-s 240] [--rtf 4]

The stand-in is the simulated robot node (ros_nodes/sim_robot.py) with hidden physics: a motor 5x
weaker (actuator_gain 0.2) and a cart and pole twice as heavy (mass 2.0) as the model, on
dmc:cartpole-balance. Steps (each reuses its result if it is already in --out):

1. sim:      TD3 trained on the nominal simulator (configs/td3_cartpole_balance.yaml, 120k env steps)
2. dr:       TD3 trained with domain randomization (configs/td3_cartpole_balance_dr.yaml)
3. sysid:    the sim policy deployed on the stand-in over ROS 2 and recorded (rosbag2, with
             /joint_states); `rlcontrol sysid` fits the motor's effective gain and the latency to
             the recording (configs/sysid_cartpole_balance.yaml: a heavier cart is the same motion
             as a weaker motor); TD3 trained on the fitted simulator
4. finetune: `rlcontrol finetune` on the stand-in over ROS 2 for --finetune-s seconds, starting
             from the sim policy; the last policy the policy node accepted is evaluated

Every policy is evaluated deterministically in process on the same stand-in episodes (seeds), and
the sim policy also on the nominal simulator. Results: benchmarks/results/sim2real_finetune.json and
docs/figures/sim2real_finetune.png (returns per method, and the fine-tuning curve).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV_ID, ACTION_REPEAT = "dmc:cartpole-balance", 4
STAND_IN = {"physics": {"actuator_gain": [0.2, 0.2], "mass": [2.0, 2.0]}}
EVAL_SEEDS = [1000 + i for i in range(10)]


def rlcontrol(*args, timeout: float = 3600) -> dict:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-m", "rlcontrol.cli", *map(str, args), "--json"], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"rlcontrol {' '.join(map(str, args[:2]))} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train(config: str | Path, run_dir: Path, *extra) -> Path:
    if not (run_dir / "summary.json").exists():
        rlcontrol("train", config, "--run-dir", run_dir, "--no-progress", *extra)
    return run_dir


def stand_in_env(seed: int, stand_in: dict | None):
    import envs
    from sim2real.randomization import DomainRandomization, RandomizedEnv

    env = envs.make(ENV_ID, seed=seed, action_repeat=ACTION_REPEAT)
    return RandomizedEnv(env, DomainRandomization.from_dict(stand_in), seed=seed) if stand_in else env


def returns(act, stand_in: dict | None) -> list[float]:
    """Deterministic episodes of `act` (normalized obs -> normalized action) on the stand-in."""
    from rlcontrol.training.evaluate import run_episode

    env = stand_in_env(7, stand_in)
    out = [float(run_episode(env, act, seed)) for seed in EVAL_SEEDS]
    env.close()
    return out


def run_policy(run_dir: Path):
    from rlcontrol.training.evaluate_run import load_policy_agent

    _, env, agent = load_policy_agent(run_dir)
    env.close()
    return lambda obs: agent.act(obs, explore=False)


def onnx_policy(path: Path):
    from envs.core import unscale_action
    from rlcontrol.deploy import runtime

    policy = runtime.load(path)
    low, high = np.asarray(policy.metadata.action_low), np.asarray(policy.metadata.action_high)
    return lambda obs: unscale_action(policy.act(np.asarray(obs, np.float32)).copy(), low, high)


def sysid_run(out: Path, sim_run: Path) -> tuple[Path, dict]:
    """Record the sim policy on the stand-in, fit the simulator, train on the fitted simulator."""
    import yaml

    policy = out / "sim_policy.onnx"
    if not policy.exists():
        rlcontrol("export", sim_run, "--out", policy)
    bag = out / "standin_bag"
    if not bag.exists():
        rlcontrol("deploy", "--policy", policy, "--robot", "sim", "--episodes", 4, "--real-time-factor", 4,
                  "--stand-in", json.dumps(STAND_IN), "--record", bag, "--record-topics", "/joint_states",
                  timeout=900)
    params = out / "sysid_params.yaml"
    fit = json.loads((out / "sysid.json").read_text()) if (out / "sysid.json").exists() else None
    if fit is None:
        fit = rlcontrol("sysid", bag, "--config", ROOT / "configs/sysid_cartpole_balance.yaml", "--out", params)
        (out / "sysid.json").write_text(json.dumps(fit, indent=2))
    fitted = yaml.safe_load(params.read_text())
    config = yaml.safe_load((ROOT / "configs/td3_cartpole_balance.yaml").read_text())
    config["env"]["randomization"] = fitted["randomization"]  # the fitted scales and latency, fixed
    config["replay"]["capacity"] = 200000
    path = out / "td3_cartpole_balance_sysid.yaml"
    path.write_text(yaml.safe_dump(config))
    return train(path, out / "sysid_run", "--steps", 120000), fit


def finetune(out: Path, sim_run: Path, seconds: float, rtf: float, extra: list[str]) -> dict:
    path = out / "finetune.json"
    if path.exists():
        return json.loads(path.read_text())
    result = rlcontrol("finetune", sim_run, "--out", out / "finetune", "--stand-in", json.dumps(STAND_IN),
                       "--duration", seconds, "--real-time-factor", rtf,
                       "--learning-starts", 1000, "--export-every", 500, *extra, timeout=seconds + 900)
    result["settings"] = extra
    path.write_text(json.dumps(result, indent=2))
    return result


def plot(results: dict, tuned: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = list(results)
    means = [np.mean(results[k]) for k in labels]
    stds = [np.std(results[k]) for k in labels]
    left.bar(range(len(labels)), means, yerr=stds, color=["#888", "#c44", "#48c", "#4a4", "#d80"][:len(labels)])
    left.set_xticks(range(len(labels)), [textwrap.fill(k, 13, break_long_words=False) for k in labels], fontsize=8)
    left.set_ylabel(f"return ({len(EVAL_SEEDS)} deterministic episodes)")
    left.set_title("cartpole-balance: sim policy vs the stand-in robot")
    eps = tuned["episodes"]
    right.plot([e["t_s"] for e in eps], [e["return"] for e in eps], ".-")
    right.set_xlabel(f"wall-clock seconds of live fine-tuning (ROS 2, real-time factor {tuned['real_time_factor']:.0f})")
    noise = dict(zip(tuned.get("settings", [])[::2], tuned.get("settings", [])[1::2])).get("--exploration-std")
    right.set_ylabel("episode return on the stand-in (over ROS 2)" + (f"\nexploration std {noise}" if noise else ""))
    right.set_title("live fine-tuning")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "sim2real"))
    parser.add_argument("--finetune-s", type=float, default=240.0)
    parser.add_argument("--rtf", type=float, default=4.0)
    parser.add_argument("--skip-sysid", action="store_true")
    parser.add_argument("--exploration-std", type=float, default=0.2,
                        help="noise on the policy node's commands while fine-tuning (normalized units)")
    parser.add_argument("--finetune-args", default="", help="more `rlcontrol finetune` flags, e.g. '--lr-scale 0.5'")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sim_run = train(ROOT / "configs/td3_cartpole_balance.yaml", out / "sim", "--steps", 120000)
    dr_run = train(ROOT / "configs/td3_cartpole_balance_dr.yaml", out / "dr")
    sim = run_policy(sim_run)
    results = {"sim policy in sim": returns(sim, None), "sim policy on stand-in": returns(sim, STAND_IN),
               "domain randomization": returns(run_policy(dr_run), STAND_IN)}
    fit = None
    if not args.skip_sysid:
        sysid_dir, fit = sysid_run(out, sim_run)
        results["sysid-fitted simulator"] = returns(run_policy(sysid_dir), STAND_IN)
    tuned = finetune(out, sim_run, args.finetune_s, args.rtf,
                     ["--exploration-std", str(args.exploration_std), *args.finetune_args.split()])
    final = Path(tuned["policy_status"]["path"])
    results[f"live fine-tuning {args.finetune_s:.0f} s"] = returns(onnx_policy(final), STAND_IN)
    gap = np.mean(results["sim policy in sim"]) - np.mean(results["sim policy on stand-in"])
    summary = {
        "env": ENV_ID, "stand_in": STAND_IN, "eval_seeds": EVAL_SEEDS,
        "returns": {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "all": v} for k, v in results.items()},
        "gap": float(gap),
        "gap_closed": {k: float((np.mean(v) - np.mean(results["sim policy on stand-in"])) / gap)
                       for k, v in results.items() if k not in ("sim policy in sim", "sim policy on stand-in")},
        "sysid": fit, "finetune": {k: tuned[k] for k in ("wall_s", "first_mean", "last_mean", "by_version",
                                                          "policy_status", "learner_status", "real_time_factor",
                                                          "settings") if k in tuned},
        "finetune_episodes": tuned["episodes"], "wall_s": round(time.time() - t0, 1),
    }
    res = ROOT / "benchmarks" / "results" / "sim2real_finetune.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(summary, indent=2))
    plot(results, tuned, ROOT / "docs" / "figures" / "sim2real_finetune.png")
    for k, v in summary["returns"].items():
        print(f"{k:32s} {v['mean']:7.1f} +- {v['std']:5.1f}")
    print(json.dumps({"results": str(res), "gap": summary["gap"], "gap_closed": summary["gap_closed"]}))


if __name__ == "__main__":
    main()
