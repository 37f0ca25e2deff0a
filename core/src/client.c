/* client.c - the public client API: lifecycle, producer calls, settling
 * batches, status and metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "internal.h"
#include "ioloop.h"

runlane_event_t *rl_event_pop(runlane_t *rl, int timeout_ms);

/* Queued by runlane_new when verification is off (no quote or backslash:
 * it is also embedded in the event's JSON). */
#define RL_INSECURE_TLS_WARNING                                                              \
    "redis.tls.insecure.skip.verify=true: the Redis server's TLS certificate is NOT verified; " \
    "anyone on the network path can read and change the queue. Use it for tests only."

/* ---- version ---- */

RUNLANE_EXTERN(int) runlane_version(void) { return RUNLANE_VERSION_NUM; }

RUNLANE_EXTERN(const char *) runlane_version_str(void) {
#define RL_STR2(x) #x
#define RL_STR(x) RL_STR2(x)
    return RL_STR(RUNLANE_VERSION_MAJOR) "." RL_STR(RUNLANE_VERSION_MINOR) "." RL_STR(
        RUNLANE_VERSION_PATCH);
}

RUNLANE_EXTERN(unsigned int) runlane_features(void) {
    unsigned int f = RUNLANE_FEATURE_REDIS | RUNLANE_FEATURE_HTTP;
#ifdef RUNLANE_HAVE_HIREDIS_SSL
    f |= RUNLANE_FEATURE_REDIS_TLS;
#endif
    curl_version_info_data *ci = curl_version_info(CURLVERSION_NOW);
    if (ci && (ci->features & CURL_VERSION_SSL)) f |= RUNLANE_FEATURE_HTTP_TLS;
    return f;
}

/* ---- live handles: detects use after destroy ---- */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static runlane_t **live;
static size_t nlive, caplive;

static int live_add(runlane_t *rl) {
    pthread_mutex_lock(&live_mu);
    if (nlive == caplive) {
        size_t cap = caplive ? caplive * 2 : 8;
        runlane_t **v = realloc(live, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&live_mu);
            return 0;
        }
        live = v;
        caplive = cap;
    }
    live[nlive++] = rl;
    pthread_mutex_unlock(&live_mu);
    return 1;
}

static void live_remove(runlane_t *rl) {
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < nlive; i++)
        if (live[i] == rl) {
            live[i] = live[--nlive];
            break;
        }
    if (nlive == 0) {
        free(live);
        live = NULL;
        caplive = 0;
    }
    pthread_mutex_unlock(&live_mu);
}

/* fork(): the child must not inherit a held lock, and handles of the
 * parent are not usable in the child (their I/O thread and connections do
 * not exist there): the child forgets them, so using one returns
 * RUNLANE_ERR_DESTROYED instead of corrupting the parent's state. */
static void fork_prepare(void) { pthread_mutex_lock(&live_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&live_mu); }
static void fork_child(void) {
    nlive = 0;
    pthread_mutex_unlock(&live_mu);
}
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* RUNLANE_OK when rl is a live handle. */
static runlane_err_t check_rl(const runlane_t *rl, const char *fn) {
    if (!rl) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s: rl is NULL", fn);
    int found = 0;
    pthread_mutex_lock(&live_mu);
    for (size_t i = 0; i < nlive && !found; i++) found = live[i] == rl;
    pthread_mutex_unlock(&live_mu);
    if (!found)
        return rl_error_set(RUNLANE_ERR_DESTROYED, 0, "%s: handle was destroyed (or never created)", fn);
    return RUNLANE_OK;
}

