"""Pixel observations and render(). Software EGL renders ~45 fps: keep frames few."""

import numpy as np

import envs


def test_pixel_observations_are_channel_first_uint8() -> None:
    env = envs.make("dmc:cartpole-swingup", seed=0, pixels=True, include_state=True)
    assert env.spec.observation == {
        "pixels": envs.ArraySpec((3, 84, 84), np.dtype("uint8")),
        "state": envs.ArraySpec((5,), np.dtype("float32")),
    }
    first = env.reset()
    result = env.step(np.ones(1))
    for obs in (first, result.obs):
        assert obs["pixels"].shape == (3, 84, 84) and obs["pixels"].dtype == np.uint8
        assert obs["state"].shape == (5,) and obs["state"].dtype == np.float32
    assert not np.shares_memory(first["pixels"], result.obs["pixels"])
    assert first["pixels"].std() > 0  # an actual scene, not a blank buffer
    # The observation is the rendered frame of the same state, transposed to (C, H, W).
    np.testing.assert_array_equal(result.obs["pixels"], env.render(84, 84, 0).transpose(2, 0, 1))
    env.close()


def test_render_returns_height_width_rgb() -> None:
    env = envs.make("dmc:reacher-easy", seed=0)
    env.reset()
    frame = env.render(height=48, width=64)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    named_camera = env.render(height=48, width=64, camera="fixed")
    assert named_camera.shape == (48, 64, 3)
    env.close()
