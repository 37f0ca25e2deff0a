/*
 * runlane.h - one lane per conversation: batched, locked, exactly-once turns.
 *
 * This is the only public header of librunlane and its stable C ABI.
 *
 * ABI promise: within one major version (RUNLANE_VERSION_MAJOR, also the
 * soname), nothing declared here is removed or changes meaning; new
 * functions, enum values and configuration keys only ever add. All handles
 * are opaque; no struct layout is public; no varargs.
 *
 * Conventions:
 * - Functions return runlane_err_t: 0 (RUNLANE_OK) or a negative code.
 *   Details of the last failure on the calling thread: runlane_error_last().
 * - Out-parameters come first.
 * - Strings are NUL-terminated UTF-8. Strings returned through `char **`
 *   are owned by the caller and freed with runlane_free().
 * - Complex payloads (messages, status, events) are JSON strings.
 * - Thread safety is stated per function.
 */
#ifndef RUNLANE_H
#define RUNLANE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define RUNLANE_BEGIN_DECL extern "C" {
#define RUNLANE_END_DECL }
#else
#define RUNLANE_BEGIN_DECL
#define RUNLANE_END_DECL
#endif

#if defined(_WIN32)
#define RUNLANE_EXTERN(type) __declspec(dllexport) type
#elif defined(__GNUC__)
#define RUNLANE_EXTERN(type) __attribute__((visibility("default"))) type
#else
#define RUNLANE_EXTERN(type) type
#endif

RUNLANE_BEGIN_DECL

/* ------------------------------------------------------------------ */
/* Version and features                                               */
/* ------------------------------------------------------------------ */

#define RUNLANE_VERSION_MAJOR 0
#define RUNLANE_VERSION_MINOR 1
#define RUNLANE_VERSION_PATCH 0
/** Version as one number: major * 10000 + minor * 100 + patch. */
#define RUNLANE_VERSION_NUM                                                  \
    (RUNLANE_VERSION_MAJOR * 10000 + RUNLANE_VERSION_MINOR * 100 +           \
     RUNLANE_VERSION_PATCH)

/** Feature bits returned by runlane_features(). */
#define RUNLANE_FEATURE_REDIS 0x01u      /**< the redis store is built in */
#define RUNLANE_FEATURE_REDIS_TLS 0x02u  /**< rediss:// is supported */
#define RUNLANE_FEATURE_HTTP 0x04u       /**< HTTP backends (libcurl) */
#define RUNLANE_FEATURE_HTTP_TLS 0x08u   /**< libcurl has TLS */
#define RUNLANE_FEATURE_CLUSTER 0x10u    /**< Redis Cluster routing */

/**
 * Version of the library actually loaded, as RUNLANE_VERSION_NUM.
 * Thread-safe.
 */
RUNLANE_EXTERN(int) runlane_version(void);

/**
 * Version of the library as a static string, e.g. "0.1.0".
 * Thread-safe.
 */
RUNLANE_EXTERN(const char *) runlane_version_str(void);

/**
 * Bit set of RUNLANE_FEATURE_* compiled into this build.
 * Thread-safe.
 */
RUNLANE_EXTERN(unsigned int) runlane_features(void);

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

/** Error codes. Values are fixed forever; new codes only ever add. */
typedef enum runlane_err_t {
    RUNLANE_OK = 0,
    RUNLANE_ERR_INVALID_ARG = -1,   /**< bad argument (NULL, bad UTF-8, ...) */
    RUNLANE_ERR_UNKNOWN_KEY = -2,   /**< unknown configuration key */
    RUNLANE_ERR_INVALID_VALUE = -3, /**< configuration value out of range */
    RUNLANE_ERR_NOMEM = -4,         /**< out of memory */
    RUNLANE_ERR_STORE = -5,         /**< store unreachable or failed (retriable) */
    RUNLANE_ERR_STALE = -6,         /**< lease lost: fencing token refused */
    RUNLANE_ERR_NOT_FOUND = -7,     /**< no such batch, message or dead letter */
    RUNLANE_ERR_BUSY = -8,          /**< conversation is busy (provider lock) */
    RUNLANE_ERR_TIMEOUT = -9,       /**< operation timed out */
    RUNLANE_ERR_TOO_LARGE = -10,    /**< message or payload over its limit */
    RUNLANE_ERR_STATE = -11,        /**< not allowed in the current state */
    RUNLANE_ERR_UNSUPPORTED = -12,  /**< not supported by this build/backend */
    RUNLANE_ERR_HTTP = -13,         /**< HTTP transport failure */
    RUNLANE_ERR_PROVIDER = -14,     /**< the provider returned an error */
    RUNLANE_ERR_DESTROYED = -15,    /**< handle already destroyed */
    RUNLANE_ERR_INTERNAL = -16      /**< bug in runlane; please report */
} runlane_err_t;

