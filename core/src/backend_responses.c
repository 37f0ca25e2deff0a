/* backend_responses.c - the `responses` backend: one batch is one turn of
 * the Responses API on a conversation (runlane's conversation id is the
 * provider's conversation id, conv_...).
 *
 * Flow of a batch:
 *   1. Snapshot: GET /conversations/{c}/items?order=desc&limit=50 gives the
 *      newest item id X before anything of this batch is sent. Checkpoint
 *      {"v":1,"state":"posting","after":X}. Function calls a dead turn left
 *      unanswered at the end of the conversation are answered first (an
 *      error output, POST /conversations/{c}/items), then the snapshot is
 *      taken again; a create refused with 400 "No tool output found" does
 *      the same and creates again (see dangling_calls).
 *   2. POST /responses {conversation, input: one user message per queued
 *      message (or one joined message), model|prompt, instructions, tools,
 *      metadata {runlane_batch_id, runlane_message_ids}, stream: true (or
 *      background: true, then polling GET /responses/{id})}. With
 *      busy.policy=interrupt every response is created with background:
 *      true, streamed as well when openai.stream is true (the Responses API
 *      streams background responses): only a background response can be
 *      cancelled (POST /responses/{id}/cancel). The response id is
 *      checkpointed as soon as it is known ({"state":"running",
 *      "response_id"}); text deltas become DELTA events.
 *   3. A completed response with function_call items: checkpoint
 *      "tool_calls", emit TOOL_CALLS and wait for runlane_submit_tool_outputs
 *      (or tool.timeout.ms: error outputs, or cancel); then checkpoint
 *      "posting_outputs" and POST /responses {conversation, input:
 *      function_call_output items} (previous_response_id cannot be combined
 *      with conversation), back to 2.
 *   4. Completed without calls: COMPLETED {reply, usage summed over the
 *      turn's responses} and ack. conversation_locked: defer 1-3 s (no
 *      attempt spent). failed/cancelled: fail retriably; incomplete and 4xx:
 *      fail for good (checkpoint "failed" first).
 *
 * Reconciliation (a previous owner crashed, a create's outcome is unknown,
 * or a failed attempt is retried):
 *   - with a checkpointed response id: GET /responses/{id}; queued or
 *     in_progress: adopt it (poll to the end); completed with calls whose
 *     outputs were never posted: raise them again; completed: COMPLETED and
 *     ack without sending anything; failed (while its owner ran): fail.
 *   - otherwise, or when outputs may have been posted, or when a failed
 *     attempt is retried: list the conversation's items after X (the
 *     snapshot taken before this batch's first create) and compare: the
 *     batch's user messages found there in order are not sent again; tool
 *     calls found after them without an output are raised again; an
 *     assistant message after all of it is the reply (COMPLETED, ack); if
 *     everything is there but no reply, a create with no input asks for one.
 *   Guarantee: a message of the batch is never added twice as long as
 *   nothing but runlane adds items to the conversation between the snapshot
 *   and the reconciliation (the lease keeps other runlane workers out), and
 *   the checkpoint store keeps the checkpoint (written before every create).
 *   Tool outputs are recognised exactly, by call id. The Responses API
 *   cannot list a conversation's responses, so a lost create answer whose
 *   response is still running is waited for through conversation_locked
 *   deferrals; if it completes in the instant between the look at the
 *   items and the next create, that create yields a second reply (a
 *   duplicate turn, never a duplicate message). Reconciled completions
 *   carry "reconciled":true, the reply from the conversation's items, no
 *   response id and empty usage. Cost: one GET (the snapshot) per batch. */
#include <stdlib.h>
#include <string.h>

#include "backend_common.h"

#define ID_KEY "response_id"

static void r_snapshot(rl_turn_t *t);
static void r_dangling_list(rl_turn_t *t);
static void r_reconcile(rl_turn_t *t);
static void r_post(rl_turn_t *t);
static void r_poll(rl_turn_t *t);
static void r_recover(rl_turn_t *t);
static void r_final(rl_turn_t *t, const cJSON *resp);
static void r_tools_timeout(rl_turn_t *t);
static void r_restart_done(rl_turn_t *t, const rl_http_result_t *res);
static void answer_calls_then(rl_turn_t *t, const char *output, rl_turn_done_fn done);

static char *conv_path(const rl_turn_t *t, const char *suffix) {
    char *c = rl_path_escape(rl_turn_conv(t));
    char *p = c ? rl_asprintf("/conversations/%s%s", c, suffix) : NULL;
    free(c);
    return p;
}

static void fail_nomem(rl_turn_t *t) {
    rl_turn_fail(t, RUNLANE_ERR_NOMEM, "out of memory", 1);
}

