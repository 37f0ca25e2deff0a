/* store_redis.c - the Redis store (hiredis, one Lua script per operation).
 *
 * Keys (p = the conversation's partition, C = the conversation id's bytes):
 *   <prefix>:{p}:meta:C      hash  token owner attempts batch_id lease_until
 *                                  first_ms last_ms pbytes ckpt last_error
 *   <prefix>:{p}:pending:C   list  "<content bytes>:<record JSON>"
 *   <prefix>:{p}:batch:C     list  same entries, the in-flight batch
 *   <prefix>:{p}:idem:<len(C)>:C:<key>   string  message id (PX ttl)
 *   <prefix>:{p}:ready       zset  C -> due ms
 *   <prefix>:{p}:leases      zset  C -> lease expiry ms
 *   <prefix>:{p}:stats       hash  counters, id sequence, fencing counter
 *   <prefix>:{p}:dead        zset  dead id -> dead_at ms
 *   <prefix>:{p}:deadrec     hash  dead id -> JSON record
 *   <prefix>:{p}:deadaux     hash  dead id -> cmsgpack {C, entries}
 *   <prefix>:{p}:replies     hash  batch id -> "<expires ms>:<reply JSON>"
 *   <prefix>:{p}:reply_due   zset  batch id -> next delivery ms
 *   <prefix>:{rate}:bucket   hash  tokens at: the rate.limit.rpm token bucket
 *                                  of the whole queue (PX: until full again)
 * The conversation id is always the last component of its keys (or
 * length-prefixed in the idempotency key), and the prefix may not contain
 * braces, so no id can change a key's structure or its hash tag: every key
 * of a partition lives in one Redis Cluster slot. A reply lives in its
 * conversation's partition, which its batch id names (b<ms>-<p>-<seq>).
 *
 * Every operation is one script run by EVALSHA (loaded at connect, reloaded
 * on NOSCRIPT); operations on many conversations pipeline their scripts.
 * After an I/O error the connection is dropped; the next call reconnects,
 * rate-limited by an exponential backoff (50 ms doubling to 2 s) while the
 * server stays unreachable. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "internal.h"
#include "lua_scripts.h"
#include "redis_conn.h"
#include "redis_link.h"
#include "store.h"
#include "store_redis.h"

#define RS_IDLE_TTL_MS 86400000LL /* meta hash of an idle conversation */
#define RS_BACKOFF_MIN_MS 50
#define RS_BACKOFF_MAX_MS 2000
#define RS_RECOVER_BATCH 1000
#define RS_CHUNK 500
#define RS_CLUSTER_PARTITIONS 12

enum {
    S_ENQUEUE,
    S_TOUCH,
    S_PEEK,
    S_CLAIM,
    S_RENEW,
    S_EXTEND_BATCH,
    S_CHECKPOINT,
    S_ACK,
    S_ACK_REPLY,
    S_FAIL,
    S_RELEASE,
    S_RECOVER,
    S_DEAD_RETRY,
    S_DEAD_PURGE,
    S_STATS,
    S_STATUS_CONV,
    S_REPLY_CLAIM,
    S_REPLY_ACK,
    S_RATE_TAKE,
    S_CONV_MAP,
    S_CONV_LIST,
    S_COUNT
};

static const char *const script_names[S_COUNT] = {
    "enqueue",     "touch",     "peek",    "claim",      "renew",
    "extend_batch", "checkpoint", "ack",    "ack_reply",  "fail",
    "release",     "recover",   "dead_retry", "dead_purge", "stats",
    "status_conv", "reply_claim", "reply_ack", "rate_take", "conv_map",
    "conv_list",
};

/* Per-conversation keys, in the order the scripts take them. */
enum {
    K_META,
    K_PENDING,
    K_BATCH,
    K_READY,
    K_LEASES,
    K_STATS,
    K_DEAD,
    K_DEADREC,
    K_DEADAUX,
    K_REPLIES,
    K_REPLY_DUE
};
static const char *const key_kinds[] = {"meta",    "pending", "batch",   "ready",
                                        "leases",  "stats",   "dead",    "deadrec",
                                        "deadaux", "replies", "reply_due"};
/* Kinds that are per partition (no conversation component). */
static int kind_is_partition(int k) { return k >= K_READY; }

typedef struct rstore {
    rl_store_t base;
    char *host; /* TCP host, or NULL with sock */
    int port;
    char *sock; /* unix socket path */
    char *user, *pass;
    int db;
    int tls;
    char where[320]; /* "host:port/db" for messages: never a secret */
    char *prefix;
    char client_name[72]; /* "runlane/<prefix>", printable, no spaces */
    int partitions;
    int connect_timeout_ms, command_timeout_ms;
    const rl_lua_script_t *scripts[S_COUNT];
    char sha[S_COUNT][41];
    rl_redis_tls_t *tls_ctx; /* rediss:// only */
    /* the last claim's view of ready (claim_hint) */
    int hint_ok;
    int64_t hint_due, hint_now;
    int waiting; /* a BZPOPMIN is outstanding on c (wait_arm) */
    /* how the nodes are reached (redis_link.c): single server, Cluster or
     * Sentinel; the nodes' connections and reconnect backoff live there */
    int mode; /* RL_LINK_* */
    int nseeds;
    char **seed_hosts; /* redis+cluster:// seeds or redis+sentinel:// sentinels */
    int *seed_ports;
    char *master_name; /* redis+sentinel:// */
    int wait_replicas, wait_timeout_ms;
    rl_redis_link_t *link;
    char (*tags)[16]; /* hash tag of each partition */
} rstore_t;

/* ------------------------------------------------------------------ */
/* command building                                                   */
/* ------------------------------------------------------------------ */

typedef struct rcmd {
    int argc, cap;
    char **argv;
    size_t *lens;
    int script; /* S_* for EVALSHA, -1 for a plain command */
    int oom;
    int keep_if_short; /* see rl_redis_cmd_t */
} rcmd_t;

static void cmd_init(rcmd_t *c) {
    memset(c, 0, sizeof(*c));
    c->script = -1;
}

static void cmd_free(rcmd_t *c) {
    for (int i = 0; i < c->argc; i++) free(c->argv[i]);
    free(c->argv);
    free(c->lens);
    cmd_init(c);
}

static void cmd_addn(rcmd_t *c, const char *p, size_t n) {
    if (c->oom) return;
    if (c->argc == c->cap) {
        int cap = c->cap ? c->cap * 2 : 24;
        char **argv = realloc(c->argv, (size_t)cap * sizeof(*argv));
        if (!argv) {
            c->oom = 1;
            return;
        }
        c->argv = argv;
        size_t *lens = realloc(c->lens, (size_t)cap * sizeof(*lens));
        if (!lens) {
            c->oom = 1;
            return;
        }
        c->lens = lens;
        c->cap = cap;
    }
    char *d = malloc(n + 1);
    if (!d) {
        c->oom = 1;
        return;
    }
    memcpy(d, p, n);
    d[n] = '\0';
    c->argv[c->argc] = d;
    c->lens[c->argc] = n;
    c->argc++;
}

static void cmd_add(rcmd_t *c, const char *s) { cmd_addn(c, s, strlen(s)); }

static void cmd_addll(rcmd_t *c, long long v) {
    char b[32];
    int n = snprintf(b, sizeof(b), "%lld", v);
    cmd_addn(c, b, (size_t)n);
}

static void cmd_addd(rcmd_t *c, double v) {
    char b[64];
    int n = snprintf(b, sizeof(b), "%.17g", v);
    cmd_addn(c, b, (size_t)n);
}

/* <prefix>:{p}:<kind>[:<conv>] */
static void cmd_key(rcmd_t *c, const rstore_t *s, int part, const char *kind, const char *conv) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "%s:{%s}:%s", s->prefix, s->tags[part], kind);
    if (conv) {
        rl_buf_puts(&b, ":");
        rl_buf_append(&b, conv, strlen(conv));
    }
    if (b.oom) {
        c->oom = 1;
    } else {
        cmd_addn(c, b.data, b.len);
    }
    rl_buf_free(&b);
}

/* EVALSHA <sha> <numkeys> */
static void cmd_script(rcmd_t *c, const rstore_t *s, int script) {
    c->script = script;
    cmd_add(c, "EVALSHA");
    cmd_add(c, s->sha[script]);
    cmd_addll(c, s->scripts[script]->numkeys);
}

/* The first n per-conversation keys. */
static void cmd_conv_keys(rcmd_t *c, const rstore_t *s, int part, const char *conv, int n) {
    for (int k = 0; k < n; k++)
        cmd_key(c, s, part, key_kinds[k], kind_is_partition(k) ? NULL : conv);
}

/* ARGV 1..7 shared by the per-conversation scripts. */
static void cmd_common(rcmd_t *c, const rl_policy_t *pol, const char *conv, int part) {
    static const rl_policy_t zero;
    if (!pol) pol = &zero;
    cmd_add(c, conv);
    cmd_addll(c, pol->window_ms);
    cmd_addll(c, pol->max_wait_ms);
    cmd_addll(c, pol->max_messages > 0 ? pol->max_messages : 1);
    cmd_addll(c, pol->max_bytes > 0 ? pol->max_bytes : 1);
    cmd_addll(c, RS_IDLE_TTL_MS);
    cmd_addll(c, part);
}

/* A per-conversation script call with its keys and common ARGV. */
static void cmd_conv(rcmd_t *c, const rstore_t *s, int script, const rl_policy_t *pol,
                     const char *conv) {
    int part = rl_partition_of(conv, s->partitions);
    cmd_init(c);
    cmd_script(c, s, script);
    cmd_conv_keys(c, s, part, conv, s->scripts[script]->numkeys);
    cmd_common(c, pol, conv, part);
}

/* ------------------------------------------------------------------ */
/* connection                                                         */
/* ------------------------------------------------------------------ */

/* Copies a server message with any occurrence of the password masked. */
static void scrub(const rstore_t *s, const char *in, char *out, size_t size) {
    rl_strlcpy(out, in ? in : "", size);
    if (!s->pass || !*s->pass) return;
    size_t pl = strlen(s->pass);
    for (char *p = strstr(out, s->pass); p; p = strstr(p + pl, s->pass)) memset(p, '*', pl);
}

/* An I/O failure on the wake-up's connection (the link's single one):
 * the link drops it; the outstanding pop is gone with it. */
static int rs_io_error(rstore_t *s, int saved_errno) {
    s->waiting = 0;
    return rl_redis_link_single_io_error(s->link, saved_errno);
}

static int prefix_is(const char *str, const char *p) { return strncmp(str, p, strlen(p)) == 0; }

/* An error reply: RUNLANE_ERR_STORE, retriable for transient states. */
static int rs_reply_error(const rstore_t *s, const redisReply *r, const char *what) {
    char msg[300];
    scrub(s, r->str, msg, sizeof(msg));
    if ((prefix_is(msg, "MOVED") || prefix_is(msg, "ASK")) && s->mode != RL_LINK_CLUSTER)
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: %s: the server is a Redis Cluster node and the key lives "
                            "on another node (%s); use redis+cluster://host:port[,host:port...] "
                            "for a cluster",
                            s->where, what, msg);
    if (prefix_is(msg, "NOAUTH"))
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: %s failed: the server requires a password; put it in "
                            "store.url (redis://:password@host:port/db or "
                            "redis://user:password@host:port/db)",
                            s->where, what);
    int retriable = prefix_is(msg, "LOADING") || prefix_is(msg, "BUSY") ||
                    prefix_is(msg, "TRYAGAIN") || prefix_is(msg, "MASTERDOWN") ||
                    prefix_is(msg, "READONLY") || prefix_is(msg, "CLUSTERDOWN") ||
                    prefix_is(msg, "OOM") || prefix_is(msg, "NOSCRIPT");
    return rl_error_set(RUNLANE_ERR_STORE, retriable, "redis %s: %s failed: %s", s->where, what,
                        msg);
}

/* A connection lost while setting it up (the link drops it). */
static int setup_io_error(const rstore_t *s, redisContext *c, const char *where) {
    char msg[256];
    scrub(s, c->errstr, msg, sizeof(msg));
    return rl_error_set(RUNLANE_ERR_STORE, 1, "redis %s: connection lost (%s)", where,
                        msg[0] ? msg : "I/O error");
}

/* Loads every script (pipelined) on a new connection. */
static int rs_load_scripts(rstore_t *s, redisContext *c, const char *where) {
    for (int i = 0; i < S_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", s->scripts[i]->source};
        size_t lens[3] = {6, 4, strlen(s->scripts[i]->source)};
        if (redisAppendCommandArgv(c, 3, argv, lens) != REDIS_OK) return setup_io_error(s, c, where);
    }
    int rc = RUNLANE_OK;
    for (int i = 0; i < S_COUNT; i++) {
        void *v = NULL;
        if (redisGetReply(c, &v) != REDIS_OK) return setup_io_error(s, c, where);
        redisReply *r = v;
        if (rc == RUNLANE_OK) {
            if (r->type == REDIS_REPLY_ERROR) {
                char what[64];
                snprintf(what, sizeof(what), "SCRIPT LOAD %s", script_names[i]);
                rc = rs_reply_error(s, r, what);
            } else if (r->type != REDIS_REPLY_STRING || r->len != 40) {
                rc = rl_error_set(RUNLANE_ERR_STORE, 0, "redis %s: SCRIPT LOAD %s: unexpected reply",
                                  where, script_names[i]);
            } else {
                memcpy(s->sha[i], r->str, 40);
                s->sha[i][40] = '\0';
            }
        }
        freeReplyObject(r);
    }
    return rc;
}

