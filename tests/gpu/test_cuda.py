"""GPU checks: the same agents, replay and training loop on a CUDA device.

CI has no GPU, so these are skipped there; on a GPU machine run `scripts/test.sh tests/gpu`.
They check that `train.device: cuda` computes what the CPU computes (same initial weights,
same batches, same updates up to float rounding), that a run trained on the GPU checkpoints,
resumes and exports on the CPU, and that replay sampling gives the same indices on both devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlcontrol.agents.learner import DeterministicPolicyAgent
from rlcontrol.config import D4PGConfig, DDPGConfig, TD3Config
from rlcontrol.replay import make_replay

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (CI has none)")

ROOT = Path(__file__).resolve().parents[2]
OBS = {"pos": (3,), "vel": (2,)}
CONFIGS = {"ddpg": DDPGConfig, "td3": TD3Config, "d4pg": D4PGConfig}


def make(algo: str, device: str, cuda_graphs: bool = False, **kw) -> DeterministicPolicyAgent:
    # The smoothing noise's generator is per device: off unless asked for (CPU-vs-CUDA comparisons).
    kw = {"target_noise": 0.0, **kw} if algo == "td3" else kw
    cfg = CONFIGS[algo](actor_hidden=[64, 64], critic_hidden=[64, 64], batch_size=32, obs_norm=True, **kw)
    return DeterministicPolicyAgent(algo, cfg, OBS, 2, seed=0, device=device, prioritized=algo == "d4pg",
                                    cuda_graphs=cuda_graphs)


def batch(seed: int, device: str) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    fields = {"obs": {"pos": torch.randn(32, 3, generator=g), "vel": torch.randn(32, 2, generator=g)},
              "next_obs": {"pos": torch.randn(32, 3, generator=g), "vel": torch.randn(32, 2, generator=g)},
              "action": torch.rand(32, 2, generator=g) * 2 - 1, "reward": torch.randn(32, generator=g),
              "discount": torch.full((32,), 0.99), "weights": torch.rand(32, generator=g) + 0.5,
              "indices": torch.arange(32)}

    def to(x):
        return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)

    return SimpleNamespace(**{k: to(v) for k, v in fields.items()})


def observe_the_same(n: int, *agents) -> None:
    """The same n observations into every agent's normalizer."""
    for i in range(n):
        obs = {"pos": np.full(3, 0.1 * i, np.float32), "vel": np.ones(2, np.float32)}
        for agent in agents:
            agent.observe(obs)


@pytest.mark.parametrize("algo", ["ddpg", "td3", "d4pg"])
def test_updates_on_cuda_match_the_cpu(algo):
    cpu, gpu = make(algo, "cpu"), make(algo, "cuda")
    observe_the_same(20, cpu, gpu)
    for i in range(40):
        m_cpu, m_gpu = cpu.update(batch(i, "cpu")), gpu.update(batch(i, "cuda"))
        assert m_gpu["critic_loss"].device.type == "cuda"
        assert torch.allclose(m_cpu["critic_loss"], m_gpu["critic_loss"].cpu(), rtol=1e-3, atol=1e-5), i
    for p_cpu, p_gpu in zip(cpu.actor.parameters(), gpu.actor.parameters(), strict=True):
        assert torch.allclose(p_cpu, p_gpu.cpu(), rtol=1e-3, atol=1e-5)
    obs = {"pos": np.array([0.3, -0.2, 1.0], np.float32), "vel": np.array([0.5, -0.5], np.float32)}
    assert np.allclose(cpu.act(obs), gpu.act(obs), atol=1e-4)


@pytest.mark.parametrize("algo", ["ddpg", "td3", "d4pg"])
def test_cuda_graph_updates_match_eager_cuda_updates(algo):
    """train.cuda_graphs replays captured graphs: the same updates as eager CUDA, warm-up undone."""
    kw = {"target_noise": 0.2} if algo == "td3" else {}  # same generator seed on both: same smoothing noise
    eager, graphed = make(algo, "cuda", **kw), make(algo, "cuda", cuda_graphs=True, **kw)
    observe_the_same(10, eager, graphed)
    for i in range(30):
        a, b = eager.update(batch(i, "cuda")), graphed.update(batch(i, "cuda"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (i, k)
    assert graphed.static_updates.captures == 1
    for x, y in zip(eager.state_dict()["actor"].values(), graphed.state_dict()["actor"].values(), strict=True):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)
    graphed.actor_opt.lr = graphed.critic_opt.lr = 1e-4  # a new learning rate is a new capture
    graphed.update(batch(99, "cuda"))
    assert graphed.static_updates.captures == 2


def test_replay_samples_the_same_indices_on_both_devices():
    buffers = [make_replay(1000, OBS, 2, seed=3, device=d, prioritized=p) for d in ("cpu", "cuda") for p in (False, True)]
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs = {"pos": rng.normal(size=3).astype(np.float32), "vel": rng.normal(size=2).astype(np.float32)}
        action, reward = rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal())
        for b in buffers:
            b.add({"obs": obs, "action": action, "reward": reward, "discount": 0.99, "next_obs": obs})
    cpu_uniform, cpu_per, gpu_uniform, gpu_per = buffers
    for cpu_buffer, gpu_buffer in ((cpu_uniform, gpu_uniform), (cpu_per, gpu_per)):
        for _ in range(5):
            a, b = cpu_buffer.sample(64), gpu_buffer.sample(64)
            assert b.action.device.type == "cuda"
            assert torch.equal(a.indices.cpu(), b.indices.cpu())
            assert torch.equal(a.action, b.action.cpu())


@pytest.mark.slow
@pytest.mark.parametrize("graphs", [False, True])
def test_a_cuda_run_resumes_and_exports_on_the_cpu(tmp_path, graphs):
    """Train on the GPU, kill nothing, then resume the run for more steps and export it: eval and
    export read policy.pt onto the CPU whatever the run trained on."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    run = tmp_path / "run"
    common = [sys.executable, "-m", "rlcontrol.cli", "train", str(ROOT / "configs/td3_pendulum.yaml"), "--run-dir",
              str(run), "--set", "train.device=cuda", "--set", "train.eval_every=1000", "--set",
              "train.checkpoint_every=1000", "--set", "train.video_frames=0", "--set", f"train.cuda_graphs={graphs}",
              "--no-progress", "--json"]
    first = subprocess.run([*common, "--steps", "2000"], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = subprocess.run([*common, "--steps", "3000", "--resume"], capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["env_steps"] == 3000
    out = tmp_path / "policy.onnx"
    exported = subprocess.run([sys.executable, "-m", "rlcontrol.cli", "export", str(run), "--out", str(out), "--json"],
                              capture_output=True, text=True, env={**env, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert out.stat().st_size > 0
