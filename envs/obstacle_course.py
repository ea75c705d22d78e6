"""Obstacle course ("rlc:obstacle-course"): a planar cheetah runs over hurdles, gaps and steps.

A fresh course is generated from the task's RNG at every reset: a flat run-up, then
obstacles (hurdles to clear, gaps to jump, steps up or down) separated by flat stretches,
growing from small to full size over the first `ramp` metres so that a learner can first
discover running and then meet harder obstacles. Beyond `length` metres the floor is flat.

Body: the dm_control half-cheetah (6 actuators, 10 ms control period, one MuJoCo step per
agent step). It was chosen over a planar walker because TD3/D4PG learn to run with it
within the 50k-100k environment steps that a 2-core CPU affords (walker-run needs far
more), and because one physics step per agent step keeps the task fast. A cheetah does not
topple like a walker, so "falling" is defined as flipping (|pitch| > `max_tilt`) or
dropping into a gap (torso centre `fall_depth` below the rim of the gap it is over).

Geometry: the course is a piecewise-constant height function h(x). Each non-gap segment
is one box reaching from the pit floor (`PIT_FLOOR`, a plane) up to its top; gaps are
missing boxes. The model is compiled once with a fixed pool of boxes whose positions and
sizes are rewritten at every reset (unused boxes are parked far away and collide with
nothing). World geoms moving after compilation need three things (see `build_model` and
`_install`): their `geom_sameframe` flag cleared, or mj_kinematics ignores `geom_pos`; the
world body's compile-time midphase BVH disabled; `geom_rbound`/`geom_aabb` rewritten with
the sizes, so that collision filtering stays exact.

Observation (dict order = flat order):
  "proprio": float32 (16,) - pitch and the 6 joint angles, then the 9 velocities
             (forward, vertical, pitch rate, 6 joint velocities), as dm_control cheetah.
  "terrain": float32 (48,) - h(x_torso + d) - z_torso at d = -0.32, -0.24, ..., 3.44 m
             (every 8 cm, 4 points behind the torso centre, 43 ahead), computed exactly
             from the course description; gaps read as the pit floor.

Reward per step: clip(v_x / target_speed, 0, 1) - ctrl_cost * mean(a**2), with a the
normalized action: at most 1 per step, so returns over the 1000-step limit stay <= 1000.
Episodes end with terminated=True when the cheetah falls, truncated=True at 1000 steps.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass

import mujoco
import numpy as np

from envs.core import (
    Env,
    EnvSpec,
    ObservationLayout,
    StepResult,
    check_action_bounds,
    check_obs_format,
    normalized_to_physical,
)
from envs.mujoco_rendering import MujocoRendering

ENV_ID = "rlc:obstacle-course"

PIT_FLOOR = -1.0  # height of the plane at the bottom of every gap
OBSTACLE_KINDS = ("hurdle", "gap", "step")
SEGMENT_KINDS = ("ground", "hurdle", "gap")

TERRAIN_OFFSETS = np.round(-0.32 + 0.08 * np.arange(48), 6)  # metres relative to the torso centre
NUM_BOXES = 128  # pool of terrain boxes in the compiled model (default courses use <= ~75)
BOX_HALF_WIDTH = 0.6  # half extent of the boxes across the (planar) course, for rendering only
COURSE_START = -100.0  # the floor begins this far behind the start and ...
COURSE_TAIL = 1000.0  # ... runs this far past the last obstacle
SPAWN_HEIGHT = 0.7  # initial torso height above the run-up
CHEETAH_MASS = 14.0  # kg, as dm_control's cheetah
EPISODE_STEPS = 1000  # agent steps (10 s) until time-limit truncation

_SEGMENT_RGBA = {
    "ground": (0.35, 0.45, 0.55, 1.0),
    "hurdle": (0.85, 0.45, 0.15, 1.0),
}


# ---------------------------------------------------------------------------- course


@dataclass(frozen=True)
class Obstacle:
    """One obstacle: kind, where it starts and ends along x, and its size.

    `size` is the height of a hurdle above the floor before it, the width of a gap, or
    the signed rise of a step (negative: a step down). Steps have x_start == x_end.
    """

    kind: str
    x_start: float
    x_end: float
    size: float


class Course:
    """A piecewise-constant terrain: segment i spans [edges[i], edges[i+1]) at heights[i].

    Gaps have height `PIT_FLOOR`. Left of the first edge there is no floor (pit); the last
    segment extends to +inf for lookups. `obstacles` lists what the segments were built
    from, in order along x.
    """

    def __init__(self, edges, heights, kinds, obstacles=()):
        self.edges = np.array(edges, dtype=np.float64)
        self.heights = np.array(heights, dtype=np.float64)
        self.kinds = tuple(kinds)
        self.obstacles = tuple(obstacles)
        n = self.heights.size
        if self.edges.shape != (n + 1,) or len(self.kinds) != n or n == 0:
            raise ValueError("a course needs n >= 1 segments: n+1 edges, n heights, n kinds")
        if np.any(np.diff(self.edges) <= 0):
            raise ValueError("course edges must be strictly increasing")
        if any(k not in SEGMENT_KINDS for k in self.kinds):
            raise ValueError(f"segment kinds must be among {SEGMENT_KINDS}")
        is_gap = np.array([k == "gap" for k in self.kinds])
        self.heights[is_gap] = PIT_FLOOR
        if np.any(self.heights[~is_gap] <= PIT_FLOOR):
            raise ValueError(f"solid segments must be higher than the pit floor ({PIT_FLOOR})")
        self.is_gap = is_gap
        self.rims = self._rims()
        # Lookup tables: the segment index of x is searchsorted(left_edges, x, "right") - 1, which
        # is -1 left of the course: that picks the extra pit entry at the end of the padded arrays.
        self._left_edges = self.edges[:-1].copy()
        self._heights_padded = np.append(self.heights, PIT_FLOOR)
        self._rims_padded = np.append(self.rims, PIT_FLOOR)
        # Python lists for the per-step scalar lookups: bisect beats a numpy call on one value.
        self._left_edge_list = self._left_edges.tolist()
        self._rim_list = self._rims_padded.tolist()
        self._obstacle_ends = sorted(o.x_end for o in self.obstacles)

    def _rims(self) -> np.ndarray:
        """Per segment: its height, or for a gap the lower of the floors on either side."""
        rims = self.heights.copy()
        for i in np.flatnonzero(self.is_gap):
            sides = [self.heights[j] for j in (i - 1, i + 1) if 0 <= j < self.heights.size and not self.is_gap[j]]
            rims[i] = min(sides) if sides else PIT_FLOOR
        return rims

    def segment_index(self, x) -> np.ndarray:
        """Index of the segment containing each x (-1 left of the course)."""
        return np.searchsorted(self._left_edges, x, side="right") - 1

    def height_at(self, x) -> np.ndarray:
        """Terrain height at x (float or array): the top of the floor, or PIT_FLOOR in a gap."""
        return self._heights_padded[self.segment_index(x)]

    def rim_at(self, x) -> np.ndarray:
        """Like height_at, but over a gap the height of its lower rim (for fall detection)."""
        return self._rims_padded[self.segment_index(x)]

    def rim_at_scalar(self, x: float) -> float:
        """rim_at for one float, fast."""
        return self._rim_list[bisect.bisect_right(self._left_edge_list, x) - 1]

    def obstacles_before(self, x: float) -> int:
        """How many obstacles end at or before x."""
        return bisect.bisect_right(self._obstacle_ends, x)

    def solid_segments(self) -> list[tuple[float, float, float, str]]:
        """(x0, x1, top, kind) of every segment that is a box in the simulation."""
        return [(float(self.edges[i]), float(self.edges[i + 1]), float(self.heights[i]), self.kinds[i])
                for i in range(self.heights.size) if not self.is_gap[i]]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Course):
            return NotImplemented
        return (np.array_equal(self.edges, other.edges) and np.array_equal(self.heights, other.heights)
                and self.kinds == other.kinds and self.obstacles == other.obstacles)

    __hash__ = None  # mutable arrays inside


class CourseBuilder:
    """Lays a course out from left to right; also the way to hand-make courses in tests.

    >>> course = CourseBuilder().flat(5.0).hurdle(width=0.3, height=0.2).flat(3.0).build()
    """

    def __init__(self, start: float = COURSE_START, x: float = 0.0, level: float = 0.0):
        self.level = float(level)
        self.x = float(x)
        self._edges = [float(start)]
        self._heights: list[float] = []
        self._kinds: list[str] = []
        self._obstacles: list[Obstacle] = []
        if self.x > start:
            self._segment(self.x - start, self.level, "ground")

    def _segment(self, length: float, height: float, kind: str) -> None:
        if length <= 0:
            raise ValueError(f"segment lengths must be positive, got {length}")
        if kind == "ground" and self._kinds and self._kinds[-1] == "ground" and self._heights[-1] == height:
            self._edges[-1] += length  # merge equal floors: fewer boxes, no seams
        else:
            self._edges.append(self._edges[-1] + length)
            self._heights.append(height)
            self._kinds.append(kind)
        self.x = self._edges[-1]

    def flat(self, length: float) -> CourseBuilder:
        self._segment(length, self.level, "ground")
        return self

    def hurdle(self, width: float, height: float) -> CourseBuilder:
        if height <= 0:
            raise ValueError(f"hurdle height must be positive, got {height}")
        start = self.x
        self._segment(width, self.level + height, "hurdle")
        self._obstacles.append(Obstacle("hurdle", start, self.x, float(height)))
        return self

    def gap(self, width: float) -> CourseBuilder:
        start = self.x
        self._segment(width, PIT_FLOOR, "gap")
        self._obstacles.append(Obstacle("gap", start, self.x, float(width)))
        return self

    def step(self, rise: float) -> CourseBuilder:
        if rise == 0 or self.level + rise <= PIT_FLOOR:
            raise ValueError(f"a step needs a non-zero rise that stays above the pit floor, got {rise}")
        self.level += float(rise)
        self._obstacles.append(Obstacle("step", self.x, self.x, float(rise)))
        return self

    def build(self, tail: float = COURSE_TAIL) -> Course:
        """The course, with a final flat floor `tail` metres long."""
        self.flat(tail)
        return Course(self._edges, self._heights, self._kinds, self._obstacles)


@dataclass(frozen=True)
class CourseConfig:
    """How courses are generated. Sizes are drawn from [lo, hi] scaled by the difficulty.

    The difficulty of an obstacle at distance s past the run-up is
    min(1, start_difficulty + (1 - start_difficulty) * s / ramp); a size is
    lo + difficulty * u * (hi - lo) with u ~ U(0, 1).
    """

    length: float = 120.0  # obstacles are placed up to here (a 12 m/s cheetah covers 120 m in an episode)
    run_up: float = 3.0  # flat metres ahead of the start before the first obstacle
    ramp: float = 20.0
    start_difficulty: float = 0.25
    kinds: tuple[str, ...] = OBSTACLE_KINDS
    spacing: tuple[float, float] = (1.2, 3.5)  # flat floor between obstacles
    hurdle_height: tuple[float, float] = (0.05, 0.30)
    hurdle_width: tuple[float, float] = (0.15, 0.40)
    gap_width: tuple[float, float] = (0.20, 1.00)
    step_height: tuple[float, float] = (0.05, 0.30)
    max_level: float = 0.6  # floors stay within [0, max_level]

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        if any(k not in OBSTACLE_KINDS for k in kinds):
            raise ValueError(f"obstacle kinds must be among {OBSTACLE_KINDS}, got {kinds}")
        for name in ("spacing", "hurdle_height", "hurdle_width", "gap_width", "step_height"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range 0 < lo <= hi, got {(lo, hi)}")
        if 2 * self.step_height[1] > self.max_level:
            # Then from any level in [0, max_level] a step up or a step down stays inside.
            raise ValueError("step_height's upper bound must be at most max_level / 2")


def generate_course(rng: np.random.Generator, config: CourseConfig = CourseConfig()) -> Course:
    """A random course: all randomness comes from `rng`."""
    builder = CourseBuilder().flat(config.run_up)
    first = builder.x
    # Each obstacle adds at most two boxes; keep the pool's last two for the final floor.
    while config.kinds and builder.x < config.length and len(builder._heights) < NUM_BOXES - 3:
        difficulty = min(1.0, config.start_difficulty
                         + (1.0 - config.start_difficulty) * (builder.x - first) / config.ramp)

        def size(bounds, difficulty=difficulty):
            lo, hi = bounds
            return lo + difficulty * rng.uniform() * (hi - lo)

        kind = config.kinds[rng.integers(len(config.kinds))]
        if kind == "hurdle":
            builder.hurdle(width=rng.uniform(*config.hurdle_width), height=size(config.hurdle_height))
        elif kind == "gap":
            builder.gap(size(config.gap_width))
        else:
            rise = size(config.step_height)
            up = rng.uniform() < 0.5
            if builder.level + rise > config.max_level:
                up = False
            elif builder.level - rise < 0.0:
                up = True
            builder.step(rise if up else -rise)
        builder.flat(rng.uniform(*config.spacing))
    return builder.build()


# ---------------------------------------------------------------------------- model

# The body is dm_control's cheetah (suite/cheetah.xml, Apache-2.0), unchanged except that the
# torso starts at the origin (reset places it) and two cameras look at the course.
_CHEETAH_XML = """
    <body name="torso" pos="0 0 0" childclass="cheetah">
      <light name="light" pos="0 0 2" mode="trackcom"/>
      <camera name="side" pos="1.2 -4.5 2" xyaxes="1 0 0 0 .45 .89" mode="trackcom"/>
      <camera name="back" pos="-1.8 -1.3 0.8" xyaxes="0.45 -0.9 0 0.3 0.15 0.94" mode="trackcom"/>
      <joint name="rootx" type="slide" axis="1 0 0" class="free"/>
      <joint name="rootz" type="slide" axis="0 0 1" class="free"/>
      <joint name="rooty" type="hinge" axis="0 1 0" class="free"/>
      <geom name="torso" type="capsule" fromto="-.5 0 0 .5 0 0" size="0.046"/>
      <geom name="head" type="capsule" pos=".6 0 .1" euler="0 50 0" size="0.046 .15"/>
      <body name="bthigh" pos="-.5 0 0">
        <joint name="bthigh" range="-30 60" stiffness="240" damping="6"/>
        <geom name="bthigh" type="capsule" pos=".1 0 -.13" euler="0 -218 0" size="0.046 .145"/>
        <body name="bshin" pos=".16 0 -.25">
          <joint name="bshin" range="-50 50" stiffness="180" damping="4.5"/>
          <geom name="bshin" type="capsule" pos="-.14 0 -.07" euler="0 -116 0" size="0.046 .15"/>
          <body name="bfoot" pos="-.28 0 -.14">
            <joint name="bfoot" range="-230 50" stiffness="120" damping="3"/>
            <geom name="bfoot" type="capsule" pos=".03 0 -.097" euler="0 -15 0" size="0.046 .094"/>
          </body>
        </body>
      </body>
      <body name="fthigh" pos=".5 0 0">
        <joint name="fthigh" range="-57 .40" stiffness="180" damping="4.5"/>
        <geom name="fthigh" type="capsule" pos="-.07 0 -.12" euler="0 30 0" size="0.046 .133"/>
        <body name="fshin" pos="-.14 0 -.24">
          <joint name="fshin" range="-70 50" stiffness="120" damping="3"/>
          <geom name="fshin" type="capsule" pos=".065 0 -.09" euler="0 -34 0" size="0.046 .106"/>
          <body name="ffoot" pos=".13 0 -.18">
            <joint name="ffoot" range="-28 28" stiffness="60" damping="1.5"/>
            <geom name="ffoot" type="capsule" pos=".045 0 -.07" euler="0 -34 0" size="0.046 .07"/>
          </body>
        </body>
      </body>
    </body>
