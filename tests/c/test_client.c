/* test_client.c - the public API end to end with the custom backend:
 * configuration, bad input, batching by the worker, retries, dead letters,
 * stop, events and metrics; on the memory store and on Redis. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "rltest.h"
#include "runlane.h"

static char store_url[256];
static char prefix[64];
static int prefix_seq;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A client on the store under test with a fresh key prefix / memory name. */
static runlane_t *client(const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512], url[300];
    snprintf(prefix, sizeof(prefix), "t%ld-%d", (long)getpid(), ++prefix_seq);
    if (strncmp(store_url, "memory", 6) == 0)
        snprintf(url, sizeof(url), "memory://%s", prefix);
    else
        snprintf(url, sizeof(url), "%s", store_url);
    if (runlane_conf_set(conf, "store", url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err)) ||
        runlane_conf_set(conf, "backoff.base.ms", "50", err, sizeof(err)) ||
        runlane_conf_set(conf, "backoff.max.ms", "100", err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) RL_FAILF("conf %s: %s", kv[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    return rl;
}

/* A deadline for something that must happen, stretched by
 * RUNLANE_TEST_TIME_SCALE (sanitizer and valgrind runs). Waits that prove
 * something does NOT happen before a configured time (a quiet window) stay
 * unscaled: a slow run only makes delivery later, never earlier. */
#define T(ms) ((int)((ms) * rl_test_time_scale()))

/* Next event of `type`, skipping others; NULL after timeout_ms. */
static runlane_event_t *wait_event(runlane_t *rl, runlane_event_type_t type, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        runlane_event_t *ev = runlane_poll(rl, 10);
        if (!ev) continue;
        if (runlane_event_type(ev) == type) return ev;
        runlane_event_destroy(ev);
    }
    return NULL;
}

static int json_int(const char *json, const char *key) {
    cJSON *j = cJSON_Parse(json);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int r = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    return r;
}

/* Contents of a batch event's messages joined by ",". */
static void batch_contents(const runlane_event_t *ev, char *out, size_t n) {
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages"), *m;
    out[0] = '\0';
    cJSON_ArrayForEach(m, msgs) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (out[0]) strncat(out, ",", n - strlen(out) - 1);
        strncat(out, c->valuestring, n - strlen(out) - 1);
    }
    cJSON_Delete(j);
}

static void enqueue(runlane_t *rl, const char *conv, const char *content) {
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, content, NULL));
}

/* ---------------------------------------------------------------- */

static void test_conf_validation_names_the_key(void) {
    runlane_conf_t *c = runlane_conf_new();
    char err[256], buf[64];
    size_t sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "batch.window.ms", buf, &sz));
    RL_CHECK_STR("10000", buf);
    RL_CHECK_INT(RUNLANE_ERR_UNKNOWN_KEY, runlane_conf_set(c, "batch.windw.ms", "1", err, sizeof(err)));
    RL_CHECK(strstr(err, "batch.windw.ms") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "lease.ms", "5", err, sizeof(err)));
    RL_CHECK_MSG(strstr(err, "lease.ms") && strstr(err, "out of range"), "got: %s", err);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "partitions", "abc", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "busy.policy", "drop", err, sizeof(err)));
    RL_CHECK(strstr(err, "queue|interrupt") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "store", "mysql://x", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "key.prefix", "a{b}", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "openai.tools", "{}", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_conf_set(c, NULL, "1", err, sizeof(err)));
    /* Replies: redelivery between 1 s and a day, kept up to 30 days. */
    sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "reply.redeliver.ms", buf, &sz));
    RL_CHECK_STR("60000", buf);
    sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "reply.ttl.ms", buf, &sz));
    RL_CHECK_STR("604800000", buf);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "reply.redeliver.ms", "999", err, sizeof(err)));
    RL_CHECK(strstr(err, "reply.redeliver.ms") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE,
                 runlane_conf_set(c, "reply.redeliver.ms", "86400001", err, sizeof(err)));
    RL_CHECK_OK(runlane_conf_set(c, "reply.redeliver.ms", "1000", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "reply.ttl.ms", "0", err, sizeof(err)));
    /* A failed set leaves the value unchanged. */
    sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "lease.ms", buf, &sz));
    RL_CHECK_STR("30000", buf);
    /* Secrets never read back. */
    RL_CHECK_OK(runlane_conf_set(c, "openai.api.key", "sk-secret-123", err, sizeof(err)));
    sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "openai.api.key", buf, &sz));
    RL_CHECK_STR("********", buf);
    char *dump = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump, c));
    RL_CHECK(strstr(dump, "sk-secret") == NULL);
    runlane_free(dump);
    /* A store password never reads back either. */
    RL_CHECK_OK(runlane_conf_set(c, "store", "redis://app:hunter2@127.0.0.1:6379/0", err, sizeof(err)));
    RL_CHECK_OK(runlane_conf_dump(&dump, c));
    RL_CHECK_MSG(strstr(dump, "hunter2") == NULL, "password in dump: %s", dump);
    RL_CHECK(strstr(dump, "redis://app:***@127.0.0.1:6379/0") != NULL);
    runlane_free(dump);
    /* Too small a buffer reports the size needed. */
    char tiny[2];
    sz = sizeof(tiny);
    RL_CHECK_INT(RUNLANE_ERR_TOO_LARGE, runlane_conf_get(c, "backend", tiny, &sz));
    RL_CHECK_INT(7, sz);
    runlane_conf_t *d = runlane_conf_dup(c);
    sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(d, "openai.api.key", buf, &sz));
    runlane_conf_destroy(d);
    runlane_conf_destroy(c);
    cJSON *props = cJSON_Parse(runlane_conf_properties());
    RL_CHECK(cJSON_IsArray(props) && cJSON_GetArraySize(props) > 20);
    cJSON_Delete(props);
}

