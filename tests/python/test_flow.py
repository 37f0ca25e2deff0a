"""The whole user flow of the sync queue with the custom backend, on the
memory store and on Redis."""

import threading
import time

import pytest

import runlane

from conftest import wait_until


class Recorder:
    def __init__(self, fail_times=0, non_retriable=False):
        self.batches = []
        self.lock = threading.Lock()
        self.fail_times = fail_times
        self.non_retriable = non_retriable

    def __call__(self, batch):
        with self.lock:
            self.batches.append(batch)
            n = len(self.batches)
        if self.non_retriable:
            raise runlane.NonRetriableError("bad request")
        if n <= self.fail_times:
            raise RuntimeError("boom %d" % n)
        return {"handled": len(batch.messages)}

    def contents(self, conv=None):
        with self.lock:
            return [[m.content for m in b.messages] for b in self.batches if conv in (None, b.conversation_id)]


def test_messages_of_a_window_arrive_as_one_batch_in_order(make_queue, store):
    rec = Recorder()
    q = make_queue(rec, **store)
    events = []
    q.on("*", events.append)
    q.start_worker()
    ids = [q.add_message_to_thread("conv-1", "m%d" % i) for i in range(5)]
    q.add_message_to_thread("conv-2", "other", instructions="be brief")
    assert len(set(ids)) == 5
    wait_until(lambda: len(rec.batches) == 2, what="two batches")
    assert rec.contents("conv-1") == [["m0", "m1", "m2", "m3", "m4"]]
    b2 = [b for b in rec.batches if b.conversation_id == "conv-2"][0]
    assert b2.instructions == "be brief" and b2.attempt == 1
    assert b2.messages[0].id and b2.messages[0].ts_ms > 0
    b1 = [b for b in rec.batches if b.conversation_id == "conv-1"][0]
    assert [m.id for m in b1.messages] == ids
    wait_until(lambda: q.get_queue_status()["inflight"] == 0, what="acks")
    st = q.get_queue_status()
    assert st["pending"] == 0 and st["dead"] == 0
    assert "runlane_batches_acked_total 2" in q.metrics()
    assert [e.type for e in events if e.type == "batch"] == ["batch", "batch"]


def test_messages_arriving_during_a_turn_make_the_next_batch(make_queue, store):
    gate = threading.Event()
    seen = []

    def handler(batch):
        seen.append([m.content for m in batch.messages])
        if len(seen) == 1:
            gate.wait(5)

    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "first")
    wait_until(lambda: len(seen) == 1, what="first batch")
    q.add_message_to_thread("c", "second")
    q.add_message_to_thread("c", "third")
    # A witness conversation, due no earlier than c's new messages: once the
    # worker has claimed it, any claim of c's messages (due first) has been
    # made too, so the store decides the check, not a sleep.
    q.add_message_to_thread("witness", "w")
    wait_until(lambda: ["w"] in seen, what="the witness conversation's batch")
    assert [b for b in seen if b != ["w"]] == [["first"]], \
        "a second batch of the same conversation ran during the first: %r" % seen
    st = q.status("c")
    assert st["pending"] == 2 and st["inflight"] >= 1, st
    gate.set()
    wait_until(lambda: len(seen) == 3, what="second batch")
    assert seen[2] == ["second", "third"]


