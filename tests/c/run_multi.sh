#!/usr/bin/env bash
# Runs a C test against a private Redis Cluster or Sentinel setup that it
# starts and stops (scripts/redis-cluster.sh / redis-sentinel.sh):
#   tests/c/run_multi.sh cluster|sentinel TEST_BINARY
# A setup that cannot start is a failure (never a skip).
set -uo pipefail
kind=${1:?cluster|sentinel}; bin=${2:?test binary}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/runlane-$kind.XXXXXX)
trap '"$root/scripts/redis-$kind.sh" stop "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
url=$("$root/scripts/redis-$kind.sh" start "$dir") || { echo "FAIL: the redis $kind setup did not start" >&2; exit 1; }
echo "== $kind: $url"
RUNLANE_TEST_REDIS="$url" RUNLANE_TEST_REDIS_DIR="$dir" RUNLANE_TEST_STORE=redis RUNLANE_REQUIRE_REDIS=1 "$bin"
