/* dashboard.c - the web dashboard's request handler (see runlane.h).
 *
 * Method, path, query and body in; status, headers and JSON (or the page)
 * out. No socket and no HTTP library: the CLI (libmicrohttpd) and the
 * Node/Python mounts are thin adapters over runlane_dashboard_handle().
 * Every check happens before any store write, so a refused request changes
 * nothing. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "internal.h"
#include "store.h"

/* The page, embedded at build time from core/dashboard/index.html
 * (cmake/EmbedFile.cmake). */
extern const unsigned char rl_dashboard_html[];
extern const size_t rl_dashboard_html_len;

#define DB_BODY_MAX RUNLANE_DASHBOARD_BODY_MAX /* POST bodies */
#define DB_QUERY_MAX 4096       /* query strings */
#define DB_SEARCH_MAX 256       /* search terms */
#define DB_OFFSET_MAX 1000000
#define DB_LIMIT_MAX 200
#define DB_LIMIT_DEFAULT 50
#define DB_PEEK_MAX 50          /* messages shown per list in the detail */
#define DB_CONTENT_SHOWN 4096   /* bytes of a message's content shown */
#define DB_DEAD_SEARCH_SCAN 1000 /* dead letters a search looks at */

enum { H_PENDING, H_READY, H_INFLIGHT, H_DEAD, H_CONVS, H_ENQ, H_ACKED, H_FAILED, H_DEADL,
       H_RECOVERED, H_N };
static const char *const hist_keys[H_N] = {"pending", "ready",   "inflight", "dead",
                                           "conversations", "enqueued", "acked", "failed",
                                           "dead_lettered", "recovered"};

typedef struct sample {
    int64_t t_ms;
    int64_t v[H_N];
} sample_t;

struct runlane_dashboard_s {
    runlane_t *rl;
    pthread_mutex_t mu; /* guards the ring */
    char csrf[65];
    int64_t interval_ms;
    size_t hist_size;
    size_t scan;
    int read_only;
    sample_t *ring;
    size_t ring_len, ring_next;
    int64_t last_sample_mono; /* -1: none yet */
};

struct runlane_dashboard_response_s {
    int status;
    const char *ctype;
    char *headers;
    char *body;
    size_t len;
};

/* ------------------------------------------------------------------ */
/* options and lifecycle                                              */
/* ------------------------------------------------------------------ */

static int opt_int(const cJSON *o, const char *name, int64_t lo, int64_t hi, int64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it) return RUNLANE_OK;
    /* the range first: casting an out-of-range double is undefined */
    if (!cJSON_IsNumber(it) || !(it->valuedouble >= (double)lo && it->valuedouble <= (double)hi) ||
        it->valuedouble != (double)(int64_t)it->valuedouble)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_dashboard_new: options.%s must be an integer in %lld..%lld",
                            name, (long long)lo, (long long)hi);
    *v = (int64_t)it->valuedouble;
    return RUNLANE_OK;
}

static int parse_options(runlane_dashboard_t *d, const char *json) {
    if (!json) return RUNLANE_OK;
    cJSON *o = cJSON_Parse(json);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_dashboard_new: options must be a JSON object");
    }
    for (const cJSON *it = o->child; it; it = it->next) {
        static const char *const known[] = {"history_interval_ms", "history_size", "read_only",
                                            "scan_limit"};
        int ok = 0;
        for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
            ok |= it->string && strcmp(it->string, known[i]) == 0;
        if (!ok) {
            int rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                  "runlane_dashboard_new: unknown option \"%s\"",
                                  it->string ? it->string : "");
            cJSON_Delete(o);
            return rc;
        }
    }
    int64_t interval = d->interval_ms, size = (int64_t)d->hist_size, scan = (int64_t)d->scan;
    int rc = opt_int(o, "history_interval_ms", 1000, 3600000, &interval);
    if (!rc) rc = opt_int(o, "history_size", 2, 10000, &size);
    if (!rc) rc = opt_int(o, "scan_limit", 100, 100000, &scan);
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(o, "read_only");
    if (!rc && ro) {
        if (!cJSON_IsBool(ro))
            rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                              "runlane_dashboard_new: options.read_only must be a boolean");
        else
            d->read_only = cJSON_IsTrue(ro);
    }
    cJSON_Delete(o);
    d->interval_ms = interval;
    d->hist_size = (size_t)size;
    d->scan = (size_t)scan;
    return rc;
}

