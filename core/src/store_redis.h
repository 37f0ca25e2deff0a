/* store_redis.h - internal pieces of the Redis store that tests reach
 * directly (the store itself is reached through store.h). */
#ifndef RUNLANE_STORE_REDIS_H
#define RUNLANE_STORE_REDIS_H

#include "store.h"

struct redisReply;

/* Decodes one reply of the claim script (an array: batch id, token,
 * attempt, lease expiry, messages JSON[, checkpoint JSON]) into *cl (free
 * with rl_claim_free). RUNLANE_OK, or RUNLANE_ERR_INTERNAL for any other
 * shape, RUNLANE_ERR_NOMEM; `where` names the server in the message. */
int rl_redis_claim_reply(const char *where, const char *conv, const struct redisReply *r,
                         rl_claim_t *cl);

/* How the partitions of a Redis store spread over the masters of its
 * cluster's current slot map: per_master[m] (m < max) partitions on master
 * m, *nmasters masters (1 outside a cluster). Returns the partitions. */
int rl_store_redis_spread(rl_store_t *st, int *per_master, int max, int *nmasters);

/* The link's counters (redis_link.h), for tests. */
void rl_store_redis_link_stats(rl_store_t *st, long *moved, long *ask, long *refreshes,
                               long *rediscoveries);

/* The hash tag of partition `part` (valid until the store is destroyed). */
const char *rl_store_redis_tag(rl_store_t *st, int part);

#endif