/** The last error raised on the calling thread (opaque). */
typedef struct runlane_error_s runlane_error_t;

/**
 * Human-readable description of an error code ("unknown error" for values
 * not in the table). Static string. Thread-safe.
 */
RUNLANE_EXTERN(const char *) runlane_err2str(runlane_err_t err);

/**
 * Symbolic name of an error code, e.g. "RUNLANE_ERR_STALE". Static string.
 * Thread-safe.
 */
RUNLANE_EXTERN(const char *) runlane_err2name(runlane_err_t err);

/**
 * Details of the last error raised by a runlane call on this thread.
 * Never NULL: when no error happened, code is RUNLANE_OK and the message is
 * empty. Valid until the next runlane call on the same thread.
 * Thread-safe (thread-local).
 */
RUNLANE_EXTERN(const runlane_error_t *) runlane_error_last(void);

/** Code of an error from runlane_error_last(). Thread-safe. */
RUNLANE_EXTERN(runlane_err_t) runlane_error_code(const runlane_error_t *err);

/** Message of an error from runlane_error_last(); never NULL. Thread-safe. */
RUNLANE_EXTERN(const char *) runlane_error_message(const runlane_error_t *err);

/**
 * 1 when retrying the same call later may succeed (store or network
 * trouble), 0 otherwise. Thread-safe.
 */
RUNLANE_EXTERN(int) runlane_error_retriable(const runlane_error_t *err);

/** Frees a string or buffer returned by runlane. NULL is ignored. Thread-safe. */
RUNLANE_EXTERN(void) runlane_free(void *ptr);

/* ------------------------------------------------------------------ */
/* Configuration                                                      */
/* ------------------------------------------------------------------ */

/** Key/value configuration (opaque). */
typedef struct runlane_conf_s runlane_conf_t;

/**
 * New configuration holding every default. NULL on out of memory.
 * Thread-safe; the object itself is not: use one conf from one thread.
 */
RUNLANE_EXTERN(runlane_conf_t *) runlane_conf_new(void);

/** Frees a configuration. NULL is ignored. Not thread-safe for `conf`. */
RUNLANE_EXTERN(void) runlane_conf_destroy(runlane_conf_t *conf);

/** Deep copy of a configuration, or NULL on out of memory. */
RUNLANE_EXTERN(runlane_conf_t *) runlane_conf_dup(const runlane_conf_t *conf);

/**
 * Sets `key` to `value` after validating it against the property table.
 * Returns RUNLANE_OK, RUNLANE_ERR_UNKNOWN_KEY or RUNLANE_ERR_INVALID_VALUE
 * (or RUNLANE_ERR_INVALID_ARG for NULL). On error, a message naming the key
 * and the accepted values is written to `errstr` (when non-NULL) and to
 * runlane_error_last(); the configuration is unchanged.
 * Not thread-safe for `conf`.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conf_set(runlane_conf_t *conf, const char *key, const char *value,
                 char *errstr, size_t errstr_size);

/**
 * Reads the value of `key` into `dest` (NUL-terminated). `*dest_size` is the
 * size of `dest` in; on return it holds the size needed including the NUL.
 * With dest NULL only the size is returned. Secret keys read back as
 * "********" once set. Returns RUNLANE_ERR_UNKNOWN_KEY for an unknown key,
 * RUNLANE_ERR_TOO_LARGE when `dest` is too small.
 * Not thread-safe for `conf`.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conf_get(const runlane_conf_t *conf, const char *key, char *dest,
                 size_t *dest_size);

/**
 * Every key and its current value as a JSON object (secrets masked).
 * `*json_out` is freed with runlane_free(). Not thread-safe for `conf`.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conf_dump(char **json_out, const runlane_conf_t *conf);

/**
 * The property table as a JSON array: for each key its name, type
 * ("string", "int", "enum", "bool", "float", "json"), default, min, max, enum
 * values, whether it is secret, and its documentation. Bindings and the
 * docs generator read it. Static string. Thread-safe.
 */
RUNLANE_EXTERN(const char *) runlane_conf_properties(void);

/* ------------------------------------------------------------------ */
/* Client                                                             */
/* ------------------------------------------------------------------ */

/** A runlane client: producer and (after runlane_start) worker. Opaque. */
typedef struct runlane_s runlane_t;

/** An event delivered by runlane_poll(). Opaque. */
typedef struct runlane_event_s runlane_event_t;

