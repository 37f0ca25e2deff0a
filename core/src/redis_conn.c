/* redis_conn.c - reaching one Redis node: TCP or unix socket, plain or TLS.
 *
 * TLS is OpenSSL driven directly (our SSL_CTX, one SSL per connection,
 * handed to hiredis with redisInitiateSSL), not hiredis's redisSSLContext:
 * so that any hiredis >= 1.0 gives the same checks (chain and host name,
 * with IP addresses matched as IP addresses) and the errors can name the
 * certificate problem from the verify result. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "redis_conn.h"

struct rl_redis_tls {
    SSL_CTX *ctx;
    /* redis.tls.server.name, "" when unset: then each connection verifies
     * the host it dials (a Cluster node from CLUSTER SLOTS or MOVED, the
     * master a sentinel names), as a browser does per host; one name for
     * every node would refuse a cluster whose nodes carry their own names */
    char *name;
    int insecure;
    int has_cert; /* a client certificate is configured */
};

static int set(const char *s) { return s && *s; }

/* OpenSSL's last queued error as text ("" when none); clears the queue. */
static const char *ssl_reason(char *buf, size_t size) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    rl_strlcpy(buf, r ? r : "", size);
    ERR_clear_error();
    return buf;
}

/* Never prompts for a passphrase on the terminal: an encrypted key fails. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

static int is_ip_literal(const char *s) {
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

rl_redis_tls_t *rl_redis_tls_new(const rl_tls_opts_t *o, const char *host, const char *where) {
    static const rl_tls_opts_t none;
    char why[256];
    if (!o) o = &none;
    if (set(o->cert_file) != set(o->key_file)) {
        rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                     "redis %s: mutual TLS needs both redis.tls.cert.file and "
                     "redis.tls.key.file; only %s is set",
                     where, set(o->cert_file) ? "redis.tls.cert.file" : "redis.tls.key.file");
        return NULL;
    }
    OPENSSL_init_ssl(0, NULL);
    rl_redis_tls_t *t = calloc(1, sizeof(*t));
    if (!t || !(t->ctx = SSL_CTX_new(TLS_client_method()))) {
        free(t);
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "redis %s: cannot create the TLS context", where);
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_passwd_cb(t->ctx, no_passphrase);
    t->insecure = o->insecure_skip_verify;
    t->has_cert = set(o->cert_file);
    if (!(t->name = rl_strdup(set(o->server_name) ? o->server_name : ""))) goto nomem;
    if (set(o->ca_file) || set(o->ca_dir)) {
        const char *bad = set(o->ca_file) && access(o->ca_file, R_OK) != 0 ? o->ca_file
                          : set(o->ca_dir) && access(o->ca_dir, R_OK) != 0   ? o->ca_dir
                                                                             : NULL;
        if (bad) {
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "redis %s: %s \"%.300s\": %s", where,
                         bad == o->ca_file ? "redis.tls.ca.file" : "redis.tls.ca.dir", bad,
                         strerror(errno));
            goto fail;
        }
        if (SSL_CTX_load_verify_locations(t->ctx, set(o->ca_file) ? o->ca_file : NULL,
                                          set(o->ca_dir) ? o->ca_dir : NULL) != 1) {
            ssl_reason(why, sizeof(why));
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "redis %s: cannot load the CA certificates of %s \"%.300s\": %s", where,
                         set(o->ca_file) ? "redis.tls.ca.file" : "redis.tls.ca.dir",
                         set(o->ca_file) ? o->ca_file : o->ca_dir,
                         why[0] ? why : "no PEM certificate found");
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
        /* the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR override it) */
        ERR_clear_error();
    }
    if (t->has_cert) {
        if (SSL_CTX_use_certificate_chain_file(t->ctx, o->cert_file) != 1) {
            ssl_reason(why, sizeof(why));
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "redis %s: cannot load the client certificate redis.tls.cert.file "
                         "\"%.300s\": %s",
                         where, o->cert_file, why[0] ? why : "not a PEM certificate");
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(t->ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
            ssl_reason(why, sizeof(why));
            if (strstr(why, "key values mismatch")) {
                rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                             "redis %s: redis.tls.key.file \"%.300s\" is not the key of "
                             "redis.tls.cert.file \"%.300s\"",
                             where, o->key_file, o->cert_file);
                goto fail;
            }
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "redis %s: cannot load the private key redis.tls.key.file \"%.300s\": %s "
                         "(an unencrypted PEM key is needed)",
                         where, o->key_file, why[0] ? why : "not a PEM key");
            goto fail;
        }
        if (SSL_CTX_check_private_key(t->ctx) != 1) {
            ERR_clear_error();
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "redis %s: redis.tls.key.file \"%.300s\" is not the key of "
                         "redis.tls.cert.file \"%.300s\"",
                         where, o->key_file, o->cert_file);
            goto fail;
        }
    }
    if (t->insecure) {
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
        /* the name is set per connection (verify_name); checked here so a
         * bad one is reported at open, not at the first connection */
        const char *name = t->name[0] ? t->name : (host ? host : "");
        X509_VERIFY_PARAM *param = X509_VERIFY_PARAM_new();
        int ok = param && name[0] &&
                 (is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                                      : X509_VERIFY_PARAM_set1_host(param, name, strlen(name)));
        X509_VERIFY_PARAM_free(param);
        if (ok != 1) {
            ERR_clear_error();
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "redis %s: cannot verify the server against the name \"%.200s\" "
                         "(redis.tls.server.name)",
                         where, name);
            goto fail;
        }
    }
    return t;
