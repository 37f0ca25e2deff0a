/* test_security.c - secrets and isolation.
 *
 * - Redis AUTH and ACL users from the store URL, against a private
 *   redis-server started with --requirepass and an ACL user (through
 *   scripts/redis-server.sh): redis://:pw@ and redis://alice:pw@ work;
 *   wrong or missing passwords fail with a clear message that never holds
 *   a password; runlane_conf_dump and runlane_conf_get mask the password.
 * - TLS: without hiredis_ssl, runlane_features() lacks
 *   RUNLANE_FEATURE_REDIS_TLS and a rediss:// store is refused saying so.
 * - Conversation ids with every kind of allowed byte (':', '{', '}', '*',
 *   '?', '[', spaces, quotes, backslashes, emoji, 256 bytes, ids that look
 *   like keys or prefixes of each other) never reach another
 *   conversation's messages: a worker claims every batch through the
 *   public API and each batch holds only its own conversation's messages;
 *   Lua and JSON injection attempts in contents, ids, idempotency keys and
 *   metadata are stored verbatim. On the test Redis (RUNLANE_TEST_REDIS)
 *   and on the memory store.
 * - The OpenAI API key (and secret openai.headers values) never appear in
 *   runlane_conf_dump, nor in the error of a failing HTTP call: a closed
 *   port, and a provider that echoes the key in its error body and
 *   request id.
 *
 * Needs RUNLANE_TEST_REDIS (skipped without, failed with
 * RUNLANE_REQUIRE_REDIS=1) and redis-server for the private server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "rltest.h"
#include "runlane.h"

#define MAIN_PW "Pw-main-51c2f0e9"
#define ALICE_PW "Alice-pw-7e3d44a1"
#define WRONG_PW "Wrong-pw-0b9f1c33"
#define API_KEY "sk-sec-TEST-KEY-93c1e7d5a2f04b68"
#define HDR_SECRET "hdr-secret-6a0e2d9c71"

static char redis_url[256];
static char src_dir[512];
static char priv_dir[256];
static int priv_port;

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* the private Redis with a password and an ACL user                  */
/* ------------------------------------------------------------------ */

static int start_private_redis(void) {
    if (priv_port) return 1;
    snprintf(src_dir, sizeof(src_dir), "%s", __FILE__);
    char *cut = strstr(src_dir, "/tests/c/");
    if (!cut) return 0;
    *cut = '\0';
    snprintf(priv_dir, sizeof(priv_dir), "/tmp/runlane-sec-redis.%d", (int)getpid());
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s/scripts/redis-server.sh start %s --requirepass '%s' "
             "--user alice on '>%s' '~*' '&*' '+@all'",
             src_dir, priv_dir, MAIN_PW, ALICE_PW);
    FILE *pp = popen(cmd, "r");
    int port = 0;
    if (!pp) return 0;
    if (fscanf(pp, "%d", &port) != 1) port = 0;
    pclose(pp);
    priv_port = port;
    return port > 0;
}

static void stop_private_redis(void) {
    if (!priv_port) return;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "%s/scripts/redis-server.sh stop %s >/dev/null 2>&1; rm -rf %s",
             src_dir, priv_dir, priv_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not stop the private redis\n");
    priv_port = 0;
}

static void need_private_redis(void) {
    if (start_private_redis()) return;
    if (getenv("RUNLANE_REQUIRE_REDIS")) RL_FAILF("could not start a private redis-server");
    RL_SKIP("redis-server not available");
}

/* A client on `url` (NULL on failure, with the message in err). */
static runlane_t *client_on(const char *url, char *err, size_t errsize) {
    runlane_conf_t *conf = runlane_conf_new();
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "sec%d", (int)getpid());
    runlane_conf_set(conf, "key.prefix", prefix, NULL, 0);
    runlane_conf_set(conf, "redis.connect.timeout.ms", "2000", NULL, 0);
    runlane_err_t rc = runlane_conf_set(conf, "store", url, err, errsize);
    runlane_t *rl = rc == RUNLANE_OK ? runlane_new(conf, err, errsize) : NULL;
    runlane_conf_destroy(conf);
    return rl;
}

