/*
 * test_tls.c - rediss:// against Debian's redis-server with --tls-port.
 *
 * The test makes its certificates with openssl (scripts/redis-server.sh
 * tls-certs: a CA, a server certificate for localhost and 127.0.0.1, a
 * client certificate, and a second, unrelated CA) and starts two servers
 * (scripts/redis-server.sh start-tls), each with a plaintext port for side
 * connections: A (client certificates not required, an ACL user) and B
 * (--tls-auth-clients yes). Both are stopped at the end.
 *
 * Proves: the store conformance suite (test_store, run as a child with
 * RUNLANE_TEST_REDIS=rediss://...) passes over TLS; AUTH as an ACL user over
 * TLS; a wrong CA, a wrong server name, redis:// to the TLS port and a
 * missing client certificate each fail at once with an error naming the
 * problem; mutual TLS with the client certificate works; the opt-out of
 * verification works and queues a warning event; passwords and key file
 * contents appear in no error and no conf dump.
 *
 * And a private TLS-only Redis Cluster (scripts/redis-cluster.sh start-tls):
 * the conformance suite over rediss+cluster:// with mutual TLS, the TLS
 * options applied to every node, a live reshard followed through MOVED.
 *
 * And a private TLS-only Sentinel setup (scripts/redis-sentinel.sh
 * start-tls): the conformance suite over rediss+sentinel:// with mutual
 * TLS, the TLS options applied to the sentinels and the master, a kill -9
 * of the master followed to the promoted replica through the sentinels.
 *
 * Needs redis-server (with TLS), redis-cli and openssl on PATH: a missing
 * one fails.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "rltest.h"
#include "store.h"
#include "store_redis.h"

static char g_src[512];   /* the repository (from __FILE__) */
static char g_tmp[256];   /* certificates and server dirs */
static char g_certs[300];
static int g_plain_a, g_tls_a, g_plain_b, g_tls_b;
static const char *g_self; /* argv[0]: test_store is beside it */

#define ACL_USER "rltls-user"
#define ACL_PASS "pw-SECRET-tls-7"

static int time_scale(void) {
    const char *v = getenv("RUNLANE_TEST_TIME_SCALE");
    return v && atoi(v) > 0 ? atoi(v) : 1;
}

static const char *cert(const char *name) {
    static char buf[8][400];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 400, "%s/%s", g_certs, name);
    return b;
}

static int run_cmd(const char *cmd, char *out, size_t size) {
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t n = out ? fread(out, 1, size - 1, f) : 0;
    if (out) out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup(void) {
    const char *file = __FILE__; /* <repo>/tests/c/test_tls.c */
    const char *tail = strstr(file, "tests/c/test_tls.c");
    RL_CHECK_MSG(tail != NULL && file[0] == '/', "cannot find the repository from %s", file);
    snprintf(g_src, sizeof(g_src), "%.*s", (int)(tail - file), file);
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/runlane-tls-%d", (int)getpid());
    snprintf(g_certs, sizeof(g_certs), "%s/certs", g_tmp);
    char cmd[4096], out[256];
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-server.sh tls-certs %s", g_src, g_certs);
    RL_CHECK_MSG(run_cmd(cmd, NULL, 0) == 0, "making test certificates failed: %s", cmd);
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-server.sh start-tls %s/a %s", g_src, g_tmp, g_certs);
    RL_CHECK_MSG(run_cmd(cmd, out, sizeof(out)) == 0 &&
                     sscanf(out, "%d %d", &g_plain_a, &g_tls_a) == 2,
                 "starting redis-server with --tls-port failed: %s", out);
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-server.sh start-tls %s/b %s --tls-auth-clients yes",
             g_src, g_tmp, g_certs);
    RL_CHECK_MSG(run_cmd(cmd, out, sizeof(out)) == 0 &&
                     sscanf(out, "%d %d", &g_plain_b, &g_tls_b) == 2,
                 "starting redis-server with --tls-auth-clients yes failed: %s", out);
    /* an ACL user on A, through its plaintext port */
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", g_plain_a, tv);
    RL_CHECK(c && !c->err);
    redisReply *r = redisCommand(c, "ACL SETUSER " ACL_USER " on >" ACL_PASS " ~* &* +@all");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    redisFree(c);
    RL_CHECK_MSG(ok, "ACL SETUSER failed");
}

static void teardown(void) {
    char cmd[4096];
    if (!g_src[0] || !g_tmp[0]) return;
    snprintf(cmd, sizeof(cmd),
             "%sscripts/redis-server.sh stop %s/a; %sscripts/redis-server.sh stop %s/b; rm -rf %s",
             g_src, g_tmp, g_src, g_tmp, g_tmp);
    run_cmd(cmd, NULL, 0);
}