def test_failing_handler_retries_then_dead_letters_then_dead_retry(make_queue, store):
    rec = Recorder(fail_times=100)
    q = make_queue(rec, max_attempts=3, **store)
    failed, dead = [], []
    q.on("failed", failed.append)
    q.on("dead", dead.append)
    q.start_worker()
    q.add_message_to_thread("c-fail", "hello")
    wait_until(lambda: len(dead) == 1, what="dead letter")
    assert [b.attempt for b in rec.batches] == [1, 2, 3]
    assert len({b.batch_id for b in rec.batches}) == 1, "batch id must be stable across attempts"
    assert len(failed) == 2 and failed[0].error is not None
    assert "boom" in dead[0].data["error"] and dead[0].data["dead"] is True
    letters = q.dead_list()
    assert len(letters) == 1 and letters[0]["conversation_id"] == "c-fail"
    assert letters[0]["messages"][0]["content"] == "hello"
    assert q.get_queue_status()["dead"] == 1

    rec.fail_times = 0  # fixed: retry the dead letter
    assert q.dead_retry(letters[0]["id"]) == 1
    wait_until(lambda: len(rec.batches) == 4, what="retried batch")
    assert rec.batches[-1].attempt == 1 and rec.contents()[-1] == ["hello"]
    wait_until(lambda: q.get_queue_status()["dead"] == 0 and q.get_queue_status()["inflight"] == 0)
    assert q.dead_list() == []


def test_non_retriable_failure_dead_letters_at_once_and_purge(make_queue, store):
    rec = Recorder(non_retriable=True)
    q = make_queue(rec, max_attempts=5, **store)
    dead = []
    q.on("dead", dead.append)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: dead, what="dead event")
    assert len(rec.batches) == 1 and dead[0].data["error"] == "bad request"
    assert q.dead_purge() == 1
    assert q.dead_list() == []


def test_explicit_settle_in_the_handler(make_queue, store):
    seen = []

    def handler(batch):
        seen.append(batch)
        if batch.attempt == 1:
            batch.fail("try again", retriable=True)
        else:
            batch.ack()
        with pytest.raises(runlane.StateError):
            batch.ack()

    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: len(seen) == 2, what="two attempts")
    wait_until(lambda: q.get_queue_status()["inflight"] == 0)
    assert q.get_queue_status()["dead"] == 0


def test_async_handler_in_the_sync_queue(make_queue, store):
    import asyncio

    seen = []

    async def handler(batch):
        await asyncio.sleep(0.01)
        seen.append(batch.text)

    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "a")
    q.add_message_to_thread("c", "b")
    wait_until(lambda: seen == ["a\nb"], what="async handler")


def test_idempotency_key_queues_once(make_queue, store):
    rec = Recorder()
    q = make_queue(rec, **store)
    first = q.enqueue("c", "hello", idempotency_key="platform-msg-1")
    again = q.enqueue("c", "hello", idempotency_key="platform-msg-1")
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert q.add_message_to_thread("c", "hello", idempotency_key="platform-msg-1") == first.id
    other = q.enqueue("c", "world", idempotency_key=42)  # ints are fine
    assert not other.duplicate
    assert q.enqueue("other-conv", "hello", idempotency_key="platform-msg-1").duplicate is False
    q.start_worker()
    wait_until(lambda: len(rec.batches) == 2)
    assert rec.contents("c") == [["hello", "world"]]


def test_enqueue_many_and_metadata(make_queue, store):
    rec = Recorder()
    q = make_queue(rec, **store)
    res = q.enqueue_many(
        [
            {"conversation_id": "a", "content": "1", "metadata": {"user": "u1"}},
            ("a", "2"),
            {"conversation_id": "b", "content": "3", "idempotency_key": "k"},
            {"conversation_id": "b", "content": "3", "idempotency_key": "k"},
        ]
    )
    assert [r.duplicate for r in res] == [False, False, False, True]
    assert res[3].id == res[2].id
    assert q.enqueue_many([]) == []
    q.start_worker()
    wait_until(lambda: len(rec.batches) == 2)
    a = [b for b in rec.batches if b.conversation_id == "a"][0]
    assert a.messages[0].metadata == {"user": "u1"} and a.messages[1].metadata is None
    assert rec.contents("b") == [["3"]]


def test_touch_extends_the_window(make_queue, store):
    rec = Recorder()
    q = make_queue(rec, batch_window_ms=300, batch_max_wait_ms=5000, **store)
    q.start_worker()
    t0 = time.monotonic()
    q.add_message_to_thread("c", "typing...")
    for _ in range(4):
        time.sleep(0.15)
        q.touch("c")
    assert rec.batches == [], "the batch ran while the user was still typing"
    wait_until(lambda: rec.batches, timeout=3)
    assert time.monotonic() - t0 >= 0.85


