/* fuzz_provider.c - the readers of provider responses: the HTTP client's
 * status/header/error-body handling (http.c), the SSE payloads and JSON
 * bodies read by the `responses` and `assistants` backends
 * (backend_responses.c, backend_assistants.c, backend_common.c).
 *
 * Those readers are static functions called from the backends' request
 * callbacks, so this target drives them through the highest entry point
 * that reaches all of them: a whole turn through the public API (memory
 * store, runlane_start) against a scripted OpenAI stand-in on 127.0.0.1
 * that answers each request with the next response of the input.
 *
 * Input: [flags] then responses separated by "\n=====\n", each:
 *     STATUS KIND\n          e.g. "200 json", "200 sse", "400 json";
 *                            status 0: close without answering
 *     Header: value\n ...    extra response headers (any number)
 *     \n
 *     body
 *   flags: bit 0 backend (responses/assistants), bit 1 openai.stream,
 *   bit 2 input mode joined, bit 3 tool timeout action cancel, bits 4-5
 *   messages in the batch - 1 (1..3, capped), bit 6 http.max.retries 1,
 *   bit 7 answer TOOL_CALLS (else let tool.timeout.ms pass).
 *   Once the script is used up every request gets a 400 error.
 *   An input may end with "\n=====outputs\n" and any bytes: what the host
 *   submits for every TOOL_CALLS event (runlane_submit_tool_outputs, as a C
 *   string), instead of well-formed outputs; "$ID" in it becomes the first
 *   tool call's id, so mutations reach both known and unknown ids.
 * Invariants (besides no crash, leak or undefined behaviour):
 *   - every event is valid JSON, of our conversation, and never contains
 *     the API key (responses may echo it: it must be scrubbed), nor does
 *     any event error message;
 *   - every request line is well-formed: the ids read from responses that
 *     go into paths are escaped (no space, control or non-ASCII byte);
 *   - every request body is valid UTF-8 and JSON (host-submitted tool
 *     outputs included: the provider refuses anything else);
 *   - runlane_submit_tool_outputs answers OK, INVALID_ARG or NOT_FOUND;
 *   - the turn ends: COMPLETED or DEAD (max.attempts 1), or nothing left
 *     in flight, soon after the script is used up;
 *   - an attempt sends at most http.max.requests.per.attempt requests.
 *   An input of odd length runs with the smallest limits on what the peer
 *   sends (body, headers, stream, SSE line and event: 1024 bytes each), so
 *   the limits' error paths are fuzzed too. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "http.h"
#include "internal.h"
#include "runlane.h"

#define API_KEY "sk-fuzz-SECRET-4f1c9a77e2b0d35"
#define DELIM "\n=====\n"
#define OUTPUTS_DELIM "\n=====outputs\n"
#define MAX_RESP 64

typedef struct resp {
    const char *p; /* points into the input (valid during the iteration) */
    size_t n;
} resp_t;

