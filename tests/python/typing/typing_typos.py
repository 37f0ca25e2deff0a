"""The typos of issue 12, which ``mypy --strict`` must reject
(tests/python/test_typing.py asserts each error by its line's marker)."""

from __future__ import annotations

import runlane
import runlane.aio
from runlane import CompletedEvent, DeadEvent

q = runlane.AssistantMessageQueue(batch_windw_ms=50)  # E:call-arg
q2 = runlane.AssistantMessageQueue(batch_window_ms="fast")  # E:arg-type
q3 = runlane.AssistantMessageQueue(backend="responsez")  # E:arg-type
aq = runlane.aio.AssistantMessageQueue(max_atempts=3)  # E:call-arg


@q.on("complete")  # E:call-overload
def on_done(ev: CompletedEvent) -> None:
    pass


@q.on("completed")  # E:arg-type
def on_dead(ev: DeadEvent) -> None:
    pass


@q.on("completed")
def on_completed(ev: CompletedEvent) -> None:
    n: int = ev.reply  # E:assignment


pending: str = q.get_queue_status()["pending"]  # E:assignment
q.get_queue_status()["pendin"]  # E:typeddict-item
