"""Lane following ("rlc:lane-following"): a car learns to keep its lane from a forward camera.

The setting of "Learning to Drive in a Day" (Kendall et al. 2018): the reward is the distance
travelled along the lane, and the episode ends when the car leaves its lane (where the paper's
safety driver took over) or completes the route (250 m in the paper). Each episode drives a new
road generated from the env's RNG (envs/road.py: curvature profile, lane width, one or two
lanes, keep-left or keep-right, shoulders, edge and centre markings) under a new appearance
(envs/lane_appearance.py: surface colours, world-fixed ground texture, shadows, lighting; drawn
by envs/lane_camera.py). Camera pose, a steering offset and the appearance family may vary too
(envs/lane_variation.py): domain randomization in training, a different car as a stand-in.

Vehicle: a kinematic bicycle model whose state is the rear-axle centre (x, y), heading and
speed. Steering sets the front-wheel angle delta at once (the path curvature is tan(delta) / L,
L the wheelbase); the speed follows the speed set-point with a first-order lag. Both are held
over the 0.1 s control period, and the step is integrated exactly: the car moves along a
circular arc of that curvature by the distance the lagged speed covers.

Actions (normalized to [-1, 1] by the framework; physical bounds in the spec):
  "steering"        front-wheel angle, rad, [-max_steering, max_steering], + turns left
  "speed_setpoint"  m/s, [0, max_speed]
Observation (dict order = flat order), what the car knows about itself, as the paper fed the
network next to the image:
  "speed": (1,) m/s;  "steering": (1,) rad, the angle applied in the last step (0 at reset).
With `observe_lane=True` also privileged lane geometry, for state-based baselines and fast tests:
  "lane": (2,) lateral offset of the rear axle from the lane centre (m, + left) and heading
          error (car heading minus lane heading, rad, + pointing left of the lane);
  "lane_ahead": (5,) lateral position (m, + left, car frame) of the lane centre 5, 10, 15,
          20 and 25 m further along the lane: the curvature preview a camera would give.
Pixels: `envs.make("rlc:lane-following", pixels=True, pixel_size=64, include_state=True)` adds
the front camera image (camera 0, "front") and the state vector above; camera 1 ("chase")
looks from behind and above the car, for videos.

Reward per step: increase of the arc length s of the car's projection onto the lane centre (m),
counted up to the end of the route, so a completed route returns exactly `route_length`.
Ending: terminated with info["lane_departure"] when |lateral offset| > lane width / 2 (the
rear-axle centre reaches a lane line), terminated with info["route_completed"] when s reaches
`route_length`, truncated after `max_steps` steps (the spec's max_episode_steps).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from dataclasses import dataclass, fields

import numpy as np

from envs.core import (
    Env,
    EnvSpec,
    ObservationLayout,
    StepResult,
    check_action_bounds,
    check_obs_format,
    normalized_to_physical,
    unscale_action,
)
from envs.lane_appearance import sample_appearance
from envs.lane_camera import CHASE_CAMERA, DRAW_AHEAD, Appearance, Camera, RoadPainter
from envs.lane_variation import LaneVariation
from envs.road import Road, RoadConfig, generate_road

ENV_ID = "rlc:lane-following"
ROAD_BEYOND_ROUTE = DRAW_AHEAD + 30.0  # m of road generated past the route's end (seen, never driven)
START_OFFSET = 0.3  # m: initial lateral offset drawn from [-START_OFFSET, START_OFFSET]
START_HEADING = 0.1  # rad: initial heading error drawn from [-START_HEADING, START_HEADING]
LANE_AHEAD = np.array([5.0, 10.0, 15.0, 20.0, 25.0])  # m along the lane, for "lane_ahead"
CAR_OVERHANG = (0.7, 0.8)  # m behind the rear axle and ahead of the front axle (chase view only)
CAR_WIDTH = 1.7  # m
CAR_RGB = (170, 30, 30)
CAMERAS = {0: "front", 1: "chase"}


@dataclass(frozen=True)
class CarState:
    x: float  # m, rear-axle centre
    y: float  # m
    heading: float  # rad, from +x, counter-clockwise
    speed: float  # m/s, >= 0
    steering: float = 0.0  # rad, front-wheel angle applied in the last step


@dataclass(frozen=True)
class BicycleModel:
    """Kinematic bicycle: path curvature tan(gain * steering) / wheelbase, first-order speed lag.

    The front wheels really turn by gain * commanded + offset: `steering_gain` (1: an ideal
    linkage) and `steering_offset` (rad, 0: centred; a misaligned rack). The observation keeps
    reporting the commanded angle, as a real car's controller knows its command, not the wheel
    angle; sim2real randomizes the gain, a stand-in car sets the offset.
    """

    wheelbase: float = 2.5  # m
    speed_time_constant: float = 1.0  # s; 0 follows the set-point at once
    steering_gain: float = 1.0  # wheel angle / commanded angle
    steering_offset: float = 0.0  # rad, wheel angle at a zero command

    def wheel_angle(self, steering: float) -> float:
        """Front-wheel angle (rad) for a commanded angle."""
        return self.steering_gain * steering + self.steering_offset

    def turning_radius(self, steering: float) -> float:
        """Radius (m) of the rear axle's circle at a fixed commanded angle: L / tan(wheel angle)."""
        wheel = self.wheel_angle(steering)
        return self.wheelbase / math.tan(wheel) if wheel else math.inf

    def advance(self, car: CarState, steering: float, speed_setpoint: float, dt: float) -> CarState:
        """The state after `dt` seconds with both inputs held: exact for this model.

        v(t) = v_set + (v0 - v_set) exp(-t / tau), so the distance covered is
        d = v_set dt + (v0 - v_set) tau (1 - exp(-dt / tau)); the path is an arc of curvature
        k = tan(gain * delta + offset) / L, which turns the heading by k d and moves the car by the chord
        d sinc(k d / 2) in the direction heading + k d / 2.
        """
        tau = self.speed_time_constant
        if tau > 0:
            decay = math.exp(-dt / tau)
            speed = speed_setpoint + (car.speed - speed_setpoint) * decay
            distance = speed_setpoint * dt + (car.speed - speed_setpoint) * tau * (1.0 - decay)
        else:
            speed = speed_setpoint
            distance = speed_setpoint * dt
        turn = math.tan(self.wheel_angle(steering)) / self.wheelbase * distance
        chord = distance * float(np.sinc(turn / (2 * math.pi)))  # np.sinc(x) = sin(pi x) / (pi x)
        direction = car.heading + turn / 2
        return CarState(car.x + chord * math.cos(direction), car.y + chord * math.sin(direction),
                        car.heading + turn, max(speed, 0.0), steering)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class LaneFollowingEnv(Env):
    """The lane-following task behind the `Env` interface (see the module docstring).

    Keyword arguments (lengths in m, times in s, angles of the car in rad, of the camera in deg):
      route_length: the route to complete (250, as in the paper).
      max_steps: truncation limit, the spec's max_episode_steps (1000 steps = 100 s).
      observe_lane: add the privileged "lane" and "lane_ahead" entries.
      randomize_appearance: False draws every episode with the fixed `Appearance()` (plain
        colours, no texture, shadows or lighting changes); the road itself stays random.
      appearance_family: "training" (the task's own looks) or "stand-in" (looks outside them,
        envs/lane_appearance.py).
      control_period, wheelbase, max_steering, max_speed, speed_time_constant: the car.
      steering_offset: front-wheel angle (rad) added to every command by the car, unobserved.
      initial_speed: (lo, hi) range of the speed at reset (a rolling start).
      camera_height, camera_pitch, camera_fov, camera_forward: the front camera (lane_camera.Camera).
      camera_height, camera_pitch and steering_offset also take [low, high]: drawn per episode
      (envs/lane_variation.py).
      any `RoadConfig` field, e.g. radius=(30.0, 80.0) or two_lane_probability=1.0.
    Seeding: one `np.random.Generator` draws the road, the appearance, the start, then any ranged
    camera pose and steering offset; `reset(seed)` replaces it, `reset()` continues it (a new road
    every episode).
    """

    def __init__(
        self,
        env_id: str = ENV_ID,
        *,
        seed: int | None = None,
        obs_format: str = "flat",
        route_length: float = 250.0,
        max_steps: int = 1000,
        observe_lane: bool = False,
        randomize_appearance: bool = True,
        appearance_family: str = "training",
        control_period: float = 0.1,
        wheelbase: float = 2.5,
        max_steering: float = 0.5,
        max_speed: float = 10.0,
        speed_time_constant: float = 1.0,
        steering_offset: float | tuple[float, float] = 0.0,
        initial_speed: tuple[float, float] = (0.0, 3.0),
        camera_height: float | tuple[float, float] = 1.4,
        camera_pitch: float | tuple[float, float] = 12.0,
        camera_fov: float = 80.0,
        camera_forward: float = 1.5,
        **road_kwargs,
    ):
        self._obs_format = check_obs_format(obs_format)
        road_fields = {f.name for f in fields(RoadConfig)}
        unknown = sorted(set(road_kwargs) - road_fields)
        if unknown:
            known = [*inspect.signature(LaneFollowingEnv.__init__).parameters, *road_fields]
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{env_id}: unknown keyword arguments {unknown}{hint}")
        self.road_config = RoadConfig(**road_kwargs)
        if route_length <= 0 or int(max_steps) < 1 or control_period <= 0 or wheelbase <= 0:
            raise ValueError("route_length, max_steps, control_period and wheelbase must be positive")
        if not 0 < max_steering < math.pi / 2 or max_speed <= 0 or speed_time_constant < 0:
            raise ValueError("need 0 < max_steering < pi/2, max_speed > 0 and speed_time_constant >= 0")
        if not 0 <= initial_speed[0] <= initial_speed[1] <= max_speed:
            raise ValueError(f"initial_speed must be a range within [0, max_speed], got {initial_speed}")
        self.route_length = float(route_length)
        self.max_steps = int(max_steps)
        self.observe_lane = bool(observe_lane)
        self.randomize_appearance = bool(randomize_appearance)
        self.variation = LaneVariation.check(
            camera_height=camera_height, camera_pitch=camera_pitch, steering_offset=steering_offset,
            appearance_family=appearance_family, max_steering=max_steering,
            randomize_appearance=self.randomize_appearance)
        self.control_period = float(control_period)
        self.initial_speed = (float(initial_speed[0]), float(initial_speed[1]))
        height, pitch, offset = (low for low, _ in (self.variation.camera_height, self.variation.camera_pitch,
                                                    self.variation.steering_offset))  # until the first reset
        self.vehicle = BicycleModel(float(wheelbase), float(speed_time_constant), steering_offset=offset)
        self.camera = Camera(height, pitch, camera_fov, camera_forward)

        self._low, self._high = check_action_bounds([-max_steering, 0.0], [max_steering, max_speed])
        shapes = {"speed": (1,), "steering": (1,)}
        if self.observe_lane:
            shapes.update(lane=(2,), lane_ahead=(LANE_AHEAD.size,))
        self._layout = ObservationLayout(shapes)
        self.spec = EnvSpec(
            env_id=env_id,
            observation=self._layout.spec(obs_format),
            action_dim=2,
            action_low=self._low.astype(np.float32),
            action_high=self._high.astype(np.float32),
            control_period=self.control_period,
            max_episode_steps=self.max_steps,
            action_repeat=1,
            action_names=("steering", "speed_setpoint"),
            obs_layout=self._layout.components(),
        )
        self._rng = np.random.default_rng(seed)
        self.road: Road | None = None
        self.appearance: Appearance | None = None
        self.car = CarState(0.0, 0.0, 0.0, 0.0)
        self.distance_along_route = 0.0  # m, arc length s of the car's projection
        self.lateral_offset = 0.0  # m, + left of the lane centre
        self.heading_error = 0.0  # rad
        self._painter: RoadPainter | None = None
        self._chord = 0  # polyline chord the car was last projected onto
        self._steps = 0
        self._needs_reset = True
        self._closed = False

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None, *, road: Road | None = None, appearance: Appearance | None = None,
              start: tuple[float, float, float] | None = None):
        """Starts an episode on a new random road (or `road`), seen under `appearance` if given.

        `start` = (lateral offset m, heading error rad, speed m/s) fixes the start at s = 0;
        by default they are drawn from +-START_OFFSET, +-START_HEADING and `initial_speed`.
        """
        self._check_open()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.road = road if road is not None else generate_road(rng, self.road_config,
                                                                self.route_length + ROAD_BEYOND_ROUTE)
        if self.road.length < self.route_length:
            raise ValueError(f"the road is {self.road.length} m long, shorter than the {self.route_length} m route")
        if appearance is None:
            appearance = (sample_appearance(rng, self.road, self.variation.family) if self.randomize_appearance
                          else Appearance())
        self.appearance = appearance
        self._painter = RoadPainter(self.road, appearance)
        if start is None:
            start = (rng.uniform(-START_OFFSET, START_OFFSET), rng.uniform(-START_HEADING, START_HEADING),
                     rng.uniform(*self.initial_speed))
        self._vary(rng)
        lateral, heading_error, speed = (float(v) for v in start)
        x, y = self.road.point_at(0.0, lateral)
        self.car = CarState(float(x), float(y), float(self.road.heading_at(0.0)) + heading_error, speed)
        self._chord = self.road.index_at(0.0)
        self._locate()
        self._steps = 0
        self._needs_reset = False
        return self._observe()

    def _vary(self, rng: np.random.Generator) -> None:
        """This episode's camera pose and steering offset (no draws for fixed values)."""
        height, pitch, offset = self.variation.draw(rng)
        if (height, pitch) != (self.camera.height, self.camera.pitch):
            self.camera = dataclasses.replace(self.camera, height=height, pitch=pitch)
        if offset != self.vehicle.steering_offset:
            self.vehicle = dataclasses.replace(self.vehicle, steering_offset=offset)

    def step(self, action: np.ndarray) -> StepResult:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        applied = normalized_to_physical(action, self._low, self._high)
        before = self.distance_along_route
        self.car = self.vehicle.advance(self.car, float(applied[0]), float(applied[1]), self.control_period)
        self._locate()
        self._steps += 1
        end = self.route_length
        reward = min(self.distance_along_route, end) - min(before, end)
        departed = abs(self.lateral_offset) > self.road.lane_width / 2
        completed = not departed and self.distance_along_route >= end
        terminated = departed or completed
        truncated = not terminated and self._steps >= self.max_steps
        self._needs_reset = terminated or truncated
        info = {
            "applied_action": applied,
            "distance_along_route": self.distance_along_route,
            "lateral_offset": self.lateral_offset,
            "heading_error": self.heading_error,
            "speed": self.car.speed,
            "route_completed": completed,
            "lane_departure": departed,
        }
        return StepResult(self._observe(), float(reward), terminated, truncated, info)

    def _locate(self) -> None:
        """Projects the rear axle onto the lane centre: s, lateral offset, heading error."""
        car = self.car
        self._chord, s, lateral, lane_heading = self.road.locate((car.x, car.y), self._chord)
        self.distance_along_route, self.lateral_offset = s, lateral
        self.heading_error = _wrap(car.heading - lane_heading)

    def lane_ahead(self) -> np.ndarray:
        """(5,) lateral position (m, + left, car frame) of the lane centre LANE_AHEAD m further on."""
        car = self.car
        rel = self.road.point_at(self.distance_along_route + LANE_AHEAD) - (car.x, car.y)
        return -math.sin(car.heading) * rel[:, 0] + math.cos(car.heading) * rel[:, 1]

    def _observe(self):
        named = {"speed": [self.car.speed], "steering": [self.car.steering]}
        if self.observe_lane:
            named["lane"] = [self.lateral_offset, self.heading_error]
            named["lane_ahead"] = self.lane_ahead()
        return self._layout.format(named, self._obs_format)

    # ------------------------------------------------------------------ rendering

    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        """RGB uint8 (height, width, 3) from camera 0 / "front" (the observation) or 1 / "chase"."""
        self._check_open()
        if self._painter is None:
            raise RuntimeError("call reset() first: there is no road to look at yet")
        name = CAMERAS.get(camera, camera)
        car = self.car
        pose = (car.x, car.y, car.heading)
        if name == "front":
            return self._painter.render(self.camera, pose, self.distance_along_route, int(height), int(width))
        if name == "chase":
            footprint = ((self._footprint(), CAR_RGB),)
            return self._painter.render(CHASE_CAMERA, pose, self.distance_along_route, int(height), int(width),
                                        footprint)
        raise ValueError(f"unknown camera {camera!r}: use 0/'front' or 1/'chase'")

    def _footprint(self) -> np.ndarray:
        """World corners (4, 2) of the car's outline on the ground."""
        back, front = -CAR_OVERHANG[0], self.vehicle.wheelbase + CAR_OVERHANG[1]
        half = CAR_WIDTH / 2
        local = np.array([[back, -half], [front, -half], [front, half], [back, half]])
        c, s = math.cos(self.car.heading), math.sin(self.car.heading)
        return local @ np.array([[c, s], [-s, c]]) + (self.car.x, self.car.y)

    def close(self) -> None:
        self._closed = True
        self._painter = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.env_id} has been closed")


