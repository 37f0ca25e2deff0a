/* backend_assistants.c - the `assistants` backend: one batch is one run of
 * the Assistants API v2 on a thread (runlane's conversation id is the
 * thread id, thread_...). Every request carries OpenAI-Beta: assistants=v2.
 *
 * Flow of a batch:
 *   1. Checkpoint {"v":1,"state":"posting"}, then POST
 *      /threads/{t}/runs {assistant_id, additional_messages: one user
 *      message per queued message (or one joined message) with metadata
 *      {runlane_message_id, runlane_batch_id}, instructions,
 *      additional_instructions, tools, metadata {runlane_batch_id,
 *      runlane_message_ids}, stream}. The run id is checkpointed as soon as
 *      it is known ({"state":"running","run_id"}); message deltas become
 *      DELTA events. Without streaming the run is polled (GET
 *      /threads/{t}/runs/{r}, honouring openai-poll-after-ms).
 *   2. requires_action: checkpoint "tool_calls", emit TOOL_CALLS, wait for
 *      runlane_submit_tool_outputs (tool.timeout.ms: error outputs, or
 *      cancel the run); checkpoint "posting_outputs", POST
 *      .../runs/{r}/submit_tool_outputs (the stream goes on).
 *   3. completed: GET /threads/{t}/messages?run_id={r} for the assistant's
 *      reply, COMPLETED {reply, run_id, usage}, ack. failed, cancelled,
 *      expired: fail retriably; incomplete: fail for good; each with the
 *      provider's last_error (checkpoint "failed" first).
 *   4. "Thread already has an active run R" (or "Can't add messages ...
 *      while a run R is active"): GET R; if its metadata carries this
 *      batch's id, adopt it; otherwise defer 1-3 s (no attempt spent).
 *
 * Reconciliation: with a checkpointed run id, GET the run: active: adopt
 * (poll to the end); requires_action: raise the calls again; completed:
 * COMPLETED and ack without sending anything; failed while its owner ran:
 * fail. Without a run id but after a create that may have reached the
 * server (state posting: a lost answer, or a crash before the checkpoint),
 * the thread's newest runs are listed and a run whose metadata carries this
 * batch's id is adopted the same way. Before any new run (also when a
 * failed attempt is retried) the thread's messages are listed and every
 * message whose metadata carries this batch's id and its
 * runlane_message_id is left out: no message is ever added twice, and no
 * second run is made for a batch whose run exists (both exact, by
 * metadata, within the newest 20 runs and 1000 messages). */
#include <stdlib.h>
#include <string.h>

#include "backend_common.h"

#define ID_KEY "run_id"

static void a_post(rl_turn_t *t);
static void a_poll(rl_turn_t *t);
static void a_messages(rl_turn_t *t);
static void a_reconcile(rl_turn_t *t);
static void a_submit(rl_turn_t *t);
static void a_handle(rl_turn_t *t, const cJSON *run);
static void a_tools_timeout(rl_turn_t *t);
static void a_cancel_done(rl_turn_t *t, const rl_http_result_t *res);

static char *thread_path(const rl_turn_t *t, const char *fmt_suffix, const char *arg) {
    char *th = rl_path_escape(rl_turn_conv(t));
    char *a = arg ? rl_path_escape(arg) : NULL;
    char *p = NULL;
    if (th && (!arg || a)) {
        char *suffix = rl_asprintf(fmt_suffix, a ? a : "");
        if (suffix) p = rl_asprintf("/threads/%s%s", th, suffix);
        free(suffix);
    }
    free(th);
    free(a);
    return p;
}

static void fail_nomem(rl_turn_t *t) {
    rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
}

static void fail_with(rl_turn_t *t, const char *msg, int retriable) {
    rl_turn_ckpt_set(t, "state", "failed");
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
    rl_turn_settle(t, RL_SETTLE_FAIL, msg, retriable, 0);
}

static int run_active(const char *status) {
    return strcmp(status, "queued") == 0 || strcmp(status, "in_progress") == 0 ||
           strcmp(status, "cancelling") == 0;
}

/* A run status the flow knows (anything else, or none, is an unusable
 * answer). */
