"""Live fine-tuning without ROS: the node's transition recorder (message stream -> transition log,
intervention labels) and the learner (log -> replay -> updates -> exported policy + probe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import envs
from envs.core import scale_action
from rlcontrol.replay.transition_log import TransitionLog, TransitionSchema, read_log
from ros_nodes.finetune_node import ReorderBuffer, TransitionRecorder
from sim2real.finetune import FinetuneSettings, LiveLearner

ros = pytest.importorskip("rclpy")  # finetune_node imports rclpy at module level


def robot_messages(env, policy, episodes: int, seed: int = 0):
    """What ros_nodes.sim_robot publishes, in its publication order (see ros_nodes.topics)."""
    spec = env.spec
    names = [(name, int(np.prod(shape))) for name, shape in spec.obs_layout]

    def components(obs):
        out, i = [], 0
        for name, size in names:
            out.append(("obs", (name, obs[i:i + size].tolist())))
            i += size
        return out

    for episode in range(episodes):
        obs = env.reset(seed=seed + episode)
        yield ("episode", {"event": "start", "episode": episode})
        yield from components(obs)
        ret = 0.0
        while True:
            action = policy(obs)
            result = env.step(action)
            ret += result.reward
            yield ("applied_command", scale_action(action, spec.action_low, spec.action_high).tolist())
            yield ("reward", float(result.reward))
            yield from components(result.obs)
            obs = result.obs
            if result.terminated or result.truncated:
                yield ("episode", {"event": "end", "episode": episode, "return": ret,
                                   "terminated": bool(result.terminated), "truncated": bool(result.truncated)})
                break


@pytest.fixture
def cartpole():
    env = envs.make("dmc:cartpole-balance", seed=0, action_repeat=4, max_episode_steps=50)
    yield env
    env.close()


def open_log(tmp_path, spec):
    schema = TransitionSchema.for_transitions(tuple(spec.observation.shape), spec.action_dim, intervention=True)
    return TransitionLog.open(tmp_path / "log", schema, fsync="none")


def record_random_episodes(tmp_path, env, seed: int, episodes: int = 3) -> None:
    """The node's recorder fed `episodes` episodes of uniform random actions, into tmp_path/log."""
    spec = env.spec
    log = open_log(tmp_path, spec)
    recorder = TransitionRecorder(log, [n for n, _ in spec.obs_layout], spec.action_low, spec.action_high)
    rng = np.random.default_rng(seed)
    for kind, payload in robot_messages(env, lambda o: rng.uniform(-1, 1, spec.action_dim).astype(np.float32),
                                        episodes):
        recorder.feed(kind, payload)
    log.close()


def test_recorder_logs_exact_transitions_with_episode_ends(tmp_path, cartpole):
    spec = cartpole.spec
    rng = np.random.default_rng(0)
    log = open_log(tmp_path, spec)
    recorder = TransitionRecorder(log, [n for n, _ in spec.obs_layout], spec.action_low, spec.action_high)
    for kind, payload in robot_messages(cartpole, lambda o: rng.uniform(-1, 1, spec.action_dim).astype(np.float32), 2):
        recorder.feed(kind, payload)
    log.close()
    records = list(read_log(tmp_path / "log"))
    assert len(records) == 100 and recorder.logged == 100 and recorder.dropped == 0
    ends = [r for r in records if r.truncated]
    assert len(ends) == 2 and records[49].truncated and records[99].truncated  # the 50-step time limit
    assert records[1].episode == records[0].episode and records[1].step == records[0].step + 1
    assert records[50].episode != records[49].episode
    np.testing.assert_allclose(records[0].next_obs, records[1].obs)
    assert not any(r.intervention for r in records)


