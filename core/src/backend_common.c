/* backend_common.c - shared machinery of the HTTP backends; see
 * backend_common.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_common.h"

/* ---- settings ---- */

/* rate.limit.rpm: the store's shared bucket failed; requests go on under
 * the client's own bucket (so the budget may be exceeded): one ERROR event
 * per outage. */
static void rate_note(void *opaque, int down, const char *msg) {
    runlane_t *rl = opaque;
    if (!down) return;
    char m[700];
    snprintf(m, sizeof(m),
             "rate.limit.rpm: the shared bucket in the store failed (%s); this client keeps to "
             "a bucket of its own until the store answers again",
             msg && *msg ? msg : "store error");
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"error\":");
    rl_buf_json_str(&b, m);
    rl_buf_printf(&b, ",\"code\":\"%s\"}", runlane_err2name(RUNLANE_ERR_STORE));
    char *json = rl_buf_take(&b);
    if (json)
        rl_event_push(rl, rl_event_new(RUNLANE_EVENT_ERROR, NULL, NULL, 0, json, RUNLANE_ERR_STORE,
                                       m));
    free(json);
}

/* A long wait the server asked for, taken while the turn's lease is held
 * (every request of this client belongs to a turn): an ERROR event, so the
 * host sees why a batch stands still. */
static void turn_wait_note(void *opaque, const char *what, int64_t asked_ms, int64_t wait_ms) {
    rl_turn_t *t = opaque;
    if (!t || !t->f) return;
    char m[600];
    snprintf(m, sizeof(m),
             "%s: the server asked to wait %lld ms before retrying (Retry-After); waiting "
             "%lld ms%s while the batch's lease is held",
             what, (long long)asked_ms, (long long)wait_ms,
             wait_ms < asked_ms ? " (capped by http.retry.max.ms)" : "");
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"conversation_id\":");
    rl_buf_json_str(&b, t->f->claim.conversation_id);
    rl_buf_puts(&b, ",\"batch_id\":");
    rl_buf_json_str(&b, t->f->claim.batch_id);
    rl_buf_printf(&b, ",\"attempt\":%d,\"error\":", t->f->claim.attempt);
    rl_buf_json_str(&b, m);
    rl_buf_printf(&b, ",\"code\":\"%s\",\"wait_ms\":%lld}", runlane_err2name(RUNLANE_ERR_PROVIDER),
                  (long long)wait_ms);
    char *json = rl_buf_take(&b);
    if (json) {
        rl_http_scrub(t->bk->http, json);
        rl_event_push(t->bk->rl, rl_event_new(RUNLANE_EVENT_ERROR, t->f->claim.conversation_id,
                                              t->f->claim.batch_id, t->f->claim.attempt, json,
                                              RUNLANE_ERR_PROVIDER, m));
    }
    free(json);
}

static char *conf_dup(const runlane_t *rl, const char *key) {
    const char *v = rl_conf_str(rl->conf, key);
    return *v ? rl_strdup(v) : NULL;
}

rl_backend_t *rl_bk_new(runlane_t *rl, const rl_backend_ops_t *ops, int assistants) {
    rl_backend_t *bk = calloc(1, sizeof(*bk));
    if (!bk) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    bk->rl = rl;
    bk->ops = ops;
    bk->assistants = assistants;
    bk->model = conf_dup(rl, "openai.model");
    bk->prompt_id = conf_dup(rl, "openai.prompt.id");
    bk->assistant_id = conf_dup(rl, "openai.assistant.id");
    bk->instructions = conf_dup(rl, "openai.instructions");
    bk->additional_instructions = conf_dup(rl, "openai.additional.instructions");
    bk->stream = rl_conf_bool(rl->conf, "openai.stream");
    /* (rl->busy_interrupt is only set after the backend is made) */
    bk->interrupt = strcmp(rl_conf_str(rl->conf, "busy.policy"), "interrupt") == 0;
    bk->joined = strcmp(rl_conf_str(rl->conf, "openai.input.mode"), "joined") == 0;
    bk->tool_timeout_ms = rl_conf_int(rl->conf, "tool.timeout.ms");
    bk->tool_cancel = strcmp(rl_conf_str(rl->conf, "tool.timeout.action"), "cancel") == 0;
    bk->sse_max_line = (size_t)rl_conf_int(rl->conf, "http.sse.max.line.bytes");
    bk->sse_max_event = (size_t)rl_conf_int(rl->conf, "http.sse.max.event.bytes");
    bk->max_requests = rl_conf_int(rl->conf, "http.max.requests.per.attempt");
    bk->stream_idle_ms = rl_conf_int(rl->conf, "http.stream.idle.timeout.ms");
    bk->max_body = rl_conf_int(rl->conf, "http.max.body.bytes");
    bk->tools = cJSON_Parse(rl_conf_str(rl->conf, "openai.tools"));
    bk->metadata = cJSON_Parse(rl_conf_str(rl->conf, "openai.metadata"));
    if (!cJSON_IsArray(bk->tools)) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "openai.tools: expected a JSON array of tools");
        goto fail;
    }
    if (!cJSON_IsObject(bk->metadata)) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "openai.metadata: expected a JSON object");
        goto fail;
    }
    int nmeta = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, bk->metadata) {
        nmeta++;
        if (!cJSON_IsString(it) || strlen(it->string) > 64 || strlen(it->valuestring) > 512 ||
            strncmp(it->string, "runlane_", 8) == 0) {
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "openai.metadata: values must be strings of at most 512 characters, "
                         "keys at most 64 characters and not starting with runlane_");
            goto fail;
        }
    }
    if (nmeta > 14) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                     "openai.metadata: at most 14 keys (runlane adds 2 of the 16 allowed)");
        goto fail;
    }
    if (!assistants && !bk->model && !bk->prompt_id) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                     "backend responses: set openai.model or openai.prompt.id");
        goto fail;
    }
    if (assistants && !bk->assistant_id) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "backend assistants: set openai.assistant.id");
        goto fail;
    }
    if (!(bk->http = rl_http_new(rl->conf, rl->multi))) goto fail;
    rl_http_use_loop(bk->http, rl->loop);
    rl_http_set_wait_note(bk->http, turn_wait_note);
    /* rate.limit.rpm: the queue's shared bucket, through the I/O thread's
     * own store (this client's HTTP requests all run on that thread). */
    rl_http_rate_t rate = {rl->io_store, NULL, rate_note, rl};
    rl_http_set_rate(bk->http, &rate);
    return bk;
fail:
    rl_bk_free(bk);
    return NULL;
}

static void turn_free(rl_turn_t *t);

void rl_bk_free(rl_backend_t *bk) {
    if (!bk) return;
    while (bk->turns) {
        rl_turn_t *t = bk->turns;
        bk->turns = t->next;
        if (t->req) rl_http_cancel(t->req);
        if (t->aux) rl_http_cancel(t->aux);
        t->req = t->aux = NULL;
        turn_free(t);
    }
    rl_http_destroy(bk->http);
    free(bk->model);
    free(bk->prompt_id);
    free(bk->assistant_id);
    free(bk->instructions);
    free(bk->additional_instructions);
    cJSON_Delete(bk->tools);
    cJSON_Delete(bk->metadata);
    free(bk);
}

