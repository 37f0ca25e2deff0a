#!/usr/bin/env python3
"""runlane side by side with the ORIGINAL design (tests/bench/baseline/, BullMQ + Redis).

    python3 tests/bench/compare.py            # default run, ~7 min
    python3 tests/bench/compare.py --quick    # ~1.5 min
    python3 tests/bench/compare.py --help

What it does, in one invocation (so both columns are measured in the same run, on the same
machine, against the same Redis and the same emulator):

1. Builds the `runlane` CLI (Release, build/bench) unless --runlane is given, and the baseline
   (npm install from the npm registry, then tsc) unless --skip-baseline.
2. Starts a private redis-server (scripts/redis-server.sh) and the OpenAI emulator
   (tests/emulator/emulator.py) in a child process instrumented by this file (request counts per
   route and status, turns in progress and their peak), in assistants mode for both systems.
3. "Side by side": identical traffic to each system in turn (baseline first, then runlane; each
   on its own threads and key prefix): N conversations, a burst of M messages each, then
   (bursts-1) more bursts per conversation, each sent while that conversation's previous run is in
   progress (half the turn latency after the emulator started it). Window W for both, turn latency
   L. Measures, per system: messages/s and turns/s, HTTP requests per turn, turn end -> noticed,
   window close -> turn start, enqueue -> reply percentiles, Redis commands per message (INFO
   commandstats delta), CPU and peak RSS of the worker process, and lost / duplicated /
   out-of-order / rejected messages from the emulator journal vs what was sent.
4. "runlane alone": one `runlane worker --backend assistants` process, conversations with one
   message each and a long turn latency, e.g. 2,000 then 10,000: turns in flight at peak (the
   emulator's count of runs in progress), memory per in-flight turn, threads of the worker, and
   enqueue -> reply percentiles.
5. Prints the markdown report and writes it into tests/bench/RESULTS.md (between the
   results:begin/end markers when present, so notes around them are kept).

Python 3 standard library only (plus the emulator module). Internal mode: --serve-emulator.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter

CHILDREN = []  # workers started by this driver, ended on the way out whatever happens

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "tests", "bench")
BASELINE = os.path.join(BENCH, "baseline")
EMULATOR_DIR = os.path.join(ROOT, "tests", "emulator")

# ------------------------------------------------------------------------------------------------
# The instrumented emulator (child process: compare.py --serve-emulator)


def serve_emulator(latency_ms: int) -> int:
    """Runs tests/emulator's Emulator with counters this benchmark needs, served under
    /_emulator/bench/...: requests per route and status, runs in progress and their peak, the
    start of every run (to send a burst mid-turn), and bulk thread creation."""
    sys.path.insert(0, EMULATOR_DIR)
    import emulator as emu  # noqa: E402

    threading.stack_size(512 * 1024)  # thousands of streaming connections, one thread each

    lock = threading.Lock()
    st = {"entries": [], "active": set(), "peak": 0, "starts": [], "ended": 0}

    def route_of(method, path):
        api = path[3:] if path.startswith("/v1/") else path
        for m, regex, name, _beta in emu._ROUTES:
            if m == method and regex.match(api):
                return name
        return "unknown"

    orig_record = emu.Emulator._record_request

    def record(self, method, path, headers, raw_body):
        entry = orig_record(self, method, path, headers, raw_body)
        with lock:
            st["entries"].append((route_of(method, path), entry))
        return entry

    orig_start = emu.Emulator._journal_turn_start

    def turn_start(self, turn, key, input_count):
        orig_start(self, turn, key, input_count)
        with lock:
            st["active"].add(turn.id)
            st["peak"] = max(st["peak"], len(st["active"]))
            st["starts"].append((key, turn.id, turn.journal_entry["started"]))

    orig_status = emu.Emulator._journal_turn_status

    def turn_status(turn):
        orig_status(turn)
        if turn.journal_entry.get("ended") is not None:
            with lock:
                if turn.id in st["active"]:
                    st["active"].discard(turn.id)
                    st["ended"] += 1

    emu.Emulator._record_request = record
    emu.Emulator._journal_turn_start = turn_start
    emu.Emulator._journal_turn_status = staticmethod(turn_status)

    orig_control = emu._Handler._control

    def control(self, method, path, query, raw):
        name = path[len("/_emulator/"):]
        if not name.startswith("bench/"):
            return orig_control(self, method, path, query, raw)
        em = self.server.emulator
        body = json.loads(raw) if raw.strip() else {}
        op = name[len("bench/"):]
        if op == "live":
            with lock:
                return 200, {"active": len(st["active"]), "peak": st["peak"],
                             "runs_started": len(st["starts"]), "runs_ended": st["ended"],
                             "requests": len(st["entries"])}
        if op == "stats":
            routes, statuses = Counter(), Counter()
            since = int(query.get("since", 0))
            with lock:
                entries = st["entries"][since:]
                n = len(st["entries"])
            with em._lock:
                for route, entry in entries:
                    routes[route] += 1
                    statuses["%s %s" % (route, entry["status"])] += 1
            return 200, {"next": n, "routes": routes, "statuses": statuses}
        if op == "peak_reset":
            with lock:
                st["peak"] = len(st["active"])
            return 200, {"ok": True}
        if op == "starts":
            since = int(query.get("since", 0))
            with lock:
                out = st["starts"][since:]
                n = len(st["starts"])
            return 200, {"next": n, "starts": out}
        if op == "threads":
            n = int(body.get("n", 1))
            with em._lock:
                ids = [em._create_thread({}).id for _ in range(n)]
            return 200, {"ids": ids}
        return 404, {"error": "unknown bench endpoint %s" % op}

    emu._Handler._control = control
    em = emu.Emulator(latency_ms=latency_ms, seed=1).start()
    print("EMULATOR_PORT=%d" % em.port, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(3600):
        pass
    em.stop()
    return 0


# ------------------------------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    print("[compare %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def mean(values):
    return sum(values) / len(values) if values else None


def redis_call(port: int, *args: str):
    """One command over RESP2 (bulk, simple, integer and array replies)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        req = b"*%d\r\n" % len(args)
        for a in args:
            b = a.encode()
            req += b"$%d\r\n%s\r\n" % (len(b), b)
        s.sendall(req)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            kind, rest = line[:1], line[1:].strip()
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if kind in (b"+", b":"):
                return rest.decode()
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError("redis: %r" % line)
        return read()


