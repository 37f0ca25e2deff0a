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
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from emulator import Emulator  # noqa: E402

BIN = os.environ.get("RUNLANE_BIN") or os.path.join(ROOT, "build", "chaos", "core", "cli", "runlane")


def main():
    d = tempfile.mkdtemp(prefix="runlane-repro-")
    port = subprocess.check_output([os.path.join(ROOT, "scripts", "redis-server.sh"), "start",
                                    os.path.join(d, "redis")], text=True).strip()
    emu = Emulator(latency_ms=50, seed=1).start()
    store = "redis://127.0.0.1:%s/0" % port
    x = []
    for kv in {"openai.base.url": emu.base_url, "openai.model": "m",
               "openai.api.key": "sk-repro-key", "batch.window.ms": "100",
               "backoff.base.ms": "1500", "backoff.jitter": "0"}.items():
        x += ["-X", "%s=%s" % kv]
    base = [BIN, "--store", store] + x
    w = None
    try:
        conv = subprocess.check_output(base + ["conversation", "create"], text=True).strip()
        subprocess.check_call(base + ["enqueue", conv, "hello"], stdout=subprocess.DEVNULL)
        subprocess.check_call(base + ["enqueue", conv, "boom [[fail]]"], stdout=subprocess.DEVNULL)
        w = subprocess.Popen(base + ["worker", "--backend", "responses"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
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
    finally:
        if w and w.poll() is None:
            w.kill()
        emu.stop()
        subprocess.call([os.path.join(ROOT, "scripts", "redis-server.sh"), "stop",
                         os.path.join(d, "redis")])


if __name__ == "__main__":
    sys.exit(main())
