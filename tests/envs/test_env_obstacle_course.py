"""The obstacle-course task (envs/obstacle_course.py): courses, terrain profile, physics, endings.

The generic `Env` contract (determinism, action bounds, truncation) runs over this task in
test_env_contract.py; this file checks what is specific to it.
"""

import time
from pathlib import Path

import mujoco
import numpy as np
import pytest

import envs
from envs.obstacle_course import (
    COURSE_START,
    EPISODE_STEPS,
    NUM_BOXES,
    OBSTACLE_KINDS,
    PIT_FLOOR,
    TERRAIN_OFFSETS,
    CourseBuilder,
    CourseConfig,
    ObstacleCourseEnv,
    generate_course,
)

ENV_ID = "rlc:obstacle-course"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ZERO = np.zeros(6)


def make(seed=0, obs_format="dict", **kwargs) -> ObstacleCourseEnv:
    env = envs.make(ENV_ID, seed=seed, obs_format=obs_format, **kwargs)
    assert isinstance(env, ObstacleCourseEnv)  # no wrappers: tests may reach into the simulator
    return env


def place(env: ObstacleCourseEnv, x: float | None = None, z: float | None = None, pitch: float | None = None,
          vx: float | None = None) -> None:
    """Moves the torso (and sets its forward velocity) in the current episode."""
    qpos, qvel = env.data.qpos, env.data.qvel
    for i, value in ((0, x), (1, z), (2, pitch)):
        if value is not None:
            qpos[i] = value
    if vx is not None:
        qvel[0] = vx
    mujoco.mj_forward(env.model, env.data)


def box_of(env: ObstacleCourseEnv, x: float) -> int:
    """Geom id of the terrain box spanning x."""
    for gid in env._box_ids:
        if env.model.geom_contype[gid] and abs(env.model.geom_pos[gid][0] - x) < env.model.geom_size[gid][0]:
            return int(gid)
    raise AssertionError(f"no box at x={x}")


# --------------------------------------------------------------------------- spec


def test_spec_and_observation_layout() -> None:
    env = make(obs_format="dict")
    spec = env.spec
    assert spec.env_id == ENV_ID and spec.action_dim == 6
    assert spec.action_names == ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
    np.testing.assert_array_equal(spec.action_low, -np.ones(6, np.float32))
    np.testing.assert_array_equal(spec.action_high, np.ones(6, np.float32))
    assert spec.control_period == pytest.approx(0.01) and spec.max_episode_steps == EPISODE_STEPS == 1000
    assert list(spec.observation) == ["proprio", "terrain"]
    assert spec.observation["proprio"].shape == (16,) and spec.observation["terrain"].shape == (48,)
    assert spec.obs_layout == (("proprio", (16,)), ("terrain", (48,)))
    # The profile looks 3.4 m ahead and a little behind the torso centre.
    assert TERRAIN_OFFSETS[0] < 0 < TERRAIN_OFFSETS[-1] and TERRAIN_OFFSETS[-1] > 3.0
    env.close()


def test_flat_is_the_dict_concatenated_in_order() -> None:
    flat_env, dict_env = make(seed=4, obs_format="flat"), make(seed=4, obs_format="dict")
    flat, named = flat_env.reset(), dict_env.reset()
    assert flat.shape == (64,) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat, np.concatenate([named["proprio"], named["terrain"]]))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 6))
    for action in actions:
        a, b = flat_env.step(action), dict_env.step(action)
        np.testing.assert_array_equal(a.obs, np.concatenate([b.obs["proprio"], b.obs["terrain"]]))
        assert a.reward == b.reward
    flat_env.close()
    dict_env.close()


def test_unknown_keyword_and_bad_course_settings_raise() -> None:
    with pytest.raises(TypeError, match="hurdel"):
        envs.make(ENV_ID, hurdel_height=(0.1, 0.2))
    with pytest.raises(ValueError, match="kinds"):
        envs.make(ENV_ID, kinds=("wall",))
    with pytest.raises(ValueError, match="max_level"):
        CourseConfig(step_height=(0.1, 0.5), max_level=0.6)


