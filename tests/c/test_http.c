/* test_http.c - the backends' HTTP client against the OpenAI emulator:
 * retries (429 with Retry-After, 500, connection reset), what is not
 * retried, errors keeping the request id and never the API key, streams
 * and their idle timeout, extra headers and query parameters, and
 * rate.limit.rpm: the local bucket, the store's shared bucket (two clients
 * on one memory or Redis store stay within one budget), waiting without
 * blocking, and the fallback when the store fails. */
#include "rltest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rlemu.h"

#include "conf.h"
#include "http.h"
#include "ioloop.h"
#include "internal.h"
#include "runlane.h"
#include "sse.h"

static rlemu_t emu;
static int have_emu;

#define API_KEY "sk-runlane-test-KEY-4f9c2a7e1b"

typedef struct {
    int done;
    long status;
    int ok, retriable, ambiguous, streamed, attempts;
    runlane_err_t err;
    int64_t poll_after_ms;
    char *body;
    char *error;
    char *request_id;
    char *error_code;
    rl_buf_t stream;
} result_t;

static void on_done(void *opaque, const rl_http_result_t *res) {
    result_t *r = opaque;
    r->done = 1;
    r->status = res->status;
    r->ok = res->ok;
    r->err = res->err;
    r->retriable = res->retriable;
    r->ambiguous = res->ambiguous;
    r->streamed = res->streamed;
    r->attempts = res->attempts;
    r->poll_after_ms = res->poll_after_ms;
    r->body = strdup(res->body);
    r->error = strdup(res->error);
    r->request_id = strdup(res->request_id);
    r->error_code = strdup(res->error_code);
}

static int on_data(void *opaque, const char *data, size_t n) {
    result_t *r = opaque;
    rl_buf_append(&r->stream, data, n);
    return 0;
}

static void result_free(result_t *r) {
    free(r->body);
    free(r->error);
    free(r->request_id);
    free(r->error_code);
    rl_buf_free(&r->stream);
    memset(r, 0, sizeof(*r));
}

static runlane_conf_t *make_conf(const char *const *kv) {
    runlane_conf_t *c = runlane_conf_new();
    char err[256];
    runlane_conf_set(c, "openai.base.url", emu.base_url, err, sizeof(err));
    runlane_conf_set(c, "openai.api.key", API_KEY, err, sizeof(err));
    runlane_conf_set(c, "http.retry.base.ms", "20", err, sizeof(err));
    runlane_conf_set(c, "http.retry.max.ms", "100", err, sizeof(err));
    for (int i = 0; kv && kv[i]; i += 2)
        if (runlane_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)) != RUNLANE_OK) {
            fprintf(stderr, "conf %s: %s\n", kv[i], err);
            abort();
        }
    return c;
}

/* Every HTTP test runs twice: with the multi driven by curl_multi_perform
 * inside rl_http_drive (as rl_http_sync does), and through an ioloop (as
 * the worker does: curl acts on ready sockets in rl_ioloop_wait). */
static int use_loop;
static struct {
    CURLM *m;
    rl_ioloop_t *l;
} loops[4];

static rl_http_t *http_new(const runlane_conf_t *c, CURLM *m) {
    rl_http_t *h = rl_http_new(c, m);
    if (!h || !use_loop) return h;
    rl_ioloop_t *l = rl_ioloop_new(m);
    RL_CHECK(l != NULL);
    for (int i = 0; i < 4; i++)
        if (!loops[i].m) {
            loops[i].m = m;
            loops[i].l = l;
            break;
        }
    rl_http_use_loop(h, l);
    return h;
}

static void io_wait(CURLM *m, int64_t ms) {
    for (int i = 0; i < 4; i++)
        if (loops[i].m == m) {
            rl_ioloop_wait(loops[i].l, ms);
            return;
        }
    curl_multi_poll(m, NULL, 0, (int)ms, NULL);
}

static void multi_cleanup(CURLM *m) {
    for (int i = 0; i < 4; i++)
        if (loops[i].m == m) {
            rl_ioloop_destroy(loops[i].l);
            loops[i].m = NULL;
            loops[i].l = NULL;
        }
    curl_multi_cleanup(m);
}

/* Runs one request to its end; returns the elapsed ms. */
static int64_t run(const char *const *kv, const char *method, const char *path, const char *body,
                   int flags, result_t *out) {
    runlane_conf_t *c = make_conf(kv);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    if (!h) {
        fprintf(stderr, "rl_http_new: %s\n", runlane_error_message(runlane_error_last()));
        abort();
    }
    memset(out, 0, sizeof(*out));
    int64_t t0 = rl_mono_ms();
    rl_http_start(h, method, path, body, flags, (flags & RL_HTTP_STREAM) ? on_data : NULL,
                  on_done, out);
    while (!out->done && rl_mono_ms() - t0 < 60000) {
        int64_t wake = rl_http_drive(h);
        if (out->done) break;
        int64_t wait = wake == INT64_MAX ? 500 : wake - rl_mono_ms();
        if (wait > 500) wait = 500;
        if (wait < 0) wait = 0;
        io_wait(m, wait);
    }
    int64_t el = rl_mono_ms() - t0;
    rl_buf_puts(&out->stream, "");
    RL_CHECK_INT(0, rl_http_pending(h));
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
    return el;
}

static char *new_conversation(void) {
    char *id = rlemu_create(&emu, "/v1/conversations", NULL);
    if (!id) RL_FAILF("could not create a conversation in the emulator");
    return id;
}

