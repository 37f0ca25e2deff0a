/*
 * test_store.c - the store conformance suite.
 *
 * One suite, run against every store: the memory store, and the redis store
 * when RUNLANE_TEST_REDIS names a server (e.g. redis://127.0.0.1:6390/0),
 * with 1 and with 3 partitions and a key prefix unique to the run (removed
 * at the end). With RUNLANE_REQUIRE_REDIS=1 a missing RUNLANE_TEST_REDIS is
 * a failure, not a skip. Redis-only tests follow: NOSCRIPT recovery,
 * reconnect after the store's connection is killed, command timeout, URL
 * and AUTH errors (no password in messages), hash-tagged key layout (the
 * rate bucket's {rate} included). They
 * touch no other client of the server (SCRIPT FLUSH aside, which every
 * runlane store survives), so other tests may share it.
 *
 * Environment: RUNLANE_TEST_REDIS (server URL), RUNLANE_REQUIRE_REDIS=1,
 * RUNLANE_TEST_STORE=memory|redis (run one store only), RUNLANE_TEST_KEEP=1
 * (leave the run's rltest:* keys on the server for inspection).
 *
 * Timing: windows are 100-500 ms; a check that something is NOT due is made
 * well inside its window, and a check that it IS due polls with a generous
 * deadline, so the suite asserts no exact timing.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "rltest.h"
#include "store.h"
#include "store_redis.h"
#include "redis_link.h"

/* ------------------------------------------------------------------ */
/* the store under test                                               */
/* ------------------------------------------------------------------ */

static const char *g_kind = "memory"; /* "memory" | "redis" */
static const char *g_redis_url;
static int g_partitions = 1;
static int g_ns; /* namespace number: one per test */
static char g_run[64];

#define MAX_OPEN 8
static rl_store_t *g_open[MAX_OPEN];
static int g_nopen;
static rl_policy_t g_pol;

/* Sanitizer and valgrind runs are several times slower: the test command
 * sets RUNLANE_TEST_TIME_SCALE so that every window, backoff and sleep of
 * the suite stretches together and the margins between them keep. */
static int time_scale(void) {
    static int scale;
    if (!scale) {
        const char *v = getenv("RUNLANE_TEST_TIME_SCALE");
        scale = v && atoi(v) > 0 ? atoi(v) : 1;
    }
    return scale;
}
#define TS(ms) ((ms) * time_scale())

static void reset_policy(void) {
    memset(&g_pol, 0, sizeof(g_pol));
    g_pol.window_ms = TS(0);
    g_pol.max_wait_ms = TS(60000);
    g_pol.max_messages = 100;
    g_pol.max_bytes = 1 << 20;
    g_pol.lease_ms = TS(30000);
    g_pol.max_attempts = 3;
    g_pol.max_stalls = 5;
    g_pol.backoff_base_ms = TS(300);
    g_pol.backoff_max_ms = TS(2000);
    g_pol.backoff_jitter = 0;
    g_pol.idem_ttl_ms = 60000;
    g_pol.reply_redeliver_ms = TS(400);
    g_pol.reply_ttl_ms = TS(60000);
}

static void redis_prefix(char *buf, size_t size, int ns) {
    snprintf(buf, size, "rltest:%s:p%d:%d", g_run, g_partitions, ns);
}

/* Opens a store on namespace `ns` (memory name / redis key prefix). */
static rl_store_t *open_ns(int ns) {
    char url[256], prefix[128];
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    if (strcmp(g_kind, "memory") == 0) {
        snprintf(url, sizeof(url), "memory://conformance-%d-%d", (int)getpid(), ns);
        o.url = url;
    } else {
        redis_prefix(prefix, sizeof(prefix), ns);
        o.url = g_redis_url;
        o.prefix = prefix;
        o.tls.ca_file = getenv("RUNLANE_TEST_REDIS_TLS_CA"); /* rediss:// (test_tls.c) */
        o.tls.cert_file = getenv("RUNLANE_TEST_REDIS_TLS_CERT");
        o.tls.key_file = getenv("RUNLANE_TEST_REDIS_TLS_KEY");
    }
    o.partitions = g_partitions;
    o.connect_timeout_ms = 2000;
    o.command_timeout_ms = 5000;
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK_MSG(st != NULL, "opening the %s store failed: %s", g_kind,
                 runlane_error_message(runlane_error_last()));
    RL_CHECK(g_nopen < MAX_OPEN);
    g_open[g_nopen++] = st;
    return st;
}

/* A fresh, empty store for the current test. */
static rl_store_t *fresh(void) {
    reset_policy();
    return open_ns(++g_ns);
}

/* A second handle on the current test's namespace (another "process"). */
static rl_store_t *same(void) { return open_ns(g_ns); }

static void close_all(void) {
    while (g_nopen > 0) {
        rl_store_t *st = g_open[--g_nopen];
        st->ops->destroy(st);
    }
}

#define RUN(fn)                                                             \
    do {                                                                    \
        RL_RUN(fn);                                                         \
        close_all();                                                        \
    } while (0)

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */


static void sleep_ms(int ms) {
    ms = TS(ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *errmsg(void) { return runlane_error_message(runlane_error_last()); }

static char *tail_of(const char *content, const char *extra) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"content\":");
    rl_buf_json_str(&b, content);
    if (extra) rl_buf_puts(&b, extra);
    rl_buf_puts(&b, "}");
    return rl_buf_take(&b);
}

/* Enqueues `content`; returns the duplicate flag; id into id_out (may be
 * NULL). */
static int enq_x(rl_store_t *st, const char *conv, const char *content, const char *ikey,
                 const char *extra, char *id_out) {
    char id[RUNLANE_ID_MAX];
    int dup = -1;
    char *tail = tail_of(content, extra);
    RL_CHECK(tail != NULL);
    int rc = st->ops->enqueue(st, &g_pol, conv, tail, (int64_t)strlen(content), ikey, id, &dup);
    free(tail);
    RL_CHECK_MSG(rc == RUNLANE_OK, "enqueue(%s) returned %d: %s", conv, rc, errmsg());
    RL_CHECK_MSG(dup == 0 || dup == 1, "enqueue did not set the duplicate flag (%d)", dup);
    RL_CHECK_MSG(strlen(id) > 0 && strlen(id) < RUNLANE_ID_MAX, "bad message id \"%s\"", id);
    if (id_out) strcpy(id_out, id);
    return dup;
}

static void enq(rl_store_t *st, const char *conv, const char *content) {
    RL_CHECK_INT(0, enq_x(st, conv, content, NULL, NULL, NULL));
}

/* Claims; *n receives the count. */
static rl_claim_t *claim_n(rl_store_t *st, const char *owner, int max, int *n) {
    rl_claim_t *cl = NULL;
    *n = -1;
    int rc = st->ops->claim(st, &g_pol, owner, max, &cl, n);
    RL_CHECK_MSG(rc == RUNLANE_OK, "claim returned %d: %s", rc, errmsg());
    RL_CHECK(*n >= 0 && *n <= max);
    RL_CHECK(*n == 0 || cl != NULL);
    return cl;
}

static void claims_free(rl_claim_t *cl, int n) {
    for (int i = 0; i < n; i++) rl_claim_free(&cl[i]);
    free(cl);
}

/* Number of conversations claimable right now (claims are given back with
 * release so the state is unchanged, except that nothing else may be
 * leased by the caller... use only when nothing should be claimable). */
static int claimable_now(rl_store_t *st) {
    int n;
    rl_claim_t *cl = claim_n(st, "probe", 100, &n);
    claims_free(cl, n);
    return n;
}

/* Claims exactly one conversation, polling until `timeout_ms`. */
static rl_claim_t wait_claim(rl_store_t *st, const char *owner, int timeout_ms) {
    int64_t end = rl_mono_ms() + TS(timeout_ms);
    for (;;) {
        int n;
        rl_claim_t *cl = claim_n(st, owner, 1, &n);
        if (n == 1) {
            rl_claim_t c = cl[0];
            free(cl);
            return c;
        }
        RL_CHECK_MSG(rl_mono_ms() < end, "nothing became claimable within %d ms", timeout_ms);
        sleep_ms(20);
    }
}

/* Claims exactly one conversation now. */
static rl_claim_t claim1(rl_store_t *st, const char *owner) {
    int n;
    rl_claim_t *cl = claim_n(st, owner, 1, &n);
    RL_CHECK_MSG(n == 1, "expected one conversation to be claimable now, got %d", n);
    rl_claim_t c = cl[0];
    free(cl);
    return c;
}

/* "a|b|c" from a JSON array of records (contents in order); the caller
 * frees. Also checks every record has a string id and a numeric ts_ms,
 * with "id" first. */
static char *contents(const char *messages_json) {
    cJSON *a = cJSON_Parse(messages_json);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return rl_strdup("<not a JSON array>");
    }
    rl_buf_t b;
    rl_buf_init(&b);
    cJSON *m;
    int first = 1;
    cJSON_ArrayForEach(m, a) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        cJSON *ts = cJSON_GetObjectItemCaseSensitive(m, "ts_ms");
        if (!first) rl_buf_puts(&b, "|");
        first = 0;
        if (!cJSON_IsString(id) || !cJSON_IsNumber(ts) || m->child != id)
            rl_buf_puts(&b, "<record without id/ts_ms>");
        else
            rl_buf_puts(&b, cJSON_IsString(c) ? c->valuestring : "<no content>");
    }
    cJSON_Delete(a);
    return rl_buf_take(&b);
}

#define CHECK_CONTENTS(expected, messages_json)                             \
    do {                                                                    \
        char *got_ = contents(messages_json);                               \
        int ok_ = got_ && strcmp(got_, (expected)) == 0;                    \
        char tmp_[512];                                                     \
        snprintf(tmp_, sizeof(tmp_), "%s", got_ ? got_ : "(null)");         \
        free(got_);                                                         \
        RL_CHECK_MSG(ok_, "messages: expected \"%s\", got \"%s\"", (expected), tmp_); \
    } while (0)

static cJSON *status_of(rl_store_t *st, const char *conv) {
    char *json = NULL;
    int rc = st->ops->status(st, conv, &json);
    RL_CHECK_MSG(rc == RUNLANE_OK, "status returned %d: %s", rc, errmsg());
    RL_CHECK(json != NULL);
    cJSON *j = cJSON_Parse(json);
    RL_CHECK_MSG(cJSON_IsObject(j), "status is not a JSON object: %s", json);
    free(json);
    return j;
}

/* Number member of a status (-1 when absent, -2 when null). */
static long long jnum(cJSON *j, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) return -1;
    if (cJSON_IsNull(v)) return -2;
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : -3;
}

static const char *jstr(cJSON *j, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Checks one numeric member of status(conv) (conv NULL: totals). */
static void check_status_num(rl_store_t *st, const char *conv, const char *key, long long want) {
    cJSON *j = status_of(st, conv);
    long long got = jnum(j, key);
    cJSON_Delete(j);
    RL_CHECK_MSG(got == want, "status(%s).%s: expected %lld, got %lld", conv ? conv : "totals",
                 key, want, got);
}

static void check_state(rl_store_t *st, const char *conv, const char *want) {
    cJSON *j = status_of(st, conv);
    char got[32];
    snprintf(got, sizeof(got), "%s", jstr(j, "state") ? jstr(j, "state") : "(none)");
    cJSON_Delete(j);
    RL_CHECK_MSG(strcmp(got, want) == 0, "status(%s).state: expected %s, got %s", conv, want, got);
}

static char *dead_list(rl_store_t *st, size_t off, size_t lim) {
    char *json = NULL;
    int rc = st->ops->dead_list(st, off, lim, &json);
    RL_CHECK_MSG(rc == RUNLANE_OK, "dead_list returned %d: %s", rc, errmsg());
    RL_CHECK(json != NULL);
    return json;
}

static int dead_count(rl_store_t *st) {
    char *json = dead_list(st, 0, 1000);
    cJSON *a = cJSON_Parse(json);
    free(json);
    RL_CHECK(cJSON_IsArray(a));
    int n = cJSON_GetArraySize(a);
    cJSON_Delete(a);
    return n;
}

static void fail_claim(rl_store_t *st, rl_claim_t *c, const char *err, int retriable,
                       rl_fail_outcome_t want) {
    rl_fail_outcome_t out = (rl_fail_outcome_t)-1;
    int rc = st->ops->fail(st, &g_pol, c->conversation_id, c->token, err, retriable, &out);
    RL_CHECK_MSG(rc == RUNLANE_OK, "fail returned %d: %s", rc, errmsg());
    RL_CHECK_MSG(out == want, "fail outcome: expected %s, got %d",
                 want == RL_FAIL_DEAD ? "DEAD" : "RETRY", (int)out);
}

/* Claims, then dead-letters the conversation's batch at once. */
static void make_dead(rl_store_t *st, const char *conv, const char *err) {
    rl_claim_t c = claim1(st, "w");
    RL_CHECK_STR(conv, c.conversation_id);
    fail_claim(st, &c, err, 0, RL_FAIL_DEAD);
    rl_claim_free(&c);
}

/* ------------------------------------------------------------------ */
/* conformance tests                                                  */
/* ------------------------------------------------------------------ */

static void test_enqueue_keeps_order_and_ids(void) {
    rl_store_t *st = fresh();
    char ids[4][RUNLANE_ID_MAX];
    enq_x(st, "c1", "one", NULL, NULL, ids[0]);
    enq_x(st, "c1", "two", NULL, ",\"instructions\":\"be brief\",\"metadata\":{\"k\":\"v\"}", ids[1]);
    enq_x(st, "c1", "three", NULL, NULL, ids[2]);
    RL_CHECK(strcmp(ids[0], ids[1]) != 0 && strcmp(ids[1], ids[2]) != 0 &&
             strcmp(ids[0], ids[2]) != 0);
    int n;
    rl_claim_t *cl = claim_n(st, "w1", 10, &n);
    RL_CHECK_INT(1, n);
    rl_claim_t *c = &cl[0];
    RL_CHECK_STR("c1", c->conversation_id);
    CHECK_CONTENTS("one|two|three", c->messages_json);
    RL_CHECK_INT(1, c->attempt);
    RL_CHECK(c->batch_id[0] != '\0' && c->token[0] != '\0');
    RL_CHECK(c->lease_until_ms > 0);
    RL_CHECK(c->ckpt_json == NULL);
    /* the ids and extra members are delivered as stored */
    cJSON *a = cJSON_Parse(c->messages_json);
    RL_CHECK(cJSON_GetArraySize(a) == 3);
    for (int i = 0; i < 3; i++) {
        cJSON *m = cJSON_GetArrayItem(a, i);
        cJSON *mid = cJSON_GetObjectItemCaseSensitive(m, "id");
        RL_CHECK_MSG(cJSON_IsString(mid) && strcmp(mid->valuestring, ids[i]) == 0,
                     "message %d: expected id %s", i, ids[i]);
    }
    cJSON *m2 = cJSON_GetArrayItem(a, 1);
    cJSON *ins = cJSON_GetObjectItemCaseSensitive(m2, "instructions");
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(m2, "metadata");
    int extra_ok = cJSON_IsString(ins) && strcmp(ins->valuestring, "be brief") == 0 &&
                   cJSON_IsObject(meta);
    cJSON_Delete(a);
    RL_CHECK_MSG(extra_ok, "instructions/metadata not kept: %s", c->messages_json);
    claims_free(cl, n);
}

/* store.h: the tail is "the record's JSON object WITHOUT id and ts_ms";
 * "{}" is such an object and must still make a valid record. */
static void test_record_from_empty_tail_is_valid(void) {
    rl_store_t *st = fresh();
    char id[RUNLANE_ID_MAX];
    int dup = -1;
    RL_CHECK_OK(st->ops->enqueue(st, &g_pol, "c2", "{}", 0, NULL, id, &dup));
    RL_CHECK_INT(0, dup);
    rl_claim_t c = claim1(st, "w");
    cJSON *e = cJSON_Parse(c.messages_json);
    int ok = cJSON_IsArray(e) && cJSON_GetArraySize(e) == 1 &&
             cJSON_IsString(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(e, 0), "id"));
    cJSON_Delete(e);
    char copy[300];
    snprintf(copy, sizeof(copy), "%s", c.messages_json);
    rl_claim_free(&c);
    RL_CHECK_MSG(ok, "record from the tail {} is not valid JSON: %s", copy);
}