RUNLANE_EXTERN(runlane_dashboard_t *)
runlane_dashboard_new(runlane_t *rl, const char *options_json) {
    if (!rl) {
        rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_dashboard_new: rl is NULL");
        return NULL;
    }
    runlane_dashboard_t *d = calloc(1, sizeof(*d));
    if (!d) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    d->rl = rl;
    d->interval_ms = 10000;
    d->hist_size = 360;
    d->scan = 10000;
    d->last_sample_mono = -1;
    if (parse_options(d, options_json) != RUNLANE_OK) {
        free(d);
        return NULL;
    }
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            free(d);
            rl_error_set(RUNLANE_ERR_INTERNAL, 0, "runlane_dashboard_new: no random bytes");
            return NULL;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++) snprintf(d->csrf + 2 * i, 3, "%02x", raw[i]);
    d->ring = calloc(d->hist_size, sizeof(*d->ring));
    if (!d->ring) {
        free(d);
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    rl_error_clear();
    return d;
}

RUNLANE_EXTERN(void) runlane_dashboard_destroy(runlane_dashboard_t *d) {
    if (!d) return;
    pthread_mutex_destroy(&d->mu);
    memset(d->csrf, 0, sizeof(d->csrf));
    free(d->ring);
    free(d);
}

/* ------------------------------------------------------------------ */
/* responses                                                          */
/* ------------------------------------------------------------------ */

static const char csp[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

static runlane_dashboard_response_t *resp_new(int status, const char *ctype, char *body,
                                              size_t len) {
    runlane_dashboard_response_t *r = calloc(1, sizeof(*r));
    if (!r) {
        free(body);
        return NULL;
    }
    r->status = status;
    r->ctype = ctype;
    r->body = body;
    r->len = len;
    r->headers = rl_asprintf("{\"Content-Type\":\"%s\",\"Cache-Control\":\"no-store\","
                             "\"X-Content-Type-Options\":\"nosniff\",\"X-Frame-Options\":\"DENY\","
                             "\"Referrer-Policy\":\"no-referrer\",\"Content-Security-Policy\":\"%s\"}",
                             ctype, csp);
    if (!r->headers) {
        free(r->body);
        free(r);
        return NULL;
    }
    return r;
}

static runlane_dashboard_response_t *resp_json(int status, char *json) {
    if (!json) return NULL;
    return resp_new(status, "application/json; charset=utf-8", json, strlen(json));
}

static const char *status_code_name(int status) {
    switch (status) {
    case 400: return "bad_request";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 503: return "store_unavailable";
    default: return "internal";
    }
}

static runlane_dashboard_response_t *resp_error(int status, const char *msg) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "{\"error\":{\"status\":%d,\"code\":\"%s\",\"message\":", status,
                  status_code_name(status));
    rl_buf_json_str(&b, msg);
    rl_buf_puts(&b, "}}");
    return resp_json(status, rl_buf_take(&b));
}

/* An error of a runlane call as a response; the message is the library's
 * (never holds a secret: see runlane_error_last). */
static runlane_dashboard_response_t *resp_rc(int rc) {
    int status;
    switch (rc) {
    case RUNLANE_ERR_INVALID_ARG:
    case RUNLANE_ERR_TOO_LARGE: status = 400; break;
    case RUNLANE_ERR_NOT_FOUND: status = 404; break;
    case RUNLANE_ERR_STALE:
    case RUNLANE_ERR_STATE: status = 409; break;
    case RUNLANE_ERR_STORE:
    case RUNLANE_ERR_TIMEOUT: status = 503; break;
    default: status = 500;
    }
    return resp_error(status, runlane_error_message(runlane_error_last()));
}

/* ------------------------------------------------------------------ */
/* query strings                                                      */
/* ------------------------------------------------------------------ */

typedef struct qparam {
    const char *name;
    char *value; /* decoded, NULL when absent */
} qparam_t;

static int hexdig(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) ('+' is a space). NULL on a bad escape, an
 * embedded NUL or invalid UTF-8; *oom set on out of memory. */
