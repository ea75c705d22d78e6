"""Offline grasp attempts for QT-Opt: a replay file for `replay.offline_replay`.

QT-Opt started from grasps collected by a randomized scripted policy, because uniformly random
actions almost never lift anything and the reward is sparse (docs/grasp.md, Baselines). This
runs `envs.grasp.RandomDescent` (QT-Opt's scripted exploration) and, for a fraction of the
attempts, the privileged `ScriptedGrasp` with Gaussian action noise (its standard deviation drawn
per attempt from [--noise, --noise-max] when --noise-max is given, so the data holds near misses
as well as clean grasps), in the environment a run config describes, and saves the transitions
(n-step and gamma from that config) with `ReplayBuffer.save`:

    .venv/bin/python scripts/grasp_offline_replay.py configs/qtopt_grasp.yaml --attempts 2000 \\
        --scripted-fraction 0.5 --noise 0.05 --noise-max 0.3 --out runs/grasp_offline_mixed.safetensors

A pixel config with `agent.frozen_encoder` stores each frame's latents instead of the image
(rlcontrol/vision/frozen_latents.py). With --pretrain-encoder the script first trains that
encoder on the very frames it collected, as a VAE whose posterior mean also regresses the
privileged object state of each frame (`GraspEnv.object_state` and the nearest object's centre in
the bin; an auxiliary label head used in training only), and writes it to the config's
`agent.frozen_encoder` path. The labels are
simulation-only training signal: the policy itself sees only the camera and the gripper state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def collect(config_path: str, attempts: int, out: str, scripted_fraction: float, noise: float, seed: int,
            noise_max: float | None = None, pretrain_encoder: dict | None = None) -> dict:
    from envs.grasp import RandomDescent, ScriptedGrasp
    from rlcontrol.config import load_config
    from rlcontrol.replay import NStepAccumulator, ReplayBuffer
    from rlcontrol.training import builders

    config = load_config(config_path)
    env = builders.make_env(config.env, seed)
    rng = np.random.default_rng(seed)
    descent, scripted = RandomDescent(rng), ScriptedGrasp()
    accumulator = NStepAccumulator(config.replay.n_step, config.agent.gamma)
    transitions, successes = [], {"random_descent": [0, 0], "scripted_noisy": [0, 0]}
    encoded = bool(config.algo == "qtopt" and config.agent.frozen_encoder)
    label_set = (pretrain_encoder or {}).get("label_set", "object")
    observations, labels = [], []  # every observation once, and its privileged object state

    def seen(o):
        if encoded:
            # The nearest object relative to the fingers (what the state task observes) and, with
            # --encoder-labels object+centre, where it is in the bin (the camera is fixed).
            task = env.unwrapped
            observations.append(o)
            label = task.object_state()
            if label_set == "object+centre":
                label = np.concatenate([label, task.object_poses()[task.nearest_object()][:3]])
            labels.append(label)
        return o

    for attempt in range(attempts):
        obs = seen(env.reset(seed=seed * 1_000_003 + attempt))
        use_scripted = rng.random() < scripted_fraction
        sigma = noise if noise_max is None else rng.uniform(noise, noise_max)
        name = "scripted_noisy" if use_scripted else "random_descent"
        accumulator.reset()
        while True:
            action = scripted(env) if use_scripted else descent(env)
            if use_scripted and sigma > 0:
                action = action + sigma * rng.standard_normal(action.shape)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)  # the agent's normalized units
            result = env.step(action)
            seen(result.obs)
            transitions.extend(accumulator.add(obs, action, result.reward, result.obs, result.terminated,
                                               result.truncated))
            obs = result.obs
            if result.terminated or result.truncated:
                successes[name][0] += int(result.reward > 0)
                successes[name][1] += 1
                break
    env.close()
    obs_spec, summary = env.spec.observation, {}
    if encoded:
        obs_spec, transitions, summary = encode_transitions(config, env.spec.observation, observations,
                                                            np.array(labels), transitions, pretrain_encoder, seed)
    replay = ReplayBuffer(len(transitions), obs_spec, env.spec.action_dim, seed=seed)
    for transition in transitions:
        replay.add(transition)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    replay.save(out)
    return {"out": out, "attempts": attempts, "transitions": len(replay),
            "success_rate": {k: round(s / n, 3) if n else None for k, (s, n) in successes.items()},
            "attempts_by_policy": {k: n for k, (_, n) in successes.items()},
            "noise": [noise, noise if noise_max is None else noise_max],
            "n_step": config.replay.n_step, "gamma": config.agent.gamma} | summary


def encode_transitions(config, obs_spec, observations, labels, transitions, pretrain: dict | None, seed: int):
    """(replay spec, transitions with latents in place of images, summary): pretrains the encoder
    first when asked (from these frames and labels), then encodes every frame once, in batches."""
    import time

    import torch

    from rlcontrol.agents.qtopt.agent import replay_space

    summary = {}
    image = next(name for name, spec in obs_spec.items() if len(spec.shape) == 3)
    frames = np.stack([o[image] for o in observations])
    if pretrain is not None:
        summary["encoder"] = pretrain_encoder(config.agent.frozen_encoder, frames, labels, seed, **pretrain)
    spec, encoder, _ = replay_space(config.agent, obs_spec)
    image_encoder = encoder.image_encoder
    started = time.perf_counter()
    latents = []
    with torch.inference_mode():
        for start in range(0, len(frames), 512):
            chunk = torch.from_numpy(frames[start:start + 512]).reshape(min(512, len(frames) - start), -1).float()
            latents.append(image_encoder(chunk).numpy().astype(np.float32))
    latents = np.concatenate(latents)
    name = next(k for k in spec if k.startswith("latent_"))
    # Transitions hold copies of the observations: find each frame's latent by its content.
    by_frame = {frame.tobytes(): i for i, frame in enumerate(frames)}

    def to_latent(o):
        row = by_frame[np.ascontiguousarray(o[image]).tobytes()]
        return {(name if k == image else k): (latents[row] if k == image else v) for k, v in o.items()}

    encoded = [dict(t, obs=to_latent(t["obs"]), next_obs=to_latent(t["next_obs"])) for t in transitions]
    summary["encode_s"] = round(time.perf_counter() - started, 1)
    summary["latent_part"] = name
    return spec, encoded, summary


def pretrain_encoder(path: str, frames, labels, seed: int, *, kind: str, label_set: str, epochs: int, latent_dim: int,
                     label_weight: float, max_frames: int, threads: int, channels: tuple[int, ...] | None = None) -> dict:
    """Train an encoder on `frames` and write it to `path`: a keypoint encoder regressing the
    privileged labels, or a VAE with an auxiliary head regressing them."""
    import time

    from rlcontrol.vision.keypoints import KeypointConfig, save_keypoints, train_keypoints
    from rlcontrol.vision.pretrain import train_vae
    from rlcontrol.vision.vae import VAEConfig, save_vae

    rng = np.random.default_rng(seed)
    held_out = rng.random(len(frames)) < 0.1  # label error is reported on frames not trained on
    train_rows = np.flatnonzero(~held_out)
    if len(train_rows) > max_frames:
        train_rows = rng.choice(train_rows, size=max_frames, replace=False)
    started = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = {"env_id": "rlc:grasp", "frames": int(len(train_rows)), "epochs": epochs, "seed": seed,
             "labels": label_set}
    if kind == "keypoints":
        config = KeypointConfig(input_shape=tuple(frames.shape[1:]), channels=tuple(channels or (16, 32, 32)))
        encoder, losses = train_keypoints(frames[train_rows], labels[train_rows], config, epochs=epochs, seed=seed,
                                          threads=threads)
        summary = {"final_label": losses[-1]}
    else:
        config = VAEConfig(input_shape=tuple(frames.shape[1:]), latent_dim=latent_dim,
                           channels=tuple(channels or (32, 64, 128, 256)))
        model, history = train_vae(frames[train_rows], config, epochs=epochs, seed=seed, threads=threads,
                                   labels=labels[train_rows], label_weight=label_weight)
        encoder, extra["label_weight"] = model.encoder, label_weight
        summary = {"final_recon": history["recon"][-1], "final_label": history["label"][-1]}
    train_s = time.perf_counter() - started
    fit = label_fit(encoder, frames, labels, train_rows, np.flatnonzero(held_out))
    extra["held_out_label_r2"] = fit
    if kind == "keypoints":
        save_keypoints(encoder, path, extra=extra)
    else:
        save_vae(model, path, extra=extra)
    return {"path": path, "kind": kind, "frames": int(len(train_rows)), "epochs": epochs,
            "train_s": round(train_s, 1), "held_out_label_r2": fit} | summary


def label_fit(encoder, frames, labels, train_rows, test_rows) -> list[float]:
    """R^2 per label column of a least-squares linear read-out of the latents (fit on training
    frames, scored on held-out ones): how much of the object state the latents carry."""
    import torch

    def latents(rows):
        with torch.inference_mode():
            return np.concatenate([encoder.encode_mean(torch.from_numpy(frames[rows[i:i + 512]]).float() / 255.0)
                                   .numpy() for i in range(0, len(rows), 512)])

    z_train, z_test = latents(train_rows), latents(test_rows)
    design = np.c_[z_train, np.ones(len(z_train))]
    weights, *_ = np.linalg.lstsq(design, labels[train_rows], rcond=None)
    predicted = np.c_[z_test, np.ones(len(z_test))] @ weights
    residual = ((labels[test_rows] - predicted) ** 2).sum(axis=0)
    total = ((labels[test_rows] - labels[test_rows].mean(axis=0)) ** 2).sum(axis=0) + 1e-12
    return [round(float(1 - r / t), 3) for r, t in zip(residual, total)]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the run config whose env, gamma and n-step the data must match")
    parser.add_argument("--attempts", type=int, default=2000, help="grasp attempts (episodes) to collect")
    parser.add_argument("--out", required=True, help="replay file to write (safetensors)")
    parser.add_argument("--scripted-fraction", type=float, default=0.0,
                        help="fraction of attempts by the privileged scripted grasp (with --noise)")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian action noise on the scripted grasp")
    parser.add_argument("--noise-max", type=float, default=None,
                        help="draw each scripted attempt's noise uniformly from [--noise, --noise-max]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-encoder", action="store_true",
                        help="first train the config's agent.frozen_encoder on the collected frames and write it")
    parser.add_argument("--encoder", choices=("keypoints", "vae"), default="vae",
                        help="the encoder --pretrain-encoder trains (rlcontrol/vision/keypoints.py or vae.py)")
    parser.add_argument("--encoder-labels", choices=("object", "object+centre"), default="object",
                        help="what the encoder's auxiliary head regresses: GraspEnv.object_state (8), "
                             "or that and the nearest object's centre in the bin (11)")
    parser.add_argument("--encoder-epochs", type=int, default=4)
    parser.add_argument("--encoder-latent-dim", type=int, default=32)
    parser.add_argument("--encoder-label-weight", type=float, default=200.0,
                        help="weight of the privileged-state regression next to the VAE loss (0: a plain VAE)")
    parser.add_argument("--encoder-frames", type=int, default=24000, help="at most this many frames train it")
    parser.add_argument("--encoder-channels", type=int, nargs="+", default=None,
                        help="the encoder's conv widths (default: keypoints 16 32 32, vae 32 64 128 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.noise_max is not None and args.noise_max < args.noise:
        parser.error("--noise-max must be at least --noise")
    pretrain = None
    if args.pretrain_encoder:
        pretrain = {"epochs": args.encoder_epochs, "latent_dim": args.encoder_latent_dim,
                    "label_weight": args.encoder_label_weight, "max_frames": args.encoder_frames,
                    "threads": args.threads, "kind": args.encoder, "label_set": args.encoder_labels,
                    "channels": tuple(args.encoder_channels) if args.encoder_channels else None}
    from rlcontrol.config import load_config
    from rlcontrol.errors import UserError

    try:
        config = load_config(args.config)
        if args.pretrain_encoder and not (config.algo == "qtopt" and config.agent.frozen_encoder):
            parser.error(f"--pretrain-encoder: {args.config} sets no agent.frozen_encoder to write the encoder to")
        encoder = config.agent.frozen_encoder if config.algo == "qtopt" else None
        if encoder and not args.pretrain_encoder and not os.path.isfile(encoder):  # before minutes of collecting
            raise UserError(f"agent.frozen_encoder: {encoder} not found; make it with --pretrain-encoder")
        summary = collect(args.config, args.attempts, args.out, args.scripted_fraction, args.noise, args.seed,
                          args.noise_max, pretrain)
    except (UserError, ValueError) as error:  # a bad config, env or encoder file: one line, exit 2
        print(f"grasp_offline_replay: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
