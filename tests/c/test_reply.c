/* test_reply.c - the worker's side of at-least-once replies and of
 * busy.policy=interrupt, through a fake HTTP backend.
 *
 * The fake backend is installed in place of a real one (rl->backend, set
 * between runlane_new and runlane_start; internal headers are visible to
 * the tests) and runs on the I/O thread like the real ones: it completes
 * its batches with rl_worker_complete (the reply is the batch's contents
 * joined by ","), or holds them until the test lets go; its interrupt op
 * restarts the held turn with rl_worker_restart. So these tests exercise
 * the worker loop (claims, renewals, interrupts, redelivery of unconfirmed
 * replies) and runlane_reply_ack without a provider.
 *
 * Runs on the memory store and, when RUNLANE_TEST_REDIS names a server, on
 * Redis (RUNLANE_REQUIRE_REDIS=1: a missing server is a failure). Timing:
 * reply.redeliver.ms is at its minimum (1 s) and the worker looks for due
 * replies every 2 s, so a redelivery is awaited with a generous deadline. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "internal.h"
#include "rltest.h"
#include "runlane.h"
#include "store.h"

static char store_url[256];
static int prefix_seq;
static char run_tag[48];

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* the fake backend                                                   */
/* ------------------------------------------------------------------ */

enum { FK_COMPLETE = 0, FK_HOLD = 1 };

static pthread_mutex_t fk_mu = PTHREAD_MUTEX_INITIALIZER;
static int fk_mode;       /* FK_COMPLETE: complete at once; FK_HOLD: until fk_release */
static int fk_release;    /* FK_HOLD: complete what is held */
static int fk_steal_once; /* give the next completed batch's lease back first */
static int fk_starts, fk_interrupts, fk_restarts, fk_stale;

static void fk_reset(int mode) {
    pthread_mutex_lock(&fk_mu);
    fk_mode = mode;
    fk_release = fk_steal_once = 0;
    fk_starts = fk_interrupts = fk_restarts = fk_stale = 0;
    pthread_mutex_unlock(&fk_mu);
}

static int fk_get(const int *v) {
    pthread_mutex_lock(&fk_mu);
    int x = *v;
    pthread_mutex_unlock(&fk_mu);
    return x;
}

static void fk_set(int *v, int x) {
    pthread_mutex_lock(&fk_mu);
    *v = x;
    pthread_mutex_unlock(&fk_mu);
}

#define FK_MAX 64

struct rl_backend {
    runlane_t *rl;
    rl_inflight_t *held[FK_MAX];
    int restart[FK_MAX]; /* 1: interrupted, restart on the next drive; 2: restarted */
    int n;
};

static rl_backend_t *fk_create(runlane_t *rl) {
    rl_backend_t *bk = calloc(1, sizeof(*bk));
    if (bk) bk->rl = rl;
    return bk;
}

static void fk_start(rl_backend_t *bk, rl_inflight_t *f) {
    if (bk->n == FK_MAX) {
        rl_worker_settle(bk->rl, f, RL_SETTLE_RELEASE, NULL, 1, 0);
        return;
    }
    bk->restart[bk->n] = 0;
    bk->held[bk->n++] = f;
    pthread_mutex_lock(&fk_mu);
    fk_starts++;
    pthread_mutex_unlock(&fk_mu);
}

static int fk_find(const rl_backend_t *bk, const rl_inflight_t *f) {
    for (int i = 0; i < bk->n; i++)
        if (bk->held[i] == f) return i;
    return -1;
}

static void fk_remove(rl_backend_t *bk, int i) {
    bk->n--;
    bk->held[i] = bk->held[bk->n];
    bk->restart[i] = bk->restart[bk->n];
}

static void fk_interrupt(rl_backend_t *bk, rl_inflight_t *f) {
    int i = fk_find(bk, f);
    if (i >= 0 && bk->restart[i] == 0) bk->restart[i] = 1;
    pthread_mutex_lock(&fk_mu);
    fk_interrupts++;
    pthread_mutex_unlock(&fk_mu);
}

