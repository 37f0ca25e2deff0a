/* cmd_worker.c - `runlane worker --backend custom --exec CMD`.
 *
 * Threads:
 *   main     polls events (runlane_event_fd + a self-pipe for signals),
 *            starts one job thread per RUNLANE_EVENT_BATCH, logs outcomes,
 *            decides when to stop.
 *   job      one per running batch: spawns /bin/sh -c CMD in its own
 *            process group, feeds the batch JSON on stdin, tees stderr
 *            (keeping its tail), waits, then acks or fails the batch. Only
 *            the job thread signals its child, and only before reaping it,
 *            so a recycled pid is never hit.
 *   stopper  calls runlane_stop(), which blocks until drained, while main
 *            keeps serving events.
 * SIGINT/SIGTERM are blocked in every thread but main. The library's own
 * claims are capped by setting worker.concurrency to --concurrency, so
 * every delivered batch can run at once. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

#define MAX_CONCURRENCY 1024
#define DEFAULT_CONCURRENCY_CAP 32
#define KILL_GRACE_MS 5000

enum { ABORT_NONE = 0, ABORT_LOST, ABORT_FORCED, ABORT_DRAIN_TIMEOUT };

typedef struct worker worker_t;

typedef struct job {
    struct job *next;
    worker_t *w;
    char *conv;
    char batch_id[RUNLANE_ID_MAX];
    int attempt;
    char *json;
    int held;      /* claimed but not run: released at stop */
    int has_thread;
    pthread_t th;
    /* guarded by w->mu */
    int abort;     /* ABORT_* */
    int hard_kill; /* SIGKILL now */
    int done;      /* the thread is about to exit */
} job_t;

struct worker {
    cli_ctx_t *ctx;
    runlane_t *rl;
    const char *cmd;
    int64_t timeout_ms;
    int wake_fd; /* write end of the self-pipe */
    pthread_mutex_t mu;
    /* guarded by mu */
    job_t *jobs;
    int running;
    long started, finished, acked, failed, lost, settle_errors;
    int stop_done; /* the stopper returned: the library holds nothing more */
};

/* ---- logging ---- */

