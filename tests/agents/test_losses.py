"""DDPG/TD3 targets and losses against hand-computed values; soft updates; gradient isolation."""

import copy

import pytest
import torch
from torch import nn

from rlcontrol.agents.ddpg import losses as ddpg
from rlcontrol.agents.td3 import losses as td3
from rlcontrol.networks import EnsembleCritic


class ConstActor(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = torch.tensor(value)

    def forward(self, obs):
        return self.value.expand(obs.shape[0], -1).clone()


class TableCritic(nn.Module):
    """Q_e(s, a) = w_e * (sum(s) + sum(a)): easy to evaluate by hand."""

    def __init__(self, weights):
        super().__init__()
        self.w = torch.tensor(weights)

    def forward(self, obs, action, member=None):
        base = obs.sum(-1) + action.sum(-1)  # (B,)
        if member is not None:
            return (self.w[member] * base).unsqueeze(-1)
        return (self.w[:, None] * base[None, :]).unsqueeze(-1)  # (E, B, 1)


def test_ddpg_target_by_hand():
    reward = torch.tensor([1.0, -0.5])
    discount = torch.tensor([0.99, 0.0])  # second transition terminated
    next_obs = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    actor = ConstActor([0.5])
    critic = TableCritic([2.0])
    t = ddpg.critic_target(reward, discount, next_obs, actor, critic)
    # Q'(s', mu'(s')) = 2 * (sum(s') + 0.5) = [7, 15]; t = r + discount * Q'
    assert torch.allclose(t, torch.tensor([1.0 + 0.99 * 7.0, -0.5]))


def test_td3_target_takes_min_and_smooths_within_clip():
    reward = torch.tensor([0.0, 1.0])
    discount = torch.tensor([0.9, 0.9])
    next_obs = torch.tensor([[1.0], [2.0]])
    actor = ConstActor([0.0, 0.0])
    critic = TableCritic([3.0, 2.0])  # the second member is the smaller for positive inputs
    # noise_std=0: no smoothing -> t = r + 0.9 * min(3, 2) * sum(s')
    t = td3.critic_target(reward, discount, next_obs, actor, critic, torch.randn(2, 2), noise_std=0.0, noise_clip=0.5)
    assert torch.allclose(t, torch.tensor([0.9 * 2.0 * 1.0, 1.0 + 0.9 * 2.0 * 2.0]))
    # With huge noise the smoothing noise is clipped to +-c and the action to [-1, 1].
    g = torch.Generator().manual_seed(0)
    a = td3.smoothed_target_action(ConstActor([0.9, -0.2]), torch.zeros(1000, 1), torch.randn(1000, 2, generator=g), 100.0, 0.5)
    assert a[:, 0].max() <= 1.0 and a[:, 0].min() >= 0.4 - 1e-6
    assert a[:, 1].max() <= 0.3 + 1e-6 and a[:, 1].min() >= -0.7 - 1e-6
    # Negative rewards & the min: with negative Q the larger weight is the min.
    t2 = td3.critic_target(torch.zeros(1), torch.ones(1), -torch.ones(1, 1), actor, critic, torch.randn(1, 2), noise_std=0.0, noise_clip=0.5)
    assert torch.allclose(t2, torch.tensor([-3.0]))


def test_critic_loss_mse_huber_and_weights():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])  # (E=2, B=2)
    target = torch.tensor([2.0, 0.0])
    loss, td = ddpg.critic_loss(q, target)
    # member 0: ((1)^2 + (-2)^2)/2 = 2.5 ; member 1: (4 + 16)/2 = 10
    assert loss.item() == pytest.approx(12.5)
    assert torch.equal(td, torch.tensor([[1.0, -2.0], [2.0, -4.0]]))
    wloss, _ = ddpg.critic_loss(q, target, weights=torch.tensor([1.0, 0.5]))
    assert wloss.item() == pytest.approx((1 + 0.5 * 4) / 2 + (4 + 0.5 * 16) / 2)
    hloss, _ = ddpg.critic_loss(q, target, huber=True)
    # huber(|d|<=1: d^2/2, else |d|-0.5): m0: (0.5 + 1.5)/2 = 1 ; m1: (1.5 + 3.5)/2 = 2.5
    assert hloss.item() == pytest.approx(3.5)


def test_actor_loss_uses_first_critic_only_and_isolates_gradients():
    torch.manual_seed(0)
    actor = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    critic = EnsembleCritic(3, 2, (8,), ensemble_size=2)
    obs = torch.randn(5, 3)
    loss = ddpg.actor_loss(actor, critic, obs)
    expected = -critic(obs, actor(obs))[0].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    grads = torch.autograd.grad(loss, list(actor.parameters()))
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in critic.parameters())  # the actor loss leaves the critic untouched


