"""The original AssistantMessageQueue's usage, in Python, against the emulator
(tests/emulator) and Redis: an assistant id with no backend selects the
assistants backend, OPENAI_BASE_URL and the ``base_url`` alias are honoured,
a custom worker nobody takes batches from refuses to start, close() does not
drain for a batch nobody holds; and ``health()`` on both classes."""

import asyncio
import json
import logging
import os
import sys
import time

import pytest

import runlane

from conftest import REPO, redis_url, wait_until

sys.path.insert(0, os.path.join(REPO, "tests", "emulator"))
emulator = pytest.importorskip("emulator")

SCALE = float(os.environ.get("RUNLANE_TEST_TIME_SCALE", "1") or 1)
README_KEY = "your-openai-api-key"


@pytest.fixture(scope="module")
def emu():
    e = emulator.Emulator(api_key=README_KEY, latency_ms=20, seed=1).start()
    yield e
    e.stop()


def _body(r):
    b = r.get("body")
    if isinstance(b, str):
        try:
            return json.loads(b)
        except ValueError:
            return {}
    return b or {}


def _run_requests(emu, assistant_id):
    return [
        r
        for r in emu.requests(2000)
        if r.get("method") == "POST"
        and r.get("path", "").rstrip("/").endswith("/runs")
        and "/threads/" in r.get("path", "")
        and _body(r).get("assistant_id") == assistant_id
    ]


def test_original_usage_selects_assistants_and_honours_openai_base_url(emu, monkeypatch):
    """The Python equivalent of the README's Basic Usage (redis_url,
    openai_api_key, assistant_id), with OPENAI_BASE_URL set as for the
    official SDKs: the turn runs at the emulator, close() is prompt."""
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    replies = []
    queue = runlane.AssistantMessageQueue(
        redis_url=redis_url(),
        key_prefix="dropin%d" % os.getpid(),
        openai_api_key=README_KEY,
        assistant_id="your-assistant-id",
        batch_window_ms=50,
        handle_requires_action=lambda ev: {c.id: json.dumps({"id": c.args().get("userId"), "name": "John Doe"})
                                           for c in ev.tool_calls},
    )
    queue.on("completed", lambda ev: replies.append(ev))
    try:
        assert queue.health().backend == "assistants"
        queue.start_worker()  # no handler: the assistants backend runs the turns
        thread_id = queue.create_thread()
        assert thread_id.startswith("thread_")
        queue.add_message_to_thread(thread_id, 'who am I? [[tool:get_user_data {"userId":"u-7"}]]')
        wait_until(lambda: replies, timeout=30 * SCALE, what="the completed reply")
        assert replies[0].conversation_id == thread_id
        assert replies[0].reply.startswith("echo: who am I?")
        assert 'get_user_data={"id": "u-7", "name": "John Doe"}' in replies[0].reply
        assert _run_requests(emu, "your-assistant-id"), "no run with the assistant id reached the emulator"
    finally:
        t0 = time.monotonic()
        queue.close()
        assert time.monotonic() - t0 < 5 * SCALE


def test_base_url_alias_and_explicit_key_wins(emu, monkeypatch, memory_store):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with runlane.AssistantMessageQueue(base_url=emu.base_url, openai_api_key=README_KEY, **memory_store) as q:
        assert q.create_thread().startswith("thread_")
    # The configuration key's own name wins over the alias.
    with runlane.AssistantMessageQueue(
        base_url="http://127.0.0.1:9/v1", openai_base_url=emu.base_url, openai_api_key=README_KEY, **memory_store
    ) as q:
        assert q.create_thread().startswith("thread_")
    # OPENAI_BASE_URL is the default when nothing is given.
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    with runlane.AssistantMessageQueue(openai_api_key=README_KEY, http_max_retries=0, **memory_store) as q:
        assert q.create_thread().startswith("thread_")


def test_start_worker_without_consumer_raises_at_once(memory_store):
    with runlane.AssistantMessageQueue(batch_window_ms=0, **memory_store) as q:
        q.enqueue("chat-1", "hi")
        with pytest.raises(runlane.StateError, match="custom.*handler"):
            q.start_worker()
        st = q.status("chat-1")
        assert st["pending"] == 1 and not st.get("inflight"), st
        assert q.health().worker == "idle"
        # A consumer registered first: it starts.
        q.on("batch", lambda ev: ev.batch.ack())
        q.start_worker()
        assert q.health().worker_running