/* Opens a store with the given URL and TLS options; NULL on failure. */
static rl_store_t *open_tls(const char *url, const rl_tls_opts_t *tls) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.prefix = "rltls";
    o.partitions = 1;
    o.connect_timeout_ms = 2000 * time_scale();
    o.command_timeout_ms = 2000 * time_scale();
    if (tls) o.tls = *tls;
    return rl_store_open(&o);
}

/* Opening must fail with RUNLANE_ERR_STORE or INVALID_VALUE (`code`),
 * within `max_ms`, with a message holding every `must` and no `secret`. */
static void expect_fail(const char *url, const rl_tls_opts_t *tls, runlane_err_t code,
                        int max_ms, const char *must1, const char *must2, const char *secret) {
    int64_t t0 = rl_mono_ms();
    rl_store_t *st = open_tls(url, tls);
    int64_t took = rl_mono_ms() - t0;
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL, "opening %s should fail", url);
    const runlane_error_t *e = runlane_error_last();
    const char *msg = runlane_error_message(e);
    fprintf(stderr, "    error: %s\n", msg);
    RL_CHECK_MSG(runlane_error_code(e) == code, "expected %s, got %s: %s", runlane_err2name(code),
                 runlane_err2name(runlane_error_code(e)), msg);
    if (must1) RL_CHECK_MSG(strstr(msg, must1) != NULL, "message lacks \"%s\": %s", must1, msg);
    if (must2) RL_CHECK_MSG(strstr(msg, must2) != NULL, "message lacks \"%s\": %s", must2, msg);
    if (secret) RL_CHECK_MSG(strstr(msg, secret) == NULL, "message leaks \"%s\": %s", secret, msg);
    RL_CHECK_MSG(took <= (int64_t)max_ms * time_scale(), "failing took %lld ms (max %d)",
                 (long long)took, max_ms * time_scale());
}

/* The policy the store calls below run with. */
static rl_policy_t test_policy(void) {
    rl_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    pol.max_wait_ms = 60000;
    pol.max_messages = 100;
    pol.max_bytes = 1 << 20;
    pol.lease_ms = 30000;
    pol.max_attempts = 3;
    pol.idem_ttl_ms = 60000;
    pol.reply_redeliver_ms = 1000;
    pol.reply_ttl_ms = 60000;
    return pol;
}

/* enqueue + claim + ack: the store works over this connection */
static void roundtrip(rl_store_t *st, const char *conv) {
    rl_policy_t pol = test_policy();
    char id[RUNLANE_ID_MAX];
    int dup = 0;
    RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"hi\"}", 2, NULL, id, &dup));
    rl_claim_t *cl = NULL;
    int n = 0;
    RL_CHECK_OK(st->ops->claim(st, &pol, "w-tls", 1, &cl, &n));
    RL_CHECK_INT(1, n);
    rl_claim_t c = cl[0];
    free(cl);
    int ok = strstr(c.messages_json, "\"hi\"") != NULL;
    int rc = st->ops->ack(st, &pol, conv, c.token);
    rl_claim_free(&c);
    RL_CHECK_MSG(ok, "the claimed batch lacks the message");
    RL_CHECK_OK(rc);
}

static void test_features_report_tls(void) {
    RL_CHECK_MSG(runlane_features() & RUNLANE_FEATURE_REDIS_TLS,
                 "runlane_features() = 0x%x lacks RUNLANE_FEATURE_REDIS_TLS", runlane_features());
}

static void test_conformance_suite_over_tls(void) {
    char dir[1024], cmd[4096];
    snprintf(dir, sizeof(dir), "%s", g_self);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof(dir), ".");
    snprintf(cmd, sizeof(cmd),
             "RUNLANE_TEST_STORE=redis RUNLANE_REQUIRE_REDIS=1 "
             "RUNLANE_TEST_REDIS=rediss://127.0.0.1:%d/0 RUNLANE_TEST_REDIS_TLS_CA=%s "
             "RUNLANE_TEST_REDIS_SIDE=redis://127.0.0.1:%d/0 %s/test_store >&2",
             g_tls_a, cert("ca.crt"), g_plain_a, dir);
    int rc = run_cmd(cmd, NULL, 0);
    RL_CHECK_MSG(rc == 0, "the store conformance suite over TLS failed (exit %d)", rc);
}

static void test_verified_connect_by_ip_and_by_name(void) {
    rl_tls_opts_t t = {cert("ca.crt"), NULL, NULL, NULL, NULL, 0};
    char url[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", g_tls_a);
    rl_store_t *st = open_tls(url, &t);
    RL_CHECK_MSG(st != NULL, "rediss:// by IP: %s", runlane_error_message(runlane_error_last()));
    roundtrip(st, "by-ip");
    st->ops->destroy(st);
    snprintf(url, sizeof(url), "rediss://localhost:%d/0", g_tls_a);
    st = open_tls(url, &t);
    RL_CHECK_MSG(st != NULL, "rediss:// by name: %s", runlane_error_message(runlane_error_last()));
    roundtrip(st, "by-name");
    st->ops->destroy(st);
    /* the CA as a directory (openssl rehash layout) */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/cadir && cp %s %s/cadir/ && openssl rehash %s/cadir",
             g_tmp, cert("ca.crt"), g_tmp, g_tmp);
    RL_CHECK_MSG(run_cmd(cmd, NULL, 0) == 0, "openssl rehash failed");
    char cadir[400];
    snprintf(cadir, sizeof(cadir), "%s/cadir", g_tmp);
    rl_tls_opts_t d = {NULL, cadir, NULL, NULL, NULL, 0};
    st = open_tls(url, &d);
    RL_CHECK_MSG(st != NULL, "redis.tls.ca.dir: %s", runlane_error_message(runlane_error_last()));
    st->ops->destroy(st);
}

