"""QT-Opt: the target and losses against hand-computed values, the networks, and the agent."""

import copy
import io

import numpy as np
import pytest
import torch

from rlcontrol.agents import QTOptAgent, make_agent
from rlcontrol.agents.qtopt import losses
from rlcontrol.agents.qtopt.networks import CandidateScoring, PixelQNetwork, tile
from rlcontrol.config import config_from_dict
from rlcontrol.errors import ConfigError
from rlcontrol.replay import make_replay

BOX = (torch.tensor([-1.0]), torch.tensor([1.0]))


class LinearQ(CandidateScoring):
    """Two hand-made estimates on a 1-D state and action:
    Q_1(s, a) = s + a (maximized at the bound a = 1), Q_2(s, a) = 2s - a (maximized at a = -1)."""

    ensemble_size = 2

    def encode(self, obs):
        return obs

    def head(self, features, action, member=None):
        s, a = features[:, 0], action[:, 0]
        q = torch.stack([s + a, 2 * s - a])
        return q if member is None else q[member]


def target(reward, discount, next_obs, loss="mse"):
    b = len(reward)
    noise = torch.randn(2, b, 16, 1, generator=torch.Generator().manual_seed(0))
    return losses.critic_target(torch.tensor(reward), torch.tensor(discount), torch.tensor(next_obs).unsqueeze(-1),
                                LinearQ(), noise, *BOX, 4, torch.zeros(b, 1), torch.ones(b, 1), loss)


def test_target_is_cem_on_the_first_target_estimate_then_the_min_of_both():
    # a* = argmax_a Q'_1 = +1 (a bound: CEM reaches it exactly), so V(s') = min(s' + 1, 2s' - 1):
    #   s' = 0.5: min(1.5, 0) = 0;  s' = 3: min(4, 5) = 4.
    # (CEM over Q'_2 would pick a = -1 and give min(-0.5, 2) and min(2, 7) instead.)
    y = target([1.0, 1.0], [0.9, 0.9], [0.5, 3.0])
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 0.0, 1.0 + 0.9 * 4.0]))


def test_target_discount_and_terminal():
    # n-step replay stores discount = gamma^m (0.81 for m = 2) and 0 after a termination.
    y = target([0.5, 0.5, -2.0], [0.81, 0.0, 1.0], [3.0, 3.0, 3.0])
    torch.testing.assert_close(y, torch.tensor([0.5 + 0.81 * 4.0, 0.5, -2.0 + 4.0]))


def test_cross_entropy_target_uses_sigmoid_q_and_stays_a_probability():
    # Q = sigmoid(logit): V(3) = min(sigmoid(4), sigmoid(5)) = sigmoid(4)
    y = target([0.0, 1.0, 0.0], [0.9, 0.9, 0.0], [3.0, 3.0, 3.0], loss="cross_entropy")
    s4 = torch.sigmoid(torch.tensor(4.0))
    torch.testing.assert_close(y, torch.stack([0.9 * s4, torch.tensor(1.0), torch.tensor(0.0)]))  # 1 + 0.9 s4 -> 1


def test_critic_loss_mse_hand_computed():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])  # (E=2, B=2)
    y = torch.tensor([2.0, 2.0])
    loss, per_sample, td = losses.critic_loss(q, y, "mse", weights=torch.tensor([1.0, 0.5]))
    # member 1: mean(1*1, 0.5*0) = 0.5; member 2: mean(1*4, 0.5*4) = 3
    torch.testing.assert_close(loss, torch.tensor(3.5))
    torch.testing.assert_close(per_sample, torch.tensor([2.5, 2.0]))
    torch.testing.assert_close(td, torch.tensor([[1.0, 0.0], [2.0, -2.0]]))
    torch.testing.assert_close(losses.priority(per_sample, td, "mse"), torch.tensor([1.5, 1.0]))


def test_critic_loss_cross_entropy_hand_computed():
    logits = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([1.0, 0.25])
    loss, per_sample, _ = losses.critic_loss(logits, y, "cross_entropy")
    p = torch.sigmoid(torch.tensor(2.0))
    expected = torch.stack([-torch.log(torch.tensor(0.5)), -(0.25 * torch.log(p) + 0.75 * torch.log(1 - p))])
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(loss, expected.mean())
    assert torch.equal(losses.priority(per_sample, None, "cross_entropy"), per_sample)
    with pytest.raises(ValueError, match="unknown QT-Opt loss"):
        losses.critic_loss(logits, y, "hinge")