/* Lease estimate: the lease of a batch runs until at least the time its
 * claim, or the last renew round the store answered, was sent + lease.ms
 * (a renewal the store refused drops the batch, its turn abandoned). Both
 * are measured where the requests go out, so a stall of the process (a
 * SIGSTOP, a blocked store call) between a round and the next drive does
 * not make the estimate older than it is. */
static int64_t lease_left(const rl_turn_t *t, int64_t now) {
    int64_t base = t->bk->rl->renewed_from_ms;
    if (t->f && t->f->claimed_from_ms > base) base = t->f->claimed_from_ms;
    return base + t->bk->rl->pol.lease_ms - now;
}

static int64_t lease_margin(const rl_turn_t *t) { return t->bk->rl->pol.lease_ms / 4; }

/* A stopping worker (drain): a turn that is only waiting (an HTTP retry's
 * backoff or a server's Retry-After, a backoff timer of its flow) past the
 * drain's deadline cannot finish in it: its batch is released at once (no
 * attempt spent) instead of holding the stop until the deadline. */
static void cut_waits_on_stop(rl_backend_t *bk, int64_t now) {
    runlane_t *rl = bk->rl;
    pthread_mutex_lock(&rl->mu);
    int stopping = rl->stopping;
    int64_t deadline = rl->stop_deadline;
    pthread_mutex_unlock(&rl->mu);
    if (!stopping) return;
    for (rl_turn_t *t = bk->turns; t; t = t->next) {
        if (t->state != RL_TS_BUSY || !t->f) continue;
        int64_t until = t->req ? rl_http_wait_until(t->req) : 0;
        if (!t->req && t->timer_fn) until = t->timer_at;
        if (until <= 0 || until <= deadline) continue;
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "worker stopping: a wait of %lld ms more was cut short; the batch was released",
                 (long long)(until - now));
        rl_turn_settle(t, RL_SETTLE_RELEASE, msg, 1, 0);
    }
}

int64_t rl_bk_drive(rl_backend_t *bk) {
    int64_t wake = rl_http_drive(bk->http);
    int64_t now = rl_mono_ms();
    cut_waits_on_stop(bk, now);
    /* A stream that sends bytes but no event (comments, a slow drip of a
     * line) is as idle as a silent one: the HTTP client's idle timer only
     * sees bytes. */
    for (rl_turn_t *t = bk->turns; t; t = t->next) {
        if (t->state == RL_TS_DEAD || !t->req || !t->streaming) continue;
        int64_t since = rl_http_attempt_since(t->req);
        if (since == 0) continue; /* not running (waiting for a retry...) */
        if (since > t->last_event_ms) t->last_event_ms = since;
        if (now - t->last_event_ms < bk->stream_idle_ms) continue;
        char why[160];
        snprintf(why, sizeof(why), "the stream sent no event for %lld ms (http.stream.idle.timeout.ms)",
                 (long long)bk->stream_idle_ms);
        rl_http_abort(t->req, why);
        if (wake > now) wake = now; /* processed by the next drive */
    }
    /* Watchdog: a guarded request (it adds input) not yet on the wire
     * (connecting, or waiting for a retry) once the lease margin is gone:
     * stop it and release the batch; the next owner reconciles. See
     * rl_turn_lease_ok. One that went out is followed instead: cancelling
     * it would not unsend it, and the next owner, finding its input in the
     * conversation, would ask for a second turn while it runs. (Its
     * retries still pass the gate; a lease really lost drops the batch.) */
    for (rl_turn_t *t = bk->turns; t; t = t->next) {
        if (t->state == RL_TS_DEAD || !t->f || !t->guarded || !t->req || t->turn_id[0]) continue;
        if (rl_http_attempt_sent(t->req)) continue;
        if (lease_left(t, now) > lease_margin(t)) continue;
        t->guarded = 0;
        rl_turn_settle(t, RL_SETTLE_RELEASE, NULL, 1, 0);
    }
    for (rl_turn_t *t = bk->turns; t; t = t->next) {
        if (t->state != RL_TS_DEAD && t->timer_fn && t->timer_at <= now) {
            rl_turn_fn fn = t->timer_fn;
            t->timer_fn = NULL;
            t->timer_at = INT64_MAX;
            fn(t);
        }
    }
    for (rl_turn_t **pp = &bk->turns; *pp;) {
        rl_turn_t *t = *pp;
        if (t->state == RL_TS_DEAD) {
            *pp = t->next;
            turn_free(t);
        } else {
            pp = &t->next;
        }
    }
    for (rl_turn_t *t = bk->turns; t; t = t->next) {
        if (t->timer_fn && t->timer_at < wake) wake = t->timer_at;
        if (t->state != RL_TS_DEAD && t->req && t->streaming && rl_http_attempt_since(t->req) &&
            t->last_event_ms + bk->stream_idle_ms < wake)
            wake = t->last_event_ms + bk->stream_idle_ms;
    }
    return wake;
}

/* ---- turns ---- */

static void turn_free(rl_turn_t *t) {
    rl_sse_free(&t->sse);
    cJSON_Delete(t->msgs);
    cJSON_Delete(t->ckpt);
    cJSON_Delete(t->final);
    cJSON_Delete(t->usage);
    cJSON_Delete(t->calls);
    cJSON_Delete(t->outputs);
    free(t->stream_error);
    free(t->settle_error);
    cJSON_Delete(t->scratch);
    free(t->complete_json);
    free(t->provider_id);
    free(t);
}

rl_turn_t *rl_turn_new(rl_backend_t *bk, rl_inflight_t *f) {
    rl_turn_t *t = calloc(1, sizeof(*t));
    if (t) {
        t->bk = bk;
        t->f = f;
        t->timer_at = INT64_MAX;
        t->state = RL_TS_BUSY;
        t->msgs = cJSON_Parse(f->claim.messages_json);
        t->ckpt = f->claim.ckpt_json && *f->claim.ckpt_json ? cJSON_Parse(f->claim.ckpt_json) : NULL;
        if (!cJSON_IsObject(t->ckpt)) {
            cJSON_Delete(t->ckpt);
            t->ckpt = cJSON_CreateObject();
        }
        t->usage = cJSON_CreateObject();
        rl_sse_init(&t->sse, NULL, NULL);
        rl_sse_limit(&t->sse, bk->sse_max_line, bk->sse_max_event);
    }
    if (!t || !cJSON_IsArray(t->msgs) || !t->ckpt || !t->usage) {
        if (t) turn_free(t);
        rl_worker_settle(bk->rl, f, RL_SETTLE_FAIL, "out of memory (or unreadable batch)", 1, 0);
        return NULL;
    }
    f->turn = t;
    t->next = bk->turns;
    bk->turns = t;
    return t;
}