/* ---- lifecycle ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void policy_from_conf(rl_policy_t *p, const runlane_conf_t *c) {
    p->window_ms = rl_conf_int(c, "batch.window.ms");
    p->max_wait_ms = rl_conf_int(c, "batch.max.wait.ms");
    p->max_messages = rl_conf_int(c, "batch.max.messages");
    p->max_bytes = rl_conf_int(c, "batch.max.bytes");
    p->lease_ms = rl_conf_int(c, "lease.ms");
    p->max_attempts = rl_conf_int(c, "max.attempts");
    p->max_stalls = rl_conf_int(c, "max.stalls");
    p->backoff_base_ms = rl_conf_int(c, "backoff.base.ms");
    p->backoff_max_ms = rl_conf_int(c, "backoff.max.ms");
    p->backoff_jitter = rl_conf_float(c, "backoff.jitter");
    p->idem_ttl_ms = rl_conf_int(c, "idempotency.ttl.ms");
    p->reply_redeliver_ms = rl_conf_int(c, "reply.redeliver.ms");
    p->reply_ttl_ms = rl_conf_int(c, "reply.ttl.ms");
}

RUNLANE_EXTERN(runlane_t *) runlane_new(const runlane_conf_t *conf, char *errstr, size_t errstr_size) {
    pthread_once(&curl_once, curl_init_once);
    pthread_once(&fork_once, register_fork_handlers);
    runlane_t *rl = calloc(1, sizeof(*rl));
    if (!rl) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        rl_error_copy(errstr, errstr_size);
        return NULL;
    }
    rl->ev_fd = -1;
    rl->conf = conf ? runlane_conf_dup(conf) : runlane_conf_new();
    if (!rl->conf) {
        free(rl);
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        rl_error_copy(errstr, errstr_size);
        return NULL;
    }
    if (rl_conf_resolve(rl->conf, errstr, errstr_size) != RUNLANE_OK) {
        runlane_conf_destroy(rl->conf);
        free(rl);
        return NULL;
    }
    policy_from_conf(&rl->pol, rl->conf);
    const char *backend = rl_conf_str(rl->conf, "backend");
    if (strcmp(backend, "custom") != 0 && !(rl->backend = rl_backend_find(backend))) {
        rl_error_set(RUNLANE_ERR_UNSUPPORTED, 0,
                     "backend: \"%s\" is not available in this build yet; use custom",
                     rl_conf_str(rl->conf, "backend"));
        runlane_conf_destroy(rl->conf);
        free(rl);
        rl_error_copy(errstr, errstr_size);
        return NULL;
    }
    rl->sopts.url = rl_conf_str(rl->conf, "store");
    rl->sopts.prefix = rl_conf_str(rl->conf, "key.prefix");
    rl->sopts.partitions = (int)rl_conf_int(rl->conf, "partitions");
    rl->sopts.connect_timeout_ms = (int)rl_conf_int(rl->conf, "redis.connect.timeout.ms");
    rl->sopts.command_timeout_ms = (int)rl_conf_int(rl->conf, "redis.command.timeout.ms");
    rl->sopts.tls.ca_file = rl_conf_str(rl->conf, "redis.tls.ca.file");
    rl->sopts.tls.ca_dir = rl_conf_str(rl->conf, "redis.tls.ca.dir");
    rl->sopts.tls.cert_file = rl_conf_str(rl->conf, "redis.tls.cert.file");
    rl->sopts.tls.key_file = rl_conf_str(rl->conf, "redis.tls.key.file");
    rl->sopts.tls.server_name = rl_conf_str(rl->conf, "redis.tls.server.name");
    rl->sopts.tls.insecure_skip_verify = rl_conf_bool(rl->conf, "redis.tls.insecure.skip.verify");
    rl->sopts.wait_replicas = (int)rl_conf_int(rl->conf, "redis.wait.replicas");
    rl->sopts.wait_timeout_ms = (int)rl_conf_int(rl->conf, "redis.wait.timeout.ms");
    rl->concurrency = (int)rl_conf_int(rl->conf, "worker.concurrency");
    rl->max_pending_events = (size_t)rl_conf_int(rl->conf, "worker.max.pending.events");
    rl->poll_ms = (int)rl_conf_int(rl->conf, "worker.poll.ms");
    rl->wake_coalesce_ms = (int)rl_conf_int(rl->conf, "worker.wake.coalesce.ms");
    rl->recover_ms = (int)rl_conf_int(rl->conf, "worker.recover.ms");
    rl->renew_ms = (int)(rl->pol.lease_ms / 3);
    if (rl->renew_ms < 10) rl->renew_ms = 10;

    pthread_mutex_init(&rl->api_mu, NULL);
    pthread_mutex_init(&rl->enq_mu, NULL);
    pthread_cond_init(&rl->enq_cond, NULL);
    rl->enq_tail = &rl->enq_head;
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->settle_cond, NULL);
    if (!rl_events_init(rl)) {
        rl_error_set(RUNLANE_ERR_INTERNAL, 0, "eventfd failed");
        goto fail;
    }
    rl->api_store = rl_store_open(&rl->sopts);
    if (!rl->api_store) goto fail;
    if (!live_add(rl)) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        goto fail;
    }
    if (rl->sopts.tls.insecure_skip_verify && strncmp(rl->sopts.url, "rediss://", 9) == 0)
        rl_event_push(rl, rl_event_new(RUNLANE_EVENT_ERROR, NULL, NULL, 0,
                                       "{\"error\":\"" RL_INSECURE_TLS_WARNING "\",\"code\":"
                                       "\"RUNLANE_ERR_INVALID_VALUE\"}",
                                       RUNLANE_ERR_INVALID_VALUE, RL_INSECURE_TLS_WARNING));
    rl_error_clear();
    return rl;
fail:
    rl_error_copy(errstr, errstr_size);
    if (rl->api_store) rl->api_store->ops->destroy(rl->api_store);
    rl_events_destroy(rl);
    pthread_cond_destroy(&rl->settle_cond);
    pthread_mutex_destroy(&rl->mu);
    pthread_mutex_destroy(&rl->api_mu);
    pthread_cond_destroy(&rl->enq_cond);
    pthread_mutex_destroy(&rl->enq_mu);
    runlane_conf_destroy(rl->conf);
    free(rl);
    return NULL;
}

RUNLANE_EXTERN(void) runlane_destroy(runlane_t *rl) {
    if (check_rl(rl, "runlane_destroy")) return;
    pthread_mutex_lock(&rl->mu);
    int running = rl->started && !rl->finished;
    pthread_mutex_unlock(&rl->mu);
    if (running) runlane_stop(rl, RUNLANE_STOP_RELEASE, 0);
    live_remove(rl);
    pthread_mutex_lock(&rl->mu);
    rl_inflight_t *f = rl->inflight;
    while (f) {
        rl_inflight_t *next = f->next;
        rl_claim_free(&f->claim);
        free(f);
        f = next;
    }
    rl->inflight = NULL;
    pthread_mutex_unlock(&rl->mu);
    if (rl->bk) rl->backend->destroy(rl->bk);
    while (rl->cmds) {
        rl_cmd_t *c = rl->cmds;
        rl->cmds = c->next;
        free(c->batch_id);
        free(c->json);
        free(c);
    }
    if (rl->io_store) rl->io_store->ops->destroy(rl->io_store);
    if (rl->api_store) rl->api_store->ops->destroy(rl->api_store);
    rl_ioloop_destroy(rl->loop);
    if (rl->multi) curl_multi_cleanup(rl->multi);
    rl_events_destroy(rl);
    pthread_cond_destroy(&rl->settle_cond);
    pthread_mutex_destroy(&rl->mu);
    pthread_mutex_destroy(&rl->api_mu);
    pthread_cond_destroy(&rl->enq_cond);
    pthread_mutex_destroy(&rl->enq_mu);
    runlane_conf_destroy(rl->conf);
    free(rl);
}

/* ---- producer ---- */