static void test_errors_and_version(void) {
    RL_CHECK_STR("RUNLANE_ERR_STALE", runlane_err2name(RUNLANE_ERR_STALE));
    RL_CHECK(strlen(runlane_err2str(RUNLANE_ERR_STORE)) > 0);
    RL_CHECK_STR("unknown error", runlane_err2str((runlane_err_t)-999));
    RL_CHECK_INT(RUNLANE_VERSION_NUM, runlane_version());
    RL_CHECK(runlane_features() & RUNLANE_FEATURE_REDIS);
    RL_CHECK(runlane_error_message(runlane_error_last()) != NULL);
}

static void test_custom_backend_has_no_replies(void) {
    runlane_t *rl = client(NULL);
    RL_CHECK_INT(RUNLANE_ERR_UNSUPPORTED, runlane_reply_ack(rl, "b1-0-1"));
    RL_CHECK(strstr(runlane_error_message(runlane_error_last()), "custom") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_UNSUPPORTED, runlane_reply_ack(rl, NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_reply_ack(NULL, "b1-0-1"));
    runlane_destroy(rl);
}

static void test_bad_input_changes_nothing(void) {
    runlane_t *rl = client(NULL);
    char id[RUNLANE_ID_MAX], longid[300];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "", "x", NULL));
    RL_CHECK(strstr(runlane_error_message(runlane_error_last()), "empty") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, longid, "x", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, NULL, "x", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "c", NULL, NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "c\xff", "x", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "c\n", "x", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "c", "\xc0\x80", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{bad"));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{\"instructions\":\"x\"}]"));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{\"colour\":1}"));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{\"metadata\":{\"a\":1}}"));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_enqueue(id, 8, NULL, rl, "c", "x", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_touch(rl, ""));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_batch_ack(rl, "b-nope", NULL));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_batch_ack(rl, NULL, NULL));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_dead_retry(NULL, rl, "nope"));
    RL_CHECK_INT(RUNLANE_ERR_STATE, runlane_stop(rl, RUNLANE_STOP_DRAIN, 0));
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, NULL));
    RL_CHECK_INT(0, json_int(st, "pending"));
    runlane_free(st);
    runlane_destroy(rl);
    /* Use after destroy is detected (the handle is no longer live). */
    RL_CHECK_INT(RUNLANE_ERR_DESTROYED, runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", NULL));
    RL_CHECK(runlane_poll(rl, 0) == NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_start(NULL));
}

static void test_content_over_max_bytes_refused(void) {
    const char *kv[] = {"batch.max.bytes", "8", NULL};
    runlane_t *rl = client(kv);
    char id[RUNLANE_ID_MAX];
    RL_CHECK_INT(RUNLANE_ERR_TOO_LARGE, runlane_enqueue(id, sizeof(id), NULL, rl, "c", "123456789", NULL));
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "c", "12345678", NULL));
    runlane_destroy(rl);
}

static void test_idempotency_key(void) {
    runlane_t *rl = client(NULL);
    char a[RUNLANE_ID_MAX], b[RUNLANE_ID_MAX];
    int dup = -1;
    RL_CHECK_OK(runlane_enqueue(a, sizeof(a), &dup, rl, "c", "hi", "{\"idempotency_key\":\"wamid.1\"}"));
    RL_CHECK_INT(0, dup);
    RL_CHECK_OK(runlane_enqueue(b, sizeof(b), &dup, rl, "c", "hi", "{\"idempotency_key\":\"wamid.1\"}"));
    RL_CHECK_INT(1, dup);
    RL_CHECK_STR(a, b);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, "c"));
    RL_CHECK_INT(1, json_int(st, "pending"));
    runlane_free(st);
    runlane_destroy(rl);
}

