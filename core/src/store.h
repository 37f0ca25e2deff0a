/*
 * store.h - the queue state behind one interface (internal).
 *
 * Two implementations pass the same conformance suite (tests/c/test_store.c):
 * store_redis.c (hiredis + one Lua script per operation) and store_memory.c.
 *
 * Model, per conversation C:
 *   pending  ordered list of message records (JSON objects, see below)
 *   batch    the in-flight batch: records moved from pending at claim; it
 *            stays the same batch (same batch id) across retries, so that a
 *            provider turn can be reconciled with it after a crash
 *   meta     token (fencing token of the current lease, "" when none),
 *            fence (monotonic counter the tokens come from), owner,
 *            attempts (deliveries of the batch), stalls (of them, the
 *            ones whose lease expired: worker deaths), batch_id, lease_until_ms, first_ms (arrival of the
 *            oldest pending message), last_ms (last activity: message or
 *            touch), pending bytes/count, ckpt (checkpoint JSON of the
 *            provider turn), last_error
 * per partition (C's partition = fnv1a32(C) % partitions):
 *   ready    C -> due time (ms); only conversations with work and no lease
 *   leases   C -> lease expiry (ms)
 *   dead     dead letters (id = batch id) in order of death
 *   replies  unconfirmed replies (id = batch id): the COMPLETED event JSON,
 *            its next delivery time and its expiry (see ack_reply)
 *   counters
 * per queue:
 *   rate     the requests-per-minute token bucket (see rate_take)
 *
 * Batch ids look like "b<ms>-<p>-<seq>" where p is the partition (0 in the
 * memory store), so that an id alone finds its partition (reply_ack).
 *
 * Message record (stored and delivered as-is):
 *   {"id":"m<ms>-<p>-<seq>","ts_ms":<ms>,"content":"...",
 *    "instructions":"..."?, "metadata":{...}?}
 *
 * Due time of a conversation with pending messages and no lease:
 *   at once when pending count >= max_messages or bytes >= max_bytes,
 *   else min(last_ms + window_ms, first_ms + max_wait_ms), never before now
 *   when computed at ack/fail time.
 *
 * Time comes from the store (Redis TIME; the memory store's clock), so
 * workers on machines with skewed clocks agree.
 *
 * Every operation after claim carries the token; a token that is not the
 * conversation's current one is refused with RUNLANE_ERR_STALE and changes
 * nothing.
 *
 * Thread-safety: one store object is used by one thread at a time; the
 * client opens one for its I/O thread and one, behind a mutex, for calls
 * from the host's threads. The memory store's data is shared by every
 * store object opened on the same name in the process.
 *
 * Functions return RUNLANE_OK or a negative runlane_err_t and set the
 * thread's error detail (rl_error_set) on failure.
 */
#ifndef RUNLANE_STORE_H
#define RUNLANE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "runlane.h"

/* The batching and retry policy a call runs under (from the client conf). */
typedef struct rl_policy {
    int64_t window_ms;       /* batch.window.ms */
    int64_t max_wait_ms;     /* batch.max.wait.ms */
    int64_t max_messages;    /* batch.max.messages */
    int64_t max_bytes;       /* batch.max.bytes (sum of content bytes) */
    int64_t lease_ms;        /* lease.ms */
    int64_t max_attempts;    /* max.attempts */
    int64_t max_stalls;      /* max.stalls */
    int64_t backoff_base_ms; /* backoff.base.ms */
    int64_t backoff_max_ms;  /* backoff.max.ms */
    double backoff_jitter;   /* backoff.jitter, 0..1 */
    int64_t idem_ttl_ms;     /* idempotency.ttl.ms */
    int64_t reply_redeliver_ms; /* reply.redeliver.ms */
    int64_t reply_ttl_ms;       /* reply.ttl.ms */
} rl_policy_t;

/* A claimed batch. Strings are owned (free with rl_claim_free). */
typedef struct rl_claim {
    char *conversation_id;
    char batch_id[RUNLANE_ID_MAX];
    char token[32];          /* fencing token, decimal */
    int attempt;             /* 1 for the first delivery of this batch */
    int64_t lease_until_ms;  /* store time */
    char *messages_json;     /* JSON array of message records, in order */
    char *ckpt_json;         /* last checkpoint of this batch, or NULL */
    char *settle_json;       /* checkpoint of the conversation's last
                                dead-lettered batch, whose provider turn
                                may still be active, or NULL (see claim) */
} rl_claim_t;

