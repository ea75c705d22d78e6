"""Image encoders in the split networks ("Learning to Drive in a Day"): a conv2d stack trained with
the network, or a pretrained VAE encoder, frozen or fine-tuned, for DDPG, TD3 and D4PG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from envs.core import ArraySpec
from rlcontrol.agents import make_agent
from rlcontrol.agents.ddpg import losses as ddpg_losses
from rlcontrol.config import EncoderConfig, config_from_dict
from rlcontrol.errors import ConfigError
from rlcontrol.networks import SplitActor, SplitEnsembleCritic
from rlcontrol.networks.image_encoders import Conv2dEncoder, VAEImageEncoder
from rlcontrol.normalization import PartialNormalizer
from rlcontrol.replay import ReplayBuffer
from rlcontrol.vision.vae import VAE, VAEConfig, load_vae, save_vae

OBS = {"pixels": ArraySpec((3, 32, 32), np.dtype(np.uint8)), "state": ArraySpec((2,), np.dtype(np.float32))}
OBS_DIM = 3 * 32 * 32 + 2
CONV2D = {"type": "conv2d", "hidden": [8, 8], "kernel": 3, "stride": 2, "features": 16, "join": 1}


class Spec:
    observation = OBS
    action_dim = 2


def _save(path, input_shape):
    torch.manual_seed(7)
    save_vae(VAE(VAEConfig(input_shape=input_shape, channels=(8, 16), latent_dim=8)), path)
    return str(path)


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("vae") / "vae.safetensors", (3, 32, 32))


def vae_encoder(path, trainable=False, join=1) -> dict:
    return {"type": "vae", "vae_path": path, "trainable": trainable, "join": join}


def agent_config(algo: str, encoders: dict, obs_norm: bool = True):
    agent = {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "batch_size": 16, "obs_norm": obs_norm,
             "encoders": encoders}
    if algo == "d4pg":
        agent |= {"num_atoms": 11, "v_min": -10.0, "v_max": 10.0}
    return config_from_dict({"algo": algo, "env": {"id": "rlc:lane-following", "pixels": True, "pixel_size": 32},
                             "agent": agent})


def random_obs(rng, n: int | None = None) -> dict:
    lead = () if n is None else (n,)
    return {"pixels": rng.integers(0, 256, (*lead, 3, 32, 32), dtype=np.uint8),
            "state": rng.standard_normal((*lead, 2)).astype(np.float32)}


def flat(obs: dict) -> torch.Tensor:
    """What the networks receive: the parts flattened and concatenated, images as 0..255 floats."""
    return torch.cat([torch.as_tensor(v).flatten(1).float() for v in obs.values()], dim=1)


def filled_replay(n: int = 64) -> ReplayBuffer:
    replay, rng = ReplayBuffer(n, OBS, 2), np.random.default_rng(0)
    for _ in range(n):
        replay.add({"obs": random_obs(rng), "action": rng.uniform(-1, 1, 2).astype(np.float32),
                    "reward": float(rng.standard_normal()), "discount": 0.99, "next_obs": random_obs(rng)})
    return replay


def trunk(module: torch.nn.Module):
    """The split trunk of an actor or critic (SAC's Gaussian actor keeps it in its body)."""
    return module.trunk if hasattr(module, "trunk") else module.body.trunk


def encoder_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The image encoder's tensors in a split actor/critic (trunk.encoders.0 is the pixels part)."""
    return {k: v.detach().clone() for k, v in trunk(module).encoders[0].state_dict().items()}


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", ["conv2d", "vae"])
def test_image_features_join_the_trunk_in_actor_and_critic(kind, vae_file):
    enc = EncoderConfig(**(CONV2D if kind == "conv2d" else vae_encoder(vae_file)))
    actor = SplitActor(OBS, {"pixels": enc}, action_dim=2, hidden=[32, 32])
    critic = SplitEnsembleCritic(OBS, {"pixels": enc}, action_dim=2, hidden=[32, 32], ensemble_size=2)
    features = 16 if kind == "conv2d" else 8  # conv2d: the projection; vae: latent_dim
    assert [layer.in_features for layer in actor.trunk.layers] == [2, 32 + features, 32]
    assert [layer.in_features for layer in critic.trunk.layers] == [2 + 2, 32 + features, 32]
    obs = flat(random_obs(np.random.default_rng(0), 5))
    assert critic.trunk.encoders[0](obs[:, :3072]).shape == (2, 5, features)  # (E, B, F), one encoder
    assert actor(obs).shape == (5, 2) and critic(obs, torch.zeros(5, 2)).shape == (2, 5, 1)
    assert isinstance(critic.trunk.encoders[0], Conv2dEncoder if kind == "conv2d" else VAEImageEncoder)


def test_vae_features_are_the_posterior_mean_of_the_image(vae_file):
    enc = SplitEnsembleCritic(OBS, {"pixels": EncoderConfig(**vae_encoder(vae_file))}, 2, [16],
                              ensemble_size=2).trunk.encoders[0]
    images = torch.from_numpy(random_obs(np.random.default_rng(1), 4)["pixels"])
    expected = load_vae(vae_file)[0].encoder.encode_mean(images)  # uint8 in, as the VAE was trained
    features = enc(images.flatten(1).float())
    assert torch.equal(features[0], expected) and torch.equal(features[1], expected)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("trainable", [False, True])
def test_critic_loss_reaches_only_a_trainable_vae(trainable, vae_file):
    critic = SplitEnsembleCritic(OBS, {"pixels": EncoderConfig(**vae_encoder(vae_file, trainable))}, 2, [16],
                                 ensemble_size=2)
    critic.train()  # a frozen encoder stays in eval mode anyway
    enc = critic.trunk.encoders[0].encoder
    assert enc.training is trainable
    obs, action = flat(random_obs(np.random.default_rng(2), 8)), torch.rand(8, 2)
    q = critic(obs, action)[..., 0]
    loss, _ = ddpg_losses.critic_loss(q, torch.zeros(8), None)
    loss.backward()
    used = [p for name, p in enc.named_parameters() if not name.startswith("logvar")]
    if trainable:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in used)
    else:
        assert all(not p.requires_grad and p.grad is None for p in used)
    assert all(p.grad is None for p in enc.logvar.parameters())  # the features never read it
    assert critic.trunk.layers[1].weight.grad.abs().sum() > 0  # the trunk trains either way


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("algo", ["ddpg", "td3", "d4pg", "sac"])
def test_frozen_vae_never_changes_while_everything_else_trains(algo, vae_file):
    agent = make_agent(agent_config(algo, {"pixels": vae_encoder(vae_file)}), Spec())
    file_weights = load_vae(vae_file)[0].encoder.state_dict()
    trunk_before = trunk(agent.actor).layers[1].weight.detach().clone()
    replay = filled_replay()
    for _ in range(4):
        agent.update(replay.sample(16))
    for net in (agent.actor, agent.critic, agent.actor_target, agent.critic_target):
        state = trunk(net).encoders[0].encoder.state_dict()
        assert all(torch.equal(state[k], file_weights[k]) for k in file_weights), net
    assert not torch.equal(trunk(agent.actor).layers[1].weight, trunk_before)
    # Kept in the policy file (export and eval rebuild the same features), absent from the optimizers.
    policy = agent.policy_state_dict()["actor"]
    prefix = "body." if algo == "sac" else ""
    assert torch.equal(policy[f"{prefix}trunk.encoders.0.encoder.mu.weight"], file_weights["mu.weight"])
    assert len(agent.actor_opt.params) == len(list(trunk(agent.actor).layers.parameters()))


