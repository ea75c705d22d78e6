"""Bin grasping ("rlc:grasp"): the QT-Opt task (Kalashnikov et al. 2018) in MuJoCo.

A free parallel-jaw gripper hangs over a bin holding 1 to `max_objects` randomized objects.
The agent moves the gripper with Cartesian end-effector displacements (dx, dy, dz, dyaw),
opens or closes the fingers, and optionally ends the attempt itself (`terminate_action`).
Episodes are short (`max_steps`, 20 as in QT-Opt). When the attempt ends (step limit or
terminate action) the environment does what QT-Opt's robots did: it closes the gripper,
lifts it out of the bin and detects success from the simulation state, i.e. an object
lifted above the bin's rim and touched by both fingers. The reward is that binary outcome at
the final step and 0 everywhere else: no shaping, as in the paper.

Why a free gripper and not an arm: the task is about where and how to close the fingers,
not about arm kinematics, and QT-Opt's action space is Cartesian anyway. A gripper on slide
joints (x, y, z) and a hinge (yaw), each driven by a position actuator, keeps the model small
(24 DoF with 3 objects), and joint ranges give exact bounds.

Control: each agent step takes the gripper's *measured* pose plus the scaled action, clipped
to the joint ranges (over the bin), as the goal, and runs `substeps` physics steps (40 x 2 ms)
while the position targets glide from the measured pose to the goal along a half-cosine over
the first half of the step, then rest there. Goals relative to the measured pose (not to the
previous target) bound the force the gripper presses with when an object or the floor blocks
it; the glide keeps accelerations near 2 g: a target that jumped at once accelerated the
gripper at ~15 g and shook held objects out of the fingers (a scripted grasp then succeeded
68% of the time instead of 99%).

Objects are a pool of MAX_OBJECTS_IN_MODEL free bodies compiled once; at every reset their geom
type, size, mass, inertia, friction, colour and pose are rewritten from the env's one
`np.random.Generator`; unused bodies are parked under the floor with collisions off. Two
object sets (see `OBJECT_SETS` and docs/grasp.md): "train" and a held-out "test" set made of
two shape families never used in training plus the training shapes in size bands interleaved
with the training bands, so the two sets share no (shape, size band) pair.

Observations (dict order = flat order), state variant:
  "gripper": float32 (8,) - fingertip centre x, y, z (bin frame: floor centre at the origin),
             sin(yaw), cos(yaw), finger opening / max opening, closed command (0/1), and the
             fraction of steps left (the attempt ends at a fixed step, so the time left is
             part of the state: without it the terminal step would not be Markov).
  "object":  float32 (8,) - for the object nearest to the gripper in the horizontal plane:
             its centre minus the fingertip centre (3, bin frame), its bounding half extents
             in its own frame (3), and sin/cos of 2 x (object yaw - gripper yaw) (2; a parallel
             jaw is symmetric under a half turn, hence the 2). Left out with
             `observe_objects=False`, which is what a pixel agent gets as its state vector
             (QT-Opt fed the image plus the gripper status only).
Pixel variant: `envs.make("rlc:grasp", pixels=True, pixel_size=64, include_state=True,
observe_objects=False)` renders camera 0, the fixed over-the-shoulder RGB camera
"over_shoulder", and adds the gripper vector as "state".

Baselines (success rates in docs/grasp.md; `python -m envs.grasp` measures them):
`ScriptedGrasp` (privileged state: aligns over the nearest object, descends, closes),
`RandomDescent` (QT-Opt's randomized scripted exploration: closes at a random spot) and
`random_policy` (uniform random actions).
"""

from __future__ import annotations

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

ENV_ID = "rlc:grasp"

# ---------------------------------------------------------------------------- geometry
BIN_HALF = 0.20  # interior half width of the square bin (m); the floor is at z = 0
WALL_HEIGHT = 0.10  # the rim: an object lifted above it counts as out of the bin
WALL_HALF_THICKNESS = 0.01
XY_LIMIT = 0.16  # gripper axis range in x and y (open fingers reach 6.3 cm further and may touch the walls)
Z_MIN = 0.004  # lowest fingertip height: the fingers can close just above the floor
Z_MAX = 0.28  # highest fingertip height (also where the automatic lift goes)
YAW_LIMIT = math.pi  # the yaw hinge spans one full turn
FINGER_TRAVEL = 0.05  # each finger's inner face moves 0..5 cm from the centre line
FINGER_HALF_LENGTH = 0.04  # fingers are 8 cm long (objects are at most 7.2 cm tall)
FINGER_HALF_THICKNESS = 0.006
FINGER_HALF_WIDTH = 0.012
START_Z = 0.20  # fingertip height at the start of an episode

MAX_DXYZ = 0.03  # m per agent step at |action| = 1 (QT-Opt-like ~3 cm)
MAX_DYAW = math.radians(15.0)  # rad per agent step

TIMESTEP = 0.002
SUBSTEPS = 40  # physics steps per agent step: an 80 ms control period (12.5 Hz)
CLOSE_STEPS = 100  # physics steps for the automatic final close (0.2 s)
LIFT_STEPS = 250  # physics steps for the automatic lift (0.5 s)
SETTLE_STEPS = 100  # physics steps letting dropped objects come to rest at reset (0.2 s)
RAMP_FRACTION = 0.5  # share of an agent step over which the arm targets glide to the goal
LIFT_SUCCESS_HEIGHT = WALL_HEIGHT  # an object centre above the rim after the lift is a success

