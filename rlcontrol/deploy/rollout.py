"""An exported policy driving a task in process: the reference a deployment is compared with.

`rlcontrol deploy` runs the same ONNX file through the ROS 2 policy node against the simulated
robot, which seeds episode i with seed + i; `onnx_returns` with the same seeds replays those
episodes without ROS, so the two returns tell what the deploy path itself changes.
"""

from __future__ import annotations

import numpy as np


def onnx_returns(policy_path, env_id: str, seeds: list[int], *, action_repeat: int = 1,
                 env_kwargs: dict | None = None) -> list[float]:
    """One episode per seed with the ONNX policy's physical actions mapped back to [-1, 1]."""
    import envs
    from rlcontrol.deploy import runtime

    policy = runtime.load(policy_path)
    dict_obs = len(policy.metadata.observations) > 1
    env = envs.make(env_id, action_repeat=action_repeat, obs_format="dict" if dict_obs else "flat",
                    **pixel_keywords(policy.metadata), **(env_kwargs or {}))
    try:
        return episode_returns(policy, env, seeds)
    finally:
        env.close()


def episode_returns(policy, env, seeds: list[int]) -> list[float]:
    """One episode of `env` per seed, driven by a loaded policy (runtime.OnnxPolicy): its physical
    actions mapped back to [-1, 1]; any env (a wrapped one, e.g. a stand-in) that fits the policy."""
    from envs.core import unscale_action

    low, high = np.array(policy.metadata.action_low), np.array(policy.metadata.action_high)
    returns = []
    for seed in seeds:
        obs, total, done = env.reset(seed=seed), 0.0, False
        while not done:
            result = env.step(np.clip(unscale_action(policy.act(obs), low, high), -1, 1))
            obs, total = result.obs, total + result.reward
            done = result.terminated or result.truncated
        returns.append(float(total))
    return returns


def pixel_keywords(meta) -> dict:
    """The envs.make keywords that make a task observe what an image policy takes: its camera as
    "pixels" (uint8 (3, S, S)) and, when the policy also takes "state", the state vector (what
    the simulated robot is started with for the same policy). None for a vector policy."""
    images = [o for o in meta.observations if o.dtype == "uint8" and len(o.shape) == 3]
    if not images:
        return {}
    image = images[0]
    size = image.shape[0] if getattr(image, "is_camera", False) else image.shape[-1]
    return {"pixels": True, "pixel_size": int(size), "include_state": any(o.name == "state" for o in meta.observations)}