/* Builds a message record tail {"content":...,...} from validated input. */
static runlane_err_t build_tail(char **tail_out, int64_t *bytes_out, char **ikey_out,
                                const runlane_t *rl, const char *content, const cJSON *opts) {
    *tail_out = NULL;
    *ikey_out = NULL;
    if (!content) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "content is NULL");
    size_t n = strlen(content);
    if (!rl_utf8_valid(content, n))
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "content is not valid UTF-8");
    if ((int64_t)n > rl->pol.max_bytes)
        return rl_error_set(RUNLANE_ERR_TOO_LARGE, 0,
                            "content is %zu bytes; batch.max.bytes allows %lld", n,
                            (long long)rl->pol.max_bytes);
    const cJSON *ik = NULL, *ins = NULL, *meta = NULL;
    if (opts) {
        if (!cJSON_IsObject(opts))
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "options must be a JSON object");
        const cJSON *it;
        cJSON_ArrayForEach(it, opts) {
            if (strcmp(it->string, "idempotency_key") == 0) ik = it;
            else if (strcmp(it->string, "instructions") == 0) ins = it;
            else if (strcmp(it->string, "metadata") == 0) meta = it;
            else
                return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                    "options: unknown member \"%.64s\" (expected idempotency_key, "
                                    "instructions, metadata)",
                                    it->string);
        }
        if (ik && !cJSON_IsNull(ik)) {
            if (!cJSON_IsString(ik) || !ik->valuestring[0] || strlen(ik->valuestring) > 256)
                return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                    "options.idempotency_key must be a string of 1..256 bytes");
        } else {
            ik = NULL;
        }
        if (ins && !cJSON_IsNull(ins) && !cJSON_IsString(ins))
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "options.instructions must be a string");
        if (ins && cJSON_IsNull(ins)) ins = NULL;
        if (meta && !cJSON_IsNull(meta)) {
            if (!cJSON_IsObject(meta))
                return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                    "options.metadata must be an object of strings");
            cJSON_ArrayForEach(it, meta) if (!cJSON_IsString(it)) return rl_error_set(
                RUNLANE_ERR_INVALID_ARG, 0, "options.metadata.%.64s must be a string", it->string);
        } else {
            meta = NULL;
        }
    }
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"content\":");
    rl_buf_json_str(&b, content);
    if (ins) {
        rl_buf_puts(&b, ",\"instructions\":");
        rl_buf_json_str(&b, ins->valuestring);
    }
    if (meta) {
        char *m = cJSON_PrintUnformatted(meta);
        if (!m) {
            rl_buf_free(&b);
            return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        }
        rl_buf_puts(&b, ",\"metadata\":");
        rl_buf_puts(&b, m);
        free(m);
    }
    rl_buf_puts(&b, "}");
    *tail_out = rl_buf_take(&b);
    if (!*tail_out) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if (ik && !(*ikey_out = rl_strdup(ik->valuestring))) {
        free(*tail_out);
        *tail_out = NULL;
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    *bytes_out = (int64_t)n;
    return RUNLANE_OK;
}

/* Group commit. Concurrent runlane_enqueue calls on one client (a
 * binding's thread pool, a threaded web server) queue up here while one of
 * them sends: the next sender takes every call queued meanwhile (up to
 * RL_ENQ_GROUP_MAX) and sends them in one pipelined round trip, so Redis
 * reads and answers them with one system call each way instead of one per
 * message (ioredis does the same for BullMQ's concurrent adds). A caller
 * waits for at most the group in flight and its own. Each message is still
 * one enqueue script, atomic on its own; results go back to each caller,
 * with its own error. Only calls of one pipeline group go together (on a
 * Cluster, of one partition: a master that is down fails its own calls,
 * not the others'). The memory store has no round trip to save. */
#define RL_ENQ_GROUP_MAX 64

typedef struct rl_enq_req {
    struct rl_enq_req *next;
    const char *conv, *tail, *ikey;
    int64_t bytes;
    int group; /* the store's pipeline_group of conv */
    char id[RUNLANE_ID_MAX];
    int dup, done;
    runlane_err_t rc;
    runlane_error_t err; /* the sender's error, for this caller's thread */
} rl_enq_req_t;

/* Sends `n` requests (api_mu held by the caller); fills each one's result. */
static void enqueue_send(runlane_t *rl, rl_enq_req_t **reqs, size_t n) {
    rl_store_t *st = rl->api_store;
    const char *convs[RL_ENQ_GROUP_MAX] = {0}, *tails[RL_ENQ_GROUP_MAX] = {0},
               *ikeys[RL_ENQ_GROUP_MAX] = {0};
    int64_t bytes[RL_ENQ_GROUP_MAX] = {0};
    char ids[RL_ENQ_GROUP_MAX][RUNLANE_ID_MAX];
    int dups[RL_ENQ_GROUP_MAX];
    for (size_t i = 0; i < n; i++) {
        convs[i] = reqs[i]->conv;
        tails[i] = reqs[i]->tail;
        ikeys[i] = reqs[i]->ikey;
        bytes[i] = reqs[i]->bytes;
        ids[i][0] = '\0';
        dups[i] = 0;
    }
    int rc = st->ops->enqueue_many(st, &rl->pol, n, convs, tails, bytes, ikeys, ids, dups);
    for (size_t i = 0; i < n; i++) {
        /* A message with an id was stored (the store answers each one on
         * its own); one without shares the group's error. */
        reqs[i]->rc = rc == RUNLANE_OK || ids[i][0] ? RUNLANE_OK : rc;
        if (reqs[i]->rc) reqs[i]->err = *runlane_error_last();
        memcpy(reqs[i]->id, ids[i], RUNLANE_ID_MAX);
        reqs[i]->dup = dups[i];
    }
}

