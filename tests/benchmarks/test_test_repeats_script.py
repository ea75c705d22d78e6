"""benchmarks/test_repeats.py: one test run N times in one pytest process, outcomes counted, resumable."""

import json

from benchmarks import test_repeats


def test_counts_passes_and_failures_and_resumes(tmp_path):
    counter = tmp_path / "count"
    test_file = tmp_path / "test_flaky.py"
    # Fails on its 2nd call only: a pass rate, not one outcome.
    test_file.write_text(
        "from pathlib import Path\n"
        f"COUNT = Path({str(counter)!r})\n"
        "def test_sometimes():\n"
        "    n = int(COUNT.read_text()) if COUNT.exists() else 0\n"
        "    COUNT.write_text(str(n + 1))\n"
        "    assert n != 1, 'second call fails'\n")
    out = tmp_path / "repeats.json"
    node = f"{test_file}::test_sometimes"
    assert test_repeats.main([node, "--runs", "3", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert (result["runs"], result["passed"], result["failed"]) == (3, 2, 1)
    assert [r["outcome"] for r in result["batches"][0]["runs"]] == ["passed", "failed", "passed"]
    assert "second call fails" in result["batches"][0]["runs"][1]["message"]
    # --resume counts the 3 runs already recorded and runs only the missing 2.
    assert test_repeats.main([node, "--runs", "5", "--out", str(out), "--resume"]) == 1
    result = json.loads(out.read_text())
    assert (result["runs"], result["passed"], len(result["batches"])) == (5, 4, 2)
    assert int(counter.read_text()) == 5
