"""What the sync and asyncio queues share: the guarded handle, argument
checks, events and batches, listeners.

Nothing here decides anything about queueing: the core does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypedDict,
    TypeVar,
    Union,
    overload,
)

from . import config as _config
from ._native import ffi, lib
from .errors import (
    ArgumentTypeError,
    ClosedError,
    InvalidArgumentError,
    RunlaneError,
    StateError,
    UnsupportedError,
    error_from_code,
    last_error,
)

log = logging.getLogger("runlane")

#: Every event type name the core knows, from ``runlane_event_type_name``.
EVENT_TYPES: Tuple[str, ...] = tuple(
    ffi.string(lib.runlane_event_type_name(v)).decode("ascii")
    for v in sorted(ffi.typeof("runlane_event_type_t").elements)
    if v != lib.RUNLANE_EVENT_NONE
)

STOP_DRAIN = lib.RUNLANE_STOP_DRAIN
STOP_RELEASE = lib.RUNLANE_STOP_RELEASE


# ---------------------------------------------------------------- arguments


def text(value: Any, what: str, *, allow_int: bool = False) -> str:
    """``value`` as a str (an int too with ``allow_int``), or ArgumentTypeError.
    Its content is the core's to judge (UTF-8, U+0000, lengths)."""
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ArgumentTypeError(
            "%s must be a str, got %s" % (what, type(value).__name__)
        )
    return value


def cstr(value: Any, what: str, *, allow_int: bool = False) -> bytes:
    """A Python str as NUL-terminated UTF-8 for a ``const char *`` argument.
    A C string ends at the first NUL, so a str holding one cannot reach the
    core whole: refused here rather than cut. Lone surrogates are passed as
    they are (surrogatepass) for the core to refuse as invalid UTF-8."""
    s = text(value, what, allow_int=allow_int)
    if "\x00" in s:
        raise InvalidArgumentError("%s must not contain NUL characters" % what)
    return s.encode("utf-8", "surrogatepass")


def message_options(
    instructions: Optional[str] = None,
    idempotency_key: Optional[Union[str, int]] = None,
    metadata: Optional[Mapping[str, str]] = None,
    what: str = "",
) -> Dict[str, Any]:
    """The ``options`` members of one message, type-checked (the core checks
    their text: UTF-8, U+0000, lengths)."""
    opts: Dict[str, Any] = {}
    if instructions is not None:
        opts["instructions"] = text(instructions, what + "instructions")
    if idempotency_key is not None:
        opts["idempotency_key"] = text(idempotency_key, what + "idempotency_key", allow_int=True)
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ArgumentTypeError(
                "%smetadata must be a mapping of str to str, got %s"
                % (what, type(metadata).__name__)
            )
        meta: Dict[str, str] = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ArgumentTypeError(
                    "%smetadata must map str to str, got %r: %r" % (what, k, v)
                )
            meta[k] = v
        opts["metadata"] = meta
    return opts


def to_json_bytes(obj: Any) -> bytes:
    # JSON carries U+0000 (as \u0000) and lone surrogates (surrogatepass):
    # the core refuses both, naming the member.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


# One json.dumps/json.loads of thousands of items is one C call holding the
# GIL for 10-20 ms, and with it any asyncio loop of the process (the asyncio
# queue runs a large enqueue_many in its executor for that loop's sake):
# large lists are encoded and decoded in pieces, between which the GIL can
# change hands.
_JSON_PIECE = 256


def dumps_list(items: List[Any]) -> bytes:
    """``to_json_bytes(items)``, in pieces when there are many."""
    if len(items) <= _JSON_PIECE:
        return to_json_bytes(items)
    parts = [to_json_bytes(items[i : i + _JSON_PIECE])[1:-1] for i in range(0, len(items), _JSON_PIECE)]
    return b"[" + b",".join(parts) + b"]"


def loads_list(text: str) -> List[Any]:
    """``json.loads`` of a JSON array, element by element when it is long."""
    if len(text) < 16384:
        result: List[Any] = json.loads(text)
        return result
    return list(iter_list(text))