static void test_idempotency_key_stores_once(void) {
    rl_store_t *st = fresh();
    char a[RUNLANE_ID_MAX], b[RUNLANE_ID_MAX], c[RUNLANE_ID_MAX], d[RUNLANE_ID_MAX];
    RL_CHECK_INT(0, enq_x(st, "c1", "first", "k1", NULL, a));
    RL_CHECK_INT(1, enq_x(st, "c1", "first again", "k1", NULL, b));
    RL_CHECK_STR(a, b);
    RL_CHECK_INT(0, enq_x(st, "c1", "second", "k2", NULL, c));
    RL_CHECK(strcmp(a, c) != 0);
    /* the same key in another conversation is independent */
    RL_CHECK_INT(0, enq_x(st, "c2", "other", "k1", NULL, d));
    RL_CHECK(strcmp(a, d) != 0);
    check_status_num(st, "c1", "pending", 2);
    check_status_num(st, NULL, "enqueued", 3);
    check_status_num(st, NULL, "pending", 3);
    rl_claim_t cl = wait_claim(st, "w", 2000);
    rl_claim_t cl2 = wait_claim(st, "w", 2000);
    rl_claim_t *c1 = strcmp(cl.conversation_id, "c1") == 0 ? &cl : &cl2;
    CHECK_CONTENTS("first|second", c1->messages_json);
    /* still a duplicate after its message was claimed */
    RL_CHECK_INT(1, enq_x(st, "c1", "late", "k1", NULL, b));
    RL_CHECK_STR(a, b);
    rl_claim_free(&cl);
    rl_claim_free(&cl2);
}

static void test_quiet_window_delays_due(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(400);
    enq(st, "c1", "hello");
    RL_CHECK_INT(0, claimable_now(st));
    int64_t due = 0, now = 0;
    RL_CHECK_OK(st->ops->next_due(st, &due, &now));
    RL_CHECK_MSG(due > now && due <= now + TS(400), "next_due %lld should be in (now, now+window], now %lld",
                 (long long)due, (long long)now);
    RL_CHECK_MSG(llabs((long long)(now - rl_now_ms())) < 5000, "store time %lld far from %lld",
                 (long long)now, (long long)rl_now_ms());
    check_state(st, "c1", "waiting");
    rl_claim_t c = wait_claim(st, "w", 3000);
    CHECK_CONTENTS("hello", c.messages_json);
    rl_claim_free(&c);
}

static void test_message_in_window_extends_it(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(400);
    enq(st, "c1", "a");
    sleep_ms(250);
    int64_t before_b = rl_mono_ms();
    enq(st, "c1", "b"); /* window restarts: due at ~650 */
    sleep_ms(250);      /* ~500: past the first window, inside the second */
    int n = claimable_now(st);
    if (n && rl_mono_ms() - before_b >= g_pol.window_ms) {
        /* The machine stalled past the second window too (seen once over
         * the TLS cluster, 6 suites side by side on 2 cores, where the
         * margin is 150 ms): due by then, rightly. */
        fprintf(stderr, "    stalled %lld ms past the window: claimable, rightly\n",
                (long long)(rl_mono_ms() - before_b - g_pol.window_ms));
        return;
    }
    RL_CHECK_INT(0, n);
    rl_claim_t c = wait_claim(st, "w", 3000);
    CHECK_CONTENTS("a|b", c.messages_json);
    rl_claim_free(&c);
}

static void test_touch_extends_window(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(400);
    enq(st, "c1", "a");
    sleep_ms(250);
    RL_CHECK_OK(st->ops->touch(st, &g_pol, "c1"));
    sleep_ms(250);
    RL_CHECK_INT(0, claimable_now(st));
    rl_claim_t c = wait_claim(st, "w", 3000);
    CHECK_CONTENTS("a", c.messages_json);
    rl_claim_free(&c);
    /* touching a conversation with nothing queued stores nothing */
    RL_CHECK_OK(st->ops->touch(st, &g_pol, "nobody"));
    check_state(st, "nobody", "idle");
    check_status_num(st, "nobody", "pending", 0);
    RL_CHECK_INT(0, claimable_now(st));
}

static void test_max_wait_caps_touch(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(300);
    g_pol.max_wait_ms = TS(800);
    enq(st, "c1", "a");
    int64_t start = rl_mono_ms();
    int claimed = 0, first_probe = -1;
    while (rl_mono_ms() - start < 3000 && !claimed) {
        sleep_ms(100);
        RL_CHECK_OK(st->ops->touch(st, &g_pol, "c1"));
        int n;
        rl_claim_t *cl = claim_n(st, "w", 1, &n);
        if (first_probe < 0) first_probe = n;
        claimed = n;
        claims_free(cl, n);
    }
    RL_CHECK_MSG(first_probe == 0, "claimable 100 ms after the message despite the window");
    RL_CHECK_MSG(claimed, "a conversation touched every 100 ms never became due: max wait "
                          "should cap the window");
}

static void test_max_messages_due_at_once(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(20000);
    g_pol.max_wait_ms = TS(20000);
    g_pol.max_messages = 3;
    enq(st, "c1", "a");
    enq(st, "c1", "b");
    RL_CHECK_INT(0, claimable_now(st));
    enq(st, "c1", "c");
    enq(st, "c1", "d");
    enq(st, "c1", "e");
    check_state(st, "c1", "ready");
    rl_claim_t c = claim1(st, "w");
    CHECK_CONTENTS("a|b|c", c.messages_json);
    check_status_num(st, "c1", "pending", 2);
    check_status_num(st, "c1", "inflight", 3);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    /* 2 < max_messages: back to waiting for the window */
    RL_CHECK_INT(0, claimable_now(st));
    check_state(st, "c1", "waiting");
    enq(st, "c1", "f");
    c = claim1(st, "w");
    CHECK_CONTENTS("d|e|f", c.messages_json);
    rl_claim_free(&c);
}

static void test_max_bytes_due_at_once(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(20000);
    g_pol.max_wait_ms = TS(20000);
    g_pol.max_bytes = 10;
    enq(st, "c1", "aaaa");
    enq(st, "c1", "bbbb");
    RL_CHECK_INT(0, claimable_now(st));
    enq(st, "c1", "cccc"); /* 12 >= 10 */
    rl_claim_t c = claim1(st, "w");
    CHECK_CONTENTS("aaaa|bbbb", c.messages_json);
    check_status_num(st, "c1", "pending", 1);
    rl_claim_free(&c);
    /* a single message over max_bytes is claimable, alone */
    enq(st, "big", "0123456789abcdefghij");
    enq(st, "big", "x");
    c = claim1(st, "w");
    RL_CHECK_STR("big", c.conversation_id);
    CHECK_CONTENTS("0123456789abcdefghij", c.messages_json);
    rl_claim_free(&c);
}

static void test_claim_is_exclusive(void) {
    rl_store_t *st = fresh();
    rl_store_t *other = same();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w1");
    RL_CHECK_INT(0, claimable_now(st));
    RL_CHECK_INT(0, claimable_now(other));
    /* arrivals during the lease wait for the ack */
    enq(other, "c1", "b");
    RL_CHECK_INT(0, claimable_now(other));
    int64_t due = 0, now = 0;
    RL_CHECK_OK(st->ops->next_due(st, &due, &now));
    RL_CHECK_MSG(due == INT64_MAX, "a leased conversation is not in ready (next_due %lld)",
                 (long long)due);
    check_state(st, "c1", "leased");
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_t c2 = claim1(other, "w2");
    CHECK_CONTENTS("b", c2.messages_json);
    RL_CHECK_INT(1, c2.attempt);
    RL_CHECK(strcmp(c.batch_id, c2.batch_id) != 0);
    RL_CHECK(strcmp(c.token, c2.token) != 0);
    rl_claim_free(&c);
    rl_claim_free(&c2);
}

static void test_concurrent_claimers_split_work(void) {
    rl_store_t *a = fresh();
    rl_store_t *b = same();
    char conv[32];
    for (int i = 0; i < 20; i++) {
        snprintf(conv, sizeof(conv), "conv-%d", i);
        enq(a, conv, "m");
    }
    int na, nb;
    rl_claim_t *ca = claim_n(a, "wa", 12, &na);
    rl_claim_t *cb = claim_n(b, "wb", 12, &nb);
    RL_CHECK_INT(12, na);
    RL_CHECK_INT(8, nb);
    for (int i = 0; i < na; i++)
        for (int k = 0; k < nb; k++)
            RL_CHECK_MSG(strcmp(ca[i].conversation_id, cb[k].conversation_id) != 0,
                         "conversation %s claimed twice", ca[i].conversation_id);
    check_status_num(a, NULL, "inflight", 20);
    claims_free(ca, na);
    claims_free(cb, nb);
}

static void test_renew_extends_or_reports_stale(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(1000);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    int64_t first = c.lease_until_ms;
    sleep_ms(30);
    int ok = -1;
    RL_CHECK_OK(st->ops->renew(st, &g_pol, &c, 1, &ok, NULL));
    RL_CHECK_INT(1, ok);
    RL_CHECK_MSG(c.lease_until_ms > first, "renew did not extend the lease (%lld -> %lld)",
                 (long long)first, (long long)c.lease_until_ms);
    /* several at once, one stale */
    rl_claim_t two[2];
    two[0] = c;
    two[1] = c;
    strcpy(two[1].token, "999999999");
    int oks[2] = {-1, -1};
    RL_CHECK_OK(st->ops->renew(st, &g_pol, two, 2, oks, NULL));
    RL_CHECK_INT(1, oks[0]);
    RL_CHECK_INT(0, oks[1]);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    ok = -1;
    RL_CHECK_OK(st->ops->renew(st, &g_pol, &c, 1, &ok, NULL));
    RL_CHECK_INT(0, ok);
    rl_claim_free(&c);
}

static void test_stale_token_changes_nothing(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", "999999999"));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", ""));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "unknown", c.token));
    rl_fail_outcome_t out;
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->fail(st, &g_pol, "c1", "999999999", "x", 1, &out));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->release(st, &g_pol, "c1", "999999999"));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->defer(st, &g_pol, "c1", "999999999", 10));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->checkpoint(st, "c1", "999999999", "{}"));
    check_state(st, "c1", "leased");
    check_status_num(st, "c1", "inflight", 1);
    check_status_num(st, "c1", "attempts", 1);
    check_status_num(st, NULL, "acked", 0);
    check_status_num(st, NULL, "failed", 0);
    RL_CHECK_INT(0, dead_count(st));
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", c.token));
    check_status_num(st, NULL, "acked", 1);
    rl_claim_free(&c);
}

static void test_fail_retries_with_backoff_then_dead(void) {
    rl_store_t *st = fresh();
    g_pol.max_attempts = 3;
    g_pol.backoff_base_ms = TS(400);
    enq(st, "c1", "a");
    enq(st, "c1", "b");
    rl_claim_t c = claim1(st, "w");
    char bid[RUNLANE_ID_MAX];
    strcpy(bid, c.batch_id);
    fail_claim(st, &c, "boom1", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    RL_CHECK_INT(0, claimable_now(st)); /* backoff 400 ms */
    {
        cJSON *j = status_of(st, "c1");
        const char *state = jstr(j, "state"), *le = jstr(j, "last_error");
        int ok = state && strcmp(state, "backoff") == 0 && le && strcmp(le, "boom1") == 0 &&
                 jnum(j, "attempts") == 1 && jnum(j, "inflight") == 2 && jnum(j, "due_ms") > 0;
        char *txt = cJSON_PrintUnformatted(j);
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", txt ? txt : "");
        free(txt);
        cJSON_Delete(j);
        RL_CHECK_MSG(ok, "status after a retriable fail: %s", copy);
    }
    c = wait_claim(st, "w", 3000);
    RL_CHECK_INT(2, c.attempt);
    RL_CHECK_STR(bid, c.batch_id);
    CHECK_CONTENTS("a|b", c.messages_json);
    fail_claim(st, &c, "boom2", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    sleep_ms(300); /* backoff is 800 ms now */
    RL_CHECK_INT(0, claimable_now(st));
    c = wait_claim(st, "w", 4000);
    RL_CHECK_INT(3, c.attempt);
    RL_CHECK_STR(bid, c.batch_id);
    fail_claim(st, &c, "boom3", 1, RL_FAIL_DEAD);
    rl_claim_free(&c);
    char *json = dead_list(st, 0, 0);
    cJSON *a = cJSON_Parse(json);
    cJSON *d = cJSON_GetArrayItem(a, 0);
    int ok = cJSON_GetArraySize(a) == 1 && jstr(d, "id") && strcmp(jstr(d, "id"), bid) == 0 &&
             jstr(d, "batch_id") && strcmp(jstr(d, "batch_id"), bid) == 0 &&
             jstr(d, "conversation_id") && strcmp(jstr(d, "conversation_id"), "c1") == 0 &&
             jstr(d, "error") && strcmp(jstr(d, "error"), "boom3") == 0 &&
             jnum(d, "attempts") == 3 && jnum(d, "dead_at_ms") > 0;
    char *msgs = ok ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(d, "messages")) : NULL;
    cJSON_Delete(a);
    RL_CHECK_MSG(ok, "dead letter: %s", json);
    free(json);
    CHECK_CONTENTS("a|b", msgs);
    free(msgs);
    check_state(st, "c1", "idle");
    check_status_num(st, "c1", "inflight", 0);
    check_status_num(st, NULL, "failed", 3);
    check_status_num(st, NULL, "dead_lettered", 1);
    check_status_num(st, NULL, "dead", 1);
    RL_CHECK_INT(0, claimable_now(st));
}

static void test_fail_not_retriable_is_dead_at_once(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    enq(st, "c1", "b"); /* arrives during the lease */
    fail_claim(st, &c, "bad request", 0, RL_FAIL_DEAD);
    rl_claim_free(&c);
    RL_CHECK_INT(1, dead_count(st));
    /* the conversation moves on to what was pending */
    c = wait_claim(st, "w", 2000);
    CHECK_CONTENTS("b", c.messages_json);
    RL_CHECK_INT(1, c.attempt);
    rl_claim_free(&c);
}

static void test_recover_expired_lease(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(300);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w1");
    int rec = -1, dead = -1;
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(0, rec);
    RL_CHECK_INT(0, dead);
    sleep_ms(500);
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(1, rec);
    RL_CHECK_INT(0, dead);
    /* the old owner is fenced off */
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", c.token));
    int ok = -1;
    RL_CHECK_OK(st->ops->renew(st, &g_pol, &c, 1, &ok, NULL));
    RL_CHECK_INT(0, ok);
    check_status_num(st, NULL, "recovered", 1);
    rl_claim_t c2 = claim1(st, "w2");
    RL_CHECK_INT(2, c2.attempt);
    RL_CHECK_STR(c.batch_id, c2.batch_id);
    RL_CHECK_STR(c.messages_json, c2.messages_json);
    RL_CHECK(strcmp(c.token, c2.token) != 0);
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(0, rec);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c2.token));
    rl_claim_free(&c);
    rl_claim_free(&c2);
}

