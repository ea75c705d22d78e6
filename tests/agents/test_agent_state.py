"""Agent save/load round trip (weights_only) and determinism under a seed, for every algorithm."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.config import DDPGConfig, SACConfig, TD3Config

CONFIGS = {"ddpg": DDPGConfig, "td3": TD3Config, "sac": SACConfig}
# The critic options of issue 16 draw random numbers inside the update (dropout masks, REDQ subsets):
# they must come from the agent's checkpointed generator for a resumed agent to continue identically.
DROQ_REDQ = {"n_critics": 4, "target_critics": 2, "critic_dropout": 0.1, "critic_layer_norm": True,
             "actor_layer_norm": True, "actor_q": "mean"}


def make(algo, seed=0, **kw):
    cfg = CONFIGS[algo](**{"actor_hidden": [32], "critic_hidden": [32], "batch_size": 16, **kw})
    return DeterministicPolicyAgent(algo, cfg, {"pos": (3,), "vel": (2,)}, 2, seed=seed, prioritized=True)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    obs = {"pos": torch.randn(16, 3, generator=g), "vel": torch.randn(16, 2, generator=g)}
    nxt = {"pos": torch.randn(16, 3, generator=g), "vel": torch.randn(16, 2, generator=g)}
    return SimpleNamespace(obs=obs, next_obs=nxt, action=torch.rand(16, 2, generator=g) * 2 - 1,
                           reward=torch.randn(16, generator=g), discount=torch.full((16,), 0.99),
                           weights=torch.rand(16, generator=g), indices=torch.arange(16))


@pytest.mark.parametrize("algo, options", [
    ("ddpg", {"exploration": "ou"}), ("td3", {"exploration": "ou"}), ("sac", {}), ("sac", DROQ_REDQ),
    ("td3", DROQ_REDQ), ("ddpg", {"critic_hidden": [32], "critic_residual_blocks": 2}),
])
def test_save_load_round_trip_continues_identically(algo, options):
    a = make(algo, obs_norm=True, **options)
    for i in range(5):
        a.observe({"pos": np.full(3, i, np.float32), "vel": np.ones(2, np.float32)})
        a.update(batch(i))
    a.act({"pos": np.zeros(3, np.float32), "vel": np.zeros(2, np.float32)}, explore=True)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make(algo, seed=123, obs_norm=True, **options)  # different init, overwritten by load
    b.load_state_dict(torch.load(buf, weights_only=True))
    b.noise_rng.bit_generator.state = a.noise_rng.bit_generator.state
    obs = {"pos": np.array([0.1, 0.2, 0.3], np.float32), "vel": np.array([1.0, -1.0], np.float32)}
    assert np.array_equal(a.act(obs), b.act(obs))
    assert np.array_equal(a.act(obs, explore=True), b.act(obs, explore=True))
    for i in range(5, 8):  # the next updates (target noise RNG, Adam moments, delay counter) match bit for bit
        ma, mb = a.update(batch(i)), b.update(batch(i))
        assert ma.keys() == mb.keys()
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(pa, pb)


def test_same_seed_same_agent_different_seed_different_agent():
    a, b, c = make("td3", seed=7), make("td3", seed=7), make("td3", seed=8)
    obs = {"pos": np.ones(3, np.float32), "vel": np.ones(2, np.float32)}
    assert np.array_equal(a.act(obs), b.act(obs))
    assert not np.array_equal(a.act(obs), c.act(obs))
    for i in range(3):
        assert torch.equal(a.update(batch(i))["critic_loss"], b.update(batch(i))["critic_loss"])


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_policy_module_matches_act(algo):
    a = make(algo, obs_norm=True)
    for i in range(10):
        a.observe({"pos": np.random.default_rng(i).normal(size=3).astype(np.float32), "vel": np.ones(2, np.float32)})
    policy = a.policy()
    obs = {"pos": np.array([0.5, -0.5, 2.0], np.float32), "vel": np.array([1.0, 1.0], np.float32)}
    flat = torch.from_numpy(np.concatenate([obs["pos"], obs["vel"]]))[None]
    with torch.no_grad():
        assert np.allclose(policy(flat)[0].numpy(), a.act(obs), atol=1e-7)
