/* cmd_config.c - `runlane config`: the property table as a list, a markdown
 * table (the README's configuration reference) or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

enum { O_MARKDOWN = 1, O_JSON, O_VALUES };

static const char *str_of(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* " (10 s)" for a duration key whose value reads better in units. */
static void human_ms(char *dst, size_t n, const char *key, const char *value) {
    dst[0] = '\0';
    if (!ends_with(key, ".ms")) return;
    char *end;
    long long v = strtoll(value, &end, 10);
    if (*end || v < 1000) return;
    static const struct {
        long long ms;
        const char *unit;
    } units[] = {{86400000LL, "day"}, {3600000LL, "h"}, {60000LL, "min"}, {1000LL, "s"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (v % units[i].ms == 0) {
            long long q = v / units[i].ms;
            snprintf(dst, n, " (%lld %s%s)", q, units[i].unit,
                     strcmp(units[i].unit, "day") == 0 && q != 1 ? "s" : "");
            return;
        }
    }
}

/* Range or accepted values of a property, as text; `md` quotes with
 * backticks. */
static void range_text(char *dst, size_t n, const cJSON *p, int md) {
    const char *type = str_of(p, "type");
    const cJSON *min = cJSON_GetObjectItemCaseSensitive(p, "min");
    const cJSON *max = cJSON_GetObjectItemCaseSensitive(p, "max");
    const cJSON *maxb = cJSON_GetObjectItemCaseSensitive(p, "max_bytes");
    const cJSON *vals = cJSON_GetObjectItemCaseSensitive(p, "values");
    dst[0] = '\0';
    if (cJSON_IsNumber(min) && cJSON_IsNumber(max)) {
        if (strcmp(type, "float") == 0)
            snprintf(dst, n, "%g .. %g", min->valuedouble, max->valuedouble);
        else
            snprintf(dst, n, "%.0f .. %.0f", min->valuedouble, max->valuedouble);
    } else if (cJSON_IsArray(vals)) {
        size_t o = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, vals) {
            if (!cJSON_IsString(v) || o >= n) continue;
            o += (size_t)snprintf(dst + o, n - o, "%s%s%s%s", o ? (md ? ", " : " | ") : "",
                                  md ? "`" : "", v->valuestring, md ? "`" : "");
        }
    } else if (strcmp(type, "bool") == 0) {
        snprintf(dst, n, md ? "`true`, `false`" : "true | false");
    } else if (strcmp(type, "json") == 0) {
        snprintf(dst, n, "JSON %s", str_of(p, "default")[0] == '[' ? "array" : "object");
    } else if (cJSON_IsNumber(maxb)) {
        snprintf(dst, n, "up to %.0f bytes", maxb->valuedouble);
    }
}

/* Appends `s` to stdout as one markdown table cell. */
static void md_cell(const char *s) {
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else if (*s == '\n')
            fputs("<br>", stdout);
        else
            putchar(*s);
    }
}

static void print_markdown(const cJSON *props) {
    printf("| Key | Type | Default | Range / values | Description |\n");
    printf("|---|---|---|---|---|\n");
    const cJSON *p;
    cJSON_ArrayForEach(p, props) {
        const char *name = str_of(p, "name"), *def = str_of(p, "default");
        char range[1024], human[64], buf[1200];
        range_text(range, sizeof(range), p, 1);
        human_ms(human, sizeof(human), name, def);
        printf("| `");
        md_cell(name);
        printf("` | ");
        md_cell(str_of(p, "type"));
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "secret"))) printf(", secret");
        printf(" | ");
        if (*def) {
            snprintf(buf, sizeof(buf), "`%s`%s", def, human);
            md_cell(buf);
        } else {
            printf("*(empty)*");
        }
        printf(" | ");
        md_cell(*range ? range : "");
        printf(" | ");
        md_cell(str_of(p, "doc"));
        printf(" |\n");
    }
}

/* Prints `text` wrapped at `width` columns, each line indented. */
static void print_wrapped(const char *text, int indent, int width) {
    const char *s = text;
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        const char *line_end = s, *last_break = NULL;
        int cols = 0;
        while (*line_end && cols < width - indent) {
            if (*line_end == ' ') last_break = line_end;
            if (((unsigned char)*line_end & 0xC0) != 0x80) cols++;
            line_end++;
        }
        if (*line_end && last_break) line_end = last_break;
        printf("%*s%.*s\n", indent, "", (int)(line_end - s), s);
        s = line_end;
    }
}

static void print_list(const cJSON *props) {
    const cJSON *p;
    int first = 1;
    cJSON_ArrayForEach(p, props) {
        const char *name = str_of(p, "name"), *def = str_of(p, "default");
        char range[1024], human[64];
        range_text(range, sizeof(range), p, 0);
        human_ms(human, sizeof(human), name, def);
        if (!first) putchar('\n');
        first = 0;
        printf("%s = %s%s\n", name, *def ? def : "\"\"", human);
        printf("    type: %s%s", str_of(p, "type"),
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "secret")) ? " (secret)" : "");
        if (*range) printf("; %s: %s", cJSON_GetObjectItemCaseSensitive(p, "values") ? "values" : "range", range);
        printf("\n");
        print_wrapped(str_of(p, "doc"), 4, 80);
    }
}

static int print_values(cli_ctx_t *ctx) {
    runlane_conf_t *conf = cli_conf(ctx);
    char *dump = NULL;
    runlane_err_t rc = runlane_conf_dump(&dump, conf);
    runlane_conf_destroy(conf);
    if (rc != RUNLANE_OK) return cli_lib_fail(ctx, rc, NULL);
    cJSON *j = cJSON_Parse(dump);
    runlane_free(dump);
    const cJSON *it;
    int w = 0;
    cJSON_ArrayForEach(it, j) {
        int l = (int)strlen(it->string);
        if (l > w) w = l;
    }
    cJSON_ArrayForEach(it, j) {
        char clean[8192];
        /* The store URL may hold a password: never print it. */
        cli_redact(clean, sizeof(clean), cJSON_IsString(it) ? it->valuestring : "");
        printf("%-*s = %s\n", w, it->string, clean);
    }
    cJSON_Delete(j);
    return CLI_EXIT_OK;
}

int cli_cmd_config(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t opts[] = {
        {"markdown", 0, CLI_ARG_NONE, O_MARKDOWN},
        {"json", 0, CLI_ARG_NONE, O_JSON},
        {"values", 0, CLI_ARG_NONE, O_VALUES},
        {NULL, 0, 0, 0},
    };
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    int mode = 0, o;
    const char *v;
    while ((o = cli_next(&p, opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(cli_help_config);
        case O_MARKDOWN:
        case O_JSON:
        case O_VALUES:
            if (mode && mode != o) cli_usage_fail(ctx, "choose one of --markdown, --json and --values");
            mode = o;
            break;
        case CLI_POSITIONAL: cli_usage_fail(ctx, "unexpected argument \"%s\"", v);
        }
    }
    if (mode == O_VALUES) return print_values(ctx);
    const char *raw = runlane_conf_properties();
    if (mode == O_JSON) {
        printf("%s\n", raw);
        return CLI_EXIT_OK;
    }
    cJSON *props = cJSON_Parse(raw);
    if (!cJSON_IsArray(props)) {
        cJSON_Delete(props);
        cli_err(ctx, "the library returned an unreadable property table");
        return CLI_EXIT_RUNTIME;
    }
    if (mode == O_MARKDOWN)
        print_markdown(props);
    else
        print_list(props);
    cJSON_Delete(props);
    return CLI_EXIT_OK;
}