static void test_recover_dead_letters_past_max_stalls(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(200);
    g_pol.max_stalls = 1;
    enq(st, "c1", "a");
    int rec, dead;
    for (int attempt = 1; attempt <= 2; attempt++) {
        rl_claim_t c = wait_claim(st, "w", 2000);
        RL_CHECK_INT(attempt, c.attempt);
        rl_claim_free(&c);
        sleep_ms(TS(350));
        RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
        RL_CHECK_INT(1, rec);
        RL_CHECK_INT(attempt == 2 ? 1 : 0, dead);
    }
    char *json = dead_list(st, 0, 0);
    cJSON *a = cJSON_Parse(json);
    cJSON *d = cJSON_GetArrayItem(a, 0);
    const char *err = jstr(d, "error");
    int ok = cJSON_GetArraySize(a) == 1 && err &&
             strcmp(err, "lease expired 2 times, more than max.stalls (1): the workers holding "
                         "the batch died or stalled") == 0 &&
             jnum(d, "attempts") == 2 && jnum(d, "stalls") == 2;
    cJSON_Delete(a);
    RL_CHECK_MSG(ok, "dead letter after expired leases: %s", json);
    free(json);
    RL_CHECK_INT(0, claimable_now(st));
    check_state(st, "c1", "idle");
}

/* Issue 9: three successive owners die (max.attempts 3): worker deaths are
 * stalls, not attempts, so the batch is still retried on failures after
 * them, and dead-lettered only once max.attempts failures happened. */
