/* util.c - time, strings, buffers, validation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>

#include "internal.h"

int64_t rl_f64_to_i64(double d) {
    if (d != d) return 0;
    if (d >= 9223372036854774784.0) return INT64_MAX;
    if (d <= -9223372036854774784.0) return INT64_MIN;
    return (int64_t)d;
}

int64_t rl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rl_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *rl_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

char *rl_strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *rl_asprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = NULL;
    if (n >= 0 && (s = malloc((size_t)n + 1)) != NULL) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

void rl_strlcpy(char *dst, const char *src, size_t size) {
    if (!size) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= size) n = size - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

void rl_buf_init(rl_buf_t *b) { memset(b, 0, sizeof(*b)); }

void rl_buf_free(rl_buf_t *b) {
    free(b->data);
    rl_buf_init(b);
}

static int buf_reserve(rl_buf_t *b, size_t extra) {
    if (b->oom) return 0;
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

void rl_buf_append(rl_buf_t *b, const char *s, size_t n) {
    if (!buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void rl_buf_puts(rl_buf_t *b, const char *s) { rl_buf_append(b, s, strlen(s)); }

void rl_buf_printf(rl_buf_t *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0 && buf_reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void rl_buf_json_str(rl_buf_t *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    rl_buf_append(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;
    for (; *p; p++) {
        const char *esc = NULL;
        char u[7];
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (*p < 0x20) {
                u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
                u[4] = hex[*p >> 4]; u[5] = hex[*p & 15]; u[6] = 0;
                esc = u;
            }
        }
        if (esc) {
            rl_buf_append(b, (const char *)run, (size_t)(p - run));
            rl_buf_puts(b, esc);
            run = p + 1;
        }
    }
    rl_buf_append(b, (const char *)run, (size_t)(p - run));
    rl_buf_append(b, "\"", 1);
}

char *rl_buf_take(rl_buf_t *b) {
    if (b->oom) {
        rl_buf_free(b);
        return NULL;
    }
    if (!b->data && !buf_reserve(b, 0)) return NULL;
    if (!b->data) return NULL;
    char *d = b->data;
    rl_buf_init(b);
    return d;
}

/* Length (1..4) of the valid UTF-8 sequence at s[0..n), n >= 1, or 0 when
 * the bytes there are not UTF-8 (overlong, surrogate, above U+10FFFF,
 * truncated). */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int rl_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0, len; i < n; i += len)
        if (!(len = utf8_seq_len(s + i, n - i))) return 0;
    return 1;
}

size_t rl_utf8_scrub(char *str, size_t n) {
    unsigned char *s = (unsigned char *)str;
    size_t fixed = 0;
    for (size_t i = 0, len; i < n; i += len)
        if (!(len = utf8_seq_len(s + i, n - i))) {
            s[i] = '?';
            len = 1;
            fixed++;
        }
    return fixed;
}

size_t rl_escape_text(char *dst, size_t dst_size, const char *src, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (!dst_size) return 0;
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    if (!src) n = 0;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *piece = esc;
        size_t plen = 4, sl = utf8_seq_len(s + i, n - i);
        unsigned c = s[i];
        if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            plen = 2;
            i++;
        } else if (c < 0x20 || c == 0x7F || !sl) {
            /* C0 controls (ESC, BEL...), DEL and bytes that are not UTF-8. */
            esc[0] = '\\'; esc[1] = 'x'; esc[2] = hex[c >> 4]; esc[3] = hex[c & 15];
            i++;
        } else if (sl == 2 && c == 0xC2 && s[i + 1] < 0xA0) {
            /* C1 controls U+0080..U+009F (CSI is U+009B). */
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[s[i + 1] >> 4];
            esc[5] = hex[s[i + 1] & 15];
            plen = 6;
            i += 2;
        } else {
            piece = (const char *)s + i;
            plen = sl;
            i += sl;
        }
        if (o + plen >= dst_size) break; /* never half an escape or a character */
        memcpy(dst + o, piece, plen);
        o += plen;
    }
    dst[o] = '\0';
    return o;
}

