"""Image policies over real DDS: an exported QT-Opt policy with a conv encoder ({"pixels": uint8
(3, 32, 32), "state": float32 (2,)}, trained-shape on rlc:lane-following) runs in a real
`python -m ros_nodes.policy_node` process fed sensor_msgs/Image by this process, and end to end
through `rlcontrol deploy` against the simulated robot publishing its camera.

The node's commands are compared with what rlcontrol.deploy.runtime computes in this process for
the same converted image and state.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

import envs
from rlcontrol.deploy import runtime
from rlcontrol.errors import UserError
from ros_nodes import launch, topics
from ros_nodes.image_conversion import image_to_chw
from ros_nodes.observation_map import MappingError, RejectedMessage, build_image_source, build_sources

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 32  # the policy's image height and width
# Candidate states (speed m/s, steering rad): the untrained Q network's CEM argmax sits at the action
# bounds' corner, whatever the image, for most states; these make the image matter (first that works wins).
STATES = ([5.0, -0.3], [8.0, -0.5], [6.0, 0.3], [4.0, 0.1])
SAFE = (0.0, 0.0)  # zeros, inside both actions' bounds
WAIT_S = 20.0  # the node imports onnxruntime and OpenCV and discovers peers on a busy 2-core machine


@pytest.fixture(scope="session")
def image_policy(tmp_path_factory) -> Path:
    """An untrained QT-Opt policy for rlc:lane-following with pixels (32x32) and state, exported."""
    from rlcontrol.deploy.export import export_run

    spec = importlib.util.spec_from_file_location("_deploy_run_factory", REPO_ROOT / "tests/deploy/conftest.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    root = tmp_path_factory.mktemp("ros_image_policy")
    run = factory.make_run(root, algo="qtopt", env_id="rlc:lane-following", hidden=(32, 32),
                           env={"pixels": True, "pixel_size": SIZE, "kwargs": {"include_state": True}},
                           agent={"conv_channels": [8, 8], "conv_features": 16})
    out = root / "policy.onnx"
    export_run(run, out, parity_samples=20)
    return out


def image_msg(hwc: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image of `hwc` (uint8, channels in the encoding's order), rows padded by `pad` bytes."""
    height, width = hwc.shape[:2]
    rows = np.zeros((height, hwc[0].size + pad), np.uint8)
    rows[:, :hwc[0].size] = hwc.reshape(height, -1)
    return Image(height=height, width=width, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


def _differ(a, b, tol: float = 1e-3) -> bool:
    return any(abs(x - y) > tol for x, y in zip(a, b))


def _close(command, action, tol: float = 1e-6) -> bool:
    return len(command) == len(action) and all(abs(c - a) <= tol for c, a in zip(command, action))


@pytest.fixture(scope="session")
def pictures(image_policy) -> tuple[list[float], dict[str, tuple[np.ndarray, tuple[float, ...]]]]:
    """(state, {name: (RGB picture HWC, action)}): three pictures whose actions, at that state, differ
    from each other and from the safe command: A and B at the policy's size, C larger (resized by the
    node). A's action also differs from that of A with its channels swapped, so a bgr8 image read as
    rgb8 would show in the command."""
    policy = runtime.load(image_policy)
    for state in STATES:
        found = _distinct_pictures(policy, np.array(state, np.float32))
        if found:
            return state, found
    raise AssertionError(f"no state in {STATES} with three pictures of clearly different actions")


def _distinct_pictures(policy, state: np.ndarray) -> dict | None:
    def act(chw):
        return tuple(float(a) for a in policy.act({"pixels": chw, "state": state}))

    rng = np.random.default_rng(0)
    found: dict[str, tuple[np.ndarray, tuple[float, ...]]] = {}
    for _ in range(100):
        name = "A" if "A" not in found else "B" if "B" not in found else "C"
        shape = (80, 72, 3) if name == "C" else (SIZE, SIZE, 3)
        hwc = rng.integers(0, 256, shape, dtype=np.uint8)
        msg = image_msg(hwc, "rgb8")
        action = act(image_to_chw(msg.encoding, msg.height, msg.width, msg.step, msg.data, (3, SIZE, SIZE)))
        if not _differ(action, SAFE) or any(not _differ(action, other) for _, other in found.values()):
            continue
        if name == "A" and not _differ(action, act(np.ascontiguousarray(hwc[..., ::-1].transpose(2, 0, 1)))):
            continue
        found[name] = (hwc, action)
        if len(found) == 3:
            return found
    return None


# ---------------------------------------------------------------------- the mapping (messages, no DDS)


def test_image_input_maps_to_an_image_topic_by_default_and_rejects_bad_images():
    source = build_image_source("pixels", (3, 4, 4), None)
    assert (source.topic, source.type, source.size) == ("/robot/obs/pixels", "Image", 48)
    out = source.new_scratch()
    assert out.shape == (3, 4, 4) and out.dtype == np.uint8
    hwc = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    source.extract(image_msg(hwc[..., ::-1].copy(), "bgr8", pad=4), out)
    np.testing.assert_array_equal(out, hwc.transpose(2, 0, 1))
    assert source.last_size == (4, 4)
    bad = image_msg(hwc, "rgb8")
    bad.step = 11  # shorter than a row of 4 rgb8 pixels
    with pytest.raises(RejectedMessage, match="/robot/obs/pixels: step 11"):
        source.extract(bad, out)
    with pytest.raises(RejectedMessage, match="unsupported encoding 'yuv422'"):
        source.extract(Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)), out)
    custom = build_image_source("pixels", (1, 8, 8), {"topic": "/camera/image_raw"})  # type may be left out
    assert (custom.topic, custom.shape) == ("/camera/image_raw", (1, 8, 8))