# ---------------------------------------------------------------------------- baselines


class PurePursuit:
    """Privileged baseline: pure pursuit of the true lane centre at a constant speed.

    Aims the rear axle at the lane-centre point `lookahead` m further along the lane
    (lookahead = max(min_lookahead, lookahead_time * speed)) with steering
    atan(2 L sin(alpha) / l), alpha the bearing of that point in the car frame and l its
    distance: the arc through the point tangent to the car's heading. On a circular lane this
    is exactly the lane's curvature, so it follows arcs without error. It reads the road and
    the car state, which a learner does not get: a reference for what the task allows.
    """

    def __init__(self, speed: float = 7.0, lookahead_time: float = 0.8, min_lookahead: float = 4.0):
        self.speed = speed
        self.lookahead_time = lookahead_time
        self.min_lookahead = min_lookahead

    def __call__(self, env: Env) -> np.ndarray:
        env = env.unwrapped
        if not isinstance(env, LaneFollowingEnv):
            raise TypeError(f"PurePursuit drives a LaneFollowingEnv, got {type(env).__name__}")
        car = env.car
        lookahead = max(self.min_lookahead, self.lookahead_time * car.speed)
        dx, dy = env.road.point_at(env.distance_along_route + lookahead) - (car.x, car.y)
        c, s = math.cos(car.heading), math.sin(car.heading)
        ahead, left = c * dx + s * dy, -s * dx + c * dy
        steering = math.atan(2.0 * env.vehicle.wheelbase * left / (ahead ** 2 + left ** 2))  # 2 L sin(a) / l
        return np.clip(unscale_action(np.array([steering, self.speed]), env._low, env._high), -1.0, 1.0)


