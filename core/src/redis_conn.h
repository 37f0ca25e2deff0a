/* redis_conn.h - reaching one Redis node: TCP or unix socket, plain or TLS
 * (internal).
 *
 * The store's operations sit on this layer; today it reaches a single
 * server, later Cluster nodes and Sentinel-found masters the same way (one
 * TLS context serves every node). It needs hiredis >= 1.0 and OpenSSL.
 *
 * Errors are set with rl_error_set and never carry a password or the
 * contents of a key file (file paths only). */
#ifndef RUNLANE_REDIS_CONN_H
#define RUNLANE_REDIS_CONN_H

#include <hiredis/hiredis.h>

#include "store.h"

/* A TLS client context: CA, client certificate and key, the name the
 * server's certificate must carry. Shared by every connection of a store;
 * immutable once built. */
typedef struct rl_redis_tls rl_redis_tls_t;

/* Builds the context from `o`. Each connection verifies the server
 * against redis.tls.server.name, or when unset against the host it dials
 * (so every Cluster node and the master a sentinel names is checked by its
 * own address); `host` (the URL's first host) only checks at build time
 * that a name can be verified. `where` names the server in messages. NULL on failure with
 * the error set (RUNLANE_ERR_INVALID_VALUE naming the key and the file). */
rl_redis_tls_t *rl_redis_tls_new(const rl_tls_opts_t *o, const char *host, const char *where);
void rl_redis_tls_free(rl_redis_tls_t *t);

/* One node to connect to. */
typedef struct rl_redis_node {
    const char *host; /* TCP host, or NULL with sock */
    int port;
    const char *sock;  /* unix socket path */
    const char *where; /* "host:port/db" for messages */
    int connect_timeout_ms, command_timeout_ms;
    rl_redis_tls_t *tls; /* NULL: plaintext */
} rl_redis_node_t;

/* Connects, completes the TLS handshake (verifying the server unless the
 * context skips it), sets the command timeout and TCP keepalive, and sends
 * a PING: any reply (NOAUTH included) proves that a Redis server speaks on
 * the connection, so that a plaintext/TLS mismatch or a refused client
 * certificate is reported here, by name, instead of as a lost connection
 * later (a server that closes the connection instead of answering the
 * PING is tried once more: a server killed as it accepted refuses the
 * second try, retriable). *out is owned by the caller (redisFree).
 * RUNLANE_ERR_STORE:
 * retriable for network trouble, not for a certificate or protocol
 * mismatch. */
int rl_redis_connect(const rl_redis_node_t *n, redisContext **out);

/* Most elements one reply's array may declare. hiredis allocates an
 * array's element pointers as soon as its header arrives, and its default
 * limit is 2^32-1: a broken or hostile server's `*4000000000` would cost
 * 32 GB for 13 bytes. runlane's largest arrays are a batch's messages
 * (batch.max.messages <= 100000) and paged listings, far below this. */
#define RL_REDIS_MAX_ELEMENTS (1 << 20)

/* Applies runlane's limits to a reply reader (every connection's, and the
 * fuzzer's). */
void rl_redis_reader_limits(redisReader *r);

/* Whether the context's last error is a timeout (`saved_errno`: errno
 * right after the failed call). */
int rl_redis_is_timeout(const redisContext *c, int saved_errno);

#endif