static void test_acl_user_over_tls(void) {
    rl_tls_opts_t t = {cert("ca.crt"), NULL, NULL, NULL, NULL, 0};
    char url[256];
    snprintf(url, sizeof(url), "rediss://" ACL_USER ":" ACL_PASS "@127.0.0.1:%d/0", g_tls_a);
    rl_store_t *st = open_tls(url, &t);
    RL_CHECK_MSG(st != NULL, "AUTH as an ACL user over TLS: %s",
                 runlane_error_message(runlane_error_last()));
    roundtrip(st, "acl");
    st->ops->destroy(st);
    /* the server saw that user on a TLS connection: ACL LOG is empty of it,
     * and a wrong password is refused without being echoed */
    snprintf(url, sizeof(url), "rediss://" ACL_USER ":pw-WRONG-tls-9@127.0.0.1:%d/0", g_tls_a);
    expect_fail(url, &t, RUNLANE_ERR_STORE, 3000, "AUTH", ACL_USER, "pw-WRONG-tls-9");
}

static void test_wrong_ca_is_named(void) {
    rl_tls_opts_t t = {cert("other-ca.crt"), NULL, NULL, NULL, NULL, 0};
    char url[256];
    snprintf(url, sizeof(url), "rediss://:pw-SECRET-ca@127.0.0.1:%d/0", g_tls_a);
    expect_fail(url, &t, RUNLANE_ERR_STORE, 3000, "certificate verify failed",
                "certificate in certificate chain", "pw-SECRET-ca");
    RL_CHECK_INT(0, runlane_error_retriable(runlane_error_last()));
}