static struct {
    pthread_mutex_t mu;
    int port;
    resp_t script[MAX_RESP];
    int nscript, next;   /* next response to serve */
    int extra;           /* requests answered after the script */
    int64_t last_ms;     /* last request served */
    char bad_request[512]; /* a malformed request line seen, if any */
    char bad_body[512];    /* a request body that is not UTF-8 JSON, if any */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

static char *raw_outputs; /* the input's outputs section (NUL-terminated), or NULL */

static int verbose = -1; /* RUNLANE_FUZZ_VERBOSE: print requests and events */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one request (headers and Content-Length body). 0 when the
 * connection closed or stalled first. */
static int read_request(int fd, char *buf, size_t cap, size_t *len_out) {
    size_t len = 0, need = 0;
    char *hend = NULL;
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 500) <= 0) return 0;
        if (len + 1 >= cap) return 0;
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0) return 0;
        len += (size_t)r;
        buf[len] = '\0';
        if (!hend && (hend = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            need = (size_t)(hend - buf) + 4 + (cl && cl < hend ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (hend && len >= need) break;
    }
    *len_out = len;
    return 1;
}

static void check_request_line(const char *buf) {
    const char *sp1 = strchr(buf, ' ');
    const char *eol = strstr(buf, "\r\n");
    const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    int ok = sp1 && sp2 && eol && sp2 < eol && strncmp(sp2, " HTTP/1.1\r\n", 11) == 0;
    for (const char *p = sp1 ? sp1 + 1 : buf; ok && p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7F) ok = 0;
    if (!ok && !srv.bad_request[0]) {
        size_t n = eol ? (size_t)(eol - buf) : strlen(buf);
        snprintf(srv.bad_request, sizeof(srv.bad_request), "%.*s", (int)(n > 400 ? 400 : n), buf);
    }
}

/* The body of a request, when it has one, is valid UTF-8 JSON. */
static void check_request_body(const char *buf, size_t len) {
    const char *hend = strstr(buf, "\r\n\r\n");
    if (!hend) return;
    const char *body = hend + 4;
    size_t n = len - (size_t)(body - buf);
    if (n == 0) return;
    cJSON *j = cJSON_ParseWithLength(body, n);
    int ok = j != NULL && rl_utf8_valid(body, n);
    cJSON_Delete(j);
    if (!ok && !srv.bad_body[0])
        snprintf(srv.bad_body, sizeof(srv.bad_body), "%.*s", (int)(n > 400 ? 400 : n), body);
}

static void serve(int fd) {
    static char req[1 << 20];
    size_t len;
    if (!read_request(fd, req, sizeof(req), &len)) return;
    pthread_mutex_lock(&srv.mu);
    check_request_line(req);
    check_request_body(req, len);
    /* Copied under the lock: the input is freed when the iteration ends. */
    static char copy[1 << 16];
    resp_t r = {NULL, 0};
    if (srv.next < srv.nscript) {
        r = srv.script[srv.next++];
        if (r.n > sizeof(copy)) r.n = sizeof(copy);
        memcpy(copy, r.p, r.n);
        r.p = copy;
    } else {
        srv.extra++;
    }
    srv.last_ms = now_ms();
    pthread_mutex_unlock(&srv.mu);
    if (verbose > 0) {
        const char *eol = strstr(req, "\r\n");
        fprintf(stderr, "  request %.*s -> %.*s\n", eol ? (int)(eol - req) : 80, req,
                r.p ? (int)strcspn(r.p, "\n") : 13, r.p ? r.p : "(script end)");
    }
    if (!r.p) {
        static const char body[] =
            "{\"error\":{\"message\":\"fuzz script used up\",\"type\":\"invalid_request_error\","
            "\"code\":\"script_end\"}}";
        char head[256];
        int hn = snprintf(head, sizeof(head),
                          "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          sizeof(body) - 1);
        send_all(fd, head, (size_t)hn);
        send_all(fd, body, sizeof(body) - 1);
        return;
    }
    /* STATUS KIND line, header lines, blank line, body. */
    const char *p = r.p, *end = r.p + r.n;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = nl ? nl : end;
    int status = atoi(p);
    int sse = memmem(p, (size_t)(line_end - p), "sse", 3) != NULL;
    p = nl ? nl + 1 : end;
    if (status <= 0 || status > 999) return; /* close without an answer */
    static char head[65536];
    size_t hn = (size_t)snprintf(head, sizeof(head), "HTTP/1.1 %d Fuzz\r\nContent-Type: %s\r\nConnection: close\r\n",
                                 status, sse ? "text/event-stream" : "application/json");
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        line_end = nl ? nl : end;
        size_t ln = (size_t)(line_end - p);
        if (ln && p[ln - 1] == '\r') ln--;
        if (ln == 0) {
            p = nl ? nl + 1 : end;
            break;
        }
        if (hn + ln + 2 < sizeof(head) - 64) {
            memcpy(head + hn, p, ln);
            hn += ln;
            memcpy(head + hn, "\r\n", 2);
            hn += 2;
        }
        p = nl ? nl + 1 : end;
    }
    size_t blen = (size_t)(end - p);
    if (!sse) hn += (size_t)snprintf(head + hn, sizeof(head) - hn, "Content-Length: %zu\r\n", blen);
    memcpy(head + hn, "\r\n", 2);
    hn += 2;
    send_all(fd, head, hn);
    if (!sse) {
        send_all(fd, p, blen);
        return;
    }
    /* A stream: one write per event, so the client sees it in pieces. */
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        size_t k = e ? (size_t)(e - p) + 2 : (size_t)(end - p);
        send_all(fd, p, k);
        p += k;
        usleep(50);
    }
}