static void need_emu(void) {
    if (!have_emu) RL_SKIP("python3 or tests/emulator/emulator.py not available");
    rlemu_control(&emu, "POST", "/_emulator/reset", "{}");
}

static void test_http_get_ok_with_request_id(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    result_t r;
    run(NULL, "GET", path, NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "expected success, got %s", r.error);
    RL_CHECK_INT(RUNLANE_OK, r.err);
    RL_CHECK_INT(200, r.status);
    RL_CHECK_INT(1, r.attempts);
    RL_CHECK(strstr(r.body, conv) != NULL);
    RL_CHECK(strncmp(r.request_id, "req_", 4) == 0);
    result_free(&r);
    free(conv);
}

static void test_http_429_retry_after_is_honoured(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256], vpath[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    snprintf(vpath, sizeof(vpath), "/v1/conversations/%s", conv);
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"retry_after_ms\":400}");
    rlemu_fault(&emu, "429", 2, "GET", vpath);
    result_t r;
    /* The backoff alone would be ~20-40 ms: the elapsed time proves the
     * server's 400 ms were waited, twice (within http.retry.max.ms). */
    static const char *const kv[] = {"http.retry.max.ms", "1000", NULL};
    int64_t el = run(kv, "GET", path, NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "expected success after two 429, got %s", r.error);
    RL_CHECK_INT(3, r.attempts);
    RL_CHECK_INT(3, rlemu_count(&emu, "GET", vpath));
    RL_CHECK_MSG(el >= 780, "expected >= 800 ms of Retry-After waits, took %lld ms", (long long)el);
    result_free(&r);
    free(conv);
}

/* A Retry-After past http.retry.max.ms is cut to it: a server asking for
 * hours must not park the request (and its batch's lease). */
static void test_http_retry_after_is_capped_by_retry_max(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256], vpath[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    snprintf(vpath, sizeof(vpath), "/v1/conversations/%s", conv);
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"retry_after_ms\":30000}");
    rlemu_fault(&emu, "429", 2, "GET", vpath);
    result_t r;
    int64_t el = run(NULL, "GET", path, NULL, 0, &r); /* http.retry.max.ms=100 */
    RL_CHECK_MSG(r.ok, "expected success after two 429, got %s", r.error);
    RL_CHECK_INT(3, r.attempts);
    RL_CHECK_MSG(el < 5000, "Retry-After 30 s should be capped at 100 ms, took %lld ms",
                 (long long)el);
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"retry_after_ms\":0}");
    result_free(&r);
    free(conv);
}

/* A body over http.max.body.bytes fails as a retriable provider error,
 * retried like a 5xx (a GET is safe), never read past the cap. */
