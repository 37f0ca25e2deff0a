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

#endif