static char *pct_decode(const char *s, size_t n, int *oom) {
    char *out = malloc(n + 1), *o = out;
    if (!out) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || hexdig(s[i + 1]) < 0 || hexdig(s[i + 2]) < 0) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hexdig(s[i + 1]) * 16 + hexdig(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = 0;
    size_t len = (size_t)(o - out);
    if (strlen(out) != len || !rl_utf8_valid(out, len)) {
        free(out);
        return NULL;
    }
    return out;
}

/* Fills the values of `params` from `query`. Unknown names are ignored (a
 * cache-busting parameter is harmless). Returns 0, 400 or -1 (oom). */
static int parse_query(const char *query, qparam_t *params, size_t np, const char **bad) {
    if (!query) return 0;
    size_t qlen = strlen(query);
    if (qlen > DB_QUERY_MAX) {
        *bad = "query string too long";
        return 400;
    }
    const char *p = query, *end = query + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp) amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *name_end = eq ? eq : amp;
        for (size_t i = 0; i < np; i++) {
            size_t nl = strlen(params[i].name);
            if ((size_t)(name_end - p) != nl || memcmp(p, params[i].name, nl) != 0) continue;
            int oom = 0;
            char *v = eq ? pct_decode(eq + 1, (size_t)(amp - eq - 1), &oom) : rl_strdup("");
            if (!v) {
                if (oom || !eq) return -1;
                *bad = "bad percent-encoding or UTF-8 in the query string";
                return 400;
            }
            free(params[i].value);
            params[i].value = v;
        }
        p = amp + 1;
    }
    return 0;
}

static void params_free(qparam_t *params, size_t np) {
    for (size_t i = 0; i < np; i++) free(params[i].value);
}

/* A decimal integer in lo..hi, or `dflt` when absent. 0 or 400. */
static int param_size(const char *v, size_t dflt, size_t lo, size_t hi, size_t *out) {
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!*v || strlen(v) > 9) return 400;
    size_t x = 0;
    for (const char *c = v; *c; c++) {
        if (*c < '0' || *c > '9') return 400;
        x = x * 10 + (size_t)(*c - '0');
    }
    if (x < lo || x > hi) return 400;
    *out = x;
    return 0;
}

/* ------------------------------------------------------------------ */
/* history                                                            */
/* ------------------------------------------------------------------ */

/* Records `totals` (a runlane_status totals object) when a sample is due
 * (or `force`). */
static void sample_put(runlane_dashboard_t *d, const cJSON *totals, int force) {
    int64_t mono = rl_mono_ms();
    pthread_mutex_lock(&d->mu);
    if (force || d->last_sample_mono < 0 || mono - d->last_sample_mono >= d->interval_ms) {
        sample_t *s = &d->ring[d->ring_next];
        s->t_ms = rl_now_ms();
        for (int i = 0; i < H_N; i++) {
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(totals, hist_keys[i]);
            s->v[i] = cJSON_IsNumber(it) ? rl_f64_to_i64(it->valuedouble) : 0;
        }
        d->ring_next = (d->ring_next + 1) % d->hist_size;
        if (d->ring_len < d->hist_size) d->ring_len++;
        d->last_sample_mono = mono;
    }
    pthread_mutex_unlock(&d->mu);
}

static int sample_due(runlane_dashboard_t *d) {
    pthread_mutex_lock(&d->mu);
    int due = d->last_sample_mono < 0 || rl_mono_ms() - d->last_sample_mono >= d->interval_ms;
    pthread_mutex_unlock(&d->mu);
    return due;
}

