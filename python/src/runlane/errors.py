"""The exception hierarchy, mapped from the core's ``runlane_err_t`` codes.

Every failing core call raises the subclass of :class:`RunlaneError` that
matches its code, with the core's own message (``runlane_error_last()``),
``.code`` (the negative C value), ``.name`` (e.g. ``"RUNLANE_ERR_STALE"``) and
``.retriable`` (retrying the same call later may succeed).

Some classes also derive from the matching builtin, so generic code keeps
working: :class:`InvalidArgumentError` is a ``ValueError``,
:class:`ArgumentTypeError` a ``TypeError``, :class:`TimeoutError` the builtin
``TimeoutError``, :class:`NotFoundError` a ``LookupError``,
:class:`NoMemoryError` a ``MemoryError``.
"""

from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Tuple, Type

from ._native import ffi, lib

__all__ = [
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
    "error_from_code",
]


class RunlaneError(Exception):
    """Base of every error raised by runlane.

    Attributes: ``code`` (int, a ``RUNLANE_ERR_*`` value), ``name`` (its
    symbolic name), ``message`` (the core's detail), ``retriable`` (bool).
    """

    #: default code of the class (overridden per subclass)
    default_code: int = lib.RUNLANE_ERR_INTERNAL

    def __init__(
        self, message: str = "", code: Optional[int] = None, retriable: Optional[bool] = None
    ) -> None:
        if code is None:
            code = self.default_code
        if not message:
            message = ffi.string(lib.runlane_err2str(code)).decode("utf-8", "replace")
        super().__init__(message)
        self.message: str = message
        self.code: int = int(code)
        self.name: str = ffi.string(lib.runlane_err2name(code)).decode("ascii", "replace")
        self.retriable: bool = bool(retriable) if retriable is not None else False

    def __repr__(self) -> str:
        return "%s(%r, code=%s, retriable=%s)" % (
            type(self).__name__,
            self.message,
            self.name,
            self.retriable,
        )

    def __reduce__(self) -> Tuple[Any, ...]:  # picklable across processes
        return (_rebuild, (type(self), self.message, self.code, self.retriable))


def _rebuild(cls: Type["RunlaneError"], message: str, code: int, retriable: bool) -> "RunlaneError":
    return cls(message, code, retriable)


class ConfigError(RunlaneError):
    """A configuration key is unknown or its value is invalid."""

    default_code = lib.RUNLANE_ERR_INVALID_VALUE


class UnknownKeyError(ConfigError):
    """RUNLANE_ERR_UNKNOWN_KEY: no such configuration key."""

    default_code = lib.RUNLANE_ERR_UNKNOWN_KEY


class InvalidValueError(ConfigError, ValueError):
    """RUNLANE_ERR_INVALID_VALUE: a configuration value is out of range."""

    default_code = lib.RUNLANE_ERR_INVALID_VALUE


class ConfigTypeError(InvalidValueError, TypeError):
    """A configuration value of the wrong Python type (checked before the core)."""


