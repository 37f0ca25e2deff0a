"""The OpenAI backends (responses, assistants) through the Python API,
against the emulator in tests/emulator: completed events with the reply,
reply_ack, and tool calls answered by handle_requires_action. Both backends
are part of every core: an UnsupportedError from them is a failure, never
a skip; what the custom backend does not support is asserted as such."""

import asyncio
import json
import os
import sys

import pytest

import runlane

from conftest import FAST, REPO, wait_until

sys.path.insert(0, os.path.join(REPO, "tests", "emulator"))
import emulator  # noqa: E402  (the repository's own emulator: never missing)


@pytest.fixture(scope="module")
def emu():
    e = emulator.Emulator(api_key="sk-test", latency_ms=20, seed=1).start()
    yield e
    e.stop()


def http_queue(emu, backend, memory_store, **kw):
    opts = dict(FAST)
    opts.update(
        backend=backend,
        openai_base_url=emu.base_url,
        openai_api_key="sk-test",
        openai_model="gpt-test",
        openai_assistant_id="asst_test",
        **memory_store,
    )
    opts.update(kw)
    return runlane.AssistantMessageQueue(**opts)


def tools(event):
    """handle_requires_action: answers every call with its arguments upper-cased."""
    return {c.id: json.dumps(c.args()).upper() for c in event.tool_calls}


@pytest.mark.parametrize("backend, create", [("responses", "create_conversation"), ("assistants", "create_thread")])
def test_http_backend_turn_with_tool_calls(emu, memory_store, backend, create):
    q = http_queue(emu, backend, memory_store)
    q.handle_requires_action = tools
    completed, calls = [], []
    q.on("completed", completed.append)
    q.on("tool_calls", lambda ev: calls.extend(ev.tool_calls))
    try:
        conv = getattr(q, create)(metadata={"user": "u1"})
        assert conv.startswith("conv_" if backend == "responses" else "thread_")
        q.start_worker()
        q.add_message_to_thread(conv, "hello")
        q.add_message_to_thread(conv, 'look it up [[tool:lookup {"q":"x"}]]')
        wait_until(lambda: completed, timeout=15, what="completed event")
        ev = completed[0]
        assert ev.conversation_id == conv
        assert ev.reply.startswith("echo: hello\nlook it up"), ev.reply
        assert 'lookup={"Q": "X"}' in ev.reply, ev.reply
        assert [c.name for c in calls] == ["lookup"]
        wait_until(lambda: q.get_queue_status()["inflight"] == 0)
        q.reply_ack(ev.batch_id)
    finally:
        q.close()


def test_provider_errors_are_typed(emu, memory_store):
    q = http_queue(emu, "responses", memory_store, openai_api_key="sk-wrong", http_max_retries=0)
    try:
        with pytest.raises(runlane.ProviderError) as ei:
            q.create_conversation()
        assert "sk-wrong" not in str(ei.value)
    finally:
        q.close()


def test_aio_responses_backend_streams_deltas(emu, memory_store):
    async def main():
        opts = dict(FAST)
        opts.update(
            backend="responses",
            openai_base_url=emu.base_url,
            openai_api_key="sk-test",
            openai_model="gpt-test",
            **memory_store,
        )
        q = runlane.aio.AssistantMessageQueue(**opts)
        await q.open()
        deltas, done = [], asyncio.Event()
        replies = []
        q.on("delta", lambda ev: deltas.append(ev.delta))

        async def on_completed(ev):
            replies.append(ev.reply)
            done.set()

        q.on("completed", on_completed)
        conv = await q.create_conversation()
        await q.start_worker()
        await q.enqueue(conv, "stream me")
        await asyncio.wait_for(done.wait(), 15)
        assert replies == ["echo: stream me"]
        assert "".join(deltas) == "echo: stream me"
        await q.close()

    asyncio.run(main())


def test_custom_backend_refuses_reply_ack_and_tool_outputs(memory_store):
    """What is genuinely unsupported says so: the custom backend has no
    replies to confirm and no tool calls to answer."""
    opts = dict(FAST)
    opts.update(memory_store)
    q = runlane.AssistantMessageQueue(**opts)
    try:
        with pytest.raises(runlane.UnsupportedError, match="custom backend"):
            q.reply_ack("b_0")
        with pytest.raises(runlane.UnsupportedError, match="custom backend"):
            q.submit_tool_outputs("b_0", [{"tool_call_id": "call_1", "output": "x"}])
    finally:
        q.close()


