/* cmd_status.c - `runlane status` and `runlane dead ...`. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

/* ---- readable output ---- */

/* Keys that hold a time in ms since the epoch (store clock). */
static int is_time_key(const char *k) {
    size_t n = strlen(k);
    return n > 3 && strcmp(k + n - 3, "_ms") == 0 &&
           (strstr(k, "due") || strstr(k, "expires") || strstr(k, "_at") || strstr(k, "until") ||
            strncmp(k, "ts", 2) == 0 || strstr(k, "first") || strstr(k, "last"));
}

static void format_relative(char *dst, size_t n, int64_t ms, int64_t now) {
    int64_t d = ms - now;
    int64_t a = d < 0 ? -d : d;
    char amount[32];
    if (a < 1000)
        snprintf(amount, sizeof(amount), "%lldms", (long long)a);
    else if (a < 120000)
        snprintf(amount, sizeof(amount), "%.1fs", (double)a / 1000.0);
    else if (a < 7200000)
        snprintf(amount, sizeof(amount), "%.1fmin", (double)a / 60000.0);
    else
        snprintf(amount, sizeof(amount), "%.1fh", (double)a / 3600000.0);
    snprintf(dst, n, d >= 0 ? "in %s" : "%s ago", amount);
}

/* One value as text: numbers without exponent, null as "-", times with
 * their UTC date and distance from now. */
static void value_text(char *dst, size_t n, const char *key, const cJSON *v) {
    if (cJSON_IsNull(v) || !v) {
        snprintf(dst, n, "-");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9e15) {
            if (key && is_time_key(key) && d > 1e11) {
                char t[64], rel[48];
                cli_format_time(t, sizeof(t), (int64_t)d);
                format_relative(rel, sizeof(rel), (int64_t)d, cli_wall_ms());
                snprintf(dst, n, "%s (%s)", t, rel);
            } else {
                snprintf(dst, n, "%lld", (long long)d);
            }
        } else {
            snprintf(dst, n, "%g", d);
        }
    } else if (cJSON_IsString(v)) {
        snprintf(dst, n, "%s", v->valuestring);
        cli_sanitize_utf8(dst);
        for (char *c = dst; *c; c++)
            if (*c == '\n' || *c == '\t') *c = ' ';
    } else if (cJSON_IsBool(v)) {
        snprintf(dst, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(dst, n, "%s", s ? s : "?");
        cJSON_free(s);
    }
}

/* An object as aligned "key  value" lines. */
static void print_object(FILE *out, const cJSON *obj) {
    int w = 0;
    const cJSON *it;
    char label[64][128];
    int k = 0;
    cJSON_ArrayForEach(it, obj) {
        if (k == 64) break;
        /* "lease_expires_ms" -> "lease expires" (the value shows the date). */
        snprintf(label[k], sizeof(label[k]), "%s", it->string);
        size_t n = strlen(label[k]);
        if (is_time_key(it->string)) label[k][n - 3] = '\0';
        for (char *c = label[k]; *c; c++)
            if (*c == '_') *c = ' ';
        int l = (int)strlen(label[k]);
        if (l > w) w = l;
        k++;
    }
    k = 0;
    cJSON_ArrayForEach(it, obj) {
        if (k == 64) break;
        char text[2048];
        value_text(text, sizeof(text), it->string, it);
        if (strcmp(it->string, "conversation_id") != 0) fprintf(out, "%-*s  %s\n", w, label[k], text);
        k++;
    }
}

/* ---- status ---- */

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

enum { O_JSON = 1, O_WATCH };

static int status_once(cli_ctx_t *ctx, runlane_t *rl, const char *conv, int json, int watching) {
    char *out = NULL;
    runlane_err_t rc = runlane_status(&out, rl, conv);
    if (rc != RUNLANE_OK) {
        int ex = cli_lib_fail(ctx, rc, NULL);
        runlane_free(out);
        return ex;
    }
    if (json) {
        printf("%s\n", out);
    } else {
        cJSON *j = cJSON_Parse(out);
        if (!cJSON_IsObject(j)) {
            printf("%s\n", out);
        } else {
            if (!watching) {
                char where[600];
                cli_store_display(where, sizeof(where), ctx);
                printf("%s%s%s\n", conv ? "conversation " : "store ", conv ? conv : where,
                       conv ? "" : "");
            }
            print_object(stdout, j);
        }
        cJSON_Delete(j);
    }
    runlane_free(out);
    fflush(stdout);
    return CLI_EXIT_OK;
}

