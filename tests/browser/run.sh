#!/usr/bin/env bash
# The dashboard in a real browser: installs playwright-core (package.json,
# lockfile; no browser download: Debian's chromium is used), then runs the
# scenario (scenario.mjs) through `runlane dashboard` (run_cli.mjs).
# Needs build/default (the runlane program) and /usr/bin/chromium
# (scripts/deps.sh). Screenshots: build/browser-artifacts/cli/.
# Env: see run_cli.mjs (RUNLANE_BIN, RUNLANE_TEST_REDIS, RUNLANE_CHROMIUM).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
if [ ! -d node_modules/playwright-core ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
exec node run_cli.mjs
