"""benchmarks/lane_live.py without training: the route and takeover count of a live session, the
untrained camera run it starts from, and its in-process drive on the stand-in car."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import lane_live


def test_route_summary_counts_the_first_full_route_and_the_lane_departures():
    episodes = [{"return": 12.0, "steps": 30, "terminated": True},
                {"return": 250.0, "steps": 400, "terminated": True, "policy_version": 3},  # the route: not a takeover
                {"return": 80.5, "steps": 1000, "truncated": True},  # out of time, not a takeover
                {"return": 40.0, "steps": 90, "terminated": True}]
    summary = lane_live.route_summary(episodes)
    assert summary["first_route"] == {"episode": 2, "robot_min": round(43.0 / 60, 3), "version": 3}
    assert (summary["takeovers"], summary["takeovers_before_first_route"], summary["routes_completed"]) == (2, 1, 1)
    assert summary["robot_min"] == round(152.0 / 60, 3)
    assert lane_live.route_summary(episodes[:1])["first_route"] is None


def test_untrained_run_exports_and_drives_the_stand_in(tmp_path, monkeypatch):
    from rlcontrol.vision.vae import VAE, VAEConfig, save_vae

    pytest.importorskip("onnxruntime")
    save_vae(VAE(VAEConfig(channels=(8, 16, 16, 16))), tmp_path / "vae.safetensors")
    run = lane_live.untrained_run(tmp_path / "run", tmp_path / "vae.safetensors", seed=3)
    assert lane_live.untrained_run(run, tmp_path / "vae.safetensors", seed=3) == run  # reused, not rebuilt
    from rlcontrol.deploy.export import export_run

    export_run(run, tmp_path / "p.onnx", parity_samples=4)
    monkeypatch.setattr(lane_live, "EVAL_SEEDS", [1000, 1001])
    env = lane_live.stand_in_env()
    try:
        env.reset(seed=1000)
        assert env.sampled["latency_steps"] == 2  # the stand-in's hidden latency, in process too
        driven = lane_live.drive(tmp_path / "p.onnx", env)
    finally:
        env.close()
    assert len(driven["returns"]) == 2 and np.isfinite(driven["returns"]).all() and driven["completed"] == 0
