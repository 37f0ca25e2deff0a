/* test_multiproc.c - real processes against a real Redis: several
 * producers and workers (exactly once, in order, no overlapping turns),
 * many workers claiming at once, kill -9 of a worker holding leases (its
 * batches come back with attempt + 1; its stale token is refused), three
 * successive owners dying without the batch being dead-lettered, and a
 * Redis restart mid-run. Needs RUNLANE_TEST_REDIS. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "rltest.h"
#include "runlane.h"
#include "store.h"

static char redis_url[256];
static char prefix[64];

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

static runlane_t *make_client(const char *url, const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    runlane_conf_set(conf, "store", url, err, sizeof(err));
    runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err));
    runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err));
    runlane_conf_set(conf, "worker.recover.ms", "50", err, sizeof(err));
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) {
            fprintf(stderr, "conf %s: %s\n", kv[0], err);
            exit(3);
        }
    /* Redis may be restarting: retry the connection for a while. */
    runlane_t *rl = NULL;
    for (int tries = 0; !rl && tries < 100; tries++) {
        rl = runlane_new(conf, err, sizeof(err));
        if (!rl) sleep_ms(50);
    }
    runlane_conf_destroy(conf);
    if (!rl) {
        fprintf(stderr, "runlane_new: %s\n", err);
        exit(3);
    }
    return rl;
}

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) {
    (void)sig;
    stop_flag = 1;
}

/* A worker process: logs every delivered message as
 * conv \t content \t msg_id \t batch_id \t attempt \t start_us \t end_us \t pid
 * (one write per batch, O_APPEND) and acks, retrying while the store is
 * down. Runs until SIGTERM. */
static void worker_process(const char *url, const char *log_path, int turn_ms,
                           const char *const *kv) {
    signal(SIGTERM, on_term);
    runlane_t *rl = make_client(url, kv);
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || runlane_start(rl)) _exit(3);
    while (!stop_flag) {
        runlane_event_t *ev = runlane_poll(rl, 50);
        if (!ev) continue;
        if (runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            long long start = now_us();
            if (turn_ms) sleep_ms(turn_ms);
            long long end = now_us();
            cJSON *j = cJSON_Parse(runlane_event_json(ev));
            cJSON *m;
            rl_buf_t b;
            rl_buf_init(&b);
            cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "messages")) {
                rl_buf_printf(&b, "%s\t%s\t%s\t%s\t%d\t%lld\t%lld\t%ld\n",
                              runlane_event_conversation_id(ev),
                              cJSON_GetObjectItem(m, "content")->valuestring,
                              cJSON_GetObjectItem(m, "id")->valuestring,
                              runlane_event_batch_id(ev), runlane_event_attempt(ev), start, end,
                              (long)getpid());
            }
            cJSON_Delete(j);
            /* Log before ack: a delivery that is logged but not acked shows
             * up as a duplicate, which the test would catch. */
            if (write(fd, b.data, b.len) != (ssize_t)b.len) _exit(4);
            rl_buf_free(&b);
            for (int tries = 0; tries < 200; tries++) {
                runlane_err_t rc = runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL);
                if (rc != RUNLANE_ERR_STORE) break;
                sleep_ms(50);
            }
        }
        runlane_event_destroy(ev);
    }
    runlane_stop(rl, RUNLANE_STOP_RELEASE, 0);
    runlane_destroy(rl);
    close(fd);
    _exit(0);
}

/* A producer process: for each conversation, `per_conv` messages
 * "p<id>:<k>", interleaved across conversations, each with an idempotency
 * key so that retries after a store error cannot duplicate. */
static void producer_process(const char *url, int id, int nconv, int per_conv, int pace_ms) {
    runlane_t *rl = make_client(url, NULL);
    for (int k = 0; k < per_conv; k++) {
        for (int c = 0; c < nconv; c++) {
            char conv[32], content[32], opts[96], mid[RUNLANE_ID_MAX];
            snprintf(conv, sizeof(conv), "conv-%d", c);
            snprintf(content, sizeof(content), "p%d:%d", id, k);
            snprintf(opts, sizeof(opts), "{\"idempotency_key\":\"p%d-%d-%d\"}", id, c, k);
            int tries = 0;
            while (runlane_enqueue(mid, sizeof(mid), NULL, rl, conv, content, opts) == RUNLANE_ERR_STORE &&
                   tries++ < 400)
                sleep_ms(25);
        }
        sleep_ms(pace_ms);
    }
    runlane_destroy(rl);
    _exit(0);
}

