/* cost_driver.c - runlane's side of tests/bench/redis_cost.py (not a test).
 *
 *   cost_driver produce URL PREFIX RATE SECONDS NCONV INDEX NPRODUCERS PAD
 *       Enqueues RATE messages/s for SECONDS with runlane_enqueue (one call
 *       per message, like a web handler), to conversations c0..c(NCONV-1)
 *       round robin; message i of producer INDEX goes to conversation
 *       (i * NPRODUCERS + INDEX) % NCONV. Content: "t<CLOCK_MONOTONIC ns> "
 *       padded to PAD bytes. Prints `R {"sent":N,"seconds":S}` at the end.
 *   cost_driver produce-pipelined (same arguments)
 *       The same messages, but the producer wakes every 2 ms and sends what
 *       is due in one runlane_enqueue_many call: one pipelined round trip,
 *       as BullMQ's producer (baseline/src/cost.ts) sends the adds due when
 *       its setTimeout (1 ms at least) fires concurrently, and ioredis
 *       writes them back to back.
 *   cost_driver work URL PREFIX LATFILE [KEY=VALUE...]
 *       A worker (runlane_start, custom backend: every batch event acked at
 *       once). Extra configuration as KEY=VALUE (batch.max.messages=1...).
 *       Every 100 ms prints `P <messages> <batches>`; on SIGTERM/SIGINT it
 *       stops and prints `R {json}`: messages, batches, per-script calls and
 *       empty replies seen by this process's Redis connections (see below).
 *       LATFILE ("-": none): one line per message, enqueue -> delivered µs
 *       (CLOCK_MONOTONIC is one clock for every process of the machine).
 *
 * Script counts: the hiredis entry points the store calls are wrapped at link
 * time (-Wl,--wrap, see CMakeLists.txt), so every EVALSHA/EVAL/FCALL this
 * process sends is counted per script, with the replies that carry nothing
 * (nil, false, or numbers only: see reply_is_empty). A script is named by the first word of its
 * source's first comment line ("-- claim: ..." -> claim), learnt from the
 * SCRIPT LOAD that returns its sha. This is client-side bookkeeping only: it
 * adds no Redis command and no Redis CPU.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "runlane.h"

/* ------------------------------------------------------------------ */
/* Script accounting through --wrap                                   */
/* ------------------------------------------------------------------ */

#define MAX_SCRIPTS 64
#define MAX_CTX 32

typedef struct {
    char sha[41];
    char name[32];
    long long calls, empty;
} script_t;

typedef struct {
    redisContext *c;
    int *q; /* script index per pending reply, -1 plain command, -2 SCRIPT LOAD */
    char (*load_name)[32];
    size_t head, len, cap;
} ctxq_t;

static pthread_mutex_t acc_mu = PTHREAD_MUTEX_INITIALIZER;
static script_t scripts[MAX_SCRIPTS];
static int nscripts;
static ctxq_t ctxs[MAX_CTX];
static long long unmatched;

redisReply *__real_redisCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen);
int __real_redisAppendCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen);
int __real_redisGetReply(redisContext *c, void **reply);
void __real_redisFree(redisContext *c);

static int script_by(const char *sha, const char *name) {
    for (int i = 0; i < nscripts; i++)
        if ((sha && strcmp(scripts[i].sha, sha) == 0) || (name && !sha && strcmp(scripts[i].name, name) == 0))
            return i;
    if (nscripts == MAX_SCRIPTS) return -1;
    script_t *s = &scripts[nscripts];
    snprintf(s->sha, sizeof(s->sha), "%s", sha ? sha : "");
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "?");
    return nscripts++;
}

/* "-- claim: leases one ..." -> "claim" */
static void name_of_source(const char *src, size_t len, char out[32]) {
    size_t i = 0;
    while (i < len && (src[i] == '-' || src[i] == ' ')) i++;
    size_t k = 0;
    while (i < len && k < 31 && src[i] != ':' && src[i] != ' ' && src[i] != '\n') out[k++] = src[i++];
    out[k] = '\0';
    if (!k) snprintf(out, 32, "unnamed");
}

static int is_cmd(const char *a, size_t n, const char *want) {
    return strlen(want) == n && strncasecmp(a, want, n) == 0;
}