/* Runs one command at connect time; error replies are reported with
 * `what` (never with the command's arguments). */
static int rs_setup_cmd(rstore_t *s, redisContext *c, const char *where, int argc,
                        const char **argv, const char *what) {
    size_t lens[3];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    if (!r) return setup_io_error(s, c, where);
    int rc = r->type == REDIS_REPLY_ERROR ? rs_reply_error(s, r, what) : RUNLANE_OK;
    freeReplyObject(r);
    return rc;
}

/* The link's setup of every new connection to a data node (TCP or unix
 * socket, TLS, timeouts, keepalive and PING are done: redis_conn.c). */
static int rs_setup(redisContext *c, const char *where, int scripts_only, void *opaque) {
    rstore_t *s = opaque;
    int rc = RUNLANE_OK;
    if (scripts_only) return rs_load_scripts(s, c, where);
    if (s->pass) {
        char what[200];
        if (s->user && *s->user) {
            const char *argv[3] = {"AUTH", s->user, s->pass};
            snprintf(what, sizeof(what), "AUTH as user \"%.100s\"", s->user);
            rc = rs_setup_cmd(s, c, where, 3, argv, what);
        } else {
            const char *argv[2] = {"AUTH", s->pass};
            rc = rs_setup_cmd(s, c, where, 2, argv, "AUTH (password only)");
        }
        if (rc == RUNLANE_ERR_STORE && !runlane_error_retriable(runlane_error_last())) {
            /* a wrong password does not fix itself: say so */
            char msg[400];
            rl_strlcpy(msg, runlane_error_message(runlane_error_last()), sizeof(msg));
            rl_error_set(RUNLANE_ERR_STORE, 0, "%s (check the user and password of store.url)",
                         msg);
        }
    }
    if (rc == RUNLANE_OK && s->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->db);
        const char *argv[2] = {"SELECT", db};
        rc = rs_setup_cmd(s, c, where, 2, argv, "SELECT");
    }
    if (rc == RUNLANE_OK) {
        /* CLIENT LIST shows who we are; refused by some ACLs: not needed */
        const char *argv[3] = {"CLIENT", "SETNAME", s->client_name};
        size_t lens[3] = {6, 7, strlen(s->client_name)};
        redisReply *r = redisCommandArgv(c, 3, argv, lens);
        if (!r) rc = setup_io_error(s, c, where);
        else freeReplyObject(r);
    }
    if (rc == RUNLANE_OK) rc = rs_load_scripts(s, c, where);
    return rc;
}

static void free_replies(redisReply **replies, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (replies[i]) freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}

/* Scripts whose effects must survive a failover (WAIT with
 * redis.wait.replicas): every one but the read-only ones. */
static int script_writes(int script) {
    return script >= 0 && script != S_PEEK && script != S_STATS && script != S_STATUS_CONV;
}

/* Sends n commands (one round trip per node) and reads every reply (owned
 * by the caller, which frees them with free_replies). Error replies are
 * returned as replies; routing, redirections, NOSCRIPT reloads and
 * reconnects are the link's. */
static int rs_exec_unguarded(rstore_t *s, rcmd_t *cmds, size_t n, redisReply **replies) {
    for (size_t i = 0; i < n; i++) replies[i] = NULL;
    for (size_t i = 0; i < n; i++)
        if (cmds[i].oom) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    rl_redis_cmd_t one, *lc = n == 1 ? &one : calloc(n, sizeof(*lc));
    if (!lc) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        lc[i].argc = cmds[i].argc;
        lc[i].argv = (const char *const *)cmds[i].argv;
        lc[i].lens = cmds[i].lens;
        lc[i].write = script_writes(cmds[i].script);
        lc[i].keep_if_short = cmds[i].keep_if_short;
    }
    int rc = rl_redis_link_exec(s->link, lc, n, replies);
    if (lc != &one) free(lc);
    return rc;
}

/* rs_exec_unguarded with SIGPIPE held off: it may connect and write. */
static int rs_exec(rstore_t *s, rcmd_t *cmds, size_t n, redisReply **replies) {
    rl_sigpipe_guard_t g;
    rl_sigpipe_block(&g);
    int rc = rs_exec_unguarded(s, cmds, n, replies);
    rl_sigpipe_restore(&g);
    return rc;
}

/* One command: exec + error reply check. */
static int rs_exec1(rstore_t *s, rcmd_t *cmd, redisReply **reply, const char *what) {
    int rc = rs_exec(s, cmd, 1, reply);
    cmd_free(cmd);
    if (rc != RUNLANE_OK) return rc;
    if ((*reply)->type == REDIS_REPLY_ERROR) {
        rc = rs_reply_error(s, *reply, what);
        freeReplyObject(*reply);
        *reply = NULL;
    }
    return rc;
}

static void cmds_free(rcmd_t *cmds, size_t n) {
    if (!cmds) return;
    for (size_t i = 0; i < n; i++) cmd_free(&cmds[i]);
    free(cmds);
}

static int bad_reply(const rstore_t *s, const char *what) {
    return rl_error_set(RUNLANE_ERR_INTERNAL, 0, "redis %s: %s: unexpected reply shape", s->where,
                        what);
}

static int stale(const char *conv) {
    return rl_error_set(RUNLANE_ERR_STALE, 0,
                        "lease of conversation \"%.64s\" lost: fencing token refused", conv);
}

static long long reply_ll(const redisReply *r) {
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        /* a score may come back as "inf" or "1e300" */
        return rl_f64_to_i64(strtod(r->str, NULL));
    }
    return 0;
}

static rstore_t *RS(rl_store_t *st) { return (rstore_t *)st; }

/* ------------------------------------------------------------------ */
/* enqueue / touch                                                    */
/* ------------------------------------------------------------------ */

static void enqueue_cmd(rcmd_t *c, const rstore_t *s, const rl_policy_t *pol, const char *conv,
                        const char *tail, int64_t bytes, const char *ikey) {
    int part = rl_partition_of(conv, s->partitions);
    cmd_init(c);
    cmd_script(c, s, S_ENQUEUE);
    cmd_conv_keys(c, s, part, conv, 6);
    /* <prefix>:{p}:idem:<len(conv)>:<conv>:<key> */
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "%s:{%s}:idem:%zu:", s->prefix, s->tags[part], strlen(conv));
    rl_buf_append(&b, conv, strlen(conv));
    rl_buf_puts(&b, ":");
    if (ikey) rl_buf_append(&b, ikey, strlen(ikey));
    if (b.oom)
        c->oom = 1;
    else
        cmd_addn(c, b.data, b.len);
    rl_buf_free(&b);
    cmd_common(c, pol, conv, part);
    cmd_add(c, tail && *tail == '{' ? tail : "{}");
    cmd_addll(c, bytes > 0 ? bytes : 0);
    cmd_add(c, ikey ? "1" : "0");
    cmd_addll(c, pol->idem_ttl_ms);
}

static int enqueue_reply(const rstore_t *s, redisReply *r, char *id_out, int *dup_out) {
    if (r->type == REDIS_REPLY_ERROR) return rs_reply_error(s, r, "enqueue");
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= RUNLANE_ID_MAX)
        return bad_reply(s, "enqueue");
    memcpy(id_out, r->element[0]->str, r->element[0]->len);
    id_out[r->element[0]->len] = '\0';
    if (dup_out) *dup_out = reply_ll(r->element[1]) ? 1 : 0;
    return RUNLANE_OK;
}

static int r_enqueue(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *tail,
                     int64_t bytes, const char *ikey, char *id_out, int *dup_out) {
    rstore_t *s = RS(st);
    rcmd_t c;
    redisReply *r = NULL;
    if (dup_out) *dup_out = 0;
    enqueue_cmd(&c, s, pol, conv, tail, bytes, ikey);
    int rc = rs_exec(s, &c, 1, &r);
    cmd_free(&c);
    if (rc != RUNLANE_OK) return rc;
    rc = enqueue_reply(s, r, id_out, dup_out);
    freeReplyObject(r);
    return rc;
}

static int r_enqueue_many(rl_store_t *st, const rl_policy_t *pol, size_t n,
                          const char *const *convs, const char *const *tails,
                          const int64_t *bytes, const char *const *ikeys,
                          char (*ids_out)[RUNLANE_ID_MAX], int *dups_out) {
    rstore_t *s = RS(st);
    if (n == 0) return RUNLANE_OK;
    rcmd_t *cmds = calloc(n, sizeof(*cmds));
    redisReply **replies = calloc(n, sizeof(*replies));
    if (!cmds || !replies) {
        free(cmds);
        free(replies);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        enqueue_cmd(&cmds[i], s, pol, convs[i], tails[i], bytes ? bytes[i] : 0,
                    ikeys ? ikeys[i] : NULL);
    int rc = rs_exec(s, cmds, n, replies);
    if (rc == RUNLANE_OK) {
        for (size_t i = 0; i < n; i++) {
            int r1 = enqueue_reply(s, replies[i], ids_out[i], dups_out ? &dups_out[i] : NULL);
            if (r1 != RUNLANE_OK && rc == RUNLANE_OK) rc = r1;
        }
    }
    free_replies(replies, n);
    free(replies);
    cmds_free(cmds, n);
    return rc;
}

static int r_touch(rl_store_t *st, const rl_policy_t *pol, const char *conv) {
    rstore_t *s = RS(st);
    rcmd_t c;
    redisReply *r = NULL;
    cmd_conv(&c, s, S_TOUCH, pol, conv);
    int rc = rs_exec1(s, &c, &r, "touch");
    if (r) freeReplyObject(r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* next_due / claim                                                   */
/* ------------------------------------------------------------------ */

static int r_next_due(rl_store_t *st, int64_t *due_out, int64_t *now_out) {
    rstore_t *s = RS(st);
    size_t n = (size_t)s->partitions + 1;
    rcmd_t *cmds = calloc(n, sizeof(*cmds));
    redisReply **rep = calloc(n, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    cmd_init(&cmds[0]);
    cmd_add(&cmds[0], "TIME");
    for (int p = 0; p < s->partitions; p++) {
        rcmd_t *c = &cmds[p + 1];
        cmd_init(c);
        cmd_add(c, "ZRANGE");
        cmd_key(c, s, p, "ready", NULL);
        cmd_add(c, "0");
        cmd_add(c, "0");
        cmd_add(c, "WITHSCORES");
    }
    int rc = rs_exec(s, cmds, n, rep);
    if (rc == RUNLANE_OK) {
        int64_t best = INT64_MAX, now = 0;
        for (size_t i = 0; i < n && rc == RUNLANE_OK; i++) {
            redisReply *r = rep[i];
            if (r->type == REDIS_REPLY_ERROR) {
                rc = rs_reply_error(s, r, i ? "ZRANGE ready" : "TIME");
            } else if (r->type != REDIS_REPLY_ARRAY) {
                rc = bad_reply(s, "next_due");
            } else if (i == 0) {
                if (r->elements != 2) {
                    rc = bad_reply(s, "TIME");
                } else {
                    now = (int64_t)reply_ll(r->element[0]) * 1000 +
                          (int64_t)reply_ll(r->element[1]) / 1000;
                }
            } else if (r->elements == 2) {
                int64_t d = (int64_t)reply_ll(r->element[1]);
                if (d < best) best = d;
            }
        }
        if (rc == RUNLANE_OK) {
            *due_out = best;
            if (now_out) *now_out = now;
        }
    }
    free_replies(rep, n);
    free(rep);
    cmds_free(cmds, n);
    return rc;
}

typedef struct cand {
    char *conv;
    int part;
    double score;
    size_t order;
} cand_t;

static int cmp_cand(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void cands_free(cand_t *cv, size_t n) {
    for (size_t i = 0; i < n; i++) free(cv[i].conv);
    free(cv);
}

/* Members whose score has come in zset `kind` of every partition (up to
 * `limit` each), sorted by score. */
static int rs_peek(rstore_t *s, const char *kind, int limit, cand_t **out, size_t *nout) {
    size_t np = (size_t)s->partitions;
    *out = NULL;
    *nout = 0;
    rcmd_t *cmds = calloc(np, sizeof(*cmds));
    redisReply **rep = calloc(np, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t p = 0; p < np; p++) {
        cmd_init(&cmds[p]);
        cmd_script(&cmds[p], s, S_PEEK);
        cmd_key(&cmds[p], s, (int)p, kind, NULL);
        cmd_addll(&cmds[p], limit);
    }
    int rc = rs_exec(s, cmds, np, rep);
    cand_t *cv = NULL;
    size_t n = 0, cap = 0;
    for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
        redisReply *r = rep[p];
        if (r->type == REDIS_REPLY_ERROR) {
            rc = rs_reply_error(s, r, "peek");
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || (r->elements - 1) % 2) {
            rc = bad_reply(s, "peek");
            break;
        }
        for (size_t i = 1; i + 1 < r->elements; i += 2) {
            redisReply *m = r->element[i];
            if (m->type != REDIS_REPLY_STRING) continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                cand_t *v = realloc(cv, nc * sizeof(*v));
                if (!v) {
                    rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                    break;
                }
                cv = v;
                cap = nc;
            }
            cv[n].conv = rl_strndup(m->str, m->len);
            if (!cv[n].conv) {
                rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                break;
            }
            cv[n].part = (int)p;
            cv[n].score = strtod(r->element[i + 1]->str ? r->element[i + 1]->str : "0", NULL);
            cv[n].order = n;
            n++;
        }
    }
    free_replies(rep, np);
    free(rep);
    cmds_free(cmds, np);
    if (rc != RUNLANE_OK) {
        cands_free(cv, n);
        return rc;
    }
    if (n > 1) qsort(cv, n, sizeof(*cv), cmp_cand);
    *out = cv;
    *nout = n;
    return RUNLANE_OK;
}

/* Decodes one claim script reply (not NIL, not an error) into *cl; `where`
 * names the server in messages. Internal, not static: the fuzz target
 * tests/fuzz/fuzz_redis_reply.c feeds it reply trees built from bytes. */
/* 1 when the n bytes at s are 1.. bytes of `set`: ids we wrote ourselves
 * (batch ids are printable ASCII, tokens decimal); anything else read back
 * would reach events and the host's calls. */
static int reply_id_ok(const char *s, size_t n, const char *set) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i])) return 0;
    return 1;
}