def test_event_iterator_and_batch_without_handler(make_queue, store):
    q = make_queue(**store)
    got = []

    def consume():
        for ev in q.events(timeout=5):
            got.append(ev.type)
            if ev.type == "batch":
                q.ack(ev.batch_id)
                ev.batch._settled = True
    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: "batch" in got)
    wait_until(lambda: q.get_queue_status()["inflight"] == 0)
    q.close()
    t.join(5)
    assert not t.is_alive()
    assert got[0] == "batch" and got[-1] == "stopped"


def test_manual_dispatch_without_threads(make_queue, store):
    rec = Recorder()
    q = make_queue(rec, dispatch="manual", **store)
    before = threading.active_count()
    q.start_worker()
    assert threading.active_count() == before, "manual mode must start no Python thread"
    q.add_message_to_thread("c", "x")
    deadline = time.monotonic() + 5
    while not rec.batches and time.monotonic() < deadline:
        q.process_events(timeout=0.1)
    assert rec.contents() == [["x"]]
    with pytest.raises(runlane.StateError):
        make_queue(**store).process_events()


def test_manual_run_forever_until_close_from_the_handler(make_queue, store):
    def handler(batch):
        q.close()

    q = make_queue(handler, dispatch="manual", **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    t0 = time.monotonic()
    q.run_forever()
    assert q.closed and time.monotonic() - t0 < 5


def test_close_from_a_handler_and_from_a_listener(make_queue, store):
    done = threading.Event()

    def handler(batch):
        q.close()
        done.set()

    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    assert done.wait(5)
    wait_until(lambda: q.closed, what="close finished by the dispatcher")

    q2 = make_queue(lambda b: None, **store)
    q2.on("batch", lambda ev: q2.close())
    q2.start_worker()
    q2.add_message_to_thread("c2", "x")
    wait_until(lambda: q2.closed, what="close from a listener")


def test_released_batch_is_redelivered_to_the_next_worker(make_queue, store):
    """close() from a handler releases the lease without spending an attempt."""
    seen = []

    def handler(batch):
        seen.append(batch.attempt)
        q.close()

    keeper = make_queue(**store)  # a memory store lives while a client has it open
    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: q.closed)
    rec = Recorder()
    q2 = make_queue(rec, **store)
    q2.start_worker()
    wait_until(lambda: rec.batches, what="redelivery")
    assert rec.contents() == [["x"]] and rec.batches[0].attempt == 1
    assert keeper.get_queue_status()["dead"] == 0


def test_several_instances_in_one_process(make_queue, store):
    recs = [Recorder() for _ in range(3)]
    # A window the whole burst lands in even on a loaded machine, so each
    # conversation is one batch.
    window = dict(batch_window_ms=1000, batch_max_wait_ms=5000)
    queues = [make_queue(r, worker_id="w%d" % i, **window, **store) for i, r in enumerate(recs)]
    for q in queues:
        q.start_worker()
    producer = make_queue(**window, **store)
    for i in range(30):
        producer.add_message_to_thread("conv-%d" % (i % 10), "m%d" % i)
    wait_until(lambda: sum(len(r.batches) for r in recs) >= 10, what="all conversations")
    # Once nothing is pending or in flight no batch can come any more (a
    # duplicate would be in flight until acked): then count.
    wait_until(lambda: (lambda st: st["pending"] == 0 and st["inflight"] == 0)(producer.get_queue_status()),
               what="every batch acked")
    convs = [b.conversation_id for r in recs for b in r.batches]
    assert sorted(convs) == sorted("conv-%d" % i for i in range(10)), "each conversation once"
    delivered = sorted(m for r in recs for c in r.contents() for m in c)
    assert delivered == sorted("m%d" % i for i in range(30))


