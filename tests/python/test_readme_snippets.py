"""Every ```python block of python/README.md runs, and passes.

Each block (or group of blocks) runs in a fresh interpreter (``python -c``) so
queues it leaves open are closed by the package's atexit hook, with:
  - OPENAI_BASE_URL / OPENAI_API_KEY pointing at the bundled emulator
    (tests/emulator/emulator.py), as the official SDKs and the core honour;
  - every ``redis://...`` URL literal replaced by a private ``memory://`` store
    (one per block, so blocks never see each other's messages);
  - the setup named by an HTML comment right before the fence,
    ``<!-- snippet: setup=NAME -->``: code run before the block (stubs such as
    ``send_to_user``, a ready queue ``q``) and checks run after it (SETUPS).
    ``group=NAME`` joins consecutive blocks into one program.
Blocks that are not Python code use another fence (sh, text). A ```python
block with an unknown setup, or one that raises or times out, fails the test:
nothing is skipped silently.
"""

import os
import re
import subprocess
import sys
import uuid

import pytest

from conftest import REPO, TIME_SCALE

sys.path.insert(0, os.path.join(REPO, "tests", "emulator"))
import emulator  # noqa: E402

README = os.path.join(REPO, "python", "README.md")
API_KEY = "sk-readme-test"

STUBS = '''
SENT = []
def my_model(prompt, instructions=None):
    return "reply to " + prompt
async def my_async_model(prompt):
    return "reply to " + prompt
def _send(conversation_id, reply):
    SENT.append((conversation_id, reply))
def send_to_user(conversation_id, reply):
    _send(conversation_id, reply)
def handle(batch):
    return None
'''

# Around every block: runlane's ERROR records (a listener's exception is
# logged, never raised) are collected and must be none.
ALWAYS = ("""
import logging as _logging
_ERRORS = []
class _Collect(_logging.Handler):
    def emit(self, record):
        _ERRORS.append(self.format(record))
_logging.getLogger("runlane").addHandler(_Collect(_logging.ERROR))
""", """
assert not _ERRORS, _ERRORS
""")

# name -> (code before the block, code after it)
SETUPS = {
    None: ("", ""),
    "stubs": (STUBS, ""),
    # The HTTP walkthrough: the reply must have reached send_to_user, with the
    # output of the tool hook (the emulator calls a tool on a marker, which
    # SUBST appends to the block's question).
    "http": (STUBS, '''
assert SENT and SENT[0][0] == "chat-42" and SENT[0][1].startswith("echo: hi"), SENT
assert 'lookup_order={"status": "shipped"}' in SENT[0][1], SENT
'''),
    # A responses-backend queue `q` on the emulator; its worker runs turns.
    "keys": ('''
import runlane
q = runlane.AssistantMessageQueue(backend="responses", openai_model="gpt-test",
                                  store=STORE, batch_window_ms=50)
q.start_worker()
''', '''
q.close()
'''),
    # A readiness endpoint: a minimal stand-in for FastAPI's app/JSONResponse;
    # the route is then called and must answer 200 with the health facts.
    "health": ('''
import asyncio, dataclasses
import runlane.aio
class JSONResponse:
    def __init__(self, content, status_code=200):
        self.content, self.status_code = content, status_code
class _App:
    routes = {}
    def get(self, path):
        def deco(fn):
            self.routes[path] = fn
            return fn
        return deco
app = _App()
queue = runlane.aio.AssistantMessageQueue(lambda batch: None, store=STORE)
''', '''
async def _check():
    async with queue:
        r = await app.routes["/health"]()
        assert r.status_code == 200 and r.content["store_ok"] is True, (r.status_code, r.content)
asyncio.run(_check())
'''),
    # The ASGI mount: a GET of the session through the Starlette app (an ASGI
    # call, no server) must answer 200 with a CSRF token.
    "dashboard": ("", '''
import asyncio, json
async def _get(path):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "server": ("test", 80), "client": ("test", 1)}
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(msg):
        sent.append(msg)
    await web(scope, receive, send)
    return sent
_sent = asyncio.run(_get("/ops/lanes/api/session"))
assert _sent[0]["status"] == 200, _sent
assert json.loads(_sent[1]["body"])["csrf_token"], _sent
queue.close()
'''),
}

