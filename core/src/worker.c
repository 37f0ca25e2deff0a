/* worker.c - the client's I/O thread.
 *
 * One thread per client: it claims due conversations up to
 * worker.concurrency, renews every lease it holds in one pipelined round
 * trip, recovers expired leases of dead workers, and hands batches to the
 * backend. It sleeps in rl_ioloop_wait (ioloop.h) so that HTTP transfers
 * and wake-ups from other threads share one wait. Host code never
 * runs here: everything reaches the host as events.
 *
 * With an HTTP backend it also delivers unconfirmed replies again: a
 * completed turn's COMPLETED event is stored with the batch's ack
 * (rl_worker_complete) until the host confirms it (runlane_reply_ack), and
 * every RL_REPLY_CLAIM_MS the worker takes the replies that are due again,
 * whoever produced them (so a reply lost in a crash of its worker or host
 * still arrives). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "internal.h"
#include "ioloop.h"

/* How often unconfirmed replies are looked for, and how many one look
 * takes (a full look is followed by another at once). */
#define RL_REPLY_CLAIM_MS 2000
#define RL_REPLY_CLAIM_MAX 100
/* With the store's wake-up (Redis): longest wait between two looks at the
 * heads of ready/leases/replies, a safety net for a lost announcement. At
 * most lease.ms / 2, so that every lease taken after one look is seen by
 * the next before it can expire (recovery stays on time). */
#define RL_IDLE_TICK_MS 10000

void rl_worker_wake(runlane_t *rl) {
    pthread_mutex_lock(&rl->mu);
    if (rl->started && rl->loop && rl->finished == 0) {
        rl->claim_now = 1;
        rl_ioloop_wake(rl->loop);
    }
    pthread_mutex_unlock(&rl->mu);
}

static void emit_error(runlane_t *rl, runlane_err_t rc, const char *what) {
    char msg[700];
    snprintf(msg, sizeof(msg), "%s: %s", what, runlane_error_message(runlane_error_last()));
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"error\":");
    rl_buf_json_str(&b, msg);
    rl_buf_printf(&b, ",\"code\":\"%s\"}", runlane_err2name(rc));
    char *json = rl_buf_take(&b);
    rl_event_push(rl, rl_event_new(RUNLANE_EVENT_ERROR, NULL, NULL, 0, json, rc, msg));
    free(json);
}

/* 1 when a stored batch reads as the BATCH event promises: valid UTF-8, a
 * JSON array (nothing after it) of message records {"id":string,
 * "content":string,"ts_ms":number,"instructions"?:string,
 * "metadata"?:object}. */
static int batch_messages_valid(const char *messages_json) {
    if (!messages_json || !rl_utf8_valid(messages_json, strlen(messages_json))) return 0;
    cJSON *arr = cJSON_ParseWithOpts(messages_json, NULL, 1);
    int ok = cJSON_IsArray(arr);
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(m, "instructions");
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(m, "metadata");
        if (!cJSON_IsObject(m) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "id")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "content")) ||
            !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "ts_ms")) ||
            (ins && !cJSON_IsString(ins) && !cJSON_IsNull(ins)) ||
            (md && !cJSON_IsObject(md) && !cJSON_IsNull(md)))
            ok = 0;
    }
    cJSON_Delete(arr);
    return ok;
}

char *rl_worker_batch_json(const rl_claim_t *c) {
    if (!batch_messages_valid(c->messages_json)) return NULL;
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"conversation_id\":");
    rl_buf_json_str(&b, c->conversation_id);
    rl_buf_puts(&b, ",\"batch_id\":");
    rl_buf_json_str(&b, c->batch_id);
    rl_buf_printf(&b, ",\"attempt\":%d,\"messages\":%s}", c->attempt, c->messages_json);
    return rl_buf_take(&b);
}

/* Custom backend: the batch itself is the event; the host settles it. A
 * batch damaged in the store never reaches the host as broken JSON: it is
 * dead-lettered (no retry can repair it). */
static void deliver_batch(runlane_t *rl, rl_inflight_t *f) {
    const rl_claim_t *c = &f->claim;
    char *json = rl_worker_batch_json(c);
    if (!json) {
        rl_worker_fail(rl, f, RUNLANE_ERR_INTERNAL,
                       "the stored batch is unreadable (not a JSON array of message records)", 0);
        return;
    }
    rl_event_push(rl, rl_event_new(RUNLANE_EVENT_BATCH, c->conversation_id, c->batch_id,
                                   c->attempt, json, RUNLANE_OK, NULL));
    free(json);
}

/* Claims up to the free concurrency (named: the conversation a wake-up
 * announced, on partition part, and others announced; else what is due).
 * Returns how many were claimed, or -1 on a store error. */
