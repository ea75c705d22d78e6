"""The lane-following task (envs/lane.py, envs/road.py, envs/lane_camera.py).

The generic `Env` contract runs over `rlc:lane-following` in test_env_contract.py; this file
checks the vehicle against hand-computed kinematics, the reward and endings, the roads, and
the camera's projection against the pinhole formulas.
"""

import math
import time

import numpy as np
import pytest

import envs
from envs.core import unscale_action
from envs.lane import (
    ENV_ID,
    LANE_AHEAD,
    BicycleModel,
    CarState,
    LaneFollowingEnv,
    PurePursuit,
    evaluate,
    random_policy,
)
from envs.lane_appearance import sample_appearance
from envs.lane_camera import Appearance, Camera, RoadPainter, clip_near
from envs.road import DS, RUN_IN, CrossSection, Road, RoadConfig, generate_road, straight_road

STRAIGHT = straight_road(length=400.0, lane_width=3.5)  # single lane, white edge lines, no shoulder


def make(**kwargs) -> LaneFollowingEnv:
    env = envs.make(ENV_ID, seed=kwargs.pop("seed", 0), **kwargs)
    assert isinstance(env, LaneFollowingEnv)  # no wrappers: tests read the car state
    return env


def action(env: LaneFollowingEnv, steering: float, speed: float) -> np.ndarray:
    """The normalized action for a physical (steering rad, speed set-point m/s)."""
    return unscale_action(np.array([steering, speed]), env.spec.action_low, env.spec.action_high)


# ---------------------------------------------------------------------------- spec


def test_spec_actions_and_observation_layout() -> None:
    env = make(obs_format="dict")
    spec = env.spec
    assert spec.action_names == ("steering", "speed_setpoint")
    np.testing.assert_array_equal(spec.action_low, np.array([-0.5, 0.0], np.float32))
    np.testing.assert_array_equal(spec.action_high, np.array([0.5, 10.0], np.float32))
    assert spec.control_period == pytest.approx(0.1) and spec.max_episode_steps == 1000
    assert spec.obs_layout == (("speed", (1,)), ("steering", (1,)))
    privileged = make(obs_format="flat", observe_lane=True, max_steps=300)
    assert privileged.spec.obs_layout == (("speed", (1,)), ("steering", (1,)), ("lane", (2,)), ("lane_ahead", (5,)))
    assert privileged.spec.observation.shape == (9,) and privileged.spec.max_episode_steps == 300
    with pytest.raises(TypeError):
        make(no_such_keyword=1)


# ---------------------------------------------------------------------------- vehicle


def test_bicycle_step_matches_hand_computation() -> None:
    model = BicycleModel(wheelbase=2.5, speed_time_constant=1.0)
    # Straight at the set-point speed: 5 m/s for 0.1 s is 0.5 m along the heading.
    car = model.advance(CarState(0.0, 0.0, 0.0, 5.0), 0.0, 5.0, 0.1)
    assert (car.x, car.y, car.heading, car.speed) == pytest.approx((0.5, 0.0, 0.0, 5.0))
    # From rest towards 10 m/s with tau = 1 s: v = 10 (1 - e^-0.1) = 0.951626 m/s after 0.1 s,
    # having covered 10 * 0.1 - 10 * (1 - e^-0.1) = 0.048374 m; heading pi/2 moves along +y.
    car = model.advance(CarState(1.0, 2.0, math.pi / 2, 0.0), 0.0, 10.0, 0.1)
    assert car.speed == pytest.approx(0.951626, abs=1e-6)
    assert (car.x, car.y) == pytest.approx((1.0, 2.048374), abs=1e-6)


def test_constant_steering_drives_a_circle_of_radius_l_over_tan_delta() -> None:
    model = BicycleModel(wheelbase=2.5, speed_time_constant=0.5)
    steering = 0.3
    radius = 2.5 / math.tan(0.3)  # 8.0776 m
    assert model.turning_radius(steering) == pytest.approx(radius)
    car = CarState(0.0, 0.0, 0.0, 0.0)
    for _ in range(100):
        car = model.advance(car, steering, 4.0, 0.1)
        # Starting at the origin heading +x and turning left: the centre is (0, R).
        assert math.hypot(car.x, car.y - radius) == pytest.approx(radius, abs=1e-9)
    # The heading turned by (arc length) / R, the arc length being the lagged distance
    # 4 m/s * 10 s - 4 m/s * tau (1 - e^(-10 s / tau)) from rest.
    distance = 4.0 * 10.0 - 4.0 * 0.5 * (1 - math.exp(-10.0 / 0.5))
    assert car.heading == pytest.approx(distance / radius, abs=1e-9)
    assert car.speed == pytest.approx(4.0)