/**
 * Creates a client from `conf` (copied; NULL means all defaults) and
 * connects its store. Returns NULL on failure with the reason in `errstr`
 * and runlane_error_last(). No thread is started until runlane_start().
 * Thread-safe.
 */
RUNLANE_EXTERN(runlane_t *)
runlane_new(const runlane_conf_t *conf, char *errstr, size_t errstr_size);

/**
 * Stops the worker if running (leases are released at once, without
 * spending an attempt), frees undelivered events and the client. NULL is
 * ignored. Must not race with other calls on `rl`; must not be called from
 * a wake callback.
 */
RUNLANE_EXTERN(void) runlane_destroy(runlane_t *rl);

/** Limits on conversation ids (bytes); see runlane_enqueue(). */
#define RUNLANE_CONVERSATION_ID_MAX 256

/**
 * Queues one message for a conversation and returns its message id.
 *
 * `conversation_id`: 1..RUNLANE_CONVERSATION_ID_MAX bytes of valid UTF-8
 * without control characters (U+0000..U+001F, U+007F).
 * `content`: valid UTF-8, at most batch.max.bytes bytes.
 * `options_json`: NULL or a JSON object with optional members
 *   "idempotency_key" (string: the same key for the same conversation
 *   returns the first message's id and stores nothing twice, within
 *   idempotency.ttl.ms), "instructions" (string: per-turn instructions; the
 *   last message's value in a batch wins), "metadata" (object of strings).
 *   Every string of it (metadata keys too) must be valid UTF-8 and must not
 *   contain U+0000 ("\u0000"), which a C string cannot carry: such input
 *   is refused with RUNLANE_ERR_INVALID_ARG naming the member (e.g.
 *   "options.metadata.k"), never stored cut or corrupted.
 * `id_out`: receives the message id (NUL-terminated); RUNLANE_ID_MAX bytes
 * are always enough. `*duplicate_out` (may be NULL) is set to 1 when the
 * idempotency key was already used.
 *
 * Errors: RUNLANE_ERR_INVALID_ARG, RUNLANE_ERR_TOO_LARGE, RUNLANE_ERR_STORE.
 * On error nothing is stored. Thread-safe: calls made at the same time on
 * one client are sent together, in one pipelined round trip (each message
 * still stored on its own, each caller gets its own result; on a Redis
 * Cluster only calls on one partition go together); the metric
 * runlane_enqueue_round_trips_total counts the round trips.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_enqueue(char *id_out, size_t id_out_size, int *duplicate_out,
                runlane_t *rl, const char *conversation_id,
                const char *content, const char *options_json);

/** Size of a buffer that always holds a runlane id (message, batch). */
#define RUNLANE_ID_MAX 64

/**
 * Queues many messages in one pipelined round trip. `messages_json` is a
 * JSON array of objects {"conversation_id", "content", and the optional
 * members of runlane_enqueue's options}. Every message is validated first
 * (the rules of runlane_enqueue; an error names the member, e.g.
 * "messages[2].conversation_id"); if one is invalid nothing is stored. On success `*result_json_out` is a
 * JSON array of {"id","duplicate"} in input order (free with runlane_free).
 * Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_enqueue_many(char **result_json_out, runlane_t *rl,
                     const char *messages_json);

/**
 * Typing signal: the user of `conversation_id` is still active, so its
 * quiet window restarts now (never beyond batch.max.wait.ms after its first
 * pending message). Stores no message. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_touch(runlane_t *rl, const char *conversation_id);

/**
 * Queue status as JSON. With `conversation_id` NULL: totals
 * {"pending","ready","inflight","dead","conversations", counters...};
 * otherwise detail of one conversation {"pending","inflight","attempts",
 * "batch_id","owner","lease_expires_ms","due_ms","last_error",...}.
 * Free `*json_out` with runlane_free(). Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_status(char **json_out, runlane_t *rl, const char *conversation_id);

/**
 * Dead-lettered batches, oldest first, as a JSON array of {"id",
 * "conversation_id","batch_id","attempts","stalls","error","dead_at_ms",
 * "messages"}: "attempts" counts deliveries, "stalls" those whose lease
 * expired (see max.stalls).
 * `limit` 0 means 100. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_dead_list(char **json_out, runlane_t *rl, size_t offset, size_t limit);

/**
 * Puts dead letter `dead_id` (or all of them when NULL) back in front of
 * its conversation's pending messages, due at once, with attempts reset.
 * `*count_out` (may be NULL) receives how many batches were retried.
 * RUNLANE_ERR_NOT_FOUND when `dead_id` does not exist. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_dead_retry(size_t *count_out, runlane_t *rl, const char *dead_id);

/**
 * Deletes dead letter `dead_id` (or all of them when NULL) for good.
 * `*count_out` (may be NULL) receives how many were deleted. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_dead_purge(size_t *count_out, runlane_t *rl, const char *dead_id);

/**
 * Counters and gauges in the Prometheus text exposition format.
 * Free `*text_out` with runlane_free(). Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t) runlane_metrics(char **text_out, runlane_t *rl);

/**
 * Health of this client, for liveness/readiness probes, as a JSON object:
 * {"ok": store reachable and the worker running (or never started: a
 * producer-only client),
 *  "store_ok": the store answered,
 *  "store_error": why not (only when store_ok is false),
 *  "worker": "idle" (never started), "running", "stopping" or "stopped",
 *  "worker_running": worker == "running",
 *  "backend": the effective backend,
 *  "inflight": batches this client holds,
 *  "lag_ms": how long the oldest due conversation has been waiting for a
 *            worker (store clock; 0 when none is late), null when the store
 *            did not answer}.
 * Makes one store round trip on the calling thread (bounded by
 * redis.command.timeout.ms). A store that fails is reported in the JSON,
 * not as an error. Free `*json_out` with runlane_free(). Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t) runlane_health(char **json_out, runlane_t *rl);

/* ------------------------------------------------------------------ */
/* Worker                                                             */
/* ------------------------------------------------------------------ */