void rl_turn_abandon(rl_turn_t *t) {
    if (t->req) rl_http_cancel(t->req);
    if (t->aux) rl_http_cancel(t->aux);
    t->req = t->aux = NULL;
    t->timer_fn = NULL;
    t->timer_at = INT64_MAX;
    if (t->f) t->f->turn = NULL;
    t->f = NULL;
    t->state = RL_TS_DEAD;
}

void rl_turn_timer(rl_turn_t *t, int64_t delay_ms, rl_turn_fn fn) {
    if (delay_ms < 0) delay_ms = 0;
    t->timer_at = rl_mono_ms() + delay_ms;
    t->timer_fn = fn;
}

static void do_settle(rl_turn_t *t) {
    rl_inflight_t *f = t->f;
    if (!f) {
        t->state = RL_TS_DEAD;
        return;
    }
    f->turn = NULL;
    runlane_err_t rc =
        t->settle_how == RL_SETTLE_FAIL
            ? rl_worker_fail(t->bk->rl, f, t->settle_code ? t->settle_code : RUNLANE_ERR_PROVIDER,
                             t->settle_error, t->settle_retriable)
            : rl_worker_settle(t->bk->rl, f, t->settle_how, t->settle_error, t->settle_retriable,
                               t->settle_delay_ms);
    if (rc == RUNLANE_ERR_STORE) {
        /* f is still ours: try again shortly. */
        f->turn = t;
        t->state = RL_TS_SETTLING;
        rl_turn_timer(t, 250, do_settle);
        return;
    }
    t->f = NULL;
    t->state = RL_TS_DEAD;
}

void rl_turn_fail(rl_turn_t *t, runlane_err_t code, const char *error, int retriable) {
    t->settle_code = code;
    rl_turn_settle(t, RL_SETTLE_FAIL, error, retriable, 0);
}

void rl_turn_settle(rl_turn_t *t, rl_settle_t how, const char *error, int retriable,
                    int64_t delay_ms) {
    if (t->state == RL_TS_DEAD) return;
    if (t->req) rl_http_cancel(t->req);
    if (t->aux) rl_http_cancel(t->aux);
    t->req = t->aux = NULL;
    t->timer_fn = NULL;
    t->settle_how = how;
    free(t->settle_error);
    t->settle_error = error ? rl_http_scrub_dup(t->bk->http, error) : NULL;
    if (t->settle_error && strlen(t->settle_error) > RL_TURN_ERROR_MAX) {
        /* A provider's message (or stream error) can be megabytes: keep the
         * start, cut on a UTF-8 boundary. */
        size_t n = RL_TURN_ERROR_MAX - 3;
        while (n > 0 && ((unsigned char)t->settle_error[n] & 0xC0) == 0x80) n--;
        memcpy(t->settle_error + n, "...", 4);
    }
    if (t->settle_error && !rl_utf8_valid(t->settle_error, strlen(t->settle_error))) {
        /* (a provider's bytes: the bindings decode errors as UTF-8) */
        for (char *c = t->settle_error; *c; c++)
            if ((unsigned char)*c >= 0x80) *c = '?';
    }
    t->settle_retriable = retriable;
    t->settle_delay_ms = delay_ms;
    do_settle(t);
}

static void do_complete(rl_turn_t *t) {
    rl_inflight_t *f = t->f;
    if (!f) {
        t->state = RL_TS_DEAD;
        return;
    }
    f->turn = NULL;
    runlane_err_t rc = rl_worker_complete(t->bk->rl, f, t->complete_json);
    if (rc == RUNLANE_ERR_STORE || rc == RUNLANE_ERR_NOMEM) {
        /* Nothing written; f is still ours: try again shortly. */
        f->turn = t;
        t->state = RL_TS_SETTLING;
        rl_turn_timer(t, 250, do_complete);
        return;
    }
    if (rc == RUNLANE_ERR_INVALID_ARG) {
        /* Cannot happen (the payload is an object); ack at least. */
        f->turn = t;
        rl_turn_settle(t, RL_SETTLE_ACK, NULL, 0, 0);
        return;
    }
    t->f = NULL;
    t->state = RL_TS_DEAD;
}

void rl_turn_complete(rl_turn_t *t, cJSON *json) {
    if (t->state == RL_TS_DEAD) {
        cJSON_Delete(json);
        return;
    }
    if (t->req) rl_http_cancel(t->req);
    if (t->aux) rl_http_cancel(t->aux);
    t->req = t->aux = NULL;
    t->timer_fn = NULL;
    free(t->complete_json);
    t->complete_json = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!t->complete_json) {
        rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
        return;
    }
    rl_http_scrub(t->bk->http, t->complete_json);
    do_complete(t);
}

/* The lease is gone (a write was refused as stale): let go of the batch. */
static void lease_lost(rl_turn_t *t) {
    cJSON *j = rl_turn_event_json(t, NULL);
    char *js = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    runlane_t *rl = t->bk->rl;
    char *conv = rl_strdup(t->f->claim.conversation_id);
    char bid[RUNLANE_ID_MAX];
    rl_strlcpy(bid, t->f->claim.batch_id, sizeof(bid));
    int attempt = t->f->claim.attempt;
    rl_turn_settle(t, RL_SETTLE_RELEASE, NULL, 1, 0);
    rl_event_push(rl, rl_event_new(RUNLANE_EVENT_LEASE_LOST, conv, bid, attempt, js ? js : "{}",
                                   RUNLANE_ERR_STALE,
                                   "lease lost: another worker may run this batch"));
    free(js);
    free(conv);
}

int rl_turn_absorb_interrupt(rl_turn_t *t, rl_turn_fn retry) {
    if (!t->interrupting || !t->f) return 1;
    runlane_err_t rc = rl_worker_restart(t->bk->rl, t->f);
    if (rc == RUNLANE_ERR_STALE) {
        lease_lost(t);
        return 0;
    }
    if (rc != RUNLANE_OK) {
        if (retry) rl_turn_timer(t, 250, retry);
        return 0;
    }
    cJSON *m = cJSON_Parse(t->f->claim.messages_json);
    if (cJSON_IsArray(m)) {
        cJSON_Delete(t->msgs);
        t->msgs = m;
    } else {
        cJSON_Delete(m);
    }
    t->interrupting = 0;
    return 1;
}

static int request_budget(rl_turn_t *t, const char *method, const char *path);

static void aux_done(void *opaque, const rl_http_result_t *res) {
    (void)res;
    rl_turn_t *t = opaque;
    t->aux = NULL;
}

void rl_turn_aux(rl_turn_t *t, const char *method, const char *path) {
    if (t->aux) rl_http_cancel(t->aux);
    t->aux = NULL;
    if (!request_budget(t, method, path)) return;
    t->aux = rl_http_start(t->bk->http, method, path, NULL,
                           t->bk->assistants ? RL_HTTP_ASSISTANTS : 0, NULL, aux_done, t);
}

