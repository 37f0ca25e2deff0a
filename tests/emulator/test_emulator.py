"""Tests of the OpenAI emulator: shapes against the official spec, lock rules, streams, tool
calls, faults, auth and the journal.  Run from the repository root:
    python3 -m pytest -q tests/emulator
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from emulator import LOCKED_MESSAGE, Emulator, parse_markers  # noqa: E402

SPEC_PATH = os.environ.get("RUNLANE_OPENAPI_SPEC") or os.path.normpath(
    os.path.join(HERE, "..", "spec", "openai-openapi.yaml"))
BETA = {"OpenAI-Beta": "assistants=v2"}


# ---------------------------------------------------------------------------------------------
# The spec as JSON Schema

def _to_json_schema(node):
    """OpenAPI 3.1 is JSON Schema 2020-12 except for two leftovers this spec still uses:
    `nullable: true` (3.0 style), which becomes anyOf [schema, null], and `discriminator`,
    which only annotates the oneOf beside it and is dropped."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "discriminator"}
    if out.get("nullable") is True:  # a *property* named "nullable" would be a dict
        del out["nullable"]
        out = {"anyOf": [out, {"type": "null"}]}
    return out


class Spec:
    URI = "urn:openai-openapi"

    def __init__(self, path):
        with open(path) as f:
            doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.doc = _to_json_schema(doc)
        self.registry = Registry().with_resource(
            self.URI, Resource.from_contents(self.doc, default_specification=DRAFT202012))
        self._validators = {}

    def validate(self, name, instance):
        """Validate against components/schemas/<name>; fail with every error listed."""
        v = self._validators.get(name)
        if v is None:
            v = self._validators[name] = Draft202012Validator(
                {"$ref": "%s#/components/schemas/%s" % (self.URI, name)}, registry=self.registry)
        errors = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
        assert not errors, "%s does not match the spec:\n%s\ninstance: %s" % (
            name, "\n".join("  at %s: %s" % (list(e.absolute_path), e.message[:300])
                            for e in errors[:10]), json.dumps(instance)[:2000])

    def response_schema(self, path, method, status="200"):
        """The schema the spec gives for a route's answer, to check the route's mapping."""
        content = self.doc["paths"][path][method]["responses"][status]["content"]
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def spec():
    if not os.path.exists(SPEC_PATH):
        # The test command requires the spec (a skipped schema check would
        # hide drift); ad-hoc runs without it skip.
        if os.environ.get("RUNLANE_REQUIRE_SPEC") == "1":
            pytest.fail("OpenAPI spec not found at %s (set RUNLANE_OPENAPI_SPEC)" % SPEC_PATH)
        pytest.skip("OpenAPI spec not found at %s (set RUNLANE_OPENAPI_SPEC)" % SPEC_PATH)
    return Spec(SPEC_PATH)


# ---------------------------------------------------------------------------------------------
# The emulator and a small client

@pytest.fixture(scope="module")
def server():
    em = Emulator(seed=7).start()
    yield em
    em.stop()


@pytest.fixture
def em(server):
    server.reset()
    return server


class Reply:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.raw = raw

    @property
    def json(self):
        return json.loads(self.raw)

    def events(self):
        """Parse an SSE body into [(event, data)], data decoded from JSON where it is JSON."""
        out = []
        for block in self.raw.decode().split("\n\n"):
            if not block.strip():
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            data = fields["data"]
            out.append((fields["event"], data if data == "[DONE]" else json.loads(data)))
        return out


def call(em, method, path, body=None, headers=None, conn=None, timeout=10):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", em.port, timeout=timeout)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.getheaders(), r.read())
    finally:
        if own:
            conn.close()


def ok(reply, status=200):
    assert reply.status == status, "expected HTTP %d, got %d: %s" % (
        status, reply.status, reply.raw[:500])
    return reply.json


