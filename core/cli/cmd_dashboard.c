/* cmd_dashboard.c - `runlane dashboard`: the web dashboard over HTTP.
 *
 * A thin adapter: libmicrohttpd parses HTTP; runlane_dashboard_handle()
 * answers every request (data, actions, CSRF, the page). What lives here
 * is only what belongs to this server: where it listens, who may talk to
 * it (a token off loopback, the Host header on loopback), the body cap,
 * the sampling timer and a clean stop on SIGINT/SIGTERM. Built only when
 * libmicrohttpd was found at configure time (RUNLANE_CLI_HAVE_MHD). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

#ifndef RUNLANE_CLI_HAVE_MHD

int cli_cmd_dashboard(cli_ctx_t *ctx, int argc, char **argv) {
    (void)argc;
    (void)argv;
    cli_err(ctx, "this runlane was built without libmicrohttpd (install libmicrohttpd-dev and "
                 "reconfigure); mount the dashboard from the Node or Python package instead");
    return CLI_EXIT_USAGE;
}

#else

#include <microhttpd.h>

/* The core refuses bodies over RUNLANE_DASHBOARD_BODY_MAX with 413; one
 * byte more than that is all this server ever keeps, so the core sees the
 * overflow and the memory per request stays bounded whatever a peer sends. */
#define DASH_BODY_CAP (RUNLANE_DASHBOARD_BODY_MAX + 1)
#define DASH_URI_MAX 8192 /* the core caps queries at 4096 */
#define DASH_TOKEN_MIN 16
#define DASH_TOKEN_MAX 256
#define DASH_COOKIE "runlane_dashboard_token"

typedef struct dash_server {
    runlane_dashboard_t *d;
    const char *token; /* NULL: none required (loopback only) */
    int check_host;    /* loopback without token: refuse foreign Host headers */
} dash_server_t;

/* Per request: the raw URI (MHD hands the access handler a decoded path
 * and no query string) and the body read so far. */
typedef struct dash_req {
    char *path;
    char *query; /* points into path's allocation, or NULL */
    char *body;
    size_t body_len;
    int started;
} dash_req_t;

/* The raw request URI, before MHD decodes it: kept so the core gets the
 * query string as sent. Its return value becomes the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls;
    (void)c;
    dash_req_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    size_t n = strnlen(uri, DASH_URI_MAX + 1);
    r->path = malloc(n + 1);
    if (!r->path) {
        free(r);
        return NULL;
    }
    memcpy(r->path, uri, n);
    r->path[n] = '\0';
    char *q = strchr(r->path, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    }
    return r;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    dash_req_t *r = *con_cls;
    if (!r) return;
    free(r->path);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* Constant-time comparison (the length of the token is not a secret worth
 * hiding; its bytes are). */
static int token_equal(const char *a, const char *b) {
    if (!a || !b) return 0;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb || la > DASH_TOKEN_MAX) return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* The value of `name` in a list of name=value pairs split by `sep` (a
 * Cookie header: ';' with spaces after it; a raw query string: '&', not
 * decoded, as the token alphabet needs no escaping), copied into dst. */
static int pair_value(const char *list, char sep, const char *name, char *dst, size_t dst_size) {
    size_t nl = strlen(name);
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == sep) p++;
        const char *end = strchr(p, sep);
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t vl = len - nl - 1;
            if (vl >= dst_size) return 0;
            memcpy(dst, p + nl + 1, vl);
            dst[vl] = '\0';
            return 1;
        }
        p = end;
    }
    return 0;
}

/* On loopback without a token, a web page elsewhere could still reach the
 * server through DNS rebinding (its own name resolving to 127.0.0.1): the
 * Host header then names that site. Only loopback names are served. */
