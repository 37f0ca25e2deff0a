"""The web dashboard in a Python web app: a thin adapter over the core's
request handler (``runlane_dashboard_handle``), which owns every route,
answer, check and action. This module only moves bytes between ASGI and the
handler, off the event loop (the handler's store round trips run in a
thread).

Mount it in Starlette or FastAPI, behind the app's own authentication::

    from runlane import AssistantMessageQueue
    from runlane.dashboard import app as dashboard_app

    queue = AssistantMessageQueue(store="redis://127.0.0.1:6379/0")
    api.mount("/ops/lanes", dashboard_app(queue))

It needs neither Starlette nor FastAPI: any ASGI server serves it, and
``root_path`` (Starlette's ``Mount``, ``uvicorn --root-path``) tells it
where it lives. :class:`Dashboard` answers one request without HTTP, for
other servers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Tuple

from ._base import _Handle
from ._native import ffi, lib
from .errors import ClosedError, last_error

__all__ = ["Dashboard", "DashboardApp", "Response", "app", "BODY_MAX"]

#: The core's cap on a POST body (``RUNLANE_DASHBOARD_BODY_MAX``): a request
#: is read up to one byte past it, then the core answers 413.
BODY_MAX: int = lib.RUNLANE_DASHBOARD_BODY_MAX

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Response:
    """One answer of the core's handler."""

    status: int
    #: Every header to send (Content-Type, Cache-Control, Content-Security-Policy, ...).
    headers: Dict[str, str]
    body: bytes


class Dashboard:
    """The core's dashboard handler over one queue (sync or asyncio).

    Options are the core's (``runlane_dashboard_new``): ``history_interval_ms``
    (1000..3600000, default 10000), ``history_size`` (2..10000, default 360),
    ``read_only`` (refuse every action with 403), ``scan_limit``
    (100..100000, default 10000). Made on first use, when the queue is open;
    once the queue is closed every call raises :class:`ClosedError`.
    Thread-safe.
    """

    def __init__(
        self,
        queue: Any,
        *,
        history_interval_ms: Optional[int] = None,
        history_size: Optional[int] = None,
        read_only: Optional[bool] = None,
        scan_limit: Optional[int] = None,
    ) -> None:
        opts: Dict[str, Any] = {}
        if history_interval_ms is not None:
            opts["history_interval_ms"] = history_interval_ms
        if history_size is not None:
            opts["history_size"] = history_size
        if read_only is not None:
            opts["read_only"] = read_only
        if scan_limit is not None:
            opts["scan_limit"] = scan_limit
        self._options = json.dumps(opts).encode() if opts else None
        self._queue = queue
        self._lock = threading.Lock()
        self._h: Optional[_Handle] = None
        self._d: Any = None

    def _handle_of_queue(self) -> _Handle:
        h = getattr(self._queue, "_h", None)
        if not isinstance(h, _Handle):
            raise ClosedError("the queue is not open")
        return h

    def _make(self, h: _Handle) -> Any:
        # runlane_dashboard_new makes no store call; the handler keeps the
        # client's pointer, so every later call holds the handle (acquire)
        # and is refused once the queue is closed.
        with self._lock:
            if self._d is None:
                rl = h.acquire()
                try:
                    d = lib.runlane_dashboard_new(rl, self._options or ffi.NULL)
                    if d == ffi.NULL:
                        raise last_error(lib.runlane_error_code(lib.runlane_error_last()))
                finally:
                    h.release()
                self._d = ffi.gc(d, lib.runlane_dashboard_destroy)
                self._h = h
            return self._d

    def _ready(self) -> Tuple[_Handle, Any]:
        h = self._h or self._handle_of_queue()
        return h, self._make(h)

    async def _aready(self) -> None:
        """Opens an asyncio queue first (it connects on first use)."""
        if self._d is None and getattr(self._queue, "_h", None) is None:
            opener = getattr(self._queue, "open", None)
            if opener is not None and asyncio.iscoroutinefunction(opener):
                await opener()

    def handle(
        self,
        method: str,
        path: str,
        query: bytes = b"",
        body: Optional[bytes] = None,
        csrf: Optional[str] = None,
    ) -> Response:
        """Answers one request (blocking: makes store round trips). ``path``
        is relative to the mount point (``/``, ``/api/overview``...), ``query``
        the raw query string without ``?``, ``csrf`` the X-Runlane-CSRF
        header."""
        h, d = self._ready()
        out = ffi.new("runlane_dashboard_response_t **")
        body_c = ffi.from_buffer(body) if body else ffi.NULL
        h.acquire()  # the client stays alive during the call
        try:
            rc = lib.runlane_dashboard_handle(
                out,
                d,
                method.encode("ascii", "replace"),
                path.encode("utf-8", "surrogateescape"),
                query or ffi.NULL,
                body_c,
                len(body) if body else 0,
                csrf.encode("latin-1", "replace") if csrf is not None else ffi.NULL,
            )
            if rc:
                raise last_error(rc)
        finally:
            h.release()
        r = out[0]
        try:
            n = ffi.new("size_t *")
            data = lib.runlane_dashboard_response_body(r, n)
            return Response(
                status=lib.runlane_dashboard_response_status(r),
                headers=json.loads(ffi.string(lib.runlane_dashboard_response_headers(r)).decode()),
                body=ffi.unpack(data, n[0]),
            )
        finally:
            lib.runlane_dashboard_response_destroy(r)

    def sample(self) -> None:
        """Takes a history sample now if one is due (one store round trip
        then, none otherwise)."""
        h, d = self._ready()
        h.acquire()
        try:
            rc = lib.runlane_dashboard_sample(d)
            if rc:
                raise last_error(rc)
        finally:
            h.release()