@pytest.mark.parametrize("encoder, algo", [("conv2d", "td3"), ("vae_trainable", "td3"), ("conv2d", "sac")])
def test_trained_image_encoders_change_and_targets_follow(encoder, algo, vae_file):
    enc = CONV2D if encoder == "conv2d" else vae_encoder(vae_file, trainable=True)
    agent = make_agent(agent_config(algo, {"pixels": enc}), Spec())
    # (SAC's target samples the current actor: only its critic has a tracked target copy.)
    nets = (agent.actor, agent.critic, agent.critic_target) if algo == "sac" else (
        agent.actor, agent.critic, agent.actor_target, agent.critic_target)
    before = [encoder_state(net) for net in nets]
    replay = filled_replay()
    for _ in range(4):
        agent.update(replay.sample(16))
    for net, old in zip(nets, before):
        new = encoder_state(net)
        changed = [k for k in old if not torch.equal(old[k], new[k])]
        assert changed and not any(k.startswith("encoder.logvar") for k in changed), net


@pytest.mark.parametrize("trainable", [False, True])
def test_checkpoint_round_trip_continues_identically(trainable, vae_file):
    """The optimizers hold only trainable parameters, so a checkpoint restores them one to one."""
    config = agent_config("td3", {"pixels": vae_encoder(vae_file, trainable)})
    first, replay = make_agent(config, Spec()), filled_replay()
    for _ in range(3):
        first.update(replay.sample(16))
    second = make_agent(config_from_dict({**config.to_dict(), "seed": 1}), Spec())
    second.load_state_dict(first.state_dict())
    batch = replay.sample(16)
    first.update(batch)
    second.update(batch)
    for a, b in zip(first.state_dict()["critic"].values(), second.state_dict()["critic"].values()):
        assert torch.equal(a, b)