static int totals_get(runlane_dashboard_t *d, char **json, cJSON **parsed) {
    int rc = runlane_status(json, d->rl, NULL);
    if (rc != RUNLANE_OK) return rc;
    *parsed = cJSON_Parse(*json);
    if (!*parsed) {
        runlane_free(*json);
        *json = NULL;
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t) runlane_dashboard_sample(runlane_dashboard_t *d) {
    if (!d) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_dashboard_sample: d is NULL");
    if (!sample_due(d)) return RUNLANE_OK;
    char *json = NULL;
    cJSON *t = NULL;
    int rc = totals_get(d, &json, &t);
    if (rc != RUNLANE_OK) return rc;
    sample_put(d, t, 0);
    cJSON_Delete(t);
    runlane_free(json);
    return RUNLANE_OK;
}

/* ------------------------------------------------------------------ */
/* GET endpoints                                                      */
/* ------------------------------------------------------------------ */

static runlane_dashboard_response_t *get_session(runlane_dashboard_t *d) {
    return resp_json(200, rl_asprintf("{\"csrf_token\":\"%s\",\"version\":\"%s\","
                                      "\"history_interval_ms\":%lld,\"history_size\":%zu,"
                                      "\"read_only\":%s}",
                                      d->csrf, runlane_version_str(), (long long)d->interval_ms,
                                      d->hist_size, d->read_only ? "true" : "false"));
}

static runlane_dashboard_response_t *get_overview(runlane_dashboard_t *d) {
    char *json = NULL;
    cJSON *t = NULL;
    int rc = totals_get(d, &json, &t);
    if (rc != RUNLANE_OK) return resp_rc(rc);
    sample_put(d, t, 0);
    cJSON_Delete(t);
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_printf(&b, "{\"now_ms\":%lld,\"totals\":%s,\"history\":[", (long long)rl_now_ms(),
                  json);
    runlane_free(json);
    pthread_mutex_lock(&d->mu);
    size_t start = (d->ring_next + d->hist_size - d->ring_len) % d->hist_size;
    for (size_t k = 0; k < d->ring_len; k++) {
        const sample_t *s = &d->ring[(start + k) % d->hist_size];
        rl_buf_printf(&b, "%s{\"t_ms\":%lld", k ? "," : "", (long long)s->t_ms);
        for (int i = 0; i < H_N; i++)
            rl_buf_printf(&b, ",\"%s\":%lld", hist_keys[i], (long long)s->v[i]);
        rl_buf_puts(&b, "}");
    }
    pthread_mutex_unlock(&d->mu);
    rl_buf_puts(&b, "]}");
    return resp_json(200, rl_buf_take(&b));
}

/* UI state names <-> store state names. */
static const struct {
    const char *ui, *store;
} state_names[] = {{"pending", "waiting"},
                   {"ready", "ready"},
                   {"inflight", "leased"},
                   {"retrying", "backoff"},
                   {"idle", "idle"}};

static const char *ui_state(const char *store) {
    for (size_t i = 0; i < sizeof(state_names) / sizeof(*state_names); i++)
        if (strcmp(state_names[i].store, store) == 0) return state_names[i].ui;
    return store;
}

/* Dead letters, optionally filtered by conversation id. `as_convs` shapes
 * the items like a conversation list's. */
static runlane_dashboard_response_t *dead_page(runlane_dashboard_t *d, const char *search,
                                               size_t offset, size_t limit, int as_convs) {
    char *json = NULL;
    int rc;
    size_t total = 0;
    int truncated = 0;
    cJSON *list = NULL;
    if (search && *search) {
        /* Bounded: a search looks at the oldest DB_DEAD_SEARCH_SCAN only. */
        rc = runlane_dead_list(&json, d->rl, 0, DB_DEAD_SEARCH_SCAN);
        if (rc != RUNLANE_OK) return resp_rc(rc);
        cJSON *all = cJSON_Parse(json);
        runlane_free(json);
        list = cJSON_CreateArray();
        if (!all || !list) {
            cJSON_Delete(all);
            cJSON_Delete(list);
            return NULL;
        }
        truncated = cJSON_GetArraySize(all) >= DB_DEAD_SEARCH_SCAN;
        cJSON *it = all->child;
        while (it) {
            cJSON *next = it->next;
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "conversation_id");
            if (cJSON_IsString(c) && strstr(c->valuestring, search)) {
                if (total >= offset && total < offset + limit)
                    cJSON_AddItemToArray(list, cJSON_DetachItemViaPointer(all, it));
                total++;
            }
            it = next;
        }
        cJSON_Delete(all);
    } else {
        char *tj = NULL;
        cJSON *t = NULL;
        rc = totals_get(d, &tj, &t);
        if (rc != RUNLANE_OK) return resp_rc(rc);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(t, "dead");
        total = cJSON_IsNumber(n) && n->valuedouble > 0 ? (size_t)rl_f64_to_i64(n->valuedouble) : 0;
        cJSON_Delete(t);
        runlane_free(tj);
        rc = runlane_dead_list(&json, d->rl, offset, limit);
        if (rc != RUNLANE_OK) return resp_rc(rc);
        list = cJSON_Parse(json);
        runlane_free(json);
        if (!list) return NULL;
    }
    if (as_convs) {
        for (cJSON *it = list->child; it; it = it->next) {
            cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
            if (id) cJSON_AddItemToObject(it, "dead_id", cJSON_Duplicate(id, 0));
            cJSON_AddStringToObject(it, "state", "dead");
            cJSON_DeleteItemFromObjectCaseSensitive(it, "messages");
        }
    }
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        cJSON_Delete(list);
        return NULL;
    }
    if (as_convs) cJSON_AddStringToObject(o, "state", "dead");
    cJSON_AddNumberToObject(o, "offset", (double)offset);
    cJSON_AddNumberToObject(o, "limit", (double)limit);
    cJSON_AddNumberToObject(o, "total", (double)total);
    cJSON_AddBoolToObject(o, "truncated", truncated);
    cJSON_AddNumberToObject(o, "now_ms", (double)rl_now_ms());
    cJSON_AddItemToObject(o, "items", list);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return resp_json(200, out);
}

