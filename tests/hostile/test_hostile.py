"""The real `runlane worker` against a hostile HTTP server (hostile_server.py).

For every mode of the server, both HTTP backends and openai.stream on and
off, the worker must:
  - stay under RSS_LIMIT_MB of resident memory (sampled from /proc; the
    worker is killed at once past it, so a regression cannot take the
    machine down);
  - send a bounded number of requests (the server counts them);
  - dead-letter the batch after max.attempts, with an error that says what
    went wrong;
  - end on one SIGTERM within --drain-timeout plus a few seconds, without
    crashing;
  - never show the API key: not in its output, the queue's status, the
    dead letter, nor any Redis value of the queue.

Environment: RUNLANE_BIN (else build/default/core/cli/runlane),
RUNLANE_TEST_REDIS (required; RUNLANE_REQUIRE_REDIS=1 fails instead of
skipping without it), RUNLANE_TEST_TIME_SCALE (stretches every deadline),
RUNLANE_HOSTILE_RSS_MB (the memory bound, 256 by default).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from hostile_server import HostileServer  # noqa: E402

# The memory bound: 256 MB (a sanitized build's test sets more).
RSS_LIMIT_MB = int(os.environ.get("RUNLANE_HOSTILE_RSS_MB") or 256)
API_KEY = "sk-hostile-" + uuid.uuid4().hex + "-SECRET"
SCALE = float(os.environ.get("RUNLANE_TEST_TIME_SCALE") or 1)
REDIS = os.environ.get("RUNLANE_TEST_REDIS")
REQUIRE_REDIS = os.environ.get("RUNLANE_REQUIRE_REDIS") == "1"
MAX_ATTEMPTS = 2
MAX_RETRIES = 1
DRAIN_S = 5


def _find_bin():
    b = os.environ.get("RUNLANE_BIN")
    if b:
        return b
    for cand in (ROOT / "build" / "default" / "core" / "cli" / "runlane",
                 ROOT / "build" / "core" / "cli" / "runlane"):
        if cand.exists():
            return str(cand)
    return None


BIN = _find_bin()
if not BIN or not os.access(BIN, os.X_OK):
    pytest.fail(f"RUNLANE_BIN is not set to the runlane program (got {BIN!r})", pytrace=False)


# ---------------------------------------------------------------- helpers


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class Redis:
    """A minimal RESP client: enough to read every value of a queue."""

    def __init__(self, url):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 6379), timeout=10)
        self.f = self.sock.makefile("rb")
        db = (u.path or "/0").lstrip("/") or "0"
        self.cmd("SELECT", db)

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return [] if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def dump_prefix(self, prefix):
        """Every key of the prefix and its whole value, as bytes."""
        out = b""
        cursor = b"0"
        while True:
            cursor, keys = self.cmd("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
            for k in keys:
                t = self.cmd("TYPE", k)
                if t == b"string":
                    v = [self.cmd("GET", k)]
                elif t == b"hash":
                    v = self.cmd("HGETALL", k)
                elif t == b"list":
                    v = self.cmd("LRANGE", k, 0, -1)
                elif t == b"set":
                    v = self.cmd("SMEMBERS", k)
                elif t == b"zset":
                    v = self.cmd("ZRANGE", k, 0, -1, "WITHSCORES")
                elif t == b"stream":
                    v = [json.dumps(repr(self.cmd("XRANGE", k, "-", "+"))).encode()]
                else:
                    v = []
                out += k + b"\n" + b"\n".join(x or b"" for x in v) + b"\n"
            if cursor == b"0":
                return out

    def close(self):
        self.sock.close()


class Case:
    """One worker against one hostile server, with a fresh queue."""

    def __init__(self, tmp_path, mode, backend, stream, extra=(), worker_args=()):
        if not REDIS:
            if REQUIRE_REDIS:
                pytest.fail("RUNLANE_TEST_REDIS is not set and RUNLANE_REQUIRE_REDIS=1", pytrace=False)
            pytest.skip("RUNLANE_TEST_REDIS is not set")
        self.tmp = tmp_path
        self.server = HostileServer(mode).start()
        self.backend = backend
        self.prefix = "hostile-" + uuid.uuid4().hex[:10]
        self.conv = ("thread_" if backend == "assistants" else "conv_") + uuid.uuid4().hex[:12]
        self.store = [
            "--store", REDIS,
            "-X", f"key.prefix={self.prefix}",
            "-X", "batch.window.ms=50",
            "-X", "worker.poll.ms=50",
            "-X", "backoff.base.ms=50",
            "-X", "backoff.max.ms=100",
            "-X", f"max.attempts={MAX_ATTEMPTS}",
            "-X", f"http.max.retries={MAX_RETRIES}",
            "-X", "http.retry.base.ms=50",
            "-X", "http.retry.max.ms=200",
            "-X", "http.timeout.ms=2000",
            "-X", "http.stream.idle.timeout.ms=2000",
            "-X", f"openai.base.url={self.server.base_url}",
            "-X", f"openai.api.key={API_KEY}",
            "-X", "openai.model=gpt-hostile",
            "-X", "openai.assistant.id=asst_hostile",
            "-X", f"openai.stream={'true' if stream else 'false'}",
        ]
        for kv in extra:
            self.store += ["-X", kv]
        self.worker_args = list(worker_args)
        self.out = open(tmp_path / "worker.out", "w+")
        self.err = open(tmp_path / "worker.err", "w+")
        self.proc = None
        self.max_rss = 0.0

    def run(self, *args, check=0, timeout=30):
        p = subprocess.run([BIN, *self.store, *args], capture_output=True, text=True,
                           timeout=timeout * SCALE)
        assert check is None or p.returncode == check, (
            f"runlane {' '.join(args)}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def enqueue(self, text):
        return self.run("enqueue", self.conv, text).stdout.strip()

    def start(self):
        self.proc = subprocess.Popen(
            [BIN, *self.store, "worker", "--backend", self.backend, "--drain-timeout", str(DRAIN_S),
             *self.worker_args],
            stdout=self.out, stderr=self.err, text=True)

    def sample(self):
        r = rss_mb(self.proc.pid)
        self.max_rss = max(self.max_rss, r)
        if r > RSS_LIMIT_MB:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker RSS {r:.0f} MB is over {RSS_LIMIT_MB} MB "
                                 f"(mode {self.server.mode}); killed it")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early with {self.proc.returncode}:\n{self.stderr()}")

    def wait_for(self, pred, timeout, what):
        deadline = time.time() + timeout * SCALE
        while time.time() < deadline:
            self.sample()
            v = pred()
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout * SCALE:.0f}s waiting for {what} "
                             f"(server saw {self.server.snapshot()});\nworker stderr:\n{self.stderr()[-3000:]}")

    def dead(self):
        return json.loads(self.run("dead", "list", "--json").stdout)

    def stderr(self):
        self.err.flush()
        return (self.tmp / "worker.err").read_text(errors="replace")

    def stdout(self):
        self.out.flush()
        return (self.tmp / "worker.out").read_text(errors="replace")

    def stop(self):
        """One SIGTERM: the worker must end within the drain timeout plus a
        few seconds, by itself, without crashing."""
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        limit = (DRAIN_S + 5) * SCALE
        while self.proc.poll() is None and time.time() - t0 < limit:
            self.sample_quiet()
            time.sleep(0.05)
        took = time.time() - t0
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"one SIGTERM did not end the worker within {limit:.0f}s;\n"
                                 f"stderr:\n{self.stderr()[-3000:]}")
        rc = self.proc.returncode
        assert rc >= 0, f"the worker crashed (signal {-rc});\nstderr:\n{self.stderr()[-3000:]}"
        assert rc in (0, 4), f"unexpected exit {rc};\nstderr:\n{self.stderr()[-3000:]}"
        return took

    def sample_quiet(self):
        if self.proc.poll() is None:
            self.max_rss = max(self.max_rss, rss_mb(self.proc.pid))

    def check_secret_nowhere(self):
        assert any(API_KEY in a for a in self.server.auth), \
            "the server never saw the API key: the check below would prove nothing"
        places = {
            "worker stdout": self.stdout(),
            "worker stderr": self.stderr(),
            "status": self.run("status", "--json").stdout + self.run("status", self.conv, "--json").stdout,
            "dead letters": self.run("dead", "list", "--json").stdout,
        }
        r = Redis(REDIS)
        try:
            places["redis values"] = r.dump_prefix(self.prefix).decode("utf-8", "replace")
        finally:
            r.close()
        assert places["redis values"], "no Redis value found for the queue: the scan is wrong"
        for where, text in places.items():
            assert API_KEY not in text, f"the API key appears in the {where}"
            assert API_KEY[3:20] not in text, f"part of the API key appears in the {where}"

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.server.stop()
        self.out.close()
        self.err.close()


@pytest.fixture
def case(tmp_path):
    made = []

    def make(*a, **kw):
        c = Case(tmp_path, *a, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# What each mode's dead letter must say (any of the words, lower case).
EXPECTED_ERROR = {
    "endless_line": ("http.sse.max.line.bytes", "http.max.body.bytes"),
    "endless_event": ("http.sse.max.event.bytes", "http.max.body.bytes"),
    "garbage_sse": ("usable",),
    "non_object": ("usable",),
    "missing_status": ("status",),
    "retry_after": ("429",),
    "slow_drip": ("no event", "timeout", "timed out"),
    "huge_headers": ("http.max.header.bytes",),
}

# Requests a whole batch may cost (MAX_ATTEMPTS attempts, each at most
# MAX_RETRIES + 1 tries of each step, each step at most MAX_RETRIES + 1
# sends): generous, and far below what an unbounded loop sends.
MAX_REQUESTS = 80

# (A slow drip of a body that is not a stream is bounded by http.timeout.ms
# like any slow answer: only the stream, where bytes that make no event
# used to keep the transfer alive forever, is a hostile case.)
MATRIX = [(m, b, s) for m in EXPECTED_ERROR for b in ("responses", "assistants") for s in (True, False)
          if not (m == "slow_drip" and not s)]


@pytest.mark.parametrize("mode,backend,stream", MATRIX,
                         ids=[f"{m}-{b}-{'stream' if s else 'poll'}" for m, b, s in MATRIX])
def test_hostile_server_costs_bounded_requests_and_dead_letters(case, mode, backend, stream):
    # The endless modes are about the size limits: slow builds (sanitizers)
    # must not meet the timeouts first, which the other modes keep short.
    slow_ok = ["http.timeout.ms=60000", "http.stream.idle.timeout.ms=60000"] if mode.startswith("endless") else []
    c = case(mode, backend, stream, extra=slow_ok)
    c.enqueue("hello")
    c.start()
    dead = c.wait_for(lambda: c.dead(), 60, "the batch to be dead-lettered")
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["conversation_id"] == c.conv, d
    assert d["attempts"] == MAX_ATTEMPTS, f"dead after {d['attempts']} attempts, expected {MAX_ATTEMPTS}: {d}"
    err = (d.get("error") or d.get("last_error") or "").lower()
    assert any(w in err for w in EXPECTED_ERROR[mode]), f"unclear error for {mode}: {err!r}"
    n = c.server.total()
    assert n <= MAX_REQUESTS, f"{n} requests for one batch (bound {MAX_REQUESTS}): {c.server.snapshot()}"
    # Nothing more goes out for it once it is dead (a loop would keep sending).
    before = c.server.total()
    c.wait_for(lambda: c.run("status", "--json").stdout and True, 5, "status")
    c.stop()
    assert c.server.total() - before <= 2, f"requests after the dead letter: {c.server.snapshot()}"
    assert c.max_rss < RSS_LIMIT_MB
    if mode == "retry_after":
        assert "Retry-After" in c.stderr(), "the long wait the server asked for was not reported"
    c.check_secret_nowhere()


@pytest.mark.parametrize("backend", ["responses", "assistants"])
def test_stop_cuts_a_huge_retry_after_short(case, backend):
    # The cap itself is set far above the drain timeout: the stop must not
    # wait for the server's 999999 s (nor for the 600 s cap).
    c = case("retry_after", backend, True, extra=["http.retry.max.ms=600000"])
    c.enqueue("hello")
    c.start()
    c.wait_for(lambda: "asked to wait" in c.stderr(), 20, "the long wait to be reported")
    assert "Retry-After" in c.stderr()
    assert c.server.total() == 1, f"a 999999 s wait was not waited: {c.server.snapshot()}"
    took = c.stop()
    assert took < DRAIN_S, f"the stop waited {took:.1f}s, not cut short (drain timeout {DRAIN_S}s)"
    st = json.loads(c.run("status", c.conv, "--json").stdout)
    assert not c.dead(), "a stop must release the batch, not fail it"
    assert "attempts" not in st or st.get("attempts", 0) <= 1, st
    c.check_secret_nowhere()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "poll"])
def test_interrupt_with_items_404_backs_off_and_fails(case, stream):
    # busy.policy=interrupt with a tool call pending: the worker answers the
    # call in the conversation (POST /conversations/{id}/items); a server
    # without that endpoint answers 404. Bounded, backed off, failed with an
    # error naming the endpoint, dead-lettered (max.attempts=1 here: the
    # interrupt only happens on the attempt the new message came in).
    c = case("items_404", "responses", stream, extra=["busy.policy=interrupt", "max.attempts=1"],
             worker_args=["--tool-exec", "sleep 2; echo ok"])
    c.enqueue("first")
    c.start()
    c.wait_for(lambda: c.server.count("POST /responses") >= 1, 20, "the first create")
    c.enqueue("second, while the tool runs")
    dead = c.wait_for(lambda: c.dead(), 60, "the batch to be dead-lettered")
    err = dead[0].get("error") or dead[0].get("last_error") or ""
    assert "/items" in err and "404" in err, f"the error should name the endpoint and its 404: {err!r}"
    assert "busy.policy=interrupt" in err, err
    # Two batches at most meet the endpoint: the interrupted one, and the
    # one of the second message (which finds the call still unanswered).
    posts = sum(n for k, n in c.server.snapshot().items() if k.startswith("POST /conversations/"))
    bound = 2 * (MAX_RETRIES + 1)
    assert 1 <= posts <= bound, f"{posts} POSTs of items (bound {bound}): {c.server.snapshot()}"
    assert c.server.total() <= MAX_REQUESTS, c.server.snapshot()
    c.stop()
    c.check_secret_nowhere()
