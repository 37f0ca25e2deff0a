/* backend_common.h - what the `responses` and `assistants` backends share
 * (internal): settings, the per-batch turn object, timers, settling,
 * checkpoints, events and JSON helpers.
 *
 * Everything runs on the I/O thread (create and destroy excepted, which run
 * while that thread is not running). */
#ifndef RUNLANE_BACKEND_COMMON_H
#define RUNLANE_BACKEND_COMMON_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "http.h"
#include "internal.h"
#include "sse.h"

typedef struct rl_turn rl_turn_t;
typedef void (*rl_turn_fn)(rl_turn_t *t);
typedef void (*rl_turn_done_fn)(rl_turn_t *t, const rl_http_result_t *res);
typedef void (*rl_turn_event_fn)(rl_turn_t *t, const char *event, cJSON *data);

struct rl_backend {
    runlane_t *rl;
    const rl_backend_ops_t *ops;
    rl_http_t *http;
    int assistants; /* 1: assistants backend; 0: responses */
    /* Settings (from the conf). */
    char *model, *prompt_id, *assistant_id, *instructions, *additional_instructions;
    cJSON *tools;    /* array (maybe empty) */
    cJSON *metadata; /* object of strings */
    int stream, joined;
    int interrupt; /* busy.policy=interrupt (responses: create in background) */
    int64_t tool_timeout_ms;
    int tool_cancel;
    size_t sse_max_line, sse_max_event; /* http.sse.max.line.bytes / .event.bytes */
    int64_t max_requests;                /* http.max.requests.per.attempt */
    int64_t stream_idle_ms;              /* http.stream.idle.timeout.ms */
    int64_t max_body;                    /* http.max.body.bytes (also: a listing's pages) */
    rl_turn_t *turns; /* every turn this backend holds */
};

typedef enum rl_turn_state {
    RL_TS_IDLE = 0,
    RL_TS_BUSY,       /* a request or timer of the turn's flow is pending */
    RL_TS_WAIT_TOOLS, /* TOOL_CALLS emitted; waiting for the host */
    RL_TS_SETTLING,   /* waiting to retry a settle the store refused (store down) */
    RL_TS_DEAD        /* settled or abandoned: freed by the next drive */
} rl_turn_state_t;

struct rl_turn {
    rl_backend_t *bk;
    rl_inflight_t *f; /* NULL once dead */
    rl_turn_t *next;
    rl_turn_state_t state;
    rl_http_req_t *req;  /* the request in flight, if any */
    void (*req_done)(rl_turn_t *t, const rl_http_result_t *res);
    void (*req_event)(rl_turn_t *t, const char *event, cJSON *data);
    int64_t timer_at;    /* INT64_MAX: none */
    rl_turn_fn timer_fn;
    rl_sse_t sse;
    cJSON *msgs; /* the batch's messages (array of records) */
    cJSON *ckpt; /* the checkpoint as last written (object) */
    char turn_id[160];   /* current response or run id ("" when none) */
    char started_id[160];/* turn id RUN_STARTED was emitted for */
    cJSON *final;        /* terminal object seen on a stream */
    char *stream_error;  /* an `error` event of a stream */
    cJSON *usage;        /* usage summed over the turn's responses / run */
    cJSON *calls;        /* pending tool calls [{"id","name","arguments"}] */
    cJSON *outputs;      /* answers so far {call_id: output} */
    int64_t tools_deadline;
    int create_failures; /* ambiguous create failures (reconciled, then resent) */
    int poll_failures;   /* 2xx answers that were not usable (see rl_turn_unusable) */
    int64_t requests;    /* HTTP requests this attempt sent (http.max.requests.per.attempt) */
    int64_t listed_bytes; /* bytes of the listing pages gathered in scratch */
    int streaming;       /* t->req is a stream */
    int64_t last_event_ms; /* a stream's last dispatched event (or its start) */
    /* A settle the store could not write yet. */
    rl_settle_t settle_how;
    char *settle_error;
    int settle_retriable;
    runlane_err_t settle_code; /* carried by the FAILED/DEAD event */
    int64_t settle_delay_ms;
    /* Flow state the backends share. */
    int send_from;       /* first input text a create sends (earlier ones are there) */
    int posting_outputs; /* the next create carries tool outputs */
    int cancelling;      /* a cancel was asked (tool timeout with action cancel) */
    int interrupting;    /* busy.policy=interrupt asked; absorbed before the next create */
    int interrupt_cancels; /* cancels sent for the interrupt */
    rl_http_req_t *aux;  /* a side request (a cancel), no flow attached */
    char *complete_json; /* the COMPLETED payload while the store is retried */
    cJSON *scratch;      /* items gathered while reconciling */
    char cursor[160];    /* paging cursor while reconciling (only while paging) */
    int pages;
    /* Function calls a dead turn left unanswered at the end of the
     * conversation (responses): rounds of answering them so far, and
     * whether the flow goes on with a create (1) or a snapshot (0). */
    int dangling_rounds;
    int dangling_then_post;
    /* Lease guard: 1 while a request that adds input (guarded) is
     * pending (the lease estimate: rl_inflight_t.claimed_from_ms and
     * runlane_t.renewed_from_ms). */
    int guarded;
    /* rl_turn_settle_prior: the dead predecessor's turn being settled,
     * looks at it so far, and what runs once it ended. */
    char prior_id[160];
    int prior_polls;
    rl_turn_fn prior_next;
    /* Conversation keys (rl_turn_resolve): the provider conversation or
     * thread id a key maps to (NULL: the key is the provider id), and what
     * runs once it is known. */
    char *provider_id;
    rl_turn_fn resolve_next;
};