static void test_burst_becomes_one_batch_in_order(void) {
    const char *kv[] = {"batch.window.ms", "300", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "conv-a", "one");
    sleep_ms(30);
    enqueue(rl, "conv-a", "two");
    enqueue(rl, "conv-b", "other");
    sleep_ms(30);
    enqueue(rl, "conv-a", "three");
    char got[256] = "", got_b[256] = "";
    for (int i = 0; i < 2; i++) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
        RL_CHECK_MSG(ev != NULL, "expected 2 batch events, got %d", i);
        RL_CHECK_INT(1, runlane_event_attempt(ev));
        if (strcmp(runlane_event_conversation_id(ev), "conv-a") == 0)
            batch_contents(ev, got, sizeof(got));
        else
            batch_contents(ev, got_b, sizeof(got_b));
        RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
        runlane_event_destroy(ev);
    }
    RL_CHECK_STR("one,two,three", got);
    RL_CHECK_STR("other", got_b);
    /* No third batch: with nothing pending or in flight none can come, and
     * one claimed before that would already be queued as an event. */
    for (int t = 0;; t++) {
        char *st = NULL;
        RL_CHECK_OK(runlane_status(&st, rl, NULL));
        int idle = json_int(st, "pending") == 0 && json_int(st, "inflight") == 0;
        runlane_free(st);
        if (idle) break;
        RL_CHECK_MSG(t < T(500), "the queue is not idle after both acks");
        sleep_ms(10);
    }
    runlane_event_t *extra;
    while ((extra = runlane_poll(rl, 0)) != NULL) {
        int batch = runlane_event_type(extra) == RUNLANE_EVENT_BATCH;
        runlane_event_destroy(extra);
        RL_CHECK_MSG(!batch, "a third batch event");
    }
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_DRAIN, T(1000)));
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_STOPPED, T(1000));
    RL_CHECK(ev != NULL);
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_window_waits_for_quiet(void) {
    const char *kv[] = {"batch.window.ms", "400", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "first");
    /* Inside the window nothing is delivered. */
    RL_CHECK(wait_event(rl, RUNLANE_EVENT_BATCH, 150) == NULL);
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_touch_extends_window_until_max_wait(void) {
    const char *kv[] = {"batch.window.ms", "200", "batch.max.wait.ms", "600", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "typing", "hello");
    /* The user keeps typing: touches every 50 ms for 3 s. The window alone
     * would never close; max wait must deliver while touches go on. */
    runlane_event_t *ev = NULL;
    int touches = 0;
    for (; touches < 60 && !ev; touches++) {
        RL_CHECK_OK(runlane_touch(rl, "typing"));
        ev = wait_event(rl, RUNLANE_EVENT_BATCH, 50);
    }
    RL_CHECK_MSG(ev != NULL, "no batch while typing went on (max wait ignored)");
    RL_CHECK_MSG(touches >= 3, "batch came after %d touches: the touch did not extend the window",
                 touches);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_arrivals_during_batch_wait_for_ack(void) {
    const char *kv[] = {"batch.window.ms", "50", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "m1");
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    enqueue(rl, "c", "m2");
    enqueue(rl, "c", "m3");
    /* One turn per conversation: nothing more while the first is held.
     * Decided by a witness conversation due no earlier than m2 and m3:
     * claims go oldest due first, so a batch of c would be delivered
     * before (or with) the witness's. */
    enqueue(rl, "witness", "w");
    runlane_event_t *wev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK_MSG(wev != NULL, "the witness conversation's batch did not come");
    int is_witness = strcmp(runlane_event_conversation_id(wev), "witness") == 0;
    if (!is_witness) runlane_event_destroy(wev);
    RL_CHECK_MSG(is_witness, "a second batch of c came while its first was held");
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(wev), NULL));
    runlane_event_destroy(wev);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    char got[128];
    batch_contents(ev, got, sizeof(got));
    RL_CHECK_STR("m2,m3", got);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_max_messages_splits_batches(void) {
    const char *kv[] = {"batch.window.ms", "10000", "batch.max.messages", "2", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    const char *in[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++) enqueue(rl, "c", in[i]);
    /* Full batches are due at once despite the 10 s window. */
    char all[128] = "";
    for (int i = 0; i < 2; i++) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(3000));
        RL_CHECK_MSG(ev != NULL, "batch %d of 2 full ones not delivered", i + 1);
        char got[64];
        batch_contents(ev, got, sizeof(got));
        if (all[0]) strcat(all, "|");
        strcat(all, got);
        RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
        runlane_event_destroy(ev);
    }
    RL_CHECK_STR("a,b|c,d", all);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, "c"));
    RL_CHECK_INT(1, json_int(st, "pending"));
    runlane_free(st);
    runlane_destroy(rl);
}

