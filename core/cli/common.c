/* common.c - option parsing, messages, configuration and small helpers of
 * the runlane command-line tool. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* ---- messages ---- */

void cli_err(const cli_ctx_t *ctx, const char *fmt, ...) {
    char msg[4096], clean[4096], shown[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_redact(clean, sizeof(clean), msg);
    /* Messages quote arguments and files: no control byte reaches the
     * terminal (the library's own messages come escaped already). */
    cli_escape(shown, sizeof(shown), clean);
    if (ctx && ctx->cmd)
        fprintf(stderr, "runlane: %s: %s\n", ctx->cmd, shown);
    else
        fprintf(stderr, "runlane: %s\n", shown);
}

void cli_usage_fail(const cli_ctx_t *ctx, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_err(ctx, "%s", msg);
    if (ctx && ctx->cmd)
        fprintf(stderr, "Try 'runlane %s --help'.\n", ctx->cmd);
    else
        fprintf(stderr, "Try 'runlane --help'.\n");
    exit(CLI_EXIT_USAGE);
}

int cli_exit_for(runlane_err_t rc) {
    switch (rc) {
    case RUNLANE_OK:
        return CLI_EXIT_OK;
    case RUNLANE_ERR_INVALID_ARG:
    case RUNLANE_ERR_UNKNOWN_KEY:
    case RUNLANE_ERR_INVALID_VALUE:
    case RUNLANE_ERR_TOO_LARGE:
    case RUNLANE_ERR_UNSUPPORTED:
        return CLI_EXIT_USAGE;
    case RUNLANE_ERR_NOT_FOUND:
        return CLI_EXIT_NOTFOUND;
    default:
        return CLI_EXIT_RUNTIME;
    }
}

int cli_lib_fail(const cli_ctx_t *ctx, runlane_err_t rc, const char *what) {
    const char *msg = runlane_error_message(runlane_error_last());
    if (!msg || !*msg) msg = runlane_err2str(rc);
    if (what)
        cli_err(ctx, "%s: %s", what, msg);
    else
        cli_err(ctx, "%s", msg);
    return cli_exit_for(rc);
}

/* ---- store URL and secrets ---- */

static const char *env_store(void) {
    const char *e = getenv("RUNLANE_STORE");
    return e && *e ? e : NULL;
}

const char *cli_store_url(const cli_ctx_t *ctx) {
    if (ctx->store) return ctx->store;
    for (size_t i = ctx->nx; i-- > 0;)
        if (strcmp(ctx->xkeys[i], "store") == 0) return ctx->xvals[i];
    const char *e = env_store();
    return e ? e : "memory";
}

/* Finds the userinfo ("user:password" before '@') of a URL. */
static int url_userinfo(const char *url, const char **ui, size_t *ui_len) {
    const char *s = strstr(url, "://");
    if (!s) return 0;
    s += 3;
    size_t auth_len = strcspn(s, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (s[i] == '@') at = s + i;
    if (!at) return 0;
    *ui = s;
    *ui_len = (size_t)(at - s);
    return 1;
}

/* The password part of the effective store URL ("" when none). */
static void store_password(char *dst, size_t dst_size, const char *url) {
    dst[0] = '\0';
    const char *ui;
    size_t n;
    if (!url || !url_userinfo(url, &ui, &n)) return;
    const char *colon = memchr(ui, ':', n);
    const char *pw = colon ? colon + 1 : ui; /* "redis://secret@host" */
    size_t pl = (size_t)(ui + n - pw);
    if (pl >= dst_size) pl = dst_size - 1;
    memcpy(dst, pw, pl);
    dst[pl] = '\0';
}

static const cli_ctx_t *g_redact_ctx;

void cli_redact(char *dst, size_t dst_size, const char *msg) {
    char pw[512];
    const char *url = g_redact_ctx ? cli_store_url(g_redact_ctx) : env_store();
    store_password(pw, sizeof(pw), url);
    size_t pl = strlen(pw), o = 0;
    if (!dst_size) return;
    for (const char *p = msg; *p && o + 1 < dst_size;) {
        if (pl >= 3 && strncmp(p, pw, pl) == 0) {
            for (const char *r = "***"; *r && o + 1 < dst_size; r++) dst[o++] = *r;
            p += pl;
        } else {
            dst[o++] = *p++;
        }
    }
    dst[o] = '\0';
}

void cli_store_display(char *dst, size_t dst_size, const cli_ctx_t *ctx) {
    const char *url = cli_store_url(ctx);
    const char *ui;
    size_t n;
    if (!url_userinfo(url, &ui, &n)) {
        snprintf(dst, dst_size, "%s", url);
        return;
    }
    const char *colon = memchr(ui, ':', n);
    size_t user_len = colon ? (size_t)(colon - ui) : 0;
    snprintf(dst, dst_size, "%.*s%.*s%s***%s", (int)(ui - url), url, (int)user_len, ui,
             colon ? ":" : "", ui + n);
}

/* ---- options ---- */

void cli_parser_init(cli_parser_t *p, cli_ctx_t *ctx, int argc, char **argv) {
    p->ctx = ctx;
    p->argc = argc;
    p->argv = argv;
    p->i = 0;
    p->only_positionals = 0;
    g_redact_ctx = ctx;
}

static void add_x(cli_ctx_t *ctx, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) cli_usage_fail(ctx, "-X: expected key=value, got \"%s\"", kv);
    if (ctx->nx == ctx->capx) {
        size_t cap = ctx->capx ? ctx->capx * 2 : 8;
        const char **k = realloc(ctx->xkeys, cap * sizeof(*k));
        if (k) ctx->xkeys = k;
        const char **v = realloc(ctx->xvals, cap * sizeof(*v));
        if (v) ctx->xvals = v;
        if (!k || !v) {
            cli_err(ctx, "out of memory");
            exit(CLI_EXIT_RUNTIME);
        }
        ctx->capx = cap;
    }
    char *key = malloc((size_t)(eq - kv) + 1);
    if (!key) {
        cli_err(ctx, "out of memory");
        exit(CLI_EXIT_RUNTIME);
    }
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    ctx->xkeys[ctx->nx] = key;
    ctx->xvals[ctx->nx] = eq + 1;
    ctx->nx++;
}

/* Value of an option that needs one: "--name=value", "-nvalue" or the next
 * argument. */
static const char *take_value(cli_parser_t *p, const char *arg, const char *inline_val,
                              const char *shown) {
    (void)arg;
    if (inline_val) return inline_val;
    if (p->i >= p->argc) cli_usage_fail(p->ctx, "option %s needs a value", shown);
    return p->argv[p->i++];
}

int cli_global_option(cli_parser_t *p, const char *arg) {
    if (strcmp(arg, "--store") == 0 || strncmp(arg, "--store=", 8) == 0) {
        const char *v = take_value(p, arg, arg[7] == '=' ? arg + 8 : NULL, "--store");
        if (!*v) cli_usage_fail(p->ctx, "--store: the URL is empty");
        p->ctx->store = v;
        return 1;
    }
    if (strncmp(arg, "-X", 2) == 0) {
        add_x(p->ctx, take_value(p, arg, arg[2] ? arg + 2 : NULL, "-X"));
        return 1;
    }
    if (strcmp(arg, "--config") == 0 || strncmp(arg, "--config=", 9) == 0) {
        /* Long form of -X, for scripts that prefer words. */
        add_x(p->ctx, take_value(p, arg, arg[8] == '=' ? arg + 9 : NULL, "--config"));
        return 1;
    }
    return 0;
}

static int is_number(const char *s) {
    double d;
    return cli_parse_seconds(s, &d);
}

int cli_next(cli_parser_t *p, const cli_optspec_t *specs, const char **val) {
    *val = NULL;
    for (;;) {
        if (p->i >= p->argc) return CLI_END;
        const char *arg = p->argv[p->i++];
        if (p->only_positionals || arg[0] != '-' || arg[1] == '\0') {
            *val = arg;
            return CLI_POSITIONAL;
        }
        if (strcmp(arg, "--") == 0) {
            p->only_positionals = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) return CLI_HELP;
        if (cli_global_option(p, arg)) continue;
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            for (const cli_optspec_t *s = specs; s && s->lname; s++) {
                if (strlen(s->lname) != nl || strncmp(s->lname, name, nl) != 0) continue;
                char shown[80];
                snprintf(shown, sizeof(shown), "--%s", s->lname);
                if (s->arg == CLI_ARG_NONE) {
                    if (eq) cli_usage_fail(p->ctx, "option %s takes no value", shown);
                } else if (s->arg == CLI_ARG_REQUIRED) {
                    *val = take_value(p, arg, eq ? eq + 1 : NULL, shown);
                } else if (eq) {
                    if (!is_number(eq + 1))
                        cli_usage_fail(p->ctx, "option %s: expected a number, got \"%s\"", shown,
                                       eq + 1);
                    *val = eq + 1;
                } else if (p->i < p->argc && is_number(p->argv[p->i])) {
                    *val = p->argv[p->i++];
                }
                return s->id;
            }
            cli_usage_fail(p->ctx, "unknown option --%.*s", (int)nl, name);
        }
        for (const cli_optspec_t *s = specs; s && s->lname; s++) {
            if (!s->sname || s->sname != arg[1]) continue;
            char shown[8];
            snprintf(shown, sizeof(shown), "-%c", s->sname);
            if (s->arg == CLI_ARG_NONE) {
                if (arg[2]) cli_usage_fail(p->ctx, "option %s takes no value", shown);
            } else {
                *val = take_value(p, arg, arg[2] ? arg + 2 : NULL, shown);
            }
            return s->id;
        }
        cli_usage_fail(p->ctx, "unknown option %s", arg);
    }
}