@pytest.mark.parametrize("backend, prefix", [("responses", "conv_"), ("assistants", "thread_")])
def test_conversation_key_gets_one_provider_conversation(emu, memory_store, backend, prefix):
    """Issue 12: a key the app names ("chat-42") works with the HTTP backends:
    its first turn creates the provider conversation and records it; later
    turns use the same one; get/set/forget read, import and forget it."""
    q = http_queue(emu, backend, memory_store)
    completed = []
    q.on("completed", completed.append)
    try:
        assert q.get_conversation_mapping("chat-42") is None
        q.start_worker()
        q.add_message_to_thread("chat-42", "hello")
        wait_until(lambda: completed, timeout=15, what="completed event")
        assert completed[0].conversation_id == "chat-42"
        assert completed[0].reply == "echo: hello"
        mapped = q.get_conversation_mapping("chat-42")
        assert mapped and mapped.startswith(prefix), mapped
        q.add_message_to_thread("chat-42", "again")
        wait_until(lambda: len(completed) == 2, timeout=15, what="second completed event")
        assert q.get_conversation_mapping("chat-42") == mapped
        imported = q.create_conversation() if backend == "responses" else q.create_thread()
        q.set_conversation_mapping("+15551234567", imported)
        assert q.get_conversation_mapping("+15551234567") == imported
        q.forget_conversation_mapping("chat-42")
        assert q.get_conversation_mapping("chat-42") is None
        with pytest.raises(runlane.RunlaneError):
            q.set_conversation_mapping("k", "")
    finally:
        q.close()


def test_conversation_key_mapping_asyncio(emu, memory_store):
    import runlane.aio as aio

    async def main() -> None:
        opts = dict(FAST)
        opts.update(backend="responses", openai_base_url=emu.base_url, openai_api_key="sk-test",
                    openai_model="gpt-test", **memory_store)
        q = aio.AssistantMessageQueue(**opts)
        done = asyncio.Event()
        replies = []

        def on_completed(ev):
            replies.append(ev.reply)
            done.set()

        q.on("completed", on_completed)
        assert await q.get_conversation_mapping("chat-7") is None
        await q.start_worker()
        await q.enqueue("chat-7", "hi")
        await asyncio.wait_for(done.wait(), 15)
        assert replies == ["echo: hi"]
        mapped = await q.get_conversation_mapping("chat-7")
        assert mapped and mapped.startswith("conv_")
        await q.set_conversation_mapping("chat-8", mapped)
        assert await q.get_conversation_mapping("chat-8") == mapped
        await q.forget_conversation_mapping("chat-8")
        assert await q.get_conversation_mapping("chat-8") is None
        await q.close()

    asyncio.run(main())


def test_migrate_thread_copies_once(emu, memory_store):
    """Migration off the Assistants API (issue 12 item 2) through the binding:
    the thread's messages, in order, in a new conversation the key maps to;
    running it again copies nothing."""
    import urllib.request

    q = http_queue(emu, "responses", memory_store)
    try:
        thread = q.create_thread()
        for i, role in enumerate(("user", "assistant", "user")):
            req = urllib.request.Request(
                f"{emu.base_url}/threads/{thread}/messages", method="POST",
                data=json.dumps({"role": role, "content": f"m{i}"}).encode(),
                headers={"Content-Type": "application/json", "OpenAI-Beta": "assistants=v2",
                         "Authorization": "Bearer sk-test"})
            urllib.request.urlopen(req).read()
        r = q.migrate_thread("chat-mig", thread)
        assert r["copied"] == 3 and r["total"] == 3, r
        assert r["conversation_id"].startswith("conv_")
        assert q.get_conversation_mapping("chat-mig") == r["conversation_id"]
        again = q.migrate_thread("chat-mig")
        assert again["copied"] == 0 and again["conversation_id"] == r["conversation_id"], again
        conv = emu.journal()["conversations"][r["conversation_id"]]
        assert conv["messages"] == ["m0", "m2"], conv  # the user texts, in order
    finally:
        q.close()
