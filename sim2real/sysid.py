"""System identification: fit a simulator's physical parameters to a robot's recorded joint trajectories.

    rlcontrol sysid BAG --config configs/sysid_cartpole.yaml --out params.yaml [--json]

What is fitted: the scale factors of `sim2real.physics` (mass, friction, damping, actuator_gain,
gravity: the names domain randomization draws), each within the config's bounds, plus an
integer actuation latency in agent steps chosen among the `latency_steps` candidates.

What it is fitted to: the joint encoders. The bag (rosbag2, from `ros_nodes.recorder` with
`--topics /joint_states`) holds, per step, the robot's `/robot/applied_command` (the command its
interface received, in physical units) followed by `/joint_states` (position and velocity of
its 1-DOF joints, by name), and `/robot/episode` start/end events; after a reset, the episode's
first joint state. `ros_nodes.sim_robot` publishes exactly these; a real robot's driver
publishes /joint_states anyway (here it must publish one per control step, after the command).

The error is multi-step open-loop prediction error, what a policy feels: for segments of
`horizon` agent steps starting every `stride` steps, the simulator is put into the recorded
joint state, driven by the recorded commands (the command of `latency` steps earlier at each
step) and its joint states compared with the recorded ones. Each joint position and velocity
is divided by its standard deviation over the recording, so metres, radians and their rates
weigh alike; `rmse` is the root mean square of these normalized differences over every
predicted step, `final_rmse` the same at the segment's last step, and `joint_rmse` the final-step
error per joint in physical units. Segments start at least max(latency candidates) steps into
an unbroken piece of recording, so every candidate is scored on the same segments with recorded
commands only (no guess about what the actuators held before the episode's first command).

The search, per latency candidate: the cross-entropy method in log-scale space (scales
multiply, so 0.5 and 2 are equally far from 1): a diagonal Gaussian started at the nominal model
(every scale 1, clipped into the bounds), `population` samples, the `elites` best refit, for
`iterations` rounds; then a bounded least-squares polish (scipy's trust-region reflective
method on the normalized residuals) from the best sample. The candidate with the lowest
rmse wins. "Before" is the nominal model with latency 0; "after" is the fit. Rollouts run in
MuJoCo's C rollout (`mujoco.rollout`, one thread), all segments in one call per evaluation.

Commands are applied as the actuators' controls, which is what dm_control and Gymnasium MuJoCo
tasks do with an action in physical units; each agent step runs control_period / timestep
physics steps (action repeat included). Joints that are not 1-DOF (free, ball) are not in
/joint_states and keep the model's reference pose, so fit tasks whose state the 1-DOF joints
determine (arms, carts, legged robots on a fixed base). Actuator activations (muscles,
filters) start at zero in each segment.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlcontrol.errors import UserError
from sim2real.sysid_recording import JointRecording

__all__ = [
    "JointRecording",
    "Simulator",
    "SysidConfig",
    "load_config",
    "mujoco_model_data",
    "one_dof_joints",
    "run_sysid",
    "summary_line",
]

ENV_KEYS = ("id", "action_repeat", "kwargs")


# ------------------------------------------------------------------------------ config


@dataclass
class SysidConfig:
    env: dict = field(default_factory=lambda: {"id": "dmc:cartpole-swingup"})  # id, action_repeat, kwargs
    params: dict = field(default_factory=lambda: {"actuator_gain": [0.25, 4.0]})  # name -> [low, high]
    latency_steps: list = field(default_factory=lambda: [0])  # candidates, in agent steps
    horizon: int = 10
    stride: int = 5
    population: int = 16
    elites: int = 4
    iterations: int = 8
    seed: int = 0
    max_segments: int = 400

    @classmethod
    def from_dict(cls, data: Any) -> SysidConfig:
        if not isinstance(data, Mapping):
            raise UserError(f"sysid config must be a mapping of settings, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise UserError(f"sysid config: unknown key {key!r}{_suggest(str(key), names)}")
        config = cls(**{str(k): v for k, v in data.items()})
        config.validate()
        return config

    def validate(self) -> None:
        self._validate_env()
        self._validate_params()
        lags = self.latency_steps
        if isinstance(lags, int) and not isinstance(lags, bool):
            lags = [lags]
        if (
            not isinstance(lags, list)
            or not lags
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in lags)
        ):
            raise UserError(f"sysid config: latency_steps must be a list of whole numbers >= 0, got {lags!r}")
        self.latency_steps = sorted(set(lags))
        for name in ("horizon", "stride", "population", "elites", "iterations", "max_segments", "seed"):
            value, least = getattr(self, name), 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"sysid config: {name} must be a whole number >= {least}, got {value!r}")
        if self.elites > self.population:
            raise UserError(
                f"sysid config: elites ({self.elites}) must not exceed population ({self.population})"
            )

    def _validate_env(self) -> None:
        env = self.env
        if not isinstance(env, Mapping) or not isinstance(env.get("id"), str):
            raise UserError("sysid config: env must be a mapping with an id, e.g. {id: dmc:cartpole-swingup}")
        for key in env:
            if key not in ENV_KEYS:
                raise UserError(f"sysid config: unknown key env.{key}{_suggest(str(key), ENV_KEYS)}")
        repeat = env.get("action_repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise UserError(f"sysid config: env.action_repeat must be a whole number >= 1, got {repeat!r}")
        if not isinstance(env.get("kwargs") or {}, Mapping):
            raise UserError(
                f"sysid config: env.kwargs must be a mapping of task keywords, got {env.get('kwargs')!r}"
            )

    def _validate_params(self) -> None:
        from sim2real.physics import PARAMETER_NAMES

        if not isinstance(self.params, Mapping) or not self.params:
            raise UserError(
                "sysid config: params must name at least one parameter with [low, high] scale bounds"
            )
        for name, bounds in self.params.items():
            if name not in PARAMETER_NAMES:
                raise UserError(
                    f"sysid config: unknown parameter params.{name}{_suggest(str(name), PARAMETER_NAMES)}"
                )
            if (
                not isinstance(bounds, (list, tuple))
                or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not 0 < bounds[0] <= bounds[1] < math.inf
            ):
                raise UserError(
                    f"sysid config: params.{name} must be [low, high] scale bounds with "
                    f"0 < low <= high (1 is the nominal model), got {bounds!r}"
                )


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(options)}"


def load_config(path: str | Path) -> SysidConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sysid config {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"sysid config {path}: YAML syntax error{where}") from None
    return SysidConfig.from_dict({} if data is None else data)


# ------------------------------------------------------------------------------ the simulator


def mujoco_model_data(env):
    """(MjModel, MjData) of a MuJoCo-backed env (any wrapper stack), or None for other tasks."""
    import mujoco

    inner = env.unwrapped
    dm_env = getattr(inner, "dm_env", None)
    if dm_env is not None:
        return dm_env.physics.model.ptr, dm_env.physics.data.ptr
    for holder in (inner, getattr(getattr(inner, "gym_env", None), "unwrapped", None)):
        model, data = getattr(holder, "model", None), getattr(holder, "data", None)
        if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
            return model, data
    return None


def one_dof_joints(model) -> list[tuple[str, int, int]]:
    """(name, qpos address, dof address) of every hinge and slide joint, in model order;
    unnamed joints are called joint_<id>."""
    import mujoco

    out = []
    for j in range(model.njnt):
        if int(model.jnt_type[j]) in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint_{j}"
            out.append((name, int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])))
    return out


class Simulator:
    """A task's MuJoCo model driven directly: joint states in, controls applied, joint states out."""

    def __init__(self, env, joints: Sequence[str]):
        import mujoco

        self.env = env
        self.mujoco = mujoco
        found = mujoco_model_data(env)
        if found is None:
            raise UserError(
                f"{env.spec.env_id} is not a MuJoCo task: system identification fits MuJoCo models"
            )
        self.model, _ = found
        self.data = mujoco.MjData(self.model)  # scratch: the env's own data is left alone
        self.steps_per_action = max(1, round(env.spec.control_period / self.model.opt.timestep))
        have = {name: (qadr, dadr) for name, qadr, dadr in one_dof_joints(self.model)}
        missing = [name for name in joints if name not in have]
        if missing:
            raise UserError(
                f"joint {missing[0]!r} of the recording is not a hinge or slide joint of "
                f"{env.spec.env_id} (its 1-DOF joints: {', '.join(have) or 'none'})"
            )
        self.qadr = np.asarray([have[n][0] for n in joints], dtype=np.intp)
        self.dadr = np.asarray([have[n][1] for n in joints], dtype=np.intp)
        if self.model.nu == 0:
            raise UserError(f"{env.spec.env_id} has no actuators")
        self.state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.nstate = mujoco.mj_stateSize(self.model, self.state_spec)
        # Full-physics state vectors are ordered time, qpos, qvel, ...
        self.qpos_at = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_TIME)
        self.qvel_at = self.qpos_at + self.model.nq

    def initial_states(self, q0: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """(S, nstate) full-physics states: the model's reference pose with the joints at (q0, v0)."""
        mj, m, d = self.mujoco, self.model, self.data
        out = np.empty((len(q0), self.nstate))
        for s in range(len(q0)):
            mj.mj_resetData(m, d)
            d.qpos[self.qadr] = q0[s]
            d.qvel[self.dadr] = v0[s]
            mj.mj_forward(m, d)
            mj.mj_getState(m, d, out[s], self.state_spec)
        return out

    def rollout(self, states: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities (S, H, J) after each agent step of `controls` (S, H, nu)."""
        from mujoco import rollout

        k = self.steps_per_action
        per_physics_step = np.repeat(controls, k, axis=1) if k > 1 else controls
        out, _ = rollout.rollout(self.model, self.data, states, np.ascontiguousarray(per_physics_step))
        out = out[:, k - 1 :: k]
        return out[:, :, self.qpos_at + self.qadr], out[:, :, self.qvel_at + self.dadr]


def simulator_for(config: SysidConfig, joints: Sequence[str]) -> Simulator:
    import envs

    spec = config.env
    try:
        env = envs.make(
            spec["id"],
            seed=config.seed,
            action_repeat=int(spec.get("action_repeat", 1)),
            **dict(spec.get("kwargs") or {}),
        )
    except (ValueError, TypeError) as error:
        raise UserError(f"sysid config: env {spec['id']!r}: {' '.join(str(error).split())}") from None
    from sim2real.physics import supported_params

    supported = supported_params(env)
    for name in config.params:
        if name not in supported:
            env.close()
            raise UserError(
                f"sysid config: {spec['id']} has no physical parameter {name!r}; it supports "
                f"{', '.join(supported) or 'none'}"
            )
    return Simulator(env, joints)


# ------------------------------------------------------------------------------ error and fit


@dataclass
class Segments:
    states: np.ndarray  # (S, nstate): the simulator's start state of each segment
    commands: list[np.ndarray]  # per piece of recording: its commands (T, A)
    starts: list[tuple[int, int]]  # (piece, step) of each segment
    target_q: np.ndarray  # (S, H, J)
    target_v: np.ndarray
    scale_q: np.ndarray  # (J,): std over the recording
    scale_v: np.ndarray

    def controls(self, lag: int, horizon: int) -> np.ndarray:
        """(S, H, A): at step t the actuators run the command of step t - lag."""
        return np.stack([self.commands[p][t - lag : t - lag + horizon] for p, t in self.starts])


def make_segments(recording: JointRecording, sim: Simulator, config: SysidConfig) -> Segments:
    horizon, first = config.horizon, max(config.latency_steps)
    starts = [
        (p, t)
        for p, (_, _, u) in enumerate(recording.pieces)
        for t in range(first, len(u) - horizon + 1, config.stride)
    ]
    if not starts:
        longest = max(len(u) for _, _, u in recording.pieces)
        raise UserError(
            f"the recording's longest unbroken piece has {longest} steps, fewer than "
            f"horizon {horizon} + the largest latency candidate {first}"
        )
    if len(starts) > config.max_segments:  # a spread over the whole recording, reproducible from the seed
        pick = np.sort(
            np.random.default_rng(config.seed).choice(len(starts), config.max_segments, replace=False)
        )
        starts = [starts[i] for i in pick]
    pieces = recording.pieces
    q0 = np.stack([pieces[p][0][t] for p, t in starts])
    v0 = np.stack([pieces[p][1][t] for p, t in starts])
    target_q = np.stack([pieces[p][0][t + 1 : t + 1 + horizon] for p, t in starts])
    target_v = np.stack([pieces[p][1][t + 1 : t + 1 + horizon] for p, t in starts])
    all_q = np.concatenate([q for q, _, _ in pieces])
    all_v = np.concatenate([v for _, v, _ in pieces])
    return Segments(
        sim.initial_states(q0, v0),
        [u for _, _, u in pieces],
        starts,
        target_q,
        target_v,
        np.maximum(all_q.std(0), 1e-6),
        np.maximum(all_v.std(0), 1e-6),
    )


class Problem:
    """The prediction error of the simulator as a function of log scales, for one recording."""

    def __init__(self, sim: Simulator, segments: Segments, config: SysidConfig, joints: Sequence[str]):
        self.sim, self.segments, self.config, self.joints = sim, segments, config, list(joints)
        self.names = list(config.params)
        self.low = np.log([config.params[n][0] for n in self.names])
        self.high = np.log([config.params[n][1] for n in self.names])
        self._controls: dict[int, np.ndarray] = {}
        self.evaluations = 0

    def controls(self, lag: int) -> np.ndarray:
        if lag not in self._controls:
            self._controls[lag] = self.segments.controls(lag, self.config.horizon)
        return self._controls[lag]

    def scales(self, x: np.ndarray) -> dict[str, float]:
        return {name: float(math.exp(value)) for name, value in zip(self.names, x)}

    def predict(self, x: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
        from sim2real.physics import set_params

        set_params(self.sim.env, self.scales(x))
        self.evaluations += 1
        return self.sim.rollout(self.segments.states, self.controls(lag))

    def residuals(self, x: np.ndarray, lag: int) -> np.ndarray:
        """Normalized differences (S, H, 2J): positions, then velocities."""
        sq, sv = self.predict(x, lag)
        seg = self.segments
        return np.concatenate([(sq - seg.target_q) / seg.scale_q, (sv - seg.target_v) / seg.scale_v], axis=-1)

    def rmse(self, x: np.ndarray, lag: int) -> float:
        r = self.residuals(x, lag)
        return float(np.sqrt(np.mean(r**2))) if np.all(np.isfinite(r)) else math.inf

    def report(self, x: np.ndarray, lag: int) -> dict:
        """rmse, final_rmse and the final-step error per joint in physical units."""
        sq, sv = self.predict(x, lag)
        seg = self.segments
        eq, ev = sq - seg.target_q, sv - seg.target_v
        r = np.concatenate([eq / seg.scale_q, ev / seg.scale_v], axis=-1)
        if not np.all(np.isfinite(r)):
            return {"scales": self.scales(x), "latency_steps": lag, "rmse": math.inf, "final_rmse": math.inf}
        rms = lambda a: float(np.sqrt(np.mean(a**2)))  # noqa: E731
        return {
            "scales": {k: round(v, 6) for k, v in self.scales(x).items()},
            "latency_steps": int(lag),
            "rmse": rms(r),
            "final_rmse": rms(r[:, -1]),
            "joint_rmse": {
                j: {"position": rms(eq[:, -1, i]), "velocity": rms(ev[:, -1, i])}
                for i, j in enumerate(self.joints)
            },
        }


def cross_entropy(problem: Problem, lag: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """CEM over log scales from the nominal model; the best sample seen and its rmse."""
    config, low, high = problem.config, problem.low, problem.high
    mean = np.clip(np.zeros(len(low)), low, high)
    std = np.maximum((high - low) / 4.0, 1e-3)
    best_x, best = mean.copy(), problem.rmse(mean, lag)
    for _ in range(config.iterations):
        samples = np.clip(mean + std * rng.standard_normal((config.population, len(low))), low, high)
        samples[0] = best_x  # the best so far competes again: the search never loses it
        costs = np.array([problem.rmse(x, lag) for x in samples])
        i = int(np.argmin(costs))
        if costs[i] < best:
            best_x, best = samples[i].copy(), float(costs[i])
        elite = samples[np.argsort(costs)[: config.elites]]
        mean, std = elite.mean(0), np.maximum(elite.std(0), 1e-4)
    return best_x, best


def polish(problem: Problem, x0: np.ndarray, lag: int) -> tuple[np.ndarray, float]:
    """Bounded least squares on the normalized residuals from x0 (log scales)."""
    from scipy.optimize import least_squares

    low, high = problem.low, problem.high
    span = np.maximum(high - low, 1e-12)
    x0 = np.clip(x0, low + 1e-9 * span, high - 1e-9 * span)
    fixed = high - low <= 0  # a parameter with low == high is not searched
    if fixed.all():
        return x0, problem.rmse(x0, lag)

    def residuals(free: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[~fixed] = free
        return np.nan_to_num(problem.residuals(x, lag).ravel(), nan=1e3, posinf=1e3, neginf=-1e3)

    result = least_squares(
        residuals,
        x0[~fixed],
        bounds=(low[~fixed], high[~fixed]),
        method="trf",
        diff_step=1e-4,
        xtol=1e-8,
        ftol=1e-10,
        max_nfev=30 * (1 + int((~fixed).sum())),
    )
    x = x0.copy()
    x[~fixed] = result.x
    return x, problem.rmse(x, lag)


def fit(problem: Problem) -> tuple[np.ndarray, int, dict[int, float]]:
    """For each latency candidate: CEM, then the least-squares polish. Returns the best log
    scales, its latency and the best rmse of every candidate."""
    rng = np.random.default_rng(problem.config.seed)
    per_latency: dict[int, float] = {}
    best: tuple[float, np.ndarray, int] | None = None
    for lag in problem.config.latency_steps:
        x, cost = cross_entropy(problem, lag, rng)
        polished, polished_cost = polish(problem, x, lag)
        if polished_cost < cost:
            x, cost = polished, polished_cost
        per_latency[lag] = cost
        if best is None or cost < best[0]:
            best = (cost, x, lag)
    return best[1], best[2], per_latency


def run_sysid(recording: JointRecording, config: SysidConfig | str | Path, out: str | Path | None = None, *,
              source: str | Path = "") -> dict:
    """Fit the recording (ros_nodes.joint_recording.read_recording reads one from a bag; `source`
    names it in the summary), write params.yaml (atomically) if `out` is given, return the summary."""
    from sim2real.physics import restore_nominal

    started = time.perf_counter()
    if not isinstance(config, SysidConfig):
        config = load_config(config)
    sim = simulator_for(config, recording.joints)
    try:
        width = recording.pieces[0][2].shape[1]
        if width != sim.model.nu:
            raise UserError(
                f"the recorded commands have {width} values; {config.env['id']} has {sim.model.nu} actuators"
            )
        segments = make_segments(recording, sim, config)
        problem = Problem(sim, segments, config, recording.joints)
        before = problem.report(np.zeros(len(problem.names)), 0)  # the nominal model, no latency
        x, lag, per_latency = fit(problem)
        after = problem.report(x, lag)
    finally:
        restore_nominal(sim.env)
        sim.env.close()
    summary = {
        "bag": str(source),
        "env": config.env["id"],
        "action_repeat": int(config.env.get("action_repeat", 1)),
        "joints": recording.joints,
        "steps": recording.steps,
        "pieces": len(recording.pieces),
        "dropped_steps": recording.dropped,
        "segments": len(segments.starts),
        "horizon": config.horizon,
        "before": before,
        "after": after,
        "rmse_per_latency": {int(k): v for k, v in per_latency.items()},
        "evaluations": problem.evaluations,
        "seconds": round(time.perf_counter() - started, 2),
        # Ready to train on: as `env.randomization` of a run config it fixes the fitted world.
        "randomization": {
            "physics": dict(after["scales"]),
            "latency_steps": [after["latency_steps"], after["latency_steps"]],
        },
    }
    if out is not None:
        write_params(summary, out)
        summary["out"] = str(out)
    return summary


def write_params(summary: dict, out: str | Path) -> None:
    import yaml

    from rlcontrol.training.atomic import atomic_write_text

    text = (
        "# rlcontrol sysid: fitted simulator parameters (scale factors of the nominal model) and fit quality.\n"
        "# `randomization` can be pasted as env.randomization of a run config (widen its ranges for robustness).\n"
    )
    atomic_write_text(Path(out), text + yaml.safe_dump(json.loads(json.dumps(summary)), sort_keys=False))


def summary_line(summary: dict) -> str:
    after, before = summary["after"], summary["before"]
    scales = ", ".join(f"{k} {v:.3f}" for k, v in after["scales"].items())
    return (
        f"fitted {scales}, latency {after['latency_steps']} step(s) on {summary['steps']} steps "
        f"({summary['segments']} segments of {summary['horizon']}): prediction rmse {before['rmse']:.4f} -> "
        f"{after['rmse']:.4f} (final step {before['final_rmse']:.4f} -> {after['final_rmse']:.4f}) "
        f"in {summary['seconds']:.1f} s"
    )