static int claim_some(runlane_t *rl, int part, const char *named) {
    pthread_mutex_lock(&rl->mu);
    int room = rl->concurrency - rl->ninflight;
    pthread_mutex_unlock(&rl->mu);
    if (room <= 0) return named ? -2 : 0;
    /* A host that does not poll: no new turns (rl_event_pop wakes us). */
    pthread_mutex_lock(&rl->ev_mu);
    int backlog = rl->ev_count >= rl->max_pending_events;
    pthread_mutex_unlock(&rl->ev_mu);
    if (backlog) return named ? -2 : 0; /* (-2: named, not looked at) */
    rl_claim_t *claims = NULL;
    int n = 0;
    int64_t sent = rl_mono_ms(); /* the leases start after this */
    runlane_err_t rc =
        named ? rl->io_store->ops->claim_named(rl->io_store, &rl->pol, rl->worker_id, room, part,
                                               named, &claims, &n)
              : rl->io_store->ops->claim(rl->io_store, &rl->pol, rl->worker_id, room, &claims, &n);
    if (rc && n == 0) return -1;
    for (int i = 0; i < n; i++) {
        rl_inflight_t *f = calloc(1, sizeof(*f));
        if (!f) {
            /* Cannot track it: give it back so another worker takes it. */
            rl->io_store->ops->release(rl->io_store, &rl->pol, claims[i].conversation_id,
                                       claims[i].token);
            rl_claim_free(&claims[i]);
            continue;
        }
        f->claim = claims[i];
        f->state = RL_IF_DELIVERED;
        f->claimed_from_ms = sent;
        RL_ADD(rl, batches_claimed, 1);
        cJSON *msgs = cJSON_Parse(f->claim.messages_json);
        RL_ADD(rl, messages_claimed, cJSON_GetArraySize(msgs));
        cJSON_Delete(msgs);
        /* Tracked before delivery: the host may settle it at once. */
        pthread_mutex_lock(&rl->mu);
        f->next = rl->inflight;
        rl->inflight = f;
        rl->ninflight++;
        pthread_mutex_unlock(&rl->mu);
        if (rl->backend) rl->backend->start(rl->bk, f);
        else deliver_batch(rl, f);
    }
    free(claims);
    return n;
}

/* 1 when f's batch can take more messages (batch.max.messages /
 * batch.max.bytes): interrupting a turn whose batch is full would restart
 * it with nothing new. */
static int batch_has_room(const runlane_t *rl, const rl_inflight_t *f) {
    cJSON *msgs = cJSON_Parse(f->claim.messages_json);
    int64_t n = 0, bytes = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        n++;
        if (cJSON_IsString(c)) bytes += (int64_t)strlen(c->valuestring);
    }
    cJSON_Delete(msgs);
    return n < rl->pol.max_messages && bytes < rl->pol.max_bytes;
}

/* busy.policy=interrupt: messages wait behind the batch of claim c; asks
 * the backend, once per claim, to interrupt its turn. */
static void maybe_interrupt(runlane_t *rl, const rl_claim_t *c) {
    pthread_mutex_lock(&rl->mu);
    rl_inflight_t *f = rl->inflight;
    while (f && strcmp(f->claim.batch_id, c->batch_id) != 0) f = f->next;
    if (f && (f->state != RL_IF_DELIVERED || f->interrupted || strcmp(f->claim.token, c->token)))
        f = NULL;
    if (f) f->interrupted = 1;
    pthread_mutex_unlock(&rl->mu);
    /* f cannot go away meanwhile: HTTP backends' batches are only settled
     * or dropped on this thread. */
    if (f && batch_has_room(rl, f)) {
        RL_ADD(rl, turns_interrupted, 1);
        rl->backend->interrupt(rl->bk, f);
    }
}

/* Renews every lease held, in one round trip; lost leases become events.
 * With busy.policy=interrupt, turns whose conversation got new messages are
 * interrupted. */
