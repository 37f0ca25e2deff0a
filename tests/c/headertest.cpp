// headertest.cpp - runlane.h compiles as C++ and links with extern "C".
#include "runlane.h"

#include <cstdio>
#include <cstring>

extern "C" int headertest_c(void);

int main() {
    int ok = headertest_c() == 1 && runlane_version() == RUNLANE_VERSION_NUM &&
             std::strcmp(runlane_err2name(RUNLANE_ERR_STALE), "RUNLANE_ERR_STALE") == 0;
    std::printf(ok ? "1 passed, 0 failed\n" : "0 passed, 1 failed\n");
    return ok ? 0 : 1;
}
