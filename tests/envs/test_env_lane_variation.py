"""What may differ between lane cars (envs/lane_variation.py, envs/lane_appearance.py): camera pose,
steering offset and appearance family, each from the env's seed, with defaults that leave the task
as it was. The contract test (test_env_contract.py) covers the task with them set as well.
"""

import hashlib
import math

import numpy as np
import pytest

import envs
from envs.core import unscale_action
from envs.lane import ENV_ID, LaneFollowingEnv, PurePursuit
from envs.lane_appearance import STAND_IN, TRAINING, sample_appearance
from envs.lane_camera import Appearance
from envs.road import CrossSection, Road, straight_road

STRAIGHT = straight_road(length=400.0, lane_width=3.5)
PLAIN = Road([0.0], [0.0], 300.0, CrossSection(3.5, 1.75, -1.75, 0.0, ()))  # a 3.5 m road without paint
# The sha256 of default-settings frames, states and rewards (`default_digest`), as the task gave them
# before the variations existed. A change here means today's training images changed: only update it
# for a change meant to alter them (it also pins OpenCV's rasterization, so a new OpenCV may move it).
DEFAULT_DIGEST = "1f901e2921220bb0de59ee0d8924d66b121f1076c0bd711f6c557981e9373e85"


def make(**kwargs) -> LaneFollowingEnv:
    return LaneFollowingEnv(seed=kwargs.pop("seed", 0), **kwargs)


def action(env: LaneFollowingEnv, steering: float, speed: float) -> np.ndarray:
    return unscale_action(np.array([steering, speed]), env.spec.action_low, env.spec.action_high)


