"""The sim2real demonstration: a policy trained in simulation meets a "real robot" stand-in it was
not trained on, and four ways of dealing with the gap are measured on the same stand-in episodes.

    # today's baseline: TD3 sim policy, fine-tuned at 1 update per robot transition
    python -m benchmarks.sim2real_finetune --agent td3 --finetune-s 240 --rtf 4 --exploration-std 0.2
    # the sample-efficient arm: SAC sim policy, fine-tuned at 2 updates per robot transition
    python -m benchmarks.sim2real_finetune --agent sac --updates-per-transition 2 --finetune-s 240 --rtf 4 \
        --exploration-std 0.2
    # the locomotion stand-in: SAC on walker-stand, every arm SAC, 30 robot minutes at 2x real time
    python -m benchmarks.sim2real_finetune --task walker --updates-per-transition 2 --control-loop-baseline-s 120
    # the table for docs/benchmarks.md (no training)
    python -m benchmarks.sim2real_finetune --compare benchmarks/results/sim2real_finetune.json \
        benchmarks/results/sim2real_finetune_sac.json

--task picks a profile (benchmarks/sim2real_tasks.py: env, stand-in, sim/DR/sysid configs, control
period, default durations); what follows is the default, cartpole. Its stand-in is the simulated
robot node (ros_nodes/sim_robot.py) with hidden physics: a motor 5x weaker (actuator_gain 0.2) and a
cart and pole twice as heavy (mass 2.0) as the model, on dmc:cartpole-balance. Steps (each reuses
its result if it is already in --out):

1. sim:      the sim policy, trained on the nominal simulator for --sim-steps env steps (120k):
             configs/td3_cartpole_balance.yaml (--agent td3) or configs/sac_cartpole_balance.yaml
             (--agent sac: the same networks, replay and budget, with the sample-efficiency recipe)
2. dr:       TD3 trained with domain randomization (configs/td3_cartpole_balance_dr.yaml)
3. sysid:    the sim policy deployed on the stand-in over ROS 2 and recorded (rosbag2, with
             /joint_states); `rlcontrol sysid` fits the motor's effective gain and the latency to
             the recording (configs/sysid_cartpole_balance.yaml: a heavier cart is the same motion
             as a weaker motor); TD3 trained on the fitted simulator
4. finetune: `rlcontrol finetune` on the stand-in over ROS 2 for --finetune-s seconds at
             --updates-per-transition updates per robot transition, starting from the sim policy
5. versions: every policy version the learner exported (OUT/finetune/policy-vNNNN.onnx; every k-th
             with --eval-every-version k, the last one always) is evaluated, which gives the share of
             the gap closed over robot time. Recomputed from an existing --out without fine-tuning
             again (evaluations are cached in OUT/version_evals.json by the ONNX file's sha256)

The DR and sysid arms use the task's arms agent (TD3 for cartpole, SAC for walker) whatever --agent
says; with another --agent both are skipped by default (--no-skip-dr / --no-skip-sysid to run them):
the issue's question is the fine-tuning arm. The gap is per agent: the agent's own sim policy in
simulation minus the same policy on the stand-in.

Control loop. The fine-tuning result carries the policy node's /diagnostics over the session
(ros_nodes.finetune_launch.control_loop_summary: missed ticks, those near a weight swap, tick
latency); --control-loop-baseline-s S first deploys the sim policy on the stand-in for S seconds at
the same real-time factor with no learner, for the same figures without training beside the node.

Every policy is evaluated deterministically in process on the same stand-in episodes (EVAL_SEEDS),
and the sim policy also on the nominal simulator. "gap closed" of a version is
(its mean return - the sim policy's on the stand-in) / (the sim policy's in sim - on the stand-in).

Robot time. Each version's ``robot_s`` is the robot's own clock at its export: the number of
robot transitions the learner had taken from the transition log when it exported the version
("transitions" in OUT/finetune/finetune.jsonl) times the control period (0.04 s here: 0.01 s
physics step x action repeat 4). Every policy transition is one control period of the stand-in's
simulated time, whatever real-time factor it ran at, and whether or not the learner kept up; e-stop
interventions (none on this stand-in) and steps the recorder dropped are not counted. ``wall_s`` is
the learner's wall clock at the export (finetune.jsonl's "wall_s"), whose origin is the learner's
start, a few seconds before the robot is activated; so wall_s x rtf overstates robot time by those
seconds x rtf, which is why the transition count is used. Version 0 (the sim policy, evaluated from
the sim run) is at robot time 0. "Robot seconds to close 50% / 90% of the gap" is the robot_s of the
first version whose gap closed is at least 0.5 / 0.9 (None if none is).

Exploration. The deployed ONNX policy is deterministic for both agents (SAC exports tanh(mean)), so
on the robot the exploration comes from the policy node's Gaussian noise (--exploration-std, 0.2 of
each action's half range, before the safety layer) for SAC as for TD3; SAC's stochastic policy is
not sampled on the robot. Its learned temperature still shapes the updates (the entropy terms).

Results: benchmarks/results/<name>.json (sim2real_finetune for td3, sim2real_finetune_sac for sac,
or --name) and docs/figures/<name>.png: returns per method, the fine-tuning episodes over ROS 2, and
the gap closed per version over robot time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from benchmarks import provenance
from benchmarks.sim2real_tasks import CARTPOLE, TASKS, TaskProfile

ROOT = Path(__file__).resolve().parents[1]
# The default task's (cartpole-balance), as before there were task profiles.
ENV_ID, ACTION_REPEAT, STAND_IN = CARTPOLE.env_id, CARTPOLE.action_repeat, CARTPOLE.stand_in
EVAL_SEEDS = [1000 + i for i in range(10)]
AGENTS = ("td3", "sac")
SHARES = (0.5, 0.9)
VERSION_FILE = re.compile(r"^policy-v(\d+)\.onnx$")
VERSION_EVALS = "version_evals.json"


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


def stand_in_env(seed: int, stand_in: dict | None, task: TaskProfile = CARTPOLE):
    import envs
    from sim2real.randomization import DomainRandomization, RandomizedEnv

    env = envs.make(task.env_id, seed=seed, action_repeat=task.action_repeat)
    return RandomizedEnv(env, DomainRandomization.from_dict(stand_in), seed=seed) if stand_in else env


def control_period(task: TaskProfile = CARTPOLE) -> float:
    """Seconds of the robot's (simulated) time per agent step, action repeat included, from the env."""
    env = stand_in_env(0, None, task)
    period = float(env.spec.control_period)
    env.close()
    return period