static runlane_dashboard_response_t *get_list(runlane_dashboard_t *d, const char *query,
                                              int dead_only) {
    qparam_t params[] = {{"state", NULL}, {"search", NULL}, {"offset", NULL}, {"limit", NULL}};
    const size_t np = sizeof(params) / sizeof(*params);
    const char *bad = NULL;
    runlane_dashboard_response_t *res = NULL;
    size_t offset = 0, limit = 0;
    int q = parse_query(query, params, np, &bad);
    if (q < 0) goto out;
    if (q) {
        res = resp_error(400, bad);
        goto out;
    }
    if (param_size(params[2].value, 0, 0, DB_OFFSET_MAX, &offset)) {
        res = resp_error(400, "offset must be an integer in 0..1000000");
        goto out;
    }
    if (param_size(params[3].value, DB_LIMIT_DEFAULT, 1, DB_LIMIT_MAX, &limit)) {
        res = resp_error(400, "limit must be an integer in 1..200");
        goto out;
    }
    const char *search = params[1].value;
    if (search && strlen(search) > DB_SEARCH_MAX) {
        res = resp_error(400, "search is longer than 256 bytes");
        goto out;
    }
    const char *state = dead_only ? "dead" : params[0].value;
    if (!state) {
        res = resp_error(400, "state is required: pending, ready, inflight, retrying or dead");
        goto out;
    }
    if (strcmp(state, "dead") == 0) {
        res = dead_page(d, search, offset, limit, !dead_only);
        goto out;
    }
    const char *store_state = NULL;
    for (size_t i = 0; i < 4; i++)
        if (strcmp(state_names[i].ui, state) == 0) store_state = state_names[i].store;
    if (!store_state) {
        res = resp_error(400, "state must be pending, ready, inflight, retrying or dead");
        goto out;
    }
    runlane_t *rl = d->rl;
    char *json = NULL;
    pthread_mutex_lock(&rl->api_mu);
    int rc = rl->api_store->ops->conv_list(rl->api_store, store_state, search, offset, limit,
                                           d->scan, &json);
    pthread_mutex_unlock(&rl->api_mu);
    if (rc != RUNLANE_OK) {
        res = resp_rc(rc);
        goto out;
    }
    cJSON *o = cJSON_Parse(json);
    free(json);
    if (!o) goto out;
    for (cJSON *it = cJSON_GetObjectItemCaseSensitive(o, "items")->child; it; it = it->next) {
        cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "state");
        if (cJSON_IsString(st))
            cJSON_ReplaceItemInObjectCaseSensitive(it, "state",
                                                   cJSON_CreateString(ui_state(st->valuestring)));
    }
    cJSON_AddStringToObject(o, "state", state);
    cJSON_AddNumberToObject(o, "offset", (double)offset);
    cJSON_AddNumberToObject(o, "limit", (double)limit);
    json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    res = resp_json(200, json);
out:
    params_free(params, np);
    return res;
}

