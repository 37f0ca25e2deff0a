#!/usr/bin/env python3
"""Load on Redis of a dashboard left open, per refresh, with 1,000 and 10,000 conversations.

    build/venv/bin/python tests/bench/dashboard_cost.py            # 1,000 and 10,000, ~1-2 min
    build/venv/bin/python tests/bench/dashboard_cost.py --sizes 10000 --refreshes 50
    build/venv/bin/python tests/bench/dashboard_cost.py --write     # results into RESULTS.md

A benchmark, not a test. Needs a Python where the runlane package is installed
(python/run_tests.sh's venv; it fills the store), redis-server and the
runlane program (RUNLANE_BIN, default build/default/core/cli/runlane). For
each size it starts a private redis-server (scripts/redis-server.sh), fills
it with that many conversations in every state the dashboard lists, starts
`runlane dashboard` on it (the core's handler, runlane_dashboard_handle, that
every mount calls; history samples every hour, so the timer adds nothing)
and requests exactly what the page does:

  refresh     what the page sends every 2 s: api/overview (totals and history)
              and api/conversations for the open tab (first page of 50)
  per call    api/overview; api/conversations?state=S for each tab (first page,
              and page 20 for pending); with a search; api/conversation?id=
              (the conversation view); api/dead (the dead-letter list)

Per call it reports Redis commands (INFO commandstats deltas: every command,
those run inside scripts included; top level = what a client sent, scripts
counted once), round trips (client side: the calls' pipelines; P scripts of
one request are pipelined in one round trip), and Redis CPU
(used_cpu_user + used_cpu_sys of the private server, per call, averaged over
--refreshes calls). The states: 60% pending (batch window not over), 25%
ready, 5% in flight (held by a stopped worker, SIGSTOP, leases of 1 h), 5%
retrying (backoff of 1 h), 5% dead.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "tests", "bench", "RESULTS.md")
MARK_B, MARK_E = "<!-- dashboard-cost:begin -->", "<!-- dashboard-cost:end -->"
SCRIPT_CMDS = {"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"}
HOUR = 3600000
BIN = os.environ.get("RUNLANE_BIN", os.path.join(ROOT, "build/default/core/cli/runlane"))
BASE_CONF = {
    "lease.ms": HOUR,
    "max.attempts": 2,
    "backoff.base.ms": HOUR,
    "backoff.max.ms": HOUR,
    "batch.window.ms": 0,
}


def redis_cli(port: int, *args: str) -> str:
    return subprocess.check_output(["redis-cli", "-p", str(port), *args], text=True)


def info(port: int, section: str) -> dict:
    out = {}
    for line in redis_cli(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def commandstats(port: int) -> dict:
    calls = {}
    for k, v in info(port, "commandstats").items():
        if k.startswith("cmdstat_"):
            calls[k[len("cmdstat_"):]] = int(dict(x.split("=") for x in v.split(","))["calls"])
    return calls


def cpu(port: int) -> float:
    i = info(port, "cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def hold(store: str, prefix: str, n_inflight: int) -> None:
    """Child process: a worker that dead-letters dead-*, fails retry-* once
    (backoff of an hour) and holds inflight-* (never settled). Prints READY once
    every one of them is where it should be; the parent then SIGSTOPs it, so
    its lease renewals add nothing to the measurement."""
    import runlane

    conf = dict(BASE_CONF, **{"key.prefix": prefix, "worker.concurrency": n_inflight + 64})
    q = runlane.AssistantMessageQueue(store=store, config=conf, dispatch="manual")
    q.start_worker()
    for ev in q.events():
        if ev.type != "batch" or ev.batch is None:
            continue
        cid = ev.batch.conversation_id
        if cid.startswith("dead-"):
            ev.batch.fail("provider said no: 400 invalid request", retriable=False)
        elif cid.startswith("retry-"):
            ev.batch.fail("provider said: 503 try later", retriable=True)
        # inflight-*: held


def fill(port: int, n: int) -> tuple:
    """Fills a private Redis with n conversations; returns (holder process, queue, counts)."""
    import runlane

    store = "redis://127.0.0.1:%d/0" % port
    prefix = "dash"
    counts = {
        "dead": n * 5 // 100,
        "retrying": n * 5 // 100,
        "inflight": n * 5 // 100,
        "ready": n * 25 // 100,
    }
    counts["pending"] = n - sum(counts.values())
    holder = subprocess.Popen(
        [sys.executable, __file__, "--hold", store, prefix, str(counts["inflight"])],
        stdout=subprocess.PIPE, text=True)
    q = runlane.AssistantMessageQueue(store=store, config=dict(BASE_CONF, **{"key.prefix": prefix}))
    msgs = []
    for kind in ("dead", "retry", "inflight"):
        k = "retrying" if kind == "retry" else kind
        msgs += [("%s-%06d" % (kind, i), "message %d of %s" % (i, kind)) for i in range(counts[k])]
    q.enqueue_many(msgs)
    deadline = time.monotonic() + 120
    while True:
        t = json.loads(json.dumps(q.get_queue_status()))
        tot = t.get("totals", t)
        if tot.get("dead", 0) >= counts["dead"] and tot.get("inflight", 0) >= counts["inflight"] \
                and tot.get("ready", 0) >= counts["retrying"]:
            break
        if time.monotonic() > deadline:
            raise SystemExit("the holder did not settle: %s" % tot)
        time.sleep(0.2)
    holder.send_signal(signal.SIGSTOP)
    # ready: due at once (nobody claims: the holder is stopped); pending:
    # a batch window of an hour.
    q.enqueue_many([("ready-%06d" % i, "message %d" % i) for i in range(counts["ready"])])
    qp = runlane.AssistantMessageQueue(store=store, config=dict(
        BASE_CONF, **{"key.prefix": prefix, "batch.window.ms": HOUR, "batch.max.wait.ms": HOUR}))
    qp.enqueue_many([("pending-%06d" % i, "message %d" % i) for i in range(counts["pending"])])
    qp.close(drain=False)
    return holder, q, counts


class Dash:
    """`runlane dashboard` on the store, requests over HTTP."""

    def __init__(self, store: str, prefix: str, scan_limit: int):
        # scan_limit: the CLI has no flag for it; the default (10,000) is used.
        self.p = subprocess.Popen([BIN, "--store", store, "-X", "key.prefix=" + prefix, "dashboard",
                                   "--listen", "127.0.0.1:0", "--history-interval", "3600"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.p.stdout.readline()
        if "listening on " not in line:
            raise SystemExit("runlane dashboard did not start: %r" % line)
        self.url = line.split("listening on ", 1)[1].split()[0]

    def get(self, path: str, query: str) -> int:
        with urllib.request.urlopen(self.url + path.lstrip("/") + ("?" + query if query else "")) as r:
            r.read()
            return r.status

    def close(self) -> None:
        self.p.terminate()
        self.p.wait()


def measure(port: int, dash: Dash, calls: list, reps: int) -> dict:
    """Runs `calls` (path, query) reps times; per call averages."""
    for c in calls:  # warm: scripts loaded, one history sample taken
        dash.get(*c)
    redis_cli(port, "CONFIG", "RESETSTAT")
    c0 = cpu(port)
    t0 = time.perf_counter()
    for _ in range(reps):
        for c in calls:
            st = dash.get(*c)
            if st != 200:
                raise SystemExit("%s?%s: %d" % (c[0], c[1], st))
    wall = time.perf_counter() - t0
    c1 = cpu(port)
    stats = commandstats(port)
    stats.pop("info", None)  # ours (cpu)
    stats.pop("config|resetstat", None)
    total = sum(stats.values())
    return {
        "commands": total / reps,
        "scripts": sum(v for k, v in stats.items() if k in SCRIPT_CMDS) / reps,
        "cpu_us": (c1 - c0) * 1e6 / reps,
        "wall_ms": wall * 1000 / reps,
        "detail": {k: round(v / reps, 1) for k, v in sorted(stats.items())},
    }


def run_size(n: int, reps: int, scan_limit: int) -> dict:
    rdir = tempfile.mkdtemp(prefix="runlane-dashcost-")
    port = int(subprocess.check_output([os.path.join(ROOT, "scripts/redis-server.sh"), "start", rdir],
                                       text=True).strip())
    holder = d = None
    try:
        t0 = time.monotonic()
        holder, q, counts = fill(port, n)
        print("# %d conversations filled in %.1f s: %s" % (n, time.monotonic() - t0, counts), flush=True)
        d = Dash("redis://127.0.0.1:%d/0" % port, "dash", scan_limit)
        one = lambda s: "state=%s&offset=0&limit=50&search=" % s
        rows = {
            "refresh (overview + pending tab)": [("/api/overview", ""), ("/api/conversations", one("pending"))],
            "api/overview": [("/api/overview", "")],
        }
        for s in ("pending", "ready", "inflight", "retrying", "dead"):
            rows["api/conversations " + s] = [("/api/conversations", one(s))]
        rows["api/conversations pending, page 20"] = [
            ("/api/conversations", "state=pending&offset=950&limit=50&search=")]
        rows["api/conversations pending, search"] = [
            ("/api/conversations", "state=pending&offset=0&limit=50&search=pending-0001")]
        rows["api/conversation (view)"] = [("/api/conversation", "id=inflight-000001")]
        rows["api/dead"] = [("/api/dead", "offset=0&limit=50")]
        out = {"n": n, "counts": counts, "rows": {}}
        for name, calls in rows.items():
            m = measure(port, d, calls, reps)
            out["rows"][name] = m
            print("%-40s %8.1f cmds %6.1f scripts %9.1f us Redis CPU %7.2f ms wall" %
                  (name, m["commands"], m["scripts"], m["cpu_us"], m["wall_ms"]), flush=True)
        q.close(drain=False)
        return out
    finally:
        if d is not None:
            d.close()
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        subprocess.call([os.path.join(ROOT, "scripts/redis-server.sh"), "stop", rdir],
                        stdout=subprocess.DEVNULL)


def table(results: list) -> str:
    names = list(results[0]["rows"].keys())
    head = "| request | " + " | ".join(
        "%s: commands / scripts / Redis CPU µs" % format(r["n"], ",") for r in results) + " |"
    lines = [head, "| --- |" + " ---: |" * len(results)]
    for name in names:
        cells = []
        for r in results:
            m = r["rows"][name]
            cells.append("%.0f / %.0f / %.0f" % (m["commands"], m["scripts"], m["cpu_us"]))
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--hold":
        hold(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--refreshes", type=int, default=20)
    ap.add_argument("--scan-limit", type=int, default=10000, help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="put the table into tests/bench/RESULTS.md")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    results = [run_size(int(s), a.refreshes, a.scan_limit) for s in a.sizes.split(",")]
    t = table(results)
    print()
    print(t)
    if a.write:
        body = "%s\n_%s, %s, load average %.1f at start; `%s`_\n\n%s\n%s" % (
            MARK_B, datetime.date.today().isoformat(), platform.machine(), load,
            "tests/bench/dashboard_cost.py " + " ".join(sys.argv[1:]), t, MARK_E)
        text = open(RESULTS).read()
        if MARK_B in text:
            text = text[:text.index(MARK_B)] + body + text[text.index(MARK_E) + len(MARK_E):]
        else:
            text = text.rstrip("\n") + "\n\n" + body + "\n"
        open(RESULTS, "w").write(text)


if __name__ == "__main__":
    main()