def test_drain_on_close_waits_for_the_handler(make_queue, store):
    finished = []

    def handler(batch):
        time.sleep(0.3)
        finished.append(batch.batch_id)

    q = make_queue(handler, **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: q.get_queue_status()["inflight"] == 1)
    keeper = make_queue(**store)
    q.close(drain=True, timeout=5)
    assert len(finished) == 1
    st = keeper.get_queue_status()
    assert st["inflight"] == 0 and st["pending"] == 0, st


def test_context_manager(store):
    rec = Recorder()
    with runlane.AssistantMessageQueue(rec, batch_window_ms=20, **store) as q:
        q.start_worker()
        q.add_message_to_thread("c", "x")
        wait_until(lambda: rec.batches)
    assert q.closed
    assert "closed" in repr(q)


def test_manual_close_without_a_poller_releases_at_once(make_queue, store):
    keeper = make_queue(**store)
    q = make_queue(lambda b: None, dispatch="manual", **store)
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: keeper.status("c")["owner"] is not None, what="claim")
    t0 = time.monotonic()
    q.close(drain=True, timeout=5)
    assert time.monotonic() - t0 < 2, "close waited for a drain nobody could serve"
    st = keeper.status("c")
    assert st["owner"] is None and st["attempts"] == 0, st


# On Redis the core may claim the released batch again before
# runlane_batch_release returned; the redelivery must still settle (the core
# settles the entry of its own lease).
def test_batch_release_redelivers_the_same_batch_without_spending_an_attempt(make_queue, store):
    seen = []
    events = []

    def handler(batch):
        seen.append((batch.batch_id, batch.attempt, [m.content for m in batch.messages]))
        if len(seen) == 1:
            batch.release()
            with pytest.raises(runlane.StateError):
                batch.ack()  # released: settled once, no auto-ack after it

    q = make_queue(handler, **store)
    for t in ("failed", "dead"):
        q.on(t, events.append)
    q.add_message_to_thread("c", "x")
    q.add_message_to_thread("c", "y")
    q.start_worker()
    wait_until(lambda: len(seen) == 2, what="the released batch delivered again")
    wait_until(lambda: q.get_queue_status()["inflight"] == 0, what="the second delivery acked")
    assert seen[1] == seen[0], "expected the same batch id, attempt and messages, got %r then %r" % tuple(seen)
    assert seen[0][1] == 1, "a release must not spend an attempt: attempts %r" % [s[1] for s in seen]
    assert events == [], "a release is not a failure, got %r" % [e.type for e in events]
    assert q.get_queue_status()["dead"] == 0


def test_release_batch_by_id_without_a_handler(make_queue, store):
    q = make_queue(dispatch="manual", **store)
    q.add_message_to_thread("c", "x")
    q.start_worker()
    batches = []
    for ev in q.events(timeout=5.0):
        if ev.type != "batch":
            continue
        batches.append(ev.batch)
        if len(batches) == 1:
            q.release_batch(ev.batch.batch_id)
        else:
            q.ack(ev.batch.batch_id)
            break
    assert [(b.batch_id, b.attempt) for b in batches] == [(batches[0].batch_id, 1)] * 2, batches
    with pytest.raises(runlane.NotFoundError):
        q.release_batch(batches[0].batch_id)  # acked: no longer held here


def test_no_batch_event_reaches_the_host_after_a_release_stop(make_queue, store):
    """The core drops the unpolled events of the batches it releases at stop."""
    keeper = make_queue(**store)
    q = make_queue(lambda b: None, dispatch="manual", **store)
    types = []
    q.on("*", lambda ev: types.append(ev.type))
    q.start_worker()
    q.add_message_to_thread("c", "x")
    wait_until(lambda: keeper.status("c")["owner"] is not None, what="claim")
    q.stop_worker(drain=False)  # nobody polled the batch event
    while q.process_events(0.1):
        pass
    assert "batch" not in types, "a released batch reached the host: %r" % types
    assert types[-1] == "stopped", types
    st = keeper.status("c")
    assert st["owner"] is None and st["attempts"] == 0, st
