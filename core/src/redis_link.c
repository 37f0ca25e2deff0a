/* redis_link.c - single server, Redis Cluster and Sentinel: which node a
 * command goes to, and the connections to the nodes; see redis_link.h.
 *
 * Cluster routing follows the Redis Cluster specification's client rules:
 * a slot map from CLUSTER SLOTS (asked of any reachable node), MOVED
 * updates the slot and refreshes the whole map once per call (a resharding
 * moves many slots), ASK sends ASKING then the command to the importing
 * node without touching the map. Sentinel follows the Sentinel client
 * guidelines: ask the sentinels in turn with SENTINEL
 * get-master-addr-by-name, move the one that answered to the front, check
 * ROLE on the address it gave, ask again after any lost connection or a
 * READONLY reply (the old master came back as a replica). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "redis_link.h"

#define LINK_BACKOFF_MIN_MS 50
#define LINK_BACKOFF_MAX_MS 2000
#define LINK_MAX_SENTINELS 16
#define LINK_HOST_MAX 255

typedef struct lnode {
    char *host; /* NULL with sock, or a sentinel-mode master not yet found */
    int port;
    char *sock;
    char where[300];
    redisContext *c;
    int64_t retry_at_ms, backoff_ms;
    int down_code, down_retriable;
    char down_msg[400];
    int master; /* cluster: ordinal among the current map's masters, -1 */
} lnode_t;

struct rl_redis_link {
    int mode;
    lnode_t *nodes[RL_LINK_MAX_NODES]; /* single/sentinel: [0] the server */
    int nnodes;
    lnode_t *sentinels[LINK_MAX_SENTINELS];
    int nsentinels;
    char *master_name;
    int16_t slots[RL_CLUSTER_SLOTS]; /* node index, -1: unknown */
    int16_t next_slots[RL_CLUSTER_SLOTS]; /* a map being read */
    int nmasters, map_stale;
    int connect_timeout_ms, command_timeout_ms;
    rl_redis_tls_t *tls;
    char *secret;
    rl_redis_setup_fn setup;
    void *opaque;
    int wait_replicas, wait_timeout_ms;
    char where[400];
    rl_redis_link_stats_t stats;
};

/* ------------------------------------------------------------------ */
/* slots and tags                                                     */
/* ------------------------------------------------------------------ */

