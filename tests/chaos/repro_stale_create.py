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
"""
import os
import signal
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
    emu = Emulator(latency_ms=50, seed=1, fault_slow_ms=5000).start()
    store = "redis://127.0.0.1:%s/0" % port
    x = []
    for kv in {"openai.base.url": emu.base_url, "openai.model": "m",
               "openai.api.key": "sk-repro-key", "batch.window.ms": "100",
               "lease.ms": "1000", "worker.recover.ms": "200"}.items():
        x += ["-X", "%s=%s" % kv]
    base = [BIN, "--store", store] + x
    procs = []

    def worker():
        p = subprocess.Popen(base + ["worker", "--backend", "responses"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(p)
        return p

    try:
        conv = subprocess.check_output(base + ["conversation", "create"], text=True).strip()
        emu.force_fault("slow", count=1, method="POST", path="/responses")
        subprocess.check_call(base + ["enqueue", conv, "hello"], stdout=subprocess.DEVNULL)
        a = worker()
        deadline = time.time() + 10
        while time.time() < deadline:  # A's create reached the emulator and is held there
            if any(r["method"] == "POST" and r["path"].endswith("/responses")
                   for r in emu.requests(20)):
                break
            time.sleep(0.01)
        os.killpg(a.pid, signal.SIGSTOP)
        b = worker()
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
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        emu.stop()
        subprocess.call([os.path.join(ROOT, "scripts", "redis-server.sh"), "stop",
                         os.path.join(d, "redis")])


if __name__ == "__main__":
    sys.exit(main())