int cli_cmd_status(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t opts[] = {
        {"json", 0, CLI_ARG_NONE, O_JSON},
        {"watch", 'w', CLI_ARG_OPTIONAL_NUMBER, O_WATCH},
        {NULL, 0, 0, 0},
    };
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char *conv = NULL, *v;
    int json = 0, watch = 0, o;
    double every = 2.0;
    while ((o = cli_next(&p, opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(cli_help_status);
        case O_JSON: json = 1; break;
        case O_WATCH:
            watch = 1;
            if (v && !cli_parse_seconds(v, &every))
                cli_usage_fail(ctx, "--watch: expected a number of seconds, got \"%s\"", v);
            break;
        case CLI_POSITIONAL:
            if (conv) cli_usage_fail(ctx, "unexpected argument \"%s\"", v);
            conv = v;
            break;
        }
    }
    if (watch && every < 0.1) cli_usage_fail(ctx, "--watch: at least 0.1 seconds");
    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (!rl) return ex;
    if (!watch) {
        ex = status_once(ctx, rl, conv, json, 0);
        runlane_destroy(rl);
        return ex;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int tty = isatty(STDOUT_FILENO);
    char where[600];
    cli_store_display(where, sizeof(where), ctx);
    while (!g_interrupted) {
        if (!json) {
            char now[64];
            cli_format_time(now, sizeof(now), cli_wall_ms());
            if (tty) fputs("\033[H\033[2J", stdout);
            printf("%s%s — %s — every %gs, Ctrl-C to quit\n", conv ? "conversation " : "store ",
                   conv ? conv : where, now, every);
        }
        int r = status_once(ctx, rl, conv, json, 1);
        if (r == CLI_EXIT_USAGE || r == CLI_EXIT_NOTFOUND) {
            runlane_destroy(rl);
            return r;
        }
        if (!json && !tty) printf("\n");
        fflush(stdout);
        /* Sleep in small steps so that Ctrl-C ends at once. */
        int64_t until = cli_mono_ms() + (int64_t)(every * 1000.0);
        while (!g_interrupted) {
            int64_t left = until - cli_mono_ms();
            if (left <= 0) break;
            if (left > 100) left = 100;
            struct timespec ts = {0, (long)left * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    runlane_destroy(rl);
    return CLI_EXIT_OK;
}

/* ---- dead ---- */

enum { O_OFFSET = 1, O_LIMIT, O_DJSON, O_ALL };

/* Truncates at maxcols characters (UTF-8 aware) with an ellipsis. */
static void trunc_text(char *s, size_t size, size_t maxcols) {
    size_t cols = 0;
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        if ((*p & 0xC0) != 0x80) {
            if (cols == maxcols) {
                if ((size_t)((char *)p - s) + 4 <= size) strcpy((char *)p, "…");
                else *p = '\0';
                return;
            }
            cols++;
        }
        p++;
    }
}

static size_t text_cols(const char *s) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80) n++;
    return n;
}

static void print_padded(const char *s, size_t width) {
    fputs(s, stdout);
    for (size_t c = text_cols(s); c < width; c++) putchar(' ');
}

static int dead_list(cli_ctx_t *ctx, runlane_t *rl, size_t offset, size_t limit, int json) {
    char *out = NULL;
    runlane_err_t rc = runlane_dead_list(&out, rl, offset, limit);
    if (rc != RUNLANE_OK) return cli_lib_fail(ctx, rc, NULL);
    if (json) {
        printf("%s\n", out);
        runlane_free(out);
        return CLI_EXIT_OK;
    }
    cJSON *arr = cJSON_Parse(out);
    runlane_free(out);
    int n = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || n == 0) {
        printf(offset ? "no dead letters from offset %zu\n" : "no dead letters\n", offset);
        cJSON_Delete(arr);
        return CLI_EXIT_OK;
    }
    enum { NCOL = 6 };
    static const char *heads[NCOL] = {"ID", "CONVERSATION", "ATTEMPTS", "DEAD AT", "MESSAGES", "ERROR"};
    char(*cells)[NCOL][256] = calloc((size_t)n, sizeof(*cells));
    size_t width[NCOL];
    if (!cells) {
        cJSON_Delete(arr);
        cli_err(ctx, "out of memory");
        return CLI_EXIT_RUNTIME;
    }
    for (int c = 0; c < NCOL; c++) width[c] = text_cols(heads[c]);
    int r = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "id");
        const cJSON *conv = cJSON_GetObjectItemCaseSensitive(d, "conversation_id");
        const cJSON *att = cJSON_GetObjectItemCaseSensitive(d, "attempts");
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(d, "dead_at_ms");
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(d, "messages");
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(d, "error");
        value_text(cells[r][0], 256, NULL, id);
        value_text(cells[r][1], 256, NULL, conv);
        trunc_text(cells[r][1], 256, 40);
        value_text(cells[r][2], 256, NULL, att);
        /* in range before the cast (a stored value is not trusted) */
        if (cJSON_IsNumber(at) && at->valuedouble >= 0 && at->valuedouble < 9e15)
            cli_format_time(cells[r][3], 256, (int64_t)at->valuedouble);
        else
            snprintf(cells[r][3], 256, "-");
        snprintf(cells[r][4], 256, "%d", cJSON_GetArraySize(msgs));
        value_text(cells[r][5], 256, NULL, err);
        trunc_text(cells[r][5], 256, 72);
        for (int c = 0; c < NCOL; c++)
            if (text_cols(cells[r][c]) > width[c]) width[c] = text_cols(cells[r][c]);
        r++;
    }
    for (int c = 0; c < NCOL; c++) {
        if (c == NCOL - 1)
            fputs(heads[c], stdout);
        else {
            print_padded(heads[c], width[c]);
            fputs("  ", stdout);
        }
    }
    putchar('\n');
    for (int i = 0; i < r; i++) {
        for (int c = 0; c < NCOL; c++) {
            if (c == NCOL - 1)
                fputs(cells[i][c], stdout);
            else {
                print_padded(cells[i][c], width[c]);
                fputs("  ", stdout);
            }
        }
        putchar('\n');
    }
    size_t shown_limit = limit ? limit : 100;
    if ((size_t)n >= shown_limit)
        printf("(%d shown from offset %zu; use --offset %zu for more)\n", n, offset, offset + (size_t)n);
    free(cells);
    cJSON_Delete(arr);
    return CLI_EXIT_OK;
}

