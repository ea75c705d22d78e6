"""The spatial-softmax keypoint encoder: its coordinates, its training, its files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rlcontrol.vision.frozen_latents import load_frozen_encoder
from rlcontrol.vision.keypoints import (
    KeypointConfig,
    KeypointEncoder,
    load_keypoints,
    save_keypoints,
    train_keypoints,
)
from rlcontrol.vision.vae import VAEFileError


class FixedMaps(nn.Module):
    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps

    def forward(self, x):
        return self.maps.expand(x.shape[0], -1, -1, -1)


def test_a_single_peak_gives_its_grid_coordinates():
    config = KeypointConfig(input_shape=(3, 21, 21), channels=(2, 2))  # maps 9x9 -> 7x7
    encoder = KeypointEncoder(config)
    h, w = config.map_size()
    assert (h, w) == (7, 7)
    maps = torch.full((1, 2, h, w), -1e4)
    maps[0, 0, 1, 5] = 0.0  # keypoint 0 at row 1, column 5
    maps[0, 1, 3, 3] = 0.0  # keypoint 1 at the centre
    encoder.convs = FixedMaps(maps)
    out = encoder.encode_mean(torch.zeros(1, 3, 21, 21))
    grid = np.linspace(-1, 1, 7)
    # (u_0, u_1, v_0, v_1): u is the column's coordinate, v the row's
    np.testing.assert_allclose(out[0].numpy(), [grid[5], 0.0, grid[1], 0.0], atol=1e-6)


def test_training_learns_where_a_square_is():
    rng = np.random.default_rng(0)
    n, size = 1200, 32
    frames = np.zeros((n, 3, size, size), dtype=np.uint8)
    labels = rng.uniform(4, size - 8, (n, 2))
    for i, (x, y) in enumerate(labels.astype(int)):
        frames[i, :, y:y + 4, x:x + 4] = 255
    encoder, losses = train_keypoints(frames[:1000], labels[:1000], KeypointConfig((3, size, size), (8, 8)),
                                      epochs=8, seed=0)
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        z_train = encoder.encode_mean(torch.from_numpy(frames[:1000])).numpy()
        z_test = encoder.encode_mean(torch.from_numpy(frames[1000:])).numpy()
    weights, *_ = np.linalg.lstsq(np.c_[z_train, np.ones(1000)], labels[:1000], rcond=None)
    residual = labels[1000:] - np.c_[z_test, np.ones(200)] @ weights
    r2 = 1 - residual.var(axis=0) / labels[1000:].var(axis=0)
    assert (r2 > 0.95).all(), r2  # positions read off unseen frames


def test_files_round_trip_and_bad_files_are_one_line_errors(tmp_path):
    config = KeypointConfig((3, 16, 16), (4, 4))
    torch.manual_seed(0)
    encoder = KeypointEncoder(config)
    path = tmp_path / "kp.safetensors"
    save_keypoints(encoder, path, extra={"note": "test"})
    loaded = load_keypoints(path, expected_input_shape=(3, 16, 16))
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.encode_mean(x), encoder.encode_mean(x))
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(VAEFileError, match=r"expected \(3, 32, 32\)"):
        load_keypoints(path, expected_input_shape=(3, 32, 32))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a flipped byte in the last tensor
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(VAEFileError, match="checksum mismatch") as error:
        load_keypoints(tmp_path / "bad.safetensors")
    assert "\n" not in str(error.value)
    # The frozen-latent path picks the keypoint loader from the file's header.
    from envs.core import ArraySpec

    spec = {"pixels": ArraySpec((3, 16, 16), np.uint8), "state": ArraySpec((2,), np.float32)}
    image, frozen = load_frozen_encoder(str(path), spec)
    assert image == "pixels" and frozen.latent_dim == 8