# setup -> [(text of the block, what the harness runs instead)]
SUBST = {
    "http": [("where is my order 1234?\")",
              "where is my order 1234? [[tool:lookup_order {\\\"id\\\": 1234}]]\")")],
}

FENCE = re.compile(r"^```(\S*)\s*$")
MARK = re.compile(r"^<!--\s*snippet:(.*?)-->\s*$")
REDIS_URL = re.compile(r"""redis://[^"'\s]*""")


def blocks(path):
    """[(line, lang, attrs, code)] of every fenced block of a Markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start, attrs = m.group(1), i + 1, {}
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mk = MARK.match(lines[j]) if j >= 0 else None
        if mk:
            for kv in mk.group(1).split():
                k, _, v = kv.partition("=")
                attrs[k] = v
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        out.append((start, lang, attrs, "\n".join(body) + "\n"))
    return out


def programs(path):
    """The Python programs to run: (name, setup, code), grouped blocks joined."""
    progs = []
    for line, lang, attrs, code in blocks(path):
        if lang.lower() not in ("python", "py", "python3"):
            continue
        group = attrs.get("group")
        if group and progs and progs[-1][3] == group:
            name, setup, prev, _ = progs[-1]
            progs[-1] = (name, setup, prev + code, group)
            continue
        progs.append(("README.md:%d" % line, attrs.get("setup"), code, group))
    return [(n, s, c) for n, s, c, _ in progs]


PROGRAMS = programs(README)


def test_readme_has_python_blocks():
    # Parsing must find them all (a broken fence would hide blocks).
    assert len(PROGRAMS) >= 7, [p[0] for p in PROGRAMS]


@pytest.fixture(scope="module")
def emu():
    e = emulator.Emulator(api_key=API_KEY, latency_ms=5, seed=1).start()
    yield e
    e.stop()


def run_program(emu, setup, code, timeout=60.0):
    if setup not in SETUPS:
        pytest.fail("unknown snippet setup %r (known: %s)" % (setup, sorted(k for k in SETUPS if k)))
    before, after = SETUPS[setup]
    store = "memory://readme-" + uuid.uuid4().hex
    body = REDIS_URL.sub(store, code)
    for old, new in SUBST.get(setup, []):
        if old not in body:
            pytest.fail("setup %s expects %r in the block" % (setup, old))
        body = body.replace(old, new)
    prog = "STORE = %r\n%s\n%s\n%s\n%s\n%s" % (store, ALWAYS[0], before, body, after, ALWAYS[1])
    env = dict(os.environ, OPENAI_BASE_URL=emu.base_url, OPENAI_API_KEY=API_KEY)
    return subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True,
                          text=True, timeout=timeout * TIME_SCALE)


@pytest.mark.parametrize("name, setup, code", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_readme_snippet_runs(emu, name, setup, code):
    r = run_program(emu, setup, code)
    assert r.returncode == 0, "%s (setup=%s) failed:\n%s\n--- stdout\n%s" % (name, setup, r.stderr, r.stdout)


def test_a_broken_snippet_fails(emu):
    """The harness really runs code: a walkthrough whose reply never reaches
    send_to_user, or whose listener raises (a typo in reply_ack's argument),
    fails."""
    name, setup, code = next(p for p in PROGRAMS if p[1] == "http")
    for old, new in (("send_to_user(ev.conversation_id, ev.reply)", "pass"),
                     ("queue.reply_ack(ev.batch_id)", "queue.reply_ack(ev.batch_idd)")):
        broken = code.replace(old, new)
        assert broken != code
        r = run_program(emu, setup, broken)
        assert r.returncode != 0, (old, r.stderr)
