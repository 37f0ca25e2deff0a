#!/usr/bin/env python3
"""Event-loop lag of runlane.aio: how long one stretch of the queue's calls
holds the asyncio loop (issue 12: "no single call of the asyncio class
blocks the loop for more than a few ms").

A probe task measures every loop turn it gets (``await asyncio.sleep(0)``:
the time until it runs again is the longest the loop was held by everything
else) while one scenario runs:

- enqueue x N: N ``await q.enqueue(...)`` in a row from one coroutine;
- enqueue_many(N): one call with N messages;
- deliver N batches: the worker delivers N one-message batches of N
  conversations to an ``async def`` handler that acks them;
- status x N/10: ``await q.status()`` in a row.

``--compare`` runs every scenario twice: first with the queue's
time slices off (runlane.aio's slice made infinite and 256 events per
dispatch: "before"), then as shipped ("after"), and prints both tables.

Run with the Python package installed (python/run_tests.sh's venv, e.g.
``build/pyvenv/bin/python tests/bench/py_loop_lag.py``); ``--store
redis://...`` measures a Redis store instead of memory. Not a test: it
prints numbers (see tests/bench/RESULTS.md).
"""

import argparse
import asyncio
import statistics
import time

import runlane
from runlane.aio import AssistantMessageQueue


class Probe:
    def __init__(self) -> None:
        self.gaps = []
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0)
            self.gaps.append(time.perf_counter() - t0)

    async def measure(self, coro):
        self.gaps, self._stop = [], False
        task = asyncio.ensure_future(self.run())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        await coro
        total = time.perf_counter() - t0
        self._stop = True
        await task
        gaps = sorted(self.gaps) or [0.0]
        p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
        return total, max(gaps), p99, statistics.median(gaps), len(gaps)


async def main(args) -> None:
    if args.compare:
        from runlane import aio

        saved = aio._INLINE_SLICE, aio._DISPATCH_MAX
        aio._INLINE_SLICE, aio._DISPATCH_MAX = float("inf"), 256
        await scenarios(args, "before: slices off")
        aio._INLINE_SLICE, aio._DISPATCH_MAX = saved
        print()
        await scenarios(args, "after: slices on")
    else:
        await scenarios(args, args.label)


async def scenarios(args, label) -> None:
    n = args.n
    probe = Probe()
    rows = []
    store = args.store or "memory://lag%d" % time.monotonic_ns()

    q = AssistantMessageQueue(store=store, batch_window_ms=60000, key_prefix="lagbench%d" % time.monotonic_ns())
    await q.open()

    async def enqueues():
        for i in range(n):
            await q.enqueue("c%d" % (i % 1000), "m")

    rows.append(("enqueue x %d" % n,) + await probe.measure(enqueues()))
    items = [("e%d" % (i % 1000), "m") for i in range(n)]
    rows.append(("enqueue_many(%d)" % n,) + await probe.measure(q.enqueue_many(items)))

    async def statuses():
        for _ in range(n // 10):
            await q.status()

    rows.append(("status x %d" % (n // 10),) + await probe.measure(statuses()))
    await q.close(drain=False)

    done = asyncio.Event()
    acked = [0]

    async def handler(batch):
        acked[0] += 1
        if acked[0] == n:
            done.set()

    store2 = args.store or "memory://lag2-%d" % time.monotonic_ns()
    w = AssistantMessageQueue(handler, store=store2, batch_window_ms=0, worker_concurrency=1000,
                              key_prefix="lagbench2%d" % time.monotonic_ns())
    await w.open()
    await w.enqueue_many([("w%d" % i, "m") for i in range(n)])

    async def deliver():
        await w.start_worker()
        await asyncio.wait_for(done.wait(), 600)

    rows.append(("deliver %d batches" % n,) + await probe.measure(deliver()))
    await w.close()

    print("runlane %s, store %s%s" % (runlane.__version__, store.split(":")[0], " (" + label + ")" if label else ""))
    print()
    print("| scenario | total ms | longest loop stretch ms | p99 ms | median ms | probe turns |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, total, mx, p99, med, turns in rows:
        print("| %s | %.1f | %.2f | %.3f | %.3f | %d |" % (name, total * 1e3, mx * 1e3, p99 * 1e3, med * 1e3, turns))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="messages per scenario (default 10000)")
    ap.add_argument("--store", help="a redis:// URL (default: the memory store)")
    ap.add_argument("--label", default="", help="a label printed with the results")
    ap.add_argument("--compare", action="store_true", help="before (slices off) and after, one table each")
    asyncio.run(main(ap.parse_args()))
