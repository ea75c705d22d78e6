"""ROS 2 tests run real rclpy over real DDS (Fast DDS) between separate processes.

Each test gets its own ROS_DOMAIN_ID so parallel or leftover processes never cross-talk,
and discovery stays on this machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from ros_nodes import launch

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh dev,ros)")

REPO = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("rlcontrol", "envs", "sim2real", "ros_nodes")


def _project_modules() -> list[str]:
    """Every module of the project's own code, by name (a node started with -m is __main__)."""
    names = ["__main__"]
    for package in PROJECT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# Deprecation warnings raised by the project's own code are errors in the ROS tests (a deprecated
# call such as rclpy's RcutilsLogger.warn fails the test that reaches it). Scoped by module, since
# rclpy and other libraries raise their own (rclpy imports the deprecated sre_parse).
DEPRECATIONS_ARE_ERRORS = ",".join(f"error::DeprecationWarning:{name}" for name in _project_modules())


def pytest_collection_modifyitems(items):
    # The test process talks rclpy too (the operator node): the same rule holds there.
    here = Path(__file__).resolve().parent
    rule = "error::DeprecationWarning:(" + "|".join(PROJECT_PACKAGES) + r"|tests|conftest|test_\w+)(\..*)?"
    for item in items:
        if Path(item.path).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.filterwarnings(rule))