int64_t rl_defer_delay_ms(void) { return 1000 + (int64_t)(2000.0 * rl_random()); }

void rl_turn_defer(rl_turn_t *t) {
    /* Deferrals spend no attempt, so they are counted in the checkpoint
     * (it outlives the claim): a server that says "busy" forever must not
     * get a request every few seconds forever. */
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(t->ckpt, "defers");
    int n = (cJSON_IsNumber(d) ? d->valueint : 0) + 1;
    cJSON_DeleteItemFromObjectCaseSensitive(t->ckpt, "defers");
    if (n > RL_TURN_MAX_DEFERS) {
        /* (the next attempt starts counting again) */
        if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the provider kept the conversation busy with a turn that is not this batch's "
                 "(%d deferrals)", RL_TURN_MAX_DEFERS);
        rl_turn_fail(t, RUNLANE_ERR_BUSY, msg, 1);
        return;
    }
    cJSON_AddNumberToObject(t->ckpt, "defers", n);
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
    rl_turn_settle(t, RL_SETTLE_DEFER, NULL, 1, rl_defer_delay_ms());
}

/* ---- conversation keys ---- */

int rl_is_provider_id(int assistants, const char *id) {
    const char *pre = assistants ? "thread_" : "conv_";
    return strncmp(id, pre, strlen(pre)) == 0;
}

const char *rl_turn_conv(const rl_turn_t *t) {
    return t->provider_id ? t->provider_id : t->f->claim.conversation_id;
}

static void resolve_record(rl_turn_t *t);

static void resolve_created(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->retriable);
        return;
    }
    cJSON *o = cJSON_ParseWithLength(res->body, res->body_len);
    const char *id = rl_json_str(o, "id");
    if (!rl_is_provider_id(t->bk->assistants, id) || strlen(id) >= 160) {
        cJSON_Delete(o);
        rl_turn_unusable(t, t->bk->assistants ? "creating the key's thread: no thread id"
                                              : "creating the key's conversation: no conversation id",
                         (rl_turn_fn)resolve_record);
        return;
    }
    free(t->provider_id);
    t->provider_id = rl_strdup(id);
    cJSON_Delete(o);
    if (!t->provider_id) {
        rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
        return;
    }
    resolve_record(t);
}

/* Records t->provider_id (just created) under the lease, or creates one
 * when there is none yet (a retry after an unusable answer). */
static void resolve_record(rl_turn_t *t) {
    if (!t->f) return;
    runlane_t *rl = t->bk->rl;
    if (!t->provider_id) {
        cJSON *b = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(b, "metadata");
        /* metadata values hold 512 characters: a longer key is left out */
        if (strlen(t->f->claim.conversation_id) <= 512)
            cJSON_AddStringToObject(md, "runlane_key", t->f->claim.conversation_id);
        cJSON_AddStringToObject(md, "runlane_batch_id", t->f->claim.batch_id);
        t->state = RL_TS_BUSY;
        rl_turn_request(t, "POST", t->bk->assistants ? "/threads" : "/conversations", b,
                        RL_HTTP_UNSAFE | (t->bk->assistants ? RL_HTTP_ASSISTANTS : 0),
                        resolve_created, NULL);
        cJSON_Delete(b);
        return;
    }
    char *cur = NULL;
    runlane_err_t rc = rl->io_store->ops->conv_map(rl->io_store, RL_MAP_RECORD,
                                                   t->f->claim.conversation_id,
                                                   t->f->claim.token, t->provider_id, &cur);
    if (rc == RUNLANE_ERR_STALE) {
        /* Another worker owns the key now: what we created stays empty. */
        lease_lost(t);
        return;
    }
    if (rc != RUNLANE_OK) {
        rl_turn_timer(t, 250, resolve_record);
        return;
    }
    free(t->provider_id);
    t->provider_id = cur; /* the mapping in effect (an earlier one wins) */
    if (!t->provider_id) {
        rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
        return;
    }
    rl_turn_fn next = t->resolve_next;
    t->resolve_next = NULL;
    next(t);
}

static void resolve_lookup(rl_turn_t *t) {
    if (!t->f) return;
    runlane_t *rl = t->bk->rl;
    char *cur = NULL;
    runlane_err_t rc = rl->io_store->ops->conv_map(rl->io_store, RL_MAP_GET,
                                                   t->f->claim.conversation_id, NULL, NULL, &cur);
    if (rc != RUNLANE_OK) {
        rl_turn_timer(t, 250, resolve_lookup);
        return;
    }
    if (cur) {
        t->provider_id = cur;
        rl_turn_fn next = t->resolve_next;
        t->resolve_next = NULL;
        next(t);
        return;
    }
    resolve_record(t);
}

int rl_turn_resolve(rl_turn_t *t, rl_turn_fn next) {
    if (rl_is_provider_id(t->bk->assistants, t->f->claim.conversation_id)) return 0;
    t->resolve_next = next;
    char *cur = NULL;
    runlane_t *rl = t->bk->rl;
    if (rl->io_store->ops->conv_map(rl->io_store, RL_MAP_GET, t->f->claim.conversation_id, NULL,
                                    NULL, &cur) == RUNLANE_OK &&
        cur) {
        t->provider_id = cur;
        t->resolve_next = NULL;
        return 0;
    }
    /* store trouble or no mapping yet: the flow goes on from the lookup */
    resolve_lookup(t);
    return 1;
}

/* ---- a dead predecessor's turn ---- */

#define RL_SETTLE_PRIOR_POLLS 120 /* 500 ms apart: a minute */

static char *prior_path(const rl_turn_t *t, const char *suffix) {
    char *id = rl_path_escape(t->prior_id), *p = NULL;
    if (id && t->bk->assistants) {
        char *th = rl_path_escape(rl_turn_conv(t));
        if (th) p = rl_asprintf("/threads/%s/runs/%s%s", th, id, suffix);
        free(th);
    } else if (id) {
        p = rl_asprintf("/responses/%s%s", id, suffix);
    }
    free(id);
    return p;
}

static void prior_look(rl_turn_t *t);

static void prior_look_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok && res->status != 404) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, 1);
        return;
    }
    cJSON *o = res->ok ? cJSON_ParseWithLength(res->body, res->body_len) : NULL;
    char status[32];
    rl_strlcpy(status, rl_json_str(o, "status"), sizeof(status));
    cJSON_Delete(o);
    int active = strcmp(status, "queued") == 0 || strcmp(status, "in_progress") == 0 ||
                 strcmp(status, "requires_action") == 0 || strcmp(status, "cancelling") == 0;
    if (!active) { /* ended, or gone (404) */
        rl_turn_fn next = t->prior_next;
        t->prior_id[0] = '\0';
        t->prior_next = NULL;
        next(t);
        return;
    }
    if (++t->prior_polls >= RL_SETTLE_PRIOR_POLLS) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the turn %s of a dead-lettered batch is still %s after a cancel",
                 t->prior_id, status);
        rl_turn_fail(t, RUNLANE_ERR_PROVIDER, msg, 1);
        return;
    }
    rl_turn_timer(t, 500, prior_look);
}