class DashboardApp:
    """The dashboard as an ASGI application (see :func:`app`)."""

    def __init__(self, queue: Any, *, sample: bool = True, **options: Any) -> None:
        self.dashboard = Dashboard(queue, **options)
        self._sample = sample
        self._sampler: Optional["asyncio.Task[None]"] = None
        self._closed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return  # websocket: not served (the ASGI server refuses it)
        self._start_sampler()
        await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self._start_sampler()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_sampler(self) -> None:
        if self._sample and self._sampler is None and not self._closed:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_loop())

    async def _sample_loop(self) -> None:
        # runlane_dashboard_sample makes a store round trip only when a
        # sample is due, so a 1 s tick costs nothing in between. Ends with
        # the queue (ClosedError) or aclose().
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                await self.dashboard._aready()
                await loop.run_in_executor(None, self.dashboard.sample)
            except ClosedError:
                return
            except Exception:  # a store hiccup: the next tick tries again
                pass
            await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        """Stops the sampling task. The queue stays open."""
        self._closed = True
        t, self._sampler = self._sampler, None
        if t is not None:
            t.cancel()
            try:
                await t
            except BaseException:
                pass

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "") or ""
        rel = path
        # Servers and frameworks differ on whether `path` includes
        # root_path (Starlette's Mount and uvicorn keep it): strip it when there.
        if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
            rel = path[len(root) :]
        query: bytes = scope.get("query_string", b"") or b""
        method: str = scope["method"].upper()
        if rel in ("", "/") and not path.endswith("/"):
            # The page's links are relative: the mount point itself needs its
            # trailing slash, or 'api/session' would resolve beside it.
            last = path.rsplit("/", 1)[-1]
            location = "./%s/%s" % (last, ("?" + query.decode("latin-1")) if query else "")
            await send(
                {
                    "type": "http.response.start",
                    "status": 308,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        headers = scope.get("headers") or []
        csrf: Optional[str] = None
        length: Optional[int] = None
        for k, v in headers:
            if k == b"x-runlane-csrf" and csrf is None:
                csrf = v.decode("latin-1")
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
        body: Optional[bytes] = None
        too_big = False
        if method not in ("GET", "HEAD"):
            body, too_big = await _read_body(receive, length)
        loop = asyncio.get_running_loop()
        try:
            await self.dashboard._aready()
            r = await loop.run_in_executor(
                None, self.dashboard.handle, method, rel or "/", query, body, csrf
            )
        except ClosedError:
            r = _error(503, "unavailable", "the queue is closed")
        out: List[Tuple[bytes, bytes]] = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in r.headers.items()
        ]
        out.append((b"content-length", str(len(r.body)).encode()))
        if too_big:
            out.append((b"connection", b"close"))  # the rest of the body stays unread
        await send({"type": "http.response.start", "status": r.status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else r.body})


async def _read_body(receive: Receive, declared: Optional[int]) -> Tuple[Optional[bytes], bool]:
    """At most BODY_MAX + 1 bytes of the request body; True when cut."""
    if declared is not None and declared > BODY_MAX:
        # Refused unread: the core sees a body one byte over its cap.
        return bytes(BODY_MAX + 1), True
    chunks: List[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"") or b""
        chunks.append(chunk)
        size += len(chunk)
        if size > BODY_MAX:
            return b"".join(chunks)[: BODY_MAX + 1], True
        if not msg.get("more_body", False):
            break
    data = b"".join(chunks)
    return (data or None), False


def _error(status: int, code: str, message: str) -> Response:
    # Only for what the core cannot answer (no handler: the queue is
    # closed), in the core's error shape.
    body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
    return Response(
        status=status,
        headers={"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
        body=body,
    )


def app(queue: Any, *, sample: bool = True, **options: Any) -> DashboardApp:
    """The dashboard of ``queue`` (an ``AssistantMessageQueue`` of
    ``runlane`` or ``runlane.aio``) as an ASGI app. Mount it behind the app's
    own authentication: the dashboard shows conversation contents and can
    retry, purge and release. ``options``: see :class:`Dashboard`;
    ``sample=False`` takes no history samples on a timer (only when the page
    asks)."""
    return DashboardApp(queue, sample=sample, **options)
