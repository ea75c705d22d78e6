"""rlcontrol environments: one `Env` interface over dm_control, Gymnasium and own tasks.

Example (actions are always normalized to [-1, 1]):

>>> import envs, numpy as np
>>> env = envs.make("dmc:cheetah-run", seed=0, action_repeat=2)
>>> obs = env.reset()
>>> result = env.step(np.zeros(env.spec.action_dim))
"""

import os

# Must run before anything imports dm_control / mujoco rendering: the GL backend is
# chosen once, at import time. EGL renders headless (CI, servers, robots' onboard PCs).
os.environ.setdefault("MUJOCO_GL", "egl")

from envs.core import (  # noqa: E402
    ArraySpec,
    Env,
    EnvSpec,
    StepResult,
    scale_action,
    unscale_action,
)
from envs.registry import UnknownEnvError, make, register, registered_ids  # noqa: E402

__all__ = [
    "ArraySpec",
    "Env",
    "EnvSpec",
    "StepResult",
    "UnknownEnvError",
    "make",
    "register",
    "registered_ids",
    "scale_action",
    "unscale_action",
]
