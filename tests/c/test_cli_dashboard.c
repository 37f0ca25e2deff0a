/*
 * test_cli_dashboard.c - `runlane dashboard`: the real program, started on a
 * free port (--listen 127.0.0.1:0, port read from its first line), spoken to
 * with libcurl. It serves the page and the API; bad input gets a 4xx and
 * changes nothing; off loopback it refuses to start without a token; the
 * token is refused when wrong and accepted as a header or a cookie; a
 * foreign Host header is refused on loopback; the history is sampled
 * without any request; SIGINT and SIGTERM stop it cleanly; and no answer
 * carries the store password or the API key.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "rltest.h"
#include "runlane.h"

extern char **environ;

#ifndef RUNLANE_CLI_PATH
#error "RUNLANE_CLI_PATH (the runlane program) must be defined by the build"
#endif

#define T(ms) ((int)((ms) * rl_test_time_scale()))
#define TOKEN "test-token-0123456789abcdef"

static const char *redis_url; /* NULL: the Redis half does not run */
static int seq;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the program ---- */

typedef struct dash {
    pid_t pid;
    int out_fd;
    char url[128];  /* http://127.0.0.1:PORT/ */
    char first[1024]; /* the first line it printed */
    char errpath[64];
} dash_t;

/* Reads one line of the program's stdout within the deadline. */
static int read_line(int fd, char *dst, size_t n, int timeout_ms) {
    size_t used = 0;
    int64_t end = mono_ms() + timeout_ms;
    while (used + 1 < n) {
        int left = (int)(end - mono_ms());
        if (left <= 0) break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0) continue;
        ssize_t r = read(fd, dst + used, 1);
        if (r <= 0) break;
        if (dst[used] == '\n') {
            dst[used] = '\0';
            return 1;
        }
        used++;
    }
    dst[used] = '\0';
    return 0;
}

/* Starts `runlane [--store S] ARGS...`; with `expect_listen` waits for
 * the "listening on URL" line. `env_token`: RUNLANE_DASHBOARD_TOKEN. */
static void dash_start(dash_t *d, const char *store, const char *const *args,
                       const char *env_token, int expect_listen) {
    memset(d, 0, sizeof(*d));
    const char *argv[32];
    int n = 0;
    argv[n++] = RUNLANE_CLI_PATH;
    if (store) {
        argv[n++] = "--store";
        argv[n++] = store;
    }
    argv[n++] = "dashboard";
    for (; args && *args && n < 30; args++) argv[n++] = *args;
    argv[n] = NULL;
    int out[2];
    RL_CHECK(pipe(out) == 0);
    snprintf(d->errpath, sizeof(d->errpath), "/tmp/rl-dash-%ld-%d.err", (long)getpid(), ++seq);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, d->errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    /* The environment without any token of the caller, plus ours. */
    char *envp[256];
    int ne = 0;
    char tok[300];
    for (char **e = environ; *e && ne < 250; e++)
        if (strncmp(*e, "RUNLANE_DASHBOARD_TOKEN=", 24) != 0 && strncmp(*e, "RUNLANE_STORE=", 14) != 0)
            envp[ne++] = *e;
    if (env_token) {
        snprintf(tok, sizeof(tok), "RUNLANE_DASHBOARD_TOKEN=%s", env_token);
        envp[ne++] = tok;
    }
    envp[ne] = NULL;
    int rc = posix_spawn(&d->pid, RUNLANE_CLI_PATH, &fa, NULL, (char *const *)argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    d->out_fd = out[0];
    RL_CHECK_MSG(rc == 0, "spawn %s: %s", RUNLANE_CLI_PATH, strerror(rc));
    if (!expect_listen) return;
    int got = read_line(d->out_fd, d->first, sizeof(d->first), T(10000));
    const char *u = strstr(d->first, "http://");
    if (!got || !u) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        RL_FAILF("dashboard did not report where it listens; stdout \"%s\"", d->first);
    }
    size_t k = strcspn(u, " ");
    RL_CHECK(k < sizeof(d->url));
    memcpy(d->url, u, k);
    d->url[k] = '\0';
}

