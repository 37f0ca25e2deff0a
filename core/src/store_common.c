/* store_common.c - what both stores share: opening by URL, partitioning,
 * backoff, claim records. */
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
        strncmp(url, "unix://", 7) == 0)
        return rl_store_redis_open(opts);
    rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store: unsupported URL scheme");
    return NULL;
}

int rl_partition_of(const char *conv, int partitions) {
    if (partitions <= 1) return 0;
    return (int)(rl_fnv1a32(conv, strlen(conv)) % (uint32_t)partitions);
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
    claim->conversation_id = claim->messages_json = claim->ckpt_json = NULL;
}