static runlane_err_t enqueue_grouped(runlane_t *rl, rl_enq_req_t *me) {
    rl_store_t *st = rl->api_store;
    if (!st->ops->pipeline_group) {
        pthread_mutex_lock(&rl->api_mu);
        enqueue_send(rl, &me, 1);
        pthread_mutex_unlock(&rl->api_mu);
        RL_ADD(rl, enqueue_round_trips, 1);
    } else {
        me->group = st->ops->pipeline_group(st, me->conv);
        pthread_mutex_lock(&rl->enq_mu);
        *rl->enq_tail = me;
        rl->enq_tail = &me->next;
        while (!me->done) {
            if (rl->enq_busy) {
                pthread_cond_wait(&rl->enq_cond, &rl->enq_mu);
                continue;
            }
            /* This caller sends the oldest call and the calls queued after
             * it in its pipeline group (FIFO: its own comes in this round
             * or a later one it sends too). */
            rl_enq_req_t *group[RL_ENQ_GROUP_MAX];
            size_t n = 0;
            int g = rl->enq_head->group;
            for (rl_enq_req_t **pp = &rl->enq_head; *pp && n < RL_ENQ_GROUP_MAX;) {
                if ((*pp)->group != g) {
                    pp = &(*pp)->next;
                    continue;
                }
                group[n++] = *pp;
                *pp = (*pp)->next;
                if (!*pp) rl->enq_tail = pp;
            }
            rl->enq_busy = 1;
            pthread_mutex_unlock(&rl->enq_mu);
            pthread_mutex_lock(&rl->api_mu);
            enqueue_send(rl, group, n);
            pthread_mutex_unlock(&rl->api_mu);
            RL_ADD(rl, enqueue_round_trips, 1);
            pthread_mutex_lock(&rl->enq_mu);
            for (size_t i = 0; i < n; i++) group[i]->done = 1;
            rl->enq_busy = 0;
            pthread_cond_broadcast(&rl->enq_cond);
        }
        pthread_mutex_unlock(&rl->enq_mu);
    }
    if (me->rc) rl_error_restore(&me->err);
    return me->rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_enqueue(char *id_out, size_t id_out_size, int *duplicate_out, runlane_t *rl,
                const char *conversation_id, const char *content, const char *options_json) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_enqueue"))) return rc;
    if (!id_out || id_out_size == 0)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_enqueue: id_out is NULL");
    if (id_out_size < RUNLANE_ID_MAX)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_enqueue: id_out must hold RUNLANE_ID_MAX (%d) bytes",
                            RUNLANE_ID_MAX);
    id_out[0] = '\0';
    if ((rc = rl_check_conversation_id(conversation_id))) return rc;
    cJSON *opts = NULL;
    if (options_json) {
        opts = cJSON_ParseWithOpts(options_json, NULL, 1); /* no trailing garbage */
        if (!opts) {
            /* A lone surrogate escape fails the parse: named if that is why. */
            if ((rc = rl_json_check_strings(options_json, strlen(options_json), "options"))) return rc;
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "options_json is not valid JSON");
        }
        if ((rc = rl_json_check_strings(options_json, strlen(options_json), "options"))) {
            cJSON_Delete(opts);
            return rc;
        }
    }
    char *tail, *ikey;
    int64_t bytes = 0;
    rc = build_tail(&tail, &bytes, &ikey, rl, content, opts);
    cJSON_Delete(opts);
    if (rc) return rc;
    rl_enq_req_t req;
    memset(&req, 0, sizeof(req));
    req.conv = conversation_id;
    req.tail = tail;
    req.ikey = ikey;
    req.bytes = bytes;
    rc = enqueue_grouped(rl, &req);
    free(tail);
    free(ikey);
    int dup = req.dup;
    if (rc == RUNLANE_OK) memcpy(id_out, req.id, RUNLANE_ID_MAX);
    if (duplicate_out) *duplicate_out = dup;
    if (rc) {
        RL_ADD(rl, enqueue_errors, 1);
        if (rc == RUNLANE_ERR_STORE) RL_ADD(rl, store_errors, 1);
        return rc;
    }
    RL_ADD(rl, enqueued, dup ? 0 : 1);
    RL_ADD(rl, enqueue_duplicates, dup ? 1 : 0);
    rl_worker_wake(rl);
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_enqueue_many(char **result_json_out, runlane_t *rl, const char *messages_json) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_enqueue_many"))) return rc;
    if (!result_json_out || !messages_json)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_enqueue_many: NULL argument");
    *result_json_out = NULL;
    cJSON *arr = cJSON_ParseWithOpts(messages_json, NULL, 1);
    if (!arr && (rc = rl_json_check_strings(messages_json, strlen(messages_json), "messages")))
        return rc;
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "messages_json must be a JSON array");
    }
    if ((rc = rl_json_check_strings(messages_json, strlen(messages_json), "messages"))) {
        cJSON_Delete(arr);
        return rc;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr);
    const char **convs = calloc(n + 1, sizeof(char *));
    char **tails = calloc(n + 1, sizeof(char *));
    char **ikeys = calloc(n + 1, sizeof(char *));
    int64_t *bytes = calloc(n + 1, sizeof(int64_t));
    char(*ids)[RUNLANE_ID_MAX] = calloc(n + 1, RUNLANE_ID_MAX);
    int *dups = calloc(n + 1, sizeof(int));
    rc = (convs && tails && ikeys && bytes && ids && dups)
             ? RUNLANE_OK
             : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    size_t i = 0;
    cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        if (rc) break;
        if (!cJSON_IsObject(m)) {
            rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "messages[%zu] is not an object", i);
            break;
        }
        cJSON *conv = cJSON_DetachItemFromObjectCaseSensitive(m, "conversation_id");
        cJSON *content = cJSON_DetachItemFromObjectCaseSensitive(m, "content");
        if (!cJSON_IsString(conv) || !cJSON_IsString(content)) {
            rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                              "messages[%zu] needs string conversation_id and content", i);
        } else if ((rc = rl_check_conversation_id(conv->valuestring)) == RUNLANE_OK) {
            rc = build_tail(&tails[i], &bytes[i], &ikeys[i], rl, content->valuestring, m);
            if (rc == RUNLANE_OK) convs[i] = rl_strdup(conv->valuestring);
            if (rc == RUNLANE_OK && !convs[i]) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        }
        if (rc) {
            char msg[600];
            rl_strlcpy(msg, runlane_error_message(runlane_error_last()), sizeof(msg));
            rl_error_set(rc, 0, "messages[%zu]: %s", i, msg);
        }
        cJSON_Delete(conv);
        cJSON_Delete(content);
        i++;
    }
    cJSON_Delete(arr);
    if (rc == RUNLANE_OK && n) {
        pthread_mutex_lock(&rl->api_mu);
        rc = rl->api_store->ops->enqueue_many(rl->api_store, &rl->pol, n, convs,
                                              (const char *const *)tails, bytes,
                                              (const char *const *)ikeys, ids, dups);
        pthread_mutex_unlock(&rl->api_mu);
        RL_ADD(rl, enqueue_round_trips, 1);
    }
    if (rc == RUNLANE_OK) {
        rl_buf_t b;
        rl_buf_init(&b);
        rl_buf_puts(&b, "[");
        size_t fresh = 0;
        for (i = 0; i < n; i++) {
            if (i) rl_buf_puts(&b, ",");
            rl_buf_puts(&b, "{\"id\":");
            rl_buf_json_str(&b, ids[i]);
            rl_buf_printf(&b, ",\"duplicate\":%s}", dups[i] ? "true" : "false");
            fresh += dups[i] ? 0 : 1;
        }
        rl_buf_puts(&b, "]");
        *result_json_out = rl_buf_take(&b);
        if (!*result_json_out) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        RL_ADD(rl, enqueued, (int64_t)fresh);
        RL_ADD(rl, enqueue_duplicates, (int64_t)(n - fresh));
        rl_worker_wake(rl);
    } else if (rc == RUNLANE_ERR_STORE) {
        RL_ADD(rl, store_errors, 1);
    }
    for (i = 0; i < n; i++) {
        if (convs) free((char *)convs[i]);
        if (tails) free(tails[i]);
        if (ikeys) free(ikeys[i]);
    }
    free(convs);
    free(tails);
    free(ikeys);
    free(bytes);
    free(ids);
    free(dups);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t) runlane_touch(runlane_t *rl, const char *conversation_id) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_touch"))) return rc;
    if ((rc = rl_check_conversation_id(conversation_id))) return rc;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->touch(rl->api_store, &rl->pol, conversation_id);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

