/* test_cost.c - Redis work per message, cross-process wake-up, fair claims.
 *
 * On a private redis-server (scripts/redis-server.sh), so that INFO
 * commandstats counts only this test's commands (counts, not timings):
 * - budget: enqueue + claim + ack of one-message batches run at most 3
 *   scripts per message (enqueue 1, claim 1, ack 1: no peek before a
 *   claim) and a bounded number of commands inside them; no claim of a
 *   due conversation comes back empty.
 * - fairness: 4 store objects in 4 threads claim 400 due conversations
 *   in lock-step rounds (over 1 and over 4 partitions): at most 5% of their
 *   claims come back empty while some wait in ready, and each one's share
 *   is within 2x of the others.
 * - woken claims: 4 threads woken by announcements (as workers are) while
 *   new conversations arrive: at most 5% of their claims come back empty.
 * - a range claim leaves a conversation whose announcement another worker
 *   popped (for 2 s: then the popper is taken for dead).
 * - wake-up: a worker with worker.poll.ms=60000 gets a BATCH for a message
 *   enqueued by another client within a few seconds (it is announced, not
 *   polled for).
 * - idle: a started worker with nothing to do issues at most ~1 command per
 *   second over a 5 s window (counted on the server).
 * - coalescing: conversations due within worker.wake.coalesce.ms of a
 *   wake-up cost one blocking pop and one claim together.
 * Needs redis-server (skipped without, failed with RUNLANE_REQUIRE_REDIS=1). */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "rltest.h"
#include "runlane.h"
#include "store.h"

static char src_dir[512], priv_dir[256], url[128];
static int priv_port;

static int start_private_redis(void) {
    snprintf(src_dir, sizeof(src_dir), "%s", __FILE__);
    char *cut = strstr(src_dir, "/tests/c/");
    if (!cut) return 0;
    *cut = '\0';
    snprintf(priv_dir, sizeof(priv_dir), "/tmp/runlane-cost-redis.%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s/scripts/redis-server.sh start %s 2>/dev/null", src_dir,
             priv_dir);
    FILE *pp = popen(cmd, "r");
    int port = 0;
    if (!pp) return 0;
    if (fscanf(pp, "%d", &port) != 1) port = 0;
    pclose(pp);
    priv_port = port;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    return port > 0;
}

static void stop_private_redis(void) {
    if (!priv_port) return;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s/scripts/redis-server.sh stop %s >/dev/null 2>&1; rm -rf %s",
             src_dir, priv_dir, priv_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not stop the private redis\n");
}

static redisContext *admin(void) {
    redisContext *c = redisConnect("127.0.0.1", priv_port);
    RL_CHECK_MSG(c && !c->err, "connect to the private redis");
    return c;
}