static void test_wrong_server_name_is_named(void) {
    rl_tls_opts_t t = {cert("ca.crt"), NULL, NULL, NULL, "wrong.example", 0};
    char url[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", g_tls_a);
    expect_fail(url, &t, RUNLANE_ERR_STORE, 3000, "not valid for \"wrong.example\"",
                "hostname mismatch", NULL);
    /* an IP the certificate does not carry */
    rl_tls_opts_t ip = {cert("ca.crt"), NULL, NULL, NULL, "127.0.0.2", 0};
    expect_fail(url, &ip, RUNLANE_ERR_STORE, 3000, "not valid for \"127.0.0.2\"",
                "IP address mismatch", NULL);
    /* and the name it does carry */
    rl_tls_opts_t ok = {cert("ca.crt"), NULL, NULL, NULL, "localhost", 0};
    rl_store_t *st = open_tls(url, &ok);
    RL_CHECK_MSG(st != NULL, "redis.tls.server.name=localhost: %s",
                 runlane_error_message(runlane_error_last()));
    st->ops->destroy(st);
}

static void test_plain_url_to_tls_port_fails_fast(void) {
    char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", g_tls_a);
    /* far below the 2 s command timeout: the server hangs up, no wait */
    expect_fail(url, NULL, RUNLANE_ERR_STORE, 1500, "use rediss://", NULL, NULL);
}

static void test_mutual_tls(void) {
    char url[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", g_tls_b);
    rl_tls_opts_t none = {cert("ca.crt"), NULL, NULL, NULL, NULL, 0};
    expect_fail(url, &none, RUNLANE_ERR_STORE, 3000, "client certificate", "redis.tls.cert.file",
                NULL);
    rl_tls_opts_t mt = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 0};
    rl_store_t *st = open_tls(url, &mt);
    RL_CHECK_MSG(st != NULL, "mutual TLS: %s", runlane_error_message(runlane_error_last()));
    roundtrip(st, "mtls");
    st->ops->destroy(st);
    /* a certificate of another CA is refused by the server */
    rl_tls_opts_t wrong = {cert("ca.crt"), NULL, cert("other-ca.crt"), cert("other-ca.key"), NULL, 0};
    expect_fail(url, &wrong, RUNLANE_ERR_STORE, 3000, "client certificate", NULL, NULL);
}

static void test_tls_file_errors_name_the_key(void) {
    char url[128];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d/0", g_tls_a);
    rl_tls_opts_t missing = {"/nonexistent/ca.pem", NULL, NULL, NULL, NULL, 0};
    expect_fail(url, &missing, RUNLANE_ERR_INVALID_VALUE, 1000, "redis.tls.ca.file",
                "/nonexistent/ca.pem", NULL);
    rl_tls_opts_t half = {cert("ca.crt"), NULL, cert("client.crt"), NULL, NULL, 0};
    expect_fail(url, &half, RUNLANE_ERR_INVALID_VALUE, 1000, "redis.tls.key.file", NULL, NULL);
    rl_tls_opts_t mismatch = {cert("ca.crt"), NULL, cert("client.crt"), cert("server.key"), NULL, 0};
    expect_fail(url, &mismatch, RUNLANE_ERR_INVALID_VALUE, 1000, "is not the key of", NULL, NULL);
    /* a broken key file: its contents never appear in the message */
    char bad[400];
    snprintf(bad, sizeof(bad), "%s/bad.key", g_tmp);
    FILE *f = fopen(bad, "w");
    RL_CHECK(f != NULL);
    fputs("-----BEGIN PRIVATE KEY-----\nKEYMATERIALsecret0123456789\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    rl_tls_opts_t broken = {cert("ca.crt"), NULL, cert("client.crt"), bad, NULL, 0};
    expect_fail(url, &broken, RUNLANE_ERR_INVALID_VALUE, 1000, "redis.tls.key.file", bad,
                "KEYMATERIAL");
}

/* Through the public API: the conf keys, the warning event of the opt-out,
 * and no secret in the conf dump or in errors. */
static void test_conf_keys_insecure_warning_and_no_secrets(void) {
    char key_text[4096];
    FILE *f = fopen(cert("client.key"), "r");
    RL_CHECK(f != NULL);
    size_t n = fread(key_text, 1, sizeof(key_text) - 1, f);
    fclose(f);
    key_text[n] = '\0';
    /* a line of the key's base64 body */
    char *body = strchr(key_text, '\n');
    RL_CHECK(body != NULL);
    body++;
    char *nl = strchr(body, '\n');
    if (nl) *nl = '\0';
    RL_CHECK(strlen(body) > 20);

    char url[256], err[512];
    snprintf(url, sizeof(url), "rediss://" ACL_USER ":" ACL_PASS "@127.0.0.1:%d/0", g_tls_a);
    runlane_conf_t *conf = runlane_conf_new();
    RL_CHECK_OK(runlane_conf_set(conf, "store", url, err, sizeof(err)));
    RL_CHECK_OK(runlane_conf_set(conf, "redis.tls.ca.file", cert("other-ca.crt"), err, sizeof(err)));
    RL_CHECK_OK(runlane_conf_set(conf, "redis.tls.cert.file", cert("client.crt"), err, sizeof(err)));
    RL_CHECK_OK(runlane_conf_set(conf, "redis.tls.key.file", cert("client.key"), err, sizeof(err)));
    char *dump = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump, conf));
    int leak = strstr(dump, ACL_PASS) != NULL || strstr(dump, body) != NULL;
    int has_key = strstr(dump, "\"redis.tls.key.file\"") != NULL;
    free(dump);
    RL_CHECK_MSG(!leak, "the conf dump shows the password or the key");
    RL_CHECK_MSG(has_key, "the conf dump lacks redis.tls.key.file");

    /* wrong CA: refused, and the error carries no secret */
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    if (rl) runlane_destroy(rl);
    RL_CHECK_MSG(rl == NULL, "runlane_new with the wrong CA should fail");
    RL_CHECK_MSG(strstr(err, "certificate verify failed") != NULL, "error: %s", err);
    RL_CHECK_MSG(!strstr(err, ACL_PASS) && !strstr(err, body), "error leaks a secret: %s", err);

    /* the opt-out: connects despite the wrong CA, and says so loudly */
    RL_CHECK_OK(runlane_conf_set(conf, "redis.tls.insecure.skip.verify", "true", err, sizeof(err)));
    rl = runlane_new(conf, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "redis.tls.insecure.skip.verify=true: %s", err);
    runlane_event_t *ev = runlane_poll(rl, 2000 * time_scale());
    int warned = ev && runlane_event_type(ev) == RUNLANE_EVENT_ERROR &&
                 strstr(runlane_event_error_message(ev), "redis.tls.insecure.skip.verify") &&
                 strstr(runlane_event_error_message(ev), "NOT verified");
    if (ev) runlane_event_destroy(ev);
    runlane_destroy(rl);
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(warned, "no ERROR event warning that the certificate is not verified");
}


/* ---- Redis Cluster over TLS ------------------------------------------ */

static char g_cluster_url[256];

static void cluster_stop(void) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-cluster.sh stop %s/cluster >/dev/null 2>&1", g_src,
             g_tmp);
    run_cmd(cmd, NULL, 0);
}