/* The two backends (backend_responses.c, backend_assistants.c). */
extern const rl_backend_ops_t rl_backend_responses;
extern const rl_backend_ops_t rl_backend_assistants;

/* ---- lifecycle (backend_common.c) ---- */

/* Reads the settings and makes the HTTP client. NULL with the error set. */
rl_backend_t *rl_bk_new(runlane_t *rl, const rl_backend_ops_t *ops, int assistants);
void rl_bk_free(rl_backend_t *bk);
/* Drives HTTP and the turns' timers; frees dead turns. */
int64_t rl_bk_drive(rl_backend_t *bk);

/* A new turn for f (f->turn set), with messages and checkpoint parsed.
 * NULL on out of memory (then f was failed retriably). */
rl_turn_t *rl_turn_new(rl_backend_t *bk, rl_inflight_t *f);
/* Stops the turn's request and timer and marks it dead (f->turn cleared);
 * does not settle. */
void rl_turn_abandon(rl_turn_t *t);
/* Ends the batch (rl_worker_settle); the turn is dead afterwards, except
 * that a store outage keeps it and retries the settle. Nothing may touch t's
 * flow after this call (the caller returns). */
/* Fails the attempt with `code` in the FAILED/DEAD event (RUNLANE_ERR_HTTP
 * for transport trouble, RUNLANE_ERR_PROVIDER for the provider's refusals,
 * RUNLANE_ERR_NOMEM...). */
void rl_turn_fail(rl_turn_t *t, runlane_err_t code, const char *error, int retriable);
void rl_turn_settle(rl_turn_t *t, rl_settle_t how, const char *error, int retriable,
                    int64_t delay_ms);
/* Completes the batch (rl_worker_complete: ack + stored reply + the
 * COMPLETED event, whose conversation_id/batch_id/attempt it sets); takes
 * `json`. Dead afterwards, except that a store outage retries it. */
void rl_turn_complete(rl_turn_t *t, cJSON *json);
/* busy.policy=interrupt: before a new create, moves the conversation's
 * pending messages into the batch (rl_worker_restart) and refreshes
 * t->msgs. 1 when the flow may go on; 0 when it must stop (lease lost: the
 * turn is dead; store trouble: `retry` runs again shortly). No-op (1)
 * without a pending interrupt. */
int rl_turn_absorb_interrupt(rl_turn_t *t, rl_turn_fn retry);
/* A side request without flow (a cancel): replaces the previous one. */
void rl_turn_aux(rl_turn_t *t, const char *method, const char *path);
/* A dead-lettered predecessor's provider turn (claim.settle_json, see
 * store.h claim) may still be active, e.g. a run waiting for tool outputs
 * that would refuse this batch's create: before this batch's first
 * request, cancel it and look at it (every 500 ms, at most
 * RL_SETTLE_PRIOR_POLLS times, then the attempt fails retriably) until it
 * ended, then run next(t). Returns 1 when it took the flow over, 0 when
 * there is nothing to settle (call next yourself). */