def test_aio_start_worker_without_consumer_raises_at_once(memory_store):
    async def main():
        async with runlane.aio.AssistantMessageQueue(batch_window_ms=0, **memory_store) as q:
            await q.enqueue("chat-1", "hi")
            with pytest.raises(runlane.StateError, match="custom.*handler"):
                await q.start_worker()
            st = await q.status("chat-1")
            assert st["pending"] == 1 and not st.get("inflight"), st

    asyncio.run(main())


def test_close_does_not_drain_for_a_batch_nobody_holds(memory_store, caplog):
    caplog.set_level(logging.WARNING, logger="runlane")
    q = runlane.AssistantMessageQueue(batch_window_ms=0, **memory_store)
    other = runlane.AssistantMessageQueue(**memory_store)
    try:
        listener = q.on("batch", lambda ev: None)
        q.start_worker()
        q.off("batch", listener)  # nobody takes batches from now on
        q.enqueue("chat-2", "hello")
        wait_until(lambda: other.status("chat-2").get("state") == "leased", timeout=10 * SCALE, what="the batch leased")
        t0 = time.monotonic()
        q.close(timeout=30.0)
        took = time.monotonic() - t0
        assert took < 5 * SCALE, "close() waited %.1fs for a batch nobody holds" % took
        st = other.status("chat-2")
        # Released: ready again for any worker, and no attempt spent.
        assert st.get("state") == "ready" and not st.get("owner") and not st.get("attempts"), st
    finally:
        q.close(drain=False)
        other.close(drain=False)


def test_aio_close_does_not_drain_for_a_batch_nobody_holds(memory_store):
    async def main():
        q = runlane.aio.AssistantMessageQueue(batch_window_ms=0, **memory_store)
        other = runlane.aio.AssistantMessageQueue(**memory_store)
        try:
            listener = q.on("batch", lambda ev: None)
            await q.start_worker()
            q.off("batch", listener)
            await q.enqueue("chat-2", "hello")
            deadline = time.monotonic() + 10 * SCALE
            while (await other.status("chat-2")).get("state") != "leased":
                assert time.monotonic() < deadline, "the batch was not leased"
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            await q.close(timeout=30.0)
            took = time.monotonic() - t0
            assert took < 5 * SCALE, "close() waited %.1fs for a batch nobody holds" % took
            st = await other.status("chat-2")
            # Released: ready again for any worker, and no attempt spent.
            assert st.get("state") == "ready" and not st.get("owner") and not st.get("attempts"), st
        finally:
            await q.close(drain=False)
            await other.close(drain=False)

    asyncio.run(main())


def test_health_sync(memory_store):
    with runlane.AssistantMessageQueue(batch_window_ms=0, **memory_store) as q:
        h = q.health()
        assert isinstance(h, runlane.Health)
        assert (h.ok, h.store_ok, h.worker, h.worker_running, h.backend, h.lag_ms) == (
            True, True, "idle", False, "custom", 0)
        q.enqueue("chat-3", "x")
        wait_until(lambda: (q.health().lag_ms or 0) >= 200, timeout=10 * SCALE, what="the lag to grow")
        q.handler = lambda b: None
        q.start_worker()
        wait_until(lambda: q.health().lag_ms == 0, timeout=10 * SCALE, what="the lag back to 0")
        h = q.health()
        assert h.ok and h.worker == "running" and h.worker_running


def test_health_aio_and_store_down(tmp_path):
    import subprocess
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        async def main():
            url = "redis://127.0.0.1:%d/0" % port
            deadline = time.monotonic() + 10
            while True:
                try:
                    q = runlane.aio.AssistantMessageQueue(
                        store=url, redis_connect_timeout_ms=300, redis_command_timeout_ms=300)
                    await q.open()
                    break
                except runlane.StoreError:
                    assert time.monotonic() < deadline, "redis-server did not come up"
                    await asyncio.sleep(0.05)
            try:
                h = await q.health()
                assert h.ok and h.store_ok and h.worker == "idle" and h.lag_ms == 0
                srv.kill()
                srv.wait()
                h = await q.health()
                assert not h.ok and not h.store_ok and h.lag_ms is None and h.store_error
            finally:
                await q.close(drain=False)

        asyncio.run(main())
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