static void prior_look(rl_turn_t *t) {
    char *path = prior_path(t, "");
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, prior_look_done, NULL))
        rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
    free(path);
}

static void prior_cancel_done(rl_turn_t *t, const rl_http_result_t *res) {
    (void)res; /* refused when it already ended: the look tells */
    prior_look(t);
}

int rl_turn_settle_prior(rl_turn_t *t, rl_turn_fn next) {
    const char *json = t->f ? t->f->claim.settle_json : NULL;
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    const char *id = rl_json_str(o, t->bk->assistants ? "run_id" : "response_id");
    int have = *id && strlen(id) < sizeof(t->prior_id);
    if (have) rl_strlcpy(t->prior_id, id, sizeof(t->prior_id));
    cJSON_Delete(o);
    if (!have) return 0;
    t->prior_next = next;
    t->prior_polls = 0;
    char *path = prior_path(t, "/cancel");
    if (!path || !rl_turn_request(t, "POST", path, NULL, 0, prior_cancel_done, NULL))
        rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
    free(path);
    return 1;
}

/* ---- checkpoints ---- */

void rl_turn_ckpt_set(rl_turn_t *t, const char *key, const char *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(t->ckpt, key);
    if (value) cJSON_AddStringToObject(t->ckpt, key, value);
}

const char *rl_turn_ckpt_get(const rl_turn_t *t, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t->ckpt, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int rl_turn_checkpoint(rl_turn_t *t, rl_turn_fn retry) {
    if (!t->f) return 0;
    char *s = cJSON_PrintUnformatted(t->ckpt);
    runlane_err_t rc = s ? rl_worker_checkpoint(t->bk->rl, t->f, s) : RUNLANE_ERR_NOMEM;
    free(s);
    if (rc == RUNLANE_OK) return 1;
    if (rc == RUNLANE_ERR_STALE) {
        lease_lost(t);
        return 0;
    }
    /* Store trouble: the lease is still ours; try the step again. */
    if (retry) rl_turn_timer(t, 250, retry);
    return 0;
}

/* ---- requests ---- */

static void turn_http_done(void *opaque, const rl_http_result_t *res) {
    rl_turn_t *t = opaque;
    t->req = NULL;
    t->guarded = 0;
    rl_sse_finish(&t->sse);
    rl_turn_done_fn fn = t->req_done;
    t->req_done = NULL;
    t->req_event = NULL;
    if (t->state == RL_TS_DEAD || !fn) return;
    fn(t, res);
}

static int turn_sse_event(void *opaque, const char *event, const char *data, size_t len,
                          const char *id) {
    (void)id;
    rl_turn_t *t = opaque;
    if (t->state == RL_TS_DEAD || !t->req_event) return 1;
    t->last_event_ms = rl_mono_ms();
    /* (copied only when a peer sent bytes that are not UTF-8: see rl_utf8_scrub) */
    char *fixed = NULL;
    if (!rl_utf8_valid(data, len) && (fixed = malloc(len ? len : 1)) != NULL) {
        memcpy(fixed, data, len);
        rl_utf8_scrub(fixed, len);
        data = fixed;
    }
    cJSON *j = cJSON_ParseWithLength(data, len);
    free(fixed);
    t->req_event(t, event, j);
    cJSON_Delete(j);
    return t->state == RL_TS_DEAD ? 1 : 0;
}

static int turn_http_data(void *opaque, const char *data, size_t n) {
    rl_turn_t *t = opaque;
    int rc = rl_sse_feed(&t->sse, data, n);
    if (rc == RL_SSE_TOO_LONG && t->req) {
        char why[160];
        if (t->sse.too_long == 1)
            snprintf(why, sizeof(why), "event stream line over %zu bytes (http.sse.max.line.bytes)",
                     t->bk->sse_max_line);
        else
            snprintf(why, sizeof(why), "event over %zu bytes (http.sse.max.event.bytes)",
                     t->bk->sse_max_event);
        rl_http_abort_reason(t->req, why);
    }
    return rc != 0;
}

/* 1 when the attempt may send one more request; otherwise the attempt
 * fails (the turn is dead) and 0. */
static int request_budget(rl_turn_t *t, const char *method, const char *path) {
    if (++t->requests <= t->bk->max_requests) return 1;
    char *msg = rl_asprintf("%s %s: not sent: this attempt already sent %lld HTTP requests "
                            "(http.max.requests.per.attempt)",
                            method, path, (long long)t->bk->max_requests);
    rl_turn_fail(t, RUNLANE_ERR_PROVIDER, msg ? msg : "too many HTTP requests in one attempt", 1);
    free(msg);
    return 0;
}

int rl_turn_listed(rl_turn_t *t, size_t page_bytes, const char *what) {
    t->listed_bytes += (int64_t)page_bytes;
    if (t->listed_bytes <= t->bk->max_body) return 1;
    char *msg = rl_asprintf("%s: the listing is over %lld bytes in all (http.max.body.bytes)", what,
                            (long long)t->bk->max_body);
    rl_turn_fail(t, RUNLANE_ERR_PROVIDER, msg ? msg : what, 1);
    free(msg);
    return 0;
}

void rl_turn_unusable(rl_turn_t *t, const char *what, rl_turn_fn retry) {
    int max = rl_http_max_retries(t->bk->http);
    if (++t->poll_failures > max) {
        /* (as the backends' own failures: a retried attempt reconciles) */
        rl_turn_ckpt_set(t, "state", "failed");
        if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
        char *msg = rl_asprintf("%s (%d time%s: http.max.retries exhausted)", what,
                                t->poll_failures, t->poll_failures == 1 ? "" : "s");
        rl_turn_fail(t, RUNLANE_ERR_PROVIDER, msg ? msg : what, 1);
        free(msg);
        return;
    }
    t->state = RL_TS_BUSY;
    rl_turn_timer(t, rl_http_backoff_ms(t->bk->http, t->poll_failures, -1), retry);
}

int rl_turn_request(rl_turn_t *t, const char *method, const char *path, const cJSON *body,
                    int flags, rl_turn_done_fn done, rl_turn_event_fn on_event) {
    char *b = body ? cJSON_PrintUnformatted(body) : NULL;
    if (body && !b) return 0;
    if (t->bk->assistants) flags |= RL_HTTP_ASSISTANTS;
    if (!request_budget(t, method, path)) {
        free(b);
        return 1; /* handled: the attempt failed */
    }
    rl_sse_finish(&t->sse);
    t->sse.cb = turn_sse_event;
    t->sse.opaque = t;
    t->req_done = done;
    t->req_event = on_event;
    t->streaming = (flags & RL_HTTP_STREAM) != 0;
    t->last_event_ms = rl_mono_ms();
    t->req = rl_http_start(t->bk->http, method, path, b, flags,
                           (flags & RL_HTTP_STREAM) ? turn_http_data : NULL, turn_http_done, t);
    free(b);
    return t->req != NULL;
}

int rl_turn_lease_ok(rl_turn_t *t) {
    if (!t->f) return 0;
    int64_t left = lease_left(t, rl_mono_ms());
    if (left > lease_margin(t)) return 1;
    char msg[160];
    snprintf(msg, sizeof(msg),
             "lease too close to expiry (%lld ms left): batch released before sending input",
             (long long)left);
    rl_turn_settle(t, RL_SETTLE_RELEASE, msg, 1, 0);
    return 0;
}

/* The lease guard once more at the last moment, each attempt: the
 * connection is up and the bytes go out next (see rl_http_set_gate). A
 * worker that stalled between the first check and the send (SIGSTOP, a
 * machine stall, a slow connect) stops here, releasing the batch. */
static int turn_send_gate(void *opaque) {
    rl_turn_t *t = opaque;
    return t->state != RL_TS_DEAD && rl_turn_lease_ok(t);
}

int rl_turn_request_guarded(rl_turn_t *t, const char *method, const char *path,
                            const cJSON *body, int flags, rl_turn_done_fn done,
                            rl_turn_event_fn on_event) {
    int ok = rl_turn_request(t, method, path, body, flags, done, on_event);
    if (ok && t->req) rl_http_set_gate(t->req, turn_send_gate);
    t->guarded = ok && t->req;
    return ok;
}

/* ---- events ---- */

cJSON *rl_turn_event_json(const rl_turn_t *t, const char *id_key) {
    cJSON *j = cJSON_CreateObject();
    if (!j || !t->f) return j;
    cJSON_AddStringToObject(j, "conversation_id", t->f->claim.conversation_id);
    cJSON_AddStringToObject(j, "batch_id", t->f->claim.batch_id);
    cJSON_AddNumberToObject(j, "attempt", t->f->claim.attempt);
    if (id_key) cJSON_AddStringToObject(j, id_key, t->turn_id);
    return j;
}

void rl_turn_emit(rl_turn_t *t, runlane_event_type_t type, cJSON *json) {
    char *s = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!s || !t->f) {
        free(s);
        return;
    }
    rl_http_scrub(t->bk->http, s);
    rl_event_push(t->bk->rl, rl_event_new(type, t->f->claim.conversation_id, t->f->claim.batch_id,
                                          t->f->claim.attempt, s, RUNLANE_OK, NULL));
    free(s);
}

