/* redis_link.h - how the Redis store reaches its data (internal).
 *
 * Three ways to reach a node, one interface: a single server, a Redis
 * Cluster (slot map from CLUSTER SLOTS, MOVED/ASK followed), or the master
 * that Sentinel names (asked again after every lost connection). The store
 * builds commands and reads replies; the link decides which node each
 * command goes to, pipelines the commands of one call per node (one round
 * trip per node, all nodes written before any is read), and owns the
 * connections, their reconnect backoff and the setup of a new connection
 * (a callback of the store: AUTH, SELECT, CLIENT SETNAME, SCRIPT LOAD).
 *
 * Bounds: at most RL_LINK_MAX_REDIRECTS redirections (MOVED, ASK, NOSCRIPT
 * reload) per call, one slot map refresh per call, RL_LINK_MAX_NODES nodes;
 * no sleeps (a node in reconnect backoff fails the call at once, retriable).
 * A command is never sent twice after an I/O error (it may have run): the
 * call fails retriable and the next call reconnects / refreshes the map.
 *
 * Not thread-safe: one link per store, used by one thread at a time. */
#ifndef RUNLANE_REDIS_LINK_H
#define RUNLANE_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "redis_conn.h"

#define RL_LINK_MAX_REDIRECTS 5
#define RL_LINK_MAX_NODES 256
#define RL_CLUSTER_SLOTS 16384

enum { RL_LINK_SINGLE = 0, RL_LINK_CLUSTER = 1, RL_LINK_SENTINEL = 2 };

/* Prepares a new connection to a data node (after connect, TLS and PING).
 * scripts_only: the node answered NOSCRIPT, load the scripts again. */
typedef int (*rl_redis_setup_fn)(redisContext *c, const char *where, int scripts_only,
                                 void *opaque);

typedef struct rl_redis_link_opts {
    int mode;
    /* single: one host:port or sock; cluster: seed nodes; sentinel: the
     * sentinels */
    int nseeds;
    const char *const *hosts;
    const int *ports;
    const char *sock;
    const char *where;       /* single: "host:port/db" for messages */
    const char *master_name; /* sentinel */
    int connect_timeout_ms, command_timeout_ms;
    rl_redis_tls_t *tls; /* borrowed; NULL: plaintext */
    const char *secret;  /* masked in every message (the password) */
    rl_redis_setup_fn setup;
    void *opaque;
    /* redis.wait.replicas / redis.wait.timeout.ms: after the writes of a
     * call, WAIT on each node written (same round trip) */
    int wait_replicas, wait_timeout_ms;
} rl_redis_link_opts_t;

/* One command. `write`: it changes state that must survive (WAIT). The
 * routing key is argv[3] for EVALSHA/EVAL with keys, else argv[1]; a
 * command without key (TIME) goes to any node the call uses. */
typedef struct rl_redis_cmd {
    int argc;
    const char *const *argv;
    const size_t *lens;
    int write;
    /* When WAIT falls short (redis.wait.replicas) the call fails and its
     * replies are freed, except this command's: its caller undoes what
     * the master did (a claim gives its leases back). */
    int keep_if_short;
} rl_redis_cmd_t;

typedef struct rl_redis_link rl_redis_link_t;

/* Copies what it needs from `o`. Connects nothing. */
rl_redis_link_t *rl_redis_link_new(const rl_redis_link_opts_t *o);
void rl_redis_link_free(rl_redis_link_t *l);

/* Connects (single/sentinel: the server; cluster: the slot map, from the
 * first seed or node that gives it, over a connection set up like any
 * other), so that a wrong address, password or certificate is reported at
 * open. A cluster's masters are connected when a call first needs them: a
 * master that is down (not yet failed over) fails the calls on its slots,
 * retriable, not the open. */
int rl_redis_link_connect(rl_redis_link_t *l);

/* Runs n commands; replies[i] (owned by the caller, freeReplyObject) is
 * each command's reply, error replies included, or all NULL on failure
 * (but for keep_if_short commands when WAIT fell short).
 * SIGPIPE must be held off by the caller. */
int rl_redis_link_exec(rl_redis_link_t *l, const rl_redis_cmd_t *cmds, size_t n,
                       redisReply **replies);

/* Single server or Sentinel: the one data connection, connected (and set
 * up) when needed, for a command the store drives itself without blocking
 * (the wake-up's BZPOPMIN). NULL with the error set when it cannot connect;
 * a cluster has no one connection: NULL, RUNLANE_ERR_UNSUPPORTED. */
redisContext *rl_redis_link_single_context(rl_redis_link_t *l);
/* An I/O failure on that connection: drops it (the next call reconnects)
 * and returns the retriable error, set. */
int rl_redis_link_single_io_error(rl_redis_link_t *l, int saved_errno);

/* "host:port/db", "cluster host:port,...", "sentinel <name> via host:port,..." */
const char *rl_redis_link_where(const rl_redis_link_t *l);
int rl_redis_link_mode(const rl_redis_link_t *l);

/* Cluster: the master (index among the masters of the current map, 0..)
 * owning `slot`, -1 unknown; the number of masters in *nmasters. */
int rl_redis_link_master_of(rl_redis_link_t *l, int slot, int *nmasters);

/* Counters, for tests and status. */
typedef struct rl_redis_link_stats {
    long moved, ask, refreshes, rediscoveries, noscript;
} rl_redis_link_stats_t;
void rl_redis_link_stats(const rl_redis_link_t *l, rl_redis_link_stats_t *out);

/* Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag, mod 16384. */
int rl_redis_key_slot(const char *key, size_t len);

/* The hash tag of partition p of n in cluster mode (NUL-terminated, at
 * most 15 chars): "<p>" or "<p>.<k>" with the smallest k that puts the
 * tag's slot in the p-th of n equal slot ranges, so that n partitions
 * spread evenly over masters owning equal contiguous ranges (what
 * `redis-cli --cluster create` and managed services set up). Depends on
 * p and n only, never on the current map: every client agrees. */
void rl_redis_cluster_tag(int p, int n, char *out, size_t size);

#endif
