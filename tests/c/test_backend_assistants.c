/* test_backend_assistants.c - the `assistants` backend end to end against
 * the OpenAI emulator: one run per batch with additional_messages in
 * order, streaming deltas, tool calls (single, parallel, error output,
 * timeouts), active runs of others (defer) and our own (adopt), failures
 * and dead letters, polling, reconciliation after a crash, rate.limit.rpm
 * through the queue's shared bucket, and the API key never leaking. */
#include "rlbk.h"

#define TIMEOUT 15000

static char *new_thread(void) { return rlbk_new_lane("/v1/threads"); }

static char *runs_path(const char *thread) {
    char *p = malloc(256);
    snprintf(p, 256, "/v1/threads/%s/runs", thread);
    return p;
}

static void test_assistants_batch_is_one_run_with_messages_in_order(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    const char *kv[] = {"openai.additional.instructions", "be nice", NULL};
    rlbk_new(&c, "assistants", kv);
    char ids[3][RUNLANE_ID_MAX];
    rlbk_enqueue(&c, th, "one", ids[0]);
    RL_CHECK_OK(runlane_enqueue(ids[1], RUNLANE_ID_MAX, NULL, c.rl, th, "two",
                                "{\"metadata\":{\"user\":\"u7\"}}"));
    rlbk_enqueue(&c, th, "three", ids[2]);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: one\ntwo\nthree", rlbk_str(done->j, "reply"));
    RL_CHECK(strncmp(rlbk_str(done->j, "run_id"), "run_", 4) == 0);
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(done->j, "usage"),
                                              "total_tokens") != NULL);
    RL_CHECK_INT(1, rlbk_count(&c, RUNLANE_EVENT_RUN_STARTED));
    rl_buf_t deltas;
    rl_buf_init(&deltas);
    for (int i = 0; i < c.nev; i++)
        if (c.ev[i].type == RUNLANE_EVENT_DELTA) rl_buf_puts(&deltas, rlbk_str(c.ev[i].j, "delta"));
    rl_buf_puts(&deltas, "");
    RL_CHECK_STR("echo: one\ntwo\nthree", deltas.data);
    rl_buf_free(&deltas);
    char *rp = runs_path(th);
    cJSON *bodies = rlbk_bodies("POST", rp);
    RL_CHECK_INT(1, cJSON_GetArraySize(bodies));
    const cJSON *b = cJSON_GetArrayItem(bodies, 0);
    RL_CHECK_STR("asst_test", rlbk_str(b, "assistant_id"));
    RL_CHECK_STR("be nice", rlbk_str(b, "additional_instructions"));
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(b, "additional_messages");
    RL_CHECK_INT(3, cJSON_GetArraySize(add));
    for (int i = 0; i < 3; i++) {
        const cJSON *m = cJSON_GetArrayItem(add, i);
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(m, "metadata");
        RL_CHECK_STR(ids[i], rlbk_str(md, "runlane_message_id"));
        RL_CHECK_STR(done->batch_id, rlbk_str(md, "runlane_batch_id"));
    }
    RL_CHECK_STR("two", rlbk_str(cJSON_GetArrayItem(add, 1), "content"));
    RL_CHECK_STR("u7", rlbk_str(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(add, 1),
                                                                  "metadata"),
                                "user"));
    RL_CHECK_STR(done->batch_id,
                 rlbk_str(cJSON_GetObjectItemCaseSensitive(b, "metadata"), "runlane_batch_id"));
    cJSON_Delete(bodies);
    free(rp);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, &turns, &dups, NULL);
    RL_CHECK_STR("one|two|three", msgs);
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_tool_calls_single_and_parallel(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    rlbk_enqueue(&c, th, "[[tool:alpha {\"x\":1}]] [[tool:beta]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(tc->j, "tool_calls");
    RL_CHECK_INT(2, cJSON_GetArraySize(calls));
    RL_CHECK_STR("alpha", rlbk_str(cJSON_GetArrayItem(calls, 0), "name"));
    RL_CHECK_STR("{\"x\":1}", rlbk_str(cJSON_GetArrayItem(calls, 0), "arguments"));
    RL_CHECK(strncmp(rlbk_str(tc->j, "run_id"), "run_", 4) == 0);
    /* One handler succeeds, the other reports an error as its output. */
    char outs[512];
    snprintf(outs, sizeof(outs),
             "[{\"tool_call_id\":\"%s\",\"output\":\"A\"},{\"tool_call_id\":\"%s\","
             "\"output\":\"{\\\"error\\\":\\\"nope\\\"}\"}]",
             rlbk_str(cJSON_GetArrayItem(calls, 0), "id"),
             rlbk_str(cJSON_GetArrayItem(calls, 1), "id"));
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, tc->batch_id, outs));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    const char *reply = rlbk_str(done->j, "reply");
    RL_CHECK_MSG(strstr(reply, "alpha=A") && strstr(reply, "beta={\"error\":\"nope\"}"), "reply: %s",
                 reply);
    int turns = 0, dups = 0;
    free(rlbk_journal_messages(th, &turns, &dups, NULL));
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_tool_timeouts(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    const char *kv[] = {"tool.timeout.ms", "300", NULL};
    rlbk_new(&c, "assistants", kv);
    rlbk_enqueue(&c, th, "[[tool:late]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), "late={\"error\":\"tool call timed out") != NULL);
    rlbk_free(&c);
    /* action cancel: the run is cancelled, the batch dead-lettered. */
    rlbk_t d;
    const char *kv2[] = {"tool.timeout.ms", "300", "tool.timeout.action", "cancel", NULL};
    rlbk_new(&d, "assistants", kv2);
    rlbk_enqueue(&d, th, "[[tool:never]]", NULL);
    RL_CHECK_OK(runlane_start(d.rl));
    rlbk_ev_t *dead = rlbk_wait(&d, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(dead->err, "not submitted within 300 ms") && strstr(dead->err, "cancelled"),
                 "error: %s", dead->err);
    rlbk_free(&d);
    free(th);
}