/* redis-cli over TLS to the cluster node 127.0.0.1:port; its output. */
static int cluster_cli(int port, const char *args, char *out, size_t size) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "redis-cli --tls --cacert %s --cert %s --key %s -h 127.0.0.1 -p %d %s 2>&1",
             cert("ca.crt"), cert("client.crt"), cert("client.key"), port, args);
    return run_cmd(cmd, out, size);
}

static rl_store_t *open_cluster(const rl_tls_opts_t *tls, int partitions) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = g_cluster_url;
    o.prefix = "rltlscl";
    o.partitions = partitions;
    o.connect_timeout_ms = 2000 * time_scale();
    o.command_timeout_ms = 5000 * time_scale();
    if (tls) o.tls = *tls;
    return rl_store_open(&o);
}

/* Runs the store conformance suite (test_store, beside this program)
 * against `url` with the CA and client certificate; its exit status. */
static int run_store_suite(const char *url) {
    char dir[1024], cmd[4096];
    snprintf(dir, sizeof(dir), "%s", g_self);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof(dir), ".");
    snprintf(cmd, sizeof(cmd),
             "RUNLANE_TEST_STORE=redis RUNLANE_REQUIRE_REDIS=1 RUNLANE_TEST_PARTITIONS=last "
             "RUNLANE_TEST_REDIS=%s RUNLANE_TEST_REDIS_TLS_CA=%s RUNLANE_TEST_REDIS_TLS_CERT=%s "
             "RUNLANE_TEST_REDIS_TLS_KEY=%s %s/test_store >&2",
             url, cert("ca.crt"), cert("client.crt"), cert("client.key"), dir);
    return run_cmd(cmd, NULL, 0);
}

/* A private 3-master/3-replica cluster, TLS only (bus and replication
 * too), client certificates required, every node with a certificate of
 * its own (IP:127.0.0.1, DNS:cluster.runlane.test): the store conformance
 * suite over rediss+cluster:// with the CA and client certificate; the
 * server name, a wrong CA and the opt-out apply to every node; a live
 * `redis-cli --cluster reshard` of an active partition's slots is
 * followed through MOVED over TLS. */