int rl_turn_settle_prior(rl_turn_t *t, rl_turn_fn next);
/* Conversation keys: a claim's conversation id that is not a provider id
 * (responses: "conv_...", assistants: "thread_...") is a key the app named.
 * Its provider conversation/thread is the store's mapping (conv_map); a key
 * with none gets one: POST /conversations (or /threads) with metadata
 * runlane_key and runlane_batch_id, then the id is recorded under the
 * lease's fencing token, and the mapping in effect afterwards is used (a
 * concurrent or earlier record wins; a lost lease records nothing and sends
 * nothing). Nothing is sent to a provider conversation before its mapping is
 * recorded, so one conversation at most ever receives a key's messages; a
 * worker that dies between the create and the record leaves an empty
 * orphan (findable by its metadata). Returns 1 when it took the flow over
 * (next(t) runs once t->provider_id is set), 0 when next(t) may run now. */
int rl_turn_resolve(rl_turn_t *t, rl_turn_fn next);
/* The provider conversation/thread id of the turn. */
const char *rl_turn_conv(const rl_turn_t *t);
/* 1 when `id` is a provider id for the backend (used as it is). */
int rl_is_provider_id(int assistants, const char *id);

/* Defers the batch: the provider is busy with a turn that is not ours. No
 * attempt is spent, but the deferrals of a batch are counted (in its
 * checkpoint): past RL_TURN_MAX_DEFERS (about 10 minutes of 1-3 s waits, a
 * provider lock's longest legitimate life) the attempt fails instead. */
#define RL_TURN_MAX_DEFERS 300
void rl_turn_defer(rl_turn_t *t);
/* Runs fn(t) after delay_ms (replaces the turn's timer). */
void rl_turn_timer(rl_turn_t *t, int64_t delay_ms, rl_turn_fn fn);

/* Writes t->ckpt. On a stale lease the turn is abandoned with a LEASE_LOST
 * event and 0 is returned; on a store error 0 is returned after arranging
 * `retry` to run again shortly; 1 on success. */
int rl_turn_checkpoint(rl_turn_t *t, rl_turn_fn retry);
/* Sets a string member of t->ckpt (NULL removes it). */
void rl_turn_ckpt_set(rl_turn_t *t, const char *key, const char *value);
const char *rl_turn_ckpt_get(const rl_turn_t *t, const char *key); /* NULL when absent */

/* Lease guard for requests that add input to the provider (a create with
 * input items, tool outputs, conversation items). 1 when the batch's lease
 * has a safe margin left (more than lease.ms/4), by a conservative local
 * estimate: the lease was set (claim) or extended (renew) after a drive of
 * the I/O thread we know the monotonic time of, so it lasts at least until
 * that time + lease.ms (store and local clocks only need the same rate, not
 * the same origin). Otherwise the batch is released (RL_SETTLE_RELEASE, no
 * attempt spent: the next owner reconciles from the checkpoint), nothing is
 * sent, the turn is dead and 0 is returned. Call it right before sending
 * (after the checkpoint write), then send with rl_turn_request_guarded.
 *
 * The check is made again for every attempt right before its bytes go out
 * (the connection is up: rl_http_set_gate), so a worker that stalled
 * between the first check and the send (SIGSTOP, a machine stall, a slow
 * connect, a queue behind the rate limit) releases instead of sending late.
 *
 * What remains possible: a request already on the wire when the worker
 * stalls, or held by a congested network or provider for longer than the
 * margin, can take effect after the lease expired and another owner
 * reconciled and sent the same input: a duplicate the provider cannot
 * fence. The guard narrows the window to requests that left with at least
 * lease.ms/4 of lease left and took longer than that to take effect; the
 * drive watchdog (rl_bk_drive) cancels and releases a guarded request still
 * unanswered when the margin is gone, but cannot recall bytes already on
 * the wire. */