static void test_expired_leases_spend_no_attempt(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(200);
    g_pol.max_attempts = 2;
    g_pol.max_stalls = 5;
    g_pol.backoff_base_ms = TS(50);
    enq(st, "c1", "a");
    int rec, dead;
    char bid[RUNLANE_ID_MAX] = "";
    for (int attempt = 1; attempt <= 3; attempt++) {
        rl_claim_t c = wait_claim(st, "w", 2000);
        RL_CHECK_INT(attempt, c.attempt); /* each delivery is attempt + 1 */
        if (attempt == 1) rl_strlcpy(bid, c.batch_id, sizeof(bid));
        RL_CHECK_STR(bid, c.batch_id);
        rl_claim_free(&c);
        sleep_ms(TS(350));
        RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
        RL_CHECK_INT(1, rec);
        RL_CHECK_INT(0, dead);
    }
    RL_CHECK_INT(0, dead_count(st));
    /* Failures still count: the first retries, the second (max.attempts)
     * dead-letters. */
    rl_claim_t c = wait_claim(st, "w", 2000);
    RL_CHECK_INT(4, c.attempt);
    fail_claim(st, &c, "boom1", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    c = wait_claim(st, "w", 2000);
    RL_CHECK_INT(5, c.attempt);
    fail_claim(st, &c, "boom2", 1, RL_FAIL_DEAD);
    rl_claim_free(&c);
    char *json = dead_list(st, 0, 0);
    cJSON *a = cJSON_Parse(json);
    cJSON *d = cJSON_GetArrayItem(a, 0);
    int ok = cJSON_GetArraySize(a) == 1 && jstr(d, "error") && strcmp(jstr(d, "error"), "boom2") == 0 &&
             jnum(d, "attempts") == 5 && jnum(d, "stalls") == 3;
    cJSON_Delete(a);
    RL_CHECK_MSG(ok, "dead letter after 3 stalls and 2 failures: %s", json);
    free(json);
    /* A retried dead letter starts with a fresh stall budget. */
    g_pol.max_stalls = 0;
    size_t n = 0;
    RL_CHECK_OK(st->ops->dead_retry(st, &g_pol, bid, &n));
    RL_CHECK_INT(1, (int)n);
    c = wait_claim(st, "w", 2000);
    RL_CHECK_INT(1, c.attempt);
    rl_claim_free(&c);
    RL_CHECK_INT(0, dead_count(st));
    sleep_ms(TS(350));
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(1, dead); /* max.stalls 0: the first expiry */
}

/* A dead-lettered batch's checkpoint (its provider turn may still run) is
 * handed to the conversation's next claims as settle_json, until a
 * checkpoint or an ack of a later batch. */
static void test_dead_letter_checkpoint_is_settled_by_the_next_claim(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(200);
    g_pol.max_stalls = 0;
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    RL_CHECK(c.settle_json == NULL);
    RL_CHECK_OK(st->ops->checkpoint(st, "c1", c.token, "{\"run_id\":\"r1\"}"));
    fail_claim(st, &c, "bad", 0, RL_FAIL_DEAD);
    rl_claim_free(&c);
    enq(st, "c1", "b");
    c = claim1(st, "w");
    CHECK_CONTENTS("b", c.messages_json);
    RL_CHECK(c.ckpt_json == NULL);
    RL_CHECK_STR("{\"run_id\":\"r1\"}", c.settle_json ? c.settle_json : "(null)");
    /* Dead again before any checkpoint: the first turn is still unsettled. */
    fail_claim(st, &c, "bad", 0, RL_FAIL_DEAD);
    rl_claim_free(&c);
    enq(st, "c1", "c");
    c = claim1(st, "w");
    RL_CHECK_STR("{\"run_id\":\"r1\"}", c.settle_json ? c.settle_json : "(null)");
    /* Its own checkpoint clears it; the recovered batch (worker died) is
     * dead-lettered (max.stalls 0) and its checkpoint is the new settle. */
    RL_CHECK_OK(st->ops->checkpoint(st, "c1", c.token, "{\"run_id\":\"r2\"}"));
    rl_claim_free(&c);
    sleep_ms(TS(350));
    int rec = 0, dead = 0;
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(1, dead);
    enq(st, "c1", "d");
    c = claim1(st, "w");
    RL_CHECK_STR("{\"run_id\":\"r2\"}", c.settle_json ? c.settle_json : "(null)");
    /* An ack clears it too. */
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    enq(st, "c1", "e");
    c = claim1(st, "w");
    RL_CHECK(c.settle_json == NULL);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
}

static void test_release_spends_no_attempt(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w1");
    RL_CHECK_OK(st->ops->release(st, &g_pol, "c1", c.token));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_t c2 = claim1(st, "w2"); /* due at once */
    RL_CHECK_INT(1, c2.attempt);
    RL_CHECK_STR(c.batch_id, c2.batch_id);
    CHECK_CONTENTS("a", c2.messages_json);
    rl_claim_free(&c);
    rl_claim_free(&c2);
}

static void test_defer_delays_without_attempt(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w1");
    RL_CHECK_OK(st->ops->defer(st, &g_pol, "c1", c.token, 500));
    RL_CHECK_INT(0, claimable_now(st));
    check_state(st, "c1", "backoff");
    rl_claim_t c2 = wait_claim(st, "w2", 3000);
    RL_CHECK_INT(1, c2.attempt);
    RL_CHECK_STR(c.batch_id, c2.batch_id);
    rl_claim_free(&c);
    rl_claim_free(&c2);
}

static void test_checkpoint_survives_reclaim(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w1");
    RL_CHECK(c.ckpt_json == NULL);
    RL_CHECK_OK(st->ops->checkpoint(st, "c1", c.token, "{\"run_id\":\"run_1\"}"));
    RL_CHECK_OK(st->ops->release(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    c = claim1(st, "w2");
    RL_CHECK_STR("{\"run_id\":\"run_1\"}", c.ckpt_json);
    RL_CHECK_OK(st->ops->checkpoint(st, "c1", c.token, "{\"run_id\":\"run_2\"}"));
    fail_claim(st, &c, "x", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    c = wait_claim(st, "w3", 3000);
    RL_CHECK_STR("{\"run_id\":\"run_2\"}", c.ckpt_json);
    enq(st, "c1", "b");
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    c = wait_claim(st, "w", 2000);
    RL_CHECK_MSG(c.ckpt_json == NULL, "a new batch has no checkpoint, got %s", c.ckpt_json);
    rl_claim_free(&c);
}

/* store.h, touch: "if pending is non-empty and there is no lease,
 * recomputes the due time" - with nothing pending, a batch waiting for its
 * retry must stay scheduled. */
static void test_touch_during_backoff_keeps_batch(void) {
    rl_store_t *st = fresh();
    g_pol.backoff_base_ms = TS(500);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    fail_claim(st, &c, "x", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    RL_CHECK_OK(st->ops->touch(st, &g_pol, "c1"));
    check_state(st, "c1", "backoff");
    c = wait_claim(st, "w", 3000);
    RL_CHECK_INT(2, c.attempt);
    CHECK_CONTENTS("a", c.messages_json);
    rl_claim_free(&c);
}

/* A batch in backoff is retried first and not before its backoff: a new
 * message neither cuts the backoff short nor joins the retried batch. */
static void test_message_during_backoff_waits_for_retry(void) {
    rl_store_t *st = fresh();
    g_pol.backoff_base_ms = TS(600);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    fail_claim(st, &c, "x", 1, RL_FAIL_RETRY);
    rl_claim_free(&c);
    enq(st, "c1", "b"); /* window 0: pending alone would be due now */
    RL_CHECK_MSG(claimable_now(st) == 0, "a new message made a batch in backoff due at once");
    c = wait_claim(st, "w", 4000);
    RL_CHECK_INT(2, c.attempt);
    CHECK_CONTENTS("a", c.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    c = wait_claim(st, "w", 2000);
    RL_CHECK_INT(1, c.attempt);
    CHECK_CONTENTS("b", c.messages_json);
    rl_claim_free(&c);
}

static void test_dead_retry_puts_messages_in_front(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    enq(st, "c1", "b");
    make_dead(st, "c1", "bad");
    enq(st, "c1", "c");
    enq(st, "c1", "d");
    char *json = dead_list(st, 0, 0);
    cJSON *arr = cJSON_Parse(json);
    free(json);
    char id[RUNLANE_ID_MAX];
    snprintf(id, sizeof(id), "%s", jstr(cJSON_GetArrayItem(arr, 0), "id") ? jstr(cJSON_GetArrayItem(arr, 0), "id") : "");
    cJSON_Delete(arr);
    RL_CHECK(id[0] != '\0');
    /* c and d are due (window 0) but not claimed yet */
    size_t count = 99;
    RL_CHECK_OK(st->ops->dead_retry(st, &g_pol, id, &count));
    RL_CHECK_INT(1, count);
    RL_CHECK_INT(0, dead_count(st));
    check_status_num(st, "c1", "pending", 4);
    rl_claim_t c = claim1(st, "w");
    CHECK_CONTENTS("a|b|c|d", c.messages_json);
    RL_CHECK_INT(1, c.attempt);
    rl_claim_free(&c);
    count = 99;
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->dead_retry(st, &g_pol, id, &count));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->dead_retry(st, &g_pol, "b-no-such-id", NULL));
}

static void test_dead_retry_all_keeps_order(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a1");
    make_dead(st, "c1", "e1");
    enq(st, "c1", "a2");
    make_dead(st, "c1", "e2");
    enq(st, "c2", "z1");
    make_dead(st, "c2", "e3");
    enq(st, "c1", "a3");
    RL_CHECK_INT(3, dead_count(st));
    size_t count = 0;
    RL_CHECK_OK(st->ops->dead_retry(st, &g_pol, NULL, &count));
    RL_CHECK_INT(3, count);
    RL_CHECK_INT(0, dead_count(st));
    int n;
    rl_claim_t *cl = claim_n(st, "w", 10, &n);
    RL_CHECK_INT(2, n);
    for (int i = 0; i < n; i++) {
        if (strcmp(cl[i].conversation_id, "c1") == 0)
            CHECK_CONTENTS("a1|a2|a3", cl[i].messages_json);
        else
            CHECK_CONTENTS("z1", cl[i].messages_json);
    }
    claims_free(cl, n);
}

static void test_dead_list_orders_and_pages(void) {
    rl_store_t *st = fresh();
    const char *convs[4] = {"d-one", "d-two", "d-three", "d-four"};
    for (int i = 0; i < 4; i++) {
        enq(st, convs[i], convs[i]);
        make_dead(st, convs[i], "e");
        sleep_ms(3); /* distinct dead_at */
    }
    char *json = dead_list(st, 0, 0);
    cJSON *a = cJSON_Parse(json);
    free(json);
    RL_CHECK_INT(4, cJSON_GetArraySize(a));
    for (int i = 0; i < 4; i++) {
        const char *cv = jstr(cJSON_GetArrayItem(a, i), "conversation_id");
        int ok = cv && strcmp(cv, convs[i]) == 0;
        if (!ok) cJSON_Delete(a);
        RL_CHECK_MSG(ok, "dead letter %d: expected %s, got %s", i, convs[i], cv ? cv : "(none)");
    }
    cJSON_Delete(a);
    json = dead_list(st, 1, 2);
    a = cJSON_Parse(json);
    free(json);
    int ok = cJSON_GetArraySize(a) == 2 &&
             strcmp(jstr(cJSON_GetArrayItem(a, 0), "conversation_id"), "d-two") == 0 &&
             strcmp(jstr(cJSON_GetArrayItem(a, 1), "conversation_id"), "d-three") == 0;
    cJSON_Delete(a);
    RL_CHECK_MSG(ok, "dead_list(1, 2) should be d-two, d-three");
    json = dead_list(st, 10, 5);
    RL_CHECK_STR("[]", json);
    free(json);
}

static void test_dead_purge_one_and_all(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    make_dead(st, "c1", "e");
    enq(st, "c2", "b");
    make_dead(st, "c2", "e");
    enq(st, "c3", "c");
    make_dead(st, "c3", "e");
    char *json = dead_list(st, 0, 0);
    cJSON *a = cJSON_Parse(json);
    free(json);
    char id[RUNLANE_ID_MAX];
    snprintf(id, sizeof(id), "%s", jstr(cJSON_GetArrayItem(a, 1), "id"));
    cJSON_Delete(a);
    size_t count = 0;
    RL_CHECK_OK(st->ops->dead_purge(st, id, &count));
    RL_CHECK_INT(1, count);
    RL_CHECK_INT(2, dead_count(st));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->dead_purge(st, id, &count));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->dead_purge(st, "nope", &count));
    count = 0;
    RL_CHECK_OK(st->ops->dead_purge(st, NULL, &count));
    RL_CHECK_INT(2, count);
    json = dead_list(st, 0, 0);
    RL_CHECK_STR("[]", json);
    free(json);
    check_status_num(st, NULL, "dead", 0);
    count = 9;
    RL_CHECK_OK(st->ops->dead_purge(st, NULL, &count));
    RL_CHECK_INT(0, count);
}

static void test_status_totals_and_conversation(void) {
    rl_store_t *st = fresh();
    g_pol.window_ms = TS(20000);
    g_pol.max_wait_ms = TS(20000);
    g_pol.max_messages = 2;
    {
        cJSON *j = status_of(st, NULL);
        const char *keys[] = {"pending", "ready", "inflight", "dead", "conversations",
                              "enqueued", "acked", "failed", "dead_lettered", "recovered"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            long long v = jnum(j, keys[i]);
            if (v != 0) cJSON_Delete(j);
            RL_CHECK_MSG(v == 0, "empty store: status.%s expected 0, got %lld", keys[i], v);
        }
        cJSON_Delete(j);
    }
    enq(st, "c1", "a");
    enq(st, "c1", "b"); /* max_messages: due now */
    enq(st, "c2", "x"); /* waiting */
    check_status_num(st, NULL, "pending", 3);
    check_status_num(st, NULL, "ready", 2);
    check_status_num(st, NULL, "inflight", 0);
    check_status_num(st, NULL, "conversations", 2);
    check_status_num(st, NULL, "enqueued", 3);
    check_state(st, "c1", "ready");
    check_state(st, "c2", "waiting");
    {
        cJSON *j = status_of(st, "c2");
        int ok = jstr(j, "conversation_id") && strcmp(jstr(j, "conversation_id"), "c2") == 0 &&
                 jnum(j, "pending") == 1 && jnum(j, "inflight") == 0 && jnum(j, "due_ms") > 0;
        cJSON_Delete(j);
        RL_CHECK_MSG(ok, "status(c2) of a waiting conversation");
    }
    rl_claim_t c = claim1(st, "worker-7");
    RL_CHECK_STR("c1", c.conversation_id);
    check_status_num(st, NULL, "pending", 1);
    check_status_num(st, NULL, "ready", 1);
    check_status_num(st, NULL, "inflight", 1);
    {
        cJSON *j = status_of(st, "c1");
        int ok = jstr(j, "state") && strcmp(jstr(j, "state"), "leased") == 0 &&
                 jstr(j, "owner") && strcmp(jstr(j, "owner"), "worker-7") == 0 &&
                 jstr(j, "batch_id") && strcmp(jstr(j, "batch_id"), c.batch_id) == 0 &&
                 jnum(j, "lease_expires_ms") == c.lease_until_ms && jnum(j, "attempts") == 1 &&
                 jnum(j, "inflight") == 2 && jnum(j, "pending") == 0;
        char *txt = cJSON_PrintUnformatted(j);
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", txt ? txt : "");
        free(txt);
        cJSON_Delete(j);
        RL_CHECK_MSG(ok, "status(c1) of a leased conversation: %s", copy);
    }
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    check_status_num(st, NULL, "acked", 1);
    check_status_num(st, NULL, "inflight", 0);
    check_status_num(st, NULL, "conversations", 1);
    check_state(st, "c1", "idle");
    check_state(st, "never-seen", "idle");
    check_status_num(st, "never-seen", "pending", 0);
    check_status_num(st, "never-seen", "inflight", 0);
    enq(st, "c3", "p");
    enq(st, "c3", "q");
    c = claim1(st, "w");
    fail_claim(st, &c, "no", 0, RL_FAIL_DEAD);
    rl_claim_free(&c);
    check_status_num(st, NULL, "failed", 1);
    check_status_num(st, NULL, "dead_lettered", 1);
    check_status_num(st, NULL, "dead", 1);
    check_status_num(st, NULL, "pending", 1);
    check_status_num(st, NULL, "enqueued", 5);
    {
        cJSON *j = status_of(st, "c3");
        int ok = jstr(j, "last_error") && strcmp(jstr(j, "last_error"), "no") == 0;
        cJSON_Delete(j);
        RL_CHECK_MSG(ok, "status(c3).last_error after a dead letter should be \"no\"");
    }
}

static void test_conversation_ids_cannot_collide(void) {
    rl_store_t *st = fresh();
    static const char *ids[] = {
        "a", "a:b", "a:b:c", "a:", ":a", "{a}", "{a", "a}", "{", "}", "{}", "a b", " a",
        "h\xc3\xa9llo", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xf0\x9f\x98\x80:{0}:meta:x",
        "pending:a", "meta", "x:{1}:ready", "1:a:k", "idem:1:a",
    };
    size_t n = sizeof(ids) / sizeof(ids[0]);
    for (size_t i = 0; i < n; i++) {
        RL_CHECK_INT(0, enq_x(st, ids[i], ids[i], "k", NULL, NULL));
        RL_CHECK_INT(0, enq_x(st, ids[i], ids[i], "k:x", NULL, NULL));
    }
    /* length-prefixed idempotency: conv "a" + key "b:c" vs conv "a:b" + key "c" */
    RL_CHECK_INT(0, enq_x(st, "a", "a", "b:c", NULL, NULL));
    RL_CHECK_INT(0, enq_x(st, "a:b", "a:b", "c", NULL, NULL));
    RL_CHECK_INT(1, enq_x(st, "a", "dup", "b:c", NULL, NULL));
    for (size_t i = 0; i < n; i++) {
        size_t want = (strcmp(ids[i], "a") == 0 || strcmp(ids[i], "a:b") == 0) ? 3 : 2;
        check_status_num(st, ids[i], "pending", (long long)want);
    }
    check_status_num(st, NULL, "conversations", (long long)n);
    int got;
    rl_claim_t *cl = claim_n(st, "w", 100, &got);
    RL_CHECK_INT((long long)n, got);
    for (int i = 0; i < got; i++) {
        char want[600];
        int extra = strcmp(cl[i].conversation_id, "a") == 0 || strcmp(cl[i].conversation_id, "a:b") == 0;
        snprintf(want, sizeof(want), "%s|%s%s%s", cl[i].conversation_id, cl[i].conversation_id,
                 extra ? "|" : "", extra ? cl[i].conversation_id : "");
        CHECK_CONTENTS(want, cl[i].messages_json);
        for (int k = 0; k < i; k++) RL_CHECK(strcmp(cl[i].conversation_id, cl[k].conversation_id) != 0);
    }
    for (int i = 0; i < got; i++) RL_CHECK_OK(st->ops->ack(st, &g_pol, cl[i].conversation_id, cl[i].token));
    claims_free(cl, got);
    check_status_num(st, NULL, "conversations", 0);
    check_status_num(st, NULL, "pending", 0);
}

static void test_enqueue_many(void) {
    rl_store_t *st = fresh();
    const char *convs[5] = {"m1", "m2", "m1", "m3", "m1"};
    const char *contents_[5] = {"a", "x", "b", "y", "b again"};
    const char *ikeys[5] = {NULL, "kx", "kb", NULL, "kb"};
    char *tails[5];
    int64_t bytes[5];
    for (int i = 0; i < 5; i++) {
        tails[i] = tail_of(contents_[i], NULL);
        bytes[i] = (int64_t)strlen(contents_[i]);
    }
    char ids[5][RUNLANE_ID_MAX];
    int dups[5] = {-1, -1, -1, -1, -1};
    int rc = st->ops->enqueue_many(st, &g_pol, 5, convs, (const char *const *)tails, bytes, ikeys,
                                   ids, dups);
    for (int i = 0; i < 5; i++) free(tails[i]);
    RL_CHECK_MSG(rc == RUNLANE_OK, "enqueue_many returned %d: %s", rc, errmsg());
    RL_CHECK_INT(0, dups[0]);
    RL_CHECK_INT(0, dups[1]);
    RL_CHECK_INT(0, dups[2]);
    RL_CHECK_INT(0, dups[3]);
    RL_CHECK_INT(1, dups[4]);
    RL_CHECK_STR(ids[2], ids[4]);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < i; k++) RL_CHECK(strcmp(ids[i], ids[k]) != 0);
    int n;
    rl_claim_t *cl = claim_n(st, "w", 10, &n);
    RL_CHECK_INT(3, n);
    for (int i = 0; i < n; i++) {
        const char *cv = cl[i].conversation_id;
        const char *want = strcmp(cv, "m1") == 0 ? "a|b" : strcmp(cv, "m2") == 0 ? "x" : "y";
        CHECK_CONTENTS(want, cl[i].messages_json);
    }
    claims_free(cl, n);
    /* a duplicate through the single-message path too */
    char id[RUNLANE_ID_MAX];
    RL_CHECK_INT(1, enq_x(st, "m2", "x", "kx", NULL, id));
    RL_CHECK_STR(ids[1], id);
}

static void test_next_due_reports_earliest(void) {
    rl_store_t *st = fresh();
    int64_t due = 0, now = 0;
    RL_CHECK_OK(st->ops->next_due(st, &due, &now));
    RL_CHECK_MSG(due == INT64_MAX, "empty store: next_due %lld", (long long)due);
    RL_CHECK(now > 0);
    g_pol.window_ms = TS(5000);
    enq(st, "late", "x");
    g_pol.window_ms = TS(300);
    enq(st, "early", "y");
    RL_CHECK_OK(st->ops->next_due(st, &due, &now));
    RL_CHECK_MSG(due > now && due <= now + TS(300), "next_due %lld should be within the short window of %lld",
                 (long long)due, (long long)now);
}

/* ---- busy.policy=interrupt: pending counts and extend_batch ---- */

/* Renews one claim; returns ok, *pending receives the pending count. */
static int renew1(rl_store_t *st, rl_claim_t *c, int64_t *pending) {
    int ok = -1;
    *pending = -1;
    RL_CHECK_OK(st->ops->renew(st, &g_pol, c, 1, &ok, pending));
    RL_CHECK(ok == 0 || ok == 1);
    return ok;
}

static void test_renew_reports_pending(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    enq(st, "c2", "x");
    rl_claim_t c = claim1(st, "w");
    rl_claim_t d = claim1(st, "w");
    if (strcmp(c.conversation_id, "c1") != 0) {
        rl_claim_t t = c;
        c = d;
        d = t;
    }
    int64_t pending;
    RL_CHECK_INT(1, renew1(st, &c, &pending));
    RL_CHECK_INT(0, pending);
    enq(st, "c1", "b");
    enq(st, "c1", "c");
    /* several at once: per claim, and 0 for a stale one */
    rl_claim_t three[3] = {c, d, c};
    strcpy(three[2].token, "999999999");
    int oks[3] = {-1, -1, -1};
    int64_t pend[3] = {-1, -1, -1};
    RL_CHECK_OK(st->ops->renew(st, &g_pol, three, 3, oks, pend));
    RL_CHECK_INT(1, oks[0]);
    RL_CHECK_INT(2, pend[0]);
    RL_CHECK_INT(1, oks[1]);
    RL_CHECK_INT(0, pend[1]);
    RL_CHECK_INT(0, oks[2]);
    RL_CHECK_INT(0, pend[2]);
    /* the messages stayed pending: the batch is unchanged */
    check_status_num(st, "c1", "pending", 2);
    check_status_num(st, "c1", "inflight", 1);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    RL_CHECK_INT(0, renew1(st, &c, &pending));
    RL_CHECK_INT(0, pending);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c2", d.token));
    rl_claim_free(&c);
    rl_claim_free(&d);
}

static void test_extend_batch_merges_pending(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    enq(st, "c1", "b");
    enq(st, "c1", "c");
    check_status_num(st, NULL, "pending", 2);
    char *msgs = NULL;
    RL_CHECK_OK(st->ops->extend_batch(st, &g_pol, "c1", c.token, &msgs));
    CHECK_CONTENTS("a|b|c", msgs);
    free(msgs);
    /* same batch, same lease, same attempt; nothing pending */
    cJSON *j = status_of(st, "c1");
    int same = jstr(j, "batch_id") && strcmp(jstr(j, "batch_id"), c.batch_id) == 0;
    long long inflight = jnum(j, "inflight"), pending = jnum(j, "pending");
    long long attempts = jnum(j, "attempts");
    cJSON_Delete(j);
    RL_CHECK_MSG(same, "extend_batch changed the batch id");
    RL_CHECK_INT(3, inflight);
    RL_CHECK_INT(0, pending);
    RL_CHECK_INT(1, attempts);
    check_state(st, "c1", "leased");
    check_status_num(st, NULL, "pending", 0);
    int64_t pend;
    RL_CHECK_INT(1, renew1(st, &c, &pend));
    RL_CHECK_INT(0, pend);
    /* nothing pending: the batch as it is */
    RL_CHECK_OK(st->ops->extend_batch(st, &g_pol, "c1", c.token, &msgs));
    CHECK_CONTENTS("a|b|c", msgs);
    free(msgs);
    /* a stale token changes nothing */
    enq(st, "c1", "d");
    msgs = NULL;
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->extend_batch(st, &g_pol, "c1", "999999999", &msgs));
    RL_CHECK(msgs == NULL);
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->extend_batch(st, &g_pol, "nope", c.token, &msgs));
    check_status_num(st, "c1", "pending", 1);
    check_status_num(st, "c1", "inflight", 3);
    /* a retry delivers the extended batch */
    fail_claim(st, &c, "boom", 1, RL_FAIL_RETRY);
    rl_claim_t r = wait_claim(st, "w", 5000);
    RL_CHECK_STR(c.batch_id, r.batch_id);
    RL_CHECK_INT(2, r.attempt);
    CHECK_CONTENTS("a|b|c", r.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", r.token));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->extend_batch(st, &g_pol, "c1", r.token, &msgs));
    /* the message that arrived meanwhile makes the next batch */
    rl_claim_t n = claim1(st, "w");
    CHECK_CONTENTS("d", n.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", n.token));
    check_status_num(st, NULL, "pending", 0);
    check_status_num(st, NULL, "conversations", 0);
    rl_claim_free(&c);
    rl_claim_free(&r);
    rl_claim_free(&n);
}

static void test_extend_batch_respects_limits(void) {
    rl_store_t *st = fresh();
    g_pol.max_messages = 3;
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    enq(st, "c1", "b");
    enq(st, "c1", "c");
    enq(st, "c1", "d");
    char *msgs = NULL;
    RL_CHECK_OK(st->ops->extend_batch(st, &g_pol, "c1", c.token, &msgs));
    CHECK_CONTENTS("a|b|c", msgs);
    free(msgs);
    check_status_num(st, "c1", "pending", 1);
    int64_t pend;
    RL_CHECK_INT(1, renew1(st, &c, &pend));
    RL_CHECK_INT(1, pend);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    rl_claim_t n = claim1(st, "w");
    CHECK_CONTENTS("d", n.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", n.token));
    rl_claim_free(&n);
    /* bytes: "aa" + "bb" fit in 5, "cc" does not */
    g_pol.max_messages = 100;
    g_pol.max_bytes = 5;
    enq(st, "c2", "aa");
    c = claim1(st, "w");
    enq(st, "c2", "bb");
    enq(st, "c2", "cc");
    RL_CHECK_OK(st->ops->extend_batch(st, &g_pol, "c2", c.token, &msgs));
    CHECK_CONTENTS("aa|bb", msgs);
    free(msgs);
    check_status_num(st, "c2", "pending", 1);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c2", c.token));
    rl_claim_free(&c);
    n = claim1(st, "w");
    CHECK_CONTENTS("cc", n.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c2", n.token));
    rl_claim_free(&n);
    check_status_num(st, NULL, "pending", 0);
}

/* ---- unconfirmed replies ---- */

static rl_reply_t *reply_claim_n(rl_store_t *st, int max, int *n) {
    rl_reply_t *v = NULL;
    *n = -1;
    int rc = st->ops->reply_claim(st, &g_pol, max, &v, n);
    RL_CHECK_MSG(rc == RUNLANE_OK, "reply_claim returned %d: %s", rc, errmsg());
    RL_CHECK(*n >= 0 && *n <= max);
    RL_CHECK(*n == 0 || v != NULL);
    return v;
}

/* Replies claimable now (they are postponed by the look). */
static int replies_now(rl_store_t *st) {
    int n;
    rl_reply_t *v = reply_claim_n(st, 100, &n);
    rl_replies_free(v, n);
    return n;
}

/* Claims replies until `want` came (or fails after timeout_ms); returns
 * them (exactly `want`). */
static rl_reply_t *wait_replies(rl_store_t *st, int want, int timeout_ms) {
    int64_t end = rl_mono_ms() + TS(timeout_ms);
    rl_reply_t *all = calloc((size_t)want + 1, sizeof(*all));
    int have = 0;
    RL_CHECK(all != NULL);
    for (;;) {
        int n;
        rl_reply_t *v = reply_claim_n(st, want - have > 0 ? want - have : 1, &n);
        for (int i = 0; i < n; i++) {
            if (have < want) all[have++] = v[i];
            else free(v[i].json);
        }
        free(v);
        if (have == want) return all;
        RL_CHECK_MSG(rl_mono_ms() < end, "only %d of %d replies became due within %d ms", have,
                     want, timeout_ms);
        sleep_ms(20);
    }
}

/* Claims conv's only batch and acks it with a reply naming the batch. */
static void ack_with_reply(rl_store_t *st, const char *conv, char *bid_out) {
    enq(st, conv, "hi");
    rl_claim_t c = claim1(st, "w");
    RL_CHECK_STR(conv, c.conversation_id);
    char json[256];
    snprintf(json, sizeof(json), "{\"conversation_id\":\"%s\",\"batch_id\":\"%s\",\"reply\":\"r-%s\"}",
             conv, c.batch_id, conv);
    RL_CHECK_OK(st->ops->ack_reply(st, &g_pol, conv, c.token, c.batch_id, json));
    if (bid_out) strcpy(bid_out, c.batch_id);
    rl_claim_free(&c);
}

static void test_ack_reply_acks_and_keeps_reply(void) {
    rl_store_t *st = fresh();
    g_pol.reply_redeliver_ms = TS(300);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    /* the batch id names the conversation's partition */
    RL_CHECK_INT(rl_partition_of("c1", g_partitions), rl_batch_partition(c.batch_id, g_partitions));
    enq(st, "c1", "b"); /* arrives during the turn: the next batch */
    const char *json = "{\"reply\":\"hello \\\"you\\\"\",\"usage\":{\"total_tokens\":3}}";
    RL_CHECK_OK(st->ops->ack_reply(st, &g_pol, "c1", c.token, c.batch_id, json));
    /* acked like ack */
    check_status_num(st, NULL, "acked", 1);
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &g_pol, "c1", c.token));
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->ack_reply(st, &g_pol, "c1", c.token, c.batch_id, json));
    rl_claim_t n = claim1(st, "w");
    CHECK_CONTENTS("b", n.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", n.token));
    rl_claim_free(&n);
    /* not due before the redelivery time */
    RL_CHECK_INT(0, replies_now(st));
    rl_reply_t *v = wait_replies(st, 1, 5000);
    RL_CHECK_STR(c.batch_id, v[0].batch_id);
    RL_CHECK_STR(json, v[0].json);
    rl_replies_free(v, 1);
    /* taken: postponed by the redelivery time, for every claimer */
    rl_store_t *other = same();
    RL_CHECK_INT(0, replies_now(st));
    RL_CHECK_INT(0, replies_now(other));
    v = wait_replies(other, 1, 5000);
    RL_CHECK_STR(c.batch_id, v[0].batch_id);
    rl_replies_free(v, 1);
    /* confirmed: never again */
    RL_CHECK_OK(st->ops->reply_ack(st, c.batch_id));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, c.batch_id));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, other->ops->reply_ack(other, c.batch_id));
    sleep_ms(400);
    RL_CHECK_INT(0, replies_now(st));
    rl_claim_free(&c);
}