static void test_http_body_over_cap_is_a_retriable_provider_error(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    static const char *const kv[] = {"http.max.body.bytes", "1024", "http.max.retries", "2", NULL};
    /* A listing of many items is far over 1 KiB. */
    char body[2048];
    memset(body, 'x', 1500);
    body[1500] = '\0';
    char post[2200];
    snprintf(post, sizeof(post),
             "{\"items\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"%s\"}]}", body);
    char ipath[300];
    snprintf(ipath, sizeof(ipath), "%s/items", path);
    result_t r;
    run(NULL, "POST", ipath, post, 0, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    result_free(&r);
    run(kv, "GET", ipath, NULL, 0, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, r.err);
    RL_CHECK(r.retriable);
    RL_CHECK_INT(3, r.attempts);
    RL_CHECK_MSG(strstr(r.error, "http.max.body.bytes") != NULL, "error: %s", r.error);
    result_free(&r);
    free(conv);
}

static void test_http_500_and_reset_are_retried(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256], vpath[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    snprintf(vpath, sizeof(vpath), "/v1/conversations/%s", conv);
    rlemu_fault(&emu, "500", 1, "GET", vpath);
    rlemu_fault(&emu, "reset", 1, "GET", vpath);
    result_t r;
    run(NULL, "GET", path, NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "expected success after a 500 and a reset, got %s", r.error);
    /* libcurl itself re-sends a GET whose reused connection was reset
     * before any answer, so the reset may cost no attempt of ours. */
    RL_CHECK(r.attempts >= 2);
    RL_CHECK_INT(3, rlemu_count(&emu, "GET", vpath));
    result_free(&r);
    free(conv);
}

static void test_http_retries_are_bounded(void) {
    need_emu();
    char *conv = new_conversation();
    char path[256], vpath[256];
    snprintf(path, sizeof(path), "/conversations/%s", conv);
    snprintf(vpath, sizeof(vpath), "/v1/conversations/%s", conv);
    rlemu_fault(&emu, "500", 10, "GET", vpath);
    const char *kv[] = {"http.max.retries", "2", NULL};
    result_t r;
    run(kv, "GET", path, NULL, 0, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(500, r.status);
    RL_CHECK_INT(3, r.attempts);
    RL_CHECK_INT(1, r.retriable);
    RL_CHECK_INT(3, rlemu_count(&emu, "GET", vpath));
    RL_CHECK_MSG(strstr(r.error, "HTTP 500") && strstr(r.error, "[request req_") &&
                     strstr(r.error, "(after 3 attempts)"),
                 "error lacks status, request id or attempts: %s", r.error);
    result_free(&r);
    free(conv);
}

static void test_http_unsafe_post_not_retried_on_500(void) {
    need_emu();
    rlemu_fault(&emu, "500", 1, "POST", "/v1/conversations");
    result_t r;
    run(NULL, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(1, r.attempts);
    RL_CHECK_INT(1, r.retriable);
    RL_CHECK_INT(1, r.ambiguous);
    result_free(&r);
    /* 429 means the server did not act: retried even when unsafe. */
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"retry_after_ms\":10}");
    rlemu_fault(&emu, "429", 1, "POST", "/v1/conversations");
    run(NULL, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, &r);
    RL_CHECK_MSG(r.ok, "expected success after a 429, got %s", r.error);
    RL_CHECK_INT(2, r.attempts);
    result_free(&r);
    /* A reset after sending is ambiguous for an unsafe request. */
    rlemu_fault(&emu, "reset", 1, "POST", "/v1/conversations");
    run(NULL, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(1, r.ambiguous);
    RL_CHECK_INT(0, (int)r.status);
    result_free(&r);
}

static void test_http_unsafe_never_resent_by_libcurl(void) {
    need_emu();
    /* Warm a keep-alive connection, then the server acts on a create and
     * cuts the connection before answering ("drop"): the create must
     * have been sent exactly once, and come back ambiguous. */
    result_t r;
    run(NULL, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, &r);
    result_free(&r);
    int before = rlemu_count(&emu, "POST", "/v1/conversations");
    rlemu_fault(&emu, "drop", 1, "POST", "/v1/conversations");
    runlane_conf_t *c = make_conf(NULL);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    result_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    rl_http_start(h, "GET", "/conversations/conv_warm", NULL, 0, NULL, on_done, &a);
    while (!a.done) {
        rl_http_drive(h);
        if (!a.done) io_wait(m, 100);
    }
    rl_http_start(h, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, NULL, on_done, &b);
    while (!b.done) {
        rl_http_drive(h);
        if (!b.done) io_wait(m, 100);
    }
    RL_CHECK(!b.ok);
    RL_CHECK_INT(1, b.ambiguous);
    RL_CHECK_INT(before + 1, rlemu_count(&emu, "POST", "/v1/conversations"));
    result_free(&a);
    result_free(&b);
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

static void test_http_4xx_not_retried_keeps_provider_error(void) {
    need_emu();
    result_t r;
    run(NULL, "GET", "/conversations/conv_missing", NULL, 0, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(404, r.status);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, r.err);
    RL_CHECK_INT(1, r.attempts);
    RL_CHECK_INT(0, r.retriable);
    RL_CHECK_MSG(strstr(r.error, "HTTP 404") && strstr(r.error, "conv_missing' not found") &&
                     strstr(r.error, "[request req_"),
                 "unexpected error: %s", r.error);
    RL_CHECK_INT(1, rlemu_count(&emu, "GET", "/v1/conversations/conv_missing"));
    result_free(&r);
}

static void test_http_network_error_is_retried_and_reported(void) {
    need_emu();
    /* A closed port: connection refused, never sent, retried, then a
     * network error without the key. */
    const char *kv[] = {"openai.base.url", "http://127.0.0.1:1/v1", "http.max.retries", "2", NULL};
    result_t r;
    run(kv, "POST", "/responses", "{}", RL_HTTP_UNSAFE, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(0, (int)r.status);
    RL_CHECK_INT(RUNLANE_ERR_HTTP, r.err);
    RL_CHECK_INT(3, r.attempts);
    RL_CHECK_INT(1, r.retriable);
    RL_CHECK_INT(0, r.ambiguous);
    RL_CHECK_MSG(strstr(r.error, "network error"), "unexpected error: %s", r.error);
    RL_CHECK(strstr(r.error, API_KEY) == NULL);
    result_free(&r);
}

static void test_http_api_key_never_in_errors(void) {
    need_emu();
    /* The emulator wants another key: a 401 whose message quotes (a masked
     * form of) the key we sent. */
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"api_key\":\"sk-the-right-one-000000\"}");
    result_t r;
    run(NULL, "GET", "/conversations/conv_x", NULL, 0, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(401, r.status);
    RL_CHECK(strstr(r.error, API_KEY) == NULL);
    RL_CHECK(strstr(r.error, "invalid_api_key") != NULL);
    result_free(&r);
    /* The request carried it as a Bearer token (the log redacts it). */
    cJSON *reqs = rlemu_requests(&emu, 1);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "headers");
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(h, "Authorization");
    RL_CHECK(cJSON_IsString(auth) && strcmp(auth->valuestring, "Bearer <redacted>") == 0);
    cJSON_Delete(reqs);
    /* Scrubbing replaces the key and the openai.headers values anywhere. */
    const char *kv[] = {"openai.headers", "{\"api-key\":\"azure-secret-value\"}", NULL};
    runlane_conf_t *c = make_conf(kv);
    CURLM *m = curl_multi_init();
    rl_http_t *hh = http_new(c, m);
    char *s = rl_http_scrub_dup(hh, "x " API_KEY " y azure-secret-value z" API_KEY);
    RL_CHECK_STR("x *** y *** z***", s);
    free(s);
    rl_http_destroy(hh);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

static void test_http_extra_headers_and_query(void) {
    need_emu();
    char *conv = new_conversation();
    /* Two items, listed with limit=1 from openai.query. */
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s/items", conv);
    rlemu_control(&emu, "POST", path,
                  "{\"items\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"a\"},"
                  "{\"type\":\"message\",\"role\":\"user\",\"content\":\"b\"}]}");
    const char *kv[] = {"openai.query", "{\"limit\":\"1\"}", "openai.headers",
                        "{\"X-Runlane-Test\":\"hello\"}", "openai.organization", "org-1",
                        "openai.project", "proj-2", NULL};
    result_t r;
    run(kv, "GET", path + 3, NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    cJSON *j = cJSON_Parse(r.body);
    RL_CHECK_INT(1, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "data")));
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "has_more")));
    cJSON_Delete(j);
    result_free(&r);
    cJSON *reqs = rlemu_requests(&emu, 1);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "headers");
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(h, "X-Runlane-Test");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(h, "OpenAI-Organization");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(h, "OpenAI-Project");
    RL_CHECK(cJSON_IsString(x) && strcmp(x->valuestring, "hello") == 0);
    RL_CHECK(cJSON_IsString(o) && strcmp(o->valuestring, "org-1") == 0);
    RL_CHECK(cJSON_IsString(p) && strcmp(p->valuestring, "proj-2") == 0);
    cJSON_Delete(reqs);
    free(conv);
}