# --------------------------------------------------------------------------- seeding and courses


def test_same_seed_same_course_and_trajectory() -> None:
    env_a, env_b = make(seed=3), make(seed=3)
    obs_a, obs_b = env_a.reset(), env_b.reset()
    assert env_a.course == env_b.course
    for name in obs_a:
        np.testing.assert_array_equal(obs_a[name], obs_b[name])
    for action in np.random.default_rng(1).uniform(-1, 1, size=(200, 6)):
        a, b = env_a.step(action), env_b.step(action)
        for name in a.obs:
            np.testing.assert_array_equal(a.obs[name], b.obs[name])
        assert (a.reward, a.terminated, a.truncated) == (b.reward, b.terminated, b.truncated)
        if a.terminated:
            break
    env_a.close()
    env_b.close()


def test_different_seeds_give_different_courses_and_starts() -> None:
    env = make()
    courses, starts = [], []
    for seed in range(4):
        starts.append(env.reset(seed=seed)["proprio"])
        courses.append(env.course)
    for i in range(4):
        for j in range(i):
            assert courses[i] != courses[j]
            assert not np.array_equal(starts[i], starts[j])
    env.close()


def test_every_episode_gets_a_new_course_and_a_seed_replays_it() -> None:
    env = make()
    first_obs = env.reset(seed=5)
    first = env.course
    env.step(np.ones(6))
    env.reset()  # no seed: the RNG stream continues
    second = env.course
    assert second != first
    replay_obs = env.reset(seed=5)
    assert env.course == first
    np.testing.assert_array_equal(replay_obs["terrain"], first_obs["terrain"])
    np.testing.assert_array_equal(replay_obs["proprio"], first_obs["proprio"])
    env.reset()
    assert env.course == second  # the stream after reset(5) is the same stream again
    env.close()


def test_generated_courses_have_every_obstacle_kind_a_run_up_and_growing_sizes() -> None:
    config = CourseConfig()
    for seed in range(5):
        course = generate_course(np.random.default_rng(seed), config)
        kinds = [o.kind for o in course.obstacles]
        assert set(kinds) == set(OBSTACLE_KINDS), seed
        assert len(course.solid_segments()) <= NUM_BOXES
        # A flat run-up: nothing in the first metres, the first obstacle small.
        first = course.obstacles[0]
        assert first.x_start >= config.run_up
        assert np.all(course.height_at(np.linspace(-5.0, config.run_up - 1e-6, 50)) == 0.0)
        easy = lambda lo, hi: lo + config.start_difficulty * (hi - lo) + 1e-9  # noqa: E731
        limits = {"hurdle": easy(*config.hurdle_height), "gap": easy(*config.gap_width),
                  "step": easy(*config.step_height)}
        assert abs(first.size) <= limits[first.kind]
        # Obstacles placed up to the course length; floors stay between 0 and max_level.
        assert config.length - config.spacing[1] - 1.0 < course.obstacles[-1].x_start < config.length
        floors = course.heights[[k == "ground" for k in course.kinds]]
        assert floors.min() >= 0.0 and floors.max() <= config.max_level + 1e-9
        for o in course.obstacles:
            if o.kind == "hurdle":
                assert config.hurdle_height[0] <= o.size <= config.hurdle_height[1]
                assert config.hurdle_width[0] <= o.x_end - o.x_start <= config.hurdle_width[1]
            elif o.kind == "gap":
                assert config.gap_width[0] <= o.size <= config.gap_width[1]
                assert o.size == pytest.approx(o.x_end - o.x_start)
            else:
                assert config.step_height[0] <= abs(o.size) <= config.step_height[1]


def test_kinds_can_be_restricted() -> None:
    env = make(kinds=("gap",))
    env.reset()
    assert {o.kind for o in env.course.obstacles} == {"gap"}
    env.close()