static void fk_abandon(rl_backend_t *bk, rl_inflight_t *f) {
    int i = fk_find(bk, f);
    if (i >= 0) fk_remove(bk, i);
}

static void fk_tool_outputs(rl_backend_t *bk, rl_inflight_t *f, const char *outputs_json) {
    (void)bk;
    (void)f;
    (void)outputs_json;
}

/* {"reply":"<contents joined by ,>"}: the worker adds the ids. */
static char *fk_reply(const rl_inflight_t *f) {
    cJSON *msgs = cJSON_Parse(f->claim.messages_json);
    rl_buf_t b;
    rl_buf_init(&b);
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (b.len) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, cJSON_IsString(c) ? c->valuestring : "?");
    }
    rl_buf_puts(&b, "");
    cJSON_Delete(msgs);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "reply", b.data ? b.data : "");
    rl_buf_free(&b);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int64_t fk_drive(rl_backend_t *bk) {
    runlane_t *rl = bk->rl;
    for (int i = 0; i < bk->n;) {
        rl_inflight_t *f = bk->held[i];
        if (bk->restart[i] == 1 && rl_worker_restart(rl, f) == RUNLANE_OK) {
            bk->restart[i] = 2;
            pthread_mutex_lock(&fk_mu);
            fk_restarts++;
            pthread_mutex_unlock(&fk_mu);
        }
        pthread_mutex_lock(&fk_mu);
        int go = fk_mode == FK_COMPLETE || fk_release;
        int steal = go && fk_steal_once;
        if (steal) fk_steal_once = 0;
        pthread_mutex_unlock(&fk_mu);
        if (!go) {
            i++;
            continue;
        }
        if (steal) /* the lease is lost before the turn completes */
            rl->io_store->ops->release(rl->io_store, &rl->pol, f->claim.conversation_id,
                                       f->claim.token);
        char *json = fk_reply(f);
        runlane_err_t rc = rl_worker_complete(rl, f, json);
        free(json);
        if (rc == RUNLANE_ERR_STORE || rc == RUNLANE_ERR_NOMEM) {
            i++; /* still ours: again on the next drive */
            continue;
        }
        if (rc == RUNLANE_ERR_STALE) {
            pthread_mutex_lock(&fk_mu);
            fk_stale++;
            pthread_mutex_unlock(&fk_mu);
        }
        fk_remove(bk, i); /* f was freed */
    }
    return bk->n ? rl_mono_ms() + 10 : INT64_MAX;
}

static void fk_destroy(rl_backend_t *bk) { free(bk); }

static const rl_backend_ops_t fake_backend = {
    "fake", fk_create, fk_start, fk_drive, fk_tool_outputs, fk_interrupt, fk_abandon, fk_destroy,
};

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

static char cur_prefix[96];

/* A client on this test's store (new_queue() picks a fresh one); `fake`:
 * with the fake backend, else the custom backend. Not started. */
