#!/usr/bin/env bash
# Tests of the Python package, as a user gets it:
#   1. a venv ($RUNLANE_VENV, default build/pyvenv; created with $PYTHON, default python3),
#   2. pip install ./python (builds the core and the cffi module) and pytest,
#   3. a private redis-server on a free loopback port (unless $RUNLANE_TEST_REDIS is set
#      or redis-server is missing; RUNLANE_REQUIRE_REDIS=1 makes the Redis tests fail then),
#   4. pytest on tests/python from a scratch directory, so the source tree cannot
#      shadow the installed package.
# Extra arguments go to pytest. Exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RUNLANE_VENV:-$ROOT/build/pyvenv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "== pip install ./python pytest mypy uvicorn starlette (the ASGI dashboard tests)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$ROOT/python" pytest mypy uvicorn starlette

SCRATCH=$(mktemp -d)
REDIS_PIDFILE=""
cleanup() {
  if [ -n "$REDIS_PIDFILE" ] && [ -f "$REDIS_PIDFILE" ]; then
    kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

if [ -z "${RUNLANE_TEST_REDIS:-}" ] && command -v redis-server >/dev/null 2>&1; then
  for attempt in 1 2 3 4 5; do
    PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    REDIS_PIDFILE="$SCRATCH/redis.pid"
    if redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$SCRATCH/redis.log" >/dev/null 2>&1; then
      for _ in $(seq 50); do
        if redis-cli -p "$PORT" ping >/dev/null 2>&1; then break; fi
        sleep 0.1
      done
      if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
        export RUNLANE_TEST_REDIS="redis://127.0.0.1:$PORT/0"
        echo "== redis-server on port $PORT"
        break
      fi
    fi
    REDIS_PIDFILE=""
  done
fi
if [ -z "${RUNLANE_TEST_REDIS:-}" ]; then
  echo "== no Redis: the Redis tests will be skipped (or fail with RUNLANE_REQUIRE_REDIS=1)"
fi

cd "$SCRATCH"
echo "== pytest tests/python"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/python" "$@"