/* ---- configuration and client ---- */

runlane_conf_t *cli_conf(const cli_ctx_t *ctx) {
    runlane_conf_t *conf = runlane_conf_new();
    char errstr[512];
    if (!conf) {
        cli_err(ctx, "out of memory");
        exit(CLI_EXIT_RUNTIME);
    }
    const char *e = env_store();
    if (e && runlane_conf_set(conf, "store", e, errstr, sizeof(errstr)) != RUNLANE_OK) {
        cli_err(ctx, "RUNLANE_STORE: %s", errstr);
        runlane_conf_destroy(conf);
        exit(CLI_EXIT_USAGE);
    }
    for (size_t i = 0; i < ctx->nx; i++) {
        runlane_err_t rc = runlane_conf_set(conf, ctx->xkeys[i], ctx->xvals[i], errstr, sizeof(errstr));
        if (rc != RUNLANE_OK) {
            cli_err(ctx, "-X %s: %s", ctx->xkeys[i], errstr);
            fprintf(stderr, "See 'runlane config' for every key and its values.\n");
            runlane_conf_destroy(conf);
            exit(cli_exit_for(rc) == CLI_EXIT_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME);
        }
    }
    if (ctx->store && runlane_conf_set(conf, "store", ctx->store, errstr, sizeof(errstr)) != RUNLANE_OK) {
        cli_err(ctx, "--store: %s", errstr);
        runlane_conf_destroy(conf);
        exit(CLI_EXIT_USAGE);
    }
    return conf;
}

