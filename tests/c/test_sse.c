/* test_sse.c - the server-sent events parser: field rules, line endings,
 * and every chunk boundary giving the same events. */
#include "rltest.h"

#include "internal.h"
#include "runlane.h"
#include "sse.h"

/* Collected events rendered as "type|id|data\n" lines. */
typedef struct {
    rl_buf_t out;
    int count;
    int stop_after; /* return non-zero from the callback after this many (0: never) */
} sink_t;

static int on_event(void *opaque, const char *event, const char *data, size_t len,
                    const char *id) {
    sink_t *s = opaque;
    rl_buf_puts(&s->out, event);
    rl_buf_puts(&s->out, "|");
    rl_buf_puts(&s->out, id);
    rl_buf_puts(&s->out, "|");
    rl_buf_append(&s->out, data, len);
    rl_buf_puts(&s->out, "\n");
    s->count++;
    return s->stop_after && s->count >= s->stop_after ? 7 : 0;
}

/* Parses `stream` cut at the given split points (sorted, within it). */
static char *parse_split(const char *stream, size_t len, const size_t *cuts, int ncuts) {
    sink_t s = {{0}, 0, 0};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &s);
    size_t at = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rl_sse_feed(&p, stream + at, end - at);
        at = end;
    }
    rl_sse_finish(&p);
    rl_sse_free(&p);
    rl_buf_puts(&s.out, "");
    return rl_buf_take(&s.out);
}

static char *parse_whole(const char *stream) {
    return parse_split(stream, strlen(stream), NULL, 0);
}

/* Every single split point and every pair of split points give the same
 * events as the whole stream. */
static void check_all_splits(const char *stream, const char *expected) {
    size_t len = strlen(stream);
    char *whole = parse_whole(stream);
    RL_CHECK_STR(expected, whole);
    for (size_t a = 0; a <= len; a++) {
        size_t cuts1[1] = {a};
        char *got = parse_split(stream, len, cuts1, 1);
        RL_CHECK_MSG(strcmp(got, whole) == 0, "split at %zu: expected <%s>, got <%s>", a, whole,
                     got);
        free(got);
        if (len > 200) continue;
        for (size_t b = a; b <= len; b++) {
            size_t cuts2[2] = {a, b};
            got = parse_split(stream, len, cuts2, 2);
            RL_CHECK_MSG(strcmp(got, whole) == 0, "splits at %zu,%zu: expected <%s>, got <%s>", a,
                         b, whole, got);
            free(got);
        }
    }
    /* Byte by byte. */
    size_t *cuts = calloc(len + 1, sizeof(size_t));
    for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
    char *got = parse_split(stream, len, cuts, len ? (int)len - 1 : 0);
    free(cuts);
    RL_CHECK_MSG(strcmp(got, whole) == 0, "byte by byte: expected <%s>, got <%s>", whole, got);
    free(got);
    free(whole);
}

/* Replaces every "\n" of a LF stream with `eol`. */
static char *with_eol(const char *lf, const char *eol) {
    rl_buf_t b;
    rl_buf_init(&b);
    for (const char *p = lf; *p; p++) {
        if (*p == '\n') rl_buf_puts(&b, eol);
        else rl_buf_append(&b, p, 1);
    }
    rl_buf_puts(&b, "");
    return rl_buf_take(&b);
}

static const char *SAMPLE =
    ": keep-alive comment\n"
    "event: response.created\n"
    "data: {\"type\":\"response.created\"}\n"
    "\n"
    "event: response.output_text.delta\n"
    "id: 7\n"
    "data: {\"delta\":\"Hel\"}\n"
    "\n"
    "data: line one\n"
    "data:line two\n"
    "data\n"
    "\n"
    "retry: 1500\n"
    "event: done\n"
    "data: [DONE]\n"
    "\n";

static const char *SAMPLE_EVENTS =
    "response.created||{\"type\":\"response.created\"}\n"
    "response.output_text.delta|7|{\"delta\":\"Hel\"}\n"
    "message|7|line one\nline two\n\n"
    "done|7|[DONE]\n";

