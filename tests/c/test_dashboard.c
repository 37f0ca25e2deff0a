/* test_dashboard.c - the dashboard request handler (runlane_dashboard_*):
 * every endpoint, paging, search, the actions changing state (a dead letter
 * retried and its batch delivered, a stuck lease released, fenced) and bad
 * input (each a 4xx that changes nothing); on the memory store and Redis. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "rltest.h"
#include "runlane.h"

static char store_url[256];
static char prefix[64];
static int prefix_seq;

#define T(ms) ((int)((ms) * rl_test_time_scale()))

static runlane_t *client(const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512], url[300];
    snprintf(prefix, sizeof(prefix), "d%ld-%d", (long)getpid(), ++prefix_seq);
    if (strncmp(store_url, "memory", 6) == 0)
        snprintf(url, sizeof(url), "memory://%s", prefix);
    else
        snprintf(url, sizeof(url), "%s", store_url);
    if (runlane_conf_set(conf, "store", url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err)) ||
        runlane_conf_set(conf, "partitions", "4", err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) RL_FAILF("conf %s: %s", kv[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    return rl;
}

/* One request; returns the parsed JSON body (NULL for the page) and the
 * status in *status. */
static cJSON *req(runlane_dashboard_t *d, const char *method, const char *path,
                  const char *query, const char *body, const char *csrf, int *status) {
    runlane_dashboard_response_t *r = NULL;
    RL_CHECK_OK(runlane_dashboard_handle(&r, d, method, path, query, body,
                                         body ? strlen(body) : 0, csrf));
    *status = runlane_dashboard_response_status(r);
    size_t len = 0;
    const char *b = runlane_dashboard_response_body(r, &len);
    cJSON *j = NULL;
    if (strncmp(runlane_dashboard_response_content_type(r), "application/json", 16) == 0) {
        j = cJSON_ParseWithLength(b, len);
        if (!j) {
            runlane_dashboard_response_destroy(r);
            RL_FAILF("%s %s: body is not JSON", method, path);
        }
    }
    runlane_dashboard_response_destroy(r);
    return j;
}

/* GET that must answer 200. */
static cJSON *get_ok(runlane_dashboard_t *d, const char *path, const char *query) {
    int st = 0;
    cJSON *j = req(d, "GET", path, query, NULL, NULL, &st);
    if (st != 200) {
        char *s = j ? cJSON_PrintUnformatted(j) : NULL;
        RL_FAILF("GET %s?%s: status %d %s", path, query ? query : "", st, s ? s : "");
    }
    return j;
}

static double num(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

static const char *str(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static char *csrf_of(runlane_dashboard_t *d) {
    cJSON *s = get_ok(d, "/api/session", NULL);
    const char *t = str(s, "csrf_token");
    RL_CHECK(t && strlen(t) == 64);
    char *c = strdup(t);
    cJSON_Delete(s);
    return c;
}

/* Everything the dashboard shows of the queue, as one string: a snapshot
 * to compare before and after a refused request. */
static char *snapshot(runlane_t *rl) {
    char *st = NULL, *dead = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, NULL));
    RL_CHECK_OK(runlane_dead_list(&dead, rl, 0, 1000));
    cJSON *t = cJSON_Parse(st);
    /* counters only: every snapshot reads the same state */
    size_t n = strlen(dead) + 200;
    char *out = malloc(n);
    snprintf(out, n, "p=%g r=%g i=%g d=%g e=%g a=%g %s", num(t, "pending"), num(t, "ready"),
             num(t, "inflight"), num(t, "dead"), num(t, "enqueued"), num(t, "acked"), dead);
    cJSON_Delete(t);
    runlane_free(st);
    runlane_free(dead);
    return out;
}

static void enqueue(runlane_t *rl, const char *conv, const char *content) {
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, content, NULL));
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls GET /api/conversations?state=S&search=Q until it has `want` items. */
static cJSON *wait_list(runlane_dashboard_t *d, const char *query, int want, int timeout_ms) {
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        cJSON *j = get_ok(d, "/api/conversations", query);
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items"));
        if (n == want) return j;
        cJSON_Delete(j);
        if (mono_ms() > end) RL_FAILF("%s: never %d items", query, want);
        usleep(20000);
    }
}