static runlane_t *client(int fake, const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512], url[300];
    if (strncmp(store_url, "memory", 6) == 0)
        snprintf(url, sizeof(url), "memory://%s", cur_prefix);
    else
        snprintf(url, sizeof(url), "%s", store_url);
    if (runlane_conf_set(conf, "store", url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", cur_prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err)) ||
        runlane_conf_set(conf, "batch.window.ms", "0", err, sizeof(err)) ||
        runlane_conf_set(conf, "reply.redeliver.ms", "1000", err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) RL_FAILF("conf %s: %s", kv[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    if (fake) rl->backend = &fake_backend;
    return rl;
}

static void new_queue(void) {
    snprintf(cur_prefix, sizeof(cur_prefix), "rlreply-%s-%d", run_tag, ++prefix_seq);
}

/* Next event of `type`, skipping others; NULL after timeout_ms. */
static runlane_event_t *wait_event(runlane_t *rl, runlane_event_type_t type, int timeout_ms) {
    int64_t end = rl_mono_ms() + (int64_t)(timeout_ms * rl_test_time_scale());
    while (rl_mono_ms() < end) {
        runlane_event_t *ev = runlane_poll(rl, 10);
        if (!ev) continue;
        if (runlane_event_type(ev) == type) return ev;
        runlane_event_destroy(ev);
    }
    return NULL;
}

static void enqueue(runlane_t *rl, const char *conv, const char *content) {
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, content, NULL));
}

/* String member of an event's JSON ("" when absent); copies into out. */
static void ev_str(const runlane_event_t *ev, const char *key, char *out, size_t n) {
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
    cJSON_Delete(j);
}

/* 1 / 0 for a boolean member, -1 when absent. */
static int ev_bool(const runlane_event_t *ev, const char *key) {
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int r = cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
    cJSON_Delete(j);
    return r;
}

static int ev_int(const runlane_event_t *ev, const char *key) {
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int r = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    return r;
}

/* Waits for a COMPLETED event and checks its reply; its batch id into
 * bid (may be NULL). Returns the event's "redelivered" (-1 when absent). */
static int expect_completed(runlane_t *rl, const char *conv, const char *reply, char *bid,
                            int timeout_ms) {
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_COMPLETED, timeout_ms);
    RL_CHECK_MSG(ev != NULL, "no COMPLETED event (reply \"%s\") within %d ms", reply, timeout_ms);
    char got[256], jconv[256], jbid[RUNLANE_ID_MAX];
    ev_str(ev, "reply", got, sizeof(got));
    ev_str(ev, "conversation_id", jconv, sizeof(jconv));
    ev_str(ev, "batch_id", jbid, sizeof(jbid));
    int attempt = ev_int(ev, "attempt"), redelivered = ev_bool(ev, "redelivered");
    int ok_conv = strcmp(runlane_event_conversation_id(ev), conv) == 0 && strcmp(jconv, conv) == 0;
    int ok_bid = runlane_event_batch_id(ev)[0] && strcmp(runlane_event_batch_id(ev), jbid) == 0;
    int ok_att = attempt >= 1 && attempt == runlane_event_attempt(ev);
    if (bid) snprintf(bid, RUNLANE_ID_MAX, "%s", jbid);
    char json[512];
    snprintf(json, sizeof(json), "%s", runlane_event_json(ev));
    runlane_event_destroy(ev);
    RL_CHECK_MSG(strcmp(got, reply) == 0, "reply: expected \"%s\", got \"%s\"", reply, got);
    RL_CHECK_MSG(ok_conv && ok_bid && ok_att, "COMPLETED does not name its batch: %s", json);
    return redelivered;
}

static int64_t metric(runlane_t *rl, const char *name) {
    char *text = NULL;
    RL_CHECK_OK(runlane_metrics(&text, rl));
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(text, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    runlane_free(text);
    return v;
}

static long long status_num(runlane_t *rl, const char *conv, const char *key) {
    char *json = NULL;
    RL_CHECK_OK(runlane_status(&json, rl, conv));
    cJSON *j = cJSON_Parse(json);
    runlane_free(json);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    long long r = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    cJSON_Delete(j);
    return r;
}

/* Confirmed replies (the last one: batch `bid`) never come again, decided
 * by events (any COMPLETED but the witness's fails): a
 * witness conversation completes and its reply is left unconfirmed; once it
 * has been delivered again twice, the redelivery pass that would have
 * carried `bid` (due no later than the witness) has surely ended, so no
 * COMPLETED of `bid` by then means none will come. */
static void expect_no_reply_again(runlane_t *rl, const char *bid, const char *witness) {
    char id[RUNLANE_ID_MAX], wbid[RUNLANE_ID_MAX] = "";
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, witness, "witness", NULL));
    int seen = 0;
    int timeout_ms = (int)(8000 * rl_test_time_scale());
    while (seen < 3) {
        int64_t end = rl_mono_ms() + timeout_ms;
        runlane_event_t *ev = NULL;
        while (!ev && rl_mono_ms() < end) {
            ev = runlane_poll(rl, 10);
            if (ev && runlane_event_type(ev) != RUNLANE_EVENT_COMPLETED) {
                runlane_event_destroy(ev);
                ev = NULL;
            }
        }
        RL_CHECK_MSG(ev != NULL, "the witness reply came %d of 3 times within %d ms each", seen,
                     timeout_ms);
        int wit = strcmp(runlane_event_conversation_id(ev), witness) == 0;
        if (wit) snprintf(wbid, sizeof(wbid), "%s", runlane_event_batch_id(ev));
        char json[512];
        snprintf(json, sizeof(json), "%s", runlane_event_json(ev));
        runlane_event_destroy(ev);
        RL_CHECK_MSG(wit, "a confirmed reply (%s) came again: %s", bid, json);
        if (wit) seen++;
    }
    RL_CHECK_OK(runlane_reply_ack(rl, wbid));
}