static pid_t spawn_worker(const char *url, const char *log, int turn_ms, const char *const *kv) {
    pid_t p = fork();
    if (p == 0) worker_process(url, log, turn_ms, kv);
    return p;
}

static pid_t spawn_producer(const char *url, int id, int nconv, int per_conv, int pace_ms) {
    pid_t p = fork();
    if (p == 0) producer_process(url, id, nconv, per_conv, pace_ms);
    return p;
}

static int status_int(runlane_t *rl, const char *key) {
    char *st = NULL;
    if (runlane_status(&st, rl, NULL)) return -1;
    cJSON *j = cJSON_Parse(st);
    cJSON *v = cJSON_GetObjectItem(j, key);
    int r = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    runlane_free(st);
    return r;
}

/* Waits until nothing is pending or in flight (store may be down briefly). */
static int wait_drained(runlane_t *rl, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 50) {
        if (status_int(rl, "pending") == 0 && status_int(rl, "inflight") == 0 &&
            status_int(rl, "ready") == 0)
            return 1;
        sleep_ms(50);
    }
    return 0;
}

typedef struct delivery {
    char conv[32], content[32], msg_id[RUNLANE_ID_MAX], batch[RUNLANE_ID_MAX];
    int attempt;
    long long start, end;
} delivery_t;

static delivery_t *read_log(const char *path, int *n_out) {
    FILE *f = fopen(path, "r");
    int cap = 1024, n = 0;
    delivery_t *d = malloc((size_t)cap * sizeof(*d));
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        if (n == cap) d = realloc(d, (size_t)(cap *= 2) * sizeof(*d));
        long pid;
        if (sscanf(line, "%31[^\t]\t%31[^\t]\t%63[^\t]\t%63[^\t]\t%d\t%lld\t%lld\t%ld", d[n].conv,
                   d[n].content, d[n].msg_id, d[n].batch, &d[n].attempt, &d[n].start, &d[n].end,
                   &pid) == 8)
            n++;
    }
    if (f) fclose(f);
    *n_out = n;
    return d;
}

static long long id_seq(const char *id) {
    const char *dash = strrchr(id, '-');
    return dash ? atoll(dash + 1) : -1;
}

static int cmp_delivery(const void *a, const void *b) {
    const delivery_t *x = a, *y = b;
    int c = strcmp(x->conv, y->conv);
    if (c) return c;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    /* Same batch: keep the logged (batch) order, which follows msg ids. */
    return id_seq(x->msg_id) < id_seq(y->msg_id) ? -1 : id_seq(x->msg_id) > id_seq(y->msg_id);
}

/* Checks: `expected` distinct messages each delivered exactly once; per
 * conversation, batches never overlap in time and messages come in enqueue
 * order (store ids and each producer's own sequence increasing). */