# ---------------------------------------------------------------------------- reward and endings


def test_reward_is_the_distance_along_the_lane() -> None:
    env = make()
    env.reset(road=STRAIGHT, start=(0.0, 0.0, 6.0))
    rewards = [env.step(action(env, 0.0, 6.0)).reward for _ in range(10)]  # 6 m/s for 1 s
    assert rewards == pytest.approx([0.6] * 10)
    assert env.distance_along_route == pytest.approx(6.0) and env.lateral_offset == pytest.approx(0.0)
    # Driving at an angle: only the progress along the lane counts (0.5 m * cos 0.1 a step).
    env.reset(road=STRAIGHT, start=(0.0, 0.1, 5.0))
    result = env.step(action(env, 0.0, 5.0))
    assert result.reward == pytest.approx(0.5 * math.cos(0.1))
    assert result.info["lateral_offset"] == pytest.approx(0.5 * math.sin(0.1))
    assert result.info["heading_error"] == pytest.approx(0.1)


def test_lane_departure_terminates_at_the_lane_line() -> None:
    env = make()
    env.reset(road=STRAIGHT, start=(0.0, 0.2, 5.0))
    # 0.5 m a step at 0.2 rad gains 0.5 sin(0.2) = 0.0993 m of offset: the 3.5 m lane's line at
    # 1.75 m is crossed in step ceil(1.75 / 0.0993) = 18.
    for step in range(1, 19):
        result = env.step(action(env, 0.0, 5.0))
        assert result.terminated == (step == 18) and not result.truncated
    assert result.info["lane_departure"] and not result.info["route_completed"]
    assert result.info["lateral_offset"] == pytest.approx(18 * 0.5 * math.sin(0.2))
    with pytest.raises(RuntimeError):
        env.step(action(env, 0.0, 5.0))
    with pytest.raises(ValueError):  # a hand-made road must cover the route
        env.reset(road=straight_road(100.0))


def test_route_completion_returns_the_route_length_and_time_limit_truncates() -> None:
    env = make(route_length=20.0, max_steps=200)
    env.reset(road=straight_road(200.0), start=(0.0, 0.0, 7.0))
    total = 0.0
    while True:
        result = env.step(action(env, 0.0, 7.0))
        total += result.reward
        if result.terminated or result.truncated:
            break
    assert result.terminated and result.info["route_completed"] and not result.info["lane_departure"]
    assert total == pytest.approx(20.0)  # progress past the end of the route is not rewarded
    env = make(max_steps=5)
    env.reset(road=STRAIGHT, start=(0.0, 0.0, 0.0))
    ends = [env.step(action(env, 0.0, 0.0)) for _ in range(5)]
    assert [r.truncated for r in ends] == [False] * 4 + [True] and not any(r.terminated for r in ends)


