"""asyncio queue: ``runlane.aio.AssistantMessageQueue``.

No polling thread: the loop waits on the core's event fd
(``runlane_event_fd``) with ``loop.add_reader`` and drains events with a
non-blocking ``runlane_poll(rl, 0)``. Handlers are tasks on the loop.

Calls that do a store round trip (enqueue, status, ack...) run inline on the
memory store and in the loop's default executor on Redis, so the loop is
never blocked on the network; ``inline_calls=`` overrides that. The queue's
own work on the loop (inline calls, event dispatch) runs in slices of about
a millisecond per loop turn: once a turn's slice is spent, further inline
calls wait, in call order, for the next turn, and events stay in the core
(see ``_Pacer``). A large ``enqueue_many`` is checked and encoded in pieces
between turns. Plain (non-async) handlers and ``handle_requires_action`` run
in the executor.
Closing with ``drain=True`` runs the core's drain (``runlane_stop``, which
waits for in-flight batches) in the default executor while the loop keeps
running the handlers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from . import _base
from ._base import (
    STOP_DRAIN,
    STOP_RELEASE,
    DeadLetter,
    Enqueued,
    Event,
    EventSource,
    Listeners,
    NewMessage,
    Status,
    ToolCallsEvent,
    _BatchBase,
    log_event,
    make_event,
    message_options,
    settle_error_is_expected,
)
from .config import build_conf, normalize_config, shown_store
from .errors import (
    ArgumentTypeError,
    ClosedError,
    NonRetriableError,
    RunlaneError,
    StateError,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import Options

log = logging.getLogger("runlane")

__all__ = ["AssistantMessageQueue", "AsyncBatch"]

T = TypeVar("T")
_END = object()
# The queue's work on the loop per loop turn (see _Pacer). Larger
# enqueue_many calls are encoded in pieces of _INLINE_MANY and run in the
# executor (one C call, all or nothing).
_INLINE_SLICE = 0.001
_INLINE_MANY = 128
# Events dispatched per loop turn at most: each becomes a handler task that
# runs in the next turn, so this also bounds the handler starts per turn.
_DISPATCH_MAX = 64


class _Pacer:
    """Time-slices the queue's own work on the loop thread.

    An inline core call (memory store) usually takes microseconds, but one
    can wait on the core's locks while its I/O thread works (an ack waits
    out a claim), and the handler tasks made ready by one dispatch each ack
    in the same loop turn: deliveries at worker.concurrency 1000 held the
    loop up to 70 ms. So a slice opens with a turn's first call or dispatch,
    and once it has lasted ``_INLINE_SLICE`` inline calls queue (FIFO: a
    conversation's calls keep their order) and run at the start of a later
    turn, and dispatch leaves the remaining events in the core after at
    least one. Every queued call runs, even when its caller was cancelled
    meanwhile (a batch marked settled gets settled). ``deferred`` and
    ``slices`` are for tests and benchmarks."""

    __slots__ = ("_t0", "_pending", "deferred", "slices")

    def __init__(self) -> None:
        self._t0: Optional[float] = None  # the open slice's start; None: none open
        self._pending: Deque[Tuple[Callable[..., Any], Tuple[Any, ...], "asyncio.Future[Any]"]] = deque()
        self.deferred = 0  # calls that waited for a later turn
        self.slices = 0

    def room(self) -> bool:
        """Whether the queue's work may go on in this turn (opens a slice
        if none is open)."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
            self.slices += 1
            # The slice ends when the loop has had a turn: this callback runs
            # after everything the loop already had ready.
            asyncio.get_running_loop().call_soon(self._next_slice)
            return True
        return time.perf_counter() - self._t0 < _INLINE_SLICE

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._pending and self.room():
            return fn(*args)
        self.deferred += 1
        fut: "asyncio.Future[T]" = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, fut))
        self.room()  # a slice is open, so _next_slice will run
        return await fut

    def _next_slice(self) -> None:
        self._t0 = None
        pending = self._pending
        while pending and self.room():
            fn, args, fut = pending.popleft()
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: B902 - the caller's to handle
                if not fut.cancelled():
                    fut.set_exception(e)
                else:
                    log.debug("queued call %r of a cancelled caller raised: %r", fn, e)
            else:
                if not fut.cancelled():
                    fut.set_result(result)