/* Next BATCH event (others skipped), NULL after timeout. */
static runlane_event_t *next_batch(runlane_t *rl, int timeout_ms) {
    int64_t end = mono_ms() + timeout_ms;
    while (mono_ms() < end) {
        runlane_event_t *ev = runlane_poll(rl, 20);
        if (!ev) continue;
        if (runlane_event_type(ev) == RUNLANE_EVENT_BATCH) return ev;
        runlane_event_destroy(ev);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */

static void test_options_and_session(void) {
    runlane_t *rl = client(NULL);
    RL_CHECK(runlane_dashboard_new(NULL, NULL) == NULL);
    RL_CHECK(runlane_dashboard_new(rl, "[1]") == NULL);
    RL_CHECK(runlane_dashboard_new(rl, "{\"history_size\":1}") == NULL);
    /* out of int64 range: refused (UBSan builds fail on a cast before the check) */
    RL_CHECK(runlane_dashboard_new(rl, "{\"history_size\":1e300}") == NULL);
    RL_CHECK(runlane_dashboard_new(rl, "{\"history_interval_ms\":-1e300}") == NULL);
    RL_CHECK(runlane_dashboard_new(rl, "{\"nope\":1}") == NULL);
    RL_CHECK(strstr(runlane_error_message(runlane_error_last()), "nope") != NULL);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, "{\"history_interval_ms\":1000}");
    RL_CHECK(d != NULL);
    runlane_dashboard_t *d2 = runlane_dashboard_new(rl, NULL);
    char *t1 = csrf_of(d), *t2 = csrf_of(d2);
    RL_CHECK_MSG(strcmp(t1, t2) != 0, "two handlers share a CSRF token");
    cJSON *s = get_ok(d, "/api/session", NULL);
    RL_CHECK_INT(1000, num(s, "history_interval_ms"));
    RL_CHECK_STR(runlane_version_str(), str(s, "version"));
    cJSON_Delete(s);

    /* the page: HTML with the security headers */
    runlane_dashboard_response_t *r = NULL;
    RL_CHECK_OK(runlane_dashboard_handle(&r, d, "GET", "/", NULL, NULL, 0, NULL));
    RL_CHECK_INT(200, runlane_dashboard_response_status(r));
    RL_CHECK(strncmp(runlane_dashboard_response_content_type(r), "text/html", 9) == 0);
    size_t len = 0;
    const char *html = runlane_dashboard_response_body(r, &len);
    RL_CHECK(len > 100 && strstr(html, "<html") && strstr(html, "api/overview"));
    RL_CHECK_MSG(!strstr(html, "//cdn") && !strstr(html, "https://"),
                 "the page must not load anything from elsewhere");
    cJSON *h = cJSON_Parse(runlane_dashboard_response_headers(r));
    RL_CHECK(h && str(h, "Content-Security-Policy") && strstr(str(h, "Content-Security-Policy"), "default-src 'none'"));
    RL_CHECK_STR("nosniff", str(h, "X-Content-Type-Options"));
    cJSON_Delete(h);
    runlane_dashboard_response_destroy(r);
    free(t1);
    free(t2);
    runlane_dashboard_destroy(d2);
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

static void test_overview_and_history(void) {
    const char *kv[] = {"batch.window.ms", "60000", "batch.max.wait.ms", "60000", NULL};
    runlane_t *rl = client(kv);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, "{\"history_interval_ms\":1000,\"history_size\":3}");
    enqueue(rl, "c1", "a");
    enqueue(rl, "c2", "b");
    cJSON *o = get_ok(d, "/api/overview", NULL);
    cJSON *tot = cJSON_GetObjectItemCaseSensitive(o, "totals");
    RL_CHECK_INT(2, num(tot, "pending"));
    RL_CHECK_INT(2, num(tot, "enqueued"));
    cJSON *hist = cJSON_GetObjectItemCaseSensitive(o, "history");
    RL_CHECK_INT(1, cJSON_GetArraySize(hist));
    RL_CHECK_INT(2, num(cJSON_GetArrayItem(hist, 0), "pending"));
    cJSON_Delete(o);
    /* reads within the interval take no sample (an interval no slow run
     * can reach) */
    runlane_dashboard_t *slow = runlane_dashboard_new(rl, "{\"history_interval_ms\":3600000}");
    for (int i = 0; i < 3; i++) {
        RL_CHECK_OK(runlane_dashboard_sample(slow));
        o = get_ok(slow, "/api/overview", NULL);
        RL_CHECK_INT(1, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "history")));
        cJSON_Delete(o);
    }
    runlane_dashboard_destroy(slow);
    /* the ring keeps the last history_size samples, oldest first */
    for (int i = 0; i < 4; i++) {
        enqueue(rl, "c3", "x");
        usleep(1010000);
        RL_CHECK_OK(runlane_dashboard_sample(d));
    }
    o = get_ok(d, "/api/overview", NULL);
    hist = cJSON_GetObjectItemCaseSensitive(o, "history");
    RL_CHECK_INT(3, cJSON_GetArraySize(hist));
    double t0 = num(cJSON_GetArrayItem(hist, 0), "t_ms"), t2 = num(cJSON_GetArrayItem(hist, 2), "t_ms");
    RL_CHECK(t0 < t2);
    RL_CHECK_INT(6, num(cJSON_GetArrayItem(hist, 2), "enqueued"));
    cJSON_Delete(o);
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