/* ---- conversation keys (see store.h conv_map) ---- */

static runlane_err_t conv_map_call(runlane_t *rl, const char *fn, int mode, const char *key,
                                   const char *provider_id, char **out) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, fn))) return rc;
    if ((rc = rl_check_conversation_id(key))) return rc;
    if (mode == RL_MAP_SET) {
        if (!provider_id || !*provider_id)
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s: provider_id is empty", fn);
        if (strlen(provider_id) > 159)
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                "%s: provider_id is %zu bytes; the limit is 159 bytes", fn,
                                strlen(provider_id));
        if ((rc = rl_check_conversation_id(provider_id))) return rc;
    }
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->conv_map(rl->api_store, mode, key, NULL, provider_id, out);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_get(char **id_out, runlane_t *rl, const char *key) {
    if (!id_out)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_conversation_map_get: id_out is NULL");
    *id_out = NULL;
    return conv_map_call(rl, "runlane_conversation_map_get", RL_MAP_GET, key, NULL, id_out);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_set(runlane_t *rl, const char *key, const char *provider_id) {
    return conv_map_call(rl, "runlane_conversation_map_set", RL_MAP_SET, key, provider_id, NULL);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conversation_map_forget(runlane_t *rl, const char *key) {
    return conv_map_call(rl, "runlane_conversation_map_forget", RL_MAP_FORGET, key, NULL, NULL);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_status(char **json_out, runlane_t *rl, const char *conversation_id) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_status"))) return rc;
    if (!json_out) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_status: json_out is NULL");
    *json_out = NULL;
    if (conversation_id && (rc = rl_check_conversation_id(conversation_id))) return rc;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->status(rl->api_store, conversation_id, json_out);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_dead_list(char **json_out, runlane_t *rl, size_t offset, size_t limit) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_dead_list"))) return rc;
    if (!json_out) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_dead_list: json_out is NULL");
    *json_out = NULL;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->dead_list(rl->api_store, offset, limit, json_out);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_dead_retry(size_t *count_out, runlane_t *rl, const char *dead_id) {
    runlane_err_t rc;
    if (count_out) *count_out = 0;
    if ((rc = check_rl(rl, "runlane_dead_retry"))) return rc;
    if (dead_id && !*dead_id) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "dead_id is empty");
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->dead_retry(rl->api_store, &rl->pol, dead_id, count_out);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) {
        rl_worker_wake(rl);
        rl_error_clear();
    }
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_dead_purge(size_t *count_out, runlane_t *rl, const char *dead_id) {
    runlane_err_t rc;
    if (count_out) *count_out = 0;
    if ((rc = check_rl(rl, "runlane_dead_purge"))) return rc;
    if (dead_id && !*dead_id) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "dead_id is empty");
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->dead_purge(rl->api_store, dead_id, count_out);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t) runlane_metrics(char **text_out, runlane_t *rl) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_metrics"))) return rc;
    if (!text_out) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_metrics: text_out is NULL");
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } rows[] = {
#define ROW(n, t, h) {"runlane_" #n, t, h, offsetof(rl_metrics_t, n)}
        ROW(enqueued, "counter", "Messages queued by this client."),
        ROW(enqueue_duplicates, "counter", "Enqueues answered from an idempotency key."),
        ROW(enqueue_errors, "counter", "Enqueues that failed."),
        ROW(enqueue_round_trips, "counter",
            "Store round trips of runlane_enqueue calls (concurrent calls share one)."),
        ROW(batches_claimed, "counter", "Batches claimed by this worker."),
        ROW(messages_claimed, "counter", "Messages in the batches claimed by this worker."),
        ROW(batches_acked, "counter", "Batches acknowledged."),
        ROW(batches_failed, "counter", "Batch attempts failed."),
        ROW(batches_dead, "counter", "Batches dead-lettered by this worker."),
        ROW(leases_renewed, "counter", "Lease renewals."),
        ROW(leases_lost, "counter", "Leases this worker lost (its token went stale)."),
        ROW(leases_recovered, "counter", "Expired leases of dead workers recovered."),
        ROW(leases_released, "counter", "Leases given back on stop."),
        ROW(store_errors, "counter", "Store operations that failed (Redis unreachable...)."),
        ROW(events_emitted, "counter", "Events queued for the host."),
        ROW(replies_redelivered, "counter",
            "Unconfirmed replies delivered again by this worker (see runlane_reply_ack)."),
        ROW(replies_confirmed, "counter", "Replies confirmed with runlane_reply_ack."),
        ROW(turns_interrupted, "counter",
            "Turns interrupted for new messages (busy.policy=interrupt)."),
#undef ROW
    };
    rl_buf_t b;
    rl_buf_init(&b);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t v = __atomic_load_n((int64_t *)((char *)&rl->m + rows[i].off), __ATOMIC_RELAXED);
        rl_buf_printf(&b, "# HELP %s_total %s\n# TYPE %s_total %s\n%s_total %lld\n", rows[i].name,
                      rows[i].help, rows[i].name, rows[i].type, rows[i].name, (long long)v);
    }
    pthread_mutex_lock(&rl->mu);
    int inflight = rl->ninflight;
    pthread_mutex_unlock(&rl->mu);
    pthread_mutex_lock(&rl->ev_mu);
    size_t pending_events = rl->ev_count;
    pthread_mutex_unlock(&rl->ev_mu);
    rl_buf_printf(&b,
                  "# HELP runlane_inflight_batches Batches this worker holds now.\n"
                  "# TYPE runlane_inflight_batches gauge\nrunlane_inflight_batches %d\n"
                  "# HELP runlane_events_pending Events waiting to be polled.\n"
                  "# TYPE runlane_events_pending gauge\nrunlane_events_pending %zu\n",
                  inflight, pending_events);
    *text_out = rl_buf_take(&b);
    return *text_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

