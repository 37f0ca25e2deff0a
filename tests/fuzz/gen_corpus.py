#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target under tests/fuzz/corpus/<target>/.

The seeds are committed; run this again only to change them (it rewrites
the seed_* files and leaves anything else, e.g. inputs a long run added).
Formats: see the opening comment of each tests/fuzz/fuzz_<target>.c.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
API_KEY = "sk-fuzz-SECRET-4f1c9a77e2b0d35"  # as in fuzz_provider.c


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


# ---- sse: 2 chunking bytes, then the stream ----
write("sse", "openai_deltas", b"\x07\x03" + (
    b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n"
    b"event: response.output_text.delta\ndata: {\"delta\":\"Hel\"}\n\n"
    b": keep-alive\n\n"
    b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"))
write("sse", "crlf_multiline_id_retry", b"\x01\x00" + (
    b"\xef\xbb\xbfid: 7\r\nretry: 1500\r\ndata: line one\r\ndata:line two\r\n\r\n"
    b"event:custom\rdata\r\r"
    b"id\nretry: x1\ndata: after empty id\n\n"
    b"data: unterminated"))
write("sse", "split_bom_nul", b"\x3f\xff" + b"\xef\xbb" + b"data: \x00nul\n\nevent: \x00\ndata: x\n\nid: a\x00b\n\n")
write("sse", "comments_and_unknown", b"\x10\x10" + (
    b":comment only\n\nfoo: bar\ndata: 1\n\ndata\n\ndata:\n\nevent: done\n\n"))

# ---- conf: [k][value]\0 (k >= 0xE0: raw key\0 first) ----
def raw(key, value):
    return b"\xe0" + key.encode() + b"\x00" + value.encode() + b"\x00"

write("conf", "store_urls", raw("store", "redis://alice:s3cretPass@127.0.0.1:6379/0")
      + raw("store", "redis://:onlyPassw0rd@localhost/1")
      + raw("store", "unix://u:sockPassw0rd@/run/redis.sock?db=2")
      + raw("store", "memory://jobs") + raw("store", "rediss://h:1/0") + raw("store", "ftp://x"))
write("conf", "secrets", raw("openai.api.key", API_KEY)
      + raw("openai.headers", "{\"api-key\":\"azureSecretValue\"}")
      + raw("openai.headers", "{\"x\":1}") + raw("openai.api.key", "\xff\xfe"))
write("conf", "numbers_enums", raw("batch.window.ms", "0") + raw("batch.window.ms", "-1")
      + raw("batch.window.ms", "99999999999999999999") + raw("backoff.jitter", "0.25")
      + raw("backoff.jitter", "nan") + raw("backend", "responses") + raw("backend", "Responses")
      + raw("openai.stream", "false") + raw("key.prefix", "a b") + raw("no.such.key", "1"))
write("conf", "table_keys", bytes([0, 0]) + b"memory\x00" + bytes([1]) + b"rl:x\x00" + bytes([2]) + b"8\x00"
      + bytes([30]) + b"[]\x00" + bytes([31]) + b"{}\x00")

# ---- store: [op] fields\0 ----
def enq(conv_sel, content, opts=""):
    return b"\x00" + bytes([conv_sel]) + content.encode() + b"\x00" + opts.encode() + b"\x00"

def enq_raw(conv, content, opts=""):
    return b"\x00\xff" + conv.encode() + b"\x00" + content.encode() + b"\x00" + opts.encode() + b"\x00"

def many(msgs):
    return b"\x01" + json.dumps(msgs).encode() + b"\x00"

write("store", "enqueue_options", enq(0, "hello") + enq(0, "again", '{"idempotency_key":"k1"}')
      + enq(0, "dup", '{"idempotency_key":"k1"}') + enq(1, "x", '{"instructions":"be brief","metadata":{"a":"b"}}')
      + enq(2, "\U0001F642", '{"metadata":{"a":1}}') + enq(3, "y", '{"bogus":true}') + enq(0, "z", "[1]"))
write("store", "enqueue_many", many([
    {"conversation_id": "a", "content": "1"},
    {"conversation_id": "a", "content": "2", "idempotency_key": "k"},
    {"conversation_id": "a", "content": "3", "idempotency_key": "k"},
    {"conversation_id": "b{x}", "content": "4", "instructions": "i", "metadata": {"m": "v"}},
]) + many([{"conversation_id": "a", "content": "bad", "metadata": "nope"}])
   + many({"not": "an array"}) + many([]))
write("store", "odd_ids", enq_raw("x" * 256, "max id") + enq_raw("x" * 257, "too long")
      + enq_raw("tab\tid", "ctl") + enq_raw("\xc3\x28", "bad utf8 id") + enq_raw("ok", "\xed\xa0\x80")
      + enq_raw("q\"'\\*?[]{}: ", "redis.call('FLUSHALL')"))

# ---- provider: [flags] responses separated by "\n=====\n" ----
D = "\n=====\n"

def sse(events):
    return "".join("event: %s\ndata: %s\n\n" % (e, json.dumps(d)) for e, d in events)

def r(status, kind, body, headers=()):
    return "%d %s\n%s\n%s" % (status, kind, "".join(h + "\n" for h in headers), body)

def prov(name, flags, responses):
    write("provider", name, bytes([flags]) + D.join(responses).encode())

snapshot = r(200, "json", json.dumps({"object": "list", "data": [{"id": "msg_0", "type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "old"}]}], "has_more": False, "last_id": "msg_0"}))
usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
done_msg = {"id": "resp_1", "status": "completed", "usage": usage,
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]}]}
prov("responses_stream", 0x02, [snapshot, r(200, "sse", sse([
    ("response.created", {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hel"}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "lo!"}),
    ("response.completed", {"type": "response.completed", "response": done_msg})]))])
prov("responses_poll", 0x10, [snapshot,
    r(200, "json", json.dumps({"id": "resp_\u00e4 /x?y#z", "status": "queued"}), ["openai-poll-after-ms: 1"]),
    r(200, "json", json.dumps({"id": "resp_\u00e4 /x?y#z", "status": "in_progress"}), ["openai-poll-after-ms: 1"]),
    r(200, "json", json.dumps(dict(done_msg, id="resp_\u00e4 /x?y#z")))])
calls = {"id": "resp_2", "status": "completed", "usage": usage, "output": [
    {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"x\":1}"}]}
prov("responses_tools", 0x82, [snapshot,
    r(200, "sse", sse([("response.completed", {"type": "response.completed", "response": calls})])),
    r(200, "sse", sse([("response.completed", {"type": "response.completed", "response": done_msg})]))])
prov("responses_tools_timeout", 0x0A, [snapshot,
    r(200, "sse", sse([("response.completed", {"type": "response.completed", "response": calls})])),
    r(200, "json", "{}")])
prov("responses_key_echo", 0x00, [snapshot, r(401, "json", json.dumps({"error": {
    "message": "Incorrect API key provided: %s. You can find your API key at ..." % API_KEY,
    "type": "invalid_request_error", "code": "invalid_api_key"}}), ["x-request-id: req_%s" % API_KEY])])
prov("responses_locked", 0x00, [snapshot, r(400, "json", json.dumps({"error": {
    "message": "Another response is in progress", "type": "invalid_request_error", "code": "conversation_locked"}}))])
prov("responses_retry_then_ok", 0x40, [snapshot, r(500, "json", "{\"error\":{\"message\":\"boom\"}}", ["retry-after-ms: 1"]),
    r(200, "json", json.dumps(done_msg))])
prov("responses_stream_error", 0x02, [snapshot, r(200, "sse", sse([
    ("response.created", {"type": "response.created", "response": {"id": "resp_3"}}),
    ("error", {"type": "error", "code": "server_error", "message": "echo " + API_KEY})]))])
prov("responses_reconcile", 0x52, [snapshot, r(0, "json", ""), r(200, "json", json.dumps({"object": "list", "data": [
    {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello 0"}]},
    {"id": "msg_2", "type": "message", "role": "user", "content": "hello 1"},
    {"id": "msg_3", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}],
    "has_more": False, "last_id": "msg_3"}))])
run = {"id": "run_1", "object": "thread.run", "status": "queued", "metadata": {}}
run_done = dict(run, status="completed", usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})
messages = r(200, "json", json.dumps({"object": "list", "data": [{"id": "msg_1", "role": "assistant", "run_id": "run_1",
    "content": [{"type": "text", "text": {"value": "Hi there", "annotations": []}}]}], "has_more": False}))
prov("assistants_stream", 0x03, [r(200, "sse", sse([
    ("thread.run.created", run), ("thread.run.in_progress", dict(run, status="in_progress")),
    ("thread.message.delta", {"id": "msg_1", "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "Hi"}}]}}),
    ("thread.run.completed", run_done)]) + "event: done\ndata: [DONE]\n\n"), messages])
ra = dict(run, status="requires_action", required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}})
prov("assistants_poll_tools", 0x81, [r(200, "json", json.dumps(run), ["openai-poll-after-ms: 2"]),
    r(200, "json", json.dumps(ra), ["openai-poll-after-ms: 1"]),
    r(200, "json", json.dumps(dict(run, status="in_progress")), ["openai-poll-after-ms: 1", "x-request-id: req_1"]),
    r(200, "json", json.dumps(run_done)), messages])
prov("assistants_active_run", 0x01, [r(400, "json", json.dumps({"error": {
    "message": "Thread thread_fuzz already has an active run run_9.", "type": "invalid_request_error"}})),
    r(200, "json", json.dumps(dict(run, id="run_9", status="in_progress", metadata={"runlane_batch_id": "other"})))])
prov("assistants_failed", 0x01, [r(200, "json", json.dumps(dict(run, status="failed", last_error={
    "code": "server_error", "message": "key " + API_KEY})))])

# provider, with the host's own tool outputs ("\n=====outputs\n" section; $ID: the first call's id)
OD = b"\n=====outputs\n"
tools_script = [snapshot,
    r(200, "sse", sse([("response.completed", {"type": "response.completed", "response": calls})])),
    r(200, "sse", sse([("response.completed", {"type": "response.completed", "response": done_msg})]))]
write("provider", "responses_tools_host_outputs", bytes([0x82]) + D.join(tools_script).encode() + OD
      + b'[{"tool_call_id":"$ID","output":"{\\"ok\\":1} \xc3\xa9"},{"tool_call_id":"call_x","output":"?"}]')
write("provider", "responses_tools_host_outputs_bad", bytes([0x82]) + D.join(tools_script).encode() + OD
      + b'[{"tool_call_id":"$ID","output":5}, 7]')
write("provider", "assistants_tools_host_outputs", bytes([0x81]) + D.join([
    r(200, "json", json.dumps(run), ["openai-poll-after-ms: 2"]),
    r(200, "json", json.dumps(ra), ["openai-poll-after-ms: 1"]),
    r(200, "json", json.dumps(run_done)), messages]).encode() + OD
      + b'[{"tool_call_id":"$ID","output":"line\\nnext\\u00e9"}]')

# ---- redis_reply: [conv] then RESP replies of the claim script ----
def bulk(s):
    b = s.encode() if isinstance(s, str) else s
    return b"$%d\r\n%s\r\n" % (len(b), b)

def arr(*items):
    return b"*%d\r\n" % len(items) + b"".join(items)

def ints(n):
    return b":%d\r\n" % n

rec = json.dumps([{"id": "m1-0", "content": "hello", "ts_ms": 1700000000000},
                  {"id": "m2-0", "content": "\u00e9t\u00e9 \U0001F642", "ts_ms": 1700000000001,
                   "instructions": "be brief", "metadata": {"user": "u1"}}])
ckpt = json.dumps({"response_id": "resp_1", "batch_id": "b1-0-1"})
write("redis_reply", "claim", b"\x00" + arr(bulk("b1700000000000-0-1"), bulk("7"), ints(1),
      bulk("1700000030000"), bulk(rec)))
write("redis_reply", "claim_with_checkpoint", b"\x01" + arr(bulk("b1-0-2"), bulk("12"), bulk("3"),
      ints(1700000030000), bulk(rec), bulk(ckpt)))
write("redis_reply", "claim_odd_shapes", b"\x02" + arr(bulk("b"), bulk("1"), b"$-1\r\n", b"+OK\r\n", bulk("[]"))
      + arr(bulk("b"), bulk("1"), ints(1), ints(2), bulk("[{\"id\":1}]"), arr())
      + b"-ERR nope\r\n" + b"$-1\r\n" + arr(bulk("x" * 200), bulk("1"), ints(1), ints(1), bulk("[]"))
      + arr(bulk("b"), bulk("1"), ints(1), ints(1), bulk(b"[{\"id\":\"m\",\"content\":\"\xff\",\"ts_ms\":1}]"))
      + arr(bulk("b"), bulk("1"), ints(1), ints(1), bulk("[] trailing")))

# ---- cli: [op] then bytes (0: --file, 1: --exec stderr chunks, 2: --tool-exec output) ----
write("cli", "jsonl", b"\x00" + (
    b'{"conversation_id":"c1","content":"hello"}\n'
    b'\n   \t\r\n'
    b'  {"conversation_id":"c1","content":"again","idempotency_key":"k1"}\r\n'
    b'{"conversation_id":"c2","content":"\\u00e9t\\u00e9","metadata":{"a":"b"}}'))
write("cli", "jsonl_bad_line", b"\x00" + b'{"conversation_id":"c1","content":"ok"}\n[1,2]\n')
write("cli", "jsonl_bad_member", b"\x00" + b'{"conversation_id":1,"content":"x"}\n')
write("cli", "exec_stderr", b"\x01" + b"\x0cTraceback...\n" + b"\x20" + b"  File \"x.py\", line 1\n\xc3\xa9\x00\x1b[31m"
      + b"\xff\x41" + b"\x10error: boom \xe2\x82\n\n")
write("cli", "tool_ok", b"\x02\x00" + b"get_weather\x00" + b'{"temp": 21}\n\n')
write("cli", "tool_failed", b"\x02\x01" + b"lookup_customer_by_phone_number_in_the_crm\x00" + b"not found\xff\x07\r\n")
