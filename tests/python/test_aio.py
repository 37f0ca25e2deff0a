"""The asyncio queue: event fd + loop.add_reader, no polling thread."""

import asyncio
import re
import subprocess
import threading
import time

import pytest

import runlane
from runlane.aio import AssistantMessageQueue, AsyncBatch

from conftest import FAST, TIME_SCALE


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for %s" % what)


def test_async_flow_with_events_and_iterator(store):
    async def main():
        seen = []

        async def handler(batch: AsyncBatch):
            await asyncio.sleep(0.01)
            seen.append((batch.conversation_id, [m.content for m in batch.messages]))
            return "ok"

        types = []
        async_cb = []

        async def on_batch(ev):
            async_cb.append(ev.batch_id)

        async with AssistantMessageQueue(handler, **FAST, **store) as q:
            q.on("*", lambda ev: types.append(ev.type))
            q.on("batch", on_batch)
            collected = []

            async def consume():
                async for ev in q.events():
                    collected.append(ev.type)

            consumer = asyncio.ensure_future(consume())
            await asyncio.sleep(0)
            await q.start_worker()
            for i in range(3):
                await q.add_message_to_thread("a", "m%d" % i)
            await q.add_message_to_thread("b", "x", instructions="short")
            await until(lambda: len(seen) == 2, what="two batches")
            assert sorted(seen) == [("a", ["m0", "m1", "m2"]), ("b", ["x"])]

            async def drained():
                return (await q.get_queue_status())["inflight"] == 0

            await until(drained, what="acks")
            assert "runlane_batches_acked_total 2" in await q.metrics()
            assert (await q.status("a"))["pending"] == 0
        assert q.closed
        await asyncio.wait_for(consumer, 5)
        assert len(async_cb) == 2
        assert collected.count("batch") == 2 and collected[-1] == "stopped"
        assert types[-1] == "stopped"

    run(main())


def test_asyncio_uses_no_thread_and_never_blocks_the_loop(memory_store):
    async def main():
        before = set(threading.enumerate())
        handled = []
        max_gap = [0.0]

        async def ticker():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.005)
                now = time.monotonic()
                max_gap[0] = max(max_gap[0], now - last)
                last = now

        async def handler(batch):
            handled.append(batch.text)

        tick = asyncio.ensure_future(ticker())
        q = AssistantMessageQueue(handler, **FAST, **memory_store)
        await q.start_worker()
        for i in range(20):
            await q.enqueue("c%d" % (i % 4), "m%d" % i, idempotency_key="k%d" % i)
        await until(lambda: len(handled) == 4, what="four batches")

        async def drained():
            return (await q.get_queue_status())["inflight"] == 0

        await until(drained)
        after = set(threading.enumerate())
        assert after == before, "asyncio mode started Python threads: %s" % (after - before)
        await q.close(drain=False)
        tick.cancel()
        assert max_gap[0] < 0.25, "the loop was blocked for %.3fs" % max_gap[0]

    run(main())


def test_async_failures_retry_dead_letter_and_dead_retry(store):
    async def main():
        attempts = []
        fixed = [False]

        async def handler(batch):
            attempts.append(batch.attempt)
            if not fixed[0]:
                raise ValueError("model unavailable")

        dead = []
        q = AssistantMessageQueue(handler, max_attempts=2, **FAST, **store)
        q.on("dead", dead.append)
        await q.start_worker()
        await q.add_message_to_thread("c", "x")
        await until(lambda: dead, what="dead letter")
        assert attempts == [1, 2]
        assert "model unavailable" in dead[0].data["error"]
        letters = await q.dead_list()
        assert len(letters) == 1
        fixed[0] = True
        assert await q.dead_retry() == 1
        await until(lambda: len(attempts) == 3, what="retry")

        async def clean():
            st = await q.get_queue_status()
            return st["dead"] == 0 and st["inflight"] == 0

        await until(clean)
        await q.close()

    run(main())


def test_non_retriable_and_explicit_settle(memory_store):
    async def main():
        calls = []

        async def handler(batch):
            calls.append(batch.attempt)
            if batch.conversation_id == "perm":
                raise runlane.NonRetriableError("invalid input")
            await batch.fail("later", retriable=True) if batch.attempt == 1 else await batch.ack()

        dead = []
        q = AssistantMessageQueue(handler, **FAST, **memory_store)
        q.on("dead", dead.append)
        await q.start_worker()
        await q.enqueue("perm", "x")
        await q.enqueue("retry", "y")
        await until(lambda: dead and len(calls) == 3, what="settles")
        assert dead[0].conversation_id == "perm"
        await q.close()

    run(main())


def test_sync_handler_runs_in_the_executor(memory_store):
    async def main():
        threads = []

        def handler(batch):
            threads.append(threading.current_thread())
            time.sleep(0.05)  # would block the loop if run on it

        q = AssistantMessageQueue(handler, **FAST, **memory_store)
        await q.start_worker()
        await q.enqueue("c", "x")
        await until(lambda: threads)
        assert threads[0] is not threading.main_thread()
        await q.close()

    run(main())