def default_digest(**kwargs) -> str:
    """Frames (pixels and chase camera), state, reward and car pose over pure-pursuit and random steps."""
    digest = hashlib.sha256()
    for seed in range(3):
        env = envs.make(ENV_ID, seed=seed, pixels=True, pixel_size=64, include_state=True, **kwargs)
        rng, pursuit = np.random.default_rng(seed), PurePursuit()
        obs = env.reset()
        for t in range(40):
            digest.update(obs["pixels"].tobytes() + obs["state"].tobytes())
            result = env.step(pursuit(env) if t % 2 else rng.uniform(-1, 1, 2))
            car = env.unwrapped.car
            digest.update(np.array([result.reward, car.x, car.y, car.heading, car.speed, car.steering]).tobytes())
            obs = env.reset() if result.terminated or result.truncated else result.obs
        digest.update(env.unwrapped.render(84, 84, "chase").tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- defaults


def test_defaults_give_the_same_episodes_and_images_as_before() -> None:
    assert default_digest() == DEFAULT_DIGEST
    # Fixed values, given as degenerate ranges or explicitly, draw nothing: the same episodes again.
    assert default_digest(camera_height=[1.4, 1.4], camera_pitch=12.0, steering_offset=[0.0, 0.0],
                          appearance_family="training") == DEFAULT_DIGEST


# ---------------------------------------------------------------------------- each knob


def test_steering_offset_bends_the_path_unobserved() -> None:
    """Zero command on a straight road: the rear axle follows the circle of radius L / tan(offset)."""
    offset, speed, steps = 0.05, 5.0, 20
    for sign in (1.0, -1.0):
        env = make(steering_offset=sign * offset, speed_time_constant=0.0, randomize_appearance=False)
        env.reset(road=STRAIGHT, start=(0.0, 0.0, speed))
        for _ in range(steps):
            result = env.step(action(env, 0.0, speed))
            assert result.obs[1] == 0.0 and result.info["applied_action"][0] == 0.0  # the command, not the wheels
        turn = speed * env.control_period * steps * math.tan(offset) / env.vehicle.wheelbase
        radius = env.vehicle.wheelbase / math.tan(offset)
        assert env.heading_error == pytest.approx(sign * turn, rel=1e-9)
        assert env.lateral_offset == pytest.approx(sign * radius * (1 - math.cos(turn)), rel=1e-6)
    # Commanding the offset away drives straight.
    env = make(steering_offset=offset, speed_time_constant=0.0)
    env.reset(road=STRAIGHT, start=(0.0, 0.0, speed))
    for _ in range(steps):
        env.step(action(env, -offset, speed))
    assert abs(env.lateral_offset) < 1e-9 and abs(env.heading_error) < 1e-12


def test_camera_pitch_moves_the_horizon_and_height_widens_the_road() -> None:
    """On a plain 3.5 m road: sky rows end at the horizon cy - f tan(pitch); a road row v spans
    2 f 1.75 / depth pixels, depth = h / ((v - cy) / f cos(pitch) + sin(pitch)) (test_env_lane.py)."""
    look, f = Appearance(), 32.0 / math.tan(math.radians(40.0))  # 64 px across 80 degrees
    sky_rows, widths = {}, {}
    for height, pitch in ((1.4, 6.0), (1.4, 12.0), (1.4, 18.0), (1.1, 12.0)):
        env = make(camera_height=height, camera_pitch=pitch, randomize_appearance=False)
        env.reset(road=PLAIN, start=(0.0, 0.0, 0.0))
        image = env.render(64, 64).astype(float)
        horizon, p = 31.5 - f * math.tan(math.radians(pitch)), math.radians(pitch)
        bluish = image[:, :, 2] > image[:, :, 0] + 20
        assert bluish[: math.floor(horizon - 0.5) + 1].all() and not bluish[math.ceil(horizon + 0.5):].any()
        sky_rows[height, pitch] = int(bluish[:, 0].sum())
        coverage = np.clip((look.verge[1] - image[:, :, 1]) / (look.verge[1] - look.asphalt[1]), 0.0, 1.0)
        for row in range(math.ceil(horizon) + 2, 64, 3):
            width = 2 * f * 1.75 * ((row - 31.5) / f * math.cos(p) + math.sin(p)) / height
            if width < 60:  # the road's edges still in the image
                assert coverage[row].sum() == pytest.approx(width, abs=0.75), (height, pitch, row)
        widths[height, pitch] = coverage[36].sum()
    assert sky_rows[1.4, 6.0] > sky_rows[1.4, 12.0] > sky_rows[1.4, 18.0]  # pitched down: the horizon climbs
    assert sky_rows[1.1, 12.0] == sky_rows[1.4, 12.0]  # the horizon lies at infinity, whatever the height
    assert widths[1.1, 12.0] > 1.15 * widths[1.4, 12.0]  # a lower camera sees the road wider


def test_ranges_are_drawn_per_episode_from_the_seed_after_everything_else() -> None:
    ranged = dict(camera_height=[1.25, 1.55], camera_pitch=[9.0, 15.0], steering_offset=[-0.02, 0.02])
    nominal, varied, again = make(), make(**ranged), make(**ranged)
    draws = []
    for seed in range(20):
        nominal.reset(seed=seed), varied.reset(seed=seed), again.reset(seed=seed)
        # Road, look and start are the nominal task's for the seed; then the car's own draws.
        np.testing.assert_array_equal(nominal.road.xy, varied.road.xy)
        assert nominal.appearance.asphalt == varied.appearance.asphalt and nominal.car == varied.car
        np.testing.assert_array_equal(varied.render(32, 32), again.render(32, 32))
        pose = (varied.camera.height, varied.camera.pitch, varied.vehicle.steering_offset)
        assert pose == (again.camera.height, again.camera.pitch, again.vehicle.steering_offset)
        draws.append(pose)
    draws = np.array(draws)
    for column, (low, high) in enumerate(ranged.values()):
        assert low <= draws[:, column].min() and draws[:, column].max() <= high
        assert len(set(draws[:, column])) == 20  # a new draw every episode
    assert (nominal.camera.height, nominal.camera.pitch, nominal.vehicle.steering_offset) == (1.4, 12.0, 0.0)


# ---------------------------------------------------------------------------- appearance families


def _box(rgb, span):
    return np.array(rgb) * span[0], np.array(rgb) * span[1]


def _disjoint(a, b) -> bool:
    return a[1] < b[0] or b[1] < a[0]


def test_stand_in_family_ranges_lie_outside_the_training_family() -> None:
    """The documented construction (docs/sim2real.md): disjoint ranges, channel by channel."""
    for name in ("grain", "texel", "texture_amplitude", "shadow_strength", "brightness", "contrast"):
        assert _disjoint(getattr(TRAINING, name), getattr(STAND_IN, name)), name
    for channel in (0, 2):  # red and blue gains; green may overlap
        assert _disjoint(TRAINING.tint[channel], STAND_IN.tint[channel])
    train_asphalt = [TRAINING.asphalt_grey[1] * c * TRAINING.asphalt_jitter[1] for c in TRAINING.asphalt_cast]
    stand_asphalt = [STAND_IN.asphalt_grey[0] * c * STAND_IN.asphalt_jitter[0] for c in STAND_IN.asphalt_cast]
    assert min(stand_asphalt) > max(train_asphalt)  # paler than any training asphalt in every channel
    assert (_box(STAND_IN.shoulder, STAND_IN.shoulder_jitter)[1] < _box(TRAINING.shoulder, TRAINING.shoulder_jitter)[0]).all()
    for stand in STAND_IN.verges:  # no verge colour box overlaps a training one in every channel
        for train in TRAINING.verges:
            s, t = _box(stand, STAND_IN.verge_jitter), _box(train, TRAINING.verge_jitter)
            assert any(_disjoint((s[0][c], s[1][c]), (t[0][c], t[1][c])) for c in range(3)), (stand, train)
    assert all(b > r for r, _, b in TRAINING.skies) and all(r > b for r, _, b in STAND_IN.skies)
    assert TRAINING.joint_spacing == 0 < STAND_IN.joint_spacing and TRAINING.shadow_shape != STAND_IN.shadow_shape


def test_stand_in_appearances_lie_outside_the_training_ones_over_many_seeds() -> None:
    train = [sample_appearance(np.random.default_rng(s), STRAIGHT, TRAINING) for s in range(300)]
    stand = [sample_appearance(np.random.default_rng(s), STRAIGHT, STAND_IN) for s in range(300)]

    def values(looks, read):
        return np.array([read(a) for a in looks], dtype=float)

    readings = {"brightness": lambda a: a.brightness, "contrast": lambda a: a.contrast,
                "red gain": lambda a: a.tint[0], "blue gain": lambda a: a.tint[2],
                "texture amplitude": lambda a: a.texture_amplitude, "texel": lambda a: a.texel,
                "darkest asphalt channel": lambda a: min(a.asphalt), "brightest shoulder channel": lambda a: max(a.shoulder),
                "sky red minus blue": lambda a: a.sky_top[0] - a.sky_top[2]}
    for name, read in readings.items():
        t, s = values(train, read), values(stand, read)
        assert t.max() < s.min() or s.max() < t.min(), name
    assert all(a.shadows and a.shadow_strength >= 0.6 for a in stand)
    # In the camera images: the sky is bluer than red under every training look, redder under every stand-in one.
    balance = {}
    for family in ("training", "stand-in"):
        env = make(appearance_family=family)
        skies = []
        for seed in range(60):
            env.reset(seed=seed)
            sky = env.render(64, 64)[:18].reshape(-1, 3).astype(float).mean(axis=0)  # the horizon is at row 23.4
            skies.append(sky[0] - sky[2])
        balance[family] = np.array(skies)
    assert balance["training"].max() < 20 < 60 < balance["stand-in"].min(), balance


def test_appearance_family_is_seeded() -> None:
    a, b = make(appearance_family="stand-in", seed=4), make(appearance_family="stand-in", seed=4)
    a.reset(), b.reset()
    np.testing.assert_array_equal(a.render(64, 64), b.render(64, 64))
    first = a.render(64, 64)
    a.reset()
    assert np.abs(a.render(64, 64).astype(int) - first).mean() > 5


# ---------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("kwargs, message", [
    ({"camera_height": 0.1}, "camera_height must be a number or [low, high] with 0.3 <= low <= high <= 5"),
    ({"camera_height": [1.5, 1.2]}, "camera_height must be"),
    ({"camera_pitch": "steep"}, "camera_pitch must be"),
    ({"camera_pitch": [1.0, 2.0, 3.0]}, "camera_pitch must be"),
    ({"camera_pitch": float("nan")}, "camera_pitch must be"),
    ({"steering_offset": 0.3}, "steering_offset must be a number or [low, high] with -0.2 <= low"),
    ({"steering_offset": 0.2, "max_steering": 1.45}, "max_steering + |steering_offset| must stay below pi/2"),
    ({"appearance_family": "night"}, "appearance_family must be one of 'training', 'stand-in'"),
    ({"appearance_family": "stand-in", "randomize_appearance": False}, "appearance_family applies to randomized"),
    ({"camera_hight": 1.0}, "unknown keyword arguments ['camera_hight'] (did you mean 'camera_height'?)"),
])
def test_bad_values_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        envs.make(ENV_ID, **kwargs)
    text = str(raised.value)
    assert message in text and "\n" not in text