int rl_turn_lease_ok(rl_turn_t *t);
/* rl_turn_request for a request the lease guard cleared. */
int rl_turn_request_guarded(rl_turn_t *t, const char *method, const char *path,
                            const cJSON *body, int flags, rl_turn_done_fn done,
                            rl_turn_event_fn on_event);

/* Starts a request whose completion calls done(t, res); t->req tracks it.
 * Streams feed t->sse, whose events go to on_event(t, event, data_json).
 * Past http.max.requests.per.attempt requests in this attempt, nothing is
 * sent: the attempt fails (the turn is dead) and 1 is returned. */
int rl_turn_request(rl_turn_t *t, const char *method, const char *path, const cJSON *body,
                    int flags, rl_turn_done_fn done, rl_turn_event_fn on_event);

/* A 2xx answer the flow cannot use (not a response/run object, no
 * status, a stream that ended without one...), or a step that cannot go on
 * (an endpoint the flow needs answered an error): counts toward
 * http.max.retries (t->poll_failures, for the whole attempt). Within the
 * bound, `retry` runs after the HTTP backoff; past it the attempt fails
 * (retriable, RUNLANE_ERR_PROVIDER) with `what` and the count. */
void rl_turn_unusable(rl_turn_t *t, const char *what, rl_turn_fn retry);
/* Adds a listing page's size to t->listed_bytes; past http.max.body.bytes
 * for the whole listing (pages whose items are all kept in t->scratch: the
 * responses backend's items after the snapshot), the attempt fails
 * (retriable) and 0 is returned. */
int rl_turn_listed(rl_turn_t *t, size_t page_bytes, const char *what);

/* Longest error kept for a batch (settle): the peer fills it. */
#define RL_TURN_ERROR_MAX 2048

/* ---- events ---- */

/* {"conversation_id","batch_id","attempt"} + `id_key`: t->turn_id when
 * id_key is non-NULL. The caller adds members and passes it to emit. */
cJSON *rl_turn_event_json(const rl_turn_t *t, const char *id_key);
/* Emits an event (takes `json`); secrets are scrubbed. */
void rl_turn_emit(rl_turn_t *t, runlane_event_type_t type, cJSON *json);
/* Emits RUN_STARTED once per turn id. */
void rl_turn_emit_started(rl_turn_t *t, const char *id_key, int adopted);
/* Emits TOOL_CALLS for t->calls, enters RL_TS_WAIT_TOOLS with the tool
 * deadline (timeout calls on_timeout). */
void rl_turn_raise_tools(rl_turn_t *t, const char *id_key, rl_turn_fn on_timeout);
/* Records the host's outputs; returns 1 when every pending call has one.
 * Outputs for unknown call ids, or when no calls are pending, become an
 * ERROR event (RUNLANE_ERR_INVALID_ARG) and are ignored. */
int rl_turn_take_outputs(rl_turn_t *t, const char *outputs_json);
/* Fills missing outputs with an error output (tool timeout). */
void rl_turn_fill_missing_outputs(rl_turn_t *t, const char *output);

/* ---- helpers ---- */

const char *rl_json_str(const cJSON *o, const char *key); /* "" when absent */
/* The instructions of the turn: the last message's own, else the conf's
 * (NULL when none). */
const char *rl_turn_instructions(const rl_turn_t *t);
/* The user texts to send for messages [from, n): one per message (items)
 * or one text joining them with "\n\n" (joined; none when from >= n);
 * returns an array of strings (caller deletes). */
cJSON *rl_turn_input_texts(const rl_turn_t *t, int from);
/* Contents of messages [a, b) joined with "\n\n" (caller frees). */
char *rl_turn_join(const rl_turn_t *t, int a, int b);
/* Metadata of a turn: the conf's + runlane_batch_id + runlane_message_ids
 * (the ids of messages [from, n) that fit in 512 characters). */
cJSON *rl_turn_metadata(const rl_turn_t *t, int from);
/* Adds every number of src into dst, recursively. */
void rl_usage_add(cJSON *dst, const cJSON *src);
/* Random delay for a deferral: 1..3 s. */
int64_t rl_defer_delay_ms(void);
/* Percent-encodes a path segment into a new string. */
char *rl_path_escape(const char *s);

#endif