/* Cuts the content of records longer than DB_CONTENT_SHOWN (at a UTF-8
 * character boundary) so one huge message cannot blow up a page. */
static void cut_contents(cJSON *arr) {
    for (cJSON *it = arr ? arr->child : NULL; it; it = it->next) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(c) || strlen(c->valuestring) <= DB_CONTENT_SHOWN) continue;
        size_t n = DB_CONTENT_SHOWN;
        while (n > 0 && ((unsigned char)c->valuestring[n] & 0xC0) == 0x80) n--;
        c->valuestring[n] = 0;
        cJSON_AddBoolToObject(it, "content_truncated", 1);
    }
}

static runlane_dashboard_response_t *get_conversation(runlane_dashboard_t *d, const char *query) {
    qparam_t params[] = {{"id", NULL}};
    const char *bad = NULL;
    runlane_dashboard_response_t *res = NULL;
    char *status = NULL, *peek = NULL, *provider = NULL;
    cJSON *o = NULL, *p = NULL;
    int q = parse_query(query, params, 1, &bad);
    if (q < 0) goto out;
    if (q) {
        res = resp_error(400, bad);
        goto out;
    }
    const char *conv = params[0].value;
    if (!conv) {
        res = resp_error(400, "id is required");
        goto out;
    }
    int rc = rl_check_conversation_id(conv);
    if (rc == RUNLANE_OK) rc = runlane_status(&status, d->rl, conv);
    if (rc == RUNLANE_OK) {
        runlane_t *rl = d->rl;
        pthread_mutex_lock(&rl->api_mu);
        rc = rl->api_store->ops->conv_peek(rl->api_store, conv, DB_PEEK_MAX, &peek);
        pthread_mutex_unlock(&rl->api_mu);
    }
    if (rc == RUNLANE_OK) rc = runlane_conversation_map_get(&provider, d->rl, conv);
    if (rc != RUNLANE_OK) {
        res = resp_rc(rc);
        goto out;
    }
    o = cJSON_Parse(status);
    p = cJSON_Parse(peek);
    if (!o || !p) goto out;
    cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (cJSON_IsString(st))
        cJSON_ReplaceItemInObjectCaseSensitive(o, "state",
                                               cJSON_CreateString(ui_state(st->valuestring)));
    cJSON *pend = cJSON_DetachItemFromObjectCaseSensitive(p, "pending");
    cJSON *batch = cJSON_DetachItemFromObjectCaseSensitive(p, "batch");
    cut_contents(pend);
    cut_contents(batch);
    cJSON_AddItemToObject(o, "pending_messages", pend ? pend : cJSON_CreateArray());
    cJSON_AddItemToObject(o, "batch_messages", batch ? batch : cJSON_CreateArray());
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(p, "token");
    if (cJSON_IsString(tok) && *tok->valuestring)
        cJSON_AddStringToObject(o, "lease_token", tok->valuestring);
    else
        cJSON_AddNullToObject(o, "lease_token");
    if (provider)
        cJSON_AddStringToObject(o, "provider_conversation_id", provider);
    else
        cJSON_AddNullToObject(o, "provider_conversation_id");
    cJSON_AddNumberToObject(o, "now_ms", (double)rl_now_ms());
    res = resp_json(200, cJSON_PrintUnformatted(o));
out:
    cJSON_Delete(o);
    cJSON_Delete(p);
    runlane_free(status);
    free(peek);
    runlane_free(provider);
    params_free(params, 1);
    return res;
}

/* ------------------------------------------------------------------ */
/* actions                                                            */
/* ------------------------------------------------------------------ */

/* Constant-time comparison of the presented token with ours. */
static int csrf_ok(const runlane_dashboard_t *d, const char *presented) {
    if (!presented) return 0;
    size_t n = strlen(presented);
    if (n != 64) return 0; /* the length is no secret */
    unsigned char diff = 0;
    for (size_t i = 0; i < 64; i++) diff |= (unsigned char)(presented[i] ^ d->csrf[i]);
    return diff == 0;
}

