#!/usr/bin/env bash
# Queue throughput against a private Redis, side by side with that Redis's
# raw rate measured in the same run (redis-benchmark): the ratio is what
# runlane's Lua scripts and round trips cost over plain commands.
#   [RUNS=3] tests/bench/run.sh [--write] [MESSAGES]
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

# RUNS (default 3) runs, each measuring the raw rates and runlane back to
# back; the table shows each ratio's median and its spread (min-max) over the
# runs: a single run's ratio swings on a shared machine.
RUNS=${RUNS:-3}
: >"$RDIR/runs.tsv"
for run in $(seq "$RUNS"); do
  # Raw rates: one client, one command per round trip (like enqueue_one), and
  # pipelined by 100 (like enqueue_many).
  raw_one=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -c 1 -n "$N" -t set -q | tr '\r' '\n' | awk '/requests per second/{print $2}' | tail -1)
  raw_pipe=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -c 1 -n $((N * 5)) -P 100 -t set -q | tr '\r' '\n' | awk '/requests per second/{print $2}' | tail -1)
  out=$(build/bench/tests/bench/bench_queue "redis://127.0.0.1:$PORT/0" "$N")
  mem=$(build/bench/tests/bench/bench_queue memory "$N")
  redis-cli -p "$PORT" flushall >/dev/null
  val() { echo "$1" | awk -v k="$2" -F'\t' '$1==k{print $2}'; }
  # op, runlane rate, raw rate of the same unit, memory store rate. A
  # claim+ack is per batch (up to 10 messages): batches against round trips,
  # never messages against round trips.
  printf 'enqueue_one\t%s\t%s\t%s\n' "$(val "$out" enqueue_one)" "$raw_one" "$(val "$mem" enqueue_one)" >>"$RDIR/runs.tsv"
  printf 'enqueue_many\t%s\t%s\t%s\n' "$(val "$out" enqueue_many)" "$raw_pipe" "$(val "$mem" enqueue_many)" >>"$RDIR/runs.tsv"
  printf 'claim_ack\t%s\t%s\t%s\n' "$(val "$out" claim_ack_batches)" "$raw_one" "$(val "$mem" claim_ack_batches)" >>"$RDIR/runs.tsv"
  printf 'claim_ack_messages\t%s\t-\t%s\n' "$(val "$out" claim_ack)" "$(val "$mem" claim_ack)" >>"$RDIR/runs.tsv"
done

report() {
  echo "## runlane queue throughput ($(date -u +%Y-%m-%d), $(nproc) cores, $N messages, 1000 conversations, median (min–max) of $RUNS runs)"
  echo
  python3 - "$RDIR/runs.tsv" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    op, r, raw, m = line.rstrip("\n").split("\t")
    rows.setdefault(op, []).append((float(r), None if raw == "-" else float(raw), float(m)))
def sp(v, f):
    return f % statistics.median(v) + ("" if len(v) == 1 else " (" + f % min(v) + "–" + f % max(v) + ")")
units = {"enqueue_one": "messages (one call each) vs SETs (one round trip each)",
         "enqueue_many": "messages vs SETs, both pipelined by 100",
         "claim_ack": "batches of ≤10 messages (a claim and an ack each) vs SETs (one round trip each)"}
print("| operation | unit compared | redis store /s | raw Redis SET/s (same run) | ratio | memory store /s (same unit) |")
print("|---|---|---|---|---|---|")
for op in ("enqueue_one", "enqueue_many", "claim_ack"):
    v = rows[op]
    print("| %s | %s | %s | %s | %s | %s |" % (op, units[op], sp([x[0] for x in v], "%.0f"),
          sp([x[1] for x in v], "%.0f"), sp([x[0] / x[1] for x in v], "%.2f"), sp([x[2] for x in v], "%.0f")))
print()
print("claim_ack messages/s: %s (redis), %s (memory). Its ratio above compares batches with single"
      " SET round trips, never messages with round trips." % (sp([x[0] for x in rows["claim_ack_messages"]], "%.0f"),
                                                             sp([x[2] for x in rows["claim_ack_messages"]], "%.0f")))
PY
  echo "Raw rates: redis-benchmark -c 1 SET (one per round trip) and -P 100 (pipelined), measured in each run just before runlane's."
}
report
if [ $WRITE = 1 ]; then
  {
    echo "- Command: \`RUNS=$RUNS tests/bench/run.sh --write${1:+ $1}\`"
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