static void test_assistants_active_run_of_others_defers(void) {
    rlbk_need_emu();
    char *th = new_thread();
    char *rp = runs_path(th);
    cJSON_Delete(rlemu_call(&rlbk_emu, "POST", rp,
                            "{\"assistant_id\":\"asst_other\",\"additional_messages\":[{\"role\":"
                            "\"user\",\"content\":\"theirs [[slow:2000]]\"}]}",
                            NULL, NULL));
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    rlbk_enqueue(&c, th, "ours", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_FAILED));
    RL_CHECK_STR("echo: ours", rlbk_str(done->j, "reply"));
    int rejected = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, NULL, &dups, &rejected);
    RL_CHECK(rejected >= 1);
    RL_CHECK_STR("theirs [[slow:2000]]|ours", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    free(rp);
    rlbk_free(&c);
    free(th);
}

/* A run of a dead runlane batch left waiting for tool outputs
 * (requires_action) would block the thread until it expires (10 min): the
 * next batch cancels it and goes on. */
static void test_assistants_dead_batch_run_waiting_for_tools_is_cancelled(void) {
    rlbk_need_emu();
    char *th = new_thread();
    char *rp = runs_path(th);
    cJSON *run = rlemu_call(&rlbk_emu, "POST", rp,
                            "{\"assistant_id\":\"asst_test\",\"metadata\":{\"runlane_batch_id\":"
                            "\"b_dead\"},\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
                            "\"lookup\"}}],\"additional_messages\":[{\"role\":\"user\",\"content\":"
                            "\"check [[tool:lookup {}]]\"}]}",
                            NULL, NULL);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", rp, rlbk_str(run, "id"));
    cJSON_Delete(run);
    int waiting = 0;
    for (int i = 0; i < 100 && !waiting; i++) {
        cJSON *r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
        waiting = strcmp(rlbk_str(r, "status"), "requires_action") == 0;
        cJSON_Delete(r);
        if (!waiting) usleep(50000);
    }
    RL_CHECK_MSG(waiting, "the dead batch's run never asked for tools");
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    rlbk_enqueue(&c, th, "ours", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_FAILED));
    cJSON *r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("cancelled", rlbk_str(r, "status"));
    cJSON_Delete(r);
    free(rp);
    rlbk_free(&c);
    free(th);
}

