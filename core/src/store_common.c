/* store_common.c - what both stores share: opening by URL, partitioning,
 * backoff, claim and reply records, batch ids. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store.h"

rl_store_t *rl_store_open(const rl_store_opts_t *opts) {
    const char *url = opts->url;
    if (strcmp(url, "memory") == 0 || strncmp(url, "memory://", 9) == 0)
        return rl_store_memory_open(opts);
    if (strncmp(url, "redis://", 8) == 0 || strncmp(url, "rediss://", 9) == 0 ||
        strncmp(url, "unix://", 7) == 0 || strncmp(url, "redis+", 6) == 0 ||
        strncmp(url, "rediss+", 7) == 0)
        return rl_store_redis_open(opts);
    rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store: unsupported URL scheme");
    return NULL;
}

int rl_partition_of(const char *conv, int partitions) {
    if (partitions <= 1) return 0;
    return (int)(rl_fnv1a32(conv, strlen(conv)) % (uint32_t)partitions);
}

/* Digits at *p (at most 19, at least one); advances *p past them. */
static int digits(const char **p, long long *out) {
    const char *q = *p;
    long long v = 0;
    int n = 0;
    while (*q >= '0' && *q <= '9' && n < 19) {
        v = v * 10 + (*q - '0');
        q++;
        n++;
    }
    if (n == 0 || (*q >= '0' && *q <= '9')) return 0;
    *p = q;
    *out = v;
    return 1;
}

int rl_batch_partition(const char *batch_id, int partitions) {
    const char *p = batch_id;
    long long ms, part, seq;
    if (!p || *p++ != 'b' || !digits(&p, &ms) || *p++ != '-' || !digits(&p, &part) ||
        *p++ != '-' || !digits(&p, &seq) || *p)
        return -1;
    if (partitions < 1) partitions = 1;
    return part < partitions ? (int)part : -1;
}

int64_t rl_backoff_ms(const rl_policy_t *pol, int64_t attempts, double u) {
    if (attempts < 1) attempts = 1;
    double d = (double)pol->backoff_base_ms;
    for (int64_t i = 1; i < attempts && d < (double)pol->backoff_max_ms; i++) d *= 2;
    if (d > (double)pol->backoff_max_ms) d = (double)pol->backoff_max_ms;
    d *= 1.0 - pol->backoff_jitter * u;
    return (int64_t)llround(d);
}

void rl_claim_free(rl_claim_t *claim) {
    if (!claim) return;
    free(claim->conversation_id);
    free(claim->messages_json);
    free(claim->ckpt_json);
    free(claim->settle_json);
    claim->conversation_id = claim->messages_json = claim->ckpt_json = claim->settle_json = NULL;
}

void rl_replies_free(rl_reply_t *replies, int n) {
    if (!replies) return;
    for (int i = 0; i < n; i++) free(replies[i].json);
    free(replies);
}
