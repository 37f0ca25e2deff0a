/* http.h - the HTTP client of the backends (internal).
 *
 * Requests are libcurl easy handles on one multi handle: the client's
 * rl->multi, whose sockets the I/O thread waits on (rl->loop, see
 * ioloop.h), so one thread drives every transfer and connections are kept
 * alive and reused.
 * Everything here runs on the thread that owns the multi handle; only
 * rl_http_sync() is meant for other threads (it makes its own multi).
 *
 * Per request: base URL (openai.base.url) + path + the openai.query
 * parameters; headers Authorization: Bearer <openai.api.key, default
 * $OPENAI_API_KEY>, OpenAI-Organization, OpenAI-Project, the openai.headers
 * object, OpenAI-Beta: assistants=v2 (RL_HTTP_ASSISTANTS); connect timeout
 * http.connect.timeout.ms; total timeout http.timeout.ms, or for streams an
 * idle timeout http.stream.idle.timeout.ms (no byte for that long); TLS
 * verification on; proxies from the environment (libcurl's default).
 *
 * Retries: network errors, 408, 409, 429 and 5xx (and whatever the server
 * marks with x-should-retry: true) are retried up to http.max.retries times
 * after min(http.retry.max.ms, http.retry.base.ms * 2^(n-1)) less up to 25%
 * jitter, or what the server asked for with retry-after-ms or
 * Retry-After (seconds or an HTTP date), capped at http.retry.max.ms (as is
 * openai-poll-after-ms in the result). A request flagged RL_HTTP_UNSAFE
 * (it creates something: a response, a run) is only retried when the
 * server surely did not act on it (could not connect, 408, 409, 429);
 * otherwise it completes with `ambiguous` set and the caller reconciles
 * before sending it again. A stream that already delivered data is never
 * retried.
 *
 * Limits on what the peer sends (each fails the attempt as a retriable
 * provider error, RUNLANE_ERR_PROVIDER, retried like a 5xx when the request
 * is safe): a body over http.max.body.bytes, headers over
 * http.max.header.bytes, a stream over http.stream.max.bytes; a stream's
 * consumer may abort it for a reason of its own (rl_http_abort_reason:
 * the SSE parser's line and event limits), handled the same way.
 *
 * Secrets (the API key, openai.headers values) never appear in an error
 * message: every message is scrubbed (rl_http_scrub). Nothing is logged (a
 * long wait a server asked for is told to the wait note, scrubbed).
 *
 * Rate limit (rate.limit.rpm > 0): every send (first attempts and
 * retries alike) first takes a token of the queue's shared bucket, the
 * store's rate_take (see store.h: burst rpm / 60 but at least 1, refilled
 * at rpm per minute, shared by every client of the store), given with
 * rl_http_set_rate(). When the store says to wait, the request stays
 * queued (and every request after it, in order) and rl_http_drive()
 * returns the time to try again: nothing sleeps. When the store fails
 * (unreachable, timeout), requests are not held up: this client's own
 * bucket of the same shape is used instead (so N clients may then send up
 * to N times the budget), the `note` hook is told once (and again when the
 * store answers), and the store is asked again after
 * RL_HTTP_RATE_STORE_RETRY_MS. A client without a store only has its own
 * bucket. */
#ifndef RUNLANE_HTTP_H
#define RUNLANE_HTTP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "conf.h"
#include "runlane.h"
#include "store.h"

typedef struct rl_http rl_http_t;
typedef struct rl_http_req rl_http_req_t;

#define RL_HTTP_STREAM 0x01     /* text/event-stream: 2xx body goes to on_data */
#define RL_HTTP_ASSISTANTS 0x02 /* OpenAI-Beta: assistants=v2 */
#define RL_HTTP_UNSAFE 0x04     /* not idempotent: see above */

