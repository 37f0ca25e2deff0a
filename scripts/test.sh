#!/usr/bin/env bash
# Runs every test: the C suite (plain, ASan+UBSan, TSan), the emulator's
# tests, the CLI tests, and the Python and Node packages' tests, against a
# private redis-server on a free loopback port that this script starts and
# stops. Installs what is missing first (scripts/deps.sh).
#
#   scripts/test.sh            everything
#   RUNLANE_QUICK=1 scripts/test.sh   skip the sanitizer builds
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RUNLANE_VENV=${RUNLANE_VENV:-$ROOT/build/venv}
RUNLANE_NEED_VALGRIND=1 RUNLANE_NEED_CLANG=$([ "${RUNLANE_QUICK:-0}" = 1 ] && echo 0 || echo 1) scripts/deps.sh || { echo "dependency install failed"; exit 1; }
VPY="$RUNLANE_VENV/bin/python"
JOBS=${RUNLANE_JOBS:-2}
# The C tests spend most of their time waiting (leases, windows, backoffs,
# the emulator), not computing: ctest runs three per build job side by side.
CTEST_JOBS=${RUNLANE_CTEST_JOBS:-$((JOBS * 3))}

RDIR=$(mktemp -d /tmp/runlane-test-redis.XXXXXX)
cleanup() { scripts/redis-server.sh stop "$RDIR" >/dev/null 2>&1; rm -rf "$RDIR"; }
trap cleanup EXIT
PORT=$(scripts/redis-server.sh start "$RDIR") || { echo "could not start redis-server"; exit 1; }
export RUNLANE_TEST_REDIS="redis://127.0.0.1:$PORT/0"
export RUNLANE_REQUIRE_REDIS=1
# Any test that cannot run (emulator, Redis, a tool missing) fails instead of
# skipping, in the C, Python and Node suites alike.
export RUNLANE_NO_SKIP=1
# The OpenAI spec the emulator and integration tests validate against is kept
# in the repository (tests/spec, with its licence notice).
export RUNLANE_OPENAPI_SPEC=${RUNLANE_OPENAPI_SPEC:-$ROOT/tests/spec/openai-openapi.yaml}
export RUNLANE_REQUIRE_SPEC=1
echo "== redis-server on 127.0.0.1:$PORT"

declare -a results=()
failed=0
step() { # name, command...
  local name=$1; shift
  echo; echo "== $name"
  local t0=$SECONDS
  if "$@"; then results+=("PASS  $name ($((SECONDS - t0)) s)"); else results+=("FAIL  $name ($((SECONDS - t0)) s)"); failed=$((failed + 1)); fi
}

c_suite() { # build dir, cmake options...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DPython3_EXECUTABLE="$VPY" "$@" >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS" || return 1
  (cd "$dir" && PATH="$RUNLANE_VENV/bin:$PATH" ctest -j "$CTEST_JOBS" --output-on-failure --timeout 600)
}

step "C suite" c_suite build/default
step "emulator tests" "$VPY" -m pytest -q -p no:cacheprovider tests/emulator

valgrind_one() { # one C test of the default build under valgrind (leaks: definite)
  local t=$1 rc=0
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --child-silent-after-fork=yes \
    "build/default/tests/c/$t" >"build/valgrind-$t.log" 2>&1 || { rc=1; tail -40 "build/valgrind-$t.log"; }
  echo "-- valgrind $t: $(tail -1 "build/valgrind-$t.log")"
  return $rc
}
export -f valgrind_one
valgrind_suite() { # valgrind runs one thread at a time, and the tests mostly wait: 2×$JOBS side by side
  local t
  for t in test_client test_store test_sse test_http test_backend_responses test_backend_assistants; do
    [ -x "build/default/tests/c/$t" ] && echo "$t"
  done | xargs -P "$((JOBS * 2))" -I{} bash -c 'valgrind_one "$1"' _ {}
}
if [ "${RUNLANE_QUICK:-0}" != 1 ]; then
  # Sanitized and valgrind runs are slower: timing-based tests stretch.
  export RUNLANE_TEST_TIME_SCALE=3
  # ...and the Redis conformance suite runs once (most partitions) instead of
  # once per partition count, which the plain run above covers.
  export RUNLANE_TEST_PARTITIONS=last
  step "C suite under valgrind" valgrind_suite
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  step "C suite under ASan+UBSan" c_suite build/asan -DRUNLANE_ASAN=ON -DCMAKE_BUILD_TYPE=Debug
  unset ASAN_OPTIONS UBSAN_OPTIONS
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  step "C suite under TSan" c_suite build/tsan -DRUNLANE_TSAN=ON -DCMAKE_BUILD_TYPE=Debug
  unset TSAN_OPTIONS RUNLANE_TEST_TIME_SCALE RUNLANE_TEST_PARTITIONS
  # libFuzzer targets (tests/fuzz): regressions and seeds replayed, then a
  # fixed number of inputs from a fixed seed each (clang, ASan+UBSan).
  step "fuzz (libFuzzer, fixed inputs per target)" tests/fuzz/run.sh ci