/* Text of a message item or a response's output message. */
static void message_text(const cJSON *item, rl_buf_t *b) {
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
    if (cJSON_IsString(content)) {
        rl_buf_puts(b, content->valuestring);
        return;
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, content) {
        const char *type = rl_json_str(p, "type");
        if (strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0 ||
            strcmp(type, "text") == 0)
            rl_buf_puts(b, rl_json_str(p, "text"));
    }
}

static int is_terminal(const char *status) {
    return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
           strcmp(status, "incomplete") == 0 || strcmp(status, "cancelled") == 0;
}

/* A status the flow knows (anything else, or none, is an unusable answer). */
static int status_known(const char *status) {
    return is_terminal(status) || strcmp(status, "queued") == 0 ||
           strcmp(status, "in_progress") == 0;
}

/* The wait before the next poll: the server's hint (capped by the HTTP
 * client), else `dflt`; never a busy loop. */
static int64_t poll_delay(const rl_http_result_t *res, int64_t dflt) {
    int64_t d = res->poll_after_ms >= 0 ? res->poll_after_ms : dflt;
    return d < 50 ? 50 : d;
}

/* "<what>: HTTP 200 ..." for rl_turn_unusable. */
static void unusable(rl_turn_t *t, const char *method, const char *path, const char *why,
                     rl_turn_fn retry) {
    char *msg = rl_asprintf("%s %s: %s", method, path, why);
    rl_turn_unusable(t, msg ? msg : why, retry);
    free(msg);
}

/* A response (from a stream event, a create or a poll) became known. */
static void cancel_response(rl_turn_t *t);

static void note_response(rl_turn_t *t, const cJSON *resp) {
    const char *id = rl_json_str(resp, "id");
    if (!*id || strcmp(id, t->turn_id) == 0) return;
    rl_strlcpy(t->turn_id, id, sizeof(t->turn_id));
    rl_turn_ckpt_set(t, "response_id", id);
    rl_turn_ckpt_set(t, "state", "running");
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
    rl_turn_emit_started(t, ID_KEY, 0);
    if (t->interrupting) cancel_response(t);
}

/* 1 when the backend creates background responses: in polling mode, and
 * with busy.policy=interrupt (streamed or not), since only a background
 * response can be cancelled. */
static int creates_background(const rl_backend_t *bk) { return !bk->stream || bk->interrupt; }

/* busy.policy=interrupt: cancels the running response (a background one,
 * see creates_background), once. Its stream (or poll) then ends with the
 * response cancelled, and r_final restarts the turn with everything. */
static void cancel_response(rl_turn_t *t) {
    if (!creates_background(t->bk) || !t->turn_id[0] || t->interrupt_cancels++ > 0) return;
    char *id = rl_path_escape(t->turn_id);
    char *path = id ? rl_asprintf("/responses/%s/cancel", id) : NULL;
    if (path) rl_turn_aux(t, "POST", path);
    free(id);
    free(path);
}

static void fail_with(rl_turn_t *t, const char *msg, int retriable) {
    rl_turn_ckpt_set(t, "state", "failed");
    if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
    rl_turn_settle(t, RL_SETTLE_FAIL, msg, retriable, 0);
}

static void complete(rl_turn_t *t, const char *reply, int reconciled) {
    cJSON *j = rl_turn_event_json(t, ID_KEY);
    cJSON_AddStringToObject(j, "reply", reply);
    cJSON_AddItemToObject(j, "usage", cJSON_Duplicate(t->usage, 1));
    cJSON *ids = cJSON_AddArrayToObject(j, "message_ids");
    const cJSON *m;
    cJSON_ArrayForEach(m, t->msgs) cJSON_AddItemToArray(ids, cJSON_CreateString(rl_json_str(m, "id")));
    if (reconciled) cJSON_AddBoolToObject(j, "reconciled", 1);
    rl_turn_complete(t, j);
}

/* ---- start ---- */

static void r_begin(rl_turn_t *t) {
    if (rl_turn_ckpt_get(t, "response_id")) r_recover(t);
    else if (rl_turn_ckpt_get(t, "after")) r_reconcile(t);
    else r_snapshot(t);
}

/* After the key's provider conversation is known: a dead predecessor's
 * turn first, then the batch's own. */
static void r_begin_settled(rl_turn_t *t) {
    if (!rl_turn_settle_prior(t, r_begin)) r_begin(t);
}

static void r_start(rl_backend_t *bk, rl_inflight_t *f) {
    rl_turn_t *t = rl_turn_new(bk, f);
    if (t && !rl_turn_resolve(t, r_begin_settled)) r_begin_settled(t);
}

/* ---- 1. snapshot ---- */