/* Issue 9: a batch is dead-lettered (its workers kept dying: max.stalls
 * spent) while its run waits for tool outputs. The conversation's next
 * batch settles (cancels) that run before it creates its own: the
 * provider never refuses a create with "already has an active run". */
static void test_assistants_dead_lettered_run_is_settled_before_the_next_batch(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t a, b;
    rlbk_new(&a, "assistants", NULL);
    rlbk_enqueue(&a, th, "check [[tool:lookup {}]]", NULL);
    RL_CHECK_OK(runlane_start(a.rl));
    rlbk_ev_t *tc = rlbk_wait(&a, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    char run_id[160];
    snprintf(run_id, sizeof(run_id), "%s", rlbk_str(tc->j, "run_id"));
    RL_CHECK_OK(runlane_stop(a.rl, RUNLANE_STOP_RELEASE, 0));
    /* Its next owner dies holding it: the lease expires, the stall budget
     * (0) is spent, the batch is dead-lettered with its run waiting. */
    rlbk_dead_letter_by_stall(a.store);
    char path[512];
    snprintf(path, sizeof(path), "/v1/threads/%s/runs/%s", th, run_id);
    cJSON *r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("requires_action", rlbk_str(r, "status"));
    cJSON_Delete(r);
    /* The next batch. */
    rlbk_new_same_store(&b, &a, "assistants", NULL);
    rlbk_enqueue(&b, th, "hello again", NULL);
    RL_CHECK_OK(runlane_start(b.rl));
    rlbk_ev_t *done = rlbk_wait(&b, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: hello again", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&b, RUNLANE_EVENT_FAILED));
    r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("cancelled", rlbk_str(r, "status"));
    cJSON_Delete(r);
    int rejected = -1, dups = 0;
    free(rlbk_journal_messages(th, NULL, &dups, &rejected));
    RL_CHECK_MSG(rejected == 0, "the next batch's create was refused %d time(s) (active run)",
                 rejected);
    RL_CHECK_INT(0, dups);
    rlbk_free(&b);
    rlbk_free(&a);
    free(th);
}

static void test_assistants_adopts_own_active_run(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    char mid[RUNLANE_ID_MAX], bid[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, th, "adopt me [[slow:2000]]", mid);
    /* A crashed worker created the run (with our batch id) but never
     * checkpointed its id. */
    rlbk_plant_checkpoint(c.store, "{\"v\":1,\"state\":\"posting\"}", bid);
    char *rp = runs_path(th);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"assistant_id\":\"asst_test\",\"metadata\":{\"runlane_batch_id\":\"%s\"},"
             "\"additional_messages\":[{\"role\":\"user\",\"content\":\"adopt me [[slow:2000]]\","
             "\"metadata\":{\"runlane_message_id\":\"%s\",\"runlane_batch_id\":\"%s\"}}]}",
             bid, mid, bid);
    cJSON_Delete(rlemu_call(&rlbk_emu, "POST", rp, body, NULL, NULL));
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *started = rlbk_wait(&c, RUNLANE_EVENT_RUN_STARTED, 1, TIMEOUT);
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(started->j, "adopted")));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: adopt me [[slow:2000]]", rlbk_str(done->j, "reply"));
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, &turns, &dups, NULL);
    RL_CHECK_STR("adopt me [[slow:2000]]", msgs);
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    free(rp);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_reconcile_skips_messages_in_thread(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    char m1[RUNLANE_ID_MAX], m2[RUNLANE_ID_MAX], bid[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, th, "kept", m1);
    rlbk_enqueue(&c, th, "missing", m2);
    rlbk_plant_checkpoint(c.store, "{\"v\":1,\"state\":\"posting\"}", bid);
    /* The first message is in the thread already (by its metadata). */
    char path[256], body[512];
    snprintf(path, sizeof(path), "/v1/threads/%s/messages", th);
    snprintf(body, sizeof(body),
             "{\"role\":\"user\",\"content\":\"kept\",\"metadata\":{\"runlane_message_id\":\"%s\","
             "\"runlane_batch_id\":\"%s\"}}",
             m1, bid);
    cJSON_Delete(rlemu_call(&rlbk_emu, "POST", path, body, NULL, NULL));
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: kept\nmissing", rlbk_str(done->j, "reply"));
    char *rp = runs_path(th);
    cJSON *bodies = rlbk_bodies("POST", rp);
    const cJSON *add =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "additional_messages");
    RL_CHECK_INT(1, cJSON_GetArraySize(add));
    RL_CHECK_STR("missing", rlbk_str(cJSON_GetArrayItem(add, 0), "content"));
    cJSON_Delete(bodies);
    free(rp);
    int dups = 0;
    char *msgs = rlbk_journal_messages(th, NULL, &dups, NULL);
    RL_CHECK_STR("kept|missing", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_failed_run_retried_then_dead(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    rlbk_enqueue(&c, th, "bad [[fail]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *failed = rlbk_wait(&c, RUNLANE_EVENT_FAILED, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(failed->err, "failed: server_error") != NULL, "error: %s", failed->err);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(2, done->attempt);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, &turns, &dups, NULL);
    RL_CHECK_STR("bad [[fail]]", msgs);
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    /* Persistent server errors: retried, then dead. */
    rlbk_t d;
    const char *kv[] = {"max.attempts", "2", "http.max.retries", "1", NULL};
    rlbk_new(&d, "assistants", kv);
    char *rp = runs_path(th);
    rlemu_fault(&rlbk_emu, "500", 100, "POST", rp);
    rlbk_enqueue(&d, th, "doomed", NULL);
    RL_CHECK_OK(runlane_start(d.rl));
    rlbk_ev_t *dead = rlbk_wait(&d, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK_INT(2, dead->attempt);
    RL_CHECK_MSG(strstr(dead->err, "HTTP 500") && strstr(dead->err, "[request req_"), "error: %s",
                 dead->err);
    RL_CHECK_INT(1, rlbk_count(&d, RUNLANE_EVENT_FAILED));
    free(rp);
    rlbk_free(&d);
    free(th);
}

static void test_assistants_polling_mode(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":300,\"poll_after_ms\":50}");
    rlbk_t c;
    const char *kv[] = {"openai.stream", "false", NULL};
    rlbk_new(&c, "assistants", kv);
    rlbk_enqueue(&c, th, "[[tool:p]] poll", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    char *outs = rlbk_outputs_for(tc, NULL);
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, tc->batch_id, outs));
    free(outs);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: [[tool:p]] poll | tools: p=ok-p", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_DELTA));
    rlbk_free(&c);
    free(th);
}

static void test_assistants_crash_adopts_and_reraises_tools(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_check_tool_calls_raised_again_after_crash("assistants", th, "[[tool:k]]", "k=ok-k", 1,
                                                   TIMEOUT);
    free(th);
}

static void test_assistants_adopts_running_run_after_crash(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_check_adopts_running_turn_after_crash("assistants", th, "slow [[slow:3000]]", TIMEOUT);
    free(th);
}

static void test_assistants_lost_create_answer_adopts_the_run(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":1000}");
    rlbk_t c;
    const char *kv[] = {"openai.stream", "false", NULL};
    rlbk_new(&c, "assistants", kv);
    char *rp = runs_path(th);
    rlemu_fault(&rlbk_emu, "drop", 1, "POST", rp);
    rlbk_enqueue(&c, th, "lost answer", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: lost answer", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_FAILED));
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, &turns, &dups, NULL);
    RL_CHECK_STR("lost answer", msgs);
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    free(rp);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_interrupt_cancels_and_restarts(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    const char *kv[] = {"busy.policy", "interrupt", "lease.ms", "600", NULL};
    rlbk_new(&c, "assistants", kv);
    char first[RUNLANE_ID_MAX], second[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, th, "long [[slow:3000]]", first);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_RUN_STARTED, 1, TIMEOUT);
    rlbk_enqueue(&c, th, "and another thing", second);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(done->j, "message_ids");
    RL_CHECK_INT(2, cJSON_GetArraySize(ids));
    RL_CHECK_STR(second, cJSON_GetArrayItem(ids, 1)->valuestring);
    char *rp = runs_path(th);
    cJSON *bodies = rlbk_bodies("POST", rp);
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    const cJSON *add =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 1), "additional_messages");
    RL_CHECK_INT(1, cJSON_GetArraySize(add));
    RL_CHECK_STR("and another thing", rlbk_str(cJSON_GetArrayItem(add, 0), "content"));
    cJSON_Delete(bodies);
    free(rp);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(th, &turns, &dups, NULL);
    RL_CHECK_STR("long [[slow:3000]]|and another thing", msgs);
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    cJSON *j = rlemu_journal(&rlbk_emu);
    const cJSON *t0 = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(rlemu_journal_conv(j, th), "turns"), 0);
    RL_CHECK_STR("cancelled", rlbk_str(t0, "status"));
    cJSON_Delete(j);
    rlbk_free(&c);
    free(th);
}

