/* consumer.c - a program built against an installed librunlane, through
 * find_package(runlane) and through pkg-config. */
#include <stdio.h>
#include <string.h>

#include <runlane.h>

int main(void) {
    char err[256], id[RUNLANE_ID_MAX];
    runlane_t *rl = runlane_new(NULL, err, sizeof(err));
    if (!rl) return 1;
    int ok = runlane_enqueue(id, sizeof(id), NULL, rl, "conv", "hello", NULL) == RUNLANE_OK &&
             strcmp(runlane_version_str(), "") != 0;
    runlane_destroy(rl);
    printf("%s\n", ok ? "1 passed, 0 failed" : "0 passed, 1 failed");
    return ok ? 0 : 1;
}
