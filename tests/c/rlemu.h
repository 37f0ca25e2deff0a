/*
 * rlemu.h - starts the OpenAI emulator (tests/emulator/emulator.py) for a C
 * test and talks to its control endpoints.
 *
 * The repository is found from the RUNLANE_SOURCE_DIR environment
 * variable, else the RUNLANE_SOURCE_DIR compile definition, else this
 * file's own path (__FILE__ is absolute in a CMake build). The emulator runs as a
 * child process (`python3 emulator.py --port 0`), dies with the test
 * (PR_SET_PDEATHSIG) and is stopped by rlemu_stop().
 */
#ifndef RLEMU_H
#define RLEMU_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

typedef struct rlemu {
    pid_t pid;
    int port;
    int out_fd;
    char base_url[128]; /* http://127.0.0.1:PORT/v1 */
    char root[1024];    /* http://127.0.0.1:PORT */
} rlemu_t;

static inline void rlemu_source_dir(char *out, size_t size) {
    const char *env = getenv("RUNLANE_SOURCE_DIR");
    if (env && *env) {
        snprintf(out, size, "%s", env);
        return;
    }
#ifdef RUNLANE_SOURCE_DIR
    snprintf(out, size, "%s", RUNLANE_SOURCE_DIR);
    return;
#endif
    snprintf(out, size, "%s", __FILE__);
    char *p = strstr(out, "/tests/c/rlemu.h");
    if (p) *p = '\0';
    else snprintf(out, size, ".");
}

/* Starts the emulator with extra command-line arguments (NULL-terminated
 * list, may be NULL). Returns 0, or -1 when python3 or the emulator is
 * missing (callers RL_SKIP: a failure under RUNLANE_NO_SKIP=1). */
static inline int rlemu_start(rlemu_t *e, const char *const *extra) {
    memset(e, 0, sizeof(*e));
    e->pid = -1;
    e->out_fd = -1;
    char src[900], script[1000];
    rlemu_source_dir(src, sizeof(src));
    snprintf(script, sizeof(script), "%s/tests/emulator/emulator.py", src);
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "rlemu: %s not readable (RUNLANE_SOURCE_DIR?)\n", script);
        return -1;
    }
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        const char *argv[32] = {"python3", script, "--port", "0"};
        int n = 4;
        for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    e->pid = pid;
    e->out_fd = fds[0];
    char line[256];
    size_t len = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        if (poll(&pfd, 1, 200) > 0) {
            ssize_t r = read(fds[0], line + len, sizeof(line) - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
            line[len] = '\0';
            char *p = strstr(line, "EMULATOR_PORT=");
            if (p && strchr(p, '\n')) {
                e->port = atoi(p + 14);
                break;
            }
        }
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 15) break;
    }
    if (e->port <= 0) {
        fprintf(stderr, "rlemu: the emulator did not report its port within 15 s\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(fds[0]);
        e->pid = -1;
        return -1;
    }
    snprintf(e->base_url, sizeof(e->base_url), "http://127.0.0.1:%d/v1", e->port);
    snprintf(e->root, sizeof(e->root), "http://127.0.0.1:%d", e->port);
    return 0;
}

static inline void rlemu_stop(rlemu_t *e) {
    if (e->pid > 0) {
        kill(e->pid, SIGTERM);
        for (int i = 0; i < 50; i++) {
            if (waitpid(e->pid, NULL, WNOHANG) == e->pid) {
                e->pid = -1;
                break;
            }
            usleep(100000);
        }
        if (e->pid > 0) {
            kill(e->pid, SIGKILL);
            waitpid(e->pid, NULL, 0);
        }
    }
    if (e->out_fd >= 0) close(e->out_fd);
    e->pid = -1;
    e->out_fd = -1;
}

typedef struct {
    char *data;
    size_t len;
} rlemu_buf_t;

static inline size_t rlemu_write(char *p, size_t s, size_t n, void *ud) {
    rlemu_buf_t *b = ud;
    char *d = realloc(b->data, b->len + s * n + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, s * n);
    b->data = d;
    b->len += s * n;
    d[b->len] = '\0';
    return s * n;
}

/* A plain request to the emulator (path from the root, e.g.
 * "/_emulator/journal" or "/v1/conversations"); returns the parsed JSON
 * body (or NULL) and the status. Adds the beta header and `api_key`. */
static inline cJSON *rlemu_call(rlemu_t *e, const char *method, const char *path,
                                const char *body, long *status_out, const char *api_key) {
    CURL *c = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", e->root, path);
    rlemu_buf_t b = {NULL, 0};
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "OpenAI-Beta: assistants=v2");
    char auth[512];
    if (api_key) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", api_key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, rlemu_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "{}");
    }
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (status_out) *status_out = status;
    cJSON *j = b.data ? cJSON_Parse(b.data) : NULL;
    free(b.data);
    return j;
}

static inline void rlemu_control(rlemu_t *e, const char *method, const char *path,
                                 const char *body) {
    cJSON_Delete(rlemu_call(e, method, path, body, NULL, NULL));
}

/* Forces `count` faults of `kind` on requests matching method and path. */
static inline void rlemu_fault(rlemu_t *e, const char *kind, int count, const char *method,
                               const char *path) {
    char body[512];
    snprintf(body, sizeof(body), "{\"kind\":\"%s\",\"count\":%d%s%s%s%s%s%s}", kind, count,
             method ? ",\"method\":\"" : "", method ? method : "", method ? "\"" : "",
             path ? ",\"path\":\"" : "", path ? path : "", path ? "\"" : "");
    rlemu_control(e, "POST", "/_emulator/faults", body);
}

static inline cJSON *rlemu_journal(rlemu_t *e) {
    return rlemu_call(e, "GET", "/_emulator/journal", NULL, NULL, NULL);
}

/* The journal entry of one conversation or thread (owned by `journal`). */
static inline cJSON *rlemu_journal_conv(cJSON *journal, const char *id) {
    return cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(journal, "conversations"), id);
}

/* Requests the emulator received (last `limit`), as a JSON array. */
static inline cJSON *rlemu_requests(rlemu_t *e, int limit) {
    char path[64];
    snprintf(path, sizeof(path), "/_emulator/requests?limit=%d", limit);
    return rlemu_call(e, "GET", path, NULL, NULL, NULL);
}

/* How many requests with `method` whose path equals `path` were received
 * (among the last 2000). */
static inline int rlemu_count(rlemu_t *e, const char *method, const char *path) {
    cJSON *reqs = rlemu_requests(e, 2000);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "method");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "path");
        if (cJSON_IsString(m) && cJSON_IsString(p) && strcmp(m->valuestring, method) == 0 &&
            strcmp(p->valuestring, path) == 0)
            n++;
    }
    cJSON_Delete(reqs);
    return n;
}

/* Creates a conversation (or a thread) directly; returns its id (free). */
static inline char *rlemu_create(rlemu_t *e, const char *path, const char *api_key) {
    cJSON *j = rlemu_call(e, "POST", path, "{}", NULL, api_key);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    char *out = cJSON_IsString(id) ? strdup(id->valuestring) : NULL;
    cJSON_Delete(j);
    return out;
}

#endif