static void wlog(const char *fmt, ...) CLI_PRINTF(1, 2);
static void wlog(const char *fmt, ...) {
    char line[4096];
    int n = snprintf(line, sizeof(line), "runlane: worker: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* One write per line, so lines of concurrent jobs do not interleave. */
    ssize_t r = write(STDERR_FILENO, line, len);
    (void)r;
}

/* A log value: bare when simple, else quoted with \" \\ \n escaped;
 * truncated to `max` bytes. */
static void log_value(char *dst, size_t n, const char *s, size_t max) {
    int simple = *s != '\0';
    for (const char *c = s; *c; c++)
        if (*c == ' ' || *c == '"' || *c == '=' || *c == '\\' || (unsigned char)*c < 0x20) simple = 0;
    if (simple && strlen(s) <= max) {
        snprintf(dst, n, "%s", s);
        return;
    }
    size_t o = 0;
    if (n < 8) {
        if (n) dst[0] = '\0';
        return;
    }
    dst[o++] = '"';
    size_t used = 0;
    for (const char *c = s; *c && o + 6 < n; c++, used++) {
        if (used >= max) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (*c == '"' || *c == '\\') {
            dst[o++] = '\\';
            dst[o++] = *c;
        } else if (*c == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else if ((unsigned char)*c < 0x20) {
            dst[o++] = ' ';
        } else {
            dst[o++] = *c;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

static void log_batch(const char *conv, const char *batch_id, int attempt, const char *fmt, ...)
    CLI_PRINTF(4, 5);
static void log_batch(const char *conv, const char *batch_id, int attempt, const char *fmt, ...) {
    char c[600], rest[2048];
    log_value(c, sizeof(c), conv, 256);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof(rest), fmt, ap);
    va_end(ap);
    wlog("conversation=%s batch=%s attempt=%d %s", c, batch_id, attempt, rest);
}

/* ---- threads and signals ---- */

static volatile sig_atomic_t g_signals;
static int g_sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    g_signals++;
    if (g_sig_pipe[1] >= 0) {
        ssize_t r = write(g_sig_pipe[1], "s", 1);
        (void)r;
    }
    errno = saved;
}

static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

/* Creates a thread with SIGINT/SIGTERM blocked in it and a modest stack
 * (up to 1024 job threads). */
static int start_thread(pthread_t *th, void *(*fn)(void *), void *arg) {
    sigset_t set, old;
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr) pthread_attr_setstacksize(&attr, 512 * 1024);
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    int rc = pthread_create(th, have_attr ? &attr : NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (have_attr) pthread_attr_destroy(&attr);
    return rc;
}

static void wake_main(worker_t *w) {
    ssize_t r = write(w->wake_fd, "j", 1);
    (void)r;
}

/* ---- running one command ---- */

/* environ with RUNLANE_CONVERSATION_ID, RUNLANE_BATCH_ID and
 * RUNLANE_ATTEMPT set for this batch. `owned` receives the 3 new strings. */
static char **make_env(const job_t *j, char *owned[3]) {
    size_t n = 0;
    while (environ && environ[n]) n++;
    char **env = calloc(n + 4, sizeof(char *));
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        if (strncmp(e, "RUNLANE_CONVERSATION_ID=", 24) == 0 || strncmp(e, "RUNLANE_BATCH_ID=", 17) == 0 ||
            strncmp(e, "RUNLANE_ATTEMPT=", 16) == 0)
            continue;
        env[k++] = environ[i];
    }
    size_t cl = strlen(j->conv) + 32, bl = strlen(j->batch_id) + 32;
    owned[0] = malloc(cl);
    owned[1] = malloc(bl);
    owned[2] = malloc(48);
    if (!owned[0] || !owned[1] || !owned[2]) {
        free(owned[0]);
        free(owned[1]);
        free(owned[2]);
        owned[0] = owned[1] = owned[2] = NULL;
        free(env);
        return NULL;
    }
    snprintf(owned[0], cl, "RUNLANE_CONVERSATION_ID=%s", j->conv);
    snprintf(owned[1], bl, "RUNLANE_BATCH_ID=%s", j->batch_id);
    snprintf(owned[2], 48, "RUNLANE_ATTEMPT=%d", j->attempt);
    env[k++] = owned[0];
    env[k++] = owned[1];
    env[k++] = owned[2];
    env[k] = NULL;
    return env;
}

typedef struct outcome {
    int ok;          /* exit status 0 */
    int abort;       /* ABORT_* seen */
    char error[1400];
} outcome_t;

static int job_abort(job_t *j, int *hard) {
    pthread_mutex_lock(&j->w->mu);
    int a = j->abort;
    *hard = j->hard_kill;
    pthread_mutex_unlock(&j->w->mu);
    return a;
}

static void run_command(job_t *j, outcome_t *out) {
    worker_t *w = j->w;
    int in[2] = {-1, -1}, er[2] = {-1, -1};
    char *owned[3] = {NULL, NULL, NULL};
    char **env = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int have_fa = 0, have_attr = 0;
    pid_t pid = -1;
    out->ok = 0;
    out->abort = ABORT_NONE;
    out->error[0] = '\0';

    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(er, O_CLOEXEC) != 0) {
        snprintf(out->error, sizeof(out->error), "cannot create pipes: %s", strerror(errno));
        goto done;
    }
    env = make_env(j, owned);
    if (!env) {
        snprintf(out->error, sizeof(out->error), "out of memory");
        goto done;
    }
    int prc = posix_spawn_file_actions_init(&fa);
    if (prc == 0) {
        have_fa = 1;
        prc = posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    }
    if (prc == 0) prc = posix_spawn_file_actions_adddup2(&fa, er[1], STDERR_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Descriptors of the library (Redis socket, eventfd) stay ours. */
    if (prc == 0) prc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGPIPE);
    sigaddset(&defs, SIGINT);
    sigaddset(&defs, SIGTERM);
    sigaddset(&defs, SIGCHLD);
    if (prc == 0) {
        prc = posix_spawnattr_init(&attr);
        if (prc == 0) have_attr = 1;
    }
    /* Own process group: a terminal's Ctrl-C reaches the worker, which
     * drains, not the commands; ending a command ends its children. */
    if (prc == 0)
        prc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                  POSIX_SPAWN_SETPGROUP);
    if (prc == 0) prc = posix_spawnattr_setsigmask(&attr, &none);
    if (prc == 0) prc = posix_spawnattr_setsigdefault(&attr, &defs);
    if (prc == 0) prc = posix_spawnattr_setpgroup(&attr, 0);
    if (prc != 0) {
        snprintf(out->error, sizeof(out->error), "cannot prepare the command: %s", strerror(prc));
        goto done;
    }
    char *argv[] = {"/bin/sh", "-c", (char *)w->cmd, NULL};
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, env);
    if (rc != 0) {
        pid = -1;
        snprintf(out->error, sizeof(out->error), "cannot run /bin/sh: %s", strerror(rc));
        goto done;
    }
    close(in[0]);
    close(er[1]);
    in[0] = er[1] = -1;
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);

    const char *data = j->json;
    size_t len = strlen(data), off = 0;
    cli_tail_t tail;
    tail.len = 0;
    tail.overflowed = 0;
    int64_t t0 = cli_mono_ms(), exit_ms = 0, term_ms = 0;
    int exited = 0, timed_out = 0, killed = 0, killed_hard = 0;
    for (;;) {
        struct pollfd pfd[2];
        int np = 0, wi = -1, ri = -1;
        if (in[1] >= 0) {
            pfd[np].fd = in[1];
            pfd[np].events = POLLOUT;
            wi = np++;
        }
        if (er[0] >= 0) {
            pfd[np].fd = er[0];
            pfd[np].events = POLLIN;
            ri = np++;
        }
        int pr = poll(np ? pfd : NULL, (nfds_t)np, np ? 100 : 10);
        if (pr > 0 && wi >= 0 && pfd[wi].revents) {
            size_t chunk = len - off > 65536 ? 65536 : len - off;
            ssize_t n = chunk ? write(in[1], data + off, chunk) : 0;
            if (n > 0) off += (size_t)n;
            if (off == len || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                close(in[1]); /* EOF on the command's stdin (or it closed it) */
                in[1] = -1;
            }
        }
        if (pr > 0 && ri >= 0 && pfd[ri].revents) {
            char buf[8192];
            ssize_t n = read(er[0], buf, sizeof(buf));
            if (n > 0) {
                ssize_t wr = write(STDERR_FILENO, buf, (size_t)n);
                (void)wr;
                cli_tail_add(&tail, buf, (size_t)n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(er[0]);
                er[0] = -1;
            }
        }
        int64_t now = cli_mono_ms();
        if (!exited) {
            /* Waits without reaping: the pid stays ours until waitpid. */
            siginfo_t si;
            memset(&si, 0, sizeof(si));
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) {
                exited = 1;
                exit_ms = now;
            }
        }
        if (exited) {
            if (in[1] >= 0) {
                close(in[1]);
                in[1] = -1;
            }
            /* A background grandchild may keep stderr open: do not wait for it. */
            if (er[0] >= 0 && now - exit_ms > 200) {
                close(er[0]);
                er[0] = -1;
            }
            if (er[0] < 0) break;
            continue;
        }
        int hard = 0;
        int ab = job_abort(j, &hard);
        if (ab && !out->abort) out->abort = ab;
        if (!killed && (ab || (w->timeout_ms > 0 && now - t0 >= w->timeout_ms))) {
            if (!ab) timed_out = 1;
            kill(-pid, SIGTERM);
            killed = 1;
            term_ms = now;
        }
        if (killed && !killed_hard && (hard || now - term_ms >= KILL_GRACE_MS)) {
            kill(-pid, SIGKILL);
            killed_hard = 1;
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    /* Whatever the group left behind is not ours to keep running. */
    if (killed) kill(-pid, SIGKILL);

    char what[200], tt[CLI_ERROR_TAIL_MAX + 8];
    cli_tail_text(&tail, tt, sizeof(tt));
    if (timed_out) {
        snprintf(what, sizeof(what), "timed out after %.3gs", (double)w->timeout_ms / 1000.0);
    } else if (killed && out->abort == ABORT_FORCED) {
        snprintf(what, sizeof(what), "interrupted: the worker was stopped");
    } else if (WIFEXITED(status)) {
        out->ok = WEXITSTATUS(status) == 0 && !killed;
        snprintf(what, sizeof(what), "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(what, sizeof(what), "killed by signal %d (%s)", sig, strsignal(sig));
    } else {
        snprintf(what, sizeof(what), "ended with status %d", status);
    }
    if (*tt)
        snprintf(out->error, sizeof(out->error), "%s: %s", what, tt);
    else
        snprintf(out->error, sizeof(out->error), "%s", what);
done:
    if (have_fa) posix_spawn_file_actions_destroy(&fa);
    if (have_attr) posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (er[i] >= 0) close(er[i]);
    }
    free(env);
    for (int i = 0; i < 3; i++) free(owned[i]);
    int hard = 0;
    int ab = job_abort(j, &hard);
    if (ab && !out->abort) out->abort = ab;
}

/* Acks or fails, retrying while the store is unreachable (the library keeps
 * renewing the lease meanwhile) until the worker has stopped. */
static runlane_err_t settle(job_t *j, int ack, const char *error) {
    worker_t *w = j->w;
    int delay = 200;
    for (;;) {
        runlane_err_t rc = ack ? runlane_batch_ack(w->rl, j->batch_id, NULL)
                               : runlane_batch_fail(w->rl, j->batch_id, error, 1);
        if (rc != RUNLANE_ERR_STORE) return rc;
        pthread_mutex_lock(&w->mu);
        int gone = w->stop_done || j->abort == ABORT_LOST;
        pthread_mutex_unlock(&w->mu);
        if (gone) return rc;
        char m[700];
        log_value(m, sizeof(m), runlane_error_message(runlane_error_last()), 500);
        log_batch(j->conv, j->batch_id, j->attempt, "store error while settling, retrying: %s", m);
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (delay < 3000) delay *= 2;
    }
}

static void *job_main(void *arg) {
    job_t *j = arg;
    worker_t *w = j->w;
    int64_t t0 = cli_mono_ms();
    outcome_t out;
    run_command(j, &out);
    double secs = (double)(cli_mono_ms() - t0) / 1000.0;
    int acked = 0, failed = !out.ok, lost = 0, settle_error = 0;
    if (out.abort == ABORT_LOST || out.abort == ABORT_DRAIN_TIMEOUT) {
        /* The lease is gone: an ack or fail would be refused. Main logged it. */
        lost = 1;
        failed = 0;
    } else {
        runlane_err_t rc = settle(j, out.ok, out.error);
        int hard = 0;
        if (rc != RUNLANE_OK && job_abort(j, &hard) == ABORT_LOST) {
            /* Lost while settling (main logged it): the ack was refused. */
            lost = 1;
            failed = 0;
        } else if (rc == RUNLANE_OK) {
            acked = out.ok;
            if (out.ok) log_batch(j->conv, j->batch_id, j->attempt, "result=ok duration=%.2fs", secs);
            /* A failure is logged by main from its FAILED or DEAD event. */
        } else {
            settle_error = 1;
            char m[700];
            log_value(m, sizeof(m), runlane_error_message(runlane_error_last()), 500);
            log_batch(j->conv, j->batch_id, j->attempt, "result=%s duration=%.2fs settle_error=%s error=%s",
                      out.ok ? "ok" : "failed", secs, runlane_err2name(rc), m);
        }
    }
    pthread_mutex_lock(&w->mu);
    w->running--;
    w->finished++;
    w->acked += acked;
    w->failed += failed;
    w->lost += lost;
    w->settle_errors += settle_error;
    j->done = 1;
    pthread_mutex_unlock(&w->mu);
    wake_main(w);
    return NULL;
}

/* ---- background errors ---- */

/* While Redis is down the library reports every failed round trip; the log
 * shows a message once, then how often it came again, at most every 10 s. */
#define ERROR_LOG_EVERY_MS 10000

typedef struct errlog {
    char last[600];  /* normalized message last logged */
    int64_t last_ms; /* when it was logged */
    long repeats;    /* same message since, not logged */
} errlog_t;

static void normalize_error(char *dst, size_t n, const char *msg) {
    char clean[1200];
    cli_redact(clean, sizeof(clean), msg);
    /* "... (next reconnect attempt in 154 ms)" varies: drop it. */
    char *paren = strstr(clean, " (next reconnect attempt in ");
    if (paren) *paren = '\0';
    /* "claim: ...", "renew: ...", "recover: ...": one outage, one message. */
    const char *body = clean;
    size_t word = strspn(clean, "abcdefghijklmnopqrstuvwxyz_");
    if (word && strncmp(clean + word, ": ", 2) == 0) body = clean + word + 2;
    memmove(clean, body, strlen(body) + 1);
    size_t l = strlen(clean);
    if (l >= n) l = n - 1;
    memcpy(dst, clean, l);
    dst[l] = '\0';
}

static void log_error_event(errlog_t *e, const char *msg) {
    char norm[600], v[1300];
    normalize_error(norm, sizeof(norm), msg);
    int64_t now = cli_mono_ms();
    if (strcmp(norm, e->last) == 0 && now - e->last_ms < ERROR_LOG_EVERY_MS) {
        e->repeats++;
        return;
    }
    log_value(v, sizeof(v), norm, 1000);
    if (e->repeats)
        wlog("error=%s (the worker goes on; %ld similar error%s not shown)", v, e->repeats,
             e->repeats == 1 ? "" : "s");
    else
        wlog("error=%s (the worker goes on)", v);
    snprintf(e->last, sizeof(e->last), "%s", norm);
    e->last_ms = now;
    e->repeats = 0;
}

/* ---- stopping ---- */

typedef struct stopper {
    worker_t *w;
    runlane_stop_mode_t mode;
    int timeout_ms;
    runlane_err_t rc;
    char msg[512];
    pthread_t th;
    int started, joined;
    volatile int finished; /* read under w->mu */
} stopper_t;

static void *stopper_main(void *arg) {
    stopper_t *s = arg;
    s->rc = runlane_stop(s->w->rl, s->mode, s->timeout_ms);
    snprintf(s->msg, sizeof(s->msg), "%s", runlane_error_message(runlane_error_last()));
    pthread_mutex_lock(&s->w->mu);
    s->finished = 1;
    s->w->stop_done = 1;
    pthread_mutex_unlock(&s->w->mu);
    wake_main(s->w);
    return NULL;
}

/* Sets `reason` on every running job; returns how many. */
static int abort_running(worker_t *w, int reason, int hard) {
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (job_t *j = w->jobs; j; j = j->next) {
        if (j->held || j->done) continue;
        if (!j->abort) j->abort = reason;
        if (hard) j->hard_kill = 1;
        n++;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}

static job_t *find_job(worker_t *w, const char *batch_id) {
    for (job_t *j = w->jobs; j; j = j->next)
        if (strcmp(j->batch_id, batch_id) == 0 && !j->done) return j;
    return NULL;
}

static void free_job(job_t *j) {
    free(j->conv);
    free(j->json);
    free(j);
}

/* ---- the command ---- */

enum { O_BACKEND = 1, O_EXEC, O_CONC, O_MAXB, O_IDLE, O_TIMEOUT, O_DRAIN, O_TOOL_EXEC, O_DELTAS };

static int conf_int(const runlane_conf_t *conf, const char *key, long long *out) {
    char buf[64];
    size_t n = sizeof(buf);
    if (runlane_conf_get(conf, key, buf, &n) != RUNLANE_OK) return 0;
    char *end;
    *out = strtoll(buf, &end, 10);
    return *end == '\0';
}

int cli_cmd_worker(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t opts[] = {
        {"backend", 0, CLI_ARG_REQUIRED, O_BACKEND},
        {"exec", 'e', CLI_ARG_REQUIRED, O_EXEC},
        {"concurrency", 'c', CLI_ARG_REQUIRED, O_CONC},
        {"max-batches", 0, CLI_ARG_REQUIRED, O_MAXB},
        {"idle-exit", 0, CLI_ARG_REQUIRED, O_IDLE},
        {"timeout", 0, CLI_ARG_REQUIRED, O_TIMEOUT},
        {"drain-timeout", 0, CLI_ARG_REQUIRED, O_DRAIN},
        {"tool-exec", 0, CLI_ARG_REQUIRED, O_TOOL_EXEC},
        {"print-deltas", 0, CLI_ARG_NONE, O_DELTAS},
        {NULL, 0, 0, 0},
    };
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char *backend = NULL, *exec_cmd = NULL, *tool_exec = NULL, *v;
    int print_deltas = 0;
    uint64_t conc = 0, max_batches = 0;
    double idle_s = 0, timeout_s = 0, drain_s = 30;
    int o;
    while ((o = cli_next(&p, opts, &v)) != CLI_END) {
        switch (o) {
        case CLI_HELP: return cli_print_help(cli_help_worker);
        case O_BACKEND: backend = v; break;
        case O_EXEC: exec_cmd = v; break;
        case O_TOOL_EXEC: tool_exec = v; break;
        case O_DELTAS: print_deltas = 1; break;
        case O_CONC:
            if (!cli_parse_u64(v, &conc) || conc < 1 || conc > MAX_CONCURRENCY)
                cli_usage_fail(ctx, "--concurrency: expected a number from 1 to %d, got \"%s\"", MAX_CONCURRENCY, v);
            break;
        case O_MAXB:
            if (!cli_parse_u64(v, &max_batches) || max_batches < 1)
                cli_usage_fail(ctx, "--max-batches: expected a positive number, got \"%s\"", v);
            break;
        case O_IDLE:
            if (!cli_parse_seconds(v, &idle_s) || idle_s <= 0)
                cli_usage_fail(ctx, "--idle-exit: expected a positive number of seconds, got \"%s\"", v);
            break;
        case O_TIMEOUT:
            if (!cli_parse_seconds(v, &timeout_s) || timeout_s <= 0)
                cli_usage_fail(ctx, "--timeout: expected a positive number of seconds, got \"%s\"", v);
            break;
        case O_DRAIN:
            if (!cli_parse_seconds(v, &drain_s) || drain_s > 86400)
                cli_usage_fail(ctx, "--drain-timeout: expected a number of seconds, got \"%s\"", v);
            break;
        case CLI_POSITIONAL:
            cli_usage_fail(ctx, "unexpected argument \"%s\" (quote the command: --exec 'CMD ARGS')", v);
        }
    }
    if (!backend) {
        /* -X backend=... counts as --backend. */
        backend = "custom";
        for (size_t i = 0; i < ctx->nx; i++)
            if (strcmp(ctx->xkeys[i], "backend") == 0) backend = ctx->xvals[i];
    }
    if (strcmp(backend, "responses") == 0 || strcmp(backend, "assistants") == 0) {
        if (exec_cmd) cli_usage_fail(ctx, "--exec is for the custom backend; with %s use --tool-exec", backend);
        if (timeout_s > 0)
            cli_usage_fail(ctx, "--timeout is for the custom backend; with %s see -X tool.timeout.ms", backend);
        return cli_http_worker(ctx, backend, tool_exec, print_deltas, max_batches, conc, idle_s, drain_s);
    }
    if (tool_exec) cli_usage_fail(ctx, "--tool-exec is for the responses and assistants backends");
    if (strcmp(backend, "custom") != 0)
        cli_usage_fail(ctx, "--backend: expected custom, responses or assistants, got \"%s\"", backend);
    if (!exec_cmd || !*exec_cmd) cli_usage_fail(ctx, "--exec CMD is required (the custom backend runs it per batch)");

    runlane_conf_t *conf = cli_conf(ctx);
    char errstr[512];
    if (runlane_conf_set(conf, "backend", "custom", errstr, sizeof(errstr)) != RUNLANE_OK) {
        cli_err(ctx, "backend: %s", errstr);
        runlane_conf_destroy(conf);
        return CLI_EXIT_RUNTIME;
    }
    long long conf_conc = 0;
    if (!conc) {
        if (!conf_int(conf, "worker.concurrency", &conf_conc) || conf_conc < 1) conf_conc = 1;
        conc = (uint64_t)(conf_conc < DEFAULT_CONCURRENCY_CAP ? conf_conc : DEFAULT_CONCURRENCY_CAP);
    }
    if (max_batches && conc > max_batches) conc = max_batches;
    char cbuf[32];
    snprintf(cbuf, sizeof(cbuf), "%llu", (unsigned long long)conc);
    /* The library claims no more than we run at once. */
    if (runlane_conf_set(conf, "worker.concurrency", cbuf, errstr, sizeof(errstr)) != RUNLANE_OK) {
        cli_err(ctx, "--concurrency: %s", errstr);
        runlane_conf_destroy(conf);
        return CLI_EXIT_USAGE;
    }
    int ex;
    runlane_t *rl = cli_open(ctx, conf, &ex);
    runlane_conf_destroy(conf);
    if (!rl) return ex;
    cli_warn_memory_store(ctx);

    worker_t w;
    memset(&w, 0, sizeof(w));
    w.ctx = ctx;
    w.rl = rl;
    w.cmd = exec_cmd;
    w.timeout_ms = (int64_t)(timeout_s * 1000.0);
    pthread_mutex_init(&w.mu, NULL);
    if (pipe2(g_sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        cli_err(ctx, "cannot create a pipe: %s", strerror(errno));
        runlane_destroy(rl);
        return CLI_EXIT_RUNTIME;
    }
    w.wake_fd = g_sig_pipe[1];

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* The library's I/O thread is born with the stop signals blocked. */
    sigset_t set, old;
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    runlane_err_t src = runlane_start(rl);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (src != RUNLANE_OK) {
        ex = cli_lib_fail(ctx, src, "cannot start the worker");
        runlane_destroy(rl);
        return ex;
    }
    char where[600];
    cli_store_display(where, sizeof(where), ctx);
    char limits[64] = "";
    if (max_batches) snprintf(limits, sizeof(limits), ", max batches %llu", (unsigned long long)max_batches);
    wlog("started: store %s, backend custom, concurrency %llu%s", where, (unsigned long long)conc, limits);

    const int efd = runlane_event_fd(rl);
    const int64_t idle_ms = (int64_t)(idle_s * 1000.0), drain_ms = (int64_t)(drain_s * 1000.0);
    int64_t last_activity = cli_mono_ms(), release_deadline = 0;
    int handled_signals = 0, stop_requested = 0, wait_then_release = 0, saw_stopped = 0;
    long held = 0;
    stopper_t stopper;
    memset(&stopper, 0, sizeof(stopper));
    stopper.w = &w;
    int failures_at_stop = 0;
    errlog_t errlog;
    memset(&errlog, 0, sizeof(errlog));

    for (;;) {
        int64_t now = cli_mono_ms();
        pthread_mutex_lock(&w.mu);
        int running = w.running;
        long finished = w.finished, started = w.started;
        int stop_finished = stopper.finished;
        pthread_mutex_unlock(&w.mu);

        /* Why stop. */
        int sigs = g_signals;
        if (sigs > handled_signals) {
            if (handled_signals == 0 && sigs == 1) {
                wlog("stopping: %d running, waiting up to %gs for them (signal again to end them)", running, drain_s);
                stop_requested = 1;
            } else {
                int hard = sigs >= 3;
                int n = abort_running(&w, ABORT_FORCED, hard);
                wlog("stopping now: ending %d running command%s (%s)", n, n == 1 ? "" : "s",
                     hard ? "SIGKILL" : "SIGTERM");
                stop_requested = 1;
            }
            handled_signals = sigs;
        }
        if (!stop_requested && max_batches && (uint64_t)finished >= max_batches) {
            wlog("stopping: %ld batch%s settled (--max-batches)", finished, finished == 1 ? "" : "es");
            stop_requested = 1;
        }
        if (!stop_requested && idle_ms && running == 0 && now - last_activity >= idle_ms) {
            wlog("stopping: no batch for %gs (--idle-exit)", idle_s);
            stop_requested = 1;
        }

        /* How: the library drains unless batches are held back (claimed
         * beyond --max-batches), which only a release gives back. */
        if (stop_requested && !stopper.started) {
            if (!wait_then_release && (held > 0 || (max_batches && (uint64_t)started >= max_batches))) {
                wait_then_release = 1;
                release_deadline = now + drain_ms;
            }
            int go = 1;
            if (wait_then_release && running > 0) {
                go = 0;
                if (now >= release_deadline) {
                    int n = abort_running(&w, ABORT_DRAIN_TIMEOUT, 0);
                    wlog("drain timeout: ending %d running command%s; their leases are released", n,
                         n == 1 ? "" : "s");
                    failures_at_stop = 1;
                    go = 1;
                }
            }
            if (go) {
                stopper.mode = wait_then_release ? RUNLANE_STOP_RELEASE : RUNLANE_STOP_DRAIN;
                stopper.timeout_ms = (int)drain_ms;
                if (start_thread(&stopper.th, stopper_main, &stopper) != 0) {
                    cli_err(ctx, "cannot start the stop thread");
                    stopper.rc = runlane_stop(rl, stopper.mode, stopper.timeout_ms);
                    stopper.finished = 1;
                    w.stop_done = 1;
                    stop_finished = 1;
                } else {
                    stopper.started = 1;
                }
            }
        }
        if (stop_finished && stopper.started && !stopper.joined) {
            pthread_join(stopper.th, NULL);
            stopper.joined = 1;
            if (stopper.rc == RUNLANE_ERR_TIMEOUT) {
                int n = abort_running(&w, ABORT_DRAIN_TIMEOUT, 0);
                wlog("drain timeout after %gs: ending %d running command%s; their leases were released",
                     drain_s, n, n == 1 ? "" : "s");
                failures_at_stop = 1;
            } else if (stopper.rc != RUNLANE_OK) {
                char m[600];
                cli_redact(m, sizeof(m), stopper.msg);
                wlog("stop: %s", m);
                saw_stopped = 1; /* no STOPPED event will come */
            }
        }

        /* Reap finished jobs. */
        pthread_mutex_lock(&w.mu);
        job_t **pp = &w.jobs;
        while (*pp) {
            job_t *j = *pp;
            if (j->done) {
                *pp = j->next;
                pthread_mutex_unlock(&w.mu);
                pthread_join(j->th, NULL);
                free_job(j);
                last_activity = cli_mono_ms();
                pthread_mutex_lock(&w.mu);
            } else {
                pp = &j->next;
            }
        }
        int jobs_left = 0;
        for (job_t *j = w.jobs; j; j = j->next)
            if (!j->held) jobs_left++;
        pthread_mutex_unlock(&w.mu);
        if ((stopper.joined || stop_finished) && saw_stopped && jobs_left == 0) break;

        /* Wait for events, signals and finished jobs. */
        struct pollfd pfd[2];
        int np = 0;
        pfd[np].fd = g_sig_pipe[0];
        pfd[np++].events = POLLIN;
        if (efd >= 0) {
            pfd[np].fd = efd;
            pfd[np++].events = POLLIN;
        }
        int timeout = efd >= 0 ? 200 : 20;
        if (poll(pfd, (nfds_t)np, timeout) > 0 && (pfd[0].revents & POLLIN)) {
            char buf[64];
            while (read(g_sig_pipe[0], buf, sizeof(buf)) > 0) {
            }
        }

        runlane_event_t *ev;
        while ((ev = runlane_poll(rl, 0)) != NULL) {
            runlane_event_type_t type = runlane_event_type(ev);
            const char *conv = runlane_event_conversation_id(ev), *bid = runlane_event_batch_id(ev);
            int attempt = runlane_event_attempt(ev);
            char m[1200];
            if (type == RUNLANE_EVENT_BATCH) {
                last_activity = cli_mono_ms();
                job_t *j = calloc(1, sizeof(*j));
                if (j) {
                    j->w = &w;
                    j->conv = strdup(conv);
                    j->json = strdup(runlane_event_json(ev));
                    snprintf(j->batch_id, sizeof(j->batch_id), "%s", bid);
                    j->attempt = attempt;
                }
                if (!j || !j->conv || !j->json) {
                    /* Leave it: its lease expires and it is retried. */
                    wlog("out of memory: batch %s not run", bid);
                    if (j) free_job(j);
                } else {
                    pthread_mutex_lock(&w.mu);
                    /* While the library drains, whatever it delivers runs;
                     * otherwise nothing beyond --max-batches or after a
                     * release starts. */
                    int draining = stopper.started && stopper.mode == RUNLANE_STOP_DRAIN && !w.stop_done;
                    int cap = !draining && ((max_batches && (uint64_t)w.started >= max_batches) ||
                                            w.stop_done || stopper.started || wait_then_release);
                    j->held = cap;
                    if (!cap) {
                        w.started++;
                        w.running++;
                    }
                    j->next = w.jobs;
                    w.jobs = j;
                    pthread_mutex_unlock(&w.mu);
                    if (cap) {
                        held++;
                    } else if (start_thread(&j->th, job_main, j) != 0) {
                        pthread_mutex_lock(&w.mu);
                        w.running--;
                        w.started--;
                        j->held = 1;
                        pthread_mutex_unlock(&w.mu);
                        held++;
                        log_batch(conv, bid, attempt, "cannot start a thread: held until the worker stops");
                    } else {
                        j->has_thread = 1;
                    }
                }
            } else if (type == RUNLANE_EVENT_FAILED || type == RUNLANE_EVENT_DEAD) {
                log_value(m, sizeof(m), runlane_event_error_message(ev), 1000);
                log_batch(conv, bid, attempt, "result=%s error=%s",
                          type == RUNLANE_EVENT_DEAD ? "dead" : "retry", m);
            } else if (type == RUNLANE_EVENT_LEASE_LOST) {
                pthread_mutex_lock(&w.mu);
                job_t *j = find_job(&w, bid);
                int was_held = j && j->held, running_job = j && !j->held;
                if (was_held) {
                    job_t **q = &w.jobs;
                    while (*q != j) q = &(*q)->next;
                    *q = j->next;
                } else if (running_job && !j->abort) {
                    j->abort = ABORT_LOST;
                }
                pthread_mutex_unlock(&w.mu);
                if (was_held) {
                    free_job(j);
                    held--;
                    log_batch(conv, bid, attempt, "result=released (not run)");
                } else if (running_job) {
                    log_value(m, sizeof(m), runlane_event_error_message(ev), 500);
                    log_batch(conv, bid, attempt, "result=lost error=%s", m);
                }
            } else if (type == RUNLANE_EVENT_ERROR) {
                log_error_event(&errlog, runlane_event_error_message(ev));
            } else if (type == RUNLANE_EVENT_STOPPED) {
                saw_stopped = 1;
            }
            runlane_event_destroy(ev);
        }
    }

    /* Held batches were released by the library at stop. */
    while (w.jobs) {
        job_t *j = w.jobs;
        w.jobs = j->next;
        if (j->has_thread) pthread_join(j->th, NULL);
        free_job(j);
    }
    int failures = failures_at_stop || w.failed > 0 || w.lost > 0 || w.settle_errors > 0;
    wlog("stopped: %ld batch%s acked, %ld failed attempt%s, %ld lost, %ld settle error%s", w.acked,
         w.acked == 1 ? "" : "es", w.failed, w.failed == 1 ? "" : "s", w.lost, w.settle_errors,
         w.settle_errors == 1 ? "" : "s");
    runlane_destroy(rl);
    pthread_mutex_destroy(&w.mu);
    close(g_sig_pipe[0]);
    close(g_sig_pipe[1]);
    g_sig_pipe[0] = g_sig_pipe[1] = -1;
    return failures ? CLI_EXIT_FAILURES : CLI_EXIT_OK;
}