runlane_t *cli_open(const cli_ctx_t *ctx, const runlane_conf_t *conf, int *exit_out) {
    char errstr[1024] = "";
    runlane_t *rl = runlane_new(conf, errstr, sizeof(errstr));
    if (rl) {
        /* Before runlane_start the only events are runlane_new's warnings
         * (e.g. redis.tls.insecure.skip.verify): say them. */
        runlane_event_t *ev;
        while ((ev = runlane_poll(rl, 0)) != NULL) {
            if (runlane_event_type(ev) == RUNLANE_EVENT_ERROR)
                cli_err(ctx, "warning: %s", runlane_event_error_message(ev));
            runlane_event_destroy(ev);
        }
        *exit_out = CLI_EXIT_OK;
        return rl;
    }
    runlane_err_t rc = runlane_error_code(runlane_error_last());
    char where[600];
    cli_store_display(where, sizeof(where), ctx);
    if (!errstr[0]) snprintf(errstr, sizeof(errstr), "%s", runlane_err2str(rc));
    if (rc == RUNLANE_ERR_STORE)
        cli_err(ctx, "cannot open the store %s: %s", where, errstr);
    else
        cli_err(ctx, "%s", errstr);
    *exit_out = rc == RUNLANE_OK ? CLI_EXIT_RUNTIME : cli_exit_for(rc);
    return NULL;
}

void cli_warn_memory_store(const cli_ctx_t *ctx) {
    const char *url = cli_store_url(ctx);
    if (strcmp(url, "memory") != 0 && strncmp(url, "memory://", 9) != 0) return;
    cli_err(ctx,
            "warning: the memory store lives inside this process and is gone when runlane exits; "
            "use --store redis://HOST:PORT/DB (or RUNLANE_STORE) to share a queue");
}

/* ---- helpers ---- */

int cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

int cli_parse_seconds(const char *s, double *out) {
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.')) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < 0 || v > 1e9) return 0;
    *out = v;
    return 1;
}

int64_t cli_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cli_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_format_time(char *dst, size_t dst_size, int64_t ms) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(dst, dst_size, "%lld", (long long)ms);
        return;
    }
    char buf[64];
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(dst, dst_size, "%s.%03d UTC", buf, (int)(ms % 1000));
}

char *cli_read_all(const char *path, size_t *len_out) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf || err) {
        free(buf);
        if (err) errno = EIO;
        return NULL;
    }
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

int cli_print_help(const char *text) {
    fputs(text, stdout);
    return CLI_EXIT_OK;
}