/* The message of a failure holds none of the passwords. */
#define CHECK_NO_SECRET(text)                                                          \
    do {                                                                               \
        const char *t_ = (text);                                                       \
        RL_CHECK_MSG(!strstr(t_, MAIN_PW) && !strstr(t_, ALICE_PW) && !strstr(t_, WRONG_PW) && \
                         !strstr(t_, API_KEY) && !strstr(t_, HDR_SECRET),              \
                     "a secret shows in: %s", t_);                                     \
    } while (0)

static void test_redis_password_in_url_authenticates(void) {
    need_private_redis();
    char url[256], err[512];
    snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%d/0", MAIN_PW, priv_port);
    runlane_t *rl = client_on(url, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "redis://:pw@ refused: %s", err);
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "auth-default", "hi", NULL));
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, "auth-default"));
    RL_CHECK_MSG(strstr(st, "\"pending\":1") != NULL, "status after enqueue: %s", st);
    runlane_free(st);
    runlane_destroy(rl);
    /* As in redis-cli, userinfo without a colon is the password. */
    snprintf(url, sizeof(url), "redis://%s@127.0.0.1:%d/0", MAIN_PW, priv_port);
    rl = client_on(url, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "redis://pw@ refused: %s", err);
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "auth-default", "hi", NULL));
    runlane_destroy(rl);
}

static void test_redis_acl_user_in_url_authenticates(void) {
    need_private_redis();
    char url[256], err[512];
    snprintf(url, sizeof(url), "redis://alice:%s@127.0.0.1:%d/0", ALICE_PW, priv_port);
    runlane_t *rl = client_on(url, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "redis://alice:pw@ refused: %s", err);
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "auth-alice", "hi", NULL));
    runlane_destroy(rl);
}

static void test_redis_wrong_password_fails_clearly_without_secrets(void) {
    need_private_redis();
    const char *forms[] = {"redis://:%s@127.0.0.1:%d/0", "redis://alice:%s@127.0.0.1:%d/0",
                           "redis://default:%s@127.0.0.1:%d/0"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char url[256], err[512] = "";
        snprintf(url, sizeof(url), forms[i], WRONG_PW, priv_port);
        runlane_t *rl = client_on(url, err, sizeof(err));
        if (rl) runlane_destroy(rl);
        RL_CHECK_MSG(rl == NULL, "a wrong password was accepted (%s)", forms[i]);
        const char *msg = runlane_error_message(runlane_error_last());
        RL_CHECK_INT(RUNLANE_ERR_STORE, runlane_error_code(runlane_error_last()));
        RL_CHECK_MSG(strstr(err, "password") != NULL || strstr(err, "AUTH") != NULL,
                     "the message does not say the password is the problem: %s", err);
        CHECK_NO_SECRET(err);
        CHECK_NO_SECRET(msg);
    }
}

static void test_redis_missing_password_says_so(void) {
    need_private_redis();
    char url[256], err[512] = "";
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", priv_port);
    runlane_t *rl = client_on(url, err, sizeof(err));
    if (rl) {
        /* Connecting may be lazy: the first command must fail then. */
        char id[RUNLANE_ID_MAX];
        runlane_err_t rc = runlane_enqueue(id, sizeof(id), NULL, rl, "noauth", "x", NULL);
        snprintf(err, sizeof(err), "%s", runlane_error_message(runlane_error_last()));
        runlane_destroy(rl);
        RL_CHECK_MSG(rc != RUNLANE_OK, "a server with requirepass took a command without AUTH");
    }
    RL_CHECK_MSG(strstr(err, "password") != NULL,
                 "the message does not say a password is needed: %s", err);
    CHECK_NO_SECRET(err);
}

