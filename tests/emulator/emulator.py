#!/usr/bin/env python3
"""OpenAI stand-in for runlane's tests, benchmarks and demos (the machines have no internet).

It speaks the two APIs runlane drives, shaped after ../spec/openai-openapi.yaml:
  * Responses + Conversations  (/conversations, /responses, ...)
  * Assistants v2              (/threads, /threads/{id}/messages, /threads/{id}/runs, ...)
with OpenAI's one-turn-at-a-time rules (conversation_locked, "Thread T already has an active
run R."), deterministic scripted replies, tool calls driven by markers in user text, fault
injection, and a journal that tests read to prove "every message once, in order".

Standard library only.  Run `emulator.py --help`, or import it:
    from emulator import Emulator
    e = Emulator(latency_ms=50).start(); e.port; e.journal(); e.stop()
See README.md beside this file.
"""
from __future__ import annotations

import argparse
import copy
import gc
import heapq
import itertools
import json
import math
import queue
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ALL_FAULT_KINDS = ("429", "500", "reset", "slow", "drop", "hold")
DEFAULT_FAULT_KINDS = ("429", "500", "reset", "slow")

LOCKED_MESSAGE = ("Another process is currently operating on this conversation. "
                  "Please retry in a few seconds.")

# Every knob, with its default.  POST /_emulator/config changes any of them at run time;
# POST /_emulator/reset puts back the values the emulator was started with.
DEFAULT_CONFIG = {
    "latency_ms": 0,         # per turn, between in_progress and completion
    "queue_ms": 10,          # how long background responses and runs stay "queued"
    "delta_count": 4,        # how many text deltas a reply is streamed in
    "fault_rate": 0.0,       # probability of a random fault per API request
    "fault_kinds": list(DEFAULT_FAULT_KINDS),
    "fault_slow_ms": 1500,   # the "slow" fault's extra delay
    "retry_after_ms": 1000,  # what a 429 asks the client to wait
    "poll_after_ms": 100,    # openai-poll-after-ms on GETs of unfinished responses and runs
    "run_expires_s": 600,    # a run waiting in requires_action expires after this (OpenAI: 10 min)
    "api_key": None,         # when set, requests must carry it (Bearer or Azure's api-key)
    # Test modes (0 = off):
    "conversation_lock": 1,  # 0: a create on a conversation with a running response is accepted
                             # (not conversation_locked) and counted in the journal's `overlaps`,
                             # so "one turn at a time" is checked against what happened
    "fail_answered_later": 0,  # 1: a [[fail]] turn's user texts stay open, so the next response
                               # of the conversation (a retry adding nothing) answers them
    "request_log_drop_every": 0,  # N: leave every Nth request out of the request-log file (a
                                  # deliberately broken log, to see a completeness check fire)
}

# Request bodies' known fields, from the spec's CreateResponse, CreateRunRequest, ...
# OpenAI rejects anything else, and so do we: it catches a client that sends a misspelled field.
RESPONSE_CREATE_FIELDS = frozenset((
    "background", "context_management", "conversation", "include", "input", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
    "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice",
    "tools", "top_logprobs", "top_p", "truncation", "user"))
CONVERSATION_CREATE_FIELDS = frozenset(("items", "metadata"))
RUN_CREATE_FIELDS = frozenset((
    "additional_instructions", "additional_messages", "assistant_id", "instructions",
    "max_completion_tokens", "max_prompt_tokens", "metadata", "model", "parallel_tool_calls",
    "reasoning_effort", "response_format", "stream", "temperature", "tool_choice", "tools",
    "top_p", "truncation_strategy"))
THREAD_AND_RUN_FIELDS = frozenset((
    "assistant_id", "instructions", "max_completion_tokens", "max_prompt_tokens", "metadata",
    "model", "parallel_tool_calls", "response_format", "stream", "temperature", "thread",
    "tool_choice", "tool_resources", "tools", "top_p", "truncation_strategy"))
THREAD_CREATE_FIELDS = frozenset(("messages", "metadata", "tool_resources"))
MESSAGE_CREATE_FIELDS = frozenset(("attachments", "content", "metadata", "role"))
SUBMIT_OUTPUTS_FIELDS = frozenset(("stream", "tool_outputs"))

RESPONSE_TERMINAL = frozenset(("completed", "failed", "cancelled", "incomplete"))
RUN_ACTIVE = frozenset(("queued", "in_progress", "requires_action", "cancelling"))
RUN_SEGMENT_END = frozenset(("thread.run.requires_action", "thread.run.completed",
                             "thread.run.failed", "thread.run.cancelled",
                             "thread.run.expired", "thread.run.incomplete"))
RESPONSE_STREAM_END = frozenset(("response.completed", "response.failed", "response.incomplete"))


# The cyclic garbage collector, at Python's default thresholds, spent a third of the emulator's
# CPU walking the objects of thousands of open connections and turns (perf, 10,000 streams).
# The emulator makes little cyclic garbage, so while one runs, collections are rarer.  The
# previous thresholds come back when the last running emulator stops.
GC_THRESHOLDS = (100000, 50, 100)
_gc_state = {"running": 0, "saved": None}
_gc_lock = threading.Lock()


def _gc_hold(starting):
    with _gc_lock:
        if starting:
            _gc_state["running"] += 1
            if _gc_state["running"] == 1:
                _gc_state["saved"] = gc.get_threshold()
                gc.set_threshold(*(max(a, b) for a, b in zip(GC_THRESHOLDS, gc.get_threshold())))
        else:
            _gc_state["running"] -= 1
            if _gc_state["running"] == 0 and _gc_state["saved"]:
                gc.set_threshold(*_gc_state["saved"])


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status, message, type_="invalid_request_error", param=None, code=None,
                 headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self):
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


def _new_id(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex)


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps(obj, separators=...) less its setup


def _dumps(obj):
    return _ENCODER.encode(obj)


def _default(value, default):
    """A request field sent as null means "the default", as in OpenAI's answers."""
    return default if value is None else value


def _now():
    return int(time.time())


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _expect_type(value, param, kinds, nullable=True):
    """OpenAI's invalid_type error when `value` is not one of the JSON types in `kinds`."""
    if value is None and nullable:
        return
    if _type_name(value) not in kinds and not (
            "number" in kinds and _type_name(value) == "integer"):
        raise ApiError(400, "Invalid type for '%s': expected %s, but got %s instead." % (
            param, " or ".join("an " + k if k[0] in "aeiou" else "a " + k for k in kinds),
            "an " + _type_name(value) if _type_name(value)[0] in "aeiou"
            else "a " + _type_name(value)), param=param, code="invalid_type")


def _validate_metadata(metadata, param="metadata"):
    """OpenAI's limits on metadata: at most 16 string pairs, keys <= 64, values <= 512 chars."""
    if metadata is None:
        return None
    _expect_type(metadata, param, ("object",))
    if len(metadata) > 16:
        raise ApiError(400, "Invalid '%s': too many properties. Expected an object with at most "
                       "16 properties, but got an object with %d properties instead."
                       % (param, len(metadata)), param=param, code="object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(400, "Invalid '%s': key too long. Expected a key with maximum length "
                           "64, but got a key with length %d instead." % (param, len(key)),
                           param=param, code="string_above_max_length")
        _expect_type(value, "%s.%s" % (param, key), ("string",), nullable=False)
        if len(value) > 512:
            raise ApiError(400, "Invalid '%s.%s': string too long. Expected a string with maximum "
                           "length 512, but got a string with length %d instead."
                           % (param, key, len(value)), param="%s.%s" % (param, key),
                           code="string_above_max_length")
    return dict(metadata)


def _reject_unknown(body, allowed, assistants):
    for key in body:
        if key not in allowed:
            if assistants:
                raise ApiError(400, "Unrecognized request argument supplied: %s" % key)
            raise ApiError(400, "Unknown parameter: '%s'." % key, param=key,
                           code="unknown_parameter")


# ---------------------------------------------------------------------------------------------
# Scripted behaviour: markers in user text decide what a turn does.

FAIL_ALWAYS = "[[fail-always]]"
_TOOL_START = re.compile(r"\[\[tool:([A-Za-z0-9_.\-]+)")
_SLOW = re.compile(r"\[\[slow:(\d+)\]\]")
_JSON = json.JSONDecoder()


def parse_markers(text):
    """Return (calls, fail, slow_ms) for one user text.

    calls: [(name, arguments_json)] from `[[tool:NAME ARGS_JSON]]`; ARGS_JSON is parsed with a
    real JSON decoder, so arguments containing `]]` are fine, and defaults to {}.
    """
    calls = []
    pos = 0
    while True:
        m = _TOOL_START.search(text, pos)
        if not m:
            break
        name, i = m.group(1), m.end()
        while i < len(text) and text[i].isspace():
            i += 1
        args = {}
        if i < len(text) and text[i] == "{":
            try:
                args, i = _JSON.raw_decode(text, i)
            except ValueError:
                pos = m.end()
                continue
            while i < len(text) and text[i].isspace():
                i += 1
        if text.startswith("]]", i):
            calls.append((name, json.dumps(args, separators=(",", ":"))))
            pos = i + 2
        else:
            pos = m.end()
    slow_ms = sum(int(s) for s in _SLOW.findall(text))
    return calls, "[[fail]]" in text, slow_ms