def iter_list(text: str) -> Iterator[Any]:
    """The elements of a JSON array, each decoded by one json call."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    i = text.index("[") + 1
    n = len(text)
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == "]":
            return
        obj, i = dec.raw_decode(text, i)
        yield obj
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i >= n or text[i] != "]":
            raise ValueError("malformed JSON array at %d" % i)


def take_string(ptr_out: Any) -> str:
    """Decodes and frees a ``char *`` returned through ``char **``."""
    p = ptr_out[0]
    if p == ffi.NULL:
        return ""
    try:
        text: str = ffi.string(p).decode("utf-8", "replace")
        return text
    finally:
        lib.runlane_free(p)


# ---------------------------------------------------------------- results


class Enqueued(NamedTuple):
    """Result of an enqueue: the message id and whether the idempotency key
    had already been used (then ``id`` is the first message's id)."""

    id: str
    duplicate: bool


@dataclass(frozen=True)
class Message:
    """One queued message as delivered in a batch."""

    id: str
    content: str
    ts_ms: int = 0
    instructions: Optional[str] = None
    metadata: Optional[Dict[str, str]] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Message":
        return cls(
            id=str(d.get("id", "")),
            content=d.get("content", ""),
            ts_ms=int(d.get("ts_ms", 0) or 0),
            instructions=d.get("instructions"),
            metadata=d.get("metadata"),
        )


class _BatchBase:
    """A batch of messages of one conversation (RUNLANE_EVENT_BATCH).

    ``batch_id`` is stable across attempts; ``attempt`` is 1 for the first
    delivery. A batch is settled once: acked (done), failed, or released
    (given back without spending an attempt).
    """

    __slots__ = ("conversation_id", "batch_id", "attempt", "messages", "data", "_owner", "_settled")

    def __init__(self, owner: Any, data: Mapping[str, Any]) -> None:
        self.conversation_id: str = data.get("conversation_id", "")
        self.batch_id: str = data.get("batch_id", "")
        self.attempt: int = int(data.get("attempt", 0) or 0)
        self.messages: List[Message] = [Message.from_json(m) for m in data.get("messages", [])]
        self.data: Mapping[str, Any] = data
        self._owner = owner
        self._settled = False

    @property
    def instructions(self) -> Optional[str]:
        """Per-turn instructions: the last message's that has some."""
        for m in reversed(self.messages):
            if m.instructions is not None:
                return m.instructions
        return None

    @property
    def text(self) -> str:
        """Every message's content, joined by newlines."""
        return "\n".join(m.content for m in self.messages)

    @property
    def settled(self) -> bool:
        """True once acked, failed or released."""
        return self._settled

    def _mark_settled(self) -> None:
        if self._settled:
            raise StateError("batch %s is already settled" % self.batch_id)
        self._settled = True

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return "<%s %s conversation=%r attempt=%d messages=%d>" % (
            type(self).__name__,
            self.batch_id,
            self.conversation_id,
            self.attempt,
            len(self.messages),
        )


class Batch(_BatchBase):
    """A batch handed to a sync handler. ``ack()``/``fail()``/``release()``
    settle it explicitly; otherwise the handler's return acks it and its exception
    fails it."""

    __slots__ = ()

    def ack(self, result: Any = None) -> None:
        """Done: the messages are removed and the conversation's next batch
        may start. Raises StaleLeaseError if the lease was lost meanwhile."""
        self._mark_settled()
        self._owner._h.ack(self.batch_id, result)

    def fail(self, error: str = "failed by the handler", retriable: bool = True) -> None:
        """Fails this attempt: retried after a backoff (until max.attempts,
        then dead-lettered), or dead-lettered at once when not retriable."""
        self._mark_settled()
        self._owner._h.fail(self.batch_id, error, retriable)

    def release(self) -> None:
        """Gives the batch back without spending an attempt (e.g. this host
        is shutting down and will not run it): it is due at once for any
        worker, delivered again with the same batch id, messages and attempt
        number. Raises NotFoundError for a batch not held here."""
        self._mark_settled()
        self._owner._h.batch_release(self.batch_id)


@dataclass
class Event:
    """An event from the core (see ``runlane_event_type_t``)."""

    type: str  #: "batch", "completed", "failed", "dead", "error", "lease_lost", "stopped", ...
    conversation_id: str = ""
    batch_id: str = ""
    attempt: int = 0
    data: Dict[str, Any] = field(default_factory=dict)  #: the event's JSON payload
    error: Optional[RunlaneError] = None  #: for failed, dead, error, lease_lost
    batch: Optional[_BatchBase] = None  #: for "batch" events

    @property
    def reply(self) -> Optional[str]:
        """Reply text of a "completed" event (HTTP backends)."""
        v = self.data.get("reply")
        return v if isinstance(v, str) else None

    @property
    def delta(self) -> Optional[str]:
        """Streamed text of a "delta" event (HTTP backends)."""
        v = self.data.get("delta")
        return v if isinstance(v, str) else None

    @property
    def tool_calls(self) -> List["ToolCall"]:
        """The calls of a "tool_calls" event (HTTP backends)."""
        return [ToolCall.from_json(c) for c in self.data.get("tool_calls") or []]


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a "tool_calls" event. ``id`` is also the idempotency
    key of its execution (calls are executed at least once)."""

    id: str
    name: str
    arguments: str  #: JSON text, as the model wrote it

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ToolCall":
        return cls(str(d.get("id", "")), str(d.get("name", "")), str(d.get("arguments", "")))

    def args(self) -> Any:
        """The arguments parsed (``{}`` when empty)."""
        return json.loads(self.arguments) if self.arguments else {}


#: An event type name (or "*": every event). A test checks these are the
#: core's names (``runlane_event_type_name``).
EventName = Literal[
    "batch", "run_started", "delta", "tool_calls", "completed", "failed", "dead", "error", "lease_lost", "stopped"
]


class BatchEvent(Event):
    """"batch": a batch is ready (custom backend); ``batch`` is set."""


class RunStartedEvent(Event):
    """"run_started": a provider turn started (HTTP backends)."""

    @property
    def response_id(self) -> Optional[str]:
        """The provider's response (responses) or run (assistants) id."""
        v = self.data.get("response_id", self.data.get("run_id"))
        return v if isinstance(v, str) else None


class DeltaEvent(Event):
    """"delta": streamed text of the reply (HTTP backends, openai_stream)."""

    @property
    def delta(self) -> str:
        """The streamed text."""
        v = self.data.get("delta")
        return v if isinstance(v, str) else ""


class ToolCallsEvent(Event):
    """"tool_calls": the turn needs tool outputs (``submit_tool_outputs``)."""


class CompletedEvent(Event):
    """"completed": the turn completed (HTTP backends). Delivered again
    every reply.redeliver.ms until confirmed with ``reply_ack(batch_id)``."""

    @property
    def reply(self) -> str:
        """The reply text."""
        v = self.data.get("reply")
        return v if isinstance(v, str) else ""

    @property
    def redelivered(self) -> bool:
        """True when this is a delivery again of an unconfirmed reply."""
        return self.data.get("redelivered") is True


class FailedEvent(Event):
    """"failed": an attempt failed; the batch is retried after a backoff."""


class DeadEvent(Event):
    """"dead": the batch was dead-lettered."""


class ErrorEvent(Event):
    """"error": background trouble (store unreachable...); work goes on."""


class LeaseLostEvent(Event):
    """"lease_lost": this worker lost a batch's lease; its ack is refused."""


class StoppedEvent(Event):
    """"stopped": the worker stopped; the last event."""

    @property
    def drained(self) -> bool:
        """Whether every in-flight batch was settled before the stop."""
        return self.data.get("drained") is True


#: The class of each event type's events.
EVENT_CLASSES: Dict[str, Type[Event]] = {
    "batch": BatchEvent,
    "run_started": RunStartedEvent,
    "delta": DeltaEvent,
    "tool_calls": ToolCallsEvent,
    "completed": CompletedEvent,
    "failed": FailedEvent,
    "dead": DeadEvent,
    "error": ErrorEvent,
    "lease_lost": LeaseLostEvent,
    "stopped": StoppedEvent,
}


class _NewMessageRequired(TypedDict):
    conversation_id: str
    content: str


class NewMessage(_NewMessageRequired, total=False):
    """One item of ``enqueue_many()`` (a ``(conversation_id, content)`` pair
    is accepted too)."""

    instructions: str
    idempotency_key: Union[str, int]
    metadata: Dict[str, str]


class DeadMessage(TypedDict, total=False):
    """One message of a dead letter."""

    id: str
    content: str
    ts_ms: int
    instructions: str
    metadata: Dict[str, str]


class DeadLetter(TypedDict, total=False):
    """One item of ``dead_list()``: a dead-lettered batch."""

    id: str  #: the dead letter's id (for dead_retry / dead_purge)
    conversation_id: str
    batch_id: str
    attempts: int  #: deliveries
    stalls: int  #: deliveries whose lease expired (see max.stalls)
    error: str
    dead_at_ms: int
    messages: List[DeadMessage]


class Status(TypedDict, total=False):
    """What ``status()`` returns: queue totals (no conversation id), or the
    detail of one conversation. Other counters may be present too."""

    # totals
    pending: int
    ready: int
    inflight: int
    dead: int
    conversations: int
    # one conversation
    attempts: int
    batch_id: Optional[str]
    owner: Optional[str]
    lease_expires_ms: Optional[int]
    due_ms: Optional[int]
    last_error: Optional[str]


@dataclass(frozen=True)
class Health:
    """What ``health()`` reports: one core call (``runlane_health``)."""

    ok: bool  #: store reachable and the worker running (or never started: a producer-only queue)
    store_ok: bool  #: the store answered
    worker: str  #: "idle" (never started), "running", "stopping" or "stopped"
    worker_running: bool
    backend: str  #: the effective backend
    inflight: int  #: batches this queue holds
    lag_ms: Optional[int]  #: how long the oldest due conversation has waited (0: none late; None: store down)
    store_error: Optional[str] = None  #: why the store did not answer

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Health":
        lag = d.get("lag_ms")
        return cls(
            ok=d.get("ok") is True,
            store_ok=d.get("store_ok") is True,
            worker=str(d.get("worker", "")),
            worker_running=d.get("worker_running") is True,
            backend=str(d.get("backend", "")),
            inflight=int(d.get("inflight", 0) or 0),
            lag_ms=int(lag) if isinstance(lag, (int, float)) else None,
            store_error=d.get("store_error") if isinstance(d.get("store_error"), str) else None,
        )


HOST_RUNS_BATCHES = lib.RUNLANE_HOST_RUNS_BATCHES


def check_messages_arg(messages: Any) -> None:
    """``enqueue_many``'s argument is an iterable of messages."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise ArgumentTypeError(
            "messages must be an iterable of dicts or (conversation_id, content) pairs, got %s"
            % type(messages).__name__
        )


def enqueue_items(messages: Iterable[Any], start: int = 0) -> List[Dict[str, Any]]:
    """The items of runlane_enqueue_many's JSON, type-checked; ``start`` is
    the index of the first (for the names in errors)."""
    items: List[Dict[str, Any]] = []
    for i, m in enumerate(messages, start):
        what = "messages[%d]." % i
        if isinstance(m, Mapping):
            unknown = set(m) - {
                "conversation_id",
                "content",
                "instructions",
                "idempotency_key",
                "metadata",
            }
            if unknown:
                raise InvalidArgumentError(
                    "%s: unknown keys %s (expected conversation_id, content, instructions, "
                    "idempotency_key, metadata)" % (what[:-1], ", ".join(sorted(map(str, unknown))))
                )
            conv, content = m.get("conversation_id"), m.get("content")
            opts = message_options(
                m.get("instructions"), m.get("idempotency_key"), m.get("metadata"), what
            )
        elif isinstance(m, Sequence) and not isinstance(m, (str, bytes)) and len(m) == 2:
            conv, content = m[0], m[1]
            opts = {}
        else:
            raise ArgumentTypeError(
                "%s must be a dict or a (conversation_id, content) pair, got %s"
                % (what[:-1], type(m).__name__)
            )
        text(conv, what + "conversation_id")
        text(content, what + "content")
        item = {"conversation_id": conv, "content": content}
        item.update(opts)
        items.append(item)
    return items


def enqueued_list(results: Iterable[Mapping[str, Any]]) -> List[Enqueued]:
    return [Enqueued(r["id"], bool(r["duplicate"])) for r in results]


# ---------------------------------------------------------------- the handle

_live_handles: "weakref.WeakSet[_Handle]" = weakref.WeakSet()
_fork_hook_installed = False


def _after_fork_in_child() -> None:
    for h in list(_live_handles):
        h._forked()


class _Handle:
    """Owns one ``runlane_t *``.

    Every call goes through :meth:`acquire`/:meth:`release`, so that
    :meth:`destroy` waits for calls in flight and later calls raise
    ClosedError instead of touching freed memory. The pointer is also under
    ``ffi.gc``: a queue dropped without close() is destroyed by the garbage
    collector (its worker stopped, leases released).
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        global _fork_hook_installed
        conf = _config.build_conf(values)
        errbuf = ffi.new("char[]", 512)
        rl = lib.runlane_new(conf, errbuf, len(errbuf))
        if rl == ffi.NULL:
            code = lib.runlane_error_code(lib.runlane_error_last())
            if code == 0:
                code = lib.RUNLANE_ERR_INTERNAL
            err = last_error(code)
            msg = ffi.string(errbuf).decode("utf-8", "replace")
            if msg and msg != err.message:
                err = error_from_code(code, msg, err.retriable)
            raise err
        self._rl = ffi.gc(rl, lib.runlane_destroy)
        self._cond = threading.Condition(threading.Lock())
        self._calls = 0
        self._closed_msg = "the queue is closed"
        self.pid = os.getpid()
        self.store = values.get("store", "memory")
        _live_handles.add(self)
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True

    # -- guard

    @property
    def closed(self) -> bool:
        return self._rl is None

    def acquire(self) -> Any:
        with self._cond:
            rl = self._rl
            if rl is None:
                raise ClosedError(self._closed_msg)
            self._calls += 1
            return rl

    def release(self) -> None:
        with self._cond:
            self._calls -= 1
            if self._calls == 0:
                self._cond.notify_all()

    def destroy(self) -> None:
        """Stops the worker if still running and frees the handle, once no
        call is in flight. Idempotent."""
        with self._cond:
            rl = self._rl
            if rl is None:
                return
            self._rl = None
            while self._calls:
                self._cond.wait()
        ffi.release(rl)  # runs runlane_destroy now

    def _forked(self) -> None:
        # In a child after fork: the I/O thread does not exist here and the
        # parent owns the store connections. Never touch the handle again,
        # not even to destroy it.
        self._cond = threading.Condition(threading.Lock())
        self._calls = 0
        rl, self._rl = self._rl, None
        if rl is not None:
            ffi.gc(rl, None)
            self._closed_msg = (
                "this queue was created in process %d; after fork() a child must "
                "create its own queue" % self.pid
            )

    # -- calls (each checks its result on the calling thread)

    def _call(self, fn: Callable[..., int], *args: Any) -> None:
        rl = self.acquire()
        try:
            rc = fn(rl, *args)
            if rc:
                raise last_error(rc)
        finally:
            self.release()

    def enqueue(self, conversation_id: Any, content: Any, options: Mapping[str, Any]) -> Enqueued:
        conv = cstr(conversation_id, "conversation_id")
        body = cstr(content, "content")
        opts = to_json_bytes(options) if options else ffi.NULL
        idbuf = ffi.new("char[]", lib.RUNLANE_ID_MAX)
        dup = ffi.new("int *")
        rl = self.acquire()
        try:
            rc = lib.runlane_enqueue(idbuf, len(idbuf), dup, rl, conv, body, opts)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return Enqueued(ffi.string(idbuf).decode("utf-8"), bool(dup[0]))

    def enqueue_many(self, messages: Iterable[Any]) -> List[Enqueued]:
        check_messages_arg(messages)
        items = enqueue_items(messages)
        if not items:
            return []
        return enqueued_list(loads_list(self.enqueue_many_raw(dumps_list(items))))

    def enqueue_many_raw(self, body: bytes) -> str:
        """runlane_enqueue_many on a JSON array; the result's JSON text."""
        out = ffi.new("char **")
        rl = self.acquire()
        try:
            rc = lib.runlane_enqueue_many(out, rl, body)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return take_string(out)

    def touch(self, conversation_id: Any) -> None:
        self._call(lib.runlane_touch, cstr(conversation_id, "conversation_id"))

    def _json_out(self, fn: Callable[..., int], *args: Any) -> Any:
        out = ffi.new("char **")
        rl = self.acquire()
        try:
            rc = fn(out, rl, *args)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return json.loads(take_string(out))

    def status(self, conversation_id: Optional[str] = None) -> Status:
        conv = ffi.NULL if conversation_id is None else cstr(conversation_id, "conversation_id")
        result: Status = self._json_out(lib.runlane_status, conv)
        return result

    def dead_list(self, offset: int = 0, limit: int = 100) -> List[DeadLetter]:
        for name, v in (("offset", offset), ("limit", limit)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ArgumentTypeError("%s must be an int, got %s" % (name, type(v).__name__))
            if v < 0:
                raise InvalidArgumentError("%s must be >= 0, got %d" % (name, v))
        result: List[DeadLetter] = self._json_out(lib.runlane_dead_list, offset, limit)
        return result

    def _count_out(self, fn: Callable[..., int], dead_id: Optional[str]) -> int:
        did = ffi.NULL if dead_id is None else cstr(dead_id, "dead_id")
        count = ffi.new("size_t *")
        rl = self.acquire()
        try:
            rc = fn(count, rl, did)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return int(count[0])

    def dead_retry(self, dead_id: Optional[str] = None) -> int:
        return self._count_out(lib.runlane_dead_retry, dead_id)

    def dead_purge(self, dead_id: Optional[str] = None) -> int:
        return self._count_out(lib.runlane_dead_purge, dead_id)

    def metrics(self) -> str:
        out = ffi.new("char **")
        rl = self.acquire()
        try:
            rc = lib.runlane_metrics(out, rl)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return take_string(out)

    def start(self) -> None:
        self._call(lib.runlane_start)

    def start_check(self, runs_batches: bool) -> None:
        """The core says whether a worker may start, given whether anyone
        takes its batches (runlane_start_check)."""
        self._call(lib.runlane_start_check, HOST_RUNS_BATCHES if runs_batches else 0)

    def health(self) -> Health:
        return Health.from_json(self._json_out(lib.runlane_health))

    def stop(self, mode: int, timeout_ms: int) -> None:
        self._call(lib.runlane_stop, mode, timeout_ms)

    def ack(self, batch_id: Any, result: Any = None) -> None:
        bid = cstr(batch_id, "batch_id")
        res = ffi.NULL
        if result is not None:
            res = result.encode("utf-8") if isinstance(result, str) else to_json_bytes(result)
        self._call(lib.runlane_batch_ack, bid, res)

    def fail(self, batch_id: Any, error: Any, retriable: bool) -> None:
        bid = cstr(batch_id, "batch_id")
        # An error text is a description: a NUL or a lone surrogate in it is
        # shown escaped (not refused: a failing handler must still settle
        # its batch).
        text_ = str(error) if not isinstance(error, str) else error
        msg = text_.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace")
        self._call(lib.runlane_batch_fail, bid, msg, 1 if retriable else 0)

    def batch_release(self, batch_id: Any) -> None:
        self._call(lib.runlane_batch_release, cstr(batch_id, "batch_id"))

    def reply_ack(self, batch_id: Any) -> None:
        self._call(lib.runlane_reply_ack, cstr(batch_id, "batch_id"))

    def submit_tool_outputs(self, batch_id: Any, outputs: Any) -> None:
        if isinstance(outputs, Mapping):
            outputs = [{"tool_call_id": k, "output": v} for k, v in outputs.items()]
        if not isinstance(outputs, (list, tuple)):
            raise ArgumentTypeError(
                "outputs must be a list of {tool_call_id, output} or a dict, got %s"
                % type(outputs).__name__
            )
        self._call(lib.runlane_submit_tool_outputs, cstr(batch_id, "batch_id"), to_json_bytes(list(outputs)))

    def _create(self, fn_name: str, metadata: Optional[Mapping[str, str]]) -> str:
        fn = getattr(lib, fn_name, None)
        if fn is None:  # pragma: no cover - built from an older header
            raise UnsupportedError("%s is not in this build of the core" % fn_name)
        meta = ffi.NULL
        if metadata is not None:
            meta = to_json_bytes(message_options(metadata=metadata)["metadata"])
        out = ffi.new("char **")
        rl = self.acquire()
        try:
            rc = fn(out, rl, meta)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        return take_string(out)

    def conversation_create(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        return self._create("runlane_conversation_create", metadata)

    def thread_create(self, metadata: Optional[Mapping[str, str]] = None) -> str:
        return self._create("runlane_thread_create", metadata)

    def conversation_map_get(self, key: str) -> Optional[str]:
        """The provider id a conversation key maps to, or None."""
        out = ffi.new("char **")
        rl = self.acquire()
        try:
            rc = lib.runlane_conversation_map_get(out, rl, cstr(key, "key"))
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        if out[0] == ffi.NULL:
            return None
        return take_string(out)

    def conversation_map_set(self, key: str, provider_id: str) -> None:
        self._call(lib.runlane_conversation_map_set, cstr(key, "key"), cstr(provider_id, "provider_id"))

    def conversation_map_forget(self, key: str) -> None:
        self._call(lib.runlane_conversation_map_forget, cstr(key, "key"))

    def migrate_thread(self, key: str, thread_id: Optional[str] = None) -> Dict[str, Any]:
        out = ffi.new("char **")
        tid = ffi.NULL if thread_id is None else cstr(thread_id, "thread_id")
        rl = self.acquire()
        try:
            rc = lib.runlane_migrate_thread(out, rl, cstr(key, "key"), tid)
            if rc:
                raise last_error(rc)
        finally:
            self.release()
        result: Dict[str, Any] = json.loads(take_string(out))
        return result

    def event_fd(self) -> int:
        rl = self.acquire()
        try:
            return int(lib.runlane_event_fd(rl))
        finally:
            self.release()

    def poll(self, timeout_ms: int) -> Optional[Tuple[Any, ...]]:
        """The next raw event as a tuple, or None."""
        rl = self.acquire()
        try:
            ev = lib.runlane_poll(rl, timeout_ms)
        finally:
            self.release()
        if ev == ffi.NULL:
            return None
        try:
            etype = lib.runlane_event_type(ev)
            return (
                ffi.string(lib.runlane_event_type_name(etype)).decode("ascii"),
                ffi.string(lib.runlane_event_conversation_id(ev)).decode("utf-8", "replace"),
                ffi.string(lib.runlane_event_batch_id(ev)).decode("utf-8", "replace"),
                int(lib.runlane_event_attempt(ev)),
                ffi.string(lib.runlane_event_json(ev)).decode("utf-8", "replace"),
                int(lib.runlane_event_error_code(ev)),
                ffi.string(lib.runlane_event_error_message(ev)).decode("utf-8", "replace"),
            )
        finally:
            lib.runlane_event_destroy(ev)


def make_event(raw: Tuple[Any, ...], batch_factory: Callable[[Mapping[str, Any]], _BatchBase]) -> Event:
    etype, conv, bid, attempt, js, code, msg = raw
    try:
        data = json.loads(js) if js else {}
    except ValueError:
        data = {"raw": js}
    err = error_from_code(code, msg) if code else None
    ev = EVENT_CLASSES.get(etype, Event)(etype, conv, bid, attempt, data, err)
    if etype == "batch":
        ev.batch = batch_factory(data)
    return ev


# ---------------------------------------------------------------- listeners

Listener = Callable[[Event], Any]


class Listeners:
    """``on(type, fn)`` registry; ``"*"`` receives every event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: Dict[str, List[Listener]] = {}

    def add(self, event_type: str, fn: Listener) -> None:
        if not isinstance(event_type, str):
            raise ArgumentTypeError("event type must be a str, got %s" % type(event_type).__name__)
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise InvalidArgumentError(
                'unknown event type "%s" (expected one of %s, or "*")'
                % (event_type, ", ".join(EVENT_TYPES))
            )
        if not callable(fn):
            raise ArgumentTypeError("listener must be callable, got %s" % type(fn).__name__)
        with self._lock:
            self._by_type.setdefault(event_type, []).append(fn)

    def register(self, event_type: str, fn: Optional[Listener] = None) -> Any:
        """``queue.on``: adds ``fn`` and returns it, or, without ``fn``, a
        decorator that adds the function it decorates."""
        if fn is None:
            def deco(f: Listener) -> Listener:
                self.add(event_type, f)
                return f

            return deco
        self.add(event_type, fn)
        return fn

    def remove(self, event_type: str, fn: Optional[Listener] = None) -> None:
        with self._lock:
            if fn is None:
                self._by_type.pop(event_type, None)
                return
            fns = self._by_type.get(event_type, [])
            if fn in fns:
                fns.remove(fn)

    def for_event(self, event_type: str) -> List[Listener]:
        with self._lock:
            return list(self._by_type.get(event_type, ())) + list(self._by_type.get("*", ()))

    def has(self, event_type: str) -> bool:
        with self._lock:
            return bool(self._by_type.get(event_type)) or bool(self._by_type.get("*"))


_R = TypeVar("_R")


class EventSource:
    """``on()``/``off()`` of both queues, typed per event name: a listener of
    "completed" receives a :class:`CompletedEvent`, and so on."""

    _listeners: Listeners
    @overload
    def on(self, event_type: Literal["batch"], fn: Callable[[BatchEvent], _R]) -> Callable[[BatchEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["batch"], fn: None = None
    ) -> Callable[[Callable[[BatchEvent], _R]], Callable[[BatchEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["run_started"], fn: Callable[[RunStartedEvent], _R]) -> Callable[[RunStartedEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["run_started"], fn: None = None
    ) -> Callable[[Callable[[RunStartedEvent], _R]], Callable[[RunStartedEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["delta"], fn: Callable[[DeltaEvent], _R]) -> Callable[[DeltaEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["delta"], fn: None = None
    ) -> Callable[[Callable[[DeltaEvent], _R]], Callable[[DeltaEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["tool_calls"], fn: Callable[[ToolCallsEvent], _R]) -> Callable[[ToolCallsEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["tool_calls"], fn: None = None
    ) -> Callable[[Callable[[ToolCallsEvent], _R]], Callable[[ToolCallsEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["completed"], fn: Callable[[CompletedEvent], _R]) -> Callable[[CompletedEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["completed"], fn: None = None
    ) -> Callable[[Callable[[CompletedEvent], _R]], Callable[[CompletedEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["failed"], fn: Callable[[FailedEvent], _R]) -> Callable[[FailedEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["failed"], fn: None = None
    ) -> Callable[[Callable[[FailedEvent], _R]], Callable[[FailedEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["dead"], fn: Callable[[DeadEvent], _R]) -> Callable[[DeadEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["dead"], fn: None = None
    ) -> Callable[[Callable[[DeadEvent], _R]], Callable[[DeadEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["error"], fn: Callable[[ErrorEvent], _R]) -> Callable[[ErrorEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["error"], fn: None = None
    ) -> Callable[[Callable[[ErrorEvent], _R]], Callable[[ErrorEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["lease_lost"], fn: Callable[[LeaseLostEvent], _R]) -> Callable[[LeaseLostEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["lease_lost"], fn: None = None
    ) -> Callable[[Callable[[LeaseLostEvent], _R]], Callable[[LeaseLostEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["stopped"], fn: Callable[[StoppedEvent], _R]) -> Callable[[StoppedEvent], _R]: ...
    @overload
    def on(
        self, event_type: Literal["stopped"], fn: None = None
    ) -> Callable[[Callable[[StoppedEvent], _R]], Callable[[StoppedEvent], _R]]: ...
    @overload
    def on(self, event_type: Literal["*"], fn: Callable[[Event], _R]) -> Callable[[Event], _R]: ...
    @overload
    def on(
        self, event_type: Literal["*"], fn: None = None
    ) -> Callable[[Callable[[Event], _R]], Callable[[Event], _R]]: ...
    def on(self, event_type: str, fn: Optional[Callable[[Any], Any]] = None) -> Any:
        """Registers ``fn(event)`` for ``event_type`` ("batch", "run_started",
        "delta", "tool_calls", "completed", "failed", "dead", "error",
        "lease_lost", "stopped", or "*" for all) and returns it. Without
        ``fn``, a decorator: ``@queue.on("completed")``. The sync queue runs
        listeners on its dispatching thread, the asyncio queue on the loop
        (an ``async def`` listener as a task); an exception is logged, never
        fatal."""
        return self._listeners.register(event_type, fn)

    def off(self, event_type: Union[EventName, Literal["*"]], fn: Optional[Callable[[Any], Any]] = None) -> None:
        """Removes a listener (all of the type when ``fn`` is None)."""
        self._listeners.remove(event_type, fn)


def log_event(ev: Event) -> None:
    """The core's background news, through the ``runlane`` logger."""
    if ev.type == "error":
        log.warning("runlane: %s", ev.error.message if ev.error else ev.data)
    elif ev.type == "failed":
        log.warning(
            "batch %s of %r failed (attempt %d), will retry: %s",
            ev.batch_id,
            ev.conversation_id,
            ev.attempt,
            ev.data.get("error", ""),
        )
    elif ev.type == "dead":
        log.error(
            "batch %s of %r dead-lettered after attempt %d: %s",
            ev.batch_id,
            ev.conversation_id,
            ev.attempt,
            ev.data.get("error", ""),
        )
    elif ev.type == "lease_lost":
        log.warning("lease lost: batch %s of %r (%s)", ev.batch_id, ev.conversation_id, ev.error.message if ev.error else "")
    elif ev.type == "stopped":
        log.info("worker stopped (drained: %s)", ev.data.get("drained"))
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("event %s %s %s", ev.type, ev.conversation_id, ev.batch_id)


def settle_error_is_expected(err: RunlaneError) -> bool:
    """An auto-settle refused because the batch is no longer ours: the lease
    was lost (another worker has it) or released by a stop/close."""
    return err.code in (lib.RUNLANE_ERR_STALE, lib.RUNLANE_ERR_NOT_FOUND, lib.RUNLANE_ERR_DESTROYED)
