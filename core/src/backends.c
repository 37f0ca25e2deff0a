/* backends.c - the registry of HTTP backends (the custom backend needs
 * none). */
#include <string.h>

#include "backend_common.h"
#include "client.h"

const rl_backend_ops_t *rl_backend_find(const char *name) {
    if (!name) return NULL;
    if (strcmp(name, rl_backend_responses.name) == 0) return &rl_backend_responses;
    if (strcmp(name, rl_backend_assistants.name) == 0) return &rl_backend_assistants;
    return NULL;
}
