"""write_untrained_run: a run folder that export, eval and finetune take, before any training."""

from __future__ import annotations

import pytest

from rlcontrol.training.untrained import write_untrained_run


def test_an_untrained_run_exports_and_is_not_overwritten(tmp_path):
    from rlcontrol.deploy import runtime
    from rlcontrol.deploy.export import export_run
    from rlcontrol.training.checkpoint import CheckpointManager

    run = write_untrained_run("configs/td3_pendulum.yaml", tmp_path / "run")
    assert (run / "config.yaml").is_file() and (run / "policy.pt").is_file()
    assert CheckpointManager(run / "checkpoints").latest() is not None
    export_run(run, tmp_path / "p.onnx", parity_samples=4)
    assert runtime.load(tmp_path / "p.onnx").metadata.action_dim == 1
    with pytest.raises(FileExistsError, match="already holds a run"):
        write_untrained_run("configs/td3_pendulum.yaml", run)