int rl_redis_claim_reply(const char *where, const char *conv, const redisReply *r,
                         rl_claim_t *cl) {
    static const char shape[] = "redis %s: claim: unexpected reply shape";
    static const char id_chars[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:";
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 5)
        return rl_error_set(RUNLANE_ERR_INTERNAL, 0, shape, where);
    redisReply **e = r->element;
    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING ||
        e[4]->type != REDIS_REPLY_STRING || e[0]->len >= sizeof(cl->batch_id) ||
        e[1]->len >= sizeof(cl->token) || !reply_id_ok(e[0]->str, e[0]->len, id_chars) ||
        !reply_id_ok(e[1]->str, e[1]->len, "0123456789"))
        return rl_error_set(RUNLANE_ERR_INTERNAL, 0, shape, where);
    memset(cl, 0, sizeof(*cl));
    memcpy(cl->batch_id, e[0]->str, e[0]->len);
    memcpy(cl->token, e[1]->str, e[1]->len);
    cl->attempt = (int)reply_ll(e[2]);
    cl->lease_until_ms = (int64_t)reply_ll(e[3]);
    cl->conversation_id = rl_strdup(conv);
    cl->messages_json = rl_strndup(e[4]->str, e[4]->len);
    if (r->elements > 5 && e[5]->type == REDIS_REPLY_STRING)
        cl->ckpt_json = rl_strndup(e[5]->str, e[5]->len);
    if (r->elements > 6 && e[6]->type == REDIS_REPLY_STRING)
        cl->settle_json = rl_strndup(e[6]->str, e[6]->len);
    if (!cl->conversation_id || !cl->messages_json ||
        (r->elements > 5 && e[5]->type == REDIS_REPLY_STRING && !cl->ckpt_json) ||
        (r->elements > 6 && e[6]->type == REDIS_REPLY_STRING && !cl->settle_json)) {
        rl_claim_free(cl);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    return RUNLANE_OK;
}

/* One claim script on partition `part` (claim-4.lua): up to `max`
 * conversations, the due head of ready when ncand is 0, else these
 * candidates in order. */
static void claim_cmd(rcmd_t *c, const rstore_t *s, const rl_policy_t *pol, const char *owner,
                      int part, int max, const cand_t *cands, size_t ncand) {
    cmd_init(c);
    cmd_script(c, s, S_CLAIM);
    cmd_key(c, s, part, "ready", NULL);
    cmd_key(c, s, part, "leases", NULL);
    cmd_key(c, s, part, "stats", NULL);
    cmd_key(c, s, part, "wake", NULL);
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "%s:{%s}:", s->prefix, s->tags[part]);
    if (b.oom)
        c->oom = 1;
    else
        cmd_addn(c, b.data, b.len);
    rl_buf_free(&b);
    cmd_addll(c, part);
    cmd_addll(c, pol->max_messages > 0 ? pol->max_messages : 1);
    cmd_addll(c, pol->max_bytes > 0 ? pol->max_bytes : 1);
    cmd_add(c, owner ? owner : "");
    cmd_addll(c, pol->lease_ms);
    cmd_addll(c, max);
    for (size_t i = 0; i < ncand; i++) cmd_add(c, cands[i].conv);
}

/* Decodes one claim script reply {now, next due, conv, claim, ...} into
 * claims[*got...] (room for all of them); *got counts what was decoded
 * (what was claimed is leased: keep going after an error). */
static int claim_decode(rstore_t *s, const redisReply *r, rl_claim_t *claims, size_t cap,
                        size_t *got, int64_t *next_out, int64_t *now_out) {
    if (r->type == REDIS_REPLY_ERROR) return rs_reply_error(s, r, "claim");
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->elements % 2)
        return bad_reply(s, "claim");
    *now_out = (int64_t)reply_ll(r->element[0]);
    *next_out = (int64_t)reply_ll(r->element[1]);
    int rc = RUNLANE_OK;
    for (size_t i = 2; i + 1 < r->elements && *got < cap; i += 2) {
        const redisReply *conv = r->element[i];
        int r1;
        char *cv = NULL;
        if (conv->type != REDIS_REPLY_STRING || conv->len > RUNLANE_CONVERSATION_ID_MAX)
            r1 = bad_reply(s, "claim");
        else if (!(cv = rl_strndup(conv->str, conv->len)))
            r1 = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        else
            r1 = rl_redis_claim_reply(s->where, cv, r->element[i + 1], &claims[*got]);
        free(cv);
        if (r1 == RUNLANE_OK)
            (*got)++;
        else if (rc == RUNLANE_OK)
            rc = r1;
    }
    return rc;
}

/* A claim that failed with replies in hand: WAIT fell short of
 * redis.wait.replicas, so the master leased these conversations but the
 * worker, told the claim failed, will not run them. Give them back at
 * once, in one round trip (no attempt spent): left leased, each would
 * expire as a stall, and a replica outage would dead-letter them
 * (max.stalls). If the master dies before its replica has the claim and
 * the release, neither is there. The claim's error stays the one
 * reported. */
static void claims_give_back(rstore_t *s, const rl_policy_t *pol, redisReply **rep, size_t m) {
    char err[512];
    rl_error_copy(err, sizeof(err));
    int retriable = runlane_error_retriable(runlane_error_last());
    size_t cap = 0;
    for (size_t i = 0; i < m; i++)
        if (rep[i] && rep[i]->type == REDIS_REPLY_ARRAY) cap += rep[i]->elements / 2;
    rl_claim_t *cl = cap ? calloc(cap, sizeof(*cl)) : NULL;
    size_t got = 0;
    for (size_t i = 0; i < m; i++) {
        int64_t next = 0, now = 0;
        if (cl && rep[i]) claim_decode(s, rep[i], cl, cap, &got, &next, &now);
        if (rep[i]) freeReplyObject(rep[i]);
        rep[i] = NULL;
    }
    rcmd_t *cmds = got ? calloc(got, sizeof(*cmds)) : NULL;
    redisReply **rr = got ? calloc(got, sizeof(*rr)) : NULL;
    if (cmds && rr) {
        for (size_t k = 0; k < got; k++) {
            cmd_conv(&cmds[k], s, S_RELEASE, pol, cl[k].conversation_id);
            cmd_add(&cmds[k], cl[k].token);
            cmd_addll(&cmds[k], 0);
        }
        /* applied on the master even if WAIT falls short again */
        rs_exec(s, cmds, got, rr);
        free_replies(rr, got);
        cmds_free(cmds, got);
    } else {
        free(cmds);
    }
    free(rr);
    for (size_t k = 0; k < got; k++) rl_claim_free(&cl[k]);
    free(cl);
    rl_error_set(RUNLANE_ERR_STORE, retriable, "%s", err);
}

