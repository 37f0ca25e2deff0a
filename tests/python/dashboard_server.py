"""Serves the dashboard of a queue through the ASGI mount (uvicorn), for the
browser scenario (tests/browser) and for looking at it by hand::

    python tests/python/dashboard_server.py --store redis://127.0.0.1:6379/0 \\
        [--set key.prefix=P]... [--path /ops/lanes] [--port 0] [--host 127.0.0.1] \\
        [--history-interval-ms N]

Run with the venv where ``pip install ./python uvicorn starlette`` was done
(python/run_tests.sh's). The app is mounted under ``--path`` in a Starlette
app (``Mount``), as a FastAPI/Starlette user would. Prints the dashboard's
URL (ending with '/') as the first line of stdout once it listens; serves
until SIGTERM/SIGINT or its stdin pipe closes, then closes the queue. No worker runs
here: the traffic and the worker are the caller's.
"""

import argparse
import os
import signal
import stat
import socket
import sys
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

import runlane
from runlane.dashboard import app as dashboard_app


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--path", default="/ops/lanes")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--history-interval-ms", type=int, default=None)
    a = p.parse_args()
    config = {}
    for kv in a.set:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            p.error("--set wants KEY=VALUE, got %r" % kv)
        config[k] = v
    path = "/" + a.path.strip("/")
    if path == "/":
        p.error("--path must not be the root (the mount is tested under a path)")

    opts = {}
    if a.history_interval_ms is not None:
        opts["history_interval_ms"] = a.history_interval_ms
    queue = runlane.AssistantMessageQueue(store=a.store, config=config)
    web = Starlette(routes=[Mount(path, app=dashboard_app(queue, **opts))])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning", lifespan="on"))
    # uvicorn's own signal handlers would only stop the server; ours also
    # close the queue afterwards (in main, below).
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    def stop(*_):
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop()

    def announce():
        # The URL once uvicorn listens (its `started` flag), or nothing.
        while not server.started and not server.should_exit:
            threading.Event().wait(0.01)
        if server.started:
            port = sock.getsockname()[1]
            sys.stdout.write("http://%s:%d%s/\n" % (a.host, port, path))
            sys.stdout.flush()

    # Only a pipe's end means "stop" (a parent that went away); /dev/null
    # or a terminal does not.
    try:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            threading.Thread(target=watch_stdin, daemon=True).start()
    except OSError:
        pass
    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        queue.close(drain=False)
        sock.close()


if __name__ == "__main__":
    main()
