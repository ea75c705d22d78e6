"""The actor-critic agent (DDPG, TD3, D4PG, SAC): networks, optimizers and the update schedule.

The losses are pure functions in `ddpg/`, `td3/`, `d4pg/` and `sac/losses.py`; this module only
wires them to networks and applies the schedule:

    every update:           critic step on L(phi) with the algorithm's target
    every `policy_delay`:   actor step on -Q_1(s, mu(s)) (SAC: alpha log pi - Q, then the
                            temperature step), then Polyak targets
                            theta' <- tau theta + (1 - tau) theta'   (actor and critic; SAC's
                            target uses the current actor, so only its critics have targets)

DDPG is policy_delay=1, one critic, the plain target; TD3 is policy_delay=2, two
critics, the smoothed clipped-double-Q target; D4PG is DDPG's schedule with a categorical
critic (num_atoms outputs), the projected n-step target, a cross-entropy critic loss whose
per-sample value is the new replay priority, and the actor following E[Z] (d4pg/losses.py).
SAC is policy_delay=1 with a tanh-Gaussian actor (networks/actor.py) that acts by sampling and
exports its deterministic tanh(mean).

Critic options shared by all four (config.DDPGConfig): an ensemble of n_critics with REDQ's
random target subset (agents/ensemble_targets.py), LayerNorm, DroQ's dropout (masks from the
agent's checkpointed generator) and SimBa's residual blocks (networks/critic.py). A high
update-to-data ratio is the loop's train.updates_per_step.

Networks are flat MLPs, or split networks (networks/split.py) when `agent.encoders` names
observation parts with their own encoders; the algorithms do not know the difference. Camera
images need an image encoder (conv2d, or a pretrained VAE: networks/image_encoders.py); the
normalizer passes their columns through raw, and a frozen VAE encoder's parameters (no
requires_grad) get no optimizer state, no gradients and no Polyak update.

Speed (the target is >= 2x Stable-Baselines3 TD3 on a 2-core CPU): both critics are one
batched matmul per layer (EnsembleCritic), Adam is one fused kernel call with gradients
passed as lists (rlcontrol/optim.py: no .grad fields, no zero_grad), the target update is one
`_foreach_lerp_`, the actor step asks autograd for actor gradients only, and metrics stay
tensors so nothing forces a host sync per step.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from rlcontrol.agents.d4pg import losses as d4pg_losses
from rlcontrol.agents.ddpg import losses as ddpg_losses
from rlcontrol.agents.ensemble_targets import subset_mask
from rlcontrol.agents.sac import losses as sac_losses
from rlcontrol.agents.static_update import StaticUpdates
from rlcontrol.agents.td3 import losses as td3_losses
from rlcontrol.config import D4PGConfig, DDPGConfig, SACConfig, TD3Config
from rlcontrol.exploration import GaussianNoise, OrnsteinUhlenbeckNoise
from rlcontrol.networks import (
    DeterministicActor,
    EnsembleCritic,
    GaussianActor,
    SplitActor,
    SplitEnsembleCritic,
    SplitMLP,
)
from rlcontrol.networks.actor import mlp
from rlcontrol.networks.image_encoders import check_images_have_encoders, image_parts
from rlcontrol.networks.split import part_slices
from rlcontrol.normalization import PartialNormalizer, RunningNormalizer
from rlcontrol.optim import FusedAdam, clip_grad_norm


def flat_obs_dim(obs_spec) -> int:
    """Size of the flat vector the networks see: a shape, an ArraySpec, or a dict of them."""
    if isinstance(obs_spec, Mapping):
        return sum(flat_obs_dim(s) for s in obs_spec.values())
    shape = getattr(obs_spec, "shape", obs_spec)
    return int(np.prod(shape)) if len(shape) else 1


def flatten_obs(obs, batch_dims: int) -> torch.Tensor:
    """Concatenate a dict of observation tensors (in spec order) into one float32 vector.

    A flat network sees dict observations as one vector; split networks (a later issue)
    consume the dict directly.
    """
    if isinstance(obs, Mapping):
        parts = [torch.as_tensor(v) for v in obs.values()]
        return torch.cat([p.reshape(*p.shape[:batch_dims], -1) for p in parts], dim=-1).float()
    return torch.as_tensor(obs).float()


def make_normalizer(cfg, obs_spec) -> RunningNormalizer:
    """Running statistics over the flat vector, or over its state parts only when it holds images:
    image columns go through raw (the image encoders scale them by 1/255). `cfg`: any agent config
    with obs_norm and obs_norm_clip (the DDPG family's and QT-Opt's)."""
    images = image_parts(obs_spec)
    if not images:
        return RunningNormalizer(flat_obs_dim(obs_spec), clip=cfg.obs_norm_clip, enabled=cfg.obs_norm)
    segments = [(a, b, name not in images) for name, (a, b, _) in part_slices(obs_spec).items()]
    # Images only: nothing to standardize (PartialNormalizer cannot hold zero columns' statistics).
    enabled = cfg.obs_norm and len(images) < len(segments)
    return PartialNormalizer(segments, clip=cfg.obs_norm_clip, enabled=enabled)


def build_networks(cfg: DDPGConfig, obs_spec, action_dim: int, critic_out: int,
                   stochastic: bool = False) -> tuple[nn.Module, nn.Module]:
    """(actor, critic) for `cfg`: flat MLPs, or split networks when cfg.encoders names parts.
    `stochastic`: SAC's tanh-Gaussian actor (its body outputs mean and log-std, 2A numbers)."""
    check_images_have_encoders(obs_spec, cfg.encoders)
    critic_options = {"layer_norm": cfg.critic_layer_norm, "dropout": cfg.critic_dropout}
    if cfg.encoders and not isinstance(obs_spec, Mapping):
        raise ValueError("agent.encoders (split networks) needs named observation parts: set env.obs_format: dict")
    flat = not cfg.encoders
    if flat:
        obs_dim = flat_obs_dim(obs_spec)
        critic = EnsembleCritic(obs_dim, action_dim, cfg.critic_hidden, ensemble_size=cfg.n_critics, out_dim=critic_out,
                                residual_blocks=cfg.critic_residual_blocks, **critic_options)
    else:
        critic = SplitEnsembleCritic(obs_spec, cfg.encoders, action_dim, cfg.critic_hidden,
                                     ensemble_size=cfg.n_critics, out_dim=critic_out, **critic_options)
    if not stochastic:
        if flat:
            return DeterministicActor(obs_dim, action_dim, cfg.actor_hidden, layer_norm=cfg.actor_layer_norm), critic
        return SplitActor(obs_spec, cfg.encoders, action_dim, cfg.actor_hidden, layer_norm=cfg.actor_layer_norm), critic
    # SAC: the same bodies, with 2A outputs (mean and log-std), under the tanh-Gaussian head.
    if flat:
        body = mlp(obs_dim, cfg.actor_hidden, 2 * action_dim, layer_norm=cfg.actor_layer_norm)
    else:
        body = SplitMLP(obs_spec, cfg.encoders, 2 * action_dim, cfg.actor_hidden, layer_norm=cfg.actor_layer_norm)
    return GaussianActor(body, action_dim, cfg.log_std_min, cfg.log_std_max), critic