/* Waits until fk counter *v reaches want. */
static void wait_count(const int *v, int want, int timeout_ms, const char *what) {
    timeout_ms = (int)(timeout_ms * rl_test_time_scale());
    int64_t end = rl_mono_ms() + timeout_ms;
    while (fk_get(v) < want) {
        RL_CHECK_MSG(rl_mono_ms() < end, "%s: %d of %d within %d ms", what, fk_get(v), want,
                     timeout_ms);
        sleep_ms(10);
    }
}

/* Waits for `n` more lease renewals of rl. A renewal that sees pending
 * messages is where busy.policy=interrupt decides (worker.c renew_all), and
 * the count grows before that decision: after 3 more, at least 2 renewals
 * began after the caller's enqueue and one of them has decided, so a
 * missing interrupt is then a fact, not a matter of waiting long enough. */
static void wait_renewals(runlane_t *rl, int n, const char *what) {
    int64_t base = RL_GET(rl, leases_renewed);
    int timeout_ms = (int)(10000 * rl_test_time_scale());
    int64_t end = rl_mono_ms() + timeout_ms;
    while (RL_GET(rl, leases_renewed) < base + n) {
        RL_CHECK_MSG(rl_mono_ms() < end, "%s: %lld of %d renewals within %d ms", what,
                     (long long)(RL_GET(rl, leases_renewed) - base), n, timeout_ms);
        sleep_ms(10);
    }
}

/* ------------------------------------------------------------------ */
/* tests                                                              */
/* ------------------------------------------------------------------ */

static void test_completed_redelivered_after_crash_until_confirmed(void) {
    new_queue();
    fk_reset(FK_COMPLETE);
    runlane_t *prod = client(0, NULL); /* keeps a memory store alive */
    runlane_t *a = client(1, NULL);
    RL_CHECK_OK(runlane_start(a));
    enqueue(prod, "u1", "hello");
    char bid[RUNLANE_ID_MAX], bid2[RUNLANE_ID_MAX];
    RL_CHECK_INT(-1, expect_completed(a, "u1", "hello", bid, 5000));
    /* acked with the reply: nothing in flight, nothing pending */
    RL_CHECK_INT(0, status_num(prod, "u1", "inflight"));
    RL_CHECK_INT(0, status_num(prod, "u1", "pending"));
    RL_CHECK_INT(1, metric(a, "runlane_batches_acked_total"));
    /* the host crashed before confirming: another worker delivers it again */
    runlane_destroy(a);
    runlane_t *b = client(1, NULL);
    RL_CHECK_OK(runlane_start(b));
    RL_CHECK_INT(1, expect_completed(b, "u1", "hello", bid2, 8000));
    RL_CHECK_STR(bid, bid2);
    RL_CHECK_INT(1, fk_get(&fk_starts)); /* the turn itself ran once */
    RL_CHECK_INT(1, metric(b, "runlane_replies_redelivered_total"));
    /* confirmed: once; then never again */
    RL_CHECK_OK(runlane_reply_ack(b, bid));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_reply_ack(b, bid));
    RL_CHECK(strstr(runlane_error_message(runlane_error_last()), bid) != NULL);
    RL_CHECK_INT(1, metric(b, "runlane_replies_confirmed_total"));
    expect_no_reply_again(b, bid, "witness");
    /* the custom backend has no replies */
    RL_CHECK_INT(RUNLANE_ERR_UNSUPPORTED, runlane_reply_ack(prod, bid));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_reply_ack(b, NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_reply_ack(b, ""));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_reply_ack(b, "b1-0-424242"));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_reply_ack(b, "not a batch id"));
    runlane_destroy(b);
    runlane_destroy(prod);
}

