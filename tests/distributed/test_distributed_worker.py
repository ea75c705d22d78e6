"""Actor workers without Ray: chunks, n-step semantics across episode ends, noise scales, weights.

The in-process collector (distributed.num_actors: 1) is the classic loop; tests/training
(resume determinism, outputs, learning) cover it. Ray itself is tested in test_distributed_ray.py.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from rlcontrol.agents import make_agent
from rlcontrol.cli import main
from rlcontrol.config import config_from_dict
from rlcontrol.distributed import ActorWorker, noise_scales, worker_seed
from rlcontrol.distributed.worker import numpy_policy_state, stack_transitions
from rlcontrol.errors import UserError
from rlcontrol.training import builders
from rlcontrol.training.evaluate import episode_seed

GAMMA = 0.9
EPISODE = 7  # agent steps per episode (Pendulum only truncates: every window bootstraps)


def make_config(**distributed):
    return config_from_dict({
        "algo": "td3", "seed": 5,
        "env": {"id": "gym:Pendulum-v1", "max_episode_steps": EPISODE},
        "agent": {"actor_hidden": [16], "critic_hidden": [16], "gamma": GAMMA, "exploration_sigma": 0.2,
                  "obs_norm": True},
        "replay": {"n_step": 3},
        "distributed": {"num_actors": 3, **distributed},
    })


def reference_episode(config, seed: int, episode: int, actions: np.ndarray):
    """Replay `actions` in a fresh env: (observations o_0..o_T, rewards r_0..r_{T-1})."""
    env = builders.make_env(config.env, seed)
    obs = [env.reset(seed=episode_seed(seed, 0, episode))]
    rewards = []
    for action in actions:
        result = env.step(action)
        obs.append(result.obs)
        rewards.append(result.reward)
    return np.array(obs), np.array(rewards)


def test_chunk_holds_n_step_transitions_with_episode_boundaries():
    config = make_config()
    worker = ActorWorker(config, index=1, noise_scale=1.0)
    chunk = worker.collect(20, learning_started=False)

    assert chunk["worker"] == 1 and chunk["agent_steps"] == 20 and chunk["env_steps"] == 20
    assert chunk["version"] == -1  # no weights published yet
    # 20 steps = two whole 7-step episodes + 6 steps of a third, whose last 2 wait for their window.
    assert len(chunk["episode_returns"]) == 2
    tr = chunk["transitions"]
    assert set(tr) == {"obs", "action", "reward", "discount", "next_obs"}
    assert tr["obs"].shape == tr["next_obs"].shape == (18, 3) and tr["action"].shape == (18, 1)
    assert tr["reward"].shape == tr["discount"].shape == (18,)
    assert tr["action"].dtype == np.float32 and np.all(np.abs(tr["action"]) <= 1)
    # obs_norm: every observation seen, episode starts included (3 resets + 20 steps).
    assert chunk["observed"].shape == (23, 3)

    g = GAMMA
    per_episode = [g**3] * (EPISODE - 2) + [g**2, g]  # windows shrink at the (truncating) episode end
    np.testing.assert_allclose(tr["discount"], per_episode * 2 + [g**3] * 4)
    for e in range(2):
        rows = slice(e * EPISODE, (e + 1) * EPISODE)
        obs, rewards = reference_episode(config, worker.seed, e, tr["action"][rows])
        np.testing.assert_allclose(chunk["episode_returns"][e], rewards.sum(), rtol=1e-6)
        for t in range(EPISODE):
            m = min(3, EPISODE - t)
            expected = sum(g**k * rewards[t + k] for k in range(m))
            np.testing.assert_allclose(tr["reward"][e * EPISODE + t], expected, rtol=1e-6)
            np.testing.assert_allclose(tr["obs"][e * EPISODE + t], obs[t], rtol=1e-6)
            np.testing.assert_allclose(tr["next_obs"][e * EPISODE + t], obs[t + m], rtol=1e-6)

    # The third episode goes on in the next chunk: its pending window is not lost.
    nxt = worker.collect(3, learning_started=False)
    assert nxt["transitions"]["reward"].shape == (3,) and nxt["episode_returns"]
    third = np.concatenate([tr["action"][14:], nxt["transitions"]["action"]])
    obs, _ = reference_episode(config, worker.seed, 2, third)
    np.testing.assert_allclose(nxt["transitions"]["obs"], obs[4:7], rtol=1e-6)


def test_action_repeat_counts_env_steps():
    config = make_config()
    config.env.action_repeat = 2
    chunk = ActorWorker(config, index=0).collect(5, learning_started=False)
    assert chunk["agent_steps"] == 5 and chunk["env_steps"] == 10


def test_noise_scales_spread_and_differ_per_worker():
    assert noise_scales(make_config(), 1) == [1.0]
    np.testing.assert_allclose(noise_scales(make_config()), [0.5, 1.0, 2.0])
    np.testing.assert_allclose(noise_scales(make_config(num_actors=5)), 0.5 * 4 ** (np.arange(5) / 4))
    assert noise_scales(make_config(noise_scales=[0.1, 1.0, 3.0])) == [0.1, 1.0, 3.0]
    with pytest.raises(UserError, match="noise_scales has 2 entries for 3 actors"):
        noise_scales(make_config(noise_scales=[1.0, 2.0]))

    config = make_config()
    workers = [ActorWorker(config, i, s) for i, s in enumerate(noise_scales(config))]
    np.testing.assert_allclose([w.agent.noise.sigma for w in workers], [0.1, 0.2, 0.4])
    assert len({w.seed for w in workers}) == 3
    assert worker_seed(5, 0) != worker_seed(5, 0, start_env_steps=1000)  # a resumed run's workers play new episodes
    # Different seeds, different episodes: the first observations differ.
    firsts = [w.collect(1, learning_started=False)["observed"][0] for w in workers]
    assert len({f.tobytes() for f in firsts}) == 3


def learner_state(config, seed):
    learner_config = config_from_dict({**config.to_dict(), "seed": seed})
    learner = make_agent(learner_config, builders.make_env(config.env, 0).spec)
    learner.normalizer.update(torch.randn(50, 3) * 3 + 1)
    return learner


def test_weights_apply_at_the_next_chunk_boundary_and_report_their_version():
    config = make_config(noise_scales=[0.0, 1.0, 1.0])  # worker 0 acts greedily: actions = mu(s)
    worker = ActorWorker(config, index=0, noise_scale=0.0)
    learner = learner_state(config, seed=123)
    before = [p.clone() for p in worker.agent.actor.parameters()]

    worker.set_weights(3, numpy_policy_state(learner.policy_state_dict()))
    assert worker.version == -1  # only stored: acting is not interrupted
    assert all(torch.equal(a, b) for a, b in zip(before, worker.agent.actor.parameters()))
    worker.set_weights(2, numpy_policy_state(learner_state(config, seed=7).policy_state_dict()))  # older: ignored

    chunk = worker.collect(5, learning_started=True)
    assert chunk["version"] == 3 and worker.version == 3
    for a, b in zip(learner.actor.parameters(), worker.agent.actor.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(worker.agent.normalizer.mean, learner.normalizer.mean)
    # The whole chunk was acted with version 3: its actions are the learner's greedy actions.
    tr = chunk["transitions"]
    for obs, action in zip(tr["obs"], tr["action"]):
        np.testing.assert_allclose(action, learner.act(obs, explore=False), atol=1e-6)


def test_uniform_actions_until_the_learner_says_learning_started():
    config = make_config()
    worker = ActorWorker(config, index=0, noise_scale=0.0)
    chunk = worker.collect(40, learning_started=False)
    greedy = np.stack([worker.agent.act(o) for o in chunk["transitions"]["obs"]])
    assert not np.allclose(chunk["transitions"]["action"], greedy)
    assert chunk["transitions"]["action"].std() > 0.3  # uniform on [-1, 1]: std 0.58


def test_stack_transitions_keeps_dict_observations():
    tr = [{"obs": {"a": np.ones(2), "b": np.zeros(1)}, "action": np.zeros(1, np.float32), "reward": 1.0,
           "discount": 0.9, "next_obs": {"a": np.ones(2), "b": np.ones(1)}} for _ in range(4)]
    stacked = stack_transitions(tr)
    assert stacked["obs"]["a"].shape == (4, 2) and stacked["next_obs"]["b"].shape == (4, 1)
    assert stack_transitions([]) is None


def test_in_process_run_reports_one_actor_and_never_imports_ray(tmp_path):
    code = f"""
