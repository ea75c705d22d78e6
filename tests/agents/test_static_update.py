"""The static-buffer update path behind train.cuda_graphs, run eagerly on the CPU (capture=False):
the same updates as the plain path bit for bit, warm-up updates undone, metrics not aliased to
the buffers, re-built when a learning rate changes. tests/gpu/test_cuda.py replays the captured
graphs on a GPU against the eager CUDA path."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.agents.static_update import StaticUpdates
from rlcontrol.config import D4PGConfig, DDPGConfig, TD3Config

CONFIGS = {"ddpg": DDPGConfig, "td3": TD3Config, "d4pg": D4PGConfig}


def make(algo, prioritized, static=False, **kw):
    cfg = CONFIGS[algo](actor_hidden=[32, 32], critic_hidden=[32, 32], batch_size=16, obs_norm=True, **kw)
    agent = DeterministicPolicyAgent(algo, cfg, {"pos": (3,), "vel": (2,)}, 2, seed=0, prioritized=prioritized)
    if static:
        agent.static_updates = StaticUpdates(agent, capture=False)
    for i in range(10):
        agent.observe({"pos": np.full(3, 0.2 * i, np.float32), "vel": np.ones(2, np.float32)})
    return agent


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(obs={"pos": torch.randn(16, 3, generator=g), "vel": torch.randn(16, 2, generator=g)},
                           next_obs={"pos": torch.randn(16, 3, generator=g), "vel": torch.randn(16, 2, generator=g)},
                           action=torch.rand(16, 2, generator=g) * 2 - 1, reward=torch.randn(16, generator=g),
                           discount=torch.full((16,), 0.99), weights=torch.rand(16, generator=g) + 0.5,
                           indices=torch.arange(16))


@pytest.mark.parametrize("algo, prioritized, kw", [("ddpg", False, {}), ("td3", False, {}),
                                                   ("td3", True, {"grad_clip_norm": 1.0, "huber": True}),
                                                   ("d4pg", True, {})])
def test_static_path_matches_the_plain_update_bit_for_bit(algo, prioritized, kw):
    plain, static = make(algo, prioritized, **kw), make(algo, prioritized, static=True, **kw)
    held = []
    for i in range(9):  # crosses several policy_delay boundaries
        a, b = plain.update(batch(i)), static.update(batch(i))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (i, k)
        held.append(b)
    # Returned metrics are copies: later updates do not overwrite what the loop still holds.
    assert not torch.equal(held[0]["critic_loss"], held[-1]["critic_loss"])
    assert plain.num_updates == static.num_updates == 9
    for x, y in zip(plain.state_dict()["critic"].values(), static.state_dict()["critic"].values(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(plain.actor_opt.exp_avg, static.actor_opt.exp_avg, strict=True):
        assert torch.equal(x, y)
    assert static.static_updates.captures == 1  # the warm-up updates were undone, or the above would differ


def test_a_learning_rate_change_rebuilds_and_critic_only_updates_stay_eager():
    plain, static = make("td3", False), make("td3", False, static=True)
    for agent in (plain, static):
        agent.update(batch(0))
        agent.actor_opt.lr = agent.critic_opt.lr = 1e-4  # fine-tuning's lr-scale
        agent.update(batch(1))
        agent.update(batch(2), train_actor=False)  # critic warm-up of live fine-tuning
        agent.update(batch(3))
    assert static.static_updates.captures == 2
    for x, y in zip(plain.actor.parameters(), static.actor.parameters(), strict=True):
        assert torch.equal(x, y)


def test_capture_needs_a_cuda_agent():
    with pytest.raises(ValueError, match="CUDA graphs need the agent on a CUDA device"):
        StaticUpdates(make("td3", False), capture=True)
