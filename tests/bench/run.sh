#!/usr/bin/env bash
# Queue throughput against a private Redis, side by side with that Redis's
# raw rate measured in the same run (redis-benchmark): the ratio is what
# runlane's Lua scripts and round trips cost over plain commands.
#   tests/bench/run.sh [--write] [MESSAGES]
# --write also puts the table into tests/bench/RESULTS.md (between the
# queue:begin / queue:end markers), with the machine and the command.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
WRITE=0
if [ "${1:-}" = --write ]; then WRITE=1; shift; fi
N=${1:-20000}
RUNLANE_NEED_NODE=0 scripts/deps.sh
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/bench --target bench_queue >/dev/null
RDIR=$(mktemp -d /tmp/runlane-bench-redis.XXXXXX)
trap 'scripts/redis-server.sh stop "$RDIR"; rm -rf "$RDIR"' EXIT
PORT=$(scripts/redis-server.sh start "$RDIR")

# Raw rates: one client, one command per round trip (like enqueue_one), and
# pipelined by 100 (like enqueue_many).
raw_one=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -c 1 -n "$N" -t set -q | tr '\r' '\n' | awk '/requests per second/{print $2}' | tail -1)
raw_pipe=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -c 1 -n $((N * 5)) -P 100 -t set -q | tr '\r' '\n' | awk '/requests per second/{print $2}' | tail -1)
out=$(build/bench/tests/bench/bench_queue "redis://127.0.0.1:$PORT/0" "$N")
mem=$(build/bench/tests/bench/bench_queue memory "$N")
val() { echo "$1" | awk -v k="$2" -F'\t' '$1==k{print $2}'; }

report() {
  echo "## runlane queue throughput ($(date -u +%Y-%m-%d), $(nproc) cores, $N messages, 1000 conversations)"
  echo
  echo "| operation | redis store msg/s | raw Redis SET/s (same run) | ratio | memory store msg/s |"
  echo "|---|---|---|---|---|"
  for op in enqueue_one enqueue_many claim_ack; do
    r=$(val "$out" $op); m=$(val "$mem" $op)
    raw=$raw_one; [ $op = enqueue_many ] && raw=$raw_pipe
    [ $op = claim_ack ] && raw=$raw_one
    ratio=$(awk -v a="$r" -v b="$raw" 'BEGIN{printf "%.2f", a/b}')
    echo "| $op | $r | $raw | $ratio | $m |"
  done
  echo
  echo "claim_ack batches/s: $(val "$out" claim_ack_batches) (redis), batches of up to 10 messages."
  echo "Raw rates: redis-benchmark -c 1 SET (one per round trip) and -P 100 (pipelined)."
}
report
if [ $WRITE = 1 ]; then
  {
    echo "- Command: \`tests/bench/run.sh --write${1:+ $1}\`"
    echo "- Machine: $(nproc) cores (\`nproc\`), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(uname -sr); $(redis-server --version | awk '{print $1, $2, $3}')"
    echo "- Load average when it ran: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    report | sed 's/^## /### /'
  } >"$RDIR/section.md"
  python3 - "$ROOT/tests/bench/RESULTS.md" "$RDIR/section.md" <<'PY'
import sys
path, sec = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
b, e = "<!-- queue:begin -->", "<!-- queue:end -->"
if b in text and e in text:
    text = text[:text.index(b) + len(b)] + "\n" + sec + text[text.index(e):]
else:
    text = text.rstrip("\n") + "\n\n## Queue throughput against this machine's raw Redis rate\n\n" + b + "\n" + sec + e + "\n"
open(path, "w").write(text)
PY
  echo "wrote tests/bench/RESULTS.md"
fi