/**
 * Starts the client's I/O thread: it claims due conversations up to
 * worker.concurrency, renews leases, recovers expired leases of dead
 * workers and drives the backend. RUNLANE_ERR_STATE when already started
 * or stopped. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t) runlane_start(runlane_t *rl);

/** How runlane_stop() ends in-flight batches. */
typedef enum runlane_stop_mode_t {
    /** Claim nothing new; wait up to the timeout for in-flight batches to
     *  be acked or failed, then release the rest. */
    RUNLANE_STOP_DRAIN = 0,
    /** Release every lease at once (no attempt spent); another worker
     *  takes the batches over. */
    RUNLANE_STOP_RELEASE = 1
} runlane_stop_mode_t;

/**
 * Stops the worker and joins the I/O thread. Events already queued can
 * still be polled; a RUNLANE_EVENT_STOPPED event is the last one.
 * RUNLANE_ERR_TIMEOUT when draining did not finish in `timeout_ms` (the
 * remaining leases are released anyway). While a RUNLANE_STOP_DRAIN is
 * under way (in another thread), a call with RUNLANE_STOP_RELEASE ends
 * the drain at once: the remaining leases are released, the draining call
 * returns RUNLANE_ERR_TIMEOUT if any were, and this call returns
 * RUNLANE_OK once the I/O thread has finished (a second stop signal).
 * Any other call while stopping is RUNLANE_ERR_STATE. Thread-safe; must
 * not be called from a wake callback.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_stop(runlane_t *rl, runlane_stop_mode_t mode, int timeout_ms);

/** Flag of runlane_start_check(): the host takes RUNLANE_EVENT_BATCH events
 *  and settles them (a handler, a listener...). */
#define RUNLANE_HOST_RUNS_BATCHES 1u

/**
 * Checks, without starting or claiming anything, that a worker of this
 * client would have someone to run its turns: with the custom backend the
 * host runs them, so unless `host_flags` has RUNLANE_HOST_RUNS_BATCHES it
 * returns RUNLANE_ERR_STATE with a message saying what to do (instead of a
 * worker that leases batches nobody settles). HTTP backends run their own
 * turns: always RUNLANE_OK. Bindings call it right before runlane_start()
 * with what their host registered; a C host that polls events passes
 * RUNLANE_HOST_RUNS_BATCHES. RUNLANE_ERR_INVALID_ARG for unknown flags.
 * Thread-safe; no I/O.
 */
RUNLANE_EXTERN(runlane_err_t) runlane_start_check(runlane_t *rl, unsigned int host_flags);

