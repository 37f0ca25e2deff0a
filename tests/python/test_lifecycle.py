"""Handles are freed: many create/close cycles stay bounded; after fork a
child must create its own queue; interpreter exit releases leases."""

import gc
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid

import pytest

import runlane



def rss_kb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def one_cycle(name):
    got = []
    q = runlane.AssistantMessageQueue(lambda b: got.append(b.batch_id), store="memory://" + name, batch_window_ms=0, worker_poll_ms=5)
    q.on("batch", lambda ev: None)
    q.start_worker()
    q.enqueue("c", "hello", idempotency_key="k", metadata={"a": "b"})
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.001)
    assert got
    q.status("c")
    q.metrics()
    q.close()


def test_no_leak_over_200_create_close_cycles():
    for i in range(30):  # warm up allocators and caches
        one_cycle("warm%d" % i)
    gc.collect()
    rss0 = rss_kb()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for i in range(200):
        one_cycle("cycle%d" % i)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    rss1 = rss_kb()
    assert grown < 64 * 1024, "Python heap grew by %d bytes over 200 cycles" % grown
    assert rss1 - rss0 < 4 * 1024, "RSS grew by %d KiB over 200 cycles" % (rss1 - rss0)


def test_aio_cycles_free_their_fd():
    import asyncio

    async def cycle(name):
        got = []

        async def handler(b):
            got.append(1)

        q = runlane.aio.AssistantMessageQueue(handler, store="memory://" + name, batch_window_ms=0)
        await q.start_worker()
        await q.enqueue("c", "x")
        while not got:
            await asyncio.sleep(0.001)
        await q.close()

    async def main():
        for i in range(10):
            await cycle("a%d" % i)
        fds0 = len(os.listdir("/proc/self/fd"))
        for i in range(100):
            await cycle("b%d" % i)
        fds1 = len(os.listdir("/proc/self/fd"))
        assert fds1 - fds0 < 5, "file descriptors leaked: %d -> %d" % (fds0, fds1)

    asyncio.run(main())


def test_unclosed_queue_is_freed_by_the_garbage_collector():
    import weakref

    gc.collect()
    fds0 = len(os.listdir("/proc/self/fd"))
    q = runlane.AssistantMessageQueue(store="memory://" + uuid.uuid4().hex)
    q.enqueue("c", "x")
    assert len(os.listdir("/proc/self/fd")) == fds0 + 1  # the event fd
    ref = weakref.ref(q._h)
    del q
    gc.collect()
    assert ref() is None, "the handle is still referenced"
    assert len(os.listdir("/proc/self/fd")) == fds0, "runlane_destroy did not run"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
def test_after_fork_the_child_must_create_its_own_queue(memory_store):
    q = runlane.AssistantMessageQueue(**memory_store)
    q.enqueue("c", "parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            try:
                q.enqueue("c", "child")
                code = 10
            except runlane.ClosedError as e:
                if "fork" not in str(e):
                    code = 11
            q.close()  # harmless no-op in the child
            q2 = runlane.AssistantMessageQueue(store="memory://child-own")
            q2.enqueue("c", "child")
            if q2.get_queue_status()["pending"] != 1:
                code = 12
            q2.close()
        except BaseException:
            code = 13
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    code = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert code == bytes([0]), "child failed with code %r" % code
    # the parent's queue is untouched
    assert q.enqueue("c", "again").id
    assert q.get_queue_status()["pending"] == 2
    q.close()


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, runlane
    started = threading.Event()
    def handler(batch):
        started.set()
        threading.Event().wait(30)   # still running at exit
    q = runlane.AssistantMessageQueue(handler, store=sys.argv[1], key_prefix=sys.argv[2],
                                      batch_window_ms=10, lease_ms=60000)
    q.start_worker()
    q.enqueue("c", "x")
    assert started.wait(10)
    print("exiting", flush=True)
    # no close(): the exit hook releases the lease
    """
)


def test_interpreter_exit_releases_leases(redis_store):
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, redis_store["store"], redis_store["key_prefix"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "exiting" in out.stdout
    assert time.monotonic() - t0 < 20
    with runlane.AssistantMessageQueue(**redis_store) as q:
        st = q.status("c")
        assert st["owner"] is None and st["attempts"] == 0, st


AIO_EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, runlane.aio
    async def main():
        started = asyncio.Event()
        async def handler(batch):
            started.set()
            await asyncio.sleep(30)
        q = runlane.aio.AssistantMessageQueue(handler, store=sys.argv[1], key_prefix=sys.argv[2],
                                              batch_window_ms=10, lease_ms=60000)
        await q.start_worker()
        await q.enqueue("c", "x")
        await asyncio.wait_for(started.wait(), 10)
        print("exiting", flush=True)
        # no close(): the exit hook destroys the handle, which releases the lease
    asyncio.run(main())
    """
)


def test_interpreter_exit_releases_leases_of_an_unclosed_aio_queue(redis_store):
    out = subprocess.run(
        [sys.executable, "-c", AIO_EXIT_SCRIPT, redis_store["store"], redis_store["key_prefix"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "exiting" in out.stdout
    with runlane.AssistantMessageQueue(**redis_store) as q:
        st = q.status("c")
        assert st["owner"] is None and st["attempts"] == 0, st


NON_DAEMON_SCRIPT = textwrap.dedent(
    """
    import threading, time, runlane
    got = []
    q = runlane.AssistantMessageQueue(lambda b: got.append(b.text), store="memory://nd", batch_window_ms=10)
    q.start_worker()
    def later():
        time.sleep(0.3)             # the main thread has returned by now
        q.enqueue("c", "from a thread")
        t0 = time.monotonic()
        while not got and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        print("got", got, flush=True)
    threading.Thread(target=later).start()
    """
)


def test_queue_stays_usable_by_non_daemon_threads_after_main_returns():
    out = subprocess.run([sys.executable, "-c", NON_DAEMON_SCRIPT], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "got ['from a thread']" in out.stdout, out.stdout + out.stderr


FORK_RUNNING_SCRIPT = textwrap.dedent(
    """
    import os, sys, time, runlane
    got = []
    q = runlane.AssistantMessageQueue(lambda b: got.append(b.text), store="memory://fk", batch_window_ms=10)
    q.start_worker()
    q.enqueue("c", "before fork")
    time.sleep(0.2)
    pid = os.fork()
    if pid == 0:
        try:
            q.enqueue("c", "in child")
            print("child: enqueue worked?!", flush=True)
        except runlane.ClosedError as e:
            print("child: ClosedError", "fork" in str(e), flush=True)
        q.close()
        mine = runlane.AssistantMessageQueue(lambda b: print("child handled", b.text, flush=True),
                                             store="memory://child", batch_window_ms=10)
        mine.start_worker()
        mine.enqueue("c", "child message")
        time.sleep(0.3)
        sys.exit(0)          # normal exit: atexit hooks run in the child too
    _, status = os.waitpid(pid, 0)
    q.enqueue("c", "after fork")
    time.sleep(0.2)
    print("parent:", got, os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_with_a_running_worker():
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORK_RUNNING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "child: ClosedError True" in out.stdout, out.stdout + out.stderr
    assert "child handled child message" in out.stdout, out.stdout + out.stderr
    assert "parent: ['before fork', 'after fork'] 0" in out.stdout, out.stdout + out.stderr