/* pending / ready / inflight lists with paging and search, the detail
 * view, and a stuck lease released (fenced). */
static void test_lists_detail_release(void) {
    const char *kv[] = {"batch.window.ms", "60000", "batch.max.wait.ms", "60000",
                        "batch.max.messages", "2", "lease.ms", "60000", NULL};
    runlane_t *rl = client(kv);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, NULL);
    char conv[32];
    for (int i = 0; i < 7; i++) {
        snprintf(conv, sizeof(conv), "user-%d", i);
        enqueue(rl, conv, "hello");
    }
    /* two messages: the batch is full, due at once */
    enqueue(rl, "vip-1", "m1");
    enqueue(rl, "vip-1", "m2");

    cJSON *j = get_ok(d, "/api/conversations", "state=pending&limit=200");
    RL_CHECK_INT(7, num(j, "total"));
    RL_CHECK_INT(7, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")));
    RL_CHECK_STR("pending", str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0), "state"));
    cJSON_Delete(j);
    /* paging: 7 items, pages of 3, no item twice, none lost */
    char seen[8] = {0};
    for (int off = 0; off < 9; off += 3) {
        char q[64];
        snprintf(q, sizeof(q), "state=pending&offset=%d&limit=3", off);
        j = get_ok(d, "/api/conversations", q);
        cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
        RL_CHECK_INT(off < 6 ? 3 : 1, cJSON_GetArraySize(items));
        RL_CHECK_INT(7, num(j, "total"));
        for (cJSON *it = items->child; it; it = it->next) {
            int k = atoi(str(it, "conversation_id") + 5);
            RL_CHECK_MSG(!seen[k], "item %d on two pages", k);
            seen[k] = 1;
        }
        cJSON_Delete(j);
    }
    for (int k = 0; k < 7; k++) RL_CHECK(seen[k]);
    /* search by part of the key */
    j = get_ok(d, "/api/conversations", "state=pending&search=er-4");
    RL_CHECK_INT(1, num(j, "total"));
    RL_CHECK_STR("user-4", str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0), "conversation_id"));
    cJSON_Delete(j);
    j = get_ok(d, "/api/conversations", "state=pending&search=vip");
    RL_CHECK_INT(0, num(j, "total"));
    cJSON_Delete(j);
    j = get_ok(d, "/api/conversations", "state=ready");
    RL_CHECK_INT(1, num(j, "total"));
    RL_CHECK_STR("vip-1", str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0), "conversation_id"));
    cJSON_Delete(j);

    /* a worker claims vip-1 and never settles it: in flight */
    RL_CHECK_OK(runlane_start(rl));
    runlane_event_t *ev = next_batch(rl, T(5000));
    RL_CHECK(ev != NULL);
    char batch_id[RUNLANE_ID_MAX];
    snprintf(batch_id, sizeof(batch_id), "%s", runlane_event_batch_id(ev));
    runlane_event_destroy(ev);
    j = wait_list(d, "state=inflight", 1, T(5000));
    cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0);
    RL_CHECK_STR("vip-1", str(it, "conversation_id"));
    RL_CHECK_STR("inflight", str(it, "state"));
    RL_CHECK(str(it, "owner") != NULL);
    cJSON_Delete(j);
    enqueue(rl, "vip-1", "m3"); /* arrives during the turn: pending behind the batch */

    cJSON *c = get_ok(d, "/api/conversation", "id=vip-1");
    RL_CHECK_STR("inflight", str(c, "state"));
    RL_CHECK_STR(batch_id, str(c, "batch_id"));
    RL_CHECK_INT(1, num(c, "attempts"));
    RL_CHECK(str(c, "owner") && num(c, "lease_expires_ms") > 0);
    cJSON *bm = cJSON_GetObjectItemCaseSensitive(c, "batch_messages");
    RL_CHECK_INT(2, cJSON_GetArraySize(bm));
    RL_CHECK_STR("m1", str(cJSON_GetArrayItem(bm, 0), "content"));
    cJSON *pm = cJSON_GetObjectItemCaseSensitive(c, "pending_messages");
    RL_CHECK_INT(1, cJSON_GetArraySize(pm));
    RL_CHECK_STR("m3", str(cJSON_GetArrayItem(pm, 0), "content"));
    RL_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "provider_conversation_id")));
    const char *tok = str(c, "lease_token");
    RL_CHECK(tok != NULL);
    char token[32];
    snprintf(token, sizeof(token), "%s", tok);
    cJSON_Delete(c);
    /* an id that has nothing: idle, empty lists */
    c = get_ok(d, "/api/conversation", "id=nobody%20here");
    RL_CHECK_STR("nobody here", str(c, "conversation_id"));
    RL_CHECK_STR("idle", str(c, "state"));
    RL_CHECK_INT(0, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "pending_messages")));
    cJSON_Delete(c);

    char *csrf = csrf_of(d);
    /* fenced: a token that is not the lease's is refused, nothing changes */
    char body[256], *before = snapshot(rl);
    snprintf(body, sizeof(body), "{\"conversation_id\":\"vip-1\",\"lease_token\":\"%lld\"}",
             atoll(token) + 1);
    int st = 0;
    j = req(d, "POST", "/api/lease/release", NULL, body, csrf, &st);
    RL_CHECK_INT(409, st);
    RL_CHECK_STR("conflict", str(cJSON_GetObjectItemCaseSensitive(j, "error"), "code"));
    cJSON_Delete(j);
    char *after = snapshot(rl);
    RL_CHECK_STR(before, after);
    free(after);
    c = get_ok(d, "/api/conversation", "id=vip-1");
    RL_CHECK_STR(token, str(c, "lease_token"));
    cJSON_Delete(c);
    /* the right token gives the lease back: the batch is delivered again
     * (same batch id, no attempt spent) */
    snprintf(body, sizeof(body), "{\"conversation_id\":\"vip-1\",\"lease_token\":\"%s\"}", token);
    j = req(d, "POST", "/api/lease/release", NULL, body, csrf, &st);
    RL_CHECK_INT(200, st);
    cJSON_Delete(j);
    ev = next_batch(rl, T(5000));
    RL_CHECK_MSG(ev != NULL, "released batch never delivered again");
    RL_CHECK_STR(batch_id, runlane_event_batch_id(ev));
    RL_CHECK_INT(1, runlane_event_attempt(ev));
    RL_CHECK_OK(runlane_batch_ack(rl, batch_id, NULL));
    runlane_event_destroy(ev);
    /* the same token again: stale now */
    j = req(d, "POST", "/api/lease/release", NULL, body, csrf, &st);
    RL_CHECK_INT(409, st);
    cJSON_Delete(j);
    free(before);
    free(csrf);
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_RELEASE, 0));
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

