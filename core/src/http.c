/* http.c - asynchronous HTTP requests over one curl multi handle, with
 * retries, timeouts and secret scrubbing; see http.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "http.h"
#include "internal.h"
#include "ioloop.h"

typedef enum rq_state {
    RQ_QUEUED = 0, /* waiting to be added to the multi (rate limit, or added from a callback) */
    RQ_ACTIVE,     /* transfer running */
    RQ_WAIT,       /* waiting for a retry */
    RQ_FINISHED,   /* transfer ended; outcome not processed yet */
    RQ_DEAD        /* ended or cancelled: freed at the end of the next drive */
} rq_state_t;

struct rl_http_req {
    rl_http_t *h;
    rl_http_req_t *prev, *next;
    rq_state_t state;
    CURL *easy;
    struct curl_slist *headers;
    char *method, *path, *url, *body;
    int flags;
    rl_http_data_fn on_data;
    rl_http_done_fn on_done;
    rl_http_gate_fn gate;
    void *opaque;
    int attempts;
    int64_t retry_at;
    int64_t last_activity;
    int64_t attempt_at; /* when the current attempt joined the multi */
    /* Outcome of the current attempt. */
    CURLcode code;
    int idle_timeout, aborted, gated; /* gated: the gate stopped it unsent */
    /* The current attempt may be on the wire: its gate let it go (or,
     * without a gate, it joined the multi). */
    int sent;
    long status;
    int sse;
    int streamed;
    int in_multi;
    char request_id[128];
    int64_t retry_after_ms, poll_after_ms;
    int should_retry; /* x-should-retry: -1 absent, 0 false, 1 true */
    rl_buf_t body_buf;
    int body_too_large;
    int64_t header_bytes, stream_bytes;
    /* A limit the peer went past (or the on_data consumer's reason for
     * aborting): the attempt failed as a provider error, retriable. */
    char cap[200];
    int wait_noted; /* the wait note was given for this attempt */
    char errbuf[CURL_ERROR_SIZE];
};

struct rl_http {
    CURLM *multi;
    char *base_url;
    char *query; /* "k=v&k2=v2" (escaped) or "" */
    struct curl_slist *base_headers;
    char **secrets;
    int nsecrets;
    long connect_ms, timeout_ms, idle_ms;
    int max_retries;
    int64_t retry_base_ms, retry_max_ms;
    int64_t max_body, max_header, max_stream; /* peer-filled buffers' caps */
    rl_http_wait_fn wait_note;
    double rpm, tokens;       /* the local bucket (no store, or the store failed) */
    int64_t tokens_at;
    rl_http_rate_t rate;      /* the shared bucket (rate.store NULL: none) */
    int64_t rate_wait_until;  /* the store said: no token before then (mono ms) */
    int64_t rate_store_at;    /* the store failed: local bucket until then */
    int rate_down;            /* the last store call failed (note sent) */
    rl_http_req_t *head, *tail;
    int in_perform;
    rl_ioloop_t *loop; /* NULL: driven by curl_multi_perform in rl_http_drive */
};

/* 1 inside curl's transfer callbacks, where multi functions must not be
 * called (add and remove are deferred to the drive). */
static int in_curl(const rl_http_t *h) {
    return h->in_perform || (h->loop && rl_ioloop_acting(h->loop));
}

void rl_http_use_loop(rl_http_t *h, rl_ioloop_t *loop) { h->loop = loop; }

/* ---- secrets ---- */

void rl_http_scrub(const rl_http_t *h, char *s) {
    if (!h || !s) return;
    for (int i = 0; i < h->nsecrets; i++) {
        const char *sec = h->secrets[i];
        size_t n = strlen(sec);
        if (n == 0) continue;
        char *p;
        while ((p = strstr(s, sec)) != NULL) {
            /* "***" is never longer than a secret of 3+ bytes; shorter
             * secrets are masked with as many '*'. */
            size_t m = n < 3 ? n : 3;
            memset(p, '*', m);
            memmove(p + m, p + n, strlen(p + n) + 1);
        }
    }
}

char *rl_http_scrub_dup(const rl_http_t *h, const char *s) {
    char *d = rl_strdup(s ? s : "");
    if (d) rl_http_scrub(h, d);
    return d;
}

static int add_secret(rl_http_t *h, const char *s) {
    if (!s || !*s) return 1;
    char **v = realloc(h->secrets, (size_t)(h->nsecrets + 1) * sizeof(char *));
    if (!v) return 0;
    h->secrets = v;
    if (!(v[h->nsecrets] = rl_strdup(s))) return 0;
    h->nsecrets++;
    return 1;
}

/* ---- construction ---- */

static struct curl_slist *slist_add(struct curl_slist *l, const char *line, int *ok) {
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n) {
        *ok = 0;
        return l;
    }
    return n;
}