static int host_is_loopback(const char *host) {
    if (!host) return 0;
    char h[256];
    size_t n = strnlen(host, sizeof(h));
    if (n >= sizeof(h)) return 0;
    memcpy(h, host, n + 1);
    if (h[0] == '[') {
        char *e = strchr(h, ']');
        if (!e) return 0;
        *e = '\0';
        return strcmp(h + 1, "::1") == 0;
    }
    char *colon = strchr(h, ':');
    if (colon) *colon = '\0';
    if (strcasecmp(h, "localhost") == 0) return 1;
    struct in_addr a;
    return inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

static enum MHD_Result send_json_error(struct MHD_Connection *c, unsigned int status,
                                       const char *code, const char *message) {
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"status\":%u,\"code\":\"%s\",\"message\":\"%s\"}}", status,
                     code, message);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"runlane dashboard\"");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Who may talk to this server: NULL when allowed, else the reason. On a
 * valid ?token= at the page, *set_cookie is set so the browser keeps it
 * (HttpOnly: the page's scripts never see it). */
static const char *authorize(const dash_server_t *s, struct MHD_Connection *c,
                             const dash_req_t *r, int *set_cookie, unsigned int *status) {
    *status = MHD_HTTP_FORBIDDEN;
    if (s->check_host &&
        !host_is_loopback(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host")))
        return "this dashboard answers only to a loopback Host (127.0.0.1, localhost, [::1])";
    if (!s->token) return NULL;
    *status = MHD_HTTP_UNAUTHORIZED;
    char got[DASH_TOKEN_MAX + 1];
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) return token_equal(auth + 7, s->token) ? NULL : "wrong token";
    const char *cookie = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cookie");
    if (cookie && pair_value(cookie, ';', DASH_COOKIE, got, sizeof(got)))
        return token_equal(got, s->token) ? NULL : "wrong token";
    if (r->query && pair_value(r->query, '&', "token", got, sizeof(got))) {
        if (!token_equal(got, s->token)) return "wrong token";
        *set_cookie = 1;
        return NULL;
    }
    return "a token is required (Authorization: Bearer TOKEN, or open the page with ?token=TOKEN)";
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)url;
    (void)version;
    dash_server_t *s = cls;
    dash_req_t *r = *con_cls;
    if (!r) return MHD_NO; /* out of memory in on_uri: drop the connection */

    if (!r->started) {
        /* Headers are in: refuse early, before reading any body. */
        r->started = 1;
        int set_cookie = 0;
        unsigned int status;
        const char *why = authorize(s, c, r, &set_cookie, &status);
        if (why) return send_json_error(c, status, status == 401 ? "unauthorized" : "forbidden", why);
        if (set_cookie) {
            /* The token leaves the address bar (and the history) at once. */
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
            if (!resp) return MHD_NO;
            char cookie[DASH_TOKEN_MAX + 96];
            snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; HttpOnly; SameSite=Strict",
                     DASH_COOKIE, s->token);
            MHD_add_response_header(resp, "Set-Cookie", cookie);
            MHD_add_response_header(resp, "Location", "./");
            MHD_add_response_header(resp, "Cache-Control", "no-store");
            enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_SEE_OTHER, resp);
            MHD_destroy_response(resp);
            return ret;
        }
        if (strnlen(r->path, DASH_URI_MAX + 1) > DASH_URI_MAX)
            return send_json_error(c, 414, "uri_too_long", "request URI too long");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) >= DASH_BODY_CAP)
            return send_json_error(c, 413, "too_large",
                                   "request body over 16 KiB");
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Keep at most DASH_BODY_CAP bytes; the rest of a chunked body is
         * read and dropped (MHD allows no answer mid-body). */
        size_t room = DASH_BODY_CAP - r->body_len;
        size_t take = *upload_data_size < room ? *upload_data_size : room;
        if (take) {
            if (!r->body) r->body = malloc(DASH_BODY_CAP);
            if (!r->body) return MHD_NO;
            memcpy(r->body + r->body_len, upload_data, take);
            r->body_len += take;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    runlane_dashboard_response_t *out = NULL;
    const char *csrf = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Runlane-CSRF");
    if (runlane_dashboard_handle(&out, s->d, method, r->path, r->query, r->body, r->body_len,
                                 csrf) != RUNLANE_OK)
        return send_json_error(c, 500, "internal", "out of memory");
    size_t len = 0;
    const char *body = runlane_dashboard_response_body(out, &len);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        runlane_dashboard_response_destroy(out);
        return MHD_NO;
    }
    cJSON *h = cJSON_Parse(runlane_dashboard_response_headers(out)), *it;
    cJSON_ArrayForEach(it, h) {
        if (it->string && cJSON_IsString(it))
            MHD_add_response_header(resp, it->string, it->valuestring);
    }
    cJSON_Delete(h);
    enum MHD_Result ret =
        MHD_queue_response(c, (unsigned int)runlane_dashboard_response_status(out), resp);
    MHD_destroy_response(resp);
    runlane_dashboard_response_destroy(out);
    return ret;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT"/"PORT" (loopback) into an address. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len,
                        int *loopback) {
    char host[256] = "127.0.0.1";
    const char *port;
    const char *colon = strrchr(spec, ':');
    if (spec[0] == '[') {
        const char *e = strchr(spec, ']');
        if (!e || e[1] != ':' || (size_t)(e - spec - 1) >= sizeof(host)) return 0;
        memcpy(host, spec + 1, (size_t)(e - spec - 1));
        host[e - spec - 1] = '\0';
        port = e + 2;
    } else if (colon) {
        if ((size_t)(colon - spec) >= sizeof(host)) return 0;
        if (colon != spec) {
            memcpy(host, spec, (size_t)(colon - spec));
            host[colon - spec] = '\0';
        }
        port = colon + 1;
    } else {
        port = spec;
    }
    uint64_t p;
    if (!cli_parse_u64(port, &p) || p > 65535) return 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return 0;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_port = htons((uint16_t)p);
        *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_port = htons((uint16_t)p);
        *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    } else {
        return 0;
    }
    return 1;
}

