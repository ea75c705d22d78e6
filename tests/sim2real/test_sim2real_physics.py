"""sim2real.physics: named parameters as scale factors, exact restoration, real effect on the dynamics."""

import numpy as np
import pytest

import envs
from sim2real.physics import (
    MUJOCO_PARAMETERS,
    get_params,
    physical_parameters,
    restore_nominal,
    set_params,
    supported_params,
)

SCALES = {"mass": 1.7, "friction": 0.6, "damping": 3.0, "actuator_gain": 0.8, "gravity": 0.5}


def model_of(env):
    inner = env.unwrapped
    return inner.dm_env.physics.model.ptr if hasattr(inner, "dm_env") else inner.model


def model_arrays(model) -> dict[str, np.ndarray]:
    """Every numeric array of an MjModel (and of its opt/stat structs): 'the model', for bitwise checks."""
    out = {}
    for owner, prefix in ((model, ""), (model.opt, "opt."), (model.stat, "stat.")):
        for name in dir(owner):
            if name.startswith("_"):
                continue
            try:
                value = getattr(owner, name)
            except Exception:  # noqa: BLE001 - some attributes are methods or raise
                continue
            if isinstance(value, (np.ndarray, float, int)) and not isinstance(value, bool):
                out[prefix + name] = np.array(value, copy=True)
    return out


def assert_models_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    changed = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
    assert not changed, changed


def rollout(env, seed: int, steps: int = 60, actions: np.ndarray | None = None) -> np.ndarray:
    if actions is None:
        actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, env.spec.action_dim))
    observations = [env.reset(seed=seed)]
    for action in actions:
        observations.append(env.step(action).obs)
    return np.array(observations)


def test_supported_params_per_task():
    assert supported_params(envs.make("dmc:cartpole-swingup", seed=0)) == tuple(MUJOCO_PARAMETERS)
    assert supported_params(envs.make("rlc:obstacle-course", seed=0)) == tuple(MUJOCO_PARAMETERS)
    assert supported_params(envs.make("rlc:lane-following", seed=0)) == ("steering_gain", "speed_time_constant")
    assert supported_params(envs.make("gym:Pendulum-v1", seed=0)) == ()
    cheetah = envs.make("gym:HalfCheetah-v5", seed=0)  # gymnasium's MuJoCo envs have the MuJoCo names
    assert supported_params(cheetah) == tuple(MUJOCO_PARAMETERS)
    model = cheetah.unwrapped.gym_env.unwrapped.model
    masses = model.body_mass.copy()
    set_params(cheetah, {"mass": 2.0})
    np.testing.assert_array_equal(model.body_mass, masses * 2.0)


def test_unsupported_env_and_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="gym:Pendulum-v1 has no physical parameters"):
        get_params(envs.make("gym:Pendulum-v1", seed=0))
    lane = envs.make("rlc:lane-following", seed=0)
    with pytest.raises(ValueError, match="rlc:lane-following has no physical parameter 'mass'; it supports steering_gain"):
        set_params(lane, {"mass": 1.2})
    cartpole = envs.make("dmc:cartpole-swingup", seed=0)
    with pytest.raises(ValueError, match="did you mean 'mass'"):
        set_params(cartpole, {"mas": 1.2})
    for bad in ({"mass": 0.0}, {"friction": -0.1}, {"gravity": float("nan")}, {"damping": "x"}):
        with pytest.raises(ValueError, match="must be"):
            set_params(cartpole, bad)
    assert get_params(cartpole) == dict.fromkeys(MUJOCO_PARAMETERS, 1.0)  # nothing was half-applied


@pytest.mark.parametrize("env_id", ["dmc:cartpole-swingup", "rlc:grasp", "rlc:obstacle-course"])
def test_scale_one_restores_the_nominal_model_bit_for_bit(env_id):
    env = envs.make(env_id, seed=0)
    model = model_of(env)
    pristine = model_arrays(model)
    set_params(env, SCALES)
    assert get_params(env) == SCALES
    set_params(env, dict.fromkeys(SCALES, 1.0))
    assert_models_equal(model_arrays(model), pristine)
    set_params(env, {"mass": 0.5, "gravity": 2.0})
    restore_nominal(env)
    assert_models_equal(model_arrays(model), pristine)
    assert get_params(env) == dict.fromkeys(SCALES, 1.0)


def test_set_writes_nominal_times_scale_and_recomputes_mass_constants():
    env = envs.make("dmc:cartpole-swingup", seed=0)
    model = model_of(env)
    nominal = model_arrays(model)
    set_params(env, {"mass": 2.0, "friction": 0.5})
    set_params(env, {"mass": 1.5})  # from the nominal copy, not compounding; friction keeps its 0.5
    np.testing.assert_array_equal(model.body_mass, nominal["body_mass"] * 1.5)
    np.testing.assert_array_equal(model.body_inertia, nominal["body_inertia"] * 1.5)
    np.testing.assert_array_equal(model.geom_friction[:, 0], nominal["geom_friction"][:, 0] * 0.5)
    np.testing.assert_array_equal(model.geom_friction[:, 1:], nominal["geom_friction"][:, 1:])
    np.testing.assert_allclose(model.body_subtreemass, nominal["body_subtreemass"] * 1.5, rtol=1e-12)
    np.testing.assert_allclose(model.dof_M0, nominal["dof_M0"] * 1.5, rtol=1e-12)
    set_params(env, {"gravity": 0.5})
    np.testing.assert_array_equal(model.opt.gravity, [0.0, 0.0, -9.81 * 0.5])
    assert get_params(env) == {"mass": 1.5, "friction": 0.5, "damping": 1.0, "actuator_gain": 1.0, "gravity": 0.5}


