"""ONNX export: graph contents, metadata, dynamic batch and PyTorch parity for every agent kind."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

from envs.core import scale_action
from rlcontrol.config import load_config
from rlcontrol.deploy import runtime
from rlcontrol.deploy.export import (
    PARITY_TOLERANCE,
    _float32_rounding,
    check_parity,
    export_run,
    random_observations,
    torch_physical_actions,
)
from rlcontrol.training.evaluate_run import load_policy_agent

# Every agent kind in main, with flat and dict observations, with and without running
# normalization, and with physical bounds other than [-1, 1] (Pendulum: +-2).
# Split networks (parkour style): velocity through its own MLP or 1-D conv, joining later.
MLP_SPLIT = {"velocity": {"type": "mlp", "hidden": [16], "join": 1}}
CONV_SPLIT = {"velocity": {"type": "conv1d", "hidden": [4, 4], "kernel": 3, "stride": 1, "join": 2}}
CASES = [
    ("td3", "dmc:cartpole-swingup", "flat", True, None),
    ("ddpg", "dmc:cartpole-swingup", "flat", True, None),
    ("td3", "dmc:cheetah-run", "dict", True, None),
    ("ddpg", "gym:Pendulum-v1", "flat", False, None),
    ("d4pg", "dmc:cartpole-swingup", "flat", True, None),
    ("td3", "dmc:cheetah-run", "dict", True, MLP_SPLIT),
    ("d4pg", "dmc:cheetah-run", "dict", False, CONV_SPLIT),
    # SAC exports its deterministic action tanh(mean): the mean half of the Gaussian head.
    ("sac", "dmc:cartpole-swingup", "flat", True, None),
    ("sac", "dmc:cheetah-run", "dict", True, MLP_SPLIT),
    # QT-Opt: normalizer + Q network + CEM over a fixed noise buffer (1-D and 6-D actions).
    ("qtopt", "dmc:cartpole-swingup", "flat", True, None),
    ("qtopt", "dmc:cheetah-run", "dict", False, None),
]


@pytest.mark.parametrize("algo,env_id,obs_format,obs_norm,encoders", CASES)
def test_parity_on_1000_random_and_1000_recorded_observations(tmp_path, make_run_dir, algo, env_id, obs_format, obs_norm,
                                                              encoders):
    run_dir = make_run_dir(algo, env_id, obs_format, obs_norm, encoders=encoders)
    out = tmp_path / "policy.onnx"
    summary = export_run(run_dir, out, parity_samples=1000)
    parity = summary["parity"]
    assert parity["samples_per_set"] == 1000
    assert parity["max_abs_diff_random"] <= PARITY_TOLERANCE
    assert parity["max_abs_diff_recorded"] <= PARITY_TOLERANCE
    assert parity["ok"]
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_parity_check_would_catch_a_wrong_graph(td3_export, make_run_dir):
    """The parity measurement is not vacuous: a policy from another seed differs by far more."""
    run_dir, out, _ = td3_export
    other = make_run_dir(seed=1)
    config, env, agent = load_policy_agent(other)
    obs = random_observations(env.spec.observation, 100, np.random.default_rng(0))
    theirs = torch_physical_actions(agent, env.spec, obs)
    ours = runtime.load(out).act_batch(obs)
    assert np.abs(ours - theirs).max() > 100 * PARITY_TOLERANCE


def test_float32_rounding_exemption_is_narrow(td3_export, make_run_dir):
    """Above 1e-5 a row passes only when onnxruntime is as close to the float64 answer as PyTorch's
    own float32 result is (far outside the training data two correct float32 implementations can
    differ by a little more than 1e-5): an offset in the ONNX output or another policy is not exempt."""
    run_dir, out, _ = td3_export
    config, env, agent = load_policy_agent(run_dir)
    obs = random_observations(env.spec.observation, 50, np.random.default_rng(0))
    reference = torch_physical_actions(agent, env.spec, obs)
    onnx = runtime.load(out).act_batch(obs).copy()
    rows = np.ones(50, dtype=bool)
    # PyTorch's float32 result off by 3e-5 (as rounding far out of distribution can make it), ONNX exact: exempt.
    assert _float32_rounding(agent, env.spec, obs, reference + 3e-5, [onnx], rows).all()
    # ONNX off by 3e-5 while PyTorch is exact to float32: not exempt.
    assert not _float32_rounding(agent, env.spec, obs, reference, [onnx + 3e-5], rows).any()
    # Another policy in the graph, whatever PyTorch's error: not exempt.
    _, other_env, other = load_policy_agent(make_run_dir(seed=1))
    wrong = torch_physical_actions(other, other_env.spec, obs)
    assert not _float32_rounding(agent, env.spec, obs, reference + 3e-5, [wrong], rows).any()


def test_graph_has_normalization_and_bounds_inside(tmp_path, make_run_dir):
    """Raw observations in, physical actions out: Pendulum's [-2, 2] bounds are reached."""
    run_dir = make_run_dir("td3", "gym:Pendulum-v1", "flat", obs_norm=True)
    out = tmp_path / "p.onnx"
    export_run(run_dir, out, parity_samples=50)
    policy = runtime.load(out)
    config, env, agent = load_policy_agent(run_dir)
    # Huge observations saturate tanh, so the output sits on the physical bounds.
    actions = policy.act_batch(np.full((4, 3), 1e3, np.float32) * np.array([[1], [-1], [1], [-1]], np.float32))
    assert np.all(np.abs(actions) <= 2.0 + 1e-6) and np.abs(actions).max() > 1.0
    raw = np.random.default_rng(3).normal(2.0, 5.0, size=(1, 3)).astype(np.float32)
    expected = scale_action(agent.act(raw[0]), env.spec.action_low, env.spec.action_high)
    np.testing.assert_allclose(policy.act(raw[0]), expected, atol=PARITY_TOLERANCE)


