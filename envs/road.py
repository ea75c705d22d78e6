"""Procedural roads for `rlc:lane-following` (envs/lane.py): centreline geometry and markings.

A road is described by the curvature of its *lane centre* as a function of arc length s
(piecewise linear: straights, clothoid transitions, constant-curvature arcs, S-bends), sampled
every `DS` metres into a polyline. Everything else is an offset curve of that polyline: the
road edges, the shoulders and the lane markings lie at fixed lateral offsets (metres, + to the
left of the driving direction). The car's lane is the reference path; on a two-lane road the
oncoming lane lies to its left (right-hand traffic) or to its right (left-hand traffic).

The road starts `RUN_IN` metres behind the start point, so s runs from -RUN_IN; s = 0 is the
start, at the world origin, heading along +x. Curvature is zero up to `run_up` metres ahead of
the start. The total heading is kept within +-`max_heading` of the start heading, so the road
never loops back on itself (a loop would put road that the camera should see outside the part
of the road that is drawn, and would make the nearest-point projection ambiguous).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DS = 0.5  # m between centreline samples (the chord sag of a 15 m radius is then 2 mm)
RUN_IN = 20.0  # m of straight road behind the start point

WHITE = (235, 235, 230)
YELLOW = (225, 185, 40)
CENTRE_LINE_STYLES = ("dashed", "solid", "double")


@dataclass(frozen=True)
class RoadConfig:
    """Ranges the road generator draws from (uniformly, unless said otherwise)."""

    lane_width: tuple[float, float] = (2.75, 3.75)  # m, the car's lane
    two_lane_probability: float = 0.7  # else a single-lane road with edge lines only
    left_hand_traffic_probability: float = 0.5  # the car keeps left (UK, where the paper drove)
    straight_probability: float = 0.35  # the next piece is a straight (else a curve)
    straight_length: tuple[float, float] = (5.0, 40.0)  # m
    radius: tuple[float, float] = (15.0, 80.0)  # m; the curvature 1/r is drawn uniformly
    turn_angle: tuple[float, float] = (15.0, 120.0)  # degrees turned by one curve
    transition_length: tuple[float, float] = (4.0, 20.0)  # m of clothoid into and out of an arc
    s_bend_probability: float = 0.3  # a curve is followed at once by one turning the other way
    max_heading: float = 90.0  # degrees from the start heading the road may reach
    run_up: float = 10.0  # m of straight road ahead of the start
    shoulder_width: tuple[float, float] = (0.0, 1.0)  # m of gravel beyond each road edge
    edge_line_probability: float = 0.85
    marking_width: tuple[float, float] = (0.10, 0.20)  # m
    yellow_probability: float = 0.3  # a centre line is yellow (else white)
    dash_length: tuple[float, float] = (1.0, 4.0)  # m, rounded to whole samples
    dash_gap: tuple[float, float] = (2.0, 9.0)  # m, rounded to whole samples

    def __post_init__(self) -> None:
        for name in ("lane_width", "straight_length", "radius", "turn_angle", "transition_length",
                     "shoulder_width", "marking_width", "dash_length", "dash_gap"):
            lo, hi = (float(v) for v in getattr(self, name))  # YAML gives lists: store tuples
            object.__setattr__(self, name, (lo, hi))
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.radius[0] <= 0 or self.lane_width[0] <= 0 or self.dash_length[0] < DS:
            raise ValueError("radius and lane_width must be positive and dashes at least DS long")
        if not 0 < self.max_heading <= 90.0:
            raise ValueError("max_heading must be in (0, 90] degrees: beyond that the road may loop")


@dataclass(frozen=True)
class Marking:
    """A painted line at a lateral `offset` (m, + left) of the lane centre, `width` m wide.

    Solid if `dash` is None, else dashes of `dash` samples separated by `gap` samples (DS m
    each), the first dash starting `phase` samples after the start of the road.
    """

    offset: float
    width: float
    rgb: tuple[int, int, int]
    dash: int | None = None
    gap: int = 0
    phase: int = 0

    def dash_ranges(self, n_samples: int) -> np.ndarray:
        """(k, 2) first and last sample index of each dash (the whole road if solid)."""
        if self.dash is None:
            return np.array([[0, n_samples - 1]])
        starts = np.arange(self.phase, n_samples - 1, self.dash + self.gap)
        return np.stack([starts, np.minimum(starts + self.dash, n_samples - 1)], axis=1)


@dataclass(frozen=True)
class CrossSection:
    """Lateral layout of the road around the lane centre (all offsets in m, + left)."""

    lane_width: float
    road_left: float  # asphalt edges
    road_right: float
    shoulder_width: float
    markings: tuple[Marking, ...] = field(default_factory=tuple)


class Road:
    """The lane-centre polyline, sampled every DS metres from s = -RUN_IN, and its cross-section.

    Built from curvature knots (s, kappa) interpolated linearly (kappa in 1/m, + left turn).
    Arrays: `s` (n,) arc length, `xy` (n, 2) positions, `heading` (n,) tangent angle (rad),
    `normal` (n, 2) unit left normals, `curvature` (n,).
    """

    def __init__(self, knots_s, knots_kappa, length: float, cross_section: CrossSection):
        n = int(round((length + RUN_IN) / DS)) + 1
        self.s = -RUN_IN + DS * np.arange(n)
        self.curvature = np.interp(self.s, knots_s, knots_kappa)
        # Heading integrates curvature by the trapezoidal rule (exact where kappa is linear between samples);
        # each chord follows the mean heading of its ends and is exactly DS long, so the arc
        # length of the polyline is `s` itself.
        dtheta = 0.5 * (self.curvature[1:] + self.curvature[:-1]) * DS
        self.heading = np.concatenate([[0.0], np.cumsum(dtheta)])
        chord_heading = 0.5 * (self.heading[1:] + self.heading[:-1])
        steps = DS * np.stack([np.cos(chord_heading), np.sin(chord_heading)], axis=1)
        self.xy = np.concatenate([[[-RUN_IN, 0.0]], -RUN_IN * np.array([[1.0, 0.0]]) + np.cumsum(steps, axis=0)])
        self.normal = np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)
        self._chord_dir = steps / DS
        self.cross_section = cross_section
        self.length = float(self.s[-1])  # m of road ahead of the start

    @property
    def lane_width(self) -> float:
        return self.cross_section.lane_width

    def index_at(self, s: float) -> int:
        """Index of the sample at or before arc length s (clamped to the road)."""
        return int(np.clip((s + RUN_IN) // DS, 0, self.s.size - 1))

    def point_at(self, s, offset=0.0) -> np.ndarray:
        """World position(s) at arc length s and lateral offset (m); s may be an array."""
        s = np.asarray(s, dtype=np.float64)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        nx = np.interp(s, self.s, self.normal[:, 0])
        ny = np.interp(s, self.s, self.normal[:, 1])
        return np.stack([x + offset * nx, y + offset * ny], axis=-1)

    def heading_at(self, s) -> np.ndarray:
        return np.interp(s, self.s, self.heading)

    def locate(self, point, hint: int | None = None) -> tuple[int, float, float, float]:
        """Projects a world point onto the polyline: (chord index, s, lateral offset, heading).

        With `hint` (the chord index found last time) only chords from 8 behind to 24 ahead of
        it are searched: the car moves at most 2 chords per step, and a local search cannot jump
        to another part of the road. The lateral offset is + left; the heading is the tangent
        interpolated along the chord, so it changes smoothly along the road.
        """
        p = np.asarray(point, dtype=np.float64)
        lo, hi = (0, self.s.size - 1) if hint is None else (max(hint - 8, 0), min(hint + 24, self.s.size - 1))
        a = self.xy[lo:hi]
        d = self._chord_dir[lo:hi]
        rel = p - a
        t = np.clip(np.einsum("ij,ij->i", rel, d) / DS, 0.0, 1.0)
        gap = rel - (t * DS)[:, None] * d
        j = int(np.argmin(np.einsum("ij,ij->i", gap, gap)))
        i = lo + j
        lateral = float(d[j, 0] * rel[j, 1] - d[j, 1] * rel[j, 0])
        heading = float(self.heading[i] + t[j] * (self.heading[i + 1] - self.heading[i]))
        return i, float(self.s[i] + t[j] * DS), lateral, heading

    def window(self, s_from: float, s_to: float) -> tuple[int, int]:
        """Sample index range [i0, i1) covering arc lengths s_from..s_to (clamped)."""
        return self.index_at(s_from), min(self.index_at(s_to) + 2, self.s.size)


# ---------------------------------------------------------------------------- generation


def straight_road(length: float = 300.0, lane_width: float = 3.5, two_lane: bool = False) -> Road:
    """A straight road along +x with white edge lines (and a dashed centre line if two_lane)."""
    return Road([0.0], [0.0], length, _cross_section(lane_width, two_lane, +1, 0.0, _plain_markings()))


def _plain_markings() -> dict:
    return {"edge": (WHITE, 0.15), "centre": ("dashed", WHITE, 0.15, 6, 12, 0)}


def curvature_knots(rng: np.random.Generator, config: RoadConfig, length: float) -> tuple[list, list]:
    """Random curvature profile: knots (s, kappa) from the run-up until `length`."""
    s, heading = config.run_up, 0.0
    knots_s, knots_k = [-RUN_IN, s], [0.0, 0.0]
    forced_direction = 0  # +-1 while an S-bend is due
    max_heading = math.radians(config.max_heading)
    while s < length:
        if not forced_direction and rng.uniform() < config.straight_probability:
            s += rng.uniform(*config.straight_length)
            knots_s.append(s)
            knots_k.append(0.0)
            continue
        kappa = rng.uniform(1.0 / config.radius[1], 1.0 / config.radius[0])
        turn = math.radians(rng.uniform(*config.turn_angle))
        direction = forced_direction or (1 if rng.uniform() < 0.5 else -1)
        room = max_heading - direction * heading  # how far this direction may still turn
        other_room = max_heading + direction * heading
        if room < turn and not forced_direction and other_room > room:
            direction, room = -direction, other_room
        turn = min(turn, room)
        transition = min(rng.uniform(*config.transition_length), turn / kappa)  # both clothoids turn kappa*l
        arc = turn / kappa - transition
        for ds, k in ((transition, direction * kappa), (arc, direction * kappa), (transition, 0.0)):
            s += ds
            knots_s.append(s)
            knots_k.append(k)
        heading += direction * turn
        forced_direction = -direction if (not forced_direction and rng.uniform() < config.s_bend_probability) else 0
    return knots_s, knots_k


def _cross_section(lane_width: float, two_lane: bool, side: int, shoulder: float, paint: dict) -> CrossSection:
    """Offsets of edges and markings. `side` +1: the oncoming lane is on the left (keep right)."""
    half = lane_width / 2
    if two_lane:
        far_edge = side * (half + lane_width)
        road_left, road_right = max(far_edge, half), min(far_edge, -half)
    else:
        road_left, road_right = half, -half
    markings = []
    if paint.get("edge"):
        rgb, width = paint["edge"]
        # Edge lines lie inside the asphalt, their outer side on the edge.
        markings += [Marking(road_left - width / 2, width, rgb), Marking(road_right + width / 2, width, rgb)]
    if two_lane:
        style, rgb, width, dash, gap, phase = paint["centre"]
        centre = side * half
        if style == "double":
            markings += [Marking(centre + sign * width, width, rgb) for sign in (-1, 1)]
        else:
            markings.append(Marking(centre, width, rgb, dash if style == "dashed" else None, gap, phase))
    return CrossSection(lane_width, road_left, road_right, shoulder, tuple(markings))


def _sample_paint(rng: np.random.Generator, config: RoadConfig) -> dict:
    def samples(bounds) -> int:
        return max(1, int(round(rng.uniform(*bounds) / DS)))

    def jitter(rgb):  # worn or fresh paint: one factor, so white stays white
        factor = rng.uniform(0.8, 1.05)
        return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)

    paint = {}
    if rng.uniform() < config.edge_line_probability:
        paint["edge"] = (jitter(WHITE), rng.uniform(*config.marking_width))
    style = CENTRE_LINE_STYLES[rng.integers(len(CENTRE_LINE_STYLES))]
    rgb = jitter(YELLOW if rng.uniform() < config.yellow_probability else WHITE)
    dash, gap = samples(config.dash_length), samples(config.dash_gap)
    paint["centre"] = (style, rgb, rng.uniform(*config.marking_width), dash, gap, int(rng.integers(dash + gap)))
    return paint


def generate_road(rng: np.random.Generator, config: RoadConfig, length: float) -> Road:
    """A random road `length` m long ahead of the start; all randomness comes from `rng`."""
    knots_s, knots_k = curvature_knots(rng, config, length)
    lane_width = rng.uniform(*config.lane_width)
    two_lane = bool(rng.uniform() < config.two_lane_probability)
    side = -1 if rng.uniform() < config.left_hand_traffic_probability else 1
    shoulder = rng.uniform(*config.shoulder_width)
    paint = _sample_paint(rng, config)
    return Road(knots_s, knots_k, length, _cross_section(lane_width, two_lane, side, shoulder, paint))