/* Which script a command runs: index, -1 none, -2 SCRIPT LOAD (name in out). */
static int classify(int argc, const char **argv, const size_t *lens, char load_name[32]) {
    if (argc >= 2 && is_cmd(argv[0], lens[0], "EVALSHA")) {
        char sha[41];
        snprintf(sha, sizeof(sha), "%.*s", (int)(lens[1] < 40 ? lens[1] : 40), argv[1]);
        return script_by(sha, NULL);
    }
    if (argc >= 2 && (is_cmd(argv[0], lens[0], "EVAL") || is_cmd(argv[0], lens[0], "EVAL_RO"))) {
        char name[32];
        name_of_source(argv[1], lens[1], name);
        return script_by(NULL, name);
    }
    if (argc >= 2 && (is_cmd(argv[0], lens[0], "FCALL") || is_cmd(argv[0], lens[0], "FCALL_RO"))) {
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)(lens[1] < 31 ? lens[1] : 31), argv[1]);
        return script_by(NULL, name);
    }
    if (argc >= 3 && is_cmd(argv[0], lens[0], "SCRIPT") && is_cmd(argv[1], lens[1], "LOAD")) {
        name_of_source(argv[2], lens[2], load_name);
        return -2;
    }
    return -1;
}

/* A reply that carries nothing: nil, false, or an array of nothing but numbers
 * and nils (e.g. {now, next due} of a claim that found nothing). A claim
 * always returns strings (batch id, token, messages) for what it leased. */
static int reply_is_empty(const redisReply *r) {
    if (r->type == REDIS_REPLY_NIL || (r->type == REDIS_REPLY_BOOL && r->integer == 0)) return 1;
    if (r->type != REDIS_REPLY_ARRAY) return 0;
    for (size_t i = 0; i < r->elements; i++) {
        int t = r->element[i]->type;
        if (t != REDIS_REPLY_INTEGER && t != REDIS_REPLY_NIL && t != REDIS_REPLY_DOUBLE) return 0;
    }
    return 1;
}

static void account(int idx, const char *load_name, const redisReply *r) {
    if (!r) return;
    if (idx == -2 && r->type == REDIS_REPLY_STRING && r->len == 40) {
        int i = script_by(r->str, NULL);
        if (i >= 0) snprintf(scripts[i].name, sizeof(scripts[i].name), "%s", load_name);
    } else if (idx >= 0 && !(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)) {
        scripts[idx].calls++;
        if (reply_is_empty(r)) scripts[idx].empty++;
    }
}

static ctxq_t *ctx_of(redisContext *c, int create) {
    ctxq_t *freeslot = NULL;
    for (int i = 0; i < MAX_CTX; i++) {
        if (ctxs[i].c == c) return &ctxs[i];
        if (!ctxs[i].c && !freeslot) freeslot = &ctxs[i];
    }
    if (!create || !freeslot) return NULL;
    freeslot->c = c;
    freeslot->head = freeslot->len = 0;
    return freeslot;
}

redisReply *__wrap_redisCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen) {
    char load_name[32] = "";
    pthread_mutex_lock(&acc_mu);
    int idx = classify(argc, argv, argvlen, load_name);
    pthread_mutex_unlock(&acc_mu);
    redisReply *r = __real_redisCommandArgv(c, argc, argv, argvlen);
    pthread_mutex_lock(&acc_mu);
    account(idx, load_name, r);
    pthread_mutex_unlock(&acc_mu);
    return r;
}

int __wrap_redisAppendCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen) {
    int rc = __real_redisAppendCommandArgv(c, argc, argv, argvlen);
    if (rc != REDIS_OK) return rc;
    pthread_mutex_lock(&acc_mu);
    char load_name[32] = "";
    int idx = classify(argc, argv, argvlen, load_name);
    ctxq_t *q = ctx_of(c, 1);
    if (q && q->len == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 256;
        int *nq = malloc(ncap * sizeof(*nq));
        char(*nn)[32] = malloc(ncap * sizeof(*nn));
        if (nq && nn) {
            for (size_t i = 0; i < q->len; i++) {
                nq[i] = q->q[(q->head + i) % q->cap];
                memcpy(nn[i], q->load_name[(q->head + i) % q->cap], 32);
            }
            free(q->q);
            free(q->load_name);
            q->q = nq;
            q->load_name = nn;
            q->cap = ncap;
            q->head = 0;
        } else {
            free(nq);
            free(nn);
            q = NULL;
        }
    }
    if (q) {
        size_t at = (q->head + q->len) % q->cap;
        q->q[at] = idx;
        memcpy(q->load_name[at], load_name, 32);
        q->len++;
    } else {
        unmatched++;
    }
    pthread_mutex_unlock(&acc_mu);
    return rc;
}