static void check_log(const char *path, int expected, int nproducers) {
    int n = 0;
    delivery_t *d = read_log(path, &n);
    RL_CHECK_MSG(n == expected, "expected %d deliveries, got %d (lost or duplicated)", expected, n);
    qsort(d, (size_t)n, sizeof(*d), cmp_delivery);
    for (int i = 1; i < n; i++) {
        if (strcmp(d[i].conv, d[i - 1].conv) != 0) continue;
        RL_CHECK_MSG(strcmp(d[i].content, d[i - 1].content) != 0 || strcmp(d[i].batch, d[i - 1].batch) != 0,
                     "duplicate delivery of %s in %s", d[i].content, d[i].conv);
        if (strcmp(d[i].batch, d[i - 1].batch) != 0)
            RL_CHECK_MSG(d[i - 1].end <= d[i].start,
                         "%s: batch %s started before batch %s ended (two turns at once)",
                         d[i].conv, d[i].batch, d[i - 1].batch);
        RL_CHECK_MSG(id_seq(d[i - 1].msg_id) < id_seq(d[i].msg_id),
                     "%s: %s delivered after %s, out of enqueue order", d[i].conv, d[i].msg_id,
                     d[i - 1].msg_id);
    }
    /* Each producer's messages to a conversation arrive in its order. */
    for (int p = 0; p < nproducers; p++) {
        char pfx[16];
        snprintf(pfx, sizeof(pfx), "p%d:", p);
        char last_conv[32] = "";
        int last_k = -1;
        for (int i = 0; i < n; i++) {
            if (strncmp(d[i].content, pfx, strlen(pfx)) != 0) continue;
            int k = atoi(d[i].content + strlen(pfx));
            if (strcmp(last_conv, d[i].conv) != 0) {
                snprintf(last_conv, sizeof(last_conv), "%s", d[i].conv);
                last_k = -1;
            }
            RL_CHECK_MSG(k == last_k + 1, "%s: producer %d message %d after %d (lost or reordered)",
                         d[i].conv, p, k, last_k);
            last_k = k;
        }
    }
    free(d);
}

static void stop_all(pid_t *pids, int n) {
    for (int i = 0; i < n; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
    }
}

static char tmpdir[256];

static void new_prefix(const char *name) {
    static int seq;
    snprintf(prefix, sizeof(prefix), "mp%ld-%s-%d", (long)getpid(), name, ++seq);
}

static void test_producers_and_workers_exactly_once_in_order(void) {
    new_prefix("eo");
    char log[300];
    snprintf(log, sizeof(log), "%s/eo.log", tmpdir);
    unlink(log);
    const char *kv[] = {"batch.window.ms", "20", "batch.max.messages", "4", "lease.ms", "5000", NULL};
    enum { W = 4, P = 3, NCONV = 40, PER = 8 };
    pid_t workers[W], producers[P];
    for (int i = 0; i < W; i++) workers[i] = spawn_worker(redis_url, log, 2, kv);
    for (int i = 0; i < P; i++) producers[i] = spawn_producer(redis_url, i, NCONV, PER, 2);
    for (int i = 0; i < P; i++) {
        int st;
        waitpid(producers[i], &st, 0);
        RL_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "producer %d failed", i);
    }
    runlane_t *rl = make_client(redis_url, NULL);
    int drained = wait_drained(rl, 60000);
    RL_CHECK_INT(0, status_int(rl, "dead"));
    runlane_destroy(rl);
    stop_all(workers, W);
    RL_CHECK_MSG(drained, "queue did not drain");
    check_log(log, P * NCONV * PER, P);
}

static void test_many_workers_claim_at_once_one_lease_each(void) {
    new_prefix("claim");
    char log[300];
    snprintf(log, sizeof(log), "%s/claim.log", tmpdir);
    unlink(log);
    const char *kv[] = {"batch.window.ms", "0", "worker.concurrency", "50", NULL};
    enum { W = 6, NCONV = 150 };
    runlane_t *rl = make_client(redis_url, kv);
    /* Everything is due before any worker starts, so all race for it. */
    for (int c = 0; c < NCONV; c++) {
        char conv[32], id[RUNLANE_ID_MAX];
        snprintf(conv, sizeof(conv), "conv-%d", c);
        RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, "p0:0", NULL));
        RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, "p0:1", NULL));
    }
    pid_t workers[W];
    for (int i = 0; i < W; i++) workers[i] = spawn_worker(redis_url, log, 20, kv);
    int drained = wait_drained(rl, 60000);
    runlane_destroy(rl);
    stop_all(workers, W);
    RL_CHECK_MSG(drained, "queue did not drain");
    check_log(log, NCONV * 2, 1);
}

/* A worker that receives batches and never settles them: reports each
 * batch id on the pipe, then waits to be killed. */
