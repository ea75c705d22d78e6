"""How well can a small CNN read the nearest object's offset off rlc:grasp frames, on attempts it never saw?

    .venv/bin/python -m benchmarks.grasp_encoder_probe [--attempts 1000] [--epochs 8] [--threads 2]

The question behind issue 19's pixel result: the frozen VAE encoder's latents explain ~60% of the
variance of the object's x-y offset (`held_out_label_r2` of scripts/grasp_offline_replay.py), but
that figure holds out random *frames*, whose neighbours in the same attempt were trained on. Here
the privileged label is regressed directly, by a conv net with CoordConv channels (Liu et al.
2018: two channels of pixel coordinates, the usual fix for regressing positions) and a 32-d
bottleneck, trained end to end by squared error, and scored on the last 10% of *attempts* (no
frame of theirs trained on) by a linear read-out of the bottleneck, as label_fit does.

Frames: the offline data's mix (half RandomDescent, half the privileged scripted grasp with
per-attempt noise in [0.05, 0.3]) on training objects, 64x64 over-the-shoulder camera. Labels: the
state task's "object" entry (envs/grasp.py: offset x, y, z, half extents, sin/cos 2 x yaw).
Writes benchmarks/results/grasp_encoder_probe.json (R^2 per label column after each epoch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("dx", "dy", "dz", "half_x", "half_y", "half_z", "sin2yaw", "cos2yaw")


def collect(attempts: int, seed: int):
    import envs
    from envs.grasp import RandomDescent, ScriptedGrasp

    env = envs.make("rlc:grasp", seed=seed, pixels=True, pixel_size=64, include_state=True, observe_objects=False,
                    object_set="train", max_steps=20)
    rng = np.random.default_rng(seed)
    descent, scripted = RandomDescent(rng), ScriptedGrasp()
    frames, labels, attempt_of = [], [], []
    for attempt in range(attempts):
        obs = env.reset(seed=seed * 1_000_003 + attempt)
        use_scripted, sigma = rng.random() < 0.5, rng.uniform(0.05, 0.3)
        while True:
            frames.append(obs["pixels"])
            labels.append(env.unwrapped.object_state())
            attempt_of.append(attempt)
            action = scripted(env) if use_scripted else descent(env)
            if use_scripted:
                action = action + sigma * rng.standard_normal(action.shape)
            result = env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
            obs = result.obs
            if result.terminated or result.truncated:
                break
    env.close()
    return np.stack(frames), np.stack(labels).astype(np.float32), np.array(attempt_of)


class CoordConvRegressor(nn.Module):
    """uint8 (N, 3, 64, 64) -> 32-d bottleneck; conv stack over the image and 2 coordinate channels."""

    def __init__(self, latent_dim: int = 32):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(5, 32, 5, 2), nn.ReLU(), nn.Conv2d(32, 32, 3, 2), nn.ReLU(),
                                   nn.Conv2d(32, 64, 3, 2), nn.ReLU(), nn.Conv2d(64, 64, 3, 1), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, latent_dim))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys])[None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images.float() / 255.0, self.grid.expand(len(images), -1, -1, -1)], dim=1)
        return self.fc(self.convs(x))


def held_out_r2(latents: np.ndarray, targets: np.ndarray, train: np.ndarray, test: np.ndarray) -> list[float]:
    design = np.c_[latents, np.ones(len(latents))]
    weights, *_ = np.linalg.lstsq(design[train], targets[train], rcond=None)
    residual = ((targets[test] - design[test] @ weights) ** 2).sum(0)
    total = ((targets[test] - targets[test].mean(0)) ** 2).sum(0) + 1e-12
    return [round(float(v), 3) for v in 1 - residual / total]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="grasp_encoder_probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frames, labels, attempt_of = collect(args.attempts, args.seed)
    collect_s = time.perf_counter() - start
    test = attempt_of >= int(0.9 * args.attempts)
    train = ~test
    targets = (labels - labels[train].mean(0)) / (labels[train].std(0) + 1e-6)
    torch.manual_seed(args.seed)
    encoder = CoordConvRegressor()
    head = nn.Linear(32, labels.shape[1])
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    images, y = torch.from_numpy(frames), torch.from_numpy(targets)
    rows, rng, epochs = np.flatnonzero(train), np.random.default_rng(args.seed), []
    for epoch in range(args.epochs):
        rng.shuffle(rows)
        losses = []
        for begin in range(0, len(rows), 64):
            batch = rows[begin:begin + 64]
            loss = (head(encoder(images[batch])) - y[batch]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            latents = torch.cat([encoder(images[i:i + 512]) for i in range(0, len(images), 512)]).numpy()
        epochs.append({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4),
                       "held_out_attempts_r2": dict(zip(LABELS, held_out_r2(latents, targets, train, test))),
                       "train_r2": dict(zip(LABELS, held_out_r2(latents, targets, train, train)))})
        print(json.dumps(epochs[-1]), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "attempts": args.attempts,
              "frames": len(frames), "held_out_frames": int(test.sum()), "collect_s": round(collect_s, 1),
              "total_s": round(time.perf_counter() - start, 1), "epochs": epochs}
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"out": str(out.relative_to(ROOT)), "final": epochs[-1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
