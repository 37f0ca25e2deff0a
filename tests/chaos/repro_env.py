"""What every repro_*.py of the chaos suite stands on: a private
redis-server, the OpenAI emulator, the `runlane` CLI's command line for
them, and workers in their own process groups; all of it stopped on exit.

    with ReproEnv({"lease.ms": "1000"}, latency_ms=50, seed=1) as env:
        conv = env.cli("conversation", "create")
        env.cli("enqueue", conv, "hello")
        w = env.worker()                    # runlane worker --backend responses
        ... env.emu.journal() ...

RUNLANE_BIN is the CLI (default build/chaos/core/cli/runlane).
"""
import os
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from emulator import Emulator  # noqa: E402

BIN = os.environ.get("RUNLANE_BIN") or os.path.join(ROOT, "build", "chaos", "core", "cli", "runlane")
REDIS_SH = os.path.join(ROOT, "scripts", "redis-server.sh")


class ReproEnv:
    def __init__(self, config, **emulator_options):
        """config: -X settings on top of the emulator's URL, a model and an
        API key; emulator_options: Emulator(...) keyword arguments."""
        self.dir = tempfile.mkdtemp(prefix="runlane-repro-")
        self.procs = []
        self.emu = None
        self._redis_dir = os.path.join(self.dir, "redis")
        port = subprocess.check_output([REDIS_SH, "start", self._redis_dir], text=True).strip()
        try:
            self.emu = Emulator(**emulator_options).start()
        except BaseException:
            self.close()
            raise
        self.store = "redis://127.0.0.1:%s/0" % port
        settings = {"openai.base.url": self.emu.base_url, "openai.model": "m",
                    "openai.api.key": "sk-repro-key"}
        settings.update(config)
        self.base = [BIN, "--store", self.store]
        for kv in settings.items():
            self.base += ["-X", "%s=%s" % kv]

    def cli(self, *args):
        """Runs the CLI to its end; its stdout, stripped (fails on a non-zero exit)."""
        return subprocess.check_output(self.base + list(args), text=True).strip()

    def worker(self, *args):
        """`runlane worker --backend responses ARGS...`, in its own process group."""
        p = subprocess.Popen(self.base + ["worker", "--backend", "responses"] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)  # a paused group dies only once resumed
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self.emu:
            self.emu.stop()
        subprocess.call([REDIS_SH, "stop", self._redis_dir])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