static void holding_worker(const char *url, int wfd, const char *const *kv) {
    runlane_t *rl = make_client(url, kv);
    if (runlane_start(rl)) _exit(3);
    for (;;) {
        runlane_event_t *ev = runlane_poll(rl, 100);
        if (ev && runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            char line[160];
            int n = snprintf(line, sizeof(line), "%s %d\n", runlane_event_batch_id(ev),
                             runlane_event_attempt(ev));
            if (write(wfd, line, (size_t)n) != n) _exit(4);
        }
        runlane_event_destroy(ev);
    }
}

static void test_kill9_worker_batches_come_back(void) {
    new_prefix("kill");
    const char *kv[] = {"batch.window.ms", "0", "lease.ms", "600", NULL};
    runlane_t *prod = make_client(redis_url, kv);
    enum { NCONV = 5 };
    for (int c = 0; c < NCONV; c++) {
        char conv[32], id[RUNLANE_ID_MAX];
        snprintf(conv, sizeof(conv), "k-%d", c);
        RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, prod, conv, "hello", NULL));
    }
    int fds[2];
    RL_CHECK(pipe(fds) == 0);
    pid_t p = fork();
    if (p == 0) {
        close(fds[0]);
        holding_worker(redis_url, fds[1], kv);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char held[NCONV][RUNLANE_ID_MAX];
    for (int i = 0; i < NCONV; i++) {
        int attempt = 0;
        RL_CHECK_MSG(fscanf(in, "%63s %d", held[i], &attempt) == 2, "worker reported %d batches", i);
        RL_CHECK_INT(1, attempt);
    }
    fclose(in);
    kill(p, SIGKILL);
    int st;
    waitpid(p, &st, 0);
    RL_CHECK(WIFSIGNALED(st));
    /* A new worker gets every batch back, same id, attempt 2. */
    runlane_t *w = make_client(redis_url, kv);
    RL_CHECK_OK(runlane_start(w));
    int back = 0;
    for (int t = 0; t < 100 && back < NCONV; t++) {
        runlane_event_t *ev = runlane_poll(w, 100);
        if (ev && runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            int known = 0;
            for (int i = 0; i < NCONV; i++) known |= strcmp(held[i], runlane_event_batch_id(ev)) == 0;
            RL_CHECK_MSG(known, "unexpected batch %s", runlane_event_batch_id(ev));
            RL_CHECK_INT(2, runlane_event_attempt(ev));
            RL_CHECK_OK(runlane_batch_ack(w, runlane_event_batch_id(ev), NULL));
            back++;
        }
        runlane_event_destroy(ev);
    }
    RL_CHECK_INT(NCONV, back);
    RL_CHECK(wait_drained(prod, 5000));
    runlane_destroy(w);
    runlane_destroy(prod);
}

/* Starts a holding worker; *rfd receives the read end of its report pipe. */
static pid_t spawn_holder(const char *const *kv, int *rfd) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t p = fork();
    if (p == 0) {
        close(fds[0]);
        holding_worker(redis_url, fds[1], kv);
    }
    close(fds[1]);
    *rfd = fds[0];
    return p;
}

/* Reads one "batch attempt" report from a holding worker within
 * timeout_ms; 0 when none came. */
static int read_report(int fd, int timeout_ms, char *batch, size_t size, int *attempt) {
    char line[200];
    size_t n = 0;
    long long deadline = now_us() + (long long)timeout_ms * 1000;
    while (n + 1 < sizeof(line)) {
        long long left = (deadline - now_us()) / 1000;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) return 0;
        if (read(fd, line + n, 1) != 1) return 0;
        if (line[n] == '\n') break;
        n++;
    }
    line[n] = '\0';
    char b[RUNLANE_ID_MAX];
    if (sscanf(line, "%63s %d", b, attempt) != 2) return 0;
    snprintf(batch, size, "%s", b);
    return 1;
}

static void reap(pid_t p) {
    int st;
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
}

/* Issue 9: a batch whose three successive owners die (kill -9, SIGSTOP past
 * the lease, kill -9) with max.attempts=3 is not dead-lettered: worker
 * deaths count against max.stalls, not max.attempts. The fourth owner
 * answers it (attempt 4, same batch). */