def random_policy(rng: np.random.Generator):
    """Uniform random actions in [-1, 1]: the baseline a learner must beat."""

    def policy(env: Env) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=env.spec.action_dim)

    return policy


def evaluate(env: Env, policy, episodes: int, seed: int = 0) -> dict:
    """Runs `episodes` episodes (seeded from `seed`): distances driven and how they ended."""
    distances, completed, departed = [], 0, 0
    env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            env.reset()
        total = 0.0
        while True:
            result = env.step(policy(env))
            total += result.reward
            if result.terminated or result.truncated:
                completed += int(result.info["route_completed"])
                departed += int(result.info["lane_departure"])
                distances.append(total)
                break
    return {"mean_distance": float(np.mean(distances)), "completion_rate": completed / episodes,
            "departure_rate": departed / episodes, "distances": distances}


# ---------------------------------------------------------------------------- measurements


def measure_render(size: int, frames: int = 500, seed: int = 0) -> float:
    """Front-camera frames/s at size x size along a pure-pursuit drive (resets included)."""
    import time

    env = LaneFollowingEnv(seed=seed)
    policy = PurePursuit()
    env.reset()
    elapsed = 0.0
    for _ in range(frames):
        start = time.perf_counter()
        env.render(size, size)
        elapsed += time.perf_counter() - start
        result = env.step(policy(env))
        if result.terminated or result.truncated:
            env.reset()
    return frames / elapsed