MAX_OBJECTS_IN_MODEL = 3  # pool size; `max_objects` may be smaller
PARK_DEPTH = -1.0  # unused objects wait here, collisions off

# ---------------------------------------------------------------------------- objects

# The grasp half width w (half the distance the fingers close on) is drawn from size bands;
# training and test objects use interleaved bands so their sizes never coincide.
SIZE_BANDS = ((0.012, 0.016), (0.016, 0.020), (0.020, 0.024), (0.024, 0.028), (0.028, 0.032), (0.032, 0.036))
TRAIN_BANDS = (0, 2, 4)
TEST_BANDS = (1, 3, 5)
TRAIN_SHAPES = ("box", "cylinder", "sphere", "capsule")
HELD_OUT_SHAPES = ("ellipsoid", "lying_cylinder")
ALL_SHAPES = TRAIN_SHAPES + HELD_OUT_SHAPES
# Object centres start within +-PLACE_LIMIT in x and y: far enough from the walls that the
# open gripper (6.3 cm from its axis to a finger's outer corner) fits over any of them at any
# yaw. Objects may still be pushed or roll closer to the walls during an attempt.
PLACE_LIMIT = BIN_HALF - 0.07
MASS_RANGE = (0.03, 0.25)  # kg, drawn independently of the size
FRICTION_RANGE = (0.5, 1.0)  # sliding friction coefficient


@dataclass(frozen=True)
class ObjectSet:
    """Which (shape, size band) pairs an object set draws from.

    An object draws a shape uniformly from `shapes`; its size band is drawn uniformly from
    `bands[shape]`.
    """

    shapes: tuple[str, ...]
    bands: dict

    def pairs(self) -> set[tuple[str, int]]:
        return {(s, b) for s in self.shapes for b in self.bands[s]}


OBJECT_SETS = {
    "train": ObjectSet(TRAIN_SHAPES, {s: TRAIN_BANDS for s in TRAIN_SHAPES}),
    # A third of the draws are shape families never seen in training (in any size band), the
    # rest are the training families in the held-out size bands.
    "test": ObjectSet(ALL_SHAPES, {**{s: TEST_BANDS for s in TRAIN_SHAPES},
                                   **{s: tuple(range(len(SIZE_BANDS))) for s in HELD_OUT_SHAPES}}),
}

