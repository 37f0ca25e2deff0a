/* sse.c - incremental server-sent events parser; see sse.h. */
#include <string.h>

#include "sse.h"

void rl_sse_init(rl_sse_t *p, rl_sse_cb cb, void *opaque) {
    memset(p, 0, sizeof(*p));
    rl_buf_init(&p->line);
    rl_buf_init(&p->data);
    rl_buf_init(&p->event);
    rl_buf_init(&p->id);
    p->retry_ms = -1;
    p->cb = cb;
    p->opaque = opaque;
}

void rl_sse_limit(rl_sse_t *p, size_t max_line, size_t max_event) {
    p->max_line = max_line;
    p->max_event = max_event;
}

void rl_sse_free(rl_sse_t *p) {
    rl_buf_free(&p->line);
    rl_buf_free(&p->data);
    rl_buf_free(&p->event);
    rl_buf_free(&p->id);
}

static void buf_reset(rl_buf_t *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

static int dispatch(rl_sse_t *p) {
    if (p->data.len == 0) {
        buf_reset(&p->event);
        return 0;
    }
    /* Drop the final "\n" that every data line added. */
    p->data.len--;
    p->data.data[p->data.len] = '\0';
    const char *type = p->event.len ? p->event.data : "message";
    const char *id = p->id.len ? p->id.data : "";
    int rc = p->cb ? p->cb(p->opaque, type, p->data.data, p->data.len, id) : 0;
    buf_reset(&p->data);
    buf_reset(&p->event);
    return rc;
}

static int field_is(const char *f, size_t n, const char *name) {
    return strlen(name) == n && memcmp(f, name, n) == 0;
}

/* Interprets the complete line in p->line. */
static int process_line(rl_sse_t *p) {
    const char *l = p->line.data ? p->line.data : "";
    size_t n = p->line.len;
    int rc = 0;
    if (n == 0) {
        rc = dispatch(p);
    } else if (l[0] != ':') {
        const char *colon = memchr(l, ':', n);
        size_t flen = colon ? (size_t)(colon - l) : n;
        const char *v = colon ? colon + 1 : l + n;
        size_t vlen = colon ? n - flen - 1 : 0;
        if (vlen && *v == ' ') {
            v++;
            vlen--;
        }
        if (field_is(l, flen, "event")) {
            buf_reset(&p->event);
            rl_buf_append(&p->event, v, vlen);
        } else if (field_is(l, flen, "data")) {
            if (p->max_event && p->data.len + vlen + 1 > p->max_event) {
                p->too_long = 2;
                buf_reset(&p->line);
                return RL_SSE_TOO_LONG;
            }
            rl_buf_append(&p->data, v, vlen);
            rl_buf_append(&p->data, "\n", 1);
        } else if (field_is(l, flen, "id")) {
            if (!memchr(v, '\0', vlen)) {
                buf_reset(&p->id);
                rl_buf_append(&p->id, v, vlen);
            }
        } else if (field_is(l, flen, "retry")) {
            int64_t x = 0;
            size_t k = 0;
            for (; k < vlen && v[k] >= '0' && v[k] <= '9'; k++)
                if (x < INT64_MAX / 10 - 10) x = x * 10 + (v[k] - '0');
            if (vlen && k == vlen) p->retry_ms = x;
        }
        /* Any other field is ignored. */
    }
    buf_reset(&p->line);
    if (p->line.oom || p->data.oom || p->event.oom || p->id.oom) p->oom = 1;
    return rc;
}

int rl_sse_feed(rl_sse_t *p, const char *buf, size_t n) {
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    size_t i = 0;
    if (p->oom) return -1;
    if (p->too_long) return RL_SSE_TOO_LONG;
    while (i < n && p->bom_state < 3) {
        if ((unsigned char)buf[i] == bom[p->bom_state]) {
            p->bom_state++;
            i++;
            if (p->bom_state == 3) break;
            continue;
        }
        /* Not a BOM: the bytes matched so far were content. */
        rl_buf_append(&p->line, (const char *)bom, (size_t)p->bom_state);
        p->bom_state = 3;
    }
    while (i < n) {
        char c = buf[i];
        if (p->after_cr) {
            p->after_cr = 0;
            if (c == '\n') {
                i++;
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            p->after_cr = c == '\r';
            i++;
            int rc = process_line(p);
            if (p->oom) return -1;
            if (p->too_long) return RL_SSE_TOO_LONG;
            if (rc) return rc;
            continue;
        }
        size_t j = i;
        while (j < n && buf[j] != '\r' && buf[j] != '\n') j++;
        if (p->max_line && p->line.len + (j - i) > p->max_line) {
            /* A peer that never ends its line must not grow it forever. */
            p->too_long = 1;
            buf_reset(&p->line);
            return RL_SSE_TOO_LONG;
        }
        rl_buf_append(&p->line, buf + i, j - i);
        if (p->line.oom) {
            p->oom = 1;
            return -1;
        }
        i = j;
    }
    return 0;
}

void rl_sse_finish(rl_sse_t *p) {
    /* A partial BOM at the end of an empty stream is not content either. */
    buf_reset(&p->line);
    buf_reset(&p->data);
    buf_reset(&p->event);
    p->after_cr = 0;
    p->bom_state = 0;
    p->oom = 0;
    p->too_long = 0;
}