class AsyncBatch(_BatchBase):
    """A batch handed to a handler of the asyncio queue."""

    __slots__ = ()

    async def ack(self, result: Any = None) -> None:
        """Done: removes the messages; the conversation's next batch may start."""
        self._mark_settled()
        await self._owner._blocking(self._owner._handle().ack, self.batch_id, result)

    async def fail(self, error: str = "failed by the handler", retriable: bool = True) -> None:
        """Fails this attempt (retried after a backoff, or dead-lettered at
        once when not retriable)."""
        self._mark_settled()
        await self._owner._blocking(self._owner._handle().fail, self.batch_id, error, retriable)

    async def release(self) -> None:
        """Gives the batch back without spending an attempt: due at once for
        any worker, delivered again with the same batch id, messages and
        attempt number. Raises NotFoundError for a batch not held here."""
        self._mark_settled()
        await self._owner._blocking(self._owner._handle().batch_release, self.batch_id)


AsyncHandler = Callable[[AsyncBatch], Any]


class AssistantMessageQueue(EventSource):
    """The asyncio flavour of :class:`runlane.AssistantMessageQueue`: the
    same constructor arguments, every method a coroutine (but :meth:`on`).

    ``handler(batch)``: an ``async def`` runs as a task on the loop; a plain
    function runs in the default executor. Returning acks the batch, raising
    fails it (retriable), raising :class:`runlane.NonRetriableError`
    dead-letters it at once.

    The store is connected on first use (or ``await queue.open()``, or
    ``async with``); configuration errors raise in the constructor.
    """

    def __init__(
        self,
        handler: Optional[AsyncHandler] = None,
        *,
        config: Optional[Mapping[str, Any]] = None,
        handle_requires_action: Optional[Callable[[ToolCallsEvent], Any]] = None,
        inline_calls: Optional[bool] = None,
        **options: Unpack[Options],
    ) -> None:
        if handler is not None and not callable(handler):
            raise ArgumentTypeError("handler must be callable, got %s" % type(handler).__name__)
        if handle_requires_action is not None and not callable(handle_requires_action):
            raise ArgumentTypeError("handle_requires_action must be callable")
        values = normalize_config(config, **options)
        build_conf(values)  # validates every value now
        self._store_shown = shown_store(values)  # password masked by the core
        self.handler = handler
        self.handle_requires_action = handle_requires_action
        self.config: Dict[str, str] = dict(values)
        store = values.get("store", "memory")
        self._inline = (
            bool(inline_calls) if inline_calls is not None else store.startswith("memory")
        )
        self._h: Optional[_base._Handle] = None
        self._pacer = _Pacer()
        self._open_lock: Optional[asyncio.Lock] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._listeners = Listeners()
        self._subscribers: List["asyncio.Queue[Any]"] = []
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._batch_tasks: Dict[str, "asyncio.Task[Any]"] = {}
        self._fd: Optional[int] = None
        self._started = False
        self._stopped = False
        self._closing = False
        self._closed = False
        self._closed_evt: Optional[asyncio.Event] = None
        self._stopped_evt: Optional[asyncio.Event] = None
        self._warned_unhandled = False
        # Batches delivered to no handler, listener or iterator: close() gives
        # them back instead of draining for them.
        self._unheld: Dict[str, AsyncBatch] = {}

    # ------------------------------------------------------------ plumbing

    def _handle(self) -> _base._Handle:
        h = self._h
        if h is None:
            raise ClosedError("the queue is closed" if self._closed else "the queue is not open")
        return h

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inline:
            return await self._pacer.call(fn, *args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def open(self) -> "AssistantMessageQueue":
        """Creates the client and connects its store (done on first use)."""
        if self._h is not None:
            return self
        if self._closed or self._closing:
            raise ClosedError("the queue is closed")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._h is None:
                self._loop = asyncio.get_running_loop()
                self._closed_evt = asyncio.Event()
                self._stopped_evt = asyncio.Event()
                self._h = await self._blocking(_base._Handle, self.config)
                from .queue import _install_exit_hook

                _install_exit_hook()
                log.debug("queue opened on store %s", self._store_shown)
        return self

    async def _ready(self) -> _base._Handle:
        if self._h is None:
            await self.open()
        return self._handle()

    # ------------------------------------------------------------ producer

    async def add_message_to_thread(
        self,
        thread_id: str,
        message: str,
        instructions: Optional[str] = None,
        *,
        idempotency_key: Optional[Union[str, int]] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Queues ``message`` for conversation ``thread_id``; returns its id."""
        r = await self.enqueue(
            thread_id,
            message,
            instructions=instructions,
            idempotency_key=idempotency_key,
            metadata=metadata,
        )
        return r.id

    async def enqueue(
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
        h = await self._ready()
        return await self._blocking(h.enqueue, conversation_id, content, opts)

    async def enqueue_many(self, messages: Iterable[Union[NewMessage, Tuple[str, str]]]) -> List[Enqueued]:
        """Queues many messages in one round trip (see the sync class)."""
        h = await self._ready()
        items = list(messages) if not isinstance(messages, (str, bytes, Mapping)) else messages
        if isinstance(items, list) and len(items) > _INLINE_MANY:
            return await self._enqueue_many_large(h, items)
        return await self._blocking(h.enqueue_many, items)

    async def _enqueue_many_large(self, h: _base._Handle, messages: List[Any]) -> List[Enqueued]:
        # Thousands of messages: checked, encoded and decoded in pieces with a
        # loop turn between them (one piece of Python work holding the GIL
        # in an executor thread would hold the loop too); the one C call,
        # which releases the GIL, in the executor. Still all or nothing.
        items: List[Dict[str, Any]] = []
        for i in range(0, len(messages), _INLINE_MANY):
            items.extend(_base.enqueue_items(messages[i : i + _INLINE_MANY], i))
            await asyncio.sleep(0)
        parts: List[bytes] = []
        for i in range(0, len(items), _INLINE_MANY):
            parts.append(_base.to_json_bytes(items[i : i + _INLINE_MANY])[1:-1])
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, h.enqueue_many_raw, b"[" + b",".join(parts) + b"]")
        out: List[Enqueued] = []
        for n, r in enumerate(_base.iter_list(text), 1):
            out.append(Enqueued(r["id"], bool(r["duplicate"])))
            if n % _INLINE_MANY == 0:
                await asyncio.sleep(0)
        return out

    async def touch(self, conversation_id: str) -> None:
        """Typing signal: restarts the conversation's quiet window."""
        h = await self._ready()
        await self._blocking(h.touch, conversation_id)

    # ------------------------------------------------------------ status

    async def status(self, conversation_id: Optional[str] = None) -> Status:
        """Queue totals, or the detail of one conversation."""
        h = await self._ready()
        return await self._blocking(h.status, conversation_id)

    async def get_queue_status(self) -> Status:
        """Queue totals (pending, ready, inflight, dead, conversations...)."""
        return await self.status(None)

    async def metrics(self) -> str:
        """This client's counters in the Prometheus text format."""
        h = await self._ready()
        return h.metrics()  # local counters: no round trip

    async def health(self) -> _base.Health:
        """Store reachable, worker state, lag of the oldest due conversation
        (``Health``), from one core call; its store round trip runs off the
        loop (unless ``inline_calls``). A store that does not answer is
        reported (``store_ok=False``), not raised."""
        h = await self._ready()
        return await self._blocking(h.health)

    async def dead_list(self, offset: int = 0, limit: int = 100) -> List[DeadLetter]:
        """Dead-lettered batches, oldest first."""
        h = await self._ready()
        return await self._blocking(h.dead_list, offset, limit)

    async def dead_retry(self, dead_id: Optional[str] = None) -> int:
        """Puts a dead letter (all of them when None) back in its conversation,
        due at once with attempts reset. Returns how many."""
        h = await self._ready()
        return await self._blocking(h.dead_retry, dead_id)

    async def dead_purge(self, dead_id: Optional[str] = None) -> int:
        """Deletes a dead letter (all of them when None). Returns how many."""
        h = await self._ready()
        return await self._blocking(h.dead_purge, dead_id)

    # ------------------------------------------------------------ settling

    async def ack(self, batch_id: str, result: Any = None) -> None:
        """Acks a batch by id (when not using a handler)."""
        h = await self._ready()
        await self._blocking(h.ack, batch_id, result)

    async def fail(self, batch_id: str, error: str = "failed by the host", retriable: bool = True) -> None:
        """Fails a batch attempt by id (when not using a handler)."""
        h = await self._ready()
        await self._blocking(h.fail, batch_id, error, retriable)

    async def release_batch(self, batch_id: str) -> None:
        """Gives a batch back by id without spending an attempt (see the
        sync class)."""
        h = await self._ready()
        await self._blocking(h.batch_release, batch_id)

    async def reply_ack(self, batch_id: str) -> None:
        """Confirms that the reply of a "completed" event reached the user
        (HTTP backends); unconfirmed, it is delivered again every
        reply.redeliver.ms."""
        h = await self._ready()
        await self._blocking(h.reply_ack, batch_id)

    async def submit_tool_outputs(self, batch_id: str, outputs: Any) -> None:
        """Answers a "tool_calls" event: a list of ``{"tool_call_id",
        "output"}`` or a dict ``{tool_call_id: output}``."""
        h = await self._ready()
        await self._blocking(h.submit_tool_outputs, batch_id, outputs)

    async def create_conversation(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        """Creates a provider conversation ("conv_...", responses backend) to
        use as a conversation id (an HTTP request, in the default executor)."""
        h = await self._ready()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, h.conversation_create, metadata)

    async def create_thread(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        """Creates a provider thread ("thread_...", assistants backend)."""
        h = await self._ready()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, h.thread_create, metadata)

    async def get_conversation_mapping(self, key: str) -> Optional[str]:
        """The provider conversation ("conv_...") or thread ("thread_...") a
        conversation key maps to, or None when it has none yet (see
        ``AssistantMessageQueue.get_conversation_mapping``)."""
        h = await self._ready()
        result: Optional[str] = await self._blocking(h.conversation_map_get, key)
        return result

    async def set_conversation_mapping(self, key: str, provider_id: str) -> None:
        """Maps ``key`` to an existing provider conversation or thread (an
        import), replacing any mapping; the key's next turn uses it."""
        h = await self._ready()
        await self._blocking(h.conversation_map_set, key, provider_id)

    async def forget_conversation_mapping(self, key: str) -> None:
        """Forgets ``key``'s mapping: its next turn creates a new provider
        conversation."""
        h = await self._ready()
        await self._blocking(h.conversation_map_forget, key)

    async def migrate_thread(self, key: str, thread_id: Optional[str] = None) -> Dict[str, Any]:
        """Migration off the Assistants API (see
        ``AssistantMessageQueue.migrate_thread``); the HTTP requests run in the
        default executor."""
        h = await self._ready()
        loop = asyncio.get_running_loop()
        result: Dict[str, Any] = await loop.run_in_executor(None, h.migrate_thread, key, thread_id)
        return result

    # ------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[Event]:
        """``async for event in queue.events():`` until the worker stops or
        the queue closes."""
        q: "asyncio.Queue[Any]" = asyncio.Queue()
        self._subscribers.append(q)
        try:
            if self._closed:
                return
            while True:
                item = await q.get()
                if item is _END:
                    return
                yield item
                if item.type == "stopped":
                    return
        finally:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    # ------------------------------------------------------------ worker

    async def start_worker(self) -> None:
        """Starts the core's worker and watches its event fd on this loop."""
        h = await self._ready()
        if self._closing:
            raise ClosedError("the queue is closed")
        if self._started:
            raise StateError("the worker was already started")
        h.start_check(self.handler is not None or self._listeners.has("batch") or bool(self._subscribers))
        self._started = True
        try:
            await self._blocking(h.start)
        except BaseException:
            self._started = False
            raise
        loop = asyncio.get_running_loop()
        self._loop = loop
        fd = h.event_fd()
        if fd < 0:
            raise StateError("the core gave no event fd")
        self._fd = fd
        loop.add_reader(fd, self._on_readable)
        log.info("worker started")

    async def stop_worker(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stops the worker (see the sync class). From inside a handler the
        leases are released rather than drained."""
        h = self._handle()
        if not self._started or self._stopped:
            raise StateError("the worker is %s" % ("stopped" if self._stopped else "not started"))
        self._stopped = True
        await self._stop_core(h, drain, timeout)

    async def _stop_core(self, h: _base._Handle, drain: bool, timeout: float) -> None:
        in_handler = asyncio.current_task() in self._tasks
        ms = max(0, int(timeout * 1000))
        if drain and not in_handler:
            # Blocks until every in-flight batch is settled: the loop must
            # keep running the handlers meanwhile.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, h.stop, STOP_DRAIN, ms)
        else:
            # runlane_stop drops the unpolled events of the leases it
            # releases: no batch of them reaches a handler afterwards.
            await self._blocking(h.stop, STOP_RELEASE, 0)
        # STOPPED is queued now; let the reader dispatch it.
        if self._stopped_evt is not None and self._fd is not None:
            try:
                await asyncio.wait_for(self._stopped_evt.wait(), 2.0)
            except asyncio.TimeoutError:
                pass

    def _on_readable(self) -> None:
        h = self._h
        if h is None:
            self._remove_reader()
            return
        pacer = self._pacer
        try:
            # Within the turn's slice, at least one event (progress) and at
            # most _DISPATCH_MAX; the fd stays readable while events are
            # pending: the rest go in the next turns, in order.
            for n in range(_DISPATCH_MAX):
                if not pacer.room() and n > 0:
                    return
                raw = h.poll(0)
                if raw is None:
                    return
                ev = make_event(raw, lambda d: AsyncBatch(self, d))
                self._dispatch(ev)
                if ev.type == "stopped":
                    self._remove_reader()
                    return
        except ClosedError:
            self._remove_reader()

    def _remove_reader(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(fd)
            except (ValueError, OSError, RuntimeError):
                pass

    def _spawn(self, coro: Awaitable[Any], batch_id: Optional[str] = None) -> "asyncio.Task[Any]":
        assert self._loop is not None
        task: "asyncio.Task[Any]" = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        if batch_id:
            self._batch_tasks[batch_id] = task

        def done(t: "asyncio.Task[Any]") -> None:
            self._tasks.discard(t)
            if batch_id and self._batch_tasks.get(batch_id) is t:
                del self._batch_tasks[batch_id]

        task.add_done_callback(done)
        return task

    def _dispatch(self, ev: Event) -> None:
        log_event(ev)
        if ev.type == "stopped":
            self._stopped = True
            if self._stopped_evt is not None:
                self._stopped_evt.set()
        for fn in self._listeners.for_event(ev.type):
            try:
                result = fn(ev)
                if inspect.isawaitable(result):
                    self._spawn(_guard(result, ev.type, fn))
            except Exception:
                log.exception("runlane: %s listener %r raised", ev.type, fn)
        for q in list(self._subscribers):
            q.put_nowait(ev)
        if ev.type == "batch" and ev.batch is not None:
            if self.handler is None:
                if not self._listeners.has("batch") and not self._subscribers:
                    batch = ev.batch
                    if self._closing:
                        # Nobody will run it: back now, not after the drain's timeout.
                        self._spawn(self._release_quietly(batch))  # type: ignore[arg-type]
                        return
                    self._unheld[ev.batch_id] = batch  # type: ignore[assignment]
                    if not self._warned_unhandled:
                        self._warned_unhandled = True
                        log.warning(
                            "batch %s delivered but the queue has no handler, no batch listener and "
                            "no event iterator: it stays leased until acked, failed or released "
                            "(close() gives it back at once)",
                            ev.batch_id,
                        )
                return
            self._spawn(self._run_handler(ev.batch), ev.batch_id)  # type: ignore[arg-type]
        elif ev.type == "lease_lost" and not self._closing:
            # "stop working on it, its ack would be refused"
            task = self._batch_tasks.get(ev.batch_id)
            if task is not None and not task.done():
                task.cancel()
        elif isinstance(ev, ToolCallsEvent) and self.handle_requires_action is not None:
            self._spawn(self._run_requires_action(ev))

    async def _release_quietly(self, batch: AsyncBatch) -> None:
        if batch.settled:
            return
        try:
            await batch.release()
        except RunlaneError as err:
            log.debug("release of unheld batch %s: %s", batch.batch_id, err.message)

    async def _run_handler(self, batch: AsyncBatch) -> None:
        handler = self.handler
        assert handler is not None
        try:
            if _is_async(handler):
                result = await handler(batch)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, handler, batch)
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            log.info("handler of batch %s cancelled (lease lost or queue closed)", batch.batch_id)
            raise
        except NonRetriableError as e:
            await self._auto_settle(batch, False, str(e) or type(e).__name__, False)
        except Exception as e:
            log.warning(
                "handler failed on batch %s of %r (attempt %d): %r",
                batch.batch_id,
                batch.conversation_id,
                batch.attempt,
                e,
                exc_info=True,
            )
            await self._auto_settle(batch, False, "%s: %s" % (type(e).__name__, e), True)
        else:
            await self._auto_settle(batch, True, result, True)

    async def _auto_settle(self, batch: AsyncBatch, ok: bool, payload: Any, retriable: bool) -> None:
        if batch.settled:
            return
        try:
            if ok:
                from .queue import _jsonable

                await batch.ack(_jsonable(payload))
            else:
                await batch.fail(payload, retriable)
        except RunlaneError as err:
            if settle_error_is_expected(err):
                log.warning("batch %s could not be settled: %s", batch.batch_id, err.message)
            else:
                log.error("batch %s could not be settled: %s", batch.batch_id, err.message)

    async def _run_requires_action(self, ev: ToolCallsEvent) -> None:
        fn = self.handle_requires_action
        assert fn is not None
        try:
            if _is_async(fn):
                outputs = fn(ev)
            else:
                # A plain function may block (a tool doing I/O): never on the loop.
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(None, fn, ev)
            if inspect.isawaitable(outputs):
                outputs = await outputs
            if outputs is not None:
                await self.submit_tool_outputs(ev.batch_id, outputs)
        except Exception:
            log.exception("handle_requires_action failed for batch %s", ev.batch_id)

    # ------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has finished."""
        return self._closed

    async def close(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stops the worker (drain up to ``timeout`` seconds, or release),
        waits for handler tasks (cancelling those still running at the
        deadline), stops watching the fd and frees the client. Idempotent.
        From inside a handler: releases the leases (the calling handler's
        batch goes back to the queue) and returns without waiting for
        itself."""
        if self._closed:
            return
        if self._closing:
            if self._closed_evt is not None and asyncio.current_task() not in self._tasks:
                await self._closed_evt.wait()
            return
        self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        h = self._h
        try:
            if h is not None and self._started and not self._stopped:
                self._stopped = True
                unheld = list(self._unheld.values())
                self._unheld.clear()
                await asyncio.gather(*(self._release_quietly(b) for b in unheld))
                try:
                    await self._stop_core(h, drain, timeout)
                except RunlaneError as e:
                    log.warning("stop: %s", e.message)
            current = asyncio.current_task()
            others = [t for t in self._tasks if t is not current and not t.done()]
            if others:
                remaining = max(0.0, deadline - time.monotonic())
                _done, pending = await asyncio.wait(others, timeout=remaining)
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._remove_reader()
            self._h = None
            self._closed = True
            if h is not None:
                h.destroy()
            for q in list(self._subscribers):
                q.put_nowait(_END)
            if self._closed_evt is not None:
                self._closed_evt.set()
            log.debug("queue closed")

    async def __aenter__(self) -> "AssistantMessageQueue":
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __del__(self) -> None:
        # Not closed: the handle's ffi.gc destructor stops the worker and
        # releases the leases; the fd must not stay registered meanwhile.
        if not getattr(self, "_closed", True) and getattr(self, "_fd", None) is not None:
            self._remove_reader()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started and not self._stopped else "idle")
        return "<runlane.aio.AssistantMessageQueue %s store=%s>" % (
            state,
            self._store_shown,
        )


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


async def _guard(aw: Awaitable[Any], etype: str, fn: Any) -> None:
    try:
        await aw
    except Exception:
        log.exception("runlane: %s listener %r raised", etype, fn)
