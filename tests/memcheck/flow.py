"""A whole Python user flow, small, for running under valgrind: the custom
backend on the memory store (handler acks, a failing handler retries, dead
letter, retry) and the responses backend against the emulator with a tool
call. Exits 0 when every step gave what it should."""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "emulator"))

import runlane  # noqa: E402
from emulator import Emulator  # noqa: E402


def custom_flow():
    got, done = [], threading.Event()
    calls = {"n": 0}

    def handle(batch):
        calls["n"] += 1
        if batch.conversation_id == "flaky" and calls["n"] < 3:
            raise RuntimeError("model exploded")
        got.append((batch.conversation_id, [m.content for m in batch.messages]))
        if len(got) == 2:
            done.set()

    with runlane.AssistantMessageQueue(handle, store="memory://memcheck", batch_window_ms=50,
                                       backoff_base_ms=20, backoff_max_ms=40) as q:
        q.start_worker()
        q.add_message_to_thread("c1", "hello")
        q.add_message_to_thread("c1", "again")
        q.add_message_to_thread("flaky", "boom")
        assert done.wait(60), got
        q.close()
    assert sorted(got) == [("c1", ["hello", "again"]), ("flaky", ["boom"])], got


def responses_flow():
    emu = Emulator()
    emu.start()
    try:
        replies, done = [], threading.Event()

        def tools(event):
            return {c.id: "sunny" for c in event.tool_calls}

        q = runlane.AssistantMessageQueue(store="memory://memcheck-http", backend="responses",
                                          openai_base_url=emu.base_url, openai_model="gpt-4o-mini",
                                          batch_window_ms=50, handle_requires_action=tools)
        with q:
            q.on("completed", lambda ev: (replies.append(ev.reply), done.set()))
            conv = q.create_conversation()
            q.start_worker()
            q.add_message_to_thread(conv, 'weather? [[tool:get_weather {"city":"Paris"}]]')
            assert done.wait(90), replies
        assert "get_weather=sunny" in replies[0], replies
    finally:
        emu.stop()


if __name__ == "__main__":
    custom_flow()
    responses_flow()
    print("1 passed, 0 failed")