static void test_three_owners_die_batch_is_answered(void) {
    new_prefix("stall");
    const char *kv[] = {"batch.window.ms", "0", "lease.ms", "600", "max.attempts", "3", NULL};
    runlane_t *prod = make_client(redis_url, kv);
    char id[RUNLANE_ID_MAX], bid[RUNLANE_ID_MAX] = "", got[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, prod, "s-1", "hello", NULL));
    int attempt = 0, fd1, fd2, fd3;
    /* Owner 1: kill -9 while it holds the batch. */
    pid_t p1 = spawn_holder(kv, &fd1);
    RL_CHECK_MSG(read_report(fd1, 10000, bid, sizeof(bid), &attempt), "owner 1 got no batch");
    RL_CHECK_INT(1, attempt);
    reap(p1);
    close(fd1);
    /* Owner 2: stopped (SIGSTOP) longer than the lease. */
    pid_t p2 = spawn_holder(kv, &fd2);
    RL_CHECK_MSG(read_report(fd2, 10000, got, sizeof(got), &attempt), "owner 2 got no batch");
    RL_CHECK_STR(bid, got);
    RL_CHECK_INT(2, attempt);
    kill(p2, SIGSTOP);
    /* Owner 3 takes it over once owner 2's lease expired; then kill -9. */
    pid_t p3 = spawn_holder(kv, &fd3);
    RL_CHECK_MSG(read_report(fd3, 10000, got, sizeof(got), &attempt), "owner 3 got no batch");
    RL_CHECK_STR(bid, got);
    RL_CHECK_INT(3, attempt);
    reap(p3);
    close(fd3);
    reap(p2); /* SIGKILL ends a stopped process too */
    close(fd2);
    /* Owner 4 answers it. */
    runlane_t *w = make_client(redis_url, kv);
    RL_CHECK_OK(runlane_start(w));
    int answered = 0, dead = 0;
    for (int t = 0; t < 100 && !answered && !dead; t++) {
        runlane_event_t *ev = runlane_poll(w, 100);
        if (ev && runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            RL_CHECK_STR(bid, runlane_event_batch_id(ev));
            RL_CHECK_INT(4, runlane_event_attempt(ev));
            RL_CHECK_OK(runlane_batch_ack(w, runlane_event_batch_id(ev), NULL));
            answered = 1;
        }
        runlane_event_destroy(ev);
        dead = status_int(prod, "dead") > 0;
    }
    RL_CHECK_MSG(answered && !dead, "the batch after three worker deaths: answered %d, dead-lettered %d",
                 answered, dead);
    RL_CHECK_INT(0, status_int(prod, "dead"));
    RL_CHECK(wait_drained(prod, 5000));
    runlane_destroy(w);
    runlane_destroy(prod);
}

static void test_kill9_stale_token_refused(void) {
    new_prefix("stale");
    rl_store_opts_t o = {redis_url, prefix, 1, 2000, 2000, {0}, 0, 0};
    rl_policy_t pol = {.window_ms = 0, .max_wait_ms = 0, .max_messages = 100,
                       .max_bytes = 1 << 20, .lease_ms = 400, .max_attempts = 5, .max_stalls = 5,
                       .backoff_base_ms = 10, .backoff_max_ms = 100, .backoff_jitter = 0.0,
                       .idem_ttl_ms = 60000};
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK(st != NULL);
    char id[RUNLANE_ID_MAX];
    int dup;
    RL_CHECK_OK(st->ops->enqueue(st, &pol, "s-1", "{\"content\":\"x\"}", 1, NULL, id, &dup));
    int fds[2];
    RL_CHECK(pipe(fds) == 0);
    pid_t p = fork();
    if (p == 0) {
        /* The doomed worker claims through its own connection. */
        rl_store_t *mine = rl_store_open(&o);
        rl_claim_t *cl = NULL;
        int n = 0;
        if (!mine || mine->ops->claim(mine, &pol, "doomed", 1, &cl, &n) || n != 1) _exit(3);
        if (write(fds[1], cl[0].token, strlen(cl[0].token) + 1) < 0) _exit(4);
        pause();
        _exit(0);
    }
    close(fds[1]);
    char token[32] = "";
    RL_CHECK(read(fds[0], token, sizeof(token)) > 0);
    close(fds[0]);
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    sleep_ms(500); /* past the 400 ms lease */
    int rec = 0, dead = 0;
    RL_CHECK_OK(st->ops->recover(st, &pol, &rec, &dead));
    RL_CHECK_INT(1, rec);
    rl_claim_t *cl = NULL;
    int n = 0;
    RL_CHECK_OK(st->ops->claim(st, &pol, "survivor", 1, &cl, &n));
    RL_CHECK_INT(1, n);
    RL_CHECK_INT(2, cl[0].attempt);
    RL_CHECK_INT(RUNLANE_ERR_STALE, st->ops->ack(st, &pol, "s-1", token));
    RL_CHECK_OK(st->ops->ack(st, &pol, "s-1", cl[0].token));
    rl_claim_free(&cl[0]);
    free(cl);
    st->ops->destroy(st);
}

