"""Pass rate of one test, run N times: for the tests that train or run in real time, whose single
pass proves little (issue 17: the live fine-tuning CI test must pass at least 19 times in 20).

    .venv/bin/python -m benchmarks.test_repeats \\
        tests/ros/test_ros_finetune.py::test_live_finetuning_improves_the_stand_ins_return --runs 20

One pytest process runs the test N times (module fixtures, such as a trained sim policy, are built
once), and benchmarks/results/NAME.json gets every run's outcome and duration, the pass count, the
date, the commit and the machine load at the start. Runs already in that file count toward N when
--resume is given (a session that was cut off goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import provenance

ROOT = Path(__file__).resolve().parents[1]


def outcomes(junit_xml: Path) -> list[dict]:
    """[{outcome, seconds, message}] per test case in a pytest --junitxml file, in run order."""
    rows = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        failed = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        outcome = "failed" if failed is not None else "skipped" if skipped is not None else "passed"
        message = (failed if failed is not None else skipped).get("message", "") if outcome != "passed" else ""
        rows.append({"outcome": outcome, "seconds": round(float(case.get("time", 0.0)), 1),
                     "message": message.splitlines()[0][:300] if message else ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", help="a pytest node id")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--name", default="finetune_ci_test_repeats", help="benchmarks/results/NAME.json")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/NAME.json)")
    parser.add_argument("--resume", action="store_true", help="count the runs already in the results file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{args.name}.json"
    previous = json.loads(path.read_text()) if args.resume and path.exists() else {"batches": []}
    if previous.get("test", args.test) != args.test:
        raise SystemExit(f"{path} holds runs of {previous['test']}, not {args.test}")
    done = sum(len(b["runs"]) for b in previous["batches"])
    todo = args.runs - done
    if todo > 0:
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            load = os.getloadavg()[0]
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "benchmarks.repeat_plugin",
                            f"--repeat-runs={todo}", f"--junitxml={xml}", args.test], cwd=ROOT,
                           env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
            runs = outcomes(xml) if xml.exists() else []
        previous["batches"].append({"started": started, "commit": provenance.git_commit(), "load_1min": round(load, 2), "runs": runs})
    every = [r for b in previous["batches"] for r in b["runs"]]
    result = {"test": args.test, "runs": len(every), "passed": sum(r["outcome"] == "passed" for r in every),
              "failed": sum(r["outcome"] == "failed" for r in every), "batches": previous["batches"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("test", "runs", "passed", "failed")} | {"results": str(path)}))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
