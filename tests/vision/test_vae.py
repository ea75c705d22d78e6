"""The VAE: shapes, hand-checked losses, learning, safe files, and pretraining end to end."""

from __future__ import annotations

import io
import json
import math
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rlcontrol.vision import vae as vae_module
from rlcontrol.vision.preprocess import ImagePreprocessing
from rlcontrol.vision.pretrain import main, pretrain_vae, save_reconstruction_grid, train_vae
from rlcontrol.vision.vae import (
    VAE,
    VAEConfig,
    VAEFileError,
    kl_divergence,
    load_encoder,
    load_vae,
    read_vae_metadata,
    reconstruction_loss,
    save_vae,
    vae_loss,
)

TINY = VAEConfig(input_shape=(1, 16, 16), latent_dim=4, channels=(8, 16))


def squares(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 1, 16, 16): a white 6x6 square at a random place on black (binary targets,
    so the BCE can approach zero)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, 1, 16, 16), dtype=np.uint8)
    for frame, (y, x) in zip(frames, rng.integers(0, 11, size=(n, 2))):
        frame[0, y:y + 6, x:x + 6] = 255
    return frames


@pytest.mark.parametrize(("size", "feature_dim", "last_conv"), [(64, 4096, (256, 4, 4)), (84, 6400, (256, 5, 5))])
def test_shapes_for_64_and_84_pixel_frames(size, feature_dim, last_conv) -> None:
    torch.manual_seed(0)
    config = VAEConfig(input_shape=(3, size, size))
    model = VAE(config)
    assert config.feature_dim == feature_dim and config.conv_shapes()[-1] == last_conv
    assert model.encoder.feature_dim == feature_dim and model.encoder.output_dim == 32
    frames = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    recon, mu, logvar = model(frames)
    assert recon.shape == (2, 3, size, size) and mu.shape == logvar.shape == (2, 32)
    assert 0.0 <= recon.min() and recon.max() <= 1.0
    # uint8 input means value / 255.
    torch.testing.assert_close(model.encode_mean(frames), model.encode_mean(frames.float() / 255))
    assert model.encoder.features(frames).shape == (2, feature_dim)
    assert model.reconstruct(frames).shape == (2, 3, size, size)


def test_odd_sized_frames_reconstruct_at_the_same_size() -> None:
    model = VAE(VAEConfig(input_shape=(1, 50, 70), channels=(4, 8, 8)))
    assert model(torch.rand(1, 1, 50, 70))[0].shape == (1, 1, 50, 70)


def test_too_small_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="input 8x8 is too small for 4 conv layers"):
        VAEConfig(input_shape=(3, 8, 8))
    for bad in ({"latent_dim": 0}, {"reconstruction": "l1"}, {"input_shape": (3, 64)}, {"beta": -1.0}):
        with pytest.raises(ValueError):
            VAEConfig(**bad)


def test_kl_term_is_zero_at_the_prior_and_hand_checked_elsewhere() -> None:
    zeros = torch.zeros(3, 5)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e) || N(0, 1)) = (e - 1 - 1) / 2.
    torch.testing.assert_close(kl_divergence(torch.ones(1, 4), torch.zeros(1, 4)), torch.tensor([2.0]))
    torch.testing.assert_close(kl_divergence(torch.zeros(1, 1), torch.ones(1, 1)), torch.tensor([(math.e - 2) / 2]))