static void test_assistants_joined_mode_reconciles_by_ids(void) {
    rlbk_need_emu();
    char *th = new_thread();
    rlbk_t c;
    const char *kv[] = {"openai.input.mode", "joined", NULL};
    rlbk_new(&c, "assistants", kv);
    rlbk_enqueue(&c, th, "x [[fail]]", NULL);
    rlbk_enqueue(&c, th, "y", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_FAILED, 1, TIMEOUT);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(2, done->attempt);
    char *rp = runs_path(th);
    cJSON *bodies = rlbk_bodies("POST", rp);
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    const cJSON *add0 =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "additional_messages");
    RL_CHECK_STR("x [[fail]]\n\ny", rlbk_str(cJSON_GetArrayItem(add0, 0), "content"));
    /* The retry sends nothing again: the joined message carries both ids. */
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 1),
                                              "additional_messages") == NULL);
    cJSON_Delete(bodies);
    free(rp);
    rlbk_free(&c);
    free(th);
}

/* rate.limit.rpm: runlane_thread_create takes its token from the queue's
 * shared bucket (rpm=60: a burst of 1, left empty), and the runs of a
 * batch keep to it too: the run of a second batch waits for the refill. */
static void test_assistants_rate_limit_uses_the_shared_bucket(void) {
    rlbk_need_emu();
    rlbk_t c;
    const char *kv[] = {"rate.limit.rpm", "60", NULL};
    rlbk_new(&c, "assistants", kv);
    rl_store_t *st = rlbk_store_open(c.store);
    char *id = NULL;
    RL_CHECK_OK(runlane_thread_create(&id, c.rl, NULL));
    int64_t wait = 0;
    RL_CHECK_OK(st->ops->rate_take(st, 60, &wait));
    RL_CHECK_MSG(wait > 0, "the create took no token of the shared bucket");
    /* One run (1 request, streamed) per second at most. */
    rlbk_enqueue(&c, id, "hello", NULL);
    int64_t t0 = rl_mono_ms();
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), "hello") != NULL);
    /* the bucket was empty (two takes above): the run's create waited */
    RL_CHECK_MSG(rl_mono_ms() - t0 >= 500, "the run came %lld ms after the start",
                 (long long)(rl_mono_ms() - t0));
    runlane_free(id);
    st->ops->destroy(st);
    rlbk_free(&c);
}

