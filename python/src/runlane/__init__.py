"""runlane: one lane per conversation — batched, locked, exactly-once turns.

Python binding of librunlane (the C core is compiled into ``runlane._native``).

- :class:`AssistantMessageQueue`: the synchronous queue (threads).
- :class:`runlane.aio.AssistantMessageQueue`: the asyncio queue (event fd).
- Exceptions: :class:`RunlaneError` and its subclasses (``runlane.errors``).
- Configuration: every key of :func:`config_properties` is a keyword argument
  of the queues, dots replaced by underscores (typed: :class:`Options`).

Logging goes to the ``runlane`` logger.
"""

from __future__ import annotations

import logging as _logging
import os as _os
from typing import Dict, FrozenSet

from ._native import ffi as _ffi, lib as _lib
from ._base import (
    EVENT_CLASSES,
    EVENT_TYPES,
    Batch,
    BatchEvent,
    CompletedEvent,
    DeadEvent,
    DeadLetter,
    DeadMessage,
    DeltaEvent,
    Enqueued,
    ErrorEvent,
    Event,
    EventName,
    FailedEvent,
    Health,
    LeaseLostEvent,
    Message,
    NewMessage,
    RunStartedEvent,
    Status,
    StoppedEvent,
    ToolCall,
    ToolCallsEvent,
)
from ._options import Options
from .config import Property, properties as config_properties, property_names as config_keys
from .errors import (
    ArgumentTypeError,
    BusyError,
    ClosedError,
    ConfigError,
    ConfigTypeError,
    HTTPError,
    InternalError,
    InvalidArgumentError,
    InvalidValueError,
    NoMemoryError,
    NonRetriableError,
    NotFoundError,
    ProviderError,
    RunlaneError,
    StaleLeaseError,
    StateError,
    StoreError,
    TimeoutError,
    TooLargeError,
    UnknownKeyError,
    UnsupportedError,
)
from .queue import AssistantMessageQueue
from . import aio  # noqa: E402  (runlane.aio.AssistantMessageQueue)

_logging.getLogger("runlane").addHandler(_logging.NullHandler())

#: Version of the loaded core, e.g. "0.1.0" (the package has the same).
__version__: str = _ffi.string(_lib.runlane_version_str()).decode("ascii")

#: ABI numbers of the header the module was compiled against.
VERSION_NUM: int = _lib.RUNLANE_VERSION_NUM

_FEATURES: Dict[str, int] = {
    "redis": _lib.RUNLANE_FEATURE_REDIS,
    "redis_tls": _lib.RUNLANE_FEATURE_REDIS_TLS,
    "http": _lib.RUNLANE_FEATURE_HTTP,
    "http_tls": _lib.RUNLANE_FEATURE_HTTP_TLS,
    "cluster": _lib.RUNLANE_FEATURE_CLUSTER,
}


def version() -> int:
    """Version of the loaded core as major*10000 + minor*100 + patch."""
    return int(_lib.runlane_version())


def features() -> FrozenSet[str]:
    """Features compiled into the core: redis, redis_tls, http, http_tls, cluster."""
    bits = _lib.runlane_features()
    return frozenset(name for name, bit in _FEATURES.items() if bits & bit)


def get_include() -> str:
    """Directory holding the ``runlane.h`` this module was built from."""
    return _os.path.join(_os.path.dirname(__file__), "include")


__all__ = [
    "AssistantMessageQueue",
    "aio",
    "Batch",
    "Message",
    "Event",
    "ToolCall",
    "Enqueued",
    "Health",
    "EVENT_TYPES",
    "EVENT_CLASSES",
    "EventName",
    "BatchEvent",
    "RunStartedEvent",
    "DeltaEvent",
    "ToolCallsEvent",
    "CompletedEvent",
    "FailedEvent",
    "DeadEvent",
    "ErrorEvent",
    "LeaseLostEvent",
    "StoppedEvent",
    "Status",
    "DeadLetter",
    "DeadMessage",
    "NewMessage",
    "Options",
    "Property",
    "config_properties",
    "config_keys",
    "version",
    "features",
    "get_include",
    "RunlaneError",
    "ConfigError",
    "UnknownKeyError",
    "InvalidValueError",
    "ConfigTypeError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "NoMemoryError",
    "StoreError",
    "StaleLeaseError",
    "NotFoundError",
    "BusyError",
    "TimeoutError",
    "TooLargeError",
    "StateError",
    "UnsupportedError",
    "HTTPError",
    "ProviderError",
    "ClosedError",
    "InternalError",
    "NonRetriableError",
]