@pytest.fixture
def ros_env(monkeypatch):
    """Environment for this test and the node processes it starts (a private domain id)."""
    domain = str(random.Random(os.getpid() ^ id(monkeypatch)).randint(1, 100))
    # Every node process runs with the project's deprecation warnings as errors (see above).
    values = {"ROS_DOMAIN_ID": domain, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl",
              "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "PYTHONWARNINGS": DEPRECATIONS_ARE_ERRORS}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


# ---------------------------------------------------------------------- the policy node under test
# Shared by test_ros_policy_node.py and test_ros_faults.py: one exported policy per session, the
# node as a real `python -m ros_nodes.policy_node` process, and an rclpy node in the test process
# that plays robot and operator (observations, e-stop, lifecycle services, parameters).

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY_NODE = "policy_node"
SERVICE_WAIT_S = 20.0  # generous: the node imports onnxruntime and discovers peers on a shared 2-core machine


def _export_cartpole_policy(root: Path, **run_options) -> Path:
    from rlcontrol.deploy.export import export_run

    spec = importlib.util.spec_from_file_location("_deploy_run_factory", REPO_ROOT / "tests/deploy/conftest.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    out = root / "policy.onnx"
    export_run(factory.make_run(root, **run_options), out, parity_samples=20)
    return out


@pytest.fixture(scope="session")
def cartpole_policy(tmp_path_factory) -> Path:
    """One exported (untrained TD3, normalized) dmc:cartpole-swingup policy for the whole session:
    input "observation" = position(3) + velocity(2), one action "slide" in [-1, 1]."""
    return _export_cartpole_policy(tmp_path_factory.mktemp("ros_policy"))


@pytest.fixture(scope="session")
def qtopt_cartpole_policy(tmp_path_factory) -> Path:
    """The same task as `cartpole_policy` with an (untrained, normalized) QT-Opt policy: no actor,
    the graph is the Q network and its fixed-noise CEM iterations."""
    return _export_cartpole_policy(tmp_path_factory.mktemp("ros_qtopt_policy"), algo="qtopt", hidden=(64, 64))


class Operator:
    """The test-side rclpy node (private context): robot + operator of a policy node process.

    Records every command with its arrival time (monotonic) and every policy diagnostics status
    as a dict; publishes observations while it spins, the e-stop and its reset; drives the
    node's lifecycle and parameters through its services.
    """

    def __init__(self, obs_sizes: dict[str, int]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Bool, Empty, Float64MultiArray

        from ros_nodes import topics

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("policy_node_operator", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.command_topic = topics.COMMAND
        self.commands: list[tuple[float, tuple[float, ...]]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(Float64MultiArray, topics.COMMAND,
                                      lambda m: self.commands.append((time.monotonic(), tuple(m.data))), reliable)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, reliable)
        self.obs_pubs = {name: self.node.create_publisher(Float64MultiArray, topics.obs_topic(name), 10)
                         for name in obs_sizes}
        self.estop_pub = self.node.create_publisher(Bool, topics.ESTOP, 10)
        self.reset_pub = self.node.create_publisher(Empty, topics.ESTOP_RESET, 10)
        self.takeover_pub = self.node.create_publisher(Bool, topics.TAKEOVER, 10)
        self._msg = {"Bool": Bool, "Empty": Empty, "Float64MultiArray": Float64MultiArray}
        self.change_clients = {POLICY_NODE: self.node.create_client(ChangeState, f"/{POLICY_NODE}/change_state")}
        self.state_client = self.node.create_client(GetState, f"/{POLICY_NODE}/get_state")
        self.param_client = self.node.create_client(SetParameters, f"/{POLICY_NODE}/set_parameters")
        self.obs: dict[str, list[float]] | None = None  # published every obs_period while spinning
        self.obs_period = 0.01
        self.last_obs_publish = 0.0
        self._next_obs = 0.0

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "rlcontrol policy_node":
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    # ------------------------------------------------------------------ publishing

    def publish_obs(self, values: dict[str, list[float]]) -> None:
        for name, data in values.items():
            self.obs_pubs[name].publish(self._msg["Float64MultiArray"](data=[float(v) for v in data]))
        self.last_obs_publish = time.monotonic()

    def estop(self, stop: bool = True) -> float:
        """Publishes on /estop; returns the time just before publishing."""
        t = time.monotonic()
        self.estop_pub.publish(self._msg["Bool"](data=stop))
        return t

    def estop_reset(self) -> None:
        self.reset_pub.publish(self._msg["Empty"]())

    def takeover(self, driver_has_control: bool) -> float:
        """Publishes on /safety_driver/takeover; returns the time just before publishing."""
        t = time.monotonic()
        self.takeover_pub.publish(self._msg["Bool"](data=driver_has_control))
        return t

    # ------------------------------------------------------------------ spinning

    def spin_until(self, predicate, timeout: float = SERVICE_WAIT_S) -> bool:
        """Spins (publishing `self.obs` every obs_period, when set) until predicate() holds."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.obs is not None and now >= self._next_obs:
                self.publish_obs(self.obs)
                self._next_obs = max(self._next_obs + self.obs_period, now)
            self.executor.spin_once(timeout_sec=0.002)
            if predicate():
                return True
            if now > deadline:
                return False

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, timeout=seconds)

    def drain(self, turns: int = 20) -> None:
        """Handles whatever has already arrived, without waiting."""
        for _ in range(turns):
            self.executor.spin_once(timeout_sec=0)

    def matched(self) -> bool:
        """The node's subscriptions see our observation and e-stop publishers, and we see its command publisher."""
        pubs = [*self.obs_pubs.values(), self.estop_pub, self.reset_pub]
        return (all(p.get_subscription_count() > 0 for p in pubs)
                and self.node.count_publishers(self.command_topic) > 0)

    def wait_matched(self) -> None:
        assert self.spin_until(self.matched), "the policy node's topics never matched ours"

    def commands_since(self, t: float) -> list[tuple[float, ...]]:
        return [c for at, c in self.commands if at >= t]

    def latest_diagnostics(self, after: int = 0, timeout: float = 5.0) -> dict[str, str]:
        """The first diagnostics status received after the `after`-th one."""
        assert self.spin_until(lambda: len(self.diagnostics) > after, timeout), "no /diagnostics from the node"
        return self.diagnostics[-1]

    # ------------------------------------------------------------------ services

    def _call(self, client, request, timeout: float = SERVICE_WAIT_S):
        assert self.spin_until(lambda: client.service_is_ready(), timeout), f"{client.srv_name} never appeared"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"{client.srv_name} did not answer"
        return future.result()

    def change_state(self, transition_id: int, node: str = POLICY_NODE) -> bool:
        """Asks `node` (the policy node unless named) for a lifecycle transition; True if it succeeded."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        if node not in self.change_clients:
            self.change_clients[node] = self.node.create_client(ChangeState, f"/{node}/change_state")
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self._call(self.change_clients[node], request).success)

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.state_client, GetState.Request()).current_state.label

    def set_parameters(self, **values) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        results = self._call(self.param_client, request).results
        assert all(r.successful for r in results), [r.reason for r in results]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def operator(ros_env):
    op = Operator({"position": 3, "velocity": 2})
    try:
        yield op
    finally:
        op.close()


def stop_process(proc: subprocess.Popen) -> None:
    """The launcher's own shutdown (SIGINT, then SIGKILL), with a test-sized grace period."""
    launch.stop_process(proc, timeout=5.0)


@pytest.fixture
def start_policy_node(ros_env, tmp_path):
    """start_policy_node(model_path, **params) -> (process, log path); every process stopped at teardown.

    Parameters go on the command line as `-p name:=value` (values written as ROS would parse them).
    """
    procs: list[subprocess.Popen] = []

    def start(model_path, **params):
        log = tmp_path / f"policy_node{len(procs)}.log"
        args = ["-p", f"model_path:={model_path}"]
        for name, value in params.items():
            args += ["-p", f"{name}:={value}"]
        env = {**ros_env, "RCUTILS_COLORIZED_OUTPUT": "0", "PYTHONUNBUFFERED": "1"}
        proc = launch.spawn(["-m", "ros_nodes.policy_node", "--ros-args", *args], env, log, cwd=REPO_ROOT)
        procs.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                stop_process(proc)


@pytest.fixture(scope="session")
def reference_obs(cartpole_policy) -> list[tuple[dict[str, list[float]], tuple[float, ...]]]:
    """Two observations and the policy's action for each, computed in this process with the
    same runtime the node uses; the actions are far from the safe zero and from each other, so
    a command tells which of them (or the safe command) it came from."""
    return reference_observations(cartpole_policy)


@pytest.fixture(scope="session")
def sac_cartpole_policy(tmp_path_factory) -> Path:
    """The same task as `cartpole_policy` with an (untrained, normalized) SAC policy: the graph is
    the Gaussian actor's deterministic tanh(mean)."""
    return _export_cartpole_policy(tmp_path_factory.mktemp("ros_sac_policy"), algo="sac")


@pytest.fixture(scope="session")
def sac_reference_obs(sac_cartpole_policy) -> list[tuple[dict[str, list[float]], tuple[float, ...]]]:
    return reference_observations(sac_cartpole_policy)


@pytest.fixture(scope="session")
def qtopt_reference_obs(qtopt_cartpole_policy) -> list[tuple[dict[str, list[float]], tuple[float, ...]]]:
    return reference_observations(qtopt_cartpole_policy)


def reference_observations(policy_path: Path) -> list[tuple[dict[str, list[float]], tuple[float, ...]]]:
    import numpy as np

    from rlcontrol.deploy import runtime

    policy = runtime.load(policy_path)
    rng = np.random.default_rng(0)
    found: list[tuple[dict[str, list[float]], tuple[float, ...]]] = []
    for _ in range(1000):
        flat = rng.normal(2.0, 5.0, size=5).astype(np.float32)  # float32: what the node feeds the policy
        action = tuple(float(a) for a in policy.act(flat))
        if abs(action[0]) > 0.05 and all(abs(action[0] - other[0]) > 0.05 for _, other in found):
            found.append(({"position": flat[:3].tolist(), "velocity": flat[3:].tolist()}, action))
            if len(found) == 2:
                return found
    raise AssertionError("no two observations with clearly different, nonzero actions")


@pytest.fixture
def start_sim_robot(ros_env, tmp_path):
    """start_sim_robot(*flags) -> (process, log path) of `python -m ros_nodes.sim_robot --env
    dmc:cartpole-swingup *flags`; stopped at teardown unless the test already ended it."""
    procs: list[subprocess.Popen] = []

    def start(*flags: str):
        log = tmp_path / f"sim_robot{len(procs)}.log"
        proc = launch.spawn(["-m", "ros_nodes.sim_robot", "--env", "dmc:cartpole-swingup", *flags], ros_env, log,
                            cwd=REPO_ROOT)
        procs.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                stop_process(proc)