def returns(act, stand_in: dict | None, task: TaskProfile = CARTPOLE) -> list[float]:
    """Deterministic episodes of `act` (normalized obs -> normalized action) on the stand-in."""
    from rlcontrol.training.evaluate import run_episode

    env = stand_in_env(7, stand_in, task)
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


def sysid_run(out: Path, sim_run: Path, steps: int, task: TaskProfile = CARTPOLE) -> tuple[Path, dict]:
    """Record the sim policy on the stand-in, fit the simulator, train the arms' agent on the fitted simulator."""
    import yaml

    policy = out / "sim_policy.onnx"
    if not policy.exists():
        rlcontrol("export", sim_run, "--out", policy)
    bag = out / "standin_bag"
    if not bag.exists():
        rlcontrol("deploy", "--policy", policy, "--robot", "sim", "--episodes", 4, "--real-time-factor", 4,
                  "--stand-in", json.dumps(task.stand_in), "--record", bag, "--record-topics", "/joint_states",
                  timeout=900)
    params = out / "sysid_params.yaml"
    fit = json.loads((out / "sysid.json").read_text()) if (out / "sysid.json").exists() else None
    if fit is None:
        fit = rlcontrol("sysid", bag, "--config", ROOT / task.sysid_config, "--out", params)
        (out / "sysid.json").write_text(json.dumps(fit, indent=2))
    fitted = yaml.safe_load(params.read_text())
    base = ROOT / task.sim_configs[task.arms_agent]
    config = yaml.safe_load(base.read_text())
    config["env"]["randomization"] = fitted["randomization"]  # the fitted scales and latency, fixed
    config["replay"]["capacity"] = 200000
    path = out / f"{base.stem}_sysid.yaml"
    path.write_text(yaml.safe_dump(config))
    return train(path, out / "sysid_run", "--steps", steps), fit