void rl_claim_free(rl_claim_t *claim);

/* An unconfirmed reply handed out by rl_store_ops.reply_claim. */
typedef struct rl_reply {
    char batch_id[RUNLANE_ID_MAX];
    char *json; /* the COMPLETED event JSON given to ack_reply (owned) */
} rl_reply_t;

/* Frees n replies' strings and the array itself (NULL is ignored). */
void rl_replies_free(rl_reply_t *replies, int n);

/* Result of rl_store_ops.fail */
typedef enum rl_fail_outcome {
    RL_FAIL_RETRY = 0, /* back in ready after a backoff */
    RL_FAIL_DEAD = 1   /* moved to the dead letters */
} rl_fail_outcome_t;

typedef struct rl_store rl_store_t;

/* Modes of rl_store_ops.conv_map */
enum { RL_MAP_GET = 0, RL_MAP_RECORD = 1, RL_MAP_SET = 2, RL_MAP_FORGET = 3 };

typedef struct rl_store_ops {
    const char *name;

    /* Appends a message. `conv` is validated by the caller. `record_tail` is
     * the record's JSON object WITHOUT id and ts_ms, e.g.
     * {"content":"hi","instructions":"x"}; the store inserts "id" and
     * "ts_ms" at the front. `content_bytes` counts toward max_bytes.
     * `idem_key` NULL or a key: a key already used for this conversation
     * within idem_ttl_ms returns the first id with *dup_out = 1 and stores
     * nothing. If the conversation has no lease, (re)computes its due time
     * in ready; a batch waiting for its retry keeps its backoff due time.
     * Writes the id (< RUNLANE_ID_MAX bytes) into id_out. */
    int (*enqueue)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                   const char *record_tail, int64_t content_bytes,
                   const char *idem_key, char *id_out, int *dup_out);

    /* Same as `enqueue` for n messages, pipelined; all or nothing is NOT
     * required (each message is atomic on its own). ids_out[i] must hold
     * RUNLANE_ID_MAX bytes each. */
    int (*enqueue_many)(rl_store_t *st, const rl_policy_t *pol, size_t n,
                        const char *const *convs,
                        const char *const *record_tails,
                        const int64_t *content_bytes,
                        const char *const *idem_keys,
                        char (*ids_out)[RUNLANE_ID_MAX], int *dups_out);

    /* Activity without a message: last_ms = now; if pending is non-empty and
     * there is no lease nor batch waiting for a retry, recomputes the due
     * time. */
    int (*touch)(rl_store_t *st, const rl_policy_t *pol, const char *conv);

    /* Earliest due time in ready over all partitions (store ms), or
     * INT64_MAX when ready is empty; *now_out receives the store's now. */
    int (*next_due)(rl_store_t *st, int64_t *due_out, int64_t *now_out);

    /* Claims up to `max` conversations whose due time has come, oldest due
     * first: if the conversation has a batch (a retry), that batch is
     * claimed again with attempts + 1; otherwise up to max_messages /
     * max_bytes records move from pending to a new batch (at least one
     * record, even if it alone exceeds max_bytes) with a new batch id and
     * attempts = 1. A new token (fence + 1) is set with owner and
     * lease_until = now + lease_ms; the conversation leaves ready and enters
     * leases. Two concurrent claimers never get the same conversation.
     * *out is an array of *n_out claims (free each with rl_claim_free, then
     * free(*out)).
     * settle: when a batch is dead-lettered (fail or recover) with a
     * checkpoint, that checkpoint is kept on the conversation as "settle"
     * (its provider turn may still be active, e.g. a run waiting for tool
     * outputs) and every claim returns it (settle_json) until a checkpoint
     * or an ack of a later batch clears it: the HTTP backends settle
     * (cancel) that turn before the batch's first checkpoint. A later dead
     * letter without a checkpoint leaves it as it is. */
    int (*claim)(rl_store_t *st, const rl_policy_t *pol, const char *owner,
                 int max, rl_claim_t **out, int *n_out);

    /* Extends the leases of n claims to now + lease_ms, pipelined.
     * ok_out[i] = 1 when renewed, 0 when the token is stale (the lease was
     * lost). Updates claims[i].lease_until_ms. pending_out (may be NULL)
     * receives, for each renewed claim, how many messages wait in the
     * conversation's pending list beyond the in-flight batch (0 when
     * stale): busy.policy=interrupt reacts to it. */
    int (*renew)(rl_store_t *st, const rl_policy_t *pol, rl_claim_t *claims,
                 int n, int *ok_out, int64_t *pending_out);

    /* Moves pending records, oldest first, into the leased batch while the
     * batch stays within max_messages / max_bytes (it may not grow at all);
     * the batch keeps its batch id, token, attempts and checkpoint. Used
     * to restart an interrupted turn with everything (busy.policy=
     * interrupt). *messages_json_out (free()) receives the whole batch's
     * messages, in order. */
    int (*extend_batch)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                        const char *token, char **messages_json_out);

    /* Records `ckpt_json` (e.g. the provider's run id) on the batch and
     * clears the conversation's settle (see claim). */
    int (*checkpoint)(rl_store_t *st, const char *conv, const char *token,
                      const char *ckpt_json);

    /* Done: deletes the batch, clears the lease, attempts = 0, counts it;
     * if pending is non-empty the conversation is due again (see above). */
    int (*ack)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
               const char *token);

    /* `ack` and, in the same atomic step, keeps `reply_json` (the turn's
     * COMPLETED event) as the unconfirmed reply of `batch_id` in the
     * conversation's partition: due for redelivery at now +
     * reply_redeliver_ms, dropped at now + reply_ttl_ms. A `batch_id` that
     * is not the leased batch's is refused like a stale token. */
    int (*ack_reply)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                     const char *token, const char *batch_id, const char *reply_json);

    /* Failed attempt. Let a = attempts - stalls (the failed attempts,
     * this one included: an expired lease is not an attempt). If
     * retriable and a < max_attempts: the batch stays, the lease is
     * cleared, due = now + backoff(a) where
     * backoff(a) = min(cap, base * 2^(a-1)) * (1 - jitter * U[0,1)).
     * Otherwise the batch becomes a dead letter {id=batch_id,
     * conversation_id, batch_id, attempts, stalls, error, dead_at_ms,
     * messages} and the conversation moves on to its pending messages. */
    int (*fail)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                const char *token, const char *error, int retriable,
                rl_fail_outcome_t *outcome_out);

    /* Gives the lease back without spending an attempt (attempts - 1): the
     * batch is due at once for any worker. */
    int (*release)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                   const char *token);

    /* Like release but due at now + delay_ms, keeping the batch: used when
     * the provider is busy with a turn we do not own. */
    int (*defer)(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                 const char *token, int64_t delay_ms);

    /* Expired leases (lease_until <= now): the token is cleared (so the old
     * owner's writes are refused) and the batch is due at once. An expired
     * lease means its worker died or stalled, not that the batch is bad:
     * it counts as a stall (stalls + 1), not as an attempt (the next claim
     * is still attempts + 1, but fail leaves stalls out). When stalls
     * exceeds max_stalls the batch is dead-lettered with error "lease
     * expired N times, more than max.stalls (M): the workers holding the
     * batch died or stalled". *recovered_out counts every expired lease
     * (dead-lettered ones included); *dead_out the dead-lettered. */
    int (*recover)(rl_store_t *st, const rl_policy_t *pol, int *recovered_out,
                   int *dead_out);

    /* JSON status; see runlane_status(). */
    int (*status)(rl_store_t *st, const char *conv, char **json_out);

    /* status totals: "conversations" counts conversations with pending
     * messages or a batch (in flight or waiting for a retry). */
    int (*dead_list)(rl_store_t *st, size_t offset, size_t limit,
                     char **json_out);
    /* Retry puts the dead batch's records in front of pending (in order),
     * attempts = 0, due at once if no lease. dead_id NULL means every dead
     * letter (retry and purge). RUNLANE_ERR_NOT_FOUND for an unknown id. */
    int (*dead_retry)(rl_store_t *st, const rl_policy_t *pol,
                      const char *dead_id, size_t *count_out);
    int (*dead_purge)(rl_store_t *st, const char *dead_id, size_t *count_out);

    /* Up to `max` unconfirmed replies whose delivery time has come, over
     * every partition, earliest first; each one's next delivery moves to
     * now + reply_redeliver_ms in the same atomic step, so concurrent
     * claimers never hand out the same reply at once. Replies past their
     * expiry are dropped instead. *out is an array of *n_out replies (free
     * with rl_replies_free). */
    int (*reply_claim)(rl_store_t *st, const rl_policy_t *pol, int max,
                       rl_reply_t **out, int *n_out);

    /* Confirms (deletes) the unconfirmed reply of `batch_id`.
     * RUNLANE_ERR_NOT_FOUND when there is none: unknown id, already
     * confirmed, or expired. */
    int (*reply_ack)(rl_store_t *st, const char *batch_id);

    /* The shared requests-per-minute budget (rate.limit.rpm): one token
     * bucket per queue (every client of the store shares it), in one
     * hash-tagged key <prefix>:{rate}:bucket (the memory store: in the
     * shared state of its name). Capacity (the burst) is one second's worth
     * of requests, rpm / 60, but at least 1; it refills continuously at
     * rpm / 60000 tokens per ms, on the store's clock, and a bucket not
     * seen before starts full. Atomically: a whole token is taken and
     * *wait_ms_out = 0, or nothing is taken and *wait_ms_out (> 0) is how
     * long until the next whole token (another client may take it first).
     * Any 60 s window thus sees at most rpm + burst takes. rpm <= 0: no
     * limit (*wait_ms_out = 0, nothing stored). Clients should agree on
     * rpm: each call refills and caps with its own. The key expires once
     * the bucket would be full again. */
    int (*rate_take)(rl_store_t *st, int64_t rpm, int64_t *wait_ms_out);

    /* The conversation key -> provider conversation id map (one hash per
     * partition, <prefix>:{p}:convmap, that never expires: unlike meta it
     * must outlive idle periods). `mode`:
     *   RL_MAP_GET     *out = the mapping, or NULL when there is none
     *   RL_MAP_RECORD  under the lease `token`: maps conv to `provider_id`
     *                  unless conv is already mapped; *out = the mapping in
     *                  effect afterwards (the earlier one if there was one).
     *                  A stale token is refused (RUNLANE_ERR_STALE) and
     *                  changes nothing: a worker that lost its lease while
     *                  creating a provider conversation never records it.
     *   RL_MAP_SET     maps conv to `provider_id` whatever was there (an
     *                  import by the host); *out = the previous mapping
     *   RL_MAP_FORGET  removes the mapping; *out = the removed one or NULL
     * *out (may be NULL for SET/FORGET) is malloc'ed. */
    int (*conv_map)(rl_store_t *st, int mode, const char *conv, const char *token,
                    const char *provider_id, char **out);

    void (*destroy)(rl_store_t *st);

    /* ---- Optional (NULL when the store has none; the memory store's
     * enqueue wakes the worker of its process directly). Cross-process
     * wake-up: every operation that makes a conversation ready (enqueue,
     * fail, release, recover, dead_retry, an ack with messages waiting)
     * announces its due time on a per-partition wake key; a claim that
     * leaves due conversations behind announces them too. An idle worker
     * waits for an announcement on a dedicated store object (wait_*),
     * never polls, and looks at heads every few seconds as a safety net. */

    /* Earliest due time in ready, earliest lease expiry and (replies != 0)
     * earliest reply delivery, over every partition (store ms, INT64_MAX:
     * none); *now_out the store's now. One round trip. */
    int (*heads)(rl_store_t *st, int replies, int64_t *ready_out, int64_t *lease_out,
                 int64_t *reply_out, int64_t *now_out);

    /* After a claim: 1 with the due time (store ms) of the first
     * conversation the claim left in ready (<= now: more is due) and the
     * store's now; 0 when the claim did not see one. */
    int (*claim_hint)(rl_store_t *st, int64_t *due_out, int64_t *now_out);

    /* Waits, without blocking the caller, for one announcement: sends the
     * blocking pop unless one is outstanding (the store's own timeout is
     * timeout_ms) and gives the socket to watch for its reply. */
    int (*wait_arm)(rl_store_t *st, int64_t timeout_ms, int *fd_out);

    /* Reads the outstanding pop's reply if it arrived, without blocking:
     * 1 with an announcement taken (its partition and due time, store ms;
     * conv_out (cap bytes) the conversation it names, claim_named's to
     * claim, or "" for a due time: claim what is due then), 0 when the pop
     * timed out or none is outstanding, 2 when no reply yet. An error drops
     * the connection (the next wait_arm reconnects). */
    int (*wait_take)(rl_store_t *st, int *part_out, int64_t *due_out, char *conv_out,
                     size_t cap);

    /* Announces (again) that partition `part` has a conversation due at
     * `due` (conv: the one wait_take named, or NULL / ""): a worker that
     * took an announcement it cannot act on passes it on. */
    int (*wait_give)(rl_store_t *st, int part, int64_t due, const char *conv);

    /* Conversations in one state, for the dashboard. `state`: "waiting"
     * (pending messages, batch window not over), "ready" (due, not yet
     * claimed), "leased" (in flight), "backoff" (a batch waiting for its
     * retry). Ordered by due time (leased: lease expiry), oldest first,
     * over every partition. `search` NULL or "" keeps all, else the ids
     * containing it (bytes). At most `scan` members of each partition are
     * looked at, a bound on the store's work per call. JSON (malloc'ed):
     * {"now_ms","total","truncated","items":[{"conversation_id","state",
     * "score_ms","attempts","owner","last_error"}]}: items offset..
     * offset+limit-1 of the matches; total counts the matches among those
     * scanned, truncated says some members were not scanned. The redis
     * store counts "ready" and "leased" without a search exactly in
     * O(log N); for the others it stops looking once more than
     * offset+limit matched and 1,000 members were looked at (truncated),
     * so a call's work does not grow with the queue. */
    int (*conv_list)(rl_store_t *st, const char *state, const char *search, size_t offset,
                     size_t limit, size_t scan, char **json_out);

    /* Up to `max` pending records (oldest first) and up to `max` records
     * of the batch of one conversation, with the current lease token (""
     * when none): {"pending":[...],"batch":[...],"token":"..."}
     * (malloc'ed). Read only. */
    int (*conv_peek)(rl_store_t *st, const char *conv, size_t max, char **json_out);

    /* Optional (with wait_*): claim after wait_take named conversation
     * `conv` of partition `part`: that one if it is still due, then up to
     * max - 1 others announced on the partition and not yet taken by a
     * worker (as claim, in one round trip; no claim_hint). */
    int (*claim_named)(rl_store_t *st, const rl_policy_t *pol, const char *owner, int max,
                       int part, const char *conv, rl_claim_t **out, int *n_out);

    /* Optional (NULL: no round trip to share): calls on conversations of
     * one pipeline group may go out in one pipelined round trip, which
     * fails as a whole (a node out of reach). On one server every
     * conversation is in group 0; on a Cluster a group is a partition, so
     * that a master that is down fails only its own partitions' calls. */
    int (*pipeline_group)(rl_store_t *st, const char *conv);
} rl_store_ops_t;

