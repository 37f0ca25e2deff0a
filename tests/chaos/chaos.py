#!/usr/bin/env python3
"""runlane chaos suite: producers, workers, Redis and the OpenAI emulator,
with kill -9, SIGSTOP/SIGCONT, Redis restarts and API faults along the way;
then checks from the emulator's journal and the store that every message was
delivered once, in order, one turn per conversation at a time, and that
every reply reached a worker's stdout. See README.md beside this file.

    chaos.py [--size small|large] [--seconds N] [--seed N] [--bin PATH]
             [--workdir DIR] [--keep]

Exit status: 0 when every check passed, 1 when one failed, 2 on a setup
error. The last line is "N passed, M failed".
"""
import argparse
import collections
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(ROOT, "tests", "emulator", "emulator.py")
REDIS_SCRIPT = os.path.join(ROOT, "scripts", "redis-server.sh")
TOOL_SH = os.path.join(HERE, "tool.sh")

SIZES = {
    # CI size: about 2 minutes on 2 cores (the limit is 4).
    "small": dict(conversations=200, seconds=90, producers=4, cli_workers=3, bursts=[2, 5],
                  kills=4, pauses=3, restarts=2, fails=6, fails_always=4, drain_s=90,
                  create_jobs=6),
    # A longer run: thousands of conversations, more of everything.
    "large": dict(conversations=2000, seconds=300, producers=6, cli_workers=5, bursts=[2, 5],
                  kills=12, pauses=6, restarts=2, fails=10, fails_always=8, drain_s=240,
                  create_jobs=8),
}

TOOLS_JSON = json.dumps([
    {"type": "function", "name": n, "description": "chaos tool " + n,
     "parameters": {"type": "object", "properties": {"q": {"type": "string"},
                                                     "n": {"type": "integer"}}}}
    for n in ("lookup_order", "get_weather", "check_stock")], separators=(",", ":"))

API_KEY = "sk-chaos-not-a-secret"