static void test_redis_password_with_escapes(void) {
    /* A password with characters that must be %-escaped in a URL. */
    need_private_redis();
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "redis-cli -p %d --user alice --pass '%s' --no-auth-warning "
             "ACL SETUSER bob on '>p@ss:w/rd%%' '~*' '&*' '+@all' >/dev/null",
             priv_port, ALICE_PW);
    RL_CHECK_INT(0, system(cmd));
    char url[256], err[512];
    snprintf(url, sizeof(url), "redis://bob:p%%40ss%%3Aw%%2Frd%%25@127.0.0.1:%d/0", priv_port);
    runlane_t *rl = client_on(url, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "%%-escaped password refused: %s", err);
    runlane_destroy(rl);
    runlane_conf_t *conf = runlane_conf_new();
    RL_CHECK_OK(runlane_conf_set(conf, "store", url, NULL, 0));
    char *dump = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump, conf));
    RL_CHECK_MSG(!strstr(dump, "p%40ss") && !strstr(dump, "w%2Frd"), "password in dump: %s", dump);
    runlane_free(dump);
    runlane_conf_destroy(conf);
}

/* Every way of writing a password in the store URL is masked by
 * runlane_conf_dump and runlane_conf_get. */
static void check_masked(const char *url, const char *password) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    RL_CHECK_MSG(runlane_conf_set(conf, "store", url, err, sizeof(err)) == RUNLANE_OK, "%s: %s", url,
                 err);
    char *dump = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump, conf));
    char shown[512];
    size_t sz = sizeof(shown);
    RL_CHECK_OK(runlane_conf_get(conf, "store", shown, &sz));
    int leak = strstr(dump, password) || strstr(shown, password);
    if (leak) fprintf(stderr, "    dump: %s\n    get: %s\n", dump, shown);
    runlane_free(dump);
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(!leak, "the password of %s shows in runlane_conf_dump/get", url);
}

static void test_conf_dump_masks_store_password(void) {
    check_masked("redis://:" MAIN_PW "@127.0.0.1:6379/0", MAIN_PW);
    check_masked("redis://alice:" ALICE_PW "@127.0.0.1:6379/0", ALICE_PW);
    check_masked("unix://alice:" ALICE_PW "@/run/redis.sock?db=1", ALICE_PW);
}

static void test_conf_dump_masks_password_without_user(void) {
    /* redis://PASSWORD@host: as in redis-cli, userinfo without a colon is a
     * password (store_redis.c parse_userinfo), so it must be masked too. */
    check_masked("redis://" MAIN_PW "@127.0.0.1:6379/0", MAIN_PW);
    check_masked("unix://" MAIN_PW "@/run/redis.sock", MAIN_PW);
}

static void test_redis_unreachable_error_has_no_password(void) {
    /* A closed port: the connection error names the address, never the
     * password. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    RL_CHECK(bind(s, (struct sockaddr *)&a, sizeof(a)) == 0);
    RL_CHECK(getsockname(s, (struct sockaddr *)&a, &al) == 0);
    int port = ntohs(a.sin_port);
    close(s);
    char url[256], err[512] = "";
    snprintf(url, sizeof(url), "redis://alice:%s@127.0.0.1:%d/0", ALICE_PW, port);
    runlane_t *rl = client_on(url, err, sizeof(err));
    if (rl) runlane_destroy(rl);
    RL_CHECK_MSG(rl == NULL, "connected to a closed port?");
    RL_CHECK_MSG(*err, "no message");
    CHECK_NO_SECRET(err);
}

/* ------------------------------------------------------------------ */
/* TLS                                                                */
/* ------------------------------------------------------------------ */

static void test_rediss_refused_without_tls(void) {
#ifdef RUNLANE_HAVE_HIREDIS_SSL
    /* Not a skip (RUNLANE_NO_SKIP=1 fails skips): this build's side of it. */
    RL_CHECK_MSG(runlane_features() & RUNLANE_FEATURE_REDIS_TLS,
                 "a build with hiredis_ssl does not claim REDIS_TLS in runlane_features()");
#else
    RL_CHECK_MSG(!(runlane_features() & RUNLANE_FEATURE_REDIS_TLS),
                 "runlane_features() claims REDIS_TLS in a build without hiredis_ssl");
    runlane_conf_t *conf = runlane_conf_new();
    char err[512] = "";
    runlane_err_t rc =
        runlane_conf_set(conf, "store", "rediss://:" MAIN_PW "@127.0.0.1:6380/0", err, sizeof(err));
    runlane_conf_destroy(conf);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, rc);
    RL_CHECK_MSG(strstr(err, "TLS") != NULL && strstr(err, "rediss://") != NULL,
                 "the refusal does not say TLS is missing: %s", err);
    CHECK_NO_SECRET(err);
#endif
}

