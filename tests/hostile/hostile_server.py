"""A hostile stand-in for an OpenAI-compatible server (Python stdlib only).

It answers the Responses and Assistants endpoints the way a broken or
malicious server (or a proxy in between) might, one mode per server:

  endless_line    a create answers 200 and then `data: ` followed by bytes
                  without a newline, forever (a JSON body without end when
                  the request is not a stream)
  endless_event   a create answers `data: x...` lines without the blank line
                  that ends an event, forever (a body without end likewise)
  garbage_sse     a create answers 200 `data: {garbage` (`{garbage` as JSON)
  non_object      a create answers 200 with JSON that is not an object: [1,2,3]
  missing_status  a create, and every GET of what it made, answers an object
                  with an id and no status ({"id":"resp_x"} / {"id":"run_x"})
  retry_after     every request answers 429 with Retry-After: 999999
  items_404       a create answers a completed response asking for a tool
                  call; POST /conversations/{id}/items answers 404 (a server
                  that lacks the endpoint); the items listing shows what was
                  sent (so busy.policy=interrupt finds the call pending)
  slow_drip       a create answers 200 and then one byte every 100 ms forever
                  (SSE comments for a stream, a JSON body otherwise)
  huge_headers    a create answers 200 with megabytes of headers

Everything else (listings of items, runs, messages) answers like an empty
conversation, so each mode's fault is the one the worker meets. The server
counts every request (by "METHOD /path" without the query) and records the
Authorization headers it saw. Endless answers stop when the client goes
away or the server stops.
"""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODES = (
    "endless_line",
    "endless_event",
    "garbage_sse",
    "non_object",
    "missing_status",
    "retry_after",
    "items_404",
    "slow_drip",
    "huge_headers",
)

CREATE_RESPONSE = re.compile(r"^/responses$")
CREATE_RUN = re.compile(r"^/threads/[^/]+/runs$")
SUBMIT_OUTPUTS = re.compile(r"^/threads/[^/]+/runs/[^/]+/submit_tool_outputs$")
CONV_ITEMS = re.compile(r"^/conversations/([^/]+)/items$")


class HostileServer:
    def __init__(self, mode):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.lock = threading.Lock()
        self.counts = {}
        self.auth = set()
        self.items = {}  # items_404: conversation -> list of items
        self.next_id = 0
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def total(self):
        with self.lock:
            return sum(self.counts.values())

    def count(self, key):
        with self.lock:
            return self.counts.get(key, 0)

    def snapshot(self):
        with self.lock:
            return dict(self.counts)

    def new_id(self, prefix):
        with self.lock:
            self.next_id += 1
            return f"{prefix}_{self.next_id}"