def test_dict_observations_become_named_inputs_with_dynamic_batch(tmp_path, make_run_dir):
    run_dir = make_run_dir("td3", "dmc:cheetah-run", "dict", True)
    out = tmp_path / "p.onnx"
    export_run(run_dir, out, parity_samples=20)
    model = onnx.load(out)
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["position", "velocity"]
    for name, size in (("position", 8), ("velocity", 9)):
        dims = inputs[name].type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
        assert dims[1].dim_value == size
    policy = runtime.load(out)
    for batch in (1, 7, 64):
        obs = {"position": np.zeros((batch, 8), np.float32), "velocity": np.ones((batch, 9), np.float32)}
        assert policy.act_batch(obs).shape == (batch, 6)


def test_metadata_records_the_contract(td3_export):
    run_dir, out, _ = td3_export
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    meta = runtime.load(out).metadata
    config = load_config(run_dir / "config.yaml")
    assert props["rlcontrol.format"] == "rlcontrol-policy/1"
    assert meta.algorithm == "td3" and meta.env_id == "dmc:cartpole-swingup"
    assert meta.action_names == ("slide",)
    assert meta.action_low == (-1.0,) and meta.action_high == (1.0,)
    assert meta.control_period == pytest.approx(0.01)
    assert meta.config_sha256 == config.digest()
    assert meta.checkpoint_sha256 == hashlib.sha256((run_dir / "policy.pt").read_bytes()).hexdigest()
    assert meta.version and meta.obs_normalization == "in-graph"
    (obs,) = meta.observations
    assert (obs.name, obs.shape, obs.dtype, obs.history) == ("observation", (5,), "float32", 1)
    assert obs.components == (("position", (3,)), ("velocity", (2,)))
    assert json.loads(props["rlcontrol.actions"])["output"] == "action"
    # Shipped to robots and shared: the run's name, never the training machine's paths.
    assert meta.extra["source_run"] == run_dir.resolve().name
    assert str(run_dir.resolve().parent) not in json.dumps(props)


