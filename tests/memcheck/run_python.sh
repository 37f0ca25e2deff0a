#!/usr/bin/env bash
# One Python user flow (tests/memcheck/flow.py) under valgrind, with the
# package installed in $RUNLANE_VENV (python/run_tests.sh installs it).
# Only reports whose stack passes through runlane count (CPython's own
# start-up reports are not ours).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${RUNLANE_VENV:?set RUNLANE_VENV}/bin/python
"$PY" -c 'import runlane' || { echo "runlane is not installed in $RUNLANE_VENV"; exit 1; }
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
PYTHONMALLOC=malloc valgrind -q --error-exitcode=0 --leak-check=no --child-silent-after-fork=yes \
  "$PY" "$HERE/flow.py" >"$LOG" 2>&1 || true
grep -q "^1 passed, 0 failed" "$LOG" || { cat "$LOG"; exit 1; }
python3 "$HERE/vgfilter.py" "$LOG"