static void test_ack_reply_stale_stores_nothing(void) {
    rl_store_t *st = fresh();
    g_pol.reply_redeliver_ms = TS(100);
    enq(st, "c1", "a");
    rl_claim_t c = claim1(st, "w");
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->ack_reply(st, &g_pol, "c1", "999999999", c.batch_id, "{}"));
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack_reply(st, &g_pol, "c1", "", c.batch_id, "{}"));
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->ack_reply(st, &g_pol, "unknown", c.token, c.batch_id, "{}"));
    /* the current token with another batch's id: refused too */
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->ack_reply(st, &g_pol, "c1", c.token, "b1-0-999999", "{}"));
    check_state(st, "c1", "leased");
    check_status_num(st, "c1", "inflight", 1);
    check_status_num(st, NULL, "acked", 0);
    sleep_ms(200);
    RL_CHECK_INT(0, replies_now(st));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, c.batch_id));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, "b1-0-999999"));
    /* a lease lost to recovery: the old owner's reply is refused */
    g_pol.lease_ms = TS(100);
    RL_CHECK_OK(st->ops->release(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
    c = claim1(st, "w1");
    sleep_ms(150);
    int rec = 0, dead = 0;
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK_INT(1, rec);
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->ack_reply(st, &g_pol, "c1", c.token, c.batch_id, "{}"));
    rl_claim_t d = claim1(st, "w2");
    RL_CHECK_STR(c.batch_id, d.batch_id);
    RL_CHECK_OK(st->ops->ack_reply(st, &g_pol, "c1", d.token, d.batch_id, "{\"w\":2}"));
    rl_reply_t *v = wait_replies(st, 1, 5000);
    RL_CHECK_STR("{\"w\":2}", v[0].json);
    rl_replies_free(v, 1);
    RL_CHECK_OK(st->ops->reply_ack(st, d.batch_id));
    rl_claim_free(&c);
    rl_claim_free(&d);
}

static void test_reply_claim_takes_due_up_to_max(void) {
    rl_store_t *st = fresh();
    g_pol.reply_redeliver_ms = TS(200);
    char bids[6][RUNLANE_ID_MAX];
    const char *convs[6] = {"r0", "r1", "r2", "r3", "r4", "r5"};
    for (int i = 0; i < 6; i++) ack_with_reply(st, convs[i], bids[i]);
    RL_CHECK_INT(0, replies_now(st));
    sleep_ms(300);
    /* two claimers split them: none twice, none lost */
    rl_store_t *other = same();
    int na, nb, nc;
    rl_reply_t *a = reply_claim_n(st, 4, &na);
    rl_reply_t *b = reply_claim_n(other, 4, &nb);
    rl_reply_t *c = reply_claim_n(st, 4, &nc);
    RL_CHECK_INT(4, na);
    RL_CHECK_INT(2, nb);
    RL_CHECK_INT(0, nc);
    int seen[6] = {0};
    for (int k = 0; k < na + nb; k++) {
        const rl_reply_t *r = k < na ? &a[k] : &b[k - na];
        int found = 0;
        for (int i = 0; i < 6; i++)
            if (strcmp(r->batch_id, bids[i]) == 0) {
                seen[i]++;
                found = 1;
                char want[64];
                snprintf(want, sizeof(want), "\"reply\":\"r-%s\"", convs[i]);
                RL_CHECK_MSG(strstr(r->json, want) != NULL, "reply of %s: %s", convs[i], r->json);
            }
        RL_CHECK_MSG(found, "unknown batch id %s", r->batch_id);
    }
    for (int i = 0; i < 6; i++) RL_CHECK_MSG(seen[i] == 1, "reply %d seen %d times", i, seen[i]);
    rl_replies_free(a, na);
    rl_replies_free(b, nb);
    rl_replies_free(c, nc);
    /* confirm some; only the others come back */
    for (int i = 0; i < 4; i++) RL_CHECK_OK(other->ops->reply_ack(other, bids[i]));
    rl_reply_t *v = wait_replies(st, 2, 5000);
    RL_CHECK(strcmp(v[0].batch_id, bids[4]) == 0 || strcmp(v[0].batch_id, bids[5]) == 0);
    RL_CHECK(strcmp(v[1].batch_id, bids[4]) == 0 || strcmp(v[1].batch_id, bids[5]) == 0);
    RL_CHECK(strcmp(v[0].batch_id, v[1].batch_id) != 0);
    rl_replies_free(v, 2);
    RL_CHECK_INT(0, replies_now(st));
    int n;
    v = reply_claim_n(st, 0, &n);
    RL_CHECK_INT(0, n);
    RL_CHECK_OK(st->ops->reply_ack(st, bids[4]));
    RL_CHECK_OK(st->ops->reply_ack(st, bids[5]));
}

static void test_reply_expires_after_ttl(void) {
    rl_store_t *st = fresh();
    g_pol.reply_redeliver_ms = TS(100);
    g_pol.reply_ttl_ms = TS(500);
    char bid[RUNLANE_ID_MAX], bid2[RUNLANE_ID_MAX];
    ack_with_reply(st, "t1", bid);
    ack_with_reply(st, "t2", bid2);
    rl_reply_t *v = wait_replies(st, 2, 5000);
    rl_replies_free(v, 2);
    sleep_ms(600);
    /* past the ttl: dropped, whether claimed or confirmed */
    RL_CHECK_INT(0, replies_now(st));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, bid));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, bid2));
}

static void test_reply_ack_unknown_ids(void) {
    rl_store_t *st = fresh();
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, "nope"));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, ""));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, "b1-999-1"));
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, st->ops->reply_ack(st, "b1-0-1x"));
    RL_CHECK_MSG(strstr(errmsg(), "b1-0-1x") != NULL, "the message names the id: %s", errmsg());
    RL_CHECK_INT(-1, rl_batch_partition("b1-3-7", 3));
    RL_CHECK_INT(2, rl_batch_partition("b1-2-7", 3));
    RL_CHECK_INT(0, rl_batch_partition("b1700000000000-0-12", 1));
    RL_CHECK_INT(-1, rl_batch_partition("b1-0-", 1));
    RL_CHECK_INT(-1, rl_batch_partition("m1-0-1", 1));
    RL_CHECK_INT(-1, rl_batch_partition(NULL, 1));
}

/* ------------------------------------------------------------------ */
/* the shared requests-per-minute bucket (rate_take)                  */
/* ------------------------------------------------------------------ */

static int64_t take(rl_store_t *st, int64_t rpm) {
    int64_t wait = -1;
    RL_CHECK_MSG(st->ops->rate_take(st, rpm, &wait) == RUNLANE_OK, "rate_take: %s", errmsg());
    RL_CHECK_MSG(wait >= 0, "rate_take gave wait %lld", (long long)wait);
    return wait;
}

/* Takes until the bucket asks to wait (alternating over n handles);
 * returns how many were taken, *wait_out the wait asked, *elapsed_out how
 * long it took (refills meanwhile are allowed for). */
static int take_until_wait(rl_store_t **sts, int n, int64_t rpm, int64_t *wait_out,
                           int64_t *elapsed_out) {
    int64_t t0 = rl_mono_ms();
    int taken = 0;
    for (;;) {
        int64_t w = take(sts[taken % n], rpm);
        if (w > 0) {
            *wait_out = w;
            break;
        }
        taken++;
        RL_CHECK_MSG(taken < 100000, "the bucket never asks to wait");
    }
    *elapsed_out = rl_mono_ms() - t0;
    return taken;
}

/* The burst of rpm is rpm/60 (at least 1): rpm=60 gives 1 take, then asks
 * to wait ~1000 ms; once that has passed, one more take. */
/* conv_map: a key's provider conversation, recorded once under the lease */
static char *map_get(rl_store_t *st, const char *conv) {
    char *v = NULL;
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_GET, conv, NULL, NULL, &v));
    return v;
}

static void check_map(rl_store_t *st, const char *conv, const char *want) {
    char *v = map_get(st, conv);
    if (want) RL_CHECK_STR(want, v ? v : "(none)");
    else RL_CHECK_MSG(v == NULL, "expected no mapping of %s, got %s", conv, v);
    free(v);
}

static void test_conv_map_records_once_under_the_lease(void) {
    rl_store_t *st = fresh();
    g_pol.lease_ms = TS(300);
    char *out = NULL;
    check_map(st, "chat-42", NULL);
    /* no lease: nobody may record */
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->conv_map(st, RL_MAP_RECORD, "chat-42", "1", "conv_x", &out));
    RL_CHECK(out == NULL);
    check_map(st, "chat-42", NULL);
    enq(st, "chat-42", "a");
    rl_claim_t c = claim1(st, "w1");
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 st->ops->conv_map(st, RL_MAP_RECORD, "chat-42", "999999999", "conv_x", &out));
    check_map(st, "chat-42", NULL);
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_RECORD, "chat-42", c.token, "conv_A", &out));
    RL_CHECK_STR("conv_A", out);
    free(out);
    /* a second record never replaces the first: it returns the first */
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_RECORD, "chat-42", c.token, "conv_B", &out));
    RL_CHECK_STR("conv_A", out);
    free(out);
    rl_store_t *other = same();
    check_map(other, "chat-42", "conv_A");
    check_map(other, "chat-4", NULL);
    check_map(other, "chat-42 ", NULL);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "chat-42", c.token));
    /* a worker whose lease expired (it died or stalled) is fenced off */
    enq(st, "k2", "b");
    rl_claim_t d = claim1(st, "w1");
    sleep_ms(TS(500));
    int rec = -1, dead = -1;
    RL_CHECK_OK(st->ops->recover(st, &g_pol, &rec, &dead));
    RL_CHECK(rec >= 1);
    RL_CHECK_INT(RUNLANE_ERR_STALE,
                 other->ops->conv_map(other, RL_MAP_RECORD, "k2", d.token, "conv_old", &out));
    rl_claim_t d2 = claim1(other, "w2");
    RL_CHECK_STR("k2", d2.conversation_id);
    RL_CHECK_OK(other->ops->conv_map(other, RL_MAP_RECORD, "k2", d2.token, "conv_new", &out));
    RL_CHECK_STR("conv_new", out);
    free(out);
    check_map(st, "k2", "conv_new");
    RL_CHECK_OK(other->ops->ack(other, &g_pol, "k2", d2.token));
    /* the mapping outlives the turn */
    check_map(st, "k2", "conv_new");
    rl_claim_free(&c);
    rl_claim_free(&d);
    rl_claim_free(&d2);
}

static void test_conv_map_set_and_forget(void) {
    rl_store_t *st = fresh();
    char *out = (char *)"x";
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_SET, "+15551234567", NULL, "thread_1", &out));
    RL_CHECK(out == NULL);
    check_map(st, "+15551234567", "thread_1");
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_SET, "+15551234567", NULL, "thread_2", &out));
    RL_CHECK_STR("thread_1", out);
    free(out);
    rl_store_t *other = same();
    check_map(other, "+15551234567", "thread_2");
    /* a lease holder's record does not replace an imported mapping */
    enq(st, "+15551234567", "a");
    rl_claim_t c = claim1(st, "w");
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_RECORD, "+15551234567", c.token, "thread_3", &out));
    RL_CHECK_STR("thread_2", out);
    free(out);
    RL_CHECK_OK(other->ops->conv_map(other, RL_MAP_FORGET, "+15551234567", NULL, NULL, &out));
    RL_CHECK_STR("thread_2", out);
    free(out);
    check_map(st, "+15551234567", NULL);
    RL_CHECK_OK(other->ops->conv_map(other, RL_MAP_FORGET, "+15551234567", NULL, NULL, &out));
    RL_CHECK(out == NULL);
    /* forgotten: the next record wins again */
    RL_CHECK_OK(st->ops->conv_map(st, RL_MAP_RECORD, "+15551234567", c.token, "thread_4", NULL));
    check_map(other, "+15551234567", "thread_4");
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "+15551234567", c.token));
    rl_claim_free(&c);
}