static void reset_stats(redisContext *c) {
    redisReply *r = redisCommand(c, "CONFIG RESETSTAT");
    RL_CHECK(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

/* Calls of every command since the reset, and of EVALSHA alone, leaving
 * out this admin connection's own INFO / CONFIG. */
static void count_calls(redisContext *c, long long *all, long long *scripts) {
    redisReply *r = redisCommand(c, "INFO commandstats");
    RL_CHECK(r && r->str && (r->type == REDIS_REPLY_VERB || r->type == REDIS_REPLY_STRING));
    *all = 0;
    *scripts = 0;
    for (const char *p = strstr(r->str, "cmdstat_"); p; p = strstr(p + 1, "cmdstat_")) {
        char name[64];
        long long calls = 0, usec = 0;
        if (sscanf(p, "cmdstat_%63[^:]:calls=%lld,usec=%lld", name, &calls, &usec) < 2) continue;
        if (!strcmp(name, "info") || !strncmp(name, "config", 6)) continue;
        if (getenv("RUNLANE_TEST_VERBOSE")) fprintf(stderr, "    %s %lld calls %lld us\n", name, calls, usec);
        *all += calls;
        if (!strcmp(name, "evalsha")) *scripts += calls;
    }
    freeReplyObject(r);
}

static rl_store_t *open_store_parts(const char *prefix, int partitions) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.prefix = prefix;
    o.partitions = partitions;
    o.connect_timeout_ms = 2000;
    o.command_timeout_ms = 5000;
    return rl_store_open(&o);
}

static rl_store_t *open_store_raw(const char *prefix) { return open_store_parts(prefix, 1); }

static rl_store_t *open_store(const char *prefix) {
    rl_store_t *st = open_store_raw(prefix);
    RL_CHECK_MSG(st != NULL, "open store: %s", runlane_error_message(runlane_error_last()));
    return st;
}

static rl_policy_t policy(void) {
    rl_policy_t p;
    memset(&p, 0, sizeof(p));
    p.window_ms = 0;
    p.max_wait_ms = 0;
    p.max_messages = 1;
    p.max_bytes = 1000000;
    p.lease_ms = 30000;
    p.max_attempts = 3;
    p.max_stalls = 3;
    p.backoff_base_ms = 100;
    p.backoff_max_ms = 1000;
    p.idem_ttl_ms = 60000;
    p.reply_redeliver_ms = 60000;
    p.reply_ttl_ms = 600000;
    return p;
}

static void test_budget_per_message(void) {
    rl_store_t *st = open_store("cost-budget");
    rl_policy_t pol = policy();
    redisContext *c = admin();
    enum { N = 50 };
    char id[RUNLANE_ID_MAX], conv[32];
    reset_stats(c);
    int empty = 0;
    for (int i = 0; i < N; i++) {
        snprintf(conv, sizeof(conv), "c%d", i);
        RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"hi\"}", 2, NULL, id, NULL));
        rl_claim_t *cl = NULL;
        int n = 0;
        RL_CHECK_OK(st->ops->claim(st, &pol, "w", 1, &cl, &n));
        if (n == 0) {
            empty++;
            continue;
        }
        RL_CHECK_OK(st->ops->ack(st, &pol, cl[0].conversation_id, cl[0].token));
        rl_claim_free(&cl[0]);
        free(cl);
    }
    long long all = 0, scripts = 0;
    count_calls(c, &all, &scripts);
    fprintf(stderr, "  %d messages: %lld scripts, %lld commands (%.1f / %.1f per message)\n", N,
            scripts, all, (double)scripts / N, (double)all / N);
    RL_CHECK_INT(0, empty);
    RL_CHECK_MSG(scripts <= 3 * N, "%lld scripts for %d messages: more than 3 per message",
                 scripts, N);
    RL_CHECK_MSG(all <= 30 * N, "%lld commands for %d messages: more than 30 per message", all,
                 N);
    /* status stays exact */
    char *json = NULL;
    RL_CHECK_OK(st->ops->status(st, NULL, &json));
    RL_CHECK_MSG(strstr(json, "\"pending\":0,") && strstr(json, "\"conversations\":0,") &&
                     strstr(json, "\"enqueued\":50,") && strstr(json, "\"acked\":50,"),
                 "status %s", json);
    free(json);
    redisFree(c);
    st->ops->destroy(st);
}

/* Acks and frees the n claims of cl; adds n to *done under mu. Returns the
 * number of acks refused. */
static int ack_all(rl_store_t *st, const rl_policy_t *pol, rl_claim_t *cl, int n,
                   pthread_mutex_t *mu, int *done) {
    int errors = 0;
    for (int i = 0; i < n; i++) {
        if (st->ops->ack(st, pol, cl[i].conversation_id, cl[i].token) != RUNLANE_OK) errors++;
        rl_claim_free(&cl[i]);
    }
    free(cl);
    pthread_mutex_lock(mu);
    *done += n;
    pthread_mutex_unlock(mu);
    return errors;
}

/* Rounds in lock step: every worker claims at the same moment (the hardest
 * race for the head of the ready set), acks, and waits for the others, so
 * the outcome does not depend on how the OS schedules the threads (free
 * running threads under ASan on 2 cores got 76 .. 164 of 400). */
enum { FAIR_CONVS = 400, FAIR_WORKERS = 4, FAIR_MAX = 2 };
static int fair_done, fair_partitions;
static pthread_mutex_t fair_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t fair_round;
typedef struct fair_worker {
    pthread_t th;
    int claims, empty, got, errors;
    char owner[16];
} fair_worker_t;

static void fair_one_claim(fair_worker_t *w, rl_store_t *st) {
    rl_policy_t pol = policy();
    rl_claim_t *cl = NULL;
    int n = 0;
    if (st->ops->claim(st, &pol, w->owner, FAIR_MAX, &cl, &n) != RUNLANE_OK) {
        w->errors++;
        return;
    }
    w->claims++;
    if (n == 0) {
        /* The others hold or have acked the rest (a last look, not a lost
         * race) unless something still waits in ready. */
        int64_t due = 0, now = 0;
        if (st->ops->next_due(st, &due, &now) != RUNLANE_OK)
            w->errors++;
        else if (due != INT64_MAX)
            w->empty++;
    }
    w->errors += ack_all(st, &pol, cl, n, &fair_mu, &fair_done);
    w->got += n;
}

