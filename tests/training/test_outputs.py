"""A short real dm_control run writes every artifact the README promises, and eval reads them back."""

import json

import av
import cv2
import numpy as np
import pytest

from rlcontrol.cli import main


@pytest.mark.slow
def test_dmc_run_writes_curve_video_logs_and_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "configs/td3_cartpole_swingup.yaml", "--run-dir", str(run), "--steps", "1200", "--json",
            "--no-progress", "--set", "train.learning_starts=400", "--set", "train.eval_every=600",
            "--set", "train.eval_episodes=1", "--set", "train.video_frames=12", "--set", "train.video_size=64",
            "--set", "agent.actor_hidden=[32,32]", "--set", "agent.critic_hidden=[32,32]",
            "--set", "env.max_episode_steps=200", "--set", "agent.obs_norm=true",
            "--set", "env.action_repeat=2", "--set", "agent.batch_size=64"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"run_dir", "env_steps", "env_steps_per_s", "eval_return"} <= summary.keys()
    assert summary["env_steps"] == 1200 and summary["env_steps_per_s"] > 0
    for name in ("curve.png", "video.mp4", "metrics.jsonl", "eval.csv", "config.yaml", "policy.pt", "summary.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    video = cv2.VideoCapture(str(run / "video.mp4"))
    frames = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (64, 64, 3)
        frames += 1
    assert frames == 12
    # H.264 in yuv420p (what browsers, TensorBoard and notebooks play), not MPEG-4 Part 2.
    with av.open(str(run / "video.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(video=0)) == 12
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("losses/critic_loss" in r for r in rows) and any("charts/episodic_return" in r for r in rows)
    assert (run / "eval.csv").read_text().splitlines()[0] == "env_steps,mean_return,std_return,episodes"

    assert main(["eval", str(run), "--episodes", "2", "--video", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["episodes"] == 2 and len(evaluated["returns"]) == 2
    assert (run / "eval_video.mp4").stat().st_size > 0


def test_eval_rejects_a_damaged_policy_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("algo: td3\nenv:\n  id: gym:Pendulum-v1\n")
    (run / "policy.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlcontrol: error: cannot read")


def test_video_is_h264_and_odd_frame_sizes_are_padded(tmp_path):
    from rlcontrol.training.evaluate import write_video

    frames = [np.full((63, 85, 3), 10 * i, np.uint8) for i in range(5)]
    write_video(frames, tmp_path / "v.mp4", fps=25.0)
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 86, 3)
    # lossy, but the content is there: frame 4 is ~40 grey in the picture area, the pad black
    assert abs(float(decoded[4][:63, :85].mean()) - 40.0) < 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # written atomically, nothing left behind