_MJ_TYPE = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
    "lying_cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
}
# Capsules and lying cylinders lie with their axis along the body's x axis: the geom's z axis
# (MuJoCo's axis for both) is turned onto x by a quarter turn about y.
_LYING_QUAT = np.array([math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0])
_IDENTITY_QUAT = np.array([1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class ObjectParams:
    """One object: every number the simulation needs, all drawn from the env's RNG.

    `size` is MuJoCo's geom size for the shape. `half_extents` is the bounding box in the
    body frame (x, y, z); for oriented shapes the fingers close along the body's y axis, so
    half_extents[1] is the grasp half width `width`. `x, y, yaw` place it on the floor.
    """

    shape: str
    band: int
    width: float
    size: tuple[float, float, float]
    half_extents: tuple[float, float, float]
    mass: float
    friction: float
    x: float
    y: float
    yaw: float
    rgba: tuple[float, float, float, float]

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.half_extents[0], self.half_extents[1])


def _shape_dimensions(shape: str, w: float, rng: np.random.Generator):
    """(geom size, body-frame half extents) for a shape with grasp half width w."""
    if shape == "box":
        a, c = w * rng.uniform(1.0, 1.6), rng.uniform(0.012, 0.030)
        return (a, w, c), (a, w, c)
    if shape == "cylinder":  # upright: any yaw grasps it
        h = rng.uniform(0.015, 0.035)
        return (w, h, 0.0), (w, w, h)
    if shape == "sphere":
        return (w, 0.0, 0.0), (w, w, w)
    if shape == "capsule":  # lying along body x
        h = rng.uniform(0.015, 0.040)
        return (w, h, 0.0), (h + w, w, w)
    if shape == "ellipsoid":  # lying, long axis along body x, a little flattened
        a, c = w * rng.uniform(1.3, 2.0), w * rng.uniform(0.7, 1.0)
        return (a, w, c), (a, w, c)
    if shape == "lying_cylinder":
        h = rng.uniform(0.020, 0.045)
        return (w, h, 0.0), (h, w, w)
    raise ValueError(f"unknown shape {shape!r}")


def sample_objects(rng: np.random.Generator, object_set: str, max_objects: int) -> list[ObjectParams]:
    """1..max_objects objects from `object_set`, placed apart inside the bin."""
    spec = OBJECT_SETS[object_set]
    count = int(rng.integers(1, max_objects + 1))
    objects: list[ObjectParams] = []
    for _ in range(count):
        shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
        bands = spec.bands[shape]
        band = int(bands[int(rng.integers(len(bands)))])
        w = float(rng.uniform(*SIZE_BANDS[band]))
        size, half = _shape_dimensions(shape, w, rng)
        mass = float(rng.uniform(*MASS_RANGE))
        friction = float(rng.uniform(*FRICTION_RANGE))
        rgba = (*rng.uniform(0.15, 0.95, size=3).tolist(), 1.0)
        radius = math.hypot(half[0], half[1])
        # Rejection sampling of the position: inside PLACE_LIMIT, apart from the walls and from
        # earlier objects (bounding circles plus 1 cm). Every draw comes from `rng`, so a seed
        # replays the layout; after 50 failed tries the object is left out.
        placed = None
        margin = min(PLACE_LIMIT, BIN_HALF - radius - 0.01)
        for _ in range(50):
            x, y, yaw = rng.uniform(-margin, margin), rng.uniform(-margin, margin), rng.uniform(-math.pi, math.pi)
            if all(math.hypot(x - o.x, y - o.y) > radius + o.footprint_radius + 0.01 for o in objects):
                placed = (float(x), float(y), float(yaw))
                break
        if placed is None:
            continue
        objects.append(ObjectParams(shape, band, w, tuple(float(s) for s in size), tuple(float(h) for h in half),
                                    mass, friction, *placed, rgba))
    return objects


def _inertia(shape: str, size, mass: float) -> np.ndarray:
    """Principal moments of inertia in the body frame (solid, uniform density)."""
    if shape == "box" or shape == "ellipsoid":
        a, b, c = size
        k = 1.0 / 3.0 if shape == "box" else 1.0 / 5.0  # box half extents / ellipsoid semi-axes
        return mass * k * np.array([b * b + c * c, a * a + c * c, a * a + b * b])
    if shape == "sphere":
        return np.full(3, 0.4 * mass * size[0] ** 2)
    r, h = size[0], size[1]
    if shape == "capsule":  # approximated by a cylinder of the same total length: close enough
        h = h + r
    axial, across = 0.5 * mass * r * r, mass * (3 * r * r + 4 * h * h) / 12.0
    if shape == "cylinder":  # axis along z
        return np.array([across, across, axial])
    return np.array([axial, across, across])  # lying: axis along x


def _rbound_and_aabb(shape: str, size) -> tuple[float, np.ndarray]:
    """Bounding sphere radius and geom-frame half extents, as the collision filter reads them."""
    if shape in ("box", "ellipsoid"):
        half = np.array(size)
        return (float(np.linalg.norm(half)) if shape == "box" else float(max(size))), half
    if shape == "sphere":
        return size[0], np.full(3, size[0])
    r, h = size[0], size[1]
    if shape == "capsule":
        return r + h, np.array([r, r, r + h])
    return math.hypot(r, h), np.array([r, r, h])  # both cylinders, geom frame


# ---------------------------------------------------------------------------- model

_MODEL_XML = """
<mujoco model="rlcontrol grasp">
  <compiler angle="radian"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="1024" offheight="1024"/>
    <headlight ambient=".45 .45 .45" diffuse=".6 .6 .6" specular=".1 .1 .1"/>
    <quality shadowsize="0"/>
    <map znear=".01"/>
  </visual>
  <default>
    <geom condim="4" friction=".3 .005 .0001" solref=".004 1"/>
    <default class="bin"><geom type="box" rgba=".45 .5 .55 1" friction=".4 .005 .0001"/></default>
    <default class="finger"><geom type="box" rgba=".2 .2 .25 1" condim="4"/></default>
  </default>
  <worldbody>
    <camera name="over_shoulder" pos="{cam_pos}" xyaxes="{cam_xyaxes}" fovy="45"/>
    <camera name="top" pos="0 0 0.9" xyaxes="1 0 0 0 1 0" fovy="40"/>
    <geom name="floor" class="bin" type="plane" size="{floor} {floor} 0.05" rgba=".62 .6 .55 1"/>
    <geom name="wall_px" class="bin" pos="{wall_c} 0 {wall_z}" size="{wt} {wall_len} {wall_z}"/>
    <geom name="wall_nx" class="bin" pos="-{wall_c} 0 {wall_z}" size="{wt} {wall_len} {wall_z}"/>
    <geom name="wall_py" class="bin" pos="0 {wall_c} {wall_z}" size="{wall_len} {wt} {wall_z}"/>
    <geom name="wall_ny" class="bin" pos="0 -{wall_c} {wall_z}" size="{wall_len} {wt} {wall_z}"/>
    <body name="gripper" gravcomp="1">
      <joint name="gripper_x" type="slide" axis="1 0 0" range="-{xy} {xy}" damping="1" armature="0.05" solreflimit=".004 1"/>
      <joint name="gripper_y" type="slide" axis="0 1 0" range="-{xy} {xy}" damping="1" armature="0.05" solreflimit=".004 1"/>
      <joint name="gripper_z" type="slide" axis="0 0 1" range="{zmin} {zmax}" damping="1" armature="0.05" solreflimit=".004 1"/>
      <joint name="gripper_yaw" type="hinge" axis="0 0 1" range="-{yaw} {yaw}" damping="0.02" armature="0.005" solreflimit=".004 1"/>
      <geom name="palm" type="box" pos="0 0 {palm_z}" size="0.02 {palm_y} 0.01" mass="0.3" rgba=".3 .3 .35 1"/>
      <geom name="wrist" type="cylinder" pos="0 0 {wrist_z}" size="0.015 0.03" mass="0.1" rgba=".3 .3 .35 1"
            contype="0" conaffinity="0"/>
      <body name="finger_left" pos="0 0 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {travel}" damping="2" armature="0.01"/>
        <geom name="finger_left" class="finger" pos="0 {ft} {fl}" size="{fw} {ft} {fl}" mass="0.05"/>
      </body>
      <body name="finger_right" pos="0 0 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {travel}" damping="2" armature="0.01"/>
        <geom name="finger_right" class="finger" pos="0 -{ft} {fl}" size="{fw} {ft} {fl}" mass="0.05"/>
      </body>
    </body>
{objects}
  </worldbody>
  <actuator>
    <!-- Critically damped at about 120 rad/s (moving mass 0.55 kg, yaw inertia 0.0058 kg m^2), so
         a 3 cm / 15 degree step is 99% done within the 50 ms control period; the force limits
         bound how hard the gripper can push on objects, walls and the floor. -->
    <position name="x" joint="gripper_x" kp="8000" kv="130" ctrlrange="-{xy} {xy}" forcerange="-80 80"/>
    <position name="y" joint="gripper_y" kp="8000" kv="130" ctrlrange="-{xy} {xy}" forcerange="-80 80"/>
    <position name="z" joint="gripper_z" kp="8000" kv="130" ctrlrange="{zmin} {zmax}" forcerange="-80 80"/>
    <position name="yaw" joint="gripper_yaw" kp="80" kv="1.4" ctrlrange="-{yaw} {yaw}" forcerange="-20 20"/>
    <position name="finger_left" joint="finger_left" kp="800" kv="8" ctrlrange="0 {travel}" forcerange="-20 20"/>
    <position name="finger_right" joint="finger_right" kp="800" kv="8" ctrlrange="0 {travel}" forcerange="-20 20"/>
  </actuator>
</mujoco>
"""

_OBJECT_XML = """    <body name="object_{i}" pos="0 0 {park}">
      <freejoint name="object_{i}"/>
      <geom name="object_{i}" type="sphere" size="0.02" mass="0.1" condim="4" priority="1"/>
    </body>"""


def _look_at(pos, target) -> str:
    """A MuJoCo camera `xyaxes` string for a camera at `pos` looking at `target`, z up."""
    forward = np.asarray(target, dtype=float) - np.asarray(pos, dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


# Over the shoulder: behind the bin (x < 0), raised and a little to one side, looking down into
# the bin as a camera on a robot's shoulder looks past its arm. The whole bin floor is in view;
# the gripper leaves the top of the frame when it is high over the far half of the bin.
CAMERA_POS = (-0.40, -0.12, 0.62)
CAMERA_TARGET = (0.03, 0.0, 0.06)


def build_model(timestep: float = TIMESTEP) -> mujoco.MjModel:
    """The compiled model: bin, gripper, and a pool of MAX_OBJECTS_IN_MODEL object bodies."""
    objects = "\n".join(_OBJECT_XML.format(i=i, park=PARK_DEPTH - i) for i in range(MAX_OBJECTS_IN_MODEL))
    xml = _MODEL_XML.format(
        timestep=timestep, cam_pos=" ".join(map(str, CAMERA_POS)), cam_xyaxes=_look_at(CAMERA_POS, CAMERA_TARGET),
        floor=BIN_HALF + 2 * WALL_HALF_THICKNESS, wall_c=BIN_HALF + WALL_HALF_THICKNESS, wall_z=WALL_HEIGHT / 2,
        wt=WALL_HALF_THICKNESS, wall_len=BIN_HALF + 2 * WALL_HALF_THICKNESS, xy=XY_LIMIT, zmin=Z_MIN, zmax=Z_MAX,
        yaw=YAW_LIMIT, palm_z=2 * FINGER_HALF_LENGTH + 0.01, palm_y=FINGER_TRAVEL + 2 * FINGER_HALF_THICKNESS,
        wrist_z=2 * FINGER_HALF_LENGTH + 0.05, travel=FINGER_TRAVEL, ft=FINGER_HALF_THICKNESS,
        fl=FINGER_HALF_LENGTH, fw=FINGER_HALF_WIDTH, objects=objects)
    model = mujoco.MjModel.from_xml_string(xml)
    # Object geoms get a new type, size and orientation at every reset. Compiled at their
    # body's origin they are flagged as sharing the body frame, which makes mj_kinematics
    # ignore geom_quat (needed for the lying shapes): give them frames of their own.
    for i in range(MAX_OBJECTS_IN_MODEL):
        model.geom_sameframe[model.geom(f"object_{i}").id] = int(mujoco.mjtSameFrame.mjSAMEFRAME_NONE)
    # The midphase tests body pairs through bounding-volume trees built at compile time, i.e.
    # around the placeholder object geoms: with it, a large object and the floor or the palm
    # could pass through each other. Without it, geom pairs are filtered by geom_rbound and
    # geom_aabb, which `_install` rewrites; with ~12 geoms the cost is negligible.
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_MIDPHASE)
    return model


# ---------------------------------------------------------------------------- env


class GraspEnv(MujocoRendering, Env):
    """The grasping task behind the `Env` interface (see the module docstring).

    Keyword arguments:
      object_set: "train" (default) or "test" (held-out shapes and size bands).
      max_objects: objects per episode are drawn uniformly from 1..max_objects (<= 3).
      max_steps: agent steps per attempt (20, as QT-Opt); the last one closes, lifts and
        scores the grasp.
      terminate_action: add a 6th action entry; > 0 ends the attempt now (close, lift, score).
      observe_objects: include the privileged "object" entry in the observation (default);
        False leaves only the "gripper" vector, the state a pixel agent should get.
      substeps: physics steps (2 ms each) per agent step.
    Seeding: one `np.random.Generator` draws the objects and the gripper's start pose;
    `reset(seed)` replaces it, `reset()` continues it.
    """

    def __init__(
        self,
        env_id: str = ENV_ID,
        *,
        seed: int | None = None,
        obs_format: str = "flat",
        object_set: str = "train",
        max_objects: int = 3,
        max_steps: int = 20,
        terminate_action: bool = False,
        observe_objects: bool = True,
        substeps: int = SUBSTEPS,
    ):
        self._obs_format = check_obs_format(obs_format)
        if object_set not in OBJECT_SETS:
            raise ValueError(f"object_set must be one of {sorted(OBJECT_SETS)}, got {object_set!r}")
        if not 1 <= int(max_objects) <= MAX_OBJECTS_IN_MODEL:
            raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS_IN_MODEL}, got {max_objects}")
        if int(max_steps) < 1 or int(substeps) < 1:
            raise ValueError("max_steps and substeps must be positive")
        self.object_set = object_set
        self.max_objects = int(max_objects)
        self.max_steps = int(max_steps)
        self.terminate_action = bool(terminate_action)
        self.observe_objects = bool(observe_objects)
        self.substeps = int(substeps)

        self.model = build_model()
        self.data = mujoco.MjData(self.model)
        m = self.model
        arm = [m.joint(n).id for n in ("gripper_x", "gripper_y", "gripper_z", "gripper_yaw")]
        self._arm_qpos = m.jnt_qposadr[arm].copy()  # actuators 0-3 drive these, in this order
        self._arm_low, self._arm_high = m.jnt_range[arm, 0].copy(), m.jnt_range[arm, 1].copy()
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_left", "finger_right")])
        self._finger_geoms = (m.geom("finger_left").id, m.geom("finger_right").id)
        self._obj_bodies = np.array([m.body(f"object_{i}").id for i in range(MAX_OBJECTS_IN_MODEL)])
        self._obj_geoms = np.array([m.geom(f"object_{i}").id for i in range(MAX_OBJECTS_IN_MODEL)])
        self._obj_qpos = np.array([m.jnt_qposadr[m.joint(f"object_{i}").id] for i in range(MAX_OBJECTS_IN_MODEL)])

        names = ["dx", "dy", "dz", "dyaw", "grip"] + (["terminate"] if self.terminate_action else [])
        high = np.array([MAX_DXYZ, MAX_DXYZ, MAX_DXYZ, MAX_DYAW, 1.0] + ([1.0] if self.terminate_action else []))
        self._low, self._high = check_action_bounds(-high, high)
        shapes = {"gripper": (8,)}
        if self.observe_objects:
            shapes["object"] = (8,)
        self._layout = ObservationLayout(shapes)
        self.spec = EnvSpec(
            env_id=env_id,
            observation=self._layout.spec(obs_format),
            action_dim=len(names),
            action_low=self._low.astype(np.float32),
            action_high=self._high.astype(np.float32),
            control_period=TIMESTEP * self.substeps,
            # Episodes never run longer; the last step *terminates* (the attempt is scored).
            max_episode_steps=self.max_steps,
            action_repeat=1,
            action_names=tuple(names),
            obs_layout=self._layout.components(),
        )
        self._rng = np.random.default_rng(seed)
        self.objects: list[ObjectParams] = []
        self._steps = 0
        self._closed_cmd = False
        self._needs_reset = True
        self._init_rendering()

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None, *, objects: list[ObjectParams] | None = None,
              gripper: tuple[float, float, float, float] | None = None):
        """Starts an attempt with new random objects, or with `objects` (hand-placed, for tests).

        `gripper` optionally fixes the start pose (x, y, fingertip z, yaw); by default x, y and
        yaw are random and the fingertips START_Z above the floor, fingers open.
        """
        self._check_open()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng = self._rng
        self.objects = list(objects) if objects is not None else sample_objects(rng, self.object_set,
                                                                               self.max_objects)
        if not 1 <= len(self.objects) <= MAX_OBJECTS_IN_MODEL:
            raise ValueError(f"an episode needs 1..{MAX_OBJECTS_IN_MODEL} objects, got {len(self.objects)}")
        start = rng.uniform([-XY_LIMIT, -XY_LIMIT, -YAW_LIMIT], [XY_LIMIT, XY_LIMIT, YAW_LIMIT])
        if gripper is not None:
            start = np.array([gripper[0], gripper[1], gripper[3]], dtype=float)
        start_z = START_Z if gripper is None else float(gripper[2])

        model, data = self.model, self.data
        self._install(self.objects)
        # Masses and inertias changed: refresh the constants derived from them. mj_setConst
        # uses `data` as scratch space (it leaves it at qpos0), so it runs before the state is set.
        mujoco.mj_setConst(model, data)
        mujoco.mj_resetData(model, data)
        arm = np.array([start[0], start[1], start_z, start[2]])
        data.qpos[self._arm_qpos] = arm
        data.qpos[self._finger_qpos] = FINGER_TRAVEL
        data.ctrl[:4] = arm
        data.ctrl[4:6] = FINGER_TRAVEL
        for i, obj in enumerate(self.objects):
            adr = self._obj_qpos[i]
            # A millimetre above resting height: the objects drop onto the floor and settle.
            data.qpos[adr:adr + 3] = (obj.x, obj.y, obj.half_extents[2] + 0.001)
            data.qpos[adr + 3:adr + 7] = (math.cos(obj.yaw / 2), 0.0, 0.0, math.sin(obj.yaw / 2))
        for _ in range(SETTLE_STEPS):
            mujoco.mj_step(model, data)
        data.time = 0.0
        mujoco.mj_forward(model, data)
        self._steps = 0
        self._closed_cmd = False
        self._needs_reset = False
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() first: the episode has not started or has already ended")
        applied = normalized_to_physical(action, self._low, self._high)
        self._closed_cmd = bool(applied[4] > 0.0)
        data = self.data
        start = data.qpos[self._arm_qpos].copy()
        goal = np.clip(start + applied[:4], self._arm_low, self._arm_high)
        data.ctrl[4:6] = 0.0 if self._closed_cmd else FINGER_TRAVEL
        self._move(start, goal, self.substeps)
        self._steps += 1

        terminate = self.terminate_action and applied[5] > 0.0
        done = terminate or self._steps >= self.max_steps
        info = {"applied_action": applied, "steps": self._steps}
        reward = 0.0
        if done:
            success, lifted = self._close_lift_and_score()
            reward = 1.0 if success else 0.0
            info.update(success=success, lifted_object=lifted, terminate_action=bool(terminate))
        self._needs_reset = done
        return StepResult(obs=self._observe(), reward=reward, terminated=done, truncated=False, info=info)

    def _simulate(self, n: int) -> None:
        model, data = self.model, self.data
        for _ in range(n):
            mujoco.mj_step(model, data)

    def _move(self, start: np.ndarray, goal: np.ndarray, n: int) -> None:
        """Runs n physics steps while the arm targets glide from `start` to `goal`.

        The target follows a half-cosine over the first RAMP_FRACTION of the steps and then
        rests at `goal` so the arm settles. Jumping the target at once would accelerate the
        gripper at ~15 g and shake a held object out of the fingers.
        """
        model, data = self.model, self.data
        n_ramp = max(1, int(RAMP_FRACTION * n))
        for k in range(n):
            s = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (k + 1) / n_ramp))
            data.ctrl[:4] = start + s * (goal - start)
            mujoco.mj_step(model, data)

    def _close_lift_and_score(self) -> tuple[bool, int]:
        """QT-Opt's automatic end of an attempt: close, lift out of the bin, check the state."""
        data = self.data
        self._closed_cmd = True
        data.ctrl[:4] = np.clip(data.qpos[self._arm_qpos], self._arm_low, self._arm_high)  # hold still
        data.ctrl[4:6] = 0.0
        self._simulate(CLOSE_STEPS)
        # Lift straight up to Z_MAX along the same smooth target profile as `step`, so a held
        # object is not jerked out of the fingers.
        start = data.qpos[self._arm_qpos].copy()
        goal = start.copy()
        goal[2] = Z_MAX
        self._move(start, goal, LIFT_STEPS)
        lifted = self.held_object()
        return lifted >= 0, lifted

    def held_object(self) -> int:
        """Index of an object whose centre is above the rim and that touches both fingers, or -1.

        Both conditions, because either alone can be fooled: an object can be carried up on
        top of a finger, or pinched between a finger and a wall inside the bin.
        """
        data = self.data
        pairs = data.contact.geom[:data.ncon]
        for i, g in enumerate(self._obj_geoms[:len(self.objects)]):
            if data.xpos[self._obj_bodies[i], 2] <= LIFT_SUCCESS_HEIGHT:
                continue
            partners = set(pairs[pairs[:, 0] == g, 1].tolist()) | set(pairs[pairs[:, 1] == g, 0].tolist())
            if all(finger in partners for finger in self._finger_geoms):
                return i
        return -1

    # ------------------------------------------------------------------ state

    def gripper_pose(self) -> np.ndarray:
        """(x, y, fingertip z, yaw) of the gripper, measured."""
        return self.data.qpos[self._arm_qpos].copy()

    def finger_opening(self) -> float:
        """Distance between the fingers' inner faces (m)."""
        return float(self.data.qpos[self._finger_qpos].sum())

    def object_poses(self) -> np.ndarray:
        """(n_objects, 4): x, y, z of each object's centre and its yaw (of the body x axis)."""
        n = len(self.objects)
        pos = self.data.xpos[self._obj_bodies[:n]]
        mats = self.data.xmat[self._obj_bodies[:n]]
        yaw = np.arctan2(mats[:, 3], mats[:, 0])
        return np.concatenate([pos, yaw[:, None]], axis=1)

    def nearest_object(self) -> int:
        """Index of the object nearest to the gripper in the horizontal plane."""
        poses = self.object_poses()
        d = np.hypot(poses[:, 0] - self.data.qpos[self._arm_qpos[0]], poses[:, 1] - self.data.qpos[self._arm_qpos[1]])
        return int(np.argmin(d))

    def _observe(self):
        x, y, z, yaw = self.data.qpos[self._arm_qpos]
        gripper = np.array([x, y, z, math.sin(yaw), math.cos(yaw),
                            self.finger_opening() / (2 * FINGER_TRAVEL), float(self._closed_cmd),
                            (self.max_steps - self._steps) / self.max_steps])
        named = {"gripper": gripper}
        if self.observe_objects:
            named["object"] = self.object_state()
        return self._layout.format(named, self._obs_format)

    def object_state(self) -> np.ndarray:
        """The privileged `object` entry (8,): the nearest object's centre minus the fingertip
        centre, its half extents, sin and cos of 2 x (object yaw - gripper yaw). Also available
        with observe_objects=False, as a label for pretraining image encoders (docs/grasp.md)."""
        x, y, z, yaw = self.data.qpos[self._arm_qpos]
        i = self.nearest_object()
        ox, oy, oz, oyaw = self.object_poses()[i]
        rel = 2.0 * (oyaw - yaw)
        return np.array([ox - x, oy - y, oz - z, *self.objects[i].half_extents, math.sin(rel), math.cos(rel)])

    def _install(self, objects: list[ObjectParams]) -> None:
        """Writes the objects' shapes and physical properties into the pooled bodies."""
        model = self.model
        for i in range(MAX_OBJECTS_IN_MODEL):
            g, b = self._obj_geoms[i], self._obj_bodies[i]
            if i < len(objects):
                obj = objects[i]
                model.geom_type[g] = _MJ_TYPE[obj.shape]
                model.geom_size[g] = obj.size
                lying = obj.shape in ("capsule", "lying_cylinder")
                model.geom_quat[g] = _LYING_QUAT if lying else _IDENTITY_QUAT
                model.geom_friction[g] = (obj.friction, 0.005, 0.0001)
                model.geom_rgba[g] = obj.rgba
                rbound, aabb = _rbound_and_aabb(obj.shape, obj.size)
                model.geom_rbound[g] = rbound
                model.geom_aabb[g] = np.concatenate([np.zeros(3), aabb])
                model.body_mass[b] = obj.mass
                model.body_inertia[b] = _inertia(obj.shape, obj.size, obj.mass)
                model.geom_contype[g] = model.geom_conaffinity[g] = 1
                model.body_gravcomp[b] = 0.0
            else:  # parked below the floor, invisible, colliding with nothing, not falling
                model.geom_contype[g] = model.geom_conaffinity[g] = 0
                model.geom_rgba[g] = (0, 0, 0, 0)
                model.body_gravcomp[b] = 1.0
            model.body_ipos[b] = 0.0
            model.body_iquat[b] = _IDENTITY_QUAT

    # ------------------------------------------------------------------ rendering

    # render / close / _check_open: envs.mujoco_rendering.MujocoRendering (camera 0 is "over_shoulder", the pixel
    # observation; 1 is "top")