/** Event types. Values are fixed forever. */
typedef enum runlane_event_type_t {
    RUNLANE_EVENT_NONE = 0,
    /** A batch is ready (custom backend): run the turn, then
     *  runlane_batch_ack() or runlane_batch_fail() it. JSON: {"conversation_id",
     *  "batch_id","attempt","messages":[{"id","content","ts_ms",
     *  "instructions"?,"metadata"?}]} */
    RUNLANE_EVENT_BATCH = 1,
    /** A provider turn started (HTTP backends). JSON: {"conversation_id",
     *  "batch_id","attempt","response_id"|"run_id","adopted"?} */
    RUNLANE_EVENT_RUN_STARTED = 2,
    /** Streamed text of the reply (HTTP backends, openai.stream=true).
     *  JSON: {"conversation_id","batch_id","attempt","delta":"text"} */
    RUNLANE_EVENT_DELTA = 3,
    /** The turn needs tool outputs: answer with
     *  runlane_submit_tool_outputs(). JSON: {"conversation_id","batch_id",
     *  "attempt","response_id"|"run_id","tool_calls":[{"id","name",
     *  "arguments"}]}; "arguments" is the JSON text the model wrote. The
     *  same calls may be raised again after a crash: the call id is the
     *  idempotency key of the tool's side effects. */
    RUNLANE_EVENT_TOOL_CALLS = 4,
    /** The turn completed: reply text, ids, usage. JSON:
     *  {"conversation_id","batch_id","attempt","reply","usage",
     *  "message_ids",...,"redelivered"?}. Delivered at least once: the
     *  batch is acked and the reply kept in the store in one step, and
     *  until the host confirms it with runlane_reply_ack() any worker of
     *  the queue delivers it again every reply.redeliver.ms (with
     *  "redelivered":true), for up to reply.ttl.ms. The batch id is the
     *  same every time: use it to drop duplicates. */
    RUNLANE_EVENT_COMPLETED = 5,
    /** An attempt failed; the batch is retried after a backoff. */
    RUNLANE_EVENT_FAILED = 6,
    /** The batch was dead-lettered (attempts spent or not retriable). */
    RUNLANE_EVENT_DEAD = 7,
    /** Background trouble (store unreachable, ...); work goes on. */
    RUNLANE_EVENT_ERROR = 8,
    /** This worker lost the lease of a batch: stop working on it, its
     *  ack would be refused. */
    RUNLANE_EVENT_LEASE_LOST = 9,
    /** The worker stopped; last event. */
    RUNLANE_EVENT_STOPPED = 10
} runlane_event_type_t;

/**
 * Next event, waiting up to `timeout_ms` (0: do not wait; -1: forever).
 * NULL when none arrived. Destroy each event with runlane_event_destroy().
 * Thread-safe.
 */
RUNLANE_EXTERN(runlane_event_t *) runlane_poll(runlane_t *rl, int timeout_ms);

/**
 * A file descriptor that is readable while events are pending (for
 * select/poll/epoll, asyncio add_reader). Do not read or close it; it is
 * drained by runlane_poll(). -1 if unavailable. Thread-safe.
 */
RUNLANE_EXTERN(int) runlane_event_fd(runlane_t *rl);

/** Wake callback: called from the I/O thread when the event queue turns
 *  non-empty. It must not block and must not call runlane functions. */
typedef void (*runlane_wake_cb)(void *opaque);

/**
 * Installs (or with `cb` NULL removes) the wake callback. Thread-safe;
 * after it returns, a removed callback is never called again.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_set_wake_cb(runlane_t *rl, runlane_wake_cb cb, void *opaque);

/** Type of an event. Thread-safe. */
RUNLANE_EXTERN(runlane_event_type_t)
runlane_event_type(const runlane_event_t *ev);

/** Name of an event type, e.g. "batch", "completed". Static string. */
RUNLANE_EXTERN(const char *) runlane_event_type_name(runlane_event_type_t type);

/** Conversation id of the event, or "" if none. Valid until the event is
 *  destroyed. */
RUNLANE_EXTERN(const char *) runlane_event_conversation_id(const runlane_event_t *ev);

/** Batch id of the event (stable across attempts), or "" if none. Valid
 *  until the event is destroyed. */
RUNLANE_EXTERN(const char *) runlane_event_batch_id(const runlane_event_t *ev);

/** Attempt number of the batch (1 for the first), 0 if none. */
RUNLANE_EXTERN(int) runlane_event_attempt(const runlane_event_t *ev);

/** The event's whole payload as a JSON object (see runlane_event_type_t).
 *  Never NULL. Valid until the event is destroyed. */
RUNLANE_EXTERN(const char *) runlane_event_json(const runlane_event_t *ev);

/** Error code carried by FAILED, DEAD, ERROR and LEASE_LOST events;
 *  RUNLANE_OK otherwise. */
RUNLANE_EXTERN(runlane_err_t) runlane_event_error_code(const runlane_event_t *ev);

/** Error message of the event, or "". Valid until the event is destroyed. */
RUNLANE_EXTERN(const char *) runlane_event_error_message(const runlane_event_t *ev);

/** Frees an event. NULL is ignored. */
RUNLANE_EXTERN(void) runlane_event_destroy(runlane_event_t *ev);