typedef struct {
    rl_buf_t types;
    int deltas;
} sse_sink_t;

static int sink_event(void *opaque, const char *event, const char *data, size_t len,
                      const char *id) {
    (void)data;
    (void)len;
    (void)id;
    sse_sink_t *s = opaque;
    rl_buf_puts(&s->types, event);
    rl_buf_puts(&s->types, ",");
    if (strcmp(event, "response.output_text.delta") == 0) s->deltas++;
    return 0;
}

/* A streamed create of "hello" on conversation `conv`. */
static void stream_body(char *body, size_t size, const char *conv) {
    snprintf(body, size,
             "{\"model\":\"gpt-4o\",\"conversation\":\"%s\",\"stream\":true,"
             "\"input\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"hello\"}]}",
             conv);
}

static void test_http_stream_delivers_sse(void) {
    need_emu();
    char *conv = new_conversation();
    char body[512];
    stream_body(body, sizeof(body), conv);
    result_t r;
    run(NULL, "POST", "/responses", body, RL_HTTP_STREAM | RL_HTTP_UNSAFE, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    RL_CHECK_INT(1, r.streamed);
    result_free(&r);
    /* The same stream over http.stream.max.bytes fails as a retriable
     * provider error naming the key. */
    static const char *const kv[] = {"http.stream.max.bytes", "1024", NULL};
    run(kv, "POST", "/responses", body, RL_HTTP_STREAM | RL_HTTP_UNSAFE, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, r.err);
    RL_CHECK(r.retriable);
    RL_CHECK_MSG(strstr(r.error, "http.stream.max.bytes") != NULL, "error: %s", r.error);
    RL_CHECK((size_t)r.stream.len <= 1024);
    result_free(&r);
    /* On a new conversation: the cut response may still run on the server,
     * which keeps its conversation locked meanwhile (conversation_locked,
     * seen under ASan). */
    free(conv);
    conv = new_conversation();
    stream_body(body, sizeof(body), conv);
    run(NULL, "POST", "/responses", body, RL_HTTP_STREAM | RL_HTTP_UNSAFE, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    sse_sink_t s;
    memset(&s, 0, sizeof(s));
    rl_sse_t p;
    rl_sse_init(&p, sink_event, &s);
    rl_sse_feed(&p, r.stream.data, r.stream.len);
    rl_sse_free(&p);
    rl_buf_puts(&s.types, "");
    RL_CHECK_MSG(strncmp(s.types.data, "response.created,response.in_progress,", 38) == 0,
                 "events: %s", s.types.data);
    RL_CHECK_MSG(strstr(s.types.data, "response.completed,") != NULL, "events: %s",
                 s.types.data);
    RL_CHECK(s.deltas >= 2);
    rl_buf_free(&s.types);
    result_free(&r);
    free(conv);
}

static void test_http_stream_idle_timeout(void) {
    need_emu();
    char *conv = new_conversation();
    char body[512];
    snprintf(body, sizeof(body),
             "{\"model\":\"gpt-4o\",\"conversation\":\"%s\",\"stream\":true,"
             "\"input\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"[[slow:3000]]\"}]}",
             conv);
    const char *kv[] = {"http.stream.idle.timeout.ms", "400", NULL};
    result_t r;
    int64_t el = run(kv, "POST", "/responses", body, RL_HTTP_STREAM | RL_HTTP_UNSAFE, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(1, r.streamed);
    RL_CHECK_INT(1, r.ambiguous);
    RL_CHECK_INT(RUNLANE_ERR_HTTP, r.err);
    RL_CHECK_INT(1, r.attempts);
    RL_CHECK_MSG(strstr(r.error, "sent nothing for 400 ms"), "unexpected error: %s", r.error);
    RL_CHECK_MSG(el < 2500, "idle timeout took %lld ms", (long long)el);
    result_free(&r);
    free(conv);
}

static void test_http_poll_after_header(void) {
    need_emu();
    rlemu_control(&emu, "POST", "/_emulator/config", "{\"latency_ms\":2000,\"poll_after_ms\":123}");
    result_t r;
    static const char *const kv[] = {"http.retry.max.ms", "1000", NULL};
    run(NULL, "POST", "/responses",
        "{\"model\":\"gpt-4o\",\"background\":true,\"input\":\"hi\"}", RL_HTTP_UNSAFE, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    cJSON *j = cJSON_Parse(r.body);
    char path[256];
    snprintf(path, sizeof(path), "/responses/%s",
             cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring);
    cJSON_Delete(j);
    result_free(&r);
    run(kv, "GET", path, NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "%s", r.error);
    RL_CHECK_INT(123, r.poll_after_ms);
    result_free(&r);
    /* A poll hint is a server-asked wait too: capped by http.retry.max.ms. */
    run(NULL, "GET", path, NULL, 0, &r);
    RL_CHECK_INT(100, r.poll_after_ms);
    result_free(&r);
}

static void test_http_sync_request(void) {
    need_emu();
    runlane_conf_t *c = make_conf(NULL);
    long status = 0;
    char *body = NULL;
    RL_CHECK_OK(rl_http_sync(&status, &body, c, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, NULL));
    RL_CHECK_INT(200, status);
    RL_CHECK(body && strstr(body, "\"conv_") != NULL);
    free(body);
    runlane_err_t rc = rl_http_sync(&status, &body, c, "GET", "/conversations/conv_nope", NULL, 0, NULL);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, rc);
    RL_CHECK_INT(404, status);
    RL_CHECK(strstr(runlane_error_message(runlane_error_last()), "not found") != NULL);
    free(body);
    runlane_conf_destroy(c);
}

/* ---- a canned server: answers every connection with `reply` ---- */

typedef struct canned {
    int fd, port, served;
    const char *reply;
    size_t len;
    pthread_t th;
} canned_t;

static void *canned_main(void *arg) {
    canned_t *c = arg;
    for (;;) {
        int cfd = accept(c->fd, NULL, NULL);
        if (cfd < 0) return NULL;
        char req[8192];
        ssize_t got = 0, r;
        /* Read the request head (the tests send no body). */
        while (got < (ssize_t)sizeof(req) - 1 && (r = recv(cfd, req + got, sizeof(req) - 1 - (size_t)got, 0)) > 0) {
            got += r;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n")) break;
        }
        __atomic_add_fetch(&c->served, 1, __ATOMIC_SEQ_CST);
        size_t off = 0;
        while (off < c->len && (r = send(cfd, c->reply + off, c->len - off, MSG_NOSIGNAL)) > 0)
            off += (size_t)r;
        close(cfd);
    }
}

static void canned_start(canned_t *c, const char *reply, size_t len) {
    memset(c, 0, sizeof(*c));
    c->reply = reply;
    c->len = len;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(c->fd, (struct sockaddr *)&a, sizeof(a)) || listen(c->fd, 8) ||
        getsockname(c->fd, (struct sockaddr *)&a, &al))
        abort();
    c->port = ntohs(a.sin_port);
    pthread_create(&c->th, NULL, canned_main, c);
}

static void canned_stop(canned_t *c) {
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
    pthread_join(c->th, NULL);
}

/* Headers over http.max.header.bytes fail as a retriable provider error
 * naming the key (retried: a GET is safe); headers under it are fine. */
static void test_http_headers_over_cap_fail(void) {
    need_emu();
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n");
    for (int i = 0; i < 40; i++) {
        rl_buf_printf(&b, "X-Pad-%d: ", i);
        for (int k = 0; k < 100; k++) rl_buf_puts(&b, "p");
        rl_buf_puts(&b, "\r\n");
    }
    rl_buf_puts(&b, "\r\n{}");
    canned_t c;
    canned_start(&c, b.data, b.len);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", c.port);
    const char *small[] = {"openai.base.url", url, "http.max.header.bytes", "2048",
                           "http.max.retries", "1", NULL};
    result_t r;
    run(small, "GET", "/responses/resp_1", NULL, 0, &r);
    RL_CHECK(!r.ok);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, r.err);
    RL_CHECK(r.retriable);
    RL_CHECK_INT(2, r.attempts);
    RL_CHECK_MSG(strstr(r.error, "http.max.header.bytes") != NULL, "error: %s", r.error);
    result_free(&r);
    const char *big[] = {"openai.base.url", url, "http.max.header.bytes", "8192", NULL};
    run(big, "GET", "/responses/resp_1", NULL, 0, &r);
    RL_CHECK_MSG(r.ok, "4 KiB of headers under an 8 KiB cap: %s", r.error);
    result_free(&r);
    canned_stop(&c);
    rl_buf_free(&b);
}

static void test_http_backoff_bounds(void) {
    runlane_conf_t *c = runlane_conf_new();
    char err[128];
    runlane_conf_set(c, "http.retry.base.ms", "100", err, sizeof(err));
    runlane_conf_set(c, "http.retry.max.ms", "1000", err, sizeof(err));
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    for (int i = 0; i < 200; i++) {
        int64_t d1 = rl_http_backoff_ms(h, 1, -1), d3 = rl_http_backoff_ms(h, 3, -1);
        int64_t d9 = rl_http_backoff_ms(h, 9, -1);
        RL_CHECK(d1 >= 75 && d1 <= 100);
        RL_CHECK(d3 >= 300 && d3 <= 400);
        RL_CHECK(d9 >= 750 && d9 <= 1000);
    }
    /* The server's ask wins below the cap and is cut to it above. */
    RL_CHECK_INT(700, rl_http_backoff_ms(h, 1, 700));
    RL_CHECK_INT(1000, rl_http_backoff_ms(h, 1, 5000));
    RL_CHECK_INT(1000, rl_http_backoff_ms(h, 1, 999999000));
    RL_CHECK_INT(0, rl_http_backoff_ms(h, 4, 0));
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

static void test_http_retry_after_formats(void) {
    RL_CHECK_INT(3000, rl_http_parse_delay_ms("3", 1, 1));
    RL_CHECK_INT(1500, rl_http_parse_delay_ms("1.5", 3, 1));
    RL_CHECK_INT(250, rl_http_parse_delay_ms("250", 3, 0));
    RL_CHECK_INT(-1, rl_http_parse_delay_ms("soon", 4, 1));
    RL_CHECK_INT(-1, rl_http_parse_delay_ms("-2", 2, 0));
    RL_CHECK_INT(0, rl_http_parse_delay_ms("Wed, 21 Oct 2015 07:28:00 GMT", 29, 1));
    char date[64];
    time_t future = time(NULL) + 30;
    struct tm tmv;
    gmtime_r(&future, &tmv);
    size_t n = strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tmv);
    int64_t ms = rl_http_parse_delay_ms(date, n, 1);
    RL_CHECK_MSG(ms > 27000 && ms <= 30000, "an HTTP date 30 s ahead gave %lld ms", (long long)ms);
}

static void test_http_rate_limit_spaces_requests(void) {
    need_emu();
    /* 120 per minute: a burst of 2, then one every 500 ms. */
    const char *kv[] = {"rate.limit.rpm", "120", NULL};
    runlane_conf_t *c = make_conf(kv);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    result_t r[4];
    memset(r, 0, sizeof(r));
    int64_t t0 = rl_mono_ms();
    for (int i = 0; i < 4; i++)
        rl_http_start(h, "GET", "/conversations/conv_rl", NULL, 0, NULL, on_done, &r[i]);
    while (!(r[0].done && r[1].done && r[2].done && r[3].done) && rl_mono_ms() - t0 < 10000) {
        int64_t wake = rl_http_drive(h);
        int64_t wait = wake == INT64_MAX ? 200 : wake - rl_mono_ms();
        if (wait > 200) wait = 200;
        if (wait < 0) wait = 0;
        io_wait(m, wait);
    }
    int64_t el = rl_mono_ms() - t0;
    RL_CHECK(r[3].done);
    RL_CHECK_MSG(el >= 900 && el < 3000, "4 requests at 120 rpm took %lld ms", (long long)el);
    for (int i = 0; i < 4; i++) result_free(&r[i]);
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

/* ---- rate.limit.rpm: the shared bucket of the store ---- */

/* The seq of the emulator's newest logged request (0 when none). */
static int last_seq(void) {
    cJSON *reqs = rlemu_requests(&emu, 1);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "seq");
    int n = cJSON_IsNumber(seq) ? seq->valueint : 0;
    cJSON_Delete(reqs);
    return n;
}

/* Requests the emulator logged after seq0 whose path starts with `path`. */
static int count_since(int seq0, const char *path) {
    cJSON *reqs = rlemu_requests(&emu, 2000);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(r, "seq");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "path");
        if (cJSON_IsNumber(seq) && seq->valueint > seq0 && cJSON_IsString(p) &&
            strncmp(p->valuestring, path, strlen(path)) == 0)
            n++;
    }
    cJSON_Delete(reqs);
    return n;
}