static int renew_all(runlane_t *rl) {
    pthread_mutex_lock(&rl->mu);
    int n = rl->ninflight;
    rl_claim_t *snap = n ? calloc((size_t)n, sizeof(*snap)) : NULL;
    int k = 0;
    for (rl_inflight_t *f = rl->inflight; f && snap; f = f->next) {
        snap[k].conversation_id = rl_strdup(f->claim.conversation_id);
        rl_strlcpy(snap[k].batch_id, f->claim.batch_id, sizeof(snap[k].batch_id));
        rl_strlcpy(snap[k].token, f->claim.token, sizeof(snap[k].token));
        snap[k].attempt = f->claim.attempt;
        if (snap[k].conversation_id) k++;
    }
    pthread_mutex_unlock(&rl->mu);
    if (k == 0) {
        free(snap);
        return 0;
    }
    int *ok = calloc((size_t)k, sizeof(int));
    int64_t *pending = rl->busy_interrupt ? calloc((size_t)k, sizeof(int64_t)) : NULL;
    /* The store runs the renewal after this instant: a lower bound of the
     * new leases' start, however long the answer takes. */
    int64_t sent = rl_mono_ms();
    runlane_err_t rc = ok ? rl->io_store->ops->renew(rl->io_store, &rl->pol, snap, k, ok, pending)
                          : RUNLANE_ERR_NOMEM;
    if (rc == RUNLANE_OK) {
        rl->renewed_from_ms = sent;
        for (int i = 0; i < k; i++) {
            if (ok[i]) {
                RL_ADD(rl, leases_renewed, 1);
                if (pending && pending[i] > 0) maybe_interrupt(rl, &snap[i]);
                continue;
            }
            /* Stale: drop it unless the host is settling it right now (its
             * own ack or fail will report the loss). */
            int lost = 0;
            pthread_mutex_lock(&rl->mu);
            rl_inflight_t **pp = &rl->inflight;
            while (*pp && strcmp((*pp)->claim.batch_id, snap[i].batch_id) != 0) pp = &(*pp)->next;
            if (*pp && (*pp)->state == RL_IF_DELIVERED &&
                strcmp((*pp)->claim.token, snap[i].token) == 0) {
                rl_inflight_t *f = *pp;
                *pp = f->next;
                rl->ninflight--;
                lost = 1;
                pthread_mutex_unlock(&rl->mu);
                if (rl->backend) rl->backend->abandon(rl->bk, f);
                rl_events_drop_batch(rl, f->claim.batch_id);
                rl_claim_free(&f->claim);
                free(f);
                pthread_mutex_lock(&rl->mu);
            }
            pthread_mutex_unlock(&rl->mu);
            if (lost) {
                RL_ADD(rl, leases_lost, 1);
                rl_buf_t b;
                rl_buf_init(&b);
                rl_buf_puts(&b, "{\"conversation_id\":");
                rl_buf_json_str(&b, snap[i].conversation_id);
                rl_buf_puts(&b, ",\"batch_id\":");
                rl_buf_json_str(&b, snap[i].batch_id);
                rl_buf_printf(&b, ",\"attempt\":%d}", snap[i].attempt);
                char *json = rl_buf_take(&b);
                rl_event_push(rl, rl_event_new(RUNLANE_EVENT_LEASE_LOST, snap[i].conversation_id,
                                               snap[i].batch_id, snap[i].attempt, json,
                                               RUNLANE_ERR_STALE,
                                               "lease lost: another worker may run this batch"));
                free(json);
            }
        }
    }
    for (int i = 0; i < k; i++) rl_claim_free(&snap[i]);
    free(snap);
    free(ok);
    free(pending);
    return rc == RUNLANE_OK ? 0 : -1;
}

/* Gives back every lease still held (stop). */
static void release_all(runlane_t *rl) {
    for (;;) {
        pthread_mutex_lock(&rl->mu);
        rl_inflight_t **pp = &rl->inflight;
        while (*pp && (*pp)->state != RL_IF_DELIVERED) pp = &(*pp)->next;
        rl_inflight_t *f = *pp;
        if (f) {
            *pp = f->next;
            rl->ninflight--;
        }
        pthread_mutex_unlock(&rl->mu);
        if (!f) break;
        if (rl->backend) rl->backend->abandon(rl->bk, f);
        rl_events_drop_batch(rl, f->claim.batch_id);
        runlane_err_t rc = rl->io_store->ops->release(rl->io_store, &rl->pol,
                                                      f->claim.conversation_id, f->claim.token);
        if (rc == RUNLANE_OK) RL_ADD(rl, leases_released, 1);
        rl_buf_t b;
        rl_buf_init(&b);
        rl_buf_puts(&b, "{\"conversation_id\":");
        rl_buf_json_str(&b, f->claim.conversation_id);
        rl_buf_puts(&b, ",\"batch_id\":");
        rl_buf_json_str(&b, f->claim.batch_id);
        rl_buf_printf(&b, ",\"attempt\":%d,\"released\":%s}", f->claim.attempt,
                      rc == RUNLANE_OK ? "true" : "false");
        char *json = rl_buf_take(&b);
        rl_event_push(rl, rl_event_new(RUNLANE_EVENT_LEASE_LOST, f->claim.conversation_id,
                                       f->claim.batch_id, f->claim.attempt, json, RUNLANE_ERR_STALE,
                                       "worker stopped: the lease was released"));
        free(json);
        rl_claim_free(&f->claim);
        free(f);
    }
}