/**
 * Acknowledges a batch delivered by a RUNLANE_EVENT_BATCH event: its
 * messages are done and removed; the conversation's next batch may start.
 * `result_json` (may be NULL) is recorded in the completed counter only.
 * RUNLANE_ERR_STALE when the lease was lost meanwhile (the batch will be
 * delivered again elsewhere), RUNLANE_ERR_NOT_FOUND for an unknown batch.
 * Thread-safe, callable from any thread.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_batch_ack(runlane_t *rl, const char *batch_id, const char *result_json);

/**
 * Fails the current attempt of a batch. With `retriable` non-zero it is
 * retried after an exponential backoff until max.attempts, then
 * dead-lettered with `error_message` kept; with 0 it is dead-lettered at
 * once. Thread-safe, callable from any thread.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_batch_fail(runlane_t *rl, const char *batch_id,
                   const char *error_message, int retriable);

/**
 * Gives a batch delivered by a RUNLANE_EVENT_BATCH event back without
 * spending an attempt (e.g. the host is shutting down and will not run it):
 * it is due at once for any worker, with the same batch id.
 * RUNLANE_ERR_NOT_FOUND for a batch not held here. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_batch_release(runlane_t *rl, const char *batch_id);

/**
 * Answers a RUNLANE_EVENT_TOOL_CALLS event of batch `batch_id`.
 * `outputs_json` is a JSON array of {"tool_call_id","output"}.
 * Thread-safe, callable from any thread.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_submit_tool_outputs(runlane_t *rl, const char *batch_id,
                            const char *outputs_json);

/**
 * Confirms that the reply of a RUNLANE_EVENT_COMPLETED event reached the
 * user (e.g. after it was sent or stored by the host), so it is not
 * delivered again. Until then the reply is delivered again every
 * reply.redeliver.ms, by any worker of the queue, also after a crash of
 * the worker or the host that had it; after reply.ttl.ms it is dropped
 * unconfirmed. Any client of the queue with an HTTP backend may confirm
 * any reply; no worker needs to run.
 *
 * Idempotent in effect: the first call deletes the reply and returns
 * RUNLANE_OK; later calls (or calls for an expired reply) return
 * RUNLANE_ERR_NOT_FOUND, which a host confirming a redelivered reply may
 * treat as success.
 *
 * Errors: RUNLANE_ERR_INVALID_ARG (batch_id NULL or empty),
 * RUNLANE_ERR_NOT_FOUND (no unconfirmed reply of that batch: unknown,
 * already confirmed, or expired), RUNLANE_ERR_STORE (retriable),
 * RUNLANE_ERR_UNSUPPORTED with the custom backend (it makes no replies).
 * Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_reply_ack(runlane_t *rl, const char *batch_id);

/* ------------------------------------------------------------------ */
/* HTTP backends                                                      */
/* ------------------------------------------------------------------ */

/**
 * Creates a conversation at the provider of the `responses` backend
 * (POST {openai.base.url}/conversations) and returns its id ("conv_...")
 * in `*id_out` (free with runlane_free()); use it as the conversation id of
 * runlane_enqueue(). `metadata_json`: NULL or a JSON object of at most 16
 * strings (keys up to 64, values up to 512 characters).
 *
 * The request uses the client's openai.* and http.* settings (base URL,
 * API key, headers, query, timeouts), whatever its backend, and is made on
 * the calling thread: it blocks, with the HTTP retries of http.max.retries
 * for errors after which the server surely did nothing (a create is not
 * sent twice otherwise). No worker is needed.
 *
 * Errors: RUNLANE_ERR_INVALID_ARG; RUNLANE_ERR_HTTP (network trouble,
 * retriable); RUNLANE_ERR_PROVIDER (the provider refused; the message
 * keeps its error and request id, never the API key).
 * Thread-safe; must not be called from a wake callback.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_create(char **id_out, runlane_t *rl, const char *metadata_json);

/**
 * Creates a thread for the `assistants` backend (POST
 * {openai.base.url}/threads, with OpenAI-Beta: assistants=v2) and returns
 * its id ("thread_...") in `*id_out` (free with runlane_free()); use it as
 * the conversation id of runlane_enqueue(). Arguments, errors and threading
 * as runlane_conversation_create().
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_thread_create(char **id_out, runlane_t *rl, const char *metadata_json);

/*
 * Conversation keys. With the `responses` and `assistants` backends a
 * conversation id that is not a provider id (responses: "conv_...",
 * assistants: "thread_...") is a key the app names itself ("chat-42", a
 * phone number). The first turn of such a key creates the provider
 * conversation (thread) and records key -> provider id in the store, under
 * the lease of the key's batch, so every worker and every later turn uses
 * the same one. Nothing is sent to a provider conversation before its
 * mapping is recorded, and a record never replaces a mapping: at most one
 * provider conversation receives a key's messages. A worker that dies
 * between the create and the record leaves an empty conversation (an
 * orphan, with metadata runlane_key and runlane_batch_id) that nothing
 * uses. Provider ids are used as they are, without a mapping. The custom
 * backend ignores the mapping.
 */