static void test_unconfirmed_reply_repeats_confirmed_does_not(void) {
    new_queue();
    fk_reset(FK_COMPLETE);
    runlane_t *w = client(1, NULL);
    RL_CHECK_OK(runlane_start(w));
    enqueue(w, "u1", "one");
    enqueue(w, "u2", "two");
    char b1[RUNLANE_ID_MAX], b2[RUNLANE_ID_MAX], x[RUNLANE_ID_MAX];
    RL_CHECK_INT(-1, expect_completed(w, "u1", "one", b1, 5000));
    RL_CHECK_INT(-1, expect_completed(w, "u2", "two", b2, 5000));
    RL_CHECK(strcmp(b1, b2) != 0);
    RL_CHECK_OK(runlane_reply_ack(w, b2));
    /* only u1's comes back, again and again until confirmed */
    RL_CHECK_INT(1, expect_completed(w, "u1", "one", x, 8000));
    RL_CHECK_STR(b1, x);
    RL_CHECK_INT(1, expect_completed(w, "u1", "one", x, 8000));
    RL_CHECK_STR(b1, x);
    RL_CHECK_OK(runlane_reply_ack(w, b1));
    expect_no_reply_again(w, b1, "witness");
    runlane_destroy(w);
}

static void test_stale_complete_emits_nothing(void) {
    new_queue();
    fk_reset(FK_COMPLETE);
    fk_set(&fk_steal_once, 1);
    runlane_t *w = client(1, NULL);
    RL_CHECK_OK(runlane_start(w));
    enqueue(w, "u1", "hi");
    char bid[RUNLANE_ID_MAX];
    /* the first run lost its lease: refused, no event; the batch runs again */
    RL_CHECK_INT(-1, expect_completed(w, "u1", "hi", bid, 5000));
    RL_CHECK_INT(1, fk_get(&fk_stale));
    RL_CHECK_INT(2, fk_get(&fk_starts));
    /* Settled (acked with its reply): no run can start again, and the
     * events of the one that completed are already queued. */
    int64_t end = rl_mono_ms() + (int64_t)(5000 * rl_test_time_scale());
    while (status_num(w, "u1", "inflight") != 0) {
        RL_CHECK_MSG(rl_mono_ms() < end, "u1's batch is still in flight");
        sleep_ms(10);
    }
    runlane_event_t *ev;
    while ((ev = runlane_poll(w, 0)) != NULL) {
        int completed = runlane_event_type(ev) == RUNLANE_EVENT_COMPLETED;
        char json[512];
        snprintf(json, sizeof(json), "%s", runlane_event_json(ev));
        runlane_event_destroy(ev);
        RL_CHECK_MSG(!completed, "a second COMPLETED: %s", json);
    }
    RL_CHECK_INT(2, fk_get(&fk_starts));
    RL_CHECK_INT(1, metric(w, "runlane_leases_lost_total"));
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    runlane_destroy(w);
}

