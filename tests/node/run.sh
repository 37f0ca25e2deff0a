#!/usr/bin/env bash
# Node tests of the runlane package, as a user gets it:
#   1. a private redis-server on a free loopback port (unless RUNLANE_TEST_REDIS
#      is given), stopped at exit;
#   2. `npm pack` of node/ (its prepack vendors the core, runs SWIG, builds);
#   3. a fresh app dir: `npm install ./runlane-x.y.z.tgz` (its prebuilt addon,
#      no install script) plus the test deps;
#   4. tsc, then `node --test`.
# Exits non-zero on any failure. KEEP=1 keeps the temp dir.
# Env: RUNLANE_NODE_KEEP_APP=DIR keeps the installed app there (its
#      node_modules/runlane is the package as a user gets it);
#      RUNLANE_TEST_REDIS=redis://127.0.0.1:PORT/0 to use a running Redis;
#      RUNLANE_REQUIRE_REDIS=1 makes Redis tests fail (not skip) without one.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/runlane-node-tests.XXXXXX")"
REDIS_PID_FILE="$WORK/redis.pid"

log() { printf '[node-tests] %s\n' "$*"; }

cleanup() {
  local rc=$?
  if [[ -f "$REDIS_PID_FILE" ]]; then
    kill "$(cat "$REDIS_PID_FILE")" 2>/dev/null || true
  fi
  if [[ "${KEEP:-0}" == "1" ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 1. Redis ---------------------------------------------------------------
if [[ -z "${RUNLANE_TEST_REDIS:-}" ]]; then
  if command -v redis-server >/dev/null 2>&1; then
    for try in 1 2 3 4 5; do
      PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
      if redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
          --daemonize yes --pidfile "$REDIS_PID_FILE" --dir "$WORK" --logfile "$WORK/redis.log"; then
        for _ in $(seq 1 50); do
          if redis-cli -p "$PORT" ping >/dev/null 2>&1; then break; fi
          sleep 0.1
        done
        if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
          export RUNLANE_TEST_REDIS="redis://127.0.0.1:$PORT/0"
          break
        fi
      fi
      log "redis-server did not come up on port $PORT (try $try); retrying"
      rm -f "$REDIS_PID_FILE"
    done
  fi
  if [[ -n "${RUNLANE_TEST_REDIS:-}" ]]; then log "redis at $RUNLANE_TEST_REDIS"; else log "no redis-server: Redis tests skip"; fi
fi

# ---- 2. pack -----------------------------------------------------------------
cd "$REPO/node"
log "npm install (package dev dependencies, no scripts)"
npm install --ignore-scripts --no-audit --no-fund --loglevel=error
log "npm pack"
npm pack --pack-destination "$WORK" --loglevel=error >"$WORK/pack.log" 2>&1 || { cat "$WORK/pack.log"; exit 1; }
TARBALL="$(ls "$WORK"/runlane-*.tgz)"
log "packed $(basename "$TARBALL") ($(du -h "$TARBALL" | cut -f1))"
tar -tzf "$TARBALL" >"$WORK/contents.txt"
if grep -q '^package/build/' "$WORK/contents.txt"; then log "the tarball carries a build/ dir"; exit 1; fi
grep -q '^package/generated/runlane_wrap.cxx$' "$WORK/contents.txt" || { log "the tarball lacks the SWIG wrapper"; exit 1; }
grep -q '^package/vendor/core/include/runlane.h$' "$WORK/contents.txt" || { log "the tarball lacks the core"; exit 1; }
grep -q '^package/dist/esm/index.mjs$' "$WORK/contents.txt" || { log "the tarball lacks the ESM entry"; exit 1; }
grep -q '^package/prebuilds/linux-x64/runlane.node$' "$WORK/contents.txt" || { log "the tarball lacks the prebuilt addon"; exit 1; }

# ---- 3. a fresh app ------------------------------------------------------------
APP="$WORK/app"
mkdir -p "$APP"
cd "$APP"
cat >package.json <<'EOF'
{ "name": "runlane-node-tests", "version": "0.0.0", "private": true }
EOF
log "npm install the tarball and the test dependencies"
npm install --no-audit --no-fund --loglevel=error "$TARBALL" \
  typescript@~5.9.3 @types/node@^20.19.0 \
  @nestjs/common@12.5.1 @nestjs/core@12.5.1 @nestjs/testing@12.1.1 @nestjs/platform-express@12.5.1 \
  reflect-metadata@0.2.2 rxjs@7.8.2 @nestjs/config@12.0.1 @nestjs/terminus@12.1.0 >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; exit 1; }
# The prebuilt addon is used as is: no install script, no build.
test -f node_modules/runlane/prebuilds/linux-x64/runlane.node || { log "the package has no prebuilt addon"; exit 1; }
test ! -e node_modules/runlane/build || { log "the install built the addon from source"; exit 1; }

# ---- 4. compile and run ----------------------------------------------------------
cp -r "$HERE/src" "$HERE/tsconfig.json" "$APP/"
log "tsc"
npx tsc -p tsconfig.json
cp "$HERE"/src/*.test.mjs dist/
log "tsc: the NestJS example app against the installed package"
mkdir -p example
cp -r "$REPO/node/examples/nestjs-chat/src" "$REPO/node/examples/nestjs-chat/tsconfig.json" example/
npx tsc -p example/tsconfig.json
export RUNLANE_EXAMPLE_MAIN="$APP/example/dist/main.js"
log "node --test"
export RUNLANE_TEST_EMULATOR="${RUNLANE_TEST_EMULATOR:-$REPO/tests/emulator/emulator.py}"
# Test files run 3 at a time: they mostly wait on Redis, the emulator and
# child processes (78 s one at a time, 49 s three at a time here).
node --test --test-concurrency="${RUNLANE_NODE_TEST_CONCURRENCY:-3}" --test-timeout=180000 dist/*.test.js dist/*.test.mjs 2>&1 | tee "$WORK/node-test.log"
# Under RUNLANE_NO_SKIP=1 any skipped or todo test fails the run (whatever
# skipped it: a helper, a { skip } option, t.skip()).
if [[ "${RUNLANE_NO_SKIP:-0}" == "1" ]]; then
  skipped=$(grep -aE '^(# |ℹ )(skipped|todo) [0-9]+' "$WORK/node-test.log" | awk '{s += $3} END {print s + 0}')
  if ! grep -aqE '^(# |ℹ )skipped [0-9]+' "$WORK/node-test.log"; then log "no test summary in the output"; exit 1; fi
  if [[ "$skipped" != 0 ]]; then log "RUNLANE_NO_SKIP=1: $skipped test(s) skipped or todo"; exit 1; fi
fi

# ---- 4b. the source fallback, in a copy of the app: `npx runlane-build-addon`
# builds build/Release/runlane.node, which is then loaded instead of the prebuilt
log "source fallback: npx runlane-build-addon in a copy of the app"
cp -a "$APP" "$WORK/fallback"
(cd "$WORK/fallback" && npx --no-install runlane-build-addon) >"$WORK/fallback.log" 2>&1 || { cat "$WORK/fallback.log"; exit 1; }
loaded="$(cd "$WORK/fallback" && node -e "require('runlane').features(); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))")"
[[ "$loaded" == "$WORK/fallback/node_modules/runlane/build/Release/runlane.node" ]] || { log "after the source build, loaded: $loaded"; exit 1; }
(cd "$WORK/fallback" && RUNLANE_NODE_PKG="$WORK/fallback/node_modules/runlane" node "$REPO/tests/memcheck/flow.cjs") || { log "the source-built addon failed a flow"; exit 1; }
rm -rf "$WORK/fallback"

# ---- 5. one Node flow of the installed package under valgrind --------------------
# (RUNLANE_NODE_MEMCHECK=1; only reports whose stack passes through runlane
# count: V8's own are not ours.)
if [[ "${RUNLANE_NODE_MEMCHECK:-0}" == "1" ]]; then
  log "valgrind: a Node flow (tests/memcheck/flow.cjs)"
  RUNLANE_NODE_PKG="$APP/node_modules/runlane" valgrind -q --error-exitcode=0 --leak-check=no \
    --child-silent-after-fork=yes node "$REPO/tests/memcheck/flow.cjs" >"$WORK/valgrind-node.log" 2>&1 || true
  grep -q "^1 passed, 0 failed" "$WORK/valgrind-node.log" || { cat "$WORK/valgrind-node.log"; exit 1; }
  python3 "$REPO/tests/memcheck/vgfilter.py" "$WORK/valgrind-node.log"
fi

# ---- 6. keep the installed app for later steps (the chaos suite's Node worker) ----
if [[ -n "${RUNLANE_NODE_KEEP_APP:-}" ]]; then
  rm -rf "$RUNLANE_NODE_KEEP_APP"
  mkdir -p "$(dirname "$RUNLANE_NODE_KEEP_APP")"
  mv "$APP" "$RUNLANE_NODE_KEEP_APP"
  log "installed app kept in $RUNLANE_NODE_KEEP_APP"
fi
