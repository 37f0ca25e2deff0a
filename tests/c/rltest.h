/*
 * rltest.h - a tiny test harness for the C suite.
 *
 * A test file defines test functions and lists them in main():
 *
 *   static void test_enqueue_orders(void) { RL_CHECK(x == 1); ... }
 *   int main(void) { RL_RUN(test_enqueue_orders); return rl_test_summary(); }
 *
 * Checks report what was expected and what came; a failed check ends the
 * current test function. The summary prints "N passed, N failed", which
 * ctest output and CI read. RL_SKIP is a failure under RUNLANE_NO_SKIP=1.
 */
#ifndef RLTEST_H
#define RLTEST_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rl_t_passed, rl_t_failed, rl_t_skipped;
static jmp_buf rl_t_jmp;
static const char *rl_t_name;

#define RL_FAILF(...)                                                        \
    do {                                                                     \
        fprintf(stderr, "  FAIL %s (%s:%d): ", rl_t_name, __FILE__, __LINE__);\
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        longjmp(rl_t_jmp, 1);                                                \
    } while (0)

#define RL_CHECK(cond)                                                       \
    do {                                                                     \
        if (!(cond)) RL_FAILF("expected %s", #cond);                         \
    } while (0)

#define RL_CHECK_MSG(cond, ...)                                              \
    do {                                                                     \
        if (!(cond)) RL_FAILF(__VA_ARGS__);                                  \
    } while (0)

#define RL_CHECK_INT(expected, actual)                                       \
    do {                                                                     \
        long long rl_e_ = (long long)(expected), rl_a_ = (long long)(actual);\
        if (rl_e_ != rl_a_)                                                  \
            RL_FAILF("%s: expected %lld, got %lld", #actual, rl_e_, rl_a_);  \
    } while (0)

#define RL_CHECK_STR(expected, actual)                                       \
    do {                                                                     \
        const char *rl_e_ = (expected), *rl_a_ = (actual);                   \
        if (!rl_e_ || !rl_a_ || strcmp(rl_e_, rl_a_) != 0)                   \
            RL_FAILF("%s: expected \"%s\", got \"%s\"", #actual,             \
                     rl_e_ ? rl_e_ : "(null)", rl_a_ ? rl_a_ : "(null)");    \
    } while (0)

/* Checks a runlane call returned RUNLANE_OK, printing the error detail. */
#define RL_CHECK_OK(call)                                                    \
    do {                                                                     \
        int rl_rc_ = (int)(call);                                            \
        if (rl_rc_ != 0)                                                     \
            RL_FAILF("%s returned %d (%s)", #call, rl_rc_,                   \
                     runlane_error_message(runlane_error_last()));           \
    } while (0)

/* 1 when RUNLANE_NO_SKIP=1 (scripts/test.sh sets it): a test that cannot
 * run (emulator, Redis or redis-server missing) fails instead of skipping,
 * so a broken environment cannot pass as a green run. */
static inline int rl_test_no_skip(void) {
    const char *v = getenv("RUNLANE_NO_SKIP");
    return v && strcmp(v, "1") == 0;
}

#define RL_SKIP(...)                                                         \
    do {                                                                     \
        fprintf(stderr, "  %s %s: ", rl_test_no_skip() ? "FAIL (RUNLANE_NO_SKIP=1: a skip is a failure)" : "SKIP", rl_t_name);\
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        longjmp(rl_t_jmp, rl_test_no_skip() ? 1 : 2);                        \
    } while (0)

/* RUNLANE_TEST_ONLY=substring runs only the matching test functions (a
 * developer's shortcut; the suite never sets it). */
static inline int rl_test_selected(const char *name) {
    const char *only = getenv("RUNLANE_TEST_ONLY");
    return !only || !*only || strstr(name, only) != NULL;
}

#define RL_RUN(fn)                                                           \
    do {                                                                     \
        int rl_j_;                                                           \
        if (!rl_test_selected(#fn)) break;                                   \
        rl_t_name = #fn;                                                     \
        fprintf(stderr, "- %s\n", #fn);                                      \
        if ((rl_j_ = setjmp(rl_t_jmp)) == 0) {                               \
            fn();                                                            \
            rl_t_passed++;                                                   \
        } else if (rl_j_ == 2) {                                             \
            rl_t_skipped++;                                                  \
        } else {                                                             \
            rl_t_failed++;                                                   \
        }                                                                    \
    } while (0)

static inline int rl_test_summary(void) {
    if (rl_t_skipped)
        printf("%d passed, %d failed, %d skipped\n", rl_t_passed, rl_t_failed,
               rl_t_skipped);
    else
        printf("%d passed, %d failed\n", rl_t_passed, rl_t_failed);
    return rl_t_failed ? 1 : 0;
}

/* RUNLANE_TEST_TIME_SCALE (>= 1; scripts/test.sh sets 3 for sanitizer and
 * valgrind runs): deadlines of waits for a condition are multiplied by it. */
static inline double rl_test_time_scale(void) {
    const char *v = getenv("RUNLANE_TEST_TIME_SCALE");
    double s = v && *v ? atof(v) : 1.0;
    return s >= 1.0 ? s : 1.0;
}

/* The Redis URL of the test server (RUNLANE_TEST_REDIS), or NULL. Under
 * RUNLANE_NO_SKIP=1 a missing URL ends the test program as a failure at
 * once: some files skip their whole Redis half from main(), where no
 * RL_SKIP can report it. */
static inline const char *rl_test_redis_url(void) {
    const char *u = getenv("RUNLANE_TEST_REDIS");
    if ((!u || !*u) && rl_test_no_skip()) {
        fprintf(stderr, "RUNLANE_NO_SKIP=1 but RUNLANE_TEST_REDIS is not set: the Redis tests cannot run\n");
        printf("%d passed, %d failed\n", rl_t_passed, rl_t_failed + 1);
        exit(1);
    }
    return (u && *u) ? u : NULL;
}

#endif