/* retrying and dead: dead letters listed with error and messages, retried
 * (the batch delivered and acked) and purged. */
static void test_retrying_dead_retry_purge(void) {
    const char *kv[] = {"batch.window.ms", "0", "backoff.base.ms", "60000",
                        "backoff.max.ms", "60000", "max.attempts", "3", NULL};
    runlane_t *rl = client(kv);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, NULL);
    char *csrf = csrf_of(d);
    RL_CHECK_OK(runlane_start(rl));
    enqueue(rl, "slow-1", "retry me");
    runlane_event_t *ev = next_batch(rl, T(5000));
    RL_CHECK(ev != NULL);
    RL_CHECK_OK(runlane_batch_fail(rl, runlane_event_batch_id(ev), "provider said 500", 1));
    runlane_event_destroy(ev);
    cJSON *j = wait_list(d, "state=retrying", 1, T(5000));
    cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0);
    RL_CHECK_STR("slow-1", str(it, "conversation_id"));
    RL_CHECK_STR("retrying", str(it, "state"));
    RL_CHECK_STR("provider said 500", str(it, "last_error"));
    RL_CHECK_INT(1, num(it, "attempts"));
    cJSON_Delete(j);
    cJSON *c = get_ok(d, "/api/conversation", "id=slow-1");
    RL_CHECK_STR("retrying", str(c, "state"));
    RL_CHECK_STR("provider said 500", str(c, "last_error"));
    RL_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "lease_token")));
    cJSON_Delete(c);

    /* two dead letters */
    const char *convs[2] = {"doomed-a", "doomed-b"};
    char dead_batch[2][RUNLANE_ID_MAX];
    for (int i = 0; i < 2; i++) {
        enqueue(rl, convs[i], i ? "bye" : "hi there");
        ev = next_batch(rl, T(5000));
        RL_CHECK(ev != NULL);
        RL_CHECK_STR(convs[i], runlane_event_conversation_id(ev));
        snprintf(dead_batch[i], sizeof(dead_batch[i]), "%s", runlane_event_batch_id(ev));
        RL_CHECK_OK(runlane_batch_fail(rl, dead_batch[i], i ? "bad request" : "tool crashed", 0));
        runlane_event_destroy(ev);
        /* dead letters are listed by dead_at (ms); two in the same ms (the
         * second claim is one round trip away) tie across partitions */
        usleep(3000);
    }
    j = get_ok(d, "/api/dead", NULL);
    RL_CHECK_INT(2, num(j, "total"));
    cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    RL_CHECK_INT(2, cJSON_GetArraySize(items));
    /* Oldest first is by dead-letter time in ms: the two may share one ms,
     * and their order is then not promised. Found by conversation id. */
    const char *first = str(cJSON_GetArrayItem(items, 0), "conversation_id");
    it = cJSON_GetArrayItem(items, strcmp(first, "doomed-a") == 0 ? 0 : 1);
    RL_CHECK_STR("doomed-a", str(it, "conversation_id"));
    RL_CHECK_STR("tool crashed", str(it, "error"));
    RL_CHECK_STR("hi there", str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(it, "messages"), 0), "content"));
    char second[64];
    snprintf(second, sizeof(second), "%s", str(cJSON_GetArrayItem(items, 1), "conversation_id"));
    RL_CHECK_MSG(strcmp(first, second) != 0, "one dead letter listed twice");
    cJSON_Delete(j);
    /* paging: offset 1 is the second of the full list */
    j = get_ok(d, "/api/dead", "offset=1&limit=1");
    RL_CHECK_INT(1, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")));
    RL_CHECK_STR(second, str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0), "conversation_id"));
    cJSON_Delete(j);
    j = get_ok(d, "/api/dead", "search=med-b");
    RL_CHECK_INT(1, num(j, "total"));
    cJSON_Delete(j);
    j = get_ok(d, "/api/conversations", "state=dead");
    RL_CHECK_INT(2, num(j, "total"));
    items = cJSON_GetObjectItemCaseSensitive(j, "items");
    it = cJSON_GetArrayItem(items, strcmp(str(cJSON_GetArrayItem(items, 0), "conversation_id"), "doomed-a") == 0 ? 0 : 1);
    RL_CHECK_STR("dead", str(it, "state"));
    RL_CHECK_STR(dead_batch[0], str(it, "dead_id"));
    cJSON_Delete(j);

    /* retry doomed-a: its batch is delivered again and acked */
    char body[200];
    snprintf(body, sizeof(body), "{\"id\":\"%s\"}", dead_batch[0]);
    int st = 0;
    j = req(d, "POST", "/api/dead/retry", NULL, body, csrf, &st);
    RL_CHECK_INT(200, st);
    RL_CHECK_INT(1, num(j, "count"));
    cJSON_Delete(j);
    ev = next_batch(rl, T(5000));
    RL_CHECK_MSG(ev != NULL, "retried dead letter never delivered");
    RL_CHECK_STR("doomed-a", runlane_event_conversation_id(ev));
    RL_CHECK(strstr(runlane_event_json(ev), "hi there") != NULL);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    cJSON *o = get_ok(d, "/api/overview", NULL);
    RL_CHECK_INT(1, num(cJSON_GetObjectItemCaseSensitive(o, "totals"), "acked"));
    RL_CHECK_INT(1, num(cJSON_GetObjectItemCaseSensitive(o, "totals"), "dead"));
    cJSON_Delete(o);
    /* retrying it again: it is gone */
    j = req(d, "POST", "/api/dead/retry", NULL, body, csrf, &st);
    RL_CHECK_INT(404, st);
    cJSON_Delete(j);
    /* purge doomed-b */
    snprintf(body, sizeof(body), "{\"id\":\"%s\"}", dead_batch[1]);
    j = req(d, "POST", "/api/dead/purge", NULL, body, csrf, &st);
    RL_CHECK_INT(200, st);
    RL_CHECK_INT(1, num(j, "count"));
    cJSON_Delete(j);
    j = get_ok(d, "/api/dead", NULL);
    RL_CHECK_INT(0, num(j, "total"));
    cJSON_Delete(j);
    /* {"all":true} on nothing: count 0 */
    j = req(d, "POST", "/api/dead/purge", NULL, "{\"all\":true}", csrf, &st);
    RL_CHECK_INT(200, st);
    RL_CHECK_INT(0, num(j, "count"));
    cJSON_Delete(j);
    free(csrf);
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_RELEASE, 0));
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