struct rl_store {
    const rl_store_ops_t *ops;
};

/* Store options from the conf. */
/* TLS to Redis (rediss://): the redis.tls.* keys. NULL or "" = not set. */
typedef struct rl_tls_opts {
    const char *ca_file;      /* redis.tls.ca.file (default: the system's trust store) */
    const char *ca_dir;       /* redis.tls.ca.dir */
    const char *cert_file;    /* redis.tls.cert.file (mutual TLS, with key_file) */
    const char *key_file;     /* redis.tls.key.file */
    const char *server_name;  /* redis.tls.server.name (default: the URL's host) */
    int insecure_skip_verify; /* redis.tls.insecure.skip.verify */
} rl_tls_opts_t;

typedef struct rl_store_opts {
    const char *url;          /* "memory", "memory://name", "redis://..." */
    const char *prefix;       /* key.prefix */
    int partitions;           /* partitions (0: 1, or 12 on a Redis Cluster) */
    int connect_timeout_ms;   /* redis.connect.timeout.ms */
    int command_timeout_ms;   /* redis.command.timeout.ms */
    rl_tls_opts_t tls;        /* used with rediss:// only */
    int wait_replicas;        /* redis.wait.replicas (0: no WAIT) */
    int wait_timeout_ms;      /* redis.wait.timeout.ms */
} rl_store_opts_t;

/* Opens the store named by opts->url. NULL on failure (error detail set). */
rl_store_t *rl_store_open(const rl_store_opts_t *opts);

rl_store_t *rl_store_memory_open(const rl_store_opts_t *opts);
rl_store_t *rl_store_redis_open(const rl_store_opts_t *opts);

/* Partition of a conversation: fnv1a32(conv) % partitions. */
int rl_partition_of(const char *conv, int partitions);

/* Partition p of a batch id "b<ms>-<p>-<seq>", or -1 when the id is not
 * of that form or p is not below `partitions`. */
int rl_batch_partition(const char *batch_id, int partitions);

/* backoff(a) per the `fail` contract; u in [0,1). */
int64_t rl_backoff_ms(const rl_policy_t *pol, int64_t attempts, double u);

#endif