static void *fair_main(void *arg) {
    fair_worker_t *w = arg;
    /* no RL_CHECK off the main thread; a worker without a store keeps to
     * the rounds so that the others do not wait for it forever */
    rl_store_t *st = open_store_parts("cost-fair", fair_partitions);
    if (!st) w->errors++;
    for (int round = 0; round < FAIR_CONVS; round++) {
        pthread_barrier_wait(&fair_round);
        if (st) fair_one_claim(w, st);
        pthread_barrier_wait(&fair_round);
        /* nobody writes fair_done until everyone has read it */
        pthread_mutex_lock(&fair_mu);
        int done = fair_done >= FAIR_CONVS;
        pthread_mutex_unlock(&fair_mu);
        if (done) break;
    }
    if (st) st->ops->destroy(st);
    return NULL;
}

static void fair_claims_over(int partitions) {
    rl_store_t *st = open_store_parts("cost-fair", partitions);
    RL_CHECK_MSG(st != NULL, "open store: %s", runlane_error_message(runlane_error_last()));
    if (!st) return;
    rl_policy_t pol = policy();
    char id[RUNLANE_ID_MAX], conv[32];
    for (int i = 0; i < FAIR_CONVS; i++) {
        snprintf(conv, sizeof(conv), "f%d-%d", partitions, i);
        RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"x\"}", 1, NULL, id, NULL));
    }
    fair_done = 0;
    fair_partitions = partitions;
    fair_worker_t w[FAIR_WORKERS];
    memset(w, 0, sizeof(w));
    RL_CHECK(pthread_barrier_init(&fair_round, NULL, FAIR_WORKERS) == 0);
    for (int i = 0; i < FAIR_WORKERS; i++) {
        snprintf(w[i].owner, sizeof(w[i].owner), "w%d", i);
        RL_CHECK(pthread_create(&w[i].th, NULL, fair_main, &w[i]) == 0);
    }
    int claims = 0, empty = 0, lo = FAIR_CONVS, hi = 0;
    for (int i = 0; i < FAIR_WORKERS; i++) {
        pthread_join(w[i].th, NULL);
        RL_CHECK_INT(0, w[i].errors);
        claims += w[i].claims;
        empty += w[i].empty;
        if (w[i].got < lo) lo = w[i].got;
        if (w[i].got > hi) hi = w[i].got;
        fprintf(stderr, "  %d partition(s), worker %d: %d claims, %d empty, %d conversations\n",
                partitions, i, w[i].claims, w[i].empty, w[i].got);
    }
    pthread_barrier_destroy(&fair_round);
    RL_CHECK_INT(FAIR_CONVS, fair_done);
    RL_CHECK_MSG(empty * 20 <= claims,
                 "%d of %d claims came back empty (more than 5%%)", empty, claims);
    RL_CHECK_MSG(lo > 0 && hi <= 2 * lo, "unfair shares: %d .. %d conversations", lo, hi);
    st->ops->destroy(st);
}

static void test_fair_claims(void) {
    fair_claims_over(1);
    fair_claims_over(4); /* a peek over the partitions, then one claim each */
}

/* Woken claims: WOKEN_WORKERS threads wait for announcements the way a
 * worker does (wait_arm / wait_take on a store of their own, then the claim
 * the announcement calls for) while the main thread enqueues WOKEN_CONVS
 * new conversations, a few at a time: each announcement wakes one worker,
 * and its claim must find work (no two workers woken for one conversation,
 * no worker woken for what another one's claim took). */
#define WOKEN_WORKERS 4
#define WOKEN_CONVS 300

static pthread_mutex_t woken_mu = PTHREAD_MUTEX_INITIALIZER;
static int woken_done, woken_stop;

typedef struct woken_worker {
    pthread_t th;
    char owner[16];
    int claims, empty, got, errors;
} woken_worker_t;