/* Bad input: each a clear 4xx JSON error, and the queue unchanged. */
static void test_bad_input_changes_nothing(void) {
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(kv);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, NULL);
    char *csrf = csrf_of(d);
    enqueue(rl, "keep-1", "x");
    /* one dead letter to aim the actions at */
    RL_CHECK_OK(runlane_start(rl));
    runlane_event_t *ev = next_batch(rl, T(5000));
    RL_CHECK(ev != NULL);
    char dead_id[RUNLANE_ID_MAX];
    snprintf(dead_id, sizeof(dead_id), "%s", runlane_event_batch_id(ev));
    RL_CHECK_OK(runlane_batch_fail(rl, dead_id, "no", 0));
    runlane_event_destroy(ev);
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_RELEASE, 0));
    enqueue(rl, "keep-2", "y");

    char good[200], big[20000];
    snprintf(good, sizeof(good), "{\"id\":\"%s\"}", dead_id);
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    memcpy(big, good, strlen(good));
    /* At the cap and one byte over it (what the mounts pass for a body
     * they stopped reading): a missing id gets 404, not 413. */
    static char at_cap[RUNLANE_DASHBOARD_BODY_MAX + 1], over_cap[RUNLANE_DASHBOARD_BODY_MAX + 2];
    memset(at_cap, ' ', RUNLANE_DASHBOARD_BODY_MAX);
    memcpy(at_cap, "{\"id\":\"b1-0-404\"}", 17);
    memcpy(over_cap, at_cap, RUNLANE_DASHBOARD_BODY_MAX);
    over_cap[RUNLANE_DASHBOARD_BODY_MAX] = ' ';
    char forged[65];
    memcpy(forged, csrf, 65);
    forged[10] = forged[10] == 'a' ? 'b' : 'a';
    static const char *const conv_257 =
        "id=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    struct {
        const char *method, *path, *query, *body, *csrf;
        int status;
    } cases[] = {
        {"GET", "/api/nope", NULL, NULL, NULL, 404},
        {"GET", "/../etc/passwd", NULL, NULL, NULL, 404},
        {"GET", "/api/dead/", NULL, NULL, NULL, 404},
        {"DELETE", "/api/dead", NULL, NULL, NULL, 405},
        {"GET", "/api/dead/retry", NULL, NULL, NULL, 405},
        {"POST", "/api/overview", NULL, "{}", csrf, 405},
        {"GET", "/api/conversations", NULL, NULL, NULL, 400},
        {"GET", "/api/conversations", "state=bogus", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&offset=-1", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&offset=abc", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&offset=1000001", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&offset=99999999999999999999", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&limit=0", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&limit=201", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&limit=", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&search=%zz", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&search=a%00b", NULL, NULL, 400},
        {"GET", "/api/conversations", "state=pending&search=%ff", NULL, NULL, 400},
        {"GET", "/api/dead", "limit=500", NULL, NULL, 400},
        {"GET", "/api/conversation", NULL, NULL, NULL, 400},
        {"GET", "/api/conversation", "id=", NULL, NULL, 400},
        {"GET", "/api/conversation", "id=a%0Ab", NULL, NULL, 400},
        {"GET", "/api/conversation", conv_257, NULL, NULL, 400},
        {"POST", "/api/dead/retry", NULL, good, NULL, 403},
        {"POST", "/api/dead/retry", NULL, good, "", 403},
        {"POST", "/api/dead/retry", NULL, good, forged, 403},
        {"POST", "/api/dead/purge", NULL, good, forged, 403},
        {"POST", "/api/dead/retry", NULL, good, "short", 403},
        {"POST", "/api/dead/retry", NULL, big, csrf, 413},
        {"POST", "/api/dead/retry", NULL, at_cap, csrf, 404},
        {"POST", "/api/dead/retry", NULL, over_cap, csrf, 413},
        {"POST", "/api/dead/retry", NULL, "{\"id\":", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "[]", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"all\":true} junk", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"all\":true}{}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"all\":false}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"id\":7}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"id\":\"x\",\"all\":true}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"id\":\"x\",\"extra\":1}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"id\":\"a\\u0000b\"}", csrf, 400},
        {"POST", "/api/dead/retry", NULL, "{\"id\":\"b1-0-404\"}", csrf, 404},
        {"POST", "/api/dead/purge", NULL, "{\"id\":\"b1-0-404\"}", csrf, 404},
        {"POST", "/api/lease/release", NULL, "{\"conversation_id\":\"keep-2\"}", csrf, 400},
        {"POST", "/api/lease/release", NULL, "{\"conversation_id\":\"keep-2\",\"lease_token\":\"1x\"}", csrf, 400},
        {"POST", "/api/lease/release", NULL, "{\"conversation_id\":\"keep-2\",\"lease_token\":\"\"}", csrf, 400},
        {"POST", "/api/lease/release", NULL, "{\"conversation_id\":\"keep-2\",\"lease_token\":\"1\"}", csrf, 409},
    };
    char *before = snapshot(rl);
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        int st = 0;
        cJSON *j = req(d, cases[i].method, cases[i].path, cases[i].query, cases[i].body,
                       cases[i].csrf, &st);
        RL_CHECK_MSG(st == cases[i].status, "case %zu %s %s?%s: expected %d, got %d", i,
                     cases[i].method, cases[i].path, cases[i].query ? cases[i].query : "",
                     cases[i].status, st);
        cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        RL_CHECK_MSG(e && num(e, "status") == st && str(e, "message") && *str(e, "message"),
                     "case %zu: no clear JSON error", i);
        cJSON_Delete(j);
        char *after = snapshot(rl);
        RL_CHECK_MSG(strcmp(before, after) == 0, "case %zu changed the queue", i);
        free(after);
    }
    /* the right token and body do work (the cases above were refused for
     * their fault only) */
    int st = 0;
    cJSON *j = req(d, "POST", "/api/dead/retry", NULL, good, csrf, &st);
    RL_CHECK_INT(200, st);
    cJSON_Delete(j);
    /* read-only: every action refused, even with the token */
    runlane_dashboard_t *ro = runlane_dashboard_new(rl, "{\"read_only\":true}");
    char *rocsrf = csrf_of(ro);
    j = req(ro, "POST", "/api/dead/purge", NULL, "{\"all\":true}", rocsrf, &st);
    RL_CHECK_INT(403, st);
    cJSON_Delete(j);
    /* a token of another handler is not ours */
    j = req(ro, "POST", "/api/dead/purge", NULL, "{\"all\":true}", csrf, &st);
    RL_CHECK_INT(403, st);
    cJSON_Delete(j);
    free(rocsrf);
    runlane_dashboard_destroy(ro);
    /* NULL arguments */
    runlane_dashboard_response_t *r = NULL;
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_dashboard_handle(&r, d, NULL, "/", NULL, NULL, 0, NULL));
    RL_CHECK(r == NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_dashboard_handle(NULL, d, "GET", "/", NULL, NULL, 0, NULL));
    free(before);
    free(csrf);
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