def _handler(server):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: every answer ends with the connection, so an endless
        # body needs no length or chunking.
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        # ---- helpers

        def _read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                return json.loads(raw) if raw else {}
            except ValueError:
                return {}

        def _send(self, status, body, ctype="application/json", extra=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _start_endless(self, stream):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
            self.end_headers()

        def _pump(self, chunk, delay=0.0):
            """Writes chunk until the client goes away or the server stops."""
            try:
                while not server.stopping.is_set():
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if delay:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass

        # ---- dispatch

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

        def _handle(self, method):
            url = urlsplit(self.path)
            path = url.path[3:] if url.path.startswith("/v1/") else url.path
            query = parse_qs(url.query)
            body = self._read_body() if method == "POST" else {}
            with server.lock:
                key = f"{method} {path}"
                server.counts[key] = server.counts.get(key, 0) + 1
                if self.headers.get("Authorization"):
                    server.auth.add(self.headers.get("Authorization"))
            mode = server.mode
            stream = bool(body.get("stream")) if isinstance(body, dict) else False
            is_create = method == "POST" and (CREATE_RESPONSE.match(path) or CREATE_RUN.match(path)
                                              or SUBMIT_OUTPUTS.match(path))
            assistants = path.startswith("/threads/")

            if mode == "retry_after":
                return self._send(429, {"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded",
                                                  "message": "slow down"}},
                                  extra=[("Retry-After", "999999")])
            if mode == "items_404":
                return self._items_404(method, path, query, body)
            if is_create:
                return self._create(mode, stream, assistants, path)
            if method == "GET" and mode == "missing_status" and (
                    re.match(r"^/responses/[^/]+$", path) or re.match(r"^/threads/[^/]+/runs/[^/]+$", path)):
                return self._send(200, {"id": path.rsplit("/", 1)[1]})
            return self._empty(method, path)

        def _empty(self, method, path):
            """What an empty conversation or thread answers."""
            if method == "GET" and (path.endswith("/items") or path.endswith("/runs")
                                    or path.endswith("/messages")):
                return self._send(200, {"object": "list", "data": [], "first_id": None,
                                        "last_id": None, "has_more": False})
            if method == "POST" and path.endswith("/cancel"):
                return self._send(200, {"id": path.split("/")[-2], "status": "cancelled"})
            return self._send(404, {"error": {"type": "invalid_request_error", "code": "not_found",
                                              "message": f"no such thing: {path}"}})

        def _create(self, mode, stream, assistants, path):
            if mode == "endless_line":
                self._start_endless(stream)
                if stream:
                    self.wfile.write(b"data: ")
                else:
                    self.wfile.write(b'{"id":"')
                return self._pump(b"x" * 65536)
            if mode == "endless_event":
                self._start_endless(stream)
                if stream:
                    return self._pump(b"data: " + b"y" * 1018 + b"\n")
                self.wfile.write(b'{"id":"')
                return self._pump(b"y" * 65536)
            if mode == "garbage_sse":
                if stream:
                    return self._send(200, b"data: {garbage\n\n", ctype="text/event-stream")
                return self._send(200, b"{garbage")
            if mode == "non_object":
                return self._send(200, [1, 2, 3])
            if mode == "missing_status":
                oid = "run_x" if assistants else "resp_x"
                if stream:
                    if assistants:
                        ev = b"event: thread.run.created\ndata: " + json.dumps({"id": oid}).encode() + b"\n\n"
                    else:
                        ev = (b"event: response.created\ndata: "
                              + json.dumps({"type": "response.created", "response": {"id": oid}}).encode()
                              + b"\n\n")
                    return self._send(200, ev, ctype="text/event-stream")
                return self._send(200, {"id": oid})
            if mode == "slow_drip":
                self._start_endless(stream)
                if not stream:
                    self.wfile.write(b'{"id":"')
                return self._pump(b":" if stream else b"z", delay=0.1)
            if mode == "huge_headers":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                pad = "p" * 1000
                try:
                    for i in range(4000):
                        self.send_header(f"X-Pad-{i}", pad)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass
                return None
            return self._send(500, {"error": {"message": "unexpected mode"}})

        def _items_404(self, method, path, query, body):
            m = CONV_ITEMS.match(path)
            if m and method == "POST":
                return self._send(404, {"error": {"type": "invalid_request_error", "code": None,
                                                  "message": "Not found"}})
            if m and method == "GET":
                conv = m.group(1)
                with server.lock:
                    items = list(server.items.get(conv, []))
                order = (query.get("order") or ["desc"])[0]
                after = (query.get("after") or [""])[0]
                if order == "desc":
                    items.reverse()
                if after:
                    ids = [it["id"] for it in items]
                    items = items[ids.index(after) + 1:] if after in ids else []
                return self._send(200, {"object": "list", "data": items, "has_more": False,
                                        "first_id": items[0]["id"] if items else None,
                                        "last_id": items[-1]["id"] if items else None})
            if method == "POST" and path == "/responses":
                conv = body.get("conversation") if isinstance(body, dict) else None
                rid = server.new_id("resp")
                call = {"id": server.new_id("fc"), "type": "function_call", "call_id": server.new_id("call"),
                        "name": "lookup", "arguments": "{}", "status": "completed"}
                with server.lock:
                    lst = server.items.setdefault(conv or "", [])
                    for it in body.get("input") or []:
                        if isinstance(it, dict):
                            it = dict(it)
                            it["id"] = f"item_{len(lst) + 1}_{rid}"
                            if it.get("type") == "message" and isinstance(it.get("content"), str):
                                it["content"] = [{"type": "input_text", "text": it["content"]}]
                            lst.append(it)
                    lst.append(call)
                resp = {"id": rid, "object": "response", "status": "completed", "output": [call],
                        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}
                if body.get("stream"):
                    data = b""
                    for typ in ("response.created", "response.completed"):
                        data += (b"event: " + typ.encode() + b"\ndata: "
                                 + json.dumps({"type": typ, "response": resp}).encode() + b"\n\n")
                    return self._send(200, data, ctype="text/event-stream")
                return self._send(200, resp)
            if method == "GET" and path.startswith("/responses/"):
                return self._send(200, {"id": path.rsplit("/", 1)[1], "object": "response",
                                        "status": "completed", "output": []})
            return self._empty(method, path)

    return Handler


if __name__ == "__main__":  # manual use: python3 hostile_server.py MODE
    import sys

    s = HostileServer(sys.argv[1] if len(sys.argv) > 1 else "garbage_sse").start()
    print(s.base_url, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        s.stop()