def test_ensemble_critic_members_match_independent_mlps():
    torch.manual_seed(0)
    critic = EnsembleCritic(4, 2, (16, 16), ensemble_size=2)
    obs, act = torch.randn(7, 4), torch.randn(7, 2)
    out = critic(obs, act)
    x = torch.cat([obs, act], -1)
    for e in range(2):
        h = x
        for i, layer in enumerate(critic.layers):
            h = h @ layer.weight[e] + layer.bias[e]
            if i < len(critic.layers) - 1:
                h = torch.relu(h)
        assert torch.allclose(out[e], h, atol=1e-6)
        assert torch.allclose(critic(obs, act, member=e), h, atol=1e-6)


def test_soft_update_is_polyak_average():
    online = [torch.tensor([1.0, 2.0]), torch.tensor([10.0])]
    target = [torch.tensor([0.0, 0.0]), torch.tensor([20.0])]
    torch._foreach_lerp_(target, online, 0.1)  # what the learner calls
    assert torch.allclose(target[0], torch.tensor([0.1, 0.2]))
    assert torch.allclose(target[1], torch.tensor([19.0]))


def test_agent_update_schedule_delays_actor_and_targets():
    from types import SimpleNamespace

    from rlcontrol.agents.learner import DeterministicPolicyAgent
    from rlcontrol.config import TD3Config

    cfg = TD3Config(actor_hidden=[16], critic_hidden=[16], batch_size=8)
    agent = DeterministicPolicyAgent("td3", cfg, (3,), 2, seed=0)
    batch = SimpleNamespace(obs=torch.randn(8, 3), next_obs=torch.randn(8, 3), action=torch.rand(8, 2) * 2 - 1,
                            reward=torch.randn(8), discount=torch.full((8,), 0.99), weights=torch.ones(8),
                            indices=torch.arange(8))
    actor0 = copy.deepcopy(agent.actor.state_dict())
    critic_t0 = copy.deepcopy(agent.critic_target.state_dict())
    m1 = agent.update(batch)
    assert "actor_loss" not in m1  # update 1 of d=2: critic only
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor0.items())
    assert all(torch.equal(v, agent.critic_target.state_dict()[k]) for k, v in critic_t0.items())
    m2 = agent.update(batch)
    assert "actor_loss" in m2
    assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor0.items())
    # Targets moved by exactly tau toward the online critic.
    for k, v in critic_t0.items():
        expected = v + cfg.tau * (agent.critic.state_dict()[k] - v)
        assert torch.allclose(agent.critic_target.state_dict()[k], expected, atol=1e-7)
    # Target networks never receive gradients.
    assert all(p.grad is None for p in agent.critic_target.parameters())
    assert all(p.grad is None for p in agent.actor_target.parameters())


def test_smoothing_noise_by_hand():
    eps = torch.tensor([[10.0, -0.1]])  # std 0.2 -> noise (2.0 -> clipped to 0.5, -0.02)
    a = td3.smoothed_target_action(ConstActor([0.9, -0.2]), torch.zeros(1, 1), eps, 0.2, 0.5)
    assert torch.allclose(a, torch.tensor([[1.0, -0.22]]))  # 0.9 + 0.5 clipped to the action bound


def test_compiled_update_matches_eager():
    from types import SimpleNamespace

    from rlcontrol.agents.learner import DeterministicPolicyAgent
    from rlcontrol.config import TD3Config

    cfg = TD3Config(actor_hidden=[16], critic_hidden=[16], batch_size=8)
    eager = DeterministicPolicyAgent("td3", cfg, (3,), 2, seed=0)
    compiled = DeterministicPolicyAgent("td3", cfg, (3,), 2, seed=0, compile=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        batch = SimpleNamespace(obs=torch.randn(8, 3, generator=g), next_obs=torch.randn(8, 3, generator=g),
                                action=torch.rand(8, 2, generator=g) * 2 - 1, reward=torch.randn(8, generator=g),
                                discount=torch.full((8,), 0.99), weights=torch.ones(8), indices=torch.arange(8))
        me, mc = eager.update(batch), compiled.update(batch)
        assert me.keys() == mc.keys()
        for k in me:
            assert torch.allclose(me[k], mc[k], atol=1e-5), k
    for a, b in zip(eager.actor.parameters(), compiled.actor.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
