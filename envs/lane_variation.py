"""What may differ between lane cars besides the road: camera pose, steering offset, appearance family.

Each is a keyword of `rlc:lane-following` (envs/lane.py). The numeric ones take a number (fixed) or
[low, high] (drawn uniformly at every reset from the env's generator, after the road, the look and
the start, so a fixed value draws nothing and leaves every episode as it was). A domain-randomized
training config varies them inside ranges; a stand-in car (sim2real/stand_in.py) sets them outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs.lane_appearance import FAMILIES, Span

# Bounds of any setting: a camera on a car's roof or bonnet looking down the road, and an offset a
# steering rack could be misaligned by (0.2 rad = 11.5 degrees of front-wheel angle).
CAMERA_HEIGHT_LIMITS = (0.3, 5.0)  # m above the road
CAMERA_PITCH_LIMITS = (0.0, 45.0)  # degrees below the horizontal
STEERING_OFFSET_LIMITS = (-0.2, 0.2)  # rad


def span(name: str, value, limits: Span) -> Span:
    """A number (low = high) or [low, high] -> (low, high) inside `limits`; ValueError (one line) if not."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    ok = len(items) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
    if ok:
        low, high = (float(v) for v in items)
        ok = math.isfinite(low) and math.isfinite(high) and limits[0] <= low <= high <= limits[1]
    if not ok:
        raise ValueError(f"{name} must be a number or [low, high] with {limits[0]:g} <= low <= high <= "
                         f"{limits[1]:g}, got {value!r}")
    return low, high


def draw(rng: np.random.Generator, value: Span) -> float:
    """The episode's value: the fixed one without touching `rng`, else uniform in [low, high]."""
    low, high = value
    return low if low == high else float(rng.uniform(low, high))


@dataclass(frozen=True)
class LaneVariation:
    """Checked settings: camera height (m) and pitch (deg), steering offset (rad), appearance family."""

    camera_height: Span
    camera_pitch: Span
    steering_offset: Span
    appearance_family: str

    @classmethod
    def check(cls, *, camera_height: float | Sequence[float], camera_pitch: float | Sequence[float],
              steering_offset: float | Sequence[float], appearance_family: str, max_steering: float,
              randomize_appearance: bool) -> LaneVariation:
        """Raises ValueError with one line naming the keyword for a value out of range or unknown."""
        if appearance_family not in FAMILIES:
            raise ValueError(f"appearance_family must be one of {', '.join(map(repr, FAMILIES))}, "
                             f"got {appearance_family!r}")
        if appearance_family != "training" and not randomize_appearance:
            raise ValueError("appearance_family applies to randomized appearances; "
                             "randomize_appearance=False draws the plain one")
        offset = span("steering_offset", steering_offset, STEERING_OFFSET_LIMITS)
        if max_steering + max(abs(v) for v in offset) >= math.pi / 2:
            raise ValueError(f"max_steering + |steering_offset| must stay below pi/2, got {max_steering} + {offset}")
        return cls(span("camera_height", camera_height, CAMERA_HEIGHT_LIMITS),
                   span("camera_pitch", camera_pitch, CAMERA_PITCH_LIMITS), offset, appearance_family)

    @property
    def family(self):
        return FAMILIES[self.appearance_family]

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """(camera height, camera pitch, steering offset) of one episode, in that draw order."""
        return draw(rng, self.camera_height), draw(rng, self.camera_pitch), draw(rng, self.steering_offset)
