/* bench_queue.c - throughput of the queue on one store (not a test).
 *
 *   bench_queue STORE_URL [MESSAGES]
 *
 * Prints, as `name<TAB>messages/s` lines (tests/bench/run.sh turns them into
 * a table with ratios to this Redis's raw rate):
 *   enqueue_one      one runlane_enqueue per message (one round trip each)
 *   enqueue_many     runlane_enqueue_many, 100 messages per call (pipelined)
 *   claim_ack        a worker claiming batches and the host acking them,
 *                    end to end through events (batches of 10 messages)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runlane.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static runlane_t *client(const char *url, const char *prefix, const char *window) {
    runlane_conf_t *c = runlane_conf_new();
    char err[512];
    runlane_conf_set(c, "store", url, err, sizeof(err));
    runlane_conf_set(c, "key.prefix", prefix, err, sizeof(err));
    runlane_conf_set(c, "batch.window.ms", window, err, sizeof(err));
    runlane_conf_set(c, "batch.max.messages", "10", err, sizeof(err));
    runlane_conf_set(c, "worker.concurrency", "1000", err, sizeof(err));
    runlane_conf_set(c, "worker.poll.ms", "5", err, sizeof(err));
    runlane_t *rl = runlane_new(c, err, sizeof(err));
    runlane_conf_destroy(c);
    if (!rl) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    return rl;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_queue STORE_URL [MESSAGES]\n");
        return 2;
    }
    const char *url = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    char prefix[64], conv[32], id[RUNLANE_ID_MAX];
    const int nconv = 1000;

    /* 1. enqueue, one round trip per message */
    snprintf(prefix, sizeof(prefix), "bench%ld-a", (long)getpid());
    runlane_t *rl = client(url, prefix, "60000");
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(conv, sizeof(conv), "c%d", i % nconv);
        if (runlane_enqueue(id, sizeof(id), NULL, rl, conv, "hello, this is a benchmark message", NULL)) {
            fprintf(stderr, "enqueue: %s\n", runlane_error_message(runlane_error_last()));
            return 1;
        }
    }
    printf("enqueue_one\t%.0f\n", n / (now_s() - t0));
    runlane_destroy(rl);

    /* 2. enqueue_many, 100 per call */
    snprintf(prefix, sizeof(prefix), "bench%ld-b", (long)getpid());
    rl = client(url, prefix, "60000");
    size_t cap = 100 * 96 + 16;
    char *batch = malloc(cap);
    t0 = now_s();
    for (int i = 0; i < n; i += 100) {
        size_t len = 0;
        batch[len++] = '[';
        for (int k = 0; k < 100; k++)
            len += (size_t)snprintf(batch + len, cap - len,
                                    "%s{\"conversation_id\":\"c%d\",\"content\":\"hello, this is a benchmark message\"}",
                                    k ? "," : "", (i + k) % nconv);
        batch[len++] = ']';
        batch[len] = '\0';
        char *res = NULL;
        if (runlane_enqueue_many(&res, rl, batch)) {
            fprintf(stderr, "enqueue_many: %s\n", runlane_error_message(runlane_error_last()));
            return 1;
        }
        runlane_free(res);
    }
    printf("enqueue_many\t%.0f\n", n / (now_s() - t0));
    free(batch);
    runlane_destroy(rl);

    /* 3. claim + ack: messages queued up front (window 0), then drained by
     * one worker whose host acks every batch event. */
    snprintf(prefix, sizeof(prefix), "bench%ld-c", (long)getpid());
    rl = client(url, prefix, "0");
    for (int i = 0; i < n; i++) {
        snprintf(conv, sizeof(conv), "c%d", i % nconv);
        runlane_enqueue(id, sizeof(id), NULL, rl, conv, "hello, this is a benchmark message", NULL);
    }
    int done = 0, batches = 0;
    t0 = now_s();
    runlane_start(rl);
    while (done < n) {
        runlane_event_t *ev = runlane_poll(rl, 1000);
        if (!ev) {
            fprintf(stderr, "claim_ack: stalled at %d of %d\n", done, n);
            return 1;
        }
        if (runlane_event_type(ev) == RUNLANE_EVENT_BATCH) {
            const char *js = runlane_event_json(ev);
            for (const char *p = strstr(js, "\"ts_ms\""); p; p = strstr(p + 1, "\"ts_ms\"")) done++;
            runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL);
            batches++;
        }
        runlane_event_destroy(ev);
    }
    double dt = now_s() - t0;
    printf("claim_ack\t%.0f\n", n / dt);
    printf("claim_ack_batches\t%.0f\n", batches / dt);
    runlane_destroy(rl);
    return 0;
}