"""

_MODEL_XML = """
<mujoco model="obstacle course cheetah">
  <option timestep="{timestep}"/>
  <statistic center="0 0 .7" extent="2"/>
  <visual>
    <global offwidth="1024" offheight="1024"/>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <map znear=".01"/>
  </visual>
  <asset>
    <texture name="skybox" type="skybox" builtin="gradient" rgb1=".4 .6 .8" rgb2="0 0 0" width="256" height="256"/>
    <texture name="grid" type="2d" builtin="checker" rgb1=".1 .2 .3" rgb2=".2 .3 .4" width="300" height="300"
             mark="edge" markrgb=".2 .3 .4"/>
    <material name="grid" texture="grid" texrepeat="1 1" texuniform="true" reflectance=".2"/>
    <material name="self" rgba=".7 .5 .3 1"/>
  </asset>
  <default>
    <default class="cheetah">
      <joint limited="true" damping=".01" armature=".1" stiffness="8" type="hinge" axis="0 1 0"/>
      <geom contype="1" conaffinity="1" condim="3" friction=".4 .1 .1" material="self"/>
    </default>
    <default class="free">
      <joint limited="false" damping="0" armature="0" stiffness="0"/>
    </default>
    <default class="terrain">
      <geom type="box" contype="1" conaffinity="1" condim="3" size=".1 .1 .1"/>
    </default>
    <motor ctrllimited="true" ctrlrange="-1 1"/>
  </default>
  <worldbody>
    <geom name="pit_floor" type="plane" pos="0 0 {pit}" size="0 0 .5" material="grid" conaffinity="1"/>
{boxes}
{cheetah}
  </worldbody>
  <actuator>
    <motor name="bthigh" joint="bthigh" gear="120"/>
    <motor name="bshin" joint="bshin" gear="90"/>
    <motor name="bfoot" joint="bfoot" gear="60"/>
    <motor name="fthigh" joint="fthigh" gear="90"/>
    <motor name="fshin" joint="fshin" gear="60"/>
    <motor name="ffoot" joint="ffoot" gear="30"/>
  </actuator>