/* Waits for the program's exit (killing it after the deadline); returns
 * its exit status, or -1 when it had to be killed or died of a signal. */
static int dash_wait(dash_t *d, int timeout_ms) {
    int64_t end = mono_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid) break;
        if (mono_ms() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &st, 0);
            close(d->out_fd);
            return -1;
        }
        usleep(10000);
    }
    close(d->out_fd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int dash_stop(dash_t *d, int sig) {
    kill(d->pid, sig);
    return dash_wait(d, T(5000));
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---- HTTP ---- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
    size_t hlen;
} resp_t;

static size_t on_body(char *p, size_t s, size_t n, void *ud) {
    resp_t *r = ud;
    char *nb = realloc(r->body, r->len + s * n + 1);
    if (!nb) return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, s * n);
    r->len += s * n;
    r->body[r->len] = '\0';
    return s * n;
}

static size_t on_header(char *p, size_t s, size_t n, void *ud) {
    resp_t *r = ud;
    size_t k = s * n;
    if (r->hlen + k < sizeof(r->headers)) {
        memcpy(r->headers + r->hlen, p, k);
        r->hlen += k;
        r->headers[r->hlen] = '\0';
    }
    return k;
}

typedef struct chunked_src {
    size_t left;
} chunked_src_t;

static size_t on_read(char *buf, size_t s, size_t n, void *ud) {
    chunked_src_t *c = ud;
    size_t k = s * n < c->left ? s * n : c->left;
    memset(buf, 'x', k);
    c->left -= k;
    return k;
}

/* One request: `hdrs` NULL-terminated "Name: value" lines; `chunked_len`
 * > 0 sends that many bytes as a chunked body instead of `body`. */
static resp_t http(const char *method, const char *url, const char *const *hdrs,
                   const char *body, size_t chunked_len) {
    resp_t r;
    memset(&r, 0, sizeof(r));
    r.body = calloc(1, 1);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    for (; hdrs && *hdrs; hdrs++) h = curl_slist_append(h, *hdrs);
    chunked_src_t src = {chunked_len};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)T(10000));
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    /* A large body goes out only after the server's "100 Continue" (or its
     * early refusal, a 413), as a browser's would wait for an answer:
     * otherwise (curl asks for 100 only above 1 MiB, and sends anyway after
     * 1 s) the server answers 413 and closes while the body is still going
     * out, which curl reports as a send error, not the 413. */
    if (chunked_len || (body && strlen(body) > 16384)) {
        h = curl_slist_append(h, "Expect: 100-continue");
        curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, (long)T(10000));
    }
    if (chunked_len) {
        h = curl_slist_append(h, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &src);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    else r.status = -(long)rc;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return r;
}

static void resp_free(resp_t *r) {
    free(r->body);
    r->body = NULL;
}

static resp_t get(const dash_t *d, const char *path_query, const char *const *hdrs) {
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", d->url, path_query);
    return http("GET", url, hdrs, NULL, 0);
}

static double jnum(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

/* GET that must answer 200 with JSON. */
static cJSON *get_json(const dash_t *d, const char *path_query, const char *const *hdrs) {
    resp_t r = get(d, path_query, hdrs);
    if (r.status != 200) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", r.body ? r.body : "");
        resp_free(&r);
        RL_FAILF("GET %s: status %ld %s", path_query, r.status, msg);
    }
    cJSON *j = cJSON_Parse(r.body);
    resp_free(&r);
    RL_CHECK_MSG(j != NULL, "GET %s: body is not JSON", path_query);
    return j;
}

static char *csrf_of(const dash_t *d, const char *const *hdrs) {
    cJSON *s = get_json(d, "api/session", hdrs);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "csrf_token");
    RL_CHECK(cJSON_IsString(t));
    char *c = strdup(t->valuestring);
    cJSON_Delete(s);
    return c;
}

/* ------------------------------------------------------------------ */

/* Serves the page and the API on a free loopback port; stops on SIGTERM
 * and on SIGINT with exit status 0. */