RUNLANE_EXTERN(runlane_err_t) runlane_health(char **json_out, runlane_t *rl) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_health"))) return rc;
    if (!json_out) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_health: json_out is NULL");
    *json_out = NULL;
    pthread_mutex_lock(&rl->mu);
    const char *worker = !rl->started ? "idle" : rl->finished ? "stopped" : rl->stopping ? "stopping" : "running";
    int inflight = rl->ninflight;
    pthread_mutex_unlock(&rl->mu);
    /* One store round trip answers both "reachable" and "how late": the
     * earliest due time of the ready set, against the store's clock. */
    int64_t due = INT64_MAX, now = 0;
    pthread_mutex_lock(&rl->api_mu);
    runlane_err_t src = rl->api_store->ops->next_due(rl->api_store, &due, &now);
    pthread_mutex_unlock(&rl->api_mu);
    char store_err[512] = "";
    if (src != RUNLANE_OK) rl_strlcpy(store_err, runlane_error_message(runlane_error_last()), sizeof(store_err));
    int store_ok = src == RUNLANE_OK;
    int running = strcmp(worker, "running") == 0;
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "{\"ok\":%s,\"store_ok\":%s,", store_ok && (running || !rl->started) ? "true" : "false",
                  store_ok ? "true" : "false");
    if (!store_ok) {
        rl_buf_puts(&b, "\"store_error\":");
        rl_buf_json_str(&b, store_err);
        rl_buf_puts(&b, ",");
    }
    rl_buf_printf(&b, "\"worker\":\"%s\",\"worker_running\":%s,\"backend\":", worker,
                  running ? "true" : "false");
    rl_buf_json_str(&b, rl_conf_str(rl->conf, "backend"));
    rl_buf_printf(&b, ",\"inflight\":%d,\"lag_ms\":", inflight);
    if (!store_ok) rl_buf_puts(&b, "null");
    else rl_buf_printf(&b, "%lld", (long long)(due != INT64_MAX && due < now ? now - due : 0));
    rl_buf_puts(&b, "}");
    *json_out = rl_buf_take(&b);
    if (!*json_out) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    rl_error_clear();
    return RUNLANE_OK;
}

/* ---- worker control ---- */

RUNLANE_EXTERN(runlane_err_t) runlane_start(runlane_t *rl) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_start"))) return rc;
    pthread_mutex_lock(&rl->mu);
    if (rl->started) {
        pthread_mutex_unlock(&rl->mu);
        return rl_error_set(RUNLANE_ERR_STATE, 0, "runlane_start: the worker was already started");
    }
    const char *wid = rl_conf_str(rl->conf, "worker.id");
    if (*wid) {
        rl_strlcpy(rl->worker_id, wid, sizeof(rl->worker_id));
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(rl->worker_id, sizeof(rl->worker_id), "%s:%ld", host, (long)getpid());
    }
    rl->io_store = rl_store_open(&rl->sopts);
    if (!rl->io_store) {
        pthread_mutex_unlock(&rl->mu);
        return runlane_error_code(runlane_error_last());
    }
    rl->multi = curl_multi_init();
    if (!rl->multi) {
        rl->io_store->ops->destroy(rl->io_store);
        rl->io_store = NULL;
        pthread_mutex_unlock(&rl->mu);
        return rl_error_set(RUNLANE_ERR_INTERNAL, 0, "curl_multi_init failed");
    }
    if (!(rl->loop = rl_ioloop_new(rl->multi)) ||
        (rl->backend && !(rl->bk = rl->backend->create(rl)))) {
        rl->io_store->ops->destroy(rl->io_store);
        rl->io_store = NULL;
        rl_ioloop_destroy(rl->loop);
        rl->loop = NULL;
        curl_multi_cleanup(rl->multi);
        rl->multi = NULL;
        pthread_mutex_unlock(&rl->mu);
        return runlane_error_code(runlane_error_last());
    }
    /* busy.policy=interrupt learns of new messages from the renewals: renew
     * often enough that an interrupt is prompt. */
    rl->busy_interrupt = strcmp(rl_conf_str(rl->conf, "busy.policy"), "interrupt") == 0 &&
                         rl->backend && rl->backend->interrupt;
    if (rl->busy_interrupt && rl->renew_ms > 500) rl->renew_ms = 500;
    rl->started = 1;
    if (pthread_create(&rl->thread, NULL, rl_worker_main, rl) != 0) {
        rl->started = 0;
        pthread_mutex_unlock(&rl->mu);
        return rl_error_set(RUNLANE_ERR_INTERNAL, 0, "could not start the I/O thread");
    }
    pthread_mutex_unlock(&rl->mu);
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_stop(runlane_t *rl, runlane_stop_mode_t mode, int timeout_ms) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_stop"))) return rc;
    if (mode != RUNLANE_STOP_DRAIN && mode != RUNLANE_STOP_RELEASE)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_stop: unknown mode %d", (int)mode);
    pthread_mutex_lock(&rl->mu);
    if (rl->started && rl->stopping && mode == RUNLANE_STOP_RELEASE &&
        rl->stop_mode == RUNLANE_STOP_DRAIN && rl->finished == 0) {
        /* A second stop during a drain (a second signal): release what is
         * still in flight now, and return once the I/O thread is done (the
         * first caller joins it). */
        rl->stop_mode = RUNLANE_STOP_RELEASE;
        pthread_mutex_unlock(&rl->mu);
        rl_worker_wake(rl);
        pthread_mutex_lock(&rl->mu);
        while (rl->finished == 0) pthread_cond_wait(&rl->settle_cond, &rl->mu);
        pthread_mutex_unlock(&rl->mu);
        rl_error_clear();
        return RUNLANE_OK;
    }
    if (!rl->started || rl->stopping) {
        int was = rl->started;
        pthread_mutex_unlock(&rl->mu);
        return rl_error_set(RUNLANE_ERR_STATE, 0, "runlane_stop: the worker is %s",
                            was ? "already stopping or stopped" : "not started");
    }
    rl->stopping = 1;
    rl->stop_mode = mode;
    rl->stop_deadline = rl_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_cond_broadcast(&rl->settle_cond);
    pthread_mutex_unlock(&rl->mu);
    rl_worker_wake(rl);
    pthread_join(rl->thread, NULL);
    pthread_mutex_lock(&rl->mu);
    int drained = rl->finished == 1, escalated = rl->stop_mode != mode;
    pthread_mutex_unlock(&rl->mu);
    if (mode == RUNLANE_STOP_DRAIN && !drained && escalated)
        return rl_error_set(RUNLANE_ERR_TIMEOUT, 0,
                            "runlane_stop: a second stop (RUNLANE_STOP_RELEASE) ended the drain; "
                            "the leases of the in-flight batches were released");
    if (mode == RUNLANE_STOP_DRAIN && !drained)
        return rl_error_set(RUNLANE_ERR_TIMEOUT, 0,
                            "runlane_stop: in-flight batches did not finish within %d ms; their "
                            "leases were released",
                            timeout_ms);
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t) runlane_start_check(runlane_t *rl, unsigned int host_flags) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_start_check"))) return rc;
    if (host_flags & ~(unsigned int)RUNLANE_HOST_RUNS_BATCHES)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_start_check: unknown flags 0x%x", host_flags);
    /* With the custom backend the host runs every turn: a worker nobody
     * takes batches from would lease them and leave them until their lease
     * is taken back, so it is refused before anything is claimed. */
    if (!rl->backend && !(host_flags & RUNLANE_HOST_RUNS_BATCHES))
        return rl_error_set(RUNLANE_ERR_STATE, 0,
                            "cannot start the worker: the backend is custom (the host runs every turn) "
                            "and nothing takes its batches; give a batch handler (or a batch listener), "
                            "or choose an HTTP backend (set backend=responses, or openai.assistant.id "
                            "for assistants)");
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_event_t *) runlane_poll(runlane_t *rl, int timeout_ms) {
    if (check_rl(rl, "runlane_poll")) return NULL;
    return rl_event_pop(rl, timeout_ms);
}

