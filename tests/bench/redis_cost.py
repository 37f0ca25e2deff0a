#!/usr/bin/env python3
"""Redis cost per message, wake-up latency and fair claims: runlane vs BullMQ, side by side.

    python3 tests/bench/redis_cost.py                 # 3 repeats, ~6 min
    python3 tests/bench/redis_cost.py --smoke         # 1 short repeat, < 60 s once built
    python3 tests/bench/redis_cost.py --repeats 5 --write
    python3 tests/bench/redis_cost.py --tree /tmp/costtree   # runlane from another source tree

A benchmark, not a test: it asserts nothing about time. In one invocation it starts two private
redis-servers (scripts/redis-server.sh), one per system, and runs the same offered load through
runlane (tests/bench/cost_driver.c on the public C API, Release build) and BullMQ
(tests/bench/baseline/src/cost.ts, the version pinned in baseline/package.json), alternating which
goes first in each repeat. Phases (every rate is offered, paced in 2 ms ticks; runlane's producers
make one runlane_enqueue call per message, one round trip each, except in `pipelined`; BullMQ's
producers make one Queue.add per message, but the adds due in a tick run concurrently, so ioredis
writes them back to back and Redis reads several per system call):

  batched    10,000 msg/s, 2 producer processes, 2 worker processes acking at once, 1,000
             conversations; runlane window 0, default batching; BullMQ 2 workers at concurrency
             100 with an instant processor
  unbatched  5,000 msg/s, the same, runlane batch.max.messages=1
  default    runlane only: batched with runlane's default batching (window 10 s, max 100
             messages); compared with BullMQ's batched phase (the same offered work for it)
  pipelined  runlane only: default, with each producer sending a tick's messages in one
             runlane_enqueue_many call (pipelined, as BullMQ's producers' adds are)
  fair       runlane only: batched with 4 worker processes (empty claim scripts, batch shares)
  idle       one idle worker, commands per second (runlane defaults; BullMQ concurrency 100)
  latency    500 msg/s, 1 producer process, 1 worker process: enqueue -> batch delivered
             (runlane) / processor start (BullMQ), CLOCK_MONOTONIC across processes

Redis CPU is used_cpu_user + used_cpu_sys of that system's own redis-server (INFO cpu) over the
window from the producers' start to the last message delivered (idle polling in that window
included); commands and scripts come from INFO commandstats deltas (commands run inside scripts
included; the harness's own INFO calls excluded). Every ratio divides runlane's value per message
by BullMQ's per message (a BullMQ job carries one message): messages against messages.
Empty claim scripts: cost_driver counts, client side (no Redis command added), every script call
and the replies that carry nothing (nil, false, or numbers only: a claim returns strings for what it
leased); see cost_driver.c. Each worker's share: the batches its events delivered.

--write puts the table into tests/bench/RESULTS.md between <!-- redis-cost:begin --> and
<!-- redis-cost:end --> (the date, the machine, its load average at start, the command and the
spread min / median / max over the repeats).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "tests", "bench")
BASELINE = os.path.join(BENCH, "baseline")
RESULTS = os.path.join(BENCH, "RESULTS.md")
MARK_B, MARK_E = "<!-- redis-cost:begin -->", "<!-- redis-cost:end -->"
HARNESS_CMDS = {"info", "config|resetstat", "flushall", "config|set", "config|get"}
SCRIPT_CMDS = {"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"}
CHILDREN: list[subprocess.Popen] = []
# runlane's defaults (core/src/conf.c), spelled out: cost_driver sets batch.window.ms=0 otherwise
DEFAULT_BATCHING = ["batch.window.ms=10000", "batch.max.messages=100"]


def log(msg: str) -> None:
    print("[redis_cost %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Build


def build_runlane(tree: str) -> str:
    """Release build of cost_driver in TREE/build/bench. A tree without cost_driver (another
    branch) gets this tree's driver and its CMake block copied in first."""
    bench = os.path.join(tree, "tests", "bench")
    if os.path.abspath(tree) != ROOT:
        shutil.copy(os.path.join(BENCH, "cost_driver.c"), bench)
        cml = os.path.join(bench, "CMakeLists.txt")
        text = open(cml).read()
        if "cost_driver" not in text:
            mine = open(os.path.join(BENCH, "CMakeLists.txt")).read()
            block = mine[mine.index("# tests/bench/redis_cost.py"):]
            open(cml, "a").write("\n" + block)
    env = dict(os.environ)
    # another tree reuses this one's fetched dependencies
    deps = os.path.join(ROOT, "build", "deps")
    if os.path.isdir(deps):
        env.setdefault("RUNLANE_DEPS_CACHE", deps)
    bdir = os.path.join(tree, "build", "bench")
    subprocess.run(["cmake", "-S", tree, "-B", bdir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    subprocess.run(["nice", "cmake", "--build", bdir, "-j2", "--target", "cost_driver"], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return os.path.join(bdir, "tests", "bench", "cost_driver")


def build_baseline() -> str:
    if not os.path.isdir(os.path.join(BASELINE, "node_modules", "bullmq")):
        log("npm ci in tests/bench/baseline")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BASELINE, check=True,
                       stdout=subprocess.DEVNULL)
    src = os.path.join(BASELINE, "src", "cost.ts")
    out = os.path.join(BASELINE, "dist", "cost.js")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        log("tsc in tests/bench/baseline")
        subprocess.run(["npx", "tsc", "-p", "tsconfig.json"], cwd=BASELINE, check=True)
    return out


def bullmq_version() -> str:
    try:
        with open(os.path.join(BASELINE, "node_modules", "bullmq", "package.json")) as f:
            return json.load(f)["version"]
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------------------
# Redis


def redis_start(d: str) -> int:
    out = subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"), "start", d],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip().split()[-1])


def redis_stop(d: str) -> None:
    subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"), "stop", d],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rcli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), check=True,
                          capture_output=True, text=True).stdout


def snapshot(port: int) -> dict:
    cpu, calls, scripts, reads = 0.0, 0, 0, 0
    per = {}
    for line in rcli(port, "info", "everything").splitlines():
        if line.startswith(("used_cpu_user:", "used_cpu_sys:")):
            cpu += float(line.split(":")[1])
        elif line.startswith("total_reads_processed:"):
            reads = int(line.split(":")[1])
        elif line.startswith("cmdstat_"):
            name = line[len("cmdstat_"):line.index(":")]
            n = int(line.split("calls=")[1].split(",")[0])
            usec = int(line.split("usec=")[1].split(",")[0])
            per[name] = (n, usec)
            if name in HARNESS_CMDS:
                continue
            calls += n
            if name in SCRIPT_CMDS:
                scripts += n
    return {"cpu": cpu, "calls": calls, "scripts": scripts, "reads": reads, "per": per,
            "t": time.monotonic()}


def delta(a: dict, b: dict) -> dict:
    # per command: [calls, usec] over the window (usec of a script includes its commands')
    per = {k: [v[0] - a["per"].get(k, (0, 0))[0], v[1] - a["per"].get(k, (0, 0))[1]]
           for k, v in b["per"].items() if k not in HARNESS_CMDS}
    return {"cpu": b["cpu"] - a["cpu"], "calls": b["calls"] - a["calls"],
            "scripts": b["scripts"] - a["scripts"], "seconds": b["t"] - a["t"],
            # socket reads: fewer than commands when clients pipeline (the harness's own
            # INFO calls included: 2 per window)
            "reads": b["reads"] - a["reads"],
            "per_command": {k: v for k, v in per.items() if v[0] > 0}}


# ------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A driver process: `P <messages> <batches>` progress lines and one final `R {json}`."""

    def __init__(self, argv: list[str]):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        CHILDREN.append(self.p)
        self.messages = 0
        self.progress = threading.Event()
        self.result: dict | None = None
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            if line.startswith("P "):
                self.messages = int(line.split()[1])
                self.progress.set()
            elif line.startswith("R "):
                self.result = json.loads(line[2:])

    def _read_err(self) -> None:
        for line in self.p.stderr:
            if len(self.err) < 20:
                self.err.append(line.rstrip())

    def finish(self, timeout: float = 15, wait_first: float = 0) -> dict:
        """The result; a process still running after `wait_first` seconds is asked to stop."""
        try:
            self.p.wait(wait_first)
        except subprocess.TimeoutExpired:
            pass
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        deadline = time.monotonic() + 2
        while self.result is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.result is None:
            raise RuntimeError("driver %s ended without a result: %s" % (self.p.args, "\n".join(self.err)))
        return self.result


class System:
    def __init__(self, name: str, port: int, driver: str):
        self.name, self.port, self.driver = name, port, driver
        self.url = "redis://127.0.0.1:%d/0" % port

    def worker(self, tag: str, latfile: str, conf: list[str]) -> Proc:
        if self.name == "runlane":
            return Proc([self.driver, "work", self.url, tag, latfile] + conf)
        return Proc(["node", self.driver, "work", str(self.port), tag, latfile, "100"])

    def producer(self, tag: str, rate: float, secs: float, index: int, nprod: int, nconv: int,
                 pad: int, conf: list[str], pipelined: bool = False) -> Proc:
        args = [str(rate), str(secs), str(nconv), str(index), str(nprod), str(pad)]
        if self.name == "runlane":
            how = "produce-pipelined" if pipelined else "produce"
            return Proc([self.driver, how, self.url, tag] + args + conf)
        return Proc(["node", self.driver, "produce", str(self.port), tag] + args)


def start_workers(sysm: System, tag: str, n: int, latfile: str, conf: list[str]) -> list[Proc]:
    ws = [sysm.worker(tag, latfile if i == 0 else "-", conf) for i in range(n)]
    for w in ws:
        if not w.progress.wait(30):
            raise RuntimeError("%s worker did not start: %s" % (sysm.name, "\n".join(w.err)))
    time.sleep(0.3)  # let every worker settle into its idle wait
    return ws


def run_load(sysm: System, tag: str, rate: float, secs: float, nprod: int, nworkers: int,
             conf: list[str], latfile: str = "-", nconv: int = 1000, pad: int = 64,
             pipelined: bool = False) -> dict:
    rcli(sysm.port, "flushall")
    ws = start_workers(sysm, tag, nworkers, latfile, conf)
    s0 = snapshot(sysm.port)
    ps = [sysm.producer(tag, rate / nprod, secs, i, nprod, nconv, pad, conf, pipelined)
          for i in range(nprod)]
    pres = [p.finish(wait_first=secs + 120) for p in ps]
    sent = sum(r["sent"] for r in pres)
    enq_s = max(r["seconds"] for r in pres)
    t_prod = time.monotonic() - s0["t"]
    deadline = time.monotonic() + 30 + secs
    while sum(w.messages for w in ws) < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    s1 = snapshot(sysm.port)
    res = [w.finish() for w in ws]
    d = delta(s0, s1)
    delivered = sum(r["messages"] for r in res)
    out = {"sent": sent, "delivered": delivered, "producer_s": t_prod, "enqueue_s": enq_s, "workers": res, **d}
    if delivered < sent:
        log("%s %s: only %d of %d messages delivered in time" % (sysm.name, tag, delivered, sent))
    return out


def run_idle(sysm: System, tag: str, secs: float) -> dict:
    rcli(sysm.port, "flushall")
    ws = start_workers(sysm, tag, 1, "-", [])
    time.sleep(1.0)
    s0 = snapshot(sysm.port)
    time.sleep(secs)
    s1 = snapshot(sysm.port)
    for w in ws:
        w.finish()
    return delta(s0, s1)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def read_lat(path: str) -> list[float]:
    with open(path) as f:
        return [int(x) / 1000.0 for x in f if x.strip()]


# ------------------------------------------------------------------------------------------------
# One repeat


def repeat(systems: dict, a: argparse.Namespace, order: list[str], tmp: str) -> dict:
    r: dict = {"runlane": {}, "bullmq": {}}
    s = a.seconds
    only = set(a.only.split(",")) if a.only else None

    def want(ph: str) -> bool:
        return only is None or ph in only

    for name in order:
        sysm = systems[name]
        if want("batched"):
            log("%s: batched %d msg/s x %.0f s" % (name, a.rate, s))
            r[name]["batched"] = run_load(sysm, "b", a.rate, s, 2, 2, [])
        if want("unbatched"):
            log("%s: unbatched %d msg/s x %.0f s" % (name, a.rate_unbatched, s))
            r[name]["unbatched"] = run_load(sysm, "u", a.rate_unbatched, s, 2, 2, ["batch.max.messages=1"])
        if name == "runlane" and want("default"):
            # runlane's default batching (batch.window.ms 10000, batch.max.messages 100) at the
            # batched phase's offered load; compared with BullMQ's batched phase (BullMQ has no
            # batching: the same offered load is the same work for it)
            log("%s: default batching %d msg/s x %.0f s" % (name, a.rate, s))
            r[name]["default"] = run_load(sysm, "d", a.rate, s, 2, 2, DEFAULT_BATCHING)
        if name == "runlane" and want("pipelined"):
            # the same with each producer sending what is due in a 2 ms tick in one
            # runlane_enqueue_many round trip, as BullMQ's producer does with its adds
            # (concurrent, written back to back by ioredis)
            log("%s: default batching, pipelined producers %d msg/s x %.0f s" % (name, a.rate, s))
            r[name]["pipelined"] = run_load(sysm, "p", a.rate, s, 2, 2, DEFAULT_BATCHING,
                                            pipelined=True)
        if name == "runlane" and want("fair"):
            log("%s: fair, 4 workers" % name)
            r[name]["fair"] = run_load(sysm, "f", a.rate, s, 2, 4, [])
        if want("idle"):
            log("%s: idle %.0f s" % (name, a.idle_seconds))
            r[name]["idle"] = run_idle(sysm, "i", a.idle_seconds)
        if want("latency"):
            lat = os.path.join(tmp, "lat-%s.txt" % name)
            log("%s: latency %d msg/s x %.0f s" % (name, a.rate_latency, a.latency_seconds))
            r[name]["latency"] = run_load(sysm, "l", a.rate_latency, a.latency_seconds, 1, 1, [], latfile=lat)
            ms = read_lat(lat)
            r[name]["latency"].update(p50=pct(ms, 50), p99=pct(ms, 99), samples=len(ms))
    return r


def claim_stats(res: dict) -> tuple[float | None, float | None, list[int]]:
    calls = sum(w.get("scripts", {}).get("claim", {}).get("calls", 0) for w in res["workers"])
    empty = sum(w.get("scripts", {}).get("claim", {}).get("empty", 0) for w in res["workers"])
    batches = [w["batches"] for w in res["workers"]]
    frac = empty / calls if calls else None
    share = max(batches) / min(batches) if batches and min(batches) > 0 else None
    return frac, share, batches


def per_script(res: dict, delivered_batches: int, msgs: int) -> dict:
    tot: dict = {}
    for w in res["workers"]:
        for k, v in w.get("scripts", {}).items():
            tot[k] = tot.get(k, 0) + v["calls"]
    return tot


# ------------------------------------------------------------------------------------------------
# Report


def spread(vals: list, fmt: str) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt % med
    return "%s (%s–%s)" % (fmt % med, fmt % min(vals), fmt % max(vals))


def metrics_of(rep: dict) -> dict:
    """Per repeat: metric -> (runlane, bullmq) values, per message where it says so."""
    m = {}
    R, B = rep["runlane"], rep["bullmq"]
    for ph in ("batched", "unbatched", "default", "pipelined"):
        if ph not in R:
            continue
        # BullMQ has no batching: runlane's default batching is compared with its batched phase
        rl, bq = R[ph], B.get("batched" if ph in ("default", "pipelined") else ph)
        for key, f in (("cpu_us", lambda x: x["cpu"] / max(x["delivered"], 1) * 1e6),
                       ("msg_per_cpu_s", lambda x: x["delivered"] / x["cpu"] if x["cpu"] else None),
                       ("cmds", lambda x: x["calls"] / max(x["delivered"], 1)),
                       ("scripts", lambda x: x["scripts"] / max(x["delivered"], 1)),
                       ("reads", lambda x: x["reads"] / max(x["delivered"], 1) if "reads" in x else None),
                       ("enq_rate", lambda x: x["sent"] / x["enqueue_s"] if x["enqueue_s"] else None),
                       ("rate", lambda x: x["delivered"] / x["seconds"] if x["seconds"] else None),
                       ("msgs_per_batch", lambda x: x["delivered"] / max(sum(w["batches"] for w in x["workers"]), 1))):
            m[(ph, key)] = (f(rl), f(bq) if bq else None)
    for ph in ("batched", "fair", "default"):
        if ph not in R:
            continue
        frac, share, _ = claim_stats(R[ph])
        m[(ph, "empty_claims")] = (frac * 100 if frac is not None else None, None)
        m[(ph, "share")] = (share, None)
    if "idle" in R:
        rl, bq = R["idle"], B["idle"]
        m[("idle", "cmds_s")] = (rl["calls"] / rl["seconds"], bq["calls"] / bq["seconds"])
        m[("idle", "scripts_s")] = (rl["scripts"] / rl["seconds"], bq["scripts"] / bq["seconds"])
    if "latency" in R:
        rl, bq = R["latency"], B["latency"]
        m[("latency", "p50")] = (rl["p50"], bq["p50"])
        m[("latency", "p99")] = (rl["p99"], bq["p99"])
        m[("latency", "cmds")] = (rl["calls"] / max(rl["delivered"], 1), bq["calls"] / max(bq["delivered"], 1))
    if "batched" not in R:
        return m
    # runlane scripts per message / per batch, by script (batched phase)
    b = R["batched"]
    tot = per_script(b, 0, 0)
    nb = max(sum(w["batches"] for w in b["workers"]), 1)
    msgs = max(b["delivered"], 1)
    m[("batched", "claim_ack_per_batch")] = ((tot.get("claim", 0) + tot.get("ack", 0)) / nb, None)
    m[("batched", "wake_per_batch")] = ((tot.get("peek", 0)) / nb, None)
    m[("batched", "enqueue_scripts")] = ((b["scripts"] - sum(tot.values())) / msgs, None)
    return m


ROWS = [
    # (key, label, fmt, ratio?, goal)
    (("batched", "enq_rate"), "batched 10k/s offered: messages/s the producers achieved", "%.0f", False, ""),
    (("batched", "rate"), "batched 10k/s: messages/s delivered (producers' start to last delivery)", "%.0f", False, ""),
    (("batched", "msg_per_cpu_s"), "batched 10k/s (window 0): messages per Redis CPU-second", "%.0f", True, "(goal: default batching row)"),
    (("batched", "cpu_us"), "batched 10k/s: Redis CPU µs per message", "%.1f", True, ""),
    (("batched", "cmds"), "batched 10k/s: Redis commands per message (in scripts included)", "%.1f", True, "reported"),
    (("batched", "scripts"), "batched 10k/s: scripts per message", "%.2f", True, ""),
    (("batched", "reads"), "batched 10k/s: Redis socket reads per message (pipelined commands share one)", "%.2f", True, ""),
    (("batched", "msgs_per_batch"), "batched 10k/s: messages per batch (BullMQ: per job)", "%.2f", False, ""),
    (("batched", "enqueue_scripts"), "batched 10k/s: producer scripts per message (runlane)", "%.2f", False, "≤ 1"),
    (("batched", "claim_ack_per_batch"), "batched 10k/s: claim + ack scripts per batch (runlane)", "%.2f", False, "≤ 2"),
    (("batched", "wake_per_batch"), "batched 10k/s: peek scripts per batch (runlane)", "%.2f", False, ""),
    (("batched", "empty_claims"), "batched 10k/s, 2 workers: % of claim scripts returning nothing", "%.1f", False, ""),
    (("default", "enq_rate"), "default batching (window 10 s, max 100) 10k/s offered: messages/s the producers achieved", "%.0f", False, ""),
    (("default", "msg_per_cpu_s"), "default batching 10k/s: messages per Redis CPU-second (BullMQ: its batched 10k/s row)", "%.0f", True, "ratio ≥ 2.0"),
    (("default", "cpu_us"), "default batching 10k/s: Redis CPU µs per message", "%.1f", True, ""),
    (("default", "cmds"), "default batching 10k/s: Redis commands per message", "%.1f", True, ""),
    (("default", "scripts"), "default batching 10k/s: scripts per message", "%.2f", True, ""),
    (("default", "reads"), "default batching 10k/s: Redis socket reads per message", "%.2f", True, ""),
    (("default", "msgs_per_batch"), "default batching 10k/s: messages per batch", "%.1f", False, ""),
    (("pipelined", "enq_rate"), "default batching 10k/s, producers pipelining each 2 ms tick (enqueue_many; BullMQ's producers pipeline their adds too): messages/s the producers achieved", "%.0f", False, ""),
    (("pipelined", "msg_per_cpu_s"), "default batching 10k/s, pipelined producers: messages per Redis CPU-second (BullMQ: its batched 10k/s row)", "%.0f", True, "ratio ≥ 2.0"),
    (("pipelined", "cpu_us"), "default batching 10k/s, pipelined producers: Redis CPU µs per message", "%.1f", True, ""),
    (("pipelined", "cmds"), "default batching 10k/s, pipelined producers: Redis commands per message", "%.1f", True, ""),
    (("pipelined", "reads"), "default batching 10k/s, pipelined producers: Redis socket reads per message", "%.2f", True, ""),
    (("unbatched", "enq_rate"), "batch.max.messages=1 5k/s offered: messages/s the producers achieved", "%.0f", False, ""),
    (("unbatched", "rate"), "batch.max.messages=1 5k/s: messages/s delivered", "%.0f", False, ""),
    (("unbatched", "cpu_us"), "batch.max.messages=1 5k/s: Redis CPU µs per message (turn / job)", "%.1f", True, "ratio ≤ 1.0"),
    (("unbatched", "msg_per_cpu_s"), "batch.max.messages=1 5k/s: messages per Redis CPU-second", "%.0f", True, ""),
    (("unbatched", "cmds"), "batch.max.messages=1 5k/s: Redis commands per message", "%.1f", True, ""),
    (("unbatched", "scripts"), "batch.max.messages=1 5k/s: scripts per message", "%.2f", True, ""),
    (("fair", "empty_claims"), "fair, 4 workers, 10k/s: % of claim scripts returning nothing", "%.1f", False, "≤ 5%"),
    (("fair", "share"), "fair, 4 workers: largest / smallest worker's batches", "%.2f", False, "≤ 2.0"),
    (("idle", "cmds_s"), "idle: Redis commands per second, one idle worker", "%.1f", True, "runlane ≤ 1"),
    (("idle", "scripts_s"), "idle: scripts per second, one idle worker", "%.1f", True, ""),
    (("latency", "p50"), "500 msg/s, window 0: enqueue → delivered, ms, p50", "%.2f", "diff", "Δ ≤ +1 ms"),
    (("latency", "p99"), "500 msg/s, window 0: enqueue → delivered, ms, p99", "%.2f", "diff", "Δ ≤ +2 ms"),
    (("latency", "cmds"), "500 msg/s: Redis commands per message", "%.1f", True, ""),
]


def report(reps: list[dict], a: argparse.Namespace, info: dict) -> str:
    ms = [metrics_of(r) for r in reps]
    lines = [
        "### Redis cost per message: runlane vs BullMQ %s (%s, %d repeat%s, %s)"
        % (info["bullmq"], info["date"], len(reps), "" if len(reps) == 1 else "s", info["label"]),
        "",
        "| metric | runlane | BullMQ | runlane / BullMQ | goal |",
        "|---|---|---|---|---|",
    ]
    for key, label, fmt, ratio, goal in ROWS:
        if not any(key in m for m in ms):
            continue
        rl = [m[key][0] for m in ms if key in m]
        bq = [m[key][1] for m in ms if key in m]
        if ratio == "diff":
            rt = [x - y for x, y in zip(rl, bq) if x is not None and y is not None]
            rts = spread(rt, "%+.2f ms")
        elif ratio:
            rt = [x / y for x, y in zip(rl, bq) if x is not None and y]
            rts = spread(rt, "%.2f×")
        else:
            rts = ""
        lines.append("| %s | %s | %s | %s | %s |" % (label, spread(rl, fmt),
                     spread(bq, fmt) if any(v is not None for v in bq) else "—", rts, goal))
    lines += [
        "",
        "Each cell: median (min–max) over the repeats; a ratio is computed within each repeat "
        "(runlane and BullMQ measured back to back, alternating which goes first) and then "
        "summarized. Ratios compare like with like: runlane's Redis CPU, commands and scripts per "
        "message delivered against BullMQ's per job (one message each), both at the same offered "
        "rate, one enqueue call per message, each system on its own redis-server. BullMQ's "
        "producers run the adds due at each timer tick concurrently, so ioredis pipelines them "
        "(see the socket reads rows); runlane's producers call runlane_enqueue one after the "
        "other, one round trip each, except in the pipelined rows (runlane_enqueue_many per 2 ms "
        "tick; concurrent runlane_enqueue calls on one client are pipelined the same way). "
        "latency: runlane's batch event vs BullMQ's processor start, Δ = runlane − BullMQ.",
    ]
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    text = open(RESULTS).read()
    if MARK_B in text and MARK_E in text:
        text = text[:text.index(MARK_B) + len(MARK_B)] + "\n" + section + text[text.index(MARK_E):]
    else:
        text = (text.rstrip("\n") + "\n\n## Redis cost per message, wake-up latency and fair claims: "
                "runlane vs BullMQ\n\n`tests/bench/redis_cost.py` (see its docstring; `--smoke` for "
                "a quick check, `--write` to update this section).\n\n" + MARK_B + "\n" + section
                + MARK_E + "\n")
    open(RESULTS, "w").write(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 repeat of 1.5 s phases (< 60 s once built)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="offered-load phases")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--rate-unbatched", type=int, default=5000)
    ap.add_argument("--rate-latency", type=int, default=500)
    ap.add_argument("--tree", default=ROOT, help="runlane source tree to measure (default: this one)")
    ap.add_argument("--label", default=None, help="names the runlane tree in the report")
    ap.add_argument("--write", action="store_true", help="update tests/bench/RESULTS.md")
    ap.add_argument("--json", default=None, help="also dump every raw measurement there")
    ap.add_argument("--only", default=None,
                    help="comma-separated phases to run (batched, unbatched, fair, idle, latency, "
                         "default, pipelined); rows of phases not run show n/a (not for --write)")
    a = ap.parse_args()
    if a.smoke:
        a.repeats, a.seconds, a.idle_seconds, a.latency_seconds = 1, 1.5, 1.5, 1.5
    argv_cmd = "python3 tests/bench/redis_cost.py" + "".join(" " + shlex.quote(x) for x in sys.argv[1:])
    load0 = open("/proc/loadavg").read().split()[:3]
    started = datetime.datetime.now(datetime.timezone.utc)
    tree = os.path.abspath(a.tree)
    label = a.label or ("this tree" if tree == ROOT else tree)
    try:
        commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    if commit:
        label += " @ " + commit
    log("building runlane (%s) and the BullMQ baseline" % tree)
    driver = build_runlane(tree)
    js = build_baseline()
    tmp = tempfile.mkdtemp(prefix="runlane-redis-cost.")
    rdirs = [os.path.join(tmp, "redis-runlane"), os.path.join(tmp, "redis-bullmq")]
    reps = []
    try:
        for d in rdirs:
            os.makedirs(d)
        systems = {"runlane": System("runlane", redis_start(rdirs[0]), driver),
                   "bullmq": System("bullmq", redis_start(rdirs[1]), js)}
        for i in range(a.repeats):
            order = ["runlane", "bullmq"] if i % 2 == 0 else ["bullmq", "runlane"]
            log("repeat %d of %d (%s first)" % (i + 1, a.repeats, order[0]))
            reps.append(repeat(systems, a, order, tmp))
    finally:
        for p in CHILDREN:
            if p.poll() is None:
                p.kill()
        for d in rdirs:
            if os.path.isdir(d):
                redis_stop(d)
        shutil.rmtree(tmp, ignore_errors=True)
    took = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(reps, f, indent=1)
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    info = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "bullmq": bullmq_version(), "label": label}
    section = "\n".join([
        "- Command: `%s`%s" % (argv_cmd, " (smoke: short phases, one repeat: not for conclusions)" if a.smoke else ""),
        "- Date: %s; took %.0f s" % (info["date"], took),
        "- Machine: %d cores (`nproc`), %s; %s %s; %s; Node %s; BullMQ %s"
        % (os.cpu_count() or 0, cpu, platform.system(), platform.release(), " ".join(rver[:3]),
           subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(), info["bullmq"]),
        "- Load average at start (1, 5, 15 min): %s (the machine is shared: other processes take its cores)"
        % ", ".join(load0),
        "- Offered: %d msg/s batched, %d msg/s unbatched (%.0f s each), %d msg/s for latency (%.0f s), "
        "idle %.0f s; 1,000 conversations, 64-byte messages; runlane window 0 (the default-batching rows: window 10 s, max 100 messages), worker defaults; BullMQ "
        "concurrency 100, removeOnComplete/removeOnFail" % (a.rate, a.rate_unbatched, a.seconds,
                                                            a.rate_latency, a.latency_seconds, a.idle_seconds),
        "",
        report(reps, a, info),
    ])
    print(section)
    if a.write:
        write_results(section)
        log("wrote %s" % RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
