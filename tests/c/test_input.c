/* test_input.c - input that cannot be stored faithfully is refused, never
 * stored corrupted: invalid UTF-8 in every text field, U+0000 in JSON
 * (which a C string would cut), control bytes echoed in error messages,
 * header values with CR/LF. On the memory store and on Redis. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "rltest.h"
#include "runlane.h"

static char store_url[256];
static int prefix_seq;

static runlane_t *client_kv(const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512], url[300], prefix[64];
    snprintf(prefix, sizeof(prefix), "in%ld-%d", (long)getpid(), ++prefix_seq);
    if (strncmp(store_url, "memory", 6) == 0)
        snprintf(url, sizeof(url), "memory://%s", prefix);
    else
        snprintf(url, sizeof(url), "%s", store_url);
    if (runlane_conf_set(conf, "store", url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) RL_FAILF("conf %s: %s", kv[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    return rl;
}

static runlane_t *client(void) { return client_kv(NULL); }

/* A numeric member of status (whole queue when conv is NULL). */
static int status_int(runlane_t *rl, const char *conv, const char *key) {
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, conv));
    cJSON *j = cJSON_Parse(st);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    int r = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    runlane_free(st);
    return r;
}

static const char *last_msg(void) { return runlane_error_message(runlane_error_last()); }

/* The message of the last refused_one/refused_many (a later call clears
 * the thread's error). */
static char refusal[512];

/* No byte of s is a control character other than none at all. */
static int has_control_byte(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7F) return 1;
    return 0;
}

/* runlane_enqueue with `options` is refused with INVALID_ARG, its message
 * contains `names`, and nothing is stored. */
static void refused_one(runlane_t *rl, const char *conv, const char *content, const char *options,
                        const char *names) {
    char id[RUNLANE_ID_MAX];
    runlane_err_t rc = runlane_enqueue(id, sizeof(id), NULL, rl, conv, content, options);
    RL_CHECK_MSG(rc == RUNLANE_ERR_INVALID_ARG, "enqueue(%s): expected RUNLANE_ERR_INVALID_ARG, got %d (%s)",
                 options ? options : "NULL", (int)rc, last_msg());
    RL_CHECK_MSG(strstr(last_msg(), names) != NULL, "enqueue(%s): message should name \"%s\", got: %s",
                 options ? options : "NULL", names, last_msg());
    RL_CHECK_MSG(!has_control_byte(last_msg()), "message has a raw control byte: %s", last_msg());
    snprintf(refusal, sizeof(refusal), "%s", last_msg());
    RL_CHECK_INT(0, status_int(rl, NULL, "pending"));
}

/* runlane_enqueue_many of `json` is refused naming `names`; nothing stored. */
static void refused_many(runlane_t *rl, const char *json, const char *names) {
    char *out = NULL;
    runlane_err_t rc = runlane_enqueue_many(&out, rl, json);
    RL_CHECK_MSG(rc == RUNLANE_ERR_INVALID_ARG, "enqueue_many(%s): expected RUNLANE_ERR_INVALID_ARG, got %d (%s)",
                 json, (int)rc, last_msg());
    RL_CHECK(out == NULL);
    RL_CHECK_MSG(strstr(last_msg(), names) != NULL, "enqueue_many(%s): message should name \"%s\", got: %s",
                 json, names, last_msg());
    snprintf(refusal, sizeof(refusal), "%s", last_msg());
    RL_CHECK_INT(0, status_int(rl, NULL, "pending"));
}

/* ---------------------------------------------------------------- */

static void test_invalid_utf8_in_options_refused(void) {
    runlane_t *rl = client();
    refused_one(rl, "c", "x", "{\"metadata\":{\"k\":\"v\xff\"}}", "options.metadata.k");
    refused_one(rl, "c", "x", "{\"metadata\":{\"k\xc3\":\"v\"}}", "options.metadata");
    refused_one(rl, "c", "x", "{\"instructions\":\"be \xed\xa0\x80 brief\"}", "options.instructions");
    refused_one(rl, "c", "x", "{\"idempotency_key\":\"m-\xc0\xaf\"}", "options.idempotency_key");
    RL_CHECK_MSG(strstr(refusal, "UTF-8") != NULL, "got: %s", refusal);
    /* What JSON.stringify makes of a lone surrogate: named, not "not JSON". */
    refused_one(rl, "c", "x", "{\"metadata\":{\"k\":\"v\\udc80\"}}", "options.metadata.k");
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"\\ud800\"}]", "messages[0].content");
    runlane_destroy(rl);
}