def test_close_from_inside_a_handler(memory_store):
    async def main():
        keeper = AssistantMessageQueue(**memory_store)
        await keeper.open()
        closed = []

        async def handler(batch):
            await q.close()
            closed.append(q.closed)

        q = AssistantMessageQueue(handler, **FAST, **memory_store)
        await q.start_worker()
        await q.enqueue("c", "x")
        await until(lambda: closed, what="close inside handler")
        assert closed == [True]
        with pytest.raises(runlane.ClosedError):
            await q.enqueue("c", "y")
        # the lease was released, not spent: the message is still there
        st = await keeper.status("c")
        assert st["state"] == "ready" and st["attempts"] == 0 and st["owner"] is None, st
        await keeper.close()

    run(main())


def test_idempotency_and_enqueue_many(store):
    async def main():
        async with AssistantMessageQueue(**FAST, **store) as q:
            a = await q.enqueue("c", "hi", idempotency_key="wamid.1")
            b = await q.enqueue("c", "hi", idempotency_key="wamid.1")
            assert b.duplicate and a.id == b.id
            res = await q.enqueue_many([("c", "1"), {"conversation_id": "d", "content": "2"}])
            assert [r.duplicate for r in res] == [False, False]
            await q.touch("c")
            assert (await q.get_queue_status())["pending"] == 3

    run(main())


def test_bad_input_in_aio(memory_store):
    async def main():
        async with AssistantMessageQueue(**memory_store) as q:
            with pytest.raises(runlane.ArgumentTypeError):
                await q.enqueue(None, "x")
            with pytest.raises(runlane.InvalidArgumentError):
                await q.enqueue("", "x")
            with pytest.raises(runlane.NotFoundError):
                await q.ack("nope")
            with pytest.raises(runlane.StateError):
                await q.stop_worker()

    run(main())


def test_several_async_queues_share_the_load(store):
    async def main():
        seen = {}

        def make_handler(name):
            async def handler(batch):
                seen.setdefault(batch.conversation_id, []).append(name)
                await asyncio.sleep(0.02)

            return handler

        qs = [AssistantMessageQueue(make_handler(i), worker_concurrency=3, **FAST, **store) for i in range(3)]
        for q in qs:
            await q.start_worker()
        await qs[0].enqueue_many([("conv-%d" % i, "x") for i in range(12)])
        await until(lambda: len(seen) == 12, what="12 conversations")

        async def settled():
            st = await qs[0].get_queue_status()
            return st["pending"] == 0 and st["inflight"] == 0

        # Nothing pending or in flight: no further (duplicate) batch can come.
        await until(settled, what="every batch acked")
        assert all(len(v) == 1 for v in seen.values()), seen
        for q in qs:
            await q.close()

    run(main())


def test_async_batch_release_redelivers_without_spending_an_attempt(store):
    async def main():
        seen = []
        failed = []

        async def handler(batch):
            seen.append((batch.batch_id, batch.attempt, [m.content for m in batch.messages]))
            if len(seen) == 1:
                await batch.release()

        q = AssistantMessageQueue(handler, **FAST, **store)
        q.on("failed", failed.append)
        await q.enqueue("c", "x")
        await q.start_worker()
        await until(lambda: len(seen) == 2, what="the released batch delivered again")
        assert seen[1] == seen[0] and seen[0][1] == 1, seen
        assert failed == [], [e.type for e in failed]
        await q.close()

    run(main())


def test_async_release_batch_by_id_and_no_batch_after_a_release_stop(store):
    async def main():
        q = AssistantMessageQueue(**FAST, **store)
        types = []
        q.on("*", lambda ev: types.append(ev.type))
        await q.enqueue("c", "x")
        await q.start_worker()
        batches = []
        async for ev in q.events():
            if ev.type == "batch":
                batches.append(ev.batch)
                if len(batches) == 1:
                    await q.release_batch(ev.batch.batch_id)
                else:
                    await q.ack(ev.batch.batch_id)
                    break
        assert [(b.batch_id, b.attempt) for b in batches] == [(batches[0].batch_id, 1)] * 2
        # A batch claimed while the loop is blocked stays unpolled: a stop in
        # release mode gives it back and no batch event may follow.
        await q.enqueue("d", "y")
        deadline = time.monotonic() + 5
        while (await q.status("d"))["owner"] is None and time.monotonic() < deadline:
            time.sleep(0.01)  # blocks the loop: the batch event stays unpolled
        n = len(types)
        await q.stop_worker(drain=False)
        await until(lambda: "stopped" in types, what="stopped")
        assert "batch" not in types[n:], "a released batch reached the host: %r" % types[n:]
        await q.close(drain=False)

    run(main())


def test_concurrent_enqueues_share_round_trips(redis_store):
    """Enqueues gathered on the loop run on the executor's threads, which meet
    in the core's group commit: while Redis holds writes (CLIENT PAUSE) the
    first waits on the wire and the others go out together after it."""
    async def main():
        async with AssistantMessageQueue(**FAST, **redis_store) as q:
            await q.status()  # connected before Redis holds writes
            subprocess.run(["redis-cli", "-u", redis_store["store"], "CLIENT", "PAUSE",
                            str(int(300 * TIME_SCALE)), "WRITE"], check=True, capture_output=True)
            n = 64
            got = await asyncio.gather(*(q.enqueue("c%d" % (i % 8), "m%d" % i) for i in range(n)))
            assert len({e.id for e in got}) == n
            m = re.search(r"^runlane_enqueue_round_trips_total (\d+)$", await q.metrics(), re.M)
            trips = int(m.group(1))
            assert 0 < trips < n, "%d round trips for %d concurrent enqueues" % (trips, n)
            assert (await q.status())["pending"] == n

    run(main())