# --------------------------------------------------------------------------- terrain


HAND_MADE = dict(hurdle=(2.0, 2.3, 0.25), gap=(3.3, 3.8), step=(4.8, 0.2))


def hand_made_course():
    return (CourseBuilder().flat(2.0).hurdle(width=0.3, height=0.25).flat(1.0).gap(0.5).flat(1.0)
            .step(0.2).flat(2.0).build())


def expected_height(x: np.ndarray) -> np.ndarray:
    """The hand-made course written out independently of the Course class."""
    h = np.zeros_like(x)
    h[(x >= 2.0) & (x < 2.3)] = 0.25
    h[(x >= 3.3) & (x < 3.8)] = PIT_FLOOR
    h[x >= 4.8] = 0.2
    h[x < COURSE_START] = PIT_FLOOR
    return h


def test_course_lookups_match_the_layout() -> None:
    course = hand_made_course()
    assert [o.kind for o in course.obstacles] == ["hurdle", "gap", "step"]
    xs = np.array([-150.0, -99.0, 0.0, 1.99, 2.01, 2.29, 2.31, 3.31, 3.79, 3.81, 4.79, 4.81, 50.0, 2000.0])
    np.testing.assert_allclose(course.height_at(xs), expected_height(xs), atol=1e-12)
    # Over the gap the rim is the lower of its two floors (both 0 here); elsewhere the height.
    assert course.rim_at(3.5) == 0.0 and course.rim_at(2.1) == pytest.approx(0.25)
    assert course.rim_at_scalar(3.5) == 0.0 and course.rim_at_scalar(5.0) == pytest.approx(0.2)
    assert course.obstacles_before(3.0) == 1 and course.obstacles_before(10.0) == 3


def test_terrain_profile_matches_the_course_geometry() -> None:
    env = make()
    obs = env.reset(seed=0, course=hand_made_course())
    x, z = env.data.qpos[0], env.data.qpos[1]
    expected = expected_height(x + TERRAIN_OFFSETS) - z
    np.testing.assert_allclose(obs["terrain"], expected.astype(np.float32), atol=1e-6)
    # Standing on the run-up, the floor under the torso is its height below the torso.
    assert 0.3 < -obs["terrain"][np.argmin(np.abs(TERRAIN_OFFSETS))] < 0.8
    # Move the torso just before the hurdle: the profile starts with the hurdle's top.
    place(env, x=1.99 - TERRAIN_OFFSETS[0], z=1.0)
    profile = env.terrain_profile()
    assert profile[0] == pytest.approx(0.0 - 1.0)
    assert profile[1] == pytest.approx(0.25 - 1.0)  # 8 cm further: on the hurdle
    np.testing.assert_allclose(profile, expected_height(env.data.qpos[0] + TERRAIN_OFFSETS) - 1.0)
    env.close()


def test_simulated_boxes_are_the_course_segments() -> None:
    env = make()
    env.reset(seed=2)
    m = env.model
    solid = env.course.solid_segments()
    in_use = env._box_ids[: len(solid)]
    for gid, (x0, x1, top, _) in zip(in_use, solid):
        pos, size = m.geom_pos[gid], m.geom_size[gid]
        assert pos[0] - size[0] == pytest.approx(x0) and pos[0] + size[0] == pytest.approx(x1)
        assert pos[2] + size[2] == pytest.approx(top) and pos[2] - size[2] == pytest.approx(PIT_FLOOR)
        assert m.geom_rbound[gid] == pytest.approx(np.linalg.norm(size))
        np.testing.assert_allclose(env.data.geom_xpos[gid], pos)  # the simulator uses the new pose
    assert not m.geom_contype[env._box_ids[len(solid):]].any()  # parked boxes collide with nothing
    env.close()


# --------------------------------------------------------------------------- physics and endings


