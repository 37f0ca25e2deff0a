/* client.h - the runlane_t handle, its event queue and its worker
 * (internal). */
#ifndef RUNLANE_CLIENT_H
#define RUNLANE_CLIENT_H

#include <pthread.h>
#include <stdint.h>

#include <curl/curl.h>

#include "conf.h"
#include "runlane.h"
#include "store.h"

struct runlane_event_s {
    runlane_event_type_t type;
    char *conversation_id; /* "" when none */
    char *batch_id;        /* "" when none */
    int attempt;
    char *json;            /* never NULL */
    runlane_err_t err;
    char *errmsg;          /* "" when none */
    struct runlane_event_s *next;
};

/* States of an in-flight batch held by this client. */
typedef enum rl_inflight_state {
    RL_IF_DELIVERED = 0, /* handed to the host or the backend */
    RL_IF_SETTLING = 1   /* an ack/fail is being written */
} rl_inflight_state_t;

typedef struct rl_inflight {
    rl_claim_t claim;
    rl_inflight_state_t state;
    void *turn; /* the backend's state of this batch's turn (HTTP backends) */
    /* busy.policy=interrupt: the backend's interrupt op was called for this
     * claim (once per claim, so a conversation that keeps receiving
     * messages cannot keep its turn from ever finishing). I/O thread only. */
    int interrupted;
    /* When the claim was sent (rl_mono_ms): the lease runs until at least
     * this + lease.ms, or a later renewal's (runlane_t.renewed_from_ms). */
    int64_t claimed_from_ms;
    struct rl_inflight *next;
} rl_inflight_t;

/* A backend runs turns for claimed batches. The custom backend is no
 * backend at all (ops NULL): the batch becomes a RUNLANE_EVENT_BATCH and the
 * host settles it. HTTP backends run every callback on the I/O thread and
 * settle through rl_worker_settle(); they add their curl easy handles to
 * rl->multi, which the worker polls. */
typedef struct rl_backend rl_backend_t;
typedef struct rl_backend_ops {
    const char *name;
    /* On runlane_start (I/O thread not yet running); NULL + error set on
     * failure. */
    rl_backend_t *(*create)(runlane_t *rl);
    /* A batch was claimed (f is tracked already): start or reconcile its
     * turn. f->claim.ckpt_json holds the last checkpoint of the batch. */
    void (*start)(rl_backend_t *bk, rl_inflight_t *f);
    /* After every wake: drive transfers and timers. Returns the next
     * monotonic time (rl_mono_ms) it needs to be driven at, or INT64_MAX. */
    int64_t (*drive)(rl_backend_t *bk);
    /* The host answered a TOOL_CALLS event of f. */
    void (*tool_outputs)(rl_backend_t *bk, rl_inflight_t *f, const char *outputs_json);
    /* busy.policy=interrupt: messages arrived for f's conversation while
     * its turn runs (renew reports them) and the batch has room for more.
     * Called at most once per claim (f->interrupted). The backend cancels
     * the provider turn; once the cancel is confirmed it calls
     * rl_worker_restart(rl, f) and starts the turn again with
     * f->claim.messages_json (the batch with the new messages). If the turn
     * completes before the cancel takes, it just completes: the new
     * messages make the next batch. May be NULL (no interrupts). */
    void (*interrupt)(rl_backend_t *bk, rl_inflight_t *f);
    /* f goes away (lease lost or stop): abort its transfers, free f->turn.
     * Must not settle f. */
    void (*abandon)(rl_backend_t *bk, rl_inflight_t *f);
    void (*destroy)(rl_backend_t *bk);
} rl_backend_ops_t;

/* How a backend ends a batch (rl_worker_settle). */
typedef enum rl_settle {
    RL_SETTLE_ACK = 0,   /* turn done: the batch is acked */
    RL_SETTLE_FAIL = 1,  /* attempt failed (retriable or not) */
    RL_SETTLE_DEFER = 2, /* provider busy with a turn we do not own: retry
                            after delay_ms, no attempt spent */
    RL_SETTLE_RELEASE = 3
} rl_settle_t;

/* A host request queued for the I/O thread. */
typedef struct rl_cmd {
    char *batch_id;
    char *json;
    struct rl_cmd *next;
} rl_cmd_t;

/* Counters, updated with __atomic builtins. */
typedef struct rl_metrics {
    int64_t enqueued, enqueue_duplicates, enqueue_errors, enqueue_round_trips;
    int64_t batches_claimed, batches_acked, batches_failed, batches_dead;
    int64_t messages_claimed;
    int64_t leases_renewed, leases_lost, leases_recovered, leases_released;
    int64_t store_errors, events_emitted;
    int64_t replies_redelivered, replies_confirmed, turns_interrupted;
} rl_metrics_t;

struct runlane_s {
    runlane_conf_t *conf;
    rl_policy_t pol;
    rl_store_opts_t sopts;
    char worker_id[160];
    int concurrency;
    size_t max_pending_events; /* no claims while ev_count is at least this */
    int poll_ms, recover_ms, renew_ms;
    int wake_coalesce_ms; /* worker.wake.coalesce.ms */
    int busy_interrupt; /* busy.policy=interrupt (and the backend can) */

    /* Store for calls from host threads, serialized by api_mu. */
    pthread_mutex_t api_mu;
    rl_store_t *api_store;
    /* runlane_enqueue calls waiting to be sent (group commit, client.c),
     * FIFO; enq_busy while one of them sends a group. Under enq_mu. */
    pthread_mutex_t enq_mu;
    pthread_cond_t enq_cond;
    struct rl_enq_req *enq_head, **enq_tail;
    int enq_busy;