static int r_claim(rl_store_t *st, const rl_policy_t *pol, const char *owner, int max,
                   rl_claim_t **out, int *n_out) {
    rstore_t *s = RS(st);
    *out = NULL;
    *n_out = 0;
    s->hint_ok = 0;
    if (max <= 0) return RUNLANE_OK;
    cand_t *cv = NULL;
    size_t nc = 0, nall = 0, ncmd = 1;
    int rc;
    if (s->partitions > 1) {
        /* Oldest due first over every partition: a peek finds them, then
         * one script per partition claims its candidates (two round trips;
         * one partition needs one). */
        rc = rs_peek(s, "ready", max, &cv, &nall);
        if (rc != RUNLANE_OK || nall == 0) return rc;
        nc = nall < (size_t)max ? nall : (size_t)max;
        ncmd = (size_t)s->partitions;
    }
    size_t cap = (size_t)max;
    rcmd_t *cmds = calloc(ncmd, sizeof(*cmds));
    redisReply **rep = calloc(ncmd, sizeof(*rep));
    rl_claim_t *claims = calloc(cap, sizeof(*claims));
    cand_t *byp = nc ? calloc(nc, sizeof(*byp)) : NULL;
    size_t *order = nc ? calloc(nc, sizeof(*order)) : NULL;
    size_t total = 0;
    if (!cmds || !rep || !claims || (nc && (!byp || !order))) {
        free(cmds);
        free(rep);
        free(claims);
        free(byp);
        free(order);
        cands_free(cv, nall);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    size_t m = 0;
    if (nc == 0) {
        claim_cmd(&cmds[m++], s, pol, owner, 0, max, NULL, 0);
    } else {
        /* group the candidates by partition, keeping their order */
        for (int p = 0; p < s->partitions; p++) {
            size_t from = total;
            for (size_t i = 0; i < nc; i++)
                if (cv[i].part == p) byp[total++] = cv[i];
            if (total > from)
                claim_cmd(&cmds[m++], s, pol, owner, p, (int)(total - from), byp + from,
                          total - from);
        }
    }
    for (size_t i = 0; i < m; i++) cmds[i].keep_if_short = 1;
    rc = rs_exec(s, cmds, m, rep);
    size_t got = 0;
    int64_t best_next = -1, snow = 0;
    if (rc == RUNLANE_ERR_STORE) claims_give_back(s, pol, rep, m);
    for (size_t i = 0; rc == RUNLANE_OK && i < m; i++) {
        int64_t next = -1, now = 0;
        int r1 = claim_decode(s, rep[i], claims, cap, &got, &next, &now);
        if (r1 != RUNLANE_OK) {
            rc = r1;
            continue;
        }
        snow = now;
        if (next >= 0 && (best_next < 0 || next < best_next)) best_next = next;
    }
    if (nc == 0 && rc == RUNLANE_OK) {
        s->hint_ok = best_next >= 0;
        s->hint_due = best_next;
        s->hint_now = snow;
    }
    if (nc > 1 && got > 1) {
        /* back to oldest due first (the candidates' order) */
        for (size_t i = 0; i < got; i++) {
            order[i] = nc;
            for (size_t k = 0; k < nc; k++)
                if (strcmp(cv[k].conv, claims[i].conversation_id) == 0) {
                    order[i] = k;
                    break;
                }
        }
        for (size_t i = 1; i < got; i++)
            for (size_t k = i; k > 0 && order[k - 1] > order[k]; k--) {
                rl_claim_t t = claims[k];
                claims[k] = claims[k - 1];
                claims[k - 1] = t;
                size_t o = order[k];
                order[k] = order[k - 1];
                order[k - 1] = o;
            }
    }
    free_replies(rep, m);
    free(rep);
    cmds_free(cmds, m);
    free(byp); /* shallow copies of cv's */
    free(order);
    cands_free(cv, nall);
    if (got == 0) {
        free(claims);
        return rc;
    }
    /* what was claimed is leased: hand it over even if another failed */
    *out = claims;
    *n_out = (int)got;
    return RUNLANE_OK;
}

static int r_claim_named(rl_store_t *st, const rl_policy_t *pol, const char *owner, int max,
                         int part, const char *conv, rl_claim_t **out, int *n_out) {
    rstore_t *s = RS(st);
    *out = NULL;
    *n_out = 0;
    s->hint_ok = 0;
    if (max <= 0) return RUNLANE_OK;
    if (part < 0 || part >= s->partitions) part = 0;
    rl_claim_t *claims = calloc((size_t)max, sizeof(*claims));
    if (!claims) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    rcmd_t c;
    redisReply *r = NULL;
    claim_cmd(&c, s, pol, owner, part, max, NULL, 0);
    cmd_add(&c, ""); /* claim-4.lua: "" then the announced conversation */
    cmd_add(&c, conv);
    c.keep_if_short = 1;
    int rc = rs_exec(s, &c, 1, &r);
    cmd_free(&c);
    if (rc == RUNLANE_ERR_STORE) claims_give_back(s, pol, &r, 1);
    size_t got = 0;
    int64_t next = -1, snow = 0;
    if (rc == RUNLANE_OK) rc = claim_decode(s, r, claims, (size_t)max, &got, &next, &snow);
    if (r) freeReplyObject(r);
    if (got == 0) {
        free(claims);
        return rc;
    }
    /* what was claimed is leased: hand it over even if another failed */
    *out = claims;
    *n_out = (int)got;
    return RUNLANE_OK;
}

static int r_claim_hint(rl_store_t *st, int64_t *due_out, int64_t *now_out) {
    rstore_t *s = RS(st);
    if (!s->hint_ok) return 0;
    *due_out = s->hint_due;
    *now_out = s->hint_now;
    return 1;
}

/* ------------------------------------------------------------------ */
/* lease operations                                                   */
/* ------------------------------------------------------------------ */

static int r_renew(rl_store_t *st, const rl_policy_t *pol, rl_claim_t *claims, int n,
                   int *ok_out, int64_t *pending_out) {
    rstore_t *s = RS(st);
    if (n <= 0) return RUNLANE_OK;
    rcmd_t *cmds = calloc((size_t)n, sizeof(*cmds));
    redisReply **rep = calloc((size_t)n, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        cmd_conv(&cmds[i], s, S_RENEW, pol, claims[i].conversation_id);
        cmd_add(&cmds[i], claims[i].token);
        cmd_addll(&cmds[i], pol->lease_ms);
    }
    int rc = rs_exec(s, cmds, (size_t)n, rep);
    if (rc == RUNLANE_OK) {
        for (int i = 0; i < n; i++) {
            redisReply *r = rep[i];
            ok_out[i] = 0;
            if (pending_out) pending_out[i] = 0;
            if (r->type == REDIS_REPLY_ERROR) {
                if (rc == RUNLANE_OK) rc = rs_reply_error(s, r, "renew");
                continue;
            }
            if (r->type != REDIS_REPLY_ARRAY) continue; /* 0: stale */
            if (r->elements != 2) {
                if (rc == RUNLANE_OK) rc = bad_reply(s, "renew");
                continue;
            }
            ok_out[i] = 1;
            claims[i].lease_until_ms = (int64_t)reply_ll(r->element[0]);
            if (pending_out) pending_out[i] = (int64_t)reply_ll(r->element[1]);
        }
    }
    free_replies(rep, (size_t)n);
    free(rep);
    cmds_free(cmds, (size_t)n);
    return rc;
}

/* A token-checked script returning 1 (done) or 0 (stale). */
static int token_op(rstore_t *s, rcmd_t *c, const char *conv, const char *what) {
    redisReply *r = NULL;
    int rc = rs_exec1(s, c, &r, what);
    if (rc != RUNLANE_OK) return rc;
    long long v = reply_ll(r);
    freeReplyObject(r);
    return v > 0 ? RUNLANE_OK : stale(conv);
}

static int r_checkpoint(rl_store_t *st, const char *conv, const char *token, const char *ckpt) {
    rstore_t *s = RS(st);
    rcmd_t c;
    cmd_conv(&c, s, S_CHECKPOINT, NULL, conv);
    cmd_add(&c, token ? token : "");
    cmd_add(&c, ckpt ? ckpt : "");
    return token_op(s, &c, conv, "checkpoint");
}

static int r_ack(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token) {
    rstore_t *s = RS(st);
    rcmd_t c;
    cmd_conv(&c, s, S_ACK, pol, conv);
    cmd_add(&c, token ? token : "");
    return token_op(s, &c, conv, "ack");
}

static int r_ack_reply(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                       const char *token, const char *batch_id, const char *reply_json) {
    rstore_t *s = RS(st);
    rcmd_t c;
    cmd_conv(&c, s, S_ACK_REPLY, pol, conv);
    cmd_add(&c, token ? token : "");
    cmd_add(&c, batch_id ? batch_id : "");
    cmd_add(&c, reply_json ? reply_json : "{}");
    cmd_addll(&c, pol->reply_redeliver_ms);
    cmd_addll(&c, pol->reply_ttl_ms);
    return token_op(s, &c, conv, "ack_reply");
}

static int r_extend_batch(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                          const char *token, char **messages_json_out) {
    rstore_t *s = RS(st);
    rcmd_t c;
    redisReply *r = NULL;
    *messages_json_out = NULL;
    cmd_conv(&c, s, S_EXTEND_BATCH, pol, conv);
    cmd_add(&c, token ? token : "");
    int rc = rs_exec1(s, &c, &r, "extend_batch");
    if (rc != RUNLANE_OK) return rc;
    if (r->type == REDIS_REPLY_STRING) {
        if (!(*messages_json_out = rl_strndup(r->str, r->len)))
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    } else {
        rc = reply_ll(r) == 0 ? stale(conv) : bad_reply(s, "extend_batch");
    }
    freeReplyObject(r);
    return rc;
}

static int r_fail(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token,
                  const char *error, int retriable, rl_fail_outcome_t *outcome_out) {
    rstore_t *s = RS(st);
    rcmd_t c;
    redisReply *r = NULL;
    cmd_conv(&c, s, S_FAIL, pol, conv);
    cmd_add(&c, token ? token : "");
    cmd_add(&c, error ? error : "");
    cmd_add(&c, retriable ? "1" : "0");
    cmd_addll(&c, pol->max_attempts);
    cmd_addll(&c, pol->backoff_base_ms);
    cmd_addll(&c, pol->backoff_max_ms);
    cmd_addd(&c, pol->backoff_jitter);
    cmd_addd(&c, rl_random());
    int rc = rs_exec1(s, &c, &r, "fail");
    if (rc != RUNLANE_OK) return rc;
    long long v = reply_ll(r);
    freeReplyObject(r);
    if (v < 0) return stale(conv);
    if (outcome_out) *outcome_out = v == 1 ? RL_FAIL_DEAD : RL_FAIL_RETRY;
    return RUNLANE_OK;
}

static int release_op(rstore_t *s, const rl_policy_t *pol, const char *conv, const char *token,
                      int64_t delay_ms, const char *what) {
    rcmd_t c;
    cmd_conv(&c, s, S_RELEASE, pol, conv);
    cmd_add(&c, token ? token : "");
    cmd_addll(&c, delay_ms > 0 ? delay_ms : 0);
    return token_op(s, &c, conv, what);
}

static int r_release(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                     const char *token) {
    return release_op(RS(st), pol, conv, token, 0, "release");
}

static int r_defer(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token,
                   int64_t delay_ms) {
    return release_op(RS(st), pol, conv, token, delay_ms, "defer");
}

static int r_recover(rl_store_t *st, const rl_policy_t *pol, int *recovered_out,
                     int *dead_out) {
    rstore_t *s = RS(st);
    int recovered = 0, dead = 0;
    cand_t *cv = NULL;
    size_t nc = 0;
    if (recovered_out) *recovered_out = 0;
    if (dead_out) *dead_out = 0;
    int rc = rs_peek(s, "leases", RS_RECOVER_BATCH, &cv, &nc);
    if (rc != RUNLANE_OK || nc == 0) return rc;
    rcmd_t *cmds = calloc(nc, sizeof(*cmds));
    redisReply **rep = calloc(nc, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        cands_free(cv, nc);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < nc; i++) {
        cmd_conv(&cmds[i], s, S_RECOVER, pol, cv[i].conv);
        cmd_addll(&cmds[i], pol->max_stalls);
    }
    rc = rs_exec(s, cmds, nc, rep);
    if (rc == RUNLANE_OK) {
        for (size_t i = 0; i < nc; i++) {
            if (rep[i]->type == REDIS_REPLY_ERROR) {
                if (rc == RUNLANE_OK) rc = rs_reply_error(s, rep[i], "recover");
                continue;
            }
            long long v = reply_ll(rep[i]);
            if (v >= 1) recovered++;
            if (v == 2) dead++;
        }
    }
    free_replies(rep, nc);
    free(rep);
    cmds_free(cmds, nc);
    cands_free(cv, nc);
    if (recovered_out) *recovered_out = recovered;
    if (dead_out) *dead_out = dead;
    return rc;
}

/* ------------------------------------------------------------------ */
/* status                                                             */
/* ------------------------------------------------------------------ */

/* On a cluster, status reports how the partitions spread over the
 * masters: "cluster":{"masters":3,"partitions_per_master":[4,4,4]}. */
static void append_topology(rstore_t *s, rl_buf_t *b) {
    if (s->mode != RL_LINK_CLUSTER || b->oom || b->len == 0 || b->data[b->len - 1] != '}') return;
    int per[64], nm = 0;
    rl_store_redis_spread(&s->base, per, 64, &nm);
    b->len--;
    rl_buf_printf(b, ",\"cluster\":{\"masters\":%d,\"partitions\":%d,\"partitions_per_master\":[",
                  nm, s->partitions);
    for (int m = 0; m < nm && m < 64; m++) rl_buf_printf(b, "%s%d", m ? "," : "", per[m]);
    rl_buf_puts(b, "]}}");
}

static int status_totals(rstore_t *s, char **json_out) {
    size_t np = (size_t)s->partitions;
    rcmd_t *cmds = calloc(np, sizeof(*cmds));
    redisReply **rep = calloc(np, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t p = 0; p < np; p++) {
        cmd_init(&cmds[p]);
        cmd_script(&cmds[p], s, S_STATS);
        cmd_key(&cmds[p], s, (int)p, "stats", NULL);
        cmd_key(&cmds[p], s, (int)p, "ready", NULL);
        cmd_key(&cmds[p], s, (int)p, "leases", NULL);
        cmd_key(&cmds[p], s, (int)p, "dead", NULL);
    }
    long long t[10] = {0};
    int rc = rs_exec(s, cmds, np, rep);
    for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
        redisReply *r = rep[p];
        if (r->type == REDIS_REPLY_ERROR)
            rc = rs_reply_error(s, r, "status");
        else if (r->type != REDIS_REPLY_ARRAY || r->elements != 10)
            rc = bad_reply(s, "status");
        else
            for (size_t i = 0; i < 10; i++) t[i] += reply_ll(r->element[i]);
    }
    free_replies(rep, np);
    free(rep);
    cmds_free(cmds, np);
    if (rc != RUNLANE_OK) return rc;
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b,
                  "{\"pending\":%lld,\"ready\":%lld,\"inflight\":%lld,\"dead\":%lld,"
                  "\"conversations\":%lld,\"enqueued\":%lld,\"acked\":%lld,\"failed\":%lld,"
                  "\"dead_lettered\":%lld,\"recovered\":%lld}",
                  t[0], t[7], t[8], t[9], t[1], t[2], t[3], t[4], t[5], t[6]);
    append_topology(s, &b);
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static const char *elem_str(const redisReply *r, size_t i) {
    if (r->elements <= i) return "";
    const redisReply *e = r->element[i];
    return (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) && e->str ? e->str
                                                                                      : "";
}

static int status_conv(rstore_t *s, const char *conv, char **json_out) {
    rcmd_t c;
    redisReply *r = NULL;
    cmd_conv(&c, s, S_STATUS_CONV, NULL, conv);
    int rc = rs_exec1(s, &c, &r, "status");
    if (rc != RUNLANE_OK) return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 11) {
        freeReplyObject(r);
        return bad_reply(s, "status");
    }
    const char *batch_id = elem_str(r, 4), *owner = elem_str(r, 5), *token = elem_str(r, 6);
    const char *due = elem_str(r, 8), *last_error = elem_str(r, 9), *state = elem_str(r, 10);
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"conversation_id\":");
    rl_buf_json_str(&b, conv);
    rl_buf_printf(&b, ",\"pending\":%lld,\"inflight\":%lld,\"attempts\":%lld,\"batch_id\":",
                  reply_ll(r->element[1]), reply_ll(r->element[2]), reply_ll(r->element[3]));
    if (*batch_id)
        rl_buf_json_str(&b, batch_id);
    else
        rl_buf_puts(&b, "null");
    rl_buf_puts(&b, ",\"owner\":");
    if (*token)
        rl_buf_json_str(&b, owner);
    else
        rl_buf_puts(&b, "null");
    if (*token)
        rl_buf_printf(&b, ",\"lease_expires_ms\":%lld", reply_ll(r->element[7]));
    else
        rl_buf_puts(&b, ",\"lease_expires_ms\":null");
    if (*due)
        rl_buf_printf(&b, ",\"due_ms\":%lld", (long long)rl_f64_to_i64(strtod(due, NULL)));
    else
        rl_buf_puts(&b, ",\"due_ms\":null");
    rl_buf_puts(&b, ",\"last_error\":");
    if (*last_error)
        rl_buf_json_str(&b, last_error);
    else
        rl_buf_puts(&b, "null");
    rl_buf_puts(&b, ",\"state\":");
    rl_buf_json_str(&b, state);
    rl_buf_puts(&b, "}");
    freeReplyObject(r);
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static int r_status(rl_store_t *st, const char *conv, char **json_out) {
    *json_out = NULL;
    return conv ? status_conv(RS(st), conv, json_out) : status_totals(RS(st), json_out);
}