static void test_interrupt_restarts_with_pending(void) {
    new_queue();
    fk_reset(FK_HOLD);
    const char *kv[] = {"busy.policy", "interrupt", "lease.ms", "3000", NULL};
    runlane_t *w = client(1, kv);
    RL_CHECK_OK(runlane_start(w));
    enqueue(w, "u1", "a");
    wait_count(&fk_starts, 1, 5000, "turn started");
    enqueue(w, "u1", "b");
    enqueue(w, "u1", "c");
    /* a renewal (every 500 ms with interrupt) sees them: interrupt, restart */
    wait_count(&fk_restarts, 1, 3000, "turn restarted");
    RL_CHECK_INT(1, fk_get(&fk_interrupts));
    RL_CHECK_INT(0, status_num(w, "u1", "pending"));
    RL_CHECK_INT(3, status_num(w, "u1", "inflight"));
    /* once per claim: more messages do not interrupt again */
    enqueue(w, "u1", "d");
    wait_renewals(w, 3, "renewals with \"d\" pending");
    RL_CHECK_INT(1, fk_get(&fk_interrupts));
    fk_set(&fk_release, 1);
    char bid[RUNLANE_ID_MAX], bid2[RUNLANE_ID_MAX];
    expect_completed(w, "u1", "a,b,c", bid, 5000);
    expect_completed(w, "u1", "d", bid2, 5000);
    RL_CHECK(strcmp(bid, bid2) != 0);
    RL_CHECK_INT(1, metric(w, "runlane_turns_interrupted_total"));
    RL_CHECK_INT(4, metric(w, "runlane_messages_claimed_total"));
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    RL_CHECK_OK(runlane_reply_ack(w, bid2));
    runlane_destroy(w);
}

static void test_no_interrupt_when_queue_policy_or_batch_full(void) {
    new_queue();
    fk_reset(FK_HOLD);
    /* busy.policy=queue (the default): renewals never interrupt */
    const char *kv[] = {"lease.ms", "600", NULL};
    runlane_t *w = client(1, kv);
    RL_CHECK_OK(runlane_start(w));
    enqueue(w, "u1", "a");
    wait_count(&fk_starts, 1, 5000, "turn started");
    enqueue(w, "u1", "b");
    wait_renewals(w, 3, "renewals with a message pending (policy queue)");
    RL_CHECK_INT(0, fk_get(&fk_interrupts));
    fk_set(&fk_release, 1);
    char bid[RUNLANE_ID_MAX];
    expect_completed(w, "u1", "a", bid, 5000);
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    expect_completed(w, "u1", "b", bid, 5000);
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    runlane_destroy(w);
    /* interrupt, but the batch is full: restarting would add nothing */
    new_queue();
    fk_reset(FK_HOLD);
    const char *kv2[] = {"busy.policy", "interrupt", "batch.max.messages", "1", NULL};
    w = client(1, kv2);
    RL_CHECK_OK(runlane_start(w));
    enqueue(w, "u1", "a");
    wait_count(&fk_starts, 1, 5000, "turn started");
    enqueue(w, "u1", "b");
    wait_renewals(w, 3, "renewals with a message pending (batch full)");
    RL_CHECK_INT(0, fk_get(&fk_interrupts));
    fk_set(&fk_release, 1);
    expect_completed(w, "u1", "a", bid, 5000);
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    expect_completed(w, "u1", "b", bid, 5000);
    RL_CHECK_OK(runlane_reply_ack(w, bid));
    runlane_destroy(w);
}

static void test_redis_required(void) {
    RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
}

static void run_all(void) {
    RL_RUN(test_completed_redelivered_after_crash_until_confirmed);
    RL_RUN(test_unconfirmed_reply_repeats_confirmed_does_not);
    RL_RUN(test_stale_complete_emits_nothing);
    RL_RUN(test_interrupt_restarts_with_pending);
    RL_RUN(test_no_interrupt_when_queue_policy_or_batch_full);
}

int main(void) {
    snprintf(run_tag, sizeof(run_tag), "%d-%lld", (int)getpid(), (long long)rl_now_ms());
    fprintf(stderr, "== memory store ==\n");
    snprintf(store_url, sizeof(store_url), "memory");
    run_all();
    const char *redis = rl_test_redis_url();
    if (redis) {
        fprintf(stderr, "== redis store ==\n");
        snprintf(store_url, sizeof(store_url), "%s", redis);
        run_all();
    } else {
        const char *req = getenv("RUNLANE_REQUIRE_REDIS");
        if (req && strcmp(req, "1") == 0) RL_RUN(test_redis_required);
    }
    return rl_test_summary();
}
