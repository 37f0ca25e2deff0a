"""The ASGI dashboard mount over real HTTP (uvicorn), against Redis: at the
root, under ``uvicorn --root-path``, and mounted in a Starlette app behind
its authentication. The answers themselves are the core's
(tests/c/test_dashboard.c); these tests prove the adapter carries requests
and answers whole: page, JSON, CSRF on actions, 4xx on bad input, the body
cap, the mount path, 503 once the queue is closed.
"""

import http.client
import json
import socket
import threading
import time
import urllib.parse

import pytest

import runlane
from runlane.dashboard import BODY_MAX, app as dashboard_app

from conftest import FAST, TIME_SCALE, redis_url, wait_until

uvicorn = pytest.importorskip("uvicorn")  # run_tests.sh installs it
starlette_routing = pytest.importorskip("starlette.routing")


class Server:
    """uvicorn serving `asgi` on a free loopback port, in a thread."""

    def __init__(self, asgi, **config):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        cfg = uvicorn.Config(asgi, log_level="warning", lifespan="auto", **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10, what="uvicorn started")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10 * TIME_SCALE)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.text = body.decode("utf-8", "replace")
        try:
            self.json = json.loads(self.text)
        except ValueError:
            self.json = None


def request(port, path, method="GET", body=None, headers=None, chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30 * TIME_SCALE)
    try:
        h = dict(headers or {})
        if chunked:
            conn.putrequest(method, path)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            try:
                for i in range(0, len(body), 4096):
                    part = body[i : i + 4096]
                    conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered before reading it all
        else:
            conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def queue_with_dead_letter(store):
    """A sync queue on Redis whose handler fails the first batch for good
    (max_attempts 1): one dead letter; `delivered` collects later batches."""
    delivered = []
    state = {"fail": True}

    def handler(batch):
        if state["fail"]:
            raise RuntimeError("upstream 503 (test)")
        delivered.append(batch.conversation_id)

    opts = dict(FAST)
    opts.update(store)
    q = runlane.AssistantMessageQueue(handler, max_attempts=1, **opts)
    q.start_worker()
    q.add_message_to_thread("conv-dead", "hello")
    wait_until(lambda: len(q.dead_list()) == 1, timeout=10, what="a dead letter")
    state["fail"] = False
    return q, delivered


def mount_cases(port, base, q, delivered, extra=None):
    """Every case against the dashboard at `base` (ending with '/')."""
    extra = dict(extra or {})

    def get(p, **kw):
        return request(port, base + p, headers=extra, **kw)

    def post(p, body, headers=None, **kw):
        h = dict(extra)
        h.update(headers or {})
        return request(port, base + p, method="POST", body=body, headers=h, **kw)

    page = get("")
    assert page.status == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    assert page.headers.get("content-security-policy"), "the core's CSP header is sent"
    assert page.headers.get("x-content-type-options") == "nosniff"

    session = get("api/session")
    assert session.status == 200, session.text
    token = session.json["csrf_token"]
    assert len(token) == 64
    overview = get("api/overview")
    assert overview.status == 200 and overview.json["totals"]["dead"] == 1, overview.text
    dead = get("api/dead?offset=0&limit=10")
    assert dead.status == 200 and len(dead.json["items"]) == 1, dead.text
    assert "upstream 503" in dead.text
    dead_id = dead.json["items"][0]["id"]
    assert get("api/conversations?state=dead&search=conv-").status == 200
    assert get("api/conversation?id=" + urllib.parse.quote("conv-dead")).status == 200

    # Bad paths, methods, paging: the core's 4xx, carried whole.
    assert get("api/nope").status == 404
    assert post("api/overview", b"{}", {"X-Runlane-CSRF": token}).status == 405
    bad = get("api/conversations?state=dead&limit=100000")
    assert bad.status == 400 and bad.json["error"]["status"] == 400
    assert get("api/conversations?state=bogus").status == 400

    # Actions: refused without the token, with a forged one, with a bad or
    # oversized body; nothing changes.
    js = {"Content-Type": "application/json"}
    body = json.dumps({"id": dead_id}).encode()
    assert post("api/dead/retry", body, js).status == 403
    assert post("api/dead/retry", body, dict(js, **{"X-Runlane-CSRF": "f" * 64})).status == 403
    with_token = dict(js, **{"X-Runlane-CSRF": token})
    assert post("api/dead/retry", b'{"id": 12}', with_token).status == 400
    assert post("api/dead/retry", b"{not json", with_token).status == 400
    assert post("api/dead/retry", b'{"nope": true}', with_token).status == 400
    huge = json.dumps({"id": "x" * (4 * BODY_MAX)}).encode()
    too_big = post("api/dead/retry", huge, with_token)
    assert too_big.status == 413, too_big.text
    chunked = post("api/dead/retry", huge, with_token, chunked=True)
    assert chunked.status == 413, chunked.text
    assert len(q.dead_list()) == 1, "refused requests changed nothing"
    assert delivered == []

    ok = post("api/dead/retry", body, with_token)
    assert ok.status == 200, ok.text
    assert ok.json == {"ok": True, "count": 1}
    wait_until(lambda: "conv-dead" in delivered, timeout=10, what="the retried batch delivered")
    assert q.dead_list() == []


