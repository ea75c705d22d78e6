"""Appearance families of `rlc:lane-following`: the distributions an episode's look is drawn from.

`TRAINING` is what the task has always drawn (surface colours, a world-fixed noise texture, tree
shadows, lighting; envs/lane_camera.py draws the result). `STAND_IN` is a second family for a
stand-in car that the policy never saw: a pale concrete road of slabs under a low evening sun
(sunset sky, long bar shadows, dim warm light). Every colour, texture and lighting range of
`STAND_IN` lies outside `TRAINING`'s; docs/sim2real.md ("A stand-in car for lane following")
lists the numbers, and tests/envs/test_env_lane_variation.py checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.lane_camera import Appearance, Rgb
from envs.road import Road

Span = tuple[float, float]  # [low, high], drawn uniformly
TEXTURE_SIZE = 128  # texels along each side of the tileable ground texture


@dataclass(frozen=True)
class AppearanceFamily:
    """The ranges `sample_appearance` draws one episode's `Appearance` from (all uniform).

    Colours are RGB 0-255 before lighting; a jitter multiplies each channel by its own factor.
    """

    asphalt_grey: Span  # grey level of the road surface
    asphalt_cast: tuple[float, float, float]  # per-channel factor on that grey (1, 1, 1: neutral)
    asphalt_jitter: Span
    shoulder: Rgb
    shoulder_jitter: Span
    verges: tuple[Rgb, ...]  # one is picked per episode
    verge_jitter: Span
    skies: tuple[Rgb, Rgb]  # the sky's top colour is a random mix of these two
    horizon_gain: Span  # the sky at the horizon: top colour x gain + 20 (haze)
    grain: Span  # texels: the texture's finest feature
    texel: Span  # m of ground per texel
    texture_amplitude: Span  # relative brightness change per unit of texture
    joint_spacing: int  # texels between the dark joints of concrete slabs in the texture; 0: none
    shadow_probability: float  # share of episodes sunny enough to cast shadows
    shadow_density: Span  # shadows per 100 m of road
    shadow_shape: str  # "blob" (trees) or "bar" (poles and buildings in a low sun)
    shadow_strength: Span  # fraction of light a shadow removes
    brightness: Span
    contrast: Span
    tint: tuple[Span, Span, Span]  # gain of each channel


TRAINING = AppearanceFamily(
    asphalt_grey=(55.0, 145.0), asphalt_cast=(1.0, 1.0, 1.0), asphalt_jitter=(0.93, 1.07),
    shoulder=(140, 128, 105), shoulder_jitter=(0.7, 1.15),
    verges=((75, 120, 55), (140, 135, 75), (115, 95, 70), (60, 90, 45), (220, 224, 232)),  # grass, dry, dirt, ..., snow
    verge_jitter=(0.85, 1.15),
    skies=((85, 140, 215), (175, 180, 185)), horizon_gain=(1.1, 1.4),  # clear .. overcast
    grain=(0.7, 3.0), texel=(0.03, 0.08), texture_amplitude=(0.03, 0.2), joint_spacing=0,
    shadow_probability=0.6, shadow_density=(0.0, 8.0), shadow_shape="blob", shadow_strength=(0.2, 0.55),
    brightness=(0.6, 1.3), contrast=(0.7, 1.3), tint=((0.9, 1.1),) * 3,
)

# Outside TRAINING by construction (the ranges are disjoint, not just shifted): every asphalt channel
# above any training asphalt's (>= 160 vs <= 155), every shoulder channel below (<= 69 vs >= 73),
# verge colours whose jitter boxes miss every training verge's, a sky redder than blue (training:
# bluer than red), coarser, stronger, jointed texture, stronger bar-shaped shadows, dimmer light,
# more contrast, and red/blue tints beyond +-10%.
STAND_IN = AppearanceFamily(
    asphalt_grey=(180.0, 215.0), asphalt_cast=(1.04, 1.0, 0.92), asphalt_jitter=(0.97, 1.03),  # pale concrete
    shoulder=(55, 55, 60), shoulder_jitter=(0.85, 1.15),  # dark gravel
    verges=((165, 75, 50), (215, 190, 140), (115, 70, 125)), verge_jitter=(0.9, 1.1),  # red earth, sand, heather
    skies=((235, 150, 90), (200, 110, 120)), horizon_gain=(1.05, 1.2),  # sunset .. dusk
    grain=(4.0, 6.0), texel=(0.1, 0.14), texture_amplitude=(0.25, 0.35), joint_spacing=32,
    shadow_probability=1.0, shadow_density=(2.0, 6.0), shadow_shape="bar", shadow_strength=(0.6, 0.75),
    brightness=(0.42, 0.55), contrast=(1.35, 1.5), tint=((1.12, 1.2), (0.95, 1.0), (0.75, 0.85)),
)

FAMILIES = {"training": TRAINING, "stand-in": STAND_IN}


def tileable_noise(rng: np.random.Generator, size: int, grain: float) -> np.ndarray:
    """Periodic Gaussian noise (size, size): white noise low-passed in the Fourier domain.

    Two octaves (features of `grain` texels and 8x coarser) so asphalt shows both grit and
    patches. Periodic by construction, so BORDER_WRAP tiles it without seams.
    """
    k = np.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    white = np.fft.fft2(rng.standard_normal((size, size)))
    fine = np.exp(-2 * (math.pi * grain) ** 2 * k2)
    coarse = np.exp(-2 * (math.pi * grain * 8) ** 2 * k2)
    noise = np.real(np.fft.ifft2(white * (fine + 2.0 * coarse)))
    return ((noise - noise.mean()) / noise.std()).astype(np.float32)


def slab_texture(rng: np.random.Generator, size: int, grain: float, spacing: int) -> np.ndarray:
    """`tileable_noise` with dark joints every `spacing` texels both ways (concrete slabs).

    The joints stay periodic when `spacing` divides `size`; renormalized to zero mean, unit std.
    """
    noise = tileable_noise(rng, size, grain)
    if not spacing:
        return noise
    joints = np.zeros((size, size), dtype=bool)
    joints[::spacing, :] = joints[:, ::spacing] = True
    noise[joints] -= 2.0  # about half the light at the stand-in's texture amplitude
    return ((noise - noise.mean()) / noise.std()).astype(np.float32)


def _shadow_centre(rng: np.random.Generator, road: Road) -> tuple[np.ndarray, float]:
    """A point over or up to 4 m beside the road, and its arc length."""
    xs = road.cross_section
    s = rng.uniform(0.0, road.length)
    return road.point_at(s, rng.uniform(xs.road_right - 4.0, xs.road_left + 4.0)), s


def blob_shadows(rng: np.random.Generator, road: Road, density: Span = (0.0, 8.0)) -> tuple[np.ndarray, ...]:
    """Blobs (tree shadows) scattered over and beside the road, `density` per 100 m."""
    count = rng.poisson(rng.uniform(*density) * road.length / 100.0)
    angles = np.linspace(0.0, 2 * math.pi, 12, endpoint=False)
    polygons = []
    for _ in range(count):
        centre, _ = _shadow_centre(rng, road)
        radius = rng.uniform(1.0, 4.0)
        ratio, tilt = rng.uniform(0.4, 1.0), rng.uniform(0.0, math.pi)
        r = radius * rng.uniform(0.75, 1.25, angles.size)  # a ragged outline
        local = np.stack([r * np.cos(angles), ratio * r * np.sin(angles)], axis=1)
        rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
        polygons.append(centre + local @ rot.T)
    return tuple(polygons)


def bar_shadows(rng: np.random.Generator, road: Road, density: Span) -> tuple[np.ndarray, ...]:
    """Long thin bars across the road (poles and buildings lit from the side), `density` per 100 m."""
    count = rng.poisson(rng.uniform(*density) * road.length / 100.0)
    polygons = []
    for _ in range(count):
        centre, s = _shadow_centre(rng, road)
        length, width = rng.uniform(6.0, 14.0), rng.uniform(0.3, 1.0)
        angle = float(road.heading_at(s)) + math.pi / 2 + rng.uniform(-0.6, 0.6)  # roughly across
        along, side = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        polygons.append(np.array([centre + a * length / 2 * along + b * width / 2 * side for a, b in corners]))
    return tuple(polygons)


def sample_appearance(rng: np.random.Generator, road: Road, family: AppearanceFamily = TRAINING) -> Appearance:
    """One episode's colours, texture, shadows and lighting from `family`; all randomness from `rng`.

    The draws come in a fixed order (the order of TRAINING's original sampler, so its episodes
    look as they always did for the same seed).
    """

    def jitter(rgb, span: Span) -> Rgb:
        return tuple(int(np.clip(c * rng.uniform(*span), 0, 255)) for c in rgb)

    f = family
    grey = rng.uniform(*f.asphalt_grey)
    cloud = rng.uniform()  # 0: the first sky, 1: the second
    sky_top = (1 - cloud) * np.array(f.skies[0]) + cloud * np.array(f.skies[1])
    grain = rng.uniform(*f.grain)
    shadowy = rng.uniform() < f.shadow_probability
    shadows = bar_shadows if f.shadow_shape == "bar" else blob_shadows
    return Appearance(
        asphalt=jitter(tuple(grey * c for c in f.asphalt_cast), f.asphalt_jitter),
        shoulder=jitter(f.shoulder, f.shoulder_jitter),
        verge=jitter(f.verges[rng.integers(len(f.verges))], f.verge_jitter),
        sky_top=tuple(int(c) for c in sky_top),
        sky_horizon=tuple(int(c) for c in np.minimum(255, sky_top * rng.uniform(*f.horizon_gain) + 20)),
        texture=slab_texture(rng, TEXTURE_SIZE, grain, f.joint_spacing),
        texel=rng.uniform(*f.texel),
        grain=grain,
        texture_amplitude=rng.uniform(*f.texture_amplitude),
        shadows=shadows(rng, road, f.shadow_density) if shadowy else (),
        shadow_strength=rng.uniform(*f.shadow_strength) if shadowy else 0.0,
        brightness=rng.uniform(*f.brightness),
        contrast=rng.uniform(*f.contrast),
        tint=tuple(float(t) for t in rng.uniform(*zip(*f.tint))),
    )
