/* fuzz_sse.c - the server-sent events parser (core/src/sse.c).
 *
 * Input: byte 0 and 1 seed the chunking, the rest is the stream.
 * Invariants:
 *   - no crash, no leak, no out-of-bounds read (sanitizers);
 *   - the events of a one-shot feed equal those of a reference parser
 *     written here from the rules in sse.h (WHATWG event stream);
 *   - feeding the same stream in random-sized chunks, and byte by byte,
 *     gives exactly the same events (type, data bytes, last id) and retry;
 *   - every dispatched event: no CR/LF in type or id,
 *     data NUL-terminated at data_len;
 *   - a callback returning non-zero stops at once: rl_sse_feed returns that
 *     value and no later event is dispatched;
 *   - after rl_sse_finish the parser reads a new stream like a fresh one,
 *     keeping only the last event id. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "sse.h"

typedef struct ev {
    char *type, *data, *id;
    size_t len;
} ev_t;

typedef struct evs {
    ev_t *v;
    size_t n, cap;
    size_t stop_at; /* return 77 after this many events (0: never) */
} evs_t;

static char *dupmem(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void evs_add(evs_t *l, const char *type, size_t tlen, const char *data, size_t len,
                    const char *id, size_t idlen) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (!l->v) abort();
    }
    ev_t *e = &l->v[l->n++];
    e->type = dupmem(type, tlen);
    e->data = dupmem(data, len);
    e->len = len;
    e->id = dupmem(id, idlen);
}

static void evs_free(evs_t *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].type);
        free(l->v[i].data);
        free(l->v[i].id);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int on_event(void *opaque, const char *event, const char *data, size_t data_len,
                    const char *id) {
    evs_t *l = opaque;
    FZ_CHECK(event && data && id, "NULL argument to the callback");
    FZ_CHECK(!strpbrk(event, "\r\n"), "event type with a line end: \"%s\"", event);
    FZ_CHECK(!strpbrk(id, "\r\n"), "event id with a line end");
    FZ_CHECK(data[data_len] == '\0', "data not NUL-terminated at data_len %zu", data_len);
    evs_add(l, event, strlen(event), data, data_len, id, strlen(id));
    if (l->stop_at && l->n == l->stop_at) return 77;
    return 0;
}

static void evs_equal(const evs_t *a, const evs_t *b, const char *what) {
    FZ_CHECK(a->n == b->n, "%s: %zu events, expected %zu", what, b->n, a->n);
    for (size_t i = 0; i < a->n; i++) {
        FZ_CHECK(strcmp(a->v[i].type, b->v[i].type) == 0, "%s: event %zu type \"%s\", expected \"%s\"",
                 what, i, b->v[i].type, a->v[i].type);
        FZ_CHECK(a->v[i].len == b->v[i].len && memcmp(a->v[i].data, b->v[i].data, a->v[i].len) == 0,
                 "%s: event %zu data differs (%zu vs %zu bytes)", what, i, b->v[i].len, a->v[i].len);
        FZ_CHECK(strcmp(a->v[i].id, b->v[i].id) == 0, "%s: event %zu id \"%s\", expected \"%s\"",
                 what, i, b->v[i].id, a->v[i].id);
    }
}

/* ---- the reference: a direct reading of the rules in sse.h ---- */

typedef struct ref {
    char *data, *type, *id;
    size_t dlen, tlen, idlen;
    int64_t retry;
} ref_t;

static void ref_append(char **s, size_t *n, const char *p, size_t k) {
    *s = realloc(*s, *n + k + 1);
    if (!*s) abort();
    memcpy(*s + *n, p, k);
    *n += k;
    (*s)[*n] = '\0';
}