nomem:
    rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
fail:
    rl_redis_tls_free(t);
    return NULL;
}

void rl_redis_tls_free(rl_redis_tls_t *t) {
    if (!t) return;
    SSL_CTX_free(t->ctx);
    free(t->name);
    free(t);
}

int rl_redis_is_timeout(const redisContext *c, int saved_errno) {
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT) return 1;
#endif
    if (c->err != REDIS_ERR_IO) return 0;
    if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) return 1;
    return strstr(c->errstr, "temporarily unavailable") != NULL ||
           strstr(c->errstr, "timed out") != NULL;
}

static struct timeval ms_tv(int ms) {
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* The name a connection's certificate must carry: redis.tls.server.name,
 * else the host dialled. */
static const char *verify_name(const rl_redis_node_t *n) {
    if (n->tls->name[0]) return n->tls->name;
    return n->host ? n->host : "";
}

/* Sets the connection's SNI and the name its certificate is checked
 * against. 0 on failure. */
static int ssl_set_name(const rl_redis_node_t *n, SSL *ssl) {
    const char *name = verify_name(n);
    int ip = is_ip_literal(name);
    /* SNI carries DNS names only (RFC 6066) */
    if (!ip && name[0]) SSL_set_tlsext_host_name(ssl, name);
    if (n->tls->insecure) return 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return name[0] && (ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                          : X509_VERIFY_PARAM_set1_host(param, name, strlen(name))) == 1;
}

/* The handshake failed: name the certificate problem when there is one. */
static int handshake_error(const rl_redis_node_t *n, redisContext *c, SSL *ssl, int saved_errno) {
    char why[256];
    long vr = SSL_get_verify_result(ssl);
    ssl_reason(why, sizeof(why));
    const rl_redis_tls_t *t = n->tls;
    if (vr != X509_V_OK && !t->insecure) {
        const char *what = X509_verify_cert_error_string(vr);
        if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
            return rl_error_set(RUNLANE_ERR_STORE, 0,
                                "redis %s: TLS: the server's certificate is not valid for "
                                "\"%.200s\" (%s); connect by a name the certificate carries or "
                                "set redis.tls.server.name to it",
                                n->where, verify_name(n), what);
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: TLS: the server's certificate was not accepted: %s "
                            "(certificate verify failed; trust the CA that signed it with "
                            "redis.tls.ca.file or redis.tls.ca.dir)",
                            n->where, what);
    }
    if (rl_redis_is_timeout(c, saved_errno))
        return rl_error_set(RUNLANE_ERR_STORE, 1,
                            "redis %s: TLS handshake: no answer within %d ms "
                            "(redis.command.timeout.ms); is the server speaking TLS on this port?",
                            n->where, n->command_timeout_ms);
    if (strstr(why, "wrong version number") || strstr(why, "packet length too long") ||
        strstr(why, "record layer failure"))
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: TLS handshake failed (%s): the server does not speak TLS "
                            "on this port; use redis:// for a plaintext port",
                            n->where, why);
    if (strstr(why, "certificate required") || (!t->has_cert && strstr(why, "handshake failure")))
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: TLS handshake failed (%s): the server requires a client "
                            "certificate (mutual TLS): set redis.tls.cert.file and "
                            "redis.tls.key.file",
                            n->where, why);
    return rl_error_set(RUNLANE_ERR_STORE, 1, "redis %s: TLS handshake failed: %s", n->where,
                        why[0] ? why : c->errstr);
}