static void test_invalid_utf8_in_enqueue_many_refused(void) {
    runlane_t *rl = client();
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"ok\"},"
                     "{\"conversation_id\":\"b\xfe\",\"content\":\"x\"}]",
                 "messages[1].conversation_id");
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"\x80\"}]", "messages[0].content");
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"x\",\"metadata\":{\"k\":\"\xf5\x80\x80\x80\"}}]",
                 "messages[0].metadata.k");
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"x\",\"instructions\":\"\xe2\x82\"}]",
                 "messages[0].instructions");
    refused_many(rl, "[{\"conversation_id\":\"a\",\"content\":\"x\",\"idempotency_key\":\"\xc1\xbf\"}]",
                 "messages[0].idempotency_key");
    runlane_destroy(rl);
}

static void test_nul_in_json_refused_never_cut(void) {
    runlane_t *rl = client();
    char id[RUNLANE_ID_MAX], id2[RUNLANE_ID_MAX];
    /* "victim\u0000x" would be stored under "victim" (another conversation). */
    refused_many(rl, "[{\"conversation_id\":\"victim\\u0000x\",\"content\":\"x\"}]",
                 "messages[0].conversation_id");
    RL_CHECK_INT(0, status_int(rl, "victim", "pending"));
    /* "keep\u0000lost" would be stored as "keep". */
    refused_many(rl, "[{\"conversation_id\":\"c\",\"content\":\"keep\\u0000lost\"}]", "messages[0].content");
    refused_many(rl, "[{\"conversation_id\":\"c\",\"content\":\"x\",\"metadata\":{\"k\\u0000\":\"v\"}}]",
                 "messages[0].metadata");
    refused_one(rl, "c", "x", "{\"instructions\":\"a\\u0000b\"}", "options.instructions");
    refused_one(rl, "c", "x", "{\"metadata\":{\"k\":\"a\\u0000b\"}}", "options.metadata.k");
    RL_CHECK_MSG(strstr(refusal, "U+0000") != NULL, "got: %s", refusal);
    /* Keys "a\u0000b" and "a" must not collide: the first is refused. */
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "c", "first", "{\"idempotency_key\":\"a\"}"));
    int dup = -1;
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue(id2, sizeof(id2), &dup, rl, "c", "second", "{\"idempotency_key\":\"a\\u0000b\"}"));
    RL_CHECK(strstr(last_msg(), "options.idempotency_key") != NULL);
    RL_CHECK_INT(1, status_int(rl, "c", "pending"));
    /* An escaped backslash followed by "u0000" is text, not U+0000. */
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{\"instructions\":\"C:\\\\u0000\"}"));
    char *out = NULL;
    RL_CHECK_OK(runlane_enqueue_many(&out, rl, "[{\"conversation_id\":\"c\",\"content\":\"\\\\u0000 is fine\"}]"));
    runlane_free(out);
    RL_CHECK_INT(3, status_int(rl, "c", "pending"));
    runlane_destroy(rl);
}

static void test_http_entry_points_refuse_corrupt_text(void) {
    const char *kv[] = {"backend", "responses", "openai.base.url", "http://127.0.0.1:9", NULL};
    runlane_t *rl = client_kv(kv);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_submit_tool_outputs(rl, "b1", "[{\"tool_call_id\":\"t\",\"output\":\"keep\\u0000lost\"}]"));
    RL_CHECK_MSG(strstr(last_msg(), "outputs_json[0].output") != NULL, "got: %s", last_msg());
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_submit_tool_outputs(rl, "b1", "[{\"tool_call_id\":\"t\",\"output\":\"\xff\"}]"));
    /* Metadata of a conversation or thread created at the provider: refused
     * before any request is made. */
    char *created = NULL;
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_conversation_create(&created, rl, "{\"k\":\"keep\\u0000lost\"}"));
    RL_CHECK_MSG(strstr(last_msg(), "metadata_json.k") != NULL, "got: %s", last_msg());
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_thread_create(&created, rl, "{\"k\":\"\xc3\"}"));
    RL_CHECK_MSG(strstr(last_msg(), "metadata_json.k") != NULL, "got: %s", last_msg());
    RL_CHECK(created == NULL);
    /* A valid answer passes validation (and then finds no such batch). */
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND,
                 runlane_submit_tool_outputs(rl, "b1", "[{\"tool_call_id\":\"t\",\"output\":\"ok\"}]"));
    runlane_destroy(rl);
}