static int status_known(const char *status) {
    static const char *const known[] = {"queued",    "in_progress", "requires_action",
                                        "cancelling", "cancelled",  "failed",
                                        "completed", "incomplete",  "expired"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(status, known[i]) == 0) return 1;
    return 0;
}

/* The wait before the next poll: the server's hint (capped by the HTTP
 * client), else `dflt`; never a busy loop. */
static int64_t poll_delay(const rl_http_result_t *res, int64_t dflt) {
    int64_t d = res->poll_after_ms >= 0 ? res->poll_after_ms : dflt;
    return d < 50 ? 50 : d;
}

static void unusable(rl_turn_t *t, const char *what, const char *why, rl_turn_fn retry) {
    char *msg = rl_asprintf("%s: %s", what, why);
    rl_turn_unusable(t, msg ? msg : why, retry);
    free(msg);
}

/* busy.policy=interrupt: cancels the run beside the flow (a stream or a
 * poll follows it to "cancelled"). */
static void cancel_run_aux(rl_turn_t *t) {
    if (!t->turn_id[0]) return;
    t->interrupt_cancels++;
    char *path = thread_path(t, "/runs/%s/cancel", t->turn_id);
    if (path) rl_turn_aux(t, "POST", path);
    free(path);
}

/* A run became known. */
static void note_run(rl_turn_t *t, const cJSON *run) {
    const char *id = rl_json_str(run, "id");
    if (!*id || strcmp(id, t->turn_id) == 0) return;
    rl_strlcpy(t->turn_id, id, sizeof(t->turn_id));
    rl_turn_ckpt_set(t, "run_id", id);
    rl_turn_ckpt_set(t, "state", "running");
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
    rl_turn_emit_started(t, ID_KEY, 0);
    if (t->interrupting && t->interrupt_cancels == 0) cancel_run_aux(t);
}

/* ---- start ---- */

static void a_recover(rl_turn_t *t);

static void a_begin(rl_turn_t *t) {
    if (rl_turn_ckpt_get(t, "run_id")) {
        a_recover(t);
    } else if (rl_turn_ckpt_get(t, "state")) {
        a_reconcile(t);
    } else {
        cJSON_AddNumberToObject(t->ckpt, "v", 1);
        a_post(t);
    }
}

/* After the key's provider conversation is known: a dead predecessor's
 * turn first, then the batch's own. */
static void a_begin_settled(rl_turn_t *t) {
    if (!rl_turn_settle_prior(t, a_begin)) a_begin(t);
}

static void a_start(rl_backend_t *bk, rl_inflight_t *f) {
    rl_turn_t *t = rl_turn_new(bk, f);
    if (t && !rl_turn_resolve(t, a_begin_settled)) a_begin_settled(t);
}

/* ---- 1. create the run ---- */

static void a_stream_event(rl_turn_t *t, const char *event, cJSON *data) {
    if (strncmp(event, "thread.run.", 11) == 0 && strncmp(event, "thread.run.step", 15) != 0) {
        note_run(t, data);
        if (t->state == RL_TS_DEAD) return;
        const char *status = rl_json_str(data, "status");
        if (!run_active(status) && *status) {
            cJSON_Delete(t->final);
            t->final = cJSON_Duplicate(data, 1);
        }
    } else if (strcmp(event, "thread.message.delta") == 0) {
        const cJSON *content =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(data, "delta"), "content");
        const cJSON *p;
        rl_buf_t b;
        rl_buf_init(&b);
        cJSON_ArrayForEach(p, content) {
            if (strcmp(rl_json_str(p, "type"), "text") == 0)
                rl_buf_puts(&b, rl_json_str(cJSON_GetObjectItemCaseSensitive(p, "text"), "value"));
        }
        if (b.len) {
            cJSON *j = rl_turn_event_json(t, ID_KEY);
            cJSON_AddStringToObject(j, "delta", b.data);
            rl_turn_emit(t, RUNLANE_EVENT_DELTA, j);
        }
        rl_buf_free(&b);
    } else if (strcmp(event, "error") == 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(data, "error");
        if (!e) e = data;
        free(t->stream_error);
        t->stream_error = rl_asprintf("run stream error %s: %s", rl_json_str(e, "code"),
                                      rl_json_str(e, "message"));
    }
}