static uint16_t crc16(const char *buf, size_t len) {
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

int rl_redis_key_slot(const char *key, size_t len) {
    /* the first {...} with something inside is the hash tag */
    const char *o = memchr(key, '{', len);
    if (o) {
        size_t off = (size_t)(o - key) + 1;
        const char *c = memchr(key + off, '}', len - off);
        if (c && c > key + off) return crc16(key + off, (size_t)(c - (key + off))) & 16383;
    }
    return crc16(key, len) & 16383;
}

void rl_redis_cluster_tag(int p, int n, char *out, size_t size) {
    if (n < 1) n = 1;
    long lo = (long)p * RL_CLUSTER_SLOTS / n, hi = (long)(p + 1) * RL_CLUSTER_SLOTS / n;
    char b[32];
    int len = snprintf(b, sizeof(b), "%d", p);
    long s = rl_redis_key_slot(b, (size_t)len);
    /* a range of 16384/n >= 16 slots: a few hundred tries at most */
    for (int k = 1; (s < lo || s >= hi) && k < 1000000; k++) {
        len = snprintf(b, sizeof(b), "%d.%d", p, k);
        s = rl_redis_key_slot(b, (size_t)len);
    }
    rl_strlcpy(out, b, size);
}

/* ------------------------------------------------------------------ */
/* nodes                                                              */
/* ------------------------------------------------------------------ */

static void node_drop(lnode_t *nd) {
    if (nd && nd->c) {
        redisFree(nd->c);
        nd->c = NULL;
    }
}

static void node_free(lnode_t *nd) {
    if (!nd) return;
    node_drop(nd);
    free(nd->host);
    free(nd->sock);
    free(nd);
}

static void node_set_where(lnode_t *nd) {
    if (nd->sock) snprintf(nd->where, sizeof(nd->where), "unix:%.250s", nd->sock);
    else if (nd->host)
        snprintf(nd->where, sizeof(nd->where), "%s%.200s%s:%d", strchr(nd->host, ':') ? "[" : "",
                 nd->host, strchr(nd->host, ':') ? "]" : "", nd->port);
}

static lnode_t *node_new(const char *host, size_t hlen, int port, const char *sock) {
    lnode_t *nd = calloc(1, sizeof(*nd));
    if (!nd) return NULL;
    nd->master = -1;
    nd->port = port;
    if ((host && !(nd->host = rl_strndup(host, hlen))) || (sock && !(nd->sock = rl_strdup(sock)))) {
        node_free(nd);
        return NULL;
    }
    node_set_where(nd);
    return nd;
}

/* Index of host:port among the nodes, added if new; -1 when the table is
 * full or out of memory. */
static int node_find_add(rl_redis_link_t *l, const char *host, size_t hlen, int port) {
    if (hlen == 0 || hlen > LINK_HOST_MAX || port < 1 || port > 65535) return -1;
    for (int i = 0; i < l->nnodes; i++) {
        lnode_t *nd = l->nodes[i];
        if (nd->host && nd->port == port && strlen(nd->host) == hlen && memcmp(nd->host, host, hlen) == 0)
            return i;
    }
    if (l->nnodes >= RL_LINK_MAX_NODES) return -1;
    lnode_t *nd = node_new(host, hlen, port, NULL);
    if (!nd) return -1;
    l->nodes[l->nnodes] = nd;
    return l->nnodes++;
}

/* Copies a server message with the secret masked. */
static void scrub(const rl_redis_link_t *l, const char *in, char *out, size_t size) {
    rl_strlcpy(out, in ? in : "", size);
    if (!l->secret || !*l->secret) return;
    size_t pl = strlen(l->secret);
    for (char *p = strstr(out, l->secret); p; p = strstr(p + pl, l->secret)) memset(p, '*', pl);
}

/* An I/O failure on a node's connection: drop it, report retriable. */
static int node_io_error(rl_redis_link_t *l, lnode_t *nd, int saved_errno) {
    char msg[256];
    int timeout = nd->c && rl_redis_is_timeout(nd->c, saved_errno);
    scrub(l, nd->c ? nd->c->errstr : "connection lost", msg, sizeof(msg));
    node_drop(nd);
    if (l->mode == RL_LINK_CLUSTER) l->map_stale = 1;
    if (timeout)
        return rl_error_set(RUNLANE_ERR_STORE, 1,
                            "redis %s: no reply within %d ms (redis.command.timeout.ms); "
                            "connection dropped, the next call reconnects",
                            nd->where, l->command_timeout_ms);
    return rl_error_set(RUNLANE_ERR_STORE, 1,
                        "redis %s: connection lost (%s); the next call reconnects", nd->where,
                        msg[0] ? msg : "I/O error");
}

static int backoff_refused(const lnode_t *nd) {
    int64_t now = rl_mono_ms();
    if (now >= nd->retry_at_ms) return 0;
    rl_error_set((runlane_err_t)nd->down_code, nd->down_retriable,
                 "%s (next reconnect attempt in %lld ms)", nd->down_msg,
                 (long long)(nd->retry_at_ms - now));
    return 1;
}

static void backoff_note(lnode_t *nd, int rc) {
    if (rc == RUNLANE_OK) {
        nd->backoff_ms = 0;
        nd->retry_at_ms = 0;
        return;
    }
    nd->backoff_ms = nd->backoff_ms ? nd->backoff_ms * 2 : LINK_BACKOFF_MIN_MS;
    if (nd->backoff_ms > LINK_BACKOFF_MAX_MS) nd->backoff_ms = LINK_BACKOFF_MAX_MS;
    nd->retry_at_ms = rl_mono_ms() + nd->backoff_ms;
    nd->down_code = rc;
    nd->down_retriable = runlane_error_retriable(runlane_error_last());
    rl_strlcpy(nd->down_msg, runlane_error_message(runlane_error_last()), sizeof(nd->down_msg));
}

static int node_raw_connect(const rl_redis_link_t *l, const lnode_t *nd, redisContext **out) {
    rl_redis_node_t n = {nd->host, nd->port, nd->sock, nd->where,
                         l->connect_timeout_ms, l->command_timeout_ms, l->tls};
    return rl_redis_connect(&n, out);
}

/* Connects a data node and runs the store's setup on it. No backoff. */
static int node_open(rl_redis_link_t *l, lnode_t *nd) {
    int rc = node_raw_connect(l, nd, &nd->c);
    if (rc != RUNLANE_OK) return rc;
    rc = l->setup ? l->setup(nd->c, nd->where, 0, l->opaque) : RUNLANE_OK;
    if (rc != RUNLANE_OK) node_drop(nd);
    return rc;
}

/* ------------------------------------------------------------------ */
/* sentinel                                                           */
/* ------------------------------------------------------------------ */

/* Asks the sentinels for the master's address; sets node 0 to it. */
static int sentinel_find(rl_redis_link_t *l) {
    char first[600] = "";
    /* every sentinel refused for a reason that does not fix itself (its
     * certificate, a plaintext/TLS mismatch): say so, not retriable */
    int all_fatal = l->nsentinels > 0;
    for (int i = 0; i < l->nsentinels; i++) {
        lnode_t *sn = l->sentinels[i];
        redisContext *c = NULL;
        if (node_raw_connect(l, sn, &c) != RUNLANE_OK) {
            if (runlane_error_retriable(runlane_error_last())) all_fatal = 0;
            if (!first[0]) rl_strlcpy(first, runlane_error_message(runlane_error_last()), sizeof(first));
            continue;
        }
        all_fatal = 0;
        const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", l->master_name};
        size_t lens[3] = {8, 23, strlen(l->master_name)};
        redisReply *r = redisCommandArgv(c, 3, argv, lens);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
                 r->element[0]->len > 0 && r->element[0]->len <= LINK_HOST_MAX;
        long port = ok ? strtol(r->element[1]->str, NULL, 10) : 0;
        if (ok && port >= 1 && port <= 65535) {
            lnode_t *m = l->nodes[0];
            char *h = rl_strndup(r->element[0]->str, r->element[0]->len);
            freeReplyObject(r);
            redisFree(c);
            if (!h) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            node_drop(m);
            free(m->host);
            m->host = h;
            m->port = (int)port;
            node_set_where(m);
            size_t wl = strlen(m->where);
            snprintf(m->where + wl, sizeof(m->where) - wl, " (master %.60s)", l->master_name);
            /* the guidelines: the sentinel that answered goes first */
            for (int j = i; j > 0; j--) l->sentinels[j] = l->sentinels[j - 1];
            l->sentinels[0] = sn;
            return RUNLANE_OK;
        }
        if (!first[0]) {
            char msg[200];
            scrub(l, r && r->type == REDIS_REPLY_ERROR ? r->str : "", msg, sizeof(msg));
            snprintf(first, sizeof(first), "sentinel %.200s does not know a master named \"%.60s\"%s%.100s",
                     sn->where, l->master_name, msg[0] ? ": " : "", msg);
        }
        if (r) freeReplyObject(r);
        redisFree(c);
    }
    return rl_error_set(RUNLANE_ERR_STORE, !all_fatal, "redis %s: no sentinel named the master (%s)",
                        l->where, first[0] ? first : "no sentinel reachable");
}

/* Finds the master through the sentinels, connects, checks its ROLE. */
static int sentinel_open(rl_redis_link_t *l) {
    lnode_t *m = l->nodes[0];
    int rc = sentinel_find(l);
    if (rc != RUNLANE_OK) return rc;
    rc = node_open(l, m);
    if (rc != RUNLANE_OK) return rc;
    redisReply *r = redisCommand(m->c, "ROLE");
    if (!r) return node_io_error(l, m, errno);
    int master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                 r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    freeReplyObject(r);
    if (!master) {
        node_drop(m);
        return rl_error_set(RUNLANE_ERR_STORE, 1,
                            "redis %s: the sentinels name %s, which is not a master (failover in "
                            "progress?); the next call asks them again",
                            l->where, m->where);
    }
    l->stats.rediscoveries++;
    return RUNLANE_OK;
}

/* ------------------------------------------------------------------ */
/* cluster map                                                        */
/* ------------------------------------------------------------------ */

/* Applies a CLUSTER SLOTS reply got from node `from`. 0 if unusable. */
static int map_apply(rl_redis_link_t *l, const lnode_t *from, const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return 0;
    int16_t *tmp = l->next_slots; /* per link: stores of other threads refresh too */
    for (int s = 0; s < RL_CLUSTER_SLOTS; s++) tmp[s] = -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2)
            return 0;
        long long a = e->element[0]->integer, b = e->element[1]->integer;
        const redisReply *h = e->element[2]->element[0], *p = e->element[2]->element[1];
        if (a < 0 || b >= RL_CLUSTER_SLOTS || a > b || p->type != REDIS_REPLY_INTEGER ||
            (h->type != REDIS_REPLY_STRING && h->type != REDIS_REPLY_NIL))
            return 0;
        /* "" or "?": the node's endpoint is the one we asked */
        const char *host = h->type == REDIS_REPLY_STRING && h->len > 0 && strcmp(h->str, "?") != 0
                               ? h->str
                               : from->host;
        if (!host) return 0;
        int idx = node_find_add(l, host, strlen(host), (int)p->integer);
        if (idx < 0) continue; /* table full: those slots stay unknown */
        for (long long s = a; s <= b; s++) tmp[s] = (int16_t)idx;
    }
    memcpy(l->slots, tmp, sizeof(l->slots));
    /* masters numbered by their lowest slot */
    for (int i = 0; i < l->nnodes; i++) l->nodes[i]->master = -1;
    l->nmasters = 0;
    for (int s = 0; s < RL_CLUSTER_SLOTS; s++)
        if (tmp[s] >= 0 && l->nodes[tmp[s]]->master < 0) l->nodes[tmp[s]]->master = l->nmasters++;
    /* connections to nodes that own nothing now (demoted, removed) */
    for (int i = 0; i < l->nnodes; i++)
        if (l->nodes[i]->master < 0 && l->nodes[i] != from) node_drop(l->nodes[i]);
    return 1;
}

