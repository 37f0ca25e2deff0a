/*
 * rlbk.h - helpers of the HTTP backend tests: a client on the emulator
 * with a private memory store, an event collector, and tool outputs
 * submitted from another thread. Every event seen is also kept in
 * rlbk_all_events so a test can scan them (e.g. for the API key).
 */
#ifndef RLBK_H
#define RLBK_H

#include <pthread.h>

#include "rlemu.h"
#include "rltest.h"

#include "internal.h"
#include "runlane.h"
#include "store.h"

#define RLBK_API_KEY "sk-rlbk-SECRET-7d1e5c9a0b42f"

static rlemu_t rlbk_emu;
static int rlbk_have_emu;
static rl_buf_t rlbk_all_events; /* every event JSON and error message */
static int rlbk_store_seq;

typedef struct rlbk_ev {
    runlane_event_type_t type;
    char *json;
    char *err;
    char batch_id[RUNLANE_ID_MAX];
    int attempt;
    cJSON *j;
} rlbk_ev_t;

typedef struct rlbk {
    runlane_t *rl;
    char store[64];
    rlbk_ev_t *ev;
    int nev, cap;
} rlbk_t;

/* A client with backend `backend` on the emulator and a private memory
 * store; kv: extra "key","value" pairs, NULL-terminated. Not started. */
static inline void rlbk_new(rlbk_t *c, const char *backend, const char *const *kv) {
    memset(c, 0, sizeof(*c));
    snprintf(c->store, sizeof(c->store), "memory://rlbk%d_%d", (int)getpid(), ++rlbk_store_seq);
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    const char *base[] = {"backend", backend,
                          "store", c->store,
                          "openai.base.url", rlbk_emu.base_url,
                          "openai.api.key", RLBK_API_KEY,
                          "openai.model", "gpt-4o",
                          "openai.assistant.id", "asst_test",
                          "batch.window.ms", "20",
                          "batch.max.wait.ms", "200",
                          "backoff.base.ms", "50",
                          "backoff.max.ms", "200",
                          "http.retry.base.ms", "20",
                          "http.retry.max.ms", "100",
                          "worker.poll.ms", "50",
                          "lease.ms", "5000",
                          NULL};
    for (int i = 0; base[i]; i += 2)
        if (runlane_conf_set(conf, base[i], base[i + 1], err, sizeof(err)))
            RL_FAILF("conf %s: %s", base[i], err);
    for (int i = 0; kv && kv[i]; i += 2)
        if (runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)))
            RL_FAILF("conf %s: %s", kv[i], err);
    c->rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    if (!c->rl) RL_FAILF("runlane_new: %s", err);
}

/* A second client on the same store (another "process"). */
static inline void rlbk_new_same_store(rlbk_t *c, const rlbk_t *other, const char *backend,
                                       const char *const *kv) {
    const char *pairs[40];
    int n = 0;
    pairs[n++] = "store";
    pairs[n++] = other->store;
    for (int i = 0; kv && kv[i] && n < 38; i++) pairs[n++] = kv[i];
    pairs[n] = NULL;
    rlbk_new(c, backend, pairs);
    snprintf(c->store, sizeof(c->store), "%s", other->store);
}

static inline void rlbk_free(rlbk_t *c) {
    if (c->rl) runlane_destroy(c->rl);
    for (int i = 0; i < c->nev; i++) {
        free(c->ev[i].json);
        free(c->ev[i].err);
        cJSON_Delete(c->ev[i].j);
    }
    free(c->ev);
    memset(c, 0, sizeof(*c));
}

static inline void rlbk_take(rlbk_t *c, runlane_event_t *e) {
    if (c->nev == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->ev = realloc(c->ev, (size_t)c->cap * sizeof(*c->ev));
    }
    rlbk_ev_t *x = &c->ev[c->nev++];
    x->type = runlane_event_type(e);
    x->json = strdup(runlane_event_json(e));
    x->err = strdup(runlane_event_error_message(e));
    snprintf(x->batch_id, sizeof(x->batch_id), "%s", runlane_event_batch_id(e));
    x->attempt = runlane_event_attempt(e);
    x->j = cJSON_Parse(x->json);
    rl_buf_puts(&rlbk_all_events, x->json);
    rl_buf_puts(&rlbk_all_events, "\n");
    rl_buf_puts(&rlbk_all_events, x->err);
    rl_buf_puts(&rlbk_all_events, "\n");
    if (getenv("RLBK_VERBOSE"))
        fprintf(stderr, "    event %s %s %s\n", runlane_event_type_name(x->type), x->json, x->err);
    runlane_event_destroy(e);
}