void rl_turn_emit_started(rl_turn_t *t, const char *id_key, int adopted) {
    if (!t->turn_id[0] || strcmp(t->started_id, t->turn_id) == 0) return;
    rl_strlcpy(t->started_id, t->turn_id, sizeof(t->started_id));
    cJSON *j = rl_turn_event_json(t, id_key);
    if (adopted) cJSON_AddBoolToObject(j, "adopted", 1);
    rl_turn_emit(t, RUNLANE_EVENT_RUN_STARTED, j);
}

void rl_turn_raise_tools(rl_turn_t *t, const char *id_key, rl_turn_fn on_timeout) {
    cJSON *j = rl_turn_event_json(t, id_key);
    cJSON_AddItemToObject(j, "tool_calls", cJSON_Duplicate(t->calls, 1));
    cJSON_Delete(t->outputs);
    t->outputs = cJSON_CreateObject();
    t->state = RL_TS_WAIT_TOOLS;
    rl_turn_timer(t, t->bk->tool_timeout_ms, on_timeout);
    rl_turn_emit(t, RUNLANE_EVENT_TOOL_CALLS, j);
}

/* Tells the host its tool outputs could not be used. */
static void emit_tool_error(rl_turn_t *t, const char *msg) {
    if (!t->f) return;
    cJSON *j = rl_turn_event_json(t, NULL);
    cJSON_AddStringToObject(j, "error", msg);
    cJSON_AddStringToObject(j, "code", runlane_err2name(RUNLANE_ERR_INVALID_ARG));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return;
    rl_http_scrub(t->bk->http, s);
    rl_event_push(t->bk->rl, rl_event_new(RUNLANE_EVENT_ERROR, t->f->claim.conversation_id,
                                          t->f->claim.batch_id, t->f->claim.attempt, s,
                                          RUNLANE_ERR_INVALID_ARG, msg));
    free(s);
}

int rl_turn_take_outputs(rl_turn_t *t, const char *outputs_json) {
    if (t->state != RL_TS_WAIT_TOOLS) {
        emit_tool_error(t, "tool outputs arrived while the batch has no tool calls pending "
                           "(already answered, timed out, or not raised yet); ignored");
        return 0;
    }
    cJSON *arr = cJSON_Parse(outputs_json);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        arr = NULL;
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) {
        const char *id = rl_json_str(o, "tool_call_id");
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
        if (!*id || !cJSON_IsString(out)) continue;
        int known = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, t->calls) {
            if (strcmp(rl_json_str(c, "id"), id) == 0) {
                known = 1;
                cJSON_DeleteItemFromObjectCaseSensitive(t->outputs, id);
                cJSON_AddStringToObject(t->outputs, id, out->valuestring);
            }
        }
        if (!known) {
            char msg[300];
            snprintf(msg, sizeof(msg), "tool output for unknown tool_call_id \"%.160s\"; ignored",
                     id);
            emit_tool_error(t, msg);
        }
    }
    cJSON_Delete(arr);
    const cJSON *c;
    cJSON_ArrayForEach(c, t->calls) {
        if (!cJSON_GetObjectItemCaseSensitive(t->outputs, rl_json_str(c, "id"))) return 0;
    }
    return 1;
}

void rl_turn_fill_missing_outputs(rl_turn_t *t, const char *output) {
    if (!t->outputs) t->outputs = cJSON_CreateObject();
    const cJSON *c;
    cJSON_ArrayForEach(c, t->calls) {
        const char *id = rl_json_str(c, "id");
        if (!cJSON_GetObjectItemCaseSensitive(t->outputs, id))
            cJSON_AddStringToObject(t->outputs, id, output);
    }
}

/* ---- helpers ---- */

const char *rl_json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

const char *rl_turn_instructions(const rl_turn_t *t) {
    const char *ins = NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, t->msgs) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "instructions");
        if (cJSON_IsString(v)) ins = v->valuestring;
    }
    return ins ? ins : t->bk->instructions;
}

char *rl_turn_join(const rl_turn_t *t, int a, int b) {
    rl_buf_t buf;
    rl_buf_init(&buf);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, t->msgs) {
        if (i >= a && i < b) {
            if (i > a) rl_buf_puts(&buf, "\n\n");
            rl_buf_puts(&buf, rl_json_str(m, "content"));
        }
        i++;
    }
    rl_buf_puts(&buf, "");
    return rl_buf_take(&buf);
}