RUNLANE_EXTERN(int) runlane_event_fd(runlane_t *rl) {
    if (check_rl(rl, "runlane_event_fd")) return -1;
    return rl->ev_fd;
}

RUNLANE_EXTERN(runlane_err_t) runlane_set_wake_cb(runlane_t *rl, runlane_wake_cb cb, void *opaque) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_set_wake_cb"))) return rc;
    /* Under ev_mu: rl_event_push calls the callback under the same lock, so
     * once this returns the old callback is never called again. */
    pthread_mutex_lock(&rl->ev_mu);
    rl->wake_cb = cb;
    rl->wake_opaque = opaque;
    int pending = rl->ev_head != NULL;
    pthread_mutex_unlock(&rl->ev_mu);
    if (cb && pending) cb(opaque);
    return RUNLANE_OK;
}

/* ---- settling batches (any thread) ---- */

/* Marks the in-flight batch as settling and copies what the store needs
 * (and, when asked, its attempt). */
static runlane_err_t begin_settle(runlane_t *rl, const char *batch_id, char **conv, char *token,
                                  int *attempt, const char *fn) {
    if (!batch_id || !*batch_id)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s: batch_id is NULL or empty", fn);
    if (rl->backend)
        return rl_error_set(RUNLANE_ERR_STATE, 0,
                            "%s: batches of the %s backend are settled by runlane itself", fn,
                            rl->backend->name);
    pthread_mutex_lock(&rl->mu);
    /* A batch released here may be claimed again (same batch id, a new
     * token) before its release returned: the entry to settle is the one
     * delivered and not settling yet. */
    rl_inflight_t *f = NULL, *settling = NULL;
    for (rl_inflight_t *it = rl->inflight; it && !f; it = it->next) {
        if (strcmp(it->claim.batch_id, batch_id) != 0) continue;
        if (it->state == RL_IF_DELIVERED) f = it;
        else settling = it;
    }
    if (!f) f = settling;
    runlane_err_t rc = RUNLANE_OK;
    if (!f) {
        rc = rl_error_set(RUNLANE_ERR_NOT_FOUND, 0,
                          "%s: batch \"%.64s\" is not held by this client (already settled, "
                          "lease lost, or unknown)",
                          fn, batch_id);
    } else if (f->state != RL_IF_DELIVERED) {
        rc = rl_error_set(RUNLANE_ERR_STATE, 0, "%s: batch \"%.64s\" is already being settled",
                          fn, batch_id);
    } else if (!(*conv = rl_strdup(f->claim.conversation_id))) {
        rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    } else {
        f->state = RL_IF_SETTLING;
        rl_strlcpy(token, f->claim.token, 32);
        if (attempt) *attempt = f->claim.attempt;
    }
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

/* A settle refused for a stale token: the host learns it the same way as
 * a loss found by renew. */
static void push_lease_lost(runlane_t *rl, const char *conv, const char *batch_id) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"conversation_id\":");
    rl_buf_json_str(&b, conv);
    rl_buf_puts(&b, ",\"batch_id\":");
    rl_buf_json_str(&b, batch_id);
    rl_buf_puts(&b, "}");
    char *json = rl_buf_take(&b);
    rl_event_push(rl, rl_event_new(RUNLANE_EVENT_LEASE_LOST, conv, batch_id, 0, json,
                                   RUNLANE_ERR_STALE,
                                   "lease lost: another worker may run this batch"));
    free(json);
}

/* Removes the batch (settled or lost) or puts it back (store trouble):
 * the entry of this lease (batch id and token), not a later claim of it. */
static void end_settle(runlane_t *rl, const char *batch_id, const char *token, int remove) {
    pthread_mutex_lock(&rl->mu);
    rl_inflight_t **pp = &rl->inflight;
    while (*pp && (strcmp((*pp)->claim.batch_id, batch_id) != 0 ||
                   strcmp((*pp)->claim.token, token) != 0))
        pp = &(*pp)->next;
    if (*pp) {
        if (remove) {
            rl_inflight_t *f = *pp;
            *pp = f->next;
            rl_claim_free(&f->claim);
            free(f);
            rl->ninflight--;
        } else {
            (*pp)->state = RL_IF_DELIVERED;
        }
    }
    pthread_cond_broadcast(&rl->settle_cond);
    pthread_mutex_unlock(&rl->mu);
    rl_worker_wake(rl);
}

/* The common end of a host settle (ack, fail, release) once the store
 * answered `rc`: a refused stale token becomes a lease_lost event, the
 * batch leaves (settled or lost) or stays (store trouble: the host may
 * try again). Frees conv. */
