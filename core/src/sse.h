/* sse.h - incremental parser of server-sent events (internal).
 *
 * Follows the WHATWG "event stream" interpretation rules:
 * - lines end with CRLF, LF or CR (a CRLF split across two feeds is one
 *   line end); a UTF-8 BOM at the very start is skipped;
 * - a line starting with ':' is a comment and ignored;
 * - "field: value" (one leading space of the value is dropped; a line
 *   without ':' is a field with an empty value);
 * - fields: `event` (type of the next event), `data` (appended to the data
 *   buffer plus "\n"), `id` (last event id, kept across events; ignored
 *   when it contains NUL), `retry` (reconnection time, ASCII digits only);
 *   any other field is ignored;
 * - a blank line dispatches the event: nothing when the data buffer is
 *   empty; otherwise the data without its final "\n", with the event type
 *   ("message" when none was given). The type and data then reset.
 * - at the end of the stream an event not terminated by a blank line is
 *   discarded (rl_sse_finish).
 *
 * Feeding is robust to any chunking: every split of a stream gives the
 * same events. Not thread-safe: one parser per stream.
 *
 * Limits (the peer fills these buffers): with rl_sse_limit, a line longer
 * than max_line bytes, or an event whose data grows past max_event bytes,
 * stops the parser with RL_SSE_TOO_LONG (which of the two: p->too_long 1
 * for the line, 2 for the event); it then refuses more input until
 * rl_sse_finish. 0 means no limit (the default). */
#ifndef RUNLANE_SSE_H
#define RUNLANE_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Called for each dispatched event. `data` is NUL-terminated (data_len
 * bytes, may contain NUL bytes from the stream); `id` is the last event id
 * ("" when none). Return 0 to go on, non-zero to stop: rl_sse_feed then
 * returns that value at once and the rest of the chunk is not parsed. */
typedef int (*rl_sse_cb)(void *opaque, const char *event, const char *data, size_t data_len,
                         const char *id);

typedef struct rl_sse {
    rl_buf_t line;       /* the line being read (without its end) */
    rl_buf_t data;       /* data buffer of the pending event */
    rl_buf_t event;      /* type of the pending event */
    rl_buf_t id;         /* last event id */
    int64_t retry_ms;    /* last valid `retry`, -1 when none */
    int after_cr;        /* the previous byte was a CR: a following LF is part of that end */
    int bom_state;       /* bytes of the BOM matched so far; 3 = done (no more BOM checks) */
    int oom;
    size_t max_line;     /* 0: no limit */
    size_t max_event;    /* 0: no limit */
    int too_long;        /* 1: a line, 2: an event went past its limit */
    rl_sse_cb cb;
    void *opaque;
} rl_sse_t;

#define RL_SSE_TOO_LONG (-2)

void rl_sse_init(rl_sse_t *p, rl_sse_cb cb, void *opaque);
/* Sets the limits (bytes; 0: none) of a line and of an event's data. */
void rl_sse_limit(rl_sse_t *p, size_t max_line, size_t max_event);
/* Parses `n` bytes. Returns 0, the callback's non-zero value, -1 when out
 * of memory, or RL_SSE_TOO_LONG past a limit. */
int rl_sse_feed(rl_sse_t *p, const char *buf, size_t n);
/* End of stream: discards an unterminated event; the parser may be fed
 * again as a new stream (the last event id is kept, as on reconnection). */
void rl_sse_finish(rl_sse_t *p);
void rl_sse_free(rl_sse_t *p);

#endif