/* The run id in "... has an active run run_X." or "... while a run run_X is active." */
static int active_run_id(const char *msg, char *out, size_t size) {
    const char *p = strstr(msg, "active run ");
    if (p) p += 11;
    else if ((p = strstr(msg, "while a run ")) != NULL) p += 12;
    if (!p) return 0;
    size_t n = 0;
    while (p[n] && p[n] != ' ' && p[n] != '.' && p[n] != ',' && p[n] != '\'' && p[n] != '"') n++;
    if (n == 0 || n >= size) return 0;
    memcpy(out, p, n);
    out[n] = '\0';
    return 1;
}

static void a_dangling_cancel_done(rl_turn_t *t, const rl_http_result_t *res) {
    (void)res; /* cancelled or not, the next try looks again */
    rl_turn_defer(t);
}

static void a_active_done(rl_turn_t *t, const rl_http_result_t *res) {
    cJSON *run = res->ok ? cJSON_ParseWithLength(res->body, res->body_len) : NULL;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(run, "metadata");
    if (run && strcmp(rl_json_str(md, "runlane_batch_id"), t->f->claim.batch_id) == 0) {
        /* Ours (a create whose answer was lost, or a crashed owner's). */
        rl_strlcpy(t->turn_id, rl_json_str(run, "id"), sizeof(t->turn_id));
        rl_turn_ckpt_set(t, "run_id", t->turn_id);
        rl_turn_ckpt_set(t, "state", "running");
        if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) {
            cJSON_Delete(run);
            return;
        }
        rl_turn_emit_started(t, ID_KEY, 1);
        a_handle(t, run);
    } else if (run && strcmp(rl_json_str(run, "status"), "requires_action") == 0 &&
               *rl_json_str(md, "runlane_batch_id")) {
        /* Another runlane batch's run waits for tool outputs: that batch is
         * dead (the lease gives the conversation to one batch at a time,
         * and it is ours now), and its run would block the thread until it
         * expires (10 min). Cancel it, then come back (no attempt spent). */
        char *path = thread_path(t, "/runs/%s/cancel", rl_json_str(run, "id"));
        if (!path || !rl_turn_request(t, "POST", path, NULL, 0, a_dangling_cancel_done, NULL))
            fail_nomem(t);
        free(path);
    } else {
        rl_turn_defer(t);
    }
    cJSON_Delete(run);
}

static void a_check_active(rl_turn_t *t, const char *run_id) {
    char *path = thread_path(t, "/runs/%s", run_id);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_active_done, NULL)) fail_nomem(t);
    free(path);
}

static void a_post_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (res->ok) {
        cJSON *run = t->final;
        t->final = NULL;
        if (!run && !res->streamed && res->body_len) {
            run = cJSON_ParseWithLength(res->body, res->body_len);
            if (run) note_run(t, run);
            if (t->state == RL_TS_DEAD) {
                cJSON_Delete(run);
                return;
            }
        }
        const char *status = rl_json_str(run, "status");
        if (run && *status && !run_active(status)) {
            a_handle(t, run);
        } else if (t->stream_error) {
            fail_with(t, t->stream_error, 1);
        } else if (t->turn_id[0]) {
            rl_turn_timer(t, poll_delay(res, 200), a_poll);
        } else {
            /* Nothing usable: look for the run (backoff, counted: a server
             * that always answers so must not get creates forever). */
            unusable(t, t->posting_outputs ? "POST /threads/{id}/runs/{id}/submit_tool_outputs"
                                           : "POST /threads/{id}/runs",
                     res->streamed ? "HTTP 200 stream ended without a usable run object"
                                   : "HTTP 200 without a usable run object",
                     a_reconcile);
        }
        cJSON_Delete(run);
        return;
    }
    char run_id[160];
    if (res->status == 400 && active_run_id(res->error_message, run_id, sizeof(run_id))) {
        a_check_active(t, run_id);
        return;
    }
    if (t->posting_outputs && res->status == 400) {
        /* The run no longer takes outputs: see where it is (counted: a
         * run that keeps asking for them and refusing them must end). */
        rl_turn_unusable(t, res->error, a_poll);
        return;
    }
    if (res->streamed || res->ambiguous) {
        if (++t->create_failures > rl_http_max_retries(t->bk->http)) {
            fail_with(t, res->error, 1);
        } else if (t->turn_id[0]) {
            rl_turn_timer(t, 100, a_poll);
        } else {
            /* A run may exist: look for it (by the batch id in its
             * metadata) before creating one. */
            rl_turn_timer(t, res->retry_in_ms, a_reconcile);
        }
        return;
    }
    fail_with(t, res->error, res->retriable);
}