def test_the_cheetah_collides_with_a_hurdle() -> None:
    env = make()
    env.reset(seed=0, course=CourseBuilder().flat(1.5).hurdle(width=0.3, height=0.3).flat(5.0).build())
    hurdle = box_of(env, 1.65)
    place(env, vx=5.0)  # shove it at the hurdle
    touched, max_x = False, -np.inf
    for _ in range(100):
        env.step(ZERO)
        touched |= any(hurdle in (c.geom1, c.geom2) for c in env.data.contact[: env.data.ncon])
        max_x = max(max_x, env.data.qpos[0])
    assert touched
    assert max_x < 1.5  # the torso centre never got past the front of the hurdle
    env.close()


def test_falling_into_a_gap_terminates() -> None:
    env = make()
    env.reset(seed=0, course=CourseBuilder().flat(1.0).gap(3.0).flat(5.0).build())
    place(env, x=2.5)  # above the middle of the gap
    for steps in range(1, 200):  # noqa: B007 - read after the loop
        result = env.step(ZERO)
        if result.terminated or result.truncated:
            break
    assert result.terminated and not result.truncated and result.info["fell"]
    assert env.data.qpos[1] < 0.0 and steps < 60  # it dropped below the floor, quickly
    with pytest.raises(RuntimeError):
        env.step(ZERO)
    env.close()


def test_flipping_over_terminates() -> None:
    env = make()
    env.reset(seed=0)
    place(env, pitch=2.0)
    result = env.step(ZERO)
    assert result.terminated and not result.truncated and result.info["fell"]
    env.close()


def test_time_limit_truncates_after_1000_steps() -> None:
    env = make(seed=1)
    env.reset()
    for step in range(1, EPISODE_STEPS + 1):
        result = env.step(ZERO)  # standing still on the run-up: never falls
        assert not result.terminated
        assert result.truncated == (step == EPISODE_STEPS)
    with pytest.raises(RuntimeError):
        env.step(ZERO)
    env.close()


def test_reward_is_clipped_forward_speed_minus_control_cost() -> None:
    env = make()
    env.reset(seed=0)
    action = np.array([1.0, -1.0, 0.5, 0.0, 0.0, 2.0])  # the 2.0 is clipped to 1
    result = env.step(action)
    vx = env.data.qvel[0]
    clipped = np.clip(action, -1, 1)
    assert result.reward == pytest.approx(np.clip(vx / 8.0, 0, 1) - 0.05 * np.mean(clipped**2))
    place(env, vx=6.0)
    result = env.step(ZERO)
    assert result.reward == pytest.approx(env.data.qvel[0] / 8.0) and result.reward > 0.5
    place(env, vx=30.0)
    assert env.step(ZERO).reward == 1.0  # at most 1 per step
    assert result.info["x_position"] == pytest.approx(env.data.qpos[0], abs=0.5)
    env.close()


def test_render_and_throughput() -> None:
    env = make(obs_format="flat")
    env.reset(seed=0)
    frame = env.render(48, 64)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    assert env.render(48, 64, camera="back").shape == (48, 64, 3)

    actions = np.random.default_rng(0).uniform(-1, 1, size=(2000, 6))
    start = time.perf_counter()
    for action in actions:
        result = env.step(action)
        if result.terminated or result.truncated:
            env.reset()
    rate = len(actions) / (time.perf_counter() - start)
    print(f"\nrlc:obstacle-course: {rate:.0f} env steps/s (random actions, one process)")
    assert rate > 100  # a sanity bound only: the machine is shared and noisy
    env.close()


@pytest.mark.parametrize("name", ["td3_obstacle_course", "td3_obstacle_course_split"])
def test_configs_build_the_task(name: str) -> None:
    from rlcontrol.config import load_config
    from rlcontrol.training.builders import make_env

    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.env.id == ENV_ID and config.env.obs_format == "dict"
    assert config.train.total_env_steps == 100_000
    env = make_env(config.env, config.seed)
    assert list(env.spec.observation) == ["proprio", "terrain"]
    if name.endswith("split"):
        assert config.agent.encoders["terrain"].type == "conv1d"
    env.close()
