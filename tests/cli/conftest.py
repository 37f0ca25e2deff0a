"""RUNLANE_NO_SKIP=1 makes a skip or xfail here a failure (tests/pytest_noskip.py)."""

import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pytest_noskip import pytest_collectreport, pytest_runtest_makereport  # noqa: E402,F401