static void test_max_bytes_makes_batch_due(void) {
    const char *kv[] = {"batch.window.ms", "10000", "batch.max.bytes", "10", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "12345");
    enqueue(rl, "c", "67890");
    enqueue(rl, "c", "x");
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(3000));
    RL_CHECK(ev != NULL);
    char got[64];
    batch_contents(ev, got, sizeof(got));
    RL_CHECK_STR("12345,67890", got);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_fail_retries_then_dead_letter_then_retry(void) {
    const char *kv[] = {"batch.window.ms", "0", "max.attempts", "3", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "boom");
    char batch[RUNLANE_ID_MAX] = "";
    for (int attempt = 1; attempt <= 3; attempt++) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
        RL_CHECK_MSG(ev != NULL, "attempt %d not delivered", attempt);
        RL_CHECK_INT(attempt, runlane_event_attempt(ev));
        if (attempt == 1) snprintf(batch, sizeof(batch), "%s", runlane_event_batch_id(ev));
        RL_CHECK_STR(batch, runlane_event_batch_id(ev));
        RL_CHECK_OK(runlane_batch_fail(rl, runlane_event_batch_id(ev), "model exploded", 1));
        runlane_event_destroy(ev);
    }
    runlane_event_t *dead = wait_event(rl, RUNLANE_EVENT_DEAD, T(2000));
    RL_CHECK(dead != NULL);
    RL_CHECK_STR("model exploded", runlane_event_error_message(dead));
    runlane_event_destroy(dead);
    char *list = NULL;
    RL_CHECK_OK(runlane_dead_list(&list, rl, 0, 0));
    cJSON *j = cJSON_Parse(list);
    RL_CHECK_INT(1, cJSON_GetArraySize(j));
    cJSON *d0 = cJSON_GetArrayItem(j, 0);
    RL_CHECK_STR("model exploded", cJSON_GetObjectItem(d0, "error")->valuestring);
    RL_CHECK_INT(3, cJSON_GetObjectItem(d0, "attempts")->valueint);
    char dead_id[RUNLANE_ID_MAX];
    snprintf(dead_id, sizeof(dead_id), "%s", cJSON_GetObjectItem(d0, "id")->valuestring);
    cJSON_Delete(j);
    runlane_free(list);
    size_t n = 0;
    RL_CHECK_OK(runlane_dead_retry(&n, rl, dead_id));
    RL_CHECK_INT(1, n);
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    RL_CHECK_INT(1, runlane_event_attempt(ev));
    char got[64];
    batch_contents(ev, got, sizeof(got));
    RL_CHECK_STR("boom", got);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    RL_CHECK_OK(runlane_dead_list(&list, rl, 0, 0));
    RL_CHECK_STR("[]", list);
    runlane_free(list);
    runlane_destroy(rl);
}

static void test_non_retriable_fail_is_dead_at_once_and_purged(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "bad request");
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    RL_CHECK_OK(runlane_batch_fail(rl, runlane_event_batch_id(ev), "invalid", 0));
    /* Settled: a second settle of the same batch is refused. */
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    ev = wait_event(rl, RUNLANE_EVENT_DEAD, T(2000));
    RL_CHECK(ev != NULL);
    runlane_event_destroy(ev);
    size_t n = 0;
    RL_CHECK_OK(runlane_dead_purge(&n, rl, NULL));
    RL_CHECK_INT(1, n);
    char *list = NULL;
    RL_CHECK_OK(runlane_dead_list(&list, rl, 0, 0));
    RL_CHECK_STR("[]", list);
    runlane_free(list);
    runlane_destroy(rl);
}

static void test_stop_release_gives_batches_back(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *a = client(kv);
    RL_CHECK_OK(runlane_start(a));
    enqueue(a, "c", "held");
    runlane_event_t *ev = wait_event(a, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    runlane_event_destroy(ev);
    RL_CHECK_INT(RUNLANE_ERR_STATE, runlane_start(a));
    RL_CHECK_OK(runlane_stop(a, RUNLANE_STOP_RELEASE, 0));
    ev = wait_event(a, RUNLANE_EVENT_LEASE_LOST, T(1000));
    RL_CHECK(ev != NULL);
    runlane_event_destroy(ev);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, a, "c"));
    cJSON *j = cJSON_Parse(st);
    /* Released without spending an attempt. */
    RL_CHECK_INT(0, cJSON_GetObjectItem(j, "attempts")->valueint);
    RL_CHECK_STR("ready", cJSON_GetObjectItem(j, "state")->valuestring);
    cJSON_Delete(j);
    runlane_free(st);
    runlane_destroy(a);
}