static void test_serves_and_stops(void) {
    static const int sigs[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        dash_t d;
        const char *args[] = {"--listen", "127.0.0.1:0", NULL};
        dash_start(&d, "memory", args, NULL, 1);
        RL_CHECK_MSG(strncmp(d.url, "http://127.0.0.1:", 17) == 0 && strcmp(d.url, "http://127.0.0.1:0/"),
                     "expected a real port, got %s", d.url);
        resp_t r = get(&d, "", NULL);
        int page_ok = r.status == 200 && strstr(r.body, "<title>runlane dashboard</title>") &&
                      strstr(r.headers, "Content-Security-Policy:");
        resp_free(&r);
        cJSON *o = get_json(&d, "api/overview", NULL);
        int has_totals = cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "totals"));
        cJSON_Delete(o);
        int st = dash_stop(&d, sigs[i]);
        unlink(d.errpath);
        RL_CHECK_MSG(page_ok, "GET / did not serve the page with its headers");
        RL_CHECK(has_totals);
        RL_CHECK_MSG(st == 0, "signal %d: expected exit status 0, got %d", sigs[i], st);
    }
}

/* Off loopback without a token: refused at start (exit 2), never listens. */
static void test_non_loopback_needs_token(void) {
    dash_t d;
    const char *args[] = {"--listen", "0.0.0.0:0", NULL};
    dash_start(&d, "memory", args, NULL, 0);
    char line[256];
    int listened = read_line(d.out_fd, line, sizeof(line), T(5000));
    int st = dash_wait(&d, T(5000));
    char *err = slurp(d.errpath);
    unlink(d.errpath);
    int says = strstr(err, "token is required") != NULL;
    free(err);
    RL_CHECK_MSG(!listened, "it listened anyway: %s", line);
    RL_CHECK_INT(2, st);
    RL_CHECK_MSG(says, "stderr does not say a token is required");

    /* a token too short to be one is refused too */
    const char *args2[] = {"--listen", "0.0.0.0:0", "--token", "short", NULL};
    dash_start(&d, "memory", args2, NULL, 0);
    st = dash_wait(&d, T(5000));
    unlink(d.errpath);
    RL_CHECK_INT(2, st);
    /* a bad address */
    const char *args3[] = {"--listen", "127.0.0.1:99999", NULL};
    dash_start(&d, "memory", args3, NULL, 0);
    st = dash_wait(&d, T(5000));
    unlink(d.errpath);
    RL_CHECK_INT(2, st);
}

/* With a token (from the environment here), off loopback: every request
 * without it or with a wrong one is 401; a Bearer header or the cookie
 * set by ?token= is accepted; the token is never printed. */
static void test_token(void) {
    dash_t d;
    const char *args[] = {"--listen", "0.0.0.0:0", NULL};
    dash_start(&d, "memory", args, TOKEN, 1);
    /* reach it over loopback: 0.0.0.0 listens there too */
    char port[16];
    snprintf(port, sizeof(port), "%s", strrchr(d.url, ':') + 1);
    snprintf(d.url, sizeof(d.url), "http://127.0.0.1:%s", port);
    int printed = strstr(d.first, TOKEN) != NULL;

    const char *paths[] = {"", "api/session", "api/overview", "api/conversations?state=dead", NULL};
    const char *none[] = {NULL};
    const char *wrong[] = {"Authorization: Bearer test-token-0123456789abcdeX", NULL};
    const char *wrong_cookie[] = {"Cookie: runlane_dashboard_token=nope", NULL};
    const char *good[] = {"Authorization: Bearer " TOKEN, NULL};
    int bad = 0;
    for (int i = 0; paths[i]; i++) {
        const char *const *sets[3] = {none, wrong, wrong_cookie};
        for (int k = 0; k < 3; k++) {
            resp_t r = get(&d, paths[i], sets[k]);
            if (r.status != 401 || strstr(r.body, "csrf") || strstr(r.body, "<html")) {
                fprintf(stderr, "  GET /%s (set %d): %ld %s\n", paths[i], k, r.status, r.body);
                bad++;
            }
            resp_free(&r);
        }
        resp_t r = get(&d, paths[i], good);
        if (r.status != 200) bad++;
        resp_free(&r);
    }
    resp_t r = get(&d, "?token=wrong-token-0123456789", NULL);
    long wrong_q = r.status;
    resp_free(&r);
    /* ?token= at the page: 303 to the page without it, with an HttpOnly
     * cookie that then opens the API */
    r = get(&d, "?token=" TOKEN, NULL);
    long st303 = r.status;
    char *sc = strstr(r.headers, "Set-Cookie: runlane_dashboard_token=" TOKEN);
    int httponly = sc && strstr(sc, "HttpOnly") && strstr(sc, "SameSite=Strict");
    int loc = strstr(r.headers, "Location: ./") != NULL;
    resp_free(&r);
    const char *cookie[] = {"Cookie: other=1; runlane_dashboard_token=" TOKEN, NULL};
    r = get(&d, "api/session", cookie);
    long with_cookie = r.status;
    resp_free(&r);
    int st = dash_stop(&d, SIGTERM);
    char *err = slurp(d.errpath);
    unlink(d.errpath);
    int in_err = strstr(err, TOKEN) != NULL;
    free(err);
    RL_CHECK_INT(0, bad);
    RL_CHECK_INT(401, wrong_q);
    RL_CHECK_INT(303, st303);
    RL_CHECK_MSG(httponly && loc, "expected an HttpOnly SameSite=Strict cookie and Location ./");
    RL_CHECK_INT(200, with_cookie);
    RL_CHECK_MSG(!printed && !in_err, "the token was printed");
    RL_CHECK_INT(0, st);
}