def poll(em, path, until, headers=None, timeout=5.0):
    """GET path until its status is in `until`; return every status seen and the last body."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        body = ok(call(em, "GET", path, headers=headers))
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in until:
            return seen, body
        time.sleep(0.01)
    raise AssertionError("%s never reached %s; saw %s" % (path, until, seen))


def new_conversation(em, **body):
    return ok(call(em, "POST", "/v1/conversations", body))["id"]


def respond(em, conv, input_, **extra):
    body = {"model": "gpt-4o", "conversation": conv, "input": input_}
    body.update(extra)
    return call(em, "POST", "/v1/responses", body)


def new_thread(em, *texts):
    body = {"messages": [{"role": "user", "content": t} for t in texts]}
    return ok(call(em, "POST", "/v1/threads", body, BETA))["id"]


def error_of(reply, status):
    body = ok(reply, status)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


RESPONSE_EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.queued": "ResponseQueuedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
}


def check_response_stream(spec, events):
    for i, (name, data) in enumerate(events):
        assert data["type"] == name and data["sequence_number"] == i
        spec.validate(RESPONSE_EVENT_SCHEMAS[name], data)
    return [name for name, _ in events]


def check_assistants_stream(spec, events):
    assert events[-1] == ("done", "[DONE]"), "an Assistants stream ends with done, got %r" % (
        events[-1],)
    for name, data in events:
        spec.validate("AssistantStreamEvent", {"event": name, "data": data})
    return [name for name, _ in events]


# ---------------------------------------------------------------------------------------------
# Start-up and plumbing

def test_cli_prints_port_quickly_and_writes_journal_on_sigterm(tmp_path):
    journal = tmp_path / "journal.json"
    started = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "emulator.py"), "--port", "0",
                             "--journal", str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("EMULATOR_PORT="), "first stdout line was %r" % line
        assert time.time() - started < 1.5, "start-up took %.2fs" % (time.time() - started)
        port = int(line.split("=")[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/v1/conversations", body="{}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    assert proc.stdout.read() == "", "stdout carries only the port line"
    data = json.loads(journal.read_text())
    assert data["requests"] == 1 and len(data["conversations"]) == 1


def test_routes_work_with_and_without_v1_and_every_answer_has_a_request_id(em):
    for path in ("/v1/conversations", "/conversations"):
        r = call(em, "POST", path, {})
        assert r.status == 200 and r.headers["x-request-id"].startswith("req_")
    r = call(em, "GET", "/v1/nothing/here")
    assert error_of(r, 404)["message"] == "Invalid URL (GET /v1/nothing/here)"
    assert r.headers["x-request-id"]
    r = call(em, "POST", "/v1/responses", {"model": "gpt-4o", "input": "x", "stream": True})
    assert r.headers["x-request-id"] and r.headers["content-type"].startswith("text/event-stream")


def test_keep_alive_connection_serves_json_and_streams_in_turn(em):
    conn = http.client.HTTPConnection("127.0.0.1", em.port, timeout=5)
    try:
        conv = ok(call(em, "POST", "/v1/conversations", {}, conn=conn))["id"]
        r = call(em, "POST", "/v1/responses", {"model": "m", "conversation": conv, "input": "a",
                                                "stream": True}, conn=conn)
        assert r.events()[-1][0] == "response.completed"
        assert ok(call(em, "GET", "/v1/conversations/" + conv, conn=conn))["id"] == conv
    finally:
        conn.close()


def test_bad_json_and_unknown_parameters_are_refused_like_openai(em):
    conn = http.client.HTTPConnection("127.0.0.1", em.port, timeout=5)
    conn.request("POST", "/v1/responses", body="{not json", headers={})
    r = conn.getresponse()
    assert r.status == 400 and "could not parse the JSON body" in json.loads(r.read())[
        "error"]["message"]
    conn.close()
    e = error_of(call(em, "POST", "/v1/responses", {"model": "m", "input": "x", "bogus": 1}), 400)
    assert (e["message"], e["param"], e["code"]) == ("Unknown parameter: 'bogus'.", "bogus",
                                                     "unknown_parameter")
    thread = new_thread(em)
    e = error_of(call(em, "POST", "/v1/threads/%s/runs" % thread,
                      {"assistant_id": "asst_1", "bogus": 1}, BETA), 400)
    assert e["message"] == "Unrecognized request argument supplied: bogus"
    e = error_of(call(em, "POST", "/v1/threads/%s/runs" % thread, {}, BETA), 400)
    assert e["code"] == "missing_required_parameter" and e["param"] == "assistant_id"
    e = error_of(call(em, "POST", "/v1/conversations",
                      {"metadata": {"k%d" % i: "v" for i in range(17)}}), 400)
    assert e["code"] == "object_above_max_properties"


def test_unknown_ids_are_404_with_openai_errors(em, spec):
    thread = new_thread(em)
    for path, headers in (("/v1/responses/resp_nope", None),
                          ("/v1/responses/resp_nope/input_items", None),
                          ("/v1/conversations/conv_nope", None),
                          ("/v1/conversations/conv_nope/items", None),
                          ("/v1/threads/thread_nope", BETA),
                          ("/v1/threads/%s/runs/run_nope" % thread, BETA),
                          ("/v1/threads/thread_nope/messages", BETA)):
        r = call(em, "GET", path, headers=headers)
        spec.validate("ErrorResponse", ok(r, 404))
        assert r.json["error"]["type"] == "invalid_request_error"
    assert error_of(call(em, "GET", "/v1/responses/resp_nope"), 404)["message"] == \
        "Response with id 'resp_nope' not found."
    assert error_of(call(em, "GET", "/v1/threads/thread_nope", headers=BETA), 404)[
        "message"] == "No thread found with id 'thread_nope'."
    e = error_of(respond(em, "conv_nope", "hi"), 404)
    assert e["message"] == "Conversation with id 'conv_nope' not found."


# ---------------------------------------------------------------------------------------------
# Conversations and Responses

def test_spec_maps_routes_to_the_schemas_these_tests_use(spec):
    assert spec.response_schema("/conversations", "post") == "ConversationResource"
    assert spec.response_schema("/conversations/{conversation_id}", "get") == \
        "ConversationResource"
    assert spec.response_schema("/responses/{response_id}", "get") == "Response"
    assert spec.response_schema("/responses/{response_id}/cancel", "post") == "Response"
    assert spec.response_schema("/responses/{response_id}/input_items", "get") == \
        "ResponseItemList"
    assert spec.response_schema("/threads", "post") == "ThreadObject"
    assert spec.response_schema("/threads/{thread_id}/messages", "get") == "ListMessagesResponse"
    assert spec.response_schema("/threads/{thread_id}/runs", "get") == "ListRunsResponse"
    assert spec.response_schema("/threads/{thread_id}/runs/{run_id}", "get") == "RunObject"
    assert spec.response_schema(
        "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", "post") == "RunObject"


def test_conversation_create_retrieve_and_items_pagination(em, spec):
    created = ok(call(em, "POST", "/v1/conversations", {
        "metadata": {"topic": "demo"},
        "items": [{"type": "message", "role": "user", "content": "one"},
                  {"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "two"}]}]}))
    spec.validate("ConversationResource", created)
    assert created["id"].startswith("conv_") and created["metadata"] == {"topic": "demo"}
    conv = created["id"]
    spec.validate("ConversationResource", ok(call(em, "GET", "/v1/conversations/" + conv)))
    ok(call(em, "POST", "/v1/conversations/%s/items" % conv,
            {"items": [{"type": "message", "role": "user", "content": "three"}]}))

    items = ok(call(em, "GET", "/v1/conversations/%s/items" % conv))
    spec.validate("ConversationItemList", items)
    texts = [i["content"][0]["text"] for i in items["data"]]
    assert texts == ["three", "two", "one"], "default order is desc"
    page = ok(call(em, "GET", "/v1/conversations/%s/items?order=asc&limit=2" % conv))
    assert [i["content"][0]["text"] for i in page["data"]] == ["one", "two"]
    assert page["has_more"] and page["last_id"] == page["data"][1]["id"]
    rest = ok(call(em, "GET", "/v1/conversations/%s/items?order=asc&after=%s"
                   % (conv, page["last_id"])))
    assert [i["content"][0]["text"] for i in rest["data"]] == ["three"]
    assert not rest["has_more"]
    empty = ok(call(em, "GET", "/v1/conversations/%s/items" % new_conversation(em)))
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}, "an empty list has null ids, as the live API answers"
    e = error_of(call(em, "GET", "/v1/conversations/%s/items?limit=0" % conv), 400)
    assert e["param"] == "limit"
    # Items added outside a response are read by the next one.
    assert ok(respond(em, conv, "four"))["output"][0]["content"][0]["text"] == \
        "echo: one\ntwo\nthree\nfour"


def test_response_create_retrieve_and_input_items(em, spec):
    conv = new_conversation(em)
    resp = ok(respond(em, {"id": conv}, [
        {"type": "message", "role": "user", "content": "hello"},
        {"role": "user", "content": [{"type": "input_text", "text": "world"}]}],
        instructions="be brief", metadata={"k": "v"},
        tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]))
    spec.validate("Response", resp)
    assert resp["id"].startswith("resp_") and resp["status"] == "completed"
    assert resp["conversation"] == {"id": conv} and resp["instructions"] == "be brief"
    assert resp["metadata"] == {"k": "v"} and resp["tools"][0]["name"] == "lookup"
    message = resp["output"][0]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["content"][0]["text"] == "echo: hello\nworld"

    again = ok(call(em, "GET", "/v1/responses/" + resp["id"]))
    spec.validate("Response", again)
    assert again == resp
    assert "openai-poll-after-ms" not in call(em, "GET", "/v1/responses/" + resp["id"]).headers

    inputs = ok(call(em, "GET", "/v1/responses/%s/input_items?order=asc" % resp["id"]))
    spec.validate("ResponseItemList", inputs)
    assert [i["content"][0]["text"] for i in inputs["data"]] == ["hello", "world"]

    items = ok(call(em, "GET", "/v1/conversations/%s/items?order=asc" % conv))
    spec.validate("ConversationItemList", items)
    assert [(i["role"], i["content"][0]["text"]) for i in items["data"]] == [
        ("user", "hello"), ("user", "world"), ("assistant", "echo: hello\nworld")]


def test_response_with_prompt_and_without_model(em, spec):
    resp = ok(call(em, "POST", "/v1/responses", {"prompt": {"id": "pmpt_1"}, "input": "x"}))
    spec.validate("Response", resp)
    assert resp["prompt"]["id"] == "pmpt_1"
    e = error_of(call(em, "POST", "/v1/responses", {"input": "x"}), 400)
    assert e["code"] == "missing_required_parameter" and e["param"] == "model"


def test_response_stream_event_sequence(em, spec):
    conv = new_conversation(em)
    events = respond(em, conv, "stream me", stream=True).events()
    names = check_response_stream(spec, events)
    deltas = names.count("response.output_text.delta")
    assert names == (["response.created", "response.in_progress",
                      "response.output_item.added", "response.content_part.added"]
                     + ["response.output_text.delta"] * deltas
                     + ["response.output_text.done", "response.content_part.done",
                        "response.output_item.done", "response.completed"])
    assert deltas > 1, "the reply is streamed in several deltas"
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "echo: stream me"
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == text


def test_background_response_is_polled_from_queued_to_completed(em, spec):
    em.configure(latency_ms=150, queue_ms=40)
    conv = new_conversation(em)
    created = ok(respond(em, conv, "bg", background=True))
    spec.validate("Response", created)
    assert created["status"] == "queued" and created["background"] is True
    in_progress = call(em, "GET", "/v1/responses/" + created["id"])
    assert in_progress.headers["openai-poll-after-ms"] == "100"
    seen, final = poll(em, "/v1/responses/" + created["id"], {"completed"})
    assert seen == ["queued", "in_progress", "completed"]
    spec.validate("Response", final)
    assert final["output"][0]["content"][0]["text"] == "echo: bg"


def test_background_stream_can_be_resumed_after_a_sequence_number(em):
    em.configure(latency_ms=50)
    conv = new_conversation(em)
    first = respond(em, conv, "resume", background=True, stream=True).events()
    assert [n for n, _ in first[:3]] == ["response.created", "response.queued",
                                         "response.in_progress"]
    resp_id = first[0][1]["response"]["id"]
    tail = call(em, "GET", "/v1/responses/%s?stream=true&starting_after=5" % resp_id).events()
    assert [d["sequence_number"] for _, d in tail] == list(range(6, len(first)))


def test_conversation_locked_while_a_response_is_in_progress(em, spec):
    em.configure(latency_ms=300)
    conv = new_conversation(em)
    first = ok(respond(em, conv, "first", background=True))
    r = respond(em, conv, "second")
    spec.validate("ErrorResponse", ok(r, 400))
    assert r.json["error"] == {"message": LOCKED_MESSAGE, "type": "invalid_request_error",
                               "param": "conversation", "code": "conversation_locked"}
    assert LOCKED_MESSAGE == ("Another process is currently operating on this conversation. "
                              "Please retry in a few seconds.")
    poll(em, "/v1/responses/" + first["id"], {"completed"})
    em.configure(latency_ms=0)
    assert ok(respond(em, conv, "second"))["status"] == "completed"
    j = em.journal()["conversations"][conv]
    assert j["rejected"] == 1 and j["messages"] == ["first", "second"], \
        "a refused message is not journaled as received"
    turns = j["turns"]
    assert turns[0]["ended"] <= turns[1]["started"], "turns never overlap"


def test_cancel_background_response_frees_the_conversation(em, spec):
    em.configure(latency_ms=2000)
    conv = new_conversation(em)
    resp = ok(respond(em, conv, "slow one", background=True))
    cancelled = ok(call(em, "POST", "/v1/responses/%s/cancel" % resp["id"]))
    spec.validate("Response", cancelled)
    assert cancelled["status"] == "cancelled"
    assert ok(call(em, "POST", "/v1/responses/%s/cancel" % resp["id"]))["status"] == \
        "cancelled", "cancelling again is a no-op"
    em.configure(latency_ms=0)
    sync = ok(respond(em, conv, "next"))
    assert sync["status"] == "completed"
    assert sync["output"][0]["content"][0]["text"] == "echo: next"
    e = error_of(call(em, "POST", "/v1/responses/%s/cancel" % sync["id"]), 400)
    assert e["message"] == "Cannot cancel a synchronous response."
    assert [t["status"] for t in em.journal()["conversations"][conv]["turns"]] == [
        "cancelled", "completed"]


def test_responses_parallel_tool_calls_then_outputs(em, spec):
    conv = new_conversation(em)
    events = respond(em, conv, 'weather? [[tool:get_weather {"city": "Paris"}]] '
                     '[[tool:get_time]]', stream=True).events()
    names = check_response_stream(spec, events)
    per_call = ["response.output_item.added", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done"]
    assert names == ["response.created", "response.in_progress"] + per_call * 2 + [
        "response.completed"]
    final = events[-1][1]["response"]
    assert final["status"] == "completed", "a response that asks for tools is complete"
    calls = final["output"]
    assert [(c["type"], c["name"], c["arguments"], c["status"]) for c in calls] == [
        ("function_call", "get_weather", '{"city":"Paris"}', "completed"),
        ("function_call", "get_time", "{}", "completed")]
    assert all(c["call_id"].startswith("call_") and c["id"].startswith("fc_") for c in calls)

    # Not locked, but the next request must answer every call.
    e = error_of(respond(em, conv, "more"), 400)
    assert e["message"] == "No tool output found for function call %s." % calls[0]["call_id"]
    e = error_of(respond(em, conv, [{"type": "function_call_output", "call_id": "call_x",
                                     "output": "1"}]), 400)
    assert e["message"] == "No tool call found for function call output with call_id call_x."

    done = ok(respond(em, conv, [
        {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "sunny"},
        {"type": "function_call_output", "call_id": calls[1]["call_id"], "output": "noon"}]))
    spec.validate("Response", done)
    assert done["output"][0]["content"][0]["text"] == (
        'echo: weather? [[tool:get_weather {"city": "Paris"}]] [[tool:get_time]]'
        " | tools: get_weather=sunny,get_time=noon")
    items = ok(call(em, "GET", "/v1/conversations/%s/items?order=asc" % conv))
    spec.validate("ConversationItemList", items)
    assert [i["type"] for i in items["data"]] == [
        "message", "function_call", "function_call", "function_call_output",
        "function_call_output", "message"]
    inputs = ok(call(em, "GET", "/v1/responses/%s/input_items" % done["id"]))
    spec.validate("ResponseItemList", inputs)
    j = em.journal()["conversations"][conv]
    assert [t["input_count"] for t in j["turns"]] == [1, 2] and j["rejected"] == 0


def test_response_fail_marker_and_slow_marker(em, spec):
    conv = new_conversation(em)
    events = respond(em, conv, "boom [[fail]]", stream=True).events()
    assert check_response_stream(spec, events) == [
        "response.created", "response.in_progress", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    started = time.time()
    assert ok(respond(em, conv, "after [[slow:200]]"))["status"] == "completed", \
        "a failed response frees the conversation"
    assert time.time() - started >= 0.2


def test_previous_response_id_chain_carries_tool_calls(em):
    first = ok(call(em, "POST", "/v1/responses", {"model": "m", "input": "[[tool:f]]"}))
    call_id = first["output"][0]["call_id"]
    second = ok(call(em, "POST", "/v1/responses", {
        "model": "m", "previous_response_id": first["id"],
        "input": [{"type": "function_call_output", "call_id": call_id, "output": "ok"}]}))
    assert second["output"][0]["content"][0]["text"] == "echo: [[tool:f]] | tools: f=ok"


# ---------------------------------------------------------------------------------------------
# Assistants v2

def test_assistants_routes_need_the_beta_header(em, spec):
    r = call(em, "POST", "/v1/threads", {})
    spec.validate("ErrorResponse", ok(r, 400))
    assert r.json["error"] == {
        "message": "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
                   "Please try again by setting the header 'OpenAI-Beta: assistants=v2'.",
        "type": "invalid_request_error", "param": None, "code": "invalid_beta"}


def test_thread_messages_and_polled_run(em, spec):
    em.configure(latency_ms=100, queue_ms=30)
    thread = ok(call(em, "POST", "/v1/threads", {
        "metadata": {"user": "u1"}, "messages": [{"role": "user", "content": "hi"}]}, BETA))
    spec.validate("ThreadObject", thread)
    tid = thread["id"]
    assert tid.startswith("thread_")
    spec.validate("ThreadObject", ok(call(em, "GET", "/v1/threads/" + tid, headers=BETA)))
    msg = ok(call(em, "POST", "/v1/threads/%s/messages" % tid, {
        "role": "user", "content": [{"type": "text", "text": "there"}],
        "metadata": {"runlane_message_id": "m2"}}, BETA))
    spec.validate("MessageObject", msg)
    assert msg["id"].startswith("msg_") and msg["thread_id"] == tid
    spec.validate("MessageObject", ok(call(em, "GET", "/v1/threads/%s/messages/%s"
                                           % (tid, msg["id"]), headers=BETA)))

    run = ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {
        "assistant_id": "asst_1", "instructions": "be kind", "additional_instructions": "short",
        "metadata": {"batch": "b1"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, BETA))
    spec.validate("RunObject", run)
    assert run["status"] == "queued" and run["id"].startswith("run_")
    assert run["instructions"] == "be kind\nshort" and run["metadata"] == {"batch": "b1"}
    r = call(em, "GET", "/v1/threads/%s/runs/%s" % (tid, run["id"]), headers=BETA)
    assert r.headers["openai-poll-after-ms"]
    seen, final = poll(em, "/v1/threads/%s/runs/%s" % (tid, run["id"]), {"completed"},
                       headers=BETA)
    assert seen == ["queued", "in_progress", "completed"]
    spec.validate("RunObject", final)
    assert final["usage"]["total_tokens"] > 0 and final["completed_at"]

    runs = ok(call(em, "GET", "/v1/threads/%s/runs" % tid, headers=BETA))
    spec.validate("ListRunsResponse", runs)
    assert [x["id"] for x in runs["data"]] == [run["id"]]
    messages = ok(call(em, "GET", "/v1/threads/%s/messages?order=asc" % tid, headers=BETA))
    spec.validate("ListMessagesResponse", messages)
    assert [(m["role"], m["content"][0]["text"]["value"]) for m in messages["data"]] == [
        ("user", "hi"), ("user", "there"), ("assistant", "echo: hi\nthere")]
    assert messages["data"][-1]["run_id"] == run["id"]
    by_run = ok(call(em, "GET", "/v1/threads/%s/messages?run_id=%s" % (tid, run["id"]),
                     headers=BETA))
    assert len(by_run["data"]) == 1


def test_assistants_stream_event_sequence(em, spec):
    tid = new_thread(em, "stream")
    events = call(em, "POST", "/v1/threads/%s/runs" % tid,
                  {"assistant_id": "asst_1", "stream": True}, BETA).events()
    names = check_assistants_stream(spec, events)
    deltas = names.count("thread.message.delta")
    assert deltas > 1
    assert names == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                     "thread.run.step.created", "thread.run.step.in_progress",
                     "thread.message.created", "thread.message.in_progress"] + \
        ["thread.message.delta"] * deltas + [
        "thread.message.completed", "thread.run.step.completed", "thread.run.completed",
        "done"]
    text = "".join(d["delta"]["content"][0]["text"]["value"]
                   for n, d in events if n == "thread.message.delta")
    assert text == "echo: stream"


def test_create_thread_and_run_stream_opens_with_the_thread(em, spec):
    events = call(em, "POST", "/v1/threads/runs", {
        "assistant_id": "asst_1", "stream": True,
        "thread": {"messages": [{"role": "user", "content": "new"}]}}, BETA).events()
    names = check_assistants_stream(spec, events)
    assert names[:2] == ["thread.created", "thread.run.created"]
    assert names[-2:] == ["thread.run.completed", "done"]
    run = ok(call(em, "POST", "/v1/threads/runs", {
        "assistant_id": "asst_1", "thread": {"messages": [{"role": "user", "content": "x"}]}},
        BETA))
    spec.validate("RunObject", run)
    assert run["thread_id"].startswith("thread_")


def test_thread_locks_while_a_run_is_active(em, spec):
    em.configure(latency_ms=300)
    tid = new_thread(em, "one")
    run = ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA))
    r = call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA)
    spec.validate("ErrorResponse", ok(r, 400))
    assert r.json["error"] == {"message": "Thread %s already has an active run %s."
                               % (tid, run["id"]), "type": "invalid_request_error",
                               "param": None, "code": None}
    r = call(em, "POST", "/v1/threads/%s/messages" % tid, {"role": "user", "content": "two"},
             BETA)
    assert error_of(r, 400)["message"] == "Can't add messages to %s while a run %s is active." \
        % (tid, run["id"])
    r = call(em, "POST", "/v1/threads/%s/runs" % tid, {
        "assistant_id": "a", "additional_messages": [{"role": "user", "content": "two"}]}, BETA)
    assert error_of(r, 400)["message"].startswith("Thread %s already has an active run" % tid)
    poll(em, "/v1/threads/%s/runs/%s" % (tid, run["id"]), {"completed"}, headers=BETA)
    j = em.journal()["conversations"][tid]
    assert j["rejected"] == 3 and j["messages"] == ["one"]


def test_assistants_parallel_tool_calls_and_streamed_submit(em, spec):
    tid = new_thread(em)
    run = ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {
        "assistant_id": "a", "additional_messages": [
            {"role": "user", "content": '[[tool:a {"x": 1}]] and [[tool:b]]'}]}, BETA))
    _, waiting = poll(em, "/v1/threads/%s/runs/%s" % (tid, run["id"]), {"requires_action"},
                      headers=BETA)
    spec.validate("RunObject", waiting)
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("function", "a", '{"x":1}'), ("function", "b", "{}")]
    assert all(c["id"].startswith("call_") for c in calls)
    # requires_action is active: the thread stays locked.
    r = call(em, "POST", "/v1/threads/%s/messages" % tid, {"role": "user", "content": "x"}, BETA)
    assert r.status == 400
    path = "/v1/threads/%s/runs/%s/submit_tool_outputs" % (tid, run["id"])
    e = error_of(call(em, "POST", path, {"tool_outputs": [
        {"tool_call_id": calls[0]["id"], "output": "1"}]}, BETA), 400)
    assert e["message"].startswith("Expected tool outputs for call_ids")
    events = call(em, "POST", path, {"stream": True, "tool_outputs": [
        {"tool_call_id": calls[0]["id"], "output": "A"},
        {"tool_call_id": calls[1]["id"], "output": "B"}]}, BETA).events()
    names = check_assistants_stream(spec, events)
    assert names[:4] == ["thread.run.step.completed", "thread.run.queued",
                         "thread.run.in_progress", "thread.run.step.created"]
    assert names[-2:] == ["thread.run.completed", "done"]
    completed = [d for n, d in events if n == "thread.message.completed"][0]
    assert completed["content"][0]["text"]["value"] == \
        'echo: [[tool:a {"x": 1}]] and [[tool:b]] | tools: a=A,b=B'
    e = error_of(call(em, "POST", path, {"tool_outputs": []}, BETA), 400)
    assert e["message"] == 'Runs in status "completed" do not accept tool outputs.'


def test_assistants_stream_stops_at_requires_action(em, spec):
    tid = new_thread(em, "[[tool:lookup]]")
    events = call(em, "POST", "/v1/threads/%s/runs" % tid,
                  {"assistant_id": "a", "stream": True}, BETA).events()
    names = check_assistants_stream(spec, events)
    assert names[-2:] == ["thread.run.requires_action", "done"]
    assert "thread.run.step.created" in names


def test_assistants_fail_marker_and_cancel(em, spec):
    tid = new_thread(em, "x [[fail]]")
    events = call(em, "POST", "/v1/threads/%s/runs" % tid,
                  {"assistant_id": "a", "stream": True}, BETA).events()
    assert check_assistants_stream(spec, events)[-2:] == ["thread.run.failed", "done"]
    failed = events[-2][1]
    assert failed["last_error"]["code"] == "server_error" and failed["failed_at"]

    em.configure(latency_ms=2000, queue_ms=100)
    ok(call(em, "POST", "/v1/threads/%s/messages" % tid, {"role": "user", "content": "y"},
            BETA))
    run = ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA))
    cancelling = ok(call(em, "POST", "/v1/threads/%s/runs/%s/cancel" % (tid, run["id"]), {},
                         BETA))
    spec.validate("RunObject", cancelling)
    assert cancelling["status"] == "cancelling"
    r = call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA)
    assert r.status == 400, "a cancelling run still holds the thread"
    _, cancelled = poll(em, "/v1/threads/%s/runs/%s" % (tid, run["id"]), {"cancelled"},
                        headers=BETA)
    assert cancelled["cancelled_at"]
    e = error_of(call(em, "POST", "/v1/threads/%s/runs/%s/cancel" % (tid, run["id"]), {}, BETA),
                 400)
    assert e["message"] == "Cannot cancel run with status 'cancelled'."
    em.configure(latency_ms=0)
    assert ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA))


def test_run_waiting_for_tool_outputs_expires(em):
    em.configure(run_expires_s=0.1)
    tid = new_thread(em, "[[tool:t]]")
    run = ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA))
    seen, final = poll(em, "/v1/threads/%s/runs/%s" % (tid, run["id"]), {"expired"},
                       headers=BETA)
    assert "requires_action" in seen and final["expires_at"] is None
    assert ok(call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a"}, BETA))


# ---------------------------------------------------------------------------------------------
# Faults, auth, journal, robustness

def test_forced_faults_of_each_kind(em, spec):
    em.configure(retry_after_ms=1500, fault_slow_ms=200)
    em.force_fault("429", path="/conversations")
    r = call(em, "POST", "/v1/conversations", {})
    spec.validate("ErrorResponse", ok(r, 429))
    assert r.json["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "2" and r.headers["retry-after-ms"] == "1500"

    em.force_fault("500", method="POST")
    r = call(em, "POST", "/v1/conversations", {})
    spec.validate("ErrorResponse", ok(r, 500))
    assert r.json["error"]["type"] == "server_error"

    em.force_fault("reset")
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        call(em, "POST", "/v1/conversations", {})
    assert em.journal()["conversations"] == {}, "a reset request has no side effect"

    em.force_fault("slow")
    started = time.time()
    assert ok(call(em, "POST", "/v1/conversations", {}))["object"] == "conversation"
    assert time.time() - started >= 0.2

    em.force_fault("drop")
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        call(em, "POST", "/v1/conversations", {})
    assert len(em.journal()["conversations"]) == 2, "a dropped request did take effect"
    assert em.journal()["faults"] == 5
    assert [r["fault"] for r in em.requests(5)] == ["429", "500", "reset", "slow", "drop"]


def test_forced_faults_via_the_control_endpoint(em):
    r = call(em, "POST", "/_emulator/faults",
             {"kind": "500", "count": 2, "method": "GET", "path": "/responses/"})
    assert r.status == 200 and len(r.json) == 1
    assert call(em, "GET", "/v1/responses/resp_a").status == 500
    assert call(em, "POST", "/v1/conversations", {}).status == 200, "method did not match"
    assert call(em, "GET", "/v1/responses/resp_a").status == 500
    assert call(em, "GET", "/v1/responses/resp_a").status == 404
    assert call(em, "POST", "/_emulator/faults", {"kind": "nope"}).status == 400


def test_drop_fault_cuts_a_stream_but_the_turn_completes(em):
    em.force_fault("drop", path="/responses")
    conv = new_conversation(em)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        respond(em, conv, "cut", stream=True)
    assert ok(respond(em, conv, "next"))["status"] == "completed"
    assert [t["status"] for t in em.journal()["conversations"][conv]["turns"]] == [
        "completed", "completed"]


def test_random_faults_are_seeded_and_replayable(em):
    def run():
        em.reset()
        em.configure(fault_rate=0.5, fault_kinds="429,500", retry_after_ms=0)
        return [call(em, "GET", "/v1/conversations/conv_x").status for _ in range(20)]

    first, second = run(), run()
    assert first == second, "the same seed gives the same faults"
    assert set(first) == {404, 429, 500}
    assert em.journal()["faults"] == sum(1 for s in first if s != 404)
    assert em.journal()["requests"] == 20


def test_api_key_is_checked_bearer_or_azure_header(em, spec):
    em.configure(api_key="sk-test-secret")
    r = call(em, "POST", "/v1/conversations", {})
    spec.validate("ErrorResponse", ok(r, 401))
    assert r.json["error"]["code"] == "invalid_api_key"
    e = error_of(call(em, "POST", "/v1/conversations", {},
                      {"Authorization": "Bearer sk-wrong-key"}), 401)
    assert e["code"] == "invalid_api_key" and e["message"].startswith(
        "Incorrect API key provided: sk-*****-key.")
    assert call(em, "POST", "/v1/conversations", {},
                {"Authorization": "Bearer sk-test-secret"}).status == 200
    assert call(em, "POST", "/v1/conversations", {}, {"api-key": "sk-test-secret"}).status == 200
    assert call(em, "GET", "/_emulator/journal").status == 200, "control needs no key"
    logged = em.requests(2)
    assert logged[0]["headers"]["Authorization"] == "Bearer <redacted>"
    assert logged[1]["headers"]["api-key"] == "<redacted>"
    assert "sk-test-secret" not in json.dumps(call(em, "GET", "/_emulator/requests").json)


def test_journal_counts_messages_turns_and_duplicates(em):
    tid = new_thread(em)
    for text, mid in (("a", "m1"), ("b", "m2"), ("a again", "m1")):
        ok(call(em, "POST", "/v1/threads/%s/messages" % tid, {
            "role": "user", "content": text, "metadata": {"runlane_message_id": mid}}, BETA))
    assert call(em, "POST", "/v1/threads/%s/runs" % tid, {"assistant_id": "a", "stream": True},
                BETA).events()[-1] == ("done", "[DONE]")
    conv = new_conversation(em)
    ok(respond(em, conv, [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}],
               metadata={"runlane_message_ids": "r1,r2"}))
    ok(respond(em, conv, "y again", metadata={"runlane_message_ids": '["r2"]'}))

    # The journal over HTTP is the same as in process.
    j = ok(call(em, "GET", "/_emulator/journal"))
    assert j == json.loads(json.dumps(em.journal()))
    t, c = j["conversations"][tid], j["conversations"][conv]
    assert t["messages"] == ["a", "b", "a again"] and t["duplicates"] == 1
    assert [(x["status"], x["input_count"]) for x in t["turns"]] == [("completed", 3)]
    assert set(t["turns"][0]) >= {"id", "started", "ended", "status", "input_count"}
    assert c["messages"] == ["x", "y", "y again"] and c["duplicates"] == 1
    assert j["requests"] == 8 and j["faults"] == 0


def test_requests_log_shows_what_clients_send(em):
    conv = new_conversation(em)
    respond(em, conv, "logged", metadata={"a": "b"})
    last = ok(call(em, "GET", "/_emulator/requests?limit=1"))
    assert len(last) == 1
    entry = last[0]
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/v1/responses", 200)
    assert entry["body"]["input"] == "logged" and entry["headers"]["Content-Type"] == \
        "application/json"


def test_control_config_and_reset(em):
    cfg = ok(call(em, "POST", "/_emulator/config", {"latency_ms": 5, "fault_kinds": ["slow"]}))
    assert cfg["latency_ms"] == 5 and cfg["fault_kinds"] == ["slow"]
    assert call(em, "POST", "/_emulator/config", {"nope": 1}).status == 400
    new_conversation(em)
    assert ok(call(em, "POST", "/_emulator/reset", {})) == {"ok": True}
    assert em.journal() == {"conversations": {}, "requests": 0, "faults": 0}
    assert em.config()["latency_ms"] == 0, "reset restores the start-up configuration"


def test_client_disconnect_mid_stream_leaves_the_server_healthy(em):
    em.configure(latency_ms=300)
    conv = new_conversation(em)
    sock = socket.create_connection(("127.0.0.1", em.port), timeout=5)
    body = json.dumps({"model": "m", "conversation": conv, "input": "bye", "stream": True})
    sock.sendall(("POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
    received = b""
    while b"response.created" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the stream closed before its first event"
        received += chunk
    sock.close()
    deadline = time.time() + 5
    while em.journal()["conversations"][conv]["turns"][0]["status"] != "completed":
        assert time.time() < deadline, "the turn did not complete after the client left"
        time.sleep(0.02)
    em.configure(latency_ms=0)
    assert ok(respond(em, conv, "still here"))["status"] == "completed"


def test_marker_parsing():
    assert parse_markers('[[tool:f {"a": [[1]], "b": "]]"}]]') == (
        [("f", '{"a":[[1]],"b":"]]"}')], False, 0)
    assert parse_markers("[[tool:g]] [[tool:h {}]] [[slow:10]] [[slow:5]] [[fail]]") == (
        [("g", "{}"), ("h", "{}")], True, 15)
    assert parse_markers("[[tool:broken {nope]]") == ([], False, 0)


# ---------------------------------------------------------------------------------------------
# Test modes (the chaos suite's ground truth)

def test_without_conversation_lock_concurrent_creates_are_accepted_and_journaled(em):
    em.configure(latency_ms=300, conversation_lock=0)
    conv = new_conversation(em)
    first = ok(respond(em, conv, "first", background=True))
    second = ok(respond(em, conv, "second", background=True))
    for r in (first, second):
        poll(em, "/v1/responses/" + r["id"], {"completed"})
    assert ok(respond(em, conv, "third"))["status"] == "completed"
    j = em.journal()["conversations"][conv]
    assert j["rejected"] == 0 and j["overlaps"] == 1, j
    t = j["turns"]
    assert t[0]["ended"] > t[1]["started"], "the journal's turns show the overlap"
    assert t[1]["ended"] <= t[2]["started"]


def test_fail_always_fails_every_retry_until_new_text_comes(em):
    conv = new_conversation(em)
    bad = ok(respond(em, conv, "doomed [[fail-always]]"))
    assert bad["status"] == "failed" and "[[fail-always]]" in bad["error"]["message"]
    for _ in range(3):  # retries that add nothing (runlane's, after reconciling) fail too
        again = ok(call(em, "POST", "/v1/responses", {"model": "m", "conversation": conv}))
        assert again["status"] == "failed"
    good = ok(respond(em, conv, "next"))
    assert good["status"] == "completed"
    assert good["output"][0]["content"][0]["text"] == "echo: next"
    j = em.journal()["conversations"][conv]
    assert [t["status"] for t in j["turns"]] == ["failed"] * 4 + ["completed"]


def test_fail_once_retry_answers_the_failed_texts_when_asked(em):
    for later, want in ((0, "echo: "), (1, "echo: a\nb [[fail]]")):
        em.configure(fail_answered_later=later)
        conv = new_conversation(em)
        assert ok(respond(em, conv, [{"role": "user", "content": "a"},
                                     {"role": "user", "content": "b [[fail]]"}]))["status"] \
            == "failed"
        retry = ok(call(em, "POST", "/v1/responses", {"model": "m", "conversation": conv}))
        assert retry["status"] == "completed", "[[fail]] fails once"
        assert retry["output"][0]["content"][0]["text"] == want


def test_request_log_file_holds_every_request_and_can_be_broken(tmp_path):
    path = tmp_path / "requests.jsonl"
    with Emulator(request_log_path=str(path), fault_rate=0.3, fault_kinds=["reset", "500"],
                  seed=3) as em:
        for _ in range(2100):  # more than the in-memory ring (2000) holds
            try:
                call(em, "POST", "/v1/conversations", {}, timeout=5)
            except (ConnectionError, http.client.HTTPException):
                pass  # a reset fault
        total = em.journal()["requests"]
    seqs = sorted(json.loads(line)["seq"] for line in path.read_text().splitlines())
    assert total == 2100 and seqs == list(range(1, total + 1))
    broken = tmp_path / "broken.jsonl"
    with Emulator(request_log_path=str(broken), request_log_drop_every=3) as em:
        for _ in range(9):
            call(em, "POST", "/v1/conversations", {})
    assert len(broken.read_text().splitlines()) == 6


def test_cli_takes_modes_and_request_log(tmp_path):
    log = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "emulator.py"), "--port", "0",
                             "--request-log", str(log), "--set", "conversation_lock=0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().strip().split("=")[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/_emulator/config")
        assert json.loads(conn.getresponse().read())["conversation_lock"] == 0
        conn.request("POST", "/v1/conversations", body="{}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    assert [json.loads(x)["path"] for x in log.read_text().splitlines()] == ["/v1/conversations"]
    bad = subprocess.run([sys.executable, os.path.join(HERE, "emulator.py"), "--set", "nope=1"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "nope" in bad.stderr
