"""The QT-Opt grasping task (`rlc:grasp`, envs/grasp.py) and `env.kwargs` in run configs.

The generic `Env` contract is checked for this id by test_env_contract.py; here: seeding,
object randomization and the train/test split, gripper motion and bounds, automatic grasp
scoring, the scripted baseline against random actions, pixel observations.
"""

import dataclasses
import math

import numpy as np
import pytest

import envs
from envs.grasp import (
    BIN_HALF,
    ENV_ID,
    FINGER_TRAVEL,
    FRICTION_RANGE,
    HELD_OUT_SHAPES,
    MASS_RANGE,
    MAX_DXYZ,
    MAX_DYAW,
    OBJECT_SETS,
    PLACE_LIMIT,
    SIZE_BANDS,
    TEST_BANDS,
    TRAIN_BANDS,
    TRAIN_SHAPES,
    XY_LIMIT,
    Z_MAX,
    Z_MIN,
    GraspEnv,
    ObjectParams,
    ScriptedGrasp,
    random_policy,
    sample_objects,
    success_rate,
)


def a_box(x=0.05, y=-0.03, yaw=0.4, width=0.02) -> ObjectParams:
    """A hand-placed 5 x 4 x 4 cm box, 0.1 kg, friction 0.8."""
    half = (0.025, width, 0.02)
    return ObjectParams("box", 2, width, half, half, 0.1, 0.8, x, y, yaw, (0.8, 0.2, 0.2, 1.0))


def action(dx=0.0, dy=0.0, dz=0.0, dyaw=0.0, grip=-1.0, *extra) -> np.ndarray:
    return np.array([dx, dy, dz, dyaw, grip, *extra])


def run_episode(env, policy) -> list:
    results = []
    while True:
        results.append(env.step(policy(env)))
        if results[-1].terminated or results[-1].truncated:
            return results


# ---------------------------------------------------------------------------- seeding


def test_same_seed_same_objects_and_trajectory() -> None:
    env_a, env_b = GraspEnv(seed=5), GraspEnv(seed=5)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(env_a.max_steps, 5))
    for _ in range(2):  # the first episode and the next one from the continued stream
        obs_a, obs_b = env_a.reset(), env_b.reset()
        assert env_a.objects == env_b.objects
        np.testing.assert_array_equal(obs_a, obs_b)
        for a in actions:
            result_a, result_b = env_a.step(a), env_b.step(a)
            np.testing.assert_array_equal(result_a.obs, result_b.obs)
            assert result_a.reward == result_b.reward and result_a.terminated == result_b.terminated
    first_obs = env_a.reset(seed=9)
    first_objects = env_a.objects
    env_a.step(actions[0])
    np.testing.assert_array_equal(env_a.reset(seed=9), first_obs)
    assert env_a.objects == first_objects
    env_a.reset(seed=10)
    assert env_a.objects != first_objects


# ---------------------------------------------------------------------------- objects


@pytest.mark.parametrize("object_set", ["train", "test"])
def test_objects_are_drawn_within_the_documented_ranges(object_set: str) -> None:
    rng = np.random.default_rng(0)
    allowed = OBJECT_SETS[object_set].pairs()
    seen, counts = set(), set()
    for _ in range(300):
        objects = sample_objects(rng, object_set, max_objects=3)
        counts.add(len(objects))
        for obj in objects:
            seen.add((obj.shape, obj.band))
            lo, hi = SIZE_BANDS[obj.band]
            assert lo <= obj.width < hi
            assert obj.half_extents[1] == obj.width  # the fingers close across the body's y axis
            assert obj.half_extents[2] <= 0.036  # at most 7.2 cm tall: the fingers are 8 cm long
            assert 2 * obj.width < 2 * FINGER_TRAVEL  # fits between the open fingers
            assert MASS_RANGE[0] <= obj.mass <= MASS_RANGE[1]
            assert FRICTION_RANGE[0] <= obj.friction <= FRICTION_RANGE[1]
            assert abs(obj.x) <= PLACE_LIMIT and abs(obj.y) <= PLACE_LIMIT
            assert abs(obj.x) + obj.footprint_radius < BIN_HALF and abs(obj.y) + obj.footprint_radius < BIN_HALF
        for i, a in enumerate(objects):  # footprints apart
            for b in objects[i + 1:]:
                assert math.hypot(a.x - b.x, a.y - b.y) > a.footprint_radius + b.footprint_radius
    assert counts == {1, 2, 3}
    assert seen == allowed  # every (shape, band) pair of the set occurs, and nothing else