/* On loopback without a token, only loopback Host headers are served (a
 * DNS-rebinding page names its own host). */
static void test_loopback_host_check(void) {
    dash_t d;
    const char *args[] = {"--listen", "127.0.0.1:0", NULL};
    dash_start(&d, "memory", args, NULL, 1);
    const char *hosts[][2] = {{"Host: evil.example", "403"},      {"Host: evil.example:80", "403"},
                              {"Host: 127.0.0.1.evil.example", "403"}, {"Host: [::2]:1", "403"},
                              {"Host: localhost:1234", "200"},    {"Host: 127.0.0.1", "200"},
                              {"Host: [::1]:8080", "200"}};
    int bad = 0;
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        const char *h[] = {hosts[i][0], NULL};
        resp_t r = get(&d, "api/session", h);
        if (r.status != atol(hosts[i][1])) {
            fprintf(stderr, "  %s: expected %s, got %ld\n", hosts[i][0], hosts[i][1], r.status);
            bad++;
        }
        resp_free(&r);
    }
    dash_stop(&d, SIGTERM);
    unlink(d.errpath);
    RL_CHECK_INT(0, bad);
}

/* Bad input through the server: 4xx, including bodies over the cap sent
 * with a Content-Length (refused before reading) or chunked (read and
 * dropped past the cap); unknown paths, bad paging, malformed JSON,
 * forged CSRF. */