static rl_inflight_t *unlink_inflight(runlane_t *rl, rl_inflight_t *target) {
    pthread_mutex_lock(&rl->mu);
    rl_inflight_t **pp = &rl->inflight;
    while (*pp && *pp != target) pp = &(*pp)->next;
    if (*pp) {
        *pp = target->next;
        rl->ninflight--;
    }
    pthread_cond_broadcast(&rl->settle_cond);
    pthread_mutex_unlock(&rl->mu);
    return target;
}

static runlane_err_t settle(runlane_t *rl, rl_inflight_t *f, rl_settle_t how, runlane_err_t code,
                            const char *error, int retriable, int64_t delay_ms);

runlane_err_t rl_worker_settle(runlane_t *rl, rl_inflight_t *f, rl_settle_t how, const char *error,
                               int retriable, int64_t delay_ms) {
    return settle(rl, f, how, RUNLANE_ERR_PROVIDER, error, retriable, delay_ms);
}

runlane_err_t rl_worker_fail(runlane_t *rl, rl_inflight_t *f, runlane_err_t code, const char *error,
                             int retriable) {
    return settle(rl, f, RL_SETTLE_FAIL, code, error, retriable, 0);
}

static runlane_err_t settle(runlane_t *rl, rl_inflight_t *f, rl_settle_t how, runlane_err_t code,
                            const char *error, int retriable, int64_t delay_ms) {
    rl_store_t *st = rl->io_store;
    const char *conv = f->claim.conversation_id, *token = f->claim.token;
    runlane_err_t rc;
    rl_fail_outcome_t outcome = RL_FAIL_RETRY;
    switch (how) {
    case RL_SETTLE_ACK:
        rc = st->ops->ack(st, &rl->pol, conv, token);
        if (rc == RUNLANE_OK) RL_ADD(rl, batches_acked, 1);
        break;
    case RL_SETTLE_FAIL:
        rc = st->ops->fail(st, &rl->pol, conv, token, error ? error : "failed", retriable, &outcome);
        if (rc == RUNLANE_OK) {
            RL_ADD(rl, batches_failed, 1);
            if (outcome == RL_FAIL_DEAD) RL_ADD(rl, batches_dead, 1);
            rl_buf_t b;
            rl_buf_init(&b);
            rl_buf_puts(&b, "{\"conversation_id\":");
            rl_buf_json_str(&b, conv);
            rl_buf_puts(&b, ",\"batch_id\":");
            rl_buf_json_str(&b, f->claim.batch_id);
            rl_buf_printf(&b, ",\"attempt\":%d,\"error\":", f->claim.attempt);
            rl_buf_json_str(&b, error ? error : "failed");
            rl_buf_printf(&b, ",\"dead\":%s}", outcome == RL_FAIL_DEAD ? "true" : "false");
            char *json = rl_buf_take(&b);
            rl_event_push(rl, rl_event_new(outcome == RL_FAIL_DEAD ? RUNLANE_EVENT_DEAD
                                                                    : RUNLANE_EVENT_FAILED,
                                           conv, f->claim.batch_id, f->claim.attempt, json,
                                           code, error ? error : "failed"));
            free(json);
        }
        break;
    case RL_SETTLE_DEFER:
        rc = st->ops->defer(st, &rl->pol, conv, token, delay_ms);
        break;
    case RL_SETTLE_RELEASE:
    default:
        rc = st->ops->release(st, &rl->pol, conv, token);
        break;
    }
    if (rc == RUNLANE_ERR_STORE) {
        /* Keep holding it: the lease is still ours until it expires; the
         * backend retries the settle on its next drive. */
        RL_ADD(rl, store_errors, 1);
        return rc;
    }
    if (rc == RUNLANE_ERR_STALE) RL_ADD(rl, leases_lost, 1);
    unlink_inflight(rl, f);
    rl_claim_free(&f->claim);
    free(f);
    return rc;
}

runlane_err_t rl_worker_checkpoint(runlane_t *rl, rl_inflight_t *f, const char *ckpt_json) {
    runlane_err_t rc = rl->io_store->ops->checkpoint(rl->io_store, f->claim.conversation_id,
                                                     f->claim.token, ckpt_json);
    if (rc == RUNLANE_OK) {
        char *d = rl_strdup(ckpt_json);
        if (d) {
            free(f->claim.ckpt_json);
            f->claim.ckpt_json = d;
        }
    }
    return rc;
}