def test_train_and_test_objects_are_disjoint() -> None:
    train, test = OBJECT_SETS["train"].pairs(), OBJECT_SETS["test"].pairs()
    assert not train & test
    assert set(TRAIN_BANDS).isdisjoint(TEST_BANDS)
    assert {s for s, _ in train} == set(TRAIN_SHAPES)
    assert set(HELD_OUT_SHAPES) <= {s for s, _ in test} and not set(HELD_OUT_SHAPES) & set(TRAIN_SHAPES)
    # Interleaved bands: the test sizes lie between and around the training sizes.
    assert sorted(TRAIN_BANDS + TEST_BANDS) == list(range(len(SIZE_BANDS)))


def test_the_simulated_objects_are_the_drawn_ones() -> None:
    env = GraspEnv(seed=3)
    env.reset()
    model = env.model
    for i, obj in enumerate(env.objects):
        g, b = env._obj_geoms[i], env._obj_bodies[i]
        np.testing.assert_allclose(model.geom_size[g], obj.size)
        assert model.body_mass[b] == pytest.approx(obj.mass)
        assert model.geom_friction[g, 0] == pytest.approx(obj.friction)
        x, y, z, _ = env.object_poses()[i]
        # Settled on the floor near where it was placed.
        assert abs(x - obj.x) < 0.01 and abs(y - obj.y) < 0.01
        assert z == pytest.approx(obj.half_extents[2], abs=0.003)


# ---------------------------------------------------------------------------- actions


def test_actions_move_the_gripper_by_the_scaled_amount() -> None:
    env = GraspEnv(seed=0)
    env.reset(objects=[a_box(x=-0.1, y=-0.1)], gripper=(0.0, 0.0, 0.15, 0.0))
    for axis, scale in ((0, MAX_DXYZ), (1, MAX_DXYZ), (2, MAX_DXYZ), (3, MAX_DYAW)):
        for fraction in (1.0, -0.5):
            a = np.zeros(5)
            a[axis], a[4] = fraction, -1.0
            before = env.gripper_pose()
            result = env.step(a)
            moved = env.gripper_pose() - before
            assert moved[axis] == pytest.approx(fraction * scale, rel=0.02)
            assert np.all(np.abs(np.delete(moved, axis)) < 0.02 * scale)
            np.testing.assert_allclose(result.info["applied_action"][axis], fraction * scale)
    x, y, z, yaw = env.gripper_pose()
    gripper_obs = result.obs[:8]
    np.testing.assert_allclose(gripper_obs[:5], [x, y, z, math.sin(yaw), math.cos(yaw)], atol=1e-6)
    # Closing: the fingers shut within one step when nothing is between them.
    assert gripper_obs[5] == pytest.approx(1.0, abs=0.01) and gripper_obs[6] == 0.0
    result = env.step(action(grip=1.0))
    assert env.finger_opening() < 0.002 and result.obs[5] < 0.02 and result.obs[6] == 1.0


