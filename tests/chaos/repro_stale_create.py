#!/usr/bin/env python3
"""Deterministic repro of a duplicate the chaos suite found (large run,
responses backend): a create that takes effect after its worker's lease
expired.

Worker A checkpoints and sends POST /responses, and the request is slow to
take effect (here: the emulator's "slow" fault holds it for 5 s before
processing, like a congested network or provider). A is frozen (SIGSTOP)
meanwhile, so its lease (lease.ms=1000) expires. Worker B recovers the batch,
reconciles, does not find the messages in the conversation yet, and posts
them. Then A's old request takes effect and adds them a second time. The
fencing token guards runlane's own writes, not a request already on its way
to the provider.

In the chaos suite's large run the same thing happened through whole-machine
stalls longer than lease.ms. It gave duplicates, and when the batch was
dead-lettered meanwhile ("lease expired after 5 attempts"), messages that
reached the provider after the next batch's (out of order).

    RUNLANE_BIN=build/core/cli/runlane python3 tests/chaos/repro_stale_create.py

Exit 1 (and "BUG") when the journal holds the message twice. Needs redis-server.
tests/chaos/repros.sh runs it as an expected failure (README.md states the limit).
REPRO_STALE_HOLD_MS (default 5000) is how long the create is held: a hold
shorter than the lease (say 200) shows the run of repros.sh failing once this
stops reproducing.
"""
import os
import signal
import sys
import time

from repro_env import ReproEnv


def main():
    config = {"batch.window.ms": "100", "lease.ms": "1000", "worker.recover.ms": "200"}
    hold_ms = int(os.environ.get("REPRO_STALE_HOLD_MS", "5000"))
    with ReproEnv(config, latency_ms=50, seed=1, fault_slow_ms=hold_ms) as env:
        emu = env.emu
        conv = env.cli("conversation", "create")
        emu.force_fault("slow", count=1, method="POST", path="/responses")
        env.cli("enqueue", conv, "hello")
        a = env.worker()
        deadline = time.time() + 10
        while time.time() < deadline:  # A's create reached the emulator and is held there
            if any(r["method"] == "POST" and r["path"].endswith("/responses")
                   for r in emu.requests(20)):
                break
            time.sleep(0.01)
        os.killpg(a.pid, signal.SIGSTOP)
        b = env.worker()
        time.sleep(6)  # B takes the batch over; then A's held create takes effect
        os.killpg(a.pid, signal.SIGCONT)
        time.sleep(2)
        for p in (a, b):
            p.terminate()
        outs = [p.communicate(timeout=40) for p in (a, b)]
        j = emu.journal()["conversations"][conv]
        print("journal messages:", j["messages"], "duplicates:", j["duplicates"])
        for t in j["turns"]:
            print("  turn %s started %.3f ended %.3f input_count %d"
                  % (t["id"], t["started"], t["ended"] or 0, t["input_count"]))
        for name, (_, err) in zip("AB", outs):
            print("worker %s:\n  %s" % (name, err.strip().replace("\n", "\n  ")))
        dup = len(j["messages"]) != len(set(j["messages"])) or j["duplicates"]
        print("BUG: a create sent before the lease expired took effect after another worker "
              "posted the batch" if dup else "ok: no duplicate")
        return 1 if dup else 0


if __name__ == "__main__":
    sys.exit(main())