/* Sets member `key` of object j to v (replacing it in place if present). */
static void json_set(cJSON *j, const char *key, cJSON *v) {
    if (!v) return;
    if (cJSON_GetObjectItemCaseSensitive(j, key))
        cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
    else
        cJSON_AddItemToObject(j, key, v);
}

runlane_err_t rl_worker_complete(runlane_t *rl, rl_inflight_t *f, const char *completed_json) {
    rl_store_t *st = rl->io_store;
    const char *conv = f->claim.conversation_id;
    cJSON *j = completed_json ? cJSON_Parse(completed_json) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "rl_worker_complete: the completed event is not a JSON object");
    }
    /* The stored reply is all a redelivery has: it must name its batch. */
    json_set(j, "conversation_id", cJSON_CreateString(conv));
    json_set(j, "batch_id", cJSON_CreateString(f->claim.batch_id));
    json_set(j, "attempt", cJSON_CreateNumber(f->claim.attempt));
    char *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!json) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    runlane_err_t rc =
        st->ops->ack_reply(st, &rl->pol, conv, f->claim.token, f->claim.batch_id, json);
    if (rc == RUNLANE_ERR_STORE || rc == RUNLANE_ERR_NOMEM) {
        /* The lease is still ours until it expires: the backend tries again
         * shortly. (Should a timeout hide a write that did happen, the retry
         * is refused as stale, and the stored reply still reaches the host
         * through redelivery.) */
        if (rc == RUNLANE_ERR_STORE) RL_ADD(rl, store_errors, 1);
        free(json);
        return rc;
    }
    if (rc == RUNLANE_OK) {
        RL_ADD(rl, batches_acked, 1);
        /* Only now: a reply the host sees can always be confirmed. */
        rl_event_push(rl, rl_event_new(RUNLANE_EVENT_COMPLETED, conv, f->claim.batch_id,
                                       f->claim.attempt, json, RUNLANE_OK, NULL));
    } else if (rc == RUNLANE_ERR_STALE) {
        /* Another worker owns the batch now and reconciles the turn. */
        RL_ADD(rl, leases_lost, 1);
    }
    free(json);
    unlink_inflight(rl, f);
    rl_claim_free(&f->claim);
    free(f);
    return rc;
}

runlane_err_t rl_worker_restart(runlane_t *rl, rl_inflight_t *f) {
    char *msgs = NULL;
    runlane_err_t rc = rl->io_store->ops->extend_batch(rl->io_store, &rl->pol,
                                                       f->claim.conversation_id, f->claim.token,
                                                       &msgs);
    if (rc == RUNLANE_ERR_STORE) RL_ADD(rl, store_errors, 1);
    if (rc != RUNLANE_OK) return rc;
    cJSON *before = cJSON_Parse(f->claim.messages_json), *after = cJSON_Parse(msgs);
    int added = cJSON_GetArraySize(after) - cJSON_GetArraySize(before);
    cJSON_Delete(before);
    cJSON_Delete(after);
    if (added > 0) RL_ADD(rl, messages_claimed, added);
    pthread_mutex_lock(&rl->mu);
    free(f->claim.messages_json);
    f->claim.messages_json = msgs;
    pthread_mutex_unlock(&rl->mu);
    return RUNLANE_OK;
}

/* Emits due unconfirmed replies again (COMPLETED with "redelivered":true).
 * Returns how many were taken, or -1 on a store error. */
static int redeliver_replies(runlane_t *rl) {
    rl_reply_t *v = NULL;
    int n = 0;
    runlane_err_t rc =
        rl->io_store->ops->reply_claim(rl->io_store, &rl->pol, RL_REPLY_CLAIM_MAX, &v, &n);
    if (rc && n == 0) return -1;
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(v[i].json);
        const cJSON *conv = cJSON_GetObjectItemCaseSensitive(j, "conversation_id");
        const cJSON *att = cJSON_GetObjectItemCaseSensitive(j, "attempt");
        char *json = NULL;
        if (cJSON_IsObject(j)) {
            json_set(j, "redelivered", cJSON_CreateTrue());
            json = cJSON_PrintUnformatted(j);
        }
        RL_ADD(rl, replies_redelivered, 1); /* counted before the host can see it */
        rl_event_push(rl, rl_event_new(RUNLANE_EVENT_COMPLETED,
                                       cJSON_IsString(conv) ? conv->valuestring : NULL,
                                       v[i].batch_id, cJSON_IsNumber(att) ? att->valueint : 0,
                                       json ? json : v[i].json, RUNLANE_OK, NULL));
        free(json);
        cJSON_Delete(j);
    }
    rl_replies_free(v, n);
    return n;
}