/* ------------------------------------------------------------------ */
/* dead letters                                                       */
/* ------------------------------------------------------------------ */

typedef struct dref {
    char *id;
    int part;
    double at;
    size_t order;
} dref_t;

static int cmp_dref(const void *a, const void *b) {
    const dref_t *x = a, *y = b;
    if (x->at != y->at) return x->at < y->at ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void drefs_free(dref_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i].id);
    free(v);
}

/* The ids of dead zset entries [0, upto) of every partition (upto 0: all),
 * sorted by dead_at. */
static int dead_refs(rstore_t *s, size_t upto, dref_t **out, size_t *nout) {
    size_t np = (size_t)s->partitions;
    *out = NULL;
    *nout = 0;
    rcmd_t *cmds = calloc(np, sizeof(*cmds));
    redisReply **rep = calloc(np, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t p = 0; p < np; p++) {
        cmd_init(&cmds[p]);
        cmd_add(&cmds[p], "ZRANGE");
        cmd_key(&cmds[p], s, (int)p, "dead", NULL);
        cmd_add(&cmds[p], "0");
        cmd_addll(&cmds[p], upto ? (long long)upto - 1 : -1);
        cmd_add(&cmds[p], "WITHSCORES");
    }
    int rc = rs_exec(s, cmds, np, rep);
    dref_t *v = NULL;
    size_t n = 0, cap = 0;
    for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
        redisReply *r = rep[p];
        if (r->type == REDIS_REPLY_ERROR) {
            rc = rs_reply_error(s, r, "ZRANGE dead");
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY) {
            rc = bad_reply(s, "ZRANGE dead");
            break;
        }
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                dref_t *nv = realloc(v, nc * sizeof(*nv));
                if (!nv) {
                    rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                    break;
                }
                v = nv;
                cap = nc;
            }
            v[n].id = rl_strndup(r->element[i]->str, r->element[i]->len);
            if (!v[n].id) {
                rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                break;
            }
            v[n].part = (int)p;
            v[n].at = strtod(r->element[i + 1]->str, NULL);
            v[n].order = n;
            n++;
        }
    }
    free_replies(rep, np);
    free(rep);
    cmds_free(cmds, np);
    if (rc != RUNLANE_OK) {
        drefs_free(v, n);
        return rc;
    }
    if (n > 1) qsort(v, n, sizeof(*v), cmp_dref);
    *out = v;
    *nout = n;
    return RUNLANE_OK;
}

static int r_dead_list(rl_store_t *st, size_t offset, size_t limit, char **json_out) {
    rstore_t *s = RS(st);
    *json_out = NULL;
    if (!limit) limit = 100;
    dref_t *v = NULL;
    size_t n = 0;
    int rc = dead_refs(s, offset + limit, &v, &n);
    if (rc != RUNLANE_OK) return rc;
    size_t from = offset < n ? offset : n;
    size_t cnt = n - from < limit ? n - from : limit;
    rcmd_t *cmds = cnt ? calloc(cnt, sizeof(*cmds)) : NULL;
    redisReply **rep = cnt ? calloc(cnt, sizeof(*rep)) : NULL;
    if (cnt && (!cmds || !rep)) {
        free(cmds);
        free(rep);
        drefs_free(v, n);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < cnt; i++) {
        cmd_init(&cmds[i]);
        cmd_add(&cmds[i], "HGET");
        cmd_key(&cmds[i], s, v[from + i].part, "deadrec", NULL);
        cmd_add(&cmds[i], v[from + i].id);
    }
    if (cnt) rc = rs_exec(s, cmds, cnt, rep);
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "[");
    int first = 1;
    for (size_t i = 0; rc == RUNLANE_OK && i < cnt; i++) {
        if (rep[i]->type == REDIS_REPLY_ERROR) {
            rc = rs_reply_error(s, rep[i], "HGET deadrec");
        } else if (rep[i]->type == REDIS_REPLY_STRING) {
            if (!first) rl_buf_puts(&b, ",");
            rl_buf_append(&b, rep[i]->str, rep[i]->len);
            first = 0;
        } /* nil: purged meanwhile */
    }
    rl_buf_puts(&b, "]");
    if (rep) free_replies(rep, cnt);
    free(rep);
    cmds_free(cmds, cnt);
    drefs_free(v, n);
    if (rc != RUNLANE_OK) {
        rl_buf_free(&b);
        return rc;
    }
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

/* conversation_id of a dead record, or NULL. */
static char *dead_conv_of(const char *json, size_t len) {
    cJSON *j = cJSON_ParseWithLength(json, len);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "conversation_id");
    char *conv = cJSON_IsString(c) ? rl_strdup(c->valuestring) : NULL;
    cJSON_Delete(j);
    return conv;
}

/* Retries the dead letters `ids` of partition `part`, in the given order,
 * with one pipeline for the records and one for the scripts. */
static int retry_ids(rstore_t *s, const rl_policy_t *pol, int part, char **ids, size_t n,
                     int must_exist, size_t *count) {
    rcmd_t *cmds = calloc(n, sizeof(*cmds));
    redisReply **rep = calloc(n, sizeof(*rep));
    char **convs = calloc(n, sizeof(*convs));
    if (!cmds || !rep || !convs) {
        free(cmds);
        free(rep);
        free(convs);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        cmd_init(&cmds[i]);
        cmd_add(&cmds[i], "HGET");
        cmd_key(&cmds[i], s, part, "deadrec", NULL);
        cmd_add(&cmds[i], ids[i]);
    }
    int rc = rs_exec(s, cmds, n, rep);
    for (size_t i = 0; rc == RUNLANE_OK && i < n; i++) {
        if (rep[i]->type == REDIS_REPLY_ERROR)
            rc = rs_reply_error(s, rep[i], "HGET deadrec");
        else if (rep[i]->type == REDIS_REPLY_STRING &&
                 !(convs[i] = dead_conv_of(rep[i]->str, rep[i]->len)))
            rc = rl_error_set(RUNLANE_ERR_INTERNAL, 0,
                              "redis %s: dead letter \"%.64s\" has no conversation_id", s->where,
                              ids[i]);
    }
    free_replies(rep, n);
    cmds_free(cmds, n);
    cmds = calloc(n, sizeof(*cmds));
    size_t m = 0;
    for (size_t i = 0; rc == RUNLANE_OK && cmds && i < n; i++) {
        if (!convs[i]) continue;
        if (rl_partition_of(convs[i], s->partitions) != part) {
            rc = rl_error_set(RUNLANE_ERR_STATE, 0,
                              "redis %s: dead letter \"%.64s\" is in partition %d but its "
                              "conversation maps to partition %d (was `partitions` changed?)",
                              s->where, ids[i], part, rl_partition_of(convs[i], s->partitions));
            break;
        }
        cmd_conv(&cmds[m], s, S_DEAD_RETRY, pol, convs[i]);
        cmd_add(&cmds[m], ids[i]);
        m++;
    }
    if (!cmds && rc == RUNLANE_OK) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if (rc == RUNLANE_OK && m == 0 && must_exist)
        rc = rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", ids[0]);
    if (rc == RUNLANE_OK && m) rc = rs_exec(s, cmds, m, rep);
    for (size_t i = 0; rc == RUNLANE_OK && i < m; i++) {
        if (rep[i]->type == REDIS_REPLY_ERROR) {
            rc = rs_reply_error(s, rep[i], "dead_retry");
        } else {
            long long v = reply_ll(rep[i]);
            if (v >= 0)
                (*count)++;
            else if (v == -2)
                rc = rl_error_set(RUNLANE_ERR_INTERNAL, 0,
                                  "redis %s: dead letter conversation mismatch", s->where);
        }
    }
    if (rc == RUNLANE_OK && must_exist && *count == 0)
        rc = rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", ids[0]);
    free_replies(rep, m);
    free(rep);
    cmds_free(cmds, m);
    for (size_t i = 0; i < n; i++) free(convs[i]);
    free(convs);
    return rc;
}

static int r_dead_retry(rl_store_t *st, const rl_policy_t *pol, const char *dead_id,
                        size_t *count_out) {
    rstore_t *s = RS(st);
    size_t count = 0;
    int rc = RUNLANE_OK;
    if (count_out) *count_out = 0;
    if (dead_id) {
        /* which partition holds it: one pipelined ZSCORE per partition */
        size_t np = (size_t)s->partitions;
        rcmd_t *cmds = calloc(np, sizeof(*cmds));
        redisReply **rep = calloc(np, sizeof(*rep));
        if (!cmds || !rep) {
            free(cmds);
            free(rep);
            return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        }
        for (size_t p = 0; p < np; p++) {
            cmd_init(&cmds[p]);
            cmd_add(&cmds[p], "ZSCORE");
            cmd_key(&cmds[p], s, (int)p, "dead", NULL);
            cmd_add(&cmds[p], dead_id);
        }
        rc = rs_exec(s, cmds, np, rep);
        int part = -1;
        for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
            if (rep[p]->type == REDIS_REPLY_ERROR)
                rc = rs_reply_error(s, rep[p], "ZSCORE dead");
            else if (rep[p]->type == REDIS_REPLY_STRING && part < 0)
                part = (int)p;
        }
        free_replies(rep, np);
        free(rep);
        cmds_free(cmds, np);
        if (rc != RUNLANE_OK) return rc;
        if (part < 0) return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", dead_id);
        char *ids[1] = {(char *)dead_id};
        rc = retry_ids(s, pol, part, ids, 1, 1, &count);
    } else {
        /* all: per partition, newest first, so that a conversation with
         * several dead batches ends with the oldest in front */
        dref_t *v = NULL;
        size_t n = 0;
        rc = dead_refs(s, 0, &v, &n);
        for (int p = 0; rc == RUNLANE_OK && p < s->partitions; p++) {
            char **ids = malloc((n ? n : 1) * sizeof(*ids));
            size_t k = 0;
            if (!ids) {
                rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                break;
            }
            for (size_t i = n; i-- > 0;)
                if (v[i].part == p) ids[k++] = v[i].id;
            for (size_t off = 0; rc == RUNLANE_OK && off < k; off += RS_CHUNK)
                rc = retry_ids(s, pol, p, ids + off, k - off < RS_CHUNK ? k - off : RS_CHUNK, 0,
                               &count);
            free(ids);
        }
        drefs_free(v, n);
    }
    if (count_out) *count_out = count;
    return rc;
}

static int r_dead_purge(rl_store_t *st, const char *dead_id, size_t *count_out) {
    rstore_t *s = RS(st);
    size_t np = (size_t)s->partitions;
    if (count_out) *count_out = 0;
    rcmd_t *cmds = calloc(np, sizeof(*cmds));
    redisReply **rep = calloc(np, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t p = 0; p < np; p++) {
        cmd_init(&cmds[p]);
        cmd_script(&cmds[p], s, S_DEAD_PURGE);
        cmd_key(&cmds[p], s, (int)p, "dead", NULL);
        cmd_key(&cmds[p], s, (int)p, "deadrec", NULL);
        cmd_key(&cmds[p], s, (int)p, "deadaux", NULL);
        cmd_add(&cmds[p], dead_id ? dead_id : "");
    }
    int rc = rs_exec(s, cmds, np, rep);
    long long count = 0;
    for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
        if (rep[p]->type == REDIS_REPLY_ERROR)
            rc = rs_reply_error(s, rep[p], "dead_purge");
        else
            count += reply_ll(rep[p]);
    }
    free_replies(rep, np);
    free(rep);
    cmds_free(cmds, np);
    if (rc != RUNLANE_OK) return rc;
    if (dead_id && count == 0)
        return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", dead_id);
    if (count_out) *count_out = (size_t)count;
    return RUNLANE_OK;
}

/* ------------------------------------------------------------------ */
/* unconfirmed replies                                                */
/* ------------------------------------------------------------------ */

