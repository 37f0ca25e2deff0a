#!/usr/bin/env bash
# The main job: builds runlane and runs its demo (installs what is missing).
#
# By default the demo drives the responses backend (OpenAI Responses API +
# Conversations) against the bundled OpenAI emulator, which it starts on a
# free loopback port: no API key needed. The queue is the embedded memory
# store: no Redis needed. With OPENAI_API_KEY set it talks to the real API
# (OPENAI_BASE_URL overrides the base URL; RUNLANE_DEMO_MODEL the model).
# `scripts/demo.sh --backend custom` shows the queue alone (the demo runs
# the turns itself). Other arguments go to `runlane demo` (--help).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNLANE_NEED_NODE=0 scripts/deps.sh
cmake -S . -B build/default -G Ninja -DPython3_EXECUTABLE="${RUNLANE_VENV:-$ROOT/build/venv}/bin/python" >/dev/null
cmake --build build/default --target runlane_cli >/dev/null
BIN=build/default/core/cli/runlane

case " $* " in *" --backend "*) exec "$BIN" demo "$@" ;; esac

if [ -n "${OPENAI_API_KEY:-}" ]; then
  exec "$BIN" -X "openai.base.url=${OPENAI_BASE_URL:-https://api.openai.com/v1}" \
    -X "openai.model=${RUNLANE_DEMO_MODEL:-gpt-4o-mini}" demo --backend responses "$@"
fi

# The emulator answers after 400 ms, so the second burst of each user lands
# while the first turn still runs: it waits, and goes out right after.
OUT=$(mktemp)
python3 tests/emulator/emulator.py --port 0 --latency-ms 400 >"$OUT" 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 1 100); do grep -q EMULATOR_PORT= "$OUT" && break; sleep 0.05; done
PORT=$(sed -n 's/^EMULATOR_PORT=//p' "$OUT")
[ -n "$PORT" ] || { echo "the OpenAI emulator did not start:"; cat "$OUT"; exit 1; }
"$BIN" -X "openai.base.url=http://127.0.0.1:$PORT/v1" demo --backend responses --emulator "$@"