static void a_post(rl_turn_t *t) {
    rl_backend_t *bk = t->bk;
    /* busy.policy=interrupt: a new run takes the messages that came. */
    if (!rl_turn_absorb_interrupt(t, a_post)) return;
    rl_turn_ckpt_set(t, "state", "posting");
    rl_turn_ckpt_set(t, "run_id", NULL);
    if (!rl_turn_checkpoint(t, a_post)) return;
    t->turn_id[0] = '\0';
    t->posting_outputs = 0;
    cJSON_Delete(t->final);
    t->final = NULL;
    free(t->stream_error);
    t->stream_error = NULL;
    const cJSON *present = t->scratch; /* {message_id: true} of messages already in the thread */
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "assistant_id", bk->assistant_id);
    cJSON *add = cJSON_CreateArray();
    const char *bid = t->f->claim.batch_id;
    if (bk->joined) {
        /* The messages after those already in the thread, joined. */
        int from = 0, n = cJSON_GetArraySize(t->msgs);
        while (from < n &&
               cJSON_GetObjectItemCaseSensitive(
                   present, rl_json_str(cJSON_GetArrayItem(t->msgs, from), "id")))
            from++;
        if (from < n) {
            char *text = rl_turn_join(t, from, n);
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "user");
            cJSON_AddStringToObject(m, "content", text ? text : "");
            free(text);
            cJSON *md = rl_turn_metadata(t, from);
            /* Only the runlane keys: the conf's metadata belongs to the run. */
            cJSON *mmd = cJSON_AddObjectToObject(m, "metadata");
            cJSON_AddStringToObject(mmd, "runlane_message_id",
                                    rl_json_str(cJSON_GetArrayItem(t->msgs, from), "id"));
            cJSON_AddStringToObject(mmd, "runlane_batch_id", bid);
            if (*rl_json_str(md, "runlane_message_ids"))
                cJSON_AddStringToObject(mmd, "runlane_message_ids",
                                        rl_json_str(md, "runlane_message_ids"));
            cJSON_Delete(md);
            cJSON_AddItemToArray(add, m);
        }
    } else {
        const cJSON *msg;
        cJSON_ArrayForEach(msg, t->msgs) {
            const char *id = rl_json_str(msg, "id");
            if (cJSON_GetObjectItemCaseSensitive(present, id)) continue;
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "user");
            cJSON_AddStringToObject(m, "content", rl_json_str(msg, "content"));
            cJSON *md = cJSON_AddObjectToObject(m, "metadata");
            /* The message's own metadata, as far as the 16 keys allow. */
            int k = 0;
            const cJSON *kv;
            cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(msg, "metadata")) {
                if (k >= 14 || !cJSON_IsString(kv) || strlen(kv->string) > 64 ||
                    strlen(kv->valuestring) > 512 || strncmp(kv->string, "runlane_", 8) == 0)
                    continue;
                cJSON_AddStringToObject(md, kv->string, kv->valuestring);
                k++;
            }
            cJSON_AddStringToObject(md, "runlane_message_id", id);
            cJSON_AddStringToObject(md, "runlane_batch_id", bid);
            cJSON_AddItemToArray(add, m);
        }
    }
    int adds = cJSON_GetArraySize(add) > 0;
    if (adds) cJSON_AddItemToObject(b, "additional_messages", add);
    else cJSON_Delete(add);
    const char *ins = rl_turn_instructions(t);
    if (ins) cJSON_AddStringToObject(b, "instructions", ins);
    if (bk->additional_instructions)
        cJSON_AddStringToObject(b, "additional_instructions", bk->additional_instructions);
    if (cJSON_GetArraySize(bk->tools) > 0)
        cJSON_AddItemToObject(b, "tools", cJSON_Duplicate(bk->tools, 1));
    cJSON_AddItemToObject(b, "metadata", rl_turn_metadata(t, 0));
    if (bk->stream) cJSON_AddBoolToObject(b, "stream", 1);
    /* A run that adds messages goes out only with a safe lease margin
     * (else the batch is released; see rl_turn_lease_ok). */
    if (adds && !rl_turn_lease_ok(t)) {
        cJSON_Delete(b);
        return;
    }
    char *path = thread_path(t, "/runs", NULL);
    int flags = RL_HTTP_UNSAFE | (bk->stream ? RL_HTTP_STREAM : 0);
    int ok = path && (adds ? rl_turn_request_guarded(t, "POST", path, b, flags, a_post_done,
                                                     a_stream_event)
                           : rl_turn_request(t, "POST", path, b, flags, a_post_done,
                                             a_stream_event));
    free(path);
    cJSON_Delete(b);
    if (!ok) fail_nomem(t);
}