static void test_error_messages_escape_control_bytes(void) {
    runlane_t *rl = client();
    char id[RUNLANE_ID_MAX], err[512];
    /* A member name decoded from JSON, quoted by the error. */
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG,
                 runlane_enqueue(id, sizeof(id), NULL, rl, "c", "x", "{\"\\u001b[2J\\u0007\":1}"));
    RL_CHECK_MSG(!has_control_byte(last_msg()), "raw control byte in: %s", last_msg());
    RL_CHECK_MSG(strstr(last_msg(), "\\x1b[2J\\x07") != NULL, "expected the escaped name, got: %s", last_msg());
    /* A dead letter id from the caller. */
    RL_CHECK_INT(RUNLANE_ERR_NOT_FOUND, runlane_dead_retry(NULL, rl, "d\x1b]0;pwned\x07"));
    RL_CHECK_MSG(!has_control_byte(last_msg()) && strstr(last_msg(), "d\\x1b]0;pwned\\x07"),
                 "got: %s", last_msg());
    runlane_destroy(rl);
    /* A configuration value, in errstr and in the last error. */
    runlane_conf_t *c = runlane_conf_new();
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "lease.ms", "1\x1b[31m\r\n", err, sizeof(err)));
    RL_CHECK_MSG(!has_control_byte(err) && strstr(err, "1\\x1b[31m\\r\\n"), "got: %s", err);
    RL_CHECK(!has_control_byte(last_msg()));
    /* C1 controls (CSI U+009B) too; invalid UTF-8 cut by a %.64s as well. */
    RL_CHECK_INT(RUNLANE_ERR_UNKNOWN_KEY, runlane_conf_set(c, "x\xc2\x9b" "31m", "1", err, sizeof(err)));
    RL_CHECK_MSG(strstr(err, "x\\u009b31m") != NULL, "got: %s", err);
    runlane_conf_destroy(c);
}

static void test_header_values_refused_where_set(void) {
    runlane_conf_t *c = runlane_conf_new();
    char err[512], buf[64];
    static const char *const bad_headers[] = {
        "{\"X-A\":\"v\\r\\nX-Injected: 1\"}", /* CR/LF: a second header */
        "{\"X-A\":\"v\\nsecret-tail\"}",
        "{\"X-A\":\"v\\u007f\"}",
        "{\"X-A\":\"v\\u0000x\"}", /* would be cut */
        "{\"X A\":\"v\"}",          /* not a token */
        "{\"X-A:\":\"v\"}",
        "{\"\":\"v\"}",
        "{\"X-\\u00e9\":\"v\"}",
    };
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
        runlane_err_t rc = runlane_conf_set(c, "openai.headers", bad_headers[i], err, sizeof(err));
        RL_CHECK_MSG(rc == RUNLANE_ERR_INVALID_VALUE, "openai.headers=%s: expected RUNLANE_ERR_INVALID_VALUE, got %d",
                     bad_headers[i], (int)rc);
        RL_CHECK_MSG(strstr(err, "openai.headers") != NULL, "got: %s", err);
        /* The value may be a secret: never echoed. */
        RL_CHECK_MSG(strstr(err, "secret-tail") == NULL && strstr(err, "Injected") == NULL, "echoed: %s", err);
    }
    size_t sz = sizeof(buf);
    RL_CHECK_OK(runlane_conf_get(c, "openai.headers", buf, &sz));
    RL_CHECK_STR("{}", buf);
    RL_CHECK_OK(runlane_conf_set(c, "openai.headers", "{\"api-key\":\"k\\tv\",\"X-Trace_1\":\"\xc3\xa9\"}", err,
                                 sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "openai.organization", "org\x7f", err, sizeof(err)));
    RL_CHECK(strstr(err, "openai.organization") != NULL);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "openai.project", "p\r\nX: 1", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "openai.api.key", "sk-abc\x7f", err, sizeof(err)));
    RL_CHECK(strstr(err, "sk-abc") == NULL);
    /* U+0000 in the other JSON keys would be cut as well. */
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_conf_set(c, "openai.query", "{\"v\":\"1\\u0000\"}", err, sizeof(err)));
    RL_CHECK_MSG(strstr(err, "openai.query.v") != NULL, "got: %s", err);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE,
                 runlane_conf_set(c, "openai.metadata", "{\"k\\u0000\":\"v\"}", err, sizeof(err)));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE,
                 runlane_conf_set(c, "openai.tools", "[{\"name\":\"f\\u0000\"}]", err, sizeof(err)));
    RL_CHECK_MSG(strstr(err, "openai.tools[0].name") != NULL, "got: %s", err);
    runlane_conf_destroy(c);
}

/* ---- the helpers themselves (fuzzed elsewhere) ---- */

