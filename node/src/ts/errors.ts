/**
 * Typed errors, mapped from the core's codes (runlane_err_t) and the detail
 * of runlane_error_last(): one class per code, under RunlaneError.
 */

/** The core's error codes (values fixed forever by runlane.h). */
export enum ErrorCode {
  OK = 0,
  INVALID_ARG = -1,
  UNKNOWN_KEY = -2,
  INVALID_VALUE = -3,
  NOMEM = -4,
  STORE = -5,
  STALE = -6,
  NOT_FOUND = -7,
  BUSY = -8,
  TIMEOUT = -9,
  TOO_LARGE = -10,
  STATE = -11,
  UNSUPPORTED = -12,
  HTTP = -13,
  PROVIDER = -14,
  DESTROYED = -15,
  INTERNAL = -16,
}

/** Base of every error raised by runlane. */
export class RunlaneError extends Error {
  /** Symbolic name of the core's code, e.g. `RUNLANE_ERR_STALE`. */
  readonly code: string;
  /** The core's numeric code (negative), see {@link ErrorCode}. */
  readonly errno: number;
  /** True when the same call may succeed later (store or network trouble). */
  readonly retriable: boolean;

  constructor(message: string, errno: number = ErrorCode.INTERNAL, retriable = false, code?: string) {
    super(message);
    this.name = new.target.name;
    this.errno = errno;
    this.code = code ?? `RUNLANE_ERR_${ErrorCode[errno] ?? 'UNKNOWN'}`;
    this.retriable = retriable;
  }
}

/** A bad argument (empty conversation id, invalid UTF-8, bad JSON...). */
export class InvalidArgumentError extends RunlaneError {}
/** A bad configuration: base of the two below. */
export class ConfigError extends RunlaneError {}
/** An option or configuration key that does not exist. */
export class UnknownOptionError extends ConfigError {}
/** An option whose value is of the wrong type or out of range. */
export class InvalidOptionError extends ConfigError {}
export class OutOfMemoryError extends RunlaneError {}
/** The store (Redis) is unreachable or failed; retriable. */
export class StoreError extends RunlaneError {}
/** The lease of the batch was lost: another worker owns it now. */
export class LeaseLostError extends RunlaneError {}
/** No such batch, message or dead letter. */
export class NotFoundError extends RunlaneError {}
/** The conversation is busy at the provider. */
export class BusyError extends RunlaneError {}
/** An operation (or draining on close) timed out. */
export class TimeoutError extends RunlaneError {}
/** A message or payload over its limit (batch.max.bytes). */
export class TooLargeError extends RunlaneError {}
/** Not allowed in the current state (worker already started...). */
export class StateError extends RunlaneError {}
/** Not supported by this build or backend. */
export class UnsupportedError extends RunlaneError {}
export class HttpError extends RunlaneError {}
/** The provider (OpenAI...) returned an error. */
export class ProviderError extends RunlaneError {}
/** The queue was closed. */
export class ClosedError extends RunlaneError {}
/** A bug in runlane; please report it. */
export class InternalError extends RunlaneError {}

const BY_CODE: Record<number, new (m: string, e?: number, r?: boolean, c?: string) => RunlaneError> = {
  [ErrorCode.INVALID_ARG]: InvalidArgumentError,
  [ErrorCode.UNKNOWN_KEY]: UnknownOptionError,
  [ErrorCode.INVALID_VALUE]: InvalidOptionError,
  [ErrorCode.NOMEM]: OutOfMemoryError,
  [ErrorCode.STORE]: StoreError,
  [ErrorCode.STALE]: LeaseLostError,
  [ErrorCode.NOT_FOUND]: NotFoundError,
  [ErrorCode.BUSY]: BusyError,
  [ErrorCode.TIMEOUT]: TimeoutError,
  [ErrorCode.TOO_LARGE]: TooLargeError,
  [ErrorCode.STATE]: StateError,
  [ErrorCode.UNSUPPORTED]: UnsupportedError,
  [ErrorCode.HTTP]: HttpError,
  [ErrorCode.PROVIDER]: ProviderError,
  [ErrorCode.DESTROYED]: ClosedError,
  [ErrorCode.INTERNAL]: InternalError,
};

/** The typed error for a core code. */
export function errorFromCode(errno: number, message: string, retriable = false): RunlaneError {
  const Cls = BY_CODE[errno] ?? RunlaneError;
  return new Cls(message, errno, retriable);
}

/**
 * Converts what the raw layer threw (an Error with `errno`, `code` and
 * `retriable`, see bindings/runlane.i) into the typed error; other errors
 * pass through.
 */
export function toRunlaneError(e: unknown): unknown {
  if (e instanceof RunlaneError) return e;
  if (e instanceof Error) {
    const x = e as Error & { errno?: unknown; code?: unknown; retriable?: unknown };
    if (typeof x.errno === 'number' && typeof x.code === 'string' && x.code.startsWith('RUNLANE_')) {
      return errorFromCode(x.errno, x.message, !!x.retriable);
    }
  }
  return e;
}

/** Runs a raw call, rethrowing its failure as a typed error. */
export function check<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toRunlaneError(e);
  }
}

/**
 * Throw it from a batch handler to fail the batch for good: it is
 * dead-lettered at once instead of retried.
 */
export class NonRetriableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetriableError';
  }
}

// The names the Python binding uses for the same classes, so that docs and
// code read alike across languages.
export { UnknownOptionError as UnknownKeyError, InvalidOptionError as InvalidValueError };
export { LeaseLostError as StaleLeaseError, OutOfMemoryError as NoMemoryError, HttpError as HTTPError };