def test_the_gripper_stays_inside_the_bin() -> None:
    env = GraspEnv(seed=0, max_steps=40)
    env.reset(objects=[a_box(x=0.1, y=0.1)], gripper=(0.0, 0.0, 0.15, 0.0))
    for a in [action(dx=-1, dy=-1, dz=-1, dyaw=-1)] * 14 + [action(dx=1, dy=1, dz=1, dyaw=1)] * 24:
        env.step(a)
        x, y, z, yaw = env.gripper_pose()
        # Joint limits are (stiff) soft constraints in MuJoCo: a millimetre of give.
        assert abs(x) <= XY_LIMIT + 1e-3 and abs(y) <= XY_LIMIT + 1e-3
        assert Z_MIN - 1e-3 <= z <= Z_MAX + 1e-3 and abs(yaw) <= math.pi + 0.01
    # After 24 steps of +1 it sits at the upper limits (it got there, it did not stop short).
    np.testing.assert_allclose(env.gripper_pose()[:3], [XY_LIMIT, XY_LIMIT, Z_MAX], atol=2e-3)


# ---------------------------------------------------------------------------- scoring


def test_a_scripted_grasp_of_a_placed_object_is_rewarded_at_the_final_step_only() -> None:
    env = GraspEnv(seed=0)
    env.reset(objects=[a_box()], gripper=(-0.08, 0.06, 0.2, -1.0))
    policy = ScriptedGrasp()
    results = run_episode(env, policy)
    assert len(results) == env.max_steps
    assert [r.reward for r in results] == [0.0] * (env.max_steps - 1) + [1.0]
    assert [r.terminated for r in results] == [False] * (env.max_steps - 1) + [True]
    assert not any(r.truncated for r in results)
    assert results[-1].info["success"] and results[-1].info["lifted_object"] == 0
    # The object really is out of the bin and between the fingers.
    assert env.object_poses()[0, 2] > 0.2 and 0.03 < env.finger_opening() < 0.05
    with pytest.raises(RuntimeError):
        env.step(action())


def test_the_terminate_action_ends_the_attempt_early() -> None:
    env = GraspEnv(seed=0, terminate_action=True)
    assert env.spec.action_dim == 6 and env.spec.action_names[-1] == "terminate"
    env.reset(objects=[a_box()], gripper=(-0.08, 0.06, 0.2, -1.0))
    results = run_episode(env, ScriptedGrasp())
    assert len(results) < env.max_steps
    assert results[-1].terminated and results[-1].reward == 1.0 and results[-1].info["terminate_action"]
    # Terminating at once, far from the object: scored, and a failure.
    env.reset(objects=[a_box()], gripper=(-0.08, 0.06, 0.2, -1.0))
    result = env.step(action(0, 0, 0, 0, -1, 1))
    assert result.terminated and result.reward == 0.0 and not result.info["success"]


def test_a_gripper_that_never_closes_gets_nothing() -> None:
    # Hovering open over the object for the whole attempt: the automatic close at the end
    # pinches air, so the reward is 0 at every step.
    env = GraspEnv(seed=0)
    env.reset(objects=[a_box(x=0.0, y=0.0, yaw=0.0)], gripper=(0.0, 0.0, 0.2, 0.0))
    results = run_episode(env, lambda env: action(grip=-1.0))
    assert all(r.reward == 0.0 for r in results) and results[-1].terminated
    assert env.held_object() == -1


def test_a_grip_at_the_floor_is_not_yet_a_success() -> None:
    # Both fingers touch the object, but it is still in the bin: held_object needs both.
    env = GraspEnv(seed=0)
    env.reset(objects=[a_box(x=0.0, y=0.0, yaw=0.0)], gripper=(0.0, 0.0, 0.04, 0.0))
    env.step(action(dz=-1.0))
    result = env.step(action(grip=1.0))
    assert 0.03 < env.finger_opening() < 0.05 and result.reward == 0.0
    assert env.held_object() == -1