static void test_bad_input(void) {
    dash_t d;
    const char *args[] = {"--listen", "127.0.0.1:0", NULL};
    dash_start(&d, "memory", args, NULL, 1);
    char *csrf = csrf_of(&d, NULL);
    char good_hdr[128], forged_hdr[128];
    snprintf(good_hdr, sizeof(good_hdr), "X-Runlane-CSRF: %s", csrf);
    snprintf(forged_hdr, sizeof(forged_hdr), "X-Runlane-CSRF: %064d", 0);
    const char *good[] = {good_hdr, "Content-Type: application/json", NULL};
    const char *forged[] = {forged_hdr, NULL};
    size_t bign = 1024 * 1024;
    char *big = malloc(bign + 1);
    memset(big, 'a', bign);
    big[bign] = '\0';
    struct {
        const char *method, *path;
        const char *const *hdrs;
        const char *body;
        size_t chunked;
        long want;
    } cases[] = {
        {"GET", "nope", NULL, NULL, 0, 404},
        {"GET", "api/nope", NULL, NULL, 0, 404},
        {"GET", "api/conversations?state=bogus", NULL, NULL, 0, 400},
        {"GET", "api/conversations?state=ready&limit=0", NULL, NULL, 0, 400},
        {"GET", "api/conversations?state=ready&offset=-1", NULL, NULL, 0, 400},
        {"GET", "api/conversations?state=ready&limit=99999999999999999999", NULL, NULL, 0, 400},
        {"GET", "api/conversation", NULL, NULL, 0, 400},
        {"DELETE", "api/dead", NULL, NULL, 0, 405},
        {"POST", "api/dead/retry", NULL, "{\"all\":true}", 0, 403},
        {"POST", "api/dead/retry", forged, "{\"all\":true}", 0, 403},
        {"POST", "api/dead/retry", good, "{\"id\":", 0, 400},
        {"POST", "api/dead/retry", good, "[]", 0, 400},
        {"POST", "api/dead/retry", good, big, 0, 413},
        {"POST", "api/dead/retry", good, NULL, 300000, 413},
        {"POST", "api/dead/retry", good, NULL, 16385, 413},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[512];
        snprintf(url, sizeof(url), "%s%s", d.url, cases[i].path);
        resp_t r = http(cases[i].method, url, cases[i].hdrs, cases[i].body, cases[i].chunked);
        cJSON *j = cJSON_Parse(r.body);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (r.status != cases[i].want || !cJSON_IsObject(e) || jnum(e, "status") != cases[i].want) {
            fprintf(stderr, "  case %zu %s /%s: expected %ld with an error object, got %ld %.200s\n",
                    i, cases[i].method, cases[i].path, cases[i].want, r.status, r.body);
            bad++;
        }
        cJSON_Delete(j);
        resp_free(&r);
    }
    /* still serving after all that */
    cJSON *o = get_json(&d, "api/overview", NULL);
    cJSON_Delete(o);
    free(big);
    free(csrf);
    int st = dash_stop(&d, SIGTERM);
    unlink(d.errpath);
    RL_CHECK_INT(0, bad);
    RL_CHECK_INT(0, st);
}

/* The history is sampled on a timer, with no request in between. */
static void test_history_sampled_without_requests(void) {
    dash_t d;
    const char *args[] = {"--listen", "127.0.0.1:0", "--history-interval", "1", NULL};
    dash_start(&d, "memory", args, NULL, 1);
    /* A positive check: at least 3 samples (0, 1, 2 s) once 3.5 s passed;
     * a request takes at most one more, so 3 proves the timer. */
    usleep(3500 * 1000);
    cJSON *o = get_json(&d, "api/overview", NULL);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "history"));
    cJSON_Delete(o);
    dash_stop(&d, SIGTERM);
    unlink(d.errpath);
    RL_CHECK_MSG(n >= 3, "expected >= 3 history samples after 3.5 s, got %d", n);
}

/* ---- Redis: a dead letter through the server; secrets ---- */

static runlane_t *client(const char *prefix, const char *const *kv) {
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    if (runlane_conf_set(conf, "store", redis_url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err)))
        RL_FAILF("conf: %s", err);
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(conf, kv[0], kv[1], err, sizeof(err))) RL_FAILF("conf %s: %s", kv[0], err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) RL_FAILF("runlane_new: %s", err);
    return rl;
}

static runlane_event_t *next_batch(runlane_t *rl, int timeout_ms) {
    int64_t end = mono_ms() + timeout_ms;
    while (mono_ms() < end) {
        runlane_event_t *ev = runlane_poll(rl, 20);
        if (!ev) continue;
        if (runlane_event_type(ev) == RUNLANE_EVENT_BATCH) return ev;
        runlane_event_destroy(ev);
    }
    return NULL;
}

static double dead_count(runlane_t *rl) {
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, NULL));
    cJSON *j = cJSON_Parse(st);
    double n = jnum(j, "dead");
    cJSON_Delete(j);
    runlane_free(st);
    return n;
}

/* A dead letter: a forged retry changes nothing; a retry with the CSRF
 * token of the session delivers the batch again. */