static runlane_err_t finish_settle(runlane_t *rl, runlane_err_t rc, char *conv,
                                   const char *batch_id, const char *token) {
    if (rc == RUNLANE_ERR_STALE) {
        RL_ADD(rl, leases_lost, 1);
        push_lease_lost(rl, conv, batch_id);
    }
    if (rc == RUNLANE_ERR_STORE) RL_ADD(rl, store_errors, 1);
    end_settle(rl, batch_id, token, rc == RUNLANE_OK || rc == RUNLANE_ERR_STALE);
    free(conv);
    if (rc == RUNLANE_OK) rl_error_clear();
    return rc;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_batch_ack(runlane_t *rl, const char *batch_id, const char *result_json) {
    runlane_err_t rc;
    (void)result_json;
    if ((rc = check_rl(rl, "runlane_batch_ack"))) return rc;
    char *conv = NULL, token[32];
    if ((rc = begin_settle(rl, batch_id, &conv, token, NULL, "runlane_batch_ack"))) return rc;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->ack(rl->api_store, &rl->pol, conv, token);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) RL_ADD(rl, batches_acked, 1);
    return finish_settle(rl, rc, conv, batch_id, token);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_batch_fail(runlane_t *rl, const char *batch_id, const char *error_message, int retriable) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_batch_fail"))) return rc;
    if (error_message && !rl_utf8_valid(error_message, strlen(error_message)))
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "error_message is not valid UTF-8");
    char *conv = NULL, token[32];
    int attempt = 0;
    if ((rc = begin_settle(rl, batch_id, &conv, token, &attempt, "runlane_batch_fail"))) return rc;
    const char *err = error_message ? error_message : "failed by the host";
    rl_fail_outcome_t outcome = RL_FAIL_RETRY;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->fail(rl->api_store, &rl->pol, conv, token, err, retriable, &outcome);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) {
        RL_ADD(rl, batches_failed, 1);
        rl_buf_t b;
        rl_buf_init(&b);
        rl_buf_puts(&b, "{\"conversation_id\":");
        rl_buf_json_str(&b, conv);
        rl_buf_puts(&b, ",\"batch_id\":");
        rl_buf_json_str(&b, batch_id);
        rl_buf_printf(&b, ",\"attempt\":%d,\"error\":", attempt);
        rl_buf_json_str(&b, err);
        rl_buf_printf(&b, ",\"dead\":%s}", outcome == RL_FAIL_DEAD ? "true" : "false");
        char *json = rl_buf_take(&b);
        if (outcome == RL_FAIL_DEAD) RL_ADD(rl, batches_dead, 1);
        rl_event_push(rl, rl_event_new(outcome == RL_FAIL_DEAD ? RUNLANE_EVENT_DEAD
                                                                : RUNLANE_EVENT_FAILED,
                                       conv, batch_id, attempt, json, RUNLANE_ERR_PROVIDER, err));
        free(json);
    }
    return finish_settle(rl, rc, conv, batch_id, token);
}

RUNLANE_EXTERN(runlane_err_t) runlane_batch_release(runlane_t *rl, const char *batch_id) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_batch_release"))) return rc;
    char *conv = NULL, token[32];
    if ((rc = begin_settle(rl, batch_id, &conv, token, NULL, "runlane_batch_release"))) return rc;
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->release(rl->api_store, &rl->pol, conv, token);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_OK) RL_ADD(rl, leases_released, 1);
    return finish_settle(rl, rc, conv, batch_id, token);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_submit_tool_outputs(runlane_t *rl, const char *batch_id, const char *outputs_json) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_submit_tool_outputs"))) return rc;
    if (!rl->backend)
        return rl_error_set(RUNLANE_ERR_UNSUPPORTED, 0,
                            "runlane_submit_tool_outputs: the custom backend has no tool calls");
    if (!batch_id || !*batch_id || !outputs_json)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_submit_tool_outputs: batch_id and outputs_json are required");
    cJSON *j = cJSON_Parse(outputs_json);
    int ok = cJSON_IsArray(j);
    if (ok && (rc = rl_json_check_strings(outputs_json, strlen(outputs_json), "outputs_json"))) {
        cJSON_Delete(j);
        return rc;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, j) {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "tool_call_id");
        cJSON *out = cJSON_GetObjectItemCaseSensitive(it, "output");
        if (!cJSON_IsString(id) || !cJSON_IsString(out)) ok = 0;
    }
    cJSON_Delete(j);
    if (!ok)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "outputs_json must be a JSON array of {\"tool_call_id\":string,"
                            "\"output\":string} in valid UTF-8");
    rl_cmd_t *cmd = calloc(1, sizeof(*cmd));
    if (!cmd || !(cmd->batch_id = rl_strdup(batch_id)) || !(cmd->json = rl_strdup(outputs_json))) {
        if (cmd) free(cmd->batch_id);
        free(cmd);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    pthread_mutex_lock(&rl->mu);
    rl_inflight_t *f = rl->inflight;
    while (f && strcmp(f->claim.batch_id, batch_id) != 0) f = f->next;
    if (!f) {
        pthread_mutex_unlock(&rl->mu);
        free(cmd->batch_id);
        free(cmd->json);
        free(cmd);
        return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0,
                            "runlane_submit_tool_outputs: batch \"%.64s\" is not running here",
                            batch_id);
    }
    rl_cmd_t **pp = &rl->cmds;
    while (*pp) pp = &(*pp)->next;
    *pp = cmd;
    pthread_mutex_unlock(&rl->mu);
    rl_worker_wake(rl);
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t) runlane_reply_ack(runlane_t *rl, const char *batch_id) {
    runlane_err_t rc;
    if ((rc = check_rl(rl, "runlane_reply_ack"))) return rc;
    if (!rl->backend)
        return rl_error_set(RUNLANE_ERR_UNSUPPORTED, 0,
                            "runlane_reply_ack: the custom backend delivers no replies");
    if (!batch_id || !*batch_id)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_reply_ack: batch_id is NULL or empty");
    /* Any client of the queue may confirm (the reply may have been
     * delivered by another worker): this goes to the store only. */
    pthread_mutex_lock(&rl->api_mu);
    rc = rl->api_store->ops->reply_ack(rl->api_store, batch_id);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc == RUNLANE_ERR_STORE) RL_ADD(rl, store_errors, 1);
    if (rc != RUNLANE_OK) return rc;
    RL_ADD(rl, replies_confirmed, 1);
    rl_error_clear();
    return RUNLANE_OK;
}