static inline int rlbk_count(const rlbk_t *c, runlane_event_type_t type) {
    int n = 0;
    for (int i = 0; i < c->nev; i++) n += c->ev[i].type == type;
    return n;
}

/* The k-th (0-based) event of `type`, or NULL. */
static inline rlbk_ev_t *rlbk_nth(rlbk_t *c, runlane_event_type_t type, int k) {
    for (int i = 0; i < c->nev; i++)
        if (c->ev[i].type == type && k-- == 0) return &c->ev[i];
    return NULL;
}

/* Polls until `n` events of `type` were seen; fails the test after
 * timeout_ms. Returns the n-th. */
static inline rlbk_ev_t *rlbk_wait(rlbk_t *c, runlane_event_type_t type, int n, int timeout_ms) {
    int64_t t0 = rl_mono_ms();
    while (rlbk_count(c, type) < n) {
        int64_t left = timeout_ms - (rl_mono_ms() - t0);
        if (left <= 0) {
            fprintf(stderr, "  events so far:\n");
            for (int i = 0; i < c->nev; i++)
                fprintf(stderr, "    %s %s %s\n", runlane_event_type_name(c->ev[i].type),
                        c->ev[i].json, c->ev[i].err);
            RL_FAILF("timed out waiting for %d %s event(s); saw %d", n,
                     runlane_event_type_name(type), rlbk_count(c, type));
        }
        runlane_event_t *e = runlane_poll(c->rl, (int)(left < 200 ? left : 200));
        if (e) rlbk_take(c, e);
    }
    return rlbk_nth(c, type, n - 1);
}

/* Drains events for ms milliseconds. */
static inline void rlbk_drain(rlbk_t *c, int ms) {
    int64_t t0 = rl_mono_ms();
    while (rl_mono_ms() - t0 < ms) {
        runlane_event_t *e = runlane_poll(c->rl, 50);
        if (e) rlbk_take(c, e);
    }
}

static inline void rlbk_enqueue(rlbk_t *c, const char *conv, const char *text, char *id_out) {
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, c->rl, conv, text, NULL));
    if (id_out) snprintf(id_out, RUNLANE_ID_MAX, "%s", id);
}

/* Submits tool outputs from another thread, as a host's handler would. */
typedef struct {
    runlane_t *rl;
    char batch_id[RUNLANE_ID_MAX];
    char *outputs;
    int rc;
} rlbk_submit_t;

static inline void *rlbk_submit_main(void *arg) {
    rlbk_submit_t *s = arg;
    s->rc = runlane_submit_tool_outputs(s->rl, s->batch_id, s->outputs);
    return NULL;
}

static inline int rlbk_submit_from_thread(runlane_t *rl, const char *batch_id,
                                          const char *outputs_json) {
    rlbk_submit_t s;
    s.rl = rl;
    snprintf(s.batch_id, sizeof(s.batch_id), "%s", batch_id);
    s.outputs = strdup(outputs_json);
    s.rc = -100;
    pthread_t th;
    pthread_create(&th, NULL, rlbk_submit_main, &s);
    pthread_join(th, NULL);
    free(s.outputs);
    return s.rc;
}

/* Outputs answering every call of a TOOL_CALLS event with
 * "<name>=<fmt applied to the call index>" style text: here "ok-<name>". */
static inline char *rlbk_outputs_for(const rlbk_ev_t *tc, const char *output_or_null) {
    cJSON *out = cJSON_CreateArray();
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(tc->j, "tool_calls")) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tool_call_id",
                                cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring);
        char buf[256];
        if (output_or_null) snprintf(buf, sizeof(buf), "%s", output_or_null);
        else snprintf(buf, sizeof(buf), "ok-%s",
                      cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring);
        cJSON_AddStringToObject(o, "output", buf);
        cJSON_AddItemToArray(out, o);
    }
    char *s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return s;
}

static inline const char *rlbk_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static inline void rlbk_need_emu(void) {
    if (!rlbk_have_emu) RL_SKIP("python3 or tests/emulator/emulator.py not available");
    rlemu_control(&rlbk_emu, "POST", "/_emulator/reset", "{}");
}