static void test_retry_dead_letter_over_http(void) {
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "cd%ld", (long)getpid());
    const char *kv[] = {"batch.window.ms", "0", NULL};
    runlane_t *rl = client(prefix, kv);
    RL_CHECK_OK(runlane_start(rl));
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "cli-dash-1", "hello", NULL));
    runlane_event_t *ev = next_batch(rl, T(5000));
    RL_CHECK(ev != NULL);
    char batch[RUNLANE_ID_MAX];
    snprintf(batch, sizeof(batch), "%s", runlane_event_batch_id(ev));
    RL_CHECK_OK(runlane_batch_fail(rl, batch, "provider said no", 0));
    runlane_event_destroy(ev);
    RL_CHECK_INT(1, dead_count(rl));

    dash_t d;
    char xprefix[80];
    snprintf(xprefix, sizeof(xprefix), "key.prefix=%s", prefix);
    const char *args[] = {"-X", xprefix, "--listen", "127.0.0.1:0", NULL};
    dash_start(&d, redis_url, args, NULL, 1);
    cJSON *l = get_json(&d, "api/conversations?state=dead", NULL);
    int listed = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(l, "items"));
    cJSON_Delete(l);
    char url[256], body[256], forged_hdr[128], good_hdr[128];
    snprintf(url, sizeof(url), "%sapi/dead/retry", d.url);
    snprintf(body, sizeof(body), "{\"id\":\"%s\"}", batch);
    snprintf(forged_hdr, sizeof(forged_hdr), "X-Runlane-CSRF: %064d", 7);
    const char *forged[] = {forged_hdr, NULL};
    resp_t r = http("POST", url, forged, body, 0);
    long forged_st = r.status;
    resp_free(&r);
    double dead_after_forged = dead_count(rl);
    char *csrf = csrf_of(&d, NULL);
    snprintf(good_hdr, sizeof(good_hdr), "X-Runlane-CSRF: %s", csrf);
    free(csrf);
    const char *good[] = {good_hdr, NULL};
    r = http("POST", url, good, body, 0);
    long retry_st = r.status;
    resp_free(&r);
    ev = next_batch(rl, T(5000));
    int redelivered = ev && strcmp(runlane_event_conversation_id(ev), "cli-dash-1") == 0;
    if (ev) {
        runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL);
        runlane_event_destroy(ev);
    }
    dash_stop(&d, SIGTERM);
    unlink(d.errpath);
    runlane_stop(rl, RUNLANE_STOP_DRAIN, 2000);
    runlane_destroy(rl);
    RL_CHECK_INT(1, listed);
    RL_CHECK_INT(403, forged_st);
    RL_CHECK_INT(1, dead_after_forged);
    RL_CHECK_INT(200, retry_st);
    RL_CHECK_MSG(redelivered, "the retried dead letter was not delivered again");
}

/* The redis URL with user and password inserted: redis://U:P@host... */
static void url_with_auth(char *dst, size_t n, const char *user, const char *pw) {
    const char *rest = strstr(redis_url, "://");
    rest = rest ? rest + 3 : redis_url;
    const char *at = strchr(rest, '@');
    if (at) rest = at + 1;
    snprintf(dst, n, "redis://%s:%s@%s", user, pw, rest);
}

static int contains_secret(const char *s) {
    return s && (strstr(s, "sk-cli-dashboard-secret") || strstr(s, "pw-cli-dashboard-secret"));
}

/* No answer carries the store password or the API key: every endpoint, the
 * errors, the page; and a store that refuses the password answers 503
 * without it. */