def lease_gap_ms(port: int, prefix: str, lease_ms: int):
    """How long ago the least recently renewed lease of `prefix` was renewed (ms), from its
    expiry in <prefix>:{0}:leases and Redis's clock; None without leases. In one healthy worker
    this stays below lease.ms/3 plus a round trip: above it, the I/O thread was held up."""
    z = redis_call(port, "ZRANGE", "%s:{0}:leases" % prefix, "0", "0", "WITHSCORES")
    if not z:
        return None
    sec, usec = redis_call(port, "TIME")
    now = int(sec) * 1000 + int(usec) // 1000
    return now - (float(z[1]) - lease_ms)


def cmdstats(port: int) -> dict:
    out = {}
    for line in redis_call(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def rss_kb(pid: int):
    v = proc_status(pid).get("VmRSS")
    return int(v.split()[0]) if v else None


def proc_cpu_s(pid: int):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def wait_rusage(proc: subprocess.Popen, timeout: float):
    """Waits for a child with wait4 (its own CPU and peak RSS). SIGKILL after timeout."""
    deadline = time.time() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if time.time() > deadline:
            proc.kill()
            deadline = time.time() + 10
        time.sleep(0.05)


class Emu:
    """Client of the instrumented emulator child."""

    def __init__(self, workdir: str, latency_ms: int):
        self.log = open(os.path.join(workdir, "emulator.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-emulator",
             "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("EMULATOR_PORT="):
            raise RuntimeError("the emulator did not start; see %s" % self.log.name)
        self.port = int(line.split("=", 1)[1])
        self.base_url = "http://127.0.0.1:%d/v1" % self.port

    def call(self, method: str, path: str, body=None, timeout=120):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request("http://127.0.0.1:%d/_emulator/%s" % (self.port, path),
                                     data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def journal(self):
        """The journal's conversations; patient: after thousands of streams the emulator may
        take minutes to drain its accept queue."""
        deadline = time.time() + 600
        while True:
            try:
                return self.call("GET", "journal", timeout=300)["conversations"]
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(2)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------
# The two systems under test. Both record: accepted[text] = epoch s when the system accepted the
# message; noticed[run_id] = epoch s when this driver read the line saying the run was over.


class Producer:
    """runlane's producer side in this process: librunlane.so through ctypes, one client,
    runlane_enqueue() per message (what an app calls; the CLI would pay a process start and a
    SCRIPT LOAD round per message). Thread-safe per the header."""

    def __init__(self, lib_path: str, store: str, conf: dict):
        import ctypes
        self.ct = ctypes
        lib = ctypes.CDLL(lib_path)
        lib.runlane_conf_new.restype = ctypes.c_void_p
        lib.runlane_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.c_char_p, ctypes.c_size_t]
        lib.runlane_conf_destroy.argtypes = [ctypes.c_void_p]
        lib.runlane_new.restype = ctypes.c_void_p
        lib.runlane_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.runlane_destroy.argtypes = [ctypes.c_void_p]
        lib.runlane_enqueue.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_char_p]
        lib.runlane_error_last.restype = ctypes.c_void_p
        lib.runlane_error_message.restype = ctypes.c_char_p
        lib.runlane_error_message.argtypes = [ctypes.c_void_p]
        self.lib = lib
        err = ctypes.create_string_buffer(512)
        c = lib.runlane_conf_new()
        for k, v in dict(conf, store=store).items():
            if lib.runlane_conf_set(c, k.encode(), str(v).encode(), err, 512) != 0:
                raise RuntimeError("runlane_conf_set %s: %s" % (k, err.value.decode()))
        self.rl = lib.runlane_new(c, err, 512)
        lib.runlane_conf_destroy(c)
        if not self.rl:
            raise RuntimeError("runlane_new: %s" % err.value.decode())
        self.cpu_s = 0.0
        self.lock = threading.Lock()

    def enqueue(self, conv: str, text: str) -> str:
        buf = self.ct.create_string_buffer(64)
        c0 = time.thread_time()
        rc = self.lib.runlane_enqueue(buf, 64, None, self.rl, conv.encode(), text.encode(), None)
        c1 = time.thread_time()
        with self.lock:
            self.cpu_s += c1 - c0
        if rc != 0:
            raise RuntimeError("runlane_enqueue: %s" % self.lib.runlane_error_message(
                self.lib.runlane_error_last()).decode())
        return buf.value.decode()

    def close(self):
        self.lib.runlane_destroy(self.rl)
        self.rl = None


class Runlane:
    name = "runlane"

    def __init__(self, ctx, prefix: str):
        self.ctx, self.prefix = ctx, prefix
        self.accepted, self.ids, self.noticed = {}, {}, {}
        self.answered_ids = set()
        self.events = 0
        self.lock = threading.Lock()
        self.errors = []

    def base_cmd(self):
        c = self.ctx
        return [c.runlane, "--store", "redis://127.0.0.1:%d/0" % c.redis_port,
                "-X", "key.prefix=%s" % self.prefix,
                "-X", "batch.window.ms=%d" % c.args.window_ms,
                "-X", "openai.base.url=%s" % c.emu.base_url,
                "-X", "openai.api.key=sk-bench", "-X", "openai.assistant.id=asst_bench"]

    def create_threads(self, n: int):
        def one(_):
            return subprocess.run(self.base_cmd() + ["thread", "create"], check=True,
                                  capture_output=True, text=True).stdout.strip()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as ex:
            return list(ex.map(one, range(n)))

    def start(self, extra=()):
        self.errlog = open(os.path.join(self.ctx.workdir, "%s-worker.log" % self.prefix), "w")
        self.proc = subprocess.Popen(self.base_cmd() + list(extra) +
                                     ["worker", "--backend", "assistants"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        CHILDREN.append(self.proc)
        self.t_start = time.time()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(self.errlog.name) as f:
                if "started" in f.read():
                    return
            time.sleep(0.05)
        raise RuntimeError("runlane worker did not start; see %s" % self.errlog.name)

    def _read_err(self):
        # the worker's log, each line prefixed with the seconds since it started
        for line in self.proc.stderr:
            self.errlog.write("%8.3f %s" % (time.time() - self.t_start, line))
            self.errlog.flush()

    def _read(self):
        for line in self.proc.stdout:
            now = time.time()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events += 1
                if ev.get("run_id"):
                    self.noticed.setdefault(ev["run_id"], now)
                for mid in ev.get("message_ids") or []:
                    self.answered_ids.add(mid)

    def producer(self):
        if getattr(self, "_producer", None) is None:
            c = self.ctx
            self._producer = Producer(
                c.runlane_lib, "redis://127.0.0.1:%d/0" % c.redis_port,
                {"key.prefix": self.prefix, "batch.window.ms": c.args.window_ms})
        return self._producer

    def send_burst(self, thread: str, messages, gaps):
        p = self.producer()
        for text, gap in zip(messages, gaps):
            if gap > 0:
                time.sleep(gap / 1000.0)
            try:
                mid = p.enqueue(thread, text)
            except RuntimeError as e:
                self.errors.append(str(e))
                continue
            with self.lock:
                self.ids[text] = mid
                self.accepted[text] = int(mid[1:].split("-")[0]) / 1000.0

    def enqueue_many(self, pairs):
        """[(thread, text)] in one pipelined call (enqueue --file -)."""
        lines = "".join(json.dumps({"conversation_id": t, "content": x}) + "\n" for t, x in pairs)
        r = subprocess.run(self.base_cmd() + ["enqueue", "--file", "-"], input=lines,
                           capture_output=True, text=True, check=True)
        ids = r.stdout.split()
        with self.lock:
            for (t, x), mid in zip(pairs, ids):
                self.ids[x] = mid
                self.accepted[x] = int(mid[1:].split("-")[0]) / 1000.0

    def answered_texts(self):
        with self.lock:
            return {x for x, mid in self.ids.items() if mid in self.answered_ids}

    def outstanding(self):
        return 0

    def due_time(self, times):
        return max(times) + self.ctx.args.window_ms / 1000.0  # quiet window from the last one

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        ru = wait_rusage(self.proc, 40)
        self.reader.join(timeout=5)
        self.err_reader.join(timeout=5)
        self.errlog.close()
        if getattr(self, "_producer", None) is not None:
            self.producer_cpu_s = self._producer.cpu_s
            self._producer.close()
            self._producer = None
        return ru

    def lease_lost(self):
        with open(self.errlog.name) as f:
            return f.read().count("lease lost")

    def extra_stats(self):
        with open(self.errlog.name) as f:
            text = f.read()
        return {"failed_attempts": len(re.findall(r": (retry|dead): ", text)),
                "worker_errors": [l for l in text.splitlines()
                                  if re.search(r": (retry|dead): |lease lost|reply_ack|"
                                               r"submit tool outputs|error", l)][:10],
                "enqueue_errors": self.errors[:5]}


class Baseline:
    name = "baseline"

    def __init__(self, ctx, prefix: str):
        self.ctx, self.prefix = ctx, prefix
        self.accepted, self.noticed = {}, {}
        self.answered = set()
        self.outcomes = Counter()
        self.collisions = 0
        self.http_errors = Counter()
        self.created, self.finished = set(), set()
        self.events = 0
        self.lock = threading.Lock()
        self.job_errors = []

    def create_threads(self, n: int):
        return Runlane(self.ctx, self.prefix).create_threads(n)

    def start(self):
        c = self.ctx
        self.errlog = open(os.path.join(c.workdir, "%s-node.log" % self.prefix), "w")
        self.proc = subprocess.Popen(
            ["node", os.path.join(BASELINE, "dist", "bench.js"),
             "--redis", "redis://127.0.0.1:%d/0" % c.redis_port, "--prefix", self.prefix,
             "--base-url", c.emu.base_url, "--window-ms", str(c.args.window_ms),
             "--concurrency", str(c.args.baseline_concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        self.pid = self.proc.pid
        CHILDREN.append(self.proc)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(30):
            raise RuntimeError("baseline did not start; see %s" % self.errlog.name)

    def _read(self):
        evlog = open(os.path.join(self.ctx.workdir, "%s-events.jsonl" % self.prefix), "w")
        for line in self.proc.stdout:
            now = time.time()
            evlog.write(line)
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("ev")
            with self.lock:
                self.events += 1
                if kind == "ready":
                    self.ready.set()
                elif kind == "added":
                    self.accepted[ev["message"]] = ev["at"] / 1000.0
                    if ev.get("collided"):
                        self.collisions += 1
                elif kind == "job":
                    self.outcomes[ev["outcome"]] += 1
                    if ev.get("error") and len(self.job_errors) < 5:
                        self.job_errors.append(ev["error"][:300])
                elif kind == "run-created":
                    self.created.add(ev["runId"])
                elif kind == "run-finished":
                    self.noticed.setdefault(ev["runId"], now)
                    self.finished.add(ev["runId"])
                    if ev.get("status") == "completed":
                        self.answered.update(ev.get("messages") or [])
                elif kind == "http-error":
                    self.http_errors["%s %s" % (ev["method"], ev["status"])] += 1

    def send_burst(self, thread: str, messages, gaps):
        line = json.dumps({"op": "burst", "thread": thread, "messages": messages, "gaps": gaps})
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        # addMessageToThread runs in the node process; wait until it accepted them all.
        deadline = time.time() + 10 + sum(gaps) / 1000.0
        while time.time() < deadline:
            with self.lock:
                if all(m in self.accepted for m in messages):
                    return
            time.sleep(0.005)

    def answered_texts(self):
        with self.lock:
            return set(self.answered)

    def outstanding(self):
        with self.lock:
            return len(self.created - self.finished)

    def due_time(self, times):
        return min(times) + self.ctx.args.window_ms / 1000.0  # the oldest job's delay

    def stop(self):
        try:
            self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        ru = wait_rusage(self.proc, 30)
        self.reader.join(timeout=5)
        self.errlog.close()
        return ru

    def extra_stats(self):
        return {"job_outcomes": dict(self.outcomes), "id_collisions": self.collisions,
                "http_errors": dict(self.http_errors), "job_errors": self.job_errors}


# ------------------------------------------------------------------------------------------------
# Side by side


def make_traffic(args, threads, seed):
    """Per conversation: `bursts` bursts of `messages` texts and the gaps (ms) before each
    message. Gap 0 (two messages delivered together, e.g. a text and its attachment) with
    probability 0.1, else 10..80 ms. Unique texts, so the journal tells each message apart."""
    rng = random.Random(seed)
    traffic = {}
    for i, t in enumerate(threads):
        bursts = []
        for b in range(args.bursts):
            msgs = ["c%d.b%d.m%d please answer" % (i, b, k) for k in range(args.messages)]
            gaps = [0] + [0 if rng.random() < 0.1 else rng.randint(10, 80)
                          for _ in range(args.messages - 1)]
            bursts.append((msgs, gaps))
        traffic[t] = bursts
    return traffic


def run_side(ctx, system, threads, traffic):
    """Sends the traffic to one system and waits until it answered everything or went idle."""
    args, emu = ctx.args, ctx.emu
    L = args.latency_ms / 1000.0
    sent_order = {t: [m for msgs, _ in traffic[t] for m in msgs] for t in threads}
    all_texts = {m for t in threads for m in sent_order[t]}
    starts_cursor = emu.call("GET", "bench/starts?since=0")["next"]
    stats_cursor = emu.call("GET", "bench/stats?since=0")["next"]
    redis_before = cmdstats(ctx.redis_port)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    system.start()
    t_begin = time.time()

    # Burst 1 to every conversation, spread over --ramp-ms; burst k+1 half a turn after the
    # emulator started a run of that conversation following burst k (mid-turn), or after
    # --fallback-s without one.
    state = {t: {"next": 0, "sent_at": None, "due": t_begin + i * args.ramp_ms / 1000.0 / max(1, len(threads)),
                 "midturn": []} for i, t in enumerate(threads)}
    tset = set(threads)
    pool_lock = threading.Lock()
    inflight_sends = []
    mid_turn = Counter()

    def send(t, k):
        msgs, gaps = traffic[t][k]
        system.send_burst(t, msgs, gaps)

    last_activity = time.time()
    last_req = -1
    deadline = t_begin + args.phase_timeout_s
    while True:
        now = time.time()
        # run starts since the last look
        r = emu.call("GET", "bench/starts?since=%d" % starts_cursor)
        starts_cursor = r["next"]
        for key, _run, started in r["starts"]:
            if key not in tset:
                continue
            s = state[key]
            if s["next"] < args.bursts and s["sent_at"] is not None and s["due"] is None \
                    and started >= s["sent_at"]:
                s["due"] = started + L / 2
                s["midturn"].append(True)
        for t in threads:
            s = state[t]
            if s["next"] < args.bursts and s["due"] is None and s["sent_at"] is not None \
                    and now - s["sent_at"] > args.fallback_s:
                s["due"] = now
                s["midturn"].append(False)
            if s["next"] < args.bursts and s["due"] is not None and now >= s["due"]:
                k = s["next"]
                s["next"] += 1
                s["sent_at"] = now
                s["due"] = None
                if k > 0:
                    mid_turn["mid-turn" if s["midturn"][-1] else "fallback"] += 1
                th = threading.Thread(target=send, args=(t, k), daemon=True)
                th.start()
                with pool_lock:
                    inflight_sends.append(th)
        all_sent = all(state[t]["next"] >= args.bursts for t in threads)
        live = emu.call("GET", "bench/live")
        if live["requests"] != last_req:
            last_req = live["requests"]
            last_activity = now
        if all_sent and not any(th.is_alive() for th in inflight_sends):
            answered = system.answered_texts()
            if all_texts <= answered:
                break
            # Idle: no API request for idle_s (and no run the system still polls; a job that
            # died polling never reports, hence the 20 s bound).
            quiet = now - last_activity
            if quiet > args.idle_s and (system.outstanding() == 0 or quiet > 20):
                break
        if now > deadline:
            log("%s: phase timeout (%ds)" % (system.name, args.phase_timeout_s))
            break
        time.sleep(0.05)
    t_end = time.time()
    ru = system.stop()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    redis_after = cmdstats(ctx.redis_port)
    stats = emu.call("GET", "bench/stats?since=%d" % stats_cursor)
    journal = emu.journal()
    return analyse(ctx, system, threads, sent_order, journal, stats, redis_before, redis_after,
                   ru, children_before, children_after, t_begin, t_end, mid_turn)


def analyse(ctx, system, threads, sent_order, journal, stats, rb, ra, ru, cb, ca, t_begin,
            t_end, mid_turn):
    W = ctx.args.window_ms / 1000.0
    acc = system.accepted
    res = {"system": system.name}
    sent = sum(len(v) for v in sent_order.values())
    lost = not_posted = dup = ooo = rejected = 0
    turns_completed = turns_total = 0
    detect, start_delay, lat = [], [], []
    undetected = 0
    answered_n = 0
    last_notice = t_begin
    for t in threads:
        j = journal.get(t, {"messages": [], "turns": [], "rejected": 0, "duplicates": 0})
        rejected += j["rejected"]
        posted = j["messages"]
        cnt = Counter(posted)
        dup += sum(c - 1 for c in cnt.values() if c > 1)
        order = {m: i for i, m in enumerate(sent_order[t])}
        seen, hi = set(), -1
        for m in posted:
            if m in seen or m not in order:
                continue
            seen.add(m)
            if order[m] < hi:
                ooo += 1
            hi = max(hi, order[m])
        not_posted += sum(1 for m in sent_order[t] if m not in cnt)
        answered_here = set()
        prev_end = None
        for turn in j["turns"]:
            turns_total += 1
            if turn["status"] != "completed":
                prev_end = turn["ended"] or prev_end
                continue
            turns_completed += 1
            text = turn.get("output_text") or ""
            texts = text[len("echo: "):].split("\n") if text.startswith("echo: ") else []
            texts = [x for x in texts if x in order]
            answered_here.update(texts)
            seen_at = system.noticed.get(turn["id"])
            if seen_at is None:
                undetected += 1
            else:
                detect.append(seen_at - turn["ended"])
                last_notice = max(last_notice, seen_at)
                for x in texts:
                    if x in acc:
                        lat.append(seen_at - acc[x])
            times = [acc[x] for x in texts if x in acc]
            if times:
                ready = system.due_time(times)
                if prev_end is not None:
                    ready = max(ready, prev_end)
                start_delay.append(turn["started"] - ready)
            prev_end = turn["ended"]
        lost += sum(1 for m in sent_order[t] if m not in answered_here)
        answered_n += sum(1 for m in sent_order[t] if m in answered_here)
    first = min(acc.values()) if acc else t_begin
    span = max(1e-9, last_notice - first)
    reqs = sum(stats["routes"].values())
    redis_calls = sum(ra.values()) - sum(rb.values())
    cpu = ru.ru_utime + ru.ru_stime
    res.update({
        "sent": sent, "answered": answered_n, "lost": lost, "not_posted": not_posted,
        "duplicated": dup, "out_of_order": ooo, "rejected": rejected,
        "turns_completed": turns_completed, "turns_total": turns_total,
        "undetected": undetected, "span_s": span, "phase_s": t_end - t_begin,
        "msgs_per_s": answered_n / span, "turns_per_s": turns_completed / span,
        "http_requests": reqs, "http_per_turn": reqs / max(1, turns_completed),
        "routes": dict(stats["routes"]), "statuses": dict(stats["statuses"]),
        "detect": detect, "start_delay": start_delay, "latency": lat,
        "redis_calls": redis_calls, "redis_per_msg": redis_calls / max(1, sent),
        "redis_top": Counter({k: ra.get(k, 0) - rb.get(k, 0) for k in ra}).most_common(6),
        "cpu_s": cpu, "cpu_per_1000_turns": cpu / max(1, turns_completed) * 1000,
        "maxrss_mb": ru.ru_maxrss / 1024.0,
        "children_cpu_s": (ca.ru_utime + ca.ru_stime) - (cb.ru_utime + cb.ru_stime),
        "mid_turn": dict(mid_turn),
        "extra": system.extra_stats(),
    })
    res["producer_cpu_s"] = getattr(system, "producer_cpu_s", 0.0)
    return res


def scenarios(args):
    """(name, conversations, emulator fault rate, what it shows). 'load' is the main table."""
    out = [("load", args.conversations, 0.0,
            "more conversations than the baseline's 5 worker slots")]
    if args.light_conversations > 0:
        out.append(("light", args.light_conversations, 0.0,
                    "fewer conversations than the baseline's worker slots (%d), so a job "
                    "fires as soon as its window is over, mid-turn included"
                    % args.baseline_concurrency))
    if args.fault_conversations > 0 and args.fault_rate > 0:
        out.append(("faults", args.fault_conversations, args.fault_rate,
                    "the emulator answers %g of API requests with 429 or 500 (seeded)"
                    % args.fault_rate))
    return out


def side_by_side(ctx):
    args = ctx.args
    results = {}
    ctx.emu.call("POST", "config", {"latency_ms": args.latency_ms})
    order = [] if args.skip_baseline else ["baseline"]
    order.append("runlane")
    for scen, n, fault, _what in scenarios(args):
        results[scen] = {}
        for name in order:
            prefix = ("bl" if name == "baseline" else "rl") + scen
            system = Baseline(ctx, prefix) if name == "baseline" else Runlane(ctx, prefix)
            log("%s/%s: creating %d threads (runlane thread create)" % (scen, name, n))
            threads = system.create_threads(n)
            traffic = make_traffic(args, threads, args.seed)
            log("%s/%s: %d conversations x %d bursts x %d messages, window %d ms, latency %d ms"
                ", fault rate %g" % (scen, name, n, args.bursts, args.messages, args.window_ms,
                                     args.latency_ms, fault))
            ctx.emu.call("POST", "config", {"fault_rate": fault, "fault_kinds": ["429", "500"]})
            try:
                r = results[scen][name] = run_side(ctx, system, threads, traffic)
            finally:
                ctx.emu.call("POST", "config", {"fault_rate": 0.0})
            log("%s/%s: answered %d/%d, %d turns, %.1f s" % (
                scen, name, r["answered"], r["sent"], r["turns_completed"], r["phase_s"]))
    return results


# ------------------------------------------------------------------------------------------------
# runlane alone


def runlane_alone(ctx, n: int, idx: int, L: int):
    args, emu = ctx.args, ctx.emu
    emu.call("POST", "config", {"latency_ms": L})
    log("alone %d: creating %d threads in the emulator" % (n, n))
    threads = []
    while len(threads) < n:
        threads += emu.call("POST", "bench/threads", {"n": min(2000, n - len(threads))})["ids"]
    system = Runlane(ctx, "ra%d" % idx)
    lease_ms = 30000
    for kv in ctx.args.alone_x:
        if kv.startswith("lease.ms="):
            lease_ms = int(kv.split("=", 1)[1])
    extra = ["-X", "worker.concurrency=%d" % max(n, 100)]
    for kv in ctx.args.alone_x:
        extra += ["-X", kv]
    system.start(extra=extra)
    time.sleep(1.0)
    rss_idle = rss_kb(system.pid)
    emu.call("POST", "bench/peak_reset")
    live0 = emu.call("GET", "bench/live")
    emu_cpu0 = proc_cpu_s(emu.proc.pid) or 0
    texts = ["alone%d.%d hello" % (idx, i) for i in range(n)]
    t0 = time.time()
    chunk = 1000
    for i in range(0, n, chunk):
        system.enqueue_many(list(zip(threads[i:i + chunk], texts[i:i + chunk])))
    t_enq = time.time() - t0
    samples = []
    peak = {"active": 0, "rss": rss_idle, "at": 0.0, "rss_at_peak": rss_idle}
    # Lease renewal gaps, from Redis only (the emulator can be slow to answer under load).
    gaps, gaps_stop = [], threading.Event()

    def sample_gaps():
        while not gaps_stop.wait(0.25):
            try:
                g = lease_gap_ms(ctx.redis_port, system.prefix, lease_ms)
            except OSError:
                continue
            if g is not None:
                gaps.append(g)
    gap_thread = threading.Thread(target=sample_gaps, daemon=True)
    gap_thread.start()
    deadline = time.time() + L / 1000.0 + args.alone_timeout_s
    while time.time() < deadline:
        live = emu.call("GET", "bench/live")
        rss = rss_kb(system.pid) or 0
        thr = proc_status(system.pid).get("Threads")
        samples.append((round(time.time() - t0, 2), live["active"], live["runs_started"],
                        rss, proc_cpu_s(system.pid), proc_cpu_s(emu.proc.pid),
                        gaps[-1] if gaps else None))
        if live["active"] > peak["active"]:
            peak.update(active=live["active"], at=time.time() - t0, rss_at_peak=rss)
        peak["rss"] = max(peak["rss"], rss)
        peak["threads"] = max(peak.get("threads", 0), int(thr or 0))
        with system.lock:
            done = len(system.answered_ids)
        if done >= n:
            break
        time.sleep(0.25)
    t_all = time.time() - t0
    gaps_stop.set()
    gap_thread.join(timeout=15)
    peak["lease_gap"] = max(gaps) if gaps else None
    live1 = emu.call("GET", "bench/live")
    ru = system.stop()
    with system.lock:
        done = len(system.answered_ids)
    lat = []
    # enqueue -> reply: reply line read time - the message id's enqueue time
    id_time = {mid: system.accepted[x] for x, mid in system.ids.items()}
    journal = emu.journal()
    noticed_by_run = system.noticed
    run_of_thread = {}
    lost = dup = 0
    for t, x in zip(threads, texts):
        j = journal.get(t)
        if not j or x not in j["messages"]:
            lost += 1
            continue
        dup += j["messages"].count(x) - 1
        for turn in j["turns"]:
            if turn["status"] == "completed" and turn["id"] in noticed_by_run:
                lat.append(noticed_by_run[turn["id"]] - id_time[system.ids[x]])
                break
    over = [v - (args.window_ms + L + 10) / 1000.0 for v in lat]
    return {
        "n": n, "latency_ms": L, "enqueue_s": t_enq, "total_s": t_all, "replies": done,
        "peak_active": peak["active"], "peak_at_s": peak["at"],
        "runs_started": live1["runs_started"] - live0["runs_started"],
        "rss_idle_mb": (rss_idle or 0) / 1024.0, "rss_peak_mb": peak["rss"] / 1024.0,
        "rss_at_peak_mb": peak["rss_at_peak"] / 1024.0,
        "kb_per_turn": ((peak["rss_at_peak"] - (rss_idle or 0)) / max(1, peak["active"])),
        "threads": peak.get("threads"), "cpu_s": ru.ru_utime + ru.ru_stime,
        "maxrss_mb": ru.ru_maxrss / 1024.0, "lat": lat, "over": over,
        "lost": lost, "dup": dup, "samples": samples, "lease_ms": lease_ms,
        "lease_gap_ms": peak.get("lease_gap"), "lease_lost": system.lease_lost(),
        "runs_extra": (live1["runs_started"] - live0["runs_started"]) - n,
        "emu_cpu_s": (proc_cpu_s(emu.proc.pid) or 0) - emu_cpu0,
        "extra": system.extra_stats(),
    }


# ------------------------------------------------------------------------------------------------
# Report


def fmt(v, nd=2, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return "%.0f%s" % (v, unit)
        return ("%." + str(nd) + "f%s") % (v, unit)
    return "%s%s" % (v, unit)


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return ""
    if b == 0:
        return "—" if a == 0 else "∞"
    r = a / b
    return "%.3g×" % r


def machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kb / 1024 / 1024)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "mem": mem, "cpu": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "node": subprocess.run(["node", "--version"], capture_output=True,
                                   text=True).stdout.strip(),
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True,
                                    text=True).stdout.split()[2].replace("v=", "")}


def report(ctx, sbs, alone, started, elapsed):
    a = ctx.args
    m = machine()
    out = []
    w = out.append
    w("## Side by side: runlane vs the original design (BullMQ + Redis)")
    w("")
    w("- Date: %s UTC; run took %.0f s" % (started.strftime("%Y-%m-%d %H:%M"), elapsed))
    w("- Machine: %s cores (`nproc`), %s memory, %s; Linux %s; Python %s, Node %s, Redis %s"
      % (m["nproc"], m["mem"], m["cpu"], m["kernel"], m["python"], m["node"], m["redis"]))
    w("- Command: `%s`" % ctx.command)
    w("- Load average when it started (1, 5, 15 min): %.2f, %.2f, %.2f (other processes on the "
      "machine share its cores)" % ctx.loadavg)
    w("- Traffic (identical for both, same Redis with different key prefixes, same emulator in "
      "assistants mode): %d conversations (threads from `runlane thread create`), %d bursts of %d "
      "messages each; bursts after the first sent half a turn after the emulator started that "
      "conversation's previous run (mid-turn); gaps inside a burst 10-80 ms, 0 ms with p=0.1; "
      "window %d ms for both; emulator turn latency %d ms; baseline Worker concurrency %d "
      "(its default); runlane worker defaults (worker.concurrency 100, streaming runs)."
      % (a.conversations, a.bursts, a.messages, a.window_ms, a.latency_ms,
         a.baseline_concurrency))
    w("")
    def msv(key, q):
        return lambda r: (pct(r[key], q) * 1000.0) if r[key] else None

    main_rows = [
        ("messages answered / sent", None, lambda r: "%d / %d" % (r["answered"], r["sent"]), 0),
        ("messages/s answered (first accepted → last reply noticed)", "msgs_per_s", None, 2),
        ("turns/s completed", "turns_per_s", None, 2),
        ("turns completed", "turns_completed", None, 0),
        ("HTTP requests per completed turn", "http_per_turn", None, 2),
        ("turn end → noticed, ms, mean", None,
         lambda r: mean(r["detect"]) * 1000 if r["detect"] else None, 1),
        ("turn end → noticed, ms, p99", None, msv("detect", 99), 1),
        ("window close → turn start, ms, p50", None, msv("start_delay", 50), 1),
        ("window close → turn start, ms, p99", None, msv("start_delay", 99), 1),
        ("enqueue → reply, ms, p50", None, msv("latency", 50), 0),
        ("enqueue → reply, ms, p99", None, msv("latency", 99), 0),
        ("Redis commands per message sent", "redis_per_msg", None, 1),
        ("worker CPU s per 1000 turns", "cpu_per_1000_turns", None, 2),
        ("worker peak RSS, MB", "maxrss_mb", None, 1),
        ("worker peak RSS per 1000 turns, MB", None,
         lambda r: r["maxrss_mb"] / max(1, r["turns_completed"]) * 1000, 0),
        ("lost (sent, never answered)", "lost", None, 0),
        ("  of which never posted to the thread", "not_posted", None, 0),
        ("duplicated (posted more than once)", "duplicated", None, 0),
        ("out of order", "out_of_order", None, 0),
        ("requests refused by the API (400: thread busy)", "rejected", None, 0),
        ("completed runs never noticed by the system", "undetected", None, 0),
    ]
    short = {"messages answered / sent", "turns completed", "HTTP requests per completed turn",
             "turn end → noticed, ms, mean", "enqueue → reply, ms, p50",
             "enqueue → reply, ms, p99", "lost (sent, never answered)",
             "  of which never posted to the thread", "duplicated (posted more than once)",
             "out of order", "requests refused by the API (400: thread busy)"}

    def table(rl, bl, rows):
        w("| metric | runlane | baseline | runlane/baseline |")
        w("|---|---|---|---|")
        for label, key, fn, nd in rows:
            rv = fn(rl) if fn else rl[key]
            bv = fn(bl) if fn else bl[key]
            w("| %s | %s | %s | %s |" % (label, fmt(rv, nd), fmt(bv, nd), ratio(rv, bv)))
        w("")

    def details(rl, bl):
        for r in (rl, bl):
            w("- **%s**: phase %.1f s (throughput span %.1f s); HTTP requests by route and "
              "status %s; Redis top commands %s; worker CPU %.2f s; producer CPU outside the "
              "worker %.2f s; later bursts sent %s; %s"
              % (r["system"], r["phase_s"], r["span_s"],
                 json.dumps(r["statuses"], sort_keys=True),
                 ", ".join("%s %d" % kv for kv in r["redis_top"]), r["cpu_s"],
                 r["producer_cpu_s"], json.dumps(r["mid_turn"]),
                 json.dumps(r["extra"], sort_keys=True)))
        w("")

    scen = {name: (n, f, what) for name, n, f, what in scenarios(a)}
    load = sbs.get("load", {})
    if "runlane" in load and "baseline" in load:
        w("### Main table (%s: %d conversations)" % ("load", scen["load"][0]))
        w("")
        table(load["runlane"], load["baseline"], main_rows)
        w("Ratios below 1 are better for runlane in every row except messages answered, "
          "messages/s and turns/s, where above 1 is better. `—`: both zero.")
        w("")
        for name in sbs:
            if name == "load" or "baseline" not in sbs[name]:
                continue
            n, f, what = scen[name]
            w("### Scenario %s: %d conversations, %s" % (name, n, what))
            w("")
            table(sbs[name]["runlane"], sbs[name]["baseline"],
                  [r for r in main_rows if r[0] in short])
        w("### Details")
        w("")
        for name in sbs:
            if "baseline" in sbs[name]:
                w("%s:" % name)
                w("")
                details(sbs[name]["runlane"], sbs[name]["baseline"])
    else:
        w("(baseline skipped)")
        w("")
    w("Definitions:")
    w("")
    w("- *turn end → noticed*: the emulator's end of the run (journal `ended`, the moment "
      "`completed_at` is set) to the moment this driver read the line saying so: runlane's "
      "COMPLETED reply line on the worker's stdout (after its GET of the reply message), the "
      "baseline's line printed when its poll saw `completed`.")
    w("- *window close → turn start*: the run's creation in the emulator minus the later of the "
      "batch's due time and the end of the thread's previous run. Due time: runlane, last message "
      "+ window (its quiet window); baseline, first message + window (the oldest job's delay).")
    w("- *enqueue → reply*: per answered message, from when the system accepted it (runlane: the "
      "time in its message id, from Redis; baseline: after `addMessageToThread` returned) to the "
      "reply noticed.")
    w("- *Redis commands*: INFO commandstats calls (Lua-called commands included) over the whole "
      "phase, idle polling included, divided by the messages sent.")
    w("- *CPU* and *peak RSS*: the worker process's own rusage (wait4). The baseline's process "
      "is also its producer (addMessageToThread); runlane's producer is this driver calling "
      "`runlane_enqueue()` of librunlane.so through ctypes (one client, as an app would), its "
      "CPU (thread time of those calls) shown apart as producer CPU.")
    w("- *lost*: sent but in no completed run's input (journal `output_text`); *duplicated*: "
      "journal user messages beyond the first copy; *out of order*: messages posted after a "
      "message sent later in the same conversation.")
    w("")
    w("## runlane alone: turns in flight in one worker process")
    w("")
    if alone:
        w("One `runlane worker --backend assistants -X worker.concurrency=N` process (one I/O "
          "thread drives every run; streamed runs; other settings default, lease.ms 30 s), N "
          "conversations with one message each, enqueued with `runlane enqueue --file` in "
          "chunks of 1000 (one pipelined call each); window %d ms; the emulator's turn latency "
          "per row. Each row gets at most latency + %d s. *In flight at peak*: the emulator's "
          "count of runs queued or in progress (sampled every 0.25 s or slower when the "
          "emulator is busy). *KB per in-flight turn*: (worker RSS at that peak − RSS idle) / "
          "peak. *Overhead*: enqueue → reply minus window, latency and the emulator's 10 ms "
          "queue time. *Longest lease renewal gap*: from the leases sorted set and Redis's "
          "clock, the longest time an in-flight lease of the worker went unrenewed (the worker "
          "renews every lease.ms/3 = 10 s; at lease.ms it is lost). *Extra runs*: runs the "
          "emulator started beyond one per conversation."
          % (a.window_ms, a.alone_timeout_s))
        w("")
        w("| conversations | turn latency | replies | in flight at peak (reached after) | "
          "RSS idle → at peak | KB per in-flight turn | worker threads | worker CPU s | "
          "emulator CPU s | enqueue → reply p50 / p90 / p99 / max | overhead p50 / p99 | "
          "longest lease renewal gap (lease.ms) | leases lost | extra runs | lost / duplicated |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in alone:
            lat = r["lat"]
            w("| %d | %d s | %d | %d (%.1f s) | %.1f → %.1f MB | %.1f | %s | %.1f | %.1f | "
              "%s / %s / %s / %s s | %s / %s ms | %s ms (%d) | %d | %d | %d / %d |"
              % (r["n"], r["latency_ms"] // 1000, r["replies"], r["peak_active"], r["peak_at_s"],
                 r["rss_idle_mb"], r["rss_at_peak_mb"], r["kb_per_turn"], r["threads"],
                 r["cpu_s"], r["emu_cpu_s"],
                 fmt(pct(lat, 50)), fmt(pct(lat, 90)), fmt(pct(lat, 99)),
                 fmt(max(lat) if lat else None), fmt(pct(r["over"], 50) * 1000 if lat else None, 0),
                 fmt(pct(r["over"], 99) * 1000 if lat else None, 0),
                 fmt(r["lease_gap_ms"], 0), r["lease_ms"], r["lease_lost"], r["runs_extra"],
                 r["lost"], r["dup"]))
        w("")
        for r in alone:
            if r["extra"].get("failed_attempts") or r["extra"].get("worker_errors"):
                w("- %d conversations: worker log: %s" % (r["n"], json.dumps(r["extra"])))
        w("")
    else:
        w("(skipped)")
    for f in ctx.failures:
        w("- FAILED: %s" % f)
    return "\n".join(out) + "\n"


def write_results(path, text):
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    block = begin + "\n" + text + end + "\n"
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if begin in old and end in old:
            new = old[:old.index(begin)] + block + old[old.index(end) + len(end) + 1:]
            with open(path, "w") as f:
                f.write(new)
            return
    with open(path, "w") as f:
        f.write("# Benchmark results\n\nWritten by `tests/bench/compare.py`.\n\n" + block)


# ------------------------------------------------------------------------------------------------
# Main


class Ctx:
    pass


def build_runlane():
    bdir = os.path.join(ROOT, "build", "bench")
    log("building runlane (Release) in %s" % bdir)
    subprocess.run(["cmake", "-S", ROOT, "-B", bdir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", bdir, "--target", "runlane_cli", "runlane"], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(bdir, "core", "cli", "runlane")


def build_baseline():
    log("baseline: npm install, tsc")
    npm = ["npm", "ci"] if os.path.exists(os.path.join(BASELINE, "package-lock.json")) \
        else ["npm", "install"]
    subprocess.run(npm + ["--no-audit", "--no-fund", "--loglevel=error"], cwd=BASELINE, check=True)
    subprocess.run([os.path.join(BASELINE, "node_modules", ".bin", "tsc"), "-p", "tsconfig.json"],
                   cwd=BASELINE, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="~2 min: 20 conversations; runlane alone 1000 and 2000 at 10 s latency")
    ap.add_argument("--conversations", "-n", type=int, default=None, help="default 50 (quick 20)")
    ap.add_argument("--bursts", type=int, default=2)
    ap.add_argument("--messages", type=int, default=3, help="messages per burst")
    ap.add_argument("--window-ms", type=int, default=500)
    ap.add_argument("--latency-ms", type=int, default=1000, help="turn latency, side by side")
    ap.add_argument("--ramp-ms", type=int, default=1000,
                    help="first bursts spread over this long")
    ap.add_argument("--baseline-concurrency", type=int, default=5)
    ap.add_argument("--light-conversations", type=int, default=3,
                    help="conversations of the 'light' scenario (0 skips it)")
    ap.add_argument("--fault-conversations", type=int, default=None,
                    help="conversations of the 'faults' scenario (default 20, quick 10; 0 skips)")
    ap.add_argument("--fault-rate", type=float, default=0.05,
                    help="share of API requests answered 429/500 in the 'faults' scenario")
    ap.add_argument("--fallback-s", type=float, default=None,
                    help="send the next burst anyway after this long without a run (default 60, "
                         "quick 30)")
    ap.add_argument("--idle-s", type=float, default=5.0,
                    help="a side ends when nothing happened this long (or all was answered)")
    ap.add_argument("--phase-timeout-s", type=int, default=240)
    ap.add_argument("--alone", default=None,
                    help="runs of 'runlane alone', comma-separated N[@LATENCY_S] (default "
                         "2000@20,10000@60; quick 1000@10,2000@10; 0 skips)")
    ap.add_argument("--alone-latency-ms", type=int, default=20000,
                    help="turn latency of an --alone run without @LATENCY_S")
    ap.add_argument("--alone-timeout-s", type=int, default=120)
    ap.add_argument("--alone-x", action="append", default=[], metavar="KEY=VALUE",
                    help="extra -X of the 'runlane alone' worker (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runlane", default=None, help="the runlane CLI (default: build it)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-build", action="store_true", help="baseline already built")
    ap.add_argument("--out", default=os.path.join(BENCH, "RESULTS.md"),
                    help="results file ('-' prints only)")
    ap.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve_emulator:
        return serve_emulator(a.latency_ms)
    if a.conversations is None:
        a.conversations = 20 if a.quick else 50
    if a.fault_conversations is None:
        a.fault_conversations = 10 if a.quick else 20
    if a.fallback_s is None:
        a.fallback_s = 30.0 if a.quick else 60.0
    if a.alone is None:
        a.alone = "1000@10,2000@10" if a.quick else "2000@20,10000@60"

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    ctx = Ctx()
    ctx.args = a
    ctx.command = "python3 tests/bench/compare.py" + "".join(
        " " + shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    ctx.runlane = os.path.abspath(a.runlane) if a.runlane else build_runlane()
    ctx.runlane_lib = os.path.join(os.path.dirname(os.path.dirname(ctx.runlane)), "librunlane.so")
    if not os.path.exists(ctx.runlane_lib):
        ap.error("no %s beside the CLI (build the `runlane` target)" % ctx.runlane_lib)
    if not a.skip_baseline and not a.skip_build:
        build_baseline()
    ctx.workdir = tempfile.mkdtemp(prefix="runlane-compare-")
    log("work dir (logs): %s" % ctx.workdir)
    rdir = os.path.join(ctx.workdir, "redis")
    ctx.redis_port = int(subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"),
                                         "start", rdir], check=True, capture_output=True,
                                        text=True).stdout.strip())
    ctx.emu = None
    ctx.failures = []
    ctx.loadavg = os.getloadavg()
    try:
        ctx.emu = Emu(ctx.workdir, a.latency_ms)
        sbs = side_by_side(ctx)
        alone = []
        runs = []
        for item in a.alone.split(","):
            n, _, lat = item.strip().partition("@")
            if n and int(n) > 0:
                runs.append((int(n), int(float(lat) * 1000) if lat else a.alone_latency_ms))
        for i, (n, lat) in enumerate(runs):
            try:
                alone.append(runlane_alone(ctx, n, i, lat))
            except Exception as e:  # one run must not lose the others' results
                log("alone %d@%ds failed: %r" % (n, lat // 1000, e))
                ctx.failures.append("runlane alone %d conversations at %d s: %r"
                                    % (n, lat // 1000, e))
                continue
            r = alone[-1]
            log("alone %d: %d replies, peak %d in flight, %.1f KB/turn"
                % (n, r["replies"], r["peak_active"], r["kb_per_turn"]))
    finally:
        for p in CHILDREN:
            if p.returncode is None and p.poll() is None:
                p.kill()
        if ctx.emu:
            ctx.emu.stop()
        subprocess.run([os.path.join(ROOT, "scripts", "redis-server.sh"), "stop", rdir])
    with open(os.path.join(ctx.workdir, "raw.json"), "w") as f:
        json.dump({"side_by_side": sbs, "alone": alone}, f, default=str)
    text = report(ctx, sbs, alone, started, time.time() - t0)
    print(text)
    if a.out != "-":
        write_results(a.out, text)
        log("wrote %s" % a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
