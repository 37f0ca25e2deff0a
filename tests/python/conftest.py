"""Fixtures of the runlane Python tests.

Run from a venv where ``pip install ./python`` was done, from a directory
where the source tree does not shadow the installed package (run_tests.sh
does both). Redis tests use $RUNLANE_TEST_REDIS (redis://127.0.0.1:PORT/0);
without it they are skipped, or fail when RUNLANE_REQUIRE_REDIS=1. With
RUNLANE_NO_SKIP=1 any skip or xfail is a failure (tests/pytest_noskip.py).
"""

import os
import sys
import time
import uuid

import pytest

import runlane

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.append(os.path.join(REPO, "tests"))
from pytest_noskip import pytest_collectreport, pytest_runtest_makereport  # noqa: E402,F401
HEADER = os.path.join(REPO, "core", "include", "runlane.h")

# Short windows so the suite is fast.
FAST = dict(
    batch_window_ms=50,
    batch_max_wait_ms=500,
    backoff_base_ms=20,
    backoff_max_ms=100,
    backoff_jitter=0.0,
    worker_poll_ms=20,
    worker_recover_ms=50,
)


def redis_url():
    url = os.environ.get("RUNLANE_TEST_REDIS")
    if not url:
        if os.environ.get("RUNLANE_REQUIRE_REDIS") == "1":
            pytest.fail("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set")
        pytest.skip("RUNLANE_TEST_REDIS is not set")
    return url


# Slow runs (sanitizers, valgrind) stretch every deadline by this factor.
TIME_SCALE = max(1.0, float(os.environ.get("RUNLANE_TEST_TIME_SCALE") or 1))


def wait_until(pred, timeout=5.0, interval=0.01, what="condition"):
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


@pytest.fixture
def memory_store():
    return {"store": "memory://" + uuid.uuid4().hex}


@pytest.fixture
def redis_store():
    return {"store": redis_url(), "key_prefix": "t" + uuid.uuid4().hex[:12]}


@pytest.fixture(params=["memory", "redis"])
def store(request):
    """Runs a test on the memory store and on Redis."""
    if request.param == "memory":
        return {"store": "memory://" + uuid.uuid4().hex}
    return {"store": redis_url(), "key_prefix": "t" + uuid.uuid4().hex[:12]}


@pytest.fixture
def make_queue():
    """Sync queues closed at the end of the test."""
    made = []

    def make(*args, **kwargs):
        opts = dict(FAST)
        opts.update(kwargs)
        q = runlane.AssistantMessageQueue(*args, **opts)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close(drain=False)
