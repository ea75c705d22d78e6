"""Named physical parameters of a task, read and set as scale factors of its nominal model.

A parameter is one number per task, a factor applied to every element of the model it names,
so the same names mean the same thing on every task and domain randomization, system
identification and hand-tuning all speak in them:

MuJoCo tasks (dmc:*, rlc:grasp, rlc:obstacle-course, gym:* MuJoCo envs such as HalfCheetah-v5):
  mass           body_mass and body_inertia of every body, by the same factor: a density
                 change (shapes and centres of mass stay). The constants MuJoCo derives from
                 masses (subtree masses, inverse weights that regularize the constraint solver,
                 actuator_acc0, dof_M0, com-based camera/light positions) are recomputed with
                 mj_setConst on a copy of the model, so the live simulation state is never touched.
  friction       sliding friction, geom_friction[:, 0], of every geom (torsional and rolling
                 friction stay: they are rarely known better than their defaults).
  damping        dof_damping of every degree of freedom (joint damping).
  actuator_gain  the force every actuator produces for a given control and state: gainprm[:, :3]
                 and, for actuators with an affine bias (position and velocity servos: force =
                 kp * ctrl - kp * q - kv * qdot), biasprm[:, :3] too, so a servo gets stronger
                 or weaker but still holds the commanded position. Muscle and user actuators are
                 left alone; a model with only those does not support actuator_gain.
  gravity        the gravity vector opt.gravity, as a scale (direction kept; 1.0 is the model's
                 own -9.81 m/s^2 along z), like every other parameter.
Lane following (rlc:lane-following, a kinematic model with no masses or forces):
  steering_gain        BicycleModel.steering_gain: wheel angle per commanded angle (nominal 1).
  speed_time_constant  BicycleModel.speed_time_constant: lag of the speed response.
Other tasks (classic-control gym envs such as gym:Pendulum-v1) have none: asking for their
parameters raises ValueError naming the env.

Nominal values are copied when sim2real first touches an env (`physical_parameters`, which
RandomizedEnv calls when it wraps it). Setting always writes nominal x scale from that copy, so
scale 1.0 restores the nominal model bit for bit, whatever was set before. Parameters that a
task itself writes at every reset (rlc:grasp draws each object's mass and friction per episode)
are adopted as that episode's nominal by `sync_after_reset`, so the scale applies to them too.

    >>> from sim2real.physics import get_params, set_params, supported_params
    >>> supported_params(env)          # ('mass', 'friction', 'damping', 'actuator_gain', 'gravity')
    >>> set_params(env, {"mass": 1.2})  # takes effect from the next physics step; reset to start clean
    >>> get_params(env)                # {'mass': 1.2, 'friction': 1.0, ...}
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import weakref
from collections.abc import Callable, Mapping

import numpy as np

MUJOCO_PARAMETERS: dict[str, str] = {
    "mass": "body masses and inertias",
    "friction": "sliding friction of every geom",
    "damping": "joint (dof) damping",
    "actuator_gain": "actuator force per control (servo gains included)",
    "gravity": "the gravity vector",
}
LANE_PARAMETERS: dict[str, str] = {
    "steering_gain": "front-wheel angle per commanded steering angle",
    "speed_time_constant": "lag of the speed response to its set-point",
}
PARAMETER_NAMES: tuple[str, ...] = (*MUJOCO_PARAMETERS, *LANE_PARAMETERS)
# Scales that must stay > 0 (a massless moving body or a zero steering gain breaks the task);
# every other scale must be >= 0.
POSITIVE_SCALES = frozenset({"mass", "steering_gain"})

# What mj_setConst derives from body masses; copied back from a scratch copy of the model.
# (Geometry-derived fields it also writes, e.g. geom_sameframe, bvh_aabb, are the task's business.)
_MASS_DERIVED = ("body_subtreemass", "body_invweight0", "dof_invweight0", "dof_M0", "tendon_invweight0",
                 "actuator_acc0", "cam_poscom0", "light_poscom0")


def check_scale(name: str, value: float) -> float:
    """`value` as a float if it is a valid scale for parameter `name`, else ValueError."""
    if name not in PARAMETER_NAMES:
        raise ValueError(f"unknown physical parameter {name!r}{_did_you_mean(name, PARAMETER_NAMES)}; "
                         f"known: {', '.join(PARAMETER_NAMES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"the scale of {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and name in POSITIVE_SCALES):
        bound = "> 0" if name in POSITIVE_SCALES else ">= 0"
        raise ValueError(f"the scale of {name} must be a finite number {bound}, got {value}")
    return value


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class PhysicalParameters:
    """The named parameters of one env, with its nominal values. Made by `physical_parameters`.

    `names`: the parameters this env supports, in a fixed order. `get()` returns the scales in
    effect, `set(scales)` changes some of them (the others keep theirs), `restore()` returns to
    the nominal model. Changes take effect from the next physics step; the simulation state
    (positions, velocities) is never touched.
    """

    names: tuple[str, ...] = ()

    def __init__(self, env_id: str):
        self.env_id = env_id
        self._scales: dict[str, float] = {}

    def get(self) -> dict[str, float]:
        return dict(self._scales)

    def set(self, scales: Mapping[str, float]) -> None:
        checked = {name: check_scale(name, value) for name, value in scales.items()}
        unsupported = [name for name in checked if name not in self.names]
        if unsupported:
            raise ValueError(f"{self.env_id} has no physical parameter {unsupported[0]!r}; it supports "
                             f"{', '.join(self.names)}")
        self._write(checked)
        self._scales.update(checked)

    def restore(self) -> None:
        """Back to the nominal model (and to the wrap-time nominal of task-written entries)."""
        self._restore()
        self._scales = dict.fromkeys(self.names, 1.0)

    def sync_after_reset(self) -> None:
        """Call after the task's reset: adopts values the task wrote itself as this episode's
        nominal and applies the current scales to them. A no-op for tasks that write none."""

    def _write(self, scales: dict[str, float]) -> None:
        raise NotImplementedError

    def _restore(self) -> None:
        raise NotImplementedError


@dataclasses.dataclass
class _Part:
    """One slice of a model array that a parameter scales: `array(model)[index]`."""

    array: Callable[[object], np.ndarray]
    index: object


class MujocoParameters(PhysicalParameters):
    """mass, friction, damping, actuator_gain, gravity of one MjModel (see the module docstring)."""

    def __init__(self, env_id: str, model):
        import mujoco

        super().__init__(env_id)
        self.model = model
        servo = np.flatnonzero(np.isin(model.actuator_gaintype, (mujoco.mjtGain.mjGAIN_FIXED,
                                                                 mujoco.mjtGain.mjGAIN_AFFINE)))
        affine_bias = servo[model.actuator_biastype[servo] == mujoco.mjtBias.mjBIAS_AFFINE]
        self._parts: dict[str, list[_Part]] = {
            "mass": [_Part(lambda m: m.body_mass, slice(None)), _Part(lambda m: m.body_inertia, slice(None))],
            "friction": [_Part(lambda m: m.geom_friction, (slice(None), 0))],
            "damping": [_Part(lambda m: m.dof_damping, slice(None))],
            "actuator_gain": [_Part(lambda m: m.actuator_gainprm, (servo, slice(0, 3))),
                              _Part(lambda m: m.actuator_biasprm, (affine_bias, slice(0, 3)))],
            "gravity": [_Part(lambda m: m.opt.gravity, slice(None))],
        }
        if servo.size == 0:
            del self._parts["actuator_gain"]
        self.names = tuple(self._parts)
        self._nominal = {name: [self._read(p) for p in parts] for name, parts in self._parts.items()}
        self._episode_nominal = copy.deepcopy(self._nominal)
        self._nominal_derived = {f: getattr(model, f).copy() for f in _MASS_DERIVED}
        self._scales = dict.fromkeys(self.names, 1.0)

    def _read(self, part: _Part) -> np.ndarray:
        return np.array(part.array(self.model)[part.index], dtype=np.float64, copy=True)

    def _write(self, scales: dict[str, float]) -> None:
        for name, scale in scales.items():
            for part, nominal in zip(self._parts[name], self._episode_nominal[name]):
                part.array(self.model)[part.index] = nominal * scale
        if "mass" in scales:
            self._update_mass_derived(scales["mass"])

    def _restore(self) -> None:
        self._episode_nominal = copy.deepcopy(self._nominal)
        self._write(dict.fromkeys(self.names, 1.0))

    def _update_mass_derived(self, scale: float) -> None:
        masses_nominal = all(np.array_equal(a, b) for a, b in zip(self._episode_nominal["mass"], self._nominal["mass"]))
        if scale == 1.0 and masses_nominal:
            source = self._nominal_derived  # bit for bit what the model had: no recomputation
        elif scale == 1.0:
            return  # the task's own masses at scale 1: its own mj_setConst (if any) stands
        else:
            import mujoco

            scratch = copy.copy(self.model)  # mj_setConst uses an MjData as scratch space
            mujoco.mj_setConst(scratch, mujoco.MjData(scratch))
            source = {f: getattr(scratch, f) for f in _MASS_DERIVED}
        for f in _MASS_DERIVED:
            getattr(self.model, f)[...] = source[f]

    def sync_after_reset(self) -> None:
        adopted = {}
        for name, parts in self._parts.items():
            scale = self._scales[name]
            for part, nominal in zip(parts, self._episode_nominal[name]):
                current = self._read(part)
                changed = current != nominal * scale  # entries the task wrote during its reset
                if changed.any():
                    nominal[changed] = current[changed]
                    adopted[name] = scale
        if adopted:
            self._write(adopted)


class LaneParameters(PhysicalParameters):
    """steering_gain and speed_time_constant of rlc:lane-following's BicycleModel."""

    names = tuple(LANE_PARAMETERS)

    def __init__(self, env_id: str, lane_env):
        super().__init__(env_id)
        self.lane_env = lane_env
        self._nominal = lane_env.vehicle
        self._scales = dict.fromkeys(self.names, 1.0)

    def _write(self, scales: dict[str, float]) -> None:
        changes = {name: getattr(self._nominal, name) * scale for name, scale in scales.items()}
        self.lane_env.vehicle = dataclasses.replace(self.lane_env.vehicle, **changes)

    def _restore(self) -> None:
        self.lane_env.vehicle = self._nominal