/* Refreshes the slot map from any reachable node, connected ones first. */
static int map_refresh(rl_redis_link_t *l) {
    char first[600] = "";
    l->stats.refreshes++;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < l->nnodes; i++) {
            lnode_t *nd = l->nodes[i];
            if ((pass == 0) != (nd->c != NULL)) continue;
            if (!nd->c) {
                if (backoff_refused(nd)) continue;
                int rc = node_open(l, nd);
                backoff_note(nd, rc);
                if (rc != RUNLANE_OK) {
                    if (!first[0]) rl_strlcpy(first, runlane_error_message(runlane_error_last()), sizeof(first));
                    continue;
                }
            }
            redisReply *r = redisCommand(nd->c, "CLUSTER SLOTS");
            if (!r) {
                node_io_error(l, nd, errno);
                if (!first[0]) rl_strlcpy(first, runlane_error_message(runlane_error_last()), sizeof(first));
                continue;
            }
            int ok = map_apply(l, nd, r);
            if (!ok && !first[0]) {
                char msg[200];
                scrub(l, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", msg, sizeof(msg));
                snprintf(first, sizeof(first), "redis %.200s: CLUSTER SLOTS: %.100s%s", nd->where, msg,
                         strstr(msg, "cluster support disabled")
                             ? " (not a cluster node: use redis:// for a single server)"
                             : "");
            }
            freeReplyObject(r);
            if (ok) {
                l->map_stale = 0;
                return RUNLANE_OK;
            }
        }
    }
    int retriable = !strstr(first, "not a cluster node");
    return rl_error_set(RUNLANE_ERR_STORE, retriable, "redis %s: cannot read the slot map: %s",
                        l->where, first[0] ? first : "no node reachable");
}