/* The outcome of a request, valid during the on_done call only. */
typedef struct rl_http_result {
    long status;            /* HTTP status of the last attempt; 0 when none came */
    int curl_code;          /* CURLcode of the last attempt (0 when a response came) */
    const char *body;       /* whole body, NUL-terminated ("" for a stream sent to on_data) */
    size_t body_len;
    const char *request_id; /* x-request-id of the last response, or "" */
    const char *error;      /* "" on success; otherwise a scrubbed message with the
                               method, path, status, provider error and request id */
    const char *error_code; /* the provider's error.code, or "" */
    const char *error_type; /* the provider's error.type, or "" */
    const char *error_message; /* the provider's error.message (scrubbed), or "" */
    int64_t retry_after_ms; /* the server's retry hint, -1 when none */
    int64_t poll_after_ms;  /* openai-poll-after-ms, -1 when none */
    int ok;                 /* 2xx and no transport error */
    runlane_err_t err;      /* RUNLANE_OK; RUNLANE_ERR_HTTP for a transport failure (no
                               answer, timeout, stream idle timeout, aborted:
                               curl_code != 0); RUNLANE_ERR_PROVIDER for a non-2xx
                               answer or a limit the peer went past (body, headers,
                               stream, SSE line or event too large) */
    int retriable;          /* a failure a later attempt may not have */
    int ambiguous;          /* a failure after which the server may have acted */
    int streamed;           /* a 2xx stream delivered at least one byte to on_data */
    int attempts;           /* sends made (1 + retries) */
    int64_t retry_in_ms;    /* for a caller-side retry: the backoff that would come next */
} rl_http_result_t;

/* Bytes of a 2xx stream; return non-zero to abort the transfer (it then
 * completes with an error). */
typedef int (*rl_http_data_fn)(void *opaque, const char *data, size_t n);
/* The request ended (after its retries). Called once, never for a
 * cancelled request. The request is freed after it returns. May start and
 * cancel requests. */
typedef void (*rl_http_done_fn)(void *opaque, const rl_http_result_t *res);

/* A client over `multi` with the HTTP settings of `conf` (copied). NULL
 * with the error set on failure (bad openai.headers, ...). */
rl_http_t *rl_http_new(const runlane_conf_t *conf, CURLM *multi);

typedef struct rl_ioloop rl_ioloop_t;
/* Drives the client's multi through `loop` (see ioloop.h: curl acts on
 * ready sockets inside rl_ioloop_wait, and rl_http_drive no longer calls
 * curl_multi_perform). Call before the first request. Without it the
 * client drives its multi with curl_multi_perform (rl_http_sync does). */
void rl_http_use_loop(rl_http_t *h, rl_ioloop_t *loop);

/* How long the local bucket stands in for a failed store before the store
 * is asked again. */
#define RL_HTTP_RATE_STORE_RETRY_MS 1000

/* The rate limiter's news: the store of the shared bucket failed (down 1;
 * `msg` is the store's error, this client's own bucket is used until it
 * answers again) or answers again (down 0, msg ""). Called on the thread
 * that drives the client, once per change. */
typedef void (*rl_http_rate_note_fn)(void *opaque, int down, const char *msg);

/* Where the shared bucket of rate.limit.rpm lives. */
typedef struct rl_http_rate {
    rl_store_t *store;         /* its rate_take; NULL: this client's own bucket only */
    pthread_mutex_t *mu;       /* held around each store call (NULL: none) */
    rl_http_rate_note_fn note; /* may be NULL */
    void *opaque;
} rl_http_rate_t;

/* Sets (copies) the shared bucket of the client (NULL: none). The store
 * must outlive the client; it is used from the thread that drives it. */
void rl_http_set_rate(rl_http_t *h, const rl_http_rate_t *rate);
/* Cancels every request (no callbacks) and frees the client. */
void rl_http_destroy(rl_http_t *h);

/* Starts `method` `path` (relative to openai.base.url, may carry its own
 * query) with a JSON body (NULL for none). NULL on out of memory (error
 * set). on_data may be NULL for a non-stream request. */
rl_http_req_t *rl_http_start(rl_http_t *h, const char *method, const char *path,
                             const char *json_body, int flags, rl_http_data_fn on_data,
                             rl_http_done_fn on_done, void *opaque);
/* Asked right before each attempt of a request goes on the wire (the
 * connection is up; curl's CURLOPT_PREREQFUNCTION). Return 1 to send, 0 to
 * stop: the attempt is then aborted unsent (CURLE_ABORTED_BY_CALLBACK, not
 * ambiguous). It may cancel the request (rl_http_cancel) and settle its
 * owner's state; it must not start requests. */
typedef int (*rl_http_gate_fn)(void *opaque);
/* Installs the gate of a request just started (same opaque as on_done).
 * Returns 0 when this libcurl (< 7.80) cannot call it. */
