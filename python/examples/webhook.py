"""A chat webhook on runlane (asyncio).

The chat platform POSTs every user message to /webhook. Each one is queued
for its conversation with the platform's message id as idempotency key (a
webhook delivered twice is queued once). runlane batches a conversation's
burst of messages by a quiet window and runs one turn per conversation at a
time; here the turn is ``answer()`` (the custom backend: put your model or
agent framework there), and its reply is sent back to the platform.

Endpoints:
  POST /webhook  {"conversation_id": "...", "message_id": "...", "text": "..."}
  POST /typing   {"conversation_id": "..."}      the user is still typing
  GET  /replies/<conversation_id>                  replies sent so far (demo outbox)
  GET  /status                                     queue totals
  GET  /metrics                                    Prometheus text

Run:  python webhook.py [--port 8080]            (aiohttp if installed, else stdlib)
      python webhook.py --selftest               starts, posts a burst, prints the reply
Environment: RUNLANE_STORE (default "memory"; "redis://127.0.0.1:6379/0" to share
the queue between several webhook processes), BATCH_WINDOW_MS (default 2000),
REPLY_URL (POST each reply there as JSON instead of only keeping it in the outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.request
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import runlane
import runlane.aio

log = logging.getLogger("webhook")

# Replies "sent to the platform", kept for GET /replies (a demo outbox).
OUTBOX: Dict[str, List[str]] = {}


async def answer(batch: runlane.aio.AsyncBatch) -> str:
    """One turn: every message the user sent in the window, in order.
    Replace this with a call to your model; raise to retry the turn."""
    await asyncio.sleep(0.05)  # the model thinks
    said = " / ".join(m.content for m in batch.messages)
    return "You said (%d message%s): %s" % (len(batch.messages), "" if len(batch) == 1 else "s", said)


async def send_reply(conversation_id: str, text: str) -> None:
    """Delivers a reply to the chat platform."""
    OUTBOX.setdefault(conversation_id, []).append(text)
    url = os.environ.get("REPLY_URL")
    if url:
        body = json.dumps({"conversation_id": conversation_id, "text": text}).encode()
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=10).read())
    log.info("reply to %s: %s", conversation_id, text)


async def handle_batch(batch: runlane.aio.AsyncBatch) -> None:
    # Returning acks the batch; an exception fails it and runlane retries.
    reply = await answer(batch)
    await send_reply(batch.conversation_id, reply)


def make_queue() -> runlane.aio.AssistantMessageQueue:
    queue = runlane.aio.AssistantMessageQueue(
        handle_batch,
        store=os.environ.get("RUNLANE_STORE", "memory"),
        batch_window_ms=int(os.environ.get("BATCH_WINDOW_MS", "2000")),
        batch_max_wait_ms=30000,
        max_attempts=5,
    )
    queue.on("dead", lambda ev: log.error("gave up on %s: %s", ev.conversation_id, ev.data.get("error")))
    return queue


# ---------------------------------------------------------------- routes
# (method, path) -> coroutine(queue, body, tail) -> (status, payload)

Route = Callable[[runlane.aio.AssistantMessageQueue, Dict[str, Any], str], Awaitable[Tuple[int, Any]]]


async def post_webhook(queue, body, _tail):
    conv = body.get("conversation_id") or body.get("chat_id")
    text, msg_id = body.get("text"), body.get("message_id")
    if not isinstance(conv, (str, int)) or not isinstance(text, str):
        return 400, {"error": "conversation_id and text are required"}
    try:
        r = await queue.enqueue(str(conv), text, idempotency_key=msg_id, metadata={"source": "webhook"})
    except runlane.InvalidArgumentError as e:  # bad id, bad text...
        return 400, {"error": str(e)}
    except runlane.TooLargeError as e:
        return 413, {"error": str(e)}
    except runlane.StoreError as e:  # the platform will redeliver
        return 503, {"error": str(e)}
    return 200, {"queued": r.id, "duplicate": r.duplicate}


async def post_typing(queue, body, _tail):
    conv = body.get("conversation_id")
    if not isinstance(conv, str):
        return 400, {"error": "conversation_id is required"}
    await queue.touch(conv)
    return 200, {"ok": True}


async def get_replies(_queue, _body, tail):
    return 200, {"conversation_id": tail, "replies": OUTBOX.get(tail, [])}


async def get_status(queue, _body, _tail):
    return 200, await queue.get_queue_status()


async def get_metrics(queue, _body, _tail):
    return 200, await queue.metrics()


ROUTES: Dict[Tuple[str, str], Route] = {
    ("POST", "/webhook"): post_webhook,
    ("POST", "/typing"): post_typing,
    ("GET", "/replies/"): get_replies,
    ("GET", "/status"): get_status,
    ("GET", "/metrics"): get_metrics,
}


def find_route(method: str, path: str):
    for (m, p), fn in ROUTES.items():
        if m == method and (path == p or (p.endswith("/") and path.startswith(p))):
            return fn, path[len(p):] if p.endswith("/") else ""
    return None, ""


async def dispatch(queue, method: str, path: str, raw: bytes) -> Tuple[int, Any]:
    fn, tail = find_route(method, path)
    if fn is None:
        return 404, {"error": "not found"}
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return 400, {"error": "body is not JSON"}
    if not isinstance(body, dict):
        return 400, {"error": "body must be a JSON object"}
    return await fn(queue, body, tail)


# ---------------------------------------------------------------- servers


async def serve_aiohttp(queue, host: str, port: int):
    from aiohttp import web

    async def any_route(request: "web.Request") -> "web.StreamResponse":
        status, payload = await dispatch(queue, request.method, request.path, await request.read())
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner.cleanup, bound


async def serve_stdlib(queue, host: str, port: int):
    """A tiny HTTP/1.1 server (one request per connection), no dependency."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            status, payload = await dispatch(queue, method, path.split("?", 1)[0], raw)
            if isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain; charset=utf-8"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json"
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (status, ctype.encode(), len(data))
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, host, port)
    bound = server.sockets[0].getsockname()[1]

    async def cleanup() -> None:
        server.close()
        await server.wait_closed()

    return cleanup, bound


