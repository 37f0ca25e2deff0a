/* headertest.c - runlane.h compiles as C99 with -pedantic -Werror. */
#include "runlane.h"

int headertest_c(void);
int headertest_c(void) {
    runlane_err_t e = RUNLANE_OK;
    runlane_event_type_t t = RUNLANE_EVENT_BATCH;
    runlane_stop_mode_t m = RUNLANE_STOP_DRAIN;
    return (int)e + (int)t + (int)m + RUNLANE_VERSION_NUM * 0;
}