/* ------------------------------------------------------------------ */
/* public                                                             */
/* ------------------------------------------------------------------ */

rl_redis_link_t *rl_redis_link_new(const rl_redis_link_opts_t *o) {
    rl_redis_link_t *l = calloc(1, sizeof(*l));
    if (!l) goto nomem;
    l->mode = o->mode;
    l->connect_timeout_ms = o->connect_timeout_ms;
    l->command_timeout_ms = o->command_timeout_ms;
    l->tls = o->tls;
    l->setup = o->setup;
    l->opaque = o->opaque;
    l->wait_replicas = o->wait_replicas;
    l->wait_timeout_ms = o->wait_timeout_ms;
    for (int s = 0; s < RL_CLUSTER_SLOTS; s++) l->slots[s] = -1;
    if (o->secret && !(l->secret = rl_strdup(o->secret))) goto nomem;
    rl_buf_t seeds;
    rl_buf_init(&seeds);
    for (int i = 0; i < o->nseeds; i++) {
        lnode_t *nd = node_new(o->hosts[i], strlen(o->hosts[i]), o->ports[i], NULL);
        if (!nd) {
            rl_buf_free(&seeds);
            goto nomem;
        }
        rl_buf_printf(&seeds, "%s%s", i ? "," : "", nd->where);
        if (l->mode == RL_LINK_SENTINEL) {
            if (l->nsentinels >= LINK_MAX_SENTINELS) {
                node_free(nd);
                continue;
            }
            l->sentinels[l->nsentinels++] = nd;
        } else if (l->nnodes < RL_LINK_MAX_NODES) {
            l->nodes[l->nnodes++] = nd;
        } else {
            node_free(nd);
        }
    }
    if (l->mode == RL_LINK_SINGLE && o->sock) {
        lnode_t *nd = node_new(NULL, 0, 0, o->sock);
        if (!nd) {
            rl_buf_free(&seeds);
            goto nomem;
        }
        l->nodes[l->nnodes++] = nd;
    }
    if (l->mode == RL_LINK_SINGLE) {
        rl_strlcpy(l->where, o->where ? o->where : (l->nnodes ? l->nodes[0]->where : ""), sizeof(l->where));
        if (l->nnodes && o->where) rl_strlcpy(l->nodes[0]->where, o->where, sizeof(l->nodes[0]->where));
    } else if (l->mode == RL_LINK_CLUSTER) {
        snprintf(l->where, sizeof(l->where), "cluster %.380s", seeds.data ? seeds.data : "");
    } else {
        if (!(l->master_name = rl_strdup(o->master_name ? o->master_name : ""))) {
            rl_buf_free(&seeds);
            goto nomem;
        }
        snprintf(l->where, sizeof(l->where), "sentinel master \"%.100s\" via %.250s", l->master_name,
                 seeds.data ? seeds.data : "");
        lnode_t *m = node_new(NULL, 0, 0, NULL);
        if (!m) {
            rl_buf_free(&seeds);
            goto nomem;
        }
        l->nodes[l->nnodes++] = m;
    }
    rl_buf_free(&seeds);
    if (l->nnodes == 0 && l->nsentinels == 0) {
        rl_redis_link_free(l);
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: no node");
        return NULL;
    }
    return l;
nomem:
    rl_redis_link_free(l);
    rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    return NULL;
}