/* A conversation ("/v1/conversations") or thread ("/v1/threads") created
 * in the emulator (free it). */
static inline char *rlbk_new_lane(const char *create_path) {
    char *id = rlemu_create(&rlbk_emu, create_path, NULL);
    if (!id) RL_FAILF("could not create %s in the emulator", create_path);
    return id;
}

/* The journal's messages of a conversation or thread joined with '|' (free
 * it); its turns, duplicates and rejected overlapping attempts when asked. */
static inline char *rlbk_journal_messages(const char *lane, int *turns, int *duplicates,
                                          int *rejected) {
    cJSON *j = rlemu_journal(&rlbk_emu);
    cJSON *c = rlemu_journal_conv(j, lane);
    if (!c) RL_FAILF("no journal entry for %s", lane);
    rl_buf_t b;
    rl_buf_init(&b);
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(c, "messages")) {
        if (b.len) rl_buf_puts(&b, "|");
        rl_buf_puts(&b, m->valuestring);
    }
    rl_buf_puts(&b, "");
    if (turns) *turns = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "turns"));
    if (duplicates) *duplicates = cJSON_GetObjectItemCaseSensitive(c, "duplicates")->valueint;
    if (rejected) *rejected = cJSON_GetObjectItemCaseSensitive(c, "rejected")->valueint;
    cJSON_Delete(j);
    return rl_buf_take(&b);
}

/* The id of the first call of a TOOL_CALLS event ("" when none). */
static inline const char *rlbk_first_call_id(const rlbk_ev_t *tc) {
    return rlbk_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(tc->j, "tool_calls"), 0),
                    "id");
}

/* A worker crashes (stops releasing) while the turn for `text` runs at the
 * provider: the next worker adopts that turn (RUN_STARTED "adopted") and
 * completes it: an echo of `text`, one turn, every message once. */
static inline void rlbk_check_adopts_running_turn_after_crash(const char *backend,
                                                             const char *lane, const char *text,
                                                             int timeout_ms) {
    rlbk_t a, b;
    rlbk_new(&a, backend, NULL);
    rlbk_enqueue(&a, lane, text, NULL);
    RL_CHECK_OK(runlane_start(a.rl));
    rlbk_wait(&a, RUNLANE_EVENT_RUN_STARTED, 1, timeout_ms);
    RL_CHECK_OK(runlane_stop(a.rl, RUNLANE_STOP_RELEASE, 0));
    rlbk_new_same_store(&b, &a, backend, NULL);
    RL_CHECK_OK(runlane_start(b.rl));
    rlbk_ev_t *started = rlbk_wait(&b, RUNLANE_EVENT_RUN_STARTED, 1, timeout_ms);
    RL_CHECK(started && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(started->j, "adopted")));
    rlbk_ev_t *done = rlbk_wait(&b, RUNLANE_EVENT_COMPLETED, 1, timeout_ms);
    char want[512];
    snprintf(want, sizeof(want), "echo: %s", text);
    RL_CHECK_STR(want, rlbk_str(done->j, "reply"));
    int turns = 0, dups = 0;
    free(rlbk_journal_messages(lane, &turns, &dups, NULL));
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    rlbk_free(&b);
    rlbk_free(&a);
}

/* A worker crashes (stops releasing) while its turn waits for tool outputs
 * of `marker` ("[[tool:NAME]]"): the next worker adopts the turn and raises
 * the same call again; its outputs complete it with `expect_in_reply` in
 * the reply, every message once, `expect_turns` turns in the journal. */
static inline void rlbk_check_tool_calls_raised_again_after_crash(const char *backend,
                                                                 const char *lane,
                                                                 const char *marker,
                                                                 const char *expect_in_reply,
                                                                 int expect_turns, int timeout_ms) {
    rlbk_t a, b;
    rlbk_new(&a, backend, NULL);
    rlbk_enqueue(&a, lane, marker, NULL);
    RL_CHECK_OK(runlane_start(a.rl));
    rlbk_ev_t *tc1 = rlbk_wait(&a, RUNLANE_EVENT_TOOL_CALLS, 1, timeout_ms);
    char call[128];
    snprintf(call, sizeof(call), "%s", rlbk_first_call_id(tc1));
    RL_CHECK_OK(runlane_stop(a.rl, RUNLANE_STOP_RELEASE, 0));
    rlbk_new_same_store(&b, &a, backend, NULL);
    RL_CHECK_OK(runlane_start(b.rl));
    rlbk_ev_t *tc2 = rlbk_wait(&b, RUNLANE_EVENT_TOOL_CALLS, 1, timeout_ms);
    RL_CHECK_STR(call, rlbk_first_call_id(tc2));
    char *outs = rlbk_outputs_for(tc2, NULL);
    RL_CHECK_OK(rlbk_submit_from_thread(b.rl, tc2->batch_id, outs));
    free(outs);
    rlbk_ev_t *done = rlbk_wait(&b, RUNLANE_EVENT_COMPLETED, 1, timeout_ms);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), expect_in_reply) != NULL);
    int turns = 0, dups = 0;
    free(rlbk_journal_messages(lane, &turns, &dups, NULL));
    RL_CHECK_INT(expect_turns, turns);
    RL_CHECK_INT(0, dups);
    rlbk_free(&b);
    rlbk_free(&a);
}

