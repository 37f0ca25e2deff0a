"""Input that cannot be stored faithfully is refused by the core, never
stored corrupted, and arrives in Python as the typed error: invalid UTF-8,
U+0000 (which a C string would cut), control bytes in messages, header values
with CR/LF."""

import uuid

import pytest

import runlane
from runlane._native import ffi, lib
from runlane.config import build_conf


@pytest.fixture
def q(make_queue, store):
    return make_queue(**store)


def pending(q, conv=None):
    return q.status(conv)["pending"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(metadata={"k": "v\udc80"}), "options.metadata.k"),
        (dict(metadata={"k\ud800": "v"}), "options.metadata"),
        (dict(instructions="be \udfff brief"), "options.instructions"),
        (dict(idempotency_key="m-\udc80"), "options.idempotency_key"),
        (dict(metadata={"k": "keep\x00lost"}), "options.metadata.k"),
        (dict(instructions="a\x00b"), "options.instructions"),
    ],
)
def test_options_text_refused_by_the_core_naming_the_field(q, kwargs, field):
    with pytest.raises(runlane.InvalidArgumentError) as ei:
        q.enqueue("c", "x", **kwargs)
    assert field in str(ei.value), f"the core's message names {field}: {ei.value}"
    assert ei.value.code == lib.RUNLANE_ERR_INVALID_ARG
    assert pending(q) == 0, "a refused message stores nothing"


def test_nul_in_enqueue_many_is_refused_never_cut(q):
    with pytest.raises(runlane.InvalidArgumentError, match=r"messages\[1\]\.conversation_id.*U\+0000"):
        q.enqueue_many([("ok", "a"), {"conversation_id": "victim\x00x", "content": "b"}])
    with pytest.raises(runlane.InvalidArgumentError, match=r"messages\[0\]\.content"):
        q.enqueue_many([{"conversation_id": "c", "content": "keep\x00lost"}])
    assert pending(q) == 0 and pending(q, "victim") == 0
    # Keys "a\x00b" and "a" never collide: the first is refused.
    first = q.enqueue("c", "first", idempotency_key="a")
    with pytest.raises(runlane.InvalidArgumentError, match=r"options\.idempotency_key.*U\+0000"):
        q.enqueue("c", "second", idempotency_key="a\x00b")
    with pytest.raises(runlane.InvalidArgumentError, match=r"messages\[0\]\.idempotency_key"):
        q.enqueue_many([{"conversation_id": "c", "content": "x", "idempotency_key": "a\x00b"}])
    assert not first.duplicate and pending(q, "c") == 1


def test_no_poison_message_from_another_producer(make_queue, store):
    """Bytes that Python could not decode are refused at enqueue, from any
    producer (here the C API itself), so a Python worker never gets a batch
    it cannot read on every attempt."""
    q = make_queue(**store)
    conf = build_conf({k.replace("_", "."): v for k, v in store.items()})
    err = ffi.new("char[]", 512)
    raw = lib.runlane_new(conf, err, len(err))
    assert raw != ffi.NULL, ffi.string(err)
    try:
        idbuf = ffi.new("char[]", lib.RUNLANE_ID_MAX)
        for opts in (b'{"metadata":{"k":"v\xff"}}', b'{"metadata":{"k\xc3":"v"}}',
                     b'{"instructions":"\xed\xa0\x80"}', b'{"idempotency_key":"\xc0\xaf"}',
                     b'{"metadata":{"k":"keep\\u0000lost"}}'):
            rc = lib.runlane_enqueue(idbuf, len(idbuf), ffi.NULL, raw, b"c", b"x", opts)
            assert rc == lib.RUNLANE_ERR_INVALID_ARG, (opts, rc)
        out = ffi.new("char **")
        rc = lib.runlane_enqueue_many(out, raw, b'[{"conversation_id":"victim\\u0000x","content":"x"}]')
        assert rc == lib.RUNLANE_ERR_INVALID_ARG
    finally:
        lib.runlane_destroy(raw)
    assert pending(q) == 0 and pending(q, "victim") == 0


def test_error_messages_escape_control_bytes(q):
    with pytest.raises(runlane.NotFoundError) as ei:
        q.dead_retry("d\x1b]0;pwned\x07")
    msg = str(ei.value)
    assert "\x1b" not in msg and "\x07" not in msg, repr(msg)
    assert "d\\x1b]0;pwned\\x07" in msg, repr(msg)
    with pytest.raises(runlane.ConfigError) as ei:
        runlane.AssistantMessageQueue(store="memory://" + uuid.uuid4().hex, config={"batch.window.ms": "1\x1b[2J"})
    assert "\x1b" not in str(ei.value) and "\\x1b[2J" in str(ei.value), repr(str(ei.value))


@pytest.mark.parametrize(
    "options",
    [
        dict(openai_headers={"X-A": "v\r\nX-Injected: 1"}),
        dict(openai_headers={"X A": "v"}),
        dict(openai_headers={"X-A": "v\x00x"}),
        dict(openai_organization="org\x7f"),
        dict(openai_api_key="sk-abc\x7f"),
        dict(openai_api_key="sk-abc\x00junk"),
    ],
)
def test_header_values_refused_when_configured(options):
    """Refused when the queue is configured, not when a worker starts."""
    with pytest.raises(runlane.ConfigError) as ei:
        runlane.AssistantMessageQueue(store="memory://" + uuid.uuid4().hex, backend="responses", **options)
    assert ei.value.code == lib.RUNLANE_ERR_INVALID_VALUE
    assert "Injected" not in str(ei.value) and "sk-abc" not in str(ei.value), "a secret is echoed"


def test_a_handler_error_with_nul_still_settles_its_batch(make_queue, store):
    """An error text is a description: a NUL or a lone surrogate in it is
    shown escaped, and the batch is dead-lettered at once (not left held
    until its lease expires because the fail was refused)."""
    from conftest import wait_until

    def handler(batch):
        raise runlane.NonRetriableError("bad\x00tail \udc80")

    q = make_queue(handler, lease_ms=600000, **store)
    dead = []
    q.on("dead", dead.append)
    q.start_worker()
    q.enqueue("c-err", "hello")
    wait_until(lambda: len(dead) == 1, what="dead letter")
    err = q.dead_list()[0]["error"]
    assert "bad\\u0000tail" in err and "\\udc80" in err, err