@pytest.mark.parametrize("offset, policy_steps", [(0, 20), (1, 21)])
def test_estop_labels_the_last_policy_step_and_marks_the_rest_interventions(tmp_path, cartpole, offset, policy_steps):
    spec = cartpole.spec
    log = open_log(tmp_path, spec)
    recorder = TransitionRecorder(log, [n for n, _ in spec.obs_layout], spec.action_low, spec.action_high,
                                  intervention_label="terminated")
    messages = list(robot_messages(cartpole, lambda o: np.zeros(spec.action_dim, np.float32), 1))
    commands = [i for i, (kind, _) in enumerate(messages) if kind == "applied_command"]
    # offset 0: the e-stop arrives between the robot's 20th and 21st steps; 1: during the 21st
    # (after its command, before its reward and observation), which the policy still commanded.
    stop_at = commands[20] + offset
    for i, (kind, payload) in enumerate(messages):
        if i == stop_at:
            recorder.feed("estop", True)
        recorder.feed(kind, payload)
    log.close()
    records = list(read_log(tmp_path / "log"))
    policy = [r for r in records if not r.intervention]
    assert len(policy) == policy_steps and policy == records[:policy_steps]
    assert policy[-1].terminated and not any(r.terminated for r in policy[:-1])
    assert len(records) == 50 and all(r.intervention for r in records[policy_steps:])
    assert records[policy_steps].episode != records[policy_steps - 1].episode  # the safety layer's: another segment


def test_reorder_buffer_releases_in_stamp_order():
    buffer = ReorderBuffer()
    for stamp, kind in [(30, "c"), (10, "a"), (20, "b"), (50, "e")]:
        buffer.push(stamp, kind, None)
    assert [k for k, _ in buffer.pop_ready(35)] == ["a", "b", "c"]
    assert [k for k, _ in buffer.pop_ready(None)] == ["e"]


@pytest.fixture(scope="module", params=["td3", "sac"])
def small_run(tmp_path_factory, request):
    """A TD3 (or SAC, at 2 updates per step) cartpole-balance run with a checkpoint (a few hundred
    steps: only the plumbing matters)."""
    from rlcontrol.config import load_config
    from rlcontrol.training.loop import train

    run = tmp_path_factory.mktemp("run")
    sac = ["algo=sac", "train.updates_per_step=2", "agent.critic_layer_norm=true"] if request.param == "sac" else []
    config = load_config("configs/td3_cartpole_balance.yaml", overrides=[
        "train.total_env_steps=1200", "train.learning_starts=400", "train.checkpoint_every=800",
        "train.eval_every=0", "agent.batch_size=32", *sac])
    train(config, run, progress=False)
    return run


def test_learner_trains_on_the_log_and_exports_a_policy_the_probe_confirms(tmp_path, small_run, cartpole):
    from rlcontrol.deploy import runtime

    record_random_episodes(tmp_path, cartpole, seed=1)
    settings = FinetuneSettings(learning_starts=100, export_every=40, chunk=10, probe_size=8)
    learner = LiveLearner(small_run, tmp_path / "log", tmp_path / "out", settings)
    before = {k: v.clone() for k, v in learner.agent.actor.state_dict().items()}
    updates = [learner.run_once() for _ in range(20)]
    exported = [u for u in updates if u is not None]
    update = exported[0] if exported else None
    assert learner.transitions == 150 and learner.updates == 50  # ratio 1 after learning_starts 100
    assert len(exported) == 1 and update["version"] == 1
    changed = any(not np.allclose(before[k], v) for k, v in learner.agent.actor.state_dict().items())
    assert changed
    policy = runtime.load(update["path"], expected_sha256=update["sha256"])
    probe = np.asarray(update["probe"]["inputs"]["observation"], np.float32)
    expected = np.asarray(update["probe"]["actions"])
    got = policy.act_batch(probe)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert json.loads((tmp_path / "out" / "finetune.jsonl").read_text().splitlines()[0])["version"] == 1

    # A learner restarted after a kill resumes from its last export (version and updates) and the log.
    again = LiveLearner(small_run, tmp_path / "log", tmp_path / "out", settings)
    assert (again.version, again.updates) == (1, 40)
    again.run_once()
    assert again.transitions == 150
    # It trains only on what the robot logs from now on: the earlier transitions' updates were done.
    assert again.allowed_updates() == 0 and again.updates == 40
    record_random_episodes(tmp_path, cartpole, seed=2)  # 150 more
    for _ in range(20):
        again.run_once()
    assert again.transitions == 300 and again.updates == 40 + 150