/* Dangling function calls: a batch that died (dead-lettered on recovery,
 * lease lost, crash with the attempts spent...) while its response's
 * function calls were unanswered leaves them pending in the conversation,
 * and the provider then refuses every later create on it with HTTP 400 "No
 * tool output found for function call ...". The newest items (desc order)
 * up to the last message tell: function_call items without a
 * function_call_output. They are answered with an error output in the
 * conversation itself (POST /conversations/{c}/items, no response asked),
 * before this batch's snapshot (or, reactively, after such a 400) - never
 * calls of a live turn: the lease gives the conversation to one batch, and
 * this one has not created anything yet (no checkpoint) or got the 400. */
#define DANGLING_OUTPUT "error: this tool call was abandoned (its turn failed)"
#define DANGLING_LIST "/items?order=desc&limit=50"
#define DANGLING_MAX_ROUNDS 5

/* The call ids of dangling function calls among `data` (newest first);
 * an array of strings (at most 20: the items endpoint's limit). */
static cJSON *dangling_calls(const cJSON *data) {
    cJSON *answered = cJSON_CreateObject();
    cJSON *ids = cJSON_CreateArray();
    const cJSON *it;
    cJSON_ArrayForEach(it, data) {
        const char *type = rl_json_str(it, "type");
        if (!*type || strcmp(type, "message") == 0) break;
        const char *id = rl_json_str(it, "call_id");
        if (!*id) continue;
        if (strcmp(type, "function_call_output") == 0) {
            cJSON_AddTrueToObject(answered, id);
        } else if (strcmp(type, "function_call") == 0 &&
                   !cJSON_GetObjectItemCaseSensitive(answered, id) &&
                   cJSON_GetArraySize(ids) < 20) {
            cJSON_AddItemToArray(ids, cJSON_CreateString(id));
        }
    }
    cJSON_Delete(answered);
    return ids;
}

static void r_dangling_list(rl_turn_t *t);

static void r_dangling_answered(rl_turn_t *t, const rl_http_result_t *res) {
    /* Whatever happened, the next listing tells; a failure counts. */
    if (!res->ok) {
        rl_turn_unusable(t, res->error, t->dangling_then_post ? r_dangling_list : r_snapshot);
        return;
    }
    if (t->dangling_then_post) r_dangling_list(t);
    else r_snapshot(t);
}

/* Answers `ids` in the conversation; takes `ids`. */
static void answer_dangling(rl_turn_t *t, cJSON *ids) {
    t->dangling_rounds++;
    cJSON *b = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(b, "items");
    const cJSON *id;
    cJSON_ArrayForEach(id, ids) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "type", "function_call_output");
        cJSON_AddStringToObject(it, "call_id", id->valuestring);
        cJSON_AddStringToObject(it, "output", DANGLING_OUTPUT);
        cJSON_AddItemToArray(items, it);
    }
    cJSON_Delete(ids);
    if (!rl_turn_lease_ok(t)) {
        cJSON_Delete(b);
        return;
    }
    char *path = conv_path(t, "/items");
    int ok = path && rl_turn_request_guarded(t, "POST", path, b, RL_HTTP_UNSAFE,
                                             r_dangling_answered, NULL);
    free(path);
    cJSON_Delete(b);
    if (!ok) fail_nomem(t);
}

/* Reactive: a create got 400 "No tool output found": answer the dangling
 * calls, then create again (no attempt spent). */
static void r_dangling_list_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->status == 404 ? 0 : res->retriable);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "data"))) {
        cJSON_Delete(j);
        unusable(t, "GET", "/conversations/{id}/items", "HTTP 200 without an item list",
                 r_dangling_list);
        return;
    }
    cJSON *ids = dangling_calls(cJSON_GetObjectItemCaseSensitive(j, "data"));
    cJSON_Delete(j);
    if (cJSON_GetArraySize(ids) > 0 && t->dangling_rounds < DANGLING_MAX_ROUNDS) {
        answer_dangling(t, ids);
        return;
    }
    cJSON_Delete(ids);
    r_post(t);
}

static void r_dangling_list(rl_turn_t *t) {
    t->dangling_then_post = 1;
    char *path = conv_path(t, DANGLING_LIST);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, r_dangling_list_done, NULL)) fail_nomem(t);
    free(path);
}

static void r_snapshot_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->status == 404 ? 0 : res->retriable);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsArray(data)) {
        /* (an empty conversation is an empty list, not nothing) */
        cJSON_Delete(j);
        unusable(t, "GET", "/conversations/{id}/items", "HTTP 200 without an item list",
                 r_snapshot);
        return;
    }
    cJSON *ids = dangling_calls(data);
    if (cJSON_GetArraySize(ids) > 0 && t->dangling_rounds < DANGLING_MAX_ROUNDS) {
        /* Answer them first, then snapshot again (the outputs come before
         * the snapshot's newest item). */
        cJSON_Delete(j);
        t->dangling_then_post = 0;
        answer_dangling(t, ids);
        return;
    }
    cJSON_Delete(ids);
    const cJSON *first = cJSON_GetArrayItem(data, 0);
    rl_turn_ckpt_set(t, "after", rl_json_str(first, "id"));
    cJSON_Delete(j);
    cJSON_DeleteItemFromObjectCaseSensitive(t->ckpt, "v");
    cJSON_AddNumberToObject(t->ckpt, "v", 1);
    t->send_from = 0;
    t->posting_outputs = 0;
    r_post(t);
}