static void test_assistants_thread_create_helper_and_beta_header(void) {
    rlbk_need_emu();
    rlbk_t c;
    rlbk_new(&c, "assistants", NULL);
    char *id = NULL;
    RL_CHECK_OK(runlane_thread_create(&id, c.rl, "{\"k\":\"v\"}"));
    RL_CHECK(id && strncmp(id, "thread_", 7) == 0);
    cJSON *reqs = rlemu_requests(&rlbk_emu, 1);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "headers");
    RL_CHECK_STR("assistants=v2", rlbk_str(h, "OpenAI-Beta"));
    cJSON_Delete(reqs);
    /* The thread works with the backend at once. */
    rlbk_enqueue(&c, id, "hello thread", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: hello thread", rlbk_str(done->j, "reply"));
    runlane_free(id);
    rlbk_free(&c);
}

static void test_assistants_api_key_in_no_event(void) {
    if (!rlbk_have_emu) RL_SKIP("emulator not available");
    rlbk_need_emu();
    /* One more failure that quotes the (masked) key. */
    char *th = new_thread();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"api_key\":\"sk-not-yours\"}");
    rlbk_t c;
    const char *kv[] = {"max.attempts", "1", NULL};
    rlbk_new(&c, "assistants", kv);
    rlbk_enqueue(&c, th, "hi", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *dead = rlbk_wait(&c, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK(strstr(dead->err, "401") != NULL);
    rlbk_free(&c);
    free(th);
    rl_buf_puts(&rlbk_all_events, "");
    RL_CHECK(rlbk_all_events.len > 1000);
    RL_CHECK(strstr(rlbk_all_events.data, RLBK_API_KEY) == NULL);
    RL_CHECK(strstr(rlbk_all_events.data, "SECRET") == NULL);
}

static char *items_of(const char *conv) {
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s/items?order=asc&limit=100", conv);
    cJSON *j = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    rl_buf_t b;
    rl_buf_init(&b);
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "data")) {
        const cJSON *part = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(it, "content"), 0);
        if (b.len) rl_buf_puts(&b, "|");
        rl_buf_puts(&b, rlbk_str(it, "role"));
        rl_buf_puts(&b, ":");
        rl_buf_puts(&b, rlbk_str(part, "text"));
    }
    rl_buf_puts(&b, "");
    cJSON_Delete(j);
    return rl_buf_take(&b);
}

