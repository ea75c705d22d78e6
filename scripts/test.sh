#!/usr/bin/env bash
# Set up .venv (with test tools) and run the whole test suite. CI runs exactly this.
#   scripts/test.sh [pytest flags]       the whole suite: the parallel part on 2 workers, then the
#                                        wall-clock-sensitive tests (marker `serial`) alone
#   scripts/test.sh tests/ros [flags]    given test paths: plain pytest on them, one process
# RLC_TEST_WORKERS sets the worker count of the parallel part (default 2, CI's core count).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,ros
export MUJOCO_GL="${MUJOCO_GL:-egl}"
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then  # a test path or node id: just that, the ordinary way
    exec .venv/bin/python -m pytest "$@"
  fi
done
run_part() {  # pytest's 5 ("no tests collected": a -k that selects only one part) is not a failure
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  [[ $rc -eq 5 ]] && rc=0
  return "$rc"
}
status=0
run_part -n "${RLC_TEST_WORKERS:-2}" -m "not serial" "$@" || status=$?
run_part -p no:xdist -m serial "$@" || status=$((status ? status : $?))
exit "$status"
