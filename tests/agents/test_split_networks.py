"""Split (parkour) networks: parts join where the config says, the ensemble is exact, every
agent kind trains with them, and bad declarations fail with a clear message."""

import numpy as np
import pytest
import torch

from envs.core import ArraySpec
from rlcontrol.agents import make_agent
from rlcontrol.config import EncoderConfig, config_from_dict
from rlcontrol.errors import ConfigError
from rlcontrol.networks import DeterministicActor, EnsembleCritic, SplitActor, SplitEnsembleCritic
from rlcontrol.networks.split import Conv1dEncoder, part_slices
from rlcontrol.replay import make_replay

OBS = {"proprio": ArraySpec((6,), np.float32), "terrain": ArraySpec((20,), np.float32)}
CONV = {"terrain": EncoderConfig(type="conv1d", hidden=[4, 8], kernel=5, stride=2, join=1)}


def test_part_slices_follow_spec_order():
    assert part_slices(OBS) == {"proprio": (0, 6, (6,)), "terrain": (6, 26, (20,))}


def test_terrain_enters_at_the_declared_layer_in_actor_and_critic():
    actor = SplitActor(OBS, CONV, action_dim=2, hidden=[32, 32])
    critic = SplitEnsembleCritic(OBS, CONV, action_dim=2, hidden=[32, 32], ensemble_size=2)
    # conv: 20 -> (20-5)//2+1 = 8 -> (8-5)//2+1 = 2 positions x 8 channels = 16 features, at layer 1
    assert [layer.in_features for layer in actor.trunk.layers] == [6, 32 + 16, 32]
    assert [layer.in_features for layer in critic.trunk.layers] == [6 + 2, 32 + 16, 32]
    # The first layer never sees the terrain: its pre-activation has no gradient w.r.t. it.
    x = torch.randn(4, 26, requires_grad=True)
    first = actor.trunk.layers[0](x[:, :6])
    (grad,) = torch.autograd.grad(first.sum(), x, allow_unused=True)
    assert grad[:, 6:].abs().sum() == 0
    # ... but the output does depend on it.
    (grad,) = torch.autograd.grad(actor(x).sum(), x)
    assert grad[:, 6:].abs().sum() > 0
    x2 = x.detach().clone()
    x2[:, 6:] += 1.0
    assert not torch.allclose(actor(x.detach()), actor(x2))


def test_join_zero_and_mlp_encoder():
    enc = {"terrain": EncoderConfig(type="mlp", hidden=[10, 5], join=0)}
    actor = SplitActor(OBS, enc, action_dim=3, hidden=[16])
    assert [layer.in_features for layer in actor.trunk.layers] == [6 + 5, 16]
    assert actor(torch.randn(7, 26)).shape == (7, 3)


def test_grouped_conv_ensemble_equals_independent_members():
    enc = Conv1dEncoder(ensemble_size=3, length=20, channels=[4, 2], kernel=3, stride=2)
    x = torch.randn(5, 20)
    out = enc(x)  # (E, B, F)
    assert out.shape == (3, 5, enc.out_dim)
    for member in range(3):
        h = x.unsqueeze(1)
        for layer in enc.layers:
            c_out = layer.out_channels // 3
            c_in = layer.in_channels // 3
            conv = torch.nn.Conv1d(c_in, c_out, layer.kernel_size, stride=layer.stride)
            conv.weight.data = layer.weight.data[member * c_out:(member + 1) * c_out]
            conv.bias.data = layer.bias.data[member * c_out:(member + 1) * c_out]
            h = torch.relu(conv(h))
        torch.testing.assert_close(out[member], h.flatten(1))


def test_critic_member_matches_the_full_ensemble():
    critic = SplitEnsembleCritic(OBS, CONV, action_dim=2, hidden=[16, 16], ensemble_size=2, out_dim=5)
    obs, action = torch.randn(3, 26), torch.randn(3, 2)
    full = critic(obs, action)
    assert full.shape == (2, 3, 5)
    torch.testing.assert_close(critic(obs, action, member=1), full[1])
    assert not torch.allclose(full[0], full[1])  # members are initialised independently


def agent_config(algo, encoders):
    agent = {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "batch_size": 16, "encoders": encoders}
    if algo == "d4pg":
        agent |= {"num_atoms": 11, "v_min": -10.0, "v_max": 10.0}
    return config_from_dict({"algo": algo, "env": {"id": "dmc:cheetah-run", "obs_format": "dict"},
                             "agent": agent, "replay": {"prioritized": algo == "d4pg"}})


class DictSpec:
    observation = OBS
    action_dim = 2


@pytest.mark.parametrize("algo", ["ddpg", "td3", "d4pg"])
def test_every_agent_kind_trains_with_split_networks(algo):
    config = agent_config(algo, {"terrain": {"type": "conv1d", "hidden": [4], "kernel": 5, "stride": 2, "join": 1}})
    agent = make_agent(config, DictSpec())
    assert isinstance(agent.actor, SplitActor) and isinstance(agent.critic, SplitEnsembleCritic)
    replay = make_replay(100, OBS, 2, prioritized=config.replay.prioritized)
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs = {k: rng.standard_normal(s.shape).astype(np.float32) for k, s in OBS.items()}
        replay.add({"obs": obs, "action": rng.uniform(-1, 1, 2), "reward": 1.0, "discount": 0.99, "next_obs": obs})
    before = {name: p.detach().clone() for name, p in agent.actor.named_parameters()}
    before |= {"critic." + name: p.detach().clone() for name, p in agent.critic.named_parameters()}
    for _ in range(4):
        agent.update(replay.sample(16))
    after = dict(agent.actor.named_parameters()) | {"critic." + n: p for n, p in agent.critic.named_parameters()}
    # Gradients reach the terrain encoders and the trunks of both networks.
    for name in ("trunk.encoders.0.layers.0.weight", "trunk.layers.0.weight",
                 "critic.trunk.encoders.0.layers.0.weight", "critic.trunk.layers.1.weight"):
        assert not torch.equal(before[name], after[name]), name
    assert agent.act({k: np.zeros(s.shape, np.float32) for k, s in OBS.items()}).shape == (2,)


def test_flat_is_the_default():
    agent = make_agent(agent_config("td3", {}), DictSpec())
    assert isinstance(agent.actor, DeterministicActor) and isinstance(agent.critic, EnsembleCritic)


@pytest.mark.parametrize("encoders, message", [
    ({"height": {"type": "mlp"}}, r"parts \['height'\].*its parts: \['proprio', 'terrain'\]"),
    ({"terrain": {"type": "mlp", "join": 3}}, r"join is 3.*only 2 hidden"),
    ({"terrain": {"type": "conv1d", "hidden": [4, 4, 4], "kernel": 5, "stride": 2}}, "shorter than the kernel"),
    ({"proprio": {"join": 1}, "terrain": {"join": 1}}, "nothing enters the trunk's first layer"),
])
def test_bad_declarations_are_config_errors(encoders, message):
    with pytest.raises(ConfigError, match=message):
        make_agent(agent_config("td3", encoders), DictSpec())


def test_split_networks_need_dict_observations():
    class FlatSpec:
        observation = ArraySpec((26,), np.float32)
        action_dim = 2
    with pytest.raises(ConfigError, match="obs_format: dict"):
        make_agent(agent_config("td3", {"terrain": {}}), FlatSpec())