static void test_batch_release_spends_no_attempt(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "x");
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    char batch[RUNLANE_ID_MAX];
    snprintf(batch, sizeof(batch), "%s", runlane_event_batch_id(ev));
    RL_CHECK_OK(runlane_batch_release(rl, batch));
    runlane_event_destroy(ev);
    /* Given back: delivered again, same batch, still attempt 1. */
    ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    RL_CHECK_STR(batch, runlane_event_batch_id(ev));
    RL_CHECK_INT(1, runlane_event_attempt(ev));
    RL_CHECK_OK(runlane_batch_ack(rl, batch, NULL));
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

static void test_released_batch_event_not_delivered(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "x");
    /* Wait until the batch is claimed, without polling its event. */
    int claimed = 0;
    for (int t = 0; t < T(500) && !claimed; t++) {
        char *text = NULL;
        RL_CHECK_OK(runlane_metrics(&text, rl));
        claimed = strstr(text, "runlane_batches_claimed_total 1") != NULL;
        runlane_free(text);
        if (!claimed) sleep_ms(10);
    }
    RL_CHECK(claimed);
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_RELEASE, 0));
    /* The lease went back: its batch event must not be run here too. */
    runlane_event_t *ev;
    int batches = 0, lost = 0;
    while ((ev = runlane_poll(rl, 100)) != NULL) {
        batches += runlane_event_type(ev) == RUNLANE_EVENT_BATCH;
        lost += runlane_event_type(ev) == RUNLANE_EVENT_LEASE_LOST;
        runlane_event_destroy(ev);
    }
    RL_CHECK_INT(0, batches);
    RL_CHECK_INT(1, lost);
    runlane_destroy(rl);
}

static void test_stop_drain_times_out_and_releases(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "x");
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    runlane_event_destroy(ev);
    RL_CHECK_INT(RUNLANE_ERR_TIMEOUT, runlane_stop(rl, RUNLANE_STOP_DRAIN, 100));
    runlane_destroy(rl);
}

static void test_event_fd_readable_while_pending(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    int fd = runlane_event_fd(rl);
    RL_CHECK(fd >= 0);
    struct pollfd p = {fd, POLLIN, 0};
    RL_CHECK_INT(0, poll(&p, 1, 0));
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "x");
    RL_CHECK_INT(1, poll(&p, 1, 5000));
    runlane_event_t *ev = runlane_poll(rl, 0);
    RL_CHECK(ev != NULL);
    RL_CHECK_INT(RUNLANE_EVENT_BATCH, runlane_event_type(ev));
    RL_CHECK_STR("batch", runlane_event_type_name(runlane_event_type(ev)));
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    /* Drained: the fd is quiet again. */
    RL_CHECK_INT(0, poll(&p, 1, 0));
    char *text = NULL;
    RL_CHECK_OK(runlane_metrics(&text, rl));
    RL_CHECK(strstr(text, "runlane_batches_acked_total 1") != NULL);
    RL_CHECK(strstr(text, "# TYPE runlane_enqueued_total counter") != NULL);
    runlane_free(text);
    runlane_destroy(rl);
}

static void test_enqueue_many_in_order(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    char *res = NULL;
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue_many(&res, rl, "[{\"conversation_id\":\"\",\"content\":\"x\"}]"));
    RL_CHECK_OK(runlane_enqueue_many(
        &res, rl,
        "[{\"conversation_id\":\"m\",\"content\":\"1\"},{\"conversation_id\":\"m\",\"content\":\"2\","
        "\"idempotency_key\":\"k\"},{\"conversation_id\":\"m\",\"content\":\"2\",\"idempotency_key\":\"k\"}]"));
    cJSON *j = cJSON_Parse(res);
    RL_CHECK_INT(3, cJSON_GetArraySize(j));
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 2), "duplicate")));
    cJSON_Delete(j);
    runlane_free(res);
    RL_CHECK_OK(runlane_start(rl));
    runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
    RL_CHECK(ev != NULL);
    char got[64];
    batch_contents(ev, got, sizeof(got));
    RL_CHECK_STR("1,2", got);
    runlane_event_destroy(ev);
    runlane_destroy(rl);
}