def finetune(out: Path, sim_run: Path, seconds: float, rtf: float, extra: list[str], name: str = "finetune",
             task: TaskProfile = CARTPOLE) -> dict:
    path = out / f"{name}.json"
    if path.exists():
        result = json.loads(path.read_text())
        if result.get("settings") != extra or result.get("real_time_factor") != rtf:
            print(f"warning: reusing {path}, fine-tuned with {result.get('settings')} at real-time factor "
                  f"{result.get('real_time_factor')}, not {extra} at {rtf}; use another --out to fine-tune anew",
                  file=sys.stderr)
        return result
    result = rlcontrol("finetune", sim_run, "--out", out / name, "--stand-in", json.dumps(task.stand_in),
                       "--duration", seconds, "--real-time-factor", rtf, "--learning-starts", task.learning_starts,
                       "--export-every", task.export_every, *extra, timeout=seconds + 900)
    result["settings"] = extra
    path.write_text(json.dumps(result, indent=2))
    return result


CONTROL_LOOP_KEYS = ("loop_rate_hz", "missed_ticks", "missed_tick_fraction", "latency_count", "latency_p50_ms",
                     "latency_p99_ms", "latency_max_ms", "obs_to_command_p50_ms", "obs_to_command_p99_ms")


def control_loop_baseline(out: Path, sim_run: Path, seconds: float, rtf: float, task: TaskProfile) -> dict:
    """The policy node's control loop with no learner beside it: the sim policy deployed on the stand-in
    for `seconds` at the fine-tuning session's real-time factor, its last /diagnostics report."""
    path = out / "control_loop_baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    policy = out / "sim_policy.onnx"
    if not policy.exists():
        rlcontrol("export", sim_run, "--out", policy)
    deployed = rlcontrol("deploy", "--policy", policy, "--robot", "sim", "--duration", seconds,
                         "--real-time-factor", rtf, "--stand-in", json.dumps(task.stand_in), timeout=seconds + 300)
    result = {"seconds": seconds, "real_time_factor": rtf, "rate_hz": deployed.get("rate_hz"),
              "episodes": deployed.get("episodes"),
              **{k: deployed["diagnostics"].get(k) for k in CONTROL_LOOP_KEYS if k in deployed.get("diagnostics", {})}}
    path.write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------- per-version curve