static void test_cluster_over_tls(void) {
    char cmd[4096], out[8192];
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-cluster.sh start-tls %s/cluster %s", g_src, g_tmp,
             g_certs);
    RL_CHECK_MSG(run_cmd(cmd, out, sizeof(out)) == 0 && strncmp(out, "rediss+cluster://", 17) == 0,
                 "starting a TLS Redis Cluster failed: %s", out);
    out[strcspn(out, "\n")] = '\0';
    rl_strlcpy(g_cluster_url, out, sizeof(g_cluster_url));
    fprintf(stderr, "    cluster: %s\n", g_cluster_url);

    /* the conformance suite, once (12 partitions: every master) */
    int rc = run_store_suite(g_cluster_url);
    RL_CHECK_MSG(rc == 0, "the store conformance suite over a TLS cluster failed (exit %d)", rc);

    /* the options apply to each master (connected when first used): a
     * round trip on a partition of each (12 partitions: 4 per master) */
    rl_tls_opts_t named = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"),
                           "cluster.runlane.test", 0};
    rl_store_t *st = open_cluster(&named, 12);
    RL_CHECK_MSG(st != NULL, "redis.tls.server.name=cluster.runlane.test: %s",
                 runlane_error_message(runlane_error_last()));
    int per[8], nm = 0;
    rl_store_redis_spread(st, per, 8, &nm);
    RL_CHECK_INT(3, nm);
    for (int p = 0; p < 12; p += 4) {
        char conv[32] = "";
        for (int i = 0; i < 10000 && !conv[0]; i++) {
            snprintf(conv, sizeof(conv), "tls-named-%d", i);
            if (rl_partition_of(conv, 12) != p) conv[0] = '\0';
        }
        RL_CHECK(conv[0] != '\0');
        roundtrip(st, conv);
    }
    st->ops->destroy(st);
    rl_tls_opts_t wrong_name = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"),
                                "localhost", 0};
    st = open_cluster(&wrong_name, 12);
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL && strstr(runlane_error_message(runlane_error_last()), "not valid for \"localhost\""),
                 "a server name the nodes' certificates lack should fail: %s",
                 runlane_error_message(runlane_error_last()));
    rl_tls_opts_t wrong_ca = {cert("other-ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 0};
    st = open_cluster(&wrong_ca, 12);
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL && strstr(runlane_error_message(runlane_error_last()), "certificate verify failed"),
                 "a wrong CA should fail: %s", runlane_error_message(runlane_error_last()));
    rl_tls_opts_t no_cert = {cert("ca.crt"), NULL, NULL, NULL, NULL, 0};
    st = open_cluster(&no_cert, 12);
    if (st) st->ops->destroy(st);
    RL_CHECK_MSG(st == NULL && strstr(runlane_error_message(runlane_error_last()), "client certificate"),
                 "no client certificate should fail: %s", runlane_error_message(runlane_error_last()));
    rl_tls_opts_t insecure = {cert("other-ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 1};
    st = open_cluster(&insecure, 12);
    RL_CHECK_MSG(st != NULL, "redis.tls.insecure.skip.verify on a cluster: %s",
                 runlane_error_message(runlane_error_last()));
    st->ops->destroy(st);

    /* each node is verified by the address it is dialled at: a first
     * seed named "localhost" (which the nodes' certificates lack) fails,
     * the next seed and the nodes CLUSTER SLOTS names (127.0.0.1) pass;
     * one name for every node (the first seed's) would refuse them all */
    RL_CHECK(strncmp(out + 17, "127.0.0.1:", 10) == 0);
    snprintf(g_cluster_url, sizeof(g_cluster_url), "rediss+cluster://localhost%.200s", out + 26);
    rl_tls_opts_t per_node = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 0};
    st = open_cluster(&per_node, 12);
    RL_CHECK_MSG(st != NULL, "%s with the first seed's certificate lacking its name: %s",
                 g_cluster_url, runlane_error_message(runlane_error_last()));
    if (st) roundtrip(st, "per-node");
    if (st) st->ops->destroy(st);
    rl_strlcpy(g_cluster_url, out, sizeof(g_cluster_url));

    /* a live reshard of partition 0's slots (the lowest of master 0)
     * while the store holds a message there: MOVED over TLS */
    rl_tls_opts_t t = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 0};
    st = open_cluster(&t, 12);
    RL_CHECK_MSG(st != NULL, "open: %s", runlane_error_message(runlane_error_last()));
    char conv[32] = "";
    for (int i = 0; i < 10000 && !conv[0]; i++) {
        snprintf(conv, sizeof(conv), "tls-mig-%d", i);
        if (rl_partition_of(conv, 12) != 0) conv[0] = '\0';
    }
    RL_CHECK(conv[0] != '\0');
    rl_policy_t pol = test_policy();
    char id[RUNLANE_ID_MAX];
    int dup = 0;
    RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"before\"}", 2, NULL, id, &dup));
    int p0 = 0, p1 = 0;
    FILE *f;
    snprintf(cmd, sizeof(cmd), "%s/cluster/ports", g_tmp);
    RL_CHECK((f = fopen(cmd, "r")) != NULL);
    RL_CHECK(fscanf(f, "%d %d", &p0, &p1) == 2);
    fclose(f);
    char src[64] = "", dst[64] = "";
    RL_CHECK_INT(0, cluster_cli(p0, "cluster myid", src, sizeof(src)));
    RL_CHECK_INT(0, cluster_cli(p1, "cluster myid", dst, sizeof(dst)));
    src[strcspn(src, "\r\n")] = dst[strcspn(dst, "\r\n")] = '\0';
    char args[512];
    snprintf(args, sizeof(args),
             "--cluster reshard 127.0.0.1:%d --cluster-from %s --cluster-to %s "
             "--cluster-slots 1365 --cluster-yes >%s/reshard.log",
             p0, src, dst, g_tmp);
    rc = cluster_cli(p0, args, out, sizeof(out)); /* a line per slot: to a file */
    RL_CHECK_MSG(rc == 0, "redis-cli --cluster reshard over TLS failed (exit %d): see %s/reshard.log",
                 rc, g_tmp);
    long m0, a0, r0, d0, m1, a1, r1, d1;
    rl_store_redis_link_stats(st, &m0, &a0, &r0, &d0);
    RL_CHECK_OK(st->ops->enqueue(st, &pol, conv, "{\"content\":\"after\"}", 2, NULL, id, &dup));
    rl_store_redis_link_stats(st, &m1, &a1, &r1, &d1);
    RL_CHECK_MSG(m1 > m0, "no MOVED followed after the reshard (moved %ld -> %ld)", m0, m1);
    rl_claim_t *cl = NULL;
    int n = 0;
    RL_CHECK_OK(st->ops->claim(st, &pol, "w-tls", 1, &cl, &n));
    RL_CHECK_INT(1, n);
    int both = strstr(cl[0].messages_json, "before") && strstr(cl[0].messages_json, "after");
    RL_CHECK_MSG(both, "the batch after the reshard: %s", cl[0].messages_json);
    RL_CHECK_OK(st->ops->ack(st, &pol, conv, cl[0].token));
    rl_claim_free(&cl[0]);
    free(cl);
    st->ops->destroy(st);
}


/* ---- Sentinel over TLS ----------------------------------------------- */

static char g_sentinel_url[256];

static void sentinel_stop(void) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-sentinel.sh stop %s/sentinel >/dev/null 2>&1",
             g_src, g_tmp);
    run_cmd(cmd, NULL, 0);
}

static rl_store_t *open_sentinel(const rl_tls_opts_t *tls, int wait_replicas) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = g_sentinel_url;
    o.prefix = "rltlsst";
    o.partitions = 1;
    o.connect_timeout_ms = 1000 * time_scale();
    o.command_timeout_ms = 3000 * time_scale();
    o.wait_replicas = wait_replicas;
    o.wait_timeout_ms = 2000 * time_scale();
    if (tls) o.tls = *tls;
    return rl_store_open(&o);
}

