"""The on-board learner of live fine-tuning: keep training a sim-trained agent on the robot's own
transitions, and export each improved policy for the policy node to swap in.

    learner = LiveLearner(run_dir, log_dir, out_dir, FinetuneSettings(...))
    while running:
        update = learner.run_once()   # read new log records, do the updates they allow, export when due
        if update: publish(update)    # the /policy/update message (ros_nodes.topics)

Where things come from and go to:

* Flat-vector and camera runs alike (a dict observation such as the lane task's 64x64 image plus
  speed and steering, through the run's image encoder: frozen or trained as its config says; the
  exported graph includes it, so it takes the camera frame).
* The agent (actor, critics, targets, optimizers, normalizer) starts from the sim run's latest
  checkpoint (``RUN_DIR/checkpoints``), not from ``policy.pt``: fine-tuning needs the critics. The
  observation normalizer is frozen (its statistics are baked into every exported graph, and the
  robot's first minutes of data would drag it around).
* Transitions come from the crash-safe transition log (:mod:`rlcontrol.replay.transition_log`)
  that ``ros_nodes.finetune_node`` appends to; :class:`~rlcontrol.replay.log_feed.ReplayFeeder`
  moves them into the run's replay type (prioritized when the run's config says so) as n-step
  transitions, skipping the records labelled ``intervention`` (commands the safety layer gave,
  not the policy). Only the robot's data is trained on: no simulated transitions are mixed in.
* The replay ratio is ``updates_per_transition`` updates per transition received after
  ``learning_starts`` transitions, done in chunks between polls of the log. Three settings keep
  a good sim policy from collapsing on its first minutes of narrow robot data: ``critic_warmup``
  (the first updates train only the critic, so the actor is not steered by a critic that has
  not yet seen the new dynamics), ``lr_scale`` and ``sim_replay_ratio`` (a share of every batch
  from the sim run's own replay, rlcontrol.replay.mixed.MixedSampler).
* Every ``export_every`` updates the actor is exported to ``OUT/policy-vNNNN.onnx`` (written
  atomically, the same graph and metadata ``rlcontrol export`` writes) together with a probe:
  observations from the robot's replay and the physical actions the PyTorch actor gives for
  them, which the policy node checks the new graph against before it swaps it in. The learner's
  whole state goes to ``OUT/learner.pt`` (atomically, loaded with ``weights_only=True``) at the
  same time, so a learner killed mid-training resumes from its last exported version and
  rebuilds its replay from the log.
* Version numbers are the policy node's: each push must be newer than what it runs. The learner
  allocates them (:meth:`LiveLearner.allocate_version`, also for the node's re-pushes of a best
  version), follows versions pushed by others (:meth:`LiveLearner.observe_version`), and a restarted
  learner starts above every version in ``learner.pt`` and ``finetune.jsonl``.

The session's logs (``OUT/episodes.jsonl``: one row per robot episode; ``OUT/finetune.jsonl``: the
learner's exports and the node's push, rollback, session_end and restore events) are read back by
:func:`episode_results` and :func:`restore_plan`, which apply the keep-best rule
(:mod:`sim2real.version_selection`) to a session whose learner is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rlcontrol.errors import UserError

LEARNER_STATE = "learner.pt"
METRICS_FILE = "finetune.jsonl"
EPISODES_FILE = "episodes.jsonl"
INTERVENTION_LABELS = ("terminated", "truncated")


@dataclass(frozen=True)
class FinetuneSettings:
    updates_per_transition: float = 1.0  # replay ratio on the robot's data
    learning_starts: int = 500  # transitions received before the first update
    export_every: int = 1000  # updates between exported policies
    probe_size: int = 32  # observations sent with each export for the policy node's parity check
    camera_probe_size: int = 4  # the same for camera policies (each 64x64 frame is ~12k JSON numbers)
    chunk: int = 25  # updates between polls of the log (keeps the learner responsive)
    max_updates: int = 0  # stop updating after this many (0: never)
    lr_scale: float = 1.0  # actor and critic learning rates times this (the run's own rates at 1)
    critic_warmup: int = 0  # first updates train the critic only (the actor waits for a critic of the new dynamics)
    sim_replay_ratio: float = 0.0  # share of each batch from the sim run's own replay (0: robot data only)
    policy_averaging: float = 0.005  # export a Polyak average of the actor, this rate per update (0: the actor itself)
    seed: int = 0
    threads: int = 1  # torch threads: the robot's control loop needs the other cores

    def __post_init__(self) -> None:
        checks = {"updates_per_transition": self.updates_per_transition > 0, "learning_starts": self.learning_starts >= 0,
                  "export_every": self.export_every >= 1, "probe_size": self.probe_size >= 1,
                  "camera_probe_size": self.camera_probe_size >= 1, "chunk": self.chunk >= 1,
                  "max_updates": self.max_updates >= 0, "threads": self.threads >= 1,
                  "lr_scale": self.lr_scale > 0, "critic_warmup": self.critic_warmup >= 0,
                  "sim_replay_ratio": 0.0 <= self.sim_replay_ratio < 1.0,
                  "policy_averaging": 0.0 <= self.policy_averaging <= 1.0}
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"finetune: {name} out of range: {getattr(self, name)!r}")


def _load_agent(run_dir: Path):
    """(config, env spec, agent) with the run's full agent state (critics and optimizers too)."""
    from rlcontrol.agents import make_agent
    from rlcontrol.config import load_config
    from rlcontrol.training import builders
    from rlcontrol.training.checkpoint import CheckpointManager

    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    if config.algo not in ("td3", "ddpg", "sac"):
        raise UserError(f"finetune: {run_dir} is a {config.algo} run; live fine-tuning trains TD3, DDPG or SAC runs")
    ckpts = CheckpointManager(run_dir / "checkpoints")
    latest = ckpts.latest()
    if latest is None:
        raise UserError(f"{run_dir} has no complete checkpoint: fine-tuning needs the critics, which policy.pt lacks")
    env = builders.make_env(config.env, config.seed, evaluation=True)
    spec = env.spec
    env.close()
    agent = make_agent(config, spec)
    agent_state, replay_path, _ = ckpts.load(latest)
    agent.load_state_dict(agent_state)
    return config, spec, agent, replay_path