static int r_reply_claim(rl_store_t *st, const rl_policy_t *pol, int max, rl_reply_t **out,
                         int *n_out) {
    rstore_t *s = RS(st);
    *out = NULL;
    *n_out = 0;
    if (max <= 0) return RUNLANE_OK;
    /* Candidates of every partition, earliest first; each is then taken
     * atomically (it may have been confirmed or taken meanwhile). */
    cand_t *cv = NULL;
    size_t nc = 0;
    int rc = rs_peek(s, "reply_due", max, &cv, &nc);
    if (rc != RUNLANE_OK || nc == 0) return rc;
    size_t n = nc < (size_t)max ? nc : (size_t)max;
    rcmd_t *cmds = calloc(n, sizeof(*cmds));
    redisReply **rep = calloc(n, sizeof(*rep));
    rl_reply_t *v = calloc(n, sizeof(*v));
    if (!cmds || !rep || !v) {
        free(cmds);
        free(rep);
        free(v);
        cands_free(cv, nc);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        cmd_init(&cmds[i]);
        cmd_script(&cmds[i], s, S_REPLY_CLAIM);
        cmd_key(&cmds[i], s, cv[i].part, key_kinds[K_REPLIES], NULL);
        cmd_key(&cmds[i], s, cv[i].part, key_kinds[K_REPLY_DUE], NULL);
        cmd_add(&cmds[i], cv[i].conv);
        cmd_addll(&cmds[i], pol->reply_redeliver_ms);
    }
    rc = rs_exec(s, cmds, n, rep);
    int got = 0;
    for (size_t i = 0; rep[0] && i < n; i++) {
        redisReply *r = rep[i];
        int r1 = RUNLANE_OK;
        if (r->type == REDIS_REPLY_NIL) continue; /* confirmed, taken or expired */
        if (r->type == REDIS_REPLY_ERROR) {
            r1 = rs_reply_error(s, r, "reply_claim");
        } else if (r->type != REDIS_REPLY_STRING || strlen(cv[i].conv) >= RUNLANE_ID_MAX) {
            r1 = bad_reply(s, "reply_claim");
        } else if (!(v[got].json = rl_strndup(r->str, r->len))) {
            r1 = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        } else {
            rl_strlcpy(v[got].batch_id, cv[i].conv, sizeof(v[got].batch_id));
            got++;
        }
        /* keep going: what was taken is postponed and must be handed over */
        if (r1 != RUNLANE_OK && rc == RUNLANE_OK) rc = r1;
    }
    free_replies(rep, n);
    free(rep);
    cmds_free(cmds, n);
    cands_free(cv, nc);
    if (got == 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n_out = got;
    return RUNLANE_OK;
}

static int r_reply_ack(rl_store_t *st, const char *batch_id) {
    rstore_t *s = RS(st);
    int part = rl_batch_partition(batch_id, s->partitions);
    if (part < 0)
        return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0,
                            "no unconfirmed reply of batch \"%.64s\" (not a batch id of this "
                            "queue)",
                            batch_id ? batch_id : "");
    rcmd_t c;
    redisReply *r = NULL;
    cmd_init(&c);
    cmd_script(&c, s, S_REPLY_ACK);
    cmd_key(&c, s, part, key_kinds[K_REPLIES], NULL);
    cmd_key(&c, s, part, key_kinds[K_REPLY_DUE], NULL);
    cmd_add(&c, batch_id);
    int rc = rs_exec1(s, &c, &r, "reply_ack");
    if (rc != RUNLANE_OK) return rc;
    long long v = reply_ll(r);
    freeReplyObject(r);
    if (v <= 0)
        return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0,
                            "no unconfirmed reply of batch \"%.64s\" (already confirmed, expired "
                            "or unknown)",
                            batch_id);
    return RUNLANE_OK;
}

/* ------------------------------------------------------------------ */
/* the shared requests-per-minute budget                              */
/* ------------------------------------------------------------------ */

static int r_rate_take(rl_store_t *st, int64_t rpm, int64_t *wait_ms_out) {
    rstore_t *s = RS(st);
    *wait_ms_out = 0;
    if (rpm <= 0) return RUNLANE_OK;
    rcmd_t c;
    redisReply *r = NULL;
    cmd_init(&c);
    cmd_script(&c, s, S_RATE_TAKE);
    /* <prefix>:{rate}:bucket: one slot of its own, whatever the partitions */
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "%s:{rate}:bucket", s->prefix);
    if (b.oom) c.oom = 1;
    else cmd_addn(&c, b.data, b.len);
    rl_buf_free(&b);
    cmd_addll(&c, (long long)rpm);
    int rc = rs_exec1(s, &c, &r, "rate_take");
    if (rc != RUNLANE_OK) return rc;
    if (r->type != REDIS_REPLY_INTEGER) {
        freeReplyObject(r);
        return bad_reply(s, "rate_take");
    }
    *wait_ms_out = r->integer > 0 ? (int64_t)r->integer : 0;
    freeReplyObject(r);
    return RUNLANE_OK;
}

/* ------------------------------------------------------------------ */
/* conversation keys                                                  */
/* ------------------------------------------------------------------ */