static void test_no_secrets(void) {
    char cmd[512];
    const char *rest = strstr(redis_url, "://") + 3;
    /* an ACL user, so the shared test server keeps its default user */
    snprintf(cmd, sizeof(cmd),
             "redis-cli -u '%s' ACL SETUSER rldash on '>pw-cli-dashboard-secret' '~*' '&*' '+@all' >/dev/null",
             redis_url);
    RL_CHECK_MSG(system(cmd) == 0, "redis-cli ACL SETUSER failed (%s)", rest);
    char store[300];
    url_with_auth(store, sizeof(store), "rldash", "pw-cli-dashboard-secret");
    char prefix[80];
    snprintf(prefix, sizeof(prefix), "key.prefix=cs%ld", (long)getpid());
    const char *args[] = {"-X", prefix, "-X", "openai.api.key=sk-cli-dashboard-secret",
                          "--listen", "127.0.0.1:0", NULL};
    dash_t d;
    dash_start(&d, store, args, NULL, 1);
    int leak_line = contains_secret(d.first);
    char *csrf = csrf_of(&d, NULL);
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "X-Runlane-CSRF: %s", csrf);
    free(csrf);
    const char *h[] = {hdr, NULL};
    const char *gets[] = {"", "api/session", "api/overview",
                          "api/conversations?state=pending", "api/conversations?state=ready",
                          "api/conversations?state=inflight", "api/conversations?state=retrying",
                          "api/conversations?state=dead", "api/conversation?id=x", "api/dead",
                          "api/nope", "api/conversations?state=zzz", NULL};
    int leaks = 0;
    for (int i = 0; gets[i]; i++) {
        resp_t r = get(&d, gets[i], NULL);
        if (contains_secret(r.body) || contains_secret(r.headers)) {
            fprintf(stderr, "  GET /%s shows a secret\n", gets[i]);
            leaks++;
        }
        resp_free(&r);
    }
    const char *posts[][2] = {{"api/dead/retry", "{\"all\":true}"}, {"api/dead/purge", "{\"id\":\"x\"}"},
                              {"api/lease/release", "{\"conversation_id\":\"x\",\"lease_token\":\"1\"}"},
                              {"api/dead/retry", "{bad"}};
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++) {
        char url[256];
        snprintf(url, sizeof(url), "%s%s", d.url, posts[i][0]);
        resp_t r = http("POST", url, h, posts[i][1], 0);
        if (contains_secret(r.body) || contains_secret(r.headers)) leaks++;
        resp_free(&r);
    }
    /* the password changes under it: the store refuses it, 5xx, and the
     * answer does not show the password it tried */
    snprintf(cmd, sizeof(cmd),
             "redis-cli -u '%s' ACL SETUSER rldash resetpass '>another-password' >/dev/null && "
             "redis-cli -u '%s' CLIENT KILL USER rldash >/dev/null",
             redis_url, redis_url);
    RL_CHECK_MSG(system(cmd) == 0, "redis-cli ACL SETUSER/CLIENT KILL failed");
    long st503 = 0;
    int leak503 = 0;
    int64_t end = mono_ms() + T(10000);
    while (st503 < 500 && mono_ms() < end) {
        resp_t r = get(&d, "api/overview", NULL);
        st503 = r.status;
        leak503 |= contains_secret(r.body);
        resp_free(&r);
        if (st503 < 500) usleep(50000);
    }
    dash_stop(&d, SIGTERM);
    char *err = slurp(d.errpath);
    unlink(d.errpath);
    int leak_err = contains_secret(err);
    free(err);
    snprintf(cmd, sizeof(cmd), "redis-cli -u '%s' ACL DELUSER rldash >/dev/null", redis_url);
    if (system(cmd) != 0) fprintf(stderr, "  (ACL DELUSER failed)\n");
    RL_CHECK_MSG(!leak_line, "the listening line shows a secret: %s", d.first);
    RL_CHECK_INT(0, leaks);
    RL_CHECK_MSG(!leak_err, "stderr shows a secret");
    RL_CHECK_MSG(st503 >= 500, "wrong password: expected a 5xx, got %ld", st503);
    RL_CHECK_MSG(!leak503, "the 503 answer shows the password");
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    RL_RUN(test_serves_and_stops);
    RL_RUN(test_non_loopback_needs_token);
    RL_RUN(test_token);
    RL_RUN(test_loopback_host_check);
    RL_RUN(test_bad_input);
    RL_RUN(test_history_sampled_without_requests);
    redis_url = rl_test_redis_url();
    if (redis_url) {
        RL_RUN(test_retry_dead_letter_over_http);
        RL_RUN(test_no_secrets);
    } else {
        fprintf(stderr, "RUNLANE_TEST_REDIS not set: Redis half not run\n");
    }
    curl_global_cleanup();
    return rl_test_summary();
}