def test_tile_repeats_each_state_consecutively():
    f = torch.arange(6.0).reshape(3, 2)
    torch.testing.assert_close(tile(f, 2), torch.tensor([[0.0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]))
    assert tile(torch.zeros(2, 3, 4), 5).shape == (2, 15, 4)  # (E, B, F) -> (E, B*N, F)


# ----------------------------------------------------------------------------- the agent


def qtopt_config(**agent):
    return config_from_dict({"algo": "qtopt", "env": {"id": "gym:Pendulum-v1"},
                             "agent": {"q_hidden": [32, 32], "batch_size": 32, "cem_samples": 16, "cem_elites": 3,
                                       **agent},
                             "replay": {"prioritized": True}})


class Spec:
    observation = type("S", (), {"shape": (3,), "dtype": np.float32})()
    action_dim = 2


def filled_replay(n=200, seed=0):
    replay = make_replay(1000, (3,), 2, prioritized=True, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        replay.add({"obs": rng.standard_normal(3), "action": rng.uniform(-1, 1, 2),
                    "reward": rng.uniform(0, 1), "discount": rng.choice([0.0, 0.9]),
                    "next_obs": rng.standard_normal(3)})
    return replay


def test_agent_has_the_interface_the_loop_workers_and_export_use():
    agent = make_agent(qtopt_config(epsilon=0.0), Spec())
    assert isinstance(agent, QTOptAgent)
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    action = agent.act(obs)
    assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    np.testing.assert_array_equal(agent.act(obs), action)  # deterministic without exploration
    # act(explore=False) is exactly the exported module's output.
    with torch.no_grad():
        np.testing.assert_array_equal(agent.policy()(torch.as_tensor(obs)[None])[0].numpy(), action)
    agent.noise.sigma = 0.3  # what distributed actor workers do
    assert not np.array_equal(agent.act(obs, explore=True), action)
    agent.reset_noise()
    batch = filled_replay().sample(32)
    metrics = agent.update(batch)
    assert {"critic_loss", "q_mean", "priority"} <= metrics.keys()
    assert metrics["priority"].shape == (32,) and (metrics["priority"] >= 0).all()
    assert agent.num_updates == 1


def test_epsilon_greedy_takes_uniform_actions_without_cem():
    agent = make_agent(qtopt_config(epsilon=1.0), Spec())
    agent._policy = None  # a uniform step must not need the CEM policy at all
    actions = np.stack([agent.act(np.zeros(3, np.float32), explore=True) for _ in range(500)])
    assert np.abs(actions).max() <= 1 and abs(actions.mean()) < 0.1 and actions.std() > 0.5


def test_update_reduces_the_loss_on_a_fixed_batch():
    agent = make_agent(qtopt_config(lr=1e-3), Spec())
    batch = filled_replay().sample(32)
    cem_noise = agent.cem.sample_noise(32, torch.Generator().manual_seed(0))

    def loss():
        with torch.no_grad():
            return agent._critic_loss(batch.obs, batch.action, batch.reward, batch.discount, batch.next_obs,
                                      cem_noise, None)[0].item()

    before = loss()
    for _ in range(20):
        agent.update(batch)
    assert loss() < 0.5 * before


def test_targets_get_no_gradient_and_move_by_polyak_averaging():
    agent = make_agent(qtopt_config(tau=0.1), Spec())
    assert not any(p.requires_grad for p in agent.q_target.parameters())
    online0 = [p.detach().clone() for p in agent.q.parameters()]
    target0 = [p.detach().clone() for p in agent.q_target.parameters()]
    agent.update(filled_replay().sample(32))
    for t0, t1, p1 in zip(target0, agent.q_target.parameters(), agent.q.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * p1)
    assert any(not torch.equal(a, b) for a, b in zip(online0, agent.q.parameters()))


def test_updates_are_reproducible_and_state_round_trips_through_weights_only_load():
    config = qtopt_config()
    a, b = make_agent(config, Spec()), make_agent(config, Spec())
    replay_a, replay_b = filled_replay(seed=1), filled_replay(seed=1)
    for _ in range(3):
        ma, mb = a.update(replay_a.sample(32)), b.update(replay_b.sample(32))
        assert torch.equal(ma["critic_loss"], mb["critic_loss"])
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    c = make_agent(qtopt_config(), Spec())
    c.load_state_dict(torch.load(buffer, weights_only=True))
    batch = replay_a.sample(32)
    assert torch.equal(a.update(batch)["critic_loss"], c.update(batch)["critic_loss"])  # same generator state too
    # The policy file alone reproduces acting.
    d = make_agent(qtopt_config(), Spec())
    d.load_policy_state_dict(copy.deepcopy(a.policy_state_dict()))
    obs = np.ones(3, np.float32)
    np.testing.assert_array_equal(d.act(obs), a.act(obs))


def test_bad_combinations_are_config_errors():
    with pytest.raises(ConfigError, match=r"agent.cem_elites \(20\) must be <= agent.cem_samples \(16\)"):
        qtopt_config(cem_elites=20)
    with pytest.raises(ConfigError, match="agent.loss must be one of mse, cross_entropy"):
        qtopt_config(loss="bce")
    with pytest.raises(ConfigError, match="unknown key 'agent.actor_lr'"):
        qtopt_config(actor_lr=1e-3)  # QT-Opt has no actor


# ----------------------------------------------------------------------------- images


def pixel_spec(state=True):
    spec = {"pixels": type("S", (), {"shape": (3, 24, 24), "dtype": np.dtype(np.uint8)})()}
    if state:
        spec["state"] = type("S", (), {"shape": (4,), "dtype": np.dtype(np.float32)})()
    return spec


def test_pixel_q_network_encodes_each_image_once_and_scores_all_candidates():
    net = PixelQNetwork(pixel_spec(), action_dim=2, hidden=[16], ensemble_size=2, channels=[4, 4], kernel=3,
                        stride=2, features=8)
    calls = []
    net.convs[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    obs = torch.cat([torch.randint(0, 256, (5, 3 * 24 * 24)).float(), torch.randn(5, 4)], dim=1)
    features = net.encode(obs)
    assert features.shape == (2, 5, 8 + 4)  # (E, B, image features + state)
    scores = net.score_candidates(features, torch.rand(5, 7, 2) * 2 - 1, member=0)
    assert scores.shape == (5, 7) and calls == [5]  # 35 pairs scored, 5 images encoded
    assert net(obs, torch.zeros(5, 2)).shape == (2, 5)
    # member i of the ensemble is the i-th row of the joint evaluation
    torch.testing.assert_close(net(obs, torch.zeros(5, 2), member=1), net(obs, torch.zeros(5, 2))[1])
    with pytest.raises(ValueError, match="smaller than the kernel"):
        PixelQNetwork(pixel_spec(), 2, [16], 2, channels=[4, 4, 4, 4], kernel=3, stride=2)


def test_pixel_agent_learns_from_uint8_batches_and_normalizes_only_the_state():
    spec = type("Spec", (), {"observation": pixel_spec(), "action_dim": 2})()
    config = qtopt_config(obs_norm=True, conv_channels=[4, 4], conv_features=8, q_hidden=[16])
    agent = make_agent(config, spec)
    assert agent.normalizer.mean.numel() == 4  # the state part only
    replay = make_replay(100, spec.observation, 2, prioritized=True)
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs = {"pixels": rng.integers(0, 256, (3, 24, 24), dtype=np.uint8), "state": rng.normal(5, 2, 4)}
        agent.observe(obs)
        replay.add({"obs": obs, "action": rng.uniform(-1, 1, 2), "reward": 1.0, "discount": 0.9, "next_obs": obs})
    assert abs(float(agent.normalizer.mean.mean()) - 5) < 1.5
    x = torch.cat([torch.full((1, 3 * 24 * 24), 200.0), torch.full((1, 4), 5.0)], dim=1)
    normalized = agent.normalizer(x)
    assert torch.equal(normalized[:, :-4], x[:, :-4])  # image columns pass through
    assert normalized[:, -4:].abs().max() < 2
    metrics = agent.update(replay.sample(32))
    assert torch.isfinite(metrics["critic_loss"])
    action = agent.act({"pixels": rng.integers(0, 256, (3, 24, 24), dtype=np.uint8), "state": np.zeros(4)})
    assert action.shape == (2,)
