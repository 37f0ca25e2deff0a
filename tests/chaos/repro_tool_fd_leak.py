#!/usr/bin/env python3
"""Repro of a hang the chaos suite found in `runlane worker --backend
responses --tool-exec CMD` (core/cli/cmd_http.c, run_tool).

run_tool() creates its stdin/stdout pipes with pipe(), not O_CLOEXEC, and
forks from one detached thread per TOOL_CALLS event. So a tool command
inherits every descriptor of the worker: the Redis and HTTP sockets, and
the pipe ends of the other tool calls running at the same time. Two
concurrent tool commands that read their stdin to EOF (like `jq`, or
`input=$(cat)`) can then wait for each other forever. Each one holds the
write end of the other's stdin. The turns stay in "tool_calls" with their
leases renewed, and the conversations are stuck until tool.timeout.ms
(10 min by default). The large chaos run left two conversations stuck this
way, and /proc/PID/fd of the two hung `sh -c tool.sh` showed each holding
the other's stdin pipe.

    RUNLANE_BIN=build/core/cli/runlane python3 tests/chaos/repro_tool_fd_leak.py

Part 1 (deterministic): one tool call lists its own descriptors. Anything
above 2 is leaked. Part 2 (a race, nearly always hit): 100 conversations each
ask for a tool at the same moment, with a tool that reads stdin to EOF, then
the turns get 20 s to finish. Exit 1 (and "BUG") when descriptors leak or
turns hang. Needs redis-server.
"""
import os
import signal
import subprocess
import sys
import time

from repro_env import ReproEnv

# The tool command of part 1: reads its input, then writes one line per
# descriptor above 2 it holds ("N -> target") to argv[1], and answers "ok".
FD_PROBE = """import os, sys
sys.stdin.read()
out = []
for n in sorted(int(x) for x in os.listdir("/proc/self/fd")):
    if n > 2:
        try:
            out.append("%d -> %s" % (n, os.readlink("/proc/self/fd/%d" % n)))
        except OSError:
            pass  # the directory listdir had open
open(sys.argv[1], "w").write("\\n".join(out) + "\\n")
print("ok")
"""
N = 100


def main():
    config = {"batch.window.ms": "300", "openai.tools": '[{"type":"function","name":"probe"}]'}
    with ReproEnv(config, latency_ms=20, seed=1) as env:
        fdlist = os.path.join(env.dir, "fds.txt")
        bug = False
        # Part 1: what a tool command holds open.
        conv = env.cli("conversation", "create")
        env.cli("enqueue", conv, "one [[tool:probe {}]]")
        # The tool is a Python process exec'd by the shell: a shell lists
        # its own saved descriptors (dash keeps copies at 10 and up), which
        # are not runlane's.
        probe = os.path.join(env.dir, "fdprobe.py")
        with open(probe, "w") as f:
            f.write(FD_PROBE)
        w = env.worker("--tool-exec", "exec %s %s %s" % (sys.executable, probe, fdlist))
        deadline = time.time() + 15
        while time.time() < deadline and not os.path.exists(fdlist):
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(w.pid, signal.SIGKILL)
        w.wait()
        leaked = [line for line in open(fdlist).read().splitlines() if line]
        print("part 1: descriptors above 2 open in the tool command: %d%s" % (
            len(leaked), (" (" + ", ".join(leaked[:8]) + ")") if leaked else ""))
        bug |= bool(leaked)

        # Part 2: concurrent tool calls that read stdin to EOF.
        convs = [env.cli("conversation", "create")
                 for _ in range(N)]
        for c in convs:
            env.cli("enqueue", c, "go [[tool:probe {}]]")
        w = env.worker("--tool-exec", "input=$(cat); sleep 0.2; echo ok")
        time.sleep(20)
        st = env.cli("status", "--json")
        hung = [p for p in subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(w.pid)],
                                          capture_output=True, text=True).stdout.splitlines()]
        os.killpg(w.pid, signal.SIGKILL)
        _, err = w.communicate(timeout=10)
        done = err.count(": completed")
        print("part 2: %d of %d turns completed in 20 s; tool commands still running: %d; "
              "status %s" % (done, N, len(hung), st.strip()))
        bug |= done < N
        print("BUG: tool commands inherit the worker's descriptors%s" % (
            " and concurrent ones deadlock" if done < N else "") if bug else "ok")
        return 1 if bug else 0


if __name__ == "__main__":
    sys.exit(main())
