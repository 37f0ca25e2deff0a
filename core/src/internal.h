/* internal.h - helpers shared by every module (not installed). */
#ifndef RUNLANE_INTERNAL_H
#define RUNLANE_INTERNAL_H

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "runlane.h"

#if defined(__GNUC__)
#define RL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RL_PRINTF(f, a)
#endif

/* ---- errors (error.c) ---- */

struct runlane_error_s {
    runlane_err_t code;
    int retriable;
    char message[512];
};

/* Records the calling thread's last error and returns `code`. */
runlane_err_t rl_error_set(runlane_err_t code, int retriable, const char *fmt,
                           ...) RL_PRINTF(3, 4);
runlane_err_t rl_error_setv(runlane_err_t code, int retriable, const char *fmt,
                            va_list ap);
void rl_error_clear(void);
/* Makes `saved` (a copy of another thread's last error) this thread's. */
void rl_error_restore(const runlane_error_t *saved);
/* Copies the thread's last error message into errstr (if non-NULL). */
void rl_error_copy(char *errstr, size_t errstr_size);

/* ---- time (util.c) ---- */
int64_t rl_now_ms(void);  /* wall clock, ms since the epoch */
/* A number read from a peer (Redis, stored JSON) as an integer: NaN is 0,
 * out-of-range values saturate (a plain cast of 1e300 or inf is undefined). */
int64_t rl_f64_to_i64(double d);
int64_t rl_mono_ms(void); /* monotonic, ms */

/* ---- SIGPIPE (util.c) ----
 * hiredis writes with send(..., 0) and OpenSSL with write(): a write to a
 * connection the server reset raises SIGPIPE, whose default action kills
 * a host that did not ignore it. Around such writes the calling thread
 * blocks the signal; a SIGPIPE that became pending meanwhile is consumed
 * (one that was pending before is left alone), then the mask is restored.
 * The process-wide disposition is never touched. */
typedef struct rl_sigpipe_guard {
    sigset_t old;
    int was_pending;
} rl_sigpipe_guard_t;
void rl_sigpipe_block(rl_sigpipe_guard_t *g);
void rl_sigpipe_restore(rl_sigpipe_guard_t *g);

/* ---- memory and strings (util.c) ---- */
char *rl_strdup(const char *s);
char *rl_strndup(const char *s, size_t n);
char *rl_asprintf(const char *fmt, ...) RL_PRINTF(1, 2);
/* Copies with truncation; always NUL-terminates when size > 0. */
void rl_strlcpy(char *dst, const char *src, size_t size);

/* Growable string. Failed growth sets `oom` and further appends no-op. */
typedef struct rl_buf {
    char *data;
    size_t len, cap;
    int oom;
} rl_buf_t;
void rl_buf_init(rl_buf_t *b);
void rl_buf_free(rl_buf_t *b);
void rl_buf_append(rl_buf_t *b, const char *s, size_t n);
void rl_buf_puts(rl_buf_t *b, const char *s);
void rl_buf_printf(rl_buf_t *b, const char *fmt, ...) RL_PRINTF(2, 3);
/* Appends s as a JSON string literal (with quotes). */
void rl_buf_json_str(rl_buf_t *b, const char *s);
/* Returns the buffer's string (owned by caller) and resets b; NULL on oom. */
char *rl_buf_take(rl_buf_t *b);

/* ---- validation (util.c) ---- */
/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int rl_utf8_valid(const char *s, size_t n);
/* Replaces every byte that is not part of a valid UTF-8 sequence with '?'
 * in place (a peer's JSON must be UTF-8; its strings go into events the
 * bindings decode and into request bodies a provider refuses otherwise).
 * Returns the number of bytes replaced. */
size_t rl_utf8_scrub(char *s, size_t n);
/* RUNLANE_OK or RUNLANE_ERR_INVALID_ARG with a message naming `what`. */
runlane_err_t rl_check_conversation_id(const char *conv);

/* Copies src[0..n) into dst for an error message or a terminal, with
 * control characters escaped: \n \r \t, \xNN for the other C0 controls
 * (ESC, BEL...), DEL and bytes that are not UTF-8, \u00NN for the C1
 * controls. Never cuts an escape or a character; always NUL-terminates when
 * dst_size > 0. Returns the length written. rl_error_set passes every
 * message through it, so input echoed in an error is always escaped. */
size_t rl_escape_text(char *dst, size_t dst_size, const char *src, size_t n);

/* Checks every string of the JSON text json[0..n) (member names too) that
 * the core takes from the host: each must be valid UTF-8 and must not
 * decode to U+0000, which a C string cannot carry (cJSON would cut
 * "keep\u0000lost" to "keep"). Returns RUNLANE_OK, or
 * RUNLANE_ERR_INVALID_ARG with a message naming the string by its path
 * under `what` ("messages[2].metadata.k"). A \u escape of a lone
 * surrogate (which cJSON refuses) is named the same way, so a caller whose
 * parse failed may call it for a better message. Reads only json[0..n) and
 * is safe on any input. */
runlane_err_t rl_json_check_strings(const char *json, size_t n, const char *what);

/* 1 if s is an HTTP header name (an RFC 9110 token) / a header value
 * without control characters other than tab (no CR/LF: no header
 * injection). */
int rl_http_header_name_ok(const char *s);
int rl_http_header_value_ok(const char *s);

/* The user info of a store URL, exactly as the Redis store reads it:
 * "[user:]password" of redis://, rediss:// (up to the last '@' before the
 * first '/', '?' or '#') and unix:// (ending in "@/"). Sets *begin and *end
 * (offsets into url, end at the '@') and returns 1, or returns 0 when the URL
 * has none. One function for the parser and the masking, so what is masked
 * is always what is sent as the password. */
int rl_store_url_userinfo(const char *url, size_t *begin, size_t *end);

/* Random double in [0,1) (thread-safe, not for crypto). */
double rl_random(void);

/* FNV-1a 32-bit. */
uint32_t rl_fnv1a32(const char *s, size_t n);

#endif