/* The store of a test client (its memory store's URL), opened raw with
 * the client's defaults (prefix "runlane", one partition). */
static inline rl_store_t *rlbk_store_open(const char *store_url) {
    rl_store_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = store_url;
    o.prefix = "runlane";
    o.partitions = 1;
    rl_store_t *st = rl_store_open(&o);
    RL_CHECK(st != NULL);
    return st;
}

/* The bodies of the requests the emulator received with method and path,
 * in order (a new JSON array). */
static inline cJSON *rlbk_bodies(const char *method, const char *path) {
    cJSON *reqs = rlemu_requests(&rlbk_emu, 2000);
    cJSON *out = cJSON_CreateArray();
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) {
        if (strcmp(rlbk_str(r, "method"), method) == 0 && strcmp(rlbk_str(r, "path"), path) == 0)
            cJSON_AddItemToArray(out,
                                 cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(r, "body"), 1));
    }
    cJSON_Delete(reqs);
    return out;
}

/* Conversation keys (issue 12): the key "chat-42" gets one provider
 * conversation (thread) created on its first turn and used by every later
 * turn; a provider id is used as it is; map_set imports, map_forget forgets.
 * `create_path`: "/v1/conversations" or "/v1/threads"; `prefix`: "conv_" or
 * "thread_". */
static inline int rlbk_count_bodies(const char *method, const char *path) {
    cJSON *b = rlbk_bodies(method, path);
    int n = cJSON_GetArraySize(b);
    cJSON_Delete(b);
    return n;
}

