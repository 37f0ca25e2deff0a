/* error.c - error codes table and the thread-local last error. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local struct runlane_error_s tl_error;

static const struct {
    runlane_err_t code;
    const char *name;
    const char *desc;
} err_table[] = {
    {RUNLANE_OK, "RUNLANE_OK", "success"},
    {RUNLANE_ERR_INVALID_ARG, "RUNLANE_ERR_INVALID_ARG", "invalid argument"},
    {RUNLANE_ERR_UNKNOWN_KEY, "RUNLANE_ERR_UNKNOWN_KEY", "unknown configuration key"},
    {RUNLANE_ERR_INVALID_VALUE, "RUNLANE_ERR_INVALID_VALUE", "invalid configuration value"},
    {RUNLANE_ERR_NOMEM, "RUNLANE_ERR_NOMEM", "out of memory"},
    {RUNLANE_ERR_STORE, "RUNLANE_ERR_STORE", "store unavailable or failed"},
    {RUNLANE_ERR_STALE, "RUNLANE_ERR_STALE", "lease lost: stale fencing token"},
    {RUNLANE_ERR_NOT_FOUND, "RUNLANE_ERR_NOT_FOUND", "not found"},
    {RUNLANE_ERR_BUSY, "RUNLANE_ERR_BUSY", "conversation busy"},
    {RUNLANE_ERR_TIMEOUT, "RUNLANE_ERR_TIMEOUT", "timed out"},
    {RUNLANE_ERR_TOO_LARGE, "RUNLANE_ERR_TOO_LARGE", "too large"},
    {RUNLANE_ERR_STATE, "RUNLANE_ERR_STATE", "not allowed in the current state"},
    {RUNLANE_ERR_UNSUPPORTED, "RUNLANE_ERR_UNSUPPORTED", "not supported"},
    {RUNLANE_ERR_HTTP, "RUNLANE_ERR_HTTP", "HTTP transport failure"},
    {RUNLANE_ERR_PROVIDER, "RUNLANE_ERR_PROVIDER", "provider error"},
    {RUNLANE_ERR_DESTROYED, "RUNLANE_ERR_DESTROYED", "handle already destroyed"},
    {RUNLANE_ERR_INTERNAL, "RUNLANE_ERR_INTERNAL", "internal error"},
};

RUNLANE_EXTERN(const char *) runlane_err2str(runlane_err_t err) {
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == err) return err_table[i].desc;
    return "unknown error";
}

RUNLANE_EXTERN(const char *) runlane_err2name(runlane_err_t err) {
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == err) return err_table[i].name;
    return "RUNLANE_ERR_UNKNOWN";
}

runlane_err_t rl_error_setv(runlane_err_t code, int retriable, const char *fmt,
                            va_list ap) {
    tl_error.code = code;
    tl_error.retriable = retriable;
    if (fmt) {
        /* Messages quote input (ids, values, keys): escaped, so no control
         * byte from the input reaches a terminal or a log. */
        char raw[1024];
        int n = vsnprintf(raw, sizeof(raw), fmt, ap);
        size_t len = n < 0 ? 0 : (size_t)n < sizeof(raw) ? (size_t)n : sizeof(raw) - 1;
        rl_escape_text(tl_error.message, sizeof(tl_error.message), raw, len);
    } else
        rl_strlcpy(tl_error.message, runlane_err2str(code), sizeof(tl_error.message));
    return code;
}

runlane_err_t rl_error_set(runlane_err_t code, int retriable, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rl_error_setv(code, retriable, fmt, ap);
    va_end(ap);
    return code;
}

void rl_error_restore(const runlane_error_t *saved) { tl_error = *saved; }

void rl_error_clear(void) {
    tl_error.code = RUNLANE_OK;
    tl_error.retriable = 0;
    tl_error.message[0] = '\0';
}

void rl_error_copy(char *errstr, size_t errstr_size) {
    if (errstr && errstr_size) rl_strlcpy(errstr, tl_error.message, errstr_size);
}

RUNLANE_EXTERN(const runlane_error_t *) runlane_error_last(void) { return &tl_error; }

RUNLANE_EXTERN(runlane_err_t) runlane_error_code(const runlane_error_t *err) {
    return err ? err->code : RUNLANE_ERR_INVALID_ARG;
}

RUNLANE_EXTERN(const char *) runlane_error_message(const runlane_error_t *err) {
    return err ? err->message : "";
}

RUNLANE_EXTERN(int) runlane_error_retriable(const runlane_error_t *err) {
    return err ? err->retriable : 0;
}