static void test_sse_sample_every_split_lf(void) { check_all_splits(SAMPLE, SAMPLE_EVENTS); }

static void test_sse_sample_every_split_crlf(void) {
    char *s = with_eol(SAMPLE, "\r\n");
    check_all_splits(s, SAMPLE_EVENTS);
    free(s);
}

static void test_sse_sample_every_split_cr(void) {
    char *s = with_eol(SAMPLE, "\r");
    check_all_splits(s, SAMPLE_EVENTS);
    free(s);
}

static void test_sse_mixed_line_endings(void) {
    check_all_splits("data: a\r\ndata: b\rdata: c\n\r\nevent: x\rdata: y\r\r",
                     "message||a\nb\nc\nx||y\n");
}

static void test_sse_field_rules(void) {
    /* No space after the colon; only one space removed; unknown fields and
     * comments ignored; a field without colon has an empty value. */
    check_all_splits("data:x\n\ndata:  two spaces\n\nfoo: bar\n: comment\ndata: z\n\n",
                     "message||x\nmessage|| two spaces\nmessage||z\n");
    /* Events without data are not dispatched and reset the type. */
    check_all_splits("event: lonely\n\ndata: d\n\n", "message||d\n");
    /* An empty data line makes an empty event. */
    check_all_splits("data\n\n", "message||\n");
    check_all_splits("data:\n\n", "message||\n");
    /* Two data lines, one empty: "\n" joined. */
    check_all_splits("data\ndata\n\n", "message||\n\n");
    /* The last event id sticks; an empty id resets it. */
    check_all_splits("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
                     "message|1|a\nmessage|1|b\nmessage||c\n");
}

static void test_sse_retry_field(void) {
    sink_t s = {{0}, 0, 0};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &s);
    RL_CHECK_INT(-1, p.retry_ms);
    rl_sse_feed(&p, "retry: 2500\n", 12);
    RL_CHECK_INT(2500, p.retry_ms);
    rl_sse_feed(&p, "retry: 12x\n", 11);
    RL_CHECK_INT(2500, p.retry_ms);
    rl_sse_feed(&p, "retry:\n", 7);
    RL_CHECK_INT(2500, p.retry_ms);
    rl_sse_free(&p);
    rl_buf_free(&s.out);
}

static void test_sse_unterminated_event_discarded(void) {
    check_all_splits("data: complete\n\ndata: partial\n", "message||complete\n");
    check_all_splits("data: partial", "");
}

static void test_sse_bom_skipped_once(void) {
    check_all_splits("\xEF\xBB\xBF" "data: a\n\n", "message||a\n");
    /* A second BOM is content: the field name is then unknown. */
    check_all_splits("\xEF\xBB\xBF\xEF\xBB\xBF" "data: a\n\ndata: b\n\n", "message||b\n");
    /* Bytes that only start like a BOM are content. */
    check_all_splits("\xEF\xBB" "x\ndata: q\n\n", "message||q\n");
}

static void test_sse_utf8_and_long_data(void) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "event: big\ndata: ");
    for (int i = 0; i < 5000; i++) rl_buf_puts(&b, "\xC3\xA9");
    rl_buf_puts(&b, "\n\n");
    char *stream = rl_buf_take(&b);
    char *got = parse_whole(stream);
    RL_CHECK(strncmp(got, "big||\xC3\xA9\xC3\xA9", 8) == 0);
    RL_CHECK_INT(strlen("big||") + 10000 + 1, strlen(got));
    /* Chunked at every 1..64 byte stride. */
    size_t len = strlen(stream);
    for (size_t stride = 1; stride <= 64; stride++) {
        size_t n = len / stride;
        size_t *cuts = calloc(n + 1, sizeof(size_t));
        int k = 0;
        for (size_t at = stride; at < len; at += stride) cuts[k++] = at;
        char *g2 = parse_split(stream, len, cuts, k);
        RL_CHECK_MSG(strcmp(g2, got) == 0, "stride %zu differs", stride);
        free(g2);
        free(cuts);
    }
    free(got);
    free(stream);
}