class _Plan:
    """What one turn (or one phase of it, after tool outputs) will do."""

    def __init__(self, texts, new_texts, tool_results, fail_always=False):
        self.calls = []
        # fail_always: a [[fail-always]] text came in, now or (for a response that adds no
        # text, i.e. a retry) in the turn before, which failed: this turn fails too.
        self.fail_always = fail_always or any(FAIL_ALWAYS in t for t in new_texts)
        self.fail = self.fail_always
        self.slow_ms = 0
        # Markers only count in the texts this phase brought in: after tool outputs come back,
        # the markers of the turn's first texts have already produced their calls.
        for text in new_texts:
            calls, fail, slow = parse_markers(text)
            self.calls.extend(calls)
            self.fail = self.fail or fail
            self.slow_ms += slow
        self.reply = "echo: " + "\n".join(texts)
        if tool_results:
            self.reply += " | tools: " + ",".join("%s=%s" % r for r in tool_results)


def _chunks(text, n):
    """Split text into at most n near-equal pieces, so replies arrive in several deltas."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = math.ceil(len(text) / n)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _words(texts):
    return sum(len(t.split()) for t in texts) + 1


# ---------------------------------------------------------------------------------------------
# State objects.  All of them are read and written only under Emulator._lock.

class _Turn:
    """A response or a run: the event log that streams replay and the scheduler appends to."""

    def __init__(self, lock):
        self.events = []  # (event name or None for "end of stream", data json, ends_segment)
        self.cond = threading.Condition(lock)
        # Bumped by cancel and reset: scheduled steps carry the token they were made with and
        # do nothing once it changed, so a cancelled turn never completes behind our back.
        self.token = 0
        self.journal_entry = None

    def end_stream(self):
        self.events.append((None, None, True))
        self.cond.notify_all()


class _Dialog:
    """What a conversation (or a previous_response_id chain, or a thread) carries between turns:
    the user texts of the turn still open and the tool calls awaiting outputs."""

    def __init__(self, key):
        self.key = key
        self.turn_texts = []     # user texts of the open turn, echoed when it ends
        self.fresh_texts = []    # those of them no response has planned yet (markers unread)
        self.pending_calls = {}  # call_id -> (name, arguments), in call order
        self.tool_results = []   # (name, output) of the calls answered so far in this turn
        self.failing_always = False  # the last turn failed by [[fail-always]]

    def close_turn(self):
        # Texts that arrived (as conversation items) while the turn ran belong to the next one.
        self.turn_texts = list(self.fresh_texts)
        self.pending_calls = {}
        self.tool_results = []


class _Conversation(_Dialog):
    def __init__(self, metadata):
        super().__init__(_new_id("conv"))
        self.id = self.key
        self.created_at = _now()
        self.metadata = metadata or {}
        self.items = []
        self.active_response = None
        self.running = set()  # ids of its responses not yet finished (several: overlaps)

    def public(self):
        return {"id": self.id, "object": "conversation", "created_at": self.created_at,
                "metadata": self.metadata}


class _Response(_Turn):
    def __init__(self, lock, body, conversation_id, background, tools):
        super().__init__(lock)
        self.id = _new_id("resp")
        self.created_at = _now()
        self.status = "queued" if background else "in_progress"
        self.background = background
        self.conversation_id = conversation_id
        self.body = body  # the request: echoed fields are read from it
        self.model = body.get("model") or "gpt-4o"
        self.metadata = body.get("metadata") or {}
        self.tools = tools
        self.dialog = None
        self.input_items = []
        self.output = []
        self.error = None
        self.completed_at = None
        self.usage = None
        self.plan_inputs = None  # _Plan's arguments, for the scheduler
        self.seq = 0  # sequence_number of the next stream event

    def public(self):
        b = self.body
        d = {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": self.status, "background": self.background,
            "completed_at": self.completed_at,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "error": self.error, "incomplete_details": None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "max_tool_calls": b.get("max_tool_calls"), "model": self.model,
            "output": copy.deepcopy(self.output),
            "parallel_tool_calls": _default(b.get("parallel_tool_calls"), True),
            "previous_response_id": b.get("previous_response_id"), "prompt": b.get("prompt"),
            "reasoning": b.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default", "store": _default(b.get("store"), True),
            "temperature": _default(b.get("temperature"), 1.0),
            "text": b.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": b.get("tool_choice") or "auto", "tools": self.tools,
            "top_logprobs": _default(b.get("top_logprobs"), 0),
            "top_p": _default(b.get("top_p"), 1.0),
            "truncation": b.get("truncation") or "disabled", "metadata": self.metadata,
        }
        if self.usage is not None:  # the spec's usage is not nullable: absent until known
            d["usage"] = self.usage
        return d


class _Thread(_Dialog):
    def __init__(self, metadata, tool_resources):
        super().__init__(_new_id("thread"))
        self.id = self.key
        self.created_at = _now()
        self.metadata = metadata or {}
        self.tool_resources = tool_resources
        self.messages = []    # message dicts, oldest first
        self.consumed = 0     # messages[:consumed] were already read by a run
        self.runs = []        # _Run, oldest first
        self.active_run = None

    def public(self):
        return {"id": self.id, "object": "thread", "created_at": self.created_at,
                "tool_resources": self.tool_resources or {}, "metadata": self.metadata}


class _Run(_Turn):
    def __init__(self, lock, thread, body, tools, expires_s):
        super().__init__(lock)
        self.id = _new_id("run")
        self.thread = thread
        self.created_at = _now()
        self.assistant_id = body["assistant_id"]
        self.status = "queued"
        self.model = body.get("model") or "gpt-4o"
        instructions = body.get("instructions") or ""
        if body.get("additional_instructions"):
            instructions = (instructions + "\n" if instructions else "") + \
                body["additional_instructions"]
        self.instructions = instructions
        self.tools = tools
        self.metadata = body.get("metadata") or {}
        self.temperature = _default(body.get("temperature"), 1.0)
        self.top_p = _default(body.get("top_p"), 1.0)
        self.tool_choice = body.get("tool_choice") or "auto"
        self.parallel_tool_calls = _default(body.get("parallel_tool_calls"), True)
        self.response_format = body.get("response_format") or "auto"
        self.truncation_strategy = body.get("truncation_strategy") or {
            "type": "auto", "last_messages": None}
        self.max_prompt_tokens = body.get("max_prompt_tokens")
        self.max_completion_tokens = body.get("max_completion_tokens")
        self.required_action = None
        self.last_error = None
        self.expires_at = self.created_at + int(expires_s)
        self.started_at = self.cancelled_at = self.failed_at = self.completed_at = None
        self.usage = None
        self.texts = []       # the user texts this run answers
        self.new_texts = []   # the texts whose markers count in the current phase
        self.message = None   # the assistant message being written
        self.step = None      # the run step being written

    def public(self):
        return {
            "id": self.id, "object": "thread.run", "created_at": self.created_at,
            "thread_id": self.thread.id, "assistant_id": self.assistant_id,
            "status": self.status, "required_action": copy.deepcopy(self.required_action),
            "last_error": self.last_error,
            "expires_at": None if self.status not in RUN_ACTIVE else self.expires_at,
            "started_at": self.started_at, "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at, "completed_at": self.completed_at,
            "incomplete_details": None, "model": self.model, "instructions": self.instructions,
            "tools": self.tools, "metadata": self.metadata, "usage": self.usage,
            "temperature": self.temperature, "top_p": self.top_p,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "truncation_strategy": self.truncation_strategy, "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": self.response_format,
        }


# Replies a route handler returns; the HTTP layer writes them.
class _Json:
    def __init__(self, obj, status=200, headers=None):
        self.obj, self.status, self.headers = obj, status, headers or {}


class _Stream:
    """Replay a turn's event log from `start` as SSE; `assistants` adds the final done event."""

    def __init__(self, turn, start, assistants):
        self.turn, self.start, self.assistants = turn, start, assistants


class _Wait:
    """Block until the response is finished, then answer it (a plain, non-background create)."""

    def __init__(self, turn):
        self.turn = turn


# ---------------------------------------------------------------------------------------------

