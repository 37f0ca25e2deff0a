"""RUNLANE_NO_SKIP=1 (scripts/test.sh sets it): a skipped or xfailed test is
a failure, so a missing emulator, Redis or tool cannot pass as a green run.

A test directory's conftest.py imports the two hooks:

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from pytest_noskip import pytest_collectreport, pytest_runtest_makereport  # noqa: F401
"""

import os

import pytest


def _no_skip():
    return os.environ.get("RUNLANE_NO_SKIP") == "1"


def _fail(report, what):
    reason = getattr(report, "wasxfail", None)
    if reason is None and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        reason = report.longrepr[2]
    report.outcome = "failed"
    report.longrepr = "RUNLANE_NO_SKIP=1: %s is a failure: %s" % (what, reason or report.longrepr)
    if hasattr(report, "wasxfail"):
        del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not _no_skip():
        return
    if report.skipped:
        _fail(report, "an xfail" if hasattr(report, "wasxfail") else "a skip")
    elif report.passed and hasattr(report, "wasxfail"):  # xpass of a non-strict xfail
        _fail(report, "an xfail mark")


@pytest.hookimpl(hookwrapper=True)
def pytest_collectreport(report):
    yield
    if _no_skip() and report.skipped:
        _fail(report, "a module skip")