/* ------------------------------------------------------------------ */
/* conversation isolation and verbatim storage                        */
/* ------------------------------------------------------------------ */

#define NIDS 40
static char *conv_ids[NIDS];
static int nconv;

static void add_id(const char *s) {
    if (nconv < NIDS) conv_ids[nconv++] = strdup(s);
}

static void make_ids(void) {
    if (nconv) return;
    const char *fixed[] = {
        "a", "a:", "a:b", ":", "::", "{", "}", "{a}", "a}", "{}", "*", "a*", "?", "[", "[a-z]",
        "[^a]", " ", "a b", " a ", "\"", "'", "\\", "\\\\", "a\\", "\xF0\x9F\x99\x82",
        "emoji \xF0\x9F\x98\x80 conv", "\xC3\xA9t\xC3\xA9", "runlane:{0}:conv:a", "{0}", "%s%n%d",
        "conv\"},{\"x\":\"", "]]..redis.call('FLUSHALL')..[[", "'); redis.call('del', KEYS[1]) --",
        "KEYS[1]", "\x7e", NULL};
    for (int i = 0; fixed[i]; i++) add_id(fixed[i]);
    char buf[RUNLANE_CONVERSATION_ID_MAX + 1];
    memset(buf, 'x', RUNLANE_CONVERSATION_ID_MAX);
    buf[RUNLANE_CONVERSATION_ID_MAX] = '\0';
    add_id(buf); /* 256 bytes */
    buf[RUNLANE_CONVERSATION_ID_MAX - 1] = '\0';
    add_id(buf); /* 255 bytes: a prefix of the one above */
    buf[0] = '\0';
    for (int i = 0; i < RUNLANE_CONVERSATION_ID_MAX / 4; i++) strcat(buf, "\xF0\x9F\x99\x82");
    add_id(buf); /* 64 emoji = 256 bytes */
}

static const char *contents[] = {
    "plain",
    "]] .. redis.call('FLUSHALL') .. [[",
    "'); redis.call('del', KEYS[1]); --",
    "\", \"conversation_id\": \"a\", \"x\": \"",
    "cjson.decode('{}') \\u0000 \\\" \\\\",
    "{\"json\": [1, 2, {\"nested\": true}]}",
    "\xF0\x9F\x99\x82 multi\nline\ttab",
};
#define NCONTENT ((int)(sizeof(contents) / sizeof(contents[0])))

typedef struct sent {
    char id[RUNLANE_ID_MAX];
    int conv, k, seen;
} sent_t;

static sent_t *sent;
static int nsent;

static void content_of(char *out, size_t size, int conv, int k) {
    snprintf(out, size, "%d/%d %s", conv, k, contents[(conv + k) % NCONTENT]);
}

