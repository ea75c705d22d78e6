"""Offscreen rendering and closing for the project's own MuJoCo tasks (one MjModel + MjData).

A mixin for `Env` subclasses that set `self.model`, `self.data` and `self.spec`: one
`mujoco.Renderer` per image size, made on first use and freed by `close()` (each holds an
OpenGL context; with `MUJOCO_GL=egl` that is software EGL on a CPU-only machine).
"""

from __future__ import annotations

import mujoco
import numpy as np


class MujocoRendering:
    """render / close / _check_open for a task built on one MjModel and MjData."""

    def _init_rendering(self) -> None:
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._closed = False

    def render(self, height: int = 84, width: int = 84, camera: int | str = 0) -> np.ndarray:
        """RGB uint8 (height, width, 3) frame from `camera` (index or name in the model)."""
        self._check_open()
        renderer = self._renderers.get((height, width))
        if renderer is None:
            renderer = self._renderers[(height, width)] = mujoco.Renderer(self.model, height, width)
        renderer.update_scene(self.data, camera=camera)
        return np.array(renderer.render(), dtype=np.uint8, copy=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for renderer in self._renderers.values():
                renderer.close()
            self._renderers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.env_id} has been closed")