void rl_redis_link_free(rl_redis_link_t *l) {
    if (!l) return;
    for (int i = 0; i < l->nnodes; i++) node_free(l->nodes[i]);
    for (int i = 0; i < l->nsentinels; i++) node_free(l->sentinels[i]);
    if (l->secret) {
        memset(l->secret, 0, strlen(l->secret));
        free(l->secret);
    }
    free(l->master_name);
    free(l);
}

const char *rl_redis_link_where(const rl_redis_link_t *l) { return l->where; }
int rl_redis_link_mode(const rl_redis_link_t *l) { return l->mode; }

void rl_redis_link_stats(const rl_redis_link_t *l, rl_redis_link_stats_t *out) { *out = l->stats; }

int rl_redis_link_master_of(rl_redis_link_t *l, int slot, int *nmasters) {
    if (nmasters) *nmasters = l->nmasters;
    if (slot < 0 || slot >= RL_CLUSTER_SLOTS || l->slots[slot] < 0) return -1;
    return l->nodes[l->slots[slot]]->master;
}

/* Makes sure node i is connected (sentinel: found and connected). */
static int ensure(rl_redis_link_t *l, int i) {
    lnode_t *nd = l->nodes[i];
    if (nd->c) return RUNLANE_OK;
    if (backoff_refused(nd)) return RUNLANE_ERR_STORE;
    int rc = l->mode == RL_LINK_SENTINEL && i == 0 ? sentinel_open(l) : node_open(l, nd);
    backoff_note(nd, rc);
    if (rc != RUNLANE_OK && l->mode == RL_LINK_CLUSTER) l->map_stale = 1;
    return rc;
}