/* The pid of the sentinel setup's process whose port is the i-th of
 * DIR/ports (0 master, 1 replica, 2..4 sentinels); its port in *port. */
static int sentinel_pid(int i, int *port) {
    char path[512];
    snprintf(path, sizeof(path), "%s/sentinel/ports", g_tmp);
    FILE *f = fopen(path, "r");
    int ports[5], n = 0, pid = 0;
    if (!f) return 0;
    while (n < 5 && fscanf(f, "%d", &ports[n]) == 1) n++;
    fclose(f);
    if (n != 5) return 0;
    *port = ports[i];
    snprintf(path, sizeof(path), "%s/sentinel/%s-%d/redis.pid", g_tmp, i < 2 ? "data" : "sentinel",
             ports[i]);
    if (!(f = fopen(path, "r"))) return 0;
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
    return pid;
}

/* A private Sentinel setup, TLS only (1 master, 1 replica, 3 sentinels;
 * replication and the sentinels' own links over TLS too; client
 * certificates required; each process with a certificate of its own for
 * IP:127.0.0.1 and DNS:sentinel.runlane.test): the store conformance
 * suite over rediss+sentinel:// with mutual TLS; the TLS options apply to
 * the sentinels and to the master they name (a wrong CA, a wrong server
 * name and a missing client certificate each fail at once, by name); a
 * kill -9 of the master is followed: the store opened before it finds the
 * promoted replica through the sentinels, over TLS, and an enqueue
 * acknowledged with redis.wait.replicas=1 before the kill is there. */