static void isolation_on(const char *store, const char *prefix) {
    make_ids();
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    const char *kv[] = {"store", store, "key.prefix", prefix, "batch.window.ms", "0",
                        "batch.max.wait.ms", "0", "worker.poll.ms", "20", "lease.ms", "30000",
                        "worker.concurrency", "8", NULL};
    for (int i = 0; kv[i]; i += 2)
        if (runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err))) RL_FAILF("conf: %s", err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new(%s): %s", store, err);
    enum { PER = 3 };
    free(sent);
    sent = calloc((size_t)nconv * (PER + 1), sizeof(*sent));
    nsent = 0;
    /* Two messages each with runlane_enqueue (the last with injection in
     * its idempotency key and metadata), then one more each in one
     * runlane_enqueue_many. */
    for (int c = 0; c < nconv; c++) {
        for (int k = 0; k < PER - 1; k++) {
            char content[256], opts[512];
            content_of(content, sizeof(content), c, k);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "idempotency_key", k ? "k*{x}:'\"]]" : "k?[a]");
            cJSON *md = cJSON_AddObjectToObject(o, "metadata");
            cJSON_AddStringToObject(md, "lua", "redis.call('FLUSHALL')");
            cJSON_AddStringToObject(md, "conv", conv_ids[c]);
            char *os = cJSON_PrintUnformatted(o);
            snprintf(opts, sizeof(opts), "%s", os);
            free(os);
            cJSON_Delete(o);
            sent_t *s = &sent[nsent++];
            s->conv = c;
            s->k = k;
            int dup = -1;
            RL_CHECK_OK(runlane_enqueue(s->id, sizeof(s->id), &dup, rl, conv_ids[c], content, opts));
            RL_CHECK_INT(0, dup);
        }
    }
    cJSON *arr = cJSON_CreateArray();
    for (int c = 0; c < nconv; c++) {
        char content[256];
        content_of(content, sizeof(content), c, PER - 1);
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "conversation_id", conv_ids[c]);
        cJSON_AddStringToObject(m, "content", content);
        cJSON_AddStringToObject(m, "instructions", "]]..redis.call('FLUSHALL')..[[");
        cJSON_AddItemToArray(arr, m);
    }
    char *js = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    char *res = NULL;
    RL_CHECK_OK(runlane_enqueue_many(&res, rl, js));
    free(js);
    cJSON *r = cJSON_Parse(res);
    runlane_free(res);
    RL_CHECK_INT(nconv, cJSON_GetArraySize(r));
    for (int c = 0; c < nconv; c++) {
        sent_t *s = &sent[nsent++];
        s->conv = c;
        s->k = PER - 1;
        const cJSON *it = cJSON_GetArrayItem(r, c);
        snprintf(s->id, sizeof(s->id), "%s", cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")));
        RL_CHECK(cJSON_IsFalse(cJSON_GetObjectItem(it, "duplicate")));
    }
    cJSON_Delete(r);
    /* The same idempotency key in the same conversation is a duplicate;
     * in another conversation it is not. */
    {
        char id[RUNLANE_ID_MAX];
        int dup = -1;
        RL_CHECK_OK(runlane_enqueue(id, sizeof(id), &dup, rl, conv_ids[0], "again",
                                    "{\"idempotency_key\":\"k?[a]\"}"));
        RL_CHECK_INT(1, dup);
        RL_CHECK_STR(sent[0].id, id);
    }
    /* Each conversation's own status counts only its own messages. */
    for (int c = 0; c < nconv; c++) {
        char *st = NULL;
        RL_CHECK_OK(runlane_status(&st, rl, conv_ids[c]));
        cJSON *j = cJSON_Parse(st);
        int pending = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "pending"));
        const char *cid = cJSON_GetStringValue(cJSON_GetObjectItem(j, "conversation_id"));
        int same = cid && strcmp(cid, conv_ids[c]) == 0;
        cJSON_Delete(j);
        runlane_free(st);
        RL_CHECK_MSG(pending == PER, "conversation #%d pending %d, expected %d", c, pending, PER);
        RL_CHECK_MSG(same, "status of conversation #%d names another conversation", c);
    }
    /* A worker claims everything through the public API. */
    RL_CHECK_OK(runlane_start(rl));
    int seen = 0;
    long long deadline = mono_ms() + 30000;
    while (seen < nsent && mono_ms() < deadline) {
        runlane_event_t *ev = runlane_poll(rl, 200);
        if (!ev) continue;
        if (runlane_event_type(ev) != RUNLANE_EVENT_BATCH) {
            fprintf(stderr, "    event %s %s %s\n", runlane_event_type_name(runlane_event_type(ev)),
                    runlane_event_json(ev), runlane_event_error_message(ev));
            runlane_event_destroy(ev);
            continue;
        }
        const char *conv = runlane_event_conversation_id(ev);
        int c = -1;
        for (int i = 0; i < nconv; i++)
            if (strcmp(conv_ids[i], conv) == 0) c = i;
        if (c < 0) {
            runlane_event_destroy(ev);
            RL_FAILF("a batch for an unknown conversation \"%s\"", conv);
        }
        cJSON *j = cJSON_Parse(runlane_event_json(ev));
        const char *jconv = cJSON_GetStringValue(cJSON_GetObjectItem(j, "conversation_id"));
        int bad_conv = !jconv || strcmp(jconv, conv) != 0;
        char problem[600] = "";
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "messages")) {
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(m, "id"));
            const char *content = cJSON_GetStringValue(cJSON_GetObjectItem(m, "content"));
            sent_t *s = NULL;
            for (int i = 0; id && i < nsent; i++)
                if (strcmp(sent[i].id, id) == 0) s = &sent[i];
            if (!s || !content) {
                snprintf(problem, sizeof(problem), "unknown message %s", id ? id : "(no id)");
                break;
            }
            if (s->conv != c) {
                snprintf(problem, sizeof(problem),
                         "message %s of conversation #%d delivered in conversation #%d", id,
                         s->conv, c);
                break;
            }
            if (s->seen++) {
                snprintf(problem, sizeof(problem), "message %s delivered twice", id);
                break;
            }
            char expect[256];
            content_of(expect, sizeof(expect), s->conv, s->k);
            if (strcmp(expect, content) != 0) {
                snprintf(problem, sizeof(problem), "content of %s changed: \"%.200s\" vs \"%.200s\"",
                         id, content, expect);
                break;
            }
            const cJSON *md = cJSON_GetObjectItem(m, "metadata");
            const char *ins = cJSON_GetStringValue(cJSON_GetObjectItem(m, "instructions"));
            if (s->k < PER - 1 &&
                (!cJSON_GetStringValue(cJSON_GetObjectItem(md, "lua")) ||
                 strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(md, "lua")), "redis.call('FLUSHALL')") ||
                 !cJSON_GetStringValue(cJSON_GetObjectItem(md, "conv")) ||
                 strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(md, "conv")), conv_ids[c]))) {
                snprintf(problem, sizeof(problem), "metadata of %s changed", id);
                break;
            }
            if (s->k == PER - 1 && (!ins || strcmp(ins, "]]..redis.call('FLUSHALL')..[[") != 0)) {
                snprintf(problem, sizeof(problem), "instructions of %s changed", id);
                break;
            }
            seen++;
        }
        cJSON_Delete(j);
        runlane_err_t arc = runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL);
        runlane_event_destroy(ev);
        RL_CHECK_MSG(!bad_conv, "event JSON names another conversation than the event");
        RL_CHECK_MSG(!problem[0], "%s", problem);
        RL_CHECK_OK(arc);
    }
    runlane_stop(rl, RUNLANE_STOP_RELEASE, 1000);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, NULL));
    int drained = strstr(st, "\"pending\":0,") != NULL;
    if (!drained) fprintf(stderr, "    status: %s\n", st);
    runlane_free(st);
    runlane_destroy(rl);
    RL_CHECK_MSG(seen == nsent, "%d of %d messages delivered", seen, nsent);
    RL_CHECK_MSG(drained, "messages left after every batch was acked");
}

