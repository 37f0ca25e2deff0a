/* fuzz_common.h - helpers of the fuzz targets. */
#ifndef RUNLANE_FUZZ_COMMON_H
#define RUNLANE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant: print what was expected and abort (libFuzzer then
 * saves the input as a crash). */
#define FZ_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz invariant broken (%s:%d): %s\n  ", __FILE__,\
                    __LINE__, #cond);                                         \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* Reads the input as a sequence of fields. */
typedef struct fz_in {
    const uint8_t *p;
    size_t n;
} fz_in_t;

static inline unsigned fz_byte(fz_in_t *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

/* The next field up to (not including) byte `sep`, as a new NUL-terminated
 * string (NUL bytes inside are kept in *len_out but end the C string). */
static inline char *fz_field(fz_in_t *in, uint8_t sep, size_t *len_out) {
    const uint8_t *e = memchr(in->p, sep, in->n);
    size_t len = e ? (size_t)(e - in->p) : in->n;
    char *s = malloc(len + 1);
    if (!s) abort();
    memcpy(s, in->p, len);
    s[len] = '\0';
    in->p += len;
    in->n -= len;
    if (e) {
        in->p++;
        in->n--;
    }
    if (len_out) *len_out = len;
    return s;
}

/* Occurrences of `needle` in `hay`. */
static inline int fz_count(const char *hay, const char *needle) {
    int c = 0;
    size_t nl = strlen(needle);
    if (!nl) return 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++) c++;
    return c;
}

#endif
