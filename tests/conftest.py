import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
# pytest puts tests/ first on sys.path, where tests/envs/ would shadow the envs package as a
# namespace package when a file under tests/ is run on its own (the editable install's finder
# comes after the path finder); the repository root first keeps `import envs` the real one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (scripts/test.sh runs the suite on 2 workers) each worker has one core's
# worth of CPU: one intra-op thread each, or the two workers' thread pools fight over 2 cores.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
TORCH_THREADS = 1 if XDIST_WORKER else 2


@pytest.fixture(autouse=True)
def _torch_threads():
    # Alone: the thread count of CI's 2-core machine, so timings and reductions are comparable.
    torch.set_num_threads(TORCH_THREADS)
    yield


def pytest_collection_modifyitems(config, items):
    # Tests whose pass or fail depends on wall-clock behaviour (control rates, missed ticks, a
    # learner improving within a fixed robot time) run after the parallel part, alone on the
    # machine: scripts/test.sh runs `-m "not serial"` on 2 workers, then `-m serial`.
    ros_tests = Path(__file__).resolve().parent / "ros"
    for item in items:
        if Path(item.path).resolve().is_relative_to(ros_tests):
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs (needs root and mount permission; skipped otherwise)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)])
            raise AssertionError("files on the tiny filesystem were left open")