def test_the_scripted_policy_beats_random_actions_by_far() -> None:
    env = GraspEnv(seed=0)
    scripted = success_rate(env, ScriptedGrasp(), episodes=30, seed=100)
    rand = success_rate(env, random_policy(np.random.default_rng(0)), episodes=30, seed=100)
    assert scripted >= 0.85
    assert rand <= 0.15
    test_env = GraspEnv(seed=0, object_set="test")
    assert success_rate(test_env, ScriptedGrasp(), episodes=15, seed=200) >= 0.8


# ---------------------------------------------------------------------------- observations


def test_state_observation_layout() -> None:
    env = envs.make(ENV_ID, seed=0, obs_format="dict")
    assert env.spec.observation == {"gripper": envs.ArraySpec((8,), np.float32),
                                    "object": envs.ArraySpec((8,), np.float32)}
    assert env.spec.control_period == pytest.approx(0.08) and env.spec.max_episode_steps == 20
    obs = env.reset()
    inner = env.unwrapped
    i = inner.nearest_object()
    ox, oy, oz, _ = inner.object_poses()[i]
    x, y, z, _ = inner.gripper_pose()
    np.testing.assert_allclose(obs["object"][:6], [ox - x, oy - y, oz - z, *inner.objects[i].half_extents],
                               atol=1e-6)
    assert obs["gripper"][7] == 1.0  # all steps left
    assert env.step(np.zeros(5)).obs["gripper"][7] == pytest.approx(19 / 20)
    only_gripper = envs.make(ENV_ID, seed=0, observe_objects=False)
    assert only_gripper.spec.observation == envs.ArraySpec((8,), np.float32)


def test_pixel_observations_come_from_the_over_shoulder_camera() -> None:
    env = envs.make(ENV_ID, seed=0, pixels=True, pixel_size=48, include_state=True, observe_objects=False)
    assert env.spec.observation == {"pixels": envs.ArraySpec((3, 48, 48), np.uint8),
                                    "state": envs.ArraySpec((8,), np.float32)}
    inner = env.unwrapped
    assert inner.model.camera(0).name == "over_shoulder"  # what the wrapper's camera=0 renders
    first = env.reset()
    assert first["pixels"].dtype == np.uint8 and first["pixels"].std() > 10
    np.testing.assert_array_equal(first["pixels"], inner.render(48, 48, "over_shoulder").transpose(2, 0, 1))
    np.testing.assert_array_equal(first["state"][:3], inner.gripper_pose()[:3].astype(np.float32))
    # Moving the gripper (down and towards the camera, so into view) changes the picture.
    frames = [env.step(action(dx=-1.0, dz=-1.0)).obs["pixels"] for _ in range(3)]
    assert np.abs(frames[-1].astype(int) - first["pixels"].astype(int)).sum() > 500
    env.close()


# ---------------------------------------------------------------------------- configs


def test_env_kwargs_from_a_config_reach_the_task(tmp_path) -> None:
    from rlcontrol.config import Config, load_config
    from rlcontrol.errors import UserError
    from rlcontrol.training.builders import make_env

    assert Config().env.kwargs == {}
    path = tmp_path / "grasp.yaml"
    path.write_text("env:\n  id: rlc:grasp\n  kwargs:\n    object_set: test\n    max_steps: 10\n")
    config = load_config(path, ["env.kwargs.terminate_action=true"])
    assert config.env.kwargs == {"object_set": "test", "max_steps": 10, "terminate_action": True}
    env = make_env(config.env, config.seed)
    assert env.unwrapped.object_set == "test" and env.spec.max_episode_steps == 10 and env.spec.action_dim == 6
    env.close()
    for bad in ({"no_such_option": 1}, {"seed": 3}, {"pixels": True}):
        with pytest.raises(UserError):
            make_env(dataclasses.replace(config.env, kwargs=bad), 0)


def test_env_kwargs_must_be_a_mapping(tmp_path) -> None:
    from rlcontrol.config import load_config
    from rlcontrol.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text("env:\n  kwargs: [object_set, test]\n")
    with pytest.raises(ConfigError, match="env.kwargs"):
        load_config(path)