cJSON *rl_turn_input_texts(const rl_turn_t *t, int from) {
    cJSON *out = cJSON_CreateArray();
    int n = cJSON_GetArraySize(t->msgs);
    if (!t->bk->joined) {
        int i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, t->msgs) {
            if (i++ >= from) cJSON_AddItemToArray(out, cJSON_CreateString(rl_json_str(m, "content")));
        }
        return out;
    }
    if (from < n) {
        char *s = rl_turn_join(t, from, n);
        cJSON_AddItemToArray(out, cJSON_CreateString(s ? s : ""));
        free(s);
    }
    return out;
}

cJSON *rl_turn_metadata(const rl_turn_t *t, int from) {
    cJSON *md = cJSON_Duplicate(t->bk->metadata, 1);
    if (!md || !t->f) return md;
    cJSON_AddStringToObject(md, "runlane_batch_id", t->f->claim.batch_id);
    rl_buf_t b;
    rl_buf_init(&b);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, t->msgs) {
        if (i++ < from) continue;
        const char *id = rl_json_str(m, "id");
        if (b.len + strlen(id) + 1 > 512) break;
        if (b.len) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, id);
    }
    if (b.len) cJSON_AddStringToObject(md, "runlane_message_ids", b.data);
    rl_buf_free(&b);
    return md;
}

void rl_usage_add(cJSON *dst, const cJSON *src) {
    const cJSON *it;
    cJSON_ArrayForEach(it, src) {
        if (!it->string) continue;
        cJSON *d = cJSON_GetObjectItemCaseSensitive(dst, it->string);
        if (cJSON_IsNumber(it)) {
            if (cJSON_IsNumber(d)) cJSON_SetNumberValue(d, d->valuedouble + it->valuedouble);
            else if (!d) cJSON_AddNumberToObject(dst, it->string, it->valuedouble);
        } else if (cJSON_IsObject(it)) {
            if (!d) d = cJSON_AddObjectToObject(dst, it->string);
            if (cJSON_IsObject(d)) rl_usage_add(d, it);
        }
    }
}

char *rl_path_escape(const char *s) {
    char *e = curl_easy_escape(NULL, s, 0);
    char *d = e ? rl_strdup(e) : NULL;
    curl_free(e);
    return d;
}

/* ---- public helpers: create a conversation or a thread ---- */

static runlane_err_t create_remote(char **id_out, runlane_t *rl, const char *metadata_json,
                                   const char *path, int flags, const char *fn) {
    if (id_out) *id_out = NULL;
    if (!id_out || !rl)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s: id_out and rl are required", fn);
    cJSON *body = cJSON_CreateObject();
    if (metadata_json) {
        /* No string may be invalid UTF-8 or decode to U+0000 (cut there). */
        runlane_err_t vrc = rl_json_check_strings(metadata_json, strlen(metadata_json), "metadata_json");
        if (vrc) {
            cJSON_Delete(body);
            return vrc;
        }
        cJSON *md = cJSON_Parse(metadata_json);
        int ok = cJSON_IsObject(md) && cJSON_GetArraySize(md) <= 16;
        const cJSON *it;
        cJSON_ArrayForEach(it, md) {
            if (!cJSON_IsString(it) || strlen(it->string) > 64 || strlen(it->valuestring) > 512)
                ok = 0;
        }
        if (!ok) {
            cJSON_Delete(md);
            cJSON_Delete(body);
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                "%s: metadata_json must be a JSON object of at most 16 strings "
                                "(keys <= 64, values <= 512 characters)",
                                fn);
        }
        cJSON_AddItemToObject(body, "metadata", md);
    }
    char *b = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!b) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    long status = 0;
    char *resp = NULL;
    /* On the host's thread: the shared bucket through the host threads'
     * store, under its mutex. */
    rl_http_rate_t rate = {rl->api_store, &rl->api_mu, rate_note, rl};
    runlane_err_t rc =
        rl_http_sync(&status, &resp, rl->conf, "POST", path, b, RL_HTTP_UNSAFE | flags, &rate);
    free(b);
    if (rc == RUNLANE_OK) {
        cJSON *j = cJSON_Parse(resp);
        const char *id = rl_json_str(j, "id");
        if (*id && strlen(id) <= RUNLANE_CONVERSATION_ID_MAX) {
            *id_out = rl_strdup(id);
            rc = *id_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        } else {
            rc = rl_error_set(RUNLANE_ERR_PROVIDER, 0, "%s: POST %s answered without an id", fn,
                              path);
        }
        cJSON_Delete(j);
    }
    free(resp);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_create(char **id_out, runlane_t *rl, const char *metadata_json) {
    return create_remote(id_out, rl, metadata_json, "/conversations", 0,
                         "runlane_conversation_create");
}

RUNLANE_EXTERN(runlane_err_t)
runlane_thread_create(char **id_out, runlane_t *rl, const char *metadata_json) {
    return create_remote(id_out, rl, metadata_json, "/threads", RL_HTTP_ASSISTANTS,
                         "runlane_thread_create");
}

/* ---- migration off the Assistants API (runlane_migrate_thread) ---- */

/* Longest thread a migration copies: a bound on the listing's pages. */
#define RL_MIGRATE_MAX_MESSAGES 100000

static runlane_err_t mig_get(runlane_t *rl, const char *path, int flags, cJSON **out) {
    long status = 0;
    char *resp = NULL;
    rl_http_rate_t rate = {rl->api_store, &rl->api_mu, rate_note, rl};
    runlane_err_t rc = rl_http_sync(&status, &resp, rl->conf, "GET", path, NULL, flags, &rate);
    *out = NULL;
    if (rc == RUNLANE_OK) {
        *out = cJSON_Parse(resp);
        if (!cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            rc = rl_error_set(RUNLANE_ERR_PROVIDER, 1, "runlane_migrate_thread: GET %s: not a JSON object",
                              path);
        }
    }
    free(resp);
    return rc;
}

/* Every object of a list endpoint, oldest first, into `acc`. */
static runlane_err_t mig_list(runlane_t *rl, const char *base, int flags, cJSON *acc) {
    char after[200] = "";
    for (;;) {
        char *esc = *after ? rl_path_escape(after) : NULL;
        char *path = rl_asprintf("%s?order=asc&limit=100%s%s", base, esc ? "&after=" : "",
                                 esc ? esc : "");
        free(esc);
        if (!path) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        cJSON *page = NULL;
        runlane_err_t rc = mig_get(rl, path, flags, &page);
        free(path);
        if (rc) return rc;
        cJSON *data = cJSON_DetachItemFromObjectCaseSensitive(page, "data");
        int more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(page, "has_more"));
        cJSON *it, *last = NULL;
        int n = 0;
        while (cJSON_IsArray(data) && (it = cJSON_DetachItemFromArray(data, 0))) {
            cJSON_AddItemToArray(acc, it);
            last = it;
            n++;
        }
        cJSON_Delete(data);
        cJSON_Delete(page);
        if (cJSON_GetArraySize(acc) > RL_MIGRATE_MAX_MESSAGES)
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                "runlane_migrate_thread: more than %d messages", RL_MIGRATE_MAX_MESSAGES);
        if (!more || !n) return RUNLANE_OK;
        const char *id = rl_json_str(last, "id");
        if (!*id || strlen(id) >= sizeof(after))
            return rl_error_set(RUNLANE_ERR_PROVIDER, 1, "runlane_migrate_thread: a listing page without ids");
        rl_strlcpy(after, id, sizeof(after));
    }
}