static void *server_main(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            usleep(1000);
            continue;
        }
        serve(fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (srv.port) return 0;
    signal(SIGPIPE, SIG_IGN);
    /* Never through a proxy: the stand-in is on loopback. */
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 64) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0) {
        fprintf(stderr, "fuzz_provider: cannot listen on 127.0.0.1\n");
        abort();
    }
    srv.port = ntohs(a.sin_port);
    verbose = getenv("RUNLANE_FUZZ_VERBOSE") != NULL;
    pthread_t th;
    pthread_create(&th, NULL, server_main, (void *)(intptr_t)lfd);
    pthread_detach(th);
    return 0;
}

static void check_event(runlane_event_t *ev, const char *conv) {
    const char *json = runlane_event_json(ev);
    const char *msg = runlane_event_error_message(ev);
    if (verbose < 0) verbose = getenv("RUNLANE_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "  event %s %s %s\n", runlane_event_type_name(runlane_event_type(ev)), json,
                msg);
    cJSON *j = cJSON_Parse(json);
    FZ_CHECK(j != NULL, "event %s is not JSON: %s", runlane_event_type_name(runlane_event_type(ev)),
             json);
    cJSON_Delete(j);
    FZ_CHECK(!strstr(json, API_KEY), "the API key shows in a %s event: %s",
             runlane_event_type_name(runlane_event_type(ev)), json);
    FZ_CHECK(!strstr(msg, API_KEY), "the API key shows in a %s event's error: %s",
             runlane_event_type_name(runlane_event_type(ev)), msg);
    const char *c = runlane_event_conversation_id(ev);
    FZ_CHECK(!*c || strcmp(c, conv) == 0, "event of conversation \"%s\", expected \"%s\"", c, conv);
}

/* Submits the input's raw outputs section, "$ID" replaced by the first
 * call's id. */
static void answer_tools_raw(runlane_t *rl, runlane_event_t *ev) {
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "tool_calls"), 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(c0, "id");
    const char *idv = cJSON_IsString(id) ? id->valuestring : "";
    size_t cap = strlen(raw_outputs) * (strlen(idv) + 1) + 1, o = 0;
    char *s = malloc(cap);
    if (!s) abort();
    for (const char *p = raw_outputs; *p;) {
        if (strncmp(p, "$ID", 3) == 0) {
            memcpy(s + o, idv, strlen(idv));
            o += strlen(idv);
            p += 3;
        } else {
            s[o++] = *p++;
        }
    }
    s[o] = '\0';
    runlane_err_t rc = runlane_submit_tool_outputs(rl, runlane_event_batch_id(ev), s);
    FZ_CHECK(rc == RUNLANE_OK || rc == RUNLANE_ERR_INVALID_ARG || rc == RUNLANE_ERR_NOT_FOUND,
             "runlane_submit_tool_outputs returned %s for %.300s", runlane_err2name(rc), s);
    free(s);
    cJSON_Delete(j);
}