static void *woken_main(void *arg) {
    woken_worker_t *w = arg;
    rl_store_t *st = open_store_raw("cost-woken"), *ws = open_store_raw("cost-woken");
    if (!st || !ws) {
        w->errors++;
        if (st) st->ops->destroy(st);
        if (ws) ws->ops->destroy(ws);
        return NULL;
    }
    rl_policy_t pol = policy();
    char named[RUNLANE_CONVERSATION_ID_MAX + 1];
    for (int guard = 0; guard < 100000; guard++) {
        pthread_mutex_lock(&woken_mu);
        int stop = woken_stop;
        pthread_mutex_unlock(&woken_mu);
        if (stop) break;
        int fd = -1;
        if (ws->ops->wait_arm(ws, 200, &fd) != RUNLANE_OK) {
            w->errors++;
            break;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 300) <= 0) continue;
        int part = 0;
        int64_t due = 0;
        int r = ws->ops->wait_take(ws, &part, &due, named, sizeof(named));
        if (r < 0) {
            w->errors++;
            break;
        }
        if (r != 1) continue;
        rl_claim_t *cl = NULL;
        int n = 0;
        int rc = named[0] ? st->ops->claim_named(st, &pol, w->owner, 4, part, named, &cl, &n)
                          : st->ops->claim(st, &pol, w->owner, 4, &cl, &n);
        if (rc != RUNLANE_OK) {
            w->errors++;
            break;
        }
        w->claims++;
        if (n == 0) w->empty++;
        w->errors += ack_all(st, &pol, cl, n, &woken_mu, &woken_done);
        w->got += n;
    }
    ws->ops->destroy(ws);
    st->ops->destroy(st);
    return NULL;
}

static void test_woken_claims_find_work(void) {
    rl_store_t *st = open_store("cost-woken");
    rl_policy_t pol = policy();
    woken_worker_t w[WOKEN_WORKERS];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < WOKEN_WORKERS; i++) {
        snprintf(w[i].owner, sizeof(w[i].owner), "w%d", i);
        RL_CHECK(pthread_create(&w[i].th, NULL, woken_main, &w[i]) == 0);
    }
    usleep(200000); /* (only lets them block first; the check does not depend on it) */
    char id[RUNLANE_ID_MAX], conv[32];
    for (int i = 0; i < WOKEN_CONVS; i++) {
        snprintf(conv, sizeof(conv), "k%d", i);
        RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"x\"}", 1, NULL, id, NULL));
        if (i % 3 == 2) usleep(300);
    }
    int64_t end = rl_mono_ms() + (int64_t)(20000 * rl_test_time_scale());
    for (;;) {
        pthread_mutex_lock(&woken_mu);
        int done = woken_done;
        pthread_mutex_unlock(&woken_mu);
        if (done >= WOKEN_CONVS || rl_mono_ms() > end) break;
        usleep(10000);
    }
    pthread_mutex_lock(&woken_mu);
    woken_stop = 1;
    pthread_mutex_unlock(&woken_mu);
    int claims = 0, empty = 0, lo = WOKEN_CONVS, hi = 0;
    for (int i = 0; i < WOKEN_WORKERS; i++) {
        pthread_join(w[i].th, NULL);
        RL_CHECK_INT(0, w[i].errors);
        claims += w[i].claims;
        empty += w[i].empty;
        if (w[i].got < lo) lo = w[i].got;
        if (w[i].got > hi) hi = w[i].got;
        fprintf(stderr, "  woken worker %d: %d claims, %d empty, %d conversations\n", i,
                w[i].claims, w[i].empty, w[i].got);
    }
    RL_CHECK_INT(WOKEN_CONVS, woken_done);
    RL_CHECK_MSG(empty * 20 <= claims, "%d of %d woken claims came back empty (more than 5%%)",
                 empty, claims);
    st->ops->destroy(st);
}

/* Pops one announcement on ws (a worker's wait), within a deadline. */
static int pop_announcement(rl_store_t *ws, char *named, size_t cap, int *part) {
    int64_t end = rl_mono_ms() + (int64_t)(3000 * rl_test_time_scale());
    while (rl_mono_ms() < end) {
        int fd = -1;
        RL_CHECK_OK(ws->ops->wait_arm(ws, 1000, &fd));
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0) continue;
        int64_t due = 0;
        int r = ws->ops->wait_take(ws, part, &due, named, cap);
        RL_CHECK(r >= 0);
        if (r == 1) return 1;
    }
    return 0;
}

/* A conversation whose announcement a worker popped is that worker's to
 * claim: another worker's range claim (a look at the heads, a claim hint)
 * leaves it, so the popping worker's claim is not empty; unless the
 * popper does not claim it for 2 s (it died): then a range claim takes it. */
