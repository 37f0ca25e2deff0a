"""Typing of the public API (issue 12): ``mypy --strict`` passes on a sample
app (typing/typing_app.py) and rejects the typos of typing/typing_typos.py,
each on its marked line; the options TypedDict is generated from the core's
property table and in sync; every public method has a docstring."""

import inspect
import os
import re
import subprocess
import sys
import typing

import pytest

import runlane
import runlane.aio
from runlane import _optionsgen

from conftest import REPO

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "typing")


def run_mypy(path, tmp_path):
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is not installed in this venv (python/run_tests.sh installs it)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "mypy-cache"), path],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_mypy_strict_passes_on_the_sample_app(tmp_path):
    rc, out = run_mypy(os.path.join(HERE, "typing_app.py"), tmp_path)
    assert rc == 0, out


def test_mypy_strict_rejects_the_typos(tmp_path):
    path = os.path.join(HERE, "typing_typos.py")
    expected = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = re.search(r"# E:([\w-]+)", line)
            if m:
                expected[n] = m.group(1)
    assert len(expected) >= 8
    rc, out = run_mypy(path, tmp_path)
    assert rc == 1, out
    found = {}
    for m in re.finditer(r"typing_typos\.py:(\d+): error: .*\[([\w-]+)\]$", out, re.M):
        found.setdefault(int(m.group(1)), set()).add(m.group(2))
    for line, code in expected.items():
        assert code in found.get(line, set()), "line %d: expected a [%s] error\n%s" % (line, code, out)
    assert set(found) == set(expected), "errors on unmarked lines:\n" + out
    assert 'did you mean "batch_window_ms"' in out


def test_options_typeddict_is_generated_from_the_property_table():
    want = _optionsgen.generate(runlane.config.properties())
    installed = os.path.join(os.path.dirname(runlane.__file__), "_options.py")
    checkout = os.path.join(REPO, "python", "src", "runlane", "_options.py")
    for path in (installed, checkout):
        with open(path, encoding="utf-8") as f:
            assert f.read() == want, (
                "%s is out of sync with the core's property table: regenerate with "
                "python -m runlane._optionsgen > python/src/runlane/_options.py" % path
            )
    keys = set(runlane.Options.__annotations__)
    assert keys == {p.kwarg for p in runlane.config.properties().values()} | set(runlane.config.ALIASES)


def test_event_names_and_classes_are_the_cores():
    assert typing.get_args(runlane.EventName) == runlane.EVENT_TYPES
    assert set(runlane.EVENT_CLASSES) == set(runlane.EVENT_TYPES)
    for name, cls in runlane.EVENT_CLASSES.items():
        assert issubclass(cls, runlane.Event) and cls.__doc__, name


def test_events_are_delivered_as_their_typed_class(memory_store):
    q = runlane.AssistantMessageQueue(batch_window_ms=0, **memory_store)
    got = []
    try:
        q.on("batch", lambda ev: (got.append(ev), ev.batch.ack()))
        q.on("stopped", got.append)
        q.start_worker()
        q.enqueue("c1", "hi")
        from conftest import wait_until

        wait_until(lambda: got, what="batch event")
        q.stop_worker()
        wait_until(lambda: len(got) == 2, what="stopped event")
    finally:
        q.close()
    assert type(got[0]) is runlane.BatchEvent and got[0].batch is not None
    assert type(got[1]) is runlane.StoppedEvent and got[1].drained is True


@pytest.mark.parametrize("cls", [runlane.AssistantMessageQueue, runlane.aio.AssistantMessageQueue,
                                 runlane.Batch, runlane.aio.AsyncBatch])
def test_every_public_method_has_a_docstring(cls):
    missing = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        if callable(member) or isinstance(inspect.getattr_static(cls, name), property):
            if not (inspect.getdoc(member) or "").strip():
                missing.append(name)
    assert not missing, "%s: no docstring on %s" % (cls.__name__, ", ".join(missing))


def test_mypy_strict_passes_on_the_package_itself(tmp_path):
    src = os.path.join(REPO, "python", "src", "runlane")
    rc, out = run_mypy(src, tmp_path)
    assert rc == 0, out