/* Concurrent runlane_enqueue calls on one client (group commit): every
 * caller gets its own id, nothing is lost or stored twice, each thread's
 * messages stay in its order, and on Redis calls made while one is on the
 * wire share round trips. To make them meet, Redis holds writes for 300 ms
 * (CLIENT PAUSE WRITE from another connection) while the threads start. */
enum { GROUP_THREADS = 16, GROUP_EACH = 20 };
typedef struct {
    runlane_t *rl;
    pthread_t th;
    int index, errors;
    char ids[GROUP_EACH][RUNLANE_ID_MAX];
} group_caller_t;

static void *group_main(void *arg) {
    group_caller_t *g = arg;
    char conv[16], content[16];
    snprintf(conv, sizeof(conv), "g%d", g->index);
    for (int i = 0; i < GROUP_EACH; i++) {
        snprintf(content, sizeof(content), "%d", i);
        if (runlane_enqueue(g->ids[i], sizeof(g->ids[i]), NULL, g->rl, conv, content, NULL)) {
            /* the error is this thread's, with a message */
            const runlane_error_t *e = runlane_error_last();
            if (runlane_error_code(e) == RUNLANE_ERR_STORE && runlane_error_message(e)[0])
                g->errors++;
            else
                g->errors += 1000;
            g->ids[i][0] = '\0';
        }
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

/* A plain connection to the Redis under test (redis://host:port/...), for
 * commands runlane does not send (CLIENT PAUSE, CLIENT KILL); NULL after a
 * failed check. */
static redisContext *side_conn(void) {
    char host[128];
    int port = 0;
    RL_CHECK(sscanf(store_url, "redis://%127[^:]:%d", host, &port) == 2);
    redisContext *c = port ? redisConnect(host, port) : NULL;
    RL_CHECK(c && !c->err);
    if (c && c->err) {
        redisFree(c);
        c = NULL;
    }
    return c;
}

/* GROUP_THREADS callers of group_main on rl, started. */
static void start_group_callers(group_caller_t *g, runlane_t *rl) {
    memset(g, 0, sizeof(*g) * GROUP_THREADS);
    for (int t = 0; t < GROUP_THREADS; t++) {
        g[t].rl = rl;
        g[t].index = t;
        RL_CHECK(pthread_create(&g[t].th, NULL, group_main, &g[t]) == 0);
    }
}

static long long metric_of(runlane_t *rl, const char *name) {
    char *text = NULL;
    long long v = -1;
    if (runlane_metrics(&text, rl) == RUNLANE_OK) {
        char key[128];
        snprintf(key, sizeof(key), "\n%s ", name);
        const char *p = strstr(text, key);
        if (p) v = atoll(p + strlen(key));
    }
    runlane_free(text);
    return v;
}

static void test_concurrent_enqueues_share_round_trips(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    int on_redis = strncmp(store_url, "redis://", 8) == 0, paused = 0;
    if (on_redis) {
        redisContext *c = side_conn();
        redisReply *r = c ? redisCommand(c, "CLIENT PAUSE %d WRITE", T(300)) : NULL;
        paused = r && r->type == REDIS_REPLY_STATUS;
        RL_CHECK_MSG(paused, "CLIENT PAUSE: %s", r && r->str ? r->str : "no reply");
        if (r) freeReplyObject(r);
        if (c) redisFree(c);
    }
    static group_caller_t g[GROUP_THREADS];
    start_group_callers(g, rl);
    static char all[GROUP_THREADS * GROUP_EACH][RUNLANE_ID_MAX];
    for (int t = 0; t < GROUP_THREADS; t++) {
        pthread_join(g[t].th, NULL);
        RL_CHECK_INT(0, g[t].errors);
        memcpy(all[t * GROUP_EACH], g[t].ids, sizeof(g[t].ids));
    }
    qsort(all, GROUP_THREADS * GROUP_EACH, RUNLANE_ID_MAX, cmp_id);
    int distinct = 1;
    for (int i = 0; i < GROUP_THREADS * GROUP_EACH; i++)
        if (!all[i][0] || (i && strcmp(all[i], all[i - 1]) == 0)) distinct = 0;
    RL_CHECK_MSG(distinct, "an enqueue got no id or another caller's id");
    long long trips = metric_of(rl, "runlane_enqueue_round_trips_total");
    fprintf(stderr, "  %d enqueues in %lld round trips\n", GROUP_THREADS * GROUP_EACH, trips);
    if (paused)
        RL_CHECK_MSG(trips > 0 && trips < GROUP_THREADS * GROUP_EACH - GROUP_THREADS / 2,
                     "%lld round trips for %d concurrent enqueues: not shared", trips,
                     GROUP_THREADS * GROUP_EACH);
    else
        RL_CHECK(trips == GROUP_THREADS * GROUP_EACH);
    RL_CHECK_INT(GROUP_THREADS * GROUP_EACH, (int)metric_of(rl, "runlane_enqueued_total"));
    /* every message delivered once, each conversation's in its order */
    RL_CHECK_OK(runlane_start(rl));
    static char seen[GROUP_THREADS][GROUP_EACH * 4];
    memset(seen, 0, sizeof(seen));
    int got = 0;
    while (got < GROUP_THREADS * GROUP_EACH) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
        if (!ev) {
            RL_FAILF("%d of %d messages delivered", got, GROUP_THREADS * GROUP_EACH);
            break;
        }
        int t = atoi(runlane_event_conversation_id(ev) + 1);
        char part[GROUP_EACH * 4];
        batch_contents(ev, part, sizeof(part));
        if (t >= 0 && t < GROUP_THREADS) {
            size_t len = strlen(seen[t]);
            snprintf(seen[t] + len, sizeof(seen[t]) - len, "%s%s", len ? "," : "", part);
        }
        for (const char *p = part; *p; p++) got += *p == ',';
        got++;
        RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
        runlane_event_destroy(ev);
    }
    for (int t = 0; t < GROUP_THREADS; t++)
        RL_CHECK_STR("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19", seen[t]);
    runlane_destroy(rl);
}

/* A group that fails (its connection killed while Redis holds it, twice)
 * fails every caller in it with RUNLANE_ERR_STORE and that error's message in the
 * caller's own thread; nothing of it is stored, the callers after it go on
 * over a new connection: stored = calls answered with an id. */
static void test_failed_group_fails_each_caller(void) {
    if (strncmp(store_url, "redis://", 8) != 0) return;
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    char name[96];
    snprintf(name, sizeof(name), "name=runlane/%s ", prefix);
    redisContext *c = side_conn();
    if (!c) {
        runlane_destroy(rl);
        return;
    }
    redisReply *r = redisCommand(c, "CLIENT PAUSE %d WRITE", T(500));
    RL_CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    static group_caller_t g[GROUP_THREADS];
    start_group_callers(g, rl);
    /* The first caller's group waits on the wire while the rest queue up;
     * its connection is killed, the next group goes out on a new one (held
     * too), which is killed as well: a group of many fails. */
    int killed = 0;
    for (int round = 0; round < 2; round++) {
        sleep_ms(T(150));
        r = redisCommand(c, "CLIENT LIST");
        for (const char *p = r && r->str ? r->str : ""; (p = strstr(p, name)) != NULL; p++) {
            const char *line = p;
            while (line > r->str && line[-1] != '\n') line--;
            long long id = 0;
            if (sscanf(line, "id=%lld", &id) == 1) {
                redisReply *k = redisCommand(c, "CLIENT KILL ID %lld", id);
                killed += k && k->type == REDIS_REPLY_INTEGER ? (int)k->integer : 0;
                if (k) freeReplyObject(k);
            }
        }
        if (r) freeReplyObject(r);
    }
    RL_CHECK_MSG(killed > 0, "no connection named %s", name);
    int ok = 0, failed = 0;
    for (int t = 0; t < GROUP_THREADS; t++) {
        pthread_join(g[t].th, NULL);
        failed += g[t].errors;
        for (int i = 0; i < GROUP_EACH; i++) ok += g[t].ids[i][0] != '\0';
    }
    fprintf(stderr, "  %d stored, %d failed (%d connection(s) killed)\n", ok, failed, killed);
    RL_CHECK_INT(GROUP_THREADS * GROUP_EACH, ok + failed);
    RL_CHECK_MSG(failed > 1, "killing the connections failed %d enqueue(s), not a group", failed);
    RL_CHECK_INT(failed, (int)metric_of(rl, "runlane_enqueue_errors_total"));
    /* what was answered with an id is stored, the rest is not */
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, NULL));
    char want[64];
    snprintf(want, sizeof(want), "\"enqueued\":%d,", ok);
    RL_CHECK_MSG(st && strstr(st, want), "status %s, want %s", st ? st : "", want);
    runlane_free(st);
    redisFree(c);
    runlane_destroy(rl);
}