def log(msg):
    sys.stdout.write("[chaos %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


class SetupError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Child processes: every one in its own session (process group), all ended on exit.

class Children:
    def __init__(self):
        self.procs = []
        self.lock = threading.Lock()

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, start_new_session=True, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    @staticmethod
    def signal_group(p, sig):
        try:
            os.killpg(p.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def kill_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            # A stopped group first gets SIGCONT, so it can die at once.
            self.signal_group(p, signal.SIGCONT)
            self.signal_group(p, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


CHILDREN = Children()


# ---------------------------------------------------------------------------------------------
# Redis

class Redis:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        self.port = None
        self.up = False

    def start(self):
        if not self.port:
            p = subprocess.run([REDIS_SCRIPT, "start", self.dir, "--appendonly", "yes"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise SetupError("redis-server did not start: %s" % p.stderr.strip())
            self.port = int(p.stdout.strip())
        else:
            # Again on the same port and dir (the script picks a new port), with the
            # script's options: the AOF in DIR brings the data back.
            subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                            "--dir", self.dir, "--save", "", "--appendonly", "yes",
                            "--daemonize", "yes", "--pidfile", os.path.join(self.dir, "redis.pid"),
                            "--logfile", os.path.join(self.dir, "redis.log")],
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            while True:
                p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"],
                                   capture_output=True, text=True, timeout=10)
                if p.stdout.strip() == "PONG":
                    break
                if time.monotonic() > deadline:
                    raise SetupError("redis-server did not come back on port %d (see %s/redis.log)"
                                     % (self.port, self.dir))
                time.sleep(0.05)
        self.up = True
        return self.port

    def pid(self):
        try:
            return int(open(os.path.join(self.dir, "redis.pid")).read().strip())
        except (OSError, ValueError):
            return None

    def shutdown(self):
        """A clean shutdown (the AOF is flushed); returns when the server is gone."""
        pid = self.pid()
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "shutdown"],
                       capture_output=True, timeout=30)
        self.up = False
        deadline = time.monotonic() + 20
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def stop(self):
        subprocess.run([REDIS_SCRIPT, "stop", self.dir], capture_output=True, timeout=30)
        self.up = False


class MultiRedis:
    """A private Redis Cluster (3 masters, 3 replicas) or Sentinel setup (1 master, 1 replica,
    3 sentinels) from scripts/redis-cluster.sh / redis-sentinel.sh. Its faults are a kill -9 of
    a master (a replica is promoted; the killed node comes back later as a replica) and, in a
    Cluster, a live `redis-cli --cluster reshard` of every slot of one master to another (so
    slots holding active partitions move while workers run)."""

    def __init__(self, workdir, kind):
        self.kind = kind
        self.dir = os.path.join(workdir, "redis-" + kind)
        self.script = os.path.join(ROOT, "scripts", "redis-%s.sh" % kind)
        self.url = None
        self.ports = []
        self.up = True
        self.port = 0

    def start(self):
        p = subprocess.run([self.script, "start", self.dir], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise SetupError("redis %s did not start: %s" % (self.kind, p.stderr.strip()))
        self.url = p.stdout.strip()
        self.ports = [int(x) for x in open(os.path.join(self.dir, "ports")).read().split()]
        self.port = self.ports[0]
        return self.port

    def cli(self, port, *args, timeout=30):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                              capture_output=True, text=True, timeout=timeout).stdout

    def _node_dir(self, port):
        return os.path.join(self.dir, ("node-%d" if self.kind == "cluster" else "data-%d") % port)

    def masters(self):
        """[(port, node id, slot count)] of the masters that are up (Cluster); [(port,)] of the
        master the sentinels name (Sentinel)."""
        if self.kind == "sentinel":
            for s in self.ports[2:]:
                out = self.cli(s, "sentinel", "get-master-addr-by-name", "mymaster").split()
                if len(out) == 2:
                    return [(int(out[1]), None, 0)]
            return []
        for p in self.ports:
            out = self.cli(p, "cluster", "nodes")
            if not out.strip():
                continue
            res = []
            for line in out.splitlines():
                f = line.split()
                if "master" in f[2] and "fail" not in f[2]:
                    slots = 0
                    for r in f[8:]:
                        if r.startswith("["):
                            continue
                        a, _, b = r.partition("-")
                        slots += int(b or a) - int(a) + 1
                    res.append((int(f[1].split(":")[1].split("@")[0]), f[0], slots))
            return sorted(res)
        return []

    def kill_master(self, r):
        """kill -9 a master that owns slots; returns its port (restart() brings it back)."""
        ms = [m for m in self.masters() if self.kind == "sentinel" or m[2] > 0]
        if not ms:
            return None
        port = r.choice(ms)[0]
        try:
            pid = int(open(os.path.join(self._node_dir(port), "redis.pid")).read().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            return None
        return port

    def promoted(self, dead_port):
        """True once another node serves as the master (in a Cluster: every slot is covered)."""
        if self.kind == "sentinel":
            ms = self.masters()
            return bool(ms) and ms[0][0] != dead_port
        # Not just cluster_state:ok: that stays ok until the node timeout flags the master as
        # failed, and a node restarted before its replica took over would come back an empty
        # master of its slots (no persistence here); its replica then resyncs from it and
        # flushes everything the partitions there held. Nor "the dead port is no longer among
        # the masters without a fail flag": a master flagged fail? (PFAIL, one node's opinion)
        # or fail still owns its slots until a replica wins the election and claims them, and
        # that check passed at PFAIL, ~0.5-1 s before any promotion (the lost messages, the
        # reset counters and the vanished conversations of runs on a loaded machine). So:
        # every other node says cluster_state:ok and shows the dead node owning no slot.
        tag = ":%d@" % dead_port
        for p in self.ports:
            if p == dead_port:
                continue
            if "cluster_state:ok" not in self.cli(p, "cluster", "info"):
                return False
            dead = [f for f in (line.split() for line in self.cli(p, "cluster", "nodes")
                                .splitlines()) if len(f) > 1 and tag in f[1]]
            if not dead or [r for r in dead[0][8:] if not r.startswith("[")]:
                return False
        return True

    def restart(self, port):
        """The killed node again, on its port and dir: it rejoins as a replica."""
        nd = self._node_dir(port)
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", nd,
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", os.path.join(nd, "redis.pid"),
                "--logfile", os.path.join(nd, "redis.log")]
        if self.kind == "cluster":
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     os.path.join(nd, "nodes.conf"), "--cluster-node-timeout", "2000"]
            # The cluster bus port is kept in nodes.conf's "myself" line.
            for line in open(os.path.join(nd, "nodes.conf")):
                if "myself" in line:
                    args += ["--cluster-port", line.split()[1].split("@")[1].split(",")[0]]
        else:
            ms = self.masters()
            if ms:
                args += ["--replicaof", "127.0.0.1", str(ms[0][0])]
        subprocess.run(args, capture_output=True, timeout=30)

    def reshard(self, r):
        """Every slot of one master moved to another master with redis-cli --cluster reshard
        (live: MOVED/ASK for the clients while it runs). Returns a description or None."""
        ms = [m for m in self.masters() if m[2] > 0]
        if len(ms) < 2:
            return None
        src, dst = r.sample(ms, 2)
        # Not every slot: a master left without slots stops voting, and with two voting
        # masters left no failover could win a majority after the kill -9. reshard moves the
        # source's lowest slots first: move them up to its lowest slot that holds keys, so
        # that an active partition moves.
        slots = sorted(int(x) for x in set(
            self.cli(src[0], "eval", "local o={} local c='0' repeat local r=redis.call("
                     "'SCAN',c,'COUNT',1000) c=r[1] for _,k in ipairs(r[2]) do o[#o+1]="
                     "redis.call('CLUSTER','KEYSLOT',k) end until c=='0' return o", "0").split()))
        mine = []
        for line in self.cli(src[0], "cluster", "nodes").splitlines():
            if "myself" in line:
                for rg in line.split()[8:]:
                    if not rg.startswith("["):
                        a, _, b = rg.partition("-")
                        mine += range(int(a), int(b or a) + 1)
        if not slots or not mine:
            return None
        n = sorted(mine).index(slots[0]) + 1 if slots[0] in mine else len(mine) // 2
        n = min(n, len(mine) - 1)
        p = subprocess.run(["redis-cli", "--cluster", "reshard", "127.0.0.1:%d" % dst[0],
                            "--cluster-from", src[1], "--cluster-to", dst[1],
                            "--cluster-slots", str(n), "--cluster-yes",
                            "--cluster-pipeline", "50"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            log("reshard failed: %s" % (p.stdout[-500:] + p.stderr[-500:]))
            return None
        return "%d slots %d -> %d (up to slot %d, which holds keys)" % (n, src[0], dst[0],
                                                                         slots[0])

    def stop(self):
        # The script removes the nodes' files: keep their logs (failovers, syncs, migrations)
        # with the run's other logs first.
        keep = self.dir + "-logs"
        for port in self.ports:
            for name in ("redis.log", "nodes.conf"):
                src = os.path.join(self._node_dir(port), name)
                if os.path.exists(src):
                    os.makedirs(keep, exist_ok=True)
                    shutil.copy(src, os.path.join(keep, "%d-%s" % (port, name)))
        subprocess.run([self.script, "stop", self.dir], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# The OpenAI emulator (its own process; driven through its control endpoints)

# What the emulator is told for ground truth (see tests/emulator/emulator.py's test modes):
# no conversation lock, so two turns at once on one conversation are accepted and journaled
# as overlaps instead of refused; a [[fail]] turn's texts are answered by the retry, so its
# reply can be checked; and every request goes to requests.jsonl.
EMULATOR_MODES = {"conversation_lock": 0, "fail_answered_later": 1}
# CHAOS_BREAK=NAME runs the suite against a deliberately broken emulator or worker, to see
# the check it names fail (tests/chaos/README.md, "Checks that can fail").
BREAKS = {
    "request-log": "the emulator leaves every 50th request out of requests.jsonl",
    "fail-always": "[[fail-always]] fails only once (the marker is written as [[fail]])",
    "short-lease": "the workers run with lease.ms=150 (leases lost mid-turn)",
    "double-create": "every 5th create of a turn is followed at once by a second create on its "
                     "conversation (a worker that asks for a turn twice)",
}


class Emulator:
    def __init__(self, workdir, seed, latency_ms, fault_rate, fault_kinds, modes):
        self.workdir = workdir
        self.request_log = os.path.join(workdir, "requests.jsonl")
        self.args = [sys.executable, EMULATOR, "--port", "0", "--api-key", API_KEY,
                     "--latency-ms", str(latency_ms), "--fault-rate", str(fault_rate),
                     "--fault-kinds", fault_kinds, "--seed", str(seed),
                     "--journal", os.path.join(workdir, "journal-final.json"),
                     "--request-log", self.request_log]
        for kv in sorted(modes.items()):
            self.args += ["--set", "%s=%s" % kv]
        self.proc = None
        self.port = None

    def start(self):
        err = open(os.path.join(self.workdir, "emulator.err"), "w")
        self.proc = CHILDREN.spawn(self.args, stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"EMULATOR_PORT=(\d+)", line or "")
        if not m:
            raise SetupError("the emulator did not start (see %s/emulator.err)" % self.workdir)
        self.port = int(m.group(1))
        return self.port

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.port

    def control(self, path, body=None):
        url = "http://127.0.0.1:%d/_emulator/%s" % (self.port, path)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                CHILDREN.signal_group(self.proc, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Workers: their stdout is read line by line and time-stamped here.

class Worker:
    def __init__(self, name, kind, args, env, workdir, sink):
        self.name, self.kind = name, kind
        self.out_path = os.path.join(workdir, "workers", name + ".out")
        self.err_path = os.path.join(workdir, "workers", name + ".err")
        self.proc = CHILDREN.spawn(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        self.state = "running"  # running | paused | killed | stopped | crashed
        self.started = time.time()
        self.sink = sink
        self.reader = threading.Thread(target=self._read, name="read-" + name, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, name="err-" + name, daemon=True)
        self.err_reader.start()

    def _read_err(self):
        # The worker's log, each line prefixed with the time it was read.
        with open(self.err_path, "w") as f:
            for raw in self.proc.stderr:
                f.write("%.6f %s" % (time.time(), raw.decode("utf-8", "replace")))
                f.flush()

    def _read(self):
        with open(self.out_path, "w") as f:
            for raw in self.proc.stdout:
                t = time.time()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                f.write("%.6f\t%s\n" % (t, line))
                f.flush()
                self.sink(t, self.name, line)

    def alive(self):
        return self.proc.poll() is None


class DoubleCreate:
    """--break double-create: follows requests.jsonl and, right after every 5th create that
    starts a turn, asks for another turn on the same conversation, the way a worker that
    posts twice would."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="double-create", daemon=True)
        self.thread.start()

    def _create(self, conv):
        req = urllib.request.Request(
            self.emulator.base_url + "/responses", method="POST",
            data=json.dumps({"model": "gpt-chaos", "conversation": conv,
                             "background": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + API_KEY})
        try:
            urllib.request.urlopen(req, timeout=10).read()
            self.sent += 1
        except (OSError, ValueError):
            pass  # a fault, or refused: the next one

    def _run(self):
        seen = 0
        with open(self.emulator.request_log, "rb") as f:
            while not self.stop.is_set():
                line = f.readline()
                if not line.endswith(b"\n"):  # not written whole yet: read it again
                    f.seek(f.tell() - len(line))
                    self.stop.wait(0.01)
                    continue
                r = json.loads(line)
                body = r.get("body") if isinstance(r.get("body"), dict) else {}
                if r.get("method") == "POST" and r.get("path", "").endswith("/responses") \
                        and r.get("status") == 200 and body.get("input") \
                        and body.get("conversation"):
                    seen += 1
                    if seen % 5 == 0:
                        self._create(body["conversation"])

    def close(self):
        self.stop.set()
        self.thread.join(timeout=15)
        log("double-create: %d extra creates sent" % self.sent)


class Replies:
    """Every reply line of every worker, as they come."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lines = []          # (t, worker, obj)
        self.bad_lines = []      # (worker, line) that are not JSON
        self.first_seen = {}     # message id -> first time a reply naming it was printed

    def add(self, t, worker, line):
        try:
            obj = json.loads(line)
        except ValueError:
            with self.lock:
                self.bad_lines.append((worker, line))
            return
        with self.lock:
            self.lines.append((t, worker, obj))
            for mid in obj.get("message_ids") or []:
                self.first_seen.setdefault(mid, t)

    def seen_ids(self):
        with self.lock:
            return set(self.first_seen)


# ---------------------------------------------------------------------------------------------

class Chaos:
    def __init__(self, opts):
        self.opts = opts
        self.size = dict(SIZES[opts.size])
        if opts.seconds:
            self.size["seconds"] = opts.seconds
        if opts.conversations:
            self.size["conversations"] = opts.conversations
        for kv in opts.set or []:
            k, _, v = kv.partition("=")
            if k not in self.size:
                raise SystemExit("chaos: --set: unknown key %r (known: %s)"
                                 % (k, ", ".join(sorted(self.size))))
            self.size[k] = json.loads(v)
        self.seed = opts.seed
        self.rng = random.Random(self.seed)
        self.bin = opts.bin
        self.workdir = opts.workdir
        self.multi = getattr(opts, "redis", "single") or "single"
        self.redis = (Redis(self.workdir) if self.multi == "single"
                      else MultiRedis(self.workdir, self.multi))
        self.emulator = None
        self.workers = []
        self.worker_seq = 0
        self.replies = Replies()
        self.producers = []
        self.counts = collections.Counter()
        self.events = []       # (t, what) of the chaos done
        self.unexpected_exits = []
        self.times = {}
        self.py = None
        self.node_pkg = None
        self.checks = []       # (name, ok, detail)
        self.breaks = opts.breaks
        self.double_create = None
        self.reshard_threads = []
        self.master_kill_times = []  # time.time() of each master kill -9

    # -- configuration shared by every client of the queue --

    MAX_ATTEMPTS = 5  # max.attempts: where a [[fail-always]] batch must be dead

    def queue_config(self):
        return {
            "batch.window.ms": "400",
            "batch.max.wait.ms": "2500",
            "lease.ms": "2000",
            "max.attempts": str(self.MAX_ATTEMPTS),
            "backoff.base.ms": "300",
            "backoff.max.ms": "3000",
            "redis.connect.timeout.ms": "1000",
            "redis.command.timeout.ms": "3000",
            # Through a Cluster or Sentinel a master is killed: what it acknowledged must be
            # on a replica already (WAIT), or the promoted replica would not have it.
            **({} if self.multi == "single" else
               {"redis.wait.replicas": "1", "redis.wait.timeout.ms": "2000"}),
        }

    def worker_config(self):
        c = self.queue_config()
        if "short-lease" in self.breaks:
            c["lease.ms"] = "150"
        c.update({
            "worker.recover.ms": "500",
            "reply.redeliver.ms": "3000",
            "openai.base.url": self.emulator.base_url,
            "openai.api.key": API_KEY,
            "openai.model": "gpt-chaos",
            "openai.tools": TOOLS_JSON,
            "http.retry.base.ms": "100",
            "http.retry.max.ms": "2000",
            "http.stream.idle.timeout.ms": "15000",
            "http.timeout.ms": "20000",
        })
        return c

    @property
    def store(self):
        if self.multi != "single":
            return self.redis.url
        return "redis://127.0.0.1:%d/0" % self.redis.port

    def cli(self, *args, config=None, timeout=60):
        cmd = [self.bin, "--store", self.store]
        for k, v in sorted((config or self.queue_config()).items()):
            cmd += ["-X", "%s=%s" % (k, v)]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)

    # -- setup --

    def find_binding(self, var, probe, skipped):
        """The value of $var when the command probe(value) succeeds (the binding loads),
        else None: logged as `skipped`, or a setup error with
        CHAOS_REQUIRE_BINDINGS=1."""
        value = os.environ.get(var)
        if not value:
            log("%s is not set: %s" % (var, skipped))
            return None
        try:
            p = subprocess.run(probe(value), capture_output=True, text=True)
            why = p.stderr.strip().splitlines()[-1:] if p.returncode else None
        except OSError as e:
            why = str(e)
        if why is None:
            return value
        msg = "%s=%s cannot be loaded (%s)" % (var, value, why)
        if os.environ.get("CHAOS_REQUIRE_BINDINGS") == "1":
            raise SetupError(msg)
        log("%s: %s" % (msg, skipped))
        return None

    def find_python(self):
        return self.find_binding("RUNLANE_PY", lambda py: [py, "-c", "import runlane"],
                                 "no Python producer, no Python worker")

    def find_node(self):
        return self.find_binding("RUNLANE_NODE_PKG",
                                 lambda pkg: ["node", "-e", "require(process.argv[1])", pkg],
                                 "no Node worker")

    def create_conversations(self, n):
        cfg = self.worker_config()

        def one(_):
            last = ""
            for attempt in range(8):
                p = self.cli("conversation", "create", config=cfg)
                if p.returncode == 0 and p.stdout.strip().startswith("conv_"):
                    return p.stdout.strip()
                last = p.stderr.strip()
                self.counts["create_retries"] += 1
                time.sleep(0.2 * (attempt + 1))
            raise SetupError("conversation create keeps failing: %s" % last)

        with concurrent.futures.ThreadPoolExecutor(self.size["create_jobs"]) as ex:
            return list(ex.map(one, range(n)))

    def start_worker(self, kind):
        self.worker_seq += 1
        name = "w%02d-%s" % (self.worker_seq, kind)
        env = dict(os.environ, CHAOS_TOOL_LOG=os.path.join(self.workdir, "tools.log"))
        cfg = self.worker_config()
        if kind == "cli":
            args = [self.bin, "--store", self.store]
            for k, v in sorted(cfg.items()):
                args += ["-X", "%s=%s" % (k, v)]
            args += ["worker", "--backend", "responses", "--tool-exec", TOOL_SH]
        elif kind == "node":
            env["RUNLANE_NODE_PKG"] = self.node_pkg
            args = ["node", os.path.join(HERE, "node_worker.cjs"), self.store, json.dumps(cfg)]
        else:
            args = [self.py, os.path.join(HERE, "py_worker.py"), self.store, json.dumps(cfg)]
        w = Worker(name, kind, args, env, self.workdir, self.replies.add)
        self.workers.append(w)
        return w

    def start_producers(self, convs, fail_slots, fail_always_slots):
        n = self.size["producers"]
        kinds = (["py"] if self.py else []) + ["cli"] * (n - (1 if self.py else 0))
        t0 = time.time() + 1.0
        for i, kind in enumerate(kinds):
            mine = convs[i::n]
            plan = {"name": "p%d-%s" % (i, kind), "kind": kind, "bin": self.bin,
                    "store": self.store, "config": self.queue_config(), "conversations": mine,
                    "seed": self.seed, "seconds": self.size["seconds"], "t0": t0,
                    "fail_slots": [s for s in fail_slots if s[0] in set(mine)],
                    "fail_always_slots": [s for s in fail_always_slots if s[0] in set(mine)],
                    "fail_always_marker": "[[fail]]" if "fail-always" in self.breaks
                    else "[[fail-always]]",
                    "tool_rate": 0.15, "bursts": self.size["bursts"],
                    "out": os.path.join(self.workdir, "producers", "p%d.jsonl" % i)}
            path = os.path.join(self.workdir, "producers", "p%d.plan.json" % i)
            with open(path, "w") as f:
                json.dump(plan, f)
            exe = self.py if kind == "py" else sys.executable
            err = open(os.path.join(self.workdir, "producers", "p%d.err" % i), "w")
            p = CHILDREN.spawn([exe, os.path.join(HERE, "producer.py"), path],
                               stdout=err, stderr=err, stdin=subprocess.DEVNULL)
            self.producers.append((plan, p))
        return t0

    # -- chaos --

    def live_workers(self):
        return [w for w in self.workers if w.state == "running" and w.alive()]

    def plan_chaos(self, t0, seconds):
        """Seeded moments of kill -9, SIGSTOP and Redis restarts within the run."""
        r = random.Random("%s/chaos" % self.seed)
        ev = []
        lo, hi = 4.0, max(6.0, seconds - 3.0)
        # Redis restarts: spread out, at least 10 s apart.
        nr = self.size["restarts"]
        for k in range(nr):
            span = (hi - lo) / nr
            # Through a Cluster the first fault is a live reshard, the next a master's kill -9;
            # through Sentinel every one is a master's kill -9.
            kind = ("redis_restart" if self.multi == "single" else
                    "reshard" if self.multi == "cluster" and k % 2 == 0 else "master_kill")
            ev.append((t0 + lo + span * k + r.uniform(0.2, 0.8) * span, kind))
        for _ in range(self.size["kills"]):
            ev.append((t0 + r.uniform(lo, hi), "kill"))
        for _ in range(self.size["pauses"]):
            ev.append((t0 + r.uniform(lo, hi), "pause"))
        t = t0
        while t < t0 + seconds:
            ev.append((t, "latency"))
            t += r.uniform(1.5, 4.0)
        ev.sort()
        return ev, r

    def do_event(self, kind, r, pending):
        now = time.time()
        if kind == "latency":
            ms = r.randint(50, 200)
            try:
                self.emulator.control("config", {"latency_ms": ms})
            except OSError as e:
                log("latency change failed: %s" % e)
            return
        if kind == "kill":
            live = self.live_workers()
            if not live:
                return
            w = r.choice(live)
            Children.signal_group(w.proc, signal.SIGKILL)
            w.proc.wait()
            w.state = "killed"
            self.counts["kills"] += 1
            self.events.append((now, "kill -9 %s" % w.name))
            log("kill -9 %s (pid %d)" % (w.name, w.proc.pid))
            pending.append((now + r.uniform(0.3, 1.5), "replace", w.kind))
        elif kind == "pause":
            live = self.live_workers()
            if not live:
                return
            w = r.choice(live)
            pause_s = r.uniform(2.8, 3.5)  # longer than lease.ms = 2000
            Children.signal_group(w.proc, signal.SIGSTOP)
            w.state = "paused"
            self.counts["pauses"] += 1
            self.events.append((now, "SIGSTOP %s for %.1fs" % (w.name, pause_s)))
            log("SIGSTOP %s for %.1fs" % (w.name, pause_s))
            pending.append((now + pause_s, "resume", w))
        elif kind == "reshard":
            # In a thread: the reshard takes seconds, the other chaos goes on meanwhile.
            def run():
                t = time.time()
                what = self.redis.reshard(r)
                if what:
                    self.counts["reshards"] += 1
                    self.events.append((t, "reshard %s (%.1fs)" % (what, time.time() - t)))
                    log("reshard: %s in %.1fs" % (what, time.time() - t))
            th = threading.Thread(target=run, daemon=True)
            th.start()
            self.reshard_threads.append(th)
        elif kind == "master_kill":
            port = self.redis.kill_master(r)
            if port is None:
                return
            self.counts["master_kills"] += 1
            self.master_kill_times.append(time.time())
            self.events.append((now, "kill -9 redis master %d" % port))
            log("kill -9 redis master on port %d" % port)
            pending.append((now + 0.5, "promoted?", (port, now)))
        elif kind == "redis_restart":
            if not self.redis.up:
                return
            log("redis restart: shutdown")
            self.redis.shutdown()
            self.redis_down_at = time.monotonic()
            pending.append((time.time() + r.uniform(1.0, 2.5), "redis_up", None))

    def do_pending(self, item):
        _, what, arg = item
        if what == "replace":
            w = self.start_worker(arg)
            self.events.append((time.time(), "started %s" % w.name))
            log("started replacement %s" % w.name)
        elif what == "promoted?":
            port, t = arg
            if self.redis.promoted(port):
                log("redis: a replica took over from %d after %.1fs" % (port, time.time() - t))
                self.events.append((time.time(), "replica promoted (%.1fs)" % (time.time() - t)))
                self.redis.restart(port)
                log("redis: %d started again (a replica now)" % port)
            elif time.time() - t > 60:
                self.counts["promotion_timeouts"] += 1
                log("redis: no replica took over from %d within 60s" % port)
                self.redis.restart(port)
            else:
                return [(time.time() + 0.25, "promoted?", arg)]
        elif what == "redis_up":
            self.redis.start()
            down = time.monotonic() - self.redis_down_at
            self.counts["redis_restarts"] += 1
            self.events.append((time.time(), "redis restart (down %.1fs)" % down))
            log("redis restart: up again on port %d after %.1fs" % (self.redis.port, down))
        elif what == "resume":
            Children.signal_group(arg.proc, signal.SIGCONT)
            if arg.state == "paused":
                arg.state = "running"
            log("SIGCONT %s" % arg.name)

    def watch_workers(self, pending=None):
        """A worker that exits on its own is a finding, except one that could not
        start because Redis was down (documented: exit 1): like a supervisor, the
        suite starts it again a second later."""
        for w in self.workers:
            if w.state in ("running", "paused") and not w.alive():
                w.err_reader.join(timeout=2)
                try:
                    err = open(w.err_path, errors="replace").read()
                except OSError:
                    err = ""
                if w.proc.returncode == 1 and "cannot open the store" in err \
                        and time.time() - w.started < 10:
                    w.state = "refused"
                    self.counts["start_refused"] += 1
                    if pending is not None:
                        pending.append((time.time() + 1.0, "replace", w.kind))
                    else:
                        self.start_worker(w.kind)
                    continue
                w.state = "crashed"
                self.unexpected_exits.append((w.name, w.proc.returncode))
                log("worker %s exited on its own with %s; starting a replacement"
                    % (w.name, w.proc.returncode))
                self.start_worker(w.kind)

    # -- reading the store --

    def status(self):
        p = self.cli("status", "--json", timeout=30)
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def dead_list(self):
        out = []
        offset = 0
        while True:
            p = self.cli("dead", "list", "--json", "--limit", "1000", "--offset", str(offset),
                         timeout=60)
            if p.returncode != 0:
                raise RuntimeError("dead list: %s" % p.stderr.strip())
            page = json.loads(p.stdout or "[]")
            out += page
            if len(page) < 1000:
                return out
            offset += 1000

    # -- the run --

    def run(self):
        S = self.size
        T = {}
        T["start"] = time.time()
        os.makedirs(os.path.join(self.workdir, "workers"), exist_ok=True)
        os.makedirs(os.path.join(self.workdir, "producers"), exist_ok=True)
        self.py = self.find_python()
        self.node_pkg = self.find_node()
        port = self.redis.start()
        if self.multi == "single":
            log("redis on 127.0.0.1:%d (appendonly yes, dir %s)" % (port, self.redis.dir))
        else:
            log("redis %s: %s (dir %s)" % (self.multi, self.redis.url, self.redis.dir))
        modes = dict(EMULATOR_MODES)
        if "request-log" in self.breaks:
            modes["request_log_drop_every"] = 50
        self.emulator = Emulator(self.workdir, self.opts.emulator_seed, 120, 0.05,
                                 "429,500,reset,slow", modes)
        eport = self.emulator.start()
        self.double_create = DoubleCreate(self.emulator) if "double-create" in self.breaks \
            else None
        cfg = self.emulator.control("config")
        if any(cfg.get(k) != v for k, v in modes.items()):
            raise SetupError("the emulator did not take its modes %s: %s" % (modes, cfg))
        log("emulator on 127.0.0.1:%d (seed %d, faults 5%% of 429,500,reset,slow)"
            % (eport, self.opts.emulator_seed))
        convs = self.create_conversations(S["conversations"])
        T["created"] = time.time()
        log("%d conversations created in %.1fs" % (len(convs), T["created"] - T["start"]))
        self.convs = convs
        with open(os.path.join(self.workdir, "conversations.txt"), "w") as f:
            f.write("\n".join(convs) + "\n")

        for _ in range(S["cli_workers"]):
            self.start_worker("cli")
        if self.py:
            self.start_worker("py")
        if self.node_pkg:
            self.start_worker("node")
        frng = random.Random("%s/fails" % self.seed)
        slots = [[c, frng.randint(0, S["bursts"][0] - 1)]
                 for c in frng.sample(convs, S["fails"] + S["fails_always"])]
        t0 = self.start_producers(convs, slots[:S["fails"]], slots[S["fails"]:])
        log("%d workers, %d producers; producing for %ds"
            % (len(self.workers), len(self.producers), S["seconds"]))

        # -- producing, with chaos --
        events, r = self.plan_chaos(t0, S["seconds"])
        pending = []
        last_progress = 0
        while True:
            now = time.time()
            while events and events[0][0] <= now:
                _, kind = events.pop(0)
                self.do_event(kind, r, pending)
            pending.sort(key=lambda x: x[0])
            while pending and pending[0][0] <= time.time():
                pending.extend(self.do_pending(pending.pop(0)) or [])
            self.watch_workers(pending)
            producing = any(p.poll() is None for _, p in self.producers)
            if not producing and not events and not pending:
                break
            if not producing and now > t0 + S["seconds"] + 5:
                events = [e for e in events if e[1] != "latency"]
                if not events and not pending:
                    break
            if now - last_progress >= 10:
                last_progress = now
                log("t=%3.0fs replies=%d workers=%d live, events left %d"
                    % (now - t0, len(self.replies.lines), len(self.live_workers()), len(events)))
            time.sleep(0.05)
        for th in self.reshard_threads:
            th.join()
        T["produced"] = time.time()
        for plan, p in self.producers:
            if p.returncode != 0:
                log("producer %s exited with %s" % (plan["name"], p.returncode))
        log("producers done after %.1fs" % (T["produced"] - t0))

        # -- drain --
        sent = self.load_sent()
        expected = {m["id"] for msgs in sent.values() for m in msgs}
        deadline = time.time() + S["drain_s"]
        drained = False
        dead = []
        last_progress = 0
        st = None
        while time.time() < deadline:
            self.watch_workers()
            st = self.status()
            try:
                dead = self.dead_list()
            except (RuntimeError, ValueError):
                dead = []
            dead_ids = {m["id"] for d in dead for m in d.get("messages", [])}
            missing = expected - self.replies.seen_ids() - dead_ids
            empty = st is not None and st.get("pending") == 0 and st.get("inflight") == 0 \
                and st.get("ready") == 0
            if empty and not missing:
                drained = True
                break
            if time.time() - last_progress >= 5:
                last_progress = time.time()
                log("draining: status %s, %d messages without a reply yet"
                    % (json.dumps(st) if st else "?", len(missing)))
            time.sleep(1.0)
        T["drained"] = time.time()
        self.final_status = st
        log("drain %s after %.1fs" % ("complete" if drained else "NOT complete",
                                       T["drained"] - T["produced"]))

        # -- stop the workers (graceful), read what is left --
        stop_codes = {}
        for w in self.workers:
            if w.alive():
                Children.signal_group(w.proc, signal.SIGCONT)
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.state in ("running", "paused"):
                try:
                    w.proc.wait(timeout=45)
                    stop_codes[w.name] = w.proc.returncode
                except subprocess.TimeoutExpired:
                    Children.signal_group(w.proc, signal.SIGKILL)
                    w.proc.wait()
                    stop_codes[w.name] = "did not stop within 45s"
                w.state = "stopped"
            w.reader.join(timeout=5)
            w.err_reader.join(timeout=5)
        T["stopped"] = time.time()
        self.stop_codes = stop_codes

        if self.double_create:
            self.double_create.close()
        journal = self.emulator.control("journal")
        self.wait_request_log(journal.get("requests", 0))
        with open(os.path.join(self.workdir, "journal.json"), "w") as f:
            json.dump(journal, f)
        dead = self.dead_list()
        with open(os.path.join(self.workdir, "dead.json"), "w") as f:
            json.dump(dead, f)
        conv_status = self.conversation_statuses(convs)
        self.times = T
        self.t0 = t0
        return self.check(sent, journal, dead, conv_status, drained)

    def wait_request_log(self, n, timeout=15.0):
        """Every request the emulator counted is written to requests.jsonl once its status is
        known; a request still on its way (a killed worker's) is waited for, briefly."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(self.emulator.request_log) as f:
                    if sum(1 for _ in f) >= n:
                        return
            except OSError:
                pass
            time.sleep(0.2)

    def conversation_statuses(self, convs):
        def one(c):
            p = self.cli("status", c, "--json", timeout=30)
            if p.returncode != 0:
                return c, {"error": p.stderr.strip()}
            return c, json.loads(p.stdout)
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            return dict(ex.map(one, convs))

    def load_sent(self):
        """conversation -> its messages in enqueue order (one producer per conversation)."""
        sent = collections.OrderedDict()
        self.producer_stats = []
        for plan, _ in self.producers:
            try:
                lines = open(plan["out"]).read().splitlines()
            except OSError:
                lines = []
            for line in lines:
                rec = json.loads(line)
                if rec.get("done"):
                    self.producer_stats.append(rec)
                    continue
                sent.setdefault(rec["conv"], []).append(rec)
        return sent

    # -- checks --

    def add_check(self, name, ok, detail=""):
        self.checks.append((name, bool(ok), detail))

    def check(self, sent, journal, dead, conv_status, drained):
        C = self.counts
        jconvs = journal.get("conversations", {})
        by_id = {m["id"]: m for msgs in sent.values() for m in msgs}
        fail_ids = {mid for mid, m in by_id.items() if m["fail"]}
        always_ids = {mid for mid, m in by_id.items() if m.get("fail_always")}
        n_msgs = len(by_id)

        # producers
        bad_producers = [s for s in self.producer_stats if s.get("rc") != 0]
        missing_stats = len(self.producers) - len(self.producer_stats)
        self.add_check("producers sent everything", not bad_producers and not missing_stats
                       and n_msgs > 0,
                       "%d messages; %d producers failed, %d did not finish"
                       % (n_msgs, len(bad_producers), missing_stats))
        dup_ids = n_msgs != sum(len(v) for v in sent.values())
        self.add_check("message ids unique", not dup_ids,
                       "the CLI/package printed one id for two messages" if dup_ids else "")

        # dead letters: exactly the batches holding a [[fail-always]] message ([[fail]] fails
        # once and is retried), each after max.attempts failed attempts, with the provider's
        # error; or "lease expired" (its workers died more than max.stalls times), allowed only
        # where the journal shows the conversation's failed turns.
        dead_batches = {}
        bad_dead = []
        expired = 0
        for d in dead:
            ids = [m.get("id") for m in d.get("messages", [])]
            bid = d.get("id") or d.get("batch_id")
            dead_batches[bid] = ids
            if not set(ids) & always_ids:
                continue
            err = d.get("error") or ""
            conv = by_id[sorted(set(ids) & always_ids)[0]]["conv"]
            failed_turns = sum(1 for t in jconvs.get(conv, {}).get("turns", [])
                               if t.get("status") == "failed")
            lease = err.startswith("lease expired") and failed_turns > 0
            expired += lease
            # a worker's death (an expired lease) is a stall, not an attempt: the failed
            # attempts are attempts - stalls (README: max.stalls)
            failed_attempts = (d.get("attempts") or 0) - (d.get("stalls") or 0)
            if not lease and (failed_attempts != self.MAX_ATTEMPTS or
                              "[[fail-always]] marker" not in err):
                bad_dead.append((bid, d.get("attempts"), d.get("stalls"), err))
        dead_ids = {i for ids in dead_batches.values() for i in ids}
        wrongly_dead = [b for b, ids in dead_batches.items() if not (set(ids) & always_ids)]
        self.add_check("dead letters only for [[fail-always]] batches", not wrongly_dead,
                       "%d dead letters, %d without a [[fail-always]] message%s"
                       % (len(dead_batches), len(wrongly_dead),
                          (": " + ", ".join(wrongly_dead[:5])) if wrongly_dead else ""))
        not_dead = sorted(always_ids - dead_ids)
        self.add_check("[[fail-always]] batches dead-lettered at max.attempts with their error",
                       always_ids and not not_dead and not bad_dead,
                       "%d [[fail-always]] messages, %d not in a dead letter%s; %d with the lease "
                       "expired on the last attempt; %d dead letters with other attempts or error%s"
                       % (len(always_ids), len(not_dead),
                          (": " + ", ".join(not_dead[:3])) if not_dead else "", expired,
                          len(bad_dead),
                          (": " + json.dumps(bad_dead[:2])) if bad_dead else ""))

        # exactly once, in order (journal vs. what the producers sent)
        lost, dups, unknown, order_bad, dup_by_id, dup_convs = [], 0, 0, [], 0, []
        for conv in self.convs:
            msgs = sent.get(conv, [])
            j = jconvs.get(conv, {"messages": [], "turns": [], "duplicates": 0})
            got = j["messages"]
            dup_by_id += j.get("duplicates", 0)
            contents = {m["content"]: m for m in msgs}
            counts = collections.Counter(got)
            d = sum(c - 1 for c in counts.values() if c > 1)
            if d or j.get("duplicates", 0):
                dup_convs.append(conv)
            dups += d
            unknown += sum(1 for g in counts if g not in contents)
            got_set = set(got)
            for m in msgs:
                if m["content"] not in got_set and m["id"] not in dead_ids:
                    lost.append((conv, m["id"]))
            first = []
            seen = set()
            for g in got:
                if g in contents and g not in seen:
                    seen.add(g)
                    first.append(g)
            want = [m["content"] for m in msgs if m["content"] in got_set]
            if first != want:
                order_bad.append(conv)
        # With redis.wait.replicas=1 (Cluster, Sentinel), the enqueues acknowledged in the
        # 2 s before each master's kill -9 are each delivered exactly once: the promoted
        # replica had them (a producer records a message once its enqueue returned).
        if self.master_kill_times:
            before, bad_before = 0, []
            for conv in self.convs:
                j = jconvs.get(conv, {"messages": []})
                counts = collections.Counter(j["messages"])
                for m in sent.get(conv, []):
                    if not any(tk - 2.0 <= m["t"] <= tk for tk in self.master_kill_times):
                        continue
                    before += 1
                    if counts.get(m["content"], 0) != 1 and m["id"] not in dead_ids:
                        bad_before.append((conv, m["id"], counts.get(m["content"], 0)))
            self.add_check("enqueues acked in the 2 s before a master kill -9 delivered exactly once",
                           before > 0 and not bad_before,
                           "%d acked before %d kills, %d not delivered once%s" % (
                               before, len(self.master_kill_times), len(bad_before),
                               (": " + repr(bad_before[:3])) if bad_before else ""))
        C["lost"] = len(lost)
        C["duplicates"] = dups + dup_by_id
        self.add_check("no message lost (journal)", not lost,
                       "%d lost%s" % (len(lost), (": " + repr(lost[:3])) if lost else ""))
        self.add_check("no message delivered twice (journal)", dups == 0 and dup_by_id == 0,
                       "%d repeated texts, %d repeated runlane message ids%s" % (
                           dups, dup_by_id, (" in " + ", ".join(dup_convs[:5])) if dup_convs else ""))
        self.add_check("no message the producers did not send", unknown == 0,
                       "%d unknown texts" % unknown)
        self.add_check("enqueue order kept per conversation", not order_bad,
                       "%d conversations out of order%s" % (
                           len(order_bad), (": " + ", ".join(order_bad[:3])) if order_bad else ""))

        # turns: never two at once in one conversation, none left open. The emulator runs
        # without its conversation lock: a second create while a turn runs is accepted and
        # counted (overlaps), so this is what happened, not what the provider let through.
        overlaps, open_turns, n_turns, rejected, emu_overlaps = [], [], 0, 0, 0
        for conv, j in jconvs.items():
            turns = sorted(j.get("turns", []), key=lambda t: t["started"])
            n_turns += len(turns)
            rejected += j.get("rejected", 0)
            emu_overlaps += j.get("overlaps", 0)
            if j.get("overlaps", 0):
                overlaps.append((conv, "%d creates while a turn ran" % j["overlaps"]))
            end = None  # the latest end of the turns before (a long one can cover several)
            for t in turns:
                if end is not None and (end is True or end > t["started"] + 1e-6):
                    overlaps.append((conv, t["id"]))
                end = True if t["ended"] is None or end is True else max(end or 0, t["ended"])
            open_turns += [(conv, t["id"]) for t in turns if t["ended"] is None]
        C["turns"] = n_turns
        C["rejected"] = rejected
        C["overlaps"] = emu_overlaps
        self.add_check("no overlapping turns in a conversation", n_turns > 0 and not overlaps,
                       "%d turns, %d overlaps%s" % (
                           n_turns, len(overlaps), (": " + repr(overlaps[:3])) if overlaps else ""))
        self.add_check("no create refused as conversation_locked", rejected == 0,
                       "%d refused (the emulator's lock is off: any is a mode that did not "
                       "take)" % rejected)
        self.add_check("no turn left running", not open_turns,
                       "%d turns without an end%s" % (len(open_turns),
                                                      (": " + repr(open_turns[:3])) if open_turns else ""))

        # the same at runlane's side: the creates (POST /responses) that took effect,
        # per conversation, must come batch after batch, never A, B, A. The emulator writes
        # every request to requests.jsonl: a missing file or request fails the check.
        interleaved, seqs = [], []
        posts = collections.defaultdict(list)
        log_error = None
        try:
            for line in open(os.path.join(self.workdir, "requests.jsonl")):
                r = json.loads(line)
                seqs.append(r.get("seq", 0))
                body = r.get("body") if isinstance(r.get("body"), dict) else {}
                if r.get("method") != "POST" or not r.get("path", "").endswith("/responses"):
                    continue
                if r.get("status") != 200 or r.get("fault") not in (None, "slow"):
                    continue
                bid = (body.get("metadata") or {}).get("runlane_batch_id")
                if body.get("conversation") and bid:
                    posts[body["conversation"]].append((r["time"], r["seq"], bid))
        except (OSError, ValueError) as e:
            log_error = str(e)
        for conv, ps in posts.items():
            ps.sort()
            done, prev = set(), None
            for _, _, bid in ps:
                if bid != prev:
                    if bid in done:
                        interleaved.append(conv)
                        break
                    if prev:
                        done.add(prev)
                    prev = bid
        counted = journal.get("requests", 0)
        missing = len(set(range(1, counted + 1)) - set(seqs))
        C["api_creates"] = sum(len(v) for v in posts.values())
        self.add_check("batches of a conversation never interleave at the API",
                       not interleaved and not log_error and C["api_creates"] > 0
                       and missing == 0 and len(seqs) == counted,
                       "%d conversations%s; %d creates seen; %d of the emulator's %d requests "
                       "missing from requests.jsonl, %d lines%s"
                       % (len(interleaved), (": " + ", ".join(interleaved[:3])) if interleaved
                          else "", C["api_creates"], missing, counted, len(seqs),
                          ("; " + log_error) if log_error else ""))

        # store: drained, no conversation stuck
        self.add_check("queue drained before the deadline", drained,
                       "final status %s" % json.dumps(self.final_status))
        stuck = [c for c, s in conv_status.items()
                 if s.get("error") or s.get("pending") or s.get("inflight")
                 or s.get("state") != "idle"]
        self.add_check("no conversation stuck", not stuck,
                       "%d not idle%s" % (len(stuck), (": " + "; ".join(
                           "%s %s" % (c, json.dumps(conv_status[c])) for c in stuck[:3])) if stuck else ""))

        # replies: every batch's reply printed at least once
        with self.replies.lock:
            lines = list(self.replies.lines)
            bad_lines = list(self.replies.bad_lines)
        batches = {}
        conflicts = []
        for t, wname, obj in lines:
            bid = obj.get("batch_id")
            b = batches.get(bid)
            ids = tuple(obj.get("message_ids") or [])
            if b is None:
                batches[bid] = b = {"t": t, "ids": ids, "conv": obj.get("conversation_id"),
                                    "replies": set(), "prints": 0, "workers": set()}
            elif b["ids"] != ids:
                conflicts.append(bid)
            b["replies"].add(obj.get("reply"))
            b["prints"] += 1
            b["workers"].add(wname)
            C["redelivered"] += 1 if obj.get("redelivered") else 0
            C["reconciled"] += 1 if obj.get("reconciled") else 0
        C["reply_lines"] = len(lines)
        C["batches"] = len(batches)
        C["replies_printed_twice"] = sum(1 for b in batches.values() if b["prints"] > 1)
        msg_batch = {}
        in_two = []
        for bid, b in batches.items():
            for mid in b["ids"]:
                if mid in msg_batch and msg_batch[mid] != bid:
                    in_two.append(mid)
                msg_batch[mid] = bid
        no_reply = [mid for mid in by_id if mid not in msg_batch and mid not in dead_ids]
        # Batches named in the workers' logs must have a reply or be dead.
        logged = self.logged_batches()
        silent = [b for b in logged if b not in batches and b not in dead_batches]
        self.add_check("every batch's reply printed", not no_reply and not silent and not bad_lines,
                       "%d messages in no reply, %d logged batches without a reply, "
                       "%d non-JSON stdout lines%s" % (
                           len(no_reply), len(silent), len(bad_lines),
                           (": " + repr((no_reply + silent)[:3])) if no_reply or silent else ""))
        self.add_check("one batch per message, same ids when printed again",
                       not in_two and not conflicts,
                       "%d messages in two batches, %d batches printed with other ids"
                       % (len(in_two), len(conflicts)))
        unknown_ids = [mid for mid in msg_batch if mid not in by_id]
        self.add_check("replies name only sent messages", not unknown_ids,
                       "%d unknown ids" % len(unknown_ids))

        # batches: contiguous runs of their conversation's messages, in order
        noncontig = []
        for conv, msgs in sent.items():
            order = [msg_batch.get(m["id"]) for m in msgs if m["id"] in msg_batch]
            seen_b, prev = set(), None
            for b in order:
                if b != prev and b in seen_b:
                    noncontig.append(conv)
                    break
                seen_b.add(b)
                prev = b
            pos = {m["id"]: k for k, m in enumerate(msgs)}
            for bid in set(order):
                ids = batches[bid]["ids"]
                if [pos[i] for i in ids if i in pos] != sorted(pos[i] for i in ids if i in pos):
                    noncontig.append(conv)
                    break
        self.add_check("batches are contiguous, in enqueue order", not noncontig,
                       "%d conversations%s" % (len(noncontig),
                                               (": " + ", ".join(noncontig[:3])) if noncontig else ""))

        # reply text: "echo: <texts>" and the tools' deterministic outputs. A batch with a
        # [[fail]] message: its first turn failed before any tool call (the emulator's
        # fail_answered_later), and the retry answers its texts, without tools.
        wrong = []
        tool_markers = 0
        for bid, b in batches.items():
            msgs = [by_id.get(i) for i in b["ids"]]
            if any(m is None for m in msgs):
                continue  # reported by "replies name only sent messages"
            want = "echo: " + "\n".join(m["content"] for m in msgs)
            failed_once = any(m["fail"] or m.get("fail_always") for m in msgs)
            tools = [] if failed_once else [t for m in msgs for t in m["tools"]]
            tool_markers += len(tools)
            if tools:
                want += " | tools: " + ",".join(
                    "%s=%s:%s" % (n, n, hashlib.sha256(a.encode()).hexdigest()[:12])
                    for n, a in tools)
            if b["replies"] != {want}:
                wrong.append((bid, sorted(b["replies"], key=str)[:2], want))
        C["tool_markers"] = tool_markers
        self.add_check("replies echo their batch and its tool outputs", not wrong,
                       "%d batches with another reply%s" % (
                           len(wrong), (": " + json.dumps(wrong[:2])) if wrong else ""))

        # workers: none died on its own; each stopped on SIGTERM
        self.add_check("no worker exited on its own", not self.unexpected_exits,
                       repr(self.unexpected_exits))
        # every kind of worker started (CLI, Python, Node) answered turns
        by_kind = {}
        for w in self.workers:
            try:
                with open(w.out_path) as f:
                    n = sum(1 for _ in f)
            except OSError:
                n = 0
            by_kind[w.kind] = by_kind.get(w.kind, 0) + n
        self.add_check("every kind of worker answered turns", all(by_kind.values()),
                       "replies by kind %s" % json.dumps(by_kind, sort_keys=True))
        bad_stop = {k: v for k, v in self.stop_codes.items() if v not in (0, 4)}
        self.add_check("workers stop cleanly on SIGTERM", not bad_stop,
                       "exit codes %s" % json.dumps(self.stop_codes))

        # the chaos happened
        C["faults"] = journal.get("faults", 0)
        C["requests"] = journal.get("requests", 0)
        if self.multi == "single":
            ok = C["kills"] >= 1 and C["pauses"] >= 1 and C["redis_restarts"] >= 1 \
                and C["faults"] > 0
            self.add_check("chaos happened (kills, pauses, Redis restarts, faults)", ok,
                           "%d kills, %d pauses, %d restarts, %d faults" % (
                               C["kills"], C["pauses"], C["redis_restarts"], C["faults"]))
        else:
            # Through a Cluster: at least one live reshard and one master's kill -9 with a
            # replica promoted; through Sentinel: the kill -9 and the promotion.
            ok = C["kills"] >= 1 and C["pauses"] >= 1 and C["master_kills"] >= 1 \
                and not C["promotion_timeouts"] and C["faults"] > 0 \
                and (self.multi != "cluster" or C["reshards"] >= 1)
            self.add_check("chaos happened (kills, pauses, %s, master kill -9 + promotion, "
                           "faults)" % ("reshard" if self.multi == "cluster" else "sentinel"), ok,
                           "%d kills, %d pauses, %d reshards, %d master kills, %d promotions "
                           "timed out, %d faults" % (
                               C["kills"], C["pauses"], C["reshards"], C["master_kills"],
                               C["promotion_timeouts"], C["faults"]))

        # counters for the table
        self.count_logs()
        self.count_tools()
        C["messages"] = n_msgs
        C["made_to_fail"] = len(fail_ids)
        C["made_to_fail_always"] = len(always_ids)
        C["dead"] = len(dead_batches)
        lat = sorted(self.replies.first_seen[mid] - by_id[mid]["t"]
                     for mid in by_id if mid in self.replies.first_seen)
        self.latency = lat
        return all(ok for _, ok, _ in self.checks)

    def logged_batches(self):
        pat = re.compile(r" batch (\S+) attempt \d+: (completed|retry|dead)")
        out = set()
        for w in self.workers:
            try:
                for line in open(w.err_path, errors="replace"):
                    m = pat.search(line)
                    if m:
                        out.add(m.group(1))
            except OSError:
                pass
        return out

    def count_logs(self):
        C = self.counts
        for w in self.workers:
            try:
                text = open(w.err_path, errors="replace").read()
            except OSError:
                continue
            C["retries"] += len(re.findall(r" attempt \d+: retry: ", text))
            C["lease_lost"] += len(re.findall(r"lease lost", text))
        C["producer_retries"] = sum(s.get("retries", 0) for s in self.producer_stats)
        C["touches"] = sum(s.get("touches", 0) for s in self.producer_stats)

    def count_tools(self):
        path = os.path.join(self.workdir, "tools.log")
        ids = []
        try:
            for line in open(path):
                try:
                    ids.append(json.loads(line)["id"])
                except (ValueError, KeyError):
                    pass
        except OSError:
            pass
        self.counts["tool_runs"] = len(ids)
        self.counts["tool_calls"] = len(set(ids))

    # -- report --

    def report(self):
        C, T = self.counts, self.times
        lat = self.latency

        def pct(p):
            if not lat:
                return "n/a"
            return "%.2f s" % lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))]
        rows = [
            ("messages", C["messages"]),
            ("conversations", len(self.convs)),
            ("typing signals", C["touches"]),
            ("batches (distinct replies)", C["batches"]),
            ("turns (emulator responses)", C["turns"]),
            ("tool calls (distinct / runs)", "%d / %d" % (C["tool_calls"], C["tool_runs"])),
            ("workers started (refused while Redis was down)",
             "%d (%d)" % (len(self.workers), C["start_refused"])),
            ("kills (kill -9)", C["kills"]),
            ("pauses (SIGSTOP > lease)", C["pauses"]),
            ("redis restarts", C["redis_restarts"]),
            ("redis reshards", C["reshards"]),
            ("redis master kills", C["master_kills"]),
            ("faults injected", C["faults"]),
            ("API requests", C["requests"]),
            ("retries seen (failed attempts)", C["retries"]),
            ("leases lost", C["lease_lost"]),
            ("locked creates rejected (emulator; must be 0)", C["rejected"]),
            ("overlapping creates (emulator; must be 0)", C["overlaps"]),
            ("producer call retries", C["producer_retries"]),
            ("replies printed again (redelivered / reconciled)",
             "%d (%d / %d)" % (C["replies_printed_twice"], C["redelivered"], C["reconciled"])),
            ("made-to-fail messages (once / always)",
             "%d / %d" % (C["made_to_fail"], C["made_to_fail_always"])),
            ("dead letters", C["dead"]),
            ("duplicates (must be 0)", C["duplicates"]),
            ("lost (must be 0)", C["lost"]),
            ("enqueue -> reply p50", pct(50)),
            ("enqueue -> reply p95", pct(95)),
            ("setup (redis, emulator, conversations)", "%.1f s" % (T["created"] - T["start"])),
            ("producing", "%.1f s" % (T["produced"] - self.t0)),
            ("draining", "%.1f s" % (T["drained"] - T["produced"])),
            ("total", "%.1f s" % (time.time() - T["start"])),
        ]
        print()
        print("| %s | %s |" % ("what", "count"))
        print("|---|---:|")
        for k, v in rows:
            print("| %s | %s |" % (k, v))
        print()
        print("| check | result | detail |")
        print("|---|---|---|")
        for name, ok, detail in self.checks:
            print("| %s | %s | %s |" % (name, "ok" if ok else "**FAILED**",
                                        detail.replace("|", "\\|")[:400]))
        print()
        with open(os.path.join(self.workdir, "events.txt"), "w") as f:
            for t, what in self.events:
                f.write("%.3f %s\n" % (t - self.t0, what))


# ---------------------------------------------------------------------------------------------
# Self-test: every run first feeds the checks a fabricated run, once as it should be (every
# check passes) and then broken one way at a time (the check named must fail), so a check
# that cannot fail is caught before it is trusted.

class _FakeWorker:
    def __init__(self, workdir, name, kind, lines):
        self.name, self.kind = name, kind
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        with open(self.out_path, "w") as f:
            f.write("".join("%d\t%s\n" % (k, line) for k, line in enumerate(lines)))
        open(self.err_path, "w").close()


def _fabricated_run(workdir):
    """(sent, journal, dead, requests, replies): two conversations; conv_a has a batch and a
    [[fail]] batch that failed once, conv_b a tool batch and a dead [[fail-always]] batch."""
    tool_args = '{"q":"x","n":1}'
    tool_out = hashlib.sha256(tool_args.encode()).hexdigest()[:12]

    def msg(conv, n, content, mid, **kw):
        m = {"conv": conv, "n": n, "content": content, "key": "k-%s" % mid, "id": mid,
             "t": 0.0, "fail": False, "fail_always": False, "tools": []}
        m.update(kw)
        return m
    sent = collections.OrderedDict([
        ("conv_a", [msg("conv_a", 1, "a1 hi", "m1"),
                    msg("conv_a", 2, "a2 x [[fail]]", "m2", fail=True)]),
        ("conv_b", [msg("conv_b", 1, "b1 [[tool:get_weather %s]]" % tool_args, "m3",
                        tools=[["get_weather", tool_args]]),
                    msg("conv_b", 2, "b2 z [[fail-always]]", "m4", fail_always=True)]),
    ])

    def turn(i, a, b, status="completed"):
        return {"id": "resp_%d" % i, "started": a, "ended": b, "status": status,
                "input_count": 1}
    journal = {"requests": 0, "faults": 3, "conversations": {
        "conv_a": {"messages": ["a1 hi", "a2 x [[fail]]"], "rejected": 0, "overlaps": 0,
                   "duplicates": 0,
                   "turns": [turn(1, 10, 11), turn(2, 12, 13, "failed"), turn(3, 14, 15)]},
        "conv_b": {"messages": [sent["conv_b"][0]["content"], "b2 z [[fail-always]]"],
                   "rejected": 0, "overlaps": 0, "duplicates": 0,
                   "turns": [turn(4, 10, 11), turn(5, 11, 12)] +
                   [turn(6 + k, 13 + k, 13.5 + k, "failed") for k in range(5)]}}}
    creates = [("conv_a", "b1"), ("conv_b", "b3"), ("conv_a", "b2"), ("conv_b", "b3"),
               ("conv_a", "b2")] + [("conv_b", "d1")] * 5
    requests = []
    for k, (conv, bid) in enumerate(creates):
        requests.append({"seq": len(requests) + 1, "time": 100.0 + k, "method": "GET",
                         "path": "/v1/conversations/%s/items" % conv, "status": 200})
        requests.append({"seq": len(requests) + 1, "time": 100.5 + k, "method": "POST",
                         "path": "/v1/responses", "status": 200, "fault": None,
                         "body": {"conversation": conv, "metadata": {"runlane_batch_id": bid}}})
    journal["requests"] = len(requests)
    # one of its workers died (a stall): attempt numbers run one past max.attempts
    dead = [{"id": "d1", "conversation_id": "conv_b", "attempts": Chaos.MAX_ATTEMPTS + 1,
             "stalls": 1, "error": "response resp_10 failed: server_error: The model failed to produce a "
                      "response ([[fail-always]] marker).", "messages": [{"id": "m4"}]}]
    replies = [
        {"batch_id": "b1", "conversation_id": "conv_a", "message_ids": ["m1"],
         "reply": "echo: a1 hi"},
        {"batch_id": "b2", "conversation_id": "conv_a", "message_ids": ["m2"],
         "reply": "echo: a2 x [[fail]]"},
        {"batch_id": "b3", "conversation_id": "conv_b", "message_ids": ["m3"],
         "reply": "echo: %s | tools: get_weather=get_weather:%s"
                  % (sent["conv_b"][0]["content"], tool_out)},
    ]
    return sent, journal, dead, requests, replies


def _self_test_case(workdir, mutate):
    """Runs the checks on the fabricated run after mutate(run); returns the failed checks."""
    run = dict(zip(("sent", "journal", "dead", "requests", "replies"), _fabricated_run(workdir)))
    mutate(run)
    opts = argparse.Namespace(size="small", seconds=None, conversations=None, set=None,
                              seed=1, bin="/bin/true", workdir=workdir, breaks=[])
    c = Chaos(opts)
    c.convs = list(run["sent"])
    path = os.path.join(workdir, "requests.jsonl")
    if os.path.exists(path):
        os.unlink(path)
    if run["requests"] is not None:
        with open(path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in run["requests"]))
    for t, obj in enumerate(run["replies"]):
        c.replies.add(float(t), "w1", json.dumps(obj))
    c.workers = [_FakeWorker(workdir, "w1", "cli", [json.dumps(r) for r in run["replies"]])]
    c.producers = [None]
    c.producer_stats = [{"done": True, "rc": 0}]
    c.final_status = {"pending": 0, "inflight": 0, "ready": 0}
    c.stop_codes = {"w1": 0}
    c.counts.update(kills=1, pauses=1, redis_restarts=1)
    status = {conv: {"state": "idle", "pending": 0, "inflight": 0} for conv in c.convs}
    c.check(run["sent"], run["journal"], run["dead"], status, True)
    return [name for name, ok, _ in c.checks if not ok]


def _conv(run, conv):
    return run["journal"]["conversations"][conv]


SELF_TESTS = [
    # (what is broken, the check that must fail, how)
    ("turns overlap", "no overlapping turns in a conversation",
     lambda r: _conv(r, "conv_a")["turns"][2].update(started=12.5)),
    ("a long turn covers two", "no overlapping turns in a conversation",
     lambda r: _conv(r, "conv_b")["turns"][0].update(ended=20)),
    ("the emulator counted an overlap", "no overlapping turns in a conversation",
     lambda r: _conv(r, "conv_a").update(overlaps=1)),
    ("a create refused as locked", "no create refused as conversation_locked",
     lambda r: _conv(r, "conv_b").update(rejected=1)),
    ("requests.jsonl missing", "batches of a conversation never interleave at the API",
     lambda r: r.update(requests=None)),
    ("a request missing from the log", "batches of a conversation never interleave at the API",
     lambda r: r["requests"].pop(7)),
    ("no create in the log", "batches of a conversation never interleave at the API",
     lambda r: r.update(requests=[dict(q, method="GET") for q in r["requests"]])),
    ("batches interleave", "batches of a conversation never interleave at the API",
     lambda r: r["requests"][9]["body"]["metadata"].update(runlane_batch_id="b1")),
    ("a [[fail-always]] batch dead too early", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: r["dead"][0].update(attempts=2)),
    ("a worker's death spent one of max.attempts", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: r["dead"][0].update(attempts=Chaos.MAX_ATTEMPTS)),
    ("a dead letter with another error", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: r["dead"][0].update(error="HTTP 400: x")),
    ("lease expired, no turn failed", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: (
         r["dead"][0].update(error="lease expired after 5 attempts"),
         [t.update(status="completed") for t in _conv(r, "conv_b")["turns"]])),
    ("a [[fail-always]] batch answered", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: (r.update(dead=[]), r["replies"].append(
         {"batch_id": "d1", "conversation_id": "conv_b", "message_ids": ["m4"],
          "reply": "echo: b2 z [[fail-always]]"}))),
    ("no [[fail-always]] batch at all", "[[fail-always]] batches dead-lettered at "
     "max.attempts with their error", lambda r: (r["sent"]["conv_b"][1].update(
         fail_always=False), r.update(dead=[]))),
    ("another batch dead", "dead letters only for [[fail-always]] batches",
     lambda r: r["dead"].append({"id": "b9", "attempts": 5, "error": "x",
                                 "messages": [{"id": "m1"}]})),
    ("a [[fail]] batch's reply is empty", "replies echo their batch and its tool outputs",
     lambda r: r["replies"][1].update(reply="echo: ")),
    ("a message delivered twice", "no message delivered twice (journal)",
     lambda r: _conv(r, "conv_a")["messages"].append("a1 hi")),
    ("a message lost", "no message lost (journal)",
     lambda r: _conv(r, "conv_a")["messages"].remove("a1 hi")),
]


def self_test():
    """[] when every check passes on the fabricated run and each broken one fails its check;
    else what went wrong."""
    problems = []
    workdir = tempfile.mkdtemp(prefix="runlane-chaos-selftest-")
    try:
        failed = _self_test_case(workdir, lambda r: None)
        if failed:
            problems.append("the fabricated good run fails %s" % failed)
        for what, name, mutate in SELF_TESTS:
            failed = _self_test_case(workdir, mutate)
            if name not in failed:
                problems.append("%s: check %r did not fail (failed: %s)" % (what, name, failed))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--seconds", type=int, default=None, help="how long the producers send")
    ap.add_argument("--conversations", type=int, default=None)
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a size parameter, e.g. --set kills=6 --set fails=20 "
                         "(keys: %s)" % ", ".join(sorted(SIZES["small"])))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "20261125")))
    ap.add_argument("--emulator-seed", type=int, default=None,
                    help="seed of the emulator's faults (default: --seed)")
    ap.add_argument("--bin", default=os.environ.get("RUNLANE_BIN"))
    ap.add_argument("--redis", choices=["single", "cluster", "sentinel"], default="single",
                    help="one redis-server (restarted), a 3-master Cluster (live reshard, master "
                         "kill -9) or Sentinel (master kill -9); the last two with "
                         "redis.wait.replicas=1")
    ap.add_argument("--workdir", default=None, help="where logs go (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory when all passed")
    ap.add_argument("--break", dest="breaks", action="append", choices=sorted(BREAKS),
                    help="run against a deliberately broken emulator or worker, to see a check "
                         "fail (default: $CHAOS_BREAK, comma-separated): "
                         + "; ".join("%s: %s" % kv for kv in sorted(BREAKS.items())))
    ap.add_argument("--self-test", action="store_true",
                    help="only check that every check fails on a fabricated broken run")
    opts = ap.parse_args()
    if opts.breaks is None:
        opts.breaks = [b for b in os.environ.get("CHAOS_BREAK", "").split(",") if b]
        unknown = set(opts.breaks) - set(BREAKS)
        if unknown:
            ap.error("CHAOS_BREAK: unknown %s (known: %s)" % (sorted(unknown), sorted(BREAKS)))
    problems = self_test()
    for p in problems:
        print("chaos self-test: %s" % p, file=sys.stderr)
    if opts.self_test or problems:
        print("chaos self-test: %d checks made to fail, %s"
              % (len(SELF_TESTS), "%d problems" % len(problems) if problems else "ok"))
        return 1 if problems else 0
    if opts.emulator_seed is None:
        opts.emulator_seed = opts.seed
    if not opts.bin or not os.access(opts.bin, os.X_OK):
        print("chaos: give the runlane program with --bin or RUNLANE_BIN", file=sys.stderr)
        return 2
    opts.bin = os.path.abspath(opts.bin)
    made_dir = opts.workdir is None
    opts.workdir = os.path.abspath(opts.workdir or tempfile.mkdtemp(prefix="runlane-chaos-"))
    os.makedirs(opts.workdir, exist_ok=True)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    log("size %s, seed %d, bin %s, logs in %s%s" % (
        opts.size, opts.seed, opts.bin, opts.workdir,
        "; BROKEN ON PURPOSE: " + ", ".join(opts.breaks) if opts.breaks else ""))
    chaos = Chaos(opts)
    rc = 2
    try:
        ok = chaos.run()
        chaos.report()
        rc = 0 if ok else 1
    except SetupError as e:
        log("setup error: %s" % e)
        chaos.add_check("setup", False, str(e))
    except (SystemExit, KeyboardInterrupt) as e:
        code = e.code if isinstance(e, SystemExit) else 130
        log("interrupted (exit %s): cleaning up" % code)
        chaos.add_check("run completed", False, "interrupted by a signal")
        rc = code if isinstance(code, int) else 1
    finally:
        try:
            if chaos.emulator:
                chaos.emulator.stop()
        finally:
            CHILDREN.kill_all()
            chaos.redis.stop()
    passed = sum(1 for _, ok, _ in chaos.checks if ok)
    failed = len(chaos.checks) - passed
    for name, ok, detail in chaos.checks:
        if not ok:
            log("FAILED: %s: %s" % (name, detail[:1000]))
    if rc == 0 and made_dir and not opts.keep:
        shutil.rmtree(opts.workdir, ignore_errors=True)
    else:
        log("logs kept in %s" % opts.workdir)
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    return rc if failed == 0 or rc != 0 else 1


if __name__ == "__main__":
    sys.exit(main())
