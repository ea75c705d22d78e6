"""QT-Opt with a frozen pretrained image encoder: latents cached in replay, the image in the policy."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from envs.core import ArraySpec
from rlcontrol.agents import QTOptAgent, replay_observation_spec
from rlcontrol.agents.qtopt.networks import StateQNetwork
from rlcontrol.config import QTOptConfig, config_from_dict
from rlcontrol.errors import ConfigError
from rlcontrol.replay import make_replay
from rlcontrol.vision import frozen_latents
from rlcontrol.vision.vae import VAE, VAEConfig, save_vae

SPEC = {"pixels": ArraySpec((3, 16, 16), np.uint8), "state": ArraySpec((4,), np.float32)}


def write_encoder(path, seed: int = 0, shape=(3, 16, 16), latent: int = 5) -> str:
    torch.manual_seed(seed)
    save_vae(VAE(VAEConfig(input_shape=shape, latent_dim=latent, channels=(4, 8))), path)
    return str(path)


def agent_with(path, **overrides) -> QTOptAgent:
    cfg = QTOptConfig(frozen_encoder=path, q_hidden=[16], batch_size=8, cem_samples=16, cem_elites=3,
                      obs_norm=True, **overrides)
    return QTOptAgent(cfg, SPEC, action_dim=2, seed=0)


def observation(rng) -> dict:
    return {"pixels": rng.integers(0, 256, (3, 16, 16), dtype=np.uint8),
            "state": rng.standard_normal(4).astype(np.float32)}


def test_replay_holds_latents_named_by_the_encoder_digest_and_q_is_a_state_network(tmp_path):
    agent = agent_with(write_encoder(tmp_path / "enc.safetensors"))
    names = list(agent.replay_obs_spec)
    digest = frozen_latents.encoder_digest(agent.encoder.image_encoder.encoder)
    assert names == [f"latent_{digest[:12]}", "state"]  # the image replaced in place
    assert agent.replay_obs_spec[names[0]] == ArraySpec((5,), np.float32)
    assert isinstance(agent.q, StateQNetwork)
    # The frozen encoder is not trained: no gradients, not among the optimized parameters.
    assert not any(p.requires_grad for p in agent.encoder.parameters())
    assert {id(p) for p in agent._params} == {id(p) for p in agent.q.parameters()}


def test_each_frame_is_encoded_once_and_acting_from_the_image_matches_the_policy(tmp_path):
    agent = agent_with(write_encoder(tmp_path / "enc.safetensors"))
    obs = observation(np.random.default_rng(0))
    first = agent.replay_observation(obs)
    assert agent.replay_observation(obs) is first  # the same frame again: the cached result
    image = torch.from_numpy(obs["pixels"]).float().reshape(1, 3, 16, 16) / 255.0
    expected = agent.encoder.image_encoder.encoder.encode_mean(image)[0].detach().numpy()
    latent = next(v for k, v in first.items() if k.startswith("latent_"))
    np.testing.assert_allclose(latent, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(first["state"], obs["state"])
    # The exported policy starts from the raw flat observation (image columns first, as the spec).
    flat = torch.cat([torch.from_numpy(obs["pixels"]).float().reshape(-1), torch.from_numpy(obs["state"])])
    with torch.no_grad():
        from_image = agent.policy()(flat.unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(agent.act(obs), from_image, atol=1e-6)


def test_updates_sample_latent_batches_and_the_policy_file_carries_the_encoder(tmp_path):
    path = write_encoder(tmp_path / "enc.safetensors")
    agent = agent_with(path)
    replay = make_replay(100, agent.replay_obs_spec, 2, prioritized=False, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        obs, nxt = observation(rng), observation(rng)
        replay.add({"obs": agent.replay_observation(obs), "action": rng.uniform(-1, 1, 2).astype(np.float32),
                    "reward": float(rng.random()), "discount": 0.9, "next_obs": agent.replay_observation(nxt)})
    metrics = agent.update(replay.sample(8))
    assert np.isfinite(metrics["critic_loss"].item())
    # policy.pt (weights_only) carries the encoder: a changed file on disk does not change the policy.
    buffer = io.BytesIO()
    torch.save(agent.policy_state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert "encoder" in state
    other = agent_with(write_encoder(tmp_path / "other.safetensors", seed=1))
    other.load_policy_state_dict(state)
    obs = observation(np.random.default_rng(2))
    flat = torch.cat([torch.from_numpy(obs["pixels"]).float().reshape(-1), torch.from_numpy(obs["state"])])
    with torch.no_grad():
        np.testing.assert_allclose(other.policy()(flat.unsqueeze(0)).numpy(), agent.policy()(flat.unsqueeze(0)).numpy(),
                                   atol=1e-6)


def test_replay_files_with_another_encoders_latents_are_refused(tmp_path):
    a = agent_with(write_encoder(tmp_path / "a.safetensors", seed=0))
    b = agent_with(write_encoder(tmp_path / "b.safetensors", seed=1))
    mine, theirs = list(a.replay_obs_spec), list(b.replay_obs_spec)
    frozen_latents.check_latent_digest(mine, mine, "x.safetensors")  # the same encoder: fine
    with pytest.raises(ValueError, match="latents of another encoder"):
        frozen_latents.check_latent_digest(theirs, mine, "x.safetensors")
    with pytest.raises(ValueError, match="holds no cached latents"):
        frozen_latents.check_latent_digest(["pixels", "state"], mine, "x.safetensors")


@pytest.mark.parametrize("problem", ["missing", "image size", "channels"])
def test_a_missing_or_mismatched_encoder_file_is_one_config_error(tmp_path, problem):
    path = tmp_path / "enc.safetensors"
    if problem == "image size":
        write_encoder(path, shape=(3, 32, 32))
    elif problem == "channels":
        write_encoder(path, shape=(1, 16, 16))
    config = config_from_dict({"algo": "qtopt", "agent": {"frozen_encoder": str(path)}})
    with pytest.raises(ConfigError) as error:
        replay_observation_spec(config, SPEC)
    message = str(error.value)
    assert "\n" not in message and message.startswith("agent.frozen_encoder")
    assert ("not found" in message) if problem == "missing" else ("expected (3, 16, 16)" in message)


def test_a_state_task_has_no_image_for_a_frozen_encoder(tmp_path):
    config = config_from_dict({"algo": "qtopt", "agent": {"frozen_encoder": write_encoder(tmp_path / "e.safetensors")}})
    with pytest.raises(ConfigError, match="exactly one image part"):
        replay_observation_spec(config, {"state": ArraySpec((4,), np.float32)})


def test_training_with_another_encoders_offline_latents_is_one_error_line(tmp_path, capsys):
    """`rlcontrol train` refuses, before writing anything, an offline file cached by another encoder."""
    from rlcontrol.cli import main

    obs_spec = {"pixels": ArraySpec((3, 16, 16), np.uint8), "state": ArraySpec((8,), np.float32)}
    other = QTOptAgent(QTOptConfig(frozen_encoder=write_encoder(tmp_path / "other.safetensors", seed=1)), obs_spec, 5)
    replay = make_replay(10, other.replay_obs_spec, 5, prioritized=False, seed=0)
    rng = np.random.default_rng(0)
    latent = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in other.replay_obs_spec.items()}
    for _ in range(10):
        replay.add({"obs": latent, "action": np.zeros(5, np.float32), "reward": 0.0, "discount": 0.9,
                    "next_obs": latent})
    replay.save(tmp_path / "offline.safetensors")
    mine = write_encoder(tmp_path / "mine.safetensors", seed=0)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
algo: qtopt
env: {{id: "rlc:grasp", pixels: true, pixel_size: 16, kwargs: {{include_state: true, observe_objects: false}}}}
agent: {{frozen_encoder: {mine}}}
replay: {{offline_replay: {tmp_path / 'offline.safetensors'}}}
""")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "latents of another encoder" in err, err
    assert not run.exists()