def test_normalizer_passes_image_columns_through():
    agent = make_agent(agent_config("td3", {"pixels": CONV2D}, obs_norm=True), Spec())
    assert isinstance(agent.normalizer, PartialNormalizer) and agent.normalizer.mean.numel() == 2
    rng = np.random.default_rng(3)
    for obs in (random_obs(rng) for _ in range(20)):
        agent.observe(obs)
    x = flat(random_obs(rng, 4))
    out = agent.normalizer(x)
    assert torch.equal(out[:, :3072], x[:, :3072]) and not torch.equal(out[:, 3072:], x[:, 3072:])


# ----------------------------------------------------------------------------- errors


def _one_line_error(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


def test_vae_needs_a_path():
    _one_line_error(lambda: agent_config("td3", {"pixels": {"type": "vae"}}),
                    r"agent\.encoders\.pixels\.vae_path is required for type: vae")
    _one_line_error(lambda: agent_config("td3", {"pixels": {**CONV2D, "vae_path": "x.safetensors"}}),
                    r"vae_path is only used with type: vae")


@pytest.mark.parametrize("make_encoders, match", [
    (lambda path: {"pixels": CONV2D, "state": vae_encoder(path)}, r"encoders\.state: vae needs an image part"),
    (lambda path: {"pixels": CONV2D, "state": {**CONV2D, "join": 0}}, r"encoders\.state: conv2d needs an image"),
    (lambda path: {"state": {"type": "mlp", "join": 0}}, r"'pixels' is an image .*type: conv2d"),
    (lambda path: {}, r"'pixels' is an image"),
    (lambda path: {"pixels": {**CONV2D, "hidden": [8, 8, 8, 8], "kernel": 5}}, "smaller than the kernel"),
    (lambda path: {"pixels": vae_encoder(path + ".missing")}, r"encoders\.pixels\.vae_path: VAE file not found"),
])
def test_bad_image_encoders_are_one_line_config_errors(make_encoders, match, vae_file):
    _one_line_error(lambda: make_agent(agent_config("td3", make_encoders(vae_file)), Spec()), match)


def test_vae_file_must_fit_the_image(tmp_path):
    small = _save(tmp_path / "small.safetensors", (3, 16, 16))
    _one_line_error(lambda: make_agent(agent_config("ddpg", {"pixels": vae_encoder(small)}), Spec()),
                    r"VAE takes input \(3, 16, 16\), expected \(3, 32, 32\)")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00 not a safetensors file")
    _one_line_error(lambda: make_agent(agent_config("ddpg", {"pixels": vae_encoder(str(corrupt))}), Spec()),
                    "not a readable safetensors file")


# ----------------------------------------------------------------------------- end to end


def test_td3_trains_from_pixels_with_a_frozen_vae(tmp_path, vae_file):
    from rlcontrol.cli import main
    from rlcontrol.training.checkpoint import load_torch

    config = {
        "algo": "td3", "seed": 0,
        "env": {"id": "rlc:lane-following", "pixels": True, "pixel_size": 32, "max_episode_steps": 50,
                "kwargs": {"include_state": True}},
        "agent": {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "batch_size": 16, "obs_norm": True,
                  "encoders": {"pixels": vae_encoder(vae_file)}},
        "replay": {"capacity": 1000},
        "train": {"total_env_steps": 200, "learning_starts": 100, "eval_every": 0, "eval_episodes": 1,
                  "checkpoint_every": 1000, "log_every": 100, "video_frames": 0, "threads": 1},
    }
    path, run = tmp_path / "td3_lane_vae.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run-dir", str(run), "--no-progress"]) == 0
    assert (run / "policy.pt").is_file() and "losses/critic_loss" in (run / "metrics.jsonl").read_text()
    actor = load_torch(run / "policy.pt")["policy"]["actor"]
    file_weights = load_vae(vae_file)[0].encoder.state_dict()
    assert all(torch.equal(actor[f"trunk.encoders.0.encoder.{k}"], v) for k, v in file_weights.items())


# ----------------------------------------------------------------------------- frozen-feature cache