static void test_conversation_isolation_redis(void) {
    if (!redis_url[0]) RL_SKIP("RUNLANE_TEST_REDIS not set");
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "seciso%d", (int)getpid());
    isolation_on(redis_url, prefix);
}

static void test_conversation_isolation_memory(void) {
    char store[64];
    snprintf(store, sizeof(store), "memory://seciso%d", (int)getpid());
    isolation_on(store, "runlane");
}

/* ------------------------------------------------------------------ */
/* the API key                                                        */
/* ------------------------------------------------------------------ */

static runlane_conf_t *http_conf(const char *base_url) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    char store[64];
    snprintf(store, sizeof(store), "memory://seckey%d", (int)getpid());
    const char *kv[] = {"store", store, "openai.base.url", base_url, "openai.api.key", API_KEY,
                        "openai.headers", "{\"api-key\":\"" HDR_SECRET "\"}",
                        "http.max.retries", "1", "http.retry.base.ms", "1",
                        "http.retry.max.ms", "5", "http.connect.timeout.ms", "2000",
                        "http.timeout.ms", "5000", NULL};
    for (int i = 0; kv[i]; i += 2)
        if (runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err))) RL_FAILF("conf: %s", err);
    return conf;
}

static void test_api_key_not_in_conf_dump(void) {
    runlane_conf_t *conf = http_conf("http://127.0.0.1:9/v1");
    char *dump = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump, conf));
    int leak = strstr(dump, API_KEY) || strstr(dump, HDR_SECRET);
    char shown[256];
    size_t sz = sizeof(shown);
    RL_CHECK_OK(runlane_conf_get(conf, "openai.api.key", shown, &sz));
    runlane_conf_t *dup = runlane_conf_dup(conf);
    char *dump2 = NULL;
    RL_CHECK_OK(runlane_conf_dump(&dump2, dup));
    int leak2 = strstr(dump2, API_KEY) || strstr(dump2, HDR_SECRET);
    runlane_free(dump);
    runlane_free(dump2);
    runlane_conf_destroy(dup);
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(!leak && !leak2, "a secret shows in runlane_conf_dump");
    RL_CHECK_STR("********", shown);
}

