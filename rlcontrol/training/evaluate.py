"""Deterministic-policy evaluation and rollout videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlcontrol.training.atomic import atomic_path


def episode_seed(seed: int, stream: int, index: int) -> int:
    """Seed of episode `index` of a stream (0: training, 1: evaluation), derived from the run seed.

    Every episode's randomness depends only on (seed, stream, index), which makes a
    resumed run replay the same episodes as an uninterrupted one.
    """
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def run_episode(env, policy, seed: int, frames: list | None = None, frame_size: int = 240,
                max_frames: int = 0) -> float:
    """Roll out `policy(obs) -> normalized action` for one episode; return the episode return."""
    obs = env.reset(seed=seed)
    total = 0.0
    while True:
        if frames is not None and len(frames) < max_frames:
            frames.append(env.render(frame_size, frame_size))
        result = env.step(policy(obs))
        total += result.reward
        obs = result.obs
        if result.terminated or result.truncated:
            return total


def evaluate(env, policy, episodes: int, seed: int, round_index: int = 0) -> list[float]:
    """Returns of `episodes` deterministic episodes with seeds from the evaluation stream."""
    return [run_episode(env, policy, episode_seed(seed, 1, round_index * 1000 + i)) for i in range(episodes)]


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> None:
    """RGB uint8 frames (H, W, 3) -> H.264 mp4 (yuv420p, moov atom first: plays in web browsers,
    TensorBoard and notebooks), atomically. Odd frame sizes are padded by one black row/column
    (4:2:0 chroma needs even ones)."""
    import av

    if not frames:
        return
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    with atomic_path(Path(path)) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            for frame in frames:
                image = np.ascontiguousarray(frame, dtype=np.uint8)
                if pad_h or pad_w:
                    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder's delayed frames


def record_video(env, policy, path: str | Path, seed: int, max_frames: int, size: int) -> float:
    """Record up to `max_frames` frames of deterministic episodes; return the first episode's return."""
    frames: list[np.ndarray] = []
    first_return = None
    episode = 0
    while len(frames) < max_frames:
        ret = run_episode(env, policy, episode_seed(seed, 2, episode), frames, size, max_frames)
        first_return = ret if first_return is None else first_return
        episode += 1
    fps = min(60.0, max(10.0, 1.0 / max(env.spec.control_period, 1e-3)))
    write_video(frames, path, fps)
    return float(first_return if first_return is not None else 0.0)
