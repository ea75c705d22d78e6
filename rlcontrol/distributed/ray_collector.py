"""K Ray actor workers feeding the learner's replay: the collector of distributed runs.

    learner (this process)                          actor workers (Ray actors, 1 CPU each)
    ----------------------                          --------------------------------------
    keep exactly one `collect(n)` in flight per worker
    ray.wait(any, num_returns=1) -> chunk           each: own env, policy copy, noise scale,
    replay.add_batch(chunk)   (all of it or none)         n-step accumulator; acts n agent steps
    resubmit that worker's next collect             with the weights it last received
    learn updates_per_step x chunk agent steps      (applied at its next chunk boundary)
    every weight_sync_every updates: ray.put(policy) once, set_weights(version, [ref]) to all

The learner never waits for an actor to take weights, and an actor never waits for the
learner to finish learning: its next chunk is already submitted when the learner starts the
updates for the last one. The replay ratio is the single-process one (updates_per_step per
agent step), so equal env-step comparisons with the in-process loop hold.

Faults: workers are Ray actors with max_restarts=-1 and no task retries. When a worker dies
(its process is killed, the node is lost) the chunk it was collecting is dropped (it never
reached replay) and the loss is counted in `restarts`. The learner goes on with the other
workers and probes the lost one (a cheap `ready()` call, every RETRY_EVERY_S: calls to an actor
Ray is still restarting fail at once); when the new incarnation answers, it is sent the latest
weights and then its next collect. A worker not back within RECOVERY_TIMEOUT_S ends the run.

Run budget: chunks are sized so the accepted env steps end exactly at train.total_env_steps
(as in the single-process loop); the steps of a lost chunk are handed out again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time

import numpy as np

from rlcontrol.agents.learner import flatten_obs
from rlcontrol.distributed.collector import Harvest
from rlcontrol.distributed.worker import RayActorWorker, noise_scales, numpy_policy_state
from rlcontrol.errors import UserError

READY_TIMEOUT_S = 180.0  # actor workers must be up (scheduled, env and agent built) by then
WAIT_SLICE_S = 1.0  # ray.wait timeout: the loop stays responsive to Ctrl-C
RETRY_EVERY_S = 0.25  # probe period of a lost worker while Ray restarts it
RECOVERY_TIMEOUT_S = 300.0  # a lost worker not answering by then is broken: the run stops


def connect(config) -> bool:
    """Connect to Ray for a distributed run; True if this call started Ray (and must shut it down).

    ray_address None or "local": a new local cluster in this process (nothing to install or
    start), with as many logical CPUs as the machine has, and at least one per actor worker;
    "auto": the cluster RAY_ADDRESS or `ray start` names; "HOST:PORT" / "ray://HOST:PORT": that
    cluster, which must have rlcontrol installed on its nodes. If Ray is already initialised
    in this process (a notebook, a test fixture), that session is used and left running.
    """
    import ray

    if ray.is_initialized():
        return False
    d = config.distributed
    address = d.ray_address or "local"
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        kwargs["num_cpus"] = max(os.cpu_count() or 1, d.num_actors)
    elif address != "auto":
        _probe(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--ray-address {address}: cannot join the Ray cluster: {first}") from None
    return True


def disconnect(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def _probe(address: str) -> None:
    """Fail fast with one line when nothing answers at HOST:PORT (ray.init would retry for minutes)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5.0):
            pass
    except OSError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster reachable there ({exc.strerror or exc})") from None