static void r_snapshot(rl_turn_t *t) {
    /* The newest items: the first is the snapshot; the ones up to the last
     * message show dangling function calls (see dangling_calls). */
    char *path = conv_path(t, DANGLING_LIST);
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, r_snapshot_done, NULL)) fail_nomem(t);
    free(path);
}

/* ---- 2. create ---- */

static void r_stream_event(rl_turn_t *t, const char *event, cJSON *data) {
    const char *type = rl_json_str(data, "type");
    if (!*type) type = event;
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(data, "response");
    if (strcmp(type, "response.created") == 0 || strcmp(type, "response.queued") == 0 ||
        strcmp(type, "response.in_progress") == 0) {
        note_response(t, resp);
    } else if (strcmp(type, "response.output_text.delta") == 0) {
        cJSON *j = rl_turn_event_json(t, ID_KEY);
        cJSON_AddStringToObject(j, "delta", rl_json_str(data, "delta"));
        rl_turn_emit(t, RUNLANE_EVENT_DELTA, j);
    } else if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.failed") == 0 ||
               strcmp(type, "response.incomplete") == 0 ||
               strcmp(type, "response.cancelled") == 0) {
        note_response(t, resp);
        cJSON_Delete(t->final);
        t->final = cJSON_Duplicate(resp, 1);
    } else if (strcmp(type, "error") == 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(data, "error");
        if (!e) e = data;
        free(t->stream_error);
        t->stream_error = rl_asprintf("response stream error %s: %s", rl_json_str(e, "code"),
                                      rl_json_str(e, "message"));
    }
}

static void r_post_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (res->ok) {
        cJSON *resp = t->final;
        t->final = NULL;
        if (!resp && !res->streamed && res->body_len) {
            resp = cJSON_ParseWithLength(res->body, res->body_len);
            if (resp) note_response(t, resp);
            if (t->state == RL_TS_DEAD) {
                cJSON_Delete(resp);
                return;
            }
        }
        if (resp && is_terminal(rl_json_str(resp, "status"))) {
            r_final(t, resp);
        } else if (t->stream_error) {
            fail_with(t, t->stream_error, 1);
        } else if (t->turn_id[0]) {
            rl_turn_timer(t, poll_delay(res, 200), r_poll);
        } else {
            /* Nothing usable came back: find out what the server did, after
             * a backoff; it counts (a server that always answers so must
             * not be sent the same create forever). */
            unusable(t, "POST", "/responses",
                     res->streamed ? "HTTP 200 stream ended without a usable response object"
                                   : "HTTP 200 without a usable response object",
                     r_reconcile);
        }
        cJSON_Delete(resp);
        return;
    }
    if (res->status == 400 && strcmp(res->error_code, "conversation_locked") == 0) {
        /* Another response runs on the conversation: not ours (ours would
         * be checkpointed and adopted). Come back later, no attempt spent. */
        rl_turn_defer(t);
        return;
    }
    if (res->status == 400 && !t->posting_outputs && strstr(res->error, "No tool output found") &&
        t->dangling_rounds < DANGLING_MAX_ROUNDS) {
        /* Function calls of an earlier (dead) turn are pending in the
         * conversation: answer them, then create again. No attempt spent;
         * nothing of this create was taken (a 400 adds nothing). */
        r_dangling_list(t);
        return;
    }
    if (res->streamed || res->ambiguous) {
        /* The response may exist. With its id, follow it; otherwise look at
         * the conversation before sending anything again. */
        if (++t->create_failures > rl_http_max_retries(t->bk->http)) {
            fail_with(t, res->error, 1);
        } else if (t->turn_id[0]) {
            rl_turn_timer(t, 100, r_poll);
        } else {
            rl_turn_timer(t, res->retry_in_ms, r_reconcile);
        }
        return;
    }
    fail_with(t, res->error, res->retriable);
}