static void test_rate_bucket_rpm60_waits_a_second_and_refills(void) {
    rl_store_t *st = fresh();
    RL_CHECK_INT(0, take(st, 60));
    int64_t w = take(st, 60);
    RL_CHECK_MSG(w >= 900 && w <= 1001, "rpm=60 after the burst: wait %lld ms, want ~1000",
                 (long long)w);
    /* asking again takes nothing: the wait only shrinks */
    int64_t w2 = take(st, 60);
    RL_CHECK_MSG(w2 > 0 && w2 <= w, "asked again: wait %lld ms after %lld", (long long)w2,
                 (long long)w);
    /* The store's own wait, not a test duration: not time-scaled. */
    struct timespec ts = {(time_t)((w2 + 20) / 1000), (long)((w2 + 20) % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    RL_CHECK_INT(0, take(st, 60)); /* refilled */
    w = take(st, 60);
    RL_CHECK_MSG(w >= 900 && w <= 1001, "after the refill: wait %lld ms", (long long)w);
}

/* rpm=3600: a burst of 60, then a token every ~17 ms. */
static void test_rate_bucket_burst_is_one_second_of_rpm(void) {
    rl_store_t *st = fresh();
    int64_t w = 0, el = 0;
    int n = take_until_wait(&st, 1, 3600, &w, &el);
    int most = 60 + (int)(el * 3600 / 60000) + 1;
    RL_CHECK_MSG(n >= 60 && n <= most, "rpm=3600: %d takes in %lld ms (want 60..%d)", n,
                 (long long)el, most);
    RL_CHECK_MSG(w >= 1 && w <= 18, "rpm=3600: wait %lld ms, want <= 17", (long long)w);
    /* a small rpm still allows one request */
    rl_store_t *st2 = fresh();
    RL_CHECK_INT(0, take(st2, 1));
    w = take(st2, 1);
    RL_CHECK_MSG(w > 59000 && w <= 60001, "rpm=1: wait %lld ms, want ~60000", (long long)w);
    /* no limit */
    RL_CHECK_INT(0, take(st2, 0));
    RL_CHECK_INT(0, take(st2, -5));
}

/* Two handles on one queue ("processes") share one bucket; another queue
 * has its own. */
static void test_rate_bucket_is_shared_by_handles(void) {
    rl_store_t *st[2];
    st[0] = fresh();
    st[1] = same();
    int64_t w = 0, el = 0;
    int n = take_until_wait(st, 2, 600, &w, &el); /* burst 10, a token per 100 ms */
    int most = 10 + (int)(el * 600 / 60000) + 1;
    RL_CHECK_MSG(n >= 10 && n <= most, "two handles at rpm=600: %d takes in %lld ms (want 10..%d)",
                 n, (long long)el, most);
    RL_CHECK_MSG(w >= 1 && w <= 101, "rpm=600: wait %lld ms", (long long)w);
    /* both see the empty bucket */
    RL_CHECK(take(st[0], 600) > 0 || take(st[1], 600) > 0);
    /* another queue is not affected */
    rl_store_t *other = fresh();
    RL_CHECK_INT(0, take(other, 600));
}

/* ------------------------------------------------------------------ */
/* redis-only tests                                                   */
/* ------------------------------------------------------------------ */

/* host and port of RUNLANE_TEST_REDIS (redis://[auth@]host[:port][/db]) */
static void test_server(char *host, size_t hsize, int *port, int *db) {
    /* over TLS (tests/c/test_tls.c) the side connections use the same
     * server's plaintext port */
    const char *url = getenv("RUNLANE_TEST_REDIS_SIDE") ? getenv("RUNLANE_TEST_REDIS_SIDE") : g_redis_url;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@') at = q;
    if (at) p = at + 1;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    size_t hl = (size_t)((colon ? colon : end) - p);
    snprintf(host, hsize, "%.*s", (int)hl, p);
    *port = colon ? atoi(colon + 1) : 6379;
    *db = *end == '/' ? atoi(end + 1) : 0;
}

static redisContext *side_conn(void) {
    char host[128];
    int port, db;
    test_server(host, sizeof(host), &port, &db);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    RL_CHECK_MSG(c && !c->err, "side connection to %s:%d failed", host, port);
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        freeReplyObject(r);
    }
    return c;
}

static void side_cmd(const char *cmd) {
    redisContext *c = side_conn();
    redisReply *r = redisCommand(c, cmd);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    redisFree(c);
    RL_CHECK_MSG(ok, "side command %s failed", cmd);
}

static void test_redis_survives_script_flush(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    side_cmd("SCRIPT FLUSH");
    enq(st, "c1", "b"); /* NOSCRIPT: reloaded and retried */
    side_cmd("SCRIPT FLUSH");
    rl_claim_t c = claim1(st, "w"); /* peek and claim pipelined */
    CHECK_CONTENTS("a|b", c.messages_json);
    side_cmd("SCRIPT FLUSH");
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "c1", c.token));
    rl_claim_free(&c);
}

/* Kills the connection(s) of the store with key prefix `prefix` (named
 * runlane/<prefix>), leaving other clients of the server alone. */
static int kill_store_conn(const char *prefix) {
    char name[160];
    snprintf(name, sizeof(name), " name=runlane/%s ", prefix);
    redisContext *c = side_conn();
    redisReply *r = redisCommand(c, "CLIENT LIST TYPE normal");
    int killed = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        char *line = r->str;
        while (line && *line) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            long long id;
            if (strstr(line, name) && sscanf(line, "id=%lld", &id) == 1) {
                redisReply *k = redisCommand(c, "CLIENT KILL ID %lld", id);
                killed += k && k->type == REDIS_REPLY_INTEGER ? (int)k->integer : 0;
                freeReplyObject(k);
            }
            line = nl ? nl + 1 : NULL;
        }
    }
    freeReplyObject(r);
    redisFree(c);
    return killed;
}

static void test_redis_reconnects_after_kill(void) {
    rl_store_t *st = fresh();
    enq(st, "c1", "a");
    char prefix[128];
    redis_prefix(prefix, sizeof(prefix), g_ns);
    RL_CHECK_INT(1, kill_store_conn(prefix));
    int64_t end = rl_mono_ms() + 5000;
    int failures = 0, rc;
    char id[RUNLANE_ID_MAX];
    int dup;
    char *tail = tail_of("b", NULL);
    for (;;) {
        rc = st->ops->enqueue(st, &g_pol, "c1", tail, 1, "kb", id, &dup);
        if (rc == RUNLANE_OK) break;
        const runlane_error_t *e = runlane_error_last();
        if (rc != RUNLANE_ERR_STORE || !runlane_error_retriable(e) || rl_mono_ms() > end) {
            free(tail);
            RL_FAILF("after CLIENT KILL: enqueue returned %d (retriable %d): %s", rc,
                     runlane_error_retriable(e), runlane_error_message(e));
        }
        failures++;
        sleep_ms(30);
    }
    free(tail);
    RL_CHECK_MSG(failures <= 3, "reconnect took %d failed calls", failures);
    rl_claim_t c = claim1(st, "w");
    CHECK_CONTENTS("a|b", c.messages_json);
    rl_claim_free(&c);
}

/* A server that does not answer within redis.command.timeout.ms (here a
 * listener that never replies): the call fails retriable, naming the
 * timeout, without waiting longer. Recovery after a dropped connection is
 * test_redis_reconnects_after_kill. */
static void test_redis_command_timeout(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    RL_CHECK(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        RL_FAILF("cannot listen on loopback");
    }
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", (int)ntohs(sa.sin_port));
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.partitions = 1;
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = 300;
    int64_t t0 = rl_mono_ms();
    rl_store_t *st = rl_store_open(&o);
    int64_t took = rl_mono_ms() - t0;
    close(fd);
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL, "a server that never replies: open should fail");
    const runlane_error_t *e = runlane_error_last();
    RL_CHECK_MSG(runlane_error_code(e) == RUNLANE_ERR_STORE && runlane_error_retriable(e),
                 "expected a retriable RUNLANE_ERR_STORE, got %s: %s",
                 runlane_err2name(runlane_error_code(e)), runlane_error_message(e));
    RL_CHECK_MSG(strstr(runlane_error_message(e), "300 ms") != NULL,
                 "the message should name the timeout: %s", runlane_error_message(e));
    RL_CHECK_MSG(took < 2000, "open took %lld ms despite a 300 ms command timeout",
                 (long long)took);
}

static void test_redis_unreachable_is_retriable(void) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = "redis://127.0.0.1:1/0";
    o.partitions = 1;
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = 1000;
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK(st == NULL);
    const runlane_error_t *e = runlane_error_last();
    RL_CHECK_INT(RUNLANE_ERR_STORE, runlane_error_code(e));
    RL_CHECK_INT(1, runlane_error_retriable(e));
    RL_CHECK_MSG(strstr(runlane_error_message(e), "127.0.0.1:1") != NULL,
                 "message should name the server: %s", runlane_error_message(e));
}

static void check_open_fails(const char *url, const char *prefix, runlane_err_t code,
                             const char *must, const char *must_not) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.prefix = prefix;
    o.partitions = 1;
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = 1000;
    o.tls.ca_file = getenv("RUNLANE_TEST_REDIS_TLS_CA");
    rl_store_t *st = rl_store_open(&o);
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL, "opening %s should fail", must ? must : "the store");
    const char *msg = runlane_error_message(runlane_error_last());
    RL_CHECK_MSG(runlane_error_code(runlane_error_last()) == code, "expected %s, got %s: %s",
                 runlane_err2name(code), runlane_err2name(runlane_error_code(runlane_error_last())),
                 msg);
    if (must) RL_CHECK_MSG(strstr(msg, must) != NULL, "message lacks \"%s\": %s", must, msg);
    if (must_not) RL_CHECK_MSG(strstr(msg, must_not) == NULL, "message leaks \"%s\": %s", must_not, msg);
}

static void test_redis_url_and_auth_errors(void) {
    char host[128], url[300];
    int port, db;
    test_server(host, sizeof(host), &port, &db);
#ifndef RUNLANE_HAVE_HIREDIS_SSL
    check_open_fails("rediss://127.0.0.1:6380/0", NULL, RUNLANE_ERR_UNSUPPORTED,
                     "rediss:// needs hiredis built with TLS (hiredis_ssl); this build has none",
                     NULL);
#endif
    check_open_fails("redis://127.0.0.1:notaport/0", NULL, RUNLANE_ERR_INVALID_VALUE, "port", NULL);
    check_open_fails("redis://:pw-SECRET-1@127.0.0.1:99999/0", NULL, RUNLANE_ERR_INVALID_VALUE,
                     "port", "pw-SECRET-1");
    check_open_fails("redis://127.0.0.1:6379/zero", NULL, RUNLANE_ERR_INVALID_VALUE, "database", NULL);
    check_open_fails(g_redis_url, "bad{prefix}", RUNLANE_ERR_INVALID_VALUE, "key.prefix", NULL);
    /* password only, and user + password: refused by the server; the
     * message never carries the password */
    snprintf(url, sizeof(url), "redis://:pw-SECRET-2@%s:%d/%d", host, port, db);
    check_open_fails(url, NULL, RUNLANE_ERR_STORE, "AUTH", "pw-SECRET-2");
    snprintf(url, sizeof(url), "redis://nobody-%d:pw-SECRET-3@%s:%d/%d", (int)getpid(), host, port, db);
    check_open_fails(url, NULL, RUNLANE_ERR_STORE, "AUTH", "pw-SECRET-3");
    snprintf(url, sizeof(url), "redis://:**@%s:%d/%d", host, port, db); /* masking terminates */
    check_open_fails(url, NULL, RUNLANE_ERR_STORE, "AUTH", NULL);
    snprintf(url, sizeof(url), "redis://%s:%d/987654", host, port);
    check_open_fails(url, NULL, RUNLANE_ERR_STORE, "SELECT", NULL);
    /* redis://host alone (default port, db 0) parses; it may not connect */
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = "redis://127.0.0.1";
    o.partitions = 1;
    o.connect_timeout_ms = 500;
    rl_store_t *st = rl_store_open(&o);
    if (st)
        st->ops->destroy(st);
    else
        RL_CHECK_MSG(runlane_error_code(runlane_error_last()) == RUNLANE_ERR_STORE,
                     "redis://127.0.0.1 should parse: %s", errmsg());
}

/* Every key carries {partition} right after the prefix, and a
 * conversation's keys all live in its partition's slot; the one key that
 * is per queue, the rate bucket, is <prefix>:{rate}:bucket and expires. */
static void test_redis_keys_are_hash_tagged(void) {
    rl_store_t *st = fresh();
    RL_CHECK_INT(0, take(st, 60));
    enq(st, "other", "b");
    make_dead(st, "other", "e");
    ack_with_reply(st, "tag{x}:y", NULL); /* replies, reply_due */
    enq_x(st, "tag{x}:y", "a", "k", NULL, NULL);
    enq(st, "tag{x}:y", "c");
    char prefix[128], pat[160];
    redis_prefix(prefix, sizeof(prefix), g_ns);
    snprintf(pat, sizeof(pat), "%s:*", prefix);
    redisContext *c = side_conn();
    redisReply *r = redisCommand(c, "KEYS %s", pat);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 6;
    char bad[300] = "";
    int nrate = 0;
    for (size_t i = 0; ok && i < r->elements; i++) {
        const char *k = r->element[i]->str;
        size_t pl = strlen(prefix);
        int part = -1;
        if (strncmp(k, prefix, pl) == 0 && strcmp(k + pl, ":{rate}:bucket") == 0) {
            nrate++;
            continue;
        }
        if (strncmp(k, prefix, pl) != 0 || strncmp(k + pl, ":{", 2) != 0 ||
            sscanf(k + pl + 2, "%d}", &part) != 1 || part < 0 || part >= g_partitions) {
            snprintf(bad, sizeof(bad), "%s", k);
            ok = 0;
        } else if (strstr(k, "tag{x}:y") &&
                   part != rl_partition_of("tag{x}:y", g_partitions)) {
            snprintf(bad, sizeof(bad), "%s (wrong partition)", k);
            ok = 0;
        }
    }
    size_t nkeys = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
    freeReplyObject(r);
    char rkey[200];
    snprintf(rkey, sizeof(rkey), "%s:{rate}:bucket", prefix);
    redisReply *ttl = redisCommand(c, "PTTL %s", rkey);
    long long pttl = ttl && ttl->type == REDIS_REPLY_INTEGER ? ttl->integer : -100;
    freeReplyObject(ttl);
    redisFree(c);
    RL_CHECK_MSG(ok, "key layout: %zu keys, bad key \"%s\"", nkeys, bad);
    RL_CHECK_INT(1, nrate);
    RL_CHECK_MSG(pttl > 0 && pttl <= 2000, "%s: PTTL %lld, want <= 2000 (full again in 1 s)",
                 rkey, pttl);
}

/* A worker on a cluster (no wake connection: it polls) recovers a lease
 * that expires after its first look at the store found none. It used to
 * keep the "learnt by the next look at the heads" of wake mode, a look that
 * polling never makes: no live worker recovered a dead one's batches (seen
 * in the cluster chaos run as conversations stuck leased after a kill). */