# ---------------------------------------------------------------------------- baselines

# Shapes that look the same from every yaw: the gripper need not turn for them.
_ROUND_SHAPES = ("cylinder", "sphere")
HOVER_Z = 0.12  # fingertip height while travelling: above the rim and the tallest object (7.2 cm)


class ScriptedGrasp:
    """A privileged-state baseline: over the nearest object, align, descend, close, lift.

    Call it as `policy(env) -> normalized action` on a `GraspEnv` (or any wrapper of one).
    It reads the simulator state (object poses and shapes), which a learner does not get, so
    its success rate is a reference for what the task allows, not a fair competitor. It is a
    function of the current state only (no memory), hence reproducible and restartable:
      * fingers closed on nothing (opening < 3 mm): open again and retry;
      * fingers closed on something: lift; with a terminate action, end the attempt once
        the fingertips are `lift_before_terminate` above the floor;
      * else move over the object's centre at HOVER_Z, turn the finger axis across the
        object's narrow side (the nearest of the two equivalent yaws within the joint range;
        round shapes need no turn), and once aligned descend and close.
    """

    def __init__(self, xy_tolerance: float = 0.006, yaw_tolerance: float = 0.06, lift_before_terminate: float = 0.08):
        self.xy_tolerance = xy_tolerance
        self.yaw_tolerance = yaw_tolerance
        self.lift_before_terminate = lift_before_terminate

    def __call__(self, env: Env) -> np.ndarray:
        env = env.unwrapped
        if not isinstance(env, GraspEnv):
            raise TypeError(f"ScriptedGrasp drives a GraspEnv, got {type(env).__name__}")
        x, y, z, yaw = env.gripper_pose()
        i = env.nearest_object()
        obj = env.objects[i]
        ox, oy, oz, oyaw = env.object_poses()[i]
        delta = np.zeros(4)
        grip, terminate = -1.0, -1.0

        if env._closed_cmd and env.finger_opening() < 0.003:  # missed: open, go back up, retry
            delta[2] = HOVER_Z - z
        elif env._closed_cmd:  # holding something: lift it
            grip = 1.0
            delta[2] = MAX_DXYZ
            if z > self.lift_before_terminate:
                terminate = 1.0
        else:
            if obj.shape in _ROUND_SHAPES:
                target_yaw = yaw
            else:  # the finger axis (gripper y) along the object's narrow axis (its y), mod a half turn
                candidates = [oyaw + k * math.pi for k in range(-3, 4)]
                candidates = [c for c in candidates if abs(c) <= YAW_LIMIT]
                target_yaw = min(candidates, key=lambda c: abs(c - yaw))
            delta[0], delta[1], delta[3] = ox - x, oy - y, target_yaw - yaw
            aligned = math.hypot(ox - x, oy - y) < self.xy_tolerance and abs(target_yaw - yaw) < self.yaw_tolerance
            # Fingertips below the centre by 60% of the half height: the pads meet the object
            # around its widest part, not over its top edge.
            grasp_z = max(Z_MIN, oz - 0.6 * obj.half_extents[2])
            if aligned:
                delta[2] = grasp_z - z
                if z - grasp_z < 0.004:
                    grip = 1.0
            else:
                delta[2] = max(HOVER_Z, grasp_z) - z
        limits = np.array([MAX_DXYZ, MAX_DXYZ, MAX_DXYZ, MAX_DYAW])
        action = [*np.clip(delta / limits, -1.0, 1.0), grip]
        if env.terminate_action:
            action.append(terminate)
        return np.array(action, dtype=np.float64)


