"""A sample app on runlane's public API, checked with ``mypy --strict`` by
tests/python/test_typing.py (never imported by the tests: only type-checked)."""

from __future__ import annotations

import asyncio
import json
from typing import Dict, List

import runlane
import runlane.aio
from runlane import (
    Batch,
    CompletedEvent,
    DeadEvent,
    DeadLetter,
    DeltaEvent,
    Enqueued,
    Event,
    Health,
    Status,
    StoppedEvent,
    ToolCallsEvent,
)


def handle(batch: Batch) -> str:
    return batch.text.upper()


def tools(event: ToolCallsEvent) -> Dict[str, str]:
    return {c.id: json.dumps(c.args()) for c in event.tool_calls}


def sync_app() -> None:
    q = runlane.AssistantMessageQueue(
        handle,
        store="memory",
        batch_window_ms=50,
        backoff_jitter=0.1,
        backend="custom",
        openai_stream=True,
        handle_requires_action=tools,
    )

    @q.on("completed")
    def on_completed(ev: CompletedEvent) -> None:
        reply: str = ev.reply
        print(reply.strip(), ev.redelivered)
        q.reply_ack(ev.batch_id)

    @q.on("dead")
    def on_dead(ev: DeadEvent) -> None:
        print(ev.conversation_id, ev.error)

    def on_any(ev: Event) -> None:
        print(ev.type)

    q.on("*", on_any)
    q.on("stopped", on_any)  # a listener of Event takes every event class
    q.off("stopped", on_any)

    r: Enqueued = q.enqueue("chat-1", "hi", idempotency_key=1)
    many: List[Enqueued] = q.enqueue_many(
        [("chat-1", "a"), {"conversation_id": "chat-2", "content": "b", "metadata": {"k": "v"}}]
    )
    st: Status = q.get_queue_status()
    pending: int = st["pending"]
    dead: List[DeadLetter] = q.dead_list()
    for d in dead:
        print(d["id"], d["attempts"], d["error"])
    h: Health = q.health()
    print(r.id, len(many), pending, h.ok, h.lag_ms)
    q.close()


async def async_app() -> None:
    async def handle_async(batch: runlane.aio.AsyncBatch) -> None:
        await batch.ack({"n": len(batch)})

    async with runlane.aio.AssistantMessageQueue(handle_async, batch_window_ms=0, max_attempts=3) as q:
        @q.on("delta")
        async def on_delta(ev: DeltaEvent) -> None:
            text: str = ev.delta
            print(text)

        @q.on("stopped")
        def on_stopped(ev: StoppedEvent) -> None:
            print(ev.drained)

        await q.start_worker()
        await q.enqueue("chat-1", "hello")
        st: Status = await q.status("chat-1")
        print(st.get("inflight"))
        async for ev in q.events():
            print(ev.type)
            break
        await q.stop_worker()


if __name__ == "__main__":
    sync_app()
    asyncio.run(async_app())