/* ---- strings of a JSON text ---- */

#define JPATH_DEPTH 16 /* levels named in a message; deeper ones show as "..." */
#define JPATH_KEY 64   /* bytes of a member name shown */

typedef struct jframe {
    int is_array;
    size_t index;    /* array: index of the current element */
    const char *key; /* object: raw text of the current member name */
    size_t key_len;
} jframe_t;

/* "what[2].metadata.k" for the string at the top of st; with `name_only`
 * the top frame's member name is left out (the fault is in that name). */
static void jpath(rl_buf_t *b, const char *what, const jframe_t *st, size_t depth,
                  int name_only) {
    char esc[JPATH_KEY * 6 + 1];
    rl_buf_puts(b, what);
    size_t shown = depth < JPATH_DEPTH ? depth : JPATH_DEPTH;
    for (size_t k = 0; k < shown; k++) {
        if (st[k].is_array) {
            rl_buf_printf(b, "[%zu]", st[k].index);
        } else if (st[k].key && !(name_only && k + 1 == depth)) {
            size_t kl = st[k].key_len < JPATH_KEY ? st[k].key_len : JPATH_KEY;
            rl_escape_text(esc, sizeof(esc), st[k].key, kl);
            rl_buf_printf(b, ".%s%s", esc, kl < st[k].key_len ? "..." : "");
        }
    }
    if (depth > JPATH_DEPTH) rl_buf_puts(b, "...");
}

/* The code unit of the escape "\uXXXX" at json[i], or 0x10000 when there is
 * none. */
static unsigned json_u16(const char *json, size_t n, size_t i) {
    if (i + 5 >= n || json[i] != '\\' || json[i + 1] != 'u') return 0x10000;
    unsigned u = 0;
    for (size_t k = i + 2; k < i + 6; k++) {
        char c = json[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0x10000;
        u = u << 4 | (unsigned)d;
    }
    return u;
}

runlane_err_t rl_json_check_strings(const char *json, size_t n, const char *what) {
    jframe_t st[JPATH_DEPTH];
    size_t depth = 0, i = 0;
    if (!json) return RUNLANE_OK;
    while (i < n) {
        char c = json[i];
        if (c == '{' || c == '[') {
            if (depth < JPATH_DEPTH) st[depth] = (jframe_t){c == '[', 0, NULL, 0};
            depth++;
            i++;
            continue;
        }
        if (c == '}' || c == ']') {
            if (depth) depth--;
            i++;
            continue;
        }
        if (c == ',') {
            if (depth && depth <= JPATH_DEPTH && st[depth - 1].is_array) st[depth - 1].index++;
            i++;
            continue;
        }
        if (c != '"') {
            i++;
            continue;
        }
        size_t start = ++i;
        int nul = 0, bad = 0, lone = 0;
        while (i < n && json[i] != '"') {
            unsigned char b = (unsigned char)json[i];
            if (b == '\\') {
                /* Only "\u0000" decodes to U+0000 (a raw NUL cannot be in a
                 * C string); the escaped character is skipped. */
                unsigned u = json_u16(json, n, i);
                if (u == 0) nul = 1;
                if (u >= 0xDC00 && u <= 0xDFFF) lone = 1;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    unsigned lo = json_u16(json, n, i + 6);
                    if (lo >= 0xDC00 && lo <= 0xDFFF) i += 6; /* a pair: one character */
                    else lone = 1;
                }
                i += 2;
            } else if (b < 0x80) {
                i++;
            } else {
                size_t l = utf8_seq_len((const unsigned char *)json + i, n - i);
                if (!l) bad = 1;
                i += l ? l : 1;
            }
        }
        size_t end = i < n ? i : n;
        i = end + 1;
        size_t j = i;
        while (j < n && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r')) j++;
        int is_name = j < n && json[j] == ':';
        if (is_name && depth && depth <= JPATH_DEPTH) {
            st[depth - 1].key = json + start;
            st[depth - 1].key_len = end - start;
        }
        if (!nul && !bad && !lone) continue;
        const char *fault = bad    ? "is not valid UTF-8"
                            : lone ? "is not valid Unicode (a \\u escape of a lone surrogate)"
                                   : "contains U+0000 (\\u0000), which runlane refuses rather than "
                                     "cut the string there";
        rl_buf_t b;
        rl_buf_init(&b);
        jpath(&b, what, st, depth, is_name);
        if (is_name) {
            char esc[JPATH_KEY * 6 + 1];
            size_t kl = end - start < JPATH_KEY ? end - start : JPATH_KEY;
            rl_escape_text(esc, sizeof(esc), json + start, kl);
            rl_buf_printf(&b, ": member name \"%s%s\" %s", esc, kl < end - start ? "..." : "",
                          fault);
        } else {
            rl_buf_printf(&b, " %s", fault);
        }
        char *msg = rl_buf_take(&b);
        runlane_err_t rc = rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "%s", msg ? msg : fault);
        free(msg);
        return rc;
    }
    return RUNLANE_OK;
}

