#!/usr/bin/env python3
"""Redis cost per message and throughput: one server vs a 3-master Redis Cluster (not a test).

    python3 tests/bench/cluster_cost.py [--seconds 8] [--rate 20000] [--write]

Starts a private redis-server (scripts/redis-server.sh) and a private 3-master/3-replica cluster
(scripts/redis-cluster.sh), and runs the same load through each with tests/bench/cost_driver
(public C API, the build in build/default): 2 producer processes offering --rate messages/s in
total to 1,000 conversations, 2 worker processes acking every batch at once (batch.window.ms=0),
each setup with its default partitions (1 on a single server, 12 on a cluster). Reported per
message delivered:

  commands   INFO commandstats deltas summed over every master (commands run inside scripts
             included, the harness's INFO excluded)
  scripts    EVALSHA/EVAL calls counted by Redis, i.e. store round trips of one command
  msgs/s     messages delivered / the window from the producers' start to the last delivery
             (the commands include the workers' idle polling of that window)

It asserts nothing. On this 2-core machine the 6 cluster nodes, the 4 client processes and the
single server share the same 2 cores: a cluster cannot show its scale-out here (each master has
well under a core), so msgs/s compares the routing overhead, not what 3 machines would give.
--write puts the table into tests/bench/RESULTS.md between <!-- cluster-cost:begin --> and
<!-- cluster-cost:end --> (appended at the end the first time).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(ROOT, "build", "default", "tests", "bench", "cost_driver")
HARNESS = {"info", "cluster|info", "cluster", "ping", "config", "cluster|slots"}


def stats(ports):
    calls = scripts = 0
    for p in ports:
        out = subprocess.run(["redis-cli", "-p", str(p), "info", "commandstats"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name = line[len("cmdstat_"):line.index(":")]
            n = int(line.split("calls=")[1].split(",")[0])
            if name in HARNESS:
                continue
            calls += n
            if name in ("evalsha", "eval", "evalsha_ro", "eval_ro"):
                scripts += n
    return calls, scripts


def masters(ports):
    out = []
    for p in ports:
        role = subprocess.run(["redis-cli", "-p", str(p), "role"], capture_output=True,
                              text=True).stdout.split("\n")[0].strip()
        if role == "master":
            out.append(p)
    return out


def run(url, ports, a, tmp):
    prefix = "bench%d" % int(time.time() * 1000)
    conf = ["batch.window.ms=0"]
    workers = [subprocess.Popen([DRIVER, "work", url, prefix, "-"] + conf, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(tmp, "w%d.err" % i), "w"), text=True)
               for i in range(2)]
    time.sleep(1.0)  # workers connected and idle
    c0, s0 = stats(ports)
    t0 = time.monotonic()
    # every process uses the store's default partitions (1 / 12): cost_driver produce
    # takes no configuration, and producers and workers must agree
    prods = [subprocess.Popen([DRIVER, "produce", url, prefix, str(a.rate // 2), str(a.seconds),
                               "1000", str(i), "2", "64"], stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    # the workers print "P <messages> <batches>" every 100 ms
    seen = [0, 0]
    final = {}

    def read(i, w):
        for line in w.stdout:
            if line.startswith("P "):
                seen[i] = int(line.split()[1])
            elif line.startswith("R "):
                final[i] = json.loads(line[2:])
    readers = [threading.Thread(target=read, args=(i, w), daemon=True) for i, w in enumerate(workers)]
    for r in readers:
        r.start()
    sent = 0
    for p in prods:
        out, _ = p.communicate()
        for line in out.splitlines():
            if line.startswith("R "):
                sent += json.loads(line[2:])["sent"]
    deadline = time.monotonic() + 60
    while sum(seen) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    t1 = time.monotonic()
    c1, s1 = stats(ports)
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(timeout=30)
    for r in readers:
        r.join(timeout=10)
    delivered = sum(f["messages"] for f in final.values()) if len(final) == 2 else sum(seen)
    n = max(delivered, 1)
    return {"sent": sent, "delivered": delivered, "commands_per_msg": (c1 - c0) / n,
            "scripts_per_msg": (s1 - s0) / n, "msgs_per_s": delivered / max(t1 - t0, 1e-9)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rate", type=int, default=20000, help="offered messages/s (2 producers)")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if not os.access(DRIVER, os.X_OK):
        print("build cost_driver first: cmake --build build/default --target cost_driver",
              file=sys.stderr)
        return 2
    res = {}
    with tempfile.TemporaryDirectory(prefix="runlane-clcost-") as tmp:
        sd, cd = os.path.join(tmp, "single"), os.path.join(tmp, "cluster")
        port = subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"), "start", sd],
                              capture_output=True, text=True, check=True).stdout.strip()
        try:
            res["single server"] = run("redis://127.0.0.1:%s/0" % port, [int(port)], a, tmp)
        finally:
            subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"), "stop", sd])
        url = subprocess.run([os.path.join(ROOT, "scripts", "redis-cluster.sh"), "start", cd],
                             capture_output=True, text=True, check=True).stdout.strip()
        try:
            ports = [int(p) for p in open(os.path.join(cd, "ports")).read().split()]
            res["3-master cluster"] = run(url, masters(ports), a, tmp)
        finally:
            subprocess.run([os.path.join(ROOT, "scripts", "redis-cluster.sh"), "stop", cd])
    load = os.getloadavg()[0]
    lines = ["", "<!-- cluster-cost:begin -->",
             "## Redis Cluster vs one server (tests/bench/cluster_cost.py)", "",
             "%s, %d cores, load %.1f at start; `python3 tests/bench/cluster_cost.py --seconds %d "
             "--rate %d`; default partitions (1 / 12), 2 producers, 2 workers (cost_driver), window 0."
             % (datetime.date.today(), os.cpu_count() or 0, load, a.seconds, a.rate), "",
             "| setup | sent | delivered | Redis commands / msg | scripts (round trips) / msg | msgs/s |",
             "|---|---|---|---|---|---|"]
    for k, r in res.items():
        lines.append("| %s | %d | %d | %.3f | %.3f | %.0f |" % (
            k, r["sent"], r["delivered"], r["commands_per_msg"], r["scripts_per_msg"],
            r["msgs_per_s"]))
    lines += ["", "Caveat: 2 cores for 6 cluster nodes and 4 client processes; msgs/s shows the "
              "routing overhead, not a cluster's scale-out (each master would have its own "
              "machine).", "<!-- cluster-cost:end -->", ""]
    text = "\n".join(lines)
    print(text)
    if a.write:
        path = os.path.join(HERE, "RESULTS.md")
        old = open(path).read()
        b, e = "<!-- cluster-cost:begin -->", "<!-- cluster-cost:end -->"
        if b in old and e in old:
            new = old[:old.index(b)].rstrip("\n") + text + old[old.index(e) + len(e) + 1:]
        else:
            new = old.rstrip("\n") + "\n" + text
        open(path, "w").write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