    /* Event queue. */
    pthread_mutex_t ev_mu;
    pthread_cond_t ev_cond;
    runlane_event_t *ev_head, *ev_tail;
    size_t ev_count;
    int ev_fd;
    runlane_wake_cb wake_cb;
    void *wake_opaque;

    /* Worker (I/O thread) state, guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t settle_cond; /* signaled when an in-flight batch ends */
    pthread_t thread;
    int started, stopping, finished;
    runlane_stop_mode_t stop_mode;
    int64_t stop_deadline; /* rl_mono_ms */
    rl_inflight_t *inflight;
    int ninflight;
    rl_store_t *io_store; /* used by the I/O thread only */
    /* When the last renew round that the store answered was sent
     * (rl_mono_ms; I/O thread only): every lease still held runs until at
     * least this + lease.ms (refused ones were dropped). */
    int64_t renewed_from_ms;
    CURLM *multi;         /* every HTTP transfer of the I/O thread */
    struct rl_ioloop *loop; /* the I/O thread's wait: multi's sockets + wakes */
    int claim_now;          /* a wake asked the I/O thread to look for due work (mu) */
    const rl_backend_ops_t *backend; /* NULL: custom backend */
    rl_backend_t *bk;
    rl_cmd_t *cmds;       /* tool outputs from host threads, under mu */

    rl_metrics_t m;
};

/* events.c */
runlane_event_t *rl_event_new(runlane_event_type_t type, const char *conv, const char *batch_id,
                              int attempt, const char *json, runlane_err_t err,
                              const char *errmsg);
/* Queues an event (takes ownership); wakes pollers, the fd and the cb. */
void rl_event_push(runlane_t *rl, runlane_event_t *ev);
int rl_events_init(runlane_t *rl);
/* Removes BATCH events of `batch_id` not yet polled (its lease was given
 * back: running it now could run it twice). */
void rl_events_drop_batch(runlane_t *rl, const char *batch_id);
void rl_events_destroy(runlane_t *rl);

/* worker.c */
void *rl_worker_main(void *arg);
void rl_worker_wake(runlane_t *rl);
/* I/O thread only: ends f's batch in the store and stops tracking it (f is
 * freed; the backend must have released f->turn). For RL_SETTLE_FAIL,
 * `error` is kept in the store and a FAILED or DEAD event is emitted.
 * Returns the store's result (RUNLANE_ERR_STALE when the lease was lost). */
runlane_err_t rl_worker_settle(runlane_t *rl, rl_inflight_t *f, rl_settle_t how,
                               const char *error, int retriable, int64_t delay_ms);
/* rl_worker_settle(RL_SETTLE_FAIL) with the error code the FAILED/DEAD
 * event carries (RUNLANE_ERR_HTTP for network trouble, RUNLANE_ERR_PROVIDER
 * for the provider's refusals, RUNLANE_ERR_TIMEOUT...). */
runlane_err_t rl_worker_fail(runlane_t *rl, rl_inflight_t *f, runlane_err_t code, const char *error,
                             int retriable);
/* The BATCH event JSON of claim c (custom backend; free), or NULL when its
 * stored messages are unreadable (tests/fuzz/fuzz_redis_reply.c feeds it
 * claims decoded from arbitrary replies). */
char *rl_worker_batch_json(const rl_claim_t *c);
/* I/O thread only: records a checkpoint of f's turn (e.g. the provider's
 * response or run id) so a later owner can reconcile. */
runlane_err_t rl_worker_checkpoint(runlane_t *rl, rl_inflight_t *f, const char *ckpt_json);
/* I/O thread only (HTTP backends): f's turn completed. Acks the batch and
 * keeps `completed_json` (a JSON object: the COMPLETED event payload) as
 * its unconfirmed reply in one atomic store step, then emits
 * RUNLANE_EVENT_COMPLETED with it. Its "conversation_id", "batch_id" and
 * "attempt" members are set from f. Until the host confirms it with
 * runlane_reply_ack(), any worker emits it again every reply.redeliver.ms
 * (with "redelivered":true), for at most reply.ttl.ms.
 * Like rl_worker_settle: RUNLANE_OK (f freed), RUNLANE_ERR_STALE (lease
 * lost: nothing stored, no event, f freed), RUNLANE_ERR_STORE (f still
 * held: retry shortly; should the failed call have been written after all,
 * the retry gets RUNLANE_ERR_STALE and the reply arrives by redelivery).
 * RUNLANE_ERR_INVALID_ARG (completed_json is not a JSON object) and
 * RUNLANE_ERR_NOMEM leave f held with nothing written. */
runlane_err_t rl_worker_complete(runlane_t *rl, rl_inflight_t *f, const char *completed_json);
/* I/O thread only (HTTP backends, busy.policy=interrupt): after the
 * provider confirmed the cancel of f's turn, moves the conversation's
 * pending messages into f's batch (same batch id and token, within
 * batch.max.messages / batch.max.bytes) and replaces
 * f->claim.messages_json with the whole batch, which the restarted turn
 * sends. RUNLANE_ERR_STALE when the lease was lost (handle it as for
 * rl_worker_checkpoint); RUNLANE_ERR_STORE: retry shortly. f stays held in
 * every case. */
runlane_err_t rl_worker_restart(runlane_t *rl, rl_inflight_t *f);
/* Backend registry (backend_*.c); NULL for unknown names. */
const rl_backend_ops_t *rl_backend_find(const char *name);

#define RL_ADD(rl, field, n) __atomic_add_fetch(&(rl)->m.field, (n), __ATOMIC_RELAXED)
#define RL_GET(rl, field) __atomic_load_n(&(rl)->m.field, __ATOMIC_RELAXED)

#endif