/* redis.wait.replicas with the replicas out of reach: a claim's script
 * ran on the master (the conversation is leased there) but WAIT fell
 * short, so the worker is told the claim failed and does not run it. The
 * store gives such claims back at once. Before, they stayed leased to a
 * worker that did not know of them: each expiry counted as a stall, and a
 * replica outage of max.stalls leases dead-lettered every conversation a
 * worker tried to take. */
static void test_claim_short_of_replicas_is_given_back(void) {
    new_prefix("waitshort");
    rl_store_opts_t plain = {redis_url, prefix, 1, 2000, 2000, {0}, 0, 0};
    /* the test server has no replica: every WAIT falls short */
    rl_store_opts_t waiting = {redis_url, prefix, 1, 2000, 2000, {0}, 1, 50};
    rl_policy_t pol = {.window_ms = 0, .max_wait_ms = 0, .max_messages = 100,
                       .max_bytes = 1 << 20, .lease_ms = 60000, .max_attempts = 5,
                       .max_stalls = 0, .backoff_base_ms = 10, .backoff_max_ms = 100,
                       .backoff_jitter = 0.0, .idem_ttl_ms = 60000};
    rl_store_t *st = rl_store_open(&plain);
    rl_store_t *ws = rl_store_open(&waiting);
    RL_CHECK(st != NULL && ws != NULL);
    char id[RUNLANE_ID_MAX];
    int dup;
    RL_CHECK_OK(st->ops->enqueue(st, &pol, "w-1", "{\"content\":\"x\"}", 1, NULL, id, &dup));
    rl_claim_t *cl = NULL;
    int n = 0;
    int rc = ws->ops->claim(ws, &pol, "short", 5, &cl, &n);
    const runlane_error_t *e = runlane_error_last();
    RL_CHECK_MSG(rc == RUNLANE_ERR_STORE && runlane_error_retriable(e) &&
                     strstr(runlane_error_message(e), "replicas"),
                 "claim short of replicas: rc %d: %s", rc, runlane_error_message(e));
    RL_CHECK_INT(0, n);
    /* not held: another worker takes it now, as its first attempt (a lease
     * of 60 s left with "short" would block this claim) */
    RL_CHECK_OK(st->ops->claim(st, &pol, "next", 5, &cl, &n));
    RL_CHECK_INT(1, n);
    RL_CHECK_INT(1, cl[0].attempt);
    RL_CHECK_OK(st->ops->ack(st, &pol, "w-1", cl[0].token));
    rl_claim_free(&cl[0]);
    free(cl);
    char *dl = NULL;
    RL_CHECK_OK(st->ops->dead_list(st, 0, 10, &dl));
    RL_CHECK_MSG(dl && strstr(dl, "w-1") == NULL, "dead letters: %s", dl ? dl : "(null)");
    free(dl);
    /* the same for a claim by name (a wake-up that announced "w-2") */
    RL_CHECK_OK(st->ops->enqueue(st, &pol, "w-2", "{\"content\":\"y\"}", 1, NULL, id, &dup));
    rc = ws->ops->claim_named(ws, &pol, "short", 5, 0, "w-2", &cl, &n);
    RL_CHECK_MSG(rc == RUNLANE_ERR_STORE, "named claim short of replicas: rc %d", rc);
    RL_CHECK_INT(0, n);
    RL_CHECK_OK(st->ops->claim(st, &pol, "next", 5, &cl, &n));
    RL_CHECK_INT(1, n);
    RL_CHECK_STR("w-2", cl[0].conversation_id);
    RL_CHECK_INT(1, cl[0].attempt);
    RL_CHECK_OK(st->ops->ack(st, &pol, "w-2", cl[0].token));
    rl_claim_free(&cl[0]);
    free(cl);
    ws->ops->destroy(ws);
    st->ops->destroy(st);
}