int __wrap_redisGetReply(redisContext *c, void **reply) {
    int rc = __real_redisGetReply(c, reply);
    pthread_mutex_lock(&acc_mu);
    ctxq_t *q = ctx_of(c, 0);
    if (rc == REDIS_OK && reply && *reply) {
        if (q && q->len) {
            account(q->q[q->head], q->load_name[q->head], *reply);
            q->head = (q->head + 1) % q->cap;
            q->len--;
        } else {
            unmatched++;
        }
    }
    pthread_mutex_unlock(&acc_mu);
    return rc;
}

void __wrap_redisFree(redisContext *c) {
    pthread_mutex_lock(&acc_mu);
    ctxq_t *q = ctx_of(c, 0);
    if (q) {
        q->c = NULL;
        q->head = q->len = 0;
    }
    pthread_mutex_unlock(&acc_mu);
    __real_redisFree(c);
}

/* ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static runlane_t *client(const char *url, const char *prefix, int nkv, char **kv) {
    runlane_conf_t *c = runlane_conf_new();
    char err[512];
    if (runlane_conf_set(c, "store", url, err, sizeof(err)) ||
        runlane_conf_set(c, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(c, "batch.window.ms", "0", err, sizeof(err))) {
        fprintf(stderr, "cost_driver: %s\n", err);
        exit(1);
    }
    for (int i = 0; i < nkv; i++) {
        char key[128];
        const char *eq = strchr(kv[i], '=');
        if (!eq || (size_t)(eq - kv[i]) >= sizeof(key)) {
            fprintf(stderr, "cost_driver: bad KEY=VALUE %s\n", kv[i]);
            exit(2);
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv[i]), kv[i]);
        if (runlane_conf_set(c, key, eq + 1, err, sizeof(err))) {
            fprintf(stderr, "cost_driver: %s\n", err);
            exit(2);
        }
    }
    runlane_t *rl = runlane_new(c, err, sizeof(err));
    runlane_conf_destroy(c);
    if (!rl) {
        fprintf(stderr, "cost_driver: %s\n", err);
        exit(1);
    }
    return rl;
}

static void content_of(char *content, size_t size, int pad) {
    int n = snprintf(content, size, "t%lld ", (long long)mono_ns());
    memset(content + n, 'x', (size_t)(pad - n));
    content[pad] = '\0';
}

static int produce(int argc, char **argv, int pipelined) {
    if (argc < 10) return 2;
    const char *url = argv[2], *prefix = argv[3];
    double rate = atof(argv[4]), secs = atof(argv[5]);
    int nconv = atoi(argv[6]), index = atoi(argv[7]), nprod = atoi(argv[8]), pad = atoi(argv[9]);
    if (rate <= 0 || secs <= 0 || nconv <= 0 || nprod <= 0 || pad < 24 || pad > 4096) return 2;
    /* KEY=VALUE after the fixed arguments: the producers' batching policy
     * (an enqueue computes the due time with it) */
    runlane_t *rl = client(url, prefix, argc - 10, argv + 10);
    char conv[32], id[RUNLANE_ID_MAX], content[4200];
    /* one tick's messages as a JSON array (content is ASCII: no escaping) */
    size_t cap = 1 << 20, len = 0;
    char *many = pipelined ? malloc(cap) : NULL;
    if (pipelined && !many) return 1;
    long long total = (long long)(rate * secs), sent = 0, errors = 0;
    int64_t t0 = mono_ns();
    const int64_t tick = 2000000; /* 2 ms: what is due is sent, then a sleep */
    while (sent < total && !stop_flag) {
        long long due = (long long)((double)(mono_ns() - t0) / 1e9 * rate) + 1;
        if (due > total) due = total;
        long long from = sent;
        len = 0;
        while (sent < due) {
            long long i = sent++;
            snprintf(conv, sizeof(conv), "c%lld", (i * nprod + index) % nconv);
            content_of(content, sizeof(content), pad);
            if (!pipelined) {
                if (runlane_enqueue(id, sizeof(id), NULL, rl, conv, content, NULL) && errors++ < 3)
                    fprintf(stderr, "enqueue: %s\n", runlane_error_message(runlane_error_last()));
                continue;
            }
            if (len + (size_t)pad + 128 > cap) { /* full: send what is there */
                sent--;
                break;
            }
            len += (size_t)snprintf(many + len, cap - len, "%s{\"conversation_id\":\"%s\",\"content\":\"%s\"}",
                                    len ? "," : "[", conv, content);
        }
        if (pipelined && len) {
            snprintf(many + len, cap - len, "]");
            char *result = NULL;
            if (runlane_enqueue_many(&result, rl, many)) {
                errors += sent - from;
                fprintf(stderr, "enqueue_many: %s\n", runlane_error_message(runlane_error_last()));
            }
            runlane_free(result);
        }
        int64_t next = t0 + (int64_t)((double)(sent) / rate * 1e9);
        int64_t wait = next - mono_ns();
        /* pipelined: a whole tick's messages per call (BullMQ's producer
         * sleeps with setTimeout, at least 1 ms, between its batches of
         * concurrent adds) */
        if (pipelined && wait < tick) wait = tick;
        if (wait > 0) {
            if (wait > tick) wait = tick;
            struct timespec ts = {0, (long)wait};
            nanosleep(&ts, NULL);
        }
    }
    double took = (double)(mono_ns() - t0) / 1e9;
    printf("R {\"sent\":%lld,\"errors\":%lld,\"seconds\":%.3f}\n", sent - errors, errors, took);
    fflush(stdout);
    free(many);
    runlane_destroy(rl);
    return 0;
}

