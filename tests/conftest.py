import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# pytest puts tests/ first on sys.path, where tests/envs/ would shadow the envs package as a
# namespace package when a file under tests/ is run on its own (the editable install's finder
# comes after the path finder); the repository root first keeps `import envs` the real one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _two_threads():
    # Same thread count as CI's 2-core machine, so timings and reductions are comparable.
    torch.set_num_threads(2)
    yield