class RayCollector:
    """Harvests chunks from `distributed.num_actors` Ray actor workers (see the module docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.config, self.agent, self.replay, self.state = trainer.config, trainer.agent, trainer.replay, trainer.state
        d = self.config.distributed
        self.num_actors = d.num_actors
        self.scales = noise_scales(self.config)
        self.chunk_steps, self.sync_every = d.chunk_steps, d.weight_sync_every
        self.repeat = self.config.env.action_repeat
        self.restarts = 0
        self.transitions_per_actor = [0] * self.num_actors
        self.chunks_per_actor = [0] * self.num_actors
        self.pids: list[int | None] = [None] * self.num_actors  # each worker's process, from its last chunk
        self.versions = [-1] * self.num_actors  # weights version each worker's last chunk was acted with
        self.max_weight_lag = 0  # most versions an accepted chunk's weights were behind the latest
        self.version = -1
        self.workers: list = []
        self._weights_ref = None
        self._published_at = 0
        self._pending: dict = {}  # collect ObjectRef -> (worker index, agent steps)
        self._side_refs: list = []  # fire-and-forget set_weights results, drained so errors are consumed
        self._probes: dict = {}  # ready() ObjectRef -> worker index (lost workers being probed)
        self._lost_since: dict[int, float] = {}  # worker index -> when it was lost
        self._retry_at: dict[int, float] = {}  # worker index -> when to probe it next
        self._env_steps = self.state.env_steps  # accepted so far (the trainer counts after collect returns)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        import ray

        remote_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(RayActorWorker)
        self.workers = [remote_cls.remote(self.config, i, self.scales[i], self.state.env_steps)
                        for i in range(self.num_actors)]
        try:
            self.pids = ray.get([w.ready.remote() for w in self.workers], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            cpus = ray.cluster_resources().get("CPU", 0)
            raise UserError(f"the Ray cluster did not start {self.num_actors} actor workers within "
                            f"{READY_TIMEOUT_S:.0f} s (each needs 1 CPU; the cluster has {cpus:g})") from None
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"an actor worker failed to start: {exc}") from None
        self.publish()
        for i in range(self.num_actors):
            self._submit(i)

    def close(self) -> None:
        if not self.workers:
            return
        import ray

        self._pending.clear()
        self._side_refs.clear()
        self._probes.clear()
        for worker in self.workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone: nothing to release
                pass
        self.workers = []

    # ------------------------------------------------------------------ weights

    def publish(self) -> None:
        """Put the learner's policy (normalizer + actor) in the object store once; send every
        worker the reference. Workers apply it at their next chunk boundary."""
        import ray

        self._weights_ref = ray.put(numpy_policy_state(self.agent.policy_state_dict()))
        self.version += 1
        self._published_at = self.trainer.session_updates
        for i in range(len(self.workers)):
            self._send_weights(i)

    def _send_weights(self, index: int) -> None:
        # Wrapped in a list so Ray passes the reference instead of fetching it before the call.
        self._side_refs.append(self.workers[index].set_weights.remote(self.version, [self._weights_ref]))

    def _drain_side_refs(self) -> None:
        """Consume finished set_weights results (a dead worker's fail; the resend covers it)."""
        import ray

        if not self._side_refs:
            return
        done, self._side_refs = ray.wait(self._side_refs, num_returns=len(self._side_refs), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass

    # ------------------------------------------------------------------ collecting

    def _submit(self, index: int) -> None:
        """Give worker `index` its next chunk, unless the run's env step budget is handed out."""
        total = self.config.train.total_env_steps
        outstanding = sum(steps for _, steps in self._pending.values())
        budget = math.ceil(max(0, total - self._env_steps) / self.repeat) - outstanding
        steps = min(self.chunk_steps, budget)
        if steps <= 0:
            return
        learning_started = self._env_steps >= self.config.train.learning_starts
        ref = self.workers[index].collect.remote(steps, learning_started)
        self._pending[ref] = (index, steps)

    def collect(self) -> Harvest:
        """Wait for the next chunk from any worker; store it whole in replay; resubmit that worker."""
        import ray

        if self.trainer.session_updates - self._published_at >= self.sync_every:
            self.publish()
        self._drain_side_refs()
        while True:
            self._probe_due()
            refs = [*self._pending, *self._probes]
            if not refs:
                if not self._retry_at:
                    raise RuntimeError("no actor worker is collecting, yet the run has env steps left")
                time.sleep(max(0.0, min(self._retry_at.values()) - time.monotonic()))
                continue
            timeout = WAIT_SLICE_S
            if self._retry_at:
                timeout = min(timeout, max(0.0, min(self._retry_at.values()) - time.monotonic()))
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if not ready:
                continue
            ref = ready[0]
            if ref in self._probes:
                self._probed(self._probes.pop(ref), ref)
                continue
            index, _steps = self._pending.pop(ref)
            try:
                chunk = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # ActorDiedError, ActorUnavailableError
                self._lost(index, exc)
                continue
            harvest = self._accept(chunk)
            self._submit(index)
            return harvest

    # ------------------------------------------------------------------ faults

    def _lost(self, index: int, exc: Exception) -> None:
        """Worker `index` failed a collect: count it, and probe it until Ray has restarted it."""
        self.restarts += 1
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"rlcontrol: actor worker {index} lost its chunk ({type(exc).__name__}: {reason[:160]}); "
              "Ray restarts it and training goes on", file=sys.stderr)
        self._lost_since[index] = time.monotonic()
        self._retry_at[index] = time.monotonic()
        # The lost chunk's env steps are back in the budget: idle live workers may take them.
        busy = {i for i, _ in self._pending.values()}
        for i in range(len(self.workers)):
            if i not in busy and i not in self._lost_since:
                self._submit(i)

    def _probe_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self._retry_at.items()):
            if when <= now:
                del self._retry_at[index]
                self._probes[self.workers[index].ready.remote()] = index

    def _probed(self, index: int, ref) -> None:
        import ray

        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # still restarting
            if time.monotonic() - self._lost_since[index] > RECOVERY_TIMEOUT_S:
                raise RuntimeError(f"actor worker {index} did not come back within {RECOVERY_TIMEOUT_S:.0f} s "
                                   f"of its failure: {exc}") from None
            self._retry_at[index] = time.monotonic() + RETRY_EVERY_S
            return
        del self._lost_since[index]
        self._send_weights(index)  # a restarted worker starts from its initialisation: latest weights first
        self._submit(index)

    def _accept(self, chunk: dict) -> Harvest:
        index = chunk["worker"]
        transitions = chunk["transitions"]
        count = 0
        if transitions is not None:
            # add_batch validates every field before it writes a row: all of the chunk or none.
            self.replay.add_batch(transitions)
            count = len(transitions["reward"])
        if chunk["observed"] is not None:
            self._observe(chunk["observed"])
        self._env_steps += chunk["env_steps"]
        self.transitions_per_actor[index] += count
        self.chunks_per_actor[index] += 1
        self.pids[index] = chunk["pid"]
        self.versions[index] = chunk["version"]
        if chunk["version"] >= 0:
            self.max_weight_lag = max(self.max_weight_lag, self.version - chunk["version"])
        return Harvest(chunk["agent_steps"], chunk["env_steps"], tuple(chunk["episode_returns"]), index, count,
                       tuple(chunk.get("episode_randomization", ())))

    def _observe(self, observed) -> None:
        """Feed the learner's running normalizer every observation the worker saw (one batch)."""
        if isinstance(observed, dict):
            observed = {k: np.array(v) for k, v in observed.items()}  # writable copies for torch
        else:
            observed = np.array(observed)
        normalizer = getattr(self.agent, "normalizer", None)
        if normalizer is not None:
            normalizer.update(flatten_obs(observed, 1).to(self.agent.device))
            return
        first = next(iter(observed.values())) if isinstance(observed, dict) else observed
        for i in range(len(first)):
            self.agent.observe({k: v[i] for k, v in observed.items()} if isinstance(observed, dict) else observed[i])

    def episodes_handled(self) -> None:
        pass

    def stats(self) -> dict:
        return {"num_actors": self.num_actors, "restarts": self.restarts,
                "transitions_per_actor": list(self.transitions_per_actor),
                "chunks_per_actor": list(self.chunks_per_actor), "weights_published": self.version + 1,
                "max_weight_lag": self.max_weight_lag,
                "noise_sigmas": [self.config.agent.exploration_sigma * s for s in self.scales]}


__all__ = ["RayCollector", "connect", "disconnect"]