static void r_post(rl_turn_t *t) {
    rl_backend_t *bk = t->bk;
    /* busy.policy=interrupt: a new turn takes the messages that came. */
    if (!t->posting_outputs && !rl_turn_absorb_interrupt(t, r_post)) return;
    rl_turn_ckpt_set(t, "state", t->posting_outputs ? "posting_outputs" : "posting");
    if (!t->posting_outputs) rl_turn_ckpt_set(t, "response_id", NULL);
    if (!rl_turn_checkpoint(t, r_post)) return;
    /* A new response comes: forget the previous one. */
    t->turn_id[0] = '\0';
    cJSON_Delete(t->final);
    t->final = NULL;
    free(t->stream_error);
    t->stream_error = NULL;
    cJSON *b = cJSON_CreateObject();
    if (bk->model) cJSON_AddStringToObject(b, "model", bk->model);
    if (bk->prompt_id) {
        cJSON *p = cJSON_AddObjectToObject(b, "prompt");
        cJSON_AddStringToObject(p, "id", bk->prompt_id);
    }
    cJSON_AddStringToObject(b, "conversation", rl_turn_conv(t));
    cJSON *input = cJSON_CreateArray();
    int n = cJSON_GetArraySize(t->msgs);
    if (t->posting_outputs) {
        const cJSON *c;
        cJSON_ArrayForEach(c, t->calls) {
            const char *id = rl_json_str(c, "id");
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "type", "function_call_output");
            cJSON_AddStringToObject(it, "call_id", id);
            cJSON_AddStringToObject(it, "output", rl_json_str(t->outputs, id));
            cJSON_AddItemToArray(input, it);
        }
    } else {
        cJSON *texts = rl_turn_input_texts(t, t->send_from);
        const cJSON *s;
        cJSON_ArrayForEach(s, texts) {
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "type", "message");
            cJSON_AddStringToObject(it, "role", "user");
            cJSON_AddStringToObject(it, "content", s->valuestring);
            cJSON_AddItemToArray(input, it);
        }
        cJSON_Delete(texts);
    }
    int adds = cJSON_GetArraySize(input) > 0;
    if (adds) cJSON_AddItemToObject(b, "input", input);
    else cJSON_Delete(input);
    const char *ins = rl_turn_instructions(t);
    if (ins) cJSON_AddStringToObject(b, "instructions", ins);
    if (cJSON_GetArraySize(bk->tools) > 0)
        cJSON_AddItemToObject(b, "tools", cJSON_Duplicate(bk->tools, 1));
    cJSON_AddItemToObject(b, "metadata",
                          rl_turn_metadata(t, t->posting_outputs ? n : t->send_from));
    /* background: polling mode, and busy.policy=interrupt (cancellable,
     * streamed too when openai.stream is true). */
    if (creates_background(bk)) cJSON_AddBoolToObject(b, "background", 1);
    if (bk->stream) cJSON_AddBoolToObject(b, "stream", 1);
    /* A create that adds input goes out only with a safe lease margin
     * (else the batch is released; see rl_turn_lease_ok). One without
     * input only asks for a turn: at worst a second reply, no message
     * twice. */
    if (adds && !rl_turn_lease_ok(t)) {
        cJSON_Delete(b);
        return;
    }
    int flags = RL_HTTP_UNSAFE | (bk->stream ? RL_HTTP_STREAM : 0);
    int ok = adds ? rl_turn_request_guarded(t, "POST", "/responses", b, flags, r_post_done,
                                            r_stream_event)
                  : rl_turn_request(t, "POST", "/responses", b, flags, r_post_done,
                                    r_stream_event);
    cJSON_Delete(b);
    if (!ok) fail_nomem(t);
}

/* ---- polling ---- */

static void r_poll_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        if (res->status == 404) r_reconcile(t);
        else fail_with(t, res->error, res->retriable);
        return;
    }
    cJSON *resp = cJSON_ParseWithLength(res->body, res->body_len);
    const char *status = rl_json_str(resp, "status");
    if (!status_known(status)) {
        unusable(t, "GET", "/responses/{id}", "HTTP 200 without a known response status", r_poll);
    } else if (is_terminal(status)) {
        r_final(t, resp);
    } else {
        rl_turn_timer(t, poll_delay(res, 500), r_poll);
    }
    cJSON_Delete(resp);
}

static void r_poll(rl_turn_t *t) {
    char *id = rl_path_escape(t->turn_id);
    char *path = id ? rl_asprintf("/responses/%s", id) : NULL;
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, r_poll_done, NULL)) fail_nomem(t);
    free(id);
    free(path);
}

/* ---- the end of a response ---- */