static int r_conv_map(rl_store_t *st, int mode, const char *conv, const char *token,
                      const char *provider_id, char **out) {
    rstore_t *s = RS(st);
    if (out) *out = NULL;
    int part = rl_partition_of(conv, s->partitions);
    rcmd_t c;
    redisReply *r = NULL;
    cmd_init(&c);
    cmd_script(&c, s, S_CONV_MAP);
    cmd_key(&c, s, part, key_kinds[K_META], conv);
    cmd_key(&c, s, part, "convmap", NULL);
    cmd_addll(&c, mode);
    cmd_add(&c, conv);
    cmd_add(&c, token ? token : "");
    cmd_add(&c, provider_id ? provider_id : "");
    int rc = rs_exec1(s, &c, &r, "conv_map");
    if (rc != RUNLANE_OK) return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return bad_reply(s, "conv_map");
    }
    long long ok = reply_ll(r->element[0]);
    if (ok <= 0) {
        freeReplyObject(r);
        return stale(conv);
    }
    if (out && r->element[1]->len > 0) {
        *out = rl_strndup(r->element[1]->str, r->element[1]->len);
        if (!*out) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    freeReplyObject(r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* cross-process wake-up                                              */
/* ------------------------------------------------------------------ */

/* Why a blocking pop on a per-partition wake key (<prefix>:{p}:wake, a
 * sorted set of one member, see rl_signal in core/lua/includes/common.lua)
 * rather than Pub/Sub: one announcement wakes ONE waiting worker (Redis
 * serves blocked clients in order), not every subscriber, so idle workers
 * do not all race for the same conversation (empty claims), and
 * announcements made while no worker waits merge into one (the earliest
 * due time) instead of being lost or piling up. An idle worker costs one
 * BZPOPMIN per timeout (seconds) and nothing else.
 * Redis Cluster: the key carries its partition's hash tag, so scripts write
 * it in their own slot. One BZPOPMIN names every partition's key, which a
 * single server accepts; on a Cluster a blocking command must stay in one
 * slot, so the waiting connection has to be split per partition (one
 * outstanding BZPOPMIN each, routed to the partition's node). */

static int r_heads(rl_store_t *st, int replies, int64_t *ready_out, int64_t *lease_out,
                   int64_t *reply_out, int64_t *now_out) {
    rstore_t *s = RS(st);
    int per = replies ? 3 : 2;
    size_t n = 1 + (size_t)s->partitions * (size_t)per;
    static const char *const kinds[3] = {"ready", "leases", "reply_due"};
    rcmd_t *cmds = calloc(n, sizeof(*cmds));
    redisReply **rep = calloc(n, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    cmd_init(&cmds[0]);
    cmd_add(&cmds[0], "TIME");
    for (int p = 0; p < s->partitions; p++)
        for (int k = 0; k < per; k++) {
            rcmd_t *c = &cmds[1 + (size_t)p * (size_t)per + (size_t)k];
            cmd_init(c);
            cmd_add(c, "ZRANGE");
            cmd_key(c, s, p, kinds[k], NULL);
            cmd_add(c, "0");
            cmd_add(c, "0");
            cmd_add(c, "WITHSCORES");
        }
    int64_t best[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, now = 0;
    int rc = rs_exec(s, cmds, n, rep);
    for (size_t i = 0; rc == RUNLANE_OK && i < n; i++) {
        redisReply *r = rep[i];
        if (r->type == REDIS_REPLY_ERROR) {
            rc = rs_reply_error(s, r, i ? "ZRANGE" : "TIME");
        } else if (r->type != REDIS_REPLY_ARRAY) {
            rc = bad_reply(s, "heads");
        } else if (i == 0) {
            if (r->elements != 2)
                rc = bad_reply(s, "TIME");
            else
                now = (int64_t)reply_ll(r->element[0]) * 1000 +
                      (int64_t)reply_ll(r->element[1]) / 1000;
        } else if (r->elements == 2) {
            int k = (int)((i - 1) % (size_t)per);
            int64_t d = (int64_t)reply_ll(r->element[1]);
            if (d < best[k]) best[k] = d;
        }
    }
    free_replies(rep, n);
    free(rep);
    cmds_free(cmds, n);
    if (rc != RUNLANE_OK) return rc;
    *ready_out = best[0];
    *lease_out = best[1];
    if (reply_out) *reply_out = best[2];
    *now_out = now;
    return RUNLANE_OK;
}

static int r_wait_arm(rl_store_t *st, int64_t timeout_ms, int *fd_out) {
    rstore_t *s = RS(st);
    *fd_out = -1;
    redisContext *wc = s->waiting ? rl_redis_link_single_context(s->link) : NULL;
    if (wc) {
        *fd_out = wc->fd;
        return RUNLANE_OK;
    }
    s->waiting = 0;
    rcmd_t c;
    cmd_init(&c);
    cmd_add(&c, "BZPOPMIN");
    for (int p = 0; p < s->partitions; p++) cmd_key(&c, s, p, "wake", NULL);
    if (timeout_ms < 1) timeout_ms = 1;
    char t[32];
    snprintf(t, sizeof(t), "%lld.%03lld", (long long)(timeout_ms / 1000),
             (long long)(timeout_ms % 1000));
    cmd_add(&c, t);
    if (c.oom) {
        cmd_free(&c);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    rl_sigpipe_guard_t g;
    rl_sigpipe_block(&g);
    /* (a cluster has no one connection: the worker falls back to polling) */
    redisContext *ctx = rl_redis_link_single_context(s->link);
    int rc = ctx ? RUNLANE_OK : (int)runlane_error_code(runlane_error_last());
    if (rc == RUNLANE_OK) {
        int done = 0;
        if (redisAppendCommandArgv(ctx, c.argc, (const char **)c.argv, c.lens) != REDIS_OK)
            rc = rs_io_error(s, errno);
        /* a small command: the socket takes it at once */
        while (rc == RUNLANE_OK && !done)
            if (redisBufferWrite(ctx, &done) != REDIS_OK) rc = rs_io_error(s, errno);
    }
    rl_sigpipe_restore(&g);
    cmd_free(&c);
    if (rc != RUNLANE_OK) return rc;
    s->waiting = 1;
    *fd_out = ctx->fd;
    return RUNLANE_OK;
}

static int r_wait_take(rl_store_t *st, int *part_out, int64_t *due_out, char *conv_out,
                       size_t cap) {
    rstore_t *s = RS(st);
    if (cap) conv_out[0] = '\0';
    redisContext *wc = s->waiting ? rl_redis_link_single_context(s->link) : NULL;
    if (!wc) {
        s->waiting = 0;
        return 0;
    }
    void *v = NULL;
    if (redisGetReplyFromReader(wc, &v) != REDIS_OK) return rs_io_error(s, errno);
    if (!v) {
        struct pollfd pfd = {wc->fd, POLLIN, 0};
        if (poll(&pfd, 1, 0) <= 0) return 2;
        if (redisBufferRead(wc) != REDIS_OK) return rs_io_error(s, errno);
        if (redisGetReplyFromReader(wc, &v) != REDIS_OK) return rs_io_error(s, errno);
        if (!v) return 2;
    }
    s->waiting = 0;
    redisReply *r = v;
    int rc = 0;
    if (r->type == REDIS_REPLY_NIL) {
        rc = 0; /* timed out */
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc = rs_reply_error(s, r, "BZPOPMIN wake");
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[2]->type != REDIS_REPLY_STRING) {
        rc = bad_reply(s, "BZPOPMIN wake");
    } else {
        /* <prefix>:{p}:wake; the prefix has no braces */
        const char *k = r->element[0]->str, *b = strchr(k, '{');
        long p = b ? strtol(b + 1, NULL, 10) : -1;
        if (p < 0 || p >= s->partitions) p = 0;
        *part_out = (int)p;
        *due_out = rl_f64_to_i64(strtod(r->element[2]->str, NULL));
        /* "c:<conv>" names a conversation (see rl_signal); "w", or a name
         * too long to be one, is a due time */
        const redisReply *mb = r->element[1];
        if (mb->type == REDIS_REPLY_STRING && mb->len > 2 && mb->len - 2 < cap &&
            mb->len - 2 <= RUNLANE_CONVERSATION_ID_MAX && memcmp(mb->str, "c:", 2) == 0) {
            memcpy(conv_out, mb->str + 2, mb->len - 2);
            conv_out[mb->len - 2] = '\0';
        }
        rc = 1;
    }
    freeReplyObject(r);
    return rc;
}

static int r_wait_give(rl_store_t *st, int part, int64_t due, const char *conv) {
    rstore_t *s = RS(st);
    rcmd_t c;
    redisReply *r = NULL;
    char member[RUNLANE_CONVERSATION_ID_MAX + 3] = "w";
    if (conv && *conv && strlen(conv) <= RUNLANE_CONVERSATION_ID_MAX)
        snprintf(member, sizeof(member), "c:%s", conv);
    cmd_init(&c);
    cmd_add(&c, "ZADD");
    cmd_key(&c, s, part, "wake", NULL);
    cmd_add(&c, "LT");
    cmd_addll(&c, due);
    cmd_add(&c, member);
    int rc = rs_exec1(s, &c, &r, "ZADD wake");
    if (r) freeReplyObject(r);
    if (rc == RUNLANE_ERR_STORE && !runlane_error_retriable(runlane_error_last())) {
        /* Redis < 6.2: no LT; a later due time only wakes a worker early */
        cmd_init(&c);
        cmd_add(&c, "ZADD");
        cmd_key(&c, s, part, "wake", NULL);
        cmd_addll(&c, due);
        cmd_add(&c, member);
        r = NULL;
        rc = rs_exec1(s, &c, &r, "ZADD wake");
        if (r) freeReplyObject(r);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* dashboard reads                                                    */
/* ------------------------------------------------------------------ */

typedef struct litem {
    double score;
    size_t order;
    redisReply **e; /* conv, score, attempts, owner, last_error */
} litem_t;

static int cmp_litem(const void *a, const void *b) {
    const litem_t *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void json_str_or_null(rl_buf_t *b, const redisReply *r) {
    if (r->type == REDIS_REPLY_STRING && r->len > 0)
        rl_buf_json_str(b, r->str);
    else
        rl_buf_puts(b, "null");
}

/* Members a filtered list (pending, retrying, or a search) looks at past
 * its page to count the total: the page polls every 2 s, so the work per
 * call must not grow with the queue (see conv_list-2.lua). */
#define RS_LIST_COUNT 1000

/* One script per partition (pipelined), each returning its first
 * offset + limit matches; merged here by score. */
static int r_conv_list(rl_store_t *st, const char *state, const char *search, size_t offset,
                       size_t limit, size_t scan, char **json_out) {
    rstore_t *s = RS(st);
    size_t np = (size_t)s->partitions;
    *json_out = NULL;
    rcmd_t *cmds = calloc(np, sizeof(*cmds));
    redisReply **rep = calloc(np, sizeof(*rep));
    if (!cmds || !rep) {
        free(cmds);
        free(rep);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t p = 0; p < np; p++) {
        char kp[512];
        snprintf(kp, sizeof(kp), "%s:{%s}:", s->prefix, s->tags[p]);
        cmd_init(&cmds[p]);
        cmd_script(&cmds[p], s, S_CONV_LIST);
        cmd_key(&cmds[p], s, (int)p, key_kinds[K_READY], NULL);
        cmd_key(&cmds[p], s, (int)p, key_kinds[K_LEASES], NULL);
        cmd_add(&cmds[p], state);
        cmd_add(&cmds[p], search ? search : "");
        cmd_addll(&cmds[p], (long long)(offset + limit));
        cmd_addll(&cmds[p], (long long)scan);
        cmd_add(&cmds[p], kp);
        cmd_addll(&cmds[p], (long long)(scan < RS_LIST_COUNT ? scan : RS_LIST_COUNT));
    }
    int rc = rs_exec(s, cmds, np, rep);
    litem_t *v = NULL;
    size_t n = 0, total = 0;
    long long now = 0;
    int truncated = 0;
    if (rc == RUNLANE_OK) {
        size_t cap = 0;
        for (size_t p = 0; p < np; p++) {
            redisReply *r = rep[p];
            if (r->type == REDIS_REPLY_ERROR) {
                rc = rs_reply_error(s, r, "conv_list");
                break;
            }
            if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || (r->elements - 3) % 5) {
                rc = bad_reply(s, "conv_list");
                break;
            }
            now = reply_ll(r->element[0]);
            total += (size_t)reply_ll(r->element[1]);
            truncated |= reply_ll(r->element[2]) != 0;
            cap += (r->elements - 3) / 5;
        }
        if (rc == RUNLANE_OK && cap && !(v = calloc(cap, sizeof(*v))))
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        for (size_t p = 0; rc == RUNLANE_OK && p < np; p++) {
            redisReply *r = rep[p];
            for (size_t i = 3; i + 4 < r->elements; i += 5) {
                if (r->element[i]->type != REDIS_REPLY_STRING ||
                    r->element[i + 1]->type != REDIS_REPLY_STRING) {
                    rc = bad_reply(s, "conv_list");
                    break;
                }
                v[n].e = &r->element[i];
                v[n].score = strtod(r->element[i + 1]->str, NULL);
                v[n].order = n;
                n++;
            }
        }
    }
    if (rc == RUNLANE_OK) {
        if (n > 1) qsort(v, n, sizeof(*v), cmp_litem);
        rl_buf_t b;
        rl_buf_init(&b);
        rl_buf_puts(&b, "{\"items\":[");
        for (size_t i = offset, k = 0; i < n && k < limit; i++, k++) {
            redisReply **e = v[i].e;
            if (k) rl_buf_puts(&b, ",");
            rl_buf_puts(&b, "{\"conversation_id\":");
            rl_buf_json_str(&b, e[0]->str);
            rl_buf_puts(&b, ",\"state\":");
            rl_buf_json_str(&b, strcmp(state, "waiting") && strcmp(state, "backoff") &&
                                        strcmp(state, "leased") && v[i].score <= (double)now
                                    ? "ready"
                                    : state);
            rl_buf_printf(&b, ",\"score_ms\":%lld,\"attempts\":%lld,\"owner\":",
                          (long long)v[i].score, reply_ll(e[2]));
            json_str_or_null(&b, e[3]);
            rl_buf_puts(&b, ",\"last_error\":");
            json_str_or_null(&b, e[4]);
            rl_buf_puts(&b, "}");
        }
        rl_buf_printf(&b, "],\"now_ms\":%lld,\"total\":%zu,\"truncated\":%s}", now, total,
                      truncated ? "true" : "false");
        *json_out = rl_buf_take(&b);
        if (!*json_out) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    free(v);
    free_replies(rep, np);
    free(rep);
    cmds_free(cmds, np);
    return rc;
}

/* Appends the records of list entries "<bytes>:<json>" as a JSON array. */
static void entries_json(rl_buf_t *b, const redisReply *r) {
    rl_buf_puts(b, "[");
    size_t k = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING) continue;
        const char *colon = memchr(e->str, ':', e->len);
        if (!colon) continue;
        if (k++) rl_buf_puts(b, ",");
        rl_buf_append(b, colon + 1, e->len - (size_t)(colon + 1 - e->str));
    }
    rl_buf_puts(b, "]");
}

static int r_conv_peek(rl_store_t *st, const char *conv, size_t max, char **json_out) {
    rstore_t *s = RS(st);
    *json_out = NULL;
    int part = rl_partition_of(conv, s->partitions);
    rcmd_t cmds[3];
    redisReply *rep[3] = {0};
    static const int kinds[2] = {K_PENDING, K_BATCH};
    for (int i = 0; i < 2; i++) {
        cmd_init(&cmds[i]);
        cmd_add(&cmds[i], "LRANGE");
        cmd_key(&cmds[i], s, part, key_kinds[kinds[i]], conv);
        cmd_add(&cmds[i], "0");
        cmd_addll(&cmds[i], max ? (long long)max - 1 : 0);
    }
    cmd_init(&cmds[2]);
    cmd_add(&cmds[2], "HGET");
    cmd_key(&cmds[2], s, part, key_kinds[K_META], conv);
    cmd_add(&cmds[2], "token");
    int rc = rs_exec(s, cmds, 3, rep);
    for (int i = 0; rc == RUNLANE_OK && i < 3; i++) {
        if (rep[i]->type == REDIS_REPLY_ERROR)
            rc = rs_reply_error(s, rep[i], "conv_peek");
        else if (i < 2 && rep[i]->type != REDIS_REPLY_ARRAY)
            rc = bad_reply(s, "conv_peek");
    }
    if (rc == RUNLANE_OK) {
        rl_buf_t b;
        rl_buf_init(&b);
        rl_buf_puts(&b, "{\"pending\":");
        entries_json(&b, rep[0]);
        rl_buf_puts(&b, ",\"batch\":");
        entries_json(&b, rep[1]);
        rl_buf_puts(&b, ",\"token\":");
        rl_buf_json_str(&b, rep[2]->type == REDIS_REPLY_STRING ? rep[2]->str : "");
        rl_buf_puts(&b, "}");
        *json_out = rl_buf_take(&b);
        if (!*json_out) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    free_replies(rep, 3);
    for (int i = 0; i < 3; i++) cmd_free(&cmds[i]);
    return rc;
}

/* ------------------------------------------------------------------ */
/* open / destroy                                                     */
/* ------------------------------------------------------------------ */

static void r_destroy(rl_store_t *st) {
    rstore_t *s = RS(st);
    if (!s) return;
    rl_redis_link_free(s->link);
    rl_redis_tls_free(s->tls_ctx);
    for (int i = 0; i < s->nseeds; i++) free(s->seed_hosts[i]);
    free(s->seed_hosts);
    free(s->seed_ports);
    free(s->master_name);
    free(s->tags);
    free(s->host);
    free(s->sock);
    free(s->user);
    if (s->pass) {
        memset(s->pass, 0, strlen(s->pass));
        free(s->pass);
    }
    free(s->prefix);
    free(s);
}

static int r_pipeline_group(rl_store_t *st, const char *conv) {
    rstore_t *s = RS(st);
    return s->mode == RL_LINK_CLUSTER ? rl_partition_of(conv, s->partitions) : 0;
}

static const rl_store_ops_t redis_ops = {
    "redis",      r_enqueue,      r_enqueue_many, r_touch,     r_next_due,  r_claim,
    r_renew,      r_extend_batch, r_checkpoint,   r_ack,       r_ack_reply, r_fail,
    r_release,    r_defer,        r_recover,      r_status,    r_dead_list, r_dead_retry,
    r_dead_purge, r_reply_claim,  r_reply_ack,    r_rate_take, r_conv_map, r_destroy,
    r_heads,      r_claim_hint,   r_wait_arm,     r_wait_take, r_wait_give,
    r_conv_list,  r_conv_peek,    r_claim_named,
    r_pipeline_group,
};

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes p[0..n); NULL on a bad escape or out of memory. */
static char *pct_decode(const char *p, size_t n) {
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval((unsigned char)p[i + 1])) < 0 ||
                (l = hexval((unsigned char)p[i + 2])) < 0) {
                free(out);
                return NULL;
            }
            *o++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *o++ = p[i];
        }
    }
    *o = '\0';
    return out;
}

static int parse_int(const char *p, size_t n, long lo, long hi, long *out) {
    if (n == 0 || n > 9) return 0;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (p[i] - '0');
    }
    if (v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* "[user:]password" in p[0..at): user and password, %-decoded. As in
 * redis-cli, text without a colon is a password. */
static int parse_userinfo(rstore_t *s, const char *p, const char *at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
        if (colon > p && !(s->user = pct_decode(p, (size_t)(colon - p))))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: bad %%-escape in the user name");
        if (!(s->pass = pct_decode(colon + 1, (size_t)(at - colon - 1))))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: bad %%-escape in the password");
    } else if (!(s->pass = pct_decode(p, (size_t)(at - p)))) {
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                            "store.url: bad %%-escape in the password");
    }
    if (s->pass && !*s->pass) {
        free(s->pass);
        s->pass = NULL;
    }
    return RUNLANE_OK;
}

/* redis+cluster://[[user]:password@]host[:port][,host[:port]...][/],
 * redis+sentinel://[[user]:password@]host[:port][,...]/master[/db], and
 * the rediss+ forms (TLS to every node; sentinels too). A port defaults
 * to 6379 (26379 for a sentinel). */
static int parse_multi_url(rstore_t *s, const char *url) {
    int sentinel = strstr(url, "+sentinel://") != NULL;
    const char *p = strstr(url, "://") + 3;
    s->tls = strncmp(url, "rediss+", 7) == 0;
    s->mode = sentinel ? RL_LINK_SENTINEL : RL_LINK_CLUSTER;
    size_t ub, ue;
    if (rl_store_url_userinfo(url, &ub, &ue)) {
        int rc = parse_userinfo(s, url + ub, url + ue);
        if (rc != RUNLANE_OK) return rc;
        p = url + ue + 1;
    }
    const char *end = p + strcspn(p, "/?#");
    int cap = 1;
    for (const char *q = p; q < end; q++) cap += *q == ',';
    if (cap > 64)
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: at most 64 nodes");
    s->seed_hosts = calloc((size_t)cap, sizeof(char *));
    s->seed_ports = calloc((size_t)cap, sizeof(int));
    if (!s->seed_hosts || !s->seed_ports) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    while (p < end) {
        const char *e = memchr(p, ',', (size_t)(end - p));
        if (!e) e = end;
        const char *hend = e, *port = NULL;
        const char *h = p;
        if (*p == '[') {
            const char *rb = memchr(p, ']', (size_t)(e - p));
            if (!rb) return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: unterminated [ in an IPv6 host");
            h = p + 1;
            hend = rb;
            if (rb + 1 < e && rb[1] == ':') port = rb + 2;
        } else {
            const char *colon = memchr(p, ':', (size_t)(e - p));
            if (colon) {
                hend = colon;
                port = colon + 1;
            }
        }
        long v = sentinel ? 26379 : 6379;
        if (hend == h)
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: empty host in the node list");
        if (port && !parse_int(port, (size_t)(e - port), 1, 65535, &v))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: port \"%.*s\" is not a number in 1..65535",
                                (int)(e - port > 16 ? 16 : e - port), port);
        if (!(s->seed_hosts[s->nseeds] = rl_strndup(h, (size_t)(hend - h))))
            return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        s->seed_ports[s->nseeds++] = (int)v;
        p = e < end ? e + 1 : e;
    }
    if (s->nseeds == 0)
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                            "store.url: no node, e.g. %s://127.0.0.1:7000,127.0.0.1:7001%s",
                            sentinel ? "redis+sentinel" : "redis+cluster", sentinel ? "/mymaster" : "");
    const char *rest = end;
    if (sentinel) {
        if (*rest != '/' || rest[1] == '\0' || rest[1] == '/')
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: redis+sentinel:// needs the master's name: "
                                "redis+sentinel://host:port[,host:port...]/mymaster[/db]");
        rest++;
        size_t nl = strcspn(rest, "/?#");
        if (nl > 200 || !(s->master_name = pct_decode(rest, nl)) || !*s->master_name)
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: bad master name");
        rest += nl;
    }
    if (*rest == '/') {
        rest++;
        size_t dlen = strcspn(rest, "?#");
        long v;
        if (dlen && (!parse_int(rest, dlen, 0, 1000000, &v) || (!sentinel && v != 0)))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                sentinel ? "store.url: database \"%.*s\" is not a number"
                                         : "store.url: a Redis Cluster has database 0 only (\"%.*s\")",
                                (int)(dlen > 16 ? 16 : dlen), rest);
        if (dlen) s->db = (int)v;
        rest += dlen;
    }
    if (*rest)
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: unexpected \"%.16s\" after the nodes",
                            rest);
    s->host = rl_strdup(s->seed_hosts[0]); /* the default TLS server name */
    if (!s->host) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    s->port = s->seed_ports[0];
    return RUNLANE_OK;
}