static rl_store_t *open_store(const char *url, const char *prefix) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.prefix = prefix;
    o.partitions = 1;
    o.connect_timeout_ms = 2000;
    o.command_timeout_ms = 2000;
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK_MSG(st != NULL, "opening %s: %s", url, runlane_error_message(runlane_error_last()));
    return st;
}

#define SHARED_N 10 /* requests per client */

/* Two clients (each with its own multi and its own handle on the store, as
 * two processes would have) fire SHARED_N requests each at rpm=120: over a
 * window of ~2.5 s the emulator must see at most burst (2) + what refills
 * + 1 of them, together; with a bucket each they would send twice that. */
static void shared_budget(const char *url, const char *prefix) {
    const char *kv[] = {"rate.limit.rpm", "120", NULL};
    runlane_conf_t *c = make_conf(kv);
    CURLM *m[2];
    rl_http_t *h[2];
    rl_store_t *st[2];
    for (int i = 0; i < 2; i++) {
        m[i] = curl_multi_init();
        h[i] = http_new(c, m[i]);
        st[i] = open_store(url, prefix);
        rl_http_rate_t rate = {st[i], NULL, NULL, NULL};
        rl_http_set_rate(h[i], &rate);
    }
    static result_t r[2][SHARED_N];
    memset(r, 0, sizeof(r));
    int seq0 = last_seq();
    int64_t t0 = rl_mono_ms();
    for (int k = 0; k < SHARED_N; k++)
        for (int i = 0; i < 2; i++)
            rl_http_start(h[i], "GET", "/conversations/conv_shared", NULL, 0, NULL, on_done,
                          &r[i][k]);
    while (rl_mono_ms() - t0 < 2500) {
        int64_t wake = INT64_MAX;
        for (int i = 0; i < 2; i++) {
            int64_t w = rl_http_drive(h[i]);
            if (w < wake) wake = w;
        }
        int64_t wait = wake == INT64_MAX ? 50 : wake - rl_mono_ms();
        if (wait > 50) wait = 50; /* both multis need attention */
        if (wait < 0) wait = 0;
        io_wait(m[0], wait / 2);
        io_wait(m[1], wait / 2);
    }
    int sent = count_since(seq0, "/v1/conversations/conv_shared");
    int64_t el = rl_mono_ms() - t0;
    int most = 2 + (int)(el * 120 / 60000) + 1;
    int done[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < SHARED_N; k++) done[i] += r[i][k].done;
    for (int i = 0; i < 2; i++) {
        rl_http_destroy(h[i]); /* cancels what is still queued */
        multi_cleanup(m[i]);
        st[i]->ops->destroy(st[i]);
        for (int k = 0; k < SHARED_N; k++) result_free(&r[i][k]);
    }
    runlane_conf_destroy(c);
    RL_CHECK_MSG(sent <= most, "%s: %d requests in %lld ms at rpm=120 from two clients (at most %d)",
                 url, sent, (long long)el, most);
    RL_CHECK_MSG(sent >= 3, "%s: only %d requests in %lld ms", url, sent, (long long)el);
    RL_CHECK_MSG(done[0] + done[1] <= sent, "%d done, %d sent", done[0] + done[1], sent);
}