/* ---- polling ---- */

static void a_poll_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        if (res->status == 404) a_messages(t);
        else fail_with(t, res->error, res->retriable);
        return;
    }
    cJSON *run = cJSON_ParseWithLength(res->body, res->body_len);
    const char *status = rl_json_str(run, "status");
    if (!status_known(status)) {
        unusable(t, "GET /threads/{id}/runs/{id}", "HTTP 200 without a known run status", a_poll);
    } else if (run_active(status)) {
        rl_turn_timer(t, poll_delay(res, 500), a_poll);
    } else {
        a_handle(t, run);
    }
    cJSON_Delete(run);
}

static void a_poll(rl_turn_t *t) {
    char *path = thread_path(t, "/runs/%s", t->turn_id);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_poll_done, NULL)) fail_nomem(t);
    free(path);
}

/* ---- the state of a run ---- */

static void a_reply_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->retriable);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    rl_buf_t reply;
    rl_buf_init(&reply);
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "data")) {
        if (strcmp(rl_json_str(m, "role"), "assistant") != 0) continue;
        if (reply.len) rl_buf_puts(&reply, "\n");
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(m, "content")) {
            if (strcmp(rl_json_str(p, "type"), "text") == 0)
                rl_buf_puts(&reply, rl_json_str(cJSON_GetObjectItemCaseSensitive(p, "text"), "value"));
        }
    }
    cJSON_Delete(j);
    rl_buf_puts(&reply, "");
    cJSON *ev = rl_turn_event_json(t, ID_KEY);
    cJSON_AddStringToObject(ev, "reply", reply.data ? reply.data : "");
    cJSON_AddItemToObject(ev, "usage", cJSON_Duplicate(t->usage, 1));
    cJSON *ids = cJSON_AddArrayToObject(ev, "message_ids");
    cJSON_ArrayForEach(m, t->msgs) cJSON_AddItemToArray(ids, cJSON_CreateString(rl_json_str(m, "id")));
    rl_buf_free(&reply);
    rl_turn_complete(t, ev);
}

