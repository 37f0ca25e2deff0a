/* parse.c - what the runlane tool reads from outside the library: the
 * JSON-lines input of `enqueue --file`, the stderr of `worker --exec`
 * commands and the stdout of `--tool-exec` commands. Pure functions (no
 * I/O, no exit), so that tests/fuzz/fuzz_cli.c calls them on arbitrary
 * bytes; the commands (cmd_enqueue.c, cmd_worker.c, cmd_http.c) do the I/O
 * and report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned int cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

void cli_escape(char *dst, size_t dst_size, const char *src) {
    static const char hex[] = "0123456789abcdef";
    if (!dst_size) return;
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    while (*s) {
        char esc[8];
        const char *piece = esc;
        size_t plen = 4, n = utf8_seq(s);
        if (*s == '\n' || *s == '\r' || *s == '\t') {
            esc[0] = '\\';
            esc[1] = *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't';
            plen = 2;
            n = 1;
        } else if (*s < 0x20 || *s == 0x7F || n == 0) {
            esc[0] = '\\'; esc[1] = 'x'; esc[2] = hex[*s >> 4]; esc[3] = hex[*s & 15];
            n = 1;
        } else if (n == 2 && s[0] == 0xC2 && s[1] < 0xA0) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)s[1]);
            plen = 6;
        } else {
            piece = (const char *)s;
            plen = n;
        }
        if (o + plen >= dst_size) break;
        memcpy(dst + o, piece, plen);
        o += plen;
        s += n;
    }
    dst[o] = '\0';
}

void cli_sanitize_utf8(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
        } else if (n == 1 && ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7F)) {
            *p++ = ' ';
        } else {
            p += n;
        }
    }
}

/* ---- enqueue --file ---- */

int cli_jsonl_parse(const char *data, size_t len, char **array_out, size_t *n_out,
                    size_t **line_of_out, char *err, size_t err_size) {
    *array_out = NULL;
    *n_out = 0;
    *line_of_out = NULL;
    if (err_size) err[0] = '\0';
    if (memchr(data, '\0', len)) {
        snprintf(err, err_size, "contains a NUL byte");
        return CLI_EXIT_USAGE;
    }
    char *copy = malloc(len + 1), *out = malloc(len + 3);
    size_t cap_lines = 64, n = 0, o = 0, lineno = 0;
    size_t *lines = malloc(cap_lines * sizeof(*lines));
    int rc = CLI_EXIT_OK;
    if (!copy || !out || !lines) {
        snprintf(err, err_size, "out of memory");
        rc = CLI_EXIT_RUNTIME;
        goto done;
    }
    memcpy(copy, data, len);
    copy[len] = '\0';
    out[o++] = '[';
    char *p = copy;
    while (*p) {
        char *nl = strchr(p, '\n');
        char *end = nl ? nl : p + strlen(p);
        lineno++;
        *end = '\0';
        char *s = p;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (*s) {
            cJSON *j = cJSON_ParseWithOpts(s, NULL, 1);
            int obj = cJSON_IsObject(j);
            int strs = obj && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "conversation_id")) &&
                       cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "content"));
            cJSON_Delete(j);
            if (!obj || !strs) {
                snprintf(err, err_size,
                         obj ? "line %zu: \"conversation_id\" and \"content\" must be strings"
                             : "line %zu: expected one JSON object per line",
                         lineno);
                rc = CLI_EXIT_USAGE;
                goto done;
            }
            if (n == cap_lines) {
                cap_lines *= 2;
                size_t *nlines = realloc(lines, cap_lines * sizeof(*lines));
                if (!nlines) {
                    snprintf(err, err_size, "out of memory");
                    rc = CLI_EXIT_RUNTIME;
                    goto done;
                }
                lines = nlines;
            }
            lines[n] = lineno;
            if (n++) out[o++] = ',';
            size_t sl = strlen(s);
            memcpy(out + o, s, sl);
            o += sl;
        }
        p = nl ? nl + 1 : end;
    }
    out[o++] = ']';
    out[o] = '\0';
done:
    free(copy);
    if (rc != CLI_EXIT_OK) {
        free(out);
        free(lines);
        return rc;
    }
    *array_out = out;
    *n_out = n;
    *line_of_out = lines;
    return CLI_EXIT_OK;
}

/* ---- worker --exec: the tail of a command's stderr ---- */

void cli_tail_add(cli_tail_t *t, const char *s, size_t n) {
    if (n >= CLI_TAIL_MAX) {
        memcpy(t->buf, s + n - CLI_TAIL_MAX, CLI_TAIL_MAX);
        t->len = CLI_TAIL_MAX;
        t->overflowed = 1;
        return;
    }
    if (t->len + n > CLI_TAIL_MAX) {
        size_t drop = t->len + n - CLI_TAIL_MAX;
        memmove(t->buf, t->buf + drop, t->len - drop);
        t->len -= drop;
        t->overflowed = 1;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

void cli_tail_text(const cli_tail_t *t, char *dst, size_t n) {
    size_t len = t->len;
    while (len && (t->buf[len - 1] == '\n' || t->buf[len - 1] == '\r' || t->buf[len - 1] == ' ' ||
                   t->buf[len - 1] == '\t'))
        len--;
    size_t start = len > CLI_ERROR_TAIL_MAX ? len - CLI_ERROR_TAIL_MAX : 0;
    int cut = start > 0 || t->overflowed;
    if (cut) {
        /* Start at a line boundary when one is near. */
        const char *nl = memchr(t->buf + start, '\n', len - start);
        if (nl && (size_t)(nl - t->buf) < start + CLI_ERROR_TAIL_MAX / 2) start = (size_t)(nl - t->buf) + 1;
        while (start < len && ((unsigned char)t->buf[start] & 0xC0) == 0x80) start++;
    }
    while (start < len && (t->buf[start] == '\n' || t->buf[start] == ' ')) start++;
    snprintf(dst, n, "%s%.*s", cut && start < len ? "..." : "", (int)(len - start), t->buf + start);
    cli_sanitize_utf8(dst);
}

/* ---- worker --tool-exec: a tool command's output ---- */

char *cli_tool_output(const char *name, int status, const char *raw, size_t len) {
    size_t used = len > CLI_TOOL_OUTPUT_MAX ? CLI_TOOL_OUTPUT_MAX : len;
    char *text = malloc(used + 1);
    if (!text) return NULL;
    memcpy(text, raw, used);
    text[used] = '\0';
    used = strlen(text); /* a NUL byte ends the output */
    while (used && (text[used - 1] == '\n' || text[used - 1] == '\r')) text[--used] = '\0';
    cli_sanitize_utf8(text);
    if (status == 0) return text;
    /* The model learns that the tool failed, and how. */
    size_t cap = strlen(name) + strlen(text) + 80;
    char *msg = malloc(cap);
    if (msg)
        snprintf(msg, cap, "error: tool %s exited with status %d%s%s", name, status,
                 *text ? ": " : "", text);
    free(text);
    if (msg) cli_sanitize_utf8(msg);
    return msg;
}
