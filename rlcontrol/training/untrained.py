"""A run folder for an agent that has not trained yet: what learning live on a robot from scratch
starts from (Learning to Drive in a Day's setting: `rlcontrol finetune` on such a run), and what
tests and benchmarks export when only the graph's shape matters.

The folder holds what a finished run would: config.yaml, policy.pt and a complete checkpoint at
env step 0 (the agent's initial weights, optimizers and an empty replay), so `rlcontrol export`,
`eval` and `finetune` take it as they take any run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_untrained_run(config: Mapping[str, Any] | str | Path, run_dir: str | Path) -> Path:
    """`config`: a config file, or its contents as a dict (e.g. a shipped config with a changed
    encoder path); the run is written to `run_dir` (created; must not hold a run yet)."""
    import yaml

    from rlcontrol.agents import make_agent
    from rlcontrol.config import load_config
    from rlcontrol.training import builders
    from rlcontrol.training.checkpoint import CheckpointManager
    from rlcontrol.training.loop import write_policy

    run = Path(run_dir)
    data = yaml.safe_load(Path(config).read_text()) if isinstance(config, (str, Path)) else dict(config)
    run.mkdir(parents=True, exist_ok=True)
    if (run / "checkpoints").exists():
        raise FileExistsError(f"{run} already holds a run")
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    parsed = load_config(run / "config.yaml")
    env = builders.make_env(parsed.env, parsed.seed, evaluation=True)
    agent = make_agent(parsed, env.spec)
    replay = builders.make_replay(parsed, env.spec)
    env.close()
    write_policy(agent, run, 0)
    CheckpointManager(run / "checkpoints").save(0, agent.state_dict(), replay, {"env_steps": 0})
    return run