class LiveLearner:
    """Trains ``run_dir``'s agent on the transition log at ``log_dir``; exports into ``out_dir``."""

    def __init__(self, run_dir: str | Path, log_dir: str | Path, out_dir: str | Path,
                 settings: FinetuneSettings | None = None) -> None:
        from rlcontrol.training import builders
        from rlcontrol.training.checkpoint import load_torch

        self.settings = settings or FinetuneSettings()
        torch.set_num_threads(self.settings.threads)
        self.run_dir, self.log_dir, self.out_dir = Path(run_dir), Path(log_dir), Path(out_dir)
        self.config, self.spec, self.agent, sim_replay_path = _load_agent(self.run_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.version, self.updates = 0, 0
        self._version_lock = threading.Lock()  # the node's thread re-pushes while this one exports
        state_path = self.out_dir / LEARNER_STATE
        resumed = state_path.exists()
        if resumed:  # a restarted learner continues from its last export
            saved = load_torch(state_path)
            try:
                self.agent.load_state_dict(saved["agent"])
                self.version, self.updates = int(saved["version"]), int(saved["updates"])
                average = saved.get("policy_average")
            except (KeyError, RuntimeError, TypeError) as exc:
                raise UserError(f"{state_path} does not fit {self.run_dir}: {str(exc).splitlines()[0]}") from None
        else:
            average = None
        self.policy_average = PolicyAverage(self.agent.actor, self.settings.policy_averaging, average)
        # Versions pushed after the last export (a rollback's re-push, a restore) are in the logs only.
        self.version = max(self.version, logged_max_version(self.out_dir))
        # Learning rates from the run's config (not from the optimizer state, which a resumed
        # learner's file also holds), so lr_scale applies once.
        self.agent.actor_opt.lr = self.config.agent.actor_lr * self.settings.lr_scale
        self.agent.critic_opt.lr = self.config.agent.critic_lr * self.settings.lr_scale
        self.replay = builders.make_replay(self.config, self.spec)
        self.sampler = self.replay
        if self.settings.sim_replay_ratio > 0:
            from rlcontrol.replay.mixed import MixedSampler, load_replay_file

            try:
                sim_replay = load_replay_file(sim_replay_path)
            except (OSError, ValueError) as exc:
                raise UserError(f"sim_replay_ratio: cannot read the run's replay {sim_replay_path}: {exc}") from None
            self.sampler = MixedSampler(self.replay, sim_replay, self.settings.sim_replay_ratio)
        self.rng = np.random.default_rng(self.settings.seed + self.version)
        self.feeder = None  # made once the log exists (the node creates it on its first transition)
        self.undone: set[int] = set()  # episodes withdrawn from the replay (undo records in the log)
        self.last_metrics: dict = {}
        self.session_updates = 0
        # A resumed learner owes updates only for transitions logged after it came back: those
        # before were trained on by the learner it continues (their replay ratio was already spent).
        self.session_start_transitions: int | None = None if resumed else 0
        self.started = time.monotonic()

    # ------------------------------------------------------------------ the loop body

    def _open_feeder(self) -> bool:
        from rlcontrol.replay.log_feed import ReplayFeeder
        from rlcontrol.replay.log_format import list_segments

        if self.feeder is None and self.log_dir.is_dir() and list_segments(self.log_dir):
            self.feeder = ReplayFeeder(self.log_dir, self.replay, n_step=self.config.replay.n_step,
                                       gamma=self.config.agent.gamma, skip_interventions=True, excluded=self.undone)
        return self.feeder is not None

    def _drop_undone_episodes(self) -> None:
        """An operator withdrew episodes ("undo last episode"): rebuild the replay from the whole
        log without them, as a restarted learner would (prioritized replay restarts its priorities
        at the maximum). Rare and human-paced, so a rebuild beats row surgery in four replay kinds."""
        from rlcontrol.replay.mixed import MixedSampler
        from rlcontrol.training import builders

        self.undone |= self.feeder.undone
        self.replay = builders.make_replay(self.config, self.spec)
        if isinstance(self.sampler, MixedSampler):
            self.sampler = MixedSampler(self.replay, self.sampler.offline, self.sampler.ratio)
        else:
            self.sampler = self.replay
        self.feeder = None
        self._open_feeder()
        self.feeder.poll()
        self._log({"event": "undo", "episodes": sorted(self.undone), "replay": len(self.replay),
                   "transitions": self.transitions, "updates": self.updates})

    @property
    def transitions(self) -> int:
        """Policy transitions taken from the log so far (interventions and withdrawn episodes excluded)."""
        f = self.feeder
        return 0 if f is None else f.records - f.skipped - f.left_out - f.undos

    def allowed_updates(self) -> int:
        """Updates the replay ratio allows now, in this session: per transition received after
        ``learning_starts``, and for a resumed learner (learner.pt in OUT) only per transition logged
        after it resumed, so a session that continues a learner does not train its log over again."""
        s = self.settings
        received = self.transitions
        batch = self.config.agent.batch_size
        ready = self.sampler.ready(batch) if self.sampler is not self.replay else len(self.replay) >= batch
        if received < max(s.learning_starts, 1) or not ready or self.session_start_transitions is None:
            return 0
        counted_from = max(s.learning_starts, self.session_start_transitions)
        allowed = int(s.updates_per_transition * max(0, received - counted_from)) - self.session_updates
        if s.max_updates:
            allowed = min(allowed, s.max_updates - self.updates)
        return max(0, allowed)

    def run_once(self) -> dict | None:
        """Poll the log, do up to ``chunk`` updates, and export when due. Returns the
        /policy/update message of a new export, else None. Never blocks: with nothing to do it
        returns at once (the caller sleeps)."""
        if not self._open_feeder():
            return None
        self.feeder.poll()
        if self.session_start_transitions is None:  # a resumed learner's first look at the log
            self.session_start_transitions = self.transitions
        if self.feeder.undone - self.undone:
            self._drop_undone_episodes()
        todo = min(self.settings.chunk, self.allowed_updates())
        prioritized = self.config.replay.prioritized
        for _ in range(todo):
            batch = self.sampler.sample(self.config.agent.batch_size)
            metrics = self.agent.update(batch, train_actor=self.updates >= self.settings.critic_warmup)
            if prioritized:
                self.sampler.update_priorities(batch.indices, metrics["priority"])
            self.last_metrics = metrics
            self.policy_average.update()
            self.updates += 1
            self.session_updates += 1
            if self.updates % self.settings.export_every == 0:
                return self.export()
        return None

    # ------------------------------------------------------------------ export

    def export(self) -> dict:
        """Write the actor as policy-vNNNN.onnx and the learner state; returns the update message."""
        from rlcontrol.deploy.export import (
            FLAT_INPUT,
            build_metadata,
            deployed_module,
            graph_shapes,
            to_onnx_bytes,
        )
        from rlcontrol.training.atomic import atomic_write
        from rlcontrol.training.checkpoint import save_torch

        version = self.allocate_version()
        probe = self.probe_observations()
        with self.policy_average.swapped_in():  # the exported actor: the average when averaging
            weights = self.agent.policy_state_dict()
            digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in _tensors(weights))).hexdigest()
            meta = build_metadata(self.config, self.spec, digest,
                                  extra={"source_run": self.run_dir.resolve().name, "finetune_version": version,
                                         "finetune_updates": self.updates,
                                         "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            data = to_onnx_bytes(deployed_module(self.agent, self.spec, meta), graph_shapes(meta), meta)
            actions = _physical_actions(self.agent, self.spec, probe)
        path = self.out_dir / f"policy-v{version:04d}.onnx"
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        state = {"agent": self.agent.state_dict(), "version": version, "updates": self.updates,
                 "policy_average": self.policy_average.state()}
        atomic_write(self.out_dir / LEARNER_STATE, lambda tmp: save_torch(state, tmp))
        scalars = {k: float(v.mean()) for k, v in self.last_metrics.items() if k != "priority"}
        self._log({"version": version, "updates": self.updates, "transitions": self.transitions,
                   "replay": len(self.replay), "wall_s": round(time.monotonic() - self.started, 3), **scalars})
        return {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "version": version,
                "probe": {"inputs": {k: v.tolist() for k, v in probe.items()} if isinstance(probe, dict)
                          else {FLAT_INPUT: probe.tolist()}, "actions": actions.tolist()}, "atol": 1e-4}

    def allocate_version(self) -> int:
        """The next version number (for an export, or a re-push of an earlier version's file)."""
        with self._version_lock:
            self.version += 1
            return self.version

    def observe_version(self, version: int | None) -> None:
        """The policy node runs ``version`` (pushed by anyone): later exports must be newer."""
        if version is not None:
            with self._version_lock:
                self.version = max(self.version, int(version))

    def probe_observations(self) -> np.ndarray | dict[str, np.ndarray]:
        """Observations the robot really produced (from the replay), so the parity check covers
        the states the new policy will see; random ones before there is data. Camera policies
        (dict observations) get ``camera_probe_size`` of them: each frame is ~12k numbers of JSON."""
        from rlcontrol.deploy.export import random_observations

        camera = isinstance(self.spec.observation, Mapping)
        n = self.settings.camera_probe_size if camera else self.settings.probe_size
        if not len(self.replay):
            return random_observations(self.spec.observation, n, self.rng, scale=1.0)
        obs = self.replay.sample(min(n, len(self.replay))).obs
        if camera:  # images stay uint8, everything else becomes float32
            return {k: _numpy(v) if _numpy(v).dtype == np.uint8 else _numpy(v).astype(np.float32)
                    for k, v in obs.items()}
        return np.asarray(_numpy(obs), dtype=np.float32)

    def _log(self, row: dict) -> None:
        append_jsonl(self.out_dir / METRICS_FILE, row, sync=False)

    def summary(self) -> dict:
        return {"version": self.version, "updates": self.updates, "transitions": self.transitions,
                "replay": len(self.replay), "settings": asdict(self.settings)}


class PolicyAverage:
    """A Polyak average of the actor's parameters, ``avg <- (1 - rate) avg + rate actor`` after
    every update, for export: the policy the robot runs then moves smoothly even while single
    updates on a few minutes of robot data swing the actor (the critic's own target networks are
    averaged the same way). ``rate`` 0 keeps no copy and exports the actor itself."""

    def __init__(self, actor: torch.nn.Module, rate: float, saved: list | None = None) -> None:
        self.rate = float(rate)
        self.params = [p for p in actor.parameters()]
        self.average = None
        if self.rate > 0:
            self.average = [p.detach().clone() for p in self.params]
            if saved is not None:  # a restarted learner goes on with its average
                if len(saved) != len(self.params) or any(a.shape != p.shape for a, p in zip(saved, self.params)):
                    raise UserError("learner.pt: its policy average does not fit the run's actor")
                for a, v in zip(self.average, saved):
                    a.copy_(v)

    @torch.no_grad()
    def update(self) -> None:
        if self.average is not None:
            torch._foreach_lerp_(self.average, [p.detach() for p in self.params], self.rate)

    def state(self) -> list | None:
        return None if self.average is None else [a.clone() for a in self.average]

    @contextlib.contextmanager
    def swapped_in(self):
        """The actor holds the averaged weights inside the block, its own ones again after it."""
        if self.average is None:
            yield
            return
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, own):
                    p.copy_(o)


def _tensors(state: Mapping):
    for value in state.values():
        if isinstance(value, Mapping):
            yield from _tensors(value)
        elif isinstance(value, torch.Tensor):
            yield value


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _physical_actions(agent, spec, obs) -> np.ndarray:
    from rlcontrol.deploy.export import torch_physical_actions

    return torch_physical_actions(agent, spec, obs)


# ---------------------------------------------------------------------- the session's logs


def append_jsonl(path: Path, row: dict, *, sync: bool = True) -> None:
    """One JSON line appended (the logs are append-only); ``sync``: fsync, for the rare event rows."""
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The rows of an append-only JSON-lines log; a torn last line (kill -9 mid-write) is skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def logged_max_version(out_dir: Path) -> int:
    """The highest version any row of finetune.jsonl or episodes.jsonl names (0 if none)."""
    best = 0
    for name in (METRICS_FILE, EPISODES_FILE):
        for row in read_jsonl(Path(out_dir) / name):
            for key in ("version", "policy_version"):
                value = row.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    best = max(best, value)
    return best


def episode_results(out_dir: Path):
    """OUT/episodes.jsonl -> [EpisodeResult] for the keep-best rule: whole episodes (one version from
    start to end) without an e-stop. Rows of older sessions (no ``whole``, std or sha256) count, by
    version number, with an unknown std."""
    from sim2real.version_selection import EpisodeResult

    out_dir = Path(out_dir)
    results = []
    for row in read_jsonl(out_dir / EPISODES_FILE):
        version, ret = row.get("policy_version"), row.get("return")
        if not isinstance(version, int) or isinstance(version, bool) or not isinstance(ret, (int, float)):
            continue
        if row.get("whole") is False or row.get("intervened"):
            continue
        path = row.get("policy_path")
        if not path and (out_dir / f"policy-v{version:04d}.onnx").exists():
            path = str((out_dir / f"policy-v{version:04d}.onnx").resolve())
        std = row.get("exploration_std")
        results.append(EpisodeResult(version=version, ret=float(ret),
                                     exploration_std=float(std) if isinstance(std, (int, float)) else None,
                                     sha256=row.get("policy_sha256") or None, path=path))
    return results


def update_message(path: str | Path, sha256: str | None, version: int, *, probe_size: int = 16,
                   seed: int = 0) -> dict:
    """The /policy/update message that runs an earlier version's file again under a new ``version``
    number: the file is checked against ``sha256`` and its probe actions come from the file itself
    (it passed the PyTorch parity probe when it was first pushed; this probe checks the file and the
    node's session agree). UserError when the file is gone or changed."""
    from rlcontrol.deploy import runtime

    policy = runtime.load(path, expected_sha256=sha256, warmup=0)
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in policy.metadata.observations:
        if spec.dtype == "uint8":
            inputs[spec.name] = rng.integers(0, 256, (probe_size, *spec.shape), dtype=np.uint8)
        else:
            inputs[spec.name] = rng.standard_normal((probe_size, *spec.shape)).astype(spec.dtype)
    actions = np.asarray(policy.act_batch(inputs), dtype=np.float64)
    return {"path": str(Path(path).resolve()), "sha256": policy.sha256, "version": int(version),
            "probe": {"inputs": {k: v.tolist() for k, v in inputs.items()}, "actions": actions.tolist()},
            "atol": 1e-4}


def restore_plan(out_dir: Path, settings=None):
    """(decision, path, sha256) of the best version by the keep-best rule over OUT's logs, for
    ``rlcontrol finetune --restore-best``; UserError when no version is eligible or its file is gone."""
    from sim2real.version_selection import SelectionSettings, decide

    out_dir = Path(out_dir)
    settings = settings or SelectionSettings()
    if not (out_dir / EPISODES_FILE).exists():
        raise UserError(f"{out_dir / EPISODES_FILE} not found: no fine-tuning session logged episodes there")
    episodes = episode_results(out_dir)
    decision = decide(episodes, settings, final=True)
    best = decision.best
    if best is None:
        counts = ", ".join(f"v{row['version']}: {row['episodes']}" for row in decision.table) or "no episodes"
        raise UserError(f"nothing to restore: no version has {settings.min_episodes} whole episodes at the last "
                        f"exploration std in {out_dir / EPISODES_FILE} ({counts})")
    if not best.path:
        raise UserError(f"the best version {best.name} has no file on record (episodes.jsonl names none and "
                        f"{out_dir / f'policy-v{best.label:04d}.onnx'} does not exist)")
    if not Path(best.path).is_file():
        raise UserError(f"the best version {best.name}'s file {best.path} is gone")
    return decision, best.path, best.sha256