def export_times(finetune_dir: Path, period: float) -> dict[int, dict]:
    """Version -> {robot_s, wall_s, transitions, updates} from the learner's finetune.jsonl.

    robot_s = transitions the learner had taken from the log at the export x the control period
    (the robot's own clock); wall_s = the learner's wall clock (origin: the learner's start). A
    restarted learner continues its version numbers; a version logged twice keeps its first row.
    """
    path = finetune_dir / "finetune.jsonl"
    times: dict[int, dict] = {}
    if not path.exists():
        return times
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            version, transitions = int(row["version"]), int(row["transitions"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a torn last line, or not an export row
        if version not in times:
            times[version] = {"robot_s": round(transitions * period, 3), "wall_s": row.get("wall_s"),
                              "transitions": transitions, "updates": row.get("updates")}
    return times


def version_files(finetune_dir: Path) -> dict[int, Path]:
    """The learner's exports, version -> path (v0000 is the sim policy's export, not the learner's)."""
    found = {}
    for path in finetune_dir.glob("policy-v*.onnx"):
        match = VERSION_FILE.match(path.name)
        if match and int(match.group(1)) > 0:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def select_versions(versions: list[int], every: int) -> list[int]:
    """Every `every`-th version (every-th, 2*every-th, ...) and always the last one."""
    versions = sorted(versions)
    chosen = [v for i, v in enumerate(versions, 1) if i % max(1, every) == 0]
    if versions and versions[-1] not in chosen:
        chosen.append(versions[-1])
    return chosen


def gap_share(mean: float, on_stand_in: float, in_sim: float) -> float | None:
    """Share of the gap closed: 0 at the sim policy on the stand-in, 1 at the sim policy in sim."""
    gap = in_sim - on_stand_in
    return None if gap <= 0 else float((mean - on_stand_in) / gap)


def first_crossing(curve: list[dict], share: float) -> dict | None:
    """The first point (in robot time) whose gap closed is at least `share`, or None."""
    for point in sorted(curve, key=lambda p: (p["robot_s"], p["version"])):
        if point.get("gap_closed") is not None and point["gap_closed"] >= share:
            return point
    return None


def curve_summary(curve: list[dict]) -> dict:
    """Robot (and learner wall) seconds to first close each share of the gap; the best and the final version."""
    def brief(p):
        return None if p is None else {k: p.get(k) for k in ("version", "robot_s", "wall_s", "mean", "gap_closed")}

    scored = [p for p in curve if p.get("gap_closed") is not None]
    return {"time_to_gap_closed": {str(s): brief(first_crossing(curve, s)) for s in SHARES},
            "best": brief(max(scored, key=lambda p: (p["gap_closed"], -p["robot_s"]), default=None)),
            "final": brief(max(curve, key=lambda p: p["version"], default=None))}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_versions(out: Path, finetune_dir: Path, every: int, v0: list[float], in_sim: list[float],
                      period: float, task: TaskProfile = CARTPOLE) -> tuple[list[dict], dict[int, list[float]], float | None]:
    """The gap-closed curve over robot time: (curve, returns per version, mean seconds per evaluation)."""
    times = export_times(finetune_dir, period)
    files = version_files(finetune_dir)
    cache_path = finetune_dir / VERSION_EVALS
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    on_stand_in, sim_mean = float(np.mean(v0)), float(np.mean(in_sim))
    curve = [{"version": 0, "robot_s": 0.0, "wall_s": 0.0, "transitions": 0, "updates": 0,
              "mean": on_stand_in, "std": float(np.std(v0)), "gap_closed": gap_share(on_stand_in, on_stand_in, sim_mean)}]
    all_returns, spent = {0: v0}, []
    for version in select_versions(list(files), every):
        if version not in times:
            print(f"warning: {files[version].name} has no row in finetune.jsonl; left out", file=sys.stderr)
            continue
        key, digest = f"v{version:04d}", _sha256(files[version])
        entry = cache.get(key)
        if not entry or entry.get("sha256") != digest or entry.get("eval_seeds") != EVAL_SEEDS:
            t0 = time.perf_counter()
            entry = {"sha256": digest, "eval_seeds": EVAL_SEEDS,
                     "returns": returns(onnx_policy(files[version]), task.stand_in, task)}
            spent.append(time.perf_counter() - t0)
            cache[key] = entry
            cache_path.write_text(json.dumps(cache, indent=1))  # resumable mid-way
        rets = entry["returns"]
        all_returns[version] = rets
        mean = float(np.mean(rets))
        curve.append({"version": version, **times[version], "mean": mean, "std": float(np.std(rets)),
                      "gap_closed": gap_share(mean, on_stand_in, sim_mean)})
    return curve, all_returns, (float(np.mean(spent)) if spent else None)


def print_curve(curve: list[dict], rows: int = 16) -> None:
    marked = {p["version"] for p in (first_crossing(curve, s) for s in SHARES) if p}
    scored = [p for p in curve if p.get("gap_closed") is not None]
    if scored:
        marked.add(max(scored, key=lambda p: p["gap_closed"])["version"])
    step = max(1, -(-len(curve) // rows))
    shown = [p for i, p in enumerate(curve) if i % step == 0 or p["version"] in marked or i == len(curve) - 1]
    print(f"{'version':>7} {'robot s':>8} {'wall s':>7} {'return':>15} {'gap closed':>10}")
    for p in shown:
        gap = "" if p["gap_closed"] is None else f"{p['gap_closed']:.0%}"
        wall = "" if p.get("wall_s") is None else f"{p['wall_s']:.1f}"
        print(f"{p['version']:>7} {p['robot_s']:>8.1f} {wall:>7} {p['mean']:>7.1f} +- {p['std']:5.1f} {gap:>10}")


# ---------------------------------------------------------------------- comparison table


def _final_gap(result: dict) -> float | None:
    final = (result.get("final") or {}).get("gap_closed")
    if final is not None:
        return final
    tuned = [v for k, v in result.get("gap_closed", {}).items() if k.startswith("live fine-tuning")]
    return tuned[0] if tuned else None


def _time_to(result: dict, share: float) -> float | None:
    point = (result.get("time_to_gap_closed") or {}).get(str(share))
    return None if point is None else point["robot_s"]


def compare_table(results: list[dict], names: list[str]) -> str:
    """A markdown table of result files; the 90% times relative to the first file's."""
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"  # noqa: E731

    def seconds(result, share):
        if "curve" not in result:
            return "n/a (no per-version curve)"
        t = _time_to(result, share)
        return "never" if t is None else f"{t:,.0f}"

    base = _time_to(results[0], 0.9) if results else None
    lines = ["| result | agent | updates / transition | exploration std | gap (sim in sim - on stand-in) | "
             "final gap closed | best gap closed (version, robot s) | robot s to 50% | robot s to 90% | "
             "90% time / first row's |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in zip(names, results):
        best = r.get("best") or {}
        best_txt = "n/a" if not best else f"{pct(best.get('gap_closed'))} (v{best.get('version')}, {best.get('robot_s'):,.0f})"
        t90 = _time_to(r, 0.9)
        ratio = "n/a" if t90 is None or not base else f"{t90 / base:.2f}"
        returns_ = r.get("returns", {})
        gap = r.get("gap")
        gap_txt = "n/a" if gap is None else (f"{gap:.1f} ({returns_.get('sim policy in sim', {}).get('mean', float('nan')):.1f}"
                                             f" - {returns_.get('sim policy on stand-in', {}).get('mean', float('nan')):.1f})")
        lines.append(f"| {name} | {r.get('agent', '?')} | {r.get('updates_per_transition', '?')} | "
                     f"{r.get('exploration_std', '?')} | {gap_txt} | {pct(_final_gap(r))} | {best_txt} | "
                     f"{seconds(r, 0.5)} | {seconds(r, 0.9)} | {ratio} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- figure


def plot(results: dict, tuned: dict, curve: list[dict], agent: str, path: Path, task: TaskProfile = CARTPOLE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.2))
    labels = list(results)
    means = [np.mean(results[k]) for k in labels]
    stds = [np.std(results[k]) for k in labels]
    left.bar(range(len(labels)), means, yerr=stds, color=["#888", "#c44", "#48c", "#4a4", "#d80"][:len(labels)])
    left.set_xticks(range(len(labels)), [textwrap.fill(k, 13, break_long_words=False) for k in labels], fontsize=8)
    left.set_ylabel(f"return ({len(EVAL_SEEDS)} deterministic episodes)")
    left.set_title(f"{task.title}: {agent.upper()} sim policy vs the stand-in")
    eps = tuned["episodes"]
    middle.plot([e["t_s"] for e in eps], [e["return"] for e in eps], ".-")
    middle.set_xlabel(f"wall-clock seconds of live fine-tuning (ROS 2, real-time factor {tuned['real_time_factor']:.0f})")
    noise = dict(zip(tuned.get("settings", [])[::2], tuned.get("settings", [])[1::2])).get("--exploration-std")
    middle.set_ylabel("episode return on the stand-in (over ROS 2)" + (f"\nexploration std {noise}" if noise else ""))
    middle.set_title("live fine-tuning: episodes (with exploration)")
    points = [p for p in curve if p.get("gap_closed") is not None]
    right.plot([p["robot_s"] for p in points], [100 * p["gap_closed"] for p in points], ".-", color="#d80",
               drawstyle="steps-post")  # a version drives the robot until the next one
    for share in SHARES:
        right.axhline(100 * share, color="#888", lw=0.8, ls="--")
        hit = first_crossing(curve, share)
        if hit:
            right.axvline(hit["robot_s"], color="#888", lw=0.8, ls=":")
    right.set_xlabel("robot seconds at the version's export (transitions x control period)")
    right.set_ylabel(f"% of the gap closed ({len(EVAL_SEEDS)} deterministic episodes)")
    right.set_title("live fine-tuning: every exported version")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default=CARTPOLE.name,
                        help="the task profile (benchmarks/sim2real_tasks.py): env, stand-in, configs (default cartpole)")
    parser.add_argument("--agent", choices=AGENTS, default=None,
                        help="the sim policy's algorithm (default: the task's first, td3 for cartpole, sac for walker)")
    parser.add_argument("--out", default=None, help="default: the task's, e.g. runs/sim2real for cartpole td3")
    parser.add_argument("--name", default=None,
                        help="results/figure name (default: the task's, e.g. sim2real_finetune for cartpole td3)")
    parser.add_argument("--finetune-s", type=float, default=None,
                        help="wall seconds of live fine-tuning (default: the task's, 240 for cartpole)")
    parser.add_argument("--rtf", type=float, default=None, help="real-time factor (default: the task's, 4 for cartpole)")
    parser.add_argument("--updates-per-transition", type=float, default=1.0,
                        help="the learner's replay ratio on the robot's data (rlcontrol finetune's flag)")
    parser.add_argument("--sim-steps", type=int, default=None,
                        help="env steps of the sim policy and the sysid arm (default: the task's, 120k for cartpole); "
                             "lower only for smoke runs")
    parser.add_argument("--skip-dr", action=argparse.BooleanOptionalAction, default=None,
                        help="skip the domain-randomization arm (default: run only when --agent is the task's arms agent)")
    parser.add_argument("--skip-sysid", action=argparse.BooleanOptionalAction, default=None,
                        help="skip the system-identification arm (default: as --skip-dr)")
    parser.add_argument("--exploration-std", type=float, default=0.2,
                        help="noise on the policy node's commands while fine-tuning (normalized units)")
    parser.add_argument("--eval-every-version", type=int, default=1,
                        help="evaluate every k-th exported version (and the last); 1: all of them")
    parser.add_argument("--control-loop-baseline-s", type=float, default=0.0,
                        help="first deploy the sim policy for S seconds with no learner, for the policy node's "
                             "control-loop figures without fine-tuning beside it (default 0: not measured)")
    parser.add_argument("--finetune-args", default="", help="more `rlcontrol finetune` flags, e.g. '--lr-scale 0.5'")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                        help="print a markdown table comparing two result files, and exit (no training)")
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    args.agent = args.agent or task.default_agent
    if args.agent not in task.agents and not args.compare:
        parser.error(f"--agent {args.agent}: the {task.name} task has a sim config for {', '.join(task.agents)} only")
    args.finetune_s = task.finetune_s if args.finetune_s is None else args.finetune_s
    args.rtf = task.real_time_factor if args.rtf is None else args.rtf
    args.sim_steps = task.sim_steps if args.sim_steps is None else args.sim_steps
    arms = args.agent == task.arms_agent
    args.skip_dr = not arms if args.skip_dr is None else args.skip_dr
    args.skip_sysid = not arms if args.skip_sysid is None else args.skip_sysid
    args.name = args.name or task.result_name(args.agent)
    args.out = Path(args.out or ROOT / task.out(args.agent)).resolve()  # the rlcontrol subprocesses run in ROOT
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.compare:
        results = [json.loads(Path(p).read_text()) for p in args.compare]
        print(compare_table(results, [Path(p).name for p in args.compare]))
        return
    task, agent, name, out = TASKS[args.task], args.agent, args.name, args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sim_run = train(ROOT / task.sim_configs[agent], out / "sim", "--steps", args.sim_steps)
    sim = run_policy(sim_run)
    results = {"sim policy in sim": returns(sim, None, task), "sim policy on stand-in": returns(sim, task.stand_in, task)}
    if not args.skip_dr:
        dr_run = train(ROOT / task.dr_config, out / "dr")
        results["domain randomization"] = returns(run_policy(dr_run), task.stand_in, task)
    fit = None
    if not args.skip_sysid:
        sysid_dir, fit = sysid_run(out, sim_run, args.sim_steps, task)
        results["sysid-fitted simulator"] = returns(run_policy(sysid_dir), task.stand_in, task)
    baseline = None
    if args.control_loop_baseline_s > 0:
        baseline = control_loop_baseline(out, sim_run, args.control_loop_baseline_s, args.rtf, task)
    tuned = finetune(out, sim_run, args.finetune_s, args.rtf,
                     ["--exploration-std", str(args.exploration_std),
                      "--updates-per-transition", str(args.updates_per_transition), *args.finetune_args.split()],
                     task=task)
    period = task.control_period_s
    curve, by_version, eval_s = evaluate_versions(out, Path(tuned["out"]), args.eval_every_version,
                                                  results["sim policy on stand-in"], results["sim policy in sim"], period,
                                                  task)
    final = tuned.get("policy_status", {}).get("path")
    final_version = tuned.get("policy_status", {}).get("version")
    if final_version in by_version:
        results[f"live fine-tuning {args.finetune_s:.0f} s"] = by_version[final_version]
    elif final:
        results[f"live fine-tuning {args.finetune_s:.0f} s"] = returns(onnx_policy(Path(final)), task.stand_in, task)
    gap = np.mean(results["sim policy in sim"]) - np.mean(results["sim policy on stand-in"])
    learner = tuned.get("learner_status", {}).get("learner", {})
    transitions, updates = learner.get("transitions"), learner.get("updates")
    keeping_up = None
    if transitions and updates is not None and transitions > task.learning_starts:
        keeping_up = round(updates / (args.updates_per_transition * (transitions - task.learning_starts)), 3)
    summary = {
        "date": time.strftime("%Y-%m-%d"), "commit": provenance.git_commit(), "task": task.name, "agent": agent, "sim_config": task.sim_configs[agent], "sim_steps": args.sim_steps,
        "updates_per_transition": args.updates_per_transition, "exploration_std": args.exploration_std,
        "finetune_s": args.finetune_s, "real_time_factor": args.rtf,
        "env": task.env_id, "stand_in": task.stand_in, "eval_seeds": EVAL_SEEDS,
        "returns": {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "all": v} for k, v in results.items()},
        "gap": float(gap),
        "gap_closed": {k: float((np.mean(v) - np.mean(results["sim policy on stand-in"])) / gap)
                       for k, v in results.items() if k not in ("sim policy in sim", "sim policy on stand-in")},
        "robot_clock": f"robot_s = transitions the learner had taken from the log at the export x the control period "
                       f"({period} s); wall_s = the learner's wall clock (origin: learner start)",
        "control_period_s": period, "eval_every_version": args.eval_every_version,
        "version_eval_s": None if eval_s is None else round(eval_s, 2),
        **curve_summary(curve), "curve": curve,
        "learner_keeping_up": {"transitions": transitions, "updates": updates, "updates_per_transition": args.updates_per_transition,
                               "achieved_share_of_allowed_updates": keeping_up,
                               "robot_s_total": None if transitions is None else round(transitions * period, 1),
                               "achieved_real_time_factor": None if not transitions or not tuned.get("wall_s") else
                               round(transitions * period / tuned["wall_s"], 2)},
        "sysid": fit, "finetune": {k: tuned[k] for k in ("wall_s", "first_mean", "last_mean", "by_version",
                                                          "policy_status", "learner_status", "real_time_factor",
                                                          "settings") if k in tuned},
        "finetune_episodes": tuned["episodes"], "wall_s": round(time.time() - t0, 1),
    }
    if baseline is not None or "control_loop" in tuned:
        summary["control_loop"] = {"without_learner": baseline, "with_learner": tuned.get("control_loop")}
    res = ROOT / "benchmarks" / "results" / f"{name}.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(summary, indent=2))
    plot(results, tuned, curve, agent, ROOT / "docs" / "figures" / f"{name}.png", task)
    for k, v in summary["returns"].items():
        print(f"{k:32s} {v['mean']:7.1f} +- {v['std']:5.1f}")
    print_curve(curve)
    times = {s: (p or {}).get("robot_s") for s, p in summary["time_to_gap_closed"].items()}
    print(json.dumps({"results": str(res), "agent": agent, "gap": summary["gap"], "gap_closed": summary["gap_closed"],
                      "robot_s_to_gap_closed": times, "best": summary["best"],
                      "learner_keeping_up": summary["learner_keeping_up"], "version_eval_s": summary["version_eval_s"],
                      "control_loop": summary.get("control_loop")}))


if __name__ == "__main__":
    main()