# One handle per simulator object, so every caller sees the same nominal copy and scales.
_HANDLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def physical_parameters(env) -> PhysicalParameters:
    """The parameter handle of `env` (any wrapper stack; made, and the nominal copied, on first use).

    Raises ValueError naming the env if it has no parameters sim2real can set.
    """
    inner = env.unwrapped
    handle = _HANDLES.get(inner)
    if handle is None:
        handle = _make_handle(inner)
        _HANDLES[inner] = handle
    return handle


def _make_handle(inner) -> PhysicalParameters:
    import mujoco

    from envs.lane import BicycleModel

    env_id = inner.spec.env_id
    if isinstance(getattr(inner, "vehicle", None), BicycleModel):
        return LaneParameters(env_id, inner)
    model = None
    if getattr(inner, "dm_env", None) is not None:
        model = inner.dm_env.physics.model.ptr
    elif isinstance(getattr(inner, "model", None), mujoco.MjModel):
        model = inner.model
    elif getattr(inner, "gym_env", None) is not None:
        model = getattr(inner.gym_env.unwrapped, "model", None)
    if not isinstance(model, mujoco.MjModel):
        raise ValueError(f"{env_id} has no physical parameters sim2real can set: it is neither a MuJoCo model "
                         "(dmc:*, rlc:grasp, rlc:obstacle-course, gym MuJoCo envs) nor rlc:lane-following")
    return MujocoParameters(env_id, model)


def supported_params(env) -> tuple[str, ...]:
    """Names of the parameters `env` supports; () for an env without any."""
    try:
        return physical_parameters(env).names
    except ValueError:
        return ()


def get_params(env) -> dict[str, float]:
    """The scale of every supported parameter now in effect (1.0: nominal)."""
    return physical_parameters(env).get()


def set_params(env, params: Mapping[str, float]) -> None:
    """Sets the given parameters to nominal x scale; the others keep their current scale."""
    physical_parameters(env).set(params)


def restore_nominal(env) -> None:
    """Every parameter back to its nominal value, bit for bit."""
    physical_parameters(env).restore()