static void a_handle(rl_turn_t *t, const cJSON *run) {
    const char *status = rl_json_str(run, "status");
    if (*rl_json_str(run, "id")) rl_strlcpy(t->turn_id, rl_json_str(run, "id"), sizeof(t->turn_id));
    if (run_active(status)) {
        rl_turn_timer(t, 200, a_poll);
        return;
    }
    if (strcmp(status, "requires_action") == 0) {
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(run, "required_action"), "submit_tool_outputs"),
            "tool_calls");
        cJSON *calls = cJSON_CreateArray();
        int all_answered = t->posting_outputs && t->outputs != NULL;
        const cJSON *c;
        cJSON_ArrayForEach(c, tc) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "id", rl_json_str(c, "id"));
            cJSON_AddStringToObject(o, "name", rl_json_str(fn, "name"));
            cJSON_AddStringToObject(o, "arguments", rl_json_str(fn, "arguments"));
            cJSON_AddItemToArray(calls, o);
            if (!cJSON_GetObjectItemCaseSensitive(t->outputs, rl_json_str(c, "id"))) all_answered = 0;
        }
        if (t->interrupting && t->interrupt_cancels < 3) {
            /* Cancel it rather than ask for tools; then restart. */
            cJSON_Delete(t->calls);
            t->calls = calls;
            t->interrupt_cancels++;
            char *path = thread_path(t, "/runs/%s/cancel", t->turn_id);
            if (!path || !rl_turn_request(t, "POST", path, NULL, 0, a_cancel_done, NULL))
                fail_nomem(t);
            free(path);
            return;
        }
        if (all_answered && cJSON_GetArraySize(calls) > 0) {
            /* Our outputs did not get through (ambiguous failure): again. */
            cJSON_Delete(t->calls);
            t->calls = calls;
            a_submit(t);
            return;
        }
        cJSON_Delete(t->calls);
        t->calls = calls;
        t->posting_outputs = 0;
        rl_turn_ckpt_set(t, "state", "tool_calls");
        if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
        rl_turn_raise_tools(t, ID_KEY, a_tools_timeout);
        return;
    }
    rl_usage_add(t->usage, cJSON_GetObjectItemCaseSensitive(run, "usage"));
    if (strcmp(status, "completed") == 0) {
        char *path = thread_path(t, "/messages?run_id=%s&order=asc&limit=100", t->turn_id);
        if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_reply_done, NULL)) fail_nomem(t);
        free(path);
        return;
    }
    if (strcmp(status, "cancelled") == 0 && t->interrupting && !t->cancelling) {
        /* Cancelled for busy.policy=interrupt: a new run with everything
         * (the messages already in the thread are not sent again). */
        a_messages(t);
        return;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(run, "last_error");
    char *msg;
    int retriable = 1;
    if (t->cancelling) {
        msg = rl_asprintf("tool outputs were not submitted within %lld ms: run %s was %s",
                          (long long)t->bk->tool_timeout_ms, t->turn_id, status);
        retriable = 0;
    } else if (strcmp(status, "incomplete") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(run, "incomplete_details");
        msg = rl_asprintf("run %s incomplete: %s", t->turn_id, rl_json_str(d, "reason"));
        retriable = 0;
    } else {
        msg = rl_asprintf("run %s %s: %s: %s", t->turn_id, status, rl_json_str(err, "code"),
                          rl_json_str(err, "message"));
        if (strcmp(rl_json_str(err, "code"), "invalid_prompt") == 0) retriable = 0;
    }
    fail_with(t, msg ? msg : status, retriable);
    free(msg);
}

/* ---- tool calls ---- */

static void a_submit(rl_turn_t *t) {
    rl_turn_ckpt_set(t, "state", "posting_outputs");
    if (!rl_turn_checkpoint(t, a_submit)) return;
    t->posting_outputs = 1;
    cJSON_Delete(t->final);
    t->final = NULL;
    cJSON *b = cJSON_CreateObject();
    cJSON *outs = cJSON_AddArrayToObject(b, "tool_outputs");
    const cJSON *c;
    cJSON_ArrayForEach(c, t->calls) {
        const char *id = rl_json_str(c, "id");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tool_call_id", id);
        cJSON_AddStringToObject(o, "output", rl_json_str(t->outputs, id));
        cJSON_AddItemToArray(outs, o);
    }
    if (t->bk->stream) cJSON_AddBoolToObject(b, "stream", 1);
    if (!rl_turn_lease_ok(t)) {
        cJSON_Delete(b);
        return;
    }
    char *path = thread_path(t, "/runs/%s/submit_tool_outputs", t->turn_id);
    int ok = path && rl_turn_request(t, "POST", path, b,
                                     RL_HTTP_UNSAFE | (t->bk->stream ? RL_HTTP_STREAM : 0),
                                     a_post_done, a_stream_event);
    free(path);
    cJSON_Delete(b);
    if (!ok) fail_nomem(t);
}