import sys
from rlcontrol.config import config_from_dict
from rlcontrol.training.loop import train
cfg = config_from_dict({{"algo": "td3", "env": {{"id": "gym:Pendulum-v1"}},
    "agent": {{"actor_hidden": [16], "critic_hidden": [16], "batch_size": 32}},
    "train": {{"total_env_steps": 300, "learning_starts": 100, "eval_episodes": 1, "video_frames": 0, "threads": 1}}}})
s = train(cfg, {str(tmp_path / "run")!r}, progress=False)
assert s["num_actors"] == 1 and s["restarts"] == 0 and s["updates_per_s"] > 0 and s["env_steps"] == 300, s
assert "ray" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: no Ray cluster reachable there"),
    (["--ray-address", "not an address"], "expected HOST:PORT"),
    (["--actors", "3", "--set", "distributed.noise_scales=[1.0]"], "noise_scales has 1 entries for 3 actors"),
    (["--actors", "0"], "expected a number >= 1"),
])
def test_bad_distributed_flags_are_one_error_line_and_write_nothing(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    assert main(["train", "configs/td3_pendulum.yaml", "--run-dir", str(run), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlcontrol: error: ") and message in err[0], err
    assert not run.exists()


def test_worker_runs_a_qtopt_agent_with_published_weights():
    """QT-Opt has no actor: the worker acts with the CEM policy, scales its Gaussian noise and
    applies the learner's policy state (Q network, normalizer, CEM noise buffer)."""
    config = config_from_dict({"algo": "qtopt", "seed": 5, "env": {"id": "gym:Pendulum-v1", "max_episode_steps": 7},
                               "agent": {"q_hidden": [16], "exploration_sigma": 0.2, "epsilon": 0.0,
                                         "obs_norm": True, "cem_samples": 8, "cem_elites": 2},
                               "distributed": {"num_actors": 2}})
    worker = ActorWorker(config, index=0, noise_scale=2.0)
    assert worker.agent.noise.sigma == pytest.approx(0.4)
    env = builders.make_env(config.env, 0)
    learner = make_agent(config, env.spec)
    env.close()
    learner.normalizer.update(torch.randn(50, 3) * 4 + 1)
    worker.set_weights(0, numpy_policy_state(learner.policy_state_dict()))
    chunk = worker.collect(10, learning_started=True)
    assert chunk["version"] == 0 and chunk["transitions"]["action"].shape == (10, 1)
    obs = np.array([0.3, -0.2, 1.0], np.float32)
    worker.agent.noise.sigma = 0.0
    np.testing.assert_array_equal(worker.agent.act(obs, explore=True), learner.act(obs))


def test_sac_workers_scale_their_policy_std_and_take_the_learners_weights():
    """SAC's workers explore by sampling their own Gaussian policy, its std times the worker's scale
    (0: the deterministic tanh(mean), which is then exactly the learner's action)."""
    config = config_from_dict({**make_config().to_dict(), "algo": "sac",
                               "agent": {"actor_hidden": [16], "critic_hidden": [16], "gamma": GAMMA,
                                         "obs_norm": True}})
    workers = [ActorWorker(config, i, s) for i, s in enumerate(noise_scales(config))]
    np.testing.assert_allclose([w.agent.noise.sigma for w in workers], [0.5, 1.0, 2.0])
    greedy = ActorWorker(config, index=0, noise_scale=0.0)
    learner = learner_state(config, seed=123)
    greedy.set_weights(1, numpy_policy_state(learner.policy_state_dict()))
    tr = greedy.collect(5, learning_started=True)["transitions"]
    for obs, action in zip(tr["obs"], tr["action"]):
        np.testing.assert_allclose(action, learner.act(obs, explore=False), atol=1e-6)
    sampled = workers[2].collect(5, learning_started=True)["transitions"]["action"]
    assert np.all(np.abs(sampled) <= 1.0)