static void r_final(rl_turn_t *t, const cJSON *resp) {
    note_response(t, resp);
    if (t->state == RL_TS_DEAD) return;
    const char *status = rl_json_str(resp, "status");
    rl_usage_add(t->usage, cJSON_GetObjectItemCaseSensitive(resp, "usage"));
    const cJSON *output = cJSON_GetObjectItemCaseSensitive(resp, "output");
    if (strcmp(status, "completed") == 0) {
        cJSON *calls = cJSON_CreateArray();
        rl_buf_t reply;
        rl_buf_init(&reply);
        const cJSON *it;
        cJSON_ArrayForEach(it, output) {
            const char *type = rl_json_str(it, "type");
            if (strcmp(type, "function_call") == 0) {
                cJSON *c = cJSON_CreateObject();
                cJSON_AddStringToObject(c, "id", rl_json_str(it, "call_id"));
                cJSON_AddStringToObject(c, "name", rl_json_str(it, "name"));
                cJSON_AddStringToObject(c, "arguments", rl_json_str(it, "arguments"));
                cJSON_AddItemToArray(calls, c);
            } else if (strcmp(type, "message") == 0) {
                if (reply.len) rl_buf_puts(&reply, "\n");
                message_text(it, &reply);
            }
        }
        rl_buf_puts(&reply, "");
        if (cJSON_GetArraySize(calls) > 0) {
            rl_buf_free(&reply);
            cJSON_Delete(t->calls);
            t->calls = calls;
            if (t->interrupting) {
                answer_calls_then(t, "{\"error\":\"interrupted: new user messages arrived\"}",
                                  r_restart_done);
                return;
            }
            rl_turn_ckpt_set(t, "state", "tool_calls");
            if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
            rl_turn_raise_tools(t, ID_KEY, r_tools_timeout);
            return;
        }
        cJSON_Delete(calls);
        complete(t, reply.data ? reply.data : "", 0);
        rl_buf_free(&reply);
        return;
    }
    if (strcmp(status, "cancelled") == 0 && t->interrupting) {
        /* Cancelled for busy.policy=interrupt: again, with everything. */
        r_reconcile(t);
        return;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(resp, "error");
    char *msg;
    if (strcmp(status, "incomplete") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(resp, "incomplete_details");
        msg = rl_asprintf("response %s incomplete: %s", t->turn_id, rl_json_str(d, "reason"));
    } else {
        msg = rl_asprintf("response %s %s: %s: %s", t->turn_id, status, rl_json_str(err, "code"),
                          rl_json_str(err, "message"));
    }
    fail_with(t, msg ? msg : status, strcmp(status, "incomplete") != 0);
    free(msg);
}

/* ---- tool calls ---- */

static void r_tool_outputs(rl_backend_t *bk, rl_inflight_t *f, const char *outputs_json) {
    (void)bk;
    rl_turn_t *t = f->turn;
    if (!t) return;
    if (!rl_turn_take_outputs(t, outputs_json)) return; /* more to come */
    t->state = RL_TS_BUSY;
    t->timer_fn = NULL;
    t->posting_outputs = 1;
    r_post(t);
}

static void r_cancel_done(rl_turn_t *t, const rl_http_result_t *res) {
    char *msg = rl_asprintf("tool outputs were not submitted within %lld ms: the turn was "
                            "cancelled%s%s",
                            (long long)t->bk->tool_timeout_ms,
                            res->ok ? "" : " (answering the calls failed: ",
                            res->ok ? "" : res->error);
    fail_with(t, msg ? msg : "tool timeout", 0);
    free(msg);
}

/* After the placeholder answers of an interrupt: restart from what the
 * conversation holds (the create absorbs the new messages). */
static void r_restart_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        /* The conversation did not take the answers (a server without the
         * items endpoint answers 404): back off and look again, bounded. */
        char *msg = rl_asprintf("busy.policy=interrupt: answering the pending tool calls failed: %s",
                                res->error);
        rl_turn_unusable(t, msg ? msg : res->error, r_reconcile);
        free(msg);
        return;
    }
    r_reconcile(t);
}

/* Answers every pending call with `output` in the conversation itself
 * (POST /conversations/{c}/items: no response is asked for), so the
 * conversation can take new messages; then done(t, res). */
static void answer_calls_then(rl_turn_t *t, const char *output, rl_turn_done_fn done) {
    t->state = RL_TS_BUSY;
    t->timer_fn = NULL;
    rl_turn_fill_missing_outputs(t, output);
    cJSON *b = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(b, "items");
    const cJSON *c;
    cJSON_ArrayForEach(c, t->calls) {
        const char *id = rl_json_str(c, "id");
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "type", "function_call_output");
        cJSON_AddStringToObject(it, "call_id", id);
        cJSON_AddStringToObject(it, "output", rl_json_str(t->outputs, id));
        cJSON_AddItemToArray(items, it);
    }
    if (!rl_turn_lease_ok(t)) {
        cJSON_Delete(b);
        return;
    }
    char *path = conv_path(t, "/items");
    int ok = path && rl_turn_request_guarded(t, "POST", path, b, RL_HTTP_UNSAFE, done, NULL);
    free(path);
    cJSON_Delete(b);
    if (!ok) fail_nomem(t);
}

static void r_tools_timeout(rl_turn_t *t) {
    if (t->state != RL_TS_WAIT_TOOLS) return;
    t->state = RL_TS_BUSY;
    if (!t->bk->tool_cancel) {
        rl_turn_fill_missing_outputs(
            t, "{\"error\":\"tool call timed out: no output within tool.timeout.ms\"}");
        t->posting_outputs = 1;
        r_post(t);
        return;
    }
    /* Cancel: answer the calls in the conversation (without asking for a
     * response), so that it can take new messages, then fail the batch. */
    answer_calls_then(t, "{\"error\":\"cancelled: no output within tool.timeout.ms\"}",
                      r_cancel_done);
}

