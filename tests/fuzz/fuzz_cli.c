/* fuzz_cli.c - what the runlane tool reads from outside the library
 * (core/cli/parse.c): the JSON lines of `enqueue --file`, the stderr of
 * `worker --exec` commands (the tail that becomes a batch's error) and the
 * stdout of `worker --tool-exec` commands (the output submitted for a tool
 * call, or the error text of a failed tool).
 *
 * Input: [op] then bytes.
 *   op % 3 == 0: the bytes are a --file.
 *   op % 3 == 1: stderr, written in chunks: each chunk is [len] then len
 *                bytes (len 0xFF: 4096 copies of the next byte).
 *   op % 3 == 2: [status] tool name \0 output bytes.
 * Invariants (besides no crash, leak or undefined behaviour):
 *   - --file: a success is a JSON array of exactly the non-blank lines, each
 *     an object with string "conversation_id" and "content", with strictly
 *     increasing line numbers; a refusal names a line (or the NUL byte) and
 *     returns nothing;
 *   - --exec: the tail holds exactly the last bytes written (up to
 *     CLI_TAIL_MAX); the error text fits its buffer and is valid UTF-8
 *     without control characters but \n and \t;
 *   - --tool-exec: the output is valid UTF-8 without control characters but
 *     \n and \t, bounded by CLI_TOOL_OUTPUT_MAX plus the message; a failed
 *     tool's says "error: tool NAME exited with status N"; a clean output of
 *     a successful tool is passed on verbatim (less trailing newlines). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "fuzz_common.h"
#include "internal.h"

/* Valid UTF-8 with no control character but \n and \t. */
static int clean_text(const char *s) {
    if (!rl_utf8_valid(s, strlen(s))) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7F) return 0;
    return 1;
}

static void fuzz_jsonl(const uint8_t *data, size_t size) {
    char *arr = NULL, err[256];
    size_t n = 99, *lines = NULL;
    int rc = cli_jsonl_parse((const char *)data, size, &arr, &n, &lines, err, sizeof(err));
    FZ_CHECK(rc == CLI_EXIT_OK || rc == CLI_EXIT_USAGE || rc == CLI_EXIT_RUNTIME, "rc %d", rc);
    if (rc != CLI_EXIT_OK) {
        FZ_CHECK(!arr && !lines && n == 0, "a refusal returned something");
        FZ_CHECK(strstr(err, "line ") || strstr(err, "NUL") || rc == CLI_EXIT_RUNTIME,
                 "the refusal names no line: %s", err);
        return;
    }
    /* Reference: the non-blank lines (spaces, tabs and CRs are blank). */
    size_t want = 0, total_lines = 0;
    for (size_t i = 0; i < size;) {
        size_t j = i;
        int blank = 1;
        while (j < size && data[j] != '\n') {
            if (data[j] != ' ' && data[j] != '\t' && data[j] != '\r') blank = 0;
            j++;
        }
        total_lines++;
        if (!blank) want++;
        i = j + 1;
    }
    FZ_CHECK(n == want, "%zu messages from %zu non-blank lines", n, want);
    cJSON *j = cJSON_ParseWithOpts(arr, NULL, 1);
    FZ_CHECK(cJSON_IsArray(j) && (size_t)cJSON_GetArraySize(j) == n,
             "not a JSON array of %zu messages: %.300s", n, arr);
    const cJSON *m;
    cJSON_ArrayForEach(m, j) {
        FZ_CHECK(cJSON_IsObject(m) &&
                     cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "conversation_id")) &&
                     cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "content")),
                 "a message without string conversation_id and content: %.300s", arr);
    }
    for (size_t i = 0; i < n; i++)
        FZ_CHECK(lines[i] >= 1 && lines[i] <= total_lines && (i == 0 || lines[i] > lines[i - 1]),
                 "line numbers out of order");
    cJSON_Delete(j);
    free(arr);
    free(lines);
}

static void fuzz_tail(const uint8_t *data, size_t size) {
    cli_tail_t t;
    memset(&t, 0, sizeof(t));
    static char all[1 << 21];
    size_t total = 0;
    fz_in_t in = {data, size};
    while (in.n) {
        unsigned len = fz_byte(&in);
        static char chunk[4096];
        size_t k;
        if (len == 0xFF) {
            k = sizeof(chunk);
            memset(chunk, (int)fz_byte(&in), k);
        } else {
            k = len < in.n ? len : in.n;
            memcpy(chunk, in.p, k);
            in.p += k;
            in.n -= k;
        }
        cli_tail_add(&t, chunk, k);
        if (total + k <= sizeof(all)) memcpy(all + total, chunk, k);
        total += k;
    }
    size_t keep = total < CLI_TAIL_MAX ? total : CLI_TAIL_MAX;
    FZ_CHECK(t.len == keep, "tail holds %zu bytes, expected %zu", t.len, keep);
    if (total <= sizeof(all))
        FZ_CHECK(memcmp(t.buf, all + total - keep, keep) == 0, "the tail is not the last bytes");
    FZ_CHECK(t.overflowed == (total > CLI_TAIL_MAX), "overflowed %d after %zu bytes", t.overflowed,
             total);
    char small[64], text[CLI_ERROR_TAIL_MAX + 8];
    cli_tail_text(&t, small, sizeof(small));
    cli_tail_text(&t, text, sizeof(text));
    FZ_CHECK(clean_text(text), "error text: %.300s", text);
    FZ_CHECK(strlen(small) < sizeof(small) && clean_text(small), "cut error text: %.60s", small);
}

static void fuzz_tool(const uint8_t *data, size_t size) {
    fz_in_t in = {data, size};
    int status = (int)fz_byte(&in) % 130; /* 0: success; 128: killed; 1..: exit status */
    char *name = fz_field(&in, 0, NULL);
    char *out = cli_tool_output(name, status, (const char *)in.p, in.n);
    FZ_CHECK(out != NULL, "no output");
    size_t ol = strlen(out);
    FZ_CHECK(clean_text(out), "the output is not clean text: %.300s", out);
    FZ_CHECK(ol <= CLI_TOOL_OUTPUT_MAX + strlen(name) + 80, "output of %zu bytes", ol);
    if (status) {
        char head[64];
        snprintf(head, sizeof(head), "error: tool ");
        FZ_CHECK(strncmp(out, head, strlen(head)) == 0, "a failure's output: %.300s", out);
        char st[32];
        snprintf(st, sizeof(st), " exited with status %d", status);
        FZ_CHECK(strstr(out, st) != NULL, "the status is not in: %.300s", out);
    } else {
        FZ_CHECK(!ol || (out[ol - 1] != '\n' && out[ol - 1] != '\r'), "a trailing newline");
        /* A clean output (valid text, no NUL, within the cap) goes verbatim. */
        char *raw = malloc(in.n + 1);
        if (!raw) abort();
        memcpy(raw, in.p, in.n);
        raw[in.n] = '\0';
        size_t rl = in.n;
        while (rl && (raw[rl - 1] == '\n' || raw[rl - 1] == '\r')) raw[--rl] = '\0';
        if (in.n <= CLI_TOOL_OUTPUT_MAX && !memchr(in.p, 0, in.n) && clean_text(raw))
            FZ_CHECK(strcmp(raw, out) == 0, "a clean output changed: %.200s -> %.200s", raw, out);
        free(raw);
    }
    free(out);
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 1 << 16) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_jsonl(data + 1, size - 1); break;
    case 1: fuzz_tail(data + 1, size - 1); break;
    default: fuzz_tool(data + 1, size - 1); break;
    }
    return 0;
}