static void test_range_claim_leaves_popped_announcement(void) {
    rl_store_t *st = open_store("cost-popped"), *ws = open_store("cost-popped");
    rl_policy_t pol = policy();
    char id[RUNLANE_ID_MAX], named[RUNLANE_CONVERSATION_ID_MAX + 1];
    int part = -1;
    RL_CHECK_OK(st->ops->enqueue(st, &pol, "p1", "{\"content\":\"x\"}", 1, NULL, id, NULL));
    RL_CHECK_MSG(pop_announcement(ws, named, sizeof(named), &part), "no announcement popped");
    RL_CHECK_STR("p1", named);
    rl_claim_t *cl = NULL;
    int n = 0;
    RL_CHECK_OK(st->ops->claim(st, &pol, "other", 10, &cl, &n));
    RL_CHECK_INT(0, n);
    RL_CHECK_OK(st->ops->claim_named(st, &pol, "popper", 10, part, named, &cl, &n));
    RL_CHECK_INT(1, n);
    RL_CHECK_STR("p1", cl[0].conversation_id);
    RL_CHECK_OK(st->ops->ack(st, &pol, cl[0].conversation_id, cl[0].token));
    rl_claim_free(&cl[0]);
    free(cl);
    /* a popper that never claims: after 2 s a range claim takes it */
    RL_CHECK_OK(st->ops->enqueue(st, &pol, "p2", "{\"content\":\"y\"}", 1, NULL, id, NULL));
    RL_CHECK_MSG(pop_announcement(ws, named, sizeof(named), &part), "no announcement popped");
    RL_CHECK_STR("p2", named);
    int64_t end = rl_mono_ms() + (int64_t)(10000 * rl_test_time_scale());
    n = 0;
    while (n == 0 && rl_mono_ms() < end) {
        cl = NULL;
        RL_CHECK_OK(st->ops->claim(st, &pol, "other", 10, &cl, &n));
        if (n == 0) usleep(100000);
    }
    RL_CHECK_INT(1, n);
    RL_CHECK_STR("p2", cl[0].conversation_id);
    rl_claim_free(&cl[0]);
    free(cl);
    ws->ops->destroy(ws);
    st->ops->destroy(st);
}

/* A client on the private server; coalesce_ms: worker.wake.coalesce.ms,
 * or NULL for the default. */