static int token_ok(const char *t) {
    size_t n = strlen(t);
    if (n < DASH_TOKEN_MIN || n > DASH_TOKEN_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == '~'))
            return 0;
    }
    return 1;
}

enum { O_LISTEN = 1, O_TOKEN, O_READ_ONLY, O_HISTORY };

int cli_cmd_dashboard(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t opts[] = {
        {"listen", 'l', CLI_ARG_REQUIRED, O_LISTEN},
        {"token", 0, CLI_ARG_REQUIRED, O_TOKEN},
        {"read-only", 0, CLI_ARG_NONE, O_READ_ONLY},
        {"history-interval", 0, CLI_ARG_REQUIRED, O_HISTORY},
        {NULL, 0, 0, 0},
    };
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char *listen = "127.0.0.1:8080", *token = NULL, *v;
    int read_only = 0, o;
    double history_s = 10.0;
    while ((o = cli_next(&p, opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(cli_help_dashboard);
        case O_LISTEN: listen = v; break;
        case O_TOKEN: token = v; break;
        case O_READ_ONLY: read_only = 1; break;
        case O_HISTORY:
            if (!cli_parse_seconds(v, &history_s) || history_s < 1 || history_s > 3600)
                cli_usage_fail(ctx, "--history-interval: expected 1..3600 seconds, got \"%s\"", v);
            break;
        case CLI_POSITIONAL: cli_usage_fail(ctx, "unexpected argument \"%s\"", v);
        }
    }
    if (!token) {
        const char *env = getenv("RUNLANE_DASHBOARD_TOKEN");
        if (env && *env) token = env;
    }
    if (token && !token_ok(token))
        cli_usage_fail(ctx, "the token must be %d to %d characters of A-Z a-z 0-9 - _ . ~",
                       DASH_TOKEN_MIN, DASH_TOKEN_MAX);
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    int loopback = 0;
    if (!parse_listen(listen, &addr, &addrlen, &loopback))
        cli_usage_fail(ctx, "--listen: expected HOST:PORT (e.g. 127.0.0.1:8080), got \"%s\"",
                       listen);
    if (!loopback && !token)
        cli_usage_fail(ctx, "--listen %s is not a loopback address: a token is required "
                            "(--token or RUNLANE_DASHBOARD_TOKEN)", listen);

    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (!rl) return ex;
    if (strcmp(cli_store_url(ctx), "memory") == 0) cli_warn_memory_store(ctx);
    char opt[128];
    snprintf(opt, sizeof(opt), "{\"history_interval_ms\":%lld,\"read_only\":%s}",
             (long long)(history_s * 1000.0), read_only ? "true" : "false");
    runlane_dashboard_t *d = runlane_dashboard_new(rl, opt);
    if (!d) {
        ex = cli_lib_fail(ctx, runlane_error_code(runlane_error_last()), "dashboard");
        runlane_destroy(rl);
        return ex;
    }

    /* The stop signals are taken by sigtimedwait below, in this thread
     * only: blocked before MHD starts, its threads inherit the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    dash_server_t srv = {d, token, loopback && !token};
    /* A pool of 4 threads: a request waits on a store round trip, so one
     * slow answer does not hold up the page's other requests. Connections,
     * their memory and their idle time are capped. */
    struct MHD_Daemon *daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
            (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, on_request, &srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)4, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
    if (!daemon) {
        cli_err(ctx, "cannot listen on %s: %s", listen, strerror(errno));
        runlane_dashboard_destroy(d);
        runlane_destroy(rl);
        return CLI_EXIT_RUNTIME;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : 0;
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, host, sizeof(host));
    char where[600];
    cli_store_display(where, sizeof(where), ctx);
    /* Tests and scripts read this line for the port (with --listen :0). */
    printf("runlane dashboard: listening on http://%s%s%s:%u/ (store %s)%s\n",
           addr.ss_family == AF_INET6 ? "[" : "", host, addr.ss_family == AF_INET6 ? "]" : "",
           port, where, token ? "; open it with ?token=TOKEN" : "");
    fflush(stdout);

    /* Sample the totals when due (the core decides; no round trip
     * otherwise), so the chart has history before a page opens. */
    for (;;) {
        runlane_dashboard_sample(d);
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&stop, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) break;
    }
    fprintf(stderr, "runlane dashboard: stopping\n");
    MHD_stop_daemon(daemon); /* waits for requests being answered */
    runlane_dashboard_destroy(d);
    runlane_destroy(rl);
    return CLI_EXIT_OK;
}

#endif
