"""pytest plugin for benchmarks/test_repeats.py: ``-p benchmarks.repeat_plugin --repeat-runs N``
runs every selected test N times, as N parametrized cases (module fixtures are built once)."""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption("--repeat-runs", type=int, default=1, help="run each selected test this many times")


def pytest_generate_tests(metafunc) -> None:
    runs = metafunc.config.getoption("repeat_runs")
    if runs > 1:
        metafunc.fixturenames.append("repeat_run")
        metafunc.parametrize("repeat_run", range(runs), ids=lambda i: f"run{i}")