def test_privileged_observation_reads_the_lane() -> None:
    env = make(obs_format="dict", observe_lane=True)
    obs = env.reset(road=STRAIGHT, start=(0.5, 0.0, 2.0))
    np.testing.assert_allclose(obs["lane"], [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(obs["lane_ahead"], np.full(5, -0.5), atol=1e-6)  # the lane is 0.5 m right
    np.testing.assert_allclose(obs["speed"], [2.0])
    np.testing.assert_allclose(obs["steering"], [0.0])
    # Turned 0.1 rad left at the lane centre: the lane centre d m ahead lies d sin(0.1) to the right.
    obs = env.reset(road=STRAIGHT, start=(0.0, 0.1, 2.0))
    np.testing.assert_allclose(obs["lane_ahead"], -LANE_AHEAD * math.sin(0.1), rtol=1e-5)
    obs = env.step(action(env, 0.25, 2.0)).obs
    assert obs["steering"][0] == pytest.approx(0.25)


# ---------------------------------------------------------------------------- roads


def test_roads_are_seeded_and_stay_within_their_ranges() -> None:
    config = RoadConfig()
    a, b = (generate_road(np.random.default_rng(5), config, 300.0) for _ in range(2))
    np.testing.assert_array_equal(a.xy, b.xy)
    assert a.cross_section == b.cross_section
    others = [generate_road(np.random.default_rng(seed), config, 300.0) for seed in range(8)]
    assert len({round(float(r.xy[-1, 1]), 6) for r in others}) == 8  # different seeds, different roads
    for road in others:
        assert road.s[0] == -RUN_IN and road.length == pytest.approx(300.0)
        np.testing.assert_allclose(road.xy[road.index_at(0.0)], [0.0, 0.0], atol=1e-12)
        assert np.all(road.curvature[road.s <= config.run_up] == 0.0)  # straight run-up
        assert np.abs(road.curvature).max() <= 1 / config.radius[0] + 1e-12
        assert np.abs(road.heading).max() <= math.radians(config.max_heading) + 1e-9
        np.testing.assert_allclose(np.linalg.norm(np.diff(road.xy, axis=0), axis=1), DS)  # s is arc length
        assert config.lane_width[0] <= road.lane_width <= config.lane_width[1]
    assert sum(np.abs(r.curvature).max() > 0 for r in others) == 8


def test_locate_inverts_point_at_on_a_curved_road() -> None:
    road = generate_road(np.random.default_rng(2), RoadConfig(straight_probability=0.0), 200.0)
    assert np.abs(road.curvature).max() > 1 / 80
    for s, offset in ((3.0, 0.4), (57.3, -1.2), (120.9, 1.0), (180.2, 0.0)):
        _, s_found, lateral, heading = road.locate(road.point_at(s, offset))
        assert (s_found, lateral) == pytest.approx((s, offset), abs=0.01)
        assert heading == pytest.approx(road.heading_at(s), abs=1e-3)


# ---------------------------------------------------------------------------- camera


def test_projection_follows_the_pinhole_formula() -> None:
    camera = Camera(height=1.4, pitch=12.0, fov=80.0, forward=1.5)
    f = 42.0 / math.tan(math.radians(40.0))  # 50.05 px for 84 px across 80 degrees
    pose = (0.0, 0.0, 0.0)  # rear axle at the origin: the camera is at x = 1.5 m
    far, ground = camera.project([[1e7, 0.0], [11.5, 0.0]], pose, 84, 84)
    # A point straight ahead at infinity: the centre column, on the horizon cy - f tan(pitch).
    assert far[0] == pytest.approx(41.5) and far[1] == pytest.approx(41.5 - f * math.tan(math.radians(12.0)), abs=1e-4)
    assert camera.horizon_row(84, 84) == pytest.approx(far[1], abs=1e-4)
    # A ground point 10 m ahead of the camera is atan(1.4 / 10) below the horizontal.
    expected_row = 41.5 + f * math.tan(math.atan(0.14) - math.radians(12.0))  # 37.97
    assert ground[1] == pytest.approx(expected_row) and ground[0] == pytest.approx(41.5)
    assert camera.ground_row(10.0, 84, 84) == pytest.approx(expected_row)
    # 2 m to the left at the same distance: depth Z = 10 cos(pitch) + 1.4 sin(pitch), u = cx - f 2 / Z.
    depth = 10 * math.cos(math.radians(12.0)) + 1.4 * math.sin(math.radians(12.0))
    left = camera.project([[11.5, 2.0]], pose, 84, 84)[0]
    assert left[0] == pytest.approx(41.5 - f * 2.0 / depth) and left[2] == pytest.approx(depth)
    # Turning the car turns the view: heading +90 degrees looks along +y.
    assert camera.project([[0.0, 11.5]], (0.0, 0.0, math.pi / 2), 84, 84)[0] == pytest.approx(ground)


def test_image_shows_the_road_where_the_projection_puts_it() -> None:
    env = make(randomize_appearance=False)
    look, camera = Appearance(), env.camera
    # A plain 3.5 m road without paint: a pixel's colour says how much of it the asphalt covers.
    plain_road = Road([0.0], [0.0], 300.0, CrossSection(3.5, 1.75, -1.75, 0.0, ()))
    f, cx, cy = camera.intrinsics(64, 64)
    pitch = math.radians(camera.pitch)
    for lateral in (0.0, 0.3):
        env.reset(road=plain_road, start=(lateral, 0.0, 0.0))
        image = env.render(64, 64).astype(float)
        horizon = camera.horizon_row(64, 64)  # 23.1: rows 0-22 lie above it, 24 and below under it
        bluish = image[:, :, 2] > image[:, :, 0] + 20
        assert bluish[: math.floor(horizon - 0.5) + 1].all() and not bluish[math.ceil(horizon + 0.5):].any()
        coverage = np.clip((look.verge[1] - image[:, :, 1]) / (look.verge[1] - look.asphalt[1]), 0.0, 1.0)
        for row in (30, 35, 40, 45):
            # Ground depth of a row: Y / Z = (v - cy) / f and Y cos(pitch) + Z sin(pitch) = h.
            depth = camera.height / ((row - cy) / f * math.cos(pitch) + math.sin(pitch))
            width = 2 * f * 1.75 / depth  # pixels between the road edges
            centre = cx + f * lateral / depth  # the car is `lateral` left of the lane centre
            assert coverage[row].sum() == pytest.approx(width, abs=0.5)
            assert (coverage[row] * np.arange(64)).sum() / coverage[row].sum() == pytest.approx(centre, abs=0.2)


def test_same_seed_same_image_and_randomized_appearance_changes_it() -> None:
    env_a, env_b = make(seed=3), make(seed=3)
    env_a.reset(), env_b.reset()
    np.testing.assert_array_equal(env_a.render(64, 64), env_b.render(64, 64))
    first = env_a.render(64, 64)
    env_a.reset(seed=4)
    assert np.abs(env_a.render(64, 64).astype(int) - first).mean() > 5
    # One road and pose under the plain appearance, a darker one, and a textured one.
    road = STRAIGHT
    pose, plain = (0.0, 0.0, 0.0), RoadPainter(road, Appearance()).render(Camera(), (0.0, 0.0, 0.0), 0.0, 64, 64)
    dark = RoadPainter(road, Appearance(brightness=0.6)).render(Camera(), pose, 0.0, 64, 64)
    assert dark.mean() == pytest.approx(0.6 * plain.mean(), rel=0.03)
    noise = sample_appearance(np.random.default_rng(0), road).texture
    textured = RoadPainter(road, Appearance(texture=noise, texture_amplitude=0.2)).render(Camera(), pose, 0.0, 64, 64)
    asphalt = np.abs(plain.astype(int) - Appearance().asphalt).sum(axis=2) == 0
    assert plain[asphalt].std(axis=0).max() == 0 and textured[asphalt].astype(float).std(axis=0).min() > 3
    randomized = [RoadPainter(road, sample_appearance(np.random.default_rng(s), road)).render(Camera(), pose, 0.0, 64, 64)
                  for s in range(3)]
    assert all(np.abs(r.astype(int) - plain).mean() > 5 for r in randomized)


def test_pixel_observations_and_cameras() -> None:
    env = envs.make(ENV_ID, seed=1, pixels=True, pixel_size=64, include_state=True)
    assert env.spec.observation == {"pixels": envs.ArraySpec((3, 64, 64), np.dtype("uint8")),
                                    "state": envs.ArraySpec((2,), np.dtype("float32"))}
    obs = env.reset()
    result = env.step(np.zeros(2))
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].std() > 0
    np.testing.assert_array_equal(result.obs["pixels"], env.render(64, 64, 0).transpose(2, 0, 1))
    assert result.obs["state"][0] == pytest.approx(result.info["speed"])
    bare = env.unwrapped
    chase = bare.render(48, 64, camera="chase")
    assert chase.shape == (48, 64, 3)
    red = chase.astype(int)
    assert ((red[..., 0] > 2 * red[..., 1]) & (red[..., 0] > 2 * red[..., 2])).sum() > 10  # the car is in view
    with pytest.raises(ValueError):
        bare.render(64, 64, camera="top")
    with pytest.raises(RuntimeError):
        LaneFollowingEnv(seed=0).render()


def test_road_beside_and_behind_the_camera_is_clipped_not_mirrored() -> None:
    square = np.array([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 2.0], [-1.0, 0.0, 2.0]])
    clipped = clip_near(square, near=0.5)
    np.testing.assert_allclose(clipped, [[1.0, 0.0, 0.5], [1.0, 0.0, 2.0], [-1.0, 0.0, 2.0], [-1.0, 0.0, 0.5]])
    assert clip_near(square - [0.0, 0.0, 5.0]) is None
    env = make(randomize_appearance=False)
    env.reset(road=STRAIGHT, start=(0.0, math.pi, 0.0))  # facing back: the run-in lies ahead
    backwards = env.render(64, 64)
    env.reset(road=STRAIGHT, start=(0.0, math.pi / 2, 0.0))  # across the road, looking off it
    across = env.render(64, 64)
    road_pixels = [int((np.abs(im.astype(int) - Appearance().asphalt).sum(axis=2) < 10).sum()) for im in (backwards, across)]
    assert road_pixels[0] > 300 and road_pixels[1] == 0


# ---------------------------------------------------------------------------- baselines


def test_pure_pursuit_completes_routes_and_random_actions_depart() -> None:
    env = make()
    pursuit = evaluate(env, PurePursuit(), episodes=4, seed=0)
    random = evaluate(env, random_policy(np.random.default_rng(0)), episodes=4, seed=0)
    assert pursuit["completion_rate"] == 1.0 and pursuit["mean_distance"] == pytest.approx(250.0)
    assert random["departure_rate"] == 1.0 and random["mean_distance"] < 60.0


def test_render_rate() -> None:
    env = make()
    env.reset()
    start = time.perf_counter()
    for _ in range(100):
        env.render(84, 84)
    rate = 100 / (time.perf_counter() - start)
    print(f"\nrlc:lane-following front camera 84x84: {rate:.0f} frames/s")
    assert rate > 50  # ~1000 here; MuJoCo's software renderer manages ~45
