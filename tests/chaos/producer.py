#!/usr/bin/env python3
"""Producer of the chaos suite: sends bursts of messages (and typing signals)
to its own conversations, following a plan written by chaos.py.

    producer.py PLAN.json

The plan: {"name", "kind": "cli"|"py", "bin", "store", "config": {key: value},
"conversations": [...], "seed", "seconds", "t0", "fail_slots": [[conv, burst]],
"fail_always_slots": [[conv, burst]], "fail_always_marker", "tool_rate",
"bursts": [min, max], "out": PATH}. The last message of a fail slot's burst
carries [[fail]] (its turn fails once), that of a fail-always slot's burst
[[fail-always]] (every attempt fails: the batch must be dead-lettered).

kind "cli" runs `runlane enqueue --file F.jsonl` (a whole burst at once),
`runlane enqueue CONV MSG -k KEY` (one message) and `runlane touch CONV`;
kind "py" does the same through the Python package (enqueue_many, enqueue,
touch) and must run under a Python where `runlane` is installed.

Every message has an idempotency key, so a call that failed (Redis
restarting) is simply made again: nothing is stored twice. Each conversation
belongs to one producer, which sends its messages one after the other: the
order of the records is the enqueue order.

Output: one JSON line per stored message in plan["out"]:
{"conv", "n", "content", "key", "id", "t", "fail", "fail_always", "tools": [[name, args_json]],
"producer", "via"}; then a last line {"done": true, ...counters}.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

WORDS = ("order parcel refund invoice address delivery color size blue red "
         "tomorrow today please thanks again help where when why how maybe").split()
TOOLS = ("lookup_order", "get_weather", "check_stock")


class Gone(Exception):
    """The store stayed unreachable past the retry deadline."""


def build_schedule(plan):
    """[(t_offset, seq, action)] for every conversation of the plan; an action
    is ("touch", conv) | ("one", conv, msg) | ("many", conv, [msg...])."""
    rng = random.Random("%s/%s" % (plan["seed"], plan["name"]))
    fail_slots = {(c, b) for c, b in plan.get("fail_slots", [])}
    fail_always_slots = {(c, b) for c, b in plan.get("fail_always_slots", [])}
    fail_always_marker = plan.get("fail_always_marker", "[[fail-always]]")
    seconds = float(plan["seconds"])
    lo, hi = plan.get("bursts", [2, 4])
    events = []
    seq = 0
    for ci, conv in enumerate(plan["conversations"]):
        nb = rng.randint(lo, hi)
        # Burst starts spread over the run; some land while the previous turn
        # of the conversation still runs, some after it is done.
        starts = sorted(rng.uniform(0.0, max(1.0, seconds - 4.0)) for _ in range(nb))
        n = 0
        for b, t in enumerate(starts):
            m = rng.choice((1, 1, 2, 2, 3, 3, 4, 5))
            msgs = []
            for k in range(m):
                n += 1
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
                content = "%s#%d %s" % (conv[-10:], n, words)
                tools = []
                if rng.random() < plan.get("tool_rate", 0.15):
                    for _ in range(rng.choice((1, 1, 1, 2))):
                        name = rng.choice(TOOLS)
                        args = json.dumps({"q": rng.choice(WORDS), "n": rng.randint(1, 999)},
                                          separators=(",", ":"))
                        tools.append([name, args])
                        content += " [[tool:%s %s]]" % (name, args)
                fail = (conv, b) in fail_slots and k == m - 1
                if fail:
                    content += " [[fail]]"
                fail_always = (conv, b) in fail_always_slots and k == m - 1
                if fail_always:
                    content += " " + fail_always_marker
                msgs.append({"conv": conv, "n": n, "content": content,
                             "key": "chaos-%s-%d" % (conv, n), "fail": fail,
                             "fail_always": fail_always, "tools": tools})
            style = rng.random()
            typing = rng.random() < 0.5
            if style < 0.35:
                # The whole burst in one call (a webhook delivering a backlog).
                if typing:
                    events.append((t, seq, ("touch", conv))); seq += 1
                events.append((t + 0.05, seq, ("many", conv, msgs))); seq += 1
            else:
                # One by one, 30-250 ms apart, typing signals in between.
                at = t
                for k, msg in enumerate(msgs):
                    if typing and k > 0:
                        events.append((at, seq, ("touch", conv))); seq += 1
                        at += rng.uniform(0.02, 0.12)
                    events.append((at, seq, ("one", conv, msg))); seq += 1
                    at += rng.uniform(0.03, 0.25)
    events.sort(key=lambda e: (e[0], e[1]))
    return events


class CliSender:
    def __init__(self, plan):
        self.bin = plan["bin"]
        self.base = [self.bin, "--store", plan["store"]]
        for k, v in sorted(plan["config"].items()):
            self.base += ["-X", "%s=%s" % (k, v)]
        self.tmp = tempfile.mkdtemp(prefix="chaos-producer-")

    def _run(self, args, stdin=None):
        p = subprocess.run(self.base + args, input=stdin, capture_output=True, text=True,
                           timeout=60)
        return p.returncode, p.stdout, p.stderr

    def touch(self, conv):
        rc, _, err = self._run(["touch", conv])
        if rc != 0:
            raise RuntimeError("touch: rc %d: %s" % (rc, err.strip()))

    def one(self, msg):
        rc, out, err = self._run(["enqueue", msg["conv"], msg["content"], "-k", msg["key"]])
        if rc != 0:
            raise RuntimeError("enqueue: rc %d: %s" % (rc, err.strip()))
        return [out.strip()]

    def many(self, msgs):
        path = os.path.join(self.tmp, "burst.jsonl")
        with open(path, "w") as f:
            for m in msgs:
                f.write(json.dumps({"conversation_id": m["conv"], "content": m["content"],
                                    "idempotency_key": m["key"]}) + "\n")
        rc, out, err = self._run(["enqueue", "--file", path])
        if rc != 0:
            raise RuntimeError("enqueue --file: rc %d: %s" % (rc, err.strip()))
        ids = [l.strip() for l in out.splitlines() if l.strip()]
        if len(ids) != len(msgs):
            raise RuntimeError("enqueue --file printed %d ids for %d lines" % (len(ids), len(msgs)))
        return ids

    def close(self):
        try:
            os.remove(os.path.join(self.tmp, "burst.jsonl"))
        except OSError:
            pass
        os.rmdir(self.tmp)


class PySender:
    def __init__(self, plan):
        import runlane  # noqa: the Python package, installed in this interpreter
        self.runlane = runlane
        self.q = runlane.AssistantMessageQueue(None, store=plan["store"],
                                               config=dict(plan["config"]))

    def touch(self, conv):
        self.q.touch(conv)

    def one(self, msg):
        return [self.q.enqueue(msg["conv"], msg["content"], idempotency_key=msg["key"]).id]

    def many(self, msgs):
        res = self.q.enqueue_many([{"conversation_id": m["conv"], "content": m["content"],
                                    "idempotency_key": m["key"]} for m in msgs])
        return [r.id for r in res]

    def close(self):
        self.q.close(drain=False, timeout=1.0)


def with_retry(fn, counters, what, deadline_s=90.0):
    """Calls fn() until it succeeds; a failure (Redis restarting, a timeout)
    is retried with backoff: the idempotency keys make that safe."""
    start = time.monotonic()
    delay = 0.1
    while True:
        try:
            return fn()
        except Exception as e:  # CLI failure or runlane.StoreError
            counters["retries"] += 1
            if time.monotonic() - start > deadline_s:
                raise Gone("%s: gave up after %.0fs: %s" % (what, deadline_s, e))
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def main():
    plan = json.load(open(sys.argv[1]))
    sender = CliSender(plan) if plan["kind"] == "cli" else PySender(plan)
    events = build_schedule(plan)
    counters = {"retries": 0, "touch_failed": 0, "messages": 0, "touches": 0, "calls": 0,
                "max_lag_s": 0.0}
    t0 = float(plan["t0"])
    out = open(plan["out"], "a", buffering=1)
    rc = 0
    try:
        for at, _, action in events:
            delay = t0 + at - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                counters["max_lag_s"] = max(counters["max_lag_s"], -delay)
            kind = action[0]
            counters["calls"] += 1
            if kind == "touch":
                counters["touches"] += 1
                try:
                    # A lost typing signal is harmless: two tries, then move on.
                    with_retry(lambda: sender.touch(action[1]), counters, "touch", 0.5)
                except Gone:
                    counters["touch_failed"] += 1
                continue
            msgs = [action[2]] if kind == "one" else action[2]
            if kind == "one":
                ids = with_retry(lambda: sender.one(action[2]), counters, "enqueue")
            else:
                ids = with_retry(lambda: sender.many(action[2]), counters, "enqueue_many")
            t = time.time()
            for m, mid in zip(msgs, ids):
                rec = dict(m, id=mid, t=t, producer=plan["name"], via=kind)
                out.write(json.dumps(rec) + "\n")
                counters["messages"] += 1
    except Gone as e:
        print("producer %s: %s" % (plan["name"], e), file=sys.stderr)
        rc = 1
    finally:
        out.write(json.dumps(dict(counters, done=True, producer=plan["name"], rc=rc)) + "\n")
        out.close()
        sender.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
