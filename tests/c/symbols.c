/* symbols.c - links against every public symbol (the list is generated
 * from runlane.h), so a declared but missing function fails to link. */
#include <stdio.h>

#include "runlane.h"

typedef void (*rl_fn)(void);
extern const rl_fn runlane_test_symbols[];
extern const unsigned runlane_test_symbols_count;

int main(void) {
    unsigned missing = 0;
    for (unsigned i = 0; i < runlane_test_symbols_count; i++)
        if (!runlane_test_symbols[i]) missing++;
    printf("%u symbols referenced\n", runlane_test_symbols_count);
    if (missing || runlane_test_symbols_count < 30) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    printf("1 passed, 0 failed\n");
    return 0;
}