def test_camera_frame_input_gets_rgb_pixels_of_its_size_only():
    source = build_image_source("pixels", (4, 6, 3), None, layout="HWC")
    assert (source.topic, source.shape, source.size, source.layout) == ("/robot/obs/pixels", (4, 6, 3), 72, "HWC")
    out = source.new_scratch()
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    hwc = np.arange(72, dtype=np.uint8).reshape(4, 6, 3)
    source.extract(image_msg(hwc[..., ::-1].copy(), "bgr8", pad=2), out)
    np.testing.assert_array_equal(out, hwc)
    with pytest.raises(RejectedMessage, match="/robot/obs/pixels: image is 3x4, the policy takes 6x4 camera frames"):
        source.extract(image_msg(hwc[:, :3].copy(), "rgb8"), out)
    with pytest.raises(MappingError, match=r"camera frames must be \(H, W, 3\) RGB"):
        build_image_source("pixels", (4, 6, 1), None, layout="HWC")


@pytest.mark.parametrize("build, problem", [
    (lambda: build_image_source("pixels", (3, 8, 8), {"topic": "/p", "type": "Float64MultiArray"}),
     "input 'pixels' is a uint8 (3, 8, 8) image: it must map to a sensor_msgs/Image"),
    (lambda: build_image_source("pixels", (4, 8, 8), None), "images must be (1 or 3, H, W)"),
    (lambda: build_sources([("state", (2,))], {"state": {"topic": "/s", "type": "Image"}}),
     "component 'state' is a vector of 2 values: type Image is only for"),
], ids=["image-as-array", "four-channels", "vector-as-image"])
def test_image_mappings_that_cannot_work_are_refused(build, problem):
    with pytest.raises(MappingError) as err:
        build()
    assert problem in str(err.value)


# ---------------------------------------------------------------------- the node in its own process