static void test_redis_restart_mid_run(void) {
    /* A private Redis with appendonly, restarted while producers and
     * workers run. */
    char dir[300], cmd[2048], src[512];
    snprintf(src, sizeof(src), "%s", __FILE__);
    char *cut = strstr(src, "/tests/c/");
    RL_CHECK(cut != NULL);
    *cut = '\0';
    snprintf(dir, sizeof(dir), "%s/redis-aof", tmpdir);
    snprintf(cmd, sizeof(cmd), "%s/scripts/redis-server.sh start %s --appendonly yes --appendfsync always",
             src, dir);
    FILE *pp = popen(cmd, "r");
    int port = 0;
    RL_CHECK(pp && fscanf(pp, "%d", &port) == 1);
    pclose(pp);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    new_prefix("restart");
    char log[300];
    snprintf(log, sizeof(log), "%s/restart.log", tmpdir);
    unlink(log);
    const char *kv[] = {"batch.window.ms", "10", "lease.ms", "10000", "redis.command.timeout.ms", "500",
                        NULL};
    enum { W = 2, P = 2, NCONV = 20, PER = 15 };
    pid_t workers[W], producers[P];
    for (int i = 0; i < W; i++) workers[i] = spawn_worker(url, log, 5, kv);
    /* Producers pace themselves over ~600 ms; Redis goes down at ~200 ms. */
    for (int i = 0; i < P; i++) producers[i] = spawn_producer(url, i, NCONV, PER, 40);
    sleep_ms(200);
    snprintf(cmd, sizeof(cmd), "redis-cli -p %d shutdown >/dev/null 2>&1; sleep 0.3; redis-server --bind 127.0.0.1 --port %d --dir %s --appendonly yes --appendfsync always --daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log; for i in $(seq 1 100); do redis-cli -p %d ping >/dev/null 2>&1 && break; sleep 0.05; done",
             port, port, dir, dir, dir, port);
    RL_CHECK_INT(0, system(cmd));
    for (int i = 0; i < P; i++) waitpid(producers[i], NULL, 0);
    runlane_t *rl = make_client(url, NULL);
    int drained = wait_drained(rl, 60000);
    runlane_destroy(rl);
    stop_all(workers, W);
    snprintf(cmd, sizeof(cmd), "%s/scripts/redis-server.sh stop %s", src, dir);
    if (system(cmd) != 0) fprintf(stderr, "could not stop the private redis\n");
    RL_CHECK_MSG(drained, "queue did not drain after the restart");
    check_log(log, P * NCONV * PER, P);
}

int main(void) {
    const char *u = rl_test_redis_url();
    if (!u) {
        if (getenv("RUNLANE_REQUIRE_REDIS")) {
            printf("0 passed, 1 failed\n");
            return 1;
        }
        fprintf(stderr, "RUNLANE_TEST_REDIS not set: nothing to run\n");
        printf("0 passed, 0 failed\n");
        return 0;
    }
    snprintf(redis_url, sizeof(redis_url), "%s", u);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/runlane-mp-%ld", (long)getpid());
    mkdir(tmpdir, 0755);
    RL_RUN(test_producers_and_workers_exactly_once_in_order);
    RL_RUN(test_many_workers_claim_at_once_one_lease_each);
    RL_RUN(test_kill9_worker_batches_come_back);
    RL_RUN(test_kill9_stale_token_refused);
    RL_RUN(test_claim_short_of_replicas_is_given_back);
    RL_RUN(test_three_owners_die_batch_is_answered);
    RL_RUN(test_redis_restart_mid_run);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rl_test_summary();
}
