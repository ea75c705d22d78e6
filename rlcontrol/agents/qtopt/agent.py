"""The QT-Opt agent: Q networks, the CEM policy, exploration and the update schedule.

The losses are pure functions in `losses.py`; this module wires them up:

    acting:       a = CEM argmax_a Q_1(s, a) over the online network, with the *fixed* CEM
                  noise buffer (deterministic; the exported ONNX graph computes exactly this);
                  exploring: epsilon-greedy (uniform action) and optional Gaussian noise.
    every update: Bellman step on L(phi) (losses.critic_loss) towards the clipped double-Q
                  target (losses.critic_target: CEM over the target Q'_1 with *fresh* noise
                  from the agent's generator, valued by min_i Q'_i), then Polyak targets
                  phi' <- tau phi + (1 - tau) phi'.

QT-Opt's distributed machinery (Bellman updaters computing targets asynchronously, a lagged
second target network) collapses here into the shared off-policy loop: targets are computed
fresh from the Polyak-averaged target network at every update.

It has the interface of `DeterministicPolicyAgent` (act, observe, reset_noise, `noise.sigma`,
update -> metrics with "critic_loss", "q_mean", "priority", state dicts, policy()), so the
training loop, checkpoints, evaluation, Ray actor workers and the ONNX export use it unchanged.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from rlcontrol.agents.learner import flat_obs_dim, flatten_obs, make_normalizer
from rlcontrol.agents.qtopt import losses
from rlcontrol.agents.qtopt.networks import CandidateScoring, build_q_network
from rlcontrol.cem import CEM
from rlcontrol.config import QTOptConfig
from rlcontrol.exploration import EpsilonGreedyGaussian
from rlcontrol.optim import FusedAdam, clip_grad_norm
from rlcontrol.vision import frozen_latents


def replay_space(cfg: QTOptConfig, obs_spec):
    """(replay obs spec, raw -> replay-space encoder module or None, raw obs -> replay obs function).

    Without cfg.frozen_encoder, replay holds what the env gives. With it, the image part is
    replaced by the frozen encoder's latents (rlcontrol/vision/frozen_latents.py); ValueError
    (one line) for a missing or mismatched encoder file."""
    if not cfg.frozen_encoder:
        return obs_spec, None, lambda obs: obs
    image, encoder = frozen_latents.load_frozen_encoder(cfg.frozen_encoder, obs_spec)
    digest = frozen_latents.encoder_digest(encoder.encoder)
    spec = frozen_latents.replay_spec(obs_spec, image, encoder.latent_dim, digest)
    return spec, frozen_latents.ObservationEncoder(obs_spec, image, encoder), \
        frozen_latents.CachedLatents(obs_spec, image, encoder, digest)


class CEMPolicy(nn.Module):
    """Raw flat observation (B, D) -> normalized action (B, A) = CEM argmax_a Q_1(s, a).

    normalizer -> q.encode (once per state) -> `cem.iterations` rounds of scoring
    `cem.samples` candidates with Q_1 -> the best candidate. CEM uses its fixed noise buffer,
    so this is a deterministic function of its inputs and traces to an ONNX graph without
    random ops (rlcontrol/deploy/export.py exports it through agent.policy()).
    """

    def __init__(self, normalizer: nn.Module, q: CandidateScoring, cem: CEM, encoder: nn.Module | None = None):
        super().__init__()
        self.normalizer, self.q, self.cem = normalizer, q, cem
        # With a frozen pretrained image encoder: raw obs -> replay-space obs (latents) first.
        self.encoder = encoder

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.from_replay_space(self.to_replay_space(obs))

    def to_replay_space(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw flat observations -> what replay holds (latents in place of images, or obs itself)."""
        return obs if self.encoder is None else self.encoder(obs)

    def from_replay_space(self, x: torch.Tensor) -> torch.Tensor:
        """The action for observations already in replay space (latents in place of images)."""
        features = self.q.encode(self.normalizer(x))
        action, _ = self.cem(lambda c: self.q.score_candidates(features, c, member=0), x.shape[0])
        return action

    @torch.no_grad()
    def tie_margin(self, obs: torch.Tensor) -> torch.Tensor:
        """(B,) the smallest score gap at any of CEM's decisions for these observations, relative
        to max(1, |best score|) (cem_maximize's return_margin). Where it is at float rounding
        level, another floating-point implementation (the ONNX graph) may decide the other
        way: the export's parity check uses it to tell such ties from a wrong graph."""
        features = self.q.encode(self.normalizer(self.to_replay_space(obs)))
        _, score, margin = self.cem(lambda c: self.q.score_candidates(features, c, member=0), obs.shape[0],
                                    return_margin=True)
        return margin / score.abs().clamp(min=1.0)


