#!/usr/bin/env bash
# runlane chaos suite: tests/chaos/run.sh [--size small|large] [--seconds N] [--seed N] [--keep]
#
# RUNLANE_BIN  the runlane program to test; when unset, the CLI is built into
#              $RUNLANE_CHAOS_BUILD (default build/chaos) with CMake + Ninja.
# RUNLANE_PY   a Python with the runlane package installed (pip install ./python):
#              adds a Python producer and a Python worker; skipped when unset.
# CHAOS_SEED   default of --seed (the emulator's faults and every random choice).
# Needs redis-server, redis-cli, jq and sha256sum. See tests/chaos/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
for tool in redis-server redis-cli jq sha256sum python3; do
  command -v "$tool" >/dev/null || { echo "chaos: $tool is required" >&2; exit 2; }
done
if [ -z "${RUNLANE_BIN:-}" ]; then
  BUILD=${RUNLANE_CHAOS_BUILD:-$ROOT/build/chaos}
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" --target runlane_cli >/dev/null
  RUNLANE_BIN=$BUILD/core/cli/runlane
fi
export RUNLANE_BIN
# The interpreter itself, not a wrapper (a pyenv shim would not pass signals on).
PY=$(python3 -c 'import sys; print(sys.executable)')
exec "$PY" "$HERE/chaos.py" --bin "$RUNLANE_BIN" "$@"
