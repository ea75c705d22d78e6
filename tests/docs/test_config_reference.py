"""docs/guides/configs.md lists every config field with the code's default, range and meaning:
its tables are generated from rlcontrol/config.py and must match what the generator makes now."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config_reference  # noqa: E402  (tests/docs/config_reference.py, also a script)


def test_config_tables_are_current():
    page = config_reference.PAGE.read_text()
    assert config_reference.current_block(page) == config_reference.generate(), (
        "docs/guides/configs.md is out of date with rlcontrol/config.py; regenerate it with "
        ".venv/bin/python tests/docs/config_reference.py")


def test_every_field_is_on_the_page():
    from rlcontrol.config import AGENT_CONFIGS, DistributedConfig, EnvConfig, ReplayConfig, TrainConfig

    page = config_reference.PAGE.read_text()
    sections = {"env": [EnvConfig], "replay": [ReplayConfig], "train": [TrainConfig],
                "distributed": [DistributedConfig], "agent": list(AGENT_CONFIGS.values())}
    missing = [f"{name}.{f.name}" for name, classes in sections.items() for cls in classes
               for f in dataclasses.fields(cls) if f"`{name}.{f.name}`" not in page]
    assert not missing, f"fields missing from docs/guides/configs.md: {missing}"