/* Migration off the Assistants API (issue 12 item 2): a thread of 25
 * messages is copied, in order, into a new Responses conversation and the
 * key mapped to it. A run cut half-way (its first items request took
 * effect but the answer was lost) is resumed by running it again, without
 * a second copy; a third run copies nothing; the key's next turn
 * (responses backend) goes to the new conversation. */
static void test_migrate_thread_to_conversation(void) {
    rlbk_need_emu();
    char *thread = rlbk_new_lane("/v1/threads");
    char path[256], body[256];
    snprintf(path, sizeof(path), "/v1/threads/%s/messages", thread);
    rl_buf_t want;
    rl_buf_init(&want);
    for (int i = 0; i < 25; i++) {
        const char *role = i % 2 ? "assistant" : "user";
        snprintf(body, sizeof(body), "{\"role\":\"%s\",\"content\":\"m%02d\"}", role, i);
        long st = 0;
        cJSON_Delete(rlemu_call(&rlbk_emu, "POST", path, body, &st, NULL));
        RL_CHECK_INT(200, (int)st);
        rl_buf_printf(&want, "%s%s:m%02d", i ? "|" : "", role, i);
    }
    rl_buf_puts(&want, "");
    rlbk_t c;
    const char *kv[] = {"http.max.retries", "0", NULL};
    rlbk_new(&c, "responses", kv);
    RL_CHECK_OK(runlane_conversation_map_set(c.rl, "chat-m", thread));
    rlemu_fault(&rlbk_emu, "drop", 1, "POST", "/items");
    char *res = NULL;
    RL_CHECK(runlane_migrate_thread(&res, c.rl, "chat-m", NULL) != RUNLANE_OK);
    RL_CHECK(res == NULL);
    char *mapped = NULL;
    RL_CHECK_OK(runlane_conversation_map_get(&mapped, c.rl, "chat-m"));
    RL_CHECK_STR(thread, mapped); /* not switched before the copy is whole */
    runlane_free(mapped);
    /* resumed: only what the conversation lacks */
    RL_CHECK_OK(runlane_migrate_thread(&res, c.rl, "chat-m", NULL));
    cJSON *r = cJSON_Parse(res);
    runlane_free(res);
    char conv[200];
    snprintf(conv, sizeof(conv), "%s", rlbk_str(r, "conversation_id"));
    RL_CHECK(strncmp(conv, "conv_", 5) == 0);
    RL_CHECK_INT(5, cJSON_GetObjectItemCaseSensitive(r, "copied")->valueint);
    RL_CHECK_INT(25, cJSON_GetObjectItemCaseSensitive(r, "total")->valueint);
    RL_CHECK_STR(thread, rlbk_str(r, "thread_id"));
    cJSON_Delete(r);
    char *got = items_of(conv);
    RL_CHECK_STR(want.data, got);
    free(got);
    RL_CHECK_OK(runlane_conversation_map_get(&mapped, c.rl, "chat-m"));
    RL_CHECK_STR(conv, mapped);
    runlane_free(mapped);
    /* again: nothing copied */
    RL_CHECK_OK(runlane_migrate_thread(&res, c.rl, "chat-m", NULL));
    r = cJSON_Parse(res);
    runlane_free(res);
    RL_CHECK_STR(conv, rlbk_str(r, "conversation_id"));
    RL_CHECK_INT(0, cJSON_GetObjectItemCaseSensitive(r, "copied")->valueint);
    cJSON_Delete(r);
    got = items_of(conv);
    RL_CHECK_STR(want.data, got);
    free(got);
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", "/v1/conversations"));
    /* the key's next turn continues in the conversation */
    rlbk_enqueue(&c, "chat-m", "after", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, (int)(30000 * rl_test_time_scale()));
    RL_CHECK_STR("chat-m", rlbk_str(done->j, "conversation_id"));
    got = items_of(conv);
    RL_CHECK(strstr(got, "|user:after") != NULL);
    free(got);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_migrate_thread(&res, c.rl, "no-thread", NULL));
    rl_buf_free(&want);
    rlbk_free(&c);
    free(thread);
}