def measure_steps(pixels: bool, steps: int = 2000, pixel_size: int = 64, seed: int = 0) -> float:
    """Env steps/s through `envs.make` under uniform random actions, resets included."""
    import time

    import envs

    env = envs.make(ENV_ID, seed=seed, pixels=pixels, pixel_size=pixel_size, include_state=pixels)
    rng = np.random.default_rng(seed)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        result = env.step(rng.uniform(-1.0, 1.0, env.spec.action_dim))
        if result.terminated or result.truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """`python -m envs.lane`: baseline distances and (with --speed) speeds, as in docs/lane_following.md."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true", help="measure frames/s and env steps/s instead")
    args = parser.parse_args(argv)
    if args.speed:
        for size in (64, 84):
            print(f"render {size}x{size}: {measure_render(size, seed=args.seed):.0f} frames/s")
        print(f"env steps/s, state only: {measure_steps(False, 5000, seed=args.seed):.0f}")
        for size in (64, 84):
            print(f"env steps/s, pixels {size}x{size} + state: {measure_steps(True, 1000, size, args.seed):.0f}")
        return
    env = LaneFollowingEnv(seed=args.seed)
    baselines = (("pure_pursuit", PurePursuit()), ("random", random_policy(np.random.default_rng(args.seed))),
                 ("straight", lambda env: np.zeros(2)))  # zero action: no steering, 5 m/s
    for name, policy in baselines:
        out = evaluate(env, policy, args.episodes, seed=args.seed)
        print(f"{name:12s} mean distance {out['mean_distance']:6.1f} m (median {np.median(out['distances']):.1f}, "
              f"min {min(out['distances']):.1f}), completed {out['completion_rate']:.2f}, "
              f"departed {out['departure_rate']:.2f} ({args.episodes} episodes)")


if __name__ == "__main__":
    main()
