"""SAC's losses and the modern critic options against hand-computed expectations."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rlcontrol.agents.d4pg import losses as d4pg_losses
from rlcontrol.agents.ensemble_targets import reduce_members, subset_mask
from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.agents.sac import losses
from rlcontrol.config import SACConfig
from rlcontrol.networks import EnsembleCritic, GaussianActor
from rlcontrol.networks.actor import squashed_gaussian_sample
from rlcontrol.networks.ensemble_linear import EnsembleLayerNorm


class FixedActor(nn.Module):
    """sample() returns given actions and log-densities: the target's arithmetic is then checkable by hand."""

    def __init__(self, action, log_prob):
        super().__init__()
        self.action, self.log_prob = action, log_prob

    def sample(self, obs, std_normal):
        return self.action, self.log_prob


class FixedCritic(nn.Module):
    """Q_i(s, a) = values[i] for every sample (E, B, 1)."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs, action, member=None):
        q = self.values.view(-1, 1, 1).expand(-1, obs.shape[0], 1)
        return q if member is None else q[member]


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std, eps = (torch.randn(64, 3, generator=g) for _ in range(3))
    action, log_prob = squashed_gaussian_sample(mean, log_std, eps)
    base = torch.distributions.Normal(mean, log_std.exp())
    dist = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform(cache_size=1)])
    u = mean + log_std.exp() * eps
    expected = dist.log_prob(torch.tanh(u)).sum(-1)
    assert torch.allclose(action, torch.tanh(u))
    # Exact where tanh does not saturate (torch's own inverse loses precision there).
    fine = u.abs().amax(-1) < 4
    assert torch.allclose(log_prob[fine], expected[fine], atol=1e-4)
    # Far in the tail the stable form stays finite where 1 - tanh(u)^2 underflows to 0.
    _, tail = squashed_gaussian_sample(torch.tensor([[30.0]]), torch.tensor([[-5.0]]), torch.tensor([[0.0]]))
    assert torch.isfinite(tail).all()


def test_gaussian_actor_bounds_log_std_and_forward_is_tanh_of_the_mean():
    body = nn.Linear(4, 4)  # 2 actions: mean and raw log-std
    actor = GaussianActor(body, 2, log_std_min=-5.0, log_std_max=2.0)
    obs = torch.randn(100, 4) * 100  # drive the raw log-std far out
    mean, log_std = actor.distribution(obs)
    assert log_std.min() >= -5.0 and log_std.max() <= 2.0
    assert torch.equal(actor(obs), torch.tanh(mean))
    # With zero noise the sample is the deterministic action.
    action, _ = actor.sample(obs, torch.zeros(100, 2))
    assert torch.allclose(action, actor(obs))


def test_sac_target_by_hand():
    # y = r + discount * (min_i Q'_i(s', a') - alpha log pi(a'|s'))
    reward, discount = torch.tensor([1.0, 0.5]), torch.tensor([0.99, 0.0])
    actor = FixedActor(torch.zeros(2, 1), torch.tensor([-1.0, 2.0]))
    critic = FixedCritic([3.0, 2.0, 5.0])
    y = losses.critic_target(reward, discount, torch.zeros(2, 4), actor, critic, None, torch.tensor([0.2]))
    assert torch.allclose(y, torch.tensor([1.0 + 0.99 * (2.0 + 0.2), 0.5]))
    # REDQ: the min over the subset {0, 2} only is 3.
    mask = torch.tensor([0.0, float("inf"), 0.0])
    y = losses.critic_target(reward, discount, torch.zeros(2, 4), actor, critic, None, torch.tensor([0.2]), mask)
    assert torch.allclose(y, torch.tensor([1.0 + 0.99 * (3.0 + 0.2), 0.5]))


@pytest.mark.parametrize("reduce, q", [("min", 2.0), ("mean", 10.0 / 3.0), ("first", 3.0)])
def test_sac_actor_loss_by_hand(reduce, q):
    actor = FixedActor(torch.zeros(2, 1), torch.tensor([-1.0, 0.5]))
    loss, log_prob = losses.actor_loss(actor, FixedCritic([3.0, 2.0, 5.0]), torch.zeros(2, 4), None,
                                       torch.tensor([0.5]), reduce)
    # mean_k (alpha log pi_k - Q) = (0.5 * -1 - q + 0.5 * 0.5 - q) / 2
    assert loss.item() == pytest.approx((-0.5 + 0.25) / 2 - q)
    assert torch.equal(log_prob, torch.tensor([-1.0, 0.5]))


def test_temperature_moves_alpha_towards_the_target_entropy():
    log_alpha = torch.zeros(1, requires_grad=True)
    # Entropy -log pi = 1 is below the target 3: alpha must grow (gradient negative).
    loss = losses.temperature_loss(log_alpha, torch.tensor([-1.0, -1.0]), target_entropy=3.0)
    (grad,) = torch.autograd.grad(loss, log_alpha)
    assert grad.item() == pytest.approx(-(-1.0 + 3.0))  # d/dlog_alpha of -log_alpha (log pi + H)
    # Entropy 1 above a target of -3: alpha must shrink (gradient positive).
    loss = losses.temperature_loss(log_alpha, torch.tensor([-1.0, -1.0]), target_entropy=-3.0)
    assert torch.autograd.grad(loss, log_alpha)[0].item() == pytest.approx(4.0)


def test_redq_subset_mask_and_reduction():
    g = torch.Generator().manual_seed(0)
    q = torch.tensor([[1.0, 5.0], [2.0, 0.0], [3.0, 4.0], [0.5, 6.0]])  # (E=4, B=2)
    seen = set()
    for _ in range(50):
        mask = subset_mask(4, 2, g, "cpu")
        chosen = (mask == 0).nonzero().flatten().tolist()
        assert len(chosen) == 2
        seen.add(tuple(chosen))
        assert torch.equal(reduce_members(q, "min", mask), q[chosen].amin(0))
    assert len(seen) == 6  # every pair of 4 is drawn
    assert subset_mask(4, 4, g, "cpu") is None
    assert torch.equal(reduce_members(q, "mean"), q.mean(0))
    assert torch.equal(reduce_members(q, "first"), q[0])


def test_d4pg_ensemble_target_takes_the_lowest_mean_member_per_sample():
    atoms = d4pg_losses.support(3, -1.0, 1.0)

    class Critic(nn.Module):
        def forward(self, obs, action, member=None):
            # member 0 puts its mass on +1 for sample 0, on -1 for sample 1; member 1 the reverse
            big = 20.0
            m0 = torch.tensor([[0, 0, big], [big, 0, 0]])
            m1 = torch.tensor([[big, 0, 0], [0, 0, big]])
            return torch.stack([m0, m1])

    actor = lambda obs: torch.zeros(obs.shape[0], 1)  # noqa: E731
    target = d4pg_losses.critic_target(torch.zeros(2), torch.ones(2), torch.zeros(2, 1), actor, Critic(), atoms)
    assert torch.allclose(target, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), atol=1e-6)
    # With member 0 alone in the subset, sample 0 takes member 0's distribution.
    only0 = torch.tensor([0.0, float("inf")])
    target = d4pg_losses.critic_target(torch.zeros(2), torch.ones(2), torch.zeros(2, 1), actor, Critic(), atoms, only0)
    assert torch.allclose(target, torch.tensor([[0, 0, 1.0], [1.0, 0, 0]]), atol=1e-6)


def test_ensemble_layer_norm_is_layer_norm_per_member():
    x = torch.randn(3, 8, 16)
    norm = EnsembleLayerNorm(3, 16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(3, 1, 16))
        norm.bias.copy_(torch.rand(3, 1, 16))
    for e in range(3):
        ref = nn.LayerNorm(16)
        with torch.no_grad():
            ref.weight.copy_(norm.weight[e, 0])
            ref.bias.copy_(norm.bias[e, 0])
        assert torch.allclose(norm(x)[e], ref(x[e]), atol=1e-6)


@pytest.mark.parametrize("options", [{"layer_norm": True}, {"residual_blocks": 2, "hidden": (16,)}])
def test_member_path_matches_the_full_ensemble(options):
    hidden = options.pop("hidden", (16, 16))
    critic = EnsembleCritic(5, 2, hidden, ensemble_size=3, **options)
    obs, action = torch.randn(7, 5), torch.randn(7, 2)
    full = critic(obs, action)
    for member in range(3):
        assert torch.allclose(critic(obs, action, member=member), full[member], atol=1e-6)


def test_residual_critic_by_hand():
    # One member, one block of width 2: x = W_in z + b; h = relu(W_up LN(x) + b_up); x += W_down h + b_down;
    # out = W_out LN(x) + b_out. With every weight known the output is computed here in float64.
    torch.manual_seed(0)
    critic = EnsembleCritic(1, 1, (2,), ensemble_size=1, residual_blocks=1).double()
    z = torch.tensor([[0.3, -0.7]], dtype=torch.float64)

    def ln(v, layer):
        v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + layer.eps)
        return v * layer.weight[0, 0] + layer.bias[0, 0]

    x = z[0] @ critic.input.weight[0] + critic.input.bias[0, 0]
    h = torch.relu(ln(x, critic.block_norms[0]) @ critic.block_up[0].weight[0] + critic.block_up[0].bias[0, 0])
    x = x + h @ critic.block_down[0].weight[0] + critic.block_down[0].bias[0, 0]
    out = ln(x, critic.final_norm) @ critic.output.weight[0] + critic.output.bias[0, 0]
    assert torch.allclose(critic(z[:, :1], z[:, 1:])[0, 0], out)
    assert critic.block_up[0].out_features == 8  # SimBa's inverted bottleneck: 4x the width


def test_critic_dropout_masks_from_the_generator():
    critic = EnsembleCritic(4, 1, (512,), ensemble_size=2, dropout=0.25)
    obs, action = torch.randn(64, 4), torch.randn(64, 1)
    critic.dropout_generator = torch.Generator().manual_seed(1)
    a = critic(obs, action)
    critic.dropout_generator = torch.Generator().manual_seed(1)
    assert torch.equal(a, critic(obs, action))  # same generator state, same masks
    assert not torch.equal(a, critic(obs, action))  # fresh masks on the next call
    # The kept units are scaled by 1/(1-p): the mean activation is preserved (about 1/4 are dropped).
    layer = critic.layers[0]
    pre = layer(torch.cat([obs, action], -1))
    from rlcontrol.networks.critic import dropout
    dropped = dropout(pre, 0.25, torch.Generator().manual_seed(2))
    zeroed = (dropped == 0).float().mean().item()
    assert 0.22 < zeroed < 0.28
    kept = dropped != 0
    assert torch.allclose(dropped[kept], pre[kept] / 0.75)
    # In eval mode (never used for acting, but available) there is no dropout.
    critic.eval()
    assert torch.equal(critic(obs, action), critic(obs, action))


def test_sac_agent_update_raises_q_and_tunes_alpha():
    torch.manual_seed(0)
    cfg = SACConfig(actor_hidden=[32], critic_hidden=[32], batch_size=64, init_alpha=1.0, alpha_lr=1e-2)
    agent = DeterministicPolicyAgent("sac", cfg, (3,), 2, seed=0)
    assert agent.target_entropy == -2.0
    g = torch.Generator().manual_seed(0)

    class Batch:
        obs = torch.randn(64, 3, generator=g)
        next_obs = torch.randn(64, 3, generator=g)
        action = torch.rand(64, 2, generator=g) * 2 - 1
        reward = torch.randn(64, generator=g)
        discount = torch.full((64,), 0.99)
        weights, indices = None, None

    alphas = []
    for _ in range(30):
        metrics = agent.update(Batch)
        alphas.append(metrics["alpha"].item())
    # A fresh policy's entropy (about 2 * 0.9 nats here) is above the target -2: alpha falls.
    assert alphas[-1] < alphas[0] < 1.0 + 1e-6
    assert set(metrics) == {"critic_loss", "q_mean", "actor_loss", "entropy", "alpha"}
    # SAC's target uses the current actor: its target copy is not tracked.
    for p, t in zip(agent.actor.parameters(), agent.actor_target.parameters()):
        assert not torch.equal(p, t)
    # Acting: deterministic is tanh(mean); exploring samples around it with the policy's own std.
    obs = np.zeros(3, np.float32)
    det = agent.act(obs)
    samples = np.stack([agent.act(obs, explore=True) for _ in range(200)])
    assert np.all(np.abs(samples) <= 1.0)
    assert samples.std(0).min() > 0.05 and not np.allclose(samples.mean(0), samples[0])
    assert np.allclose(np.arctanh(np.clip(samples, -0.999999, 0.999999)).mean(0), np.arctanh(det), atol=0.3)
    assert math.isfinite(metrics["critic_loss"].item())


def test_sac_with_dict_observations_prioritized_n_step_replay():
    """PER priorities are SAC's |TD error| (mean over the critics); n-step transitions arrive as
    (discounted reward, gamma^m) and need nothing else."""
    from rlcontrol.replay import NStepAccumulator, make_replay

    spec = {"position": (3,), "velocity": (2,)}
    agent = DeterministicPolicyAgent("sac", SACConfig(actor_hidden=[32], critic_hidden=[32], batch_size=32,
                                                      n_critics=3, target_critics=2), spec, 1, prioritized=True)
    replay = make_replay(1000, spec, 1, prioritized=True, seed=0)
    acc, rng = NStepAccumulator(3, 0.99), np.random.default_rng(0)
    obs = {"position": np.zeros(3, np.float32), "velocity": np.zeros(2, np.float32)}
    for t in range(200):
        nxt = {k: rng.standard_normal(v).astype(np.float32) for k, v in spec.items()}
        for transition in acc.add(obs, agent.act(obs, explore=True), 1.0, nxt, False, t % 50 == 49):
            replay.add(transition)
        obs = nxt
    batch = replay.sample(32)
    metrics = agent.update(batch)
    assert metrics["priority"].shape == (32,) and torch.all(metrics["priority"] >= 0)
    replay.update_priorities(batch.indices, metrics["priority"])
    assert batch.reward.max() > 1.5  # 3-step returns