static void test_assistants_conversation_keys(void) {
    rlbk_check_key_flow("assistants", "/v1/threads", "thread_");
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    rlbk_have_emu = rlemu_start(&rlbk_emu, NULL) == 0;
    if (!rlbk_have_emu) fprintf(stderr, "emulator not available: tests are skipped\n");
    RL_RUN(test_assistants_conversation_keys);
    RL_RUN(test_migrate_thread_to_conversation);
    RL_RUN(test_assistants_batch_is_one_run_with_messages_in_order);
    RL_RUN(test_assistants_tool_calls_single_and_parallel);
    RL_RUN(test_assistants_tool_timeouts);
    RL_RUN(test_assistants_active_run_of_others_defers);
    RL_RUN(test_assistants_dead_batch_run_waiting_for_tools_is_cancelled);
    RL_RUN(test_assistants_dead_lettered_run_is_settled_before_the_next_batch);
    RL_RUN(test_assistants_adopts_own_active_run);
    RL_RUN(test_assistants_reconcile_skips_messages_in_thread);
    RL_RUN(test_assistants_failed_run_retried_then_dead);
    RL_RUN(test_assistants_polling_mode);
    RL_RUN(test_assistants_crash_adopts_and_reraises_tools);
    RL_RUN(test_assistants_adopts_running_run_after_crash);
    RL_RUN(test_assistants_lost_create_answer_adopts_the_run);
    RL_RUN(test_assistants_interrupt_cancels_and_restarts);
    RL_RUN(test_assistants_joined_mode_reconciles_by_ids);
    RL_RUN(test_assistants_thread_create_helper_and_beta_header);
    RL_RUN(test_assistants_rate_limit_uses_the_shared_bucket);
    RL_RUN(test_assistants_api_key_in_no_event);
    if (rlbk_have_emu) rlemu_stop(&rlbk_emu);
    rl_buf_free(&rlbk_all_events);
    return rl_test_summary();
}