rl_http_t *rl_http_new(const runlane_conf_t *conf, CURLM *multi) {
    rl_http_t *h = calloc(1, sizeof(*h));
    if (!h) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    h->multi = multi;
    int ok = 1;
    const char *base = rl_conf_str(conf, "openai.base.url");
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    h->base_url = rl_strndup(base, bl);
    h->connect_ms = (long)rl_conf_int(conf, "http.connect.timeout.ms");
    h->timeout_ms = (long)rl_conf_int(conf, "http.timeout.ms");
    h->idle_ms = (long)rl_conf_int(conf, "http.stream.idle.timeout.ms");
    h->max_retries = (int)rl_conf_int(conf, "http.max.retries");
    h->retry_base_ms = rl_conf_int(conf, "http.retry.base.ms");
    h->retry_max_ms = rl_conf_int(conf, "http.retry.max.ms");
    h->max_body = rl_conf_int(conf, "http.max.body.bytes");
    h->max_header = rl_conf_int(conf, "http.max.header.bytes");
    h->max_stream = rl_conf_int(conf, "http.stream.max.bytes");
    h->rpm = (double)rl_conf_int(conf, "rate.limit.rpm");
    h->tokens = h->rpm > 0 ? (h->rpm / 60.0 < 1.0 ? 1.0 : h->rpm / 60.0) : 0;
    h->tokens_at = rl_mono_ms();

    const char *key = rl_conf_str(conf, "openai.api.key");
    if (!*key) {
        const char *env = getenv("OPENAI_API_KEY");
        key = env ? env : "";
    }
    char *line;
    if (*key) {
        if (!rl_http_header_value_ok(key)) {
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "openai.api.key: contains control characters");
            goto fail;
        }
        ok = ok && add_secret(h, key);
        line = rl_asprintf("Authorization: Bearer %s", key);
        if (!line) ok = 0;
        else h->base_headers = slist_add(h->base_headers, line, &ok);
        if (line) {
            memset(line, 0, strlen(line));
            free(line);
        }
    }
    const char *org = rl_conf_str(conf, "openai.organization");
    if (*org && (line = rl_asprintf("OpenAI-Organization: %s", org))) {
        h->base_headers = slist_add(h->base_headers, line, &ok);
        free(line);
    }
    const char *proj = rl_conf_str(conf, "openai.project");
    if (*proj && (line = rl_asprintf("OpenAI-Project: %s", proj))) {
        h->base_headers = slist_add(h->base_headers, line, &ok);
        free(line);
    }
    line = rl_asprintf("User-Agent: runlane/%s libcurl/%s", runlane_version_str(),
                       curl_version_info(CURLVERSION_NOW)->version);
    if (line) {
        h->base_headers = slist_add(h->base_headers, line, &ok);
        free(line);
    }
    cJSON *hdrs = cJSON_Parse(rl_conf_str(conf, "openai.headers"));
    if (hdrs && !cJSON_IsObject(hdrs)) {
        cJSON_Delete(hdrs);
        hdrs = NULL;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, hdrs) {
        if (!cJSON_IsString(it) || !rl_http_header_name_ok(it->string) ||
            !rl_http_header_value_ok(it->valuestring)) {
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "openai.headers: each member must be a header name with a string value "
                         "without control characters");
            cJSON_Delete(hdrs);
            goto fail;
        }
        ok = ok && add_secret(h, it->valuestring);
        line = rl_asprintf("%s: %s", it->string, it->valuestring);
        if (!line) {
            ok = 0;
            continue;
        }
        h->base_headers = slist_add(h->base_headers, line, &ok);
        memset(line, 0, strlen(line));
        free(line);
    }
    cJSON_Delete(hdrs);

    rl_buf_t q;
    rl_buf_init(&q);
    cJSON *qs = cJSON_Parse(rl_conf_str(conf, "openai.query"));
    if (qs && !cJSON_IsObject(qs)) {
        cJSON_Delete(qs);
        qs = NULL;
    }
    cJSON_ArrayForEach(it, qs) {
        if (!cJSON_IsString(it)) {
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                         "openai.query: each member must have a string value");
            cJSON_Delete(qs);
            rl_buf_free(&q);
            goto fail;
        }
        char *k = curl_easy_escape(NULL, it->string, 0);
        char *v = curl_easy_escape(NULL, it->valuestring, 0);
        if (k && v) rl_buf_printf(&q, "%s%s=%s", q.len ? "&" : "", k, v);
        else ok = 0;
        curl_free(k);
        curl_free(v);
    }
    cJSON_Delete(qs);
    rl_buf_puts(&q, "");
    h->query = rl_buf_take(&q);
    if (!ok || !h->base_url || !h->query) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        goto fail;
    }
    return h;
fail:
    rl_http_destroy(h);
    return NULL;
}

/* ---- requests ---- */

static void req_link(rl_http_t *h, rl_http_req_t *r) {
    r->prev = h->tail;
    r->next = NULL;
    if (h->tail) h->tail->next = r;
    else h->head = r;
    h->tail = r;
}