/**
 * Reads the provider conversation/thread id `key` maps to into `*id_out`
 * (free with runlane_free()), or NULL when the key has no mapping (yet).
 * Returns RUNLANE_OK in both cases. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_get(char **id_out, runlane_t *rl, const char *key);

/**
 * Maps `key` to the existing provider conversation/thread `provider_id`
 * (an import, e.g. of a conversation created before runlane), replacing
 * any mapping; the key's next turn uses it (a turn already running keeps
 * the conversation it started with). `provider_id` follows the rules of a
 * conversation id and is at most 159 bytes. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_set(runlane_t *rl, const char *key, const char *provider_id);

/**
 * Forgets the mapping of `key`: its next turn creates a new provider
 * conversation (the old one is left as it is at the provider). Forgetting
 * a key with no mapping is not an error. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_forget(runlane_t *rl, const char *key);

/**
 * Migration off the Assistants API: copies the messages of the Assistants
 * thread `thread_id` (NULL: the thread `key` maps to, or `key` itself when
 * it is a thread id), oldest first, as message items (user and assistant
 * roles, their text parts) into a new Responses conversation (metadata
 * runlane_key, runlane_migrated_from), then maps `key` to it, so the key's
 * next turn with the `responses` backend continues there.
 *
 * Resumable and idempotent: the conversation being filled is recorded in
 * the store before the first copy; the items go in order, at most 20 per
 * request, so a run that stopped half-way (crash, network) is resumed by
 * running it again: it copies only what the conversation lacks. Once
 * done, running it again copies nothing ("copied": 0). A crash right after
 * the conversation is created leaves it empty and unused. Run one
 * migration of a key at a time, while no turn of the key runs.
 *
 * `*result_json_out` (free with runlane_free()): {"conversation_id",
 * "thread_id"?, "copied", "total"}. Blocking HTTP on the calling thread,
 * with the client's openai.* and http.* settings; errors as
 * runlane_conversation_create(). Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_migrate_thread(char **result_json_out, runlane_t *rl, const char *key,
                       const char *thread_id);

/* ------------------------------------------------------------------ */
/* Dashboard                                                          */
/* ------------------------------------------------------------------ */

/*
 * The web dashboard's request handler: no socket and no HTTP library
 * inside. A server (the `runlane dashboard` command, the Node and Python
 * mounts) passes each request's method, path, query and body in and
 * writes the response's status, headers and body out; all data and
 * actions live here, once.
 *
 * Paths are relative to where the dashboard is mounted: a server mounting
 * it under "/ops/lanes" strips that prefix and passes "/" or "/api/...";
 * the page uses relative URLs, so it works under any prefix that ends
 * with "/".
 *
 *   GET  /                     the page (HTML, self-contained, offline)
 *   GET  /api/session          {"csrf_token","version","history_interval_ms",
 *                               "history_size","read_only"}
 *   GET  /api/overview         {"now_ms","totals":{runlane_status totals},
 *                               "history":[{"t_ms","pending","ready",
 *                               "inflight","dead","conversations","enqueued",
 *                               "acked","failed","dead_lettered",
 *                               "recovered"}...]} oldest first; takes a
 *                               history sample when one is due
 *   GET  /api/conversations?state=S&search=Q&offset=O&limit=L
 *                               S: pending (batch window not over), ready,
 *                               inflight, retrying or dead; Q: part of the
 *                               conversation id (at most 256 bytes); O:
 *                               0..1000000 (default 0); L: 1..200 (default
 *                               50). {"state","offset","limit","total",
 *                               "truncated","now_ms","items":[...]}
 *   GET  /api/conversation?id=C one conversation: runlane_status detail plus
 *                               "pending_messages", "batch_messages" (up to
 *                               50 each), "lease_token" (the fencing token
 *                               to pass to /api/lease/release) and
 *                               "provider_conversation_id"
 *   GET  /api/dead?search=Q&offset=O&limit=L
 *                               dead letters as runlane_dead_list, with
 *                               "total" and "items"
 *   POST /api/dead/retry       body {"id":"..."} or {"all":true}
 *   POST /api/dead/purge       body {"id":"..."} or {"all":true}
 *   POST /api/lease/release    body {"conversation_id","lease_token"}: gives
 *                               a stuck lease back (no attempt spent), fenced:
 *                               refused with 409 when the lease changed
 *
 * Every POST needs the CSRF token of GET /api/session in `csrf_header`
 * (the server passes the request's X-Runlane-CSRF header); it is compared
 * in constant time. Answers are JSON except for the page; errors are
 * {"error":{"status","code","message"}}: 400 bad input (bad paging, bad
 * JSON, unknown state), 403 missing or wrong CSRF token, 404 unknown path
 * or id, 405 wrong method, 409 stale lease, 413 body over 16 KiB, 503 store
 * unreachable. A refused request changes nothing. No secret (API key,
 * store password) is ever part of an answer.
 *
 * The load on the store per request is bounded: see README "Dashboard".
 */