static runlane_t *volatile fork_inherited;

static void test_fork_child_cannot_use_parent_handle(void) {
    runlane_t *rl = client(NULL);
    RL_CHECK_OK(runlane_start(rl));
    pid_t p = fork();
    if (p == 0) {
        char id[RUNLANE_ID_MAX];
        int inherited = runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", NULL);
        runlane_t *mine = runlane_new(NULL, NULL, 0);
        int own = mine ? runlane_enqueue(id, sizeof(id), NULL, mine, "c", "x", NULL) : -100;
        runlane_destroy(mine);
        /* The parent's handle stays allocated in the child, by design:
         * keep it reachable for leak checkers. */
        fork_inherited = rl;
        if (inherited != RUNLANE_ERR_DESTROYED || own != RUNLANE_OK)
            fprintf(stderr, "  child: inherited handle -> %d, its own -> %d (%s)\n", inherited, own,
                    runlane_error_message(runlane_error_last()));
        _exit(inherited == RUNLANE_ERR_DESTROYED && own == RUNLANE_OK ? 0 : 1);
    }
    int st = 0;
    waitpid(p, &st, 0);
    RL_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "child: inherited handle not refused, or its own handle failed (%s %d)",
                 WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "c", "still works in the parent", NULL));
    runlane_destroy(rl);
}