redisContext *rl_redis_link_single_context(rl_redis_link_t *l) {
    if (l->mode == RL_LINK_CLUSTER) {
        rl_error_set(RUNLANE_ERR_UNSUPPORTED, 0,
                     "redis %s: no single connection to wait on in a cluster", l->where);
        return NULL;
    }
    return ensure(l, 0) == RUNLANE_OK ? l->nodes[0]->c : NULL;
}

int rl_redis_link_single_io_error(rl_redis_link_t *l, int saved_errno) {
    return node_io_error(l, l->nodes[0], saved_errno);
}

int rl_redis_link_connect(rl_redis_link_t *l) {
    if (l->mode != RL_LINK_CLUSTER) return ensure(l, 0);
    /* the slot map from any reachable seed (its connection set up: TLS,
     * AUTH, scripts) is enough; the masters are connected when a call
     * first needs them, so a master that is down while its replica is
     * not yet promoted fails only the calls on its slots */
    return map_refresh(l);
}

/* The routing key's slot of a command, -1 when it has no key. */
static int cmd_slot(const rl_redis_cmd_t *c) {
    int k = 1;
    if (c->argc >= 1 && (strcasecmp(c->argv[0], "EVALSHA") == 0 || strcasecmp(c->argv[0], "EVAL") == 0)) {
        if (c->argc < 4 || atoi(c->argv[2]) < 1) return -1;
        k = 3;
    }
    if (c->argc <= k) return -1;
    return rl_redis_key_slot(c->argv[k], c->lens[k]);
}

static void free_all(redisReply **replies, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (replies[i]) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
}

static int is_err(const redisReply *r, const char *p) {
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, p, strlen(p)) == 0;
}

/* "MOVED <slot> <host>:<port>" / "ASK ...": the node index, -1 if bad. */
static int redirect_target(rl_redis_link_t *l, const lnode_t *from, const redisReply *r, int *slot) {
    const char *sp = strchr(r->str, ' ');
    const char *addr = sp ? strchr(sp + 1, ' ') : NULL;
    if (!addr) return -1;
    *slot = atoi(sp + 1);
    addr++;
    const char *colon = strrchr(addr, ':');
    if (!colon) return -1;
    long port = strtol(colon + 1, NULL, 10);
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 && from->host) { /* unknown endpoint: the node that answered */
        h = from->host;
        hl = strlen(h);
    }
    return node_find_add(l, h, hl, (int)port);
}

/* Cluster: node d, which a call needs, cannot be connected (the error is
 * set). Names the slot it owns and says whether the error fixes itself:
 * a master that is down stays in the slot map until its replica is
 * promoted (cluster-node-timeout, then an election), and the next call
 * reads the map again (map_stale). */
static int master_down(rl_redis_link_t *l, int d, const int *target, const int *slot,
                       const int *pending, size_t n) {
    const runlane_error_t *e = runlane_error_last();
    int code = runlane_error_code(e), retriable = runlane_error_retriable(e);
    if (code != RUNLANE_ERR_STORE || !retriable) return code;
    int s = -1;
    for (size_t i = 0; i < n && s < 0; i++)
        if (pending[i] && target[i] == d) s = slot[i];
    char msg[500];
    rl_strlcpy(msg, runlane_error_message(e), sizeof(msg));
    if (s < 0)
        return rl_error_set(RUNLANE_ERR_STORE, 1, "redis %s: %s", l->where, msg);
    return rl_error_set(RUNLANE_ERR_STORE, 1,
                        "redis %s: the master of slot %d, %s, is unreachable (%s); until the "
                        "cluster promotes its replica the partitions on it fail (retriable), "
                        "the others work",
                        l->where, s, l->nodes[d]->where, msg);
}