static void a_tool_outputs(rl_backend_t *bk, rl_inflight_t *f, const char *outputs_json) {
    (void)bk;
    rl_turn_t *t = f->turn;
    if (!t) return;
    if (!rl_turn_take_outputs(t, outputs_json)) return;
    t->state = RL_TS_BUSY;
    t->timer_fn = NULL;
    a_submit(t);
}

static void a_cancel_done(rl_turn_t *t, const rl_http_result_t *res) {
    (void)res;
    /* Follow the run until the provider confirms the cancel. */
    rl_turn_timer(t, 0, a_poll);
}

static void a_tools_timeout(rl_turn_t *t) {
    if (t->state != RL_TS_WAIT_TOOLS) return;
    t->state = RL_TS_BUSY;
    if (!t->bk->tool_cancel) {
        rl_turn_fill_missing_outputs(
            t, "{\"error\":\"tool call timed out: no output within tool.timeout.ms\"}");
        a_submit(t);
        return;
    }
    t->cancelling = 1;
    char *path = thread_path(t, "/runs/%s/cancel", t->turn_id);
    if (!path || !rl_turn_request(t, "POST", path, NULL, 0, a_cancel_done, NULL)) fail_nomem(t);
    free(path);
}

/* ---- reconciliation ---- */

static void a_recover_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        if (res->status == 404) a_messages(t);
        else rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->retriable);
        return;
    }
    cJSON *run = cJSON_ParseWithLength(res->body, res->body_len);
    const char *status = rl_json_str(run, "status");
    const char *state = rl_turn_ckpt_get(t, "state");
    if (!*rl_json_str(run, "id") || !status_known(status)) {
        cJSON_Delete(run);
        unusable(t, "GET /threads/{id}/runs/{id}", "HTTP 200 without a run id and known status",
                 a_recover);
        return;
    }
    rl_strlcpy(t->turn_id, rl_json_str(run, "id"), sizeof(t->turn_id));
    if (run_active(status) || strcmp(status, "requires_action") == 0) {
        rl_turn_emit_started(t, ID_KEY, 1);
        a_handle(t, run);
    } else if (strcmp(status, "completed") != 0 && state && strcmp(state, "failed") == 0) {
        /* A failed attempt is retried: a new run, without the messages
         * already in the thread. */
        a_messages(t);
    } else {
        a_handle(t, run);
    }
    cJSON_Delete(run);
}

static void a_recover(rl_turn_t *t) {
    char *path = thread_path(t, "/runs/%s", rl_turn_ckpt_get(t, "run_id"));
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_recover_done, NULL)) fail_nomem(t);
    free(path);
}

static void a_messages_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->status == 404 ? 0 : res->retriable);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "data"))) {
        cJSON_Delete(j);
        unusable(t, "GET /threads/{id}/messages", "HTTP 200 without a message list", a_messages);
        return;
    }
    /* (only the ids of this batch's messages are kept from each page, so
     * the pages' sizes need no total cap, unlike the responses listing) */
    if (!t->scratch) t->scratch = cJSON_CreateObject();
    const char *bid = t->f->claim.batch_id;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "data")) {
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(m, "metadata");
        const char *mid = rl_json_str(md, "runlane_message_id");
        if (strcmp(rl_json_str(m, "role"), "user") != 0 ||
            strcmp(rl_json_str(md, "runlane_batch_id"), bid) != 0)
            continue;
        if (*mid && !cJSON_GetObjectItemCaseSensitive(t->scratch, mid))
            cJSON_AddTrueToObject(t->scratch, mid);
        /* A joined message names every message it carries. */
        const char *ids = rl_json_str(md, "runlane_message_ids");
        while (*ids) {
            const char *comma = strchr(ids, ',');
            size_t len = comma ? (size_t)(comma - ids) : strlen(ids);
            char one[RUNLANE_ID_MAX];
            if (len && len < sizeof(one)) {
                memcpy(one, ids, len);
                one[len] = '\0';
                if (!cJSON_GetObjectItemCaseSensitive(t->scratch, one))
                    cJSON_AddTrueToObject(t->scratch, one);
            }
            ids += len + (comma ? 1 : 0);
        }
    }
    int more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "has_more"));
    rl_strlcpy(t->cursor, rl_json_str(j, "last_id"), sizeof(t->cursor));
    cJSON_Delete(j);
    if (more && t->cursor[0] && ++t->pages < 10) {
        char *path = thread_path(t, "/messages?order=desc&limit=100&after=%s", t->cursor);
        if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_messages_done, NULL))
            fail_nomem(t);
        free(path);
        return;
    }
    a_post(t);
}

