"""Live fine-tuning of a camera policy without ROS: the recorder stores each camera frame once, the
learner trains the VAE-encoder DDPG run on it and exports a camera-in, command-out graph that
passes the policy node's parity check; frames of another size or encoding are never learned from."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_policies import make_pixel_finetune_run

import envs
from envs.core import scale_action
from rlcontrol.replay.transition_log import TransitionLog, read_log
from sim2real.finetune import FinetuneSettings, LiveLearner

pytest.importorskip("rclpy")  # ros_nodes.bag_tools is imported with the ROS packages installed

from ros_nodes.finetune_recording import ImageCheck, RecordedInputs, TransitionRecorder  # noqa: E402


def camera_messages(env, policy, episodes: int, seed: int = 0):
    """What ros_nodes.sim_robot publishes for a camera task, in its publication order: the image
    component as its uint8 (C, H, W) frame (what ImageCheck gives the node), the state as numbers."""
    spec = env.spec

    def components(obs):
        return [("obs", ("pixels", obs["pixels"].copy())), ("obs", ("state", obs["state"].tolist()))]

    for episode in range(episodes):
        obs = env.reset(seed=seed + episode)
        yield ("episode", {"event": "start", "episode": episode})
        yield from components(obs)
        while True:
            action = policy(obs)
            result = env.step(action)
            yield ("applied_command", scale_action(action, spec.action_low, spec.action_high).tolist())
            yield ("reward", float(result.reward))
            yield from components(result.obs)
            obs = result.obs
            if result.terminated or result.truncated:
                yield ("episode", {"event": "end", "episode": episode, "terminated": bool(result.terminated),
                                   "truncated": bool(result.truncated)})
                break


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    return make_pixel_finetune_run(tmp_path_factory.mktemp("camera"))


@pytest.fixture(scope="module")
def policy(pixel_run, tmp_path_factory):
    from rlcontrol.deploy.export import export_run

    path = tmp_path_factory.mktemp("camera-policy") / "policy.onnx"
    export_run(pixel_run, path, parity_samples=4)
    return path


def record(tmp_path, policy, episodes=3, max_steps=40):
    inputs = RecordedInputs.from_policy(policy)
    env = envs.make("rlc:lane-following", seed=0, pixels=True, pixel_size=64, include_state=True,
                    max_steps=max_steps)
    assert inputs.camera and inputs.fits(env.spec.observation)
    log = TransitionLog.open(tmp_path / "log", inputs.schema(env.spec.action_dim), fsync="none")
    recorder = TransitionRecorder(log, inputs.topic_names, inputs.low, inputs.high, groups=inputs.groups)
    rng = np.random.default_rng(0)
    seen = []

    def act(obs):
        seen.append(obs)
        return rng.uniform(-1, 1, env.spec.action_dim).astype(np.float32)

    for kind, payload in camera_messages(env, act, episodes):
        recorder.feed(kind, payload)
    log.close()
    env.close()
    return recorder, seen


def test_camera_transitions_are_logged_with_each_frame_once(tmp_path, policy):
    recorder, seen = record(tmp_path, policy)
    with read_log(tmp_path / "log") as reader:
        got = list(reader)
        raw = reader.report.records
    assert recorder.logged == len(got) == len(seen) and recorder.dropped == 0
    assert raw == len(got) + 3  # one first record (the initial frame) per episode, nothing else doubled
    for record_, obs in zip(got, seen):  # the frame each action was chosen from, bit for bit
        np.testing.assert_array_equal(record_.obs["pixels"], obs["pixels"])
        np.testing.assert_allclose(record_.obs["state"], obs["state"], rtol=1e-6)
    assert got[-1].terminated or got[-1].truncated
    frame_bytes = 3 * 64 * 64
    log_bytes = sum(p.stat().st_size for p in (tmp_path / "log").glob("segment-*"))
    assert log_bytes < (raw + 1) * (frame_bytes + 200)  # ~1 frame per record, not 2


def test_learner_trains_the_camera_run_and_exports_a_frame_in_command_out_graph(tmp_path, pixel_run, policy):
    from rlcontrol.deploy import runtime
    from ros_nodes.policy_update import probe_problem

    record(tmp_path, policy, episodes=4)
    learner = LiveLearner(pixel_run, tmp_path / "log", tmp_path / "out",
                          FinetuneSettings(learning_starts=20, export_every=10, chunk=10))
    update = None
    for _ in range(20):
        update = learner.run_once() or update
        if update:
            break
    assert update is not None and learner.updates == 10
    assert set(update["probe"]["inputs"]) == {"pixels", "state"}
    pixels = np.asarray(update["probe"]["inputs"]["pixels"])
    assert pixels.shape == (4, 3, 64, 64) and pixels.max() <= 255 and pixels.min() >= 0
    exported = runtime.load(update["path"])
    assert [o.name for o in exported.metadata.observations] == ["pixels", "state"]
    assert probe_problem(exported, update["probe"], update["atol"]) is None
    # A learner that died here restarts from its last export and rebuilds its replay from the log.
    again = LiveLearner(pixel_run, tmp_path / "log", tmp_path / "out", FinetuneSettings(learning_starts=10**6))
    again.run_once()
    assert again.version == 1 and again.updates == 10 and again.transitions == learner.transitions


def test_frames_of_another_size_or_encoding_are_counted_and_skipped():
    check = ImageCheck((3, 64, 64))
    rgb = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    frame = check("rgb8", 64, 64, 64 * 3, rgb.tobytes())
    np.testing.assert_array_equal(frame, rgb.transpose(2, 0, 1))
    bgr = check("bgr8", 64, 64, 64 * 3, rgb[..., ::-1].tobytes())
    np.testing.assert_array_equal(bgr, frame)
    assert check("rgb8", 48, 64, 64 * 3, bytes(48 * 64 * 3)) is None and "64x48" in check.last_reason
    assert check("mono8", 64, 64, 64, bytes(64 * 64)) is None and "mono8" in check.last_reason
    assert check("rgb8", 64, 64, 64 * 3, bytes(100)) is None  # truncated data
    assert check.rejected == 3