/* A released batch can be claimed again (same batch id, new token) before
 * runlane_batch_release returned; settling must then touch the entry of
 * its own lease only: every release and the final ack succeed. */
static void test_release_reclaim_race(void) {
    const char *kv[] = {"batch.window.ms", "0", "worker.poll.ms", "1", NULL};
    runlane_t *rl = client(kv);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "c", "x");
    char batch[RUNLANE_ID_MAX] = "";
    int cycles = 0, ok = 1;
    for (; cycles < 300 && ok; cycles++) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
        if (!ev) {
            RL_FAILF("cycle %d: the released batch did not come back", cycles);
            ok = 0;
            break;
        }
        snprintf(batch, sizeof(batch), "%s", runlane_event_batch_id(ev));
        runlane_event_destroy(ev);
        if (runlane_batch_release(rl, batch) != RUNLANE_OK) {
            RL_FAILF("cycle %d: release: %s", cycles, runlane_error_message(runlane_error_last()));
            ok = 0;
        }
    }
    if (ok) {
        runlane_event_t *ev = wait_event(rl, RUNLANE_EVENT_BATCH, T(5000));
        RL_CHECK(ev != NULL);
        if (ev) {
            RL_CHECK_INT(1, runlane_event_attempt(ev));
            RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
            runlane_event_destroy(ev);
        }
    }
    runlane_destroy(rl);
}

static void run_all(const char *url) {
    snprintf(store_url, sizeof(store_url), "%s", url);
    fprintf(stderr, "== store %s\n", strncmp(url, "redis", 5) == 0 ? "redis" : url);
    RL_RUN(test_bad_input_changes_nothing);
    RL_RUN(test_custom_backend_has_no_replies);
    RL_RUN(test_content_over_max_bytes_refused);
    RL_RUN(test_idempotency_key);
    RL_RUN(test_burst_becomes_one_batch_in_order);
    RL_RUN(test_window_waits_for_quiet);
    RL_RUN(test_touch_extends_window_until_max_wait);
    RL_RUN(test_arrivals_during_batch_wait_for_ack);
    RL_RUN(test_max_messages_splits_batches);
    RL_RUN(test_max_bytes_makes_batch_due);
    RL_RUN(test_fail_retries_then_dead_letter_then_retry);
    RL_RUN(test_non_retriable_fail_is_dead_at_once_and_purged);
    RL_RUN(test_stop_release_gives_batches_back);
    RL_RUN(test_batch_release_spends_no_attempt);
    RL_RUN(test_release_reclaim_race);
    RL_RUN(test_released_batch_event_not_delivered);
    RL_RUN(test_stop_drain_times_out_and_releases);
    RL_RUN(test_event_fd_readable_while_pending);
    RL_RUN(test_enqueue_many_in_order);
    RL_RUN(test_concurrent_enqueues_share_round_trips);
    RL_RUN(test_failed_group_fails_each_caller);
    RL_RUN(test_fork_child_cannot_use_parent_handle);
}

static void test_redis_is_configured(void) {
    if (!rl_test_redis_url()) RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
}

int main(void) {
    RL_RUN(test_conf_validation_names_the_key);
    RL_RUN(test_errors_and_version);
    run_all("memory");
    if (rl_test_redis_url()) {
        run_all(rl_test_redis_url());
    } else if (getenv("RUNLANE_REQUIRE_REDIS")) {
        RL_RUN(test_redis_is_configured);
    } else {
        fprintf(stderr, "RUNLANE_TEST_REDIS not set: Redis half not run\n");
    }
    return rl_test_summary();
}
