#!/usr/bin/env python3
"""Load generator for the emulator: many concurrent streamed turns, as a runlane worker with
thousands of conversations in flight would drive them.

    python3 tests/emulator/loadgen.py --port P --mode assistants -n 10000 [--inflight 500]

Phase 1 creates the n threads (or conversations) over a few keep-alive connections (timed
apart).  Phase 2 opens one connection per turn and creates a streamed run (POST
/threads/{id}/runs, stream:true, additional_messages) or response (POST /responses,
conversation, stream:true), at most --inflight creates waiting for their answer headers at once;
each stream is then read to its end.  A turn counts as created when its 200 and headers arrive.
Prints creates/s (phase 2 overall and best 1 s window), the peak of streams open at once, and
errors.  Standard library only (asyncio, raw sockets).  Start the emulator with a long
--latency-ms (e.g. 20000) so that the streams stay open.
"""
import argparse
import asyncio
import json
import sys
import time

BETA = b"OpenAI-Beta: assistants=v2\r\n"


def _req(method, path, body, beta):
    data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    return (b"%s /v1%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-test\r\n%sContent-Length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), BETA if beta else b"", len(data), data))


async def _read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    return status, length, chunked


async def _json_call(reader, writer, method, path, body, beta):
    writer.write(_req(method, path, body, beta))
    status, length, _ = await _read_head(reader)
    data = await reader.readexactly(length or 0)
    return status, json.loads(data) if data else None


class Stats:
    def __init__(self):
        self.created = []   # monotonic times of stream heads
        self.open = 0
        self.peak = 0
        self.done = 0
        self.errors = {}
        self.events = 0

    def err(self, what):
        self.errors[what] = self.errors.get(what, 0) + 1


async def create_dialogs(port, mode, n, conns):
    ids = []
    per = (n + conns - 1) // conns

    async def worker(k):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(min(per, n - k * per)):
            if mode == "assistants":
                st, obj = await _json_call(reader, writer, "POST", "/threads", {}, True)
            else:
                st, obj = await _json_call(reader, writer, "POST", "/conversations", {}, False)
            if st != 200:
                raise RuntimeError("create dialog: %d %r" % (st, obj))
            ids.append(obj["id"])
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(conns) if k * per < n))
    return ids


async def one_turn(port, mode, dialog_id, k, sem, stats):
    await sem.acquire()
    released = False
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if mode == "assistants":
            req = _req("POST", "/threads/%s/runs" % dialog_id, {
                "assistant_id": "asst_load", "stream": True,
                "additional_messages": [{"role": "user", "content": "hello %d" % k,
                                         "metadata": {"runlane_message_id": "m%d" % k}}]},
                True)
        else:
            req = _req("POST", "/responses", {
                "model": "gpt-4o", "conversation": dialog_id, "stream": True,
                "input": [{"role": "user", "content": "hello %d" % k}],
                "metadata": {"runlane_message_ids": "m%d" % k}}, False)
        writer.write(req)
        status, length, chunked = await _read_head(reader)
        if status != 200 or not chunked:
            stats.err("status %d" % status)
            if length:
                await reader.readexactly(length)
            return
        stats.created.append(time.monotonic())
        stats.open += 1
        stats.peak = max(stats.peak, stats.open)
        sem.release()
        released = True
        try:
            while True:  # chunked body: read to the last chunk
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                await reader.readexactly(size + 2)
                stats.events += 1
            stats.done += 1
        finally:
            stats.open -= 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        stats.err(type(e).__name__)
    finally:
        if not released:
            sem.release()
        if writer is not None:
            writer.close()


async def main_async(args):
    t0 = time.monotonic()
    ids = await create_dialogs(args.port, args.mode, args.n, args.dialog_conns)
    t1 = time.monotonic()
    print("phase 1: %d %s in %.2f s (%.0f/s)" % (
        len(ids), "threads" if args.mode == "assistants" else "conversations", t1 - t0,
        len(ids) / (t1 - t0)), flush=True)
    stats = Stats()
    sem = asyncio.Semaphore(args.inflight)
    start = time.monotonic()

    async def progress():
        last = 0
        while True:
            await asyncio.sleep(1.0)
            c = len(stats.created)
            print("  t=%5.1fs created=%6d (+%5d/s) open=%6d done=%6d errors=%s" % (
                time.monotonic() - start, c, c - last, stats.open, stats.done,
                stats.errors or 0), flush=True)
            last = c

    prog = asyncio.ensure_future(progress())
    tasks = [asyncio.ensure_future(one_turn(args.port, args.mode, d, k, sem, stats))
             for k, d in enumerate(ids)]
    await asyncio.gather(*tasks)
    prog.cancel()
    c = stats.created
    if c:
        span = c[-1] - start
        best = 0
        j = 0
        for i in range(len(c)):
            while c[i] - c[j] > 1.0:
                j += 1
            best = max(best, i - j + 1)
        print("RESULT mode=%s n=%d created=%d in %.2f s: %.0f creates/s (best 1 s: %d), "
              "peak open streams %d, done %d, errors %s" % (
                  args.mode, args.n, len(c), span, len(c) / span if span else 0, best,
                  stats.peak, stats.done, stats.errors or 0), flush=True)
    else:
        print("RESULT nothing created; errors %s" % stats.errors)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("assistants", "responses"), default="assistants")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--inflight", type=int, default=500,
                   help="creates waiting for their answer at once")
    p.add_argument("--dialog-conns", type=int, default=8)
    args = p.parse_args()
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
