"""Process-level integration tests of the OpenAI backends (`runlane worker --backend
responses|assistants`) against the in-process OpenAI emulator (tests/emulator/).

Every test drives the real `runlane` program: `conversation create` / `thread create`,
`enqueue`, and one or more `worker` processes (replies are JSON lines on their stdout),
then checks what the provider saw through the emulator's journal and request log.

Environment:
  RUNLANE_BIN            path of the built `runlane` program (required; a build tree's
                         core/cli/runlane is tried when unset)
  RUNLANE_TEST_REDIS     redis://127.0.0.1:PORT/0 (every test needs it: the workers are
                         separate processes)
  RUNLANE_REQUIRE_REDIS  1: a missing RUNLANE_TEST_REDIS fails instead of skipping
  RUNLANE_OPENAPI_SPEC   the OpenAI spec (default tests/spec/openai-openapi.yaml, kept in
                         the repository)
  RUNLANE_REQUIRE_SPEC   1: a missing spec fails the schema test instead of skipping it

Every test uses its own key.prefix and its own emulator, so nothing needs flushing.
Run: RUNLANE_BIN=... RUNLANE_TEST_REDIS=... python3 -m pytest -q tests/integration
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

from emulator import Emulator  # noqa: E402  (tests/emulator/emulator.py)


def _find_bin():
    b = os.environ.get("RUNLANE_BIN")
    if b:
        return b
    cand = ROOT / "build" / "core" / "cli" / "runlane"
    return str(cand) if cand.exists() else None


BIN = _find_bin()
REDIS = os.environ.get("RUNLANE_TEST_REDIS")
REQUIRE_REDIS = os.environ.get("RUNLANE_REQUIRE_REDIS") == "1"
SPEC_PATH = os.environ.get("RUNLANE_OPENAPI_SPEC") or str(
    (ROOT / "tests" / "spec" / "openai-openapi.yaml").resolve())
REQUIRE_SPEC = os.environ.get("RUNLANE_REQUIRE_SPEC") == "1"

if not BIN or not os.access(BIN, os.X_OK):
    pytest.fail(f"RUNLANE_BIN is not set to the runlane program (got {BIN!r})", pytrace=False)

BACKENDS = ["responses", "assistants"]
TOOL_MARKER = '[[tool:get_weather {"city":"Paris"}]]'
SECRET = "sk-integration-SECRET"


# ---------------------------------------------------------------- helpers


def _base_env():
    env = dict(os.environ)
    for k in ("RUNLANE_STORE", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(k, None)
    return env


def run(*args, input=None, env=None, timeout=30, check=None):
    """Runs runlane with args; returns the CompletedProcess (text)."""
    p = subprocess.run([BIN, *args], input=input, capture_output=True, text=True,
                       env=env or _base_env(), timeout=timeout)
    if check is not None:
        assert p.returncode == check, (
            f"runlane {' '.join(args)}: expected exit {check}, got {p.returncode}\n"
            f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


# Slow runs (sanitizers) stretch every deadline by this factor.
TIME_SCALE = max(1.0, float(os.environ.get("RUNLANE_TEST_TIME_SCALE") or 1))


def wait_until(pred, timeout, what, interval=0.05):
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Worker:
    """A `runlane worker` process in its own session (so that SIGKILL of its process group
    also ends the tool commands it runs), with its stdout and stderr read by threads."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or _base_env(),
                                     start_new_session=True)
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=self._read, args=(s, lst), daemon=True)
                         for s, lst in ((self.proc.stdout, self.out),
                                        (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, lst):
        for line in stream:
            lst.append(line.rstrip("\n"))

    @property
    def stdout(self):
        return "\n".join(self.out)

    @property
    def stderr(self):
        return "\n".join(self.err)

    def replies(self):
        """The reply JSON lines printed so far (stdout carries nothing else)."""
        res = []
        for line in list(self.out):
            if not line.strip():
                continue
            try:
                res.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{self.name}: stdout line is not JSON: {line!r}")
        return res

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"{self.name} did not exit within {timeout}s; "
                                 f"stderr:\n{self.stderr}")
        for t in self._readers:
            t.join(timeout=5)
        return self.proc.returncode

    def stop(self, timeout=40):
        """SIGTERM (graceful: drain), then wait."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self):
        """SIGKILL the worker and everything it started (its process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        for t in self._readers:
            t.join(timeout=5)

    def describe(self):
        return (f"--- {self.name} (exit {self.proc.returncode}) stdout:\n{self.stdout}\n"
                f"--- {self.name} stderr:\n{self.stderr}\n")


@pytest.fixture
def redis_url():
    if not REDIS:
        if REQUIRE_REDIS:
            pytest.fail("RUNLANE_TEST_REDIS is not set and RUNLANE_REQUIRE_REDIS=1",
                        pytrace=False)
        pytest.skip("RUNLANE_TEST_REDIS is not set")
    return REDIS


@pytest.fixture
def emulators():
    """Makes emulators that are stopped at the end of the test."""
    made = []

    def make(**kw):
        e = Emulator(**kw).start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture
def workers():
    """Every worker a test starts; whatever still runs at the end is killed."""
    started = []
    yield started
    for w in started:
        if w.alive():
            w.kill9()


class Lane:
    """One queue (its own key.prefix) on the test Redis, wired to one emulator and backend."""

    def __init__(self, redis, emu, backend, workers, *extra):
        self.backend = backend
        self.emu = emu
        self.workers = workers
        self.prefix = "itest-" + uuid.uuid4().hex[:10]
        provider = (["-X", "openai.model=gpt-4o-mini"] if backend == "responses"
                    else ["-X", "openai.assistant.id=asst_integration"])
        self.args = [
            "--store", redis,
            "-X", f"key.prefix={self.prefix}",
            "-X", "batch.window.ms=50",
            "-X", "worker.poll.ms=50",
            "-X", "backoff.base.ms=100",
            "-X", "backoff.max.ms=500",
            "-X", f"openai.base.url={emu.base_url}",
            *provider,
            *extra,
        ]

    def run(self, *args, **kw):
        return run(*self.args, *args, **kw)

    def create(self, *extra):
        """A provider conversation (responses) or thread (assistants) through the CLI."""
        what = "conversation" if self.backend == "responses" else "thread"
        cid = self.run(what, "create", *extra, check=0).stdout.strip()
        assert cid.startswith("conv_" if self.backend == "responses" else "thread_"), cid
        return cid

    def enqueue(self, conv, text):
        return self.run("enqueue", conv, text, check=0).stdout.strip()

    def enqueue_many(self, pairs):
        """[(conversation, content)] in one `enqueue --file -`; returns the ids in order."""
        data = "".join(json.dumps({"conversation_id": c, "content": t}) + "\n" for c, t in pairs)
        ids = self.run("enqueue", "--file", "-", input=data, check=0).stdout.split()
        assert len(ids) == len(pairs), ids
        return ids

    def worker(self, name, *extra, tool_exec="echo sunny", env=None):
        argv = [BIN, *self.args, "worker", "--backend", self.backend]
        if tool_exec:
            argv += ["--tool-exec", tool_exec]
        argv += list(extra)
        w = Worker(name, argv, env=env)
        self.workers.append(w)
        return w


def api_path(path):
    return path[3:] if path.startswith("/v1/") else path


def route_shape(path):
    """/v1/threads/thread_1/runs -> /threads/{thread}/runs (for messages)."""
    return re.sub(r"/(conv|thread|resp|run|msg|call|fc)_[0-9A-Za-z]+", r"/{\1}", api_path(path))


def turn_posts(emu, conv, backend):
    """The request-log entries that create a turn of `conv` (POST /responses on it, or POST
    /threads/{t}/runs)."""
    out = []
    for r in emu.requests(2000):
        p = api_path(r["path"])
        if r["method"] != "POST":
            continue
        if backend == "responses" and p == "/responses" and isinstance(r["body"], dict) \
                and r["body"].get("conversation") in (conv, {"id": conv}):
            out.append(r)
        if backend == "assistants" and p == f"/threads/{conv}/runs":
            out.append(r)
    return out


def _text(content):
    if isinstance(content, list):  # content parts: [{"type": "input_text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def user_messages_of(body, backend):
    """User message texts a turn-creating request adds."""
    if backend == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return [items]
        return [_text(i.get("content")) for i in items or []
                if i.get("type", "message") == "message" and i.get("role") == "user"]
    return [_text(m.get("content")) for m in body.get("additional_messages") or []]


def tool_outputs_of(body, backend):
    if backend == "responses":
        return [i for i in body.get("input") or [] if isinstance(i, dict)
                and i.get("type") == "function_call_output"]
    return list(body.get("tool_outputs") or [])


def batch_id_of(body):
    md = (body or {}).get("metadata") or {}
    return md.get("runlane_batch_id")


def assert_turns_do_not_overlap(conv, turns):
    ts = sorted(turns, key=lambda t: t["started"])
    for t in ts:
        assert t["ended"] is not None, f"{conv}: turn {t['id']} never ended: {ts}"
    for a, b in zip(ts, ts[1:]):
        assert b["started"] >= a["ended"], (
            f"{conv}: turns overlap: {a['id']} ran {a['started']:.3f}..{a['ended']:.3f} and "
            f"{b['id']} started at {b['started']:.3f}")


def assert_refusals_are_lock_refusals(emu, log):
    """Requests the emulator refused (4xx, not an injected fault) may only be the one-turn
    lock rule's refusals, which the journal counts as `rejected`."""
    refused = [f"#{e['seq']} {e['method']} {e['path']}: {e['status']}" for e in log
               if not e["fault"] and isinstance(e["status"], int) and 400 <= e["status"] < 500]
    rejected = sum(j["rejected"] for j in emu.journal()["conversations"].values())
    assert len(refused) == rejected, (
        f"requests refused other than by the lock rule ({rejected} lock refusals): {refused}")


# ---------------------------------------------------------------- 1. faults, two workers


N_CONVS = 20
PER_BURST = 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_faults_two_workers_every_message_once_in_order(backend, redis_url, emulators, workers):
    retry_after_ms = 700
    emu = emulators(latency_ms=50, seed=20240611, fault_kinds=["429", "500", "reset", "slow"],
                    fault_slow_ms=300, retry_after_ms=retry_after_ms)
    lane = Lane(redis_url, emu, backend, workers,
                # A small HTTP backoff, so that only Retry-After can explain a long wait.
                "-X", "http.retry.base.ms=50", "-X", "http.retry.max.ms=2000")
    convs = [lane.create() for _ in range(N_CONVS)]
    # Faults from here on (creates are not under test). Random faults alone are few (about
    # 100 requests), so each kind is also forced on the routes every batch uses: each kind is
    # seen, and the Retry-After check always has data.
    emu.configure(fault_rate=0.05)
    turn_route = "/responses" if backend == "responses" else "/runs"
    other_route = "/items" if backend == "responses" else "/messages"
    forced = (("429", 2, "POST", turn_route), ("500", 1, "POST", turn_route),
              ("reset", 1, "POST", turn_route), ("slow", 1, "POST", turn_route),
              ("429", 1, "GET", other_route), ("reset", 1, "GET", other_route),
              ("500", 1, "GET", other_route))
    for kind, count, method, path in forced:
        emu.force_fault(kind, count=count, method=method, path=path)

    w1 = lane.worker("worker-1")
    w2 = lane.worker("worker-2")
    expected = {c: [] for c in convs}          # conversation -> [(id, content)] in enqueue order
    for burst in range(2):
        pairs = [(c, f"{c[-6:]} burst {burst} msg {k}") for c in convs for k in range(PER_BURST)]
        for (c, text), mid in zip(pairs, lane.enqueue_many(pairs)):
            expected[c].append((mid, text))
        if burst == 0:
            time.sleep(0.3)  # the second burst lands while many first turns run
    all_ids = {mid for v in expected.values() for mid, _ in v}

    def answered():
        got = set()
        for w in (w1, w2):
            for r in w.replies():
                got.update(r.get("message_ids") or [])
        return all_ids <= got

    try:
        wait_until(answered, 120, "replies covering every message")

        def idle():
            st = json.loads(lane.run("status", "--json", check=0).stdout)
            return st["pending"] == 0 and st["inflight"] == 0 and st["ready"] == 0

        # Nothing pending, ready or in flight: no batch can run (and print) again;
        # a late duplicate print, if any, is in the workers' output by the time
        # they have stopped below.
        wait_until(idle, 60, "the queue to be idle")
    finally:
        codes = [w.stop() for w in (w1, w2)]
    logs = w1.describe() + w2.describe()
    assert all(c in (0, 4) for c in codes), f"worker exit codes {codes}\n{logs}"
    dead = json.loads(lane.run("dead", "list", "--json", check=0).stdout)
    assert not dead, f"dead letters: {json.dumps(dead)[:2000]}\n{logs}"

    # Replies: at least once per batch (deduplicated by batch id), copies identical.
    by_batch = {}
    prints = 0
    for w in (w1, w2):
        for r in w.replies():
            prints += 1
            first = by_batch.setdefault(r["batch_id"], r)
            for k in ("conversation_id", "message_ids", "reply"):
                assert r.get(k) == first.get(k), (
                    f"two prints of batch {r['batch_id']} differ in {k}: {first} vs {r}")
    seen_ids = []
    per_conv = {c: [] for c in convs}
    for r in by_batch.values():
        assert r["conversation_id"] in per_conv, r
        per_conv[r["conversation_id"]].append(r)
        seen_ids += r["message_ids"]
    assert len(seen_ids) == len(set(seen_ids)), "a message is in two batches' replies"
    assert set(seen_ids) == all_ids
    content = {mid: text for v in expected.values() for mid, text in v}
    for c, rs in per_conv.items():
        # Message ids are ordered per conversation, so batches sort by their first id.
        rs.sort(key=lambda r: [m for m, _ in expected[c]].index(r["message_ids"][0]))
        order = [m for r in rs for m in r["message_ids"]]
        assert order == [m for m, _ in expected[c]], (
            f"{c}: batches' messages out of order: {order} vs {expected[c]}")
        for r in rs:
            want = "echo: " + "\n".join(content[m] for m in r["message_ids"])
            assert r["reply"] == want, f"{c}: {r['batch_id']} replied {r['reply']!r}, not {want!r}"

    # The provider's view: every message once and in order, one turn per batch, no overlap.
    journal = emu.journal()
    for c in convs:
        j = journal["conversations"].get(c)
        assert j is not None, f"{c}: not in the journal"
        assert j["messages"] == [t for _, t in expected[c]], (
            f"{c}: the provider got {j['messages']}, expected {[t for _, t in expected[c]]}")
        assert j["duplicates"] == 0, f"{c}: {j}"
        assert_turns_do_not_overlap(c, j["turns"])
        assert all(t["status"] == "completed" for t in j["turns"]), f"{c}: {j['turns']}"
        assert len(j["turns"]) == len(per_conv[c]), (
            f"{c}: {len(j['turns'])} provider turns for {len(per_conv[c])} batches: {j['turns']}")

    # Every batch that reached the provider has its reply (request log: metadata batch ids).
    log = emu.requests(2000)
    assert log and log[0]["seq"] == 1, (
        f"the emulator's request log (2000 entries) overflowed: {journal['requests']} requests")
    assert_refusals_are_lock_refusals(emu, log)
    posted = {batch_id_of(r["body"]) for r in log if r["method"] == "POST"
              and isinstance(r["body"], dict) and batch_id_of(r["body"])}
    assert posted == set(by_batch), (
        f"batches at the provider without a reply: {sorted(posted - set(by_batch))}; "
        f"replies without a provider turn: {sorted(set(by_batch) - posted)}")

    # Retry-After: after a 429, the same route of the same conversation waited >= R.
    waits = check_retry_after(log, retry_after_ms)
    assert waits, "no 429 was followed by a retry: the Retry-After check saw nothing"
    faults = {}
    for e in log:
        if e["fault"]:
            k = f"{e['fault']} {e['method']} {route_shape(e['path'])}"
            faults[k] = faults.get(k, 0) + 1
    print(f"[{backend}] {len(by_batch)} batches, {prints} reply lines, "
          f"{journal['requests']} requests, {journal['faults']} faults {faults}, "
          f"waits after 429 (ms): {waits}")


def _route_key(entry):
    body = entry["body"] if isinstance(entry["body"], dict) else {}
    conv = body.get("conversation")
    if isinstance(conv, dict):
        conv = conv.get("id")
    return entry["method"], api_path(entry["path"]), conv


def check_retry_after(log, retry_after_ms, slack_ms=5):
    """For every request answered 429 (retry-after-ms: R), the next request of the same
    method, path and conversation came at least R ms later (the request log's `time` is
    taken when the emulator reads each request). Returns the waits seen (ms)."""
    waits, bad = [], []
    for i, e in enumerate(log):
        if e["fault"] != "429":
            continue
        key = _route_key(e)
        nxt = next((n for n in log[i + 1:] if _route_key(n) == key), None)
        if nxt is None:
            continue
        waited_ms = (nxt["time"] - e["time"]) * 1000.0
        waits.append(round(waited_ms))
        if waited_ms < retry_after_ms - slack_ms:
            bad.append(f"{key}: 429 (seq {e['seq']}) then again after {waited_ms:.0f} ms "
                       f"(seq {nxt['seq']}), Retry-After was {retry_after_ms} ms")
    assert not bad, "Retry-After not honoured:\n" + "\n".join(bad)
    return waits


# ---------------------------------------------------------------- 2. kill -9 mid-turn


KILL_CONF = ("-X", "lease.ms=1500", "-X", "worker.recover.ms=200")


@pytest.mark.parametrize("stream", ["true", "false"], ids=["stream", "polling"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill9_mid_turn_the_next_worker_adopts_the_turn(backend, stream, redis_url, emulators,
                                                        workers):
    emu = emulators(latency_ms=3000)
    lane = Lane(redis_url, emu, backend, workers, *KILL_CONF, "-X", f"openai.stream={stream}")
    conv = lane.create()
    a = lane.worker("worker-A")
    wait_until(lambda: any("started" in line for line in a.err), 10, "worker A to start")
    mid = lane.enqueue(conv, "hello, are you there?")

    def turn_started():
        j = emu.journal()["conversations"].get(conv)
        return j and j["turns"]
    wait_until(turn_started, 15, "the provider turn to start")
    a.kill9()
    killed_at = time.time()
    assert not a.replies(), f"A replied before it was killed\n{a.describe()}"

    b = lane.worker("worker-B", "--max-batches", "1")
    code = b.wait(60)
    assert code == 0, b.describe()
    replies = b.replies()
    assert len(replies) == 1, b.describe()
    r = replies[0]
    assert r["conversation_id"] == conv and r["message_ids"] == [mid], r
    assert r["reply"] == "echo: hello, are you there?", r
    # The lease expired first: B runs the batch's second attempt, same batch id.
    assert r["attempt"] == 2, f"expected attempt 2 (lease of A expired), got {r}\n{b.describe()}"
    assert f"batch {r['batch_id']} attempt 2: completed" in b.stderr, b.describe()

    j = emu.journal()["conversations"][conv]
    assert j["messages"] == ["hello, are you there?"], j
    assert j["duplicates"] == 0, j
    assert len(j["turns"]) == 1, f"B made a second turn instead of adopting A's: {j['turns']}"
    assert j["turns"][0]["status"] == "completed", j
    # One create took effect, with the message. When A died between its create reaching the
    # provider and its checkpoint of the turn id, B cannot know the turn and asks again (for
    # a reply, without the messages): the lock rule refuses that while A's turn runs.
    posts = turn_posts(emu, conv, backend)
    took = [p for p in posts if p["status"] == 200]
    assert len(took) == 1, f"{len(took)} turn creates took effect: {[p['body'] for p in took]}"
    assert batch_id_of(took[0]["body"]) == r["batch_id"], took[0]["body"]
    assert user_messages_of(took[0]["body"], backend) == ["hello, are you there?"], took[0]
    refused = [p for p in posts if p["status"] != 200]
    assert all(p["status"] == 400 for p in refused) and len(refused) == j["rejected"], (
        f"creates refused other than by the lock rule: {refused}; journal: {j}")
    assert not [p for p in refused if user_messages_of(p["body"], backend)], (
        f"B sent the batch's message again: {refused}")
    # B followed the adopted turn at the provider (it did not invent a reply).
    later = [e for e in emu.requests(2000) if e["time"] > killed_at]
    assert later, "B never asked the provider about the turn it adopted"


# ---------------------------------------------------------------- 3. kill -9 mid-tool-call


BLOCKING_TOOL = """#!/bin/sh
cat > "$OUT/a-$RUNLANE_TOOL_CALL_ID.json"
touch "$OUT/a-running"
sleep 60
echo "too late"
"""

NORMAL_TOOL = """#!/bin/sh
cat > "$OUT/b-$RUNLANE_TOOL_CALL_ID.json"
echo "sunny in Paris"
"""


@pytest.mark.parametrize("stream", ["true", "false"], ids=["stream", "polling"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill9_mid_tool_call_the_next_worker_raises_the_calls_again(backend, stream, redis_url,
                                                                    emulators, workers,
                                                                    tmp_path):
    emu = emulators(latency_ms=200)
    lane = Lane(redis_url, emu, backend, workers, *KILL_CONF, "-X", f"openai.stream={stream}")
    conv = lane.create()
    scripts = {}
    for name, text in (("a", BLOCKING_TOOL), ("b", NORMAL_TOOL)):
        scripts[name] = tmp_path / f"tool-{name}.sh"
        scripts[name].write_text(text)
        scripts[name].chmod(0o755)
    env = _base_env()
    env["OUT"] = str(tmp_path)
    text = f"weather? {TOOL_MARKER}"
    mid = lane.enqueue(conv, text)
    a = lane.worker("worker-A", tool_exec=str(scripts["a"]), env=env)
    wait_until(lambda: (tmp_path / "a-running").exists(), 20, "A's tool command to start")
    a.kill9()  # the worker and its tool command (same process group)
    assert not a.replies(), a.describe()
    a_calls = [json.loads(f.read_text()) for f in tmp_path.glob("a-*.json")]
    assert len(a_calls) == 1 and a_calls[0]["name"] == "get_weather", a_calls

    b = lane.worker("worker-B", "--max-batches", "1", tool_exec=str(scripts["b"]), env=env)
    code = b.wait(60)
    assert code == 0, b.describe()
    replies = b.replies()
    assert len(replies) == 1, b.describe()
    r = replies[0]
    assert r["conversation_id"] == conv and r["message_ids"] == [mid], r
    assert r["attempt"] == 2, f"expected attempt 2 (lease of A expired), got {r}\n{b.describe()}"
    assert "get_weather=sunny in Paris" in r["reply"], r
    b_calls = [json.loads(f.read_text()) for f in tmp_path.glob("b-*.json")]
    assert len(b_calls) == 1, b_calls
    # The same call was raised again (its id is the idempotency key of the tool).
    assert b_calls[0]["id"] == a_calls[0]["id"], (a_calls, b_calls)
    assert json.loads(b_calls[0]["arguments"]) == {"city": "Paris"}, b_calls

    j = emu.journal()["conversations"][conv]
    assert j["messages"] == [text] and j["duplicates"] == 0, j
    posts = turn_posts(emu, conv, backend)
    with_messages = [p for p in posts if user_messages_of(p["body"], backend)]
    assert all(p["status"] == 200 for p in posts), [(p["status"], p["body"]) for p in posts]
    assert len(with_messages) == 1, (
        f"the batch's messages were sent {len(with_messages)} times (the function call would "
        f"be produced twice): {[p['body'] for p in with_messages]}")
    outputs = [p for p in emu.requests(2000) if p["method"] == "POST"
               and isinstance(p["body"], dict) and tool_outputs_of(p["body"], backend)]
    assert len(outputs) == 1, [p["body"] for p in outputs]
    out = tool_outputs_of(outputs[0]["body"], backend)
    key = "call_id" if backend == "responses" else "tool_call_id"
    assert [o[key] for o in out] == [a_calls[0]["id"]], out
    assert out[0]["output"] == "sunny in Paris", out
    if backend == "assistants":
        assert len(j["turns"]) == 1, f"one run for the batch: {j['turns']}"
    else:
        # One response raising the call, one answering it with the output.
        assert len(j["turns"]) == 2, j["turns"]
    assert all(t["status"] == "completed" for t in j["turns"]), j["turns"]
    assert_turns_do_not_overlap(conv, j["turns"])


# ---------------------------------------------------------------- 4. requests match the spec


def _to_json_schema(node):
    """OpenAPI 3.1 is JSON Schema 2020-12 except for two leftovers the spec still uses:
    `nullable: true` (3.0 style), which becomes anyOf [schema, null], and `discriminator`,
    which only annotates the oneOf beside it and is dropped (as tests/emulator does)."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "discriminator"}
    if out.get("nullable") is True:  # a *property* named "nullable" would be a dict
        del out["nullable"]
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _pointer_token(s):
    return s.replace("~", "~0").replace("/", "~1")


class Spec:
    """The OpenAI spec as one JSON Schema resource, with the request body schema of every
    operation reachable by JSON pointer (so $refs inside resolve over components)."""

    URI = "urn:openai-openapi"

    def __init__(self, path):
        import yaml
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        with open(path) as f:
            doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.doc = _to_json_schema(doc)
        self.registry = Registry().with_resource(
            self.URI, Resource.from_contents(self.doc, default_specification=DRAFT202012))
        self._routes = []
        for template in self.doc["paths"]:
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self._routes.append((template.count("{"), template, re.compile(regex)))
        self._routes.sort()  # literal segments win over parameters
        self._validators = {}

    def operation(self, method, path):
        """(template, operation) of a request path (without /v1), or (None, None)."""
        for _, template, regex in self._routes:
            if regex.match(path):
                op = self.doc["paths"][template].get(method.lower())
                return (template, op) if isinstance(op, dict) else (template, None)
        return None, None

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
            target = self.doc
            for tok in node["$ref"][2:].split("/"):
                target = target[tok.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def known_properties(self, schema, depth=0):
        """Every property name the schema (through $ref, allOf, anyOf, oneOf) declares at its
        top level; None when some branch allows any property without naming them."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or depth > 20:
            return None
        names = set(schema.get("properties") or {})
        branches = [b for k in ("allOf", "anyOf", "oneOf") for b in schema.get(k) or []]
        for b in branches:
            sub = self.known_properties(b, depth + 1)
            if sub is None:
                b = self.resolve(b)
                if isinstance(b, dict) and b.get("type") == "null":
                    continue
                return None
            names |= sub
        if not names and not branches:
            return None if schema.get("type") in (None, "object") else set()
        return names

    def body_schema(self, template, method):
        body = self.resolve(self.doc["paths"][template][method.lower()].get("requestBody"))
        return ((body or {}).get("content") or {}).get("application/json", {}).get("schema")

    def body_validator(self, template, method):
        """A validator of the JSON request body of the operation, or None when the spec
        defines no JSON request body for it."""
        key = (template, method)
        if key not in self._validators:
            from jsonschema import Draft202012Validator

            pointer = "#/paths/%s/%s/requestBody" % (_pointer_token(template), method.lower())
            body = self.doc["paths"][template][method.lower()].get("requestBody")
            if isinstance(body, dict) and "$ref" in body:  # components/requestBodies/X
                pointer = body["$ref"]
                body = self.doc
                for tok in pointer[2:].split("/"):
                    body = body[tok.replace("~1", "/").replace("~0", "~")]
            schema = ((body or {}).get("content") or {}).get("application/json", {}).get("schema")
            self._validators[key] = None if schema is None else Draft202012Validator(
                {"$ref": "%s%s/content/application~1json/schema" % (self.URI, pointer)},
                registry=self.registry)
        return self._validators[key]


@pytest.fixture(scope="session")
def spec():
    why = None
    if not os.path.exists(SPEC_PATH):
        why = f"OpenAPI spec not found at {SPEC_PATH} (set RUNLANE_OPENAPI_SPEC)"
    else:
        try:
            import jsonschema  # noqa: F401
            import referencing  # noqa: F401
            import yaml  # noqa: F401
        except ImportError as e:
            why = f"the spec check needs PyYAML and jsonschema: {e}"
    if why:
        # The test command requires the spec (a skipped check would hide drift); ad-hoc runs
        # without it skip.
        if REQUIRE_SPEC:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return Spec(SPEC_PATH)


def validate_requests(spec, log):
    """Checks every logged request against the spec; returns ([problems], {(method,
    template)}). A problem: a route the spec does not have, a body where the spec defines
    none, a JSON body without a JSON content type, or a body its schema rejects."""
    problems, seen = [], set()
    for e in log:
        method, path = e["method"], api_path(e["path"])
        template, op = spec.operation(method, path)
        where = f"#{e['seq']} {method} {e['path']}"
        if op is None:
            problems.append(f"{where}: no such operation in the spec")
            continue
        seen.add((method, template))
        body = e["body"]
        has_body = body is not None and body != ""
        if not has_body:
            continue
        ctype = next((v for k, v in e["headers"].items() if k.lower() == "content-type"), "")
        if not ctype.lower().startswith("application/json"):
            problems.append(f"{where}: JSON body sent with Content-Type {ctype!r}")
        v = spec.body_validator(template, method)
        if v is None:
            if body != {}:
                problems.append(f"{where}: the spec defines no request body, got "
                                f"{json.dumps(body)[:300]}")
            continue
        errors = [(list(x.absolute_path), x.message[:300]) for x in
                  sorted(v.iter_errors(body), key=lambda x: list(x.absolute_path))]
        known = spec.known_properties(spec.body_schema(template, method))
        if known is not None and isinstance(body, dict):
            # The spec leaves additionalProperties open, but OpenAI refuses unknown fields.
            errors += [([k], "not a field of the spec's schema (OpenAI: 400 unknown_parameter)")
                       for k in sorted(set(body) - known)]
        if errors:
            problems.append(f"{where}: body does not match the spec:\n" + "\n".join(
                f"    at {at}: {msg}" for at, msg in errors[:8])
                + f"\n    body: {json.dumps(body)[:1500]}")
    return problems, seen


RESPONSES_TOOLS = [{"type": "function", "name": "get_weather",
                    "description": "Current weather of a city.",
                    "parameters": {"type": "object",
                                   "properties": {"city": {"type": "string"}},
                                   "required": ["city"], "additionalProperties": False},
                    "strict": True}]
ASSISTANTS_TOOLS = [{"type": "function",
                     "function": {"name": "get_weather",
                                  "description": "Current weather of a city.",
                                  "parameters": {"type": "object",
                                                 "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}}}]

EXPECTED_OPERATIONS = {
    "responses": {
        ("POST", "/conversations"),
        ("GET", "/conversations/{conversation_id}/items"),
        ("POST", "/responses"),
        ("GET", "/responses/{response_id}"),
        ("POST", "/responses/{response_id}/cancel"),
    },
    "assistants": {
        ("POST", "/threads"),
        ("POST", "/threads/{thread_id}/runs"),
        ("GET", "/threads/{thread_id}/runs/{run_id}"),
        ("POST", "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"),
        ("GET", "/threads/{thread_id}/messages"),
    },
}


def _run_turn(lane, conv, texts, *worker_args, interrupt_with=None):
    """Queues texts as one batch, runs one worker until it replied once; with interrupt_with,
    queues that text once the provider turn runs (busy.policy=interrupt cancels it)."""
    emu = lane.emu
    ids = lane.enqueue_many([(conv, t) for t in texts]) if texts else []
    w = lane.worker(f"worker-{conv[-6:]}", "--max-batches", "1", *worker_args)
    if interrupt_with:
        wait_until(lambda: (emu.journal()["conversations"].get(conv) or {}).get("turns"), 15,
                   "the turn to start")
        time.sleep(0.2)
        ids.append(lane.enqueue(conv, interrupt_with))
    code = w.wait(60)
    assert code == 0, w.describe()
    replies = w.replies()
    assert replies, w.describe()
    return ids, replies


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_request_matches_the_openapi_spec(backend, spec, redis_url, emulators, workers):
    emu = emulators(latency_ms=100)
    if backend == "responses":
        common = ("-X", "openai.tools=" + json.dumps(RESPONSES_TOOLS))
    else:
        common = ("-X", "openai.tools=" + json.dumps(ASSISTANTS_TOOLS),
                  "-X", "openai.additional.instructions=Answer in English.")
    common += ("-X", "openai.instructions=Be brief.",
               "-X", 'openai.metadata={"app":"runlane-itest"}')
    weather = f"weather? {TOOL_MARKER}"

    # Streamed turn: input message items, a tool call, function_call_output / tool outputs.
    lane = Lane(redis_url, emu, backend, workers, *common)
    conv = lane.create("--metadata", '{"purpose":"integration"}')
    _, replies = _run_turn(lane, conv, ["hello", weather])
    assert "get_weather=sunny" in replies[0]["reply"], replies

    # Background requests and polling (openai.stream=false), joined input.
    lane = Lane(redis_url, emu, backend, workers, *common, "-X", "openai.stream=false",
                "-X", "openai.input.mode=joined")
    conv = lane.create()
    _, replies = _run_turn(lane, conv, ["again", weather])
    assert "get_weather=sunny" in replies[0]["reply"], replies

    # busy.policy=interrupt: the running turn is cancelled and started again with everything
    # (only background responses can be cancelled; runs can be either way).
    for stream in (["false"] if backend == "responses" else ["false", "true"]):
        lane = Lane(redis_url, emu, backend, workers, *common, "-X", f"openai.stream={stream}",
                    "-X", "busy.policy=interrupt")
        conv = lane.create()
        ids, replies = _run_turn(lane, conv, ["first [[slow:3000]]"],
                                 interrupt_with="second, sooner")
        assert replies[0]["message_ids"] == ids, replies
        turns = emu.journal()["conversations"][conv]["turns"]
        assert [t["status"] for t in turns] == ["cancelled", "completed"], turns

    log = emu.requests(2000)
    assert log and log[0]["seq"] == 1, "the emulator's request log overflowed"
    problems, seen = validate_requests(spec, log)
    assert_refusals_are_lock_refusals(emu, log)
    assert not [e for e in log if isinstance(e["status"], int) and e["status"] >= 500], log
    missing = EXPECTED_OPERATIONS[backend] - seen
    assert not missing, f"the flows did not exercise {sorted(missing)} (saw {sorted(seen)})"
    posts = [e["body"] for e in log if e["method"] == "POST" and isinstance(e["body"], dict)]
    if backend == "responses":
        turn_bodies = [b for b in posts if "input" in b]
        assert any(user_messages_of(b, backend) for b in turn_bodies)
        assert any(tool_outputs_of(b, backend) for b in turn_bodies)
        assert any(b.get("stream") for b in turn_bodies)
        assert any(b.get("background") for b in turn_bodies)
    else:
        assert any(b.get("additional_messages") for b in posts)
        assert any(b.get("tool_outputs") and b.get("stream") for b in posts)
        assert any(b.get("tool_outputs") and not b.get("stream") for b in posts)
    assert not problems, (f"{len(problems)} of {len(log)} requests do not match the spec "
                          f"({SPEC_PATH}); the first ones:\n" + "\n".join(problems[:10]))


# ---------------------------------------------------------------- 5. the API key never shows


WRONG_KEY = "sk-integration-WRONGKEY-0123456789"


def _assert_no_key(what, text):
    for key in (SECRET, WRONG_KEY):
        for needle in (key, key[3:]):
            assert needle not in text, f"{what} contains the API key {needle!r}:\n{text}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_api_key_never_appears(backend, redis_url, emulators, workers):
    emu = emulators(latency_ms=50, api_key=SECRET)
    lane = Lane(redis_url, emu, backend, workers, "-X", f"openai.api.key={SECRET}")
    p = lane.run("conversation" if backend == "responses" else "thread", "create", check=0)
    _assert_no_key("create's output", p.stdout + p.stderr)
    conv = p.stdout.strip()
    ids = lane.enqueue_many([(conv, "hello"), (conv, f"weather? {TOOL_MARKER}")])
    w = lane.worker("worker", "--max-batches", "1", "--print-deltas")
    assert w.wait(60) == 0, w.describe()
    replies = w.replies()
    assert len(replies) == 1 and replies[0]["message_ids"] == ids, w.describe()
    assert "get_weather=sunny" in replies[0]["reply"], replies
    _assert_no_key("the worker's stdout", w.stdout)
    _assert_no_key("the worker's stderr", w.stderr)
    _assert_no_key("the reply JSON", json.dumps(replies))
    # It was really sent (the emulator refuses requests without it).
    assert all(e["status"] == 200 for e in emu.requests(2000)), emu.requests(2000)

    # A wrong key: the failure names the problem, never the key.
    bad = Lane(redis_url, emu, backend, workers, "-X", f"openai.api.key={WRONG_KEY}")
    p = bad.run("conversation" if backend == "responses" else "thread", "create")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "401" in p.stderr or "invalid_api_key" in p.stderr or "API key" in p.stderr, p.stderr
    _assert_no_key("create's failure message", p.stdout + p.stderr)

    bad.enqueue(conv, "are you there?")
    w = bad.worker("worker-wrong-key")
    wait_until(lambda: re.search(r"attempt \d+: (retry|dead):", w.stderr), 30,
               "the wrong key's failed attempt")
    w.stop()
    assert not w.replies(), w.describe()
    failures = [line for line in w.err if re.search(r"attempt \d+: (retry|dead):", line)]
    assert any("401" in f or "invalid_api_key" in f or "API key" in f for f in failures), \
        w.describe()
    _assert_no_key("the wrong-key worker's stdout", w.stdout)
    _assert_no_key("the wrong-key worker's stderr", w.stderr)
    for args in (["status", conv, "--json"], ["dead", "list", "--json"], ["config", "--values"]):
        p = bad.run(*args, check=0)
        _assert_no_key(f"`runlane {' '.join(args)}`", p.stdout + p.stderr)
    for ln in (lane, bad):
        dump = redis_dump(redis_url, ln.prefix)
        if dump is None:
            break  # no redis-cli here
        assert dump, f"nothing under the key prefix {ln.prefix}?"
        _assert_no_key(f"the Redis keys of {ln.prefix}", dump)


def redis_dump(url, prefix):
    """Every key under the prefix with its value, as text (through redis-cli), or None."""
    cli = shutil.which("redis-cli")
    m = re.match(r"redis://(?:[^@/]*@)?([^:/]+):(\d+)(?:/(\d+))?", url)
    if not cli or not m:
        return None
    base = [cli, "-h", m.group(1), "-p", m.group(2), "-n", m.group(3) or "0", "--raw"]

    def rc(*args):
        return subprocess.run(base + list(args), capture_output=True, text=True, timeout=10,
                              errors="replace").stdout

    readers = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", "0", "-1"),
               "set": ("SMEMBERS",), "zset": ("ZRANGE", "0", "-1", "WITHSCORES"),
               "stream": ("XRANGE", "-", "+")}
    out = []
    for key in rc("--scan", "--pattern", prefix + "*").split():
        kind = rc("TYPE", key).strip()
        out.append(f"{key} ({kind}): " + rc(readers[kind][0], key, *readers[kind][1:])
                   if kind in readers else f"{key} ({kind})")
    return "\n".join(out)
