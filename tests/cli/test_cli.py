"""Tests of the `runlane` command-line tool.

Environment:
  RUNLANE_BIN            path of the built `runlane` program (required; a
                         build tree's core/cli/runlane is tried when unset)
  RUNLANE_TEST_REDIS     redis://127.0.0.1:PORT/0 for the store tests
  RUNLANE_REQUIRE_REDIS  1: a missing RUNLANE_TEST_REDIS fails instead of
                         skipping the store tests

Every store test uses its own key.prefix, so tests never see each other's
queues and the database needs no flushing. Run: pytest -q tests/cli
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _find_bin():
    b = os.environ.get("RUNLANE_BIN")
    if b:
        return b
    for cand in (ROOT / "build" / "core" / "cli" / "runlane",):
        if cand.exists():
            return str(cand)
    return None


BIN = _find_bin()
REDIS = os.environ.get("RUNLANE_TEST_REDIS")
REQUIRE_REDIS = os.environ.get("RUNLANE_REQUIRE_REDIS") == "1"

if not BIN or not os.access(BIN, os.X_OK):
    pytest.fail(f"RUNLANE_BIN is not set to the runlane program (got {BIN!r})", pytrace=False)


def _base_env():
    env = dict(os.environ)
    env.pop("RUNLANE_STORE", None)
    return env


def run(*args, input=None, env=None, timeout=30, check=None):
    """Runs runlane with args; returns CompletedProcess (text)."""
    p = subprocess.run(
        [BIN, *args],
        input=input,
        capture_output=True,
        text=True,
        env=env or _base_env(),
        timeout=timeout,
    )
    if check is not None:
        assert p.returncode == check, (
            f"runlane {' '.join(args)}: expected exit {check}, got {p.returncode}\n"
            f"stdout: {p.stdout}\nstderr: {p.stderr}"
        )
    return p


# ---------------------------------------------------------------- no store


COMMAND_HELPS = [
    [],
    ["enqueue"],
    ["touch"],
    ["status"],
    ["dead"],
    ["dead", "list"],
    ["dead", "retry"],
    ["dead", "purge"],
    ["worker"],
    ["config"],
    ["demo"],
    ["conversation"],
    ["thread"],
    ["migrate"],
]


@pytest.mark.parametrize("cmd", COMMAND_HELPS, ids=lambda c: " ".join(c) or "top")
def test_help_of_every_command_exits_0(cmd):
    p = run(*cmd, "--help", check=0)
    assert p.stdout.startswith("Usage: runlane"), f"help of {cmd} should start with Usage, got {p.stdout[:80]!r}"
    assert "Exit codes:" in p.stdout, f"help of {cmd} should document the exit codes"


def test_help_command_and_version():
    assert "runlane worker" in run("help", "worker", check=0).stdout
    assert "dead list" in run("help", "dead", "list", check=0).stdout
    p = run("--version", check=0)
    assert p.stdout.startswith("runlane "), p.stdout
    assert "features:" in p.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        ([], "no command given"),
        (["frobnicate"], "unknown command"),
        (["enqueue"], "missing CONVERSATION"),
        (["enqueue", "c1"], "missing MESSAGE"),
        (["enqueue", "c1", "m", "extra"], "unexpected argument"),
        (["enqueue", "c1", "m", "--metadata", "[1]"], "--metadata"),
        (["enqueue", "--file", "x.jsonl", "c1"], "--file"),
        (["status", "--bogus"], "unknown option --bogus"),
        (["status", "--watch=abc"], "--watch"),
        (["status", "a", "b"], "unexpected argument"),
        (["touch"], "missing CONVERSATION"),
        (["dead"], "missing subcommand"),
        (["dead", "bury"], "unknown subcommand"),
        (["dead", "retry"], "--all"),
        (["dead", "purge", "x", "--all"], "not both"),
        (["dead", "list", "--limit", "0"], "--limit"),
        (["dead", "list", "--offset"], "needs a value"),
        (["worker"], "--exec"),
        (["worker", "--exec", "true", "--concurrency", "0"], "--concurrency"),
        (["worker", "--exec", "true", "--backend", "nope"], "--backend"),
        (["config", "--markdown", "--json"], "choose one"),
        (["--store"], "needs a value"),
        (["--nope", "status"], "unknown option"),
    ],
)
def test_bad_usage_exits_2_with_a_message(args, needle):
    p = run(*args)
    assert p.returncode == 2, f"runlane {args}: expected exit 2, got {p.returncode}: {p.stderr}"
    assert p.stderr.startswith("runlane: "), f"errors start with 'runlane: ', got {p.stderr!r}"
    assert needle in p.stderr, f"runlane {args}: expected {needle!r} in stderr, got {p.stderr!r}"


def test_http_backend_options_are_checked():
    p = run("worker", "--backend", "responses", "--exec", "true")
    assert p.returncode == 2 and "--tool-exec" in p.stderr, p.stderr
    p = run("worker", "--backend", "custom", "--exec", "true", "--tool-exec", "x")
    assert p.returncode == 2 and "--tool-exec is for" in p.stderr, p.stderr
    p = run("worker", "--backend", "bogus", "--exec", "true")
    assert p.returncode == 2, p.stderr


@pytest.mark.parametrize(
    "kv,key",
    [
        ("no.such.key=1", "no.such.key"),
        ("batch.window.ms=abc", "batch.window.ms"),
        ("batch.window.ms=-5", "batch.window.ms"),
        ("backend=telepathy", "backend"),
        ("openai.stream=maybe", "openai.stream"),
    ],
)
def test_bad_config_key_or_value_exits_2_naming_the_key(kv, key):
    for cmd in (["config", "--values"], ["status"]):
        p = run("-X", kv, *cmd)
        assert p.returncode == 2, f"-X {kv} {cmd}: expected exit 2, got {p.returncode}: {p.stderr}"
        assert f"-X {key}:" in p.stderr, f"the message should name the key {key}: {p.stderr!r}"


def test_messages_escape_control_bytes_from_input():
    """No ESC, BEL, CR... from arguments or input reaches the terminal raw:
    the CLI's own messages and the library's."""
    cases = [
        ["enqueue", "c1", "m", "extra\x1b[31m\x07"],
        ["-X", "batch.window.ms=1\x1b[2J\r", "status"],
        ["enqueue", "c1", "m", "--metadata", '{"\\u001b[2J":1}'],
        ["-X", "no.such\x1b]0;title\x07=1", "status"],
    ]
    for args in cases:
        p = run(*args)
        assert p.returncode == 2, f"runlane {args!r}: expected exit 2, got {p.returncode}: {p.stderr!r}"
        assert not any(ch in p.stderr for ch in "\x1b\x07\r\x7f"), f"raw control byte in {p.stderr!r}"
        assert "\\x1b" in p.stderr, f"the byte should be shown escaped: {p.stderr!r}"


@pytest.mark.parametrize(
    "kv",
    [
        'openai.headers={"X-A":"v\\r\\nX-Injected: 1"}',
        'openai.headers={"X A":"v"}',
        'openai.headers={"X-A":"v\\u0000"}',
        "openai.organization=org\x7f",
        "openai.api.key=sk-abc\x7f",
    ],
)
def test_header_values_are_refused_where_the_key_is_set(kv):
    """A value that cannot be sent as an HTTP header is refused by every
    command, not only when a worker starts."""
    for cmd in (["config", "--values"], ["status"], ["enqueue", "c1", "m"]):
        p = run("-X", kv, *cmd)
        key = kv.split("=", 1)[0]
        assert p.returncode == 2, f"-X {kv!r} {cmd}: expected exit 2, got {p.returncode}: {p.stderr}"
        assert f"-X {key}:" in p.stderr, p.stderr
        assert "Injected" not in p.stderr and "sk-abc" not in p.stderr, f"a secret value is echoed: {p.stderr!r}"


def test_x_without_equals_and_bad_store_url():
    p = run("-X", "batch.window.ms", "status")
    assert p.returncode == 2 and "key=value" in p.stderr, p.stderr
    p = run("--store", "ftp://nowhere", "status")
    assert p.returncode == 2 and "--store" in p.stderr, p.stderr


def test_x_values_apply_and_secrets_are_masked():
    p = run(
        "-X", "batch.window.ms=123", "-X", "openai.api.key=sk-verysecret",
        "--store", "redis://user:hunter2pass@127.0.0.1:1/0", "config", "--values", check=0,
    )
    assert "batch.window.ms" in p.stdout and "= 123" in p.stdout, p.stdout
    assert "sk-verysecret" not in p.stdout and "hunter2pass" not in p.stdout, p.stdout


def test_unreachable_store_is_a_runtime_error_without_the_password():
    p = run("--store", "redis://user:hunter2pass@127.0.0.1:1/0", "-X", "redis.connect.timeout.ms=500", "status")
    assert p.returncode == 1, f"expected exit 1, got {p.returncode}: {p.stderr}"
    assert p.stderr.startswith("runlane: status: "), p.stderr
    assert "hunter2pass" not in p.stderr, p.stderr


def test_config_list_and_markdown_cover_every_property():
    props = json.loads(run("config", "--json", check=0).stdout)
    names = [p["name"] for p in props]
    assert "batch.window.ms" in names and "store" in names
    listing = run("config", check=0).stdout
    md = run("config", "--markdown", check=0).stdout.splitlines()
    assert md[0] == "| Key | Type | Default | Range / values | Description |", md[0]
    assert md[1] == "|---|---|---|---|---|"
    rows = md[2:]
    assert len(rows) == len(props), f"one row per property: {len(rows)} rows, {len(props)} properties"
    for p, row in zip(props, rows):
        assert row.startswith(f"| `{p['name']}` |"), row
        assert row.count("|") - row.count("\\|") == 6, f"5 cells: {row}"
        assert f"{p['name']} = " in listing, f"{p['name']} missing from `runlane config`"
    window = next(r for r in rows if r.startswith("| `batch.window.ms`"))
    assert "`10000` (10 s)" in window and "0 .. 86400000" in window, window
    backend = next(r for r in rows if r.startswith("| `backend`"))
    assert "`custom`, `responses`, `assistants`" in backend, backend


def test_status_json_shape_on_the_memory_store():
    p = run("status", "--json", check=0)
    s = json.loads(p.stdout)
    for k in ("pending", "ready", "inflight", "dead", "conversations"):
        assert isinstance(s.get(k), int), f"status totals should have integer {k}: {s}"
    c = json.loads(run("status", "conv-x", "--json", check=0).stdout)
    assert c["pending"] == 0 and c["inflight"] == 0, c


# ---------------------------------------------------------------- redis


@pytest.fixture
def store():
    """Global options for a fresh queue on the test Redis."""
    if not REDIS:
        if REQUIRE_REDIS:
            pytest.fail("RUNLANE_TEST_REDIS is not set and RUNLANE_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip("RUNLANE_TEST_REDIS is not set")
    prefix = "clitest-" + uuid.uuid4().hex[:10]
    return [
        "--store", REDIS,
        "-X", f"key.prefix={prefix}",
        "-X", "batch.window.ms=100",
        "-X", "worker.poll.ms=50",
        "-X", "backoff.base.ms=50",
        "-X", "backoff.max.ms=200",
    ]


RECORDER = r"""#!/bin/sh
# Records each batch: stdin to $OUT/<batch>-<attempt>.json, env to .env
f="$OUT/$RUNLANE_BATCH_ID-$RUNLANE_ATTEMPT"
cat > "$f.tmp"
printf '%s\n%s\n%s\n' "$RUNLANE_CONVERSATION_ID" "$RUNLANE_BATCH_ID" "$RUNLANE_ATTEMPT" > "$f.env"
mv "$f.tmp" "$f.json"
"""


@pytest.fixture
def recorder(tmp_path):
    out = tmp_path / "batches"
    out.mkdir()
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    env = _base_env()
    env["OUT"] = str(out)
    return out, str(script), env


def batches_in(out):
    res = []
    for f in sorted(out.glob("*.json")):
        b = json.loads(f.read_text())
        conv, bid, attempt = (f.with_suffix(".env")).read_text().split("\n")[:3]
        assert conv == b["conversation_id"], f"RUNLANE_CONVERSATION_ID {conv!r} != {b['conversation_id']!r}"
        assert bid == b["batch_id"], f"RUNLANE_BATCH_ID {bid!r} != {b['batch_id']!r}"
        assert int(attempt) == b["attempt"], f"RUNLANE_ATTEMPT {attempt} != {b['attempt']}"
        res.append(b)
    return res


def status_json(store, conv=None):
    args = [*store, "status"] + ([conv] if conv else []) + ["--json"]
    return json.loads(run(*args, check=0).stdout)


def wait_until(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def queue_idle(store):
    s = status_json(store)
    return s["pending"] == 0 and s["inflight"] == 0


def start_worker(store, exec_cmd, *extra, env=None):
    return subprocess.Popen(
        [BIN, *store, "worker", "--exec", exec_cmd, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _base_env(),
    )


def finish(proc, timeout=20):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker did not exit within {timeout}s; stderr:\n{err}")
    return proc.returncode, out, err


def test_enqueue_prints_ids_and_status_counts_them(store):
    ids = []
    for i in range(3):
        p = run(*store, "enqueue", "conv-a", f"hello {i}", check=0)
        lines = p.stdout.splitlines()
        assert len(lines) == 1 and lines[0], f"enqueue prints one id, got {p.stdout!r}"
        ids.append(lines[0])
    assert len(set(ids)) == 3, f"ids are distinct: {ids}"
    s = status_json(store)
    assert s["pending"] == 3 and s["conversations"] >= 1, s
    c = status_json(store, "conv-a")
    for k in ("pending", "inflight", "attempts", "batch_id", "owner", "lease_expires_ms", "due_ms", "last_error"):
        assert k in c, f"conversation status lacks {k}: {c}"
    assert c["pending"] == 3 and c["inflight"] == 0, c
    readable = run(*store, "status", "conv-a", check=0).stdout
    assert "conversation conv-a" in readable and "pending" in readable, readable
    readable = run(*store, "status", check=0).stdout
    assert "pending" in readable and "3" in readable, readable


def test_enqueue_options_stdin_and_touch(store, recorder):
    out, script, env = recorder
    run(*store, "enqueue", "c-opt", "first", "--instructions", "be brief", "--metadata", '{"user":"42"}', check=0)
    run(*store, "enqueue", "c-opt", "-", input="from stdin\n", check=0)
    run(*store, "touch", "c-opt", check=0)
    p = run(*store, "enqueue", "", "x")
    assert p.returncode == 2, f"an empty conversation id is rejected with 2: {p.returncode} {p.stderr}"
    w = start_worker(store, script, "--max-batches", "1", env=env)
    rc, _, err = finish(w)
    assert rc == 0, err
    (b,) = batches_in(out)
    msgs = b["messages"]
    assert [m["content"] for m in msgs] == ["first", "from stdin"], msgs
    assert msgs[0]["instructions"] == "be brief" and msgs[0]["metadata"] == {"user": "42"}, msgs[0]


def test_idempotency_key_returns_the_same_id(store):
    a = run(*store, "enqueue", "conv-i", "once", "--idempotency-key", "k1", check=0)
    b = run(*store, "enqueue", "conv-i", "once again", "--idempotency-key", "k1", check=0)
    assert a.stdout == b.stdout and a.stdout.strip(), f"same key, same id: {a.stdout!r} vs {b.stdout!r}"
    assert "(duplicate)" not in a.stderr
    assert "(duplicate)" in b.stderr, f"the duplicate is noted on stderr: {b.stderr!r}"
    assert status_json(store, "conv-i")["pending"] == 1


def test_enqueue_file_queues_every_line_in_one_call(store, tmp_path):
    f = tmp_path / "m.jsonl"
    lines = [{"conversation_id": f"f{i % 2}", "content": f"line {i}"} for i in range(5)]
    lines.append({"conversation_id": "f0", "content": "dup", "idempotency_key": "d"})
    lines.append({"conversation_id": "f0", "content": "dup", "idempotency_key": "d"})
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    p = run(*store, "enqueue", "--file", str(f), check=0)
    ids = p.stdout.split()
    assert len(ids) == 7 and ids[5] == ids[6], ids
    assert "line 7: (duplicate)" in p.stderr, p.stderr
    assert status_json(store)["pending"] == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversation_id":"x","content":"ok"}\nnot json\n')
    p = run(*store, "enqueue", "--file", str(bad))
    assert p.returncode == 2 and "line 2" in p.stderr, p.stderr
    assert status_json(store)["pending"] == 6, "a bad file stores nothing"


def test_enqueue_refuses_text_that_would_be_stored_corrupted(store, tmp_path):
    """Invalid UTF-8 and U+0000 (which a C string would cut) in any text
    field: exit 2 naming the field, nothing stored."""
    cases = [
        (["c-bad", "hi", "--metadata", b'{"k":"v\xff"}'], "options.metadata.k"),
        (["c-bad", "hi", "--metadata", b'{"k\xc3":"v"}'], "options.metadata"),
        (["c-bad", "hi", "--metadata", '{"k":"keep\\u0000lost"}'], "options.metadata.k"),
        (["c-bad", "hi", "--instructions", b"be \xed\xa0\x80 brief"], "options.instructions"),
        (["c-bad", "hi", "--idempotency-key", b"m-\xff"], "options.idempotency_key"),
    ]
    for args, field in cases:
        p = subprocess.run([BIN, *store, "enqueue", *args], capture_output=True, env=_base_env(), timeout=30)
        err = p.stderr.decode("utf-8")  # never raw bytes: escaped
        assert p.returncode == 2, f"enqueue {args}: expected exit 2, got {p.returncode}: {err}"
        assert field in err, f"enqueue {args}: the message should name {field}: {err!r}"
    assert status_json(store)["pending"] == 0, "a refused message stores nothing"
    lines = {
        "victim": b'{"conversation_id":"victim\\u0000x","content":"x"}',
        "content": b'{"conversation_id":"c-f","content":"keep\\u0000lost"}',
        "idempotency_key": b'{"conversation_id":"c-f","content":"x","idempotency_key":"a\\u0000b"}',
        "metadata.k": b'{"conversation_id":"c-f","content":"x","metadata":{"k":"\xe2\x82"}}',
    }
    for field, line in lines.items():
        f = tmp_path / "in.jsonl"
        f.write_bytes(b'{"conversation_id":"c-f","content":"fine"}\n' + line + b"\n")
        p = subprocess.run([BIN, *store, "enqueue", "--file", str(f)], capture_output=True, env=_base_env(), timeout=30)
        err = p.stderr.decode("utf-8")
        assert p.returncode == 2, f"--file with {line!r}: expected exit 2, got {p.returncode}: {err}"
        assert "line 2" in err and "nothing was queued" in err, err
        if field != "victim":
            assert field in err, f"the message should name {field}: {err!r}"
    assert status_json(store)["pending"] == 0, "a refused file stores nothing"
    assert status_json(store, "victim")["pending"] == 0, '"victim\\u0000x" must not land in "victim"'


def test_worker_delivers_every_message_once_in_order(store, recorder, tmp_path):
    out, script, env = recorder
    convs = [f"conv-{k}" for k in range(4)]
    expected = {c: [] for c in convs}
    wave1 = tmp_path / "wave1.jsonl"
    rows = []
    for i in range(3):
        for c in convs:
            rows.append({"conversation_id": c, "content": f"{c} w1 m{i}"})
            expected[c].append(f"{c} w1 m{i}")
    wave1.write_text("\n".join(json.dumps(r) for r in rows))
    run(*store, "enqueue", "--file", str(wave1), check=0)
    w = start_worker(store, script, "--concurrency", "3", env=env)
    try:
        wait_until(lambda: len(list(out.glob("*.json"))) >= len(convs), what="first wave delivered")
        for i in range(2):
            for c in convs:
                run(*store, "enqueue", c, f"{c} w2 m{i}", check=0)
                expected[c].append(f"{c} w2 m{i}")
        wait_until(lambda: queue_idle(store), what="queue drained")
    finally:
        w.send_signal(signal.SIGTERM)
    rc, stdout, err = finish(w)
    assert rc == 0, f"worker exit {rc}: {err}"
    got = {c: [] for c in convs}
    seen_ids = set()
    batches = batches_in(out)
    for b in sorted(batches, key=lambda b: b["messages"][0]["ts_ms"]):
        assert b["attempt"] == 1, b
        for m in b["messages"]:
            assert m["id"] not in seen_ids, f"message {m['id']} delivered twice"
            seen_ids.add(m["id"])
            got[b["conversation_id"]].append(m["content"])
    assert got == expected, f"delivered {got}, expected {expected}"
    assert len(batches) >= len(convs) + 1, f"the second wave made more batches: {len(batches)}"
    assert err.count("result=ok") == len(batches), err
    assert "started" in err and "stopped" in err, err


def test_worker_batches_messages_within_the_window(store, recorder):
    out, script, env = recorder
    store = [*store, "-X", "batch.window.ms=1500"]
    w = start_worker(store, script, "--max-batches", "1", env=env)
    try:
        for i in range(3):
            run(*store, "enqueue", "conv-b", f"part {i}", check=0)
        rc, _, err = finish(w)
    finally:
        if w.poll() is None:
            w.kill()
    assert rc == 0, err
    (b,) = batches_in(out)
    assert [m["content"] for m in b["messages"]] == ["part 0", "part 1", "part 2"], b


def test_failing_command_retries_then_dead_letters_then_retry_and_purge(store, recorder, tmp_path):
    out, script, env = recorder
    store = [*store, "-X", "max.attempts=2"]
    fail = tmp_path / "fail.sh"
    fail.write_text('#!/bin/sh\ncat >/dev/null\necho "boom on attempt $RUNLANE_ATTEMPT" >&2\nexit 3\n')
    fail.chmod(0o755)
    run(*store, "enqueue", "conv-f", "doomed 1", check=0)
    run(*store, "enqueue", "conv-f", "doomed 2", check=0)
    w = start_worker(store, str(fail), "--max-batches", "2")
    rc, _, err = finish(w)
    assert rc == 4, f"a worker with failed attempts exits 4, got {rc}: {err}"
    assert "result=retry" in err and "result=dead" in err, err
    assert "exit status 3" in err and "boom on attempt 2" in err, err

    dead = json.loads(run(*store, "dead", "list", "--json", check=0).stdout)
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["conversation_id"] == "conv-f" and d["attempts"] == 2, d
    assert "boom on attempt 2" in d["error"] and "exit status 3" in d["error"], d
    assert [m["content"] for m in d["messages"]] == ["doomed 1", "doomed 2"], d
    listing = run(*store, "dead", "list", check=0).stdout
    assert "conv-f" in listing and d["id"] in listing, listing
    assert status_json(store)["dead"] == 1

    assert run(*store, "dead", "retry", "no-such-id").returncode == 3
    p = run(*store, "dead", "retry", d["id"], check=0)
    assert p.stdout.strip() == "retried 1", p.stdout
    assert json.loads(run(*store, "dead", "list", "--json", check=0).stdout) == []
    assert status_json(store, "conv-f")["pending"] + status_json(store, "conv-f")["inflight"] >= 1

    w = start_worker(store, script, "--max-batches", "1", env=env)
    rc, _, err = finish(w)
    assert rc == 0, err
    (b,) = batches_in(out)
    assert [m["content"] for m in b["messages"]] == ["doomed 1", "doomed 2"], b

    # A second dead letter, purged by id; then nothing is left to purge.
    run(*store, "enqueue", "conv-g", "doomed again", check=0)
    w = start_worker(store, str(fail), "--max-batches", "2")
    assert finish(w)[0] == 4
    dead = json.loads(run(*store, "dead", "list", "--json", check=0).stdout)
    assert len(dead) == 1 and dead[0]["conversation_id"] == "conv-g", dead
    p = run(*store, "dead", "purge", dead[0]["id"], check=0)
    assert p.stdout.strip() == "purged 1", p.stdout
    assert run(*store, "dead", "purge", dead[0]["id"]).returncode == 3
    assert run(*store, "dead", "purge", "--all", check=0).stdout.strip() == "purged 0"
    assert status_json(store)["dead"] == 0


def test_command_timeout_fails_the_attempt(store):
    store = [*store, "-X", "max.attempts=1"]
    run(*store, "enqueue", "conv-t", "slow", check=0)
    w = start_worker(store, "sleep 20", "--max-batches", "1", "--timeout", "0.3")
    rc, _, err = finish(w)
    assert rc == 4, err
    dead = json.loads(run(*store, "dead", "list", "--json", check=0).stdout)
    assert len(dead) == 1 and "timed out" in dead[0]["error"], dead


def test_concurrency_caps_running_commands(store, tmp_path):
    log = tmp_path / "spans"
    log.mkdir()
    cmd = f'cat >/dev/null; s=$(date +%s.%N); sleep 0.4; echo "$s $(date +%s.%N)" > {log}/$RUNLANE_BATCH_ID'
    rows = [{"conversation_id": f"cc{i}", "content": "x"} for i in range(6)]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    run(*store, "enqueue", "--file", str(f), check=0)
    w = start_worker(store, cmd, "--concurrency", "3", "--max-batches", "6")
    rc, _, err = finish(w)
    assert rc == 0, err
    spans = [tuple(map(float, p.read_text().split())) for p in log.iterdir()]
    assert len(spans) == 6, spans
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 2 <= peak <= 3, f"at most 3 commands at once (and more than 1), peak {peak}"


def test_sigterm_drains_the_running_batch_and_exits_0(store, tmp_path):
    done = tmp_path / "done"
    run(*store, "enqueue", "conv-s", "slow", check=0)
    w = start_worker(store, f"cat >/dev/null; sleep 1; touch {done}")
    try:
        wait_until(lambda: status_json(store)["inflight"] == 1, what="batch running")
        time.sleep(0.2)
        w.send_signal(signal.SIGTERM)
        rc, _, err = finish(w)
    finally:
        if w.poll() is None:
            w.kill()
    assert rc == 0, f"graceful stop exits 0, got {rc}: {err}"
    assert done.exists(), "the running command was allowed to finish"
    assert "stopping" in err and "result=ok" in err, err
    assert queue_idle(store), "the batch was acked"


def test_sigterm_of_an_idle_worker_exits_quickly(store):
    w = start_worker(store, "cat >/dev/null")
    time.sleep(0.3)
    t0 = time.time()
    w.send_signal(signal.SIGTERM)
    rc, _, err = finish(w, timeout=10)
    assert rc == 0, err
    assert time.time() - t0 < 3, "an idle worker stops at once"


def test_second_signal_ends_running_commands(store):
    run(*store, "enqueue", "conv-k", "stuck", check=0)
    w = start_worker(store, "cat >/dev/null; sleep 30")
    try:
        wait_until(lambda: status_json(store)["inflight"] == 1, what="batch running")
        time.sleep(0.2)
        w.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert w.poll() is None, "the first signal waits for the command"
        w.send_signal(signal.SIGTERM)
        rc, _, err = finish(w, timeout=10)
    finally:
        if w.poll() is None:
            w.kill()
    assert rc == 4, f"an interrupted batch is a failure (4), got {rc}: {err}"
    assert "interrupted" in err, err
    c = status_json(store, "conv-k")
    assert c["inflight"] == 1 and c["owner"] is None, f"the batch waits for a retry: {c}"


def test_idle_exit(store):
    t0 = time.time()
    w = start_worker(store, "cat >/dev/null", "--idle-exit", "0.5")
    rc, _, err = finish(w, timeout=10)
    assert rc == 0, err
    assert 0.4 < time.time() - t0 < 5, "exits after about 0.5 s without batches"
    assert "idle-exit" in err, err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# ---------------------------------------------------------------- demo and HTTP backends

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))


@pytest.fixture
def emulator():
    from emulator import Emulator  # tests/emulator/emulator.py

    emu = Emulator(latency_ms=50)
    emu.start()
    yield emu
    emu.stop()


def test_demo_custom_backend_answers_every_message_once_in_order():
    p = run("demo", "-q", "--window-ms", "100", "--turn-ms", "100", check=0, timeout=60)
    assert "lost 0, duplicated 0, out of order 0" in p.stdout, p.stdout
    assert "demo OK" in p.stdout


def test_demo_responses_backend_against_the_emulator(emulator):
    p = run("-X", f"openai.base.url={emulator.base_url}", "demo", "--backend", "responses",
            "--emulator", "-n", "3", "--window-ms", "100", check=0, timeout=60)
    assert "lost 0, duplicated 0, out of order 0" in p.stdout, p.stdout
    assert "tool: get_order_status" in p.stdout, p.stdout
    journal = emulator.journal()
    convs = journal["conversations"]
    assert len(convs) == 3
    for c in convs.values():
        # Two bursts per user, each one turn (plus the tool round), nothing twice.
        assert c["messages"][:3] == ["hi!", "quick question", c["messages"][2]], c
        assert c["duplicates"] == 0 and c["rejected"] == 0, c


def test_conversation_create_and_http_worker_with_tools(store, emulator, tmp_path):
    base = ["-X", f"openai.base.url={emulator.base_url}", "-X", "openai.model=gpt-4o-mini"]
    conv = run(*store, *base, "conversation", "create", check=0).stdout.strip()
    assert conv.startswith("conv_"), conv
    thread = run(*store, *base, "thread", "create", check=0).stdout.strip()
    assert thread.startswith("thread_"), thread
    ids = [run(*store, *base, "enqueue", conv, text, check=0).stdout.strip()
           for text in ("hello", 'weather? [[tool:get_weather {"city":"Paris"}]]')]
    tool = tmp_path / "tool.sh"
    tool.write_text('#!/bin/sh\ncat > "$OUT/$RUNLANE_TOOL_CALL_ID.json"\necho "sunny ($RUNLANE_TOOL_NAME)"\n')
    tool.chmod(0o755)
    env = _base_env()
    env["OUT"] = str(tmp_path)
    p = run(*store, *base, "worker", "--backend", "responses", "--tool-exec", str(tool),
            "--max-batches", "1", env=env, check=0, timeout=60)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout
    reply = lines[0]
    assert reply["conversation_id"] == conv
    assert reply["message_ids"] == ids, reply
    assert "get_weather=sunny (get_weather)" in reply["reply"], reply
    calls = [json.loads(f.read_text()) for f in tmp_path.glob("call_*.json")]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[0]["conversation_id"] == conv
    # One turn on the provider with both messages, in order.
    j = emulator.journal()["conversations"][conv]
    assert j["messages"] == ["hello", 'weather? [[tool:get_weather {"city":"Paris"}]]'], j


def test_http_worker_max_batches_prints_exactly_n_replies(store, emulator):
    # A turn that completed after the limit was reached is acked with its
    # reply kept unconfirmed: the next worker gets it by redelivery.
    base = ["-X", f"openai.base.url={emulator.base_url}", "-X", "openai.model=gpt-4o-mini",
            "-X", "reply.redeliver.ms=1000"]
    convs = [run(*store, *base, "conversation", "create", check=0).stdout.strip() for _ in range(3)]
    for c in convs:
        run(*store, *base, "enqueue", c, f"hello from {c}", check=0)
    seen = []
    for limit in (1, 2):
        p = run(*store, *base, "worker", "--backend", "responses", "--max-batches", str(limit),
                check=0, timeout=60)
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        assert len(lines) == limit, p.stdout + p.stderr
        seen += [x["conversation_id"] for x in lines]
    # The first worker gave back what it did not finish; nothing ran twice.
    assert sorted(seen) == sorted(convs), seen
    for c in convs:
        assert emulator.journal()["conversations"][c]["messages"] == [f"hello from {c}"]


# ---------------------------------------------------------------- HTTP worker: stop and exit status

TIME_SCALE = float(os.environ.get("RUNLANE_TEST_TIME_SCALE", "1") or "1")


def _http_base(emulator):
    return ["-X", f"openai.base.url={emulator.base_url}", "-X", "openai.model=gpt-4o-mini"]


def _start_http_worker(store, emulator, *extra):
    return subprocess.Popen(
        [BIN, *store, *_http_base(emulator), "worker", "--backend", "responses", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_base_env())


def _slow_turn_in_flight(store, emulator, ms):
    """A conversation whose next turn takes `ms` at the emulator; returns its id."""
    conv = run(*store, *_http_base(emulator), "conversation", "create", check=0).stdout.strip()
    run(*store, "enqueue", conv, f"take your time [[slow:{ms}]]", check=0)
    return conv


def _wait_turn_started(store, emulator, conv, w):
    def started():
        assert w.poll() is None, f"the worker exited early: {w.communicate()[1]}"
        j = emulator.journal()["conversations"].get(conv)
        return j and j["messages"]
    wait_until(started, timeout=15 * TIME_SCALE, what="the turn at the emulator")


def test_http_worker_drain_timeout_exits_4(store, emulator):
    conv = _slow_turn_in_flight(store, emulator, 60000)
    w = _start_http_worker(store, emulator, "--drain-timeout", "1")
    try:
        _wait_turn_started(store, emulator, conv, w)
        t0 = time.time()
        w.send_signal(signal.SIGTERM)
        rc, out, err = finish(w, timeout=20 * TIME_SCALE)
    finally:
        if w.poll() is None:
            w.kill()
    assert rc == 4, f"a drain that timed out exits 4 (README), got {rc}: {err}"
    assert time.time() - t0 < 1 + 5 * TIME_SCALE, "it stops at the drain timeout"
    c = status_json(store, conv)
    assert c["inflight"] == 1 and c["owner"] is None, f"the turn was released: {c}"


def test_http_worker_second_signal_ends_the_drain(store, emulator):
    conv = _slow_turn_in_flight(store, emulator, 60000)
    w = _start_http_worker(store, emulator, "--drain-timeout", "120")
    try:
        _wait_turn_started(store, emulator, conv, w)
        w.send_signal(signal.SIGTERM)
        # The first signal drains: still running a while later.
        deadline = time.time() + 0.5 * TIME_SCALE
        while time.time() < deadline:
            assert w.poll() is None, f"the first signal drains, it does not end the turn: {w.communicate()[1]}"
            time.sleep(0.05)
        t0 = time.time()
        w.send_signal(signal.SIGTERM)
        rc, out, err = finish(w, timeout=20 * TIME_SCALE)
    finally:
        if w.poll() is None:
            w.kill()
    assert time.time() - t0 < 5 * TIME_SCALE, f"a second signal ends the drain at once: {err}"
    assert rc == 4, f"a turn that did not finish is a failure (4), got {rc}: {err}"
    c = status_json(store, conv)
    assert c["inflight"] == 1 and c["owner"] is None, f"the turn was released: {c}"


def test_http_worker_idle_exit_waits_for_the_turn_in_flight(store, emulator):
    conv = _slow_turn_in_flight(store, emulator, 3000)
    # A short drain: an idle exit fired mid-turn would release the turn
    # unanswered instead of waiting for it.
    w = _start_http_worker(store, emulator, "--idle-exit", "0.5", "--drain-timeout", "1",
                           "-X", "openai.stream=false")
    rc, out, err = finish(w, timeout=30 * TIME_SCALE)
    assert rc == 0, f"exit 0 after the turn completed, got {rc}: {err}"
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert [x["conversation_id"] for x in lines] == [conv], f"the slow turn's reply was printed: {out!r} {err}"
    assert queue_idle(store), "the turn was acked before the worker exited"
    assert "idle" in err, err


def test_conversation_key_map_get_forget(store):
    """A conversation key's mapping (issue 12): map imports, get reads (exit 3 when
    none), forget removes; thread and conversation share one mapping per key."""
    p = run(*store, "conversation", "get", "chat-42", check=3)
    assert p.stdout == "" and "no mapping" in p.stderr, p.stderr
    run(*store, "conversation", "map", "chat-42", "conv_abc", check=0)
    assert run(*store, "conversation", "get", "chat-42", check=0).stdout.strip() == "conv_abc"
    assert run(*store, "thread", "get", "chat-42", check=0).stdout.strip() == "conv_abc"
    run(*store, "thread", "map", "chat-42", "thread_x", check=0)
    assert run(*store, "conversation", "get", "chat-42", check=0).stdout.strip() == "thread_x"
    run(*store, "conversation", "forget", "chat-42", check=0)
    run(*store, "conversation", "forget", "chat-42", check=0)
    run(*store, "conversation", "get", "chat-42", check=3)
    assert run(*store, "conversation", "map", "chat-42", check=2).returncode == 2
    assert run(*store, "conversation", "map", "", "conv_x", check=2).returncode == 2
    assert run(*store, "conversation", "frobnicate", check=2).returncode == 2


def test_migrate_copies_a_thread_once(store, emulator):
    """runlane migrate KEY (issue 12 item 2): the thread's messages, in order, in a new
    conversation the key maps to; a second run copies nothing."""
    import urllib.request

    base = ["-X", f"openai.base.url={emulator.base_url}"]
    thread = run(*store, *base, "thread", "create", check=0).stdout.strip()
    for i in range(3):
        req = urllib.request.Request(
            f"{emulator.base_url}/threads/{thread}/messages", method="POST",
            data=json.dumps({"role": "user", "content": f"m{i}"}).encode(),
            headers={"Content-Type": "application/json", "OpenAI-Beta": "assistants=v2"})
        urllib.request.urlopen(req).read()
    run(*store, "conversation", "map", "chat-9", thread, check=0)
    first = json.loads(run(*store, *base, "migrate", "chat-9", check=0).stdout)
    assert first["copied"] == 3 and first["total"] == 3 and first["thread_id"] == thread, first
    conv = first["conversation_id"]
    assert run(*store, "conversation", "get", "chat-9", check=0).stdout.strip() == conv
    again = json.loads(run(*store, *base, "migrate", "chat-9", check=0).stdout)
    assert again["conversation_id"] == conv and again["copied"] == 0, again
    items = emulator.journal()["conversations"][conv]["messages"]
    assert items == ["m0", "m1", "m2"], items
    run(*store, *base, "migrate", check=2)