static void req_unlink(rl_http_t *h, rl_http_req_t *r) {
    if (r->prev) r->prev->next = r->next;
    else h->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else h->tail = r->prev;
}

static void req_free(rl_http_req_t *r) {
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->method);
    free(r->path);
    free(r->url);
    free(r->body);
    rl_buf_free(&r->body_buf);
    free(r);
}

static void reset_attempt(rl_http_req_t *r) {
    r->code = CURLE_OK;
    r->idle_timeout = r->aborted = r->gated = r->sent = 0;
    r->status = 0;
    r->sse = 0;
    r->request_id[0] = '\0';
    r->retry_after_ms = r->poll_after_ms = -1;
    r->should_retry = -1;
    r->body_buf.len = 0;
    if (r->body_buf.data) r->body_buf.data[0] = '\0';
    r->body_buf.oom = 0;
    r->body_too_large = 0;
    r->header_bytes = r->stream_bytes = 0;
    r->cap[0] = '\0';
    r->wait_noted = 0;
    r->errbuf[0] = '\0';
}

static void trim(char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

static int hname_is(const char *l, size_t n, const char *name) {
    return strlen(name) == n && strncasecmp(l, name, n) == 0;
}

int64_t rl_http_parse_delay_ms(const char *v, size_t n, int seconds) {
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp)) return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    char *end;
    double x = strtod(tmp, &end);
    if (end != tmp && *end == '\0' && x >= 0 && x < 1e12) return (int64_t)(seconds ? x * 1000 : x);
    if (!seconds) return -1;
    /* An HTTP date. */
    time_t t = curl_getdate(tmp, NULL);
    if (t == (time_t)-1) return -1;
    int64_t d = ((int64_t)t - (int64_t)time(NULL)) * 1000;
    return d < 0 ? 0 : d;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud) {
    rl_http_req_t *r = ud;
    size_t n = size * nitems;
    char *l = buf;
    size_t len = n;
    r->last_activity = rl_mono_ms();
    r->header_bytes += (int64_t)n;
    if (r->header_bytes > r->h->max_header) {
        snprintf(r->cap, sizeof(r->cap), "response headers over %lld bytes (http.max.header.bytes)",
                 (long long)r->h->max_header);
        return 0;
    }
    if (len >= 5 && strncmp(l, "HTTP/", 5) == 0) {
        /* A new response block (after 100 Continue or a redirect). */
        const char *sp = memchr(l, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->request_id[0] = '\0';
        r->retry_after_ms = r->poll_after_ms = -1;
        r->should_retry = -1;
        r->sse = 0;
        return n;
    }
    char *colon = memchr(l, ':', len);
    if (!colon) return n;
    size_t nl = (size_t)(colon - l);
    char *v = colon + 1;
    size_t vl = len - nl - 1;
    trim(&v, &vl);
    if (hname_is(l, nl, "x-request-id")) {
        size_t k = vl < sizeof(r->request_id) - 1 ? vl : sizeof(r->request_id) - 1;
        memcpy(r->request_id, v, k);
        r->request_id[k] = '\0';
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)r->request_id[i] < 0x20 || r->request_id[i] == '"')
                r->request_id[i] = '?';
    } else if (hname_is(l, nl, "retry-after-ms")) {
        int64_t ms = rl_http_parse_delay_ms(v, vl, 0);
        if (ms >= 0) r->retry_after_ms = ms;
    } else if (hname_is(l, nl, "retry-after")) {
        int64_t ms = rl_http_parse_delay_ms(v, vl, 1);
        /* retry-after-ms is more precise: it wins whatever the order. */
        if (ms >= 0 && r->retry_after_ms < 0) r->retry_after_ms = ms;
    } else if (hname_is(l, nl, "openai-poll-after-ms")) {
        r->poll_after_ms = rl_http_parse_delay_ms(v, vl, 0);
    } else if (hname_is(l, nl, "x-should-retry")) {
        if (vl == 4 && strncasecmp(v, "true", 4) == 0) r->should_retry = 1;
        else if (vl == 5 && strncasecmp(v, "false", 5) == 0) r->should_retry = 0;
    } else if (hname_is(l, nl, "content-type")) {
        r->sse = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    }
    return n;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    rl_http_req_t *r = ud;
    size_t n = size * nmemb;
    if (r->state == RQ_DEAD) return 0; /* cancelled meanwhile */
    r->last_activity = rl_mono_ms();
    if ((r->flags & RL_HTTP_STREAM) && r->sse && r->status >= 200 && r->status < 300) {
        r->streamed = 1;
        r->stream_bytes += (int64_t)n;
        if (r->stream_bytes > r->h->max_stream) {
            snprintf(r->cap, sizeof(r->cap), "stream over %lld bytes (http.stream.max.bytes)",
                     (long long)r->h->max_stream);
            return 0;
        }
        if (r->on_data && r->on_data(r->opaque, ptr, n)) {
            r->aborted = 1;
            return 0;
        }
        return r->state == RQ_DEAD ? 0 : n;
    }
    if ((int64_t)(r->body_buf.len + n) > r->h->max_body) {
        r->body_too_large = 1;
        snprintf(r->cap, sizeof(r->cap), "response body over %lld bytes (http.max.body.bytes)",
                 (long long)r->h->max_body);
        return 0;
    }
    rl_buf_append(&r->body_buf, ptr, n);
    return r->body_buf.oom ? 0 : n;
}