/* ---- reconciliation ---- */

static void r_recover_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        if (res->status == 404) r_reconcile(t);
        else rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->retriable);
        return;
    }
    cJSON *resp = cJSON_ParseWithLength(res->body, res->body_len);
    const char *status = rl_json_str(resp, "status");
    const char *state = rl_turn_ckpt_get(t, "state");
    if (!state) state = "";
    if (!*rl_json_str(resp, "id") || !status_known(status)) {
        cJSON_Delete(resp);
        unusable(t, "GET", "/responses/{id}", "HTTP 200 without a response id and known status",
                 r_recover);
        return;
    }
    rl_strlcpy(t->turn_id, rl_json_str(resp, "id"), sizeof(t->turn_id));
    if (!is_terminal(status)) {
        /* Still running: adopt it. */
        rl_turn_emit_started(t, ID_KEY, 1);
        rl_turn_timer(t, poll_delay(res, 200), r_poll);
    } else if (strcmp(state, "posting_outputs") == 0 || strcmp(state, "failed") == 0) {
        /* Outputs may have been posted, or a failed turn is retried: the
         * conversation says what is there. */
        r_reconcile(t);
    } else {
        /* Completed: its calls (never answered) or its reply. Failed while
         * its owner ran: this attempt fails. */
        r_final(t, resp);
    }
    cJSON_Delete(resp);
}

static void r_recover(rl_turn_t *t) {
    char *id = rl_path_escape(rl_turn_ckpt_get(t, "response_id"));
    char *path = id ? rl_asprintf("/responses/%s", id) : NULL;
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, r_recover_done, NULL)) fail_nomem(t);
    free(id);
    free(path);
}

/* Decides from the items added since the snapshot. */
static void r_analyze(rl_turn_t *t) {
    int n = cJSON_GetArraySize(t->msgs), matched = 0;
    cJSON *calls = cJSON_CreateArray();
    cJSON *answered = cJSON_CreateObject();
    rl_buf_t reply;
    rl_buf_init(&reply);
    const cJSON *it;
    cJSON_ArrayForEach(it, t->scratch) {
        const char *type = rl_json_str(it, "type");
        if (!*type) type = "message";
        if (strcmp(type, "message") == 0) {
            const char *role = rl_json_str(it, "role");
            rl_buf_t txt;
            rl_buf_init(&txt);
            message_text(it, &txt);
            rl_buf_puts(&txt, "");
            if (strcmp(role, "user") == 0) {
                /* The next of our messages (items), or the next ones joined
                 * (joined: one create sent messages [matched, b)). */
                int top = t->bk->joined ? n : (matched < n ? matched + 1 : n);
                for (int b = top; b > matched; b--) {
                    char *want = rl_turn_join(t, matched, b);
                    int same = want && strcmp(want, txt.data) == 0;
                    free(want);
                    if (same) {
                        matched = b;
                        break;
                    }
                }
            } else if (strcmp(role, "assistant") == 0 && matched == n) {
                if (reply.len) rl_buf_puts(&reply, "\n");
                rl_buf_puts(&reply, txt.data);
            }
            rl_buf_free(&txt);
        } else if (matched == n && strcmp(type, "function_call") == 0) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", rl_json_str(it, "call_id"));
            cJSON_AddStringToObject(c, "name", rl_json_str(it, "name"));
            cJSON_AddStringToObject(c, "arguments", rl_json_str(it, "arguments"));
            cJSON_AddItemToArray(calls, c);
            rl_buf_free(&reply);
        } else if (matched == n && strcmp(type, "function_call_output") == 0) {
            cJSON_AddTrueToObject(answered, rl_json_str(it, "call_id"));
            rl_buf_free(&reply);
        }
    }
    cJSON_Delete(t->scratch);
    t->scratch = NULL;
    cJSON *pending = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        if (!cJSON_GetObjectItemCaseSensitive(answered, rl_json_str(c, "id")))
            cJSON_AddItemToArray(pending, cJSON_Duplicate(c, 1));
    }
    cJSON_Delete(calls);
    cJSON_Delete(answered);
    if (matched < n || (cJSON_GetArraySize(pending) == 0 && reply.len == 0)) {
        /* Send what is missing (maybe nothing: then only ask for the turn). */
        cJSON_Delete(pending);
        rl_buf_free(&reply);
        t->send_from = matched;
        t->posting_outputs = 0;
        r_post(t);
        return;
    }
    if (cJSON_GetArraySize(pending) > 0) {
        rl_buf_free(&reply);
        cJSON_Delete(t->calls);
        t->calls = pending;
        if (t->interrupting) {
            answer_calls_then(t, "{\"error\":\"interrupted: new user messages arrived\"}",
                              r_restart_done);
            return;
        }
        rl_turn_ckpt_set(t, "state", "tool_calls");
        if (!rl_turn_checkpoint(t, NULL) && t->state == RL_TS_DEAD) return;
        rl_turn_raise_tools(t, ID_KEY, r_tools_timeout);
        return;
    }
    cJSON_Delete(pending);
    rl_buf_puts(&reply, "");
    complete(t, reply.data, 1);
    rl_buf_free(&reply);
}