static runlane_t *client_coalescing(const char *prefix, const char *coalesce_ms) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    if ((coalesce_ms &&
         runlane_conf_set(conf, "worker.wake.coalesce.ms", coalesce_ms, err, sizeof(err))) ||
        runlane_conf_set(conf, "store", url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "worker.poll.ms", "60000", err, sizeof(err)) ||
        runlane_conf_set(conf, "batch.window.ms", "0", err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    return rl;
}

static runlane_t *client(const char *prefix) { return client_coalescing(prefix, NULL); }

static runlane_event_t *wait_batch(runlane_t *rl, int timeout_ms) {
    int64_t end = rl_mono_ms() + (int64_t)(timeout_ms * rl_test_time_scale());
    while (rl_mono_ms() < end) {
        runlane_event_t *ev = runlane_poll(rl, 10);
        if (!ev) continue;
        if (runlane_event_type(ev) == RUNLANE_EVENT_BATCH) return ev;
        runlane_event_destroy(ev);
    }
    return NULL;
}

static void test_wakeup_across_clients_and_idle_cost(void) {
    runlane_t *w = client("cost-wake");
    runlane_t *producer = client("cost-wake"); /* never started: another process's view */
    RL_CHECK_OK(runlane_start(w));
    /* Started and idle: let its first looks pass, then count. */
    sleep(1);
    redisContext *c = admin();
    reset_stats(c);
    sleep(5);
    long long all = 0, scripts = 0;
    count_calls(c, &all, &scripts);
    fprintf(stderr, "  idle worker: %lld commands in 5 s\n", all);
    RL_CHECK_MSG(all <= 8, "an idle worker issued %lld commands in 5 s (at most ~1/s)", all);
    char id[RUNLANE_ID_MAX];
    int64_t t0 = rl_mono_ms();
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, producer, "wake1", "hello", NULL));
    /* worker.poll.ms is 60 s: only the announcement can deliver it this soon */
    runlane_event_t *ev = wait_batch(w, 3000);
    RL_CHECK_MSG(ev != NULL, "no BATCH within 3 s of an enqueue by another client");
    fprintf(stderr, "  enqueue -> BATCH: %lld ms\n", (long long)(rl_mono_ms() - t0));
    RL_CHECK_OK(runlane_batch_ack(w, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    /* a stop cuts the wait short */
    int64_t s0 = rl_mono_ms();
    RL_CHECK_OK(runlane_stop(w, RUNLANE_STOP_RELEASE, 5000));
    RL_CHECK_MSG(rl_mono_ms() - s0 < (int64_t)(2000 * rl_test_time_scale()),
                 "stop took %lld ms", (long long)(rl_mono_ms() - s0));
    redisFree(c);
    runlane_destroy(producer);
    runlane_destroy(w);
}

/* Calls of one command since the reset. */
static long long count_command(redisContext *c, const char *name) {
    redisReply *r = redisCommand(c, "INFO commandstats");
    RL_CHECK(r && r->str && (r->type == REDIS_REPLY_VERB || r->type == REDIS_REPLY_STRING));
    char key[80];
    snprintf(key, sizeof(key), "cmdstat_%s:calls=", name);
    const char *p = strstr(r->str, key);
    long long calls = p ? atoll(p + strlen(key)) : 0;
    freeReplyObject(r);
    return calls;
}

/* worker.wake.coalesce.ms: conversations that become due within that time
 * of a wake-up are taken by one blocking pop and one claim, not one each
 * (the enqueues below come 10 ms apart: without coalescing the worker,
 * waiting again at once, is woken for each). */
static void test_wakeups_coalesce(void) {
    runlane_t *w = client_coalescing("cost-coalesce", "1000");
    runlane_t *producer = client("cost-coalesce");
    RL_CHECK_OK(runlane_start(w));
    usleep(300 * 1000); /* its first looks at the store */
    redisContext *c = admin();
    char id[RUNLANE_ID_MAX], conv[32];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, producer, "co-first", "hello", NULL));
    runlane_event_t *ev = wait_batch(w, 3000);
    RL_CHECK_MSG(ev != NULL, "no BATCH for the first message");
    RL_CHECK_OK(runlane_batch_ack(w, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    /* the worker was woken just now: the next 8 arrive within its 1 s */
    reset_stats(c);
    enum { N = 8 };
    for (int i = 0; i < N; i++) {
        snprintf(conv, sizeof(conv), "co-%d", i);
        RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, producer, conv, "hello", NULL));
        usleep(10 * 1000);
    }
    for (int i = 0; i < N; i++) {
        ev = wait_batch(w, 5000);
        RL_CHECK_MSG(ev != NULL, "only %d of %d batches delivered", i, N);
        RL_CHECK_OK(runlane_batch_ack(w, runlane_event_batch_id(ev), NULL));
        runlane_event_destroy(ev);
    }
    long long all = 0, scripts = 0, pops = count_command(c, "bzpopmin");
    count_calls(c, &all, &scripts);
    fprintf(stderr, "  %d conversations due 10 ms apart: %lld pops, %lld scripts\n", N, pops,
            scripts);
    RL_CHECK_MSG(pops <= 2, "%lld blocking pops for %d conversations (coalesced: 1 or 2)", pops,
                 N);
    /* enqueue 8, ack 8, and one or two claims */
    RL_CHECK_MSG(scripts <= 2 * N + 2, "%lld scripts for %d one-message turns", scripts, N);
    RL_CHECK_OK(runlane_stop(w, RUNLANE_STOP_RELEASE, 5000));
    redisFree(c);
    runlane_destroy(producer);
    runlane_destroy(w);
}

static void test_private_redis_missing(void) { RL_SKIP("no redis-server for a private server"); }

int main(void) {
    if (!start_private_redis()) {
        if (getenv("RUNLANE_REQUIRE_REDIS") && atoi(getenv("RUNLANE_REQUIRE_REDIS"))) {
            fprintf(stderr, "no redis-server for a private server and RUNLANE_REQUIRE_REDIS=1\n");
            printf("0 passed, 1 failed\n");
            return 1;
        }
        RL_RUN(test_private_redis_missing);
        return rl_test_summary();
    }
    RL_RUN(test_budget_per_message);
    RL_RUN(test_fair_claims);
    RL_RUN(test_woken_claims_find_work);
    RL_RUN(test_range_claim_leaves_popped_announcement);
    RL_RUN(test_wakeup_across_clients_and_idle_cost);
    RL_RUN(test_wakeups_coalesce);
    stop_private_redis();
    return rl_test_summary();
}