def test_export_is_atomic_and_leaves_no_temp_files(td3_export):
    _, out, summary = td3_export
    assert hashlib.sha256(out.read_bytes()).hexdigest() == summary["sha256"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_qtopt_pixel_policy_takes_uint8_images(tmp_path, make_run_dir):
    """Image + state observations: the image is a uint8 input, the conv encoder runs in the graph."""
    run_dir = make_run_dir("qtopt", "dmc:cartpole-swingup", "flat", True, hidden=(32, 32),
                           env={"pixels": True, "pixel_size": 32, "kwargs": {"include_state": True}},
                           agent={"conv_channels": [8, 8], "conv_features": 16})
    out = tmp_path / "p.onnx"
    summary = export_run(run_dir, out, parity_samples=200)
    assert summary["parity"]["ok"] and summary["inputs"] == {"pixels": [3, 32, 32], "state": [5]}
    policy = runtime.load(out)
    assert [(o.name, o.dtype) for o in policy.metadata.observations] == [("pixels", "uint8"), ("state", "float32")]
    image = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    action = policy.act({"pixels": image, "state": np.zeros(5, np.float32)})
    assert action.shape == (1,) and np.abs(action).max() <= 1.0
    with pytest.raises(runtime.ObservationError, match="dtype"):
        policy.act({"pixels": image.astype(np.float32), "state": np.zeros(5, np.float32)})


def test_qtopt_graph_has_no_random_ops_and_a_fixed_digest(tmp_path, make_run_dir):
    """The CEM noise is a buffer baked into the graph: two exports compute the same graph."""
    run_dir = make_run_dir("qtopt", "gym:Pendulum-v1", "flat", True, hidden=(32, 32))
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_run(run_dir, first, parity_samples=100)
    summary = export_run(run_dir, second, parity_samples=100)
    ops = {node.op_type for node in onnx.load(first).graph.node}
    assert "TopK" in ops and not {op for op in ops if "Random" in op or op in ("Multinomial", "Bernoulli")}
    assert runtime.load(first).metadata.graph_sha256 == runtime.load(second).metadata.graph_sha256
    assert runtime.load(first).metadata.algorithm == "qtopt"
    parity = summary["parity"]
    # Argmax ties at float rounding level are counted, never silently passed: a handful at most.
    assert parity["ok"] and parity["near_tie_flips"] <= 0.01 * 200
    _, env, _ = load_policy_agent(run_dir)
    obs = random_observations(env.spec.observation, 64, np.random.default_rng(1))
    np.testing.assert_array_equal(runtime.load(first).act_batch(obs), runtime.load(second).act_batch(obs))
    # The tie allowance is no loophole: another seed's Q network fails the check.
    _, _, other = load_policy_agent(make_run_dir("qtopt", "gym:Pendulum-v1", "flat", False, hidden=(32, 32), seed=1))
    wrong = check_parity(other, env, first, samples=100)
    env.close()
    assert not wrong["ok"] and (wrong["max_abs_diff"] > 1e-3 or wrong["near_tie_flips"] > 2)


# Camera images through image encoders ("Learning to Drive in a Day"): a conv2d stack trained with
# the network, or a frozen pretrained VAE encoder; the image stays a uint8 graph input.
LANE_PIXELS = {"pixels": True, "pixel_size": 32, "kwargs": {"include_state": True}}
CONV2D_IMAGE = {"pixels": {"type": "conv2d", "hidden": [8, 8], "kernel": 3, "stride": 2, "features": 16, "join": 1}}


@pytest.mark.parametrize("algo,encoder", [("td3", "conv2d"), ("ddpg", "vae")])
def test_image_encoder_policies_export_with_uint8_images(tmp_path, make_run_dir, algo, encoder):
    from rlcontrol.vision.vae import VAE, VAEConfig, save_vae

    encoders = CONV2D_IMAGE
    if encoder == "vae":
        vae_path = tmp_path / "vae.safetensors"
        save_vae(VAE(VAEConfig(input_shape=(3, 32, 32), channels=(8, 16), latent_dim=8)), vae_path)
        encoders = {"pixels": {"type": "vae", "vae_path": str(vae_path), "trainable": False, "join": 1}}
    run_dir = make_run_dir(algo, "rlc:lane-following", "dict", True, hidden=(32, 32), encoders=encoders,
                           env=LANE_PIXELS)
    out = tmp_path / "p.onnx"
    summary = export_run(run_dir, out, parity_samples=100)
    parity = summary["parity"]
    assert parity["ok"] and parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert summary["inputs"] == {"pixels": [3, 32, 32], "state": [2]}
    policy = runtime.load(out)
    assert [(o.name, o.dtype) for o in policy.metadata.observations] == [("pixels", "uint8"), ("state", "float32")]
    assert "Conv" in {node.op_type for node in onnx.load(out).graph.node}
    # The image matters: another frame gives another action.
    rng = np.random.default_rng(0)
    state = np.zeros(2, np.float32)
    first, second = (policy.act({"pixels": rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), "state": state}).copy()
                     for _ in range(2))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_layer_norm_actor_exports_with_parity(tmp_path, make_run_dir, algo):
    """agent.actor_layer_norm puts LayerNorm into the exported graph; parity holds as for plain MLPs."""
    run_dir = make_run_dir(algo, "dmc:cheetah-run", "flat", True, agent={"actor_layer_norm": True,
                                                                          "critic_layer_norm": True})
    summary = export_run(run_dir, tmp_path / "policy.onnx", parity_samples=500)
    assert summary["parity"]["ok"], summary["parity"]


def test_parity_is_judged_per_unit_of_action_half_range():
    """float32 rounding grows with the output: a [0, 10] m/s speed command gets 5x the tolerance of
    a steering angle in [-0.5, 0.5] rad (whose half-range is below 1: judged in its own units)."""
    from types import SimpleNamespace

    from rlcontrol.deploy.export import parity_units

    spec = SimpleNamespace(action_low=[-0.5, 0.0, -1.0], action_high=[0.5, 10.0, 1.0])
    assert parity_units(spec).tolist() == [1.0, 5.0, 1.0]