class QTOptAgent:
    """QT-Opt on flat, dict or image observations (see the module docstring)."""

    algo = "qtopt"

    def __init__(self, cfg: QTOptConfig, obs_spec, action_dim: int, *, seed: int = 0, device: str = "cpu",
                 prioritized: bool = False, compile: bool = False):
        self.cfg, self.device = cfg, torch.device(device)
        self.obs_spec, self.action_dim, self.prioritized = obs_spec, action_dim, prioritized
        torch.manual_seed(seed)  # network initialisation is part of the run's seed
        # A frozen pretrained image encoder: replay, the normalizer and Q live in latent space.
        self.replay_obs_spec, self.encoder, self.replay_observation = replay_space(cfg, obs_spec)
        if self.encoder is not None:
            self.encoder.to(self.device)
        spec = self.replay_obs_spec
        self.normalizer = make_normalizer(cfg, spec).to(self.device)
        self.q = build_q_network(cfg, spec, flat_obs_dim(spec), action_dim).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        # The agent acts in normalized actions, [-1, 1]^A; the env maps them to physical units.
        self.cem = CEM(-torch.ones(action_dim), torch.ones(action_dim), samples=cfg.cem_samples,
                       elites=cfg.cem_elites, iterations=cfg.cem_iterations, init_std=cfg.cem_init_std,
                       seed=seed + 3).to(self.device)
        self._policy = CEMPolicy(self.normalizer, self.q, self.cem, self.encoder)
        self._params = list(self.q.parameters())
        self.opt = FusedAdam(self._params, lr=cfg.lr)
        self._targets = list(self.q_target.parameters())
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)  # target CEM noise
        self.num_updates = 0
        self._loss_fn = torch.compile(self._critic_loss, dynamic=False) if compile else self._critic_loss
        self.noise_rng = np.random.default_rng(seed + 2)
        self.noise = EpsilonGreedyGaussian(action_dim, cfg.epsilon, cfg.exploration_sigma, self.noise_rng)

    # ------------------------------------------------------------------ acting

    def observe(self, obs) -> None:
        """Feed one raw observation to the running normalizer (no-op unless obs_norm)."""
        if self.normalizer.enabled:
            self.normalizer.update(flatten_obs(self.replay_observation(obs), 0).to(self.device))

    def act(self, obs, explore: bool = False) -> np.ndarray:
        """One observation -> normalized action in [-1, 1]^A (numpy float32).

        Exploring, the epsilon draw comes first: a uniform step needs no CEM at all.
        """
        if explore and self.noise.explores_uniformly():
            return self.noise.uniform()
        with torch.inference_mode():
            x = flatten_obs(self.replay_observation(obs), 0).to(self.device).unsqueeze(0)
            action = self._policy.from_replay_space(x)[0].cpu().numpy()
        if explore:
            action = self.noise.perturb(action)
        return action.astype(np.float32, copy=False)

    def reset_noise(self) -> None:
        self.noise.reset()

    def policy(self) -> nn.Module:
        """The deterministic policy raw obs -> normalized action, as one module (for export)."""
        return copy.deepcopy(self._policy).eval()

    # ------------------------------------------------------------------ learning

    def _critic_loss(self, obs, action, reward, discount, next_obs, cem_noise, weights):
        """Loss, per-sample loss and TD errors for one batch (raw observations in, normalized here)."""
        c, cem = self.cfg, self.cem
        obs, next_obs = self.normalizer(obs), self.normalizer(next_obs)
        with torch.no_grad():
            mean, std = cem.initial(reward.shape[0])
            target = losses.critic_target(reward, discount, next_obs, self.q_target, cem_noise, cem.low, cem.high,
                                          cem.elites, mean, std, c.loss)
        logits = self.q(obs, action)  # (E, B)
        loss, per_sample, td = losses.critic_loss(logits, target, c.loss, weights)
        return loss, per_sample, td, losses.q_value(logits.detach(), c.loss).mean()

    def update(self, batch) -> dict[str, torch.Tensor]:
        """One gradient update from a replay Batch. Returns detached metric tensors (and
        "priority" (B,), the new replay priorities, for prioritized replay)."""
        obs, next_obs = flatten_obs(batch.obs, 1), flatten_obs(batch.next_obs, 1)
        # The target's CEM draws fresh noise from the agent's own (checkpointed) generator,
        # outside the (possibly compiled) loss, which stays a pure function of its inputs.
        cem_noise = self.cem.sample_noise(batch.reward.shape[0], self.generator)
        weights = batch.weights if self.prioritized else None
        loss, per_sample, td, q_mean = self._loss_fn(obs, batch.action, batch.reward, batch.discount, next_obs,
                                                     cem_noise, weights)
        grads = torch.autograd.grad(loss, self._params)
        if self.cfg.grad_clip_norm is not None:
            clip_grad_norm(grads, self.cfg.grad_clip_norm)
        self.opt.step(grads)
        with torch.no_grad():
            torch._foreach_lerp_(self._targets, self._params, self.cfg.tau)
        self.num_updates += 1
        metrics = {"critic_loss": loss.detach(), "q_mean": q_mean}
        if self.prioritized:
            metrics["priority"] = losses.priority(per_sample, td, self.cfg.loss)
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything needed to continue training bit-for-bit; loads with weights_only=True."""
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "cem": self.cem.state_dict(),
            "opt": self.opt.state_dict(),
            "num_updates": torch.tensor(self.num_updates),
            "generator": self.generator.get_state(),
        } | self._encoder_state()

    def load_state_dict(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.cem.load_state_dict(state["cem"])
        self.opt.load_state_dict(state["opt"])
        self.num_updates = int(state["num_updates"])
        self.generator.set_state(state["generator"])
        self._load_encoder_state(state)

    def policy_state_dict(self) -> dict:
        """Just what acting needs (normalizer, Q network, the CEM's fixed noise): the file eval
        and export read, and what distributed actor workers receive."""
        return {"normalizer": self.normalizer.state_dict(), "q": self.q.state_dict(),
                "cem": self.cem.state_dict()} | self._encoder_state()

    def load_policy_state_dict(self, state: dict) -> None:
        self.normalizer.load_state_dict(state["normalizer"])
        self.q.load_state_dict(state["q"])
        self.cem.load_state_dict(state["cem"])
        self._load_encoder_state(state)

    def _encoder_state(self) -> dict:
        """The frozen encoder's weights: the policy acts (and exports) with the encoder it was
        trained with, whatever happens to the file it was first read from."""
        return {} if self.encoder is None else {"encoder": self.encoder.state_dict()}

    def _load_encoder_state(self, state: dict) -> None:
        if self.encoder is not None:
            if "encoder" not in state:
                raise KeyError("encoder (the state has no frozen encoder weights)")
            self.encoder.load_state_dict(state["encoder"])
