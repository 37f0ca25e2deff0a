"""The Python half of the clean-room test (tests/install/cleanroom.sh): runs
inside the chroot with only the installed wheel. Three flows, each sending a
burst of messages to a few conversations and checking that every message
comes back once, in order, in one turn per burst:
  memory     the embedded memory store, a handler completes the turns;
  redis-tls  the same on Redis over TLS (rediss://, server verified with the
             test CA), when CR_REDIS_URL is given;
  responses  the Responses backend against the emulator (CR_OPENAI_BASE_URL):
             each turn's reply is the emulator's echo of the whole burst.
Prints "PASS <flow>" per flow; exits non-zero on the first failure."""
import os
import sys
import threading

import runlane

SCALE = float(os.environ.get("RUNLANE_TEST_TIME_SCALE", "1"))
WINDOW_MS = int(1000 * SCALE)
DEADLINE_S = 90 * SCALE
CONVS, BURST = 3, 4


def fail(flow, why):
    print("FAIL %s: %s" % (flow, why))
    sys.exit(1)


def burst(label):
    return {"py-%s-c%d" % (label, i): ["py %s c%d m%d" % (label, i, j) for j in range(BURST)]
            for i in range(CONVS)}


def check_turns(flow, sent, turns):
    for conv, msgs in sent.items():
        got = turns.get(conv, [])
        flat = [m for t in got for m in t]
        if flat != msgs:
            fail(flow, "%s: sent %r, turns got %r (lost, duplicated or out of order)" % (conv, msgs, got))
        if len(got) != 1:
            fail(flow, "%s: the burst took %d turns, not 1: %r" % (conv, len(got), got))


def handler_flow(flow, **opts):
    sent = burst(flow)
    turns, lock, done = {}, threading.Lock(), threading.Event()

    def handle(batch):
        with lock:
            turns.setdefault(batch.conversation_id, []).append([m.content for m in batch.messages])
            if sum(len(t) for ts in turns.values() for t in ts) >= CONVS * BURST:
                done.set()

    with runlane.AssistantMessageQueue(handle, batch_window_ms=WINDOW_MS, **opts) as q:
        q.start_worker()
        for j in range(BURST):
            for conv, msgs in sent.items():
                q.add_message_to_thread(conv, msgs[j])
        if not done.wait(DEADLINE_S):
            fail(flow, "turns missing after %ds: %r" % (DEADLINE_S, turns))
        q.close()
    check_turns(flow, sent, turns)
    print("PASS %s" % flow)


def responses_flow(base_url):
    flow = "responses"
    replies, lock, done = {}, threading.Lock(), threading.Event()

    def completed(ev):
        with lock:
            replies.setdefault(ev.conversation_id, []).append(ev.reply)
            if sum(len(r) for r in replies.values()) >= CONVS:
                done.set()

    q = runlane.AssistantMessageQueue(store="memory://cleanroom-responses", backend="responses",
                                      openai_base_url=base_url, openai_model="gpt-4o-mini",
                                      batch_window_ms=WINDOW_MS)
    with q:
        q.on("completed", completed)
        convs = [q.create_conversation() for _ in range(CONVS)]
        sent = {c: ["py responses %s m%d" % (c[-6:], j) for j in range(BURST)] for c in convs}
        q.start_worker()
        for j in range(BURST):
            for conv in convs:
                q.add_message_to_thread(conv, sent[conv][j])
        if not done.wait(DEADLINE_S):
            fail(flow, "replies missing after %ds: %r" % (DEADLINE_S, replies))
        q.close()
    for conv, msgs in sent.items():
        want = ["echo: " + "\n".join(msgs)]
        if replies.get(conv) != want:
            fail(flow, "%s: replies %r, want %r" % (conv, replies.get(conv), want))
    print("PASS %s" % flow)


if __name__ == "__main__":
    print("runlane %s, features %s" % (runlane.__version__ if hasattr(runlane, "__version__") else "?",
                                       sorted(runlane.features())))
    handler_flow("memory", store="memory://cleanroom")
    if os.environ.get("CR_REDIS_URL"):
        if "redis_tls" not in runlane.features():
            fail("redis-tls", "this build has no TLS for Redis")
        handler_flow("redis-tls", store=os.environ["CR_REDIS_URL"],
                     redis_tls_ca_file=os.environ["CR_REDIS_CA"])
    responses_flow(os.environ["CR_OPENAI_BASE_URL"])
