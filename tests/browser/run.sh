#!/usr/bin/env bash
# The dashboard in a real browser: installs playwright-core (package.json,
# lockfile; no browser download: Debian's chromium is used), then runs the
# scenario (scenario.mjs) through `runlane dashboard`, the Node mount and the
# ASGI mount (run.mjs; arguments: a subset of cli node asgi).
# Needs build/default (the runlane program), /usr/bin/chromium
# (scripts/deps.sh), the Node test app kept by tests/node/run.sh
# (RUNLANE_NODE_KEEP_APP, default build/node-app) and the venv where
# python/run_tests.sh installed runlane, uvicorn and starlette
# ($RUNLANE_VENV, default build/venv): scripts/test.sh runs this after the
# Python and Node steps. Anything missing fails the run.
# Screenshots: build/browser-artifacts/{cli,node,asgi}/.
# Env: see run.mjs (RUNLANE_BIN, RUNLANE_BROWSER_NODE_APP, RUNLANE_BROWSER_PY,
# RUNLANE_TEST_REDIS, RUNLANE_CHROMIUM).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
exec node run.mjs "$@"