class Emulator:
    """The emulator: state, API logic, scheduler, and the HTTP server that fronts them."""

    def __init__(self, api_key=None, latency_ms=0, fault_rate=0.0, fault_kinds=None, seed=None,
                 journal_path=None, host="127.0.0.1", port=0, request_log_path=None, **config):
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise TypeError("unknown emulator option(s): %s" % ", ".join(sorted(unknown)))
        initial = dict(DEFAULT_CONFIG, **config)
        initial.update(api_key=api_key, latency_ms=latency_ms, fault_rate=fault_rate,
                       fault_kinds=list(fault_kinds or DEFAULT_FAULT_KINDS))
        self._initial_config = self._checked_config(initial, dict(DEFAULT_CONFIG))
        self._seed = seed
        self._journal_path = journal_path
        # Every API request, one JSON line each, written once its status is known: the
        # in-memory log keeps the last 2000 only, a test that needs all of them reads this.
        self._request_log_path = request_log_path
        self._request_log_file = None
        self._request_log_lock = threading.Lock()
        self._request_log_written = 0
        self._host = host
        self._port = port
        # One lock around all state.  Per-turn conditions share it so that a stream waits for
        # its own turn's events without waking every other stream.
        self._lock = threading.RLock()
        self._sched_cond = threading.Condition(self._lock)
        self._sched_heap = []
        self._sched_seq = itertools.count()
        self._stopping = False
        self._server = None
        self._threads = []
        self._connections = set()
        self._reset_state()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def base_url(self):
        return "http://%s:%d/v1" % (self._host, self.port)

    def start(self):
        if self._request_log_path:
            self._request_log_file = open(self._request_log_path, "a")
        _gc_hold(True)
        self._server = _Server((self._host, self._port), _Handler, self)
        for target, name in ((self._server.serve_forever, "emulator-http"),
                             (self._scheduler_loop, "emulator-scheduler")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        """Stop serving, end open streams and connections, and write the journal if asked."""
        if self._server is None:
            return
        with self._lock:
            self._stopping = True
            self._sched_cond.notify_all()
            for turn in self._all_turns():
                turn.cond.notify_all()
        self._server.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # idle keep-alive connections would otherwise hold their threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=2)
        self._server = None
        _gc_hold(False)
        self.write_journal()
        with self._request_log_lock:
            if self._request_log_file:
                self._request_log_file.close()
                self._request_log_file = None

    def write_journal(self, path=None):
        path = path or self._journal_path
        if path:
            with open(path, "w") as f:
                json.dump(self.journal(), f, indent=2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- control (also reachable over HTTP under /_emulator/) --------------------------------

    def journal(self):
        with self._lock:
            return {
                "conversations": {
                    key: {"messages": list(j["messages"]),
                          "turns": [dict(t) for t in j["turns"]],
                          "rejected": j["rejected"], "overlaps": j["overlaps"],
                          "duplicates": j["duplicates"]}
                    for key, j in self._journal.items()},
                "requests": self._request_count,
                "faults": self._fault_count,
            }

    def requests(self, limit=50):
        with self._lock:
            entries = list(self._request_log)[-limit:] if limit > 0 else []
            return copy.deepcopy(entries)

    def configure(self, **changes):
        with self._lock:
            self._config = self._checked_config(changes, self._config)
            return dict(self._config)

    def config(self):
        with self._lock:
            return dict(self._config)

    def force_fault(self, kind, count=1, method=None, path=None):
        """Inject `kind` into the next `count` API requests that match method and path (a
        substring), before any random fault."""
        if kind not in ALL_FAULT_KINDS:
            raise ValueError("fault kind must be one of %s" % (ALL_FAULT_KINDS,))
        with self._lock:
            self._forced_faults.append({"kind": kind, "count": int(count),
                                        "method": method.upper() if method else None,
                                        "path": path})
            return copy.deepcopy(self._forced_faults)

    def reset(self):
        """Forget every conversation, thread, response, journal entry and forced fault, and
        return to the configuration the emulator started with."""
        with self._lock:
            for turn in self._all_turns():
                # End what is still running, so that no request waits on a forgotten turn.
                turn.token += 1
                if turn.status not in RESPONSE_TERMINAL and turn.status != "expired":
                    turn.status = "cancelled"
                turn.end_stream()
            self._reset_state()

    def _reset_state(self):
        with self._lock:
            self._config = dict(self._initial_config)
            self._rng = random.Random(self._seed)
            self._conversations = {}
            self._responses = {}
            self._threads_by_id = {}
            self._runs = {}
            self._journal = {}
            self._request_log = deque(maxlen=2000)
            self._request_count = 0
            self._fault_count = 0
            self._forced_faults = []
            self._sched_heap = []

    @staticmethod
    def _checked_config(changes, base):
        cfg = dict(base)
        for key, value in changes.items():
            if key not in DEFAULT_CONFIG:
                raise ValueError("unknown config key %r" % key)
            if key == "fault_kinds":
                kinds = value.split(",") if isinstance(value, str) else list(value)
                kinds = [str(k).strip() for k in kinds if str(k).strip()]
                bad = [k for k in kinds if k not in ALL_FAULT_KINDS]
                if bad:
                    raise ValueError("unknown fault kind(s) %s; known: %s"
                                     % (bad, ",".join(ALL_FAULT_KINDS)))
                value = kinds
            elif key == "fault_rate":
                value = float(value)
                if not 0.0 <= value <= 1.0:
                    raise ValueError("fault_rate must be within [0, 1]")
            elif key == "api_key":
                value = value or None
            else:
                value = float(value) if key == "run_expires_s" else int(value)
                if value < 0:
                    raise ValueError("%s must be >= 0" % key)
            cfg[key] = value
        return cfg

    def _all_turns(self):
        return list(self._responses.values()) + list(self._runs.values())

    # -- journal --------------------------------------------------------------------------------

    def _jentry(self, key):
        j = self._journal.get(key)
        if j is None:
            j = self._journal[key] = {"messages": [], "turns": [], "rejected": 0,
                                      "overlaps": 0, "duplicates": 0, "seen": set()}
        return j

    def _journal_message(self, key, text, message_id):
        j = self._jentry(key)
        j["messages"].append(text)
        if message_id:
            if message_id in j["seen"]:
                j["duplicates"] += 1
            j["seen"].add(message_id)

    def _journal_turn_start(self, turn, key, input_count):
        turn.journal_entry = {"id": turn.id, "started": time.time(), "ended": None,
                              "status": turn.status, "input_count": input_count}
        self._jentry(key)["turns"].append(turn.journal_entry)

    @staticmethod
    def _journal_turn_status(turn):
        turn.journal_entry["status"] = turn.status
        if turn.status in RESPONSE_TERMINAL or turn.status == "expired":
            turn.journal_entry["ended"] = time.time()

    def _reject(self, key, error):
        self._jentry(key)["rejected"] += 1
        raise error

    # -- scheduler: one thread moves every turn along ----------------------------------------

    def _at(self, delay_s, fn, *args):
        """Run fn(*args) under the lock after delay_s.  Called with the lock held."""
        item = (time.monotonic() + delay_s, next(self._sched_seq), fn, args)
        heapq.heappush(self._sched_heap, item)
        if self._sched_heap[0] is item:  # only an earlier deadline needs the scheduler awake
            self._sched_cond.notify()

    def _scheduler_loop(self):
        with self._lock:
            while not self._stopping:
                if not self._sched_heap:
                    self._sched_cond.wait()
                    continue
                delay = self._sched_heap[0][0] - time.monotonic()
                if delay > 0:
                    self._sched_cond.wait(delay)
                    continue
                _, _, fn, args = heapq.heappop(self._sched_heap)
                try:
                    fn(*args)
                except Exception:  # a bug in one step must not stop every other turn
                    traceback.print_exc()

    def _guarded(self, turn, fn):
        """Wrap a scheduled step so that it is dropped once the turn was cancelled or reset."""
        token = turn.token

        def step(*args):
            if turn.token == token:
                fn(*args)
        return step

    def _latency_s(self, plan):
        return (self._config["latency_ms"] + plan.slow_ms) / 1000.0

    # -- faults, auth, request log ------------------------------------------------------------

    def _record_request(self, method, path, headers, raw_body):
        with self._lock:
            self._request_count += 1
            shown = {}
            for name, value in headers.items():
                if name.lower() in ("authorization", "api-key"):
                    value = "Bearer <redacted>" if value.lower().startswith("bearer ") \
                        else "<redacted>"
                shown[name] = value
            try:
                body = json.loads(raw_body) if raw_body else None
            except ValueError:
                body = raw_body.decode("utf-8", "replace")
            entry = {"seq": self._request_count, "time": time.time(), "method": method,
                     "path": path, "headers": shown, "body": body, "status": None, "fault": None}
            self._request_log.append(entry)
            return entry

    def _request_done(self, entry):
        """Append a request whose status is known to the request-log file, if there is one."""
        with self._lock:
            line = json.dumps(entry)
            drop = self._config["request_log_drop_every"]
        with self._request_log_lock:
            if self._request_log_file is None:
                return
            self._request_log_written += 1
            if drop and self._request_log_written % drop == 0:
                return  # the deliberately broken log of request_log_drop_every
            self._request_log_file.write(line + "\n")
            self._request_log_file.flush()

    def _pick_fault(self, method, path, entry):
        """Choose this request's fault (or None) and note it in its request-log entry."""
        with self._lock:
            kind = None
            for rule in self._forced_faults:
                if (rule["method"] in (None, method)) and (not rule["path"] or
                                                           rule["path"] in path):
                    kind = rule["kind"]
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self._forced_faults.remove(rule)
                    break
            # The draw happens on every request, forced or not, so that a seeded run injects
            # the same random faults whatever was forced in between.
            draw = self._rng.random()
            if kind is None and self._config["fault_kinds"] and draw < self._config["fault_rate"]:
                kind = self._rng.choice(self._config["fault_kinds"])
            if kind:
                self._fault_count += 1
            entry["fault"] = kind
            if kind == "reset":
                entry["status"] = "reset"
            return kind

    def _check_auth(self, headers):
        key = self._config["api_key"]
        if not key:
            return
        auth = headers.get("Authorization") or ""
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if given is None:
            given = headers.get("api-key")
        if given == key:
            return
        if not given:
            raise ApiError(401, "You didn't provide an API key. You need to provide your API key "
                           "in an Authorization header using Bearer auth (i.e. Authorization: "
                           "Bearer YOUR_KEY). You can obtain an API key from "
                           "https://platform.openai.com/account/api-keys.",
                           code="invalid_api_key")
        masked = given[:3] + "*" * max(0, len(given) - 7) + given[-4:] if len(given) > 8 \
            else "***"
        raise ApiError(401, "Incorrect API key provided: %s. You can find your API key at "
                       "https://platform.openai.com/account/api-keys." % masked,
                       code="invalid_api_key")

    @staticmethod
    def _check_beta(headers):
        betas = [b.strip() for b in (headers.get("OpenAI-Beta") or "").split(",")]
        if "assistants=v2" not in betas:
            raise ApiError(400, "You must provide the 'OpenAI-Beta' header to access the "
                           "Assistants API. Please try again by setting the header "
                           "'OpenAI-Beta: assistants=v2'.", code="invalid_beta")

    # -- shared helpers -------------------------------------------------------------------------

    @staticmethod
    def _paginate(items, query, default_order="desc", id_of=lambda x: x["id"]):
        """OpenAI's cursor lists: order asc|desc, limit 1..100 (default 20), after, before."""
        order = query.get("order", default_order)
        if order not in ("asc", "desc"):
            raise ApiError(400, "Invalid value: '%s'. Value must be 'asc' or 'desc'." % order,
                           param="order", code="invalid_value")
        try:
            limit = int(query.get("limit", 20))
        except ValueError:
            raise ApiError(400, "Invalid 'limit': expected an integer.", param="limit",
                           code="invalid_type")
        if not 1 <= limit <= 100:
            raise ApiError(400, "Invalid 'limit': integer %s. Expected a value between 1 and 100, "
                           "but got %d instead." % ("below minimum value" if limit < 1
                                                    else "above maximum value", limit),
                           param="limit", code="integer_below_min_value" if limit < 1
                           else "integer_above_max_value")
        seq = list(items) if order == "asc" else list(reversed(items))
        ids = [id_of(x) for x in seq]
        for param in ("after", "before"):
            cursor = query.get(param)
            if cursor is None:
                continue
            if cursor not in ids:
                raise ApiError(400, "Invalid '%s': no item with id '%s'." % (param, cursor),
                               param=param)
            i = ids.index(cursor)
            seq, ids = (seq[i + 1:], ids[i + 1:]) if param == "after" else (seq[:i], ids[:i])
        page = seq[:limit] if "before" not in query else seq[-limit:]
        # Empty lists carry null ids, as the live API answers (the spec types them as strings).
        return {"object": "list", "data": copy.deepcopy(page),
                "first_id": id_of(page[0]) if page else None,
                "last_id": id_of(page[-1]) if page else None,
                "has_more": len(seq) > len(page)}

    @staticmethod
    def _normalize_response_tools(tools):
        _expect_type(tools, "tools", ("array",))
        out = []
        for i, tool in enumerate(tools or []):
            _expect_type(tool, "tools[%d]" % i, ("object",), nullable=False)
            if tool.get("type") == "function":
                if not isinstance(tool.get("name"), str):
                    raise ApiError(400, "Missing required parameter: 'tools[%d].name'." % i,
                                   param="tools[%d].name" % i, code="missing_required_parameter")
                t = {"type": "function", "name": tool["name"],
                     "description": tool.get("description"),
                     "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
                     "strict": tool.get("strict", True)}
                out.append(t)
            else:
                out.append(copy.deepcopy(tool))
        return out

    @staticmethod
    def _normalize_run_tools(tools):
        _expect_type(tools, "tools", ("array",))
        out = []
        for i, tool in enumerate(tools or []):
            _expect_type(tool, "tools[%d]" % i, ("object",), nullable=False)
            if tool.get("type") == "function":
                fn = tool.get("function")
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise ApiError(400, "Missing required parameter: 'tools[%d].function'." % i,
                                   param="tools[%d].function" % i,
                                   code="missing_required_parameter")
                out.append({"type": "function", "function": {
                    "name": fn["name"], "description": fn.get("description", ""),
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
                    "strict": fn.get("strict", False)}})
            else:
                out.append(copy.deepcopy(tool))
        return out

    # =========================================================================================
    # Conversations

    def _get_conversation(self, conv_id):
        conv = self._conversations.get(conv_id)
        if conv is None:
            raise ApiError(404, "Conversation with id '%s' not found." % conv_id,
                           param="conversation_id")
        return conv

    def _response_input_items(self, items, param):
        """Parse Responses input items into stored items, user texts and tool outputs."""
        _expect_type(items, param, ("string", "array"))
        if items is None:
            return [], [], []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        stored, texts, outputs = [], [], []
        for i, item in enumerate(items):
            where = "%s[%d]" % (param, i)
            _expect_type(item, where, ("object",), nullable=False)
            kind = item.get("type", "message")
            if kind == "message":
                role = item.get("role")
                if role not in ("user", "assistant", "system", "developer"):
                    raise ApiError(400, "Invalid value: '%s'. Supported values are: 'user', "
                                   "'assistant', 'system', and 'developer'." % role,
                                   param=where + ".role", code="invalid_value")
                content = item.get("content")
                _expect_type(content, where + ".content", ("string", "array"), nullable=False)
                parts = [{"type": "input_text", "text": content}] \
                    if isinstance(content, str) else content
                text_parts = []
                part_type = "output_text" if role == "assistant" else "input_text"
                for j, part in enumerate(parts):
                    _expect_type(part, "%s.content[%d]" % (where, j), ("object",),
                                 nullable=False)
                    if part.get("type") in ("input_text", "output_text", "text"):
                        text_parts.append(part.get("text") or "")
                stored_parts = []
                for text in text_parts:
                    p = {"type": part_type, "text": text}
                    if part_type == "output_text":
                        p.update(annotations=[], logprobs=[])
                    stored_parts.append(p)
                stored.append({"id": _new_id("msg"), "type": "message", "status": "completed",
                               "role": role, "content": stored_parts})
                if role == "user":
                    texts.append("".join(text_parts))
            elif kind == "function_call_output":
                call_id, output = item.get("call_id"), item.get("output")
                if not isinstance(call_id, str):
                    raise ApiError(400, "Missing required parameter: '%s.call_id'." % where,
                                   param=where + ".call_id", code="missing_required_parameter")
                if not isinstance(output, str):
                    output = json.dumps(output)
                stored.append({"id": _new_id("fco"), "type": "function_call_output",
                               "call_id": call_id, "output": output, "status": "completed"})
                outputs.append((call_id, output))
            else:
                raise ApiError(400, "Invalid value: '%s'. Supported item types here are "
                               "'message' and 'function_call_output'." % kind,
                               param=where + ".type", code="invalid_value")
        return stored, texts, outputs

    def api_create_conversation(self, req):
        body = req.body
        _reject_unknown(body, CONVERSATION_CREATE_FIELDS, assistants=False)
        metadata = _validate_metadata(body.get("metadata"))
        items = body.get("items")
        if isinstance(items, list) and len(items) > 20:
            raise ApiError(400, "Invalid 'items': array too long. Expected an array with maximum "
                           "length 20, but got an array with length %d instead." % len(items),
                           param="items", code="array_above_max_length")
        stored, texts, outputs = self._response_input_items(items, "items")
        if outputs:
            raise ApiError(400, "No tool call found for function call output with call_id %s."
                           % outputs[0][0], param="items")
        with self._lock:
            conv = _Conversation(metadata)
            self._conversations[conv.id] = conv
            self._jentry(conv.id)
            conv.items.extend(stored)
            self._add_turn_texts(conv, texts)
            return _Json(conv.public())

    def _add_turn_texts(self, conv, texts):
        """User messages added as items are read by the conversation's next response."""
        conv.turn_texts = conv.turn_texts + texts
        conv.fresh_texts = conv.fresh_texts + texts
        for text in texts:
            self._journal_message(conv.id, text, None)

    def api_get_conversation(self, req):
        with self._lock:
            return _Json(self._get_conversation(req.params["conversation_id"]).public())

    def api_list_conversation_items(self, req):
        with self._lock:
            conv = self._get_conversation(req.params["conversation_id"])
            return _Json(self._paginate(conv.items, req.query))

    def api_get_conversation_item(self, req):
        with self._lock:
            conv = self._get_conversation(req.params["conversation_id"])
            for item in conv.items:
                if item["id"] == req.params["item_id"]:
                    return _Json(copy.deepcopy(item))
            raise ApiError(404, "Item with id '%s' not found." % req.params["item_id"],
                           param="item_id")

    def api_add_conversation_items(self, req):
        items = req.body.get("items")
        _expect_type(items, "items", ("array",), nullable=False)
        if len(items) > 20:
            raise ApiError(400, "Invalid 'items': array too long. Expected an array with maximum "
                           "length 20, but got an array with length %d instead." % len(items),
                           param="items", code="array_above_max_length")
        stored, texts, outputs = self._response_input_items(items, "items")
        with self._lock:
            conv = self._get_conversation(req.params["conversation_id"])
            for call_id, _ in outputs:
                if call_id not in conv.pending_calls:
                    raise ApiError(400, "No tool call found for function call output with "
                                   "call_id %s." % call_id, param="items")
            # Outputs added as items answer their calls as if sent with the next response.
            for call_id, output in outputs:
                conv.tool_results.append((conv.pending_calls.pop(call_id)[0], output))
            conv.items.extend(stored)
            self._add_turn_texts(conv, texts)
            return _Json({"object": "list", "data": copy.deepcopy(stored),
                          "first_id": stored[0]["id"] if stored else None,
                          "last_id": stored[-1]["id"] if stored else None, "has_more": False})

    # =========================================================================================
    # Responses

    def _get_response(self, resp_id):
        resp = self._responses.get(resp_id)
        if resp is None:
            raise ApiError(404, "Response with id '%s' not found." % resp_id,
                           param="response_id")
        return resp

    def api_create_response(self, req):
        body = req.body
        _reject_unknown(body, RESPONSE_CREATE_FIELDS, assistants=False)
        if not body.get("model") and not body.get("prompt"):
            raise ApiError(400, "Missing required parameter: 'model'.", param="model",
                           code="missing_required_parameter")
        _expect_type(body.get("instructions"), "instructions", ("string", "array"))
        _expect_type(body.get("prompt"), "prompt", ("object",))
        if body.get("prompt") is not None:
            if not isinstance(body["prompt"].get("id"), str):
                raise ApiError(400, "Missing required parameter: 'prompt.id'.",
                               param="prompt.id", code="missing_required_parameter")
            body["prompt"] = {"id": body["prompt"]["id"],
                              "version": body["prompt"].get("version"),
                              "variables": body["prompt"].get("variables")}
        body["metadata"] = _validate_metadata(body.get("metadata"))
        tools = self._normalize_response_tools(body.get("tools"))
        background = bool(body.get("background"))
        stream = bool(body.get("stream"))
        stored, texts, outputs = self._response_input_items(body.get("input"), "input")
        conv_ref = body.get("conversation")
        _expect_type(conv_ref, "conversation", ("string", "object"))
        conv_id = conv_ref.get("id") if isinstance(conv_ref, dict) else conv_ref
        if conv_ref is not None and not isinstance(conv_id, str):
            raise ApiError(400, "Missing required parameter: 'conversation.id'.",
                           param="conversation.id", code="missing_required_parameter")
        if conv_id and body.get("previous_response_id"):
            raise ApiError(400, "Mutually exclusive parameters: Ensure you are only providing "
                           "one of: 'previous_response_id' or 'conversation'.",
                           param="conversation", code="mutually_exclusive_parameters")
        message_ids = self._runlane_message_ids(body["metadata"], len(texts))

        with self._lock:
            overlap = False
            if conv_id:
                dialog = self._conversations.get(conv_id)
                if dialog is None:
                    raise ApiError(404, "Conversation with id '%s' not found." % conv_id,
                                   param="conversation")
                if dialog.running and not self._config["conversation_lock"]:
                    overlap = True  # counted below, once the create is accepted
                elif dialog.active_response is not None:
                    self._reject(dialog.key, ApiError(400, LOCKED_MESSAGE, param="conversation",
                                                      code="conversation_locked"))
            elif body.get("previous_response_id"):
                prev = self._responses.get(body["previous_response_id"])
                if prev is None:
                    raise ApiError(404, "Previous response with id '%s' not found."
                                   % body["previous_response_id"], param="previous_response_id")
                dialog = prev.dialog
            else:
                dialog = None  # a one-off response: its own dialog, keyed by its id below

            answered = dict(outputs)
            pending = dialog.pending_calls if dialog else {}
            for call_id, _ in outputs:
                if call_id not in pending:
                    raise ApiError(400, "No tool call found for function call output with "
                                   "call_id %s." % call_id, param="input")
            for call_id in pending:
                if call_id not in answered:
                    raise ApiError(400, "No tool output found for function call %s." % call_id,
                                   param="input")

            resp = _Response(self._lock, body, conv_id, background, tools)
            if dialog is None:
                dialog = _Dialog(resp.id)
            resp.dialog = dialog
            resp.input_items = stored
            tool_results = list(dialog.tool_results) + [
                (pending[c][0], answered[c]) for c in pending]
            dialog.tool_results = tool_results
            dialog.pending_calls = {}
            dialog.turn_texts = dialog.turn_texts + texts
            new_texts = dialog.fresh_texts + texts
            # A create that brings no text after a [[fail-always]] failure is its retry.
            resp.plan_inputs = (list(dialog.turn_texts), new_texts, tool_results,
                                dialog.failing_always and not new_texts and not outputs)
            dialog.failing_always = False
            dialog.fresh_texts = []
            self._responses[resp.id] = resp
            if conv_id:
                if overlap:
                    self._jentry(dialog.key)["overlaps"] += 1
                dialog.active_response = resp.id
                dialog.running.add(resp.id)
                dialog.items.extend(stored)
            for text, mid in zip(texts, message_ids):
                self._journal_message(dialog.key, text, mid)
            self._journal_turn_start(resp, dialog.key, len(stored))

            self._emit_response(resp, "response.created", response=resp.public())
            if background:
                self._emit_response(resp, "response.queued", response=resp.public())
                self._at(self._config["queue_ms"] / 1000.0,
                         self._guarded(resp, self._response_start), resp)
            else:
                self._response_start(resp)
            if stream:
                return _Stream(resp, 0, assistants=False)
            if background:
                return _Json(resp.public())
            return _Wait(resp)

    @staticmethod
    def _runlane_message_ids(metadata, count):
        """runlane tags a turn's user messages in metadata, since Responses input items carry
        none: `runlane_message_ids` (comma-separated or a JSON array, one id per user message in
        input order) or `runlane_message_id` (one message)."""
        metadata = metadata or {}
        raw = metadata.get("runlane_message_ids")
        ids = []
        if raw:
            try:
                parsed = json.loads(raw)
                ids = [str(x) for x in parsed] if isinstance(parsed, list) else [str(parsed)]
            except ValueError:
                ids = [x.strip() for x in raw.split(",") if x.strip()]
        elif metadata.get("runlane_message_id"):
            ids = [metadata["runlane_message_id"]]
        return (ids + [None] * count)[:count]

    # An event's data is serialized at once, under the lock: the state objects it names need no
    # copy (later changes cannot reach an event already in the log).
    def _emit_response(self, resp, event_type, **fields):
        data = {"type": event_type, "sequence_number": resp.seq}
        data.update(fields)
        resp.seq += 1
        resp.events.append((event_type, _dumps(data),
                            event_type in RESPONSE_STREAM_END))
        resp.cond.notify_all()

    def _response_start(self, resp):
        resp.status = "in_progress"
        self._journal_turn_status(resp)
        self._emit_response(resp, "response.in_progress", response=resp.public())
        plan = _Plan(*resp.plan_inputs)
        latency = self._latency_s(plan)
        if plan.fail:
            self._at(latency, self._guarded(resp, self._response_fail), resp, plan)
        elif plan.calls:
            self._at(latency, self._guarded(resp, self._response_calls), resp, plan)
        else:
            self._response_text(resp, plan, latency)

    def _response_text(self, resp, plan, latency):
        item = {"id": _new_id("msg"), "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        resp.output.append(item)
        self._emit_response(resp, "response.output_item.added", output_index=0,
                            item=item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        self._emit_response(resp, "response.content_part.added", item_id=item["id"],
                            output_index=0, content_index=0, part=part)
        chunks = _chunks(plan.reply, self._config["delta_count"])

        def delta(chunk):
            part["text"] += chunk
            self._emit_response(resp, "response.output_text.delta", item_id=item["id"],
                                output_index=0, content_index=0, delta=chunk, logprobs=[])

        def finish():
            part["text"] = plan.reply
            self._emit_response(resp, "response.output_text.done", item_id=item["id"],
                                output_index=0, content_index=0, text=plan.reply, logprobs=[])
            self._emit_response(resp, "response.content_part.done", item_id=item["id"],
                                output_index=0, content_index=0, part=part)
            item["status"] = "completed"
            self._emit_response(resp, "response.output_item.done", output_index=0,
                                item=item)
            resp.dialog.close_turn()
            self._response_complete(resp, plan.reply)

        for k, chunk in enumerate(chunks):
            self._at(latency * (k + 1) / (len(chunks) + 1), self._guarded(resp, delta), chunk)
        self._at(latency, self._guarded(resp, finish))

    def _response_calls(self, resp, plan):
        for name, arguments in plan.calls:
            index = len(resp.output)
            item = {"id": _new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": _new_id("call"), "name": name, "arguments": ""}
            resp.output.append(item)
            self._emit_response(resp, "response.output_item.added", output_index=index,
                                item=item)
            self._emit_response(resp, "response.function_call_arguments.delta",
                                item_id=item["id"], output_index=index, delta=arguments)
            item["arguments"] = arguments
            self._emit_response(resp, "response.function_call_arguments.done",
                                item_id=item["id"], name=name, output_index=index,
                                arguments=arguments)
            item["status"] = "completed"
            self._emit_response(resp, "response.output_item.done", output_index=index,
                                item=item)
            resp.dialog.pending_calls[item["call_id"]] = (name, arguments)
        # A response that asks for tool calls is complete: the conversation is free, and the
        # next request must carry a function_call_output for each call.
        self._response_complete(resp, "")

    def _response_complete(self, resp, reply):
        resp.status = "completed"
        resp.completed_at = _now()
        in_tokens = _words(resp.plan_inputs[0])
        out_tokens = _words([reply])
        resp.usage = {"input_tokens": in_tokens,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": out_tokens,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": in_tokens + out_tokens}
        resp.journal_entry["output_text"] = reply
        self._response_finish(resp)
        if resp.conversation_id:
            resp.dialog.items.extend(copy.deepcopy(resp.output))
        self._emit_response(resp, "response.completed", response=resp.public())

    def _response_fail(self, resp, plan):
        resp.status = "failed"
        resp.completed_at = None
        marker = FAIL_ALWAYS if plan.fail_always else "[[fail]]"
        resp.error = {"code": "server_error",
                      "message": "The model failed to produce a response (%s marker)." % marker}
        if plan.fail_always:
            resp.dialog.close_turn()  # never answered: the next batch's turn starts afresh
            resp.dialog.failing_always = True
        elif not self._config["fail_answered_later"]:
            resp.dialog.close_turn()
        self._response_finish(resp)
        self._emit_response(resp, "response.failed", response=resp.public())

    def _response_finish(self, resp):
        """Journal the end and free the conversation's lock."""
        self._journal_turn_status(resp)
        conv = self._conversations.get(resp.conversation_id or "")
        if conv is not None:
            conv.running.discard(resp.id)
            if conv.active_response == resp.id:
                conv.active_response = None

    def api_get_response(self, req):
        with self._lock:
            resp = self._get_response(req.params["response_id"])
            if req.query.get("stream") == "true":
                if not resp.background:
                    raise ApiError(400, "This response cannot be streamed because it was not "
                                   "created with background=true.", param="stream")
                try:
                    after = int(req.query.get("starting_after", -1))
                except ValueError:
                    raise ApiError(400, "Invalid 'starting_after': expected an integer.",
                                   param="starting_after", code="invalid_type")
                return _Stream(resp, after + 1, assistants=False)
            return _Json(resp.public(), headers=self._poll_header(resp.status))

    def _poll_header(self, status):
        if status in ("queued", "in_progress", "cancelling"):
            return {"openai-poll-after-ms": str(self._config["poll_after_ms"])}
        return {}

    def api_cancel_response(self, req):
        with self._lock:
            resp = self._get_response(req.params["response_id"])
            if not resp.background:
                raise ApiError(400, "Cannot cancel a synchronous response.")
            if resp.status in ("queued", "in_progress"):
                resp.token += 1
                resp.status = "cancelled"
                for item in resp.output:
                    if item["status"] == "in_progress":
                        item["status"] = "incomplete"
                resp.dialog.close_turn()
                self._response_finish(resp)
                resp.end_stream()
            # Cancelling a finished background response is a no-op that returns it.
            return _Json(resp.public())

    def api_list_input_items(self, req):
        with self._lock:
            resp = self._get_response(req.params["response_id"])
            return _Json(self._paginate(resp.input_items, req.query))

    # =========================================================================================
    # Assistants v2: threads, messages, runs

    def _get_thread(self, thread_id):
        thread = self._threads_by_id.get(thread_id)
        if thread is None:
            raise ApiError(404, "No thread found with id '%s'." % thread_id)
        return thread

    def _get_run(self, thread, run_id):
        run = self._runs.get(run_id)
        if run is None or run.thread is not thread:
            raise ApiError(404, "No run found with id '%s'." % run_id)
        return run

    @staticmethod
    def _parse_message_request(msg, param):
        """Validate a CreateMessageRequest; return (role, text, content parts, metadata, atts)."""
        _expect_type(msg, param, ("object",), nullable=False)
        _reject_unknown(msg, MESSAGE_CREATE_FIELDS, assistants=True)
        role = msg.get("role")
        if role not in ("user", "assistant"):
            if role is None:
                raise ApiError(400, "Missing required parameter: '%s.role'." % param,
                               param=param + ".role", code="missing_required_parameter")
            raise ApiError(400, "Invalid value: '%s'. Supported values are: 'user' and "
                           "'assistant'." % role, param=param + ".role", code="invalid_value")
        content = msg.get("content")
        if content is None:
            raise ApiError(400, "Missing required parameter: '%s.content'." % param,
                           param=param + ".content", code="missing_required_parameter")
        _expect_type(content, param + ".content", ("string", "array"), nullable=False)
        if isinstance(content, str):
            texts = [content]
        else:
            texts = [p.get("text", "") for p in content
                     if isinstance(p, dict) and p.get("type") == "text"]
        metadata = _validate_metadata(msg.get("metadata"), param + ".metadata")
        parts = [{"type": "text", "text": {"value": t, "annotations": []}} for t in texts]
        return role, "".join(texts), parts, metadata or {}, msg.get("attachments")

    def _add_message(self, thread, parsed, run_id=None, assistant_id=None):
        role, text, parts, metadata, attachments = parsed
        msg = {"id": _new_id("msg"), "object": "thread.message", "created_at": _now(),
               "thread_id": thread.id, "status": "completed", "incomplete_details": None,
               "completed_at": _now(), "incomplete_at": None, "role": role, "content": parts,
               "assistant_id": assistant_id, "run_id": run_id, "attachments": attachments or [],
               "metadata": metadata}
        thread.messages.append(msg)
        if role == "user":
            self._journal_message(thread.id, text, metadata.get("runlane_message_id"))
        return msg

    def api_create_thread(self, req):
        body = req.body
        _reject_unknown(body, THREAD_CREATE_FIELDS, assistants=True)
        with self._lock:
            return _Json(self._create_thread(body).public())

    def _create_thread(self, body):
        """Validate everything first, so that a bad message creates no thread at all."""
        metadata = _validate_metadata(body.get("metadata"))
        messages = body.get("messages") or []
        _expect_type(messages, "messages", ("array",))
        parsed = [self._parse_message_request(m, "messages[%d]" % i)
                  for i, m in enumerate(messages)]
        thread = _Thread(metadata, body.get("tool_resources"))
        self._threads_by_id[thread.id] = thread
        self._jentry(thread.id)
        for p in parsed:
            self._add_message(thread, p)
        return thread

    def api_get_thread(self, req):
        with self._lock:
            return _Json(self._get_thread(req.params["thread_id"]).public())

    def api_create_message(self, req):
        parsed = self._parse_message_request(req.body, "body")
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            if thread.active_run is not None:
                self._reject(thread.id, ApiError(
                    400, "Can't add messages to %s while a run %s is active."
                    % (thread.id, thread.active_run)))
            return _Json(copy.deepcopy(self._add_message(thread, parsed)))

    def api_list_messages(self, req):
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            messages = thread.messages
            if req.query.get("run_id"):
                messages = [m for m in messages if m["run_id"] == req.query["run_id"]]
            return _Json(self._paginate(messages, req.query))

    def api_get_message(self, req):
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            for msg in thread.messages:
                if msg["id"] == req.params["message_id"]:
                    return _Json(copy.deepcopy(msg))
            raise ApiError(404, "No message found with id '%s'." % req.params["message_id"])

    def _validate_run_body(self, body, allowed):
        _reject_unknown(body, allowed, assistants=True)
        if not body.get("assistant_id"):
            raise ApiError(400, "Missing required parameter: 'assistant_id'.",
                           param="assistant_id", code="missing_required_parameter")
        _expect_type(body.get("instructions"), "instructions", ("string",))
        _expect_type(body.get("additional_instructions"), "additional_instructions",
                     ("string",))
        body["metadata"] = _validate_metadata(body.get("metadata"))
        return self._normalize_run_tools(body.get("tools"))

    def api_create_run(self, req):
        body = req.body
        tools = self._validate_run_body(body, RUN_CREATE_FIELDS)
        extra = body.get("additional_messages") or []
        _expect_type(extra, "additional_messages", ("array",))
        parsed = [self._parse_message_request(m, "additional_messages[%d]" % i)
                  for i, m in enumerate(extra)]
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            if thread.active_run is not None:
                self._reject(thread.id, ApiError(
                    400, "Thread %s already has an active run %s."
                    % (thread.id, thread.active_run)))
            for p in parsed:
                self._add_message(thread, p)
            run = self._start_run(thread, body, tools)
            if body.get("stream"):
                return _Stream(run, 0, assistants=True)
            return _Json(run.public())

    def api_create_thread_and_run(self, req):
        body = req.body
        tools = self._validate_run_body(body, THREAD_AND_RUN_FIELDS)
        thread_body = body.get("thread") or {}
        _expect_type(thread_body, "thread", ("object",))
        _reject_unknown(thread_body, THREAD_CREATE_FIELDS, assistants=True)
        if body.get("tool_resources") is not None:
            thread_body = dict(thread_body, tool_resources=body["tool_resources"])
        with self._lock:
            thread = self._create_thread(thread_body)
            run = _Run(self._lock, thread, body, tools, self._config["run_expires_s"])
            # The stream of a create-thread-and-run opens with the new thread.
            run.events.append(("thread.created", _dumps(thread.public()), False))
            self._start_run(thread, body, tools, run)
            if body.get("stream"):
                return _Stream(run, 0, assistants=True)
            return _Json(run.public())

    def _start_run(self, thread, body, tools, run=None):
        run = run or _Run(self._lock, thread, body, tools, self._config["run_expires_s"])
        new = thread.messages[thread.consumed:]
        thread.consumed = len(thread.messages)
        run.texts = ["".join(p["text"]["value"] for p in m["content"])
                     for m in new if m["role"] == "user"]
        run.new_texts = list(run.texts)
        thread.close_turn()
        thread.runs.append(run)
        thread.active_run = run.id
        self._runs[run.id] = run
        self._journal_turn_start(run, thread.id, len(run.texts))
        self._emit_run(run, "thread.run.created")
        self._emit_run(run, "thread.run.queued")
        self._at(self._config["queue_ms"] / 1000.0, self._guarded(run, self._run_start), run)
        return run

    def _emit_run(self, run, event, data=None):
        if data is None:
            data = run.public()
        run.events.append((event, _dumps(data),
                           event in RUN_SEGMENT_END))
        run.cond.notify_all()

    def _set_run_status(self, run, status):
        run.status = status
        self._journal_turn_status(run)
        if status not in RUN_ACTIVE:
            run.expires_at = None
            if run.thread.active_run == run.id:
                run.thread.active_run = None

    def _new_step(self, run, step_type, details):
        run.step = {"id": _new_id("step"), "object": "thread.run.step", "created_at": _now(),
                    "assistant_id": run.assistant_id, "thread_id": run.thread.id,
                    "run_id": run.id, "type": step_type, "status": "in_progress",
                    "step_details": details, "last_error": None, "expired_at": None,
                    "cancelled_at": None, "failed_at": None, "completed_at": None,
                    "metadata": {}, "usage": None}
        self._emit_run(run, "thread.run.step.created", run.step)
        self._emit_run(run, "thread.run.step.in_progress", run.step)

    def _end_step(self, run, status):
        if run.step is None or run.step["status"] != "in_progress":
            return
        run.step["status"] = status
        run.step[{"completed": "completed_at", "cancelled": "cancelled_at",
                  "failed": "failed_at", "expired": "expired_at"}[status]] = _now()
        if status == "completed":
            run.step["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        self._emit_run(run, "thread.run.step.%s" % status, run.step)

    def _run_start(self, run):
        self._set_run_status(run, "in_progress")
        if run.started_at is None:
            run.started_at = _now()
        self._emit_run(run, "thread.run.in_progress")
        plan = _Plan(run.texts, run.new_texts, run.thread.tool_results)
        latency = self._latency_s(plan)
        if plan.fail:
            self._at(latency, self._guarded(run, self._run_fail), run)
        elif plan.calls:
            self._at(latency, self._guarded(run, self._run_require_action), run, plan)
        else:
            self._run_message(run, plan, latency)

    def _run_message(self, run, plan, latency):
        msg = {"id": _new_id("msg"), "object": "thread.message", "created_at": _now(),
               "thread_id": run.thread.id, "status": "in_progress", "incomplete_details": None,
               "completed_at": None, "incomplete_at": None, "role": "assistant", "content": [],
               "assistant_id": run.assistant_id, "run_id": run.id, "attachments": [],
               "metadata": {}}
        run.message = msg
        run.thread.messages.append(msg)
        run.thread.consumed = len(run.thread.messages)
        self._new_step(run, "message_creation",
                       {"type": "message_creation", "message_creation": {"message_id": msg["id"]}})
        self._emit_run(run, "thread.message.created", msg)
        self._emit_run(run, "thread.message.in_progress", msg)
        chunks = _chunks(plan.reply, self._config["delta_count"])

        def delta(chunk):
            if not msg["content"]:
                msg["content"].append({"type": "text", "text": {"value": "", "annotations": []}})
            msg["content"][0]["text"]["value"] += chunk
            self._emit_run(run, "thread.message.delta", {
                "id": msg["id"], "object": "thread.message.delta",
                "delta": {"content": [{"index": 0, "type": "text",
                                       "text": {"value": chunk, "annotations": []}}]}})

        def finish():
            msg["content"] = [{"type": "text", "text": {"value": plan.reply, "annotations": []}}]
            msg["status"] = "completed"
            msg["completed_at"] = _now()
            self._emit_run(run, "thread.message.completed", msg)
            self._end_step(run, "completed")
            run.completed_at = _now()
            prompt, completion = _words(run.texts), _words([plan.reply])
            run.usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}
            run.journal_entry["output_text"] = plan.reply
            run.thread.close_turn()
            self._set_run_status(run, "completed")
            self._emit_run(run, "thread.run.completed")

        for k, chunk in enumerate(chunks):
            self._at(latency * (k + 1) / (len(chunks) + 1), self._guarded(run, delta), chunk)
        self._at(latency, self._guarded(run, finish))

    def _run_require_action(self, run, plan):
        calls = [{"id": _new_id("call"), "type": "function",
                  "function": {"name": name, "arguments": arguments}}
                 for name, arguments in plan.calls]
        run.thread.pending_calls = {c["id"]: (c["function"]["name"], c["function"]["arguments"])
                                    for c in calls}
        self._new_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": dict(c["function"], output=None)} for c in calls]})
        run.required_action = {"type": "submit_tool_outputs",
                               "submit_tool_outputs": {"tool_calls": calls}}
        run.expires_at = _now() + int(self._config["run_expires_s"])
        self._set_run_status(run, "requires_action")
        self._emit_run(run, "thread.run.requires_action")
        self._at(self._config["run_expires_s"], self._guarded(run, self._run_expire), run)

    def _run_expire(self, run):
        if run.status != "requires_action":
            return
        run.required_action = None
        self._end_step(run, "expired")
        run.thread.close_turn()
        self._set_run_status(run, "expired")
        self._emit_run(run, "thread.run.expired")

    def _run_fail(self, run):
        run.last_error = {"code": "server_error",
                          "message": "The model failed to produce a response ([[fail]] marker)."}
        run.failed_at = _now()
        self._end_step(run, "failed")
        run.thread.close_turn()
        self._set_run_status(run, "failed")
        self._emit_run(run, "thread.run.failed")

    def api_list_runs(self, req):
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            return _Json(self._paginate([r.public() for r in thread.runs], req.query))

    def api_get_run(self, req):
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            run = self._get_run(thread, req.params["run_id"])
            return _Json(run.public(), headers=self._poll_header(run.status))

    def api_submit_tool_outputs(self, req):
        body = req.body
        _reject_unknown(body, SUBMIT_OUTPUTS_FIELDS, assistants=True)
        outputs = body.get("tool_outputs")
        if outputs is None:
            raise ApiError(400, "Missing required parameter: 'tool_outputs'.",
                           param="tool_outputs", code="missing_required_parameter")
        _expect_type(outputs, "tool_outputs", ("array",), nullable=False)
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            run = self._get_run(thread, req.params["run_id"])
            if run.status != "requires_action":
                raise ApiError(400, 'Runs in status "%s" do not accept tool outputs.'
                               % run.status)
            expected = list(thread.pending_calls)
            got = [o.get("tool_call_id") for o in outputs if isinstance(o, dict)]
            if len(got) != len(expected) or set(got) != set(expected):
                raise ApiError(400, "Expected tool outputs for call_ids %s, got %s"
                               % (json.dumps(expected), json.dumps(got)), param="tool_outputs")
            by_id = {o["tool_call_id"]: o.get("output") or "" for o in outputs}
            thread.tool_results = list(thread.tool_results) + [
                (thread.pending_calls[c][0], by_id[c]) for c in expected]
            for call in run.step["step_details"]["tool_calls"]:
                call["function"]["output"] = by_id[call["id"]]
            thread.pending_calls = {}
            start = len(run.events)
            self._end_step(run, "completed")
            run.required_action = None
            run.new_texts = []  # this phase only answers: the turn's markers are spent
            self._set_run_status(run, "queued")
            self._emit_run(run, "thread.run.queued")
            self._at(self._config["queue_ms"] / 1000.0, self._guarded(run, self._run_start),
                     run)
            if body.get("stream"):
                return _Stream(run, start, assistants=True)
            return _Json(run.public())

    def api_cancel_run(self, req):
        with self._lock:
            thread = self._get_thread(req.params["thread_id"])
            run = self._get_run(thread, req.params["run_id"])
            if run.status not in ("queued", "in_progress", "requires_action"):
                raise ApiError(400, "Cannot cancel run with status '%s'." % run.status)
            run.token += 1
            run.required_action = None
            self._set_run_status(run, "cancelling")
            self._emit_run(run, "thread.run.cancelling")
            # OpenAI confirms a cancel a moment later; until then the thread stays locked.
            self._at(max(self._config["queue_ms"], 1) / 1000.0,
                     self._guarded(run, self._run_cancelled), run)
            return _Json(run.public())

    def _run_cancelled(self, run):
        if run.message is not None and run.message["status"] == "in_progress":
            run.message.update(status="incomplete", incomplete_at=_now(),
                               incomplete_details={"reason": "run_cancelled"})
        self._end_step(run, "cancelled")
        run.cancelled_at = _now()
        run.thread.close_turn()
        self._set_run_status(run, "cancelled")
        self._emit_run(run, "thread.run.cancelled")


# ---------------------------------------------------------------------------------------------
# HTTP

_ROUTES = []  # (method, compiled path regex, Emulator method name, needs OpenAI-Beta)


def _route(method, pattern, name, beta=False):
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    _ROUTES.append((method, re.compile("^" + regex + "$"), name, beta))


_route("POST", "/conversations", "api_create_conversation")
_route("GET", "/conversations/{conversation_id}", "api_get_conversation")
_route("GET", "/conversations/{conversation_id}/items", "api_list_conversation_items")
_route("POST", "/conversations/{conversation_id}/items", "api_add_conversation_items")
_route("GET", "/conversations/{conversation_id}/items/{item_id}", "api_get_conversation_item")
_route("POST", "/responses", "api_create_response")
_route("GET", "/responses/{response_id}", "api_get_response")
_route("POST", "/responses/{response_id}/cancel", "api_cancel_response")
_route("GET", "/responses/{response_id}/input_items", "api_list_input_items")
_route("POST", "/threads", "api_create_thread", beta=True)
_route("POST", "/threads/runs", "api_create_thread_and_run", beta=True)
_route("GET", "/threads/{thread_id}", "api_get_thread", beta=True)
_route("POST", "/threads/{thread_id}/messages", "api_create_message", beta=True)
_route("GET", "/threads/{thread_id}/messages", "api_list_messages", beta=True)
_route("GET", "/threads/{thread_id}/messages/{message_id}", "api_get_message", beta=True)
_route("POST", "/threads/{thread_id}/runs", "api_create_run", beta=True)
_route("GET", "/threads/{thread_id}/runs", "api_list_runs", beta=True)
_route("GET", "/threads/{thread_id}/runs/{run_id}", "api_get_run", beta=True)
_route("POST", "/threads/{thread_id}/runs/{run_id}/cancel", "api_cancel_run", beta=True)
_route("POST", "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
       "api_submit_tool_outputs", beta=True)


class _Request:
    def __init__(self, body, query, params):
        self.body, self.query, self.params = body, query, params


class _Server(ThreadingHTTPServer):
    """One thread per connection, as ThreadingHTTPServer, but the threads are kept and reused,
    and the accepting thread never waits for one to start: it queues the connection for an idle
    thread and starts a new one only when none is idle.  (Thread.start() waits until the new
    thread runs; with thousands of busy threads that wait is what bounded the accept rate.)"""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096  # benchmarks open many connections at once
    idle_thread_s = 60.0       # an idle connection thread exits after this

    def __init__(self, address, handler, emulator):
        self.emulator = emulator
        self._jobs = queue.SimpleQueue()
        self._idle = 0  # threads waiting on _jobs, not yet claimed by a queued connection
        self._idle_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._idle_lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((request, client_address))
        if spawn:
            threading.Thread(target=self._connection_thread, name="emulator-conn",
                             daemon=True).start()

    def _connection_thread(self):
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_thread_s)
            except queue.Empty:
                with self._idle_lock:
                    if self._idle > 0:  # still unclaimed: retire
                        self._idle -= 1
                        return
                continue  # claimed by a connection being queued right now
            if job is None:
                return
            self.process_request_thread(*job)
            with self._idle_lock:
                self._idle += 1

    def server_close(self):
        super().server_close()
        with self._idle_lock:
            n, self._idle = self._idle, 0
        for _ in range(n):
            self._jobs.put(None)


class _ConnectionGone(Exception):
    """The client went away, or a fault cut the connection on purpose."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming
    # Answers go out in one write each (head and body together), but a client's delayed ACK
    # must never hold back a small SSE chunk: no Nagle.
    disable_nagle_algorithm = True

    def version_string(self):
        return "runlane-openai-emulator"

    def setup(self):
        super().setup()
        em = self.server.emulator
        with em._lock:
            em._connections.add(self.connection)

    def finish(self):
        em = self.server.emulator
        with em._lock:
            em._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, fmt, *args):  # quiet: stdout carries only EMULATOR_PORT=...
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    # -- dispatch ---------------------------------------------------------------------------

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method):
        em = self.server.emulator
        self._request_id = "req_" + uuid.uuid4().hex
        self._started = time.monotonic()
        self._drop = False
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            try:
                raw = self._read_body()
            except ValueError:  # a malformed chunked body: the connection cannot be reused
                self.close_connection = True
                self._write_json(400, ApiError(400, "Malformed request body.").body())
                return
            if path.startswith("/_emulator/") or path == "/_emulator":
                self._write_json(*self._control(method, path, query, raw))
                return
            entry = em._record_request(method, path, dict(self.headers.items()), raw)
            fault = em._pick_fault(method, path, entry)
            if fault == "reset":
                em._request_done(entry)
                self._cut_connection()
            if fault == "slow":
                time.sleep(em.config()["fault_slow_ms"] / 1000.0)
            elif fault == "drop":
                self._drop = True  # the request takes effect; its answer is lost on the way
            reply = self._dispatch(method, path, query, raw, fault)
            if fault == "hold":
                # the request took effect; its answer waits fault_slow_ms (a client killed
                # meanwhile never learns the result: e.g. a created conversation's id)
                time.sleep(em.config()["fault_slow_ms"] / 1000.0)
            with em._lock:
                entry["status"] = reply.status if isinstance(reply, _Json) else 200
            em._request_done(entry)
            self._send(reply)
        except _ConnectionGone:
            self.close_connection = True

    def _dispatch(self, method, path, query, raw, fault):
        em = self.server.emulator
        api_path = path[3:] if path.startswith("/v1/") else path
        try:
            if fault == "429":
                ms = em.config()["retry_after_ms"]
                raise ApiError(429, "Rate limit reached for requests on requests per min (RPM): "
                               "Limit 500, Used 500, Requested 1. Please try again in %dms. "
                               "Visit https://platform.openai.com/account/rate-limits to learn "
                               "more." % ms, type_="requests", code="rate_limit_exceeded",
                               headers={"Retry-After": str(max(1, math.ceil(ms / 1000.0))),
                                        "retry-after-ms": str(ms)})
            if fault == "500":
                raise ApiError(500, "The server had an error while processing your request. "
                               "Sorry about that!", type_="server_error")
            with em._lock:
                em._check_auth(self.headers)
            for route_method, regex, name, beta in _ROUTES:
                m = regex.match(api_path)
                if m and route_method == method:
                    break
            else:
                raise ApiError(404, "Invalid URL (%s %s)" % (method, path))
            if beta:
                em._check_beta(self.headers)
            body = {}
            if method == "POST" and raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "We could not parse the JSON body of your request. "
                                   "(HINT: This likely means you aren't using your HTTP "
                                   "library correctly. The OpenAI API expects a JSON payload, "
                                   "but what was sent was not valid JSON.)")
                if not isinstance(body, dict):
                    raise ApiError(400, "Invalid type for request body: expected an object.")
            return getattr(em, name)(_Request(body, query, m.groupdict()))
        except ApiError as e:
            return _Json(e.body(), e.status, e.headers)
        except Exception:  # an emulator bug: say so loudly, but answer like OpenAI would
            traceback.print_exc()
            return _Json(ApiError(500, "The server had an error while processing your "
                                  "request. Sorry about that!", type_="server_error").body(), 500)

    def _control(self, method, path, query, raw):
        """The /_emulator/ endpoints: no auth, no faults, not journaled."""
        em = self.server.emulator
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}
        name = path[len("/_emulator/"):]
        try:
            if (method, name) == ("GET", "journal"):
                return 200, em.journal()
            if (method, name) == ("GET", "requests"):
                return 200, em.requests(int(query.get("limit", 50)))
            if (method, name) == ("GET", "config"):
                return 200, em.config()
            if (method, name) == ("POST", "config"):
                return 200, em.configure(**body)
            if (method, name) == ("POST", "reset"):
                em.reset()
                return 200, {"ok": True}
            if (method, name) == ("GET", "faults"):
                with em._lock:
                    return 200, copy.deepcopy(em._forced_faults)
            if (method, name) == ("POST", "faults"):
                return 200, em.force_fault(body.get("kind"), body.get("count", 1),
                                           body.get("method"), body.get("path"))
            if (method, name) == ("GET", "health"):
                return 200, {"ok": True}
        except (ValueError, TypeError) as e:
            return 400, {"error": str(e)}
        return 404, {"error": "unknown control endpoint %s %s" % (method, path)}

    # -- writing ----------------------------------------------------------------------------

    def _common_headers(self):
        self.send_header("x-request-id", self._request_id)
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms",
                         str(int((time.monotonic() - self._started) * 1000)))

    def _cut_connection(self):
        """Close with a TCP reset and no answer, as a dying proxy or server would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _ConnectionGone()

    def _write(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            raise _ConnectionGone()

    def _write_json(self, status, obj, headers=None):
        if self._drop:
            self._cut_connection()
        data = _dumps(obj).encode()
        try:
            self.send_response(status)
            self._common_headers()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            # end_headers() without its flush: the head and the body go out in one write.
            self._headers_buffer.append(b"\r\n")
        except OSError:
            raise _ConnectionGone()
        self._write(self._take_head() + data)

    def _take_head(self):
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        return head

    def _send(self, reply):
        em = self.server.emulator
        if isinstance(reply, _Json):
            self._write_json(reply.status, reply.obj, reply.headers)
        elif isinstance(reply, _Wait):
            resp = reply.turn
            with em._lock:
                # Every status change notifies resp.cond, and so does stop(): no polling.
                while resp.status not in RESPONSE_TERMINAL and not em._stopping:
                    resp.cond.wait()
                obj = resp.public()
            self._write_json(200, obj)
        else:
            self._stream(reply)

    def _stream(self, reply):
        em, turn = self.server.emulator, reply.turn
        try:
            self.send_response(200)
            self._common_headers()
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self._headers_buffer.append(b"\r\n")
        except OSError:
            raise _ConnectionGone()
        # Events waiting together go out in one write (the head with the first of them, the
        # last chunk with the final ones): one send per wakeup, not one per event.
        out = [self._take_head()]
        index, sent, ended = reply.start, 0, False
        while not ended:
            if out:
                self._write(b"".join(out))
                out = []
            with em._lock:
                # Every new event notifies turn.cond, and so do stop() and reset(): a stream
                # sleeps until its turn moves, without periodic wakeups.
                while index >= len(turn.events) and not em._stopping:
                    turn.cond.wait()
                if em._stopping:
                    break
                batch = turn.events[index:]
            for name, data, ends in batch:
                index += 1
                if name is not None:
                    if self._drop and sent >= 2:  # the "drop" fault: cut mid-stream
                        if out:
                            self._write(b"".join(out))
                        self._cut_connection()
                    out.append(self._chunk_bytes("event: %s\ndata: %s\n\n" % (name, data)))
                    sent += 1
                if ends:
                    ended = True
                    break
        if ended and reply.assistants:
            out.append(self._chunk_bytes("event: done\ndata: [DONE]\n\n"))
        out.append(b"0\r\n\r\n")
        self._write(b"".join(out))

    @staticmethod
    def _chunk_bytes(text):
        data = text.encode()
        return b"%x\r\n%s\r\n" % (len(data), data)


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="OpenAI stand-in for runlane tests.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-kinds", default=",".join(DEFAULT_FAULT_KINDS),
                        help="comma-separated, of: " + ",".join(ALL_FAULT_KINDS))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--journal", default=None, help="write the journal here at exit")
    parser.add_argument("--request-log", default=None,
                        help="append every API request here, one JSON line each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config key (see DEFAULT_CONFIG), e.g. conversation_lock=0")
    args = parser.parse_args(argv)
    try:
        em = Emulator(api_key=args.api_key, latency_ms=args.latency_ms,
                      fault_rate=args.fault_rate, fault_kinds=args.fault_kinds.split(","),
                      seed=args.seed, journal_path=args.journal, host=args.host, port=args.port,
                      request_log_path=args.request_log,
                      **dict(kv.partition("=")[::2] for kv in args.set))
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    threading.stack_size(512 * 1024)  # thousands of streaming connections, one thread each
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    em.start()
    print("EMULATOR_PORT=%d" % em.port, flush=True)
    while not done.wait(3600):
        pass
    em.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