static void ref_line(ref_t *r, const char *l, size_t n, evs_t *out) {
    if (n == 0) {
        if (r->dlen) {
            /* drop the final "\n" */
            const char *type = r->tlen ? r->type : "message";
            size_t tl = r->tlen ? r->tlen : 7;
            /* The id is used up to its first NUL (it never holds one). */
            evs_add(out, type, strlen(type) < tl ? strlen(type) : tl, r->data, r->dlen - 1,
                    r->idlen ? r->id : "", r->idlen);
        }
        r->dlen = r->tlen = 0;
        return;
    }
    if (l[0] == ':') return;
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 5 && memcmp(l, "event", 5) == 0) {
        r->tlen = 0;
        ref_append(&r->type, &r->tlen, v, vlen);
    } else if (flen == 4 && memcmp(l, "data", 4) == 0) {
        ref_append(&r->data, &r->dlen, v, vlen);
        ref_append(&r->data, &r->dlen, "\n", 1);
    } else if (flen == 2 && memcmp(l, "id", 2) == 0) {
        if (!memchr(v, '\0', vlen)) {
            r->idlen = 0;
            ref_append(&r->id, &r->idlen, v, vlen);
        }
    } else if (flen == 5 && memcmp(l, "retry", 5) == 0) {
        int ok = vlen > 0;
        int64_t x = 0;
        for (size_t k = 0; k < vlen; k++) {
            if (v[k] < '0' || v[k] > '9') {
                ok = 0;
                break;
            }
            if (x < INT64_MAX / 10 - 10) x = x * 10 + (v[k] - '0');
        }
        if (ok) r->retry = x;
    }
}

/* Parses one whole stream (starting with the given last id). */
static void ref_parse(ref_t *r, const char *s, size_t n, evs_t *out) {
    size_t i = 0;
    if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) i = 3;
    r->dlen = r->tlen = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n') j++;
        if (j == n) break; /* an unterminated last line is never processed */
        /* The type of an event (event field) is used up to its first NUL,
         * like the C string the parser hands over. */
        ref_line(r, s + i, j - i, out);
        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n') i++;
    }
}

static void ref_free(ref_t *r) {
    free(r->data);
    free(r->type);
    free(r->id);
}

/* ---- driver ---- */

