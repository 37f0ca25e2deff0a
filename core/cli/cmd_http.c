/* cmd_http.c - the standalone worker for the HTTP backends
 * (`runlane worker --backend responses|assistants`) and the
 * `conversation create` / `thread create` helpers.
 *
 * runlane drives every turn itself; this program only answers tool calls
 * (through --tool-exec CMD) and prints every reply as one JSON line on
 * stdout, then confirms it (runlane_reply_ack) so it is not delivered
 * again. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) {
    (void)sig;
    g_stop++;
}

typedef struct tool_job {
    runlane_t *rl;
    char *tool_exec;
    char *event_json;
    char batch_id[RUNLANE_ID_MAX];
} tool_job_t;

/* Runs CMD with `input` on stdin; its stdout becomes *out. Returns the exit
 * status (or -1 when it could not run). */
static int run_tool(const char *cmd, const char *input, const char *name, const char *call_id,
                    char **out) {
    int in[2], outp[2];
    *out = NULL;
    /* O_CLOEXEC: tools run from concurrent threads; without it one tool's
     * child inherits another's pipe ends (and the worker's Redis and HTTP
     * sockets), so a stdin never reaches EOF and both tools hang. */
    if (pipe2(in, O_CLOEXEC)) return -1;
    if (pipe2(outp, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(outp[0]);
        close(outp[1]);
        return -1;
    }
    if (pid == 0) {
        /* dup2 clears close-on-exec on 0 and 1 only; the library's own
         * sockets (Redis, HTTP) may lack it, so close everything else. */
        dup2(in[0], 0);
        dup2(outp[1], 1);
        closefrom(3);
        setenv("RUNLANE_TOOL_NAME", name, 1);
        setenv("RUNLANE_TOOL_CALL_ID", call_id, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    /* Inputs are small (one call's arguments): write, then read. */
    size_t len = strlen(input), off = 0;
    while (off < len) {
        ssize_t n = write(in[1], input + off, len - off);
        if (n <= 0) break;
        off += (size_t)n;
    }
    close(in[1]);
    /* The output is capped (CLI_TOOL_OUTPUT_MAX); the rest is read and
     * dropped, so the command is not stopped by a full pipe. */
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap), sink[4096];
    for (;;) {
        if (buf && used + 1024 > cap && cap <= CLI_TOOL_OUTPUT_MAX) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        int keep = buf && used < cap - 1 && used <= CLI_TOOL_OUTPUT_MAX;
        ssize_t n = keep ? read(outp[0], buf + used, cap - used - 1) : read(outp[0], sink, sizeof(sink));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (keep) used += (size_t)n;
    }
    close(outp[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    *out = cli_tool_output(name, status, buf ? buf : "", buf ? used : 0);
    free(buf);
    return status;
}

/* One thread per tool-calls event: runs every call (in order), submits all
 * outputs at once. A failing command's output is an error text, so the
 * model learns the tool failed instead of the turn hanging. */
static void *tool_main(void *arg) {
    tool_job_t *job = arg;
    cJSON *ev = cJSON_Parse(job->event_json);
    cJSON *calls = cJSON_GetObjectItem(ev, "tool_calls"), *c;
    cJSON *outputs = cJSON_CreateArray();
    cJSON_ArrayForEach(c, calls) {
        cJSON *id = cJSON_GetObjectItem(c, "id"), *name = cJSON_GetObjectItem(c, "name");
        if (!cJSON_IsString(id)) continue;
        const char *nm = cJSON_IsString(name) ? name->valuestring : "";
        char *output = NULL;
        if (!job->tool_exec) {
            output = strdup("error: this worker has no tool handler (--tool-exec)");
        } else {
            cJSON *in = cJSON_Duplicate(c, 1);
            cJSON_AddStringToObject(in, "conversation_id",
                                    cJSON_GetObjectItem(ev, "conversation_id")->valuestring);
            cJSON_AddStringToObject(in, "batch_id", job->batch_id);
            char *input = cJSON_PrintUnformatted(in);
            cJSON_Delete(in);
            int rc = run_tool(job->tool_exec, input, nm, id->valuestring, &output);
            free(input);
            if (!output) output = cli_tool_output(nm, rc ? rc : 1, "", 0); /* it could not run */
            fprintf(stderr, "runlane worker: tool %s (call %s) %s\n", nm, id->valuestring,
                    rc == 0 ? "ok" : "failed");
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tool_call_id", id->valuestring);
        cJSON_AddStringToObject(o, "output", output ? output : "");
        cJSON_AddItemToArray(outputs, o);
        free(output);
    }
    char *json = cJSON_PrintUnformatted(outputs);
    runlane_err_t rc = runlane_submit_tool_outputs(job->rl, job->batch_id, json);
    if (rc)
        fprintf(stderr, "runlane worker: submit tool outputs of %s: %s\n", job->batch_id,
                runlane_error_message(runlane_error_last()));
    free(json);
    cJSON_Delete(outputs);
    cJSON_Delete(ev);
    free(job->event_json);
    free(job->tool_exec);
    free(job);
    return NULL;
}

/* runlane_stop blocks until the drain ends: it runs here, so that the
 * main loop keeps printing replies and can escalate on a second signal. */
typedef struct http_stopper {
    runlane_t *rl;
    runlane_stop_mode_t mode;
    int timeout_ms;
    pthread_t th;
    runlane_err_t rc;
    char msg[600];
} http_stopper_t;

static void *http_stopper_main(void *arg) {
    http_stopper_t *s = arg;
    s->rc = runlane_stop(s->rl, s->mode, s->timeout_ms);
    if (s->rc) snprintf(s->msg, sizeof(s->msg), "%s", runlane_error_message(runlane_error_last()));
    return NULL;
}

/* Batches this worker holds now (turns in flight), from the metrics; -1
 * when unknown. */
static long inflight_batches(runlane_t *rl) {
    char *text = NULL;
    long n = -1;
    if (runlane_metrics(&text, rl) == RUNLANE_OK && text) {
        const char *p = strstr(text, "\nrunlane_inflight_batches ");
        if (p) n = strtol(p + strlen("\nrunlane_inflight_batches "), NULL, 10);
    }
    runlane_free(text);
    return n;
}

int cli_http_worker(cli_ctx_t *ctx, const char *backend, const char *tool_exec, int print_deltas,
                    uint64_t max_replies, uint64_t concurrency, double idle_exit_s, double drain_s) {
    runlane_conf_t *conf = cli_conf(ctx);
    char err[512];
    if (runlane_conf_set(conf, "backend", backend, err, sizeof(err))) {
        runlane_conf_destroy(conf);
        cli_usage_fail(ctx, "backend: %s", err);
    }
    if (concurrency) {
        char num[32];
        snprintf(num, sizeof(num), "%llu", (unsigned long long)concurrency);
        if (runlane_conf_set(conf, "worker.concurrency", num, err, sizeof(err))) {
            runlane_conf_destroy(conf);
            cli_usage_fail(ctx, "--concurrency: %s", err);
        }
    }
    int code = 0;
    runlane_t *rl = cli_open(ctx, conf, &code);
    runlane_conf_destroy(conf);
    if (!rl) return code;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (runlane_start(rl)) return cli_lib_fail(ctx, runlane_error_code(runlane_error_last()), "start");
    char store[256];
    cli_store_display(store, sizeof(store), ctx);
    fprintf(stderr, "runlane worker: started: store %s, backend %s%s\n", store, backend,
            tool_exec ? ", tools by --tool-exec" : "");
    uint64_t replies = 0, failures = 0;
    int stopping = 0, limit_reached = 0, escalated = 0, escalate_logged = 0, stop_incomplete = 0;
    long escalated_held = 0;
    int64_t last_activity = cli_mono_ms();
    http_stopper_t stopper;
    memset(&stopper, 0, sizeof(stopper));
    stopper.rl = rl;
    int stopper_started = 0;
    for (;;) {
        if (idle_exit_s > 0 && !stopping && cli_mono_ms() - last_activity > (int64_t)(idle_exit_s * 1000)) {
            /* A turn in flight is not idleness, however long it is quiet
             * (a slow model, a Retry-After wait). */
            if (inflight_batches(rl) <= 0) { /* (-1: unknown, as before) */
                fprintf(stderr, "runlane worker: idle for %.1f s, exiting\n", idle_exit_s);
                g_stop = g_stop ? g_stop : 1;
            } else {
                last_activity = cli_mono_ms();
            }
        }
        if ((g_stop || limit_reached) && !stopping) {
            stopping = 1;
            /* At the --max-batches limit, turns still in flight are given
             * back (another worker adopts them), not finished here. */
            int release = limit_reached || g_stop > 1;
            fprintf(stderr, "runlane worker: stopping (%s)\n",
                    release ? "releasing turns in flight"
                            : "draining turns in flight; signal again to release them now");
            stopper.mode = release ? RUNLANE_STOP_RELEASE : RUNLANE_STOP_DRAIN;
            stopper.timeout_ms = (int)(drain_s * 1000);
            sigset_t set, old;
            sigemptyset(&set);
            sigaddset(&set, SIGINT);
            sigaddset(&set, SIGTERM);
            pthread_sigmask(SIG_BLOCK, &set, &old);
            stopper_started = pthread_create(&stopper.th, NULL, http_stopper_main, &stopper) == 0;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (!stopper_started) http_stopper_main(&stopper);
        }
        if (stopping && !escalated && g_stop > 1 && stopper.mode == RUNLANE_STOP_DRAIN) {
            /* Second signal: the drain ends now, turns in flight are
             * released (another worker adopts them). */
            if (!escalate_logged)
                fprintf(stderr, "runlane worker: stopping now: releasing turns in flight\n");
            escalate_logged = 1;
            /* RUNLANE_ERR_STATE: the stopper has not begun the drain yet
             * (or it just ended): try again on the next round. */
            escalated_held = inflight_batches(rl);
            escalated = runlane_stop(rl, RUNLANE_STOP_RELEASE, 0) != RUNLANE_ERR_STATE;
        }
        runlane_event_t *ev = runlane_poll(rl, 200);
        if (!ev) continue;
        last_activity = cli_mono_ms();
        runlane_event_type_t t = runlane_event_type(ev);
        const char *conv = runlane_event_conversation_id(ev), *bid = runlane_event_batch_id(ev);
        if (t == RUNLANE_EVENT_COMPLETED && limit_reached) {
            /* Past the limit: not printed nor confirmed, so it is delivered
             * again (by another worker). */
        } else if (t == RUNLANE_EVENT_COMPLETED) {
            /* The reply line first, then the confirmation: a crash in
             * between delivers it again (at least once, same batch id). */
            printf("%s\n", runlane_event_json(ev));
            fflush(stdout);
            runlane_err_t rc = runlane_reply_ack(rl, bid);
            if (rc && rc != RUNLANE_ERR_UNSUPPORTED && rc != RUNLANE_ERR_NOT_FOUND)
                fprintf(stderr, "runlane worker: reply_ack %s: %s\n", bid,
                        runlane_error_message(runlane_error_last()));
            fprintf(stderr, "runlane worker: %s batch %s attempt %d: completed\n", conv, bid,
                    runlane_event_attempt(ev));
            replies++;
            if (max_replies && replies >= max_replies) limit_reached = 1;
        } else if (t == RUNLANE_EVENT_TOOL_CALLS) {
            tool_job_t *job = calloc(1, sizeof(*job));
            pthread_t th;
            job->rl = rl;
            job->tool_exec = tool_exec ? strdup(tool_exec) : NULL;
            job->event_json = strdup(runlane_event_json(ev));
            snprintf(job->batch_id, sizeof(job->batch_id), "%s", bid);
            if (pthread_create(&th, NULL, tool_main, job) == 0) pthread_detach(th);
            else tool_main(job);
        } else if (t == RUNLANE_EVENT_DELTA) {
            if (print_deltas) fprintf(stderr, "%s\n", runlane_event_json(ev));
        } else if (t == RUNLANE_EVENT_FAILED || t == RUNLANE_EVENT_DEAD) {
            failures++;
            fprintf(stderr, "runlane worker: %s batch %s attempt %d: %s: %s\n", conv, bid,
                    runlane_event_attempt(ev), t == RUNLANE_EVENT_DEAD ? "dead" : "retry",
                    runlane_event_error_message(ev));
        } else if (t == RUNLANE_EVENT_ERROR || t == RUNLANE_EVENT_LEASE_LOST) {
            fprintf(stderr, "runlane worker: %s%s%s\n", *conv ? conv : "", *conv ? ": " : "",
                    runlane_event_error_message(ev));
        } else if (t == RUNLANE_EVENT_STOPPED) {
            runlane_event_destroy(ev);
            break;
        }
        runlane_event_destroy(ev);
    }
    if (stopper_started) pthread_join(stopper.th, NULL);
    if (stopper.rc == RUNLANE_ERR_TIMEOUT) {
        /* The README's exit 4: turns did not finish (drain timeout, or a
         * second signal released them). */
        stop_incomplete = 1;
        fprintf(stderr, "runlane worker: %s\n", stopper.msg);
    } else if (stopper.rc == RUNLANE_ERR_STATE && escalated) {
        /* The second signal came before the drain began: that stop
         * released the turns in flight. */
        stop_incomplete = escalated_held != 0;
    } else if (stopper.rc) {
        fprintf(stderr, "runlane worker: stop: %s\n", stopper.msg);
    }
    runlane_destroy(rl);
    fprintf(stderr, "runlane worker: stopped (%llu replies, %llu failed attempts)\n",
            (unsigned long long)replies, (unsigned long long)failures);
    return failures || stop_incomplete ? CLI_EXIT_FAILURES : CLI_EXIT_OK;
}

/* The client of a one-shot command, or NULL with *code set. */
static runlane_t *open_once(cli_ctx_t *ctx, int *code) {
    runlane_conf_t *conf = cli_conf(ctx);
    runlane_t *rl = cli_open(ctx, conf, code);
    runlane_conf_destroy(conf);
    return rl;
}

/* The end of a one-shot command whose result is text: prints `out` (or
 * reports `rc`), frees it and closes the client. The exit code. */
static int print_and_close(cli_ctx_t *ctx, runlane_t *rl, runlane_err_t rc, char *out, const char *what) {
    int code = 0;
    if (rc)
        code = cli_lib_fail(ctx, rc, what);
    else
        printf("%s\n", out);
    runlane_free(out);
    runlane_destroy(rl);
    return code;
}

/* `runlane conversation create|get|map|forget` / `runlane thread ...`:
 * create makes a provider conversation; get/map/forget read, set and
 * remove a conversation key's mapping (runlane_conversation_map_*). */
static int map_cmd(cli_ctx_t *ctx, const char *verb, const char *const *args, int nargs) {
    int code = 0;
    runlane_t *rl = open_once(ctx, &code);
    if (!rl) return code;
    runlane_err_t rc;
    char *out = NULL;
    if (strcmp(verb, "get") == 0) {
        rc = runlane_conversation_map_get(&out, rl, args[0]);
        if (rc == RUNLANE_OK && !out) {
            fprintf(stderr, "runlane: conversation key \"%s\" has no mapping\n", args[0]);
            code = CLI_EXIT_NOTFOUND;
        } else if (rc == RUNLANE_OK) {
            printf("%s\n", out);
        }
        runlane_free(out);
    } else if (strcmp(verb, "map") == 0) {
        rc = runlane_conversation_map_set(rl, args[0], args[1]);
    } else {
        rc = runlane_conversation_map_forget(rl, args[0]);
    }
    (void)nargs;
    if (rc) code = cli_lib_fail(ctx, rc, verb);
    runlane_destroy(rl);
    return code;
}

static int create_cmd(cli_ctx_t *ctx, int argc, char **argv, int thread) {
    static const cli_optspec_t specs[] = {{"metadata", 0, CLI_ARG_REQUIRED, 1}, {NULL, 0, 0, 0}};
    const char *meta = NULL, *val, *verb = NULL, *args[2] = {NULL, NULL};
    int id, nargs = 0;
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    while ((id = cli_next(&p, specs, &val)) != CLI_END) {
        if (id == CLI_HELP) return cli_print_help(thread ? cli_help_thread : cli_help_conversation);
        if (id == 1) meta = val;
        if (id == CLI_POSITIONAL) {
            if (!verb && (strcmp(val, "create") == 0 || strcmp(val, "get") == 0 ||
                          strcmp(val, "map") == 0 || strcmp(val, "forget") == 0))
                verb = val;
            else if (verb && strcmp(verb, "create") != 0 && nargs < 2)
                args[nargs++] = val;
            else
                cli_usage_fail(ctx, "unexpected argument \"%s\"", val);
        }
    }
    const char *what = thread ? "thread" : "conversation";
    if (!verb) cli_usage_fail(ctx, "expected: %s create|get|map|forget", what);
    if (strcmp(verb, "create") != 0) {
        int want = strcmp(verb, "map") == 0 ? 2 : 1;
        if (nargs != want)
            cli_usage_fail(ctx, "expected: %s %s KEY%s", what, verb, want == 2 ? " PROVIDER_ID" : "");
        if (meta) cli_usage_fail(ctx, "--metadata only goes with create");
        return map_cmd(ctx, verb, args, nargs);
    }
    int code = 0;
    runlane_t *rl = open_once(ctx, &code);
    if (!rl) return code;
    char *out = NULL;
    runlane_err_t rc = thread ? runlane_thread_create(&out, rl, meta)
                              : runlane_conversation_create(&out, rl, meta);
    return print_and_close(ctx, rl, rc, out, "create");
}

int cli_cmd_conversation(cli_ctx_t *ctx, int argc, char **argv) { return create_cmd(ctx, argc, argv, 0); }
int cli_cmd_thread(cli_ctx_t *ctx, int argc, char **argv) { return create_cmd(ctx, argc, argv, 1); }

/* `runlane migrate KEY [--thread ID]` (runlane_migrate_thread) */
int cli_cmd_migrate(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t specs[] = {{"thread", 0, CLI_ARG_REQUIRED, 1}, {NULL, 0, 0, 0}};
    const char *thread = NULL, *key = NULL, *val;
    int id;
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    while ((id = cli_next(&p, specs, &val)) != CLI_END) {
        if (id == CLI_HELP) return cli_print_help(cli_help_migrate);
        if (id == 1) thread = val;
        if (id == CLI_POSITIONAL) {
            if (key) cli_usage_fail(ctx, "unexpected argument \"%s\"", val);
            key = val;
        }
    }
    if (!key) cli_usage_fail(ctx, "expected: migrate KEY [--thread THREAD_ID]");
    int code = 0;
    runlane_t *rl = open_once(ctx, &code);
    if (!rl) return code;
    char *out = NULL;
    runlane_err_t rc = runlane_migrate_thread(&out, rl, key, thread);
    return print_and_close(ctx, rl, rc, out, "migrate");
}