static void test_cluster_worker_recovers_later_leases(void) {
    g_partitions = 12;
    rl_store_t *st = fresh();
    char prefix[128], err[512], lease[32];
    redis_prefix(prefix, sizeof(prefix), g_ns);
    snprintf(lease, sizeof(lease), "%d", (int)TS(400));
    const char *kv[] = {"store", g_redis_url, "key.prefix", prefix, "partitions", "12",
                        "batch.window.ms", "0", "lease.ms", lease, "worker.recover.ms", "50",
                        "worker.poll.ms", "20", "worker.concurrency", "1", NULL};
    runlane_conf_t *conf = runlane_conf_new();
    for (const char *const *k = kv; k[0]; k += 2)
        RL_CHECK_MSG(runlane_conf_set(conf, k[0], k[1], err, sizeof(err)) == RUNLANE_OK, "%s: %s",
                     k[0], err);
    runlane_t *w = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(w != NULL, "runlane_new: %s", err);
    if (!w) return;
    RL_CHECK_OK(runlane_start(w));
    /* its first looks: an empty store, no lease */
    for (int i = 0; i < 5; i++) runlane_event_destroy(runlane_poll(w, 20));
    /* W takes conversation a and holds it (renewed): full at concurrency 1,
     * so b below is left to the recovery */
    enq(st, "a", "x");
    char held[RUNLANE_ID_MAX] = "";
    for (int t = 0; t < 100 && !held[0]; t++) {
        runlane_event_t *ev = runlane_poll(w, (int)TS(50));
        if (ev && runlane_event_type(ev) == RUNLANE_EVENT_BATCH)
            snprintf(held, sizeof(held), "%s", runlane_event_batch_id(ev));
        runlane_event_destroy(ev);
    }
    RL_CHECK_MSG(held[0], "the worker got no batch for a");
    /* a dead worker's lease on b */
    enq(st, "b", "y");
    g_pol.lease_ms = TS(400);
    rl_claim_t *cl = NULL;
    int n = 0;
    RL_CHECK_OK(st->ops->claim(st, &g_pol, "ghost", 1, &cl, &n));
    RL_CHECK_INT(1, n);
    for (int i = 0; i < n; i++) rl_claim_free(&cl[i]);
    free(cl);
    int recovered = 0;
    char *json = NULL;
    for (int t = 0; t < 200 && !recovered; t++) {
        runlane_event_destroy(runlane_poll(w, (int)TS(50)));
        free(json);
        json = NULL;
        RL_CHECK_OK(st->ops->status(st, "b", &json));
        recovered = json && !strstr(json, "\"leased\"");
    }
    RL_CHECK_MSG(recovered, "the expired lease on b was never recovered: %s", json ? json : "");
    free(json);
    if (held[0]) RL_CHECK_OK(runlane_batch_ack(w, held, NULL));
    runlane_destroy(w);
}

/* On a cluster, 12 partitions land 4 per master of the 3. */
static void test_cluster_spread(void) {
    g_partitions = 12;
    rl_store_t *st = fresh();
    int per[8], nm = 0;
    RL_CHECK_INT(12, rl_store_redis_spread(st, per, 8, &nm));
    RL_CHECK_INT(3, nm);
    for (int m = 0; m < 3; m++) RL_CHECK_MSG(per[m] == 4, "master %d has %d partitions", m, per[m]);
    char *json = NULL;
    RL_CHECK_OK(st->ops->status(st, NULL, &json));
    RL_CHECK_MSG(json && strstr(json, "\"partitions_per_master\":[4,4,4]"), "status: %s", json ? json : "");
    free(json);
}

/* A side connection to a node of the private setup (port). */
static redisContext *node_conn(int port) {
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    RL_CHECK_MSG(c && !c->err, "side connection to node %d failed", port);
    return c;
}

/* The ports of the cluster's nodes (run_multi.sh's DIR/ports). */
static int node_ports(int *ports, int max) {
    const char *dir = getenv("RUNLANE_TEST_REDIS_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/ports", dir ? dir : ".");
    FILE *f = fopen(path, "r");
    RL_CHECK_MSG(f != NULL, "cannot read %s", path);
    int n = 0;
    while (n < max && fscanf(f, "%d", &ports[n]) == 1) n++;
    fclose(f);
    return n;
}

/* Port of the master owning `slot` (from CLUSTER SLOTS of node `via`). */
static int slot_owner(int via, int slot) {
    redisContext *c = node_conn(via);
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    int port = -1;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->element[0]->integer <= slot && slot <= e->element[1]->integer)
            port = (int)e->element[2]->element[1]->integer;
    }
    freeReplyObject(r);
    redisFree(c);
    return port;
}

static void node_cmd_ok(int port, const char *what, redisReply *r) {
    int ok = r && r->type != REDIS_REPLY_ERROR;
    char msg[200];
    snprintf(msg, sizeof(msg), "%s", r && r->type == REDIS_REPLY_ERROR ? r->str : "");
    freeReplyObject(r);
    RL_CHECK_MSG(ok, "node %d: %s failed: %s", port, what, msg);
}

/* The slot of an active partition migrates to another master mid-test
 * (CLUSTER SETSLOT MIGRATING/IMPORTING, MIGRATE of its keys, SETSLOT
 * NODE), as redis-cli --cluster reshard does: while the keys are moved
 * the store follows ASK, afterwards MOVED, and nothing is lost. */
static void test_cluster_moved_and_ask(void) {
    g_partitions = 3;
    rl_store_t *st = fresh();
    enq(st, "mig", "a");
    int part = rl_partition_of("mig", g_partitions);
    char tagkey[40];
    int tl = snprintf(tagkey, sizeof(tagkey), "{%s}", rl_store_redis_tag(st, part));
    int slot = rl_redis_key_slot(tagkey, (size_t)tl);
    int ports[6];
    int np = node_ports(ports, 6);
    RL_CHECK(np == 6);
    int src = slot_owner(ports[0], slot), dst = -1;
    RL_CHECK(src > 0);
    for (int i = 0; i < np && dst < 0; i++) {
        if (ports[i] == src) continue;
        int own = 0; /* another master: it owns some slot */
        for (int s = 0; s < RL_CLUSTER_SLOTS && !own; s += 64) own = slot_owner(ports[0], s) == ports[i];
        if (own) dst = ports[i];
    }
    RL_CHECK(dst > 0);
    redisContext *cs = node_conn(src), *cd = node_conn(dst);
    redisReply *r = redisCommand(cs, "CLUSTER MYID");
    char sid[64], did[64];
    snprintf(sid, sizeof(sid), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    r = redisCommand(cd, "CLUSTER MYID");
    snprintf(did, sizeof(did), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    node_cmd_ok(dst, "SETSLOT IMPORTING", redisCommand(cd, "CLUSTER SETSLOT %d IMPORTING %s", slot, sid));
    node_cmd_ok(src, "SETSLOT MIGRATING", redisCommand(cs, "CLUSTER SETSLOT %d MIGRATING %s", slot, did));
    for (int guard = 0; guard < 1000; guard++) {
        r = redisCommand(cs, "CLUSTER GETKEYSINSLOT %d 100", slot);
        size_t nk = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
        for (size_t i = 0; i < nk; i++)
            node_cmd_ok(src, "MIGRATE",
                        redisCommand(cs, "MIGRATE 127.0.0.1 %d %b 0 5000", dst, r->element[i]->str,
                                     r->element[i]->len));
        freeReplyObject(r);
        if (nk == 0) break;
    }
    long moved0, ask0, ref0, red0, moved, ask, ref, red;
    rl_store_redis_link_stats(st, &moved0, &ask0, &ref0, &red0);
    /* keys on dst, slot still migrating: src answers ASK. A one-key read
     * is served by dst after ASKING; a script whose keys are not all there
     * (new keys) gets TRYAGAIN from the importing node until the slot is
     * settled, which Redis answers every client: retriable, nothing run */
    int64_t due = 0, now = 0;
    RL_CHECK_OK(st->ops->next_due(st, &due, &now));
    RL_CHECK_MSG(due <= now, "the partition's conversation is not due through ASK");
    char id[RUNLANE_ID_MAX];
    int dup;
    char *tail = tail_of("b", NULL);
    int rc = st->ops->enqueue(st, &g_pol, "mig", tail, 1, "k-b", id, &dup);
    RL_CHECK_MSG(rc == RUNLANE_OK || (rc == RUNLANE_ERR_STORE && runlane_error_retriable(runlane_error_last()) &&
                                      strstr(errmsg(), "TRYAGAIN")),
                 "enqueue during the migration: %d %s", rc, errmsg());
    rl_store_redis_link_stats(st, &moved, &ask, &ref, &red);
    RL_CHECK_MSG(ask > ask0, "no ASK followed (ask %ld)", ask);
    for (int i = 0; i < np; i++) { /* the slot is dst's now, on every master */
        redisContext *c = node_conn(ports[i]);
        freeReplyObject(redisCommand(c, "CLUSTER SETSLOT %d NODE %s", slot, did));
        redisFree(c);
    }
    redisFree(cs);
    redisFree(cd);
    if (rc != RUNLANE_OK) rc = st->ops->enqueue(st, &g_pol, "mig", tail, 1, "k-b", id, &dup);
    free(tail);
    RL_CHECK_MSG(rc == RUNLANE_OK, "enqueue after the migration: %s", errmsg());
    enq(st, "mig", "c"); /* the store's map still says src: MOVED */
    rl_store_redis_link_stats(st, &moved, &ask, &ref, &red);
    RL_CHECK_MSG(moved > moved0, "no MOVED followed (moved %ld)", moved);
    rl_claim_t c = claim1(st, "w");
    CHECK_CONTENTS("a|b|c", c.messages_json);
    RL_CHECK_OK(st->ops->ack(st, &g_pol, "mig", c.token));
    rl_claim_free(&c);
}

/* ROLE of node `port`: 1 master, 0 replica (its master's port in *of). */
static int node_is_master(int port, int *of) {
    redisContext *c = node_conn(port);
    redisReply *r = redisCommand(c, "ROLE");
    int master = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                 r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    *of = !master && r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3 &&
                  r->element[2]->type == REDIS_REPLY_INTEGER
              ? (int)r->element[2]->integer
              : -1;
    freeReplyObject(r);
    redisFree(c);
    return master;
}


/* A store on g_redis_url with redis.wait.replicas=1 (a write returns once
 * a replica has it, within wait_ms), closed at the end of the run. */
static rl_store_t *open_waiting(const char *prefix, int partitions, int wait_ms) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = g_redis_url;
    o.prefix = prefix;
    o.partitions = partitions;
    o.connect_timeout_ms = 2000;
    o.command_timeout_ms = wait_ms + 1000;
    o.wait_replicas = 1;
    o.wait_timeout_ms = wait_ms;
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK_MSG(st != NULL, "open with redis.wait.replicas=1: %s", errmsg());
    RL_CHECK(g_nopen < MAX_OPEN);
    g_open[g_nopen++] = st;
    return st;
}
/* A client opened while a master is down, before its replica is
 * promoted: the master (the URL's first seed) is killed with kill -9 while
 * its replica is held back from the failover (cluster-replica-no-failover
 * yes; cluster-require-full-coverage no on the others, so that they go on
 * serving their own slots meanwhile, as they do with the defaults until
 * cluster-node-timeout flags the master failed). The store (and a client,
 * runlane_new) opens from the next seed; the healthy masters' partitions
 * work; the dead master's fail
 * retriable, naming it; once the replica may fail over they work again,
 * and the acknowledged messages are all there. Last: it kills a master. */
/* Concurrent runlane_enqueue calls while a master is down: each thread
 * enqueues ENQ_DOWN_EACH messages on one conversation. */
enum { ENQ_DOWN_THREADS = 8, ENQ_DOWN_EACH = 10 };
typedef struct {
    runlane_t *rl;
    const char *conv;
    pthread_t th;
    int ok, retriable, other;
} enq_down_t;

static void *enq_down_main(void *arg) {
    enq_down_t *t = arg;
    char id[RUNLANE_ID_MAX];
    for (int i = 0; i < ENQ_DOWN_EACH; i++) {
        runlane_err_t rc = runlane_enqueue(id, sizeof(id), NULL, t->rl, t->conv, "c", NULL);
        if (rc == RUNLANE_OK)
            t->ok++;
        else if (rc == RUNLANE_ERR_STORE && runlane_error_retriable(runlane_error_last()))
            t->retriable++;
        else
            t->other++;
    }
    return NULL;
}

/* A client (runlane_new) on the cluster, 12 partitions, window 0. */
static runlane_t *cluster_client(const char *prefix) {
    char err[512];
    const char *kv[] = {"store", g_redis_url, "key.prefix", prefix, "partitions", "12",
                        "batch.window.ms", "0", NULL};
    runlane_conf_t *conf = runlane_conf_new();
    for (const char *const *k = kv; k[0]; k += 2)
        RL_CHECK_MSG(runlane_conf_set(conf, k[0], k[1], err, sizeof(err)) == RUNLANE_OK, "%s: %s",
                     k[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(rl != NULL, "runlane_new while a master is down: %s", err);
    return rl;
}

static void test_cluster_open_while_master_down(void) {
    g_partitions = 12;
    reset_policy();
    int ports[6];
    RL_CHECK(node_ports(ports, 6) == 6);
    int dead = ports[0], of = -1, replica = -1;
    RL_CHECK_MSG(node_is_master(dead, &of), "node %d (the first seed) is not a master", dead);
    for (int i = 1; i < 6 && replica < 0; i++)
        if (!node_is_master(ports[i], &of) && of == dead) replica = ports[i];
    RL_CHECK_MSG(replica > 0, "no replica of the master %d", dead);
    /* a conversation on the doomed master, one on a healthy one */
    char dconv[32] = "", hconv[32] = "";
    rl_store_t *probe = open_ns(++g_ns);
    for (int i = 0; i < 1000 && (!dconv[0] || !hconv[0]); i++) {
        char conv[32], tagkey[40];
        snprintf(conv, sizeof(conv), "down-%d", i);
        int tl = snprintf(tagkey, sizeof(tagkey), "{%s}",
                          rl_store_redis_tag(probe, rl_partition_of(conv, g_partitions)));
        int owner = slot_owner(ports[1], rl_redis_key_slot(tagkey, (size_t)tl));
        if (owner == dead && !dconv[0]) rl_strlcpy(dconv, conv, sizeof(dconv));
        if (owner != dead && owner > 0 && !hconv[0]) rl_strlcpy(hconv, conv, sizeof(hconv));
    }
    RL_CHECK(dconv[0] && hconv[0]);
    /* a message on each, acknowledged once the replicas have it */
    char prefix[128];
    redis_prefix(prefix, sizeof(prefix), g_ns);
    rl_store_t *acked = open_waiting(prefix, g_partitions, 4000);
    enq(acked, dconv, "d1");
    enq(acked, hconv, "h1");

    for (int i = 0; i < 6; i++) {
        if (ports[i] == dead) continue;
        redisContext *c = node_conn(ports[i]);
        node_cmd_ok(ports[i], "CONFIG SET cluster-require-full-coverage no",
                    redisCommand(c, "CONFIG SET cluster-require-full-coverage no"));
        if (ports[i] == replica)
            node_cmd_ok(ports[i], "CONFIG SET cluster-replica-no-failover yes",
                        redisCommand(c, "CONFIG SET cluster-replica-no-failover yes"));
        redisFree(c);
    }
    const char *dir = getenv("RUNLANE_TEST_REDIS_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/node-%d/redis.pid", dir ? dir : ".", dead);
    FILE *f = fopen(path, "r");
    int pid = 0;
    RL_CHECK_MSG(f != NULL && fscanf(f, "%d", &pid) == 1 && pid > 0, "no pid in %s", path);
    fclose(f);
    RL_CHECK_INT(0, kill(pid, SIGKILL));
    fprintf(stderr, "    killed master %d (first seed); its replica %d is held back\n", dead, replica);

    /* opened right then: the first seed is the dead master */
    int64_t t0 = rl_mono_ms();
    rl_store_t *st = open_ns(g_ns);
    fprintf(stderr, "    opened in %lld ms\n", (long long)(rl_mono_ms() - t0));
    enq(st, hconv, "h2");
    char *json = NULL;
    RL_CHECK_OK(st->ops->status(st, hconv, &json));
    free(json);
    /* the dead master's partitions: retriable, named, until the failover */
    char id[RUNLANE_ID_MAX];
    int dup = 0;
    char *tail = tail_of("d2", NULL);
    int rc = st->ops->enqueue(st, &g_pol, dconv, tail, 2, NULL, id, &dup);
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d", dead);
    const runlane_error_t *e = runlane_error_last();
    fprintf(stderr, "    error: %s\n", runlane_error_message(e));
    if (rc != RUNLANE_ERR_STORE || !runlane_error_retriable(e) ||
        !strstr(runlane_error_message(e), "unreachable") || !strstr(runlane_error_message(e), want)) {
        free(tail);
        RL_FAILF("an enqueue on the dead master's partition: expected a retriable store error "
                 "naming %s as unreachable, got %d (retriable %d): %s",
                 want, rc, runlane_error_retriable(e), runlane_error_message(e));
    }
    /* a client (runlane_new) opened now works the same */
    {
        char mid[RUNLANE_ID_MAX];
        runlane_t *rl = cluster_client(prefix);
        runlane_err_t hrc = runlane_enqueue(mid, sizeof(mid), NULL, rl, hconv, "h3", NULL);
        char hmsg[600];
        rl_strlcpy(hmsg, errmsg(), sizeof(hmsg));
        runlane_err_t drc = runlane_enqueue(mid, sizeof(mid), NULL, rl, dconv, "lost", NULL);
        int dretriable = runlane_error_retriable(runlane_error_last());
        runlane_destroy(rl);
        RL_CHECK_MSG(hrc == RUNLANE_OK, "runlane_enqueue on a healthy master's partition: %s", hmsg);
        RL_CHECK_MSG(drc == RUNLANE_ERR_STORE && dretriable,
                     "runlane_enqueue on the dead master's partition: %d (retriable %d)", drc,
                     dretriable);
    }
    {
        /* Concurrent calls share round trips, but only within a partition:
         * those on the healthy master all succeed, those on the dead one
         * all fail retriable (a client of its own, on a prefix of its own:
         * the same partitions, so the same masters). The healthy master
         * holds writes for a while, so that calls of both kinds queue up
         * behind the first. */
        char cprefix[160], tagkey[40];
        snprintf(cprefix, sizeof(cprefix), "%s-conc", prefix);
        runlane_t *rl = cluster_client(cprefix);
        int tl = snprintf(tagkey, sizeof(tagkey), "{%s}",
                          rl_store_redis_tag(probe, rl_partition_of(hconv, g_partitions)));
        int hport = slot_owner(ports[1], rl_redis_key_slot(tagkey, (size_t)tl));
        redisContext *c = node_conn(hport);
        node_cmd_ok(hport, "CLIENT PAUSE", redisCommand(c, "CLIENT PAUSE %d WRITE", (int)TS(300)));
        redisFree(c);
        enq_down_t th[ENQ_DOWN_THREADS];
        memset(th, 0, sizeof(th));
        for (int i = 0; i < ENQ_DOWN_THREADS; i++) {
            th[i].rl = rl;
            th[i].conv = i % 2 ? dconv : hconv;
            RL_CHECK(pthread_create(&th[i].th, NULL, enq_down_main, &th[i]) == 0);
        }
        int hok = 0, dfail = 0, odd = 0;
        for (int i = 0; i < ENQ_DOWN_THREADS; i++) {
            pthread_join(th[i].th, NULL);
            if (i % 2) {
                dfail += th[i].retriable;
                odd += th[i].ok + th[i].other;
            } else {
                hok += th[i].ok;
                odd += th[i].retriable + th[i].other;
            }
        }
        fprintf(stderr, "    concurrent: %d stored on the healthy master, %d refused on the dead "
                        "one, %d otherwise\n", hok, dfail, odd);
        RL_CHECK_INT(ENQ_DOWN_THREADS / 2 * ENQ_DOWN_EACH, hok);
        RL_CHECK_INT(ENQ_DOWN_THREADS / 2 * ENQ_DOWN_EACH, dfail);
        runlane_destroy(rl);
    }
    {
        redisContext *c = node_conn(replica);
        node_cmd_ok(replica, "CONFIG SET cluster-replica-no-failover no",
                    redisCommand(c, "CONFIG SET cluster-replica-no-failover no"));
        redisFree(c);
    }
    int64_t end = rl_mono_ms() + TS(30000);
    int tries = 0;
    while ((rc = st->ops->enqueue(st, &g_pol, dconv, tail, 2, NULL, id, &dup)) != RUNLANE_OK) {
        e = runlane_error_last();
        if (rc != RUNLANE_ERR_STORE || !runlane_error_retriable(e) || rl_mono_ms() > end) {
            free(tail);
            RL_FAILF("after the replica may fail over: enqueue %d (retriable %d) after %d tries: %s",
                     rc, runlane_error_retriable(e), tries, runlane_error_message(e));
        }
        tries++;
        sleep_ms(100);
    }
    free(tail);
    fprintf(stderr, "    the dead master's partition works again after %d retriable failures\n",
            tries);
    int n = 0;
    rl_claim_t *cl = claim_n(st, "w", 10, &n);
    RL_CHECK_INT(2, n);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int d = strcmp(cl[i].conversation_id, dconv) == 0;
        char *got = contents(cl[i].messages_json);
        if (!got || strcmp(got, d ? "d1|d2" : "h1|h2|h3") != 0) {
            fprintf(stderr, "    %s: got %s\n", cl[i].conversation_id, got ? got : "(null)");
            ok = 0;
        }
        free(got);
        if (st->ops->ack(st, &g_pol, cl[i].conversation_id, cl[i].token) != RUNLANE_OK) ok = 0;
        rl_claim_free(&cl[i]);
    }
    free(cl);
    RL_CHECK_MSG(ok, "the batches after the failover differ from what was acknowledged");
}

/* Sentinel: kill -9 the master; the sentinels promote the replica, the
 * store finds it through them and keeps working, and with
 * redis.wait.replicas=1 every enqueue acknowledged before the kill is
 * there. */
static void test_sentinel_failover_keeps_acked(void) {
    g_partitions = 1;
    reset_policy();
    char prefix[128];
    redis_prefix(prefix, sizeof(prefix), ++g_ns);
    rl_store_t *st = open_waiting(prefix, 1, 2000);
    char expect[400] = "";
    for (int i = 0; i < 30; i++) {
        char m[16];
        snprintf(m, sizeof(m), "m%d", i);
        enq(st, "fo", m);
        snprintf(expect + strlen(expect), sizeof(expect) - strlen(expect), "%s%s", i ? "|" : "", m);
    }
    int ports[5];
    const char *dir = getenv("RUNLANE_TEST_REDIS_DIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/ports", dir ? dir : ".");
    FILE *f = fopen(path, "r");
    RL_CHECK(f != NULL);
    int n = 0;
    while (n < 5 && fscanf(f, "%d", &ports[n]) == 1) n++;
    fclose(f);
    RL_CHECK(n == 5);
    snprintf(path, sizeof(path), "%s/data-%d/redis.pid", dir, ports[0]);
    f = fopen(path, "r");
    int pid = 0;
    RL_CHECK(f != NULL && fscanf(f, "%d", &pid) == 1 && pid > 0);
    fclose(f);
    RL_CHECK_INT(0, kill(pid, SIGKILL));
    long m0, a0, r0, red0, m1, a1, r1, red1;
    rl_store_redis_link_stats(st, &m0, &a0, &r0, &red0);
    int64_t end = rl_mono_ms() + TS(40000);
    char id[RUNLANE_ID_MAX];
    int dup, rc, tries = 0;
    char *tail = tail_of("after", NULL);
    /* the promoted replica has no replica of its own now: its writes are
     * applied but WAIT cannot confirm them (reported, retriable) */
    while ((rc = st->ops->enqueue(st, &g_pol, "fo", tail, 5, "k-after", id, &dup)) != RUNLANE_OK &&
           !strstr(errmsg(), "of 1 replicas within")) {
        const runlane_error_t *e = runlane_error_last();
        if (rc != RUNLANE_ERR_STORE || !runlane_error_retriable(e) || rl_mono_ms() > end) {
            free(tail);
            RL_FAILF("after the master's kill: enqueue %d (retriable %d) after %d tries: %s", rc,
                     runlane_error_retriable(e), tries, runlane_error_message(e));
        }
        tries++;
        sleep_ms(100);
    }
    free(tail);
    rl_store_redis_link_stats(st, &m1, &a1, &r1, &red1);
    RL_CHECK_MSG(red1 > red0, "the master was not looked up again");
    strcat(expect, "|after");
    rl_store_t *plain = open_ns(g_ns); /* no WAIT: nothing left to wait for */
    rl_claim_t c = claim1(plain, "w");
    CHECK_CONTENTS(expect, c.messages_json);
    RL_CHECK_OK(plain->ops->ack(plain, &g_pol, "fo", c.token));
    rl_claim_free(&c);
}

static void test_redis_required(void) {
    RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set: the redis store was "
             "not tested");
}

static void test_redis_skipped(void) {
    RL_SKIP("RUNLANE_TEST_REDIS not set: redis store not tested");
}

/* Deletes the run's keys from the test server. */
static void redis_cleanup(void) {
    char pat[128];
    snprintf(pat, sizeof(pat), "rltest:%s:*", g_run);
    char host[128];
    int port, db;
    test_server(host, sizeof(host), &port, &db);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return;
    }
    if (db) freeReplyObject(redisCommand(c, "SELECT %d", db));
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            freeReplyObject(redisCommand(c, "UNLINK %b", r->element[1]->element[i]->str,
                                         r->element[1]->element[i]->len));
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
}