</mujoco>
"""


def build_model(timestep: float = 0.01) -> mujoco.MjModel:
    """The compiled model: pit floor, a pool of NUM_BOXES terrain boxes, the cheetah."""
    boxes = "\n".join(f'    <geom name="block_{i}" class="terrain"/>' for i in range(NUM_BOXES))
    xml = _MODEL_XML.format(timestep=timestep, pit=PIT_FLOOR, boxes=boxes, cheetah=_CHEETAH_XML)
    model = mujoco.MjModel.from_xml_string(xml)
    mujoco.mj_setTotalmass(model, CHEETAH_MASS)  # what dm_control's <compiler settotalmass="14"/> does
    mujoco.mj_setConst(model, mujoco.MjData(model))
    # Terrain boxes move after compilation, so:
    #  * the compile-time BVH of the world body would be stale: skip the midphase, so every box
    #    is tested against the cheetah's geoms through its bounding sphere (geom_rbound);
    #  * boxes compiled at the world origin are marked as sharing the world frame, which makes
    #    mj_kinematics ignore geom_pos: mark them as having frames of their own.
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_MIDPHASE)
    boxes = [model.geom(f"block_{i}").id for i in range(NUM_BOXES)]
    model.geom_sameframe[boxes] = int(mujoco.mjtSameFrame.mjSAMEFRAME_NONE)
    return model


# ---------------------------------------------------------------------------- env


class ObstacleCourseEnv(MujocoRendering, Env):
    """The obstacle-course task behind the `Env` interface (see the module docstring).

    Seeding: one `np.random.Generator` drives the course and the initial pose;
    `reset(seed)` replaces it, `reset()` continues it (a new course every episode).
    Keyword arguments: `target_speed` (m/s earning the full reward), `ctrl_cost`,
    `max_tilt` (rad), `fall_depth` (m), `settle_steps` (physics steps from the random
    initial pose before the episode starts), and any `CourseConfig` field, e.g.
    `kinds=("hurdle",)` or `length=60.0`.
    """

    def __init__(
        self,
        env_id: str = ENV_ID,
        *,
        seed: int | None = None,
        obs_format: str = "flat",
        target_speed: float = 8.0,
        ctrl_cost: float = 0.05,
        max_tilt: float = 1.4,
        fall_depth: float = 0.2,
        settle_steps: int = 100,
        **course_kwargs,
    ):
        self._obs_format = check_obs_format(obs_format)
        unknown = set(course_kwargs) - {f.name for f in dataclasses.fields(CourseConfig)}
        if unknown:
            raise TypeError(f"{env_id}: unknown keyword arguments {sorted(unknown)}")
        self.course_config = CourseConfig(**course_kwargs)
        if target_speed <= 0 or ctrl_cost < 0 or max_tilt <= 0 or fall_depth <= 0 or settle_steps < 0:
            raise ValueError("target_speed, max_tilt, fall_depth must be > 0; ctrl_cost, settle_steps >= 0")
        self.target_speed = float(target_speed)
        self.ctrl_cost = float(ctrl_cost)
        self.max_tilt = float(max_tilt)
        self.fall_depth = float(fall_depth)
        self.settle_steps = int(settle_steps)

        self.model = build_model()
        self.data = mujoco.MjData(self.model)
        self._box_ids = np.array([self.model.geom(f"block_{i}").id for i in range(NUM_BOXES)])
        self._limited_joints = np.flatnonzero(self.model.jnt_limited)
        self._low, self._high = check_action_bounds(*self.model.actuator_ctrlrange.T)
        self._layout = ObservationLayout({"proprio": (self.model.nq - 2 + self.model.nv,),
                                          "terrain": (TERRAIN_OFFSETS.size,)})
        self.spec = EnvSpec(
            env_id=env_id,
            observation=self._layout.spec(obs_format),
            action_dim=self.model.nu,
            action_low=self._low.astype(np.float32),
            action_high=self._high.astype(np.float32),
            control_period=float(self.model.opt.timestep),
            max_episode_steps=EPISODE_STEPS,
            action_repeat=1,
            action_names=tuple(self.model.actuator(i).name for i in range(self.model.nu)),
            obs_layout=self._layout.components(),
        )
        self._rng = np.random.default_rng(seed)
        self.course: Course | None = None
        self._steps = 0
        self._needs_reset = True
        self._init_rendering()

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None, *, course: Course | None = None):
        """Starts an episode on a new random course, or on `course` if one is given."""
        self._check_open()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.course = course if course is not None else generate_course(self._rng, self.course_config)
        self._install(self.course)

        model, data = self.model, self.data
        mujoco.mj_resetData(model, data)
        data.qpos[1] = float(self.course.height_at(0.0)) + SPAWN_HEIGHT
        lo, hi = model.jnt_range[self._limited_joints].T
        data.qpos[model.jnt_qposadr[self._limited_joints]] = self._rng.uniform(lo, hi)
        for _ in range(self.settle_steps):  # let it drop and settle, as dm_control's cheetah does
            mujoco.mj_step(model, data)
        data.time = 0.0
        mujoco.mj_forward(model, data)
        self._steps = 0
        self._needs_reset = False
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        applied = normalized_to_physical(action, self._low, self._high)
        data = self.data
        data.ctrl[:] = applied
        mujoco.mj_step(self.model, data)
        self._steps += 1

        x, z, pitch = float(data.qpos[0]), float(data.qpos[1]), float(data.qpos[2])
        progress = min(max(float(data.qvel[0]) / self.target_speed, 0.0), 1.0)
        # Every ctrlrange is [-1, 1], so `applied` is also the clipped normalized action.
        reward = progress - self.ctrl_cost * float(applied @ applied) / applied.size
        fell = not (abs(pitch) <= self.max_tilt and z >= self.course.rim_at_scalar(x) - self.fall_depth
                    and math.isfinite(z))
        truncated = not fell and self._steps >= EPISODE_STEPS
        self._needs_reset = fell or truncated
        return StepResult(
            obs=self._observe(),
            reward=reward,
            terminated=fell,
            truncated=truncated,
            # An obstacle counts as passed once the back of the torso is beyond it.
            info={"applied_action": applied, "x_position": x, "fell": fell,
                  "obstacles_passed": self.course.obstacles_before(x - 0.5)},
        )

    def terrain_profile(self) -> np.ndarray:
        """Terrain heights at TERRAIN_OFFSETS ahead of the torso, relative to the torso height."""
        x, z = self.data.qpos[0], self.data.qpos[1]
        return self.course.height_at(x + TERRAIN_OFFSETS) - z

    def _observe(self):
        data = self.data
        named = {"proprio": np.concatenate([data.qpos[2:], data.qvel]), "terrain": self.terrain_profile()}
        return self._layout.format(named, self._obs_format)

    def _install(self, course: Course) -> None:
        """Moves the pool of boxes onto the course's solid segments and parks the rest."""
        solid = course.solid_segments()
        if len(solid) > NUM_BOXES:
            raise ValueError(f"the course has {len(solid)} solid segments; the model holds {NUM_BOXES} boxes")
        n = len(solid)
        pos = np.empty((NUM_BOXES, 3))
        size = np.full((NUM_BOXES, 3), 0.1)
        rgba = np.tile(np.array(_SEGMENT_RGBA["ground"]), (NUM_BOXES, 1))
        if n:
            x0, x1, top = (np.array(v, dtype=np.float64) for v in zip(*[s[:3] for s in solid]))
            pos[:n] = np.stack([(x0 + x1) / 2, np.zeros(n), (top + PIT_FLOOR) / 2], axis=1)
            size[:n] = np.stack([(x1 - x0) / 2, np.full(n, BOX_HALF_WIDTH), (top - PIT_FLOOR) / 2], axis=1)
            rgba[:n] = [_SEGMENT_RGBA[s[3]] for s in solid]
        parked = np.arange(n, NUM_BOXES)
        pos[n:] = np.stack([COURSE_START - 50.0 - parked, np.zeros(parked.size), np.full(parked.size, -20.0)], axis=1)
        model, ids = self.model, self._box_ids
        in_use = (np.arange(NUM_BOXES) < n).astype(np.int32)  # parked boxes skip collision tests
        model.geom_contype[ids] = in_use
        model.geom_conaffinity[ids] = in_use
        model.geom_pos[ids] = pos
        model.geom_size[ids] = size
        model.geom_rgba[ids] = rgba
        # Collision filtering reads these: bounding sphere radius and (local) bounding box.
        model.geom_rbound[ids] = np.linalg.norm(size, axis=1)
        model.geom_aabb[ids] = np.concatenate([np.zeros((NUM_BOXES, 3)), size], axis=1)

    # ------------------------------------------------------------------ rendering

    # render / close / _check_open: envs.mujoco_rendering.MujocoRendering