/** The largest POST body runlane_dashboard_handle() accepts (bytes); a
 *  longer one gets 413. A server reads at most one byte more than this
 *  before it passes the body in, so it never buffers an unbounded body. */
#define RUNLANE_DASHBOARD_BODY_MAX 16384

/** A dashboard request handler bound to one client. Opaque. */
typedef struct runlane_dashboard_s runlane_dashboard_t;

/** One response of runlane_dashboard_handle(). Opaque. */
typedef struct runlane_dashboard_response_s runlane_dashboard_response_t;

/**
 * Creates a dashboard handler over `rl` (which must outlive it; no worker
 * needs to run). `options_json`: NULL or a JSON object with optional
 * members "history_interval_ms" (1000..3600000, default 10000: spacing of
 * the totals history samples), "history_size" (2..10000, default 360:
 * samples kept in a ring, one hour by default), "read_only" (bool: refuse
 * every action with 403), "scan_limit" (100..100000, default 10000: the
 * most members of one partition's ready or lease set a list request looks
 * at). Returns NULL on bad options or out of memory (reason in
 * runlane_error_last()). A fresh random CSRF token is made per handler.
 * Thread-safe.
 */
RUNLANE_EXTERN(runlane_dashboard_t *)
runlane_dashboard_new(runlane_t *rl, const char *options_json);

/** Frees a dashboard handler. NULL is ignored. Must not race with other
 *  calls on `d`. */
RUNLANE_EXTERN(void) runlane_dashboard_destroy(runlane_dashboard_t *d);

/**
 * Answers one request. `method` ("GET", "POST", ...) and `path` are
 * required; `query` is the raw query string without "?" (NULL or "" for
 * none); `body` holds `body_len` bytes (NULL when 0); `csrf_header` the
 * X-Runlane-CSRF header or NULL. `*out` receives the response (free with
 * runlane_dashboard_response_destroy()) whenever RUNLANE_OK is returned,
 * including 4xx and 5xx answers: the return value is an error only for a
 * NULL argument or out of memory. Makes store round trips on the calling
 * thread. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t)
runlane_dashboard_handle(runlane_dashboard_response_t **out, runlane_dashboard_t *d,
                         const char *method, const char *path, const char *query,
                         const char *body, size_t body_len, const char *csrf_header);

/**
 * Takes one sample of the totals into the history ring now if one is due
 * (history_interval_ms since the last one). Servers call it on a timer so
 * the chart has data before a page opens; GET /api/overview also calls
 * it. One store round trip when due, none otherwise. Thread-safe.
 */
RUNLANE_EXTERN(runlane_err_t) runlane_dashboard_sample(runlane_dashboard_t *d);

/** HTTP status of a response (200, 400, ...). */
RUNLANE_EXTERN(int) runlane_dashboard_response_status(const runlane_dashboard_response_t *r);

/** Content-Type of a response, e.g. "application/json". Valid until the
 *  response is destroyed. */
RUNLANE_EXTERN(const char *)
runlane_dashboard_response_content_type(const runlane_dashboard_response_t *r);

/**
 * Every header the server should send (Content-Type included, plus
 * Cache-Control, X-Content-Type-Options, Content-Security-Policy,
 * X-Frame-Options, Referrer-Policy) as a JSON object of strings. Valid
 * until the response is destroyed.
 */
RUNLANE_EXTERN(const char *)
runlane_dashboard_response_headers(const runlane_dashboard_response_t *r);

/** Body of a response; `*len_out` (may be NULL) receives its length. Valid
 *  until the response is destroyed. */
RUNLANE_EXTERN(const char *)
runlane_dashboard_response_body(const runlane_dashboard_response_t *r, size_t *len_out);

/** Frees a response. NULL is ignored. */
RUNLANE_EXTERN(void) runlane_dashboard_response_destroy(runlane_dashboard_response_t *r);

RUNLANE_END_DECL

#endif /* RUNLANE_H */
