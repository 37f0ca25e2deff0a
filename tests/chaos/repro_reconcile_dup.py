#!/usr/bin/env python3
"""Deterministic repro of a duplicate the chaos suite found (responses backend).

When one attempt reconciles twice (a retried or recovered batch reconciles,
then its create gets an ambiguous failure such as a 500 or a TCP reset and
reconciles again), the second reconcile lists the conversation's items after
a stale cursor (the last item id of the first listing, left in t->cursor by
r_items_done) instead of the checkpoint's "after". It sees none of the
batch's messages and posts them all again.

    RUNLANE_BIN=build/core/cli/runlane python3 tests/chaos/repro_reconcile_dup.py

Steps: a batch of two messages, "hello" and "boom [[fail]]". Attempt 1 posts
both and the response fails. Attempt 2 reconciles (it finds both messages)
and asks for a reply with a create that has no input, and the emulator is
made to answer that create with a 500. Attempt 2 then reconciles again and
posts both messages a second time. Exit 1 (and "BUG") when the journal holds
a message twice, 0 otherwise. Needs redis-server.
"""
import sys
import time

from repro_env import ReproEnv


def main():
    config = {"batch.window.ms": "100", "backoff.base.ms": "1500", "backoff.jitter": "0"}
    with ReproEnv(config, latency_ms=50, seed=1) as env:
        emu = env.emu
        conv = env.cli("conversation", "create")
        env.cli("enqueue", conv, "hello")
        env.cli("enqueue", conv, "boom [[fail]]")
        w = env.worker()
        # Attempt 1: its response fails ([[fail]]). Then make the next create fail with a 500.
        deadline = time.time() + 10
        while time.time() < deadline:
            turns = emu.journal()["conversations"].get(conv, {}).get("turns", [])
            if turns and turns[0]["status"] == "failed":
                break
            time.sleep(0.02)
        emu.force_fault("500", count=1, method="POST", path="/responses")
        time.sleep(5)  # attempt 2 comes after the 1.5 s backoff
        w.terminate()
        out, err = w.communicate(timeout=40)
        j = emu.journal()["conversations"][conv]
        print("journal messages:", j["messages"])
        print("duplicates (by runlane message id):", j["duplicates"])
        for r in emu.requests(100):
            if r["path"].startswith("/_emulator"):
                continue
            body = r["body"] if isinstance(r["body"], dict) else {}
            print("  %-4s %-60s %s %s input=%d" % (r["method"], r["path"].replace("/v1/conversations/" + conv, "/v1/conversations/C")[:90], r["status"],
                                                  r["fault"] or "", len(body.get("input") or [])))
        print(err.strip())
        dup = len(j["messages"]) != len(set(j["messages"])) or j["duplicates"]
        print("BUG: the batch's messages were posted twice" if dup else "ok: no duplicate")
        return 1 if dup else 0


if __name__ == "__main__":
    sys.exit(main())