static void a_messages(rl_turn_t *t) {
    cJSON_Delete(t->scratch);
    t->scratch = NULL;
    t->pages = 0;
    t->cursor[0] = '\0';
    char *path = thread_path(t, "/messages?order=desc&limit=100", NULL);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_messages_done, NULL)) fail_nomem(t);
    free(path);
}

/* Finds this batch's newest run (by metadata) when its id is unknown: a
 * create whose answer was lost, or an owner that crashed before its
 * checkpoint. Found: adopt it, whatever its state. Otherwise create a run
 * with the messages not yet in the thread. */
static void a_runs_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        a_messages(t);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    const cJSON *run, *found = NULL;
    cJSON_ArrayForEach(run, cJSON_GetObjectItemCaseSensitive(j, "data")) {
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(run, "metadata");
        if (strcmp(rl_json_str(md, "runlane_batch_id"), t->f->claim.batch_id) == 0) {
            found = run;
            break;
        }
    }
    if (!found) {
        cJSON_Delete(j);
        a_messages(t);
        return;
    }
    rl_strlcpy(t->turn_id, rl_json_str(found, "id"), sizeof(t->turn_id));
    rl_turn_ckpt_set(t, "run_id", t->turn_id);
    rl_turn_ckpt_set(t, "state", "running");
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) {
        cJSON_Delete(j);
        return;
    }
    rl_turn_emit_started(t, ID_KEY, 1);
    a_handle(t, found);
    cJSON_Delete(j);
}

static void a_reconcile(rl_turn_t *t) {
    char *path = thread_path(t, "/runs?order=desc&limit=20", NULL);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, a_runs_done, NULL)) fail_nomem(t);
    free(path);
}

/* ---- ops ---- */

/* busy.policy=interrupt: new messages came while the run goes on. The run
 * is cancelled (also while it waits for tools); once the provider confirms
 * it, a new run takes everything. A run that completes first just
 * completes (the new messages make the next batch). Before a run is
 * created, the create takes the new messages. */
static void a_interrupt(rl_backend_t *bk, rl_inflight_t *f) {
    (void)bk;
    rl_turn_t *t = f->turn;
    if (!t || t->state == RL_TS_DEAD || t->state == RL_TS_SETTLING) return;
    t->interrupting = 1;
    if (t->state == RL_TS_WAIT_TOOLS) {
        t->state = RL_TS_BUSY;
        t->timer_fn = NULL;
        t->interrupt_cancels++;
        char *path = thread_path(t, "/runs/%s/cancel", t->turn_id);
        if (!path || !rl_turn_request(t, "POST", path, NULL, 0, a_cancel_done, NULL))
            fail_nomem(t);
        free(path);
        return;
    }
    if (t->turn_id[0] && t->interrupt_cancels == 0) cancel_run_aux(t);
}

static void a_abandon(rl_backend_t *bk, rl_inflight_t *f) {
    (void)bk;
    if (f->turn) rl_turn_abandon(f->turn);
}

static rl_backend_t *a_create(runlane_t *rl);
static int64_t a_drive(rl_backend_t *bk) { return rl_bk_drive(bk); }
static void a_destroy(rl_backend_t *bk) { rl_bk_free(bk); }

const rl_backend_ops_t rl_backend_assistants = {
    "assistants", a_create,  a_start, a_drive, a_tool_outputs,
    a_interrupt,  a_abandon, a_destroy,
};

static rl_backend_t *a_create(runlane_t *rl) { return rl_bk_new(rl, &rl_backend_assistants, 1); }