@pytest.fixture
def redis_store():
    import uuid

    return {"store": redis_url(), "key_prefix": "dash" + uuid.uuid4().hex[:12]}


def test_asgi_dashboard_at_the_root(redis_store):
    q, delivered = queue_with_dead_letter(redis_store)
    try:
        with Server(dashboard_app(q)) as s:
            mount_cases(s.port, "/", q, delivered)
    finally:
        q.close(drain=False)


def test_asgi_dashboard_under_root_path(redis_store):
    """`uvicorn --root-path /ops/lanes` behind a proxy that strips the prefix:
    uvicorn puts root_path in front of each path; the app takes it off again
    (without that, every route would be 404)."""
    q, delivered = queue_with_dead_letter(redis_store)
    try:
        with Server(dashboard_app(q), root_path="/ops/lanes") as s:
            mount_cases(s.port, "/", q, delivered)
    finally:
        q.close(drain=False)


def test_asgi_dashboard_mounted_in_starlette_behind_auth(redis_store):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    class Auth:
        """The app's own authentication, in front of everything."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and (b"authorization", b"Bearer ops") not in scope["headers"]:
                await PlainTextResponse("who are you", status_code=401)(scope, receive, send)
                return
            await self.inner(scope, receive, send)

    q, delivered = queue_with_dead_letter(redis_store)
    try:
        web = Starlette(
            routes=[
                Route("/", lambda req: PlainTextResponse("home")),
                Mount("/admin/runlane", app=dashboard_app(q)),
            ],
            middleware=[Middleware(Auth)],
        )
        with Server(web) as s:
            assert request(s.port, "/admin/runlane/").status == 401, "the app's auth runs first"
            auth = {"Authorization": "Bearer ops"}
            assert request(s.port, "/", headers=auth).text == "home"
            bare = request(s.port, "/admin/runlane", headers=auth)
            assert bare.status in (307, 308), bare.status  # Starlette's or ours: both add the slash
            loc = urllib.parse.urljoin("http://h/admin/runlane", bare.headers["location"])
            assert urllib.parse.urlsplit(loc).path == "/admin/runlane/"
            mount_cases(s.port, "/admin/runlane/", q, delivered, extra=auth)
    finally:
        q.close(drain=False)


def test_asgi_dashboard_after_close_answers_503(redis_store):
    opts = dict(FAST)
    opts.update(redis_store)
    q = runlane.AssistantMessageQueue(**opts)
    with Server(dashboard_app(q)) as s:
        assert request(s.port, "/api/overview").status == 200
        q.close(drain=False)
        r = request(s.port, "/api/overview")
        assert r.status == 503 and r.json["error"]["status"] == 503


def test_asgi_dashboard_over_an_asyncio_queue(redis_store):
    """runlane.aio's queue opens on first use: the app opens it."""
    import asyncio

    import runlane.aio

    opts = dict(FAST)
    opts.update(redis_store)
    holder = {}

    # The asyncio queue lives on uvicorn's loop (created lazily by the app).
    q = runlane.aio.AssistantMessageQueue(**opts)
    holder["q"] = q
    with Server(dashboard_app(q)) as s:
        r = request(s.port, "/api/overview")
        assert r.status == 200, r.text
        assert r.json["totals"]["dead"] == 0
        # Closed on the server's loop.
        fut = asyncio.run_coroutine_threadsafe(q.close(drain=False), q._loop)
        fut.result(10 * TIME_SCALE)
        assert request(s.port, "/api/overview").status == 503


def test_dashboard_handle_without_http(redis_store):
    """Dashboard.handle answers one request, for servers other than ASGI."""
    from runlane.dashboard import Dashboard

    opts = dict(FAST)
    opts.update(redis_store)
    with runlane.AssistantMessageQueue(**opts) as q:
        d = Dashboard(q, read_only=True)
        s = d.handle("GET", "/api/session")
        assert s.status == 200 and json.loads(s.body)["read_only"] is True
        tok = json.loads(s.body)["csrf_token"]
        r = d.handle("POST", "/api/dead/purge", body=b'{"all":true}', csrf=tok)
        assert r.status == 403 and b"read-only" in r.body
        with pytest.raises(runlane.RunlaneError):
            Dashboard(q, history_size=1).handle("GET", "/")
    started = time.monotonic()
    with pytest.raises(runlane.ClosedError):
        d.handle("GET", "/api/overview")
    assert time.monotonic() - started < 5 * TIME_SCALE


def test_dashboard_server_runner_prints_its_url_and_serves(redis_store):
    """tests/python/dashboard_server.py (the browser scenario's ASGI server):
    prints the URL, serves the page and the API there, stops on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard_server.py")
    proc = subprocess.Popen(
        [sys.executable, script, "--store", redis_store["store"],
         "--set", "key.prefix=" + redis_store["key_prefix"], "--path", "/ops/lanes"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/ops/lanes/"), (url, proc.stderr.read() if proc.poll() is not None else "")
        parts = urllib.parse.urlsplit(url)
        page = request(parts.port, parts.path)
        assert page.status == 200 and "<html" in page.text.lower()
        session = request(parts.port, parts.path + "api/session")
        assert session.status == 200 and session.json["csrf_token"]
        assert request(parts.port, parts.path + "api/overview").json["totals"]["dead"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20 * TIME_SCALE)
    assert rc == 0, proc.stderr.read()