static void test_http_rate_limit_shared_memory_store(void) {
    need_emu();
    char url[64];
    snprintf(url, sizeof(url), "memory://http-rate-%d", (int)getpid());
    shared_budget(url, NULL);
}

static void test_http_rate_limit_shared_redis_store(void) {
    const char *url = rl_test_redis_url();
    if (!url) {
        const char *req = getenv("RUNLANE_REQUIRE_REDIS");
        if (req && strcmp(req, "1") == 0)
            RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
        RL_SKIP("RUNLANE_TEST_REDIS not set");
    }
    need_emu();
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "rltest-http-%d-%lld", (int)getpid(), (long long)rl_now_ms());
    shared_budget(url, prefix); /* the bucket's key expires by itself */
}

/* A store that fails on demand (only rate_take is ever called). */
typedef struct {
    rl_store_t base;
    int down, calls;
} fake_store_t;

static int fake_rate_take(rl_store_t *st, int64_t rpm, int64_t *wait_ms_out) {
    (void)rpm;
    fake_store_t *f = (fake_store_t *)st;
    f->calls++;
    *wait_ms_out = 0;
    if (f->down) return rl_error_set(RUNLANE_ERR_STORE, 1, "fake store: connection refused");
    return RUNLANE_OK;
}

static const rl_store_ops_t fake_ops = {.name = "fake", .rate_take = fake_rate_take};