static void test_sentinel_over_tls(void) {
    char cmd[4096], out[1024];
    snprintf(cmd, sizeof(cmd), "%sscripts/redis-sentinel.sh start-tls %s/sentinel %s", g_src,
             g_tmp, g_certs);
    RL_CHECK_MSG(run_cmd(cmd, out, sizeof(out)) == 0 && strncmp(out, "rediss+sentinel://", 18) == 0,
                 "starting a TLS Sentinel setup failed: %s", out);
    out[strcspn(out, "\n")] = '\0';
    rl_strlcpy(g_sentinel_url, out, sizeof(g_sentinel_url));
    fprintf(stderr, "    sentinel: %s\n", g_sentinel_url);

    /* the conformance suite, once */
    int rc = run_store_suite(g_sentinel_url);
    RL_CHECK_MSG(rc == 0, "the store conformance suite through Sentinel over TLS failed (exit %d)",
                 rc);

    /* the options apply to the sentinels and to the master they name */
    rl_tls_opts_t wrong_ca = {cert("other-ca.crt"), NULL, cert("client.crt"), cert("client.key"),
                              NULL, 0};
    expect_fail(g_sentinel_url, &wrong_ca, RUNLANE_ERR_STORE, 3000, "certificate verify failed",
                "no sentinel named the master", NULL);
    RL_CHECK_MSG(!runlane_error_retriable(runlane_error_last()),
                 "a wrong CA at every sentinel does not fix itself: not retriable");
    rl_tls_opts_t wrong_name = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"),
                                "localhost", 0};
    expect_fail(g_sentinel_url, &wrong_name, RUNLANE_ERR_STORE, 3000, "not valid for \"localhost\"",
                NULL, NULL);
    rl_tls_opts_t no_cert = {cert("ca.crt"), NULL, NULL, NULL, NULL, 0};
    expect_fail(g_sentinel_url, &no_cert, RUNLANE_ERR_STORE, 3000, "client certificate", NULL,
                NULL);
    rl_tls_opts_t named = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"),
                           "sentinel.runlane.test", 0};
    rl_store_t *st = open_sentinel(&named, 0);
    RL_CHECK_MSG(st != NULL, "redis.tls.server.name=sentinel.runlane.test: %s",
                 runlane_error_message(runlane_error_last()));
    roundtrip(st, "st-named");
    st->ops->destroy(st);

    /* kill -9 of the master: the stores opened before it follow */
    rl_tls_opts_t t = {cert("ca.crt"), NULL, cert("client.crt"), cert("client.key"), NULL, 0};
    rl_store_t *acked = open_sentinel(&t, 1);
    RL_CHECK_MSG(acked != NULL, "open with redis.wait.replicas=1: %s",
                 runlane_error_message(runlane_error_last()));
    st = open_sentinel(&t, 0);
    if (!st) acked->ops->destroy(acked);
    RL_CHECK_MSG(st != NULL, "open: %s", runlane_error_message(runlane_error_last()));
    rl_policy_t pol = test_policy();
    char id[RUNLANE_ID_MAX];
    int dup = 0;
    rc = acked->ops->enqueue(acked, &pol, "st-fo", "{\"content\":\"before\"}", 2, NULL, id, &dup);
    acked->ops->destroy(acked);
    if (rc != RUNLANE_OK) st->ops->destroy(st);
    RL_CHECK_MSG(rc == RUNLANE_OK, "enqueue with redis.wait.replicas=1 over TLS: %s",
                 runlane_error_message(runlane_error_last()));
    int mport = 0, rport = 0;
    int mpid = sentinel_pid(0, &mport);
    sentinel_pid(1, &rport);
    if (mpid <= 0 || rport <= 0) st->ops->destroy(st);
    RL_CHECK_MSG(mpid > 0 && rport > 0, "no pid/port in %s/sentinel", g_tmp);
    long m0, a0, r0, d0, m1, a1, r1, d1;
    rl_store_redis_link_stats(st, &m0, &a0, &r0, &d0);
    RL_CHECK_INT(0, kill(mpid, SIGKILL));
    fprintf(stderr, "    killed the master (port %d); the replica (port %d) should take over\n",
            mport, rport);
    /* retriable errors until the sentinels promote the replica */
    int64_t end = rl_mono_ms() + 40000LL * time_scale();
    int tries = 0;
    while ((rc = st->ops->enqueue(st, &pol, "st-fo", "{\"content\":\"after\"}", 2, NULL, id,
                                  &dup)) != RUNLANE_OK) {
        const runlane_error_t *e = runlane_error_last();
        if (rc != RUNLANE_ERR_STORE || !runlane_error_retriable(e) || rl_mono_ms() > end) {
            char msg[600];
            rl_strlcpy(msg, runlane_error_message(e), sizeof(msg));
            int retriable = runlane_error_retriable(e);
            st->ops->destroy(st);
            RL_FAILF("after the master's kill: enqueue %d (retriable %d) after %d tries: %s", rc,
                     retriable, tries, msg);
        }
        if (tries++ % 10 == 0) fprintf(stderr, "    waiting for the failover: %s\n", runlane_error_message(e));
        usleep(100 * 1000);
    }
    rl_store_redis_link_stats(st, &m1, &a1, &r1, &d1);
    fprintf(stderr, "    the store followed the failover after %d retriable failures\n", tries);
    /* the old master is dead: the store now writes to the promoted replica */
    rl_claim_t *cl = NULL;
    int n = 0;
    rc = st->ops->claim(st, &pol, "w-tls", 1, &cl, &n);
    int both = rc == RUNLANE_OK && n == 1 && strstr(cl[0].messages_json, "before") &&
               strstr(cl[0].messages_json, "after");
    char got[512];
    snprintf(got, sizeof(got), "%s", rc == RUNLANE_OK && n == 1 ? cl[0].messages_json : "(none)");
    if (rc == RUNLANE_OK && n == 1) rc = st->ops->ack(st, &pol, "st-fo", cl[0].token);
    for (int i = 0; i < n; i++) rl_claim_free(&cl[i]);
    free(cl);
    st->ops->destroy(st);
    RL_CHECK_MSG(d1 > d0, "the master was not looked up again through the sentinels");
    RL_CHECK_MSG(both, "the batch after the failover lacks a message: %s", got);
    RL_CHECK_OK(rc);
    /* and the sentinels name the promoted replica (asked over TLS) */
    int sport = 0;
    sentinel_pid(2, &sport);
    snprintf(cmd, sizeof(cmd),
             "redis-cli --tls --cacert %s --cert %s --key %s -h 127.0.0.1 -p %d "
             "sentinel get-master-addr-by-name mymaster 2>&1",
             cert("ca.crt"), cert("client.crt"), cert("client.key"), sport);
    RL_CHECK_INT(0, run_cmd(cmd, out, sizeof(out)));
    char want[16];
    snprintf(want, sizeof(want), "%d", rport);
    RL_CHECK_MSG(strstr(out, want) != NULL, "the sentinels name %s, not the replica %d", out, rport);
}

int main(int argc, char **argv) {
    (void)argc;
    g_self = argv[0];
    RL_RUN(test_features_report_tls);
    RL_RUN(setup);
    if (g_tls_a && g_tls_b) {
        RL_RUN(test_verified_connect_by_ip_and_by_name);
        RL_RUN(test_acl_user_over_tls);
        RL_RUN(test_wrong_ca_is_named);
        RL_RUN(test_wrong_server_name_is_named);
        RL_RUN(test_plain_url_to_tls_port_fails_fast);
        RL_RUN(test_mutual_tls);
        RL_RUN(test_tls_file_errors_name_the_key);
        RL_RUN(test_conf_keys_insecure_warning_and_no_secrets);
        RL_RUN(test_conformance_suite_over_tls);
        RL_RUN(test_cluster_over_tls);
        cluster_stop();
        RL_RUN(test_sentinel_over_tls);
        sentinel_stop();
    }
    teardown();
    return rl_test_summary();
}
