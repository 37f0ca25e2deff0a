#!/usr/bin/env bash
# Runs the repros of the chaos suite's findings that are fixed (each exits 1
# and prints BUG when its failure is back), so a fix stays fixed. Not
# repro_stale_create.py: it shows what cannot be fenced (see README.md).
#   RUNLANE_BIN=build/default/core/cli/runlane tests/chaos/repros.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${RUNLANE_BIN:?set RUNLANE_BIN to the runlane CLI}"
export RUNLANE_BIN
failed=0
for r in reconcile_dup dead_tool_call tool_fd_leak; do
  echo "== repro_$r.py"
  if ! timeout 300 python3 "$HERE/repro_$r.py" >"${TMPDIR:-/tmp}/runlane-repro-$r.log" 2>&1; then
    tail -20 "${TMPDIR:-/tmp}/runlane-repro-$r.log"
    failed=$((failed + 1))
  fi
  tail -1 "${TMPDIR:-/tmp}/runlane-repro-$r.log"
done
echo "$((3 - failed)) passed, $failed failed"
[ $failed = 0 ]