typedef struct {
    int downs, ups;
    char msg[256];
} notes_t;

static void note(void *opaque, int down, const char *msg) {
    notes_t *n = opaque;
    if (down) {
        n->downs++;
        snprintf(n->msg, sizeof(n->msg), "%s", msg);
    } else {
        n->ups++;
    }
}

/* Drives h until every result of r[0..n) is done (at most 10 s). */
static int64_t drive_all(rl_http_t *h, CURLM *m, result_t *r, int n) {
    int64_t t0 = rl_mono_ms();
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++) all = all && r[i].done;
        if (all || rl_mono_ms() - t0 > 10000) break;
        int64_t wake = rl_http_drive(h);
        int64_t wait = wake == INT64_MAX ? 100 : wake - rl_mono_ms();
        if (wait > 100) wait = 100;
        if (wait < 0) wait = 0;
        io_wait(m, wait);
    }
    return rl_mono_ms() - t0;
}

/* The store fails: requests go on under the client's own bucket (not
 * stalled), the hook hears of it once, and of the store's return. */
static void test_http_rate_limit_store_down_falls_back(void) {
    need_emu();
    const char *kv[] = {"rate.limit.rpm", "120", NULL};
    runlane_conf_t *c = make_conf(kv);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    fake_store_t fake;
    memset(&fake, 0, sizeof(fake));
    fake.base.ops = &fake_ops;
    fake.down = 1;
    notes_t notes;
    memset(&notes, 0, sizeof(notes));
    rl_http_rate_t rate = {&fake.base, NULL, note, &notes};
    rl_http_set_rate(h, &rate);
    result_t r[3];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 3; i++)
        rl_http_start(h, "GET", "/conversations/conv_fb", NULL, 0, NULL, on_done, &r[i]);
    int64_t el = drive_all(h, m, r, 3);
    for (int i = 0; i < 3; i++) RL_CHECK(r[i].done);
    /* the local bucket: a burst of 2, the third 500 ms later */
    RL_CHECK_MSG(el < 3000, "3 requests with the store down took %lld ms", (long long)el);
    RL_CHECK_INT(1, notes.downs);
    RL_CHECK_INT(0, notes.ups);
    RL_CHECK_MSG(strstr(notes.msg, "connection refused") != NULL, "note: %s", notes.msg);
    int calls = fake.calls;
    RL_CHECK_MSG(calls >= 1 && calls <= 3, "store asked %d times", calls);
    for (int i = 0; i < 3; i++) result_free(&r[i]);
    /* back: asked again after RL_HTTP_RATE_STORE_RETRY_MS */
    fake.down = 0;
    usleep((RL_HTTP_RATE_STORE_RETRY_MS + 100) * 1000);
    rl_http_start(h, "GET", "/conversations/conv_fb", NULL, 0, NULL, on_done, &r[0]);
    drive_all(h, m, r, 1);
    RL_CHECK(r[0].done);
    RL_CHECK_MSG(fake.calls > calls, "the store was not asked again");
    RL_CHECK_INT(1, notes.ups);
    RL_CHECK_INT(1, notes.downs);
    result_free(&r[0]);
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

/* The shared bucket says wait: the request waits without blocking the
 * caller (rl_http_drive returns at once, with the time to come back). */