/* ------------------------------------------------------------------ */

static void run_conformance(void) {
    fprintf(stderr, "== %s store, %d partition(s) ==\n", g_kind, g_partitions);
    RUN(test_enqueue_keeps_order_and_ids);
    RUN(test_record_from_empty_tail_is_valid);
    RUN(test_idempotency_key_stores_once);
    RUN(test_quiet_window_delays_due);
    RUN(test_message_in_window_extends_it);
    RUN(test_touch_extends_window);
    RUN(test_max_wait_caps_touch);
    RUN(test_max_messages_due_at_once);
    RUN(test_max_bytes_due_at_once);
    RUN(test_claim_is_exclusive);
    RUN(test_concurrent_claimers_split_work);
    RUN(test_renew_extends_or_reports_stale);
    RUN(test_stale_token_changes_nothing);
    RUN(test_fail_retries_with_backoff_then_dead);
    RUN(test_fail_not_retriable_is_dead_at_once);
    RUN(test_recover_expired_lease);
    RUN(test_recover_dead_letters_past_max_stalls);
    RUN(test_expired_leases_spend_no_attempt);
    RUN(test_dead_letter_checkpoint_is_settled_by_the_next_claim);
    RUN(test_release_spends_no_attempt);
    RUN(test_defer_delays_without_attempt);
    RUN(test_checkpoint_survives_reclaim);
    RUN(test_touch_during_backoff_keeps_batch);
    RUN(test_message_during_backoff_waits_for_retry);
    RUN(test_dead_retry_puts_messages_in_front);
    RUN(test_dead_retry_all_keeps_order);
    RUN(test_dead_list_orders_and_pages);
    RUN(test_dead_purge_one_and_all);
    RUN(test_status_totals_and_conversation);
    RUN(test_conversation_ids_cannot_collide);
    RUN(test_enqueue_many);
    RUN(test_next_due_reports_earliest);
    RUN(test_renew_reports_pending);
    RUN(test_extend_batch_merges_pending);
    RUN(test_extend_batch_respects_limits);
    RUN(test_ack_reply_acks_and_keeps_reply);
    RUN(test_ack_reply_stale_stores_nothing);
    RUN(test_reply_claim_takes_due_up_to_max);
    RUN(test_reply_expires_after_ttl);
    RUN(test_reply_ack_unknown_ids);
    RUN(test_rate_bucket_rpm60_waits_a_second_and_refills);
    RUN(test_rate_bucket_burst_is_one_second_of_rpm);
    RUN(test_rate_bucket_is_shared_by_handles);
    RUN(test_conv_map_records_once_under_the_lease);
    RUN(test_conv_map_set_and_forget);
}

/* RUNLANE_TEST_PARTITIONS=last: run the Redis conformance suite once, with
 * the most partitions of the list, instead of once per partition count. The
 * test command sets it for the sanitizer and valgrind runs, where the
 * stretched timings make each pass several times longer; the plain run keeps
 * the whole matrix (partition counts change key names and routing, which the
 * plain run covers, not memory or thread handling). */
static size_t partitions_to_run(int *parts, size_t n) {
    const char *v = getenv("RUNLANE_TEST_PARTITIONS");
    if (v && strcmp(v, "last") == 0) {
        fprintf(stderr, "== RUNLANE_TEST_PARTITIONS=last: the suite runs with %d partitions only ==\n",
                parts[n - 1]);
        parts[0] = parts[n - 1];
        return 1;
    }
    return n;
}

int main(void) {
    snprintf(g_run, sizeof(g_run), "%d-%lld", (int)getpid(), (long long)rl_now_ms());
    const char *only = getenv("RUNLANE_TEST_STORE"); /* "memory" or "redis": run one */

    if (!only || strcmp(only, "memory") == 0) {
        g_kind = "memory";
        g_partitions = 1;
        run_conformance();
    }
    if (!only || strcmp(only, "redis") == 0) {
        g_redis_url = rl_test_redis_url();
        int multi_tls = g_redis_url && strncmp(g_redis_url, "rediss+", 7) == 0;
        if (g_redis_url && (strncmp(g_redis_url, "redis+", 6) == 0 || multi_tls)) {
            /* a private cluster or Sentinel setup (scripts/redis-cluster.sh,
             * redis-sentinel.sh via tests/c/run_multi.sh): the conformance
             * suite, and no side connection to one server; the setup is
             * thrown away after the run */
            g_kind = "redis";
            int parts[3] = {1, 3, 12};
            size_t nparts = partitions_to_run(parts, 3);
            for (volatile size_t i = 0; i < nparts; i++) {
                g_partitions = parts[i];
                run_conformance();
            }
            if (multi_tls) {
                /* over TLS (tests/c/test_tls.c): the side connections of
                 * the tests below are plaintext; test_tls reshards itself */
                if (strstr(g_redis_url, "+cluster://")) RUN(test_cluster_spread);
            } else if (strncmp(g_redis_url, "redis+cluster", 13) == 0) {
                RUN(test_cluster_spread);
                RUN(test_cluster_moved_and_ask);
                RUN(test_cluster_worker_recovers_later_leases);
                RUN(test_cluster_open_while_master_down); /* last: it kills a master */
            } else {
                RUN(test_sentinel_failover_keeps_acked); /* last: it kills the master */
            }
        } else if (g_redis_url) {
            g_kind = "redis";
            int parts[2] = {1, 3};
            size_t nparts = partitions_to_run(parts, 2);
            for (volatile size_t i = 0; i < nparts; i++) {
                g_partitions = parts[i];
                run_conformance();
                RUN(test_redis_keys_are_hash_tagged);
            }
            fprintf(stderr, "== redis store: connection ==\n");
            g_partitions = 1;
            RUN(test_redis_survives_script_flush);
            RUN(test_redis_reconnects_after_kill);
            RUN(test_redis_command_timeout);
            RUN(test_redis_unreachable_is_retriable);
            RUN(test_redis_url_and_auth_errors);
            if (!getenv("RUNLANE_TEST_KEEP")) redis_cleanup(); /* KEEP: leave keys to inspect */
        } else {
            const char *req = getenv("RUNLANE_REQUIRE_REDIS");
            if (req && strcmp(req, "1") == 0)
                RUN(test_redis_required);
            else
                RUN(test_redis_skipped);
        }
    }
    return rl_test_summary();
}
