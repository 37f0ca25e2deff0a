#!/usr/bin/env python3
"""Python worker of the chaos suite: the responses backend driven through the
Python package (runlane.AssistantMessageQueue), tool calls answered by
handle_requires_action.

    py_worker.py STORE CONFIG_JSON

Prints every reply as one JSON line on stdout (the "completed" event's data,
like `runlane worker --backend responses`), then confirms it (reply_ack).
Tool outputs are the same pure function of (name, arguments) as tool.sh:
"<name>:<first 12 hex of sha256(arguments)>"; calls are logged to
$CHAOS_TOOL_LOG. One line per failed attempt, lost lease or background error
on stderr, in the CLI worker's words ("batch B attempt N: retry: ...").
SIGTERM or SIGINT: drain (up to 30 s) and exit.
"""
import hashlib
import json
import os
import signal
import sys
import threading
import time

import runlane

STORE, CONFIG = sys.argv[1], json.loads(sys.argv[2])
TOOL_LOG = os.environ.get("CHAOS_TOOL_LOG")
out_lock = threading.Lock()


def err(line):
    with out_lock:
        sys.stderr.write("runlane py worker: %s\n" % line)
        sys.stderr.flush()


def tools(ev):
    outputs = {}
    for call in ev.data.get("tool_calls", []):
        name, args = call.get("name", ""), call.get("arguments", "")
        outputs[call["id"]] = "%s:%s" % (name, hashlib.sha256(args.encode()).hexdigest()[:12])
        if TOOL_LOG:
            line = json.dumps({"id": call["id"], "name": name,
                               "conversation_id": ev.conversation_id,
                               "batch_id": ev.batch_id, "by": "py"}) + "\n"
            fd = os.open(TOOL_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        err("tool %s (call %s) ok" % (name, call["id"]))
    return outputs


def main():
    try:
        q = runlane.AssistantMessageQueue(None, store=STORE,
                                          config=dict(CONFIG, backend="responses"),
                                          handle_requires_action=tools, handler_threads=8)
    except runlane.StoreError as e:
        # Like `runlane worker`: exit 1 when the store cannot be reached at start.
        err("cannot open the store %s: %s" % (STORE, e))
        return 1

    def completed(ev):
        with out_lock:
            sys.stdout.write(json.dumps(ev.data) + "\n")
            sys.stdout.flush()
        try:
            q.reply_ack(ev.batch_id)
        except runlane.NotFoundError:
            pass  # a redelivered reply that someone confirmed meanwhile
        except runlane.RunlaneError as e:
            err("reply_ack %s: %s" % (ev.batch_id, e))
        err("%s batch %s attempt %d: completed" % (ev.conversation_id, ev.batch_id, ev.attempt))

    def failed(ev):
        err("%s batch %s attempt %d: %s: %s" % (ev.conversation_id, ev.batch_id, ev.attempt,
                                               "dead" if ev.type == "dead" else "retry",
                                               ev.error.message if ev.error else ""))

    def other(ev):
        err("%s: %s: %s" % (ev.type, ev.conversation_id or "",
                            ev.error.message if ev.error else ""))

    q.on("completed", completed)
    q.on("failed", failed)
    q.on("dead", failed)
    q.on("lease_lost", other)
    q.on("error", other)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    q.start_worker()
    err("started: store %s, backend responses, tools by handle_requires_action" % STORE)
    while not stop.is_set():
        stop.wait(0.5)
    err("stopping (draining turns in flight)")
    t = time.monotonic()
    q.close(drain=True, timeout=30.0)
    err("stopped after %.1fs" % (time.monotonic() - t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
