"""Bad input from Python raises typed exceptions with clear messages."""

import pickle

import pytest

import runlane


@pytest.fixture
def q(make_queue, memory_store):
    return make_queue(**memory_store)


def test_hierarchy_and_attributes():
    assert issubclass(runlane.ConfigError, runlane.RunlaneError)
    assert issubclass(runlane.UnknownKeyError, runlane.ConfigError)
    assert issubclass(runlane.InvalidArgumentError, ValueError)
    assert issubclass(runlane.ArgumentTypeError, TypeError)
    assert issubclass(runlane.TimeoutError, TimeoutError)
    assert issubclass(runlane.NotFoundError, LookupError)
    e = runlane.StaleLeaseError("lost it")
    assert e.code == -6 and e.name == "RUNLANE_ERR_STALE" and str(e) == "lost it"
    e2 = pickle.loads(pickle.dumps(runlane.StoreError("down", retriable=True)))
    assert type(e2) is runlane.StoreError and e2.retriable and e2.message == "down"
    assert "StoreError" in repr(e2)


@pytest.mark.parametrize(
    "args, exc, fragment",
    [
        ((123, "x"), runlane.ArgumentTypeError, "conversation_id must be a str"),
        (("c", b"x"), runlane.ArgumentTypeError, "content must be a str"),
        (("", "x"), runlane.InvalidArgumentError, "conversation"),
        (("c\x00d", "x"), runlane.InvalidArgumentError, "NUL"),
        (("c\n", "x"), runlane.InvalidArgumentError, "control"),
        (("c" * 300, "x"), runlane.InvalidArgumentError, "conversation"),
        (("c", "\udc80"), runlane.InvalidArgumentError, "UTF-8"),
    ],
)
def test_bad_enqueue_arguments(q, args, exc, fragment):
    with pytest.raises(exc) as ei:
        q.enqueue(*args)
    assert fragment.lower() in str(ei.value).lower(), str(ei.value)


def test_bad_options(q):
    with pytest.raises(runlane.ArgumentTypeError, match="instructions"):
        q.enqueue("c", "x", instructions=5)
    with pytest.raises(runlane.ArgumentTypeError, match="metadata"):
        q.enqueue("c", "x", metadata={"a": 1})
    with pytest.raises(runlane.ArgumentTypeError, match="metadata"):
        q.enqueue("c", "x", metadata=["a"])
    with pytest.raises(runlane.InvalidArgumentError, match="idempotency_key"):
        q.enqueue("c", "x", idempotency_key="")
    with pytest.raises(runlane.ArgumentTypeError, match="idempotency_key"):
        q.enqueue("c", "x", idempotency_key=1.5)


def test_too_large_message(make_queue, memory_store):
    q = make_queue(batch_max_bytes=10, **memory_store)
    with pytest.raises(runlane.TooLargeError) as ei:
        q.enqueue("c", "x" * 11)
    assert "batch.max.bytes" in str(ei.value)
    assert q.get_queue_status()["pending"] == 0


def test_enqueue_many_is_all_or_nothing(q):
    with pytest.raises(runlane.InvalidArgumentError, match=r"messages\[1\]"):
        q.enqueue_many([("a", "ok"), {"conversation_id": "", "content": "x"}])
    with pytest.raises(runlane.ArgumentTypeError, match=r"messages\[0\]"):
        q.enqueue_many([42])
    with pytest.raises(runlane.InvalidArgumentError, match="unknown keys"):
        q.enqueue_many([{"conversation_id": "a", "content": "x", "colour": "red"}])
    with pytest.raises(runlane.ArgumentTypeError):
        q.enqueue_many("abc")
    assert q.get_queue_status()["pending"] == 0


def test_settling_unknown_batches(q):
    with pytest.raises(runlane.NotFoundError) as ei:
        q.ack("b-unknown")
    assert "b-unknown" in str(ei.value)
    with pytest.raises(runlane.NotFoundError):
        q.fail("b-unknown", "x")
    with pytest.raises(runlane.InvalidArgumentError):
        q.ack("")
    with pytest.raises(runlane.ArgumentTypeError):
        q.ack(None)


def test_dead_letter_arguments(q):
    with pytest.raises(runlane.NotFoundError):
        q.dead_retry("nope")
    with pytest.raises(runlane.InvalidArgumentError):
        q.dead_purge("")
    with pytest.raises(runlane.ArgumentTypeError):
        q.dead_list(limit="5")
    with pytest.raises(runlane.InvalidArgumentError):
        q.dead_list(offset=-1)


def test_custom_backend_has_no_replies_or_tools(q):
    with pytest.raises((runlane.UnsupportedError, runlane.NotFoundError)):
        q.reply_ack("b1")
    with pytest.raises((runlane.UnsupportedError, runlane.NotFoundError)):
        q.submit_tool_outputs("b1", {"call_1": "out"})
    with pytest.raises(runlane.ArgumentTypeError):
        q.submit_tool_outputs("b1", "not a list")


def test_state_errors(q):
    with pytest.raises(runlane.StateError):
        q.stop_worker()
    q.handler = lambda batch: None  # a custom worker needs someone taking its batches
    q.start_worker()
    with pytest.raises(runlane.StateError, match="already started"):
        q.start_worker()


def test_event_names_are_checked(q):
    with pytest.raises(runlane.InvalidArgumentError, match="unknown event type"):
        q.on("batches", lambda e: None)
    with pytest.raises(runlane.ArgumentTypeError):
        q.on("batch", 5)


def test_handler_must_be_callable():
    with pytest.raises(runlane.ArgumentTypeError):
        runlane.AssistantMessageQueue(handler="nope")


def test_calls_after_close_raise_closed_error(memory_store):
    q = runlane.AssistantMessageQueue(**memory_store)
    q.close()
    q.close()  # idempotent
    assert q.closed
    for call in (
        lambda: q.enqueue("c", "x"),
        lambda: q.status(),
        lambda: q.metrics(),
        lambda: q.start_worker(),
    ):
        with pytest.raises(runlane.ClosedError):
            call()