static void r_items_done(rl_turn_t *t, const rl_http_result_t *res) {
    if (!res->ok) {
        rl_turn_fail(t, res->err ? res->err : RUNLANE_ERR_PROVIDER, res->error, res->status == 404 ? 0 : 1);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(res->body, res->body_len);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!cJSON_IsArray(data)) {
        cJSON_Delete(j);
        t->cursor[0] = '\0';
        unusable(t, "GET", "/conversations/{id}/items", "HTTP 200 without an item list",
                 r_reconcile);
        return;
    }
    if (!t->scratch) t->listed_bytes = 0;
    if (!rl_turn_listed(t, res->body_len, "GET /conversations/{id}/items")) {
        cJSON_Delete(j);
        return;
    }
    if (!t->scratch) t->scratch = cJSON_CreateArray();
    cJSON *it;
    while (cJSON_IsArray(data) && (it = cJSON_DetachItemFromArray(data, 0)) != NULL)
        cJSON_AddItemToArray(t->scratch, it);
    int more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "has_more"));
    rl_strlcpy(t->cursor, rl_json_str(j, "last_id"), sizeof(t->cursor));
    cJSON_Delete(j);
    if (more && t->cursor[0] && ++t->pages < 50) {
        r_reconcile(t);
        return;
    }
    /* The cursor only serves the paging of this listing: a later reconcile
     * of the same attempt (after an ambiguous create, say) must list again
     * from the checkpointed snapshot, not from this listing's last item
     * (it would not see the batch's messages and would post them again). */
    t->cursor[0] = '\0';
    t->pages = 0;
    r_analyze(t);
}

static void r_reconcile(rl_turn_t *t) {
    const char *after = t->cursor[0] ? t->cursor : rl_turn_ckpt_get(t, "after");
    if (!t->cursor[0]) {
        cJSON_Delete(t->scratch);
        t->scratch = NULL;
        t->pages = 0;
    }
    char *a = rl_path_escape(after ? after : "");
    char *suffix = a ? rl_asprintf("/items?order=asc&limit=100%s%s", *a ? "&after=" : "", a) : NULL;
    char *path = suffix ? conv_path(t, suffix) : NULL;
    t->cursor[0] = '\0';
    if (!path || !rl_turn_request(t, "GET", path, NULL, 0, r_items_done, NULL)) fail_nomem(t);
    free(a);
    free(suffix);
    free(path);
}

/* ---- ops ---- */

/* busy.policy=interrupt: new messages came while the turn runs. Waiting
 * for tools: the calls get a placeholder answer in the conversation and the
 * turn restarts with everything. A running response (always a background
 * one under this policy, streamed or polled) is cancelled; once it is
 * cancelled (its stream ends or a poll sees "cancelled"), the turn restarts
 * from what the conversation holds, with everything. A response that
 * completes before the cancel takes just completes (the new messages make
 * the next batch), unless it asks for tools: those get a placeholder answer
 * and the turn restarts. Before a create is sent, the create takes the new
 * messages. */
static void r_interrupt(rl_backend_t *bk, rl_inflight_t *f) {
    (void)bk;
    rl_turn_t *t = f->turn;
    if (!t || t->state == RL_TS_DEAD || t->state == RL_TS_SETTLING) return;
    t->interrupting = 1;
    if (t->state == RL_TS_WAIT_TOOLS) {
        answer_calls_then(t, "{\"error\":\"interrupted: new user messages arrived\"}",
                          r_restart_done);
        return;
    }
    cancel_response(t);
}

static void r_abandon(rl_backend_t *bk, rl_inflight_t *f) {
    (void)bk;
    if (f->turn) rl_turn_abandon(f->turn);
}

static rl_backend_t *r_create(runlane_t *rl);
static int64_t r_drive(rl_backend_t *bk) { return rl_bk_drive(bk); }
static void r_destroy(rl_backend_t *bk) { rl_bk_free(bk); }

const rl_backend_ops_t rl_backend_responses = {
    "responses", r_create,      r_start, r_drive, r_tool_outputs,
    r_interrupt, r_abandon,     r_destroy,
};

static rl_backend_t *r_create(runlane_t *rl) { return rl_bk_new(rl, &rl_backend_responses, 0); }