static void test_json_check_strings_paths(void) {
    static const struct {
        const char *json, *path; /* path NULL: accepted */
    } cases[] = {
        {"{}", NULL},
        {"\"plain\"", NULL},
        {"\"a\\u0000\"", "doc contains U+0000"},
        {"[1,\"x\",[true,\"\\u0000\"]]", "doc[2][1] contains"},
        {"{\"a\":{\"b\":[\"ok\",{\"c\":\"\\u0000\"}]}}", "doc.a.b[1].c contains"},
        {"{\"a\" : \"\\\\u0000\", \"b\":\"\\\"\\u0000\"}", "doc.b contains"},
        {"{\"a\":\"\\u00000\"}", "doc.a contains"},
        {"{\"a\":\"\\u0001\\u00e9\\ud83d\\ude00\"}", NULL},
        {"{\"k\\u0000\":1}", "doc: member name \"k\\u0000\" contains"},
        {"[\"\\udc80\"]", "doc[0] is not valid Unicode"},
        {"[\"ok\",\"\\ud800x\"]", "doc[1] is not valid Unicode"},
        {"{\"a\":\"\\uD800\\u0041\"}", "doc.a is not valid Unicode"},
        {"{\"a\":\"\\\\ud800\\uD83D\\uDE00\"}", NULL},
        {"{\"k\\u001b\":\"\xff\"}", "doc.k\\u001b is not valid UTF-8"},
        {"[[[[[[[[[[[[[[[[[[[[\"\\u0000\"]]]]]]]]]]]]]]]]]]]]", "doc[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]... contains"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        runlane_err_t rc = rl_json_check_strings(cases[i].json, strlen(cases[i].json), "doc");
        if (!cases[i].path) {
            RL_CHECK_MSG(rc == RUNLANE_OK, "%s: expected accepted, got: %s", cases[i].json, last_msg());
        } else {
            RL_CHECK_MSG(rc == RUNLANE_ERR_INVALID_ARG && strstr(last_msg(), cases[i].path),
                         "%s: expected \"%s\", got %d: %s", cases[i].json, cases[i].path, (int)rc, last_msg());
        }
    }
    /* Truncated or broken input is read within its bounds. */
    static const char *const broken[] = {"\"\\", "\"\\u000", "{\"a", "]]]}", "\"\xf0\x9f", "[[[,,,"};
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
        (void)rl_json_check_strings(broken[i], strlen(broken[i]), "doc");
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, rl_json_check_strings("\"\\u0000\"", 8, "doc"));
    RL_CHECK_INT(RUNLANE_OK, rl_json_check_strings("\"\\u0000\"", 6, "doc")); /* cut before the last 0 */
}

static void test_escape_text(void) {
    char out[64];
    const char *in = "a\x1b[0m\a\t\r\n\x7f\xff\xc2\x9b\xc3\xa9\\";
    rl_escape_text(out, sizeof(out), in, strlen(in));
    RL_CHECK_STR("a\\x1b[0m\\x07\\t\\r\\n\\x7f\\xff\\u009b\xc3\xa9\\", out);
    /* A small buffer never holds half an escape or half a character. */
    RL_CHECK_INT(2, rl_escape_text(out, 6, "ab\x1b", 3));
    RL_CHECK_STR("ab", out);
    RL_CHECK_INT(1, rl_escape_text(out, 3, "a\xc3\xa9", 3));
    RL_CHECK_STR("a", out);
    RL_CHECK_INT(0, rl_escape_text(out, 1, "abc", 3));
    RL_CHECK_STR("", out);
}

static void run_all(const char *url) {
    snprintf(store_url, sizeof(store_url), "%s", url);
    fprintf(stderr, "== store %s\n", strncmp(url, "redis", 5) == 0 ? "redis" : url);
    RL_RUN(test_invalid_utf8_in_options_refused);
    RL_RUN(test_invalid_utf8_in_enqueue_many_refused);
    RL_RUN(test_nul_in_json_refused_never_cut);
    RL_RUN(test_error_messages_escape_control_bytes);
}

static void test_redis_is_configured(void) {
    if (!rl_test_redis_url()) RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
}

int main(void) {
    RL_RUN(test_header_values_refused_where_set);
    RL_RUN(test_json_check_strings_paths);
    RL_RUN(test_escape_text);
    snprintf(store_url, sizeof(store_url), "memory");
    RL_RUN(test_http_entry_points_refuse_corrupt_text);
    run_all("memory");
    if (rl_test_redis_url()) {
        run_all(rl_test_redis_url());
    } else if (getenv("RUNLANE_REQUIRE_REDIS")) {
        RL_RUN(test_redis_is_configured);
    } else {
        fprintf(stderr, "RUNLANE_TEST_REDIS not set: Redis half not run\n");
    }
    return rl_test_summary();
}