static void answer_tools(runlane_t *rl, runlane_event_t *ev) {
    if (raw_outputs) {
        answer_tools_raw(rl, ev);
        return;
    }
    cJSON *j = cJSON_Parse(runlane_event_json(ev));
    cJSON *out = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(j, "tool_calls")) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tool_call_id", cJSON_IsString(id) ? id->valuestring : "");
        cJSON_AddStringToObject(o, "output", "{\"ok\":true}");
        cJSON_AddItemToArray(out, o);
    }
    char *s = cJSON_PrintUnformatted(out);
    runlane_submit_tool_outputs(rl, runlane_event_batch_id(ev), s);
    free(s);
    cJSON_Delete(out);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 1 << 16) return 0;
    if (!srv.port) LLVMFuzzerInitialize(NULL, NULL);
    unsigned flags = data[0];
    int assistants = flags & 1;
    const char *conv = assistants ? "thread_fuzz" : "conv_fuzz";

    /* The script. */
    pthread_mutex_lock(&srv.mu);
    srv.nscript = srv.next = srv.extra = 0;
    srv.bad_request[0] = srv.bad_body[0] = '\0';
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    const char *od = memmem(p, (size_t)(end - p), OUTPUTS_DELIM, strlen(OUTPUTS_DELIM));
    free(raw_outputs);
    raw_outputs = NULL;
    if (od) {
        const char *o = od + strlen(OUTPUTS_DELIM);
        raw_outputs = malloc((size_t)(end - o) + 1);
        if (!raw_outputs) abort();
        memcpy(raw_outputs, o, (size_t)(end - o));
        raw_outputs[end - o] = '\0';
        end = od;
    }
    while (p < end && srv.nscript < MAX_RESP) {
        const char *d = memmem(p, (size_t)(end - p), DELIM, strlen(DELIM));
        size_t n = d ? (size_t)(d - p) : (size_t)(end - p);
        srv.script[srv.nscript].p = p;
        srv.script[srv.nscript].n = n;
        srv.nscript++;
        p = d ? d + strlen(DELIM) : end;
    }
    srv.last_ms = now_ms();
    pthread_mutex_unlock(&srv.mu);

    /* The one pure reader that is already internal API: the delay headers
     * (Retry-After, retry-after-ms, openai-poll-after-ms), on every header
     * value of the script. */
    for (int i = 0; i < srv.nscript; i++) {
        const char *h = memchr(srv.script[i].p, '\n', srv.script[i].n);
        const char *rend = srv.script[i].p + srv.script[i].n;
        while (h && ++h < rend && *h != '\n') {
            const char *eol = memchr(h, '\n', (size_t)(rend - h));
            const char *colon = memchr(h, ':', (size_t)((eol ? eol : rend) - h));
            if (colon) {
                const char *v = colon + 1;
                size_t vn = (size_t)((eol ? eol : rend) - v);
                FZ_CHECK(rl_http_parse_delay_ms(v, vn, 0) >= -1, "negative delay");
                FZ_CHECK(rl_http_parse_delay_ms(v, vn, 1) >= -1, "negative delay");
            }
            h = eol;
        }
    }

    char url[64], err[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", srv.port);
    const char *kv[] = {
        "store", "memory://fuzzprovider",
        "backend", assistants ? "assistants" : "responses",
        "openai.base.url", url,
        "openai.api.key", API_KEY,
        "openai.model", "gpt-fuzz",
        "openai.assistant.id", "asst_fuzz",
        "openai.tools", "[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}]",
        "openai.stream", (flags & 2) ? "true" : "false",
        "openai.input.mode", (flags & 4) ? "joined" : "items",
        "tool.timeout.action", (flags & 8) ? "cancel" : "error",
        "tool.timeout.ms", "20",
        "http.max.retries", (flags & 64) ? "1" : "0",
        "http.retry.base.ms", "1",
        "http.retry.max.ms", "5",
        "http.timeout.ms", "2000",
        "http.connect.timeout.ms", "1000",
        "http.stream.idle.timeout.ms", "300",
        "max.attempts", "1",
        "backoff.base.ms", "0",
        "batch.window.ms", "0",
        "batch.max.wait.ms", "0",
        "worker.poll.ms", "5",
        "lease.ms", "60000",
        "http.max.requests.per.attempt", "40",
        NULL};
    /* (odd-length inputs: the smallest limits on what the peer sends) */
    const char *limits[] = {
        "http.max.body.bytes", "1024",
        "http.max.header.bytes", "1024",
        "http.stream.max.bytes", "1024",
        "http.sse.max.line.bytes", "1024",
        "http.sse.max.event.bytes", "1024",
        NULL};
    runlane_conf_t *conf = runlane_conf_new();
    for (int i = 0; kv[i]; i += 2)
        FZ_CHECK(runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)) == RUNLANE_OK, "conf: %s",
                 err);
    for (int i = 0; (size & 1) && limits[i]; i += 2)
        FZ_CHECK(runlane_conf_set(conf, limits[i], limits[i + 1], err, sizeof(err)) == RUNLANE_OK,
                 "conf: %s", err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    FZ_CHECK(rl, "runlane_new: %s", err);
    int nmsg = 1 + (int)((flags >> 4) & 3);
    if (nmsg > 3) nmsg = 3;
    for (int i = 0; i < nmsg; i++) {
        char id[RUNLANE_ID_MAX], content[32];
        snprintf(content, sizeof(content), "hello %d", i);
        FZ_CHECK(runlane_enqueue(id, sizeof(id), NULL, rl, conv, content,
                                 i == nmsg - 1 ? "{\"instructions\":\"be brief\"}" : NULL) == RUNLANE_OK,
                 "enqueue failed: %s", runlane_error_message(runlane_error_last()));
    }
    FZ_CHECK(runlane_start(rl) == RUNLANE_OK, "runlane_start failed");

    int64_t t0 = now_ms(), last_event = t0;
    int done = 0;
    while (!done) {
        runlane_event_t *ev = runlane_poll(rl, 5);
        int64_t now = now_ms();
        if (ev) {
            last_event = now;
            check_event(ev, conv);
            switch (runlane_event_type(ev)) {
            case RUNLANE_EVENT_TOOL_CALLS:
                if (flags & 128) answer_tools(rl, ev);
                break;
            case RUNLANE_EVENT_COMPLETED:
                runlane_reply_ack(rl, runlane_event_batch_id(ev));
                done = 1;
                break;
            case RUNLANE_EVENT_DEAD:
                done = 1;
                break;
            default:
                break;
            }
            runlane_event_destroy(ev);
            continue;
        }
        pthread_mutex_lock(&srv.mu);
        int used_up = srv.next >= srv.nscript;
        int64_t last_req = srv.last_ms;
        pthread_mutex_unlock(&srv.mu);
        /* The script is used up and nothing happens any more (a deferral,
         * a long poll interval, a timer): the run is over. */
        if (used_up && now - last_req > 40 && now - last_event > 40) break;
        if (now - t0 > 1500) break; /* a bound (long Retry-After, poll intervals), not an invariant */
    }
    runlane_stop(rl, RUNLANE_STOP_RELEASE, 0);
    /* Events queued until the stop obey the same rules. */
    runlane_event_t *ev;
    while ((ev = runlane_poll(rl, 0)) != NULL) {
        check_event(ev, conv);
        runlane_event_destroy(ev);
    }
    runlane_destroy(rl);
    pthread_mutex_lock(&srv.mu);
    char bad[sizeof(srv.bad_request)], bad_body[sizeof(srv.bad_body)];
    snprintf(bad, sizeof(bad), "%s", srv.bad_request);
    snprintf(bad_body, sizeof(bad_body), "%s", srv.bad_body);
    int requests = srv.next + srv.extra;
    srv.nscript = srv.next = 0; /* the input is freed after return */
    pthread_mutex_unlock(&srv.mu);
    free(raw_outputs);
    raw_outputs = NULL;
    /* Each of the 40 requests may be sent once more (http.max.retries <= 1),
     * and a deferral (1-3 s) within the run's 1.5 s may give one more claim. */
    FZ_CHECK(requests <= 2 * 2 * 40, "%d requests (http.max.requests.per.attempt 40)", requests);
    FZ_CHECK(!bad[0], "malformed request line sent to the provider: %s", bad);
    FZ_CHECK(!bad_body[0], "a request body that is not UTF-8 JSON sent to the provider: %s",
             bad_body);
    return 0;
}