static inline void rlbk_check_key_flow(const char *backend, const char *create_path,
                                       const char *prefix) {
    rlbk_need_emu();
    rlbk_t c;
    rlbk_new(&c, backend, NULL);
    char *mapped = (char *)"x";
    RL_CHECK_OK(runlane_conversation_map_get(&mapped, c.rl, "chat-42"));
    RL_CHECK(mapped == NULL);
    rlbk_enqueue(&c, "chat-42", "first", NULL);
    rlbk_enqueue(&c, "chat-42", "second", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, (int)(30000 * rl_test_time_scale()));
    RL_CHECK_STR("chat-42", rlbk_str(done->j, "conversation_id"));
    RL_CHECK_STR("echo: first\nsecond", rlbk_str(done->j, "reply"));
    RL_CHECK_OK(runlane_conversation_map_get(&mapped, c.rl, "chat-42"));
    RL_CHECK(mapped && strncmp(mapped, prefix, strlen(prefix)) == 0);
    cJSON *creates = rlbk_bodies("POST", create_path);
    RL_CHECK_INT(1, cJSON_GetArraySize(creates));
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(creates, 0), "metadata");
    RL_CHECK_STR("chat-42", rlbk_str(md, "runlane_key"));
    RL_CHECK_STR(done->batch_id, rlbk_str(md, "runlane_batch_id"));
    cJSON_Delete(creates);
    /* a later turn uses the same conversation */
    rlbk_enqueue(&c, "chat-42", "third", NULL);
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 2, (int)(30000 * rl_test_time_scale()));
    RL_CHECK_INT(1, rlbk_count_bodies("POST", create_path));
    char *msgs = rlbk_journal_messages(mapped, NULL, NULL, NULL);
    RL_CHECK_STR("first|second|third", msgs);
    free(msgs);
    /* a provider id is used as it is: nothing created, nothing mapped */
    char *lane = rlbk_new_lane(create_path);
    int creates_before = rlbk_count_bodies("POST", create_path);
    rlbk_enqueue(&c, lane, "direct", NULL);
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 3, (int)(30000 * rl_test_time_scale()));
    RL_CHECK_INT(creates_before, rlbk_count_bodies("POST", create_path));
    char *none = (char *)"x";
    RL_CHECK_OK(runlane_conversation_map_get(&none, c.rl, lane));
    RL_CHECK(none == NULL);
    /* import: a key mapped to an existing conversation */
    char *lane2 = rlbk_new_lane(create_path);
    RL_CHECK_OK(runlane_conversation_map_set(c.rl, "+15551234567", lane2));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_conversation_map_set(c.rl, "k", ""));
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_conversation_map_set(c.rl, "", lane2));
    rlbk_enqueue(&c, "+15551234567", "imported", NULL);
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 4, (int)(30000 * rl_test_time_scale()));
    msgs = rlbk_journal_messages(lane2, NULL, NULL, NULL);
    RL_CHECK_STR("imported", msgs);
    free(msgs);
    /* forget: the next turn creates a new conversation */
    RL_CHECK_OK(runlane_conversation_map_forget(c.rl, "chat-42"));
    RL_CHECK_OK(runlane_conversation_map_forget(c.rl, "chat-42"));
    RL_CHECK_OK(runlane_conversation_map_get(&none, c.rl, "chat-42"));
    RL_CHECK(none == NULL);
    rlbk_enqueue(&c, "chat-42", "again", NULL);
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 5, (int)(30000 * rl_test_time_scale()));
    char *mapped2 = NULL;
    RL_CHECK_OK(runlane_conversation_map_get(&mapped2, c.rl, "chat-42"));
    RL_CHECK(mapped2 && strcmp(mapped2, mapped) != 0);
    msgs = rlbk_journal_messages(mapped2, NULL, NULL, NULL);
    RL_CHECK_STR("again", msgs);
    free(msgs);
    runlane_free(mapped);
    runlane_free(mapped2);
    free(lane);
    free(lane2);
    rlbk_free(&c);
}

/* Claims the batch of `conv` in the store, records `ckpt` on it and gives
 * the lease back: what a worker that crashed after a create leaves. */
static inline void rlbk_plant_checkpoint(const char *store_url, const char *ckpt, char *batch_out) {
    rl_store_t *st = rlbk_store_open(store_url);
    rl_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    pol.window_ms = 0;
    pol.max_messages = 100;
    pol.max_bytes = 1 << 20;
    pol.lease_ms = 5000;
    pol.max_attempts = 5;
    rl_claim_t *claims = NULL;
    int n = 0;
    for (int i = 0; i < 50 && n == 0; i++) {
        st->ops->claim(st, &pol, "crashed-worker", 1, &claims, &n);
        if (n == 0) usleep(20000);
    }
    RL_CHECK_INT(1, n);
    if (batch_out) snprintf(batch_out, RUNLANE_ID_MAX, "%s", claims[0].batch_id);
    RL_CHECK_OK(st->ops->checkpoint(st, claims[0].conversation_id, claims[0].token, ckpt));
    RL_CHECK_OK(st->ops->release(st, &pol, claims[0].conversation_id, claims[0].token));
    rl_claim_free(&claims[0]);
    free(claims);
    st->ops->destroy(st);
}

/* The batch of the store's one due conversation is claimed by a worker
 * that dies holding it: its lease expires and, with no stall budget left
 * (max.stalls 0), recovery dead-letters it, checkpoint and all. */
static inline void rlbk_dead_letter_by_stall(const char *store_url) {
    rl_store_t *st = rlbk_store_open(store_url);
    rl_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    pol.max_messages = 100;
    pol.max_bytes = 1 << 20;
    pol.lease_ms = 100;
    pol.max_attempts = 5;
    pol.max_stalls = 0;
    rl_claim_t *claims = NULL;
    int n = 0;
    for (int i = 0; i < 50 && n == 0; i++) {
        st->ops->claim(st, &pol, "dying-worker", 1, &claims, &n);
        if (n == 0) usleep(20000);
    }
    RL_CHECK_INT(1, n);
    rl_claim_free(&claims[0]);
    free(claims);
    usleep(300000);
    int rec = 0, dead = 0;
    RL_CHECK_OK(st->ops->recover(st, &pol, &rec, &dead));
    RL_CHECK_INT(1, dead);
    st->ops->destroy(st);
}

#endif