class InvalidArgumentError(RunlaneError, ValueError):
    """RUNLANE_ERR_INVALID_ARG: a bad argument (empty id, bad UTF-8, ...)."""

    default_code = lib.RUNLANE_ERR_INVALID_ARG


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong Python type (checked before the core)."""


class NoMemoryError(RunlaneError, MemoryError):
    """RUNLANE_ERR_NOMEM."""

    default_code = lib.RUNLANE_ERR_NOMEM


class StoreError(RunlaneError):
    """RUNLANE_ERR_STORE: the store is unreachable or failed (retriable)."""

    default_code = lib.RUNLANE_ERR_STORE


class StaleLeaseError(RunlaneError):
    """RUNLANE_ERR_STALE: the lease was lost; another worker may run the batch."""

    default_code = lib.RUNLANE_ERR_STALE


class NotFoundError(RunlaneError, LookupError):
    """RUNLANE_ERR_NOT_FOUND: no such batch, message or dead letter."""

    default_code = lib.RUNLANE_ERR_NOT_FOUND


class BusyError(RunlaneError):
    """RUNLANE_ERR_BUSY: the conversation is busy (provider lock)."""

    default_code = lib.RUNLANE_ERR_BUSY


class TimeoutError(RunlaneError, builtins.TimeoutError):  # noqa: A001 - deliberate
    """RUNLANE_ERR_TIMEOUT (also a builtin ``TimeoutError``)."""

    default_code = lib.RUNLANE_ERR_TIMEOUT


class TooLargeError(RunlaneError):
    """RUNLANE_ERR_TOO_LARGE: a message or payload over its limit."""

    default_code = lib.RUNLANE_ERR_TOO_LARGE


class StateError(RunlaneError):
    """RUNLANE_ERR_STATE: not allowed in the current state."""

    default_code = lib.RUNLANE_ERR_STATE


class UnsupportedError(RunlaneError):
    """RUNLANE_ERR_UNSUPPORTED: not supported by this build or backend."""

    default_code = lib.RUNLANE_ERR_UNSUPPORTED


class HTTPError(RunlaneError):
    """RUNLANE_ERR_HTTP: HTTP transport failure."""

    default_code = lib.RUNLANE_ERR_HTTP


class ProviderError(RunlaneError):
    """RUNLANE_ERR_PROVIDER: the provider (or the host's handler) failed."""

    default_code = lib.RUNLANE_ERR_PROVIDER


class ClosedError(RunlaneError):
    """RUNLANE_ERR_DESTROYED: the queue was closed (or belongs to the parent
    process after a fork)."""

    default_code = lib.RUNLANE_ERR_DESTROYED


class InternalError(RunlaneError):
    """RUNLANE_ERR_INTERNAL: a bug in runlane; please report it."""

    default_code = lib.RUNLANE_ERR_INTERNAL


class NonRetriableError(Exception):
    """Raise from a batch handler to fail the batch without a retry: it is
    dead-lettered at once with this message. Any other exception fails the
    attempt and the batch is retried after a backoff."""


_BY_CODE: Dict[int, Type[RunlaneError]] = {
    lib.RUNLANE_ERR_INVALID_ARG: InvalidArgumentError,
    lib.RUNLANE_ERR_UNKNOWN_KEY: UnknownKeyError,
    lib.RUNLANE_ERR_INVALID_VALUE: InvalidValueError,
    lib.RUNLANE_ERR_NOMEM: NoMemoryError,
    lib.RUNLANE_ERR_STORE: StoreError,
    lib.RUNLANE_ERR_STALE: StaleLeaseError,
    lib.RUNLANE_ERR_NOT_FOUND: NotFoundError,
    lib.RUNLANE_ERR_BUSY: BusyError,
    lib.RUNLANE_ERR_TIMEOUT: TimeoutError,
    lib.RUNLANE_ERR_TOO_LARGE: TooLargeError,
    lib.RUNLANE_ERR_STATE: StateError,
    lib.RUNLANE_ERR_UNSUPPORTED: UnsupportedError,
    lib.RUNLANE_ERR_HTTP: HTTPError,
    lib.RUNLANE_ERR_PROVIDER: ProviderError,
    lib.RUNLANE_ERR_DESTROYED: ClosedError,
    lib.RUNLANE_ERR_INTERNAL: InternalError,
}


def error_class(code: int) -> Type[RunlaneError]:
    """The exception class of a core error code (RunlaneError if unknown)."""
    return _BY_CODE.get(int(code), RunlaneError)


def error_from_code(
    code: int, message: str = "", retriable: Optional[bool] = None
) -> RunlaneError:
    """Builds the exception for ``code``; the default of ``retriable`` is the
    core's view: store, HTTP and timeout trouble are retriable."""
    if retriable is None:
        retriable = int(code) in (
            lib.RUNLANE_ERR_STORE,
            lib.RUNLANE_ERR_TIMEOUT,
            lib.RUNLANE_ERR_BUSY,
            lib.RUNLANE_ERR_HTTP,
        )
    return error_class(code)(message, code, retriable)


def last_error(code: int) -> RunlaneError:
    """The calling thread's last core error, as an exception (call right after
    the failing C call, on the same thread)."""
    err = lib.runlane_error_last()
    last_code = lib.runlane_error_code(err)
    message = ffi.string(lib.runlane_error_message(err)).decode("utf-8", "replace")
    retriable: Optional[bool] = bool(lib.runlane_error_retriable(err))
    if last_code != code:
        # The detail belongs to another call: keep only the code's text.
        message, retriable = "", None
    if not message:
        message = ffi.string(lib.runlane_err2str(code)).decode("utf-8", "replace")
        return error_from_code(code, message, retriable)
    return error_class(code)(message, code, retriable)


def check(rc: int) -> None:
    """Raises the exception for a non-zero ``runlane_err_t``."""
    if rc != 0:
        raise last_error(rc)