static int setup_easy(rl_http_req_t *r) {
    rl_http_t *h = r->h;
    CURL *e = r->easy = curl_easy_init();
    if (!e) return 0;
    int ok = 1;
    for (struct curl_slist *s = h->base_headers; s; s = s->next)
        r->headers = slist_add(r->headers, s->data, &ok);
    if (r->body) r->headers = slist_add(r->headers, "Content-Type: application/json", &ok);
    else r->headers = slist_add(r->headers, "Content-Type:", &ok); /* no form type on an empty POST */
    r->headers = slist_add(r->headers,
                           (r->flags & RL_HTTP_STREAM) ? "Accept: text/event-stream"
                                                       : "Accept: application/json",
                           &ok);
    if (r->flags & RL_HTTP_ASSISTANTS)
        r->headers = slist_add(r->headers, "OpenAI-Beta: assistants=v2", &ok);
    r->headers = slist_add(r->headers, "Expect:", &ok);
    if (!ok) return 0;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (r->flags & RL_HTTP_STREAM) ? 0L : h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (!(r->flags & RL_HTTP_STREAM)) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    /* libcurl silently sends a request again when the reused connection it
     * went out on dies before any byte of the answer: right for a stale
     * keep-alive connection, but a create the server already acted on
     * would then be duplicated. Creates take a fresh connection (which
     * joins the pool afterwards). */
    if (r->flags & RL_HTTP_UNSAFE) curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(r->method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        if (r->body || strcmp(r->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(r->body ? strlen(r->body) : 0));
        }
    }
    return 1;
}

void rl_http_set_rate(rl_http_t *h, const rl_http_rate_t *rate) {
    if (rate) h->rate = *rate;
    else memset(&h->rate, 0, sizeof(h->rate));
    h->rate_wait_until = h->rate_store_at = 0;
    h->rate_down = 0;
}

/* 1 when the shared bucket is to be asked (there is one, and it did not
 * fail just now). */
static int use_store(const rl_http_t *h, int64_t now) {
    return h->rate.store && now >= h->rate_store_at;
}

/* Takes a token of the local bucket: burst rpm/60 (at least 1), refilled
 * at rpm per minute. 0 when none is left. */
static int take_local_token(rl_http_t *h, int64_t now) {
    double cap = h->rpm / 60.0 < 1.0 ? 1.0 : h->rpm / 60.0;
    h->tokens += (double)(now - h->tokens_at) * h->rpm / 60000.0;
    if (h->tokens > cap) h->tokens = cap;
    h->tokens_at = now;
    if (h->tokens < 1.0) return 0;
    h->tokens -= 1.0;
    return 1;
}

/* Takes a token of the rate limit (the shared bucket, or the local one
 * while the store fails); 0 when none is left: next_token_at() says when
 * to try again. Never waits. */
static int take_token(rl_http_t *h, int64_t now) {
    if (h->rpm <= 0) return 1;
    if (use_store(h, now)) {
        if (now < h->rate_wait_until) return 0;
        int64_t wait = 0;
        if (h->rate.mu) pthread_mutex_lock(h->rate.mu);
        int rc = h->rate.store->ops->rate_take(h->rate.store, (int64_t)h->rpm, &wait);
        if (h->rate.mu) pthread_mutex_unlock(h->rate.mu);
        if (rc == RUNLANE_OK) {
            if (h->rate_down) {
                h->rate_down = 0;
                if (h->rate.note) h->rate.note(h->rate.opaque, 0, "");
            }
            if (wait <= 0) return 1;
            h->rate_wait_until = now + wait;
            return 0;
        }
        /* The store failed: do not stall on it. This client's own bucket
         * stands in until the store is asked again. */
        h->rate_store_at = now + RL_HTTP_RATE_STORE_RETRY_MS;
        h->rate_wait_until = 0;
        if (!h->rate_down) {
            h->rate_down = 1;
            if (h->rate.note)
                h->rate.note(h->rate.opaque, 1, runlane_error_message(runlane_error_last()));
        }
    }
    return take_local_token(h, now);
}

/* When a queued request may get a token (now: try at once). */
static int64_t next_token_at(const rl_http_t *h, int64_t now) {
    if (h->rpm <= 0) return now;
    if (use_store(h, now)) return h->rate_wait_until > now ? h->rate_wait_until : now;
    if (h->tokens >= 1.0) return now;
    int64_t t = h->tokens_at + (int64_t)((1.0 - h->tokens) * 60000.0 / h->rpm) + 1;
    /* the store is asked again at rate_store_at, if that is sooner */
    if (h->rate.store && h->rate_store_at < t) t = h->rate_store_at;
    return t > now ? t : now;
}