static void test_sse_callback_stops_feed(void) {
    sink_t s = {{0}, 0, 1};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &s);
    const char *st = "data: 1\n\ndata: 2\n\n";
    RL_CHECK_INT(7, rl_sse_feed(&p, st, strlen(st)));
    RL_CHECK_INT(1, s.count);
    rl_sse_free(&p);
    rl_buf_free(&s.out);
}

static void test_sse_reuse_after_finish(void) {
    sink_t s = {{0}, 0, 0};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &s);
    const char *a = "id: 9\ndata: first\n\ndata: cut";
    rl_sse_feed(&p, a, strlen(a));
    rl_sse_finish(&p);
    const char *b2 = "data: second\n\n";
    rl_sse_feed(&p, b2, strlen(b2));
    rl_buf_puts(&s.out, "");
    RL_CHECK_STR("message|9|first\nmessage|9|second\n", s.out.data);
    rl_sse_free(&p);
    rl_buf_free(&s.out);
}

/* A peer that never ends its line (or its event) stops the parser at the
 * limit with RL_SSE_TOO_LONG instead of growing the buffer; the parser keeps
 * refusing until rl_sse_finish, then reads a new stream. */
static void test_sse_line_and_event_limits(void) {
    sink_t s = {{0}, 0, 0};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &s);
    rl_sse_limit(&p, 64, 100);
    char chunk[16];
    memset(chunk, 'x', sizeof(chunk));
    RL_CHECK_INT(0, rl_sse_feed(&p, "data: ", 6));
    int rc = 0, fed = 0;
    for (int i = 0; i < 1000 && rc == 0; i++, fed++) rc = rl_sse_feed(&p, chunk, sizeof(chunk));
    RL_CHECK_INT(RL_SSE_TOO_LONG, rc);
    RL_CHECK_INT(1, p.too_long);
    RL_CHECK_MSG(fed <= 5, "the line limit (64) should stop it within 5 chunks, took %d", fed);
    RL_CHECK(p.line.len <= 64);
    RL_CHECK_INT(RL_SSE_TOO_LONG, rl_sse_feed(&p, "\n\n", 2));
    RL_CHECK_INT(0, s.count);
    rl_sse_finish(&p);
    /* Lines under the limit, but an event whose data keeps growing. */
    const char *line = "data: 0123456789012345678901234567890123456789\n"; /* 40 bytes of data */
    RL_CHECK_INT(0, rl_sse_feed(&p, line, strlen(line)));
    RL_CHECK_INT(0, rl_sse_feed(&p, line, strlen(line)));
    RL_CHECK_INT(RL_SSE_TOO_LONG, rl_sse_feed(&p, line, strlen(line)));
    RL_CHECK_INT(2, p.too_long);
    RL_CHECK(p.data.len <= 100);
    RL_CHECK_INT(0, s.count);
    rl_sse_finish(&p);
    /* After finish: an ordinary event goes through. */
    RL_CHECK_INT(0, rl_sse_feed(&p, "data: ok\n\n", 10));
    RL_CHECK_INT(1, s.count);
    rl_sse_free(&p);
    rl_buf_free(&s.out);
}

int main(void) {
    RL_RUN(test_sse_sample_every_split_lf);
    RL_RUN(test_sse_sample_every_split_crlf);
    RL_RUN(test_sse_sample_every_split_cr);
    RL_RUN(test_sse_mixed_line_endings);
    RL_RUN(test_sse_field_rules);
    RL_RUN(test_sse_retry_field);
    RL_RUN(test_sse_unterminated_event_discarded);
    RL_RUN(test_sse_bom_skipped_once);
    RL_RUN(test_sse_utf8_and_long_data);
    RL_RUN(test_sse_callback_stops_feed);
    RL_RUN(test_sse_reuse_after_finish);
    RL_RUN(test_sse_line_and_event_limits);
    return rl_test_summary();
}
