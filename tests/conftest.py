import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _two_threads():
    # Same thread count as CI's 2-core machine, so timings and reductions are comparable.
    torch.set_num_threads(2)
    yield
