#!/usr/bin/env bash
# Builds the fuzz targets with clang + libFuzzer + ASan/UBSan and runs each
# one for SECONDS (default 20): first its regression inputs and seed corpus
# are replayed (a failure there fails at once), then it fuzzes, with the
# seed corpus as a starting point and new inputs kept in build/fuzz-corpus.
# A crash is copied to tests/fuzz/regressions/<target>/ (commit it; it is
# replayed from then on, here and by ctest) and the script fails.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     targets: sse provider conf store redis_reply cli
#   tests/fuzz/run.sh ci [TARGET...]            what CI runs: a fixed number of
#       inputs per target from a fixed seed, starting from the committed
#       corpus only (copied to a temporary directory, removed after), so a
#       CI run is repeatable, does not depend on earlier runs, and cannot
#       fail on a finding that depends on how fast the machine happened to
#       be; discovery is the timed runs'.
#   RUNLANE_FUZZ_BUILD=dir   build directory (default build/fuzz)
#   RUNLANE_FUZZ_JOBS=n      parallel fuzzing jobs per target (default 1)
#   RUNLANE_FUZZ_ARGS=...    extra libFuzzer flags (e.g. -max_len=8192)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECONDS_EACH=${1:-20}
CI_MODE=0
[ "$SECONDS_EACH" = ci ] && CI_MODE=1
# Inputs per target in ci mode (the whole step stays under ~3 minutes on 2
# cores, build included; provider turns cost tens of ms each).
declare -A CI_RUNS=([sse]=100000 [conf]=8000 [store]=15000 [provider]=3000 [redis_reply]=60000 [cli]=60000)
shift $(( $# > 0 ? 1 : 0 ))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(provider sse conf store redis_reply cli)
BUILD=${RUNLANE_FUZZ_BUILD:-$ROOT/build/fuzz}
JOBS=${RUNLANE_FUZZ_JOBS:-1}

command -v clang >/dev/null 2>&1 || { echo "fuzz: clang not found (RUNLANE_NEED_CLANG=1 scripts/deps.sh installs it)"; exit 1; }

mkdir -p "$BUILD"
echo "== fuzz: building with clang (libFuzzer, ASan, UBSan) in $BUILD"
if ! cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
     -DCMAKE_BUILD_TYPE=Debug -DRUNLANE_ASAN=ON -DRUNLANE_FUZZ=ON -DRUNLANE_WERROR=OFF \
     -DRUNLANE_BUILD_CLI=OFF >"$BUILD/configure.log" 2>&1; then
  cat "$BUILD/configure.log"; exit 1
fi
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("fuzz_$t"); done
cmake --build "$BUILD" -j "${RUNLANE_JOBS:-2}" --target "${build_targets[@]}" >"$BUILD/build.log" 2>&1 \
  || { tail -50 "$BUILD/build.log"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# One target: replay, then fuzz; its summary line goes to $BUILD/summary-<target>.
fuzz_one() {
  local t=$1
  local bin="$BUILD/tests/fuzz/fuzz_$t"
  local seeds="$HERE/corpus/$t" regs="$HERE/regressions/$t" work arts log rc stats crashes
  local -a seed_dirs budget jobargs
  if [ $CI_MODE = 1 ]; then
    # The committed corpus only: nothing learnt by an earlier run.
    work=$(mktemp -d "${TMPDIR:-/tmp}/runlane-fuzz-$t.XXXXXX")
    cp "$seeds"/* "$work"/ 2>/dev/null
    seed_dirs=()
  else
    work="$BUILD/fuzz-corpus/$t"
    seed_dirs=("$seeds")
  fi
  arts="$BUILD/artifacts/$t"
  rm -rf "$arts"   # artifacts of an earlier run are not this run's findings
  mkdir -p "$work" "$arts" "$regs"
  log="$BUILD/fuzz_$t.log"
  echo "== fuzz $t: replay $(ls "$regs" | wc -l) regression and $(ls "$seeds" | wc -l) seed inputs"
  mkdir -p "$BUILD/replay-artifacts"
  if ! "$bin" -runs=0 -artifact_prefix="$BUILD/replay-artifacts/" "$regs" "$seeds" >"$log.replay" 2>&1; then
    tail -40 "$log.replay"
    echo "fuzz $t: a regression or seed input fails (log: $log.replay)"
    [ $CI_MODE = 1 ] && rm -rf "$work"
    echo "FAIL  $t (replay)" >"$BUILD/summary-$t"; return
  fi
  if [ $CI_MODE = 1 ]; then
    budget=(-runs="${CI_RUNS[$t]}")
    echo "== fuzz $t: ${CI_RUNS[$t]} inputs from seed ${RUNLANE_FUZZ_SEED:-1}"
  else
    budget=(-max_total_time="$SECONDS_EACH")
    echo "== fuzz $t: ${SECONDS_EACH}s"
  fi
  # -timeout: one input taking longer is a hang (the provider target's
  # turns take tens of ms).
  jobargs=()
  [ "$JOBS" -gt 1 ] && jobargs=(-jobs="$JOBS" -workers="$JOBS")
  # (in $BUILD: with -jobs libFuzzer writes fuzz-N.log to the current directory)
  (cd "$BUILD" && rm -f fuzz-*.log && \
   "$bin" -seed="${RUNLANE_FUZZ_SEED:-1}" "${budget[@]}" -timeout=25 -rss_limit_mb=4096 -max_len=4096 \
          -print_final_stats=1 -artifact_prefix="$arts/" "${jobargs[@]}" \
          ${RUNLANE_FUZZ_ARGS:-} "$work" "${seed_dirs[@]}") >"$log" 2>&1
  rc=$?
  [ $CI_MODE = 1 ] && rm -rf "$work"
  if [ "$JOBS" -gt 1 ]; then cat "$BUILD"/fuzz-*.log >>"$log" 2>/dev/null; rm -f "$BUILD"/fuzz-*.log; fi
  stats=$(grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|cov:" "$log" | tail -3 | tr '\n' ' ')
  crashes=$(ls "$arts" 2>/dev/null | grep -E '^(crash|leak|timeout|oom)-' || true)
  if [ $rc != 0 ] || [ -n "$crashes" ]; then
    grep -B2 -A40 -E "ERROR: |fuzz invariant broken|runtime error" "$log" | head -80
    for c in $crashes; do
      cp "$arts/$c" "$regs/$c"
      echo "fuzz $t: new regression input tests/fuzz/regressions/$t/$c (commit it)"
    done
    echo "FAIL  $t (exit $rc; log: $log)" >"$BUILD/summary-$t"
  else
    echo "PASS  $t  $stats" >"$BUILD/summary-$t"
  fi
}

rm -f "$BUILD"/summary-*
# ci: the provider target mostly waits on its scripted server (tens of ms
# per turn), so it runs beside the CPU-bound targets: two cores, one step
# of about two minutes. Timed runs go one target at a time.
bg_pid=
for t in "${TARGETS[@]}"; do
  if [ $CI_MODE = 1 ] && [ "$t" = provider ] && [ ${#TARGETS[@]} -gt 1 ]; then
    fuzz_one provider >"$BUILD/provider.out" 2>&1 &
    bg_pid=$!
  else
    fuzz_one "$t"
  fi
done
if [ -n "$bg_pid" ]; then wait "$bg_pid"; cat "$BUILD/provider.out"; fi
echo "== fuzz summary"
failed=0
for t in "${TARGETS[@]}"; do
  line=$(cat "$BUILD/summary-$t" 2>/dev/null || echo "FAIL  $t (no result)")
  echo "$line"
  case $line in FAIL*) failed=$((failed + 1)) ;; esac
done
echo "$(( ${#TARGETS[@]} - failed )) passed, $failed failed"
[ $failed = 0 ]
