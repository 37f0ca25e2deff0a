#!/usr/bin/env python3
"""Deterministic repro of a failure the chaos suite found (responses backend).

A batch is dead-lettered while its response's function calls are still
unanswered. The calls stay pending in the provider conversation, and from
then on every later batch of that conversation is dead-lettered too. Its
create is refused with HTTP 400 "No tool output found for function call ...",
which runlane treats as final. One dead batch poisons the whole conversation.
The responses backend answers pending calls only for tool.timeout.action=cancel
and for interrupts, not when a batch dies any other way.

    RUNLANE_BIN=build/core/cli/runlane python3 tests/chaos/repro_dead_tool_call.py

Steps:
1. Set max.attempts=1, max.stalls=0 (an expired lease dead-letters at once;
   by default worker deaths spend a stall budget, not attempts) and lease.ms=1000.
2. Send "check [[tool:lookup {}]]". The tool command hangs, and the worker is
   killed with kill -9 while it waits for the tool.
3. A second worker recovers the expired lease. With no stall allowed, it
   dead-letters the batch, and the call stays unanswered.
4. Send "hello again". Its batch is dead-lettered at once with HTTP 400.

In the chaos suite the dead letter came from the stale reconcile cursor (see
repro_reconcile_dup.py), and the next batch of the conversation died the
same way.
Exit 1 (and "BUG") when the second batch is dead too; exit 2 when the first
batch was not dead-lettered (the repro no longer reaches its path). Needs
redis-server.
"""
import json
import os
import signal
import sys
import time

from repro_env import ReproEnv


def main():
    config = {"batch.window.ms": "100", "max.attempts": "1", "max.stalls": "0",
              "lease.ms": "1000",
              "worker.recover.ms": "200", "openai.tools": '[{"type":"function","name":"lookup"}]'}
    with ReproEnv(config, latency_ms=50, seed=1) as env:
        emu = env.emu
        conv = env.cli("conversation", "create")
        env.cli("enqueue", conv, "check [[tool:lookup {}]]")
        w1 = env.worker("--tool-exec", "sleep 60; echo late")
        deadline = time.time() + 10
        while time.time() < deadline:  # the response asked for the call
            turns = emu.journal()["conversations"].get(conv, {}).get("turns", [])
            if turns and turns[0]["status"] == "completed":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(w1.pid, signal.SIGKILL)
        w1.wait()
        w2 = env.worker("--tool-exec", "echo ok")
        time.sleep(3)  # lease expires, w2 recovers it: attempts spent -> dead letter
        env.cli("enqueue", conv, "hello again")
        time.sleep(3)
        w2.terminate()
        _, err = w2.communicate(timeout=40)
        dead = json.loads(env.cli("dead", "list", "--json"))
        for dl in dead:
            print("dead letter %s: messages %s, error: %s"
                  % (dl["id"], [m["content"] for m in dl["messages"]], dl["error"]))
        print(err.strip())
        if not any(any("check" in m["content"] for m in dl["messages"]) for dl in dead):
            print("REPRO BROKEN: the first batch was not dead-lettered, the path is not reached")
            return 2
        poisoned = any(any(m["content"] == "hello again" for m in dl["messages"]) for dl in dead)
        print("BUG: the batch after the dead one died too (HTTP 400 No tool output found)"
              if poisoned else "ok: the conversation took new messages")
        return 1 if poisoned else 0


if __name__ == "__main__":
    sys.exit(main())