int rl_http_set_gate(rl_http_req_t *r, rl_http_gate_fn gate);

/* Cancels a request: no callback is called for it any more. Safe from
 * on_data and on_done. NULL is ignored. */
void rl_http_cancel(rl_http_req_t *r);

/* Performs transfers, fires retries, checks stream idle timers and calls
 * the callbacks of ended requests. Returns the next monotonic time
 * (rl_mono_ms) it must be called again at, or INT64_MAX. */
int64_t rl_http_drive(rl_http_t *h);
/* Number of requests not yet ended (for tests). */
int rl_http_pending(const rl_http_t *h);

/* Backoff before retry number `n` (1 for the first retry), with jitter;
 * `hint_ms` >= 0 (the server's Retry-After) wins, up to http.retry.max.ms. */
int64_t rl_http_backoff_ms(const rl_http_t *h, int n, int64_t hint_ms);
/* A delay header's value in ms: `seconds` 1 for Retry-After (seconds, or
 * an HTTP date: the time left until it, 0 when past), 0 for retry-after-ms
 * and openai-poll-after-ms (ms). -1 when unreadable. */
int64_t rl_http_parse_delay_ms(const char *v, size_t n, int seconds);
/* http.max.retries */
int rl_http_max_retries(const rl_http_t *h);

/* A server-asked wait at least this long (ms), or one cut by the cap, is
 * reported to the wait note. */
#define RL_HTTP_LONG_WAIT_MS 5000
/* Told when a request is to wait `wait_ms` before its retry because the
 * server asked for `asked_ms` (>= RL_HTTP_LONG_WAIT_MS, or more than the
 * cap: wait_ms is then less). `what` is "METHOD path: HTTP status"
 * (scrubbed); `opaque` the request's. Once per attempt. */
typedef void (*rl_http_wait_fn)(void *opaque, const char *what, int64_t asked_ms,
                                int64_t wait_ms);
void rl_http_set_wait_note(rl_http_t *h, rl_http_wait_fn fn);
/* From on_data, before returning non-zero: the reason the stream is
 * aborted, for the error message; the attempt then fails as a retriable
 * provider error (a limit of the peer's data was passed). */
void rl_http_abort_reason(rl_http_req_t *r, const char *reason);
/* When the running attempt of `r` started (monotonic ms); 0 when it is not
 * running (queued, waiting for a retry, ended). */
int64_t rl_http_attempt_since(const rl_http_req_t *r);
/* 1 when the current attempt of a running request may have reached the
 * server: its gate let it out (a request without a gate: once it runs).
 * Cancelling it then does not unsend it. */
int rl_http_attempt_sent(const rl_http_req_t *r);
/* Ends a running transfer as failed by the peer (the next rl_http_drive
 * processes it like a limit passed: a retriable provider error with
 * `reason`). Not from inside curl's callbacks; no-op unless running. */
void rl_http_abort(rl_http_req_t *r, const char *reason);
/* The monotonic time a request waiting for its retry goes out again; 0
 * when it is not waiting (NULL too). */
int64_t rl_http_wait_until(const rl_http_req_t *r);

/* Replaces, in place, every secret of the client's configuration found in
 * `s` with "***". */
void rl_http_scrub(const rl_http_t *h, char *s);
/* Scrubs a malloc'ed string, possibly reallocating it (returns it). */
char *rl_http_scrub_dup(const rl_http_t *h, const char *s);

/* A blocking request on the calling thread, with the same settings and
 * retries (it uses its own multi handle), under the rate limit of `rate`
 * (NULL: a bucket of its own; waiting for a token blocks the caller). On
 * return (any code) *status_out is the last HTTP status (0 when none) and
 * *body_out the body (or NULL; free with free()). Returns RUNLANE_OK for
 * a 2xx; otherwise RUNLANE_ERR_HTTP (network), RUNLANE_ERR_PROVIDER
 * (non-2xx) or RUNLANE_ERR_NOMEM with runlane_error_last() holding the
 * scrubbed message. Thread-safe (given rate->mu for a shared store). */
runlane_err_t rl_http_sync(long *status_out, char **body_out, const runlane_conf_t *conf,
                           const char *method, const char *path, const char *json_body,
                           int flags, const rl_http_rate_t *rate);

#endif
