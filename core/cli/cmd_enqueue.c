/* cmd_enqueue.c - `runlane enqueue` and `runlane touch`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

enum { O_IKEY = 1, O_INSTR, O_META, O_FILE };

static const cli_optspec_t enqueue_opts[] = {
    {"idempotency-key", 'k', CLI_ARG_REQUIRED, O_IKEY},
    {"instructions", 'i', CLI_ARG_REQUIRED, O_INSTR},
    {"metadata", 'm', CLI_ARG_REQUIRED, O_META},
    {"file", 'f', CLI_ARG_REQUIRED, O_FILE},
    {NULL, 0, 0, 0},
};

static char *build_options(cli_ctx_t *ctx, const char *ikey, const char *instr, const char *meta) {
    if (!ikey && !instr && !meta) return NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) goto oom;
    if (ikey && !cJSON_AddStringToObject(o, "idempotency_key", ikey)) goto oom;
    if (instr && !cJSON_AddStringToObject(o, "instructions", instr)) goto oom;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) goto oom;
    if (!meta) return s;
    cJSON *m = cJSON_ParseWithOpts(meta, NULL, 1);
    int is_obj = cJSON_IsObject(m);
    cJSON_Delete(m);
    if (!is_obj) {
        cJSON_free(s);
        cli_usage_fail(ctx, "--metadata: expected a JSON object of strings, e.g. '{\"user\":\"42\"}'");
    }
    /* The metadata goes to the library as the user wrote it: parsed and
     * printed again, "a\u0000b" would reach it cut to "a" instead of being
     * refused. */
    size_t sl = strlen(s), ml = strlen(meta);
    char *out = cJSON_malloc(sl + ml + 16);
    if (!out) goto oom;
    snprintf(out, sl + ml + 16, "%.*s%s\"metadata\":%s}", (int)(sl - 1), s, sl > 2 ? "," : "", meta);
    cJSON_free(s);
    return out;
oom:
    cli_err(ctx, "out of memory");
    exit(CLI_EXIT_RUNTIME);
}

/* Content from stdin, without one trailing newline. */
static char *read_stdin_content(cli_ctx_t *ctx) {
    size_t len = 0;
    char *s = cli_read_all("-", &len);
    if (!s) {
        cli_err(ctx, "cannot read the message from stdin: %s", strerror(errno));
        exit(CLI_EXIT_RUNTIME);
    }
    if (len && s[len - 1] == '\n') s[--len] = '\0';
    if (len && s[len - 1] == '\r') s[--len] = '\0';
    if (strlen(s) != len) cli_usage_fail(ctx, "the message from stdin contains a NUL byte");
    return s;
}

/* Reads a JSON-lines file into one JSON array; line_of[i] is the line
 * number of message i. Exits with 2 on a bad line (cli_jsonl_parse). */
static char *read_jsonl(cli_ctx_t *ctx, const char *path, size_t *n_out, size_t **line_of) {
    size_t len = 0;
    char *data = cli_read_all(path, &len);
    if (!data) {
        cli_err(ctx, "--file %s: %s", path, strerror(errno));
        exit(CLI_EXIT_RUNTIME);
    }
    char *out = NULL, err[256];
    int rc = cli_jsonl_parse(data, len, &out, n_out, line_of, err, sizeof(err));
    free(data);
    if (rc == CLI_EXIT_USAGE) cli_usage_fail(ctx, "--file %s: %s", path, err);
    if (rc != CLI_EXIT_OK) {
        cli_err(ctx, "--file %s: %s", path, err);
        exit(rc);
    }
    return out;
}