fi
if [ -x python/run_tests.sh ]; then step "Python package" python/run_tests.sh; fi
if [ "${RUNLANE_QUICK:-0}" != 1 ]; then
  step "Python flow under valgrind" tests/memcheck/run_python.sh
  export RUNLANE_NODE_MEMCHECK=1   # tests/node/run.sh ends with a Node flow under valgrind
fi
# The Node step keeps its installed app for the chaos run below.
export RUNLANE_NODE_KEEP_APP="$ROOT/build/node-app"
rm -rf "$RUNLANE_NODE_KEEP_APP"   # never a stale app from an earlier run
if [ -x tests/node/run.sh ]; then step "Node package" tests/node/run.sh; fi
# The dashboard in Debian's chromium, headless (playwright-core), through
# `runlane dashboard`, the Node mount (the app kept above) and the ASGI mount
# (the venv of the Python step): live traffic, a dead letter retried from the
# page; screenshots in build/browser-artifacts/{cli,node,asgi}/. After the
# Python and Node steps: it needs what they build (missing: it fails).
step "dashboard in a browser" env RUNLANE_BROWSER_NODE_APP="$RUNLANE_NODE_KEEP_APP" tests/browser/run.sh
# The built wheel and npm tarball (scripts/package.sh) installed and run in a
# Debian 12 minimal chroot without build tools (needs root).
step "clean-room install (wheel, npm tarball)" tests/install/cleanroom.sh
if [ "${RUNLANE_QUICK:-0}" != 1 ]; then
  # Producers and workers (CLI, plus the Python and Node packages as
  # installed by the steps above) with kill -9, SIGSTOP past the lease, Redis
  # restarts and 5% provider faults; checks exactly-once and order at the end.
  step "chaos (small)" env RUNLANE_BIN="$ROOT/build/default/core/cli/runlane" \
    RUNLANE_PY="$VPY" RUNLANE_NODE_PKG="$RUNLANE_NODE_KEEP_APP/node_modules/runlane" CHAOS_REQUIRE_BINDINGS=1 \
    tests/chaos/run.sh --size small
  # The same checks through a 3-master Cluster (live reshard of slots holding
  # keys, master kill -9 + promotion) and Sentinel (master kill -9), with
  # redis.wait.replicas=1; short runs (~50 s each). The cluster run has a
  # Python and a Node worker beside the CLI ones (issue 14: CLI/Python/Node).
  step "chaos (cluster, short)" env RUNLANE_BIN="$ROOT/build/default/core/cli/runlane" \
    RUNLANE_PY="$VPY" RUNLANE_NODE_PKG="$RUNLANE_NODE_KEEP_APP/node_modules/runlane" CHAOS_REQUIRE_BINDINGS=1 \
    tests/chaos/run.sh --redis cluster --seconds 40 --conversations 80 --set kills=2 --set pauses=1 --set restarts=2
  step "chaos (sentinel, short)" env RUNLANE_BIN="$ROOT/build/default/core/cli/runlane" \
    tests/chaos/run.sh --redis sentinel --seconds 30 --conversations 60 --set kills=1 --set pauses=1 --set restarts=1
  # The chaos suite's earlier findings, each as a deterministic repro.
  step "chaos repros (fixed findings; stale create as expected failure)" env RUNLANE_BIN="$ROOT/build/default/core/cli/runlane" tests/chaos/repros.sh
fi

echo; echo "== summary"
printf '%s\n' "${results[@]}"
passed=$(( ${#results[@]} - failed ))
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
