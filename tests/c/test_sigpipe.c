/* test_sigpipe.c - a Redis connection closed under the library never kills
 * its host with SIGPIPE.
 *
 * hiredis writes with send(..., 0) and OpenSSL with write(): a write to a
 * socket the server has reset raises SIGPIPE, whose default action ends the
 * process. Python and Node ignore SIGPIPE, a plain C host does not. Each
 * case runs in a child with the default disposition: the server drops the
 * library's connection (CLIENT KILL) and the next operations write a few
 * MB, so that one write lands after the reset. The child must come back
 * with an error or success, never die of the signal. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rltest.h"
#include "runlane.h"

static const char *redis_url;
static char prefix[64];

/* Drops the library's connections (client name runlane/<prefix>) and no
 * other: the suite's other tests share the server and run in parallel. */
static void kill_clients(void) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "redis-cli -u '%s' CLIENT LIST | tr ' ' '\\n' | awk -F= '"
             "$1==\"id\"{id=$2} $1==\"name\" && $2==\"runlane/%s\"{print id}' | "
             "while read id; do redis-cli -u '%s' CLIENT KILL ID \"$id\" >/dev/null; done",
             redis_url, prefix, redis_url);
    if (system(cmd) != 0) fprintf(stderr, "killing the library's connections failed\n");
}

/* The child: returns 0 when every call came back. */
static int child_writes_after_reset(void) {
    char err[512], id[RUNLANE_ID_MAX];
    runlane_conf_t *conf = runlane_conf_new();
    if (runlane_conf_set(conf, "store", redis_url, err, sizeof(err)) ||
        runlane_conf_set(conf, "key.prefix", prefix, err, sizeof(err)) ||
        runlane_conf_set(conf, "batch.max.bytes", "16777216", err, sizeof(err)))
        return 2;
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!rl) return 3;
    size_t big = 4u << 20;
    char *content = malloc(big + 1);
    if (!content) return 4;
    memset(content, 'x', big);
    content[big] = '\0';
    for (int round = 0; round < 6; round++) {
        runlane_enqueue(id, sizeof(id), NULL, rl, "conv_sigpipe", "small", NULL);
        kill_clients();
        usleep(20000); /* the server's reset reaches us before the write */
        runlane_enqueue(id, sizeof(id), NULL, rl, "conv_sigpipe", content, NULL);
        runlane_enqueue(id, sizeof(id), NULL, rl, "conv_sigpipe", content, NULL);
    }
    free(content);
    runlane_destroy(rl);
    return 0;
}

static void test_closed_connection_raises_no_sigpipe(void) {
    if (!redis_url) RL_SKIP("RUNLANE_TEST_REDIS not set");
    fflush(NULL);
    pid_t pid = fork();
    RL_CHECK(pid >= 0);
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        _exit(child_writes_after_reset());
    }
    int status = 0;
    RL_CHECK(waitpid(pid, &status, 0) == pid);
    RL_CHECK_MSG(!WIFSIGNALED(status), "the host died of signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    RL_CHECK_INT(0, WEXITSTATUS(status));
}

int main(void) {
    redis_url = rl_test_redis_url();
    snprintf(prefix, sizeof(prefix), "rlt_sigpipe_%ld", (long)getpid());
    RL_RUN(test_closed_connection_raises_no_sigpipe);
    return rl_test_summary();
}