/* The PING after connecting got no reply. */
static int ping_error(const rl_redis_node_t *n, redisContext *c, int saved_errno) {
    char why[256];
    ssl_reason(why, sizeof(why));
    if (rl_redis_is_timeout(c, saved_errno))
        return rl_error_set(RUNLANE_ERR_STORE, 1,
                            "redis %s: no reply within %d ms (redis.command.timeout.ms)%s",
                            n->where, n->command_timeout_ms,
                            n->tls ? "" : "; if the server expects TLS on this port, use rediss://");
    /* TLS 1.3: the server checks the client certificate after the
     * client's handshake is done, then answers the first request with an
     * alert (certificate required, unknown ca, ...) or a reset */
    if (n->tls && !n->tls->has_cert)
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: the server ended the TLS session right after the handshake "
                            "(%s), as one that requires a client certificate (mutual TLS) does: "
                            "set redis.tls.cert.file and redis.tls.key.file",
                            n->where, why[0] ? why : c->errstr);
    if (n->tls)
        return rl_error_set(RUNLANE_ERR_STORE, 0,
                            "redis %s: the server ended the TLS session right after the handshake "
                            "(%s): it did not accept the client certificate redis.tls.cert.file "
                            "(signed by a CA it does not trust?)",
                            n->where, why[0] ? why : c->errstr);
    return rl_error_set(RUNLANE_ERR_STORE, 0,
                        "redis %s: the server closed the connection or did not answer in the "
                        "Redis protocol (%s): if it expects TLS on this port, use rediss://",
                        n->where, c->errstr);
}

void rl_redis_reader_limits(redisReader *r) {
    if (r) r->maxelements = RL_REDIS_MAX_ELEMENTS;
}

/* One try of rl_redis_connect; *closed: connected, but the PING got no
 * reply other than a timeout (the server closed the connection). */
static int connect_once(const rl_redis_node_t *n, redisContext **out, int *closed) {
    *out = NULL;
    *closed = 0;
    struct timeval ctv = ms_tv(n->connect_timeout_ms > 0 ? n->connect_timeout_ms : 5000);
    struct timeval ttv = ms_tv(n->command_timeout_ms);
    redisOptions opt;
    memset(&opt, 0, sizeof(opt));
    if (n->sock) {
        REDIS_OPTIONS_SET_UNIX(&opt, n->sock);
    } else {
        REDIS_OPTIONS_SET_TCP(&opt, n->host, n->port);
    }
    opt.connect_timeout = &ctv;
    /* the handshake and every later read wait at most this long */
    if (n->command_timeout_ms > 0) opt.command_timeout = &ttv;
    redisContext *c = redisConnectWithOptions(&opt);
    if (!c) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "redis %s: out of memory", n->where);
    if (c->err) {
        char msg[256];
        rl_strlcpy(msg, c->errstr, sizeof(msg));
        redisFree(c);
        return rl_error_set(RUNLANE_ERR_STORE, 1, "redis %s: cannot connect: %s", n->where, msg);
    }
    rl_redis_reader_limits(c->reader);
    if (n->tls) {
        SSL *ssl = SSL_new(n->tls->ctx);
        if (!ssl) {
            redisFree(c);
            return rl_error_set(RUNLANE_ERR_NOMEM, 0, "redis %s: out of memory", n->where);
        }
        if (!ssl_set_name(n, ssl)) {
            ERR_clear_error();
            SSL_free(ssl);
            redisFree(c);
            return rl_error_set(RUNLANE_ERR_STORE, 0,
                                "redis %s: cannot verify the server against the name \"%.200s\" "
                                "(redis.tls.server.name)",
                                n->where, verify_name(n));
        }
        ERR_clear_error();
        errno = 0;
        if (redisInitiateSSL(c, ssl) != REDIS_OK) {
            int rc = handshake_error(n, c, ssl, errno);
            SSL_free(ssl); /* not taken by hiredis on failure */
            redisFree(c);
            return rc;
        }
    }
    if (!n->sock) redisEnableKeepAlive(c);
    errno = 0;
    redisReply *r = redisCommand(c, "PING");
    if (!r) {
        int saved = errno;
        *closed = !rl_redis_is_timeout(c, saved);
        int rc = ping_error(n, c, saved);
        redisFree(c);
        return rc;
    }
    freeReplyObject(r);
    *out = c;
    return RUNLANE_OK;
}

int rl_redis_connect(const rl_redis_node_t *n, redisContext **out) {
    int closed = 0;
    int rc = connect_once(n, out, &closed);
    /* closed at once: a TLS port spoken to in plaintext or a client
     * certificate refused (it happens again: not retriable), or a server
     * killed as it accepted (kill -9 of a master: the next try is refused,
     * retriable). One more try tells them apart. */
    if (rc != RUNLANE_OK && closed) rc = connect_once(n, out, &closed);
    return rc;
}