static int dead_settle(cli_ctx_t *ctx, runlane_t *rl, int retry, const char *id) {
    size_t count = 0;
    runlane_err_t rc = retry ? runlane_dead_retry(&count, rl, id) : runlane_dead_purge(&count, rl, id);
    if (rc != RUNLANE_OK) return cli_lib_fail(ctx, rc, id);
    if (id && count == 0) {
        cli_err(ctx, "%s: no such dead letter", id);
        return CLI_EXIT_NOTFOUND;
    }
    printf("%s %zu\n", retry ? "retried" : "purged", count);
    return CLI_EXIT_OK;
}

int cli_cmd_dead(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t list_opts[] = {
        {"offset", 0, CLI_ARG_REQUIRED, O_OFFSET},
        {"limit", 'n', CLI_ARG_REQUIRED, O_LIMIT},
        {"json", 0, CLI_ARG_NONE, O_DJSON},
        {NULL, 0, 0, 0},
    };
    static const cli_optspec_t settle_opts[] = {
        {"all", 'a', CLI_ARG_NONE, O_ALL},
        {NULL, 0, 0, 0},
    };
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    /* The subcommand is the first positional; options may come before it. */
    const char *sub = NULL, *v;
    int o;
    while (!sub && (o = cli_next(&p, NULL, &v)) != CLI_END) {
        if (o == CLI_HELP) return cli_print_help(cli_help_dead);
        sub = v;
    }
    if (!sub) cli_usage_fail(ctx, "missing subcommand: list, retry or purge");
    int mode;
    const char *help;
    if (strcmp(sub, "list") == 0) {
        mode = 0;
        ctx->cmd = "dead list";
        help = cli_help_dead_list;
    } else if (strcmp(sub, "retry") == 0) {
        mode = 1;
        ctx->cmd = "dead retry";
        help = cli_help_dead_retry;
    } else if (strcmp(sub, "purge") == 0) {
        mode = 2;
        ctx->cmd = "dead purge";
        help = cli_help_dead_purge;
    } else {
        cli_usage_fail(ctx, "unknown subcommand \"%s\" (expected list, retry or purge)", sub);
    }
    uint64_t offset = 0, limit = 0;
    int json = 0, all = 0;
    const char *id = NULL;
    while ((o = cli_next(&p, mode == 0 ? list_opts : settle_opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(help);
        case O_OFFSET:
            if (!cli_parse_u64(v, &offset)) cli_usage_fail(ctx, "--offset: expected a number, got \"%s\"", v);
            break;
        case O_LIMIT:
            if (!cli_parse_u64(v, &limit) || limit == 0 || limit > 100000)
                cli_usage_fail(ctx, "--limit: expected a number from 1 to 100000, got \"%s\"", v);
            break;
        case O_DJSON: json = 1; break;
        case O_ALL: all = 1; break;
        case CLI_POSITIONAL:
            if (mode == 0 || id) cli_usage_fail(ctx, "unexpected argument \"%s\"", v);
            id = v;
            break;
        }
    }
    if (mode != 0 && !id && !all) cli_usage_fail(ctx, "give a dead letter ID, or --all");
    if (mode != 0 && id && all) cli_usage_fail(ctx, "give either an ID or --all, not both");
    if (id && !*id) cli_usage_fail(ctx, "the ID is empty");

    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (!rl) return ex;
    if (mode == 0)
        ex = dead_list(ctx, rl, (size_t)offset, (size_t)limit, json);
    else
        ex = dead_settle(ctx, rl, mode == 1, id);
    runlane_destroy(rl);
    return ex;
}