def test_reconstruction_terms_against_a_hand_computed_2x2_example() -> None:
    recon = torch.tensor([[[[0.5, 0.25], [0.8, 0.9]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    bce = -(math.log(0.5) + math.log(0.75) + 0.5 * math.log(0.8) + 0.5 * math.log(0.2) + math.log(0.9))
    torch.testing.assert_close(reconstruction_loss(recon, target, "bce"), torch.tensor([bce]))
    mse = 0.25 + 0.0625 + 0.09 + 0.01
    torch.testing.assert_close(reconstruction_loss(recon, target, "mse"), torch.tensor([mse]))
    mu, logvar = torch.ones(1, 2), torch.zeros(1, 2)
    loss, recon_term, kl_term = vae_loss(recon, target, mu, logvar, beta=0.5)
    torch.testing.assert_close(recon_term, torch.tensor(bce))
    torch.testing.assert_close(kl_term, torch.tensor(1.0))
    torch.testing.assert_close(loss, torch.tensor(bce + 0.5))
    with pytest.raises(ValueError, match="differ in shape"):
        vae_loss(recon, target[..., :1], mu, logvar)


def test_tiny_vae_learns_squares_deterministically() -> None:
    frames = squares(256)
    model, history = train_vae(frames, TINY, steps=300, batch_size=32, lr=3e-3, seed=0, threads=1)
    assert len(history["loss"]) == 300 and len(history["epoch_loss"]) == 300 // 8
    initial, final = np.mean(history["recon"][:5]), np.mean(history["recon"][-20:])
    assert final < 0.6 * initial, (initial, final)
    assert not model.training
    # Same seed, same numbers (a short run suffices to see it); another seed differs.
    short = [train_vae(frames, TINY, steps=5, batch_size=32, lr=3e-3, seed=s, threads=1)[1]["loss"] for s in (0, 0, 1)]
    assert short[0] == history["loss"][:5] == short[1] and short[2] != short[0]


def test_train_vae_refuses_frames_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"frames are \(1, 8, 8\), the config expects \(1, 16, 16\)"):
        train_vae(np.zeros((4, 1, 8, 8), np.uint8), TINY)
    with pytest.raises(ValueError, match="uint8"):
        train_vae(np.zeros((4, 1, 16, 16), np.float32), TINY)


# ------------------------------------------------------------------------------ files
@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = VAE(TINY).eval()
    path = tmp_path / "vae.safetensors"
    prep = ImagePreprocessing(crop_top=0.25, out_size=16, grayscale=True)
    save_vae(model, path, preprocessing=prep, extra={"env_id": "dmc:cartpole-swingup"})
    return model, path, prep


def test_save_load_round_trip_is_exact(saved) -> None:
    model, path, prep = saved
    loaded, header = load_vae(path, expected_input_shape=(1, 16, 16))
    assert loaded.config == model.config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert ImagePreprocessing.from_dict(header["preprocessing"]) == prep
    assert header["input_shape"] == [1, 16, 16] and header["extra"] == {"env_id": "dmc:cartpole-swingup"}
    assert read_vae_metadata(path) == header


def test_file_is_plain_safetensors_not_pickle(saved) -> None:
    _, path, _ = saved
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header size, then JSON
    header = json.loads(raw[8:8 + header_len])
    assert raw[:1] != b"\x80" and raw[8:9] == b"{"  # pickle streams start with 0x80 (PROTO)
    assert "rlcontrol.vae" in header["__metadata__"]
    assert {k for k in header if k != "__metadata__"} == set(VAE(TINY).state_dict())


def test_encoder_loads_frozen_or_trainable(saved) -> None:
    model, path, _ = saved
    frozen = load_encoder(path)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(frozen.encode_mean(x), model.encode_mean(x)) and frozen(x)[0].shape == (2, 4)
    trainable = load_encoder(path, trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())


def _assert_one_line_error(path, match: str, **kwargs) -> None:
    with pytest.raises(VAEFileError, match=match) as excinfo:
        load_vae(path, **kwargs)
    assert isinstance(excinfo.value, ValueError) and "\n" not in str(excinfo.value)


def test_bad_files_give_one_clear_error(saved, tmp_path) -> None:
    _, path, _ = saved
    raw = path.read_bytes()
    _assert_one_line_error(tmp_path / "missing.safetensors", "not found")
    for name, content in (("truncated", raw[: len(raw) // 2]), ("garbage", os.urandom(1000)), ("empty", b"")):
        (tmp_path / name).write_bytes(content)
        _assert_one_line_error(tmp_path / name, "not a readable safetensors file")
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF  # a data byte: safetensors' own checks cannot see it
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    _assert_one_line_error(tmp_path / "flipped", "checksum mismatch")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign"), metadata={"rlcontrol.replay": "{}"})
    _assert_one_line_error(tmp_path / "foreign", "not an rlcontrol VAE")
    _assert_one_line_error(path, r"VAE takes input \(1, 16, 16\), expected \(3, 64, 64\)",
                           expected_input_shape=(3, 64, 64))


def test_weights_that_do_not_fit_the_header_config_are_refused(saved, tmp_path) -> None:
    model, path, _ = saved
    header = read_vae_metadata(path)
    header["config"]["latent_dim"] = 8
    tensors = {name: t.contiguous() for name, t in model.state_dict().items()}
    checksums = {name: vae_module._crc32(t) for name, t in tensors.items()}
    save_file(tensors, str(tmp_path / "mismatch"),
              metadata={"rlcontrol.vae": json.dumps(header), "rlcontrol.vae.crc32": json.dumps(checksums)})
    _assert_one_line_error(tmp_path / "mismatch", "weights do not fit the config")


def test_atomic_save_leaves_no_temp_files_and_keeps_the_old_file_on_failure(saved, monkeypatch) -> None:
    _, path, _ = saved
    assert sorted(os.listdir(path.parent)) == ["vae.safetensors"]
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vae_module, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        save_vae(VAE(TINY), path)
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == ["vae.safetensors"]


def test_reconstruction_grid_has_originals_on_top(tmp_path) -> None:
    cv2 = pytest.importorskip("cv2")
    frames = squares(5)
    grid = save_reconstruction_grid(VAE(TINY).eval(), frames, tmp_path / "grid.png", n=4)
    assert grid.shape == (32, 64, 1)
    np.testing.assert_array_equal(grid[:16, :16, 0], frames[0, 0])  # first original, top left
    np.testing.assert_array_equal(grid[:16, 48:, 0], frames[4, 0])  # evenly spaced: the last one
    assert np.array_equal(cv2.imread(str(tmp_path / "grid.png"), cv2.IMREAD_UNCHANGED), grid[:, :, 0])
    assert os.listdir(tmp_path) == ["grid.png"]


# ----------------------------------------------------------------------- pretraining
def test_pretrain_vae_end_to_end_on_cartpole_frames(tmp_path) -> None:
    out = tmp_path / "vae.safetensors"
    summary = pretrain_vae("dmc:cartpole-swingup", 64, out, pixel_size=32, channels=(16, 32, 64), latent_dim=8,
                           epochs=3, batch_size=16, seed=0, env_kwargs={"max_episode_steps": 20})
    assert summary["frames"] == 64 and summary["steps"] == 12 and summary["input_shape"] == [3, 32, 32]
    assert summary["final_loss"] < summary["initial_loss"]
    assert sorted(os.listdir(tmp_path)) == ["vae.png", "vae.safetensors"]
    model, header = load_vae(out, expected_input_shape=(3, 32, 32))
    assert header["extra"]["env_id"] == "dmc:cartpole-swingup" and header["extra"]["pixel_size"] == 32
    assert ImagePreprocessing.from_dict(header["preprocessing"]) == ImagePreprocessing()
    assert model.encode_mean(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 8)


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlcontrol: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    out = str(tmp_path / "vae.safetensors")
    assert "Unknown environment id 'nope:thing'" in _cli_error(capsys, "--env", "nope:thing", "--frames", "4", "--out", out)
    assert "--frames must be >= 1, got 0" in _cli_error(capsys, "--env", "dmc:cartpole-swingup", "--frames", "0",
                                                        "--out", out)
    assert "does not exist" in _cli_error(capsys, "--env", "dmc:cartpole-swingup", "--frames", "4",
                                          "--out", str(tmp_path / "no" / "vae.safetensors"))
    assert "--frames" in _cli_error(capsys, "--env", "x", "--frames", "many", "--out", out)
    assert "required" in _cli_error(capsys, "--frames", "4", "--out", out)
    assert "crop_top" in _cli_error(capsys, "--env", "x", "--frames", "4", "--out", out, "--crop-top", "1")
    (tmp_path / "vae.safetensors").write_bytes(b"old")
    assert "--force" in _cli_error(capsys, "--env", "dmc:cartpole-swingup", "--frames", "4", "--out", out)
    assert (tmp_path / "vae.safetensors").read_bytes() == b"old"


class _FrameToLatent(torch.nn.Module):
    """Raw camera frame -> preprocessing -> frozen encoder mean: what a deployed graph holds."""

    def __init__(self, prep: ImagePreprocessing, input_hw, encoder):
        super().__init__()
        self.prep, self.encoder = prep.torch_module(input_hw, as_float=True), encoder

    def forward(self, frame):
        return self.encoder.encode_mean(self.prep(frame))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, as deploy/export.py uses
def test_raw_frame_to_latent_exports_to_onnx(saved) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    _, path, prep = saved  # crop_top 0.25, 16x16 grayscale
    graph = _FrameToLatent(prep, (40, 30), load_encoder(path))
    buffer = io.BytesIO()
    torch.onnx.export(graph, torch.zeros(1, 3, 40, 30, dtype=torch.uint8), buffer, dynamo=False,
                      input_names=["frame"], output_names=["latent"], dynamic_axes={"frame": {0: "batch"}},
                      opset_version=17)
    frames = np.random.default_rng(0).integers(0, 256, (3, 3, 40, 30), dtype=np.uint8)
    (latent,) = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"frame": frames})
    # Same as the training path: OpenCV preprocessing, then the encoder on uint8 frames.
    expected = graph.encoder.encode_mean(torch.from_numpy(np.stack([prep.process_chw(f) for f in frames])))
    np.testing.assert_allclose(latent, expected.detach().numpy(), atol=1e-5)


def test_rlcontrol_pretrain_vae_command(tmp_path, capsys) -> None:
    """The same command through the `rlcontrol` entry point: --json summary, both files, and the
    same one-line errors."""
    from rlcontrol.cli import main as rlcontrol_main

    out = tmp_path / "vae.safetensors"
    assert rlcontrol_main(["pretrain-vae", "--env", "dmc:cartpole-swingup", "--frames", "16", "--out", str(out),
                           "--pixel-size", "32", "--epochs", "1", "--batch-size", "8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 16 and summary["steps"] == 2 and out.is_file() and out.with_suffix(".png").is_file()
    assert rlcontrol_main(["pretrain-vae", "--env", "dmc:cartpole-swingup", "--frames", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlcontrol: error: ") and "--force" in err[0]


def test_pretrain_vae_frames_come_from_the_task_keywords_given(tmp_path, capsys) -> None:
    """--env-kwargs: the frames of the camera the encoder will meet (a stand-in's, a randomized
    run's); recorded in the file's header. Bad JSON or a bad keyword is one error line."""
    from rlcontrol.cli import main as rlcontrol_main
    from rlcontrol.vision.vae import read_vae_metadata

    out = tmp_path / "vae.safetensors"
    kwargs = '{"camera_pitch": 18.0, "appearance_family": "stand-in"}'
    assert rlcontrol_main(["pretrain-vae", "--env", "rlc:lane-following", "--frames", "16", "--out", str(out),
                           "--pixel-size", "32", "--epochs", "1", "--batch-size", "8", "--env-kwargs", kwargs]) == 0
    assert read_vae_metadata(out)["extra"]["env_kwargs"] == {"camera_pitch": 18.0, "appearance_family": "stand-in"}
    capsys.readouterr()
    for bad in ("{not json", '["camera_pitch"]', '{"camera_pich": 18}'):
        assert rlcontrol_main(["pretrain-vae", "--env", "rlc:lane-following", "--frames", "16", "--out",
                               str(tmp_path / "b.safetensors"), "--env-kwargs", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rlcontrol: error: "), err