/* Adds r to the multi now if possible; otherwise it stays queued. */
static void launch(rl_http_req_t *r) {
    rl_http_t *h = r->h;
    r->state = RQ_QUEUED;
    if (in_curl(h)) return;
    /* Keep FIFO order: nothing jumps ahead of an older queued request. */
    for (rl_http_req_t *o = h->head; o && o != r; o = o->next)
        if (o->state == RQ_QUEUED) return;
    int64_t now = rl_mono_ms();
    if (!take_token(h, now)) return;
    reset_attempt(r);
    r->attempts++;
    r->last_activity = r->attempt_at = now;
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
        /* Treated as a failed attempt by the next drive. */
        r->code = CURLE_FAILED_INIT;
        r->state = RQ_FINISHED;
        return;
    }
    r->in_multi = 1;
    r->state = RQ_ACTIVE;
}

rl_http_req_t *rl_http_start(rl_http_t *h, const char *method, const char *path,
                             const char *json_body, int flags, rl_http_data_fn on_data,
                             rl_http_done_fn on_done, void *opaque) {
    rl_http_req_t *r = calloc(1, sizeof(*r));
    if (!r) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    r->h = h;
    r->flags = flags;
    r->on_data = on_data;
    r->on_done = on_done;
    r->opaque = opaque;
    r->method = rl_strdup(method);
    r->path = rl_strdup(path);
    r->body = json_body ? rl_strdup(json_body) : NULL;
    rl_buf_init(&r->body_buf);
    if (*h->query)
        r->url = rl_asprintf("%s%s%s%s", h->base_url, path, strchr(path, '?') ? "&" : "?",
                             h->query);
    else
        r->url = rl_asprintf("%s%s", h->base_url, path);
    if (!r->method || !r->path || !r->url || (json_body && !r->body) || !setup_easy(r)) {
        req_free(r);
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    req_link(h, r);
    launch(r);
    return r;
}

#if LIBCURL_VERSION_NUM >= 0x075000
/* curl: connected, about to send the request (every attempt). */
static int on_prereq(void *ud, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port) {
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    rl_http_req_t *r = ud;
    if (r->state == RQ_DEAD) return CURL_PREREQFUNC_ABORT;
    if (r->gate && !r->gate(r->opaque)) {
        r->gated = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    r->sent = 1;
    return CURL_PREREQFUNC_OK;
}
#endif

int rl_http_set_gate(rl_http_req_t *r, rl_http_gate_fn gate) {
#if LIBCURL_VERSION_NUM >= 0x075000
    r->gate = gate;
    curl_easy_setopt(r->easy, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(r->easy, CURLOPT_PREREQDATA, (void *)r);
    return 1;
#else
    (void)r;
    (void)gate;
    return 0;
#endif
}

void rl_http_cancel(rl_http_req_t *r) {
    if (!r || r->state == RQ_DEAD) return;
    rl_http_t *h = r->h;
    r->on_done = NULL;
    r->on_data = NULL;
    /* In perform, the write callback aborts it and the drive removes it
     * from the multi afterwards. */
    if (r->in_multi && !in_curl(h)) {
        curl_multi_remove_handle(h->multi, r->easy);
        r->in_multi = 0;
    }
    r->state = RQ_DEAD;
}

int rl_http_pending(const rl_http_t *h) {
    int n = 0;
    for (const rl_http_req_t *r = h->head; r; r = r->next)
        if (r->state != RQ_DEAD) n++;
    return n;
}

int rl_http_max_retries(const rl_http_t *h) { return h->max_retries; }

void rl_http_set_wait_note(rl_http_t *h, rl_http_wait_fn fn) { h->wait_note = fn; }

void rl_http_abort_reason(rl_http_req_t *r, const char *reason) {
    if (r && reason) rl_strlcpy(r->cap, reason, sizeof(r->cap));
}

int64_t rl_http_attempt_since(const rl_http_req_t *r) {
    return r && r->state == RQ_ACTIVE ? r->attempt_at : 0;
}

int rl_http_attempt_sent(const rl_http_req_t *r) {
    /* in_multi: not between attempts (a failed attempt waiting for its
     * retry is not on the wire; the gate decides the next one). */
    if (!r || r->state != RQ_ACTIVE || !r->in_multi) return 0;
    return r->gate ? r->sent : 1;
}

void rl_http_abort(rl_http_req_t *r, const char *reason) {
    if (!r || r->state != RQ_ACTIVE || in_curl(r->h)) return;
    if (r->in_multi) curl_multi_remove_handle(r->h->multi, r->easy);
    r->in_multi = 0;
    r->code = CURLE_ABORTED_BY_CALLBACK;
    r->aborted = 1;
    rl_strlcpy(r->cap, reason ? reason : "aborted", sizeof(r->cap));
    r->state = RQ_FINISHED;
}

int64_t rl_http_wait_until(const rl_http_req_t *r) {
    if (!r) return 0;
    return r->state == RQ_WAIT ? r->retry_at : 0;
}

int64_t rl_http_backoff_ms(const rl_http_t *h, int n, int64_t hint_ms) {
    /* The server's ask is honoured up to http.retry.max.ms: a hostile or
     * broken Retry-After must not park a batch (and its lease) for days. */
    if (hint_ms >= 0) return hint_ms > h->retry_max_ms ? h->retry_max_ms : hint_ms;
    int64_t d = h->retry_base_ms;
    for (int i = 1; i < n && d < h->retry_max_ms; i++) d *= 2;
    if (d > h->retry_max_ms) d = h->retry_max_ms;
    return (int64_t)((double)d * (1.0 - 0.25 * rl_random()));
}

/* The transfer ended before any byte of a response was sent back, and the
 * request surely never reached the server. */
static int not_sent(const rl_http_req_t *r) {
    switch (r->code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_FAILED_INIT:
        return 1;
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connect_us = 0;
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        return connect_us == 0;
    }
    default:
        return 0;
    }
}

/* The length of s cut to at most max bytes on a UTF-8 character boundary
 * (an error message must stay valid UTF-8 for the bindings). */
static size_t utf8_cut(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

/* A peer's bytes in a message that is not valid UTF-8: every non-ASCII
 * byte becomes '?' (the bindings decode messages as UTF-8). */
static void ascii_if_invalid(char *s) {
    if (!s || rl_utf8_valid(s, strlen(s))) return;
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) *s = '?';
}

/* Builds the error message of a failed request into b. */
static void describe_error(rl_http_req_t *r, rl_buf_t *b, cJSON *err_obj) {
    rl_buf_printf(b, "%s %s: ", r->method, r->path);
    if (r->code != CURLE_OK) {
        if (r->idle_timeout)
            rl_buf_printf(b, "network error: the stream sent nothing for %ld ms", r->h->idle_ms);
        else if (r->cap[0])
            rl_buf_printf(b, "provider error: %s", r->cap);
        else if (r->aborted)
            rl_buf_puts(b, "aborted");
        else if (r->gated)
            rl_buf_puts(b, "not sent: stopped by its gate before going out");
        else {
            rl_buf_printf(b, "network error: %s", curl_easy_strerror(r->code));
            if (r->errbuf[0]) rl_buf_printf(b, " (%s)", r->errbuf);
        }
        if (r->status) rl_buf_printf(b, " after HTTP %ld", r->status);
    } else {
        rl_buf_printf(b, "HTTP %ld", r->status);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(err_obj, "type");
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(err_obj, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err_obj, "message");
        if (cJSON_IsString(type) && *type->valuestring) rl_buf_printf(b, " %s", type->valuestring);
        if (cJSON_IsString(code) && *code->valuestring)
            rl_buf_printf(b, " (code %s)", code->valuestring);
        if (cJSON_IsString(msg)) {
            rl_buf_puts(b, ": ");
            rl_buf_append(b, msg->valuestring, utf8_cut(msg->valuestring, 1000));
        } else if (r->body_buf.len) {
            /* Not an OpenAI error object: show the start of the body. */
            rl_buf_puts(b, ": ");
            size_t n = r->body_buf.len < 300 ? r->body_buf.len : 300;
            while (n > 0 && n < r->body_buf.len && ((unsigned char)r->body_buf.data[n] & 0xC0) == 0x80)
                n--;
            for (size_t i = 0; i < n; i++) {
                char c = r->body_buf.data[i];
                rl_buf_append(b, (unsigned char)c < 0x20 ? " " : &c, 1);
            }
        }
    }
    if (r->request_id[0]) rl_buf_printf(b, " [request %s]", r->request_id);
    if (r->attempts > 1) rl_buf_printf(b, " (after %d attempts)", r->attempts);
}

static const char *json_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Decides the fate of an ended attempt: retry, or complete. */
static void process_finished(rl_http_req_t *r) {
    rl_http_t *h = r->h;
    int ok = r->code == CURLE_OK && r->status >= 200 && r->status < 300;
    int retriable = 0, safe = 0;
    if (!ok) {
        if (r->code != CURLE_OK) {
            if (r->streamed || r->cap[0]) {
                /* (past a cap: the server answered, so it may have acted) */
                retriable = 1;
            } else if (r->aborted || r->gated) {
                retriable = 0;
            } else {
                retriable = 1;
                safe = not_sent(r);
            }
        } else if (r->status == 408 || r->status == 409 || r->status == 429) {
            retriable = safe = 1;
        } else if (r->status >= 500) {
            retriable = 1;
        }
        if (r->code == CURLE_OK && r->should_retry >= 0) retriable = r->should_retry;
    }
    int may_retry = retriable && !r->streamed && (safe || !(r->flags & RL_HTTP_UNSAFE));
    if (may_retry && r->attempts <= h->max_retries) {
        int64_t delay = rl_http_backoff_ms(h, r->attempts, r->retry_after_ms);
        r->retry_at = rl_mono_ms() + delay;
        r->state = RQ_WAIT;
        /* A long wait the server asked for is worth telling (a lease is
         * held meanwhile); once per attempt. */
        if (h->wait_note && !r->wait_noted &&
            (r->retry_after_ms >= RL_HTTP_LONG_WAIT_MS || r->retry_after_ms > delay)) {
            r->wait_noted = 1;
            char what[300];
            snprintf(what, sizeof(what), "%s %s: HTTP %ld", r->method, r->path, r->status);
            rl_http_scrub(h, what);
            h->wait_note(r->opaque, what, r->retry_after_ms, delay);
        }
        return;
    }
    rl_buf_puts(&r->body_buf, "");
    cJSON *body = NULL, *err_obj = NULL;
    if (!ok && r->body_buf.len && !r->body_buf.oom) {
        body = cJSON_Parse(r->body_buf.data);
        err_obj = cJSON_GetObjectItemCaseSensitive(body, "error");
        if (!cJSON_IsObject(err_obj)) err_obj = NULL;
    }
    rl_buf_t eb;
    rl_buf_init(&eb);
    if (!ok) describe_error(r, &eb, err_obj);
    rl_buf_puts(&eb, "");
    char *msg = rl_buf_take(&eb);
    if (msg) rl_http_scrub(h, msg);
    ascii_if_invalid(msg);
    char *pmsg = rl_http_scrub_dup(h, json_str(err_obj, "message"));
    /* (as in `error`: the provider's message is the peer's to fill) */
    if (pmsg) pmsg[utf8_cut(pmsg, 1000)] = '\0';
    ascii_if_invalid(pmsg);
    rl_http_result_t res;
    memset(&res, 0, sizeof(res));
    res.status = r->status;
    res.curl_code = (int)r->code;
    if (r->body_buf.data) rl_utf8_scrub(r->body_buf.data, r->body_buf.len);
    res.body = r->body_buf.data ? r->body_buf.data : "";
    res.body_len = r->body_buf.len;
    res.request_id = r->request_id;
    res.error = ok ? "" : (msg ? msg : "HTTP request failed");
    res.error_code = json_str(err_obj, "code");
    res.error_type = json_str(err_obj, "type");
    res.error_message = pmsg ? pmsg : "";
    res.retry_after_ms = r->retry_after_ms;
    /* A server's poll hint is a wait like Retry-After: capped. */
    res.poll_after_ms = r->poll_after_ms > h->retry_max_ms ? h->retry_max_ms : r->poll_after_ms;
    res.ok = ok;
    res.err = ok                               ? RUNLANE_OK
              : r->cap[0] || r->code == CURLE_OK ? RUNLANE_ERR_PROVIDER
                                                 : RUNLANE_ERR_HTTP;
    res.retriable = !ok && retriable;
    res.ambiguous = !ok && retriable && !safe;
    res.streamed = r->streamed;
    res.attempts = r->attempts;
    res.retry_in_ms = rl_http_backoff_ms(h, r->attempts, r->retry_after_ms);
    rl_http_done_fn cb = r->on_done;
    void *opaque = r->opaque;
    r->state = RQ_DEAD;
    r->on_done = NULL;
    r->on_data = NULL;
    if (cb) cb(opaque, &res);
    free(msg);
    free(pmsg);
    cJSON_Delete(body);
}

int64_t rl_http_drive(rl_http_t *h) {
    for (int round = 0; round < 8; round++) {
        int64_t now = rl_mono_ms();
        /* Due retries and queued requests join the multi. */
        for (rl_http_req_t *r = h->head; r; r = r->next) {
            if (r->state == RQ_WAIT && r->retry_at <= now) r->state = RQ_QUEUED;
            if (r->state == RQ_QUEUED) {
                launch(r);
                if (r->state == RQ_QUEUED) break; /* rate limited: keep the order */
            }
        }
        if (!h->loop) {
            /* (With a loop, curl acted on the ready sockets in its wait.) */
            int running = 0;
            h->in_perform = 1;
            curl_multi_perform(h->multi, &running);
            h->in_perform = 0;
        }
        int msgs;
        CURLMsg *m;
        while ((m = curl_multi_info_read(h->multi, &msgs)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            rl_http_req_t *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            CURLcode code = m->data.result;
            curl_multi_remove_handle(h->multi, m->easy_handle);
            if (r) r->in_multi = 0;
            if (!r || r->state != RQ_ACTIVE) continue; /* cancelled (DEAD) */
            r->code = code;
            r->state = RQ_FINISHED;
        }
        /* Requests cancelled during perform are still in the multi. */
        now = rl_mono_ms();
        for (rl_http_req_t *r = h->head; r; r = r->next) {
            if (r->state == RQ_DEAD && r->in_multi) {
                curl_multi_remove_handle(h->multi, r->easy);
                r->in_multi = 0;
            }
            if (r->state == RQ_ACTIVE && (r->flags & RL_HTTP_STREAM) &&
                now - r->last_activity >= h->idle_ms) {
                curl_multi_remove_handle(h->multi, r->easy);
                r->in_multi = 0;
                r->code = CURLE_OPERATION_TIMEDOUT;
                r->idle_timeout = 1;
                r->state = RQ_FINISHED;
            }
        }
        int finished = 0;
        for (rl_http_req_t *r = h->head; r; r = r->next) {
            if (r->state != RQ_FINISHED) continue;
            finished++;
            process_finished(r);
        }
        /* Free what ended or was cancelled. */
        for (rl_http_req_t *r = h->head, *next; r; r = next) {
            next = r->next;
            if (r->state == RQ_DEAD) {
                req_unlink(h, r);
                req_free(r);
            }
        }
        int queued = 0;
        now = rl_mono_ms();
        for (rl_http_req_t *r = h->head; r; r = r->next)
            if (r->state == RQ_QUEUED || (r->state == RQ_WAIT && r->retry_at <= now)) queued = 1;
        if (!finished && !(queued && next_token_at(h, now) <= now)) break;
    }
    int64_t now = rl_mono_ms(), wake = INT64_MAX;
    int queued = 0;
    for (rl_http_req_t *r = h->head; r; r = r->next) {
        if (r->state == RQ_WAIT && r->retry_at < wake) wake = r->retry_at;
        if (r->state == RQ_QUEUED) queued = 1;
        if (r->state == RQ_ACTIVE && (r->flags & RL_HTTP_STREAM)) {
            int64_t t = r->last_activity + h->idle_ms;
            if (t < wake) wake = t;
        }
    }
    if (queued) {
        int64_t t = next_token_at(h, now);
        if (t < wake) wake = t;
    }
    /* curl's own timers (timeouts, connection setup) are handled by
     * curl_multi_poll, which waits at most until curl needs attention. */
    return wake;
}

void rl_http_destroy(rl_http_t *h) {
    if (!h) return;
    while (h->head) {
        rl_http_req_t *r = h->head;
        if (r->in_multi) curl_multi_remove_handle(h->multi, r->easy);
        req_unlink(h, r);
        req_free(r);
    }
    curl_slist_free_all(h->base_headers);
    for (int i = 0; i < h->nsecrets; i++) {
        memset(h->secrets[i], 0, strlen(h->secrets[i]));
        free(h->secrets[i]);
    }
    free(h->secrets);
    free(h->base_url);
    free(h->query);
    free(h);
}

/* ---- blocking requests ---- */

typedef struct sync_state {
    int done;
    long status;
    char *body;
    char *error;
    int ok;
    runlane_err_t err;
} sync_state_t;

static void sync_done(void *opaque, const rl_http_result_t *res) {
    sync_state_t *s = opaque;
    s->done = 1;
    s->status = res->status;
    s->ok = res->ok;
    s->err = res->err;
    s->body = rl_strndup(res->body, res->body_len);
    s->error = rl_strdup(res->error);
}

runlane_err_t rl_http_sync(long *status_out, char **body_out, const runlane_conf_t *conf,
                           const char *method, const char *path, const char *json_body,
                           int flags, const rl_http_rate_t *rate) {
    *status_out = 0;
    *body_out = NULL;
    CURLM *m = curl_multi_init();
    if (!m) return rl_error_set(RUNLANE_ERR_INTERNAL, 0, "curl_multi_init failed");
    rl_http_t *h = rl_http_new(conf, m);
    if (!h) {
        curl_multi_cleanup(m);
        return runlane_error_code(runlane_error_last());
    }
    rl_http_set_rate(h, rate);
    sync_state_t s;
    memset(&s, 0, sizeof(s));
    if (!rl_http_start(h, method, path, json_body, flags & ~RL_HTTP_STREAM, NULL, sync_done,
                       &s)) {
        rl_http_destroy(h);
        curl_multi_cleanup(m);
        return RUNLANE_ERR_NOMEM;
    }
    while (!s.done) {
        int64_t wake = rl_http_drive(h);
        if (s.done) break;
        int64_t wait = wake == INT64_MAX ? 1000 : wake - rl_mono_ms();
        if (wait > 1000) wait = 1000;
        if (wait < 0) wait = 0;
        curl_multi_poll(m, NULL, 0, (int)wait, NULL);
    }
    rl_http_destroy(h);
    curl_multi_cleanup(m);
    *status_out = s.status;
    runlane_err_t rc = RUNLANE_OK;
    if (!s.ok)
        rc = rl_error_set(s.err, s.err == RUNLANE_ERR_HTTP || s.status >= 500 || s.status == 429,
                          "%s", s.error ? s.error : "HTTP request failed");
    *body_out = s.body;
    free(s.error);
    if (rc == RUNLANE_OK && !s.body) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    return rc;
}