/* No secret in any answer: the store password and the API key. */
static void test_no_secrets(void) {
    const char *kv[] = {"openai.api.key", "sk-dashboard-secret-123", NULL};
    runlane_t *rl = client(kv);
    runlane_dashboard_t *d = runlane_dashboard_new(rl, NULL);
    enqueue(rl, "s-1", "x");
    const char *paths[][2] = {{"/", NULL}, {"/api/session", NULL}, {"/api/overview", NULL},
                              {"/api/conversations", "state=pending"}, {"/api/conversation", "id=s-1"},
                              {"/api/dead", NULL}};
    for (size_t i = 0; i < sizeof(paths) / sizeof(*paths); i++) {
        runlane_dashboard_response_t *r = NULL;
        RL_CHECK_OK(runlane_dashboard_handle(&r, d, "GET", paths[i][0], paths[i][1], NULL, 0, NULL));
        const char *b = runlane_dashboard_response_body(r, NULL);
        int leak = strstr(b, "sk-dashboard-secret") != NULL;
        runlane_dashboard_response_destroy(r);
        RL_CHECK_MSG(!leak, "%s shows the API key", paths[i][0]);
    }
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
}

static void run_all(const char *url) {
    snprintf(store_url, sizeof(store_url), "%s", url);
    fprintf(stderr, "== store %s\n", strncmp(url, "redis", 5) == 0 ? "redis" : url);
    RL_RUN(test_options_and_session);
    RL_RUN(test_overview_and_history);
    RL_RUN(test_lists_detail_release);
    RL_RUN(test_retrying_dead_retry_purge);
    RL_RUN(test_bad_input_changes_nothing);
    RL_RUN(test_no_secrets);
}

static void test_redis_is_configured(void) {
    if (!rl_test_redis_url()) RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
}

int main(void) {
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