def test_policy_averaging_exports_the_polyak_average_and_resumes_it(tmp_path, small_run, cartpole):
    """--policy-averaging r: the pushed policy is avg <- (1 - r) avg + r actor after every update
    (checked against the same recursion done by hand), the actor itself trains on unchanged, and a
    restarted learner goes on from the saved average, not from its actor."""
    from rlcontrol.deploy import runtime

    record_random_episodes(tmp_path, cartpole, seed=2)
    rate = 0.1
    settings = FinetuneSettings(learning_starts=100, export_every=20, chunk=1, probe_size=8, policy_averaging=rate)
    learner = LiveLearner(small_run, tmp_path / "log", tmp_path / "out", settings)
    params = list(learner.agent.actor.parameters())
    expected = [p.detach().clone() for p in params]
    update = None
    while update is None:
        update = learner.run_once()
        for e, p in zip(expected, params):  # the recursion, by hand
            e.mul_(1 - rate).add_(rate * p.detach())
    assert learner.updates == 20
    assert any(not torch.allclose(e, p) for e, p in zip(expected, params))  # the average lags the actor
    for got, e in zip(learner.policy_average.average, expected):
        torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-6)
    actor_now = [p.detach().clone() for p in params]
    # The exported graph is the average's policy: the probe (made with the swapped-in average) and a
    # fresh forward pass of the averaged weights agree with the ONNX file; the actor is untouched.
    policy = runtime.load(update["path"], expected_sha256=update["sha256"])
    probe = np.asarray(update["probe"]["inputs"]["observation"], np.float32)
    np.testing.assert_allclose(policy.act_batch(probe), np.asarray(update["probe"]["actions"]), atol=1e-4)
    with learner.policy_average.swapped_in():
        averaged = [p.detach().clone() for p in params]
    for a, e in zip(averaged, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    for p, own in zip(params, actor_now):
        assert torch.equal(p.detach(), own)
    again = LiveLearner(small_run, tmp_path / "log", tmp_path / "out", settings)
    for got, e in zip(again.policy_average.average, learner.policy_average.average):
        assert torch.equal(got, e)
    with pytest.raises(Exception, match="policy_averaging"):
        FinetuneSettings(policy_averaging=1.5)


def test_disk_full_while_recording_is_counted_and_loses_nothing_earlier(tiny_filesystem, cartpole):
    """The node's append path when the robot's disk fills: the recorder counts the failure, keeps
    the log's one-line error, raises nothing into the ROS callback, leaves every earlier record
    intact, and records again once space is freed."""
    spec = cartpole.spec
    ballast = tiny_filesystem / "ballast"
    ballast.write_bytes(b"\0" * 200 * 1024)  # leave ~56 KiB of the 256 KiB for the log
    schema = TransitionSchema.for_transitions(tuple(spec.observation.shape), spec.action_dim, intervention=True)
    log = TransitionLog.open(tiny_filesystem / "log", schema, fsync="every")
    recorder = TransitionRecorder(log, [n for n, _ in spec.obs_layout], spec.action_low, spec.action_high)
    rng = np.random.default_rng(0)
    policy = lambda o: rng.uniform(-1, 1, spec.action_dim).astype(np.float32)  # noqa: E731
    episodes = 0
    while recorder.append_failures == 0:
        assert episodes < 200, "the tiny disk never filled"
        for kind, payload in robot_messages(cartpole, policy, 1, seed=episodes):
            recorder.feed(kind, payload)
        episodes += 1
    full_at = recorder.logged
    assert recorder.last_error.startswith("replay log: disk full while ") and "\n" not in recorder.last_error
    assert f"records up to seq {full_at - 1} are intact" in recorder.last_error
    for kind, payload in robot_messages(cartpole, policy, 1, seed=episodes):  # still full: only more failures
        recorder.feed(kind, payload)
    assert recorder.logged == full_at and recorder.append_failures > 1
    ballast.unlink()
    for kind, payload in robot_messages(cartpole, policy, 1, seed=episodes + 1):  # space again: recording resumes
        recorder.feed(kind, payload)
    log.close()
    records = list(read_log(tiny_filesystem / "log"))
    assert recorder.logged == full_at + 50 and len(records) == recorder.logged
    assert [r.seq for r in records] == list(range(len(records)))
    assert records[-1].truncated and records[-50].step == 0