def test_setting_mid_episode_leaves_the_simulation_state_alone():
    env = envs.make("dmc:cartpole-swingup", seed=0)
    env.reset(seed=1)
    env.step(np.ones(1))
    data = env.unwrapped.dm_env.physics.data
    state = (data.qpos.copy(), data.qvel.copy(), data.time)
    set_params(env, {"mass": 3.0})  # mj_setConst runs on a scratch copy, not on this data
    np.testing.assert_array_equal(data.qpos, state[0])
    np.testing.assert_array_equal(data.qvel, state[1])
    assert data.time == state[2]


def test_servo_gain_scales_gain_and_position_feedback_together():
    env = envs.make("rlc:grasp", seed=0)
    model = model_of(env)
    gain, bias = model.actuator_gainprm[:, :3].copy(), model.actuator_biasprm[:, :3].copy()
    assert np.all(bias[:, 1] == -gain[:, 0])  # position servos: force = kp * (ctrl - q) - kv * qdot
    set_params(env, {"actuator_gain": 1.25})
    np.testing.assert_array_equal(model.actuator_gainprm[:, :3], gain * 1.25)
    np.testing.assert_array_equal(model.actuator_biasprm[:, :3], bias * 1.25)
    assert np.all(model.actuator_biasprm[:, 1] == -model.actuator_gainprm[:, 0])  # still holds position


def test_heavier_pole_changes_the_dynamics_and_scale_one_replays_exactly():
    env = envs.make("dmc:cartpole-swingup", seed=0)
    nominal = rollout(env, seed=3)
    set_params(env, {"mass": 2.0})
    heavy = rollout(env, seed=3)
    np.testing.assert_array_equal(heavy[0], nominal[0])  # same start: only the dynamics differ
    assert np.abs(heavy[-1] - nominal[-1]).max() > 0.05
    set_params(env, {"mass": 1.0})
    np.testing.assert_array_equal(rollout(env, seed=3), nominal)
    fresh = envs.make("dmc:cartpole-swingup", seed=0)
    np.testing.assert_array_equal(rollout(fresh, seed=3), nominal)


@pytest.mark.parametrize("name", ["gravity", "actuator_gain", "damping"])
def test_each_parameter_changes_the_cartpole(name):
    env = envs.make("dmc:cartpole-swingup", seed=0)
    nominal = rollout(env, seed=3)
    set_params(env, {name: 1.5 if name != "damping" else 5000.0})  # nominal damping is ~5e-4
    assert np.abs(rollout(env, seed=3)[-1] - nominal[-1]).max() > 1e-3


def test_lane_following_parameters():
    env = envs.make("rlc:lane-following", seed=0, observe_lane=True)
    vehicle = env.unwrapped.vehicle
    gentle = np.tile([0.1, 0.0], (15, 1))  # 0.05 rad of steering at a 5 m/s set-point: stays in lane
    nominal = rollout(env, seed=2, actions=gentle)
    set_params(env, {"steering_gain": 1.3, "speed_time_constant": 2.0})
    assert env.unwrapped.vehicle.steering_gain == 1.3
    assert env.unwrapped.vehicle.speed_time_constant == 2.0 * vehicle.speed_time_constant
    changed = rollout(env, seed=2, actions=gentle)
    assert np.abs(changed[-1] - nominal[-1]).max() > 1e-3
    restore_nominal(env)
    assert env.unwrapped.vehicle == vehicle
    np.testing.assert_array_equal(rollout(env, seed=2, actions=gentle), nominal)


def test_task_written_parameters_are_adopted_after_reset():
    """rlc:grasp writes each object's mass and friction at reset: the scale applies to them too."""
    env = envs.make("rlc:grasp", seed=0)
    gripper = model_of(env).body("gripper").id
    gripper_mass = float(model_of(env).body_mass[gripper])
    handle = physical_parameters(env)
    handle.restore()
    handle.set({"mass": 1.5, "friction": 0.5})
    env.reset(seed=4)
    handle.sync_after_reset()
    model, inner = model_of(env), env.unwrapped
    for i, obj in enumerate(inner.objects):
        assert model.body_mass[inner._obj_bodies[i]] == pytest.approx(obj.mass * 1.5, rel=1e-12)
        assert model.geom_friction[inner._obj_geoms[i], 0] == pytest.approx(obj.friction * 0.5, rel=1e-12)
    assert model.body_mass[gripper] == gripper_mass * 1.5  # not written by the task: wrap-time nominal x scale
    handle.restore()
    assert model.body_mass[gripper] == gripper_mass