static int work(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *url = argv[2], *prefix = argv[3], *latpath = argv[4];
    FILE *lat = strcmp(latpath, "-") ? fopen(latpath, "w") : NULL;
    runlane_t *rl = client(url, prefix, argc - 5, argv + 5);
    if (runlane_start(rl)) {
        fprintf(stderr, "start: %s\n", runlane_error_message(runlane_error_last()));
        return 1;
    }
    long long messages = 0, batches = 0, ack_errors = 0;
    int64_t last_report = 0;
    while (!stop_flag) {
        runlane_event_t *ev = runlane_poll(rl, 50);
        int64_t now = mono_ns();
        if (ev && runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            const char *js = runlane_event_json(ev);
            for (const char *p = strstr(js, "\"content\":\"t"); p; p = strstr(p + 1, "\"content\":\"t")) {
                messages++;
                if (lat) {
                    long long t = strtoll(p + 12, NULL, 10);
                    fprintf(lat, "%lld\n", (long long)((now - t) / 1000));
                }
            }
            if (runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL)) ack_errors++;
            batches++;
        }
        if (ev) runlane_event_destroy(ev);
        if (now - last_report > 100000000) {
            printf("P %lld %lld\n", messages, batches);
            fflush(stdout);
            last_report = now;
        }
    }
    runlane_stop(rl, RUNLANE_STOP_DRAIN, 2000);
    char *metrics = NULL;
    long long claimed = -1;
    if (runlane_metrics(&metrics, rl) == RUNLANE_OK) {
        const char *p = strstr(metrics, "\nrunlane_batches_claimed_total ");
        if (p) claimed = atoll(p + strlen("\nrunlane_batches_claimed_total "));
        runlane_free(metrics);
    }
    printf("R {\"messages\":%lld,\"batches\":%lld,\"batches_claimed\":%lld,\"ack_errors\":%lld,"
           "\"unmatched_replies\":%lld,\"scripts\":{",
           messages, batches, claimed, ack_errors, unmatched);
    pthread_mutex_lock(&acc_mu);
    for (int i = 0; i < nscripts; i++)
        printf("%s\"%s\":{\"calls\":%lld,\"empty\":%lld}", i ? "," : "", scripts[i].name,
               scripts[i].calls, scripts[i].empty);
    pthread_mutex_unlock(&acc_mu);
    printf("}}\n");
    fflush(stdout);
    if (lat) fclose(lat);
    runlane_destroy(rl);
    return 0;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = 2;
    if (argc >= 2 && strcmp(argv[1], "produce") == 0) rc = produce(argc, argv, 0);
    else if (argc >= 2 && strcmp(argv[1], "produce-pipelined") == 0) rc = produce(argc, argv, 1);
    else if (argc >= 2 && strcmp(argv[1], "work") == 0) rc = work(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: cost_driver produce|produce-pipelined URL PREFIX RATE SECONDS NCONV INDEX "
                        "NPRODUCERS PAD [KEY=VALUE...]\n"
                        "       cost_driver work URL PREFIX LATFILE [KEY=VALUE...]\n");
    return rc;
}
