"""The synchronous queue: :class:`AssistantMessageQueue`.

Threads: ``start_worker()`` starts the core's I/O thread and, by default
(``dispatch="thread"``), one Python dispatcher thread that waits in
``runlane_poll`` (without the GIL) and hands each event to the listeners and
each batch to the handler, which runs on a small pool of handler threads
(``handler_threads``, default 4; batches of different conversations run in
parallel, one conversation never twice at once). With ``dispatch="manual"``
no Python thread is started: call :meth:`process_events` or
:meth:`run_forever` (or iterate :meth:`events`), and handlers run in the
calling thread.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import os
import json
import logging
import queue as _queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, Union

from . import _base
from ._base import (
    STOP_DRAIN,
    STOP_RELEASE,
    Batch,
    Enqueued,
    DeadLetter,
    Event,
    EventSource,
    Listeners,
    NewMessage,
    Status,
    ToolCallsEvent,
    log_event,
    make_event,
    message_options,
    settle_error_is_expected,
)
from .config import normalize_config, shown_store
from .errors import (
    ArgumentTypeError,
    ClosedError,
    InvalidArgumentError,
    NonRetriableError,
    RunlaneError,
    StateError,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import Options

log = logging.getLogger("runlane")

__all__ = ["AssistantMessageQueue"]

Handler = Callable[[Batch], Any]
RequiresActionHandler = Callable[[ToolCallsEvent], Any]

_END = object()

# Open sync queues, closed at interpreter exit so that leases go back at once
# instead of expiring. A plain atexit hook: it runs after the interpreter has
# joined the program's non-daemon threads (which may still use a queue), while
# our daemon threads (dispatcher, handlers) still run.
_open_queues: "weakref.WeakSet[AssistantMessageQueue]" = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


def _close_all_at_exit() -> None:
    for q in list(_open_queues):
        try:
            q.close(drain=False, timeout=1.0)
        except Exception:  # pragma: no cover - best effort at exit
            log.debug("close at exit failed", exc_info=True)
    # Handles of asyncio queues never closed: runlane_destroy releases
    # their leases (their loop is gone by now).
    for h in list(_base._live_handles):
        try:
            h.destroy()
        except Exception:  # pragma: no cover
            log.debug("destroy at exit failed", exc_info=True)


def _queues_after_fork_in_child() -> None:
    # The parent's queues are dead here (their threads did not survive the
    # fork, their locks may be held forever): mark them closed without
    # touching anything, and keep the exit hook away from them.
    global _exit_hook_lock
    _exit_hook_lock = threading.Lock()
    for q in list(_open_queues):
        q._forked_in_child()
    _open_queues.clear()


def _install_exit_hook() -> None:
    global _exit_hook_installed
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    atexit.register(_close_all_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_queues_after_fork_in_child)


class _HandlerPool:
    """A few daemon threads running handler calls (not concurrent.futures:
    its exit hook would run queued handlers during interpreter shutdown)."""

    def __init__(self, size: int, name: str) -> None:
        self._q: "_queue.SimpleQueue[Any]" = _queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name="%s-%d" % (name, i), daemon=True)
            for i in range(size)
        ]
        self.idents: Set[Optional[int]] = set()
        for t in self._threads:
            t.start()
            self.idents.add(t.ident)

    def _run(self) -> None:
        while True:
            fn = self._q.get()
            if fn is _END:
                return
            try:
                fn()
            except BaseException:  # noqa: B902 - keep the pool alive
                log.exception("runlane: error in a handler thread")

    def submit(self, fn: Callable[[], Any]) -> None:
        self._q.put(fn)

    def shutdown(self, timeout: Optional[float] = None) -> None:
        for _ in self._threads:
            self._q.put(_END)
        me = threading.current_thread()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if t is me:
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


class AssistantMessageQueue(EventSource):
    """A runlane client: queues messages per conversation, batches them by a
    quiet window, and runs one batch per conversation at a time (across every
    process sharing the store) through ``handler``.

    ``handler(batch)`` (sync or ``async def``) receives a :class:`Batch`;
    returning normally acks it, raising fails the attempt (retried with
    backoff, dead-lettered after ``max_attempts``), raising
    :class:`NonRetriableError` dead-letters it at once. The handler may also
    settle explicitly with ``batch.ack()``/``batch.fail(msg, retriable=...)``.

    Every core configuration key is a keyword argument, dots replaced by
    underscores (``store="redis://..."``, ``batch_window_ms=3000``,
    ``max_attempts=5``...); see :func:`runlane.config_properties`. Or pass
    ``config={"batch.window.ms": 3000}``.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        handler: Optional[Handler] = None,
        *,
        config: Optional[Mapping[str, Any]] = None,
        handle_requires_action: Optional[RequiresActionHandler] = None,
        dispatch: str = "thread",
        handler_threads: int = 4,
        **options: Unpack[Options],
    ) -> None:
        if handler is not None and not callable(handler):
            raise ArgumentTypeError("handler must be callable, got %s" % type(handler).__name__)
        if handle_requires_action is not None and not callable(handle_requires_action):
            raise ArgumentTypeError("handle_requires_action must be callable")
        if dispatch not in ("thread", "manual"):
            raise InvalidArgumentError('dispatch must be "thread" or "manual", got %r' % (dispatch,))
        if not isinstance(handler_threads, int) or isinstance(handler_threads, bool) or handler_threads < 1:
            raise InvalidArgumentError("handler_threads must be an int >= 1, got %r" % (handler_threads,))
        values = normalize_config(config, **options)
        self.handler: Optional[Handler] = handler
        self.handle_requires_action: Optional[RequiresActionHandler] = handle_requires_action
        self._dispatch_mode = dispatch
        self._handler_threads = handler_threads
        self._listeners = Listeners()
        self._subscribers: List["_queue.SimpleQueue[Any]"] = []
        self._sub_lock = threading.Lock()
        self._state = threading.Lock()
        self._started = False
        self._stopped = False
        self._closing = False
        self._closed_evt = threading.Event()
        self._deferred_destroy = False
        self._close_deadline: Optional[float] = None  # time.monotonic() by which close() ends
        self._dispatcher: Optional[threading.Thread] = None
        self._pool: Optional[_HandlerPool] = None
        self._local = threading.local()
        self._manual_pollers = 0  # threads inside process_events()/events() (manual mode)
        self._warned_unhandled = False
        # Batches delivered to no handler, listener or iterator: close() gives
        # them back instead of draining for them.
        self._unheld: Dict[str, Batch] = {}
        self._h = _base._Handle(values)
        self.config: Dict[str, str] = dict(values)
        self._store_shown = shown_store(values)  # password masked by the core
        _open_queues.add(self)
        _install_exit_hook()
        log.debug("queue created on store %s", self._store_shown)

    # ------------------------------------------------------------ producer

    def add_message_to_thread(
        self,
        thread_id: str,
        message: str,
        instructions: Optional[str] = None,
        *,
        idempotency_key: Optional[Union[str, int]] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Queues ``message`` for conversation ``thread_id``; returns the
        message id (the first message's id when ``idempotency_key`` was
        already used)."""
        return self.enqueue(
            thread_id,
            message,
            instructions=instructions,
            idempotency_key=idempotency_key,
            metadata=metadata,
        ).id

    def enqueue(
        self,
        conversation_id: str,
        content: str,
        *,
        instructions: Optional[str] = None,
        idempotency_key: Optional[Union[str, int]] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> Enqueued:
        """Queues one message; returns ``Enqueued(id, duplicate)``."""
        opts = message_options(instructions, idempotency_key, metadata)
        return self._h.enqueue(conversation_id, content, opts)

    def enqueue_many(self, messages: Iterable[Union[NewMessage, Tuple[str, str]]]) -> List[Enqueued]:
        """Queues many messages in one round trip, all or nothing. Each item is
        a dict ``{"conversation_id", "content", "instructions"?,
        "idempotency_key"?, "metadata"?}`` or a ``(conversation_id, content)``
        pair. Returns one ``Enqueued`` per item, in order."""
        return self._h.enqueue_many(messages)

    def touch(self, conversation_id: str) -> None:
        """Typing signal: restarts the conversation's quiet window."""
        self._h.touch(conversation_id)

    # ------------------------------------------------------------ status

    def status(self, conversation_id: Optional[str] = None) -> Status:
        """Queue totals, or the detail of one conversation."""
        return self._h.status(conversation_id)

    def get_queue_status(self) -> Status:
        """Queue totals (pending, ready, inflight, dead, conversations...)."""
        return self._h.status(None)

    def metrics(self) -> str:
        """This client's counters in the Prometheus text format."""
        return self._h.metrics()

    def health(self) -> _base.Health:
        """Store reachable, worker state, lag of the oldest due conversation
        (``Health``), from one core call making one store round trip. A store
        that does not answer is reported (``store_ok=False``), not raised."""
        return self._h.health()

    def dead_list(self, offset: int = 0, limit: int = 100) -> List[DeadLetter]:
        """Dead-lettered batches, oldest first."""
        return self._h.dead_list(offset, limit)

    def dead_retry(self, dead_id: Optional[str] = None) -> int:
        """Puts a dead letter (all of them when None) back in its conversation,
        due at once with attempts reset. Returns how many."""
        return self._h.dead_retry(dead_id)

    def dead_purge(self, dead_id: Optional[str] = None) -> int:
        """Deletes a dead letter (all of them when None). Returns how many."""
        return self._h.dead_purge(dead_id)

    # ------------------------------------------------------------ settling

    def ack(self, batch_id: str, result: Any = None) -> None:
        """Acks a batch by id (when not using a handler)."""
        self._h.ack(batch_id, result)

    def fail(self, batch_id: str, error: str = "failed by the host", retriable: bool = True) -> None:
        """Fails a batch attempt by id (when not using a handler)."""
        self._h.fail(batch_id, error, retriable)

    def release_batch(self, batch_id: str) -> None:
        """Gives a batch back by id without spending an attempt (when not
        using a handler): it is due at once for any worker and delivered
        again with the same batch id. Raises NotFoundError for a batch not
        held here."""
        self._h.batch_release(batch_id)

    def reply_ack(self, batch_id: str) -> None:
        """Confirms that the reply of a "completed" event reached the user
        (HTTP backends; the custom backend raises UnsupportedError)."""
        self._h.reply_ack(batch_id)

    def submit_tool_outputs(self, batch_id: str, outputs: Any) -> None:
        """Answers a "tool_calls" event: a list of ``{"tool_call_id",
        "output"}`` or a dict ``{tool_call_id: output}``."""
        self._h.submit_tool_outputs(batch_id, outputs)

    def create_conversation(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        """Creates a provider conversation ("conv_...", responses backend) to
        use as a conversation id. Blocks on an HTTP request."""
        return self._h.conversation_create(metadata)

    def create_thread(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        """Creates a provider thread ("thread_...", assistants backend) to use
        as a conversation id. Blocks on an HTTP request."""
        return self._h.thread_create(metadata)

    def get_conversation_mapping(self, key: str) -> Optional[str]:
        """The provider conversation ("conv_...") or thread ("thread_...") a
        conversation key maps to, or None when it has none yet.

        With the responses and assistants backends, a conversation id that
        is not a provider id ("chat-42", a phone number) is a key: its first
        turn creates the provider conversation and records the mapping in
        the store, shared by every worker; at most one provider conversation
        ever receives a key's messages."""
        return self._h.conversation_map_get(key)

    def set_conversation_mapping(self, key: str, provider_id: str) -> None:
        """Maps ``key`` to an existing provider conversation or thread (an
        import), replacing any mapping; the key's next turn uses it."""
        self._h.conversation_map_set(key, provider_id)

    def forget_conversation_mapping(self, key: str) -> None:
        """Forgets ``key``'s mapping: its next turn creates a new provider
        conversation (the old one is left as it is at the provider)."""
        self._h.conversation_map_forget(key)

    def migrate_thread(self, key: str, thread_id: Optional[str] = None) -> Dict[str, Any]:
        """Migration off the Assistants API: copies the messages of the thread
        ``thread_id`` (None: the thread ``key`` maps to, or ``key`` itself when
        it is a thread id), oldest first, into a new Responses conversation
        and maps ``key`` to it. Resumable (run it again after a failure: only
        what is missing is copied) and idempotent (once done, nothing is copied
        again). Returns ``{"conversation_id", "thread_id", "copied", "total"}``.
        Blocks on HTTP requests."""
        return self._h.migrate_thread(key, thread_id)

    # ------------------------------------------------------------ events

    def events(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Iterates events until the worker stops or the queue closes. With
        the dispatcher thread it yields copies of what the dispatcher
        handles; in manual mode iterating drives the dispatch itself.
        ``timeout`` (seconds) ends the iteration after that long without
        an event."""
        if self._dispatch_mode == "manual":
            yield from self._manual_events(timeout)
            return
        sub: "_queue.SimpleQueue[Any]" = _queue.SimpleQueue()
        with self._sub_lock:
            self._subscribers.append(sub)
        try:
            if self._closed_evt.is_set() or self._h.closed:
                return
            while True:
                try:
                    item = sub.get(timeout=timeout)
                except _queue.Empty:
                    return
                if item is _END:
                    return
                yield item
                if item.type == "stopped":
                    return
        finally:
            with self._sub_lock:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)

    def _manual_events(self, timeout: Optional[float]) -> Iterator[Event]:
        self._pollers_add(1)
        try:
            yield from self._manual_events_inner(timeout)
        finally:
            self._pollers_add(-1)

    def _manual_events_inner(self, timeout: Optional[float]) -> Iterator[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._h.closed:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            ev = self._poll_one(int(wait * 1000))
            if ev is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            if deadline is not None:
                deadline = time.monotonic() + timeout  # type: ignore[operator]
            yield ev
            if ev.type == "stopped":
                return

    # ------------------------------------------------------------ worker

    def start_worker(self) -> None:
        """Starts the worker: claims due conversations and delivers batches to
        the handler. Once per queue (a stopped worker cannot restart)."""
        with self._state:
            if self._closing:
                raise ClosedError("the queue is closed")
            if self._started:
                raise StateError("the worker was already started")
            # Manual dispatch: the host's own loop takes the events.
            self._h.start_check(
                self.handler is not None
                or self._listeners.has("batch")
                or bool(self._subscribers)
                or self._dispatch_mode == "manual"
            )
            self._h.start()
            self._started = True
            if self._dispatch_mode == "thread":
                self._pool = _HandlerPool(self._handler_threads, "runlane-handler")
                self._dispatcher = threading.Thread(
                    target=self._dispatch_loop, name="runlane-dispatch", daemon=True
                )
                self._dispatcher.start()
        log.info("worker started")

    def stop_worker(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stops the worker. ``drain``: claim nothing new and wait up to
        ``timeout`` seconds for batches in flight to be settled, then release
        the rest; otherwise release every lease at once (no attempt spent).
        Raises runlane.TimeoutError when draining did not finish.

        A drain needs events to keep flowing while this call waits, so the
        leases are released instead when called from a handler or listener,
        or in manual mode when no other thread is in process_events()."""
        with self._state:
            if not self._started or self._stopped:
                raise StateError("the worker is %s" % ("stopped" if self._stopped else "not started"))
            self._stopped = True
        mode = STOP_DRAIN if drain and self._can_drain() else STOP_RELEASE
        self._h.stop(mode, max(0, int(timeout * 1000)))

    def process_events(self, timeout: float = 0.0) -> int:
        """Manual dispatch: waits up to ``timeout`` seconds for an event,
        then dispatches every pending event in this thread. Returns how many
        were dispatched. (With the dispatcher thread, do not call this.)"""
        if self._dispatch_mode != "manual":
            raise StateError('process_events() is for dispatch="manual"; the dispatcher thread is polling')
        n = 0
        wait_ms = max(0, int(timeout * 1000))
        self._pollers_add(1)
        try:
            while not self._h.closed:
                ev = self._poll_one(wait_ms if n == 0 else 0)
                if ev is None:
                    break
                n += 1
                if ev.type == "stopped":
                    break
        finally:
            self._pollers_add(-1)
        return n

    def _pollers_add(self, n: int) -> None:
        with self._state:
            self._manual_pollers += n

    def run_forever(self) -> None:
        """Manual dispatch until the worker stops (``stop_worker``/``close``
        from a handler, listener or another thread)."""
        if self._dispatch_mode != "manual":
            raise StateError('run_forever() is for dispatch="manual"')
        for _ in self._manual_events(None):
            pass

    def _poll_one(self, timeout_ms: int) -> Optional[Event]:
        try:
            raw = self._h.poll(timeout_ms)
        except ClosedError:
            return None
        if raw is None:
            return None
        ev = make_event(raw, lambda d: Batch(self, d))
        self._local.dispatching = True
        try:
            self._dispatch(ev, inline=True)
        finally:
            self._local.dispatching = False
            if self._deferred_destroy:
                self._finish_close()
        return ev

    def _can_drain(self) -> bool:
        """A drain needs someone to keep dispatching while this thread waits
        in runlane_stop: not from inside a callback, and in manual mode only
        while another thread is polling."""
        if self._in_dispatch():
            return False
        if self._dispatch_mode == "manual":
            return self._manual_pollers > 0
        return True

    def _in_dispatch(self) -> bool:
        me = threading.current_thread()
        if me is self._dispatcher or getattr(self._local, "dispatching", False):
            return True
        pool = self._pool
        return pool is not None and me.ident in pool.idents

    def _dispatch_loop(self) -> None:
        try:
            while True:
                try:
                    raw = self._h.poll(200)
                except ClosedError:
                    break
                if raw is None:
                    continue
                ev = make_event(raw, lambda d: Batch(self, d))
                self._dispatch(ev, inline=False)
                if ev.type == "stopped":
                    break
        finally:
            pool = self._pool
            if pool is not None:
                dl = self._close_deadline
                pool.shutdown(None if dl is None else max(0.05, dl - time.monotonic()))
            self._publish(_END)
            if self._deferred_destroy:
                self._finish_close()

    def _publish(self, item: Any) -> None:
        with self._sub_lock:
            subs = list(self._subscribers)
        for s in subs:
            s.put(item)

    def _dispatch(self, ev: Event, inline: bool) -> None:
        # No batch event of a batch released at stop arrives here: runlane_stop
        # drops the unpolled events of the leases it releases.
        log_event(ev)
        if ev.type == "stopped":
            self._stopped = True
        for fn in self._listeners.for_event(ev.type):
            try:
                result = fn(ev)
                if inspect.isawaitable(result):
                    asyncio.run(_await(result))
            except Exception:
                log.exception("runlane: %s listener %r raised", ev.type, fn)
        self._publish(ev)
        if ev.type == "batch" and ev.batch is not None:
            batch = ev.batch
            if self.handler is None:
                if not self._listeners.has("batch") and not self._subscribers:
                    self._unheld_batch(batch)  # type: ignore[arg-type]
                return
            if inline or self._pool is None:
                self._run_handler(batch)  # type: ignore[arg-type]
            else:
                self._pool.submit(lambda: self._run_handler(batch))  # type: ignore[arg-type]
        elif isinstance(ev, ToolCallsEvent) and self.handle_requires_action is not None:
            if inline or self._pool is None:
                self._run_requires_action(ev)
            else:
                self._pool.submit(lambda: self._run_requires_action(ev))

    def _unheld_batch(self, batch: Batch) -> None:
        if self._closing:
            # Nobody will run it: back now, not after the drain's timeout.
            self._release_quietly(batch)
            return
        self._unheld[batch.batch_id] = batch
        if not self._warned_unhandled:
            self._warned_unhandled = True
            log.warning(
                "batch %s delivered but the queue has no handler, no batch listener and "
                "no event iterator: it stays leased until acked, failed or released "
                "(close() gives it back at once)",
                batch.batch_id,
            )

    def _release_quietly(self, batch: Batch) -> None:
        if batch.settled:
            return
        try:
            batch.release()
        except RunlaneError as err:
            log.debug("release of unheld batch %s: %s", batch.batch_id, err.message)

    def _run_handler(self, batch: Batch) -> None:
        handler = self.handler
        assert handler is not None
        try:
            result = handler(batch)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except NonRetriableError as e:
            self._auto_settle(batch, False, str(e) or type(e).__name__, False)
        except Exception as e:
            log.warning(
                "handler failed on batch %s of %r (attempt %d): %r",
                batch.batch_id,
                batch.conversation_id,
                batch.attempt,
                e,
                exc_info=True,
            )
            self._auto_settle(batch, False, "%s: %s" % (type(e).__name__, e), True)
        else:
            self._auto_settle(batch, True, result, True)

    def _auto_settle(self, batch: Batch, ok: bool, payload: Any, retriable: bool) -> None:
        if batch.settled:
            return
        try:
            if ok:
                batch.ack(_jsonable(payload))
            else:
                batch.fail(payload, retriable)
        except RunlaneError as err:
            if settle_error_is_expected(err):
                log.warning("batch %s could not be settled: %s", batch.batch_id, err.message)
            else:
                log.error("batch %s could not be settled: %s", batch.batch_id, err.message)

    def _run_requires_action(self, ev: ToolCallsEvent) -> None:
        fn = self.handle_requires_action
        assert fn is not None
        try:
            outputs = fn(ev)
            if inspect.isawaitable(outputs):
                outputs = asyncio.run(_await(outputs))
            if outputs is not None:
                self.submit_tool_outputs(ev.batch_id, outputs)
        except Exception:
            log.exception("handle_requires_action failed for batch %s", ev.batch_id)

    # ------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        """True once the queue is closed."""
        return self._h.closed

    def close(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stops the worker (see :meth:`stop_worker`; from inside a handler or
        listener the leases are released instead of drained) and frees the
        queue. Idempotent; safe from any thread, including a handler or a
        listener (then the dispatcher finishes the job when it returns)."""
        with self._state:
            if self._closing:
                first = False
            else:
                self._closing = True
                self._close_deadline = time.monotonic() + max(0.0, timeout)
                first = True
            running = self._started and not self._stopped
            if running:
                self._stopped = True
        if not first:
            if not self._in_dispatch():
                self._closed_evt.wait(timeout)
            return
        in_dispatch = self._in_dispatch()
        if running:
            for b in list(self._unheld.values()):
                self._release_quietly(b)
            self._unheld.clear()
            mode = STOP_DRAIN if drain and self._can_drain() else STOP_RELEASE
            try:
                self._h.stop(mode, max(0, int(timeout * 1000)))
            except RunlaneError as e:
                if not isinstance(e, ClosedError):
                    log.warning("stop: %s", e.message)
        if in_dispatch:
            self._deferred_destroy = True
            if self._dispatcher is None and not getattr(self._local, "dispatching", False):
                self._finish_close()
            return
        d = self._dispatcher
        if d is not None and d is not threading.current_thread():
            d.join(max(0.05, self._close_deadline - time.monotonic()))  # type: ignore[operator]
            if d.is_alive():
                log.warning("close: handlers still running after %.1fs; freeing the queue anyway", timeout)
        self._finish_close()

    def _forked_in_child(self) -> None:
        self._state = threading.Lock()
        self._sub_lock = threading.Lock()
        self._subscribers = []
        self._closing = self._stopped = True
        self._dispatcher = None
        self._pool = None
        self._closed_evt = threading.Event()
        self._closed_evt.set()

    def _finish_close(self) -> None:
        if self._closed_evt.is_set():
            return
        self._h.destroy()
        self._publish(_END)
        _open_queues.discard(self)
        self._closed_evt.set()
        log.debug("queue closed")

    def __enter__(self) -> "AssistantMessageQueue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._started and not self._stopped else "idle")
        return "<runlane.AssistantMessageQueue %s store=%s>" % (
            state,
            self._store_shown,
        )


async def _await(aw: Any) -> Any:
    return await aw


def _jsonable(result: Any) -> Any:
    if result is None:
        return None
    try:
        json.dumps(result)
        return result
    except (TypeError, ValueError):
        return str(result)