/* Parses a POST body: a JSON object whose members are all in `allowed`. */
static runlane_dashboard_response_t *parse_body(const char *body, size_t len,
                                                const char *const *allowed, cJSON **out) {
    *out = NULL;
    if (!body || !len) return resp_error(400, "the body must be a JSON object");
    if (rl_json_check_strings(body, len, "body") != RUNLANE_OK || !rl_utf8_valid(body, len))
        return resp_error(400, runlane_error_message(runlane_error_last()));
    /* One JSON object and nothing after it but blanks: cJSON alone would
     * ignore trailing bytes ("{...} junk", or anything after a NUL). */
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (o && end) {
        size_t at = (size_t)(end - body);
        while (at < len && (body[at] == ' ' || body[at] == '\t' || body[at] == '\r' || body[at] == '\n'))
            at++;
        if (at < len) {
            cJSON_Delete(o);
            o = NULL;
        }
    }
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return resp_error(400, "the body must be a JSON object");
    }
    for (const cJSON *it = o->child; it; it = it->next) {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++) ok |= strcmp(it->string, allowed[i]) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown member \"%.64s\" in the body", it->string);
            cJSON_Delete(o);
            return resp_error(400, msg);
        }
    }
    *out = o;
    return NULL;
}

static runlane_dashboard_response_t *post_dead(runlane_dashboard_t *d, const char *body,
                                               size_t len, int retry) {
    static const char *const allowed[] = {"id", "all", NULL};
    cJSON *o = NULL;
    runlane_dashboard_response_t *bad = parse_body(body, len, allowed, &o);
    if (bad || !o) return bad;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(o, "all");
    runlane_dashboard_response_t *res;
    if ((id && all) || (!id && !all) || (id && (!cJSON_IsString(id) || !*id->valuestring ||
                                                strlen(id->valuestring) >= RUNLANE_ID_MAX)) ||
        (all && !cJSON_IsTrue(all))) {
        res = resp_error(400, "the body must be {\"id\": \"<dead letter id>\"} or {\"all\": true}");
    } else {
        size_t count = 0;
        const char *dead_id = id ? id->valuestring : NULL;
        int rc = retry ? runlane_dead_retry(&count, d->rl, dead_id)
                       : runlane_dead_purge(&count, d->rl, dead_id);
        res = rc == RUNLANE_OK ? resp_json(200, rl_asprintf("{\"ok\":true,\"count\":%zu}", count))
                               : resp_rc(rc);
    }
    cJSON_Delete(o);
    return res;
}

static runlane_dashboard_response_t *post_release(runlane_dashboard_t *d, const char *body,
                                                  size_t len) {
    static const char *const allowed[] = {"conversation_id", "lease_token", NULL};
    cJSON *o = NULL;
    runlane_dashboard_response_t *bad = parse_body(body, len, allowed, &o);
    if (bad || !o) return bad;
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(o, "conversation_id");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(o, "lease_token");
    runlane_dashboard_response_t *res;
    int tok_ok = cJSON_IsString(tok) && *tok->valuestring && strlen(tok->valuestring) < 32 &&
                 strspn(tok->valuestring, "0123456789") == strlen(tok->valuestring);
    if (!cJSON_IsString(conv) || rl_check_conversation_id(conv->valuestring) != RUNLANE_OK ||
        !tok_ok) {
        res = resp_error(400, "the body must be {\"conversation_id\": \"...\", "
                              "\"lease_token\": \"<decimal token of the conversation view>\"}");
    } else {
        runlane_t *rl = d->rl;
        pthread_mutex_lock(&rl->api_mu);
        int rc = rl->api_store->ops->release(rl->api_store, &rl->pol, conv->valuestring,
                                             tok->valuestring);
        pthread_mutex_unlock(&rl->api_mu);
        if (rc == RUNLANE_OK) {
            rl_worker_wake(rl);
            res = resp_json(200, rl_strdup("{\"ok\":true}"));
        } else if (rc == RUNLANE_ERR_STALE) {
            res = resp_error(409, "the lease changed meanwhile (released, renewed by another "
                                  "claim or expired): nothing was done");
        } else {
            res = resp_rc(rc);
        }
    }
    cJSON_Delete(o);
    return res;
}

/* ------------------------------------------------------------------ */
/* routing                                                            */
/* ------------------------------------------------------------------ */

typedef enum { R_PAGE, R_SESSION, R_OVERVIEW, R_CONVS, R_CONV, R_DEAD, R_RETRY, R_PURGE,
               R_RELEASE } route_id_t;

