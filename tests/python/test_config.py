"""Configuration through keyword arguments, typed and validated by the
core's property table."""

import pytest

import runlane
from runlane.config import normalize_config


def test_properties_come_from_the_core():
    props = runlane.config_properties()
    assert "batch.window.ms" in props
    p = props["batch.window.ms"]
    assert p.type == "int" and p.kwarg == "batch_window_ms"
    assert p.python_default() == 10000
    assert p.min == 0 and p.max is not None
    assert props["backend"].values and "custom" in props["backend"].values
    assert props["openai.api.key"].secret
    assert set(runlane.config_keys()) == set(props)


def test_keyword_names_are_dotted_keys_with_underscores():
    vals = normalize_config(
        {"batch.max.messages": 7},
        batch_window_ms=50,
        backoff_jitter=0.25,
        openai_stream=False,
        openai_headers={"api-key": "x"},
        worker_id="w1",
        busy_policy="queue",
    )
    assert vals == {
        "batch.max.messages": "7",
        "batch.window.ms": "50",
        "backoff.jitter": "0.25",
        "openai.stream": "false",
        "openai.headers": '{"api-key":"x"}',
        "worker.id": "w1",
        "busy.policy": "queue",
    }


def test_none_means_default():
    assert normalize_config(batch_window_ms=None) == {}


def test_unknown_key_suggests_the_right_one(memory_store):
    with pytest.raises(runlane.UnknownKeyError) as ei:
        runlane.AssistantMessageQueue(batch_windw_ms=5, **memory_store)
    assert "batch_windw_ms" in str(ei.value) and "batch_window_ms" in str(ei.value)
    assert ei.value.code == -2 and ei.value.name == "RUNLANE_ERR_UNKNOWN_KEY"
    assert isinstance(ei.value, runlane.ConfigError)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch_window_ms": -1}, "out of range"),
        ({"max_attempts": 0}, "max.attempts"),
        ({"backend": "nope"}, "expected one of"),
        ({"store": "ftp://x"}, "store"),
        ({"key_prefix": "bad prefix"}, "key.prefix"),
        ({"backoff_jitter": 3.0}, "backoff.jitter"),
        ({"openai_headers": "[1]"}, "openai.headers"),
    ],
)
def test_bad_values_raise_invalid_value_with_the_core_message(kwargs, fragment):
    with pytest.raises(runlane.InvalidValueError) as ei:
        runlane.AssistantMessageQueue(**kwargs)
    assert fragment in str(ei.value), str(ei.value)
    assert ei.value.code == -3
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, runlane.ConfigError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_window_ms": True},
        {"batch_window_ms": 1.5},
        {"batch_window_ms": [1]},
        {"openai_stream": 1},
        {"backend": 3},
        {"openai_headers": 5},
    ],
)
def test_wrong_python_types_raise_config_type_error(kwargs):
    with pytest.raises(runlane.ConfigTypeError) as ei:
        runlane.AssistantMessageQueue(**kwargs)
    assert isinstance(ei.value, TypeError)
    key = next(iter(kwargs))
    assert key in str(ei.value) and "expected" in str(ei.value)


def test_strings_are_accepted_for_every_type(memory_store):
    q = runlane.AssistantMessageQueue(batch_window_ms="25", openai_stream="true", **memory_store)
    try:
        assert q.config["batch.window.ms"] == "25"
    finally:
        q.close()


def test_unreachable_redis_is_a_store_error():
    with pytest.raises(runlane.StoreError) as ei:
        runlane.AssistantMessageQueue(store="redis://127.0.0.1:1/0", redis_connect_timeout_ms=500)
    assert ei.value.retriable
    assert "127.0.0.1:1" in str(ei.value)


def test_aio_queue_validates_config_in_the_constructor():
    with pytest.raises(runlane.InvalidValueError):
        runlane.aio.AssistantMessageQueue(batch_window_ms=-5)
    with pytest.raises(runlane.UnknownKeyError):
        runlane.aio.AssistantMessageQueue(nope=1)


# The store URL is shown (logs, repr) as the core masks it: one masking
# implementation, where the Redis store reads its password. A Python copy
# split at the first '@' and showed part of a password holding an '@'.
@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://user:hunter2@127.0.0.1:1/0", "redis://user:***@127.0.0.1:1/0"),
        ("redis://:p@ss@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://hunter2@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
    ],
)
def test_store_url_is_shown_as_the_core_masks_it(url, shown, caplog):
    from runlane.aio import AssistantMessageQueue as AioQueue
    from runlane.config import build_conf, dump_conf, shown_store

    assert dump_conf(build_conf({"store": url}))["store"] == shown, "the core's own mask changed"
    assert shown_store({"store": url}) == shown
    q = AioQueue(store=url)  # connects on first use only
    assert shown in repr(q), "expected %r in %r" % (shown, repr(q))
    for secret in ("hunter2", "p@ss", "ss@"):
        if secret in url:
            assert secret not in repr(q), "password part %r in %r" % (secret, repr(q))


def test_sync_queue_logs_and_shows_the_core_store_value(memory_store, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="runlane"):
        q = runlane.AssistantMessageQueue(**memory_store)
    try:
        assert memory_store["store"] in repr(q)
        assert "queue created on store %s" % memory_store["store"] in caplog.text
    finally:
        q.close()