class Camera:
    """Test-side rclpy node (private context): publishes an image and the state while it spins,
    records commands and diagnostics, drives the node's lifecycle and parameters."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("image_policy_operator", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.commands: list[tuple[float, tuple[float, ...]]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(Float64MultiArray, topics.COMMAND,
                                      lambda m: self.commands.append((time.monotonic(), tuple(m.data))), reliable)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, reliable)
        self.image_pub = self.node.create_publisher(Image, topics.obs_topic("pixels"), QoSProfile(depth=1))
        self.state_pub = self.node.create_publisher(Float64MultiArray, topics.obs_topic("state"), QoSProfile(depth=1))
        self.change_client = self.node.create_client(ChangeState, "/policy_node/change_state")
        self.param_client = self.node.create_client(SetParameters, "/policy_node/set_parameters")
        self.image: Image | None = None  # published with the state every 20 ms while spinning
        self.state: list[float] = []
        self._next = 0.0

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "rlcontrol policy_node":
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def spin_until(self, predicate, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.image is not None and now >= self._next:
                self.image_pub.publish(self.image)
                self.state_pub.publish(Float64MultiArray(data=self.state))
                self._next = now + 0.02
            self.executor.spin_once(timeout_sec=0.002)
            if predicate():
                return True
        return False

    def following(self, action) -> bool:
        return bool(self.commands) and _close(self.commands[-1][1], action)

    def _call(self, client, request):
        assert self.spin_until(client.service_is_ready), f"{client.srv_name} never appeared"
        future = client.call_async(request)
        assert self.spin_until(future.done), f"{client.srv_name} did not answer"
        return future.result()

    def change_state(self, transition_id: int) -> bool:
        return bool(self._call(self.change_client, ChangeState.Request(transition=Transition(id=transition_id))).success)

    def set_observation_map(self, mapping: dict) -> None:
        param = Parameter("observation_map", value=json.dumps(mapping)).to_parameter_msg()
        assert all(r.successful for r in self._call(self.param_client, SetParameters.Request(parameters=[param])).results)

    def matched(self) -> bool:
        return (self.image_pub.get_subscription_count() > 0 and self.state_pub.get_subscription_count() > 0
                and self.node.count_publishers(topics.COMMAND) > 0)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def camera(ros_env):
    cam = Camera()
    try:
        yield cam
    finally:
        cam.close()


def _wait_log(log: Path, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_image_policy_node_commands_what_the_runtime_computes(image_policy, pictures, start_policy_node, camera):
    state, found = pictures
    (a, action_a), (b, action_b), (c, action_c) = (found[k] for k in "ABC")
    camera.state = state
    proc, log = start_policy_node(image_policy, control_rate_hz=50.0, obs_timeout_s=0.5, diagnostics_period_s=0.3)

    # The contract first: an image input fed by an array topic, or a vector input by an image topic, is refused.
    for mapping, problem in [({"pixels": {"topic": "/robot/obs/pixels", "type": "Float64MultiArray"}},
                              "input 'pixels' is a uint8 (3, 32, 32) image: it must map to a sensor_msgs/Image"),
                             ({"state": {"topic": "/robot/obs/state", "type": "Image"}},
                              "component 'state' is a vector of 2 values: type Image")]:
        camera.set_observation_map(mapping)
        assert not camera.change_state(Transition.TRANSITION_CONFIGURE)
        assert _wait_log(log, problem), log.read_text()
    camera.set_observation_map({})

    camera.image = image_msg(a, "rgb8")
    assert camera.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert "sensor_msgs/Image on /robot/obs/pixels -> uint8 (3, 32, 32) RGB" in log.read_text()
    assert camera.spin_until(camera.matched), "the policy node's topics never matched ours"
    assert camera.change_state(Transition.TRANSITION_ACTIVATE), log.read_text()
    assert camera.spin_until(lambda: camera.following(action_a)), (camera.commands[-3:], action_a, log.read_text())

    camera.image = image_msg(b, "rgb8")
    assert camera.spin_until(lambda: camera.following(action_b), timeout=5.0), (camera.commands[-3:], action_b)
    camera.image = image_msg(np.ascontiguousarray(a[..., ::-1]), "bgr8", pad=8)  # A again, as a BGR camera sends it
    assert camera.spin_until(lambda: camera.following(action_a), timeout=5.0), (camera.commands[-3:], action_a)
    camera.image = image_msg(c, "rgb8", pad=4)  # 72x80: resized to 32x32 by the node
    assert camera.spin_until(lambda: camera.following(action_c), timeout=5.0), (camera.commands[-3:], action_c)
    assert _wait_log(log, "resizing 72x80 images from /robot/obs/pixels to 32x32 (cv2.INTER_AREA)"), log.read_text()

    # Malformed images only (the state keeps coming): counted, the node keeps running, and once the
    # last good image is older than obs_timeout_s the watchdog sends the safe command.
    malformed = image_msg(a, "rgb8")
    malformed.data = malformed.data[:-1]
    camera.image = malformed
    assert camera.spin_until(lambda: camera.following(SAFE), timeout=5.0), camera.commands[-3:]
    seen = len(camera.diagnostics)
    assert camera.spin_until(lambda: len(camera.diagnostics) > seen, timeout=5.0)
    d = camera.diagnostics[-1]
    assert int(d["rejected_messages"]) > 0 and int(d["stale_trips"]) == 1, d
    assert proc.poll() is None, log.read_text()
    camera.image = image_msg(a, "rgb8")  # a good image again: the policy is back in control
    assert camera.spin_until(lambda: camera.following(action_a), timeout=5.0), camera.commands[-3:]

    # Every command was one of the policy's for the pictures sent, or the safe command; nothing else.
    allowed = (action_a, action_b, action_c, SAFE)
    assert all(any(_close(cmd, x) for x in allowed) for _, cmd in camera.commands), \
        [cmd for _, cmd in camera.commands if not any(_close(cmd, x) for x in allowed)][:5]
    assert "Traceback" not in log.read_text()


# ---------------------------------------------------------------------- rlcontrol deploy, end to end


def test_deploy_image_policy_against_the_simulated_camera(image_policy, ros_env, tmp_path):
    """The simulated robot renders rlc:lane-following at the policy's 32x32 and publishes it as
    sensor_msgs/Image; the node ticks on fresh observations (image and state both required)."""
    summary = launch.deploy(str(image_policy), episodes=2, real_time_factor=5.0, env_kwargs={"max_steps": 10},
                            log_dir=str(tmp_path / "logs"), quiet=True, trigger="observation")
    robot_log, node_log = ((tmp_path / "logs" / f"{n}.log").read_text() for n in ("sim_robot", "policy_node"))
    assert summary["exit_codes"] == {"sim_robot": 0, "policy_node": 0}, (robot_log, node_log)
    assert summary["episodes"] == 2 and summary["pixel_size"] == SIZE, summary
    assert all(math.isfinite(r) for r in summary["returns"])
    assert "sensor_msgs/Image rgb8: pixels 32x32" in robot_log, robot_log
    assert "32x32 images from /robot/obs/pixels: the policy's size, not resized" in node_log, node_log
    d = summary["diagnostics"]
    assert d["nonfinite_obs"] == 0 and d["nonfinite_action"] == 0 and d["rejected_messages"] == 0, d
    assert d["ok"] > 0 and d["obs_to_command_count"] > 0, d


# ---------------------------------------------------------------------- the simulated robot's camera


def test_sim_robot_image_message_round_trips_through_the_conversion():
    from ros_nodes.sim_robot import image_message

    chw = np.random.default_rng(3).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    msg = image_message(chw, frame_id="pixels")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("rgb8", 5, 7, 21, 0)
    assert msg.header.frame_id == "pixels"
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), chw.transpose(1, 2, 0))
    np.testing.assert_array_equal(image_to_chw(msg.encoding, 5, 7, msg.step, msg.data, (3, 5, 7)), chw)


def test_sim_robot_pixel_parameters_are_checked():
    from ros_nodes.sim_robot import PARAMETERS, ConfigError, _check_parameters, _pixel_keywords

    def params(**values):
        return {**{name: default for name, (default, _) in PARAMETERS.items()}, **values}

    p = params(pixels=True, pixel_size=16, include_state=True)
    _check_parameters(p)
    assert _pixel_keywords(p) == {"pixels": True, "pixel_size": 16, "include_state": True}
    assert _pixel_keywords(params()) == {}
    for bad, message in [(params(include_state=True), "include_state only applies with pixels"),
                         (params(pixels=True, env_kwargs='{"pixel_size": 8}'), "both as a parameter and in env_kwargs"),
                         (params(pixels=True, pixel_size=0), "pixel_size must be >= 1")]:
        with pytest.raises(ConfigError, match=message):
            _check_parameters(bad)


def test_deploy_starts_the_robot_with_the_policys_camera(image_policy):
    meta = runtime.load(image_policy, warmup=1).metadata
    assert launch.robot_pixel_flags(meta) == ["--pixels", "--pixel-size", "32", "--include-state"]
    pixels_only = dataclasses.replace(meta, observations=meta.observations[:1])
    assert launch.robot_pixel_flags(pixels_only) == ["--pixels", "--pixel-size", "32"]
    vector = dataclasses.replace(meta, observations=meta.observations[1:])
    assert launch.robot_pixel_flags(vector) == []
    image, state = meta.observations
    for observations, env_kwargs, message in [
        ((dataclasses.replace(image, name="camera"), state), {}, "observes 'pixels'"),
        ((dataclasses.replace(image, shape=(3, 32, 48)), state), {}, "square images"),
        ((image, state), {"pixel_size": 64}, "--env-kwargs sets ['pixel_size']"),
    ]:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            launch.robot_pixel_flags(dataclasses.replace(meta, observations=observations), env_kwargs)


def test_sim_robot_publishes_the_rendered_camera_as_rgb8(ros_env, tmp_path):
    """The first image after activation is episode 0's reset observation, exactly as envs renders it."""
    expected = envs.make("rlc:lane-following", seed=0, obs_format="dict", pixels=True, pixel_size=16,
                         include_state=True).reset(seed=0)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("camera_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    images: list[Image] = []
    states: list[list[float]] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    image_sub = node.create_subscription(Image, topics.obs_topic("pixels"), images.append, reliable)
    node.create_subscription(Float64MultiArray, topics.obs_topic("state"), lambda m: states.append(list(m.data)),
                             reliable)
    log = tmp_path / "sim_robot.log"
    proc = launch.spawn(["-m", "ros_nodes.sim_robot", "--env", "rlc:lane-following", "--pixels", "--pixel-size", "16",
                         "--include-state", "--no-autostart"], ros_env, log, cwd=REPO_ROOT)
    try:
        client = node.create_client(ChangeState, "/sim_robot/change_state")
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert client.wait_for_service(timeout_sec=WAIT_S), log.read_text()
            deadline = time.monotonic() + WAIT_S  # activate only once our subscriptions see its publishers
            while transition == Transition.TRANSITION_ACTIVATE and image_sub.get_publisher_count() == 0:
                assert time.monotonic() < deadline, log.read_text()
                executor.spin_once(timeout_sec=0.01)
            future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
            executor.spin_until_future_complete(future, timeout_sec=WAIT_S)
            assert future.result() and future.result().success, log.read_text()
        deadline = time.monotonic() + WAIT_S
        while not (images and states) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
        assert images and states, log.read_text()
        first = images[0]
        assert (first.encoding, first.height, first.width, first.step) == ("rgb8", 16, 16, 48)
        np.testing.assert_array_equal(np.frombuffer(first.data, np.uint8).reshape(16, 16, 3),
                                      expected["pixels"].transpose(1, 2, 0))
        np.testing.assert_allclose(states[0], expected["state"], rtol=1e-6)
    finally:
        launch.stop_process(proc, timeout=5.0)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()


# ---------------------------------------------------------------------- a camera-layout export
# `rlcontrol export --camera-size 96x128 --crop-top 0.25`: the graph takes the camera's uint8
# (96, 128, 3) RGB frame and crops and resizes it to the policy's (3, 32, 32) itself, so the node
# only converts the encoding to RGB, and refuses images of another size.

CAMERA_HW = (96, 128)
CAMERA_CROP_TOP = 0.25


@pytest.fixture(scope="session")
def camera_policies(tmp_path_factory) -> tuple[Path, Path]:
    """(camera-layout policy.onnx, the same run exported at the training size): an untrained TD3
    policy with a conv2d encoder for rlc:lane-following with pixels (32x32) and state."""
    from rlcontrol.deploy.export import CameraInput, export_run

    spec = importlib.util.spec_from_file_location("_deploy_run_factory", REPO_ROOT / "tests/deploy/conftest.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    root = tmp_path_factory.mktemp("ros_camera_policy")
    encoders = {"pixels": {"type": "conv2d", "hidden": [8, 8], "kernel": 3, "stride": 2, "features": 16, "join": 1}}
    run = factory.make_run(root, algo="td3", env_id="rlc:lane-following", obs_format="dict", hidden=(32, 32),
                           encoders=encoders, env={"pixels": True, "pixel_size": SIZE, "kwargs": {"include_state": True}})
    camera, plain = root / "camera.onnx", root / "plain.onnx"
    export_run(run, camera, parity_samples=20, camera=CameraInput(CAMERA_HW, crop_top=CAMERA_CROP_TOP))
    export_run(run, plain, parity_samples=20)
    return camera, plain


@pytest.fixture(scope="session")
def camera_pictures(camera_policies):
    """(state, {name: (frame HWC as sent, expected action)}): A and B rgb8 camera frames, M a mono8
    one (expected: the gray replicated to RGB), with actions that differ from each other and from
    the safe command, and A's also from A with its channels swapped. Each action is computed in
    this process twice, by the camera graph on the frame and by the training-size graph on
    OpenCV's preprocessing of it, which must agree."""
    from rlcontrol.vision.preprocess import ImagePreprocessing

    camera, plain = (runtime.load(p) for p in camera_policies)
    prep = ImagePreprocessing(crop_top=CAMERA_CROP_TOP, out_size=(SIZE, SIZE))
    rng = np.random.default_rng(1)
    for state in STATES:
        state = np.array(state, np.float32)

        def act(rgb, state=state):
            action = tuple(float(a) for a in camera.act({"pixels": rgb, "state": state}))
            assert not _differ(action, plain.act({"pixels": prep(rgb), "state": state}), tol=1e-5)
            return action

        found: dict[str, tuple[np.ndarray, tuple[float, ...]]] = {}
        for _ in range(60):
            name = next(n for n in "ABM" if n not in found)
            frame = rng.integers(0, 256, (*CAMERA_HW, 1 if name == "M" else 3), dtype=np.uint8)
            action = act(np.repeat(frame, 3, axis=2) if name == "M" else frame)
            if not _differ(action, SAFE) or any(not _differ(action, other) for _, other in found.values()):
                continue
            if name == "A" and not _differ(action, act(np.ascontiguousarray(frame[..., ::-1]))):
                continue
            found[name] = (frame, action)
            if len(found) == 3:
                return list(state), found
    raise AssertionError(f"no state in {STATES} with three camera frames of clearly different actions")


def test_camera_layout_policy_node_feeds_camera_frames_as_they_arrive(camera_policies, camera_pictures,
                                                                      start_policy_node, camera):
    state, found = camera_pictures
    (a, action_a), (b, action_b), (m, action_m) = (found[k] for k in "ABM")
    camera.state = state
    proc, log = start_policy_node(camera_policies[0], control_rate_hz=50.0, obs_timeout_s=0.5,
                                  diagnostics_period_s=0.3)
    camera.image = image_msg(a, "rgb8")
    assert camera.change_state(Transition.TRANSITION_CONFIGURE), log.read_text()
    assert ("sensor_msgs/Image on /robot/obs/pixels -> uint8 (96, 128, 3) RGB camera frame (HWC), fed as is: the "
            "graph crops and resizes it to (3, 32, 32); images of another size than 128x96 are rejected") in log.read_text()
    assert camera.spin_until(camera.matched), "the policy node's topics never matched ours"
    assert camera.change_state(Transition.TRANSITION_ACTIVATE), log.read_text()
    assert camera.spin_until(lambda: camera.following(action_a)), (camera.commands[-3:], action_a, log.read_text())
    assert _wait_log(log, "128x96 images from /robot/obs/pixels: the policy's camera frames"), log.read_text()

    camera.image = image_msg(b, "rgb8", pad=4)
    assert camera.spin_until(lambda: camera.following(action_b), timeout=5.0), (camera.commands[-3:], action_b)
    camera.image = image_msg(np.ascontiguousarray(a[..., ::-1]), "bgr8", pad=8)  # A as a BGR camera sends it
    assert camera.spin_until(lambda: camera.following(action_a), timeout=5.0), (camera.commands[-3:], action_a)
    camera.image = image_msg(m, "mono8")
    assert camera.spin_until(lambda: camera.following(action_m), timeout=5.0), (camera.commands[-3:], action_m)

    # The training size (what a CHW policy would take) is the wrong size here: rejected and counted,
    # never resized; the last good frame goes stale and the watchdog sends the safe command.
    camera.image = image_msg(a[::3, ::4].copy(), "rgb8")  # 32x32
    assert camera.spin_until(lambda: camera.following(SAFE), timeout=5.0), camera.commands[-3:]
    seen = len(camera.diagnostics)
    assert camera.spin_until(lambda: len(camera.diagnostics) > seen, timeout=5.0)
    d = camera.diagnostics[-1]
    assert int(d["rejected_messages"]) > 0 and int(d["stale_trips"]) == 1, d
    assert _wait_log(log, "rejected message: /robot/obs/pixels: image is 32x32, the policy takes 128x96 camera "
                          "frames"), log.read_text()
    assert proc.poll() is None, log.read_text()
    camera.image = image_msg(a, "rgb8")
    assert camera.spin_until(lambda: camera.following(action_a), timeout=5.0), camera.commands[-3:]

    allowed = (action_a, action_b, action_m, SAFE)
    assert all(any(_close(cmd, x) for x in allowed) for _, cmd in camera.commands), \
        [cmd for _, cmd in camera.commands if not any(_close(cmd, x) for x in allowed)][:5]
    assert "Traceback" not in log.read_text()


def test_deploy_sets_the_robot_camera_from_a_camera_layout_policy(camera_policies):
    meta = runtime.load(camera_policies[0], warmup=1).metadata
    with pytest.raises(UserError, match="renders square images; the policy takes camera frames of 96x128"):
        launch.robot_pixel_flags(meta)
    image, state = meta.observations
    square = dataclasses.replace(image, shape=(96, 96, 3), camera_shape=(96, 96, 3))
    assert launch.robot_pixel_flags(dataclasses.replace(meta, observations=(square, state))) == \
        ["--pixels", "--pixel-size", "96", "--include-state"]
