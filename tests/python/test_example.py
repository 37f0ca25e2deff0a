"""The webhook example runs end to end (stdlib server, memory store)."""

import os
import subprocess
import sys

from conftest import REPO

EXAMPLE = os.path.join(REPO, "python", "examples", "webhook.py")


def test_webhook_example_selftest():
    out = subprocess.run(
        [sys.executable, EXAMPLE, "--selftest", "--stdlib"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, BATCH_WINDOW_MS="100", RUNLANE_STORE="memory"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "selftest ok" in out.stdout
    assert "You said (3 messages): hi / I need help / with my order" in out.stdout