static int closed_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &al) != 0) {
        close(s);
        return 0;
    }
    close(s);
    return ntohs(a.sin_port);
}

static void test_api_key_not_in_http_errors(void) {
    int port = closed_port();
    RL_CHECK(port > 0);
    char url[128], err[512];
    /* The key also in the query of the base URL's path is not our business;
     * the Authorization header and openai.headers are. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", port);
    runlane_conf_t *conf = http_conf(url);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    char *id = NULL;
    runlane_err_t rc = runlane_conversation_create(&id, rl, "{\"k\":\"v\"}");
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", runlane_error_message(runlane_error_last()));
    RL_CHECK_INT(RUNLANE_ERR_HTTP, rc);
    RL_CHECK_MSG(id == NULL, "an id came back from a closed port");
    RL_CHECK_MSG(*msg, "no error message");
    CHECK_NO_SECRET(msg);
    rc = runlane_thread_create(&id, rl, NULL);
    snprintf(msg, sizeof(msg), "%s", runlane_error_message(runlane_error_last()));
    RL_CHECK_INT(RUNLANE_ERR_HTTP, rc);
    CHECK_NO_SECRET(msg);
    runlane_destroy(rl);
}

/* A provider that echoes every secret it was sent: the Authorization and
 * api-key headers go back in the error body and the request id. */
static int echo_fd = -1;
static volatile int echo_served;

static void *echo_main(void *arg) {
    (void)arg;
    for (int n = 0; n < 8; n++) {
        int fd = accept(echo_fd, NULL, NULL);
        if (fd < 0) return NULL;
        char req[16384];
        size_t len = 0;
        for (;;) {
            ssize_t r = recv(fd, req + len, sizeof(req) - 1 - len, 0);
            if (r <= 0) break;
            len += (size_t)r;
            req[len] = '\0';
            char *h = strstr(req, "\r\n\r\n");
            if (h) {
                const char *cl = strcasestr(req, "Content-Length:");
                size_t need = (size_t)(h - req) + 4 + (cl ? strtoul(cl + 15, NULL, 10) : 0);
                if (len >= need) break;
            }
        }
        req[len] = '\0';
        char auth[512] = "", hdr[512] = "";
        const char *a = strcasestr(req, "\r\nAuthorization: Bearer ");
        if (a) sscanf(a + 24, "%500[^\r]", auth);
        const char *k = strcasestr(req, "\r\napi-key: ");
        if (k) sscanf(k + 11, "%500[^\r]", hdr);
        char body[2048], resp[4096];
        snprintf(body, sizeof(body),
                 "{\"error\":{\"message\":\"Incorrect API key provided: %s (header %s).\","
                 "\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
                 auth, hdr);
        int rn = snprintf(resp, sizeof(resp),
                          "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                          "x-request-id: req_%s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          auth, strlen(body), body);
        if (send(fd, resp, (size_t)rn, MSG_NOSIGNAL) < 0) perror("send");
        close(fd);
        echo_served++;
    }
    return NULL;
}

static void test_api_key_echoed_by_provider_is_scrubbed(void) {
    echo_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    RL_CHECK(bind(echo_fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(echo_fd, 8) == 0 &&
             getsockname(echo_fd, (struct sockaddr *)&a, &al) == 0);
    pthread_t th;
    pthread_create(&th, NULL, echo_main, NULL);
    char url[128], err[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    runlane_conf_t *conf = http_conf(url);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    char *id = NULL;
    runlane_err_t rc = runlane_conversation_create(&id, rl, NULL);
    char msg[2048];
    snprintf(msg, sizeof(msg), "%s", runlane_error_message(runlane_error_last()));
    runlane_err_t rc2 = runlane_thread_create(&id, rl, NULL);
    char msg2[2048];
    snprintf(msg2, sizeof(msg2), "%s", runlane_error_message(runlane_error_last()));
    runlane_destroy(rl);
    shutdown(echo_fd, SHUT_RDWR);
    close(echo_fd);
    pthread_join(th, NULL);
    RL_CHECK_MSG(echo_served >= 2, "the provider stand-in was not called");
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, rc);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, rc2);
    RL_CHECK_MSG(strstr(msg, "401") != NULL && strstr(msg, "Incorrect API key") != NULL,
                 "the provider's error is not in the message: %s", msg);
    CHECK_NO_SECRET(msg);
    CHECK_NO_SECRET(msg2);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    /* The stand-ins are on loopback: never through a proxy. */
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    const char *u = rl_test_redis_url();
    if (u) snprintf(redis_url, sizeof(redis_url), "%s", u);
    else if (getenv("RUNLANE_REQUIRE_REDIS") && strcmp(getenv("RUNLANE_REQUIRE_REDIS"), "1") == 0) {
        fprintf(stderr, "RUNLANE_TEST_REDIS is not set and RUNLANE_REQUIRE_REDIS=1\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RL_RUN(test_redis_password_in_url_authenticates);
    RL_RUN(test_redis_acl_user_in_url_authenticates);
    RL_RUN(test_redis_wrong_password_fails_clearly_without_secrets);
    RL_RUN(test_redis_missing_password_says_so);
    RL_RUN(test_redis_password_with_escapes);
    RL_RUN(test_redis_unreachable_error_has_no_password);
    RL_RUN(test_conf_dump_masks_store_password);
    RL_RUN(test_conf_dump_masks_password_without_user);
    RL_RUN(test_rediss_refused_without_tls);
    RL_RUN(test_conversation_isolation_memory);
    RL_RUN(test_conversation_isolation_redis);
    RL_RUN(test_api_key_not_in_conf_dump);
    RL_RUN(test_api_key_not_in_http_errors);
    RL_RUN(test_api_key_echoed_by_provider_is_scrubbed);
    stop_private_redis();
    for (int i = 0; i < nconv; i++) free(conv_ids[i]);
    free(sent);
    return rl_test_summary();
}