static uint32_t rng_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void feed_all(rl_sse_t *p, const char *s, size_t n, size_t max_chunk, uint32_t seed) {
    size_t i = 0;
    while (i < n) {
        size_t k = max_chunk ? 1 + rng_next(&seed) % max_chunk : n - i;
        if (k > n - i) k = n - i;
        int rc = rl_sse_feed(p, s + i, k);
        FZ_CHECK(rc == 0, "rl_sse_feed returned %d", rc);
        i += k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2 || size > 1 << 16) return 0;
    uint32_t seed = 0x9E3779B9u ^ ((uint32_t)data[0] << 8 | data[1]);
    if (!seed) seed = 1;
    size_t max_chunk = 1 + data[0] % 64;
    const char *s = (const char *)data + 2;
    size_t n = size - 2;

    /* One shot. */
    evs_t one = {0};
    rl_sse_t p;
    rl_sse_init(&p, on_event, &one);
    FZ_CHECK(rl_sse_feed(&p, s, n) == 0, "one-shot feed failed");
    int64_t retry_one = p.retry_ms;
    char *last_id = dupmem(p.id.data ? p.id.data : "", p.id.len);
    size_t last_id_len = p.id.len;

    /* The reference. */
    evs_t ref = {0};
    ref_t r = {0};
    r.retry = -1;
    ref_parse(&r, s, n, &ref);
    evs_equal(&ref, &one, "one-shot feed vs reference");
    FZ_CHECK(r.retry == retry_one, "retry %lld, reference %lld", (long long)retry_one,
             (long long)r.retry);

    /* Random chunks. */
    evs_t chunked = {0};
    rl_sse_t q;
    rl_sse_init(&q, on_event, &chunked);
    feed_all(&q, s, n, max_chunk, seed);
    evs_equal(&one, &chunked, "chunked feed vs one-shot");
    FZ_CHECK(q.retry_ms == retry_one, "chunked retry %lld vs %lld", (long long)q.retry_ms,
             (long long)retry_one);

    /* Byte by byte. */
    if (n <= 4096) {
        evs_t bytes = {0};
        rl_sse_t b;
        rl_sse_init(&b, on_event, &bytes);
        feed_all(&b, s, n, 1, seed);
        evs_equal(&one, &bytes, "byte-by-byte feed vs one-shot");
        rl_sse_free(&b);
        evs_free(&bytes);
    }

    /* Stop: a callback returning non-zero ends the feed at once. */
    if (one.n) {
        evs_t part = {0};
        part.stop_at = 1 + rng_next(&seed) % one.n;
        rl_sse_t st;
        rl_sse_init(&st, on_event, &part);
        int rc = rl_sse_feed(&st, s, n);
        FZ_CHECK(rc == 77, "stopping callback: feed returned %d, expected 77", rc);
        FZ_CHECK(part.n == part.stop_at, "stopping callback: %zu events, expected %zu", part.n,
                 part.stop_at);
        for (size_t i = 0; i < part.n; i++)
            FZ_CHECK(strcmp(part.v[i].type, one.v[i].type) == 0 && part.v[i].len == one.v[i].len &&
                         memcmp(part.v[i].data, one.v[i].data, one.v[i].len) == 0,
                     "stopping callback: event %zu differs", i);
        rl_sse_free(&st);
        evs_free(&part);
    }

    /* Limits (rl_sse_limit, small ones from the input): the buffers the
     * peer fills never pass them, whatever the chunking; until a limit is
     * hit the events are the unlimited parser's, after it nothing more
     * comes; without a hit, everything is the same. */
    {
        size_t max_line = 1 + data[1] % 200, max_event = 1 + data[0] % 300;
        evs_t lim = {0};
        rl_sse_t l;
        rl_sse_init(&l, on_event, &lim);
        rl_sse_limit(&l, max_line, max_event);
        size_t i = 0;
        uint32_t lseed = seed ^ 0xA5A5u;
        int hit = 0;
        while (i < n) {
            size_t k = 1 + rng_next(&lseed) % max_chunk;
            if (k > n - i) k = n - i;
            int rc = rl_sse_feed(&l, s + i, k);
            FZ_CHECK(l.line.len <= max_line, "line buffer %zu over its limit %zu", l.line.len,
                     max_line);
            FZ_CHECK(l.data.len <= max_event, "event buffer %zu over its limit %zu", l.data.len,
                     max_event);
            if (rc == RL_SSE_TOO_LONG) {
                FZ_CHECK(l.too_long == 1 || l.too_long == 2, "too_long %d", l.too_long);
                FZ_CHECK(rl_sse_feed(&l, "\n\n", 2) == RL_SSE_TOO_LONG,
                         "a parser past its limit took more input");
                hit = 1;
                break;
            }
            FZ_CHECK(rc == 0, "limited feed returned %d", rc);
            i += k;
        }
        FZ_CHECK(lim.n <= one.n, "limited parser: %zu events, unlimited %zu", lim.n, one.n);
        for (size_t e = 0; e < lim.n; e++)
            FZ_CHECK(lim.v[e].len == one.v[e].len &&
                         memcmp(lim.v[e].data, one.v[e].data, one.v[e].len) == 0,
                     "limited parser: event %zu differs", e);
        if (!hit) FZ_CHECK(lim.n == one.n, "no limit hit but %zu events, expected %zu", lim.n, one.n);
        rl_sse_free(&l);
        evs_free(&lim);
    }

    /* A second stream on the same parser after rl_sse_finish: like a fresh
     * parser that starts with the last event id. */
    rl_sse_finish(&q);
    evs_t again = {0}, ref2 = {0};
    q.opaque = &again;
    feed_all(&q, s, n, max_chunk, seed ^ 0x5555u);
    ref_t r2 = {0};
    r2.retry = -1;
    ref_append(&r2.id, &r2.idlen, last_id, last_id_len);
    ref_parse(&r2, s, n, &ref2);
    evs_equal(&ref2, &again, "second stream after rl_sse_finish vs reference");

    rl_sse_free(&p);
    rl_sse_free(&q);
    ref_free(&r);
    ref_free(&r2);
    evs_free(&one);
    evs_free(&ref);
    evs_free(&chunked);
    evs_free(&again);
    evs_free(&ref2);
    free(last_id);
    return 0;
}