/* Hands host requests (tool outputs) to the backend. */
static void run_commands(runlane_t *rl) {
    pthread_mutex_lock(&rl->mu);
    rl_cmd_t *cmds = rl->cmds;
    rl->cmds = NULL;
    pthread_mutex_unlock(&rl->mu);
    while (cmds) {
        rl_cmd_t *next = cmds->next;
        pthread_mutex_lock(&rl->mu);
        rl_inflight_t *f = rl->inflight;
        while (f && strcmp(f->claim.batch_id, cmds->batch_id) != 0) f = f->next;
        pthread_mutex_unlock(&rl->mu);
        if (f && rl->backend) rl->backend->tool_outputs(rl->bk, f, cmds->json);
        free(cmds->batch_id);
        free(cmds->json);
        free(cmds);
        cmds = next;
    }
}

void *rl_worker_main(void *arg) {
    runlane_t *rl = arg;
    int64_t now = rl_mono_ms();
    int64_t next_recover = now, next_renew = now + rl->renew_ms;
    /* Only HTTP backends make replies (the custom backend's host has its
     * own). The first look waits a little: a starting fleet need not all
     * look at once. */
    int64_t next_reply = rl->backend ? now + RL_REPLY_CLAIM_MS / 2 : INT64_MAX;
    int store_failures = 0;
    int drained = 0;
    /* Claims are looked for when due (the store's next due time, at most
     * worker.poll.ms later), when a wake asks (enqueue, settle, stop) or
     * when a turn ended here and made room; not on every socket event,
     * which with thousands of streams would be thousands of store round
     * trips a second. */
    int64_t next_claim = now;
    int inflight_after_claim = 0;
    /* Wake-up mode (stores with wait_* ops): a dedicated store object
     * waits for announcements (store.h); claims happen when something is
     * known due (an announcement, a look at the heads, a claim's hint),
     * never by polling; recovery and replies at the heads' times. */
    rl_store_t *ws = NULL;
    int64_t tick_ms = rl->pol.lease_ms / 2;
    if (tick_ms > RL_IDLE_TICK_MS) tick_ms = RL_IDLE_TICK_MS;
    /* same for replies: one stored after a look is seen before it is due */
    if (rl->backend && rl->pol.reply_redeliver_ms / 2 < tick_ms)
        tick_ms = rl->pol.reply_redeliver_ms / 2;
    if (tick_ms < 10) tick_ms = 10;
    int64_t next_tick = now, next_ws_open = now, ready_at = now, last_recover = 0;
    int64_t skew = 0; /* store ms - rl_mono_ms */
    int can_wake = rl->io_store->ops->wait_arm && rl->io_store->ops->heads &&
                   rl->io_store->ops->claim_named;
    /* the conversation the last wake-up named (claimed in the same pass) */
    char named[RUNLANE_CONVERSATION_ID_MAX + 1];
    int named_part = 0;
    int64_t arm_after = 0; /* the next pop waits until then (coalescing) */
    for (;;) {
        pthread_mutex_lock(&rl->mu);
        int stopping = rl->stopping, n = rl->ninflight;
        int claim_now = rl->claim_now || n < inflight_after_claim;
        rl->claim_now = 0;
        runlane_stop_mode_t mode = rl->stop_mode;
        int64_t deadline = rl->stop_deadline;
        pthread_mutex_unlock(&rl->mu);
        now = rl_mono_ms();
        if (stopping) {
            if (n == 0) drained = 1;
            if (mode == RUNLANE_STOP_RELEASE || n == 0 || now >= deadline) break;
        }
        int failed = 0;
        if (can_wake && !ws && !stopping && now >= next_ws_open) {
            ws = rl_store_open(&rl->sopts);
            if (!ws) next_ws_open = now + tick_ms; /* store down: poll meanwhile */
        }
        int wake = ws != NULL;
        named[0] = '\0';
        if (wake) {
            int part = 0;
            int64_t due = 0;
            int r = ws->ops->wait_take(ws, &part, &due, named, sizeof(named));
            if (r == 1) {
                arm_after = now + rl->wake_coalesce_ms;
                if (n >= rl->concurrency || stopping) {
                    /* cannot act on it: pass it on to a worker with room */
                    rl->io_store->ops->wait_give(rl->io_store, part, due, named);
                    named[0] = '\0';
                } else if (named[0]) {
                    named_part = part;
                } else if (due - skew < ready_at) {
                    ready_at = due - skew;
                }
            } else if (r < 0) {
                rl_ioloop_watch(rl->loop, -1);
                ws->ops->destroy(ws);
                ws = NULL;
                wake = 0;
                next_ws_open = now + tick_ms;
            }
        }
        if (!wake) {
            /* Polling (a Cluster has no one connection to block on; or the
             * wake store is down): no look at the heads reschedules
             * recovery and replies, so a "learnt by the next look" left
             * from wake mode must not stay. Without this, a Cluster worker
             * whose first look saw no lease never recovered one again. */
            if (next_recover == INT64_MAX) next_recover = now;
            if (rl->backend && next_reply == INT64_MAX) next_reply = now;
        }
        if (wake && now >= next_tick) {
            int64_t rd, ld, pd = INT64_MAX, snow;
            if (rl->io_store->ops->heads(rl->io_store, rl->backend != NULL, &rd, &ld, &pd,
                                         &snow) == RUNLANE_OK) {
                skew = snow - rl_mono_ms();
                if (rd != INT64_MAX && rd - skew < ready_at) ready_at = rd - skew;
                next_recover = INT64_MAX;
                if (ld != INT64_MAX) {
                    next_recover = ld - skew;
                    if (next_recover < last_recover + rl->recover_ms)
                        next_recover = last_recover + rl->recover_ms;
                }
                if (rl->backend && !stopping) next_reply = pd == INT64_MAX ? INT64_MAX : pd - skew;
                next_tick = now + tick_ms;
            } else {
                failed = 1;
                if (store_failures % 100 == 0)
                    emit_error(rl, runlane_error_code(runlane_error_last()), "heads");
                next_tick = now + 50;
            }
        }
        /* Renew before recovering: after a slow pass the recovery must not
         * take back this worker's own, still running, batches. */
        if (now >= next_renew) {
            if (renew_all(rl)) {
                failed = 1;
                /* One event per outage (and every 100 failed rounds). */
                if (store_failures % 100 == 0)
                    emit_error(rl, runlane_error_code(runlane_error_last()), "renew");
                next_renew = now + 50; /* retry soon: leases are at stake */
            } else {
                next_renew = now + rl->renew_ms;
            }
        }
        if (!failed && now >= next_recover) {
            int rec = 0, dead = 0;
            if (rl->io_store->ops->recover(rl->io_store, &rl->pol, &rec, &dead)) {
                failed = 1;
                /* One event per outage (and every 100 failed rounds). */
                if (store_failures % 100 == 0)
                    emit_error(rl, runlane_error_code(runlane_error_last()), "recover");
            }
            RL_ADD(rl, leases_recovered, rec);
            next_recover = now + rl->recover_ms;
            if (wake) {
                /* the next expiry is learnt by a look at the heads */
                last_recover = now;
                next_recover = INT64_MAX;
                next_tick = now;
                if (rec > 0) ready_at = now;
            }
        }
        if (!failed && !stopping && now >= next_reply) {
            int got = redeliver_replies(rl);
            if (got < 0) {
                failed = 1;
                /* One event per outage (and every 100 failed rounds). */
                if (store_failures % 100 == 0)
                    emit_error(rl, runlane_error_code(runlane_error_last()), "reply_claim");
            }
            next_reply = now + (got >= RL_REPLY_CLAIM_MAX ? 0 : RL_REPLY_CLAIM_MS);
            if (wake && got >= 0 && got < RL_REPLY_CLAIM_MAX) {
                next_reply = INT64_MAX; /* learnt by the next look at the heads */
                next_tick = now;
            }
        }
        int64_t backend_wake = INT64_MAX;
        if (rl->backend) {
            run_commands(rl);
            backend_wake = rl->backend->drive(rl->bk);
        }
        int claimed = 0, looked = 0;
        if (wake && named[0]) {
            /* Announced by name: this worker alone was woken for it. */
            int give = 1;
            if (!failed && !stopping && n < rl->concurrency) {
                claimed = claim_some(rl, named_part, named);
                if (claimed == -1) {
                    failed = 1;
                    if (store_failures % 100 == 0)
                        emit_error(rl, runlane_error_code(runlane_error_last()), "claim");
                }
                /* A host not polling (-2): dropped, as a due time is; the
                 * next look at the heads finds it (giving it back would
                 * wake this worker again at once). */
                give = claimed == -1;
                if (claimed < 0) claimed = 0;
            }
            if (give) {
                /* not taken here: its announcement goes back (a failed
                 * store loses it; the look at the heads finds it) */
                rl->io_store->ops->wait_give(rl->io_store, named_part, rl_mono_ms() + skew, named);
            }
            named[0] = '\0';
        }
        if (wake) {
            if (!failed && !stopping && n < rl->concurrency && rl_mono_ms() >= ready_at) {
                ready_at = INT64_MAX;
                claimed = claim_some(rl, 0, NULL);
                int64_t hd, hn;
                if (claimed < 0) {
                    failed = 1;
                    if (store_failures % 100 == 0)
                        emit_error(rl, runlane_error_code(runlane_error_last()), "claim");
                    ready_at = rl_mono_ms() + 50;
                } else if (rl->io_store->ops->claim_hint(rl->io_store, &hd, &hn)) {
                    skew = hn - rl_mono_ms();
                    ready_at = hd - skew;
                }
            }
        } else if (!failed && !stopping && (claim_now || rl_mono_ms() >= next_claim)) {
            looked = 1;
            claimed = claim_some(rl, 0, NULL);
            if (claimed < 0) {
                failed = 1;
                /* One event per outage (and every 100 failed rounds). */
                if (store_failures % 100 == 0)
                    emit_error(rl, runlane_error_code(runlane_error_last()), "claim");
            }
        }
        /* woken by announcements: the poll is only for stores without them */
        int64_t wait = wake ? tick_ms : rl->poll_ms;
        if (failed) {
            RL_ADD(rl, store_errors, 1);
            store_failures++;
            int64_t backoff = 50LL << (store_failures < 6 ? store_failures : 6);
            if (backoff < wait) wait = backoff;
        } else {
            store_failures = 0;
            if (looked) {
                pthread_mutex_lock(&rl->mu);
                inflight_after_claim = rl->ninflight;
                pthread_mutex_unlock(&rl->mu);
                int64_t due = INT64_MAX, snow = 0, d = rl->poll_ms;
                if (claimed > 0) {
                    d = 0; /* more may be due */
                } else if (inflight_after_claim < rl->concurrency &&
                           rl->io_store->ops->next_due(rl->io_store, &due, &snow) == RUNLANE_OK &&
                           due != INT64_MAX && due - snow < d) {
                    /* (When full, only a settle, which wakes us, makes room.) */
                    d = due - snow < 0 ? 0 : due - snow;
                }
                next_claim = rl_mono_ms() + d;
            }
        }
        now = rl_mono_ms();
        if (wake) {
            pthread_mutex_lock(&rl->mu);
            int room = rl->ninflight < rl->concurrency;
            pthread_mutex_unlock(&rl->mu);
            int fd = -1;
            if (!stopping && room && now < arm_after) {
                /* Just woken: the next pop waits a little, so that what is
                 * announced meanwhile costs one pop and one claim, not one
                 * each (worker.wake.coalesce.ms). Another waiting worker
                 * still takes it at once. */
                if (arm_after - now < wait) wait = arm_after - now;
                if (ready_at - now < wait) wait = ready_at - now;
            } else if (!stopping && room) {
                if (ready_at - now < wait) wait = ready_at - now;
                int arm = ws->ops->wait_arm(ws, tick_ms, &fd);
                if (arm == RUNLANE_OK) {
                    rl_ioloop_watch(rl->loop, fd);
                } else {
                    /* a Cluster: no one connection to block on; poll */
                    if (arm == RUNLANE_ERR_UNSUPPORTED) can_wake = 0;
                    rl_ioloop_watch(rl->loop, -1);
                    ws->ops->destroy(ws);
                    ws = NULL;
                    next_ws_open = now + tick_ms;
                    if (now + rl->poll_ms < ready_at) ready_at = now + rl->poll_ms;
                }
            }
            if (next_tick - now < wait) wait = next_tick - now;
        } else if (!failed && !stopping && next_claim - now < wait) wait = next_claim - now;
        if (next_renew - now < wait) wait = next_renew - now;
        if (next_recover - now < wait) wait = next_recover - now;
        if (!stopping && next_reply != INT64_MAX && next_reply - now < wait)
            wait = next_reply - now;
        if (stopping && deadline - now < wait) wait = deadline - now;
        if (backend_wake != INT64_MAX && backend_wake - now < wait) wait = backend_wake - now;
        if (wait < 0) wait = 0;
        /* Also with wait 0: curl acts on ready sockets only in the wait. */
        rl_ioloop_wait(rl->loop, wait);
    }
    if (ws) {
        rl_ioloop_watch(rl->loop, -1);
        ws->ops->destroy(ws); /* closing the socket ends its BZPOPMIN */
    }
    release_all(rl);
    pthread_mutex_lock(&rl->mu);
    rl->finished = drained ? 1 : 2;
    /* A second runlane_stop (escalating a drain) waits for this. */
    pthread_cond_broadcast(&rl->settle_cond);
    pthread_mutex_unlock(&rl->mu);
    rl_event_push(rl, rl_event_new(RUNLANE_EVENT_STOPPED, NULL, NULL, 0,
                                   drained ? "{\"drained\":true}" : "{\"drained\":false}",
                                   RUNLANE_OK, NULL));
    return NULL;
}