int rl_http_header_name_ok(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return 0;
    return 1;
}

int rl_http_header_value_ok(const char *s) {
    if (!s) return 0;
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7F) return 0;
    return 1;
}

runlane_err_t rl_check_conversation_id(const char *conv) {
    if (!conv) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "conversation_id is NULL");
    size_t n = strlen(conv);
    if (n == 0) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "conversation_id is empty");
    if (n > RUNLANE_CONVERSATION_ID_MAX)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                            "conversation_id is %zu bytes; the limit is %d bytes", n,
                            RUNLANE_CONVERSATION_ID_MAX);
    if (!rl_utf8_valid(conv, n))
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "conversation_id is not valid UTF-8");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)conv[i];
        if (c < 0x20 || c == 0x7F)
            return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0,
                                "conversation_id contains a control character (byte 0x%02x at offset %zu)",
                                c, i);
    }
    return RUNLANE_OK;
}

double rl_random(void) {
    /* xorshift64*, one state per thread, seeded from time and address. */
    static _Thread_local uint64_t state;
    if (!state) {
        state = (uint64_t)rl_mono_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&state ^
                (uint64_t)rl_now_ms();
        if (!state) state = 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (double)((state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

uint32_t rl_fnv1a32(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

RUNLANE_EXTERN(void) runlane_free(void *ptr) { free(ptr); }

int rl_store_url_userinfo(const char *url, size_t *begin, size_t *end) {
    const char *p, *at = NULL;
    if (strncmp(url, "unix://", 7) == 0) {
        p = url + 7;
        const char *slash = strchr(p, '/');
        if (!slash || slash == p || slash[-1] != '@') return 0;
        at = slash - 1;
    } else {
        static const char *const schemes[] = {"redis://",         "rediss://",
                                              "redis+cluster://", "rediss+cluster://",
                                              "redis+sentinel://", "rediss+sentinel://"};
        p = NULL;
        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && !p; i++)
            if (strncmp(url, schemes[i], strlen(schemes[i])) == 0) p = url + strlen(schemes[i]);
        if (!p) return 0;
        const char *auth_end = p + strcspn(p, "/?#");
        for (const char *q = p; q < auth_end; q++)
            if (*q == '@') at = q;
        if (!at) return 0;
    }
    *begin = (size_t)(p - url);
    *end = (size_t)(at - url);
    return 1;
}

void rl_sigpipe_block(rl_sigpipe_guard_t *g) {
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

void rl_sigpipe_restore(rl_sigpipe_guard_t *g) {
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigemptyset(&pending);
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        static const struct timespec now = {0, 0};
        while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}
