"""D4PG: the categorical projection against hand-computed cases, the losses, and the agent."""

import numpy as np
import pytest
import torch

from rlcontrol.agents import make_agent
from rlcontrol.agents.d4pg import losses
from rlcontrol.config import config_from_dict
from rlcontrol.replay import make_replay

ATOMS = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # v_min 0, v_max 4, dz 1


def project(reward, discount, probs):
    return losses.categorical_projection(torch.tensor([reward]), torch.tensor([discount]),
                                         torch.tensor([probs]), ATOMS)[0]


def one_hot(i, n=5):
    p = [0.0] * n
    p[i] = 1.0
    return p


@pytest.mark.parametrize("reward, discount, probs, expected", [
    # atom 1 shifted by 0.5 lands halfway between atoms 1 and 2
    (0.5, 1.0, one_hot(1), [0, 0.5, 0.5, 0, 0]),
    # landing exactly on an atom keeps all the mass there (no l == u special case needed)
    (1.0, 1.0, one_hot(2), [0, 0, 0, 1, 0]),
    # discount 0.5 compresses the support: Tz = 0, .5, 1, 1.5, 2
    (0.0, 0.5, [0.2] * 5, [0.3, 0.4, 0.3, 0, 0]),
    # above the support: everything clips to v_max
    (10.0, 0.9, [0.2] * 5, [0, 0, 0, 0, 1]),
    # below the support: everything clips to v_min
    (-10.0, 0.9, [0.1, 0.2, 0.3, 0.2, 0.2], [1, 0, 0, 0, 0]),
    # mostly below: Tz = -3, -2.1, -1.2, -0.3 (all -> 0) and 0.6 (0.4 of its 0.2 to atom 0, 0.6 to atom 1)
    (-3.0, 0.9, [0.1, 0.2, 0.3, 0.2, 0.2], [0.88, 0.12, 0, 0, 0]),
    # partly outside: Tz = 2.5, 3.5, 4.5->4, 5.5->4, 6.5->4
    (2.5, 1.0, [0.2] * 5, [0, 0, 0.1, 0.2, 0.7]),
    # terminal transition (discount 0): the distribution collapses onto r = 2.25
    (2.25, 0.0, [0.1, 0.2, 0.3, 0.2, 0.2], [0, 0, 0.75, 0.25, 0]),
])
def test_projection_hand_computed(reward, discount, probs, expected):
    torch.testing.assert_close(project(reward, discount, probs), torch.tensor(expected, dtype=torch.float32))


def reference_projection(reward, discount, probs, atoms):
    """Bellemare et al. (2017) Algorithm 1, written as loops, with the l == u fix."""
    v_min, v_max, n = atoms[0], atoms[-1], len(atoms)
    dz = (v_max - v_min) / (n - 1)
    out = np.zeros((len(reward), n))
    for b in range(len(reward)):
        for j in range(n):
            tz = min(max(reward[b] + discount[b] * atoms[j], v_min), v_max)
            pos = (tz - v_min) / dz
            lo, hi = int(np.floor(pos)), int(np.ceil(pos))
            if lo == hi:
                out[b, lo] += probs[b, j]
            else:
                out[b, lo] += probs[b, j] * (hi - pos)
                out[b, hi] += probs[b, j] * (pos - lo)
    return out


def test_projection_matches_reference_algorithm_and_conserves_mass():
    rng = np.random.default_rng(0)
    atoms = np.linspace(-10.0, 10.0, 51)
    reward = rng.uniform(-15, 15, 64)
    discount = rng.choice([0.0, 0.99, 0.99 ** 5], 64)
    probs = rng.dirichlet(np.ones(51), 64)
    got = losses.categorical_projection(torch.tensor(reward), torch.tensor(discount), torch.tensor(probs),
                                        torch.tensor(atoms))
    np.testing.assert_allclose(got.numpy(), reference_projection(reward, discount, probs, atoms), atol=1e-9)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, atol=1e-9)
    assert (got >= 0).all()


def test_critic_loss_is_cross_entropy_and_its_per_sample_value_is_the_priority():
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    loss, per_sample = losses.critic_loss(logits, target, weights=torch.tensor([1.0, 0.5]))
    log_p = torch.log_softmax(logits, -1)
    expected = torch.stack([-log_p[0, 2], -(0.5 * log_p[1, 0] + 0.5 * log_p[1, 1])])
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(loss, (expected * torch.tensor([1.0, 0.5])).mean())
    # A perfect prediction has the lowest loss (the target's entropy): cross-entropy >= entropy.
    assert losses.critic_loss(torch.log(target[:1] + 1e-12), target[:1])[1] < per_sample[:1]


def test_expected_value_and_support():
    atoms = losses.support(5, -2.0, 2.0)
    torch.testing.assert_close(atoms, torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]))
    logits = torch.log(torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.5]]) + 1e-30)
    torch.testing.assert_close(losses.expected_value(logits, atoms), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="v_max"):
        losses.support(5, 1.0, 1.0)


def d4pg_config(**agent):
    return config_from_dict({"algo": "d4pg", "env": {"id": "gym:Pendulum-v1"},
                             "agent": {"actor_hidden": [32], "critic_hidden": [32], "num_atoms": 11,
                                       "v_min": -10.0, "v_max": 10.0, "batch_size": 32, **agent},
                             "replay": {"prioritized": True, "n_step": 3}})


class Spec:
    observation = type("S", (), {"shape": (3,), "dtype": np.float32})()
    action_dim = 1


def filled_replay(n=200, seed=0):
    replay = make_replay(1000, (3,), 1, prioritized=True, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        replay.add({"obs": rng.standard_normal(3), "action": rng.uniform(-1, 1, 1), "reward": rng.uniform(-1, 1),
                    "discount": rng.choice([0.0, 0.97]), "next_obs": rng.standard_normal(3)})
    return replay


def test_d4pg_agent_update_gives_priorities_and_moves_the_actor_up_the_mean():
    config = d4pg_config()
    agent = make_agent(config, Spec())
    assert agent.critic(torch.zeros(1, 3), torch.zeros(1, 1)).shape == (1, 1, 11)
    replay = filled_replay()
    batch = replay.sample(32)
    metrics = agent.update(batch)
    assert metrics["priority"].shape == (32,) and (metrics["priority"] > 0).all()
    # Priorities are the per-sample cross-entropy, recomputed here from the updated-before state.
    replay.update_priorities(batch.indices, metrics["priority"])
    # The actor step increases E[Z(s, mu(s))] for a fixed critic.
    obs = batch.obs
    before = losses.expected_value(agent.critic(obs, agent.actor(obs), member=0), agent.atoms).mean().item()
    for _ in range(20):
        agent.actor_opt.step(torch.autograd.grad(agent._actor_loss(obs, None)[0], agent._actor_params))
    after = losses.expected_value(agent.critic(obs, agent.actor(obs), member=0), agent.atoms).mean().item()
    assert after > before


def test_d4pg_update_is_reproducible_and_state_round_trips():
    config = d4pg_config()
    a, b = make_agent(config, Spec()), make_agent(config, Spec())
    for _ in range(3):
        batch = filled_replay(seed=1).sample(32)
        ma, mb = a.update(batch), b.update(batch)
        torch.testing.assert_close(ma["critic_loss"], mb["critic_loss"])
    c = make_agent(config, Spec())
    c.load_state_dict(a.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(c.actor(x), a.actor(x))
    torch.testing.assert_close(c.critic(x, a.actor(x)), a.critic(x, a.actor(x)))