async def serve(host: str, port: int, use_aiohttp: bool):
    queue = make_queue()
    await queue.start_worker()
    if use_aiohttp:
        cleanup, bound = await serve_aiohttp(queue, host, port)
    else:
        cleanup, bound = await serve_stdlib(queue, host, port)
    log.info("listening on http://%s:%d (%s)", host, bound, "aiohttp" if use_aiohttp else "stdlib")
    return queue, cleanup, bound


def have_aiohttp() -> bool:
    try:
        import aiohttp
    except ImportError:
        return False
    return bool(aiohttp.__version__)


async def main(args: argparse.Namespace) -> int:
    use_aiohttp = have_aiohttp() and not args.stdlib
    queue, cleanup, port = await serve(args.host, 0 if args.selftest else args.port, use_aiohttp)
    try:
        if args.selftest:
            return await selftest(port)
        await asyncio.Event().wait()  # serve until interrupted
        return 0
    finally:
        await cleanup()
        await queue.close()


async def selftest(port: int) -> int:
    """Plays the chat platform: a burst, a redelivered webhook, a reply."""
    loop = asyncio.get_running_loop()

    def call(method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text

    async def req(method: str, path: str, body: Any = None) -> Any:
        return await loop.run_in_executor(None, call, method, path, body)

    for i, text in enumerate(["hi", "I need help", "with my order"]):
        await req("POST", "/webhook", {"conversation_id": "chat-42", "message_id": "m%d" % i, "text": text})
    dup = await req("POST", "/webhook", {"conversation_id": "chat-42", "message_id": "m1", "text": "I need help"})
    assert dup["duplicate"], dup
    for _ in range(500):
        replies = (await req("GET", "/replies/chat-42"))["replies"]
        if replies:
            break
        await asyncio.sleep(0.02)
    print("reply:", replies[0] if replies else None)
    print("status:", await req("GET", "/status"))
    ok = replies == ["You said (3 messages): hi / I need help / with my order"]
    print("selftest", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--stdlib", action="store_true", help="use the stdlib server even if aiohttp is installed")
    parser.add_argument("--selftest", action="store_true", help="run a scripted conversation and exit")
    args = parser.parse_args()
    if args.selftest:
        os.environ.setdefault("BATCH_WINDOW_MS", "200")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        sys.exit(asyncio.run(main(args)))
    except KeyboardInterrupt:
        pass