static int enqueue_file(cli_ctx_t *ctx, const char *path) {
    size_t n = 0, *line_of = NULL;
    char *arr = read_jsonl(ctx, path, &n, &line_of);
    if (n == 0) {
        cli_err(ctx, "--file %s: no messages", path);
        free(arr);
        free(line_of);
        return CLI_EXIT_OK;
    }
    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (!rl) {
        free(arr);
        free(line_of);
        return ex;
    }
    cli_warn_memory_store(ctx);
    char *result = NULL;
    runlane_err_t rc = runlane_enqueue_many(&result, rl, arr);
    if (rc != RUNLANE_OK) {
        /* "messages[i]..." names the line of the file. */
        const char *msg = runlane_error_message(runlane_error_last());
        size_t idx = 0;
        int used = 0;
        if (sscanf(msg, "messages[%zu]%n", &idx, &used) == 1 && used > 0 && idx < n) {
            msg += used;
            if (*msg == '.' || *msg == ':') msg++;
            while (*msg == ' ') msg++;
            cli_err(ctx, "--file %s: line %zu: %s; nothing was queued", path, line_of[idx], msg);
            ex = cli_exit_for(rc);
        } else {
            ex = cli_lib_fail(ctx, rc, "nothing was queued");
        }
    } else {
        cJSON *r = cJSON_Parse(result);
        size_t i = 0;
        cJSON *it;
        cJSON_ArrayForEach(it, r) {
            cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
            cJSON *dup = cJSON_GetObjectItemCaseSensitive(it, "duplicate");
            const char *ids = cJSON_IsString(id) ? id->valuestring : "?";
            printf("%s\n", ids);
            if (cJSON_IsTrue(dup))
                cli_err(ctx, "line %zu: (duplicate) idempotency key already used; %s is the first message's id",
                        i < n ? line_of[i] : 0, ids);
            i++;
        }
        cJSON_Delete(r);
        ex = CLI_EXIT_OK;
    }
    runlane_free(result);
    runlane_destroy(rl);
    free(arr);
    free(line_of);
    return ex;
}

int cli_cmd_enqueue(cli_ctx_t *ctx, int argc, char **argv) {
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char *ikey = NULL, *instr = NULL, *meta = NULL, *file = NULL;
    const char *pos[2];
    int npos = 0;
    const char *v;
    int o;
    while ((o = cli_next(&p, enqueue_opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(cli_help_enqueue);
        case O_IKEY: ikey = v; break;
        case O_INSTR: instr = v; break;
        case O_META: meta = v; break;
        case O_FILE: file = v; break;
        case CLI_POSITIONAL:
            if (npos == 2) cli_usage_fail(ctx, "unexpected argument \"%s\" (quote a message with spaces)", v);
            pos[npos++] = v;
            break;
        }
    }
    if (file) {
        if (npos) cli_usage_fail(ctx, "--file takes no CONVERSATION or MESSAGE argument");
        if (ikey || instr || meta)
            cli_usage_fail(ctx, "--file: put idempotency_key, instructions and metadata in each line");
        return enqueue_file(ctx, file);
    }
    if (npos < 2) cli_usage_fail(ctx, npos ? "missing MESSAGE" : "missing CONVERSATION and MESSAGE");
    char *options = build_options(ctx, ikey, instr, meta);
    char *stdin_content = strcmp(pos[1], "-") == 0 ? read_stdin_content(ctx) : NULL;
    const char *content = stdin_content ? stdin_content : pos[1];

    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (rl) {
        cli_warn_memory_store(ctx);
        char id[RUNLANE_ID_MAX];
        int dup = 0;
        runlane_err_t rc = runlane_enqueue(id, sizeof(id), &dup, rl, pos[0], content, options);
        if (rc != RUNLANE_OK) {
            ex = cli_lib_fail(ctx, rc, NULL);
        } else {
            printf("%s\n", id);
            if (dup) cli_err(ctx, "(duplicate) idempotency key already used; %s is the first message's id", id);
            ex = CLI_EXIT_OK;
        }
        runlane_destroy(rl);
    }
    cJSON_free(options);
    free(stdin_content);
    return ex;
}

int cli_cmd_touch(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t opts[] = {{NULL, 0, 0, 0}};
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char **convs = calloc((size_t)argc + 1, sizeof(*convs));
    size_t n = 0;
    const char *v;
    int o;
    if (!convs) {
        cli_err(ctx, "out of memory");
        return CLI_EXIT_RUNTIME;
    }
    while ((o = cli_next(&p, opts, &v)) != CLI_END) {
        if (o == CLI_HELP) {
            free(convs);
            return cli_print_help(cli_help_touch);
        }
        convs[n++] = v;
    }
    if (!n) cli_usage_fail(ctx, "missing CONVERSATION");
    runlane_conf_t *conf = cli_conf(ctx);
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (rl) {
        cli_warn_memory_store(ctx);
        for (size_t i = 0; i < n && ex == CLI_EXIT_OK; i++) {
            runlane_err_t rc = runlane_touch(rl, convs[i]);
            if (rc != RUNLANE_OK) ex = cli_lib_fail(ctx, rc, convs[i]);
        }
        runlane_destroy(rl);
    }
    free(convs);
    return ex;
}