class RandomDescent:
    """QT-Opt's randomized scripted exploration: descend at a random spot, close, lift.

    At the first step of each attempt it draws a target x, y (anywhere objects start) and
    yaw uniformly from `rng`, then moves there while descending, closes at the bottom and
    lifts (terminating, if the env has a terminate action). It uses no object information,
    so its success rate measures how densely the bin is filled; QT-Opt collected its first
    grasps with such a policy (15-30% success on real objects), because uniformly random
    actions almost never grasp and a sparse reward gives a learner nothing to start from.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.target = np.zeros(3)

    def __call__(self, env: Env) -> np.ndarray:
        env = env.unwrapped
        if env._steps == 0:
            self.target = self.rng.uniform([-PLACE_LIMIT, -PLACE_LIMIT, -math.pi / 2],
                                           [PLACE_LIMIT, PLACE_LIMIT, math.pi / 2])
        x, y, z, yaw = env.gripper_pose()
        delta = np.array([self.target[0] - x, self.target[1] - y, Z_MIN - z, self.target[2] - yaw])
        grip = terminate = -1.0
        if env._closed_cmd or z < Z_MIN + 0.004:
            delta[:] = (0.0, 0.0, MAX_DXYZ, 0.0)
            grip = 1.0
            terminate = 1.0 if z > 0.08 else -1.0
        action = [*np.clip(delta / [MAX_DXYZ, MAX_DXYZ, MAX_DXYZ, MAX_DYAW], -1.0, 1.0), grip]
        if env.terminate_action:
            action.append(terminate)
        return np.array(action, dtype=np.float64)


def random_policy(rng: np.random.Generator):
    """Uniform random actions in [-1, 1]: the baseline a learner must beat."""

    def policy(env: Env) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=env.spec.action_dim)

    return policy


def success_rate(env: Env, policy, episodes: int, seed: int = 0) -> float:
    """Fraction of `episodes` attempts (seeded from `seed`) that end with reward 1."""
    successes = 0
    env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            env.reset()
        while True:
            result = env.step(policy(env))
            if result.terminated or result.truncated:
                successes += int(result.reward > 0)
                break
    return successes / episodes


# ---------------------------------------------------------------------------- measurements


def measure_speed(pixels: bool, steps: int = 400, pixel_size: int = 64, seed: int = 0) -> dict:
    """Env steps/s (and frames/s for pixels) under uniform random actions, resets included."""
    import time

    import envs

    env = envs.make(ENV_ID, seed=seed, pixels=pixels, pixel_size=pixel_size, include_state=pixels,
                    observe_objects=not pixels)
    rng = np.random.default_rng(seed)
    env.reset()
    frames = 1
    start = time.perf_counter()
    for _ in range(steps):
        result = env.step(rng.uniform(-1.0, 1.0, env.spec.action_dim))
        frames += 1
        if result.terminated or result.truncated:
            env.reset()
            frames += 1
    elapsed = time.perf_counter() - start
    env.close()
    out = {"env_steps_per_s": steps / elapsed}
    if pixels:
        out["frames_per_s"] = frames / elapsed
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m envs.grasp`: baseline success rates and speeds, as reported in docs/grasp.md."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true", help="also measure env steps/s and frames/s")
    args = parser.parse_args(argv)
    for terminate_action in (False, True):
        for object_set in OBJECT_SETS:
            env = GraspEnv(seed=args.seed, object_set=object_set, terminate_action=terminate_action)
            rates = {
                "scripted": success_rate(env, ScriptedGrasp(), args.episodes, seed=args.seed),
                "random_descent": success_rate(env, RandomDescent(np.random.default_rng(args.seed)),
                                               args.episodes, seed=args.seed),
                "random": success_rate(env, random_policy(np.random.default_rng(args.seed)), args.episodes,
                                       seed=args.seed),
            }
            env.close()
            print(f"object_set={object_set:5s} terminate_action={terminate_action!s:5s} "
                  + "  ".join(f"{name} {rate:.3f}" for name, rate in rates.items()) + f"  ({args.episodes} episodes)")
    if args.speed:
        print("state:", {k: round(v) for k, v in measure_speed(pixels=False, steps=2000).items()})
        for size in (48, 64, 84):
            print(f"pixels {size}x{size}:", {k: round(v, 1) for k, v in measure_speed(True, 300, size).items()})


if __name__ == "__main__":
    main()
