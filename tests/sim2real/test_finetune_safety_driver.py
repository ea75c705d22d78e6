"""The safety driver of live fine-tuning, without ROS (the ROS path: tests/ros/test_ros_takeover.py):
a takeover ends the episode with a termination, the driver's steps are never learned from, and
"undo last episode" takes an episode out of the learner's replay, also after a restart."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_policies import make_finetune_run

import envs
from rlcontrol.replay.transition_log import TransitionLog, read_log
from sim2real.finetune import FinetuneSettings, LiveLearner

pytest.importorskip("rclpy")

from test_finetune import robot_messages  # noqa: E402

from ros_nodes.finetune_recording import RecordedInputs, TransitionRecorder  # noqa: E402


@pytest.fixture
def cartpole():
    env = envs.make("dmc:cartpole-balance", seed=0, action_repeat=4, max_episode_steps=30)
    yield env
    env.close()


def recorder_for(tmp_path, spec, **kwargs):
    from rlcontrol.replay.log_format import TransitionSchema

    schema = TransitionSchema.for_transitions(tuple(spec.observation.shape), spec.action_dim, intervention=True,
                                              undo=True)
    log = TransitionLog.open(tmp_path / "log", schema, fsync="none")
    return log, TransitionRecorder(log, [n for n, _ in spec.obs_layout], spec.action_low, spec.action_high, **kwargs)


def feed_with(recorder, messages, events: dict[int, list[tuple[str, object]]]):
    """Feed the robot's messages; before the k-th applied_command, also the events listed for k."""
    commands = 0
    for kind, payload in messages:
        if kind == "applied_command":
            for event in events.get(commands, []):
                recorder.feed(*event)
            commands += 1
        recorder.feed(kind, payload)


@pytest.mark.parametrize("label", ["terminated", "truncated"])
def test_a_takeover_ends_the_episode_with_a_termination_and_the_driver_is_not_learned_from(tmp_path, cartpole,
                                                                                           label):
    spec = cartpole.spec
    rng = np.random.default_rng(0)
    log, recorder = recorder_for(tmp_path, spec, intervention_label=label)
    messages = robot_messages(cartpole, lambda o: rng.uniform(-1, 1, 1).astype(np.float32), 2)
    # The driver takes over before the robot's 10th command of episode 0 and hands back before the
    # 20th: steps 10-19 are the driver's; the policy starts a new episode at step 20.
    feed_with(recorder, messages, {10: [("takeover", True)], 20: [("takeover", False)]})
    log.close()
    records = list(read_log(tmp_path / "log"))
    # 60 steps; the one in flight at the hand-back (step 19, half the driver's) is dropped, as at
    # an e-stop reset.
    assert recorder.takeovers == 1 and len(records) == 59 and recorder.dropped == 1
    policy_last = records[9]
    assert policy_last.terminated and not policy_last.truncated and not policy_last.intervention  # whatever label says
    assert [r.intervention for r in records[10:19]] == [True] * 9
    assert len({r.episode for r in records[19:29]}) == 1 and records[19].episode != records[0].episode
    assert records[19].step == 0 and not any(r.intervention for r in records[19:])
    # The learner's replay holds the policy's steps only.
    run = make_finetune_run(tmp_path / "run")
    learner = LiveLearner(run, tmp_path / "log", tmp_path / "out", FinetuneSettings(learning_starts=10_000))
    learner.run_once()
    learner.feeder.flush()
    assert learner.feeder.skipped == 9 and len(learner.replay) == 50


def test_undo_withdraws_the_last_ended_episode_from_the_replay_and_survives_a_restart(tmp_path, cartpole):
    spec = cartpole.spec
    rng = np.random.default_rng(1)
    log, recorder = recorder_for(tmp_path, spec)
    run = make_finetune_run(tmp_path / "run")
    settings = FinetuneSettings(learning_starts=10_000)  # no updates: the replay is what is checked
    learner = LiveLearner(run, tmp_path / "log", tmp_path / "out", settings)
    for kind, payload in robot_messages(cartpole, lambda o: rng.uniform(-1, 1, 1).astype(np.float32), 3):
        recorder.feed(kind, payload)
    learner.run_once()
    assert learner.transitions == 90 and len(learner.replay) == 89  # the newest is held back
    bad = recorder.last_ended
    recorder.feed("undo", True)
    assert recorder.undone == [bad] and recorder.undo_last_episode() is None  # one undo per ended episode
    learner.run_once()
    assert learner.undone == {bad} and learner.transitions == 60 and len(learner.replay) == 59
    for kind, payload in robot_messages(cartpole, lambda o: rng.uniform(-1, 1, 1).astype(np.float32), 1, seed=7):
        recorder.feed(kind, payload)
    log.close()
    learner.run_once()
    assert learner.transitions == 90 and len(learner.replay) == 89
    undos = [r for r in read_log(tmp_path / "log") if r.undo]
    assert [r.episode for r in undos] == [bad]  # the log says what was withdrawn
    # A restarted learner rebuilds its replay from the log, without the withdrawn episode.
    again = LiveLearner(run, tmp_path / "log", tmp_path / "out2", settings)
    again.run_once()
    assert again.undone == {bad} and again.transitions == 90 and len(again.replay) == 89


def test_recorded_inputs_of_a_flat_policy_make_an_undo_capable_log(tmp_path):
    from finetune_policies import export_constant_policy

    run = make_finetune_run(tmp_path)
    inputs = RecordedInputs.from_policy(export_constant_policy(run, tmp_path / "p.onnx", 0.0))
    schema = inputs.schema(1)
    assert not inputs.camera and schema.has_undo and not schema.obs_once