def trainable_pairs(online: nn.Module, target: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters of `online` that require grad, the matching ones of `target`, a deepcopy of `online`)."""
    pairs = [(p, t) for p, t in zip(online.parameters(), target.parameters(), strict=True) if p.requires_grad]
    return [p for p, _ in pairs], [t for _, t in pairs]


class DeterministicPolicyAgent:
    """DDPG, TD3, D4PG or SAC, depending on `algo` and its config. (The name is the family's
    oldest member's: SAC's policy is stochastic while it trains, deterministic once exported.)"""

    def __init__(self, algo: str, cfg: DDPGConfig, obs_spec, action_dim: int, *, seed: int = 0,
                 device: str = "cpu", prioritized: bool = False, compile: bool = False, cuda_graphs: bool = False):
        self.algo, self.cfg, self.device = algo, cfg, torch.device(device)
        self.obs_spec = obs_spec
        self.action_dim = action_dim
        self.prioritized = prioritized
        torch.manual_seed(seed)  # network initialisation is part of the run's seed
        self.normalizer = make_normalizer(cfg, obs_spec).to(self.device)
        self.distributional = algo == "d4pg"
        self.stochastic = algo == "sac"
        if self.distributional:
            assert isinstance(cfg, D4PGConfig)
            self.atoms = d4pg_losses.support(cfg.num_atoms, cfg.v_min, cfg.v_max, device=self.device)
        actor, critic = build_networks(cfg, obs_spec, action_dim, cfg.num_atoms if self.distributional else 1,
                                       stochastic=self.stochastic)
        self.actor, self.critic = actor.to(self.device), critic.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        # DroQ's dropout masks come from the agent's generator, so a checkpoint resumes them exactly.
        self.critic.dropout_generator = self.critic_target.dropout_generator = self.generator
        # Only parameters that train: a frozen (pretrained) encoder's are left out of the optimizers,
        # the gradients and the Polyak update (its target copy equals it and stays so).
        self._actor_params, actor_targets = trainable_pairs(self.actor, self.actor_target)
        self._critic_params, critic_targets = trainable_pairs(self.critic, self.critic_target)
        self.actor_opt = FusedAdam(self._actor_params, lr=cfg.actor_lr)
        self.critic_opt = FusedAdam(self._critic_params, lr=cfg.critic_lr)
        if self.stochastic:
            assert isinstance(cfg, SACConfig)
            # SAC's target samples the current policy: the actor's target copy is never read, so it is not tracked.
            self._online, self._targets = list(self._critic_params), critic_targets
            self.log_alpha = torch.full((1,), math.log(cfg.init_alpha), device=self.device, requires_grad=True)
            self.alpha_opt = FusedAdam([self.log_alpha], lr=cfg.alpha_lr)
            self.target_entropy = float(-action_dim if cfg.target_entropy is None else cfg.target_entropy)
        else:
            self._online = self._actor_params + self._critic_params
            self._targets = actor_targets + critic_targets
        self.target_subset = cfg.target_critics or cfg.n_critics
        self.num_updates = 0
        self._target_fn = self._make_target_fn()
        self._critic_loss_fn = self._critic_loss
        self._actor_loss_fn = self._actor_loss
        if compile:
            # Fuses the elementwise work around the matmuls and drops per-op dispatch. On the
            # 2-core CPU this was 1.19x on a replayed set of batches but no measurable gain in
            # the full loop, where matmuls dominate (docs/benchmarks.md). It may pay off on a GPU,
            # where per-op launch overhead dominates (not measured yet). Compiling takes ~20 s.
            self._critic_loss_fn = torch.compile(self._critic_loss, dynamic=False)
            self._actor_loss_fn = torch.compile(self._actor_loss, dynamic=False)
        self.noise_rng = np.random.default_rng(seed + 2)
        self.noise = self._make_noise()
        # train.cuda_graphs: each update replays a captured CUDA graph (rlcontrol/agents/static_update.py).
        self.static_updates = StaticUpdates(self, capture=True) if cuda_graphs else None

    # ------------------------------------------------------------------ construction

    def _make_target_fn(self):
        if self.stochastic:
            return sac_losses.critic_target
        if self.distributional:
            return functools.partial(d4pg_losses.critic_target, atoms=self.atoms)
        if self.algo == "td3":
            assert isinstance(self.cfg, TD3Config)
            return functools.partial(td3_losses.critic_target, noise_std=self.cfg.target_noise,
                                     noise_clip=self.cfg.target_noise_clip)
        return ddpg_losses.critic_target

    def _make_noise(self):
        """Behaviour noise: TD3's Gaussian or DDPG's OU on mu(s); for SAC, the standard normals
        (times exploration_sigma) that sample its own Gaussian policy."""
        c = self.cfg
        if c.exploration == "ou":
            return OrnsteinUhlenbeckNoise(self.action_dim, c.exploration_sigma, self.noise_rng, theta=c.ou_theta, dt=c.ou_dt)
        return GaussianNoise(self.action_dim, c.exploration_sigma, self.noise_rng)

    # ------------------------------------------------------------------ acting

    def observe(self, obs) -> None:
        """Feed one raw observation to the running normalizer (no-op unless obs_norm)."""
        if self.normalizer.enabled:
            self.normalizer.update(flatten_obs(obs, 0).to(self.device))

    def act(self, obs, explore: bool = False) -> np.ndarray:
        """One observation -> normalized action in [-1, 1]^A (numpy float32).

        Runs every env step between updates, so it stays lean: inference mode (no autograd
        bookkeeping at all) and no normalizer call when normalization is off. SAC explores by
        sampling tanh(m + sigma * xi), xi from the noise object (its own checkpointed RNG).
        """
        with torch.inference_mode():
            x = flatten_obs(obs, 0).to(self.device).unsqueeze(0)
            if self.normalizer.enabled:
                x = self.normalizer(x)
            if self.stochastic:
                mean, log_std = self.actor.distribution(x)
                if explore:
                    xi = torch.from_numpy(self.noise()).to(self.device)
                    mean = mean + log_std.exp() * xi
                return torch.tanh(mean)[0].cpu().numpy().astype(np.float32, copy=False)
            action = self.actor(x)[0].cpu().numpy()
        if explore:
            action = np.clip(action + self.noise(), -1.0, 1.0)
        return action.astype(np.float32, copy=False)

    def reset_noise(self) -> None:
        """Call at every episode start (OU noise restarts from its mean)."""
        self.noise.reset()

    def policy(self) -> nn.Module:
        """The deterministic policy raw obs -> normalized action, as one module (for export)."""
        return nn.Sequential(copy.deepcopy(self.normalizer), copy.deepcopy(self.actor)).eval()

    # ------------------------------------------------------------------ learning

    @property
    def alpha(self) -> torch.Tensor:
        """SAC's entropy temperature exp(log alpha), detached (a (1,) tensor)."""
        return self.log_alpha.detach().exp()

    def _critic_loss(self, obs, action, reward, discount, next_obs, std_normal, weights, subset):
        """Critic loss and TD errors for one batch (raw observations in, normalized here)."""
        obs, next_obs = self.normalizer(obs), self.normalizer(next_obs)
        if self.distributional:
            with torch.no_grad():
                target_probs = self._target_fn(reward, discount, next_obs, self.actor_target, self.critic_target,
                                               subset_mask=subset)
            logits = self.critic(obs, action)
            loss, per_sample = d4pg_losses.critic_loss(logits, target_probs, weights)
            return loss, per_sample, d4pg_losses.expected_value(logits.detach(), self.atoms).mean()
        with torch.no_grad():
            if self.stochastic:
                target = self._target_fn(reward, discount, next_obs, self.actor, self.critic_target, std_normal[0],
                                         self.alpha, subset)
            else:
                target = self._target_fn(reward, discount, next_obs, self.actor_target, self.critic_target,
                                         std_normal, subset)
        q = self.critic(obs, action)[..., 0]
        loss, td = ddpg_losses.critic_loss(q, target, weights, huber=self.cfg.huber)
        return loss, td, q.detach().mean()

    def _actor_loss(self, obs, std_normal):
        """(actor loss, SAC's log pi of the sampled actions or None)."""
        obs, reduce = self.normalizer(obs), self.cfg.actor_q
        if self.stochastic:
            return sac_losses.actor_loss(self.actor, self.critic, obs, std_normal[1], self.alpha, reduce)
        if self.distributional:
            return d4pg_losses.actor_loss(self.actor, self.critic, obs, self.atoms, reduce), None
        return ddpg_losses.actor_loss(self.actor, self.critic, obs, reduce), None

    def update(self, batch, train_actor: bool = True) -> dict[str, torch.Tensor]:
        """One gradient update from a replay Batch. Returns detached metric tensors
        (and "priority" (B,), the new replay priorities, for prioritized replay).
        ``train_actor=False``: the critic only (targets still follow), as live fine-tuning does
        first, so the actor is not steered by a critic that has not yet seen the new dynamics."""
        obs, next_obs = flatten_obs(batch.obs, 1), flatten_obs(batch.next_obs, 1)
        # Every random draw of the update (TD3's target smoothing, SAC's two policy samples, REDQ's
        # subset) comes from the agent's own generator (checkpointed), outside the (possibly compiled
        # or graphed) losses, so they stay pure functions of their inputs.
        std_normal = None
        if self.algo == "td3":  # DDPG's target has no smoothing noise: draw none
            std_normal = torch.randn(batch.action.shape, generator=self.generator, device=self.device)
        elif self.stochastic:  # [0]: the next action in the target, [1]: the actor loss's action
            std_normal = torch.randn((2, *batch.action.shape), generator=self.generator, device=self.device)
        subset = subset_mask(self.cfg.n_critics, self.target_subset, self.generator, self.device)
        weights = batch.weights if self.prioritized else None
        inputs = (obs, batch.action, batch.reward, batch.discount, next_obs, std_normal, weights, subset)
        actor_step = (self.num_updates + 1) % self.cfg.policy_delay == 0
        if self.static_updates is not None and train_actor:
            metrics = self.static_updates.run(inputs, actor_step)
        else:
            metrics = self._update_step(*inputs, actor_step=actor_step, train_actor=train_actor)
        self.num_updates += 1
        return metrics

    def _update_step(self, obs, action, reward, discount, next_obs, std_normal, weights, subset=None, *,
                     actor_step: bool, train_actor: bool = True) -> dict[str, torch.Tensor]:
        """The update on tensors only (no host syncs, no Python state but the step kind), so a
        CUDA graph can capture it: critic step; with `actor_step`, actor step (SAC: and the
        temperature step) and Polyak targets."""
        c = self.cfg
        loss, td, q_mean = self._critic_loss_fn(obs, action, reward, discount, next_obs, std_normal, weights, subset)
        grads = torch.autograd.grad(loss, self._critic_params)
        if c.grad_clip_norm is not None:
            clip_grad_norm(grads, c.grad_clip_norm)
        self.critic_opt.step(grads)
        metrics = {"critic_loss": loss.detach(), "q_mean": q_mean}
        if self.prioritized:
            # TD3/DDPG/SAC: |TD error|, D4PG: the per-sample cross-entropy; each a mean over the critics.
            metrics["priority"] = td.mean(dim=0) if self.distributional else td.abs().mean(dim=0)
        if actor_step:
            if train_actor:
                a_loss, log_prob = self._actor_loss_fn(obs, std_normal)
                # Gradients w.r.t. the actor only: the critic's weights get none (and cost nothing).
                grads = torch.autograd.grad(a_loss, self._actor_params)
                if c.grad_clip_norm is not None:
                    clip_grad_norm(grads, c.grad_clip_norm)
                self.actor_opt.step(grads)
                metrics["actor_loss"] = a_loss.detach()
                if self.stochastic:
                    metrics["entropy"] = -log_prob.mean()
                    metrics["alpha"] = self.alpha[0]
                    if c.autotune_alpha:
                        t_loss = sac_losses.temperature_loss(self.log_alpha, log_prob, self.target_entropy)
                        self.alpha_opt.step(torch.autograd.grad(t_loss, [self.log_alpha]))
            with torch.no_grad():
                torch._foreach_lerp_(self._targets, self._online, c.tau)
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything needed to continue training bit-for-bit; loads with weights_only=True."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "num_updates": torch.tensor(self.num_updates),
            "generator": self.generator.get_state(),
            "noise_x": torch.as_tensor(getattr(self.noise, "x", np.zeros(0))),
            **({"log_alpha": self.log_alpha.detach().clone(), "alpha_opt": self.alpha_opt.state_dict()}
               if self.stochastic else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.num_updates = int(state["num_updates"])
        self.generator.set_state(state["generator"])
        if hasattr(self.noise, "x"):
            self.noise.x[:] = state["noise_x"].numpy()
        if self.stochastic:
            with torch.no_grad():
                self.log_alpha.copy_(state["log_alpha"])
            self.alpha_opt.load_state_dict(state["alpha_opt"])

    def policy_state_dict(self) -> dict:
        """Just what acting needs (normalizer + actor): the file eval and export read."""
        return {"normalizer": self.normalizer.state_dict(), "actor": self.actor.state_dict()}

    def load_policy_state_dict(self, state: dict) -> None:
        self.normalizer.load_state_dict(state["normalizer"])
        self.actor.load_state_dict(state["actor"])