static void test_http_rate_limit_waits_without_blocking(void) {
    need_emu();
    char url[64];
    snprintf(url, sizeof(url), "memory://http-rate-wait-%d", (int)getpid());
    const char *kv[] = {"rate.limit.rpm", "60", NULL}; /* burst 1, then one a second */
    runlane_conf_t *c = make_conf(kv);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    rl_store_t *st = open_store(url, NULL);
    rl_http_rate_t rate = {st, NULL, NULL, NULL};
    rl_http_set_rate(h, &rate);
    result_t r[2];
    memset(r, 0, sizeof(r));
    int64_t t0 = rl_mono_ms();
    rl_http_start(h, "GET", "/conversations/conv_w", NULL, 0, NULL, on_done, &r[0]);
    rl_http_start(h, "GET", "/conversations/conv_w", NULL, 0, NULL, on_done, &r[1]);
    int64_t d0 = rl_mono_ms();
    int64_t wake = rl_http_drive(h);
    int64_t d1 = rl_mono_ms();
    RL_CHECK_MSG(d1 - d0 < 300, "a drive took %lld ms", (long long)(d1 - d0));
    RL_CHECK_MSG(wake != INT64_MAX && wake - d1 > 500, "the drive wants to be back in %lld ms",
                 (long long)(wake - d1));
    drive_all(h, m, r, 2);
    RL_CHECK(r[0].done && r[1].done);
    int64_t el = rl_mono_ms() - t0;
    RL_CHECK_MSG(el >= 900, "the second request came after %lld ms (one a second)", (long long)el);
    for (int i = 0; i < 2; i++) result_free(&r[i]);
    rl_http_destroy(h);
    multi_cleanup(m);
    st->ops->destroy(st);
    runlane_conf_destroy(c);
}

/* The send gate: asked right before each attempt goes out, with the
 * connection up; "no" stops the attempt unsent (not ambiguous, not
 * retried), "yes" sends it. */
static int gate_calls;
static int gate_no(void *opaque) {
    (void)opaque;
    gate_calls++;
    return 0;
}
static int gate_yes(void *opaque) {
    (void)opaque;
    gate_calls++;
    return 1;
}

static void test_http_send_gate(void) {
    need_emu();
    runlane_conf_t *c = make_conf(NULL);
    CURLM *m = curl_multi_init();
    rl_http_t *h = http_new(c, m);
    for (int pass = 0; pass < 2; pass++) {
        int before = rlemu_count(&emu, "POST", "/v1/conversations");
        result_t r;
        memset(&r, 0, sizeof(r));
        gate_calls = 0;
        rl_http_req_t *q = rl_http_start(h, "POST", "/conversations", "{}", RL_HTTP_UNSAFE, NULL,
                                         on_done, &r);
        RL_CHECK(q != NULL);
        if (!rl_http_set_gate(q, pass == 0 ? gate_no : gate_yes)) {
            fprintf(stderr, "libcurl < 7.80: no send gate\n");
            result_free(&r);
            break;
        }
        int64_t t0 = rl_mono_ms();
        while (!r.done && rl_mono_ms() - t0 < 10000) {
            rl_http_drive(h);
            if (!r.done) io_wait(m, 50);
        }
        RL_CHECK_INT(1, r.done);
        RL_CHECK_INT(1, gate_calls);
        if (pass == 0) {
            RL_CHECK_INT(0, r.ok);
            RL_CHECK_INT(0, r.ambiguous);
            RL_CHECK_INT(1, r.attempts);
            RL_CHECK(r.error && strstr(r.error, "not sent") != NULL);
            RL_CHECK_INT(before, rlemu_count(&emu, "POST", "/v1/conversations"));
        } else {
            RL_CHECK_INT(1, r.ok);
            RL_CHECK_INT(before + 1, rlemu_count(&emu, "POST", "/v1/conversations"));
        }
        result_free(&r);
    }
    RL_CHECK_INT(0, rl_http_pending(h));
    rl_http_destroy(h);
    multi_cleanup(m);
    runlane_conf_destroy(c);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    have_emu = rlemu_start(&emu, NULL) == 0;
    if (!have_emu) fprintf(stderr, "emulator not available: HTTP tests are skipped\n");
    RL_RUN(test_http_backoff_bounds);
    RL_RUN(test_http_retry_after_formats);
    RL_RUN(test_http_rate_limit_spaces_requests);
    for (use_loop = 0; use_loop <= 1; use_loop++) {
        fprintf(stderr, "== HTTP driven by %s\n", use_loop ? "an ioloop (socket actions)" : "curl_multi_perform");
        RL_RUN(test_http_get_ok_with_request_id);
        RL_RUN(test_http_429_retry_after_is_honoured);
        RL_RUN(test_http_500_and_reset_are_retried);
        RL_RUN(test_http_retries_are_bounded);
        RL_RUN(test_http_unsafe_post_not_retried_on_500);
        RL_RUN(test_http_unsafe_never_resent_by_libcurl);
        RL_RUN(test_http_send_gate);
        RL_RUN(test_http_4xx_not_retried_keeps_provider_error);
        RL_RUN(test_http_network_error_is_retried_and_reported);
        RL_RUN(test_http_api_key_never_in_errors);
        RL_RUN(test_http_extra_headers_and_query);
        RL_RUN(test_http_stream_delivers_sse);
        RL_RUN(test_http_stream_idle_timeout);
        RL_RUN(test_http_poll_after_header);
        RL_RUN(test_http_retry_after_is_capped_by_retry_max);
        RL_RUN(test_http_body_over_cap_is_a_retriable_provider_error);
        RL_RUN(test_http_headers_over_cap_fail);
        RL_RUN(test_http_sync_request);
        RL_RUN(test_http_rate_limit_shared_memory_store);
        RL_RUN(test_http_rate_limit_shared_redis_store);
        RL_RUN(test_http_rate_limit_store_down_falls_back);
        RL_RUN(test_http_rate_limit_waits_without_blocking);
    }
    if (have_emu) rlemu_stop(&emu);
    curl_global_cleanup();
    return rl_test_summary();
}