@pytest.mark.parametrize("algo", ["ddpg", "td3"])
def test_frozen_features_are_computed_once_per_batch_and_change_nothing(algo, vae_file, monkeypatch):
    """Two encoder passes per update (obs, next obs) instead of five, and the same update."""
    from rlcontrol.networks import image_encoders

    config = agent_config(algo, {"pixels": vae_encoder(vae_file)})
    replay = filled_replay()
    batches = [replay.sample(16) for _ in range(3)]
    results = []
    for max_entries in (4, 0):  # 0: nothing is stored, every pass computes (no per-frame memory either)
        cache = image_encoders.FrozenFeatureCache(max_entries, max_frames=0)
        monkeypatch.setattr(image_encoders, "FROZEN_FEATURES", cache)
        agent = make_agent(config, Spec())
        calls = []
        for net in (agent.actor, agent.critic, agent.actor_target, agent.critic_target):
            enc = net.trunk.encoders[0].encoder
            original = enc.encode_mean
            monkeypatch.setattr(enc, "encode_mean", lambda x, f=original, c=calls: c.append(x.shape[0]) or f(x))
        for batch in batches:
            agent.update(batch)
        results.append((agent.actor.state_dict(), agent.critic.state_dict(), len(calls)))
    (actor, critic, passes), (actor_ref, critic_ref, passes_ref) = results
    delays = sum(1 for k in range(1, 4) if k % agent.cfg.policy_delay == 0)
    assert passes_ref == 3 * 3 + 2 * delays  # critic: obs, next obs twice; actor update: obs twice
    assert passes == 3 * 2
    assert all(torch.equal(actor[k], actor_ref[k]) for k in actor)
    assert all(torch.equal(critic[k], critic_ref[k]) for k in critic)


def test_frozen_feature_cache_misses_for_other_weights_or_other_images(vae_file):
    from rlcontrol.networks.image_encoders import FrozenFeatureCache

    cache = FrozenFeatureCache(max_frames=0)
    encoder = load_vae(vae_file)[0].encoder.eval()
    images = torch.rand(4, 3, 32, 32)
    first = cache.features(encoder, images, encoder.encode_mean)
    assert cache.features(encoder, images.clone(), encoder.encode_mean) is first and cache.hits == 1
    other_images = images.clone()
    other_images[0, 0, 0, 0] += 0.5
    assert cache.features(encoder, other_images, encoder.encode_mean) is not first and cache.misses == 2
    with torch.no_grad():  # new weights (what load_state_dict does): the digest changes
        encoder.mu.weight.add_(1.0)
    changed = cache.features(encoder, images, encoder.encode_mean)
    assert cache.misses == 3 and not torch.allclose(changed, first)
    assert torch.equal(changed, encoder.encode_mean(images).detach())


def test_frozen_features_are_remembered_per_frame(vae_file):
    """A batch encodes only the frames not seen before with these weights; the features are the
    encoder's own, and other weights or inputs that are not raw pixels are never served from memory."""
    from rlcontrol.networks.image_encoders import FrozenFeatureCache, to_images

    cache = FrozenFeatureCache(max_entries=0)  # no per-batch entries: the per-frame memory alone
    encoder = load_vae(vae_file)[0].encoder.eval()
    shape = (3, 32, 32)
    encoded_rows = []

    def compute(rows):
        encoded_rows.append(rows.shape[0])
        return encoder.encode_mean(to_images(rows, shape))

    frames = torch.randint(0, 256, (6, 3 * 32 * 32), generator=torch.Generator().manual_seed(0)).float()
    first = cache.features(encoder, frames[:4], compute)
    mixed = cache.features(encoder, frames[2:], compute)  # frames 2 and 3 seen, 4 and 5 new
    assert encoded_rows == [4, 2] and cache.frame_hits == 2 and cache.frame_misses == 6
    with torch.no_grad():
        torch.testing.assert_close(mixed, encoder.encode_mean(to_images(frames[2:], shape)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[:2], first[2:], rtol=0, atol=0)
    assert cache.features(encoder, frames[[5, 0]], compute).shape == (2, first.shape[1])
    assert len(encoded_rows) == 2  # both seen: nothing encoded
    with torch.no_grad():  # new weights: every frame is encoded again
        encoder.mu.weight.add_(1.0)
    cache.features(encoder, frames[:4], compute)
    assert encoded_rows[-1] == 4
    scaled = frames[:4] / 255.0  # not raw pixel values: no per-frame key, computed every time
    cache.features(encoder, scaled, compute)
    cache.features(encoder, scaled, compute)
    assert encoded_rows[-2:] == [4, 4]
