#!/usr/bin/env bash
# The main job: builds runlane and runs its demo. Installs what is missing.
# Embedded default: the memory store (no Redis) and no API key. Extra
# arguments go to `runlane demo` (see `runlane demo --help`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNLANE_NEED_NODE=0 scripts/deps.sh
cmake -S . -B build/default -G Ninja -DPython3_EXECUTABLE="${RUNLANE_VENV:-$ROOT/build/venv}/bin/python" >/dev/null
cmake --build build/default --target runlane_cli >/dev/null
exec build/default/core/cli/runlane demo "$@"