static const struct {
    const char *path;
    route_id_t id;
    int post;
} routes[] = {
    {"/", R_PAGE, 0},
    {"/index.html", R_PAGE, 0},
    {"/api/session", R_SESSION, 0},
    {"/api/overview", R_OVERVIEW, 0},
    {"/api/conversations", R_CONVS, 0},
    {"/api/conversation", R_CONV, 0},
    {"/api/dead", R_DEAD, 0},
    {"/api/dead/retry", R_RETRY, 1},
    {"/api/dead/purge", R_PURGE, 1},
    {"/api/lease/release", R_RELEASE, 1},
};

static runlane_dashboard_response_t *route(runlane_dashboard_t *d, const char *method,
                                           const char *path, const char *query,
                                           const char *body, size_t body_len, const char *csrf) {
    /* Empty path: the mount point itself without its trailing slash. */
    if (!*path) path = "/";
    int found = -1;
    for (size_t i = 0; i < sizeof(routes) / sizeof(*routes); i++)
        if (strcmp(routes[i].path, path) == 0) found = (int)i;
    if (found < 0) return resp_error(404, "no such endpoint");
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    if (routes[found].post ? !is_post : !is_get)
        return resp_error(405, routes[found].post ? "this endpoint takes POST"
                                                  : "this endpoint takes GET");
    if (routes[found].post) {
        if (body_len > DB_BODY_MAX) return resp_error(413, "the body is over 16 KiB");
        if (!csrf_ok(d, csrf))
            return resp_error(403, "missing or wrong CSRF token (X-Runlane-CSRF header; "
                                   "see GET api/session)");
        if (d->read_only) return resp_error(403, "this dashboard is read-only");
    }
    switch (routes[found].id) {
    case R_PAGE: {
        char *html = malloc(rl_dashboard_html_len + 1);
        if (!html) return NULL;
        memcpy(html, rl_dashboard_html, rl_dashboard_html_len);
        html[rl_dashboard_html_len] = 0;
        return resp_new(200, "text/html; charset=utf-8", html, rl_dashboard_html_len);
    }
    case R_SESSION: return get_session(d);
    case R_OVERVIEW: return get_overview(d);
    case R_CONVS: return get_list(d, query, 0);
    case R_CONV: return get_conversation(d, query);
    case R_DEAD: return get_list(d, query, 1);
    case R_RETRY: return post_dead(d, body, body_len, 1);
    case R_PURGE: return post_dead(d, body, body_len, 0);
    case R_RELEASE: return post_release(d, body, body_len);
    }
    return resp_error(404, "no such endpoint");
}

RUNLANE_EXTERN(runlane_err_t)
runlane_dashboard_handle(runlane_dashboard_response_t **out, runlane_dashboard_t *d,
                         const char *method, const char *path, const char *query,
                         const char *body, size_t body_len, const char *csrf_header) {
    if (!out) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_dashboard_handle: out is NULL");
    *out = NULL;
    if (!d || !method || !path || (body_len && !body))
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "runlane_dashboard_handle: d, method and path are required");
    runlane_dashboard_response_t *r = route(d, method, path, query, body, body_len, csrf_header);
    if (!r) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    *out = r;
    rl_error_clear();
    return RUNLANE_OK;
}

RUNLANE_EXTERN(int) runlane_dashboard_response_status(const runlane_dashboard_response_t *r) {
    return r ? r->status : 0;
}

RUNLANE_EXTERN(const char *)
runlane_dashboard_response_content_type(const runlane_dashboard_response_t *r) {
    return r ? r->ctype : "";
}

RUNLANE_EXTERN(const char *)
runlane_dashboard_response_headers(const runlane_dashboard_response_t *r) {
    return r ? r->headers : "{}";
}

RUNLANE_EXTERN(const char *)
runlane_dashboard_response_body(const runlane_dashboard_response_t *r, size_t *len_out) {
    if (len_out) *len_out = r ? r->len : 0;
    return r ? r->body : "";
}

RUNLANE_EXTERN(void) runlane_dashboard_response_destroy(runlane_dashboard_response_t *r) {
    if (!r) return;
    free(r->headers);
    free(r->body);
    free(r);
}