int rl_redis_link_exec(rl_redis_link_t *l, const rl_redis_cmd_t *cmds, size_t n, redisReply **replies) {
    for (size_t i = 0; i < n; i++) replies[i] = NULL;
    if (n == 0) return RUNLANE_OK;
    int rc = RUNLANE_OK;
    int cluster = l->mode == RL_LINK_CLUSTER;
    if (cluster && (l->map_stale || l->nmasters == 0)) {
        rc = map_refresh(l);
        if (rc != RUNLANE_OK && l->nmasters == 0) return rc;
        rc = RUNLANE_OK;
    }
    int *slot = malloc(n * 4 * sizeof(int));
    if (!slot) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    int *target = slot + n, *ask = slot + 2 * n, *pending = slot + 3 * n;
    for (size_t i = 0; i < n; i++) {
        slot[i] = cluster ? cmd_slot(&cmds[i]) : -1;
        ask[i] = -1;
        pending[i] = 1;
    }
    size_t npending = n;
    int refreshed = 0, wait_short = -1, demoted = 0;
    long wait_acked = 0;
    int used[RL_LINK_MAX_NODES], order[RL_LINK_MAX_NODES], writes[RL_LINK_MAX_NODES],
        reload[RL_LINK_MAX_NODES], nread[RL_LINK_MAX_NODES];
    for (int round = 0; npending > 0; round++) {
        if (round > RL_LINK_MAX_REDIRECTS) {
            rc = rl_error_set(RUNLANE_ERR_STORE, 1,
                              "redis %s: still redirected after %d attempts (slots moving?); "
                              "try again",
                              l->where, RL_LINK_MAX_REDIRECTS);
            goto fail;
        }
        int norder = 0, any = -1;
        memset(used, 0, sizeof(int) * (size_t)l->nnodes);
        /* route */
        for (size_t i = 0; i < n; i++) {
            if (!pending[i]) continue;
            target[i] = -1;
            if (!cluster) target[i] = 0;
            else if (ask[i] >= 0) target[i] = ask[i];
            else if (slot[i] >= 0) {
                if (l->slots[slot[i]] < 0 && !refreshed) {
                    refreshed = 1;
                    map_refresh(l);
                }
                if (l->slots[slot[i]] < 0) {
                    rc = rl_error_set(RUNLANE_ERR_STORE, 1,
                                      "redis %s: no master owns slot %d (cluster down or "
                                      "failing over?); try again",
                                      l->where, slot[i]);
                    goto fail;
                }
                target[i] = l->slots[slot[i]];
            }
            if (target[i] >= 0 && any < 0) any = target[i];
        }
        if (any < 0) { /* keyless commands only: any master, a connected one first */
            for (int s = 0; s < RL_CLUSTER_SLOTS && (any < 0 || !l->nodes[any]->c); s++)
                if (l->slots[s] >= 0 && (any < 0 || l->nodes[l->slots[s]]->c)) any = l->slots[s];
            if (any < 0) any = 0;
        }
        for (size_t i = 0; i < n; i++) {
            if (!pending[i]) continue;
            if (target[i] < 0) target[i] = any;
            if (!used[target[i]]) {
                used[target[i]] = 1;
                order[norder++] = target[i];
            }
        }
        /* connect */
        for (int k = 0; k < norder; k++) {
            if ((rc = ensure(l, order[k])) != RUNLANE_OK) {
                if (cluster) rc = master_down(l, order[k], target, slot, pending, n);
                goto fail;
            }
            writes[order[k]] = reload[order[k]] = 0;
            nread[order[k]] = 0;
        }
        /* append, per node in order; a WAIT after a node's writes */
        for (int k = 0; k < norder; k++) {
            int d = order[k];
            redisContext *c = l->nodes[d]->c;
            for (size_t i = 0; i < n; i++) {
                if (!pending[i] || target[i] != d) continue;
                if (ask[i] >= 0 && redisAppendCommand(c, "ASKING") != REDIS_OK) goto oom;
                if (redisAppendCommandArgv(c, cmds[i].argc, (const char **)cmds[i].argv, cmds[i].lens) != REDIS_OK)
                    goto oom;
                writes[d] |= cmds[i].write;
            }
            if (writes[d] && l->wait_replicas > 0 &&
                redisAppendCommand(c, "WAIT %d %d", l->wait_replicas, l->wait_timeout_ms) != REDIS_OK)
                goto oom;
        }
        /* send everything before reading anything: one round trip */
        for (int k = 0; k < norder; k++) {
            lnode_t *nd = l->nodes[order[k]];
            int done = 0;
            while (!done)
                if (redisBufferWrite(nd->c, &done) != REDIS_OK) {
                    rc = node_io_error(l, nd, errno);
                    goto drop_round;
                }
        }
        /* read */
        for (int k = 0; k < norder; k++) {
            int d = order[k];
            lnode_t *nd = l->nodes[d];
            for (size_t i = 0; i < n; i++) {
                if (!pending[i] || target[i] != d) continue;
                void *v = NULL;
                if (ask[i] >= 0) {
                    if (redisGetReply(nd->c, &v) != REDIS_OK) goto io;
                    freeReplyObject(v);
                    v = NULL;
                }
                if (redisGetReply(nd->c, &v) != REDIS_OK) goto io;
                redisReply *r = v;
                int rs;
                if (cluster && is_err(r, "MOVED ")) {
                    int t = redirect_target(l, nd, r, &rs);
                    l->stats.moved++;
                    if (t >= 0 && rs >= 0 && rs < RL_CLUSTER_SLOTS) l->slots[rs] = (int16_t)t;
                    l->map_stale = 1;
                    ask[i] = -1;
                    freeReplyObject(r);
                } else if (cluster && is_err(r, "ASK ")) {
                    int t = redirect_target(l, nd, r, &rs);
                    l->stats.ask++;
                    ask[i] = t;
                    freeReplyObject(r);
                } else if (is_err(r, "NOSCRIPT")) {
                    l->stats.noscript++;
                    reload[d] = 1;
                    freeReplyObject(r);
                } else {
                    if (l->mode == RL_LINK_SENTINEL && is_err(r, "READONLY")) demoted = 1;
                    replies[i] = r;
                    pending[i] = 0;
                    npending--;
                }
            }
            if (writes[d] && l->wait_replicas > 0) {
                void *v = NULL;
                if (redisGetReply(nd->c, &v) != REDIS_OK) goto io;
                redisReply *w = v;
                long acked = w->type == REDIS_REPLY_INTEGER ? (long)w->integer : -1;
                if (acked < l->wait_replicas && wait_short < 0) {
                    wait_short = d;
                    wait_acked = acked;
                }
                freeReplyObject(w);
            }
            nread[d] = 1;
            if (reload[d] && (rc = l->setup(nd->c, nd->where, 1, l->opaque)) != RUNLANE_OK) {
                node_drop(nd);
                goto drop_round;
            }
            continue;
        io:
            rc = node_io_error(l, nd, errno);
            goto drop_round;
        }
        if (demoted) {
            /* the master we talk to is a replica now: ask the sentinels
             * again on the next call */
            demoted = 0;
            node_drop(l->nodes[0]);
        }
        if (cluster && l->map_stale && npending > 0 && !refreshed) {
            refreshed = 1;
            map_refresh(l); /* a failure keeps the MOVED-updated map */
        }
    }
    free(slot);
    if (wait_short >= 0) {
        for (size_t i = 0; i < n; i++)
            if (replies[i] && !cmds[i].keep_if_short) {
                freeReplyObject(replies[i]);
                replies[i] = NULL;
            }
        return rl_error_set(RUNLANE_ERR_STORE, 1,
                            "redis %s: the write reached %ld of %d replicas within %d ms "
                            "(redis.wait.replicas, redis.wait.timeout.ms): it is applied on the "
                            "master but may be lost if the master fails now",
                            l->nodes[wait_short]->where, wait_acked < 0 ? 0 : wait_acked,
                            l->wait_replicas, l->wait_timeout_ms);
    }
    return RUNLANE_OK;
oom:
    rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
drop_round:
    /* connections with commands sent but replies unread are out of step */
    for (size_t i = 0; i < n; i++)
        if (pending[i] && !nread[target[i]]) node_drop(l->nodes[target[i]]);
fail:
    free(slot);
    free_all(replies, n);
    return rc;
}