/* A thread message as a conversation item {type, role, content}; its text
 * parts joined (other parts, e.g. images, are not copied). */
static cJSON *mig_item(const cJSON *msg) {
    rl_buf_t b;
    rl_buf_init(&b);
    const cJSON *part;
    cJSON_ArrayForEach(part, cJSON_GetObjectItemCaseSensitive(msg, "content")) {
        if (strcmp(rl_json_str(part, "type"), "text") != 0) continue;
        const char *v = rl_json_str(cJSON_GetObjectItemCaseSensitive(part, "text"), "value");
        if (b.len) rl_buf_puts(&b, "\n\n");
        rl_buf_puts(&b, v);
    }
    rl_buf_puts(&b, "");
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "type", "message");
    cJSON_AddStringToObject(it, "role",
                            strcmp(rl_json_str(msg, "role"), "assistant") == 0 ? "assistant" : "user");
    cJSON_AddStringToObject(it, "content", b.data ? b.data : "");
    rl_buf_free(&b);
    return it;
}

static runlane_err_t mig_map(runlane_t *rl, int mode, const char *key, const char *id, char **out) {
    pthread_mutex_lock(&rl->api_mu);
    runlane_err_t rc = rl->api_store->ops->conv_map(rl->api_store, mode, key, NULL, id, out);
    pthread_mutex_unlock(&rl->api_mu);
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_migrate_thread(char **result_json_out, runlane_t *rl, const char *key, const char *thread_id) {
    static const char *fn = "runlane_migrate_thread";
    if (result_json_out) *result_json_out = NULL;
    if (!result_json_out || !rl)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s: result_json_out and rl are required", fn);
    runlane_err_t rc = rl_check_conversation_id(key);
    if (rc) return rc;
    if (thread_id && (rc = rl_check_conversation_id(thread_id))) return rc;
    /* Progress: the conversation being filled, under a map key no app key
     * can be (app keys have no control characters). */
    char *mkey = rl_asprintf("\x1fmigrate\x1f%s", key);
    char *conv = NULL, *cur = NULL, *thread = NULL;
    cJSON *msgs = NULL, *items = NULL, *res = NULL;
    int copied = 0;
    if (!mkey) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if ((rc = mig_map(rl, RL_MAP_GET, key, NULL, &cur))) goto out;
    if ((rc = mig_map(rl, RL_MAP_GET, mkey, NULL, &conv))) goto out;
    if (thread_id) thread = rl_strdup(thread_id);
    else if (cur && rl_is_provider_id(1, cur)) thread = rl_strdup(cur);
    else if (rl_is_provider_id(1, key)) thread = rl_strdup(key);
    if (!conv && cur && rl_is_provider_id(0, cur)) {
        /* Done before (the key maps to a conversation, no copy under way):
         * nothing is copied again. */
        conv = cur;
        cur = NULL;
        goto done;
    }
    if (!thread) {
        rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                          "%s: no thread to migrate: \"%.64s\" is not a thread id and maps to none; "
                          "pass thread_id",
                          fn, key);
        goto out;
    }
    if (!conv) {
        cJSON *md = cJSON_CreateObject();
        if (strlen(key) <= 512) cJSON_AddStringToObject(md, "runlane_key", key);
        cJSON_AddStringToObject(md, "runlane_migrated_from", thread);
        char *mds = cJSON_PrintUnformatted(md);
        cJSON_Delete(md);
        rc = mds ? create_remote(&conv, rl, mds, "/conversations", 0, fn) : RUNLANE_ERR_NOMEM;
        free(mds);
        if (rc) goto out;
        /* A crash before this record leaves an empty orphan conversation. */
        if ((rc = mig_map(rl, RL_MAP_SET, mkey, conv, NULL))) goto out;
    }
    char *th = rl_path_escape(thread), *cv = rl_path_escape(conv);
    char *tpath = th ? rl_asprintf("/threads/%s/messages", th) : NULL;
    char *cpath = cv ? rl_asprintf("/conversations/%s/items", cv) : NULL;
    free(th);
    free(cv);
    msgs = cJSON_CreateArray();
    items = cJSON_CreateArray();
    if (!tpath || !cpath || !msgs || !items) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if (!rc) rc = mig_list(rl, tpath, RL_HTTP_ASSISTANTS, msgs);
    /* Resumable: items go in in order, at most 20 per request, each
     * request all or nothing, so the conversation holds a prefix of the
     * thread: what it holds is not sent again. */
    if (!rc) rc = mig_list(rl, cpath, 0, items);
    int total = cJSON_GetArraySize(msgs), have = cJSON_GetArraySize(items);
    if (!rc && have > total)
        rc = rl_error_set(RUNLANE_ERR_STATE, 0,
                          "%s: conversation %s holds %d items, more than the thread's %d messages",
                          fn, conv, have, total);
    for (int i = have; !rc && i < total; i += 20) {
        cJSON *b = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(b, "items");
        for (int k = i; k < total && k < i + 20; k++)
            cJSON_AddItemToArray(arr, mig_item(cJSON_GetArrayItem(msgs, k)));
        char *body = cJSON_PrintUnformatted(b);
        cJSON_Delete(b);
        long status = 0;
        char *resp = NULL;
        rl_http_rate_t rate = {rl->api_store, &rl->api_mu, rate_note, rl};
        rc = body ? rl_http_sync(&status, &resp, rl->conf, "POST", cpath, body, RL_HTTP_UNSAFE, &rate)
                  : RUNLANE_ERR_NOMEM;
        free(body);
        free(resp);
        if (!rc) copied += (i + 20 < total ? 20 : total - i);
    }
    free(tpath);
    free(cpath);
    if (rc) goto out;
    if ((rc = mig_map(rl, RL_MAP_SET, key, conv, NULL))) goto out;
    if ((rc = mig_map(rl, RL_MAP_FORGET, mkey, NULL, NULL))) goto out;
done:
    res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "conversation_id", conv);
    if (thread) cJSON_AddStringToObject(res, "thread_id", thread);
    cJSON_AddNumberToObject(res, "copied", copied);
    cJSON_AddNumberToObject(res, "total", msgs ? cJSON_GetArraySize(msgs) : 0);
    *result_json_out = cJSON_PrintUnformatted(res);
    rc = *result_json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
out:
    cJSON_Delete(res);
    cJSON_Delete(msgs);
    cJSON_Delete(items);
    free(mkey);
    free(conv);
    free(cur);
    free(thread);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}