/* redis://[[user]:password@]host[:port][/db], rediss://...,
 * unix://[[user]:password@]/path[?db=N].
 * Error messages never quote the user info. */
static int parse_url(rstore_t *s, const char *url) {
    const char *p;
    long v;
    if (strncmp(url, "redis+cluster://", 16) == 0 || strncmp(url, "rediss+cluster://", 17) == 0 ||
        strncmp(url, "redis+sentinel://", 17) == 0 || strncmp(url, "rediss+sentinel://", 18) == 0)
        return parse_multi_url(s, url);
    if (strncmp(url, "unix://", 7) == 0) {
        p = url + 7;
        size_t ub, ue;
        if (rl_store_url_userinfo(url, &ub, &ue)) {
            int rc = parse_userinfo(s, url + ub, url + ue);
            if (rc != RUNLANE_OK) return rc;
            p = url + ue + 1;
        }
        const char *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (plen == 0 || p[0] != '/')
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: unix:// needs an absolute socket path, e.g. "
                                "unix:///run/redis/redis.sock");
        if (!(s->sock = rl_strndup(p, plen))) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        if (q) {
            q++;
            if (strncmp(q, "db=", 3) != 0 || !parse_int(q + 3, strlen(q + 3), 0, 1000000, &v))
                return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                    "store.url: the only query parameter of unix:// is db=<number>");
            s->db = (int)v;
        }
        snprintf(s->where, sizeof(s->where), "unix:%.250s/%d", s->sock, s->db);
        return RUNLANE_OK;
    }
    if (strncmp(url, "rediss://", 9) == 0) {
        s->tls = 1;
        p = url + 9;
    } else if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else {
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                            "store.url: expected redis://, rediss://, unix://, redis+cluster:// "
                            "or redis+sentinel://");
    }
    const char *auth_end = p + strcspn(p, "/?#");
    const char *hp = p;
    size_t ub, ue;
    if (rl_store_url_userinfo(url, &ub, &ue)) {
        int rc = parse_userinfo(s, url + ub, url + ue);
        if (rc != RUNLANE_OK) return rc;
        hp = url + ue + 1;
    }
    const char *hend, *port = NULL;
    size_t portlen = 0;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(auth_end - hp));
        if (!rb)
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: unterminated [ in the IPv6 host");
        s->host = rl_strndup(hp + 1, (size_t)(rb - hp - 1));
        hend = rb + 1;
        if (hend < auth_end && *hend != ':')
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: unexpected text after the IPv6 host");
    } else {
        const char *colon = memchr(hp, ':', (size_t)(auth_end - hp));
        hend = colon ? colon : auth_end;
        s->host = rl_strndup(hp, (size_t)(hend - hp));
    }
    if (!s->host) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if (!*s->host)
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "store.url: missing host, e.g. redis://127.0.0.1:6379/0");
    if (hend < auth_end && *hend == ':') {
        port = hend + 1;
        portlen = (size_t)(auth_end - port);
    }
    s->port = 6379;
    if (port) {
        if (!parse_int(port, portlen, 1, 65535, &v))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: port \"%.*s\" is not a number in 1..65535",
                                (int)(portlen > 16 ? 16 : portlen), port);
        s->port = (int)v;
    }
    const char *rest = auth_end;
    if (*rest == '/') {
        rest++;
        size_t dlen = strcspn(rest, "?#");
        if (dlen && !parse_int(rest, dlen, 0, 1000000, &v))
            return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                "store.url: database \"%.*s\" is not a number",
                                (int)(dlen > 16 ? 16 : dlen), rest);
        if (dlen) s->db = (int)v;
        rest += dlen;
    }
    if (*rest)
        return rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                            "store.url: unexpected \"%.16s\" after the database number "
                            "(expected redis://[user:password@]host[:port][/db])",
                            rest);
    snprintf(s->where, sizeof(s->where), "%s%.200s%s:%d/%d", strchr(s->host, ':') ? "[" : "",
             s->host, strchr(s->host, ':') ? "]" : "", s->port, s->db);
    return RUNLANE_OK;
}

rl_store_t *rl_store_redis_open(const rl_store_opts_t *opts) {
    rstore_t *s = calloc(1, sizeof(*s));
    if (!s) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    s->base.ops = &redis_ops;
    s->partitions = opts->partitions > 0 ? opts->partitions : 1;
    s->connect_timeout_ms = opts->connect_timeout_ms;
    s->command_timeout_ms = opts->command_timeout_ms;
    const char *prefix = opts->prefix && *opts->prefix ? opts->prefix : "runlane";
    if (strpbrk(prefix, "{}")) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                     "key.prefix must not contain '{' or '}': runlane adds the hash tag "
                     "{<partition>} itself");
        r_destroy(&s->base);
        return NULL;
    }
    snprintf(s->client_name, sizeof(s->client_name), "runlane/%s", prefix);
    for (char *q = s->client_name; *q; q++)
        if (*q <= ' ' || *q > '~') *q = '_';
    if (!(s->prefix = rl_strdup(prefix))) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        r_destroy(&s->base);
        return NULL;
    }
    for (int i = 0; i < S_COUNT; i++) {
        for (size_t j = 0; j < rl_lua_scripts_count; j++)
            if (strcmp(rl_lua_scripts[j].name, script_names[i]) == 0) s->scripts[i] = &rl_lua_scripts[j];
        if (!s->scripts[i]) {
            rl_error_set(RUNLANE_ERR_INTERNAL, 0, "redis store: Lua script \"%s\" not embedded",
                         script_names[i]);
            r_destroy(&s->base);
            return NULL;
        }
    }
    if (!opts->url || parse_url(s, opts->url) != RUNLANE_OK) {
        if (!opts->url) rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "store.url is not set");
        r_destroy(&s->base);
        return NULL;
    }
    if (s->tls && !(s->tls_ctx = rl_redis_tls_new(&opts->tls, s->host, s->where))) {
        r_destroy(&s->base);
        return NULL;
    }
    s->wait_replicas = opts->wait_replicas;
    s->wait_timeout_ms = opts->wait_timeout_ms > 0 ? opts->wait_timeout_ms : 1000;
    if (s->wait_replicas > 0 && s->command_timeout_ms > 0 &&
        s->wait_timeout_ms >= s->command_timeout_ms) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                     "redis.wait.timeout.ms (%d) must be below redis.command.timeout.ms (%d): "
                     "the WAIT's reply comes in the same round trip",
                     s->wait_timeout_ms, s->command_timeout_ms);
        r_destroy(&s->base);
        return NULL;
    }
    /* partitions: 0 picks a default; on a cluster, 12 spreads evenly over
     * 1, 2, 3, 4, 6 or 12 masters, and a fixed number (not one derived
     * from today's masters) keeps every client agreeing after a scale-out */
    if (opts->partitions <= 0) s->partitions = s->mode == RL_LINK_CLUSTER ? RS_CLUSTER_PARTITIONS : 1;
    s->tags = calloc((size_t)s->partitions, sizeof(*s->tags));
    if (!s->tags) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        r_destroy(&s->base);
        return NULL;
    }
    /* a single server keeps the tags {0}, {1}...: the keys of existing
     * queues stay where they are */
    for (int p = 0; p < s->partitions; p++) {
        if (s->mode == RL_LINK_CLUSTER) rl_redis_cluster_tag(p, s->partitions, s->tags[p], sizeof(s->tags[p]));
        else snprintf(s->tags[p], sizeof(s->tags[p]), "%d", p);
    }
    rl_redis_link_opts_t lo;
    memset(&lo, 0, sizeof(lo));
    lo.mode = s->mode;
    lo.nseeds = s->mode == RL_LINK_SINGLE ? (s->host ? 1 : 0) : s->nseeds;
    const char *h1[1] = {s->host};
    int p1[1] = {s->port};
    lo.hosts = s->mode == RL_LINK_SINGLE ? h1 : (const char *const *)s->seed_hosts;
    lo.ports = s->mode == RL_LINK_SINGLE ? p1 : s->seed_ports;
    lo.sock = s->sock;
    lo.where = s->where;
    lo.master_name = s->master_name;
    lo.connect_timeout_ms = s->connect_timeout_ms;
    lo.command_timeout_ms = s->command_timeout_ms;
    lo.tls = s->tls_ctx;
    lo.secret = s->pass;
    lo.setup = rs_setup;
    lo.opaque = s;
    lo.wait_replicas = s->wait_replicas;
    lo.wait_timeout_ms = s->wait_timeout_ms;
    if (!(s->link = rl_redis_link_new(&lo))) {
        r_destroy(&s->base);
        return NULL;
    }
    if (s->mode != RL_LINK_SINGLE) rl_strlcpy(s->where, rl_redis_link_where(s->link), sizeof(s->where));
    rl_sigpipe_guard_t g;
    rl_sigpipe_block(&g);
    int rc = rl_redis_link_connect(s->link);
    rl_sigpipe_restore(&g);
    if (rc != RUNLANE_OK) {
        r_destroy(&s->base);
        return NULL;
    }
    return &s->base;
}

int rl_store_redis_spread(rl_store_t *st, int *per_master, int max, int *nmasters) {
    rstore_t *s = RS(st);
    int nm = 0;
    for (int i = 0; i < max; i++) per_master[i] = 0;
    for (int p = 0; p < s->partitions; p++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "{%s}", s->tags[p]);
        int m = s->mode == RL_LINK_CLUSTER
                    ? rl_redis_link_master_of(s->link, rl_redis_key_slot(key, (size_t)len), &nm)
                    : 0;
        if (s->mode != RL_LINK_CLUSTER) nm = 1;
        if (m >= 0 && m < max) per_master[m]++;
    }
    *nmasters = nm;
    return s->partitions;
}

void rl_store_redis_link_stats(rl_store_t *st, long *moved, long *ask, long *refreshes,
                               long *rediscoveries) {
    rl_redis_link_stats_t v;
    rl_redis_link_stats(RS(st)->link, &v);
    *moved = v.moved;
    *ask = v.ask;
    *refreshes = v.refreshes;
    *rediscoveries = v.rediscoveries;
}

const char *rl_store_redis_tag(rl_store_t *st, int part) { return RS(st)->tags[part]; }
