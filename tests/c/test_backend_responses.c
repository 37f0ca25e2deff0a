/* test_backend_responses.c - the `responses` backend end to end against
 * the OpenAI emulator: batching into one turn, streaming deltas, tool calls
 * (single, parallel, error output, timeout), conversation_locked deferral,
 * failures and dead letters, polling mode, reconciliation after a crash,
 * busy.policy=interrupt (polled and streamed), rate.limit.rpm shared by
 * two clients of one queue, and the API key never leaking into events or
 * errors. */
#include <hiredis/hiredis.h>

#include "client.h"
#include "rlbk.h"


#define TIMEOUT 15000

static char *new_conv(void) { return rlbk_new_lane("/v1/conversations"); }

static void test_responses_batch_is_one_turn_with_items_in_order(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    char ids[3][RUNLANE_ID_MAX];
    rlbk_enqueue(&c, conv, "first", ids[0]);
    rlbk_enqueue(&c, conv, "second", ids[1]);
    rlbk_enqueue(&c, conv, "third", ids[2]);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: first\nsecond\nthird", rlbk_str(done->j, "reply"));
    RL_CHECK(strncmp(rlbk_str(done->j, "response_id"), "resp_", 5) == 0);
    RL_CHECK_STR(conv, rlbk_str(done->j, "conversation_id"));
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(done->j, "usage");
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(usage, "total_tokens") != NULL);
    RL_CHECK_INT(3, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(done->j, "message_ids")));
    /* Run started first; the deltas spell the reply. */
    RL_CHECK_INT(1, rlbk_count(&c, RUNLANE_EVENT_RUN_STARTED));
    RL_CHECK(rlbk_count(&c, RUNLANE_EVENT_DELTA) >= 2);
    rl_buf_t deltas;
    rl_buf_init(&deltas);
    for (int i = 0; i < c.nev; i++)
        if (c.ev[i].type == RUNLANE_EVENT_DELTA) rl_buf_puts(&deltas, rlbk_str(c.ev[i].j, "delta"));
    rl_buf_puts(&deltas, "");
    RL_CHECK_STR("echo: first\nsecond\nthird", deltas.data);
    rl_buf_free(&deltas);
    RL_CHECK(c.ev[0].type == RUNLANE_EVENT_RUN_STARTED);
    /* One POST /responses with three user items in order. */
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(1, cJSON_GetArraySize(bodies));
    const cJSON *b = cJSON_GetArrayItem(bodies, 0);
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
    RL_CHECK_INT(3, cJSON_GetArraySize(input));
    RL_CHECK_STR("first", rlbk_str(cJSON_GetArrayItem(input, 0), "content"));
    RL_CHECK_STR("second", rlbk_str(cJSON_GetArrayItem(input, 1), "content"));
    RL_CHECK_STR("third", rlbk_str(cJSON_GetArrayItem(input, 2), "content"));
    RL_CHECK_STR(conv, rlbk_str(b, "conversation"));
    RL_CHECK_STR("gpt-4o", rlbk_str(b, "model"));
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(b, "metadata");
    RL_CHECK_STR(done->batch_id, rlbk_str(md, "runlane_batch_id"));
    char want[256];
    snprintf(want, sizeof(want), "%s,%s,%s", ids[0], ids[1], ids[2]);
    RL_CHECK_STR(want, rlbk_str(md, "runlane_message_ids"));
    cJSON_Delete(bodies);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(conv, &turns, &dups, NULL);
    RL_CHECK_STR("first|second|third", msgs);
    RL_CHECK_INT(1, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    /* The batch is acked: nothing in flight. */
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, c.rl, conv));
    cJSON *sj = cJSON_Parse(st);
    RL_CHECK_INT(0, cJSON_GetObjectItemCaseSensitive(sj, "pending")->valueint);
    cJSON_Delete(sj);
    runlane_free(st);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_joined_mode_and_instructions(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"openai.input.mode", "joined", "openai.instructions", "be brief",
                        "openai.metadata", "{\"app\":\"chat\"}", NULL};
    rlbk_new(&c, "responses", kv);
    char id[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, conv, "a", NULL);
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, c.rl, conv, "b",
                                "{\"instructions\":\"answer in French\"}"));
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: a\n\nb", rlbk_str(done->j, "reply"));
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    const cJSON *b = cJSON_GetArrayItem(bodies, 0);
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
    RL_CHECK_INT(1, cJSON_GetArraySize(input));
    RL_CHECK_STR("a\n\nb", rlbk_str(cJSON_GetArrayItem(input, 0), "content"));
    /* The last message's own instructions win over openai.instructions. */
    RL_CHECK_STR("answer in French", rlbk_str(b, "instructions"));
    RL_CHECK_STR("chat", rlbk_str(cJSON_GetObjectItemCaseSensitive(b, "metadata"), "app"));
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_single_tool_call(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"openai.tools",
                        "[{\"type\":\"function\",\"name\":\"get_weather\",\"parameters\":{}}]",
                        NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "weather? [[tool:get_weather {\"city\":\"Paris\"}]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(tc->j, "tool_calls");
    RL_CHECK_INT(1, cJSON_GetArraySize(calls));
    const cJSON *call = cJSON_GetArrayItem(calls, 0);
    RL_CHECK_STR("get_weather", rlbk_str(call, "name"));
    RL_CHECK_STR("{\"city\":\"Paris\"}", rlbk_str(call, "arguments"));
    RL_CHECK(strncmp(rlbk_str(call, "id"), "call_", 5) == 0);
    RL_CHECK(strncmp(rlbk_str(tc->j, "response_id"), "resp_", 5) == 0);
    char *outs = rlbk_outputs_for(tc, "sunny");
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, tc->batch_id, outs));
    free(outs);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(rlbk_str(done->j, "reply"), "tools: get_weather=sunny") != NULL,
                 "reply: %s", rlbk_str(done->j, "reply"));
    /* Two responses: the calls, then the answer with function_call_output
     * items on the same conversation (no previous_response_id). */
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    const cJSON *b2 = cJSON_GetArrayItem(bodies, 1);
    RL_CHECK_STR(conv, rlbk_str(b2, "conversation"));
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(b2, "previous_response_id") == NULL);
    const cJSON *in2 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b2, "input"), 0);
    RL_CHECK_STR("function_call_output", rlbk_str(in2, "type"));
    RL_CHECK_STR("sunny", rlbk_str(in2, "output"));
    cJSON_Delete(bodies);
    /* Usage sums both responses. */
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(done->j, "usage"),
                                              "total_tokens")
                 ->valueint > 2);
    int turns = 0, dups = 0;
    free(rlbk_journal_messages(conv, &turns, &dups, NULL));
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_parallel_tool_calls_and_error_output(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "[[tool:lookup {\"q\":1}]] and [[tool:fetch {\"q\":2}]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(tc->j, "tool_calls");
    RL_CHECK_INT(2, cJSON_GetArraySize(calls));
    RL_CHECK_STR("lookup", rlbk_str(cJSON_GetArrayItem(calls, 0), "name"));
    RL_CHECK_STR("fetch", rlbk_str(cJSON_GetArrayItem(calls, 1), "name"));
    /* Answered in two submissions; the second one is a handler's error. */
    char one[512], two[512];
    snprintf(one, sizeof(one), "[{\"tool_call_id\":\"%s\",\"output\":\"found\"}]",
             rlbk_str(cJSON_GetArrayItem(calls, 0), "id"));
    snprintf(two, sizeof(two),
             "[{\"tool_call_id\":\"%s\",\"output\":\"{\\\"error\\\":\\\"boom\\\"}\"}]",
             rlbk_str(cJSON_GetArrayItem(calls, 1), "id"));
    char batch[RUNLANE_ID_MAX];
    snprintf(batch, sizeof(batch), "%s", tc->batch_id);
    /* An output for a call that does not exist is reported, not used. */
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, batch,
                                        "[{\"tool_call_id\":\"call_bogus\",\"output\":\"x\"}]"));
    rlbk_ev_t *err = rlbk_wait(&c, RUNLANE_EVENT_ERROR, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(err->err, "unknown tool_call_id \"call_bogus\"") != NULL, "error: %s",
                 err->err);
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, batch, one));
    rlbk_drain(&c, 200);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_COMPLETED));
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, batch, two));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    const char *reply = rlbk_str(done->j, "reply");
    RL_CHECK_MSG(strstr(reply, "lookup=found") && strstr(reply, "fetch={\"error\":\"boom\"}"),
                 "reply: %s", reply);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_tool_timeout_error_outputs(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"tool.timeout.ms", "300", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "[[tool:slow_tool]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(rlbk_str(done->j, "reply"), "slow_tool={\"error\":\"tool call timed out") !=
                     NULL,
                 "reply: %s", rlbk_str(done->j, "reply"));
    rlbk_free(&c);
    free(conv);
}

static void test_responses_tool_timeout_cancel_dead_letters(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"tool.timeout.ms", "300", "tool.timeout.action", "cancel", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "[[tool:never_answered]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    rlbk_ev_t *dead = rlbk_wait(&c, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(dead->err, "not submitted within 300 ms") != NULL, "error: %s", dead->err);
    /* The conversation takes new messages: the calls were answered. */
    rlbk_enqueue(&c, conv, "next", NULL);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), "next") != NULL);
    rlbk_free(&c);
    free(conv);
}

static void *slow_response_main(void *arg) {
    const char *conv = arg;
    char body[512];
    snprintf(body, sizeof(body),
             "{\"model\":\"gpt-4o\",\"conversation\":\"%s\",\"input\":\"other [[slow:2000]]\"}",
             conv);
    cJSON_Delete(rlemu_call(&rlbk_emu, "POST", "/v1/responses", body, NULL, NULL));
    return NULL;
}

static void test_responses_conversation_locked_defers_then_succeeds(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    /* Someone else's response holds the conversation for 1.2 s. */
    pthread_t th;
    pthread_create(&th, NULL, slow_response_main, conv);
    usleep(200000);
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "mine", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    pthread_join(th, NULL);
    /* Deferred, not failed: no FAILED event and still the first attempt. */
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_FAILED));
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), "mine") != NULL);
    int rejected = 0, dups = 0;
    char *msgs = rlbk_journal_messages(conv, NULL, &dups, &rejected);
    RL_CHECK_MSG(rejected >= 1, "expected a conversation_locked rejection, got %d", rejected);
    RL_CHECK_STR("other [[slow:2000]]|mine", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_failed_turn_is_retried_without_resending(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "x [[fail]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *failed = rlbk_wait(&c, RUNLANE_EVENT_FAILED, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(failed->err, "failed: server_error") != NULL, "error: %s", failed->err);
    RL_CHECK_INT(1, failed->attempt);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(2, done->attempt);
    /* The retry asked for a new response without adding the message again. */
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(conv, &turns, &dups, NULL);
    RL_CHECK_STR("x [[fail]]", msgs);
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 1), "input") == NULL);
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

/* Regression (tests/chaos/repro_reconcile_dup.py): one attempt reconciles
 * twice (a retried batch reconciles, then its create gets a 500 and it
 * reconciles again). The second listing must start from the checkpointed
 * snapshot, not from the first listing's last item, or it does not see the
 * batch's messages and posts them again. */
static void test_responses_second_reconcile_of_an_attempt_sends_nothing_twice(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"backoff.base.ms", "1000", "backoff.max.ms", "1000", "backoff.jitter",
                        "0", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "hello", NULL);
    rlbk_enqueue(&c, conv, "boom [[fail]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_FAILED, 1, TIMEOUT);
    /* Attempt 2 reconciles, finds both messages and asks for a reply with
     * a create without input: that create gets a 500. */
    rlemu_fault(&rlbk_emu, "500", 1, "POST", "/v1/responses");
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(2, done->attempt);
    int dups = 0;
    char *msgs = rlbk_journal_messages(conv, NULL, &dups, NULL);
    RL_CHECK_STR("hello|boom [[fail]]", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    const cJSON *b;
    int i = 0;
    cJSON_ArrayForEach(b, bodies) {
        if (i++ > 0)
            RL_CHECK_MSG(cJSON_GetObjectItemCaseSensitive(b, "input") == NULL,
                         "create %d re-sent input", i);
    }
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

/* Regression (tests/chaos/repro_dead_tool_call.py): a turn that died with
 * its function calls unanswered leaves them pending in the conversation;
 * the provider refuses every later create there with HTTP 400 "No tool
 * output found". The next batch answers them (an error output) first. */
static void test_responses_dangling_calls_of_a_dead_turn_do_not_poison(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    char body[512];
    snprintf(body, sizeof(body),
             "{\"model\":\"gpt-4o\",\"conversation\":\"%s\",\"input\":\"check "
             "[[tool:lookup {}]]\",\"tools\":[{\"type\":\"function\",\"name\":\"lookup\"}]}",
             conv);
    cJSON *r = rlemu_call(&rlbk_emu, "POST", "/v1/responses", body, NULL, NULL);
    const cJSON *out0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "output"), 0);
    RL_CHECK_STR("function_call", rlbk_str(out0, "type"));
    char call_id[128];
    snprintf(call_id, sizeof(call_id), "%s", rlbk_str(out0, "call_id"));
    cJSON_Delete(r);
    rlbk_t c;
    const char *kv[] = {"max.attempts", "1", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "hello again", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_DEAD));
    /* The dangling call got an error output through the items endpoint. */
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s/items", conv);
    cJSON *posts = rlbk_bodies("POST", path);
    RL_CHECK_INT(1, cJSON_GetArraySize(posts));
    const cJSON *it = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(posts, 0), "items"), 0);
    RL_CHECK_STR("function_call_output", rlbk_str(it, "type"));
    RL_CHECK_STR(call_id, rlbk_str(it, "call_id"));
    cJSON_Delete(posts);
    int dups = 0;
    free(rlbk_journal_messages(conv, NULL, &dups, NULL));
    RL_CHECK_INT(0, dups);
    rlbk_free(&c);
    free(conv);
}

/* The lease guard (a create that adds input needs lease.ms/4 of lease
 * left) follows the renewals: a turn that waits for tools much longer than
 * lease.ms still posts its outputs, once, and is not released. */
static void test_responses_lease_guard_follows_renewals(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"lease.ms", "1000", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "weather? [[tool:get_weather {}]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    usleep(2500 * 1000);
    char *outs = rlbk_outputs_for(tc, "sunny");
    RL_CHECK_OK(rlbk_submit_from_thread(c.rl, tc->batch_id, outs));
    free(outs);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_LEASE_LOST));
    RL_CHECK_INT(1, rlbk_count(&c, RUNLANE_EVENT_TOOL_CALLS));
    RL_CHECK_INT(2, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    rlbk_free(&c);
    free(conv);
}

static void test_responses_http_errors_retry_then_dead(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"max.attempts", "2", "http.max.retries", "1", NULL};
    rlbk_new(&c, "responses", kv);
    rlemu_fault(&rlbk_emu, "500", 100, "POST", "/v1/responses");
    rlbk_enqueue(&c, conv, "doomed", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *failed = rlbk_wait(&c, RUNLANE_EVENT_FAILED, 1, TIMEOUT);
    RL_CHECK_MSG(strstr(failed->err, "HTTP 500") && strstr(failed->err, "[request req_"),
                 "error: %s", failed->err);
    rlbk_ev_t *dead = rlbk_wait(&c, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK_INT(2, dead->attempt);
    char *dl = NULL;
    RL_CHECK_OK(runlane_dead_list(&dl, c.rl, 0, 0));
    RL_CHECK(strstr(dl, "doomed") != NULL);
    runlane_free(dl);
    /* A 5xx on a create is ambiguous: each was followed by a look at the
     * conversation before sending again, and nothing got in twice. */
    int dups = 0;
    free(rlbk_journal_messages(conv, NULL, &dups, NULL));
    RL_CHECK_INT(0, dups);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_invalid_request_is_dead_at_once(void) {
    rlbk_need_emu();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, "conv_does_not_exist", "hello", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *dead = rlbk_wait(&c, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK_INT(1, dead->attempt);
    RL_CHECK_MSG(strstr(dead->err, "404") && strstr(dead->err, "not found"), "error: %s",
                 dead->err);
    rlbk_free(&c);
}

static void test_responses_background_polling_mode(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":300,\"poll_after_ms\":50}");
    rlbk_t c;
    const char *kv[] = {"openai.stream", "false", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "poll me", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: poll me", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(1, rlbk_count(&c, RUNLANE_EVENT_RUN_STARTED));
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_DELTA));
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "background")));
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

/* Issue 9: a batch is dead-lettered (its workers kept dying) while its
 * background response still runs. The conversation's next batch cancels
 * that response and waits for it to end before it sends anything: no
 * create is refused with conversation_locked. */
static void test_responses_dead_lettered_response_is_settled_before_the_next_batch(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t a, b;
    const char *kv[] = {"openai.stream", "false", NULL};
    rlbk_new(&a, "responses", kv);
    rlbk_enqueue(&a, conv, "long one [[slow:10000]]", NULL);
    RL_CHECK_OK(runlane_start(a.rl));
    rlbk_ev_t *started = rlbk_wait(&a, RUNLANE_EVENT_RUN_STARTED, 1, TIMEOUT);
    char path[256];
    snprintf(path, sizeof(path), "/v1/responses/%s", rlbk_str(started->j, "response_id"));
    RL_CHECK_OK(runlane_stop(a.rl, RUNLANE_STOP_RELEASE, 0));
    rlbk_dead_letter_by_stall(a.store);
    cJSON *r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("in_progress", rlbk_str(r, "status"));
    cJSON_Delete(r);
    rlbk_new_same_store(&b, &a, "responses", kv);
    rlbk_enqueue(&b, conv, "next", NULL);
    RL_CHECK_OK(runlane_start(b.rl));
    rlbk_ev_t *done = rlbk_wait(&b, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: next", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(0, rlbk_count(&b, RUNLANE_EVENT_FAILED));
    r = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("cancelled", rlbk_str(r, "status"));
    cJSON_Delete(r);
    int rejected = -1, dups = 0;
    free(rlbk_journal_messages(conv, NULL, &dups, &rejected));
    RL_CHECK_MSG(rejected == 0, "the next batch's create was refused %d time(s) (conversation_locked)",
                 rejected);
    rlbk_free(&b);
    rlbk_free(&a);
    free(conv);
}

static void test_responses_adopts_running_response_after_crash(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    /* The worker goes away mid-turn (its lease is given back). */
    rlbk_check_adopts_running_turn_after_crash("responses", conv, "long one [[slow:3000]]",
                                               TIMEOUT);
    free(conv);
}

static void test_responses_tool_calls_raised_again_after_crash(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_check_tool_calls_raised_again_after_crash("responses", conv, "[[tool:t1]]", "t1=ok-t1", 2,
                                                   TIMEOUT);
    free(conv);
}

static void test_responses_reconciles_messages_already_sent(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "alpha", NULL);
    rlbk_enqueue(&c, conv, "beta", NULL);
    /* A crashed worker posted the batch (the items are in the conversation)
     * but never learnt the response id. */
    rlbk_plant_checkpoint(c.store, "{\"v\":1,\"state\":\"posting\",\"after\":\"\"}", NULL);
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s/items", conv);
    rlemu_control(&rlbk_emu, "POST", path,
                  "{\"items\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"alpha\"},"
                  "{\"type\":\"message\",\"role\":\"user\",\"content\":\"beta\"}]}");
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: alpha\nbeta", rlbk_str(done->j, "reply"));
    /* The create carried no input: nothing was added twice. */
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(1, cJSON_GetArraySize(bodies));
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 0), "input") == NULL);
    cJSON_Delete(bodies);
    char *msgs = rlbk_journal_messages(conv, NULL, NULL, NULL);
    RL_CHECK_STR("alpha|beta", msgs);
    free(msgs);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_reconciles_completed_turn_without_sending(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    /* Something before the batch: the snapshot point. */
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s/items", conv);
    cJSON *added = rlemu_call(&rlbk_emu, "POST", path,
                              "{\"items\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"old\"}]}",
                              NULL, NULL);
    char after[128];
    snprintf(after, sizeof(after), "%s", rlbk_str(added, "last_id"));
    cJSON_Delete(added);
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "old", NULL); /* same text as before the snapshot */
    char ckpt[256];
    snprintf(ckpt, sizeof(ckpt), "{\"v\":1,\"state\":\"posting\",\"after\":\"%s\"}", after);
    rlbk_plant_checkpoint(c.store, ckpt, NULL);
    /* The crashed worker's turn completed: its input and the reply are in. */
    rlemu_control(&rlbk_emu, "POST", path,
                  "{\"items\":[{\"type\":\"message\",\"role\":\"user\",\"content\":\"old\"},"
                  "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"the reply\"}]}");
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("the reply", rlbk_str(done->j, "reply"));
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(done->j, "reconciled")));
    RL_CHECK_INT(0, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    rlbk_free(&c);
    free(conv);
}

static void test_responses_stream_cut_falls_back_to_polling(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"http.stream.idle.timeout.ms", "300", NULL};
    rlbk_new(&c, "responses", kv);
    /* The stream is quiet 600 ms between deltas: dropped after 300 ms, then the
     * response (its id is known) is polled to its end. */
    rlbk_enqueue(&c, conv, "quiet [[slow:3000]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: quiet [[slow:3000]]", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    char poll[256];
    snprintf(poll, sizeof(poll), "/v1/responses/%s", rlbk_str(done->j, "response_id"));
    RL_CHECK(rlemu_count(&rlbk_emu, "GET", poll) >= 1);
    /* The server cuts the stream after two events. */
    rlemu_fault(&rlbk_emu, "drop", 1, "POST", "/v1/responses");
    rlbk_enqueue(&c, conv, "cut", NULL);
    done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 2, TIMEOUT);
    RL_CHECK(strstr(rlbk_str(done->j, "reply"), "cut") != NULL);
    int turns = 0, dups = 0;
    free(rlbk_journal_messages(conv, &turns, &dups, NULL));
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_lost_create_answer_is_reconciled(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":1000}");
    rlbk_t c;
    const char *kv[] = {"openai.stream", "false", NULL};
    rlbk_new(&c, "responses", kv);
    /* The create takes effect but its answer is lost: runlane must find
     * its messages in the conversation instead of sending them again. */
    rlemu_fault(&rlbk_emu, "drop", 1, "POST", "/v1/responses");
    rlbk_enqueue(&c, conv, "once", NULL);
    rlbk_enqueue(&c, conv, "only", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_STR("echo: once\nonly", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_FAILED));
    int dups = 0;
    char *msgs = rlbk_journal_messages(conv, NULL, &dups, NULL);
    RL_CHECK_STR("once|only", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_large_batch_metadata_fits(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    for (int i = 0; i < 60; i++) {
        char text[32];
        snprintf(text, sizeof(text), "m%d", i);
        rlbk_enqueue(&c, conv, text, NULL);
    }
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(60, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(done->j, "message_ids")));
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    const cJSON *b = cJSON_GetArrayItem(bodies, 0);
    RL_CHECK_INT(60, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(b, "input")));
    const char *ids = rlbk_str(cJSON_GetObjectItemCaseSensitive(b, "metadata"), "runlane_message_ids");
    RL_CHECK(strlen(ids) > 0 && strlen(ids) <= 512);
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_interrupt_cancels_and_restarts_with_everything(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":3000}");
    rlbk_t c;
    const char *kv[] = {"busy.policy", "interrupt", "openai.stream", "false", "lease.ms", "600",
                        NULL};
    rlbk_new(&c, "responses", kv);
    char first[RUNLANE_ID_MAX], second[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, conv, "first", first);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_RUN_STARTED, 1, TIMEOUT);
    /* The user goes on typing: the running (background) response is
     * cancelled and the turn restarts with both messages. */
    rlbk_enqueue(&c, conv, "second", second);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(done->j, "message_ids");
    RL_CHECK_INT(2, cJSON_GetArraySize(ids));
    RL_CHECK_STR(first, cJSON_GetArrayItem(ids, 0)->valuestring);
    RL_CHECK_STR(second, cJSON_GetArrayItem(ids, 1)->valuestring);
    RL_CHECK_INT(2, rlbk_count(&c, RUNLANE_EVENT_RUN_STARTED));
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    const cJSON *in2 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 1), "input");
    RL_CHECK_INT(1, cJSON_GetArraySize(in2));
    RL_CHECK_STR("second", rlbk_str(cJSON_GetArrayItem(in2, 0), "content"));
    cJSON_Delete(bodies);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(conv, &turns, &dups, NULL);
    RL_CHECK_STR("first|second", msgs);
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    /* One batch: nothing left behind. */
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, c.rl, conv));
    cJSON *sj = cJSON_Parse(st);
    RL_CHECK_INT(0, cJSON_GetObjectItemCaseSensitive(sj, "pending")->valueint);
    cJSON_Delete(sj);
    runlane_free(st);
    rlbk_free(&c);
    free(conv);
}

/* busy.policy=interrupt with streaming: every response is created in
 * background mode and streamed, so the running one can be cancelled; the
 * turn restarts with everything, streamed again. */
static void test_responses_interrupt_cancels_streamed_turn_and_restarts(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"latency_ms\":3000}");
    rlbk_t c;
    const char *kv[] = {"busy.policy", "interrupt", "openai.stream", "true", "lease.ms", "600",
                        NULL};
    rlbk_new(&c, "responses", kv);
    char first[RUNLANE_ID_MAX], second[RUNLANE_ID_MAX];
    rlbk_enqueue(&c, conv, "first", first);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *started = rlbk_wait(&c, RUNLANE_EVENT_RUN_STARTED, 1, TIMEOUT);
    char resp1[160];
    snprintf(resp1, sizeof(resp1), "%s", rlbk_str(started->j, "response_id"));
    rlbk_enqueue(&c, conv, "second", second);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(done->j, "message_ids");
    RL_CHECK_INT(2, cJSON_GetArraySize(ids));
    RL_CHECK_STR(first, cJSON_GetArrayItem(ids, 0)->valuestring);
    RL_CHECK_STR(second, cJSON_GetArrayItem(ids, 1)->valuestring);
    RL_CHECK_MSG(strstr(rlbk_str(done->j, "reply"), "second") != NULL, "reply: %s",
                 rlbk_str(done->j, "reply"));
    RL_CHECK(strcmp(rlbk_str(done->j, "response_id"), resp1) != 0);
    RL_CHECK_INT(2, rlbk_count(&c, RUNLANE_EVENT_RUN_STARTED));
    /* The restarted turn was streamed: its deltas came as events. */
    RL_CHECK(rlbk_count(&c, RUNLANE_EVENT_DELTA) >= 1);
    /* Both creates: background and stream; the second sends only "second". */
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    RL_CHECK_INT(2, cJSON_GetArraySize(bodies));
    for (int i = 0; i < 2; i++) {
        const cJSON *b = cJSON_GetArrayItem(bodies, i);
        RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "background")));
        RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "stream")));
    }
    const cJSON *in2 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(bodies, 1), "input");
    RL_CHECK_INT(1, cJSON_GetArraySize(in2));
    RL_CHECK_STR("second", rlbk_str(cJSON_GetArrayItem(in2, 0), "content"));
    cJSON_Delete(bodies);
    /* The first response was cancelled through the API. */
    char path[256];
    snprintf(path, sizeof(path), "/v1/responses/%s/cancel", resp1);
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", path));
    snprintf(path, sizeof(path), "/v1/responses/%s", resp1);
    cJSON *r1 = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("cancelled", rlbk_str(r1, "status"));
    cJSON_Delete(r1);
    int turns = 0, dups = 0;
    char *msgs = rlbk_journal_messages(conv, &turns, &dups, NULL);
    RL_CHECK_STR("first|second", msgs);
    RL_CHECK_INT(2, turns);
    RL_CHECK_INT(0, dups);
    free(msgs);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, c.rl, conv));
    cJSON *sj = cJSON_Parse(st);
    RL_CHECK_INT(0, cJSON_GetObjectItemCaseSensitive(sj, "pending")->valueint);
    cJSON_Delete(sj);
    runlane_free(st);
    rlbk_free(&c);
    free(conv);
}

/* Without busy.policy=interrupt a streamed turn is not a background one. */
static void test_responses_stream_without_interrupt_is_not_background(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    rlbk_enqueue(&c, conv, "plain", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    cJSON *bodies = rlbk_bodies("POST", "/v1/responses");
    const cJSON *b = cJSON_GetArrayItem(bodies, 0);
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "stream")));
    RL_CHECK(cJSON_GetObjectItemCaseSensitive(b, "background") == NULL);
    cJSON_Delete(bodies);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_interrupt_while_waiting_for_tools(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"busy.policy", "interrupt", "lease.ms", "600", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "[[tool:slowpoke]]", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
    rlbk_enqueue(&c, conv, "never mind", NULL);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    RL_CHECK_INT(2, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(done->j, "message_ids")));
    RL_CHECK_MSG(strstr(rlbk_str(done->j, "reply"), "slowpoke={\"error\":\"interrupted") != NULL,
                 "reply: %s", rlbk_str(done->j, "reply"));
    /* Answering the stale calls now is reported, not used. */
    RL_CHECK_INT(1, rlbk_count(&c, RUNLANE_EVENT_TOOL_CALLS));
    int dups = 0;
    char *msgs = rlbk_journal_messages(conv, NULL, &dups, NULL);
    RL_CHECK_STR("[[tool:slowpoke]]|never mind", msgs);
    RL_CHECK_INT(0, dups);
    free(msgs);
    rlbk_free(&c);
    free(conv);
}

static void test_responses_reply_is_redelivered_until_confirmed(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlbk_t c;
    const char *kv[] = {"reply.redeliver.ms", "1000", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "remember me", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
    char batch[RUNLANE_ID_MAX];
    snprintf(batch, sizeof(batch), "%s", done->batch_id);
    /* Not confirmed: it comes again, the same reply for the same batch. */
    rlbk_ev_t *again = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 2, TIMEOUT);
    RL_CHECK_STR(batch, again->batch_id);
    RL_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(again->j, "redelivered")));
    RL_CHECK_STR("echo: remember me", rlbk_str(again->j, "reply"));
    RL_CHECK_OK(runlane_reply_ack(c.rl, batch));
    rlbk_drain(&c, 2500);
    RL_CHECK_INT(2, rlbk_count(&c, RUNLANE_EVENT_COMPLETED));
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    rlbk_free(&c);
    free(conv);
}

static void test_responses_conversation_create_helper(void) {
    rlbk_need_emu();
    rlbk_t c;
    rlbk_new(&c, "responses", NULL);
    char *id = NULL;
    RL_CHECK_OK(runlane_conversation_create(&id, c.rl, "{\"user\":\"u1\"}"));
    RL_CHECK(id && strncmp(id, "conv_", 5) == 0);
    char path[256];
    snprintf(path, sizeof(path), "/v1/conversations/%s", id);
    cJSON *conv = rlemu_call(&rlbk_emu, "GET", path, NULL, NULL, NULL);
    RL_CHECK_STR("u1", rlbk_str(cJSON_GetObjectItemCaseSensitive(conv, "metadata"), "user"));
    cJSON_Delete(conv);
    runlane_free(id);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_conversation_create(&id, c.rl, "[1]"));
    /* A bad key: the provider's refusal, without the key. */
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"api_key\":\"sk-other\"}");
    runlane_err_t rc = runlane_conversation_create(&id, c.rl, NULL);
    RL_CHECK_INT(RUNLANE_ERR_PROVIDER, rc);
    const char *msg = runlane_error_message(runlane_error_last());
    RL_CHECK(strstr(msg, "401") != NULL);
    RL_CHECK(strstr(msg, RLBK_API_KEY) == NULL);
    rlbk_free(&c);
}

static void test_responses_bad_key_errors_never_show_it(void) {
    rlbk_need_emu();
    char *conv = new_conv();
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"api_key\":\"sk-the-real-key\"}");
    rlbk_t c;
    const char *kv[] = {"max.attempts", "1", NULL};
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "hi", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    rlbk_ev_t *dead = rlbk_wait(&c, RUNLANE_EVENT_DEAD, 1, TIMEOUT);
    RL_CHECK(strstr(dead->err, "401") != NULL);
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, c.rl, NULL));
    RL_CHECK(strstr(st, RLBK_API_KEY) == NULL);
    runlane_free(st);
    char *dl = NULL;
    RL_CHECK_OK(runlane_dead_list(&dl, c.rl, 0, 0));
    RL_CHECK(strstr(dl, RLBK_API_KEY) == NULL);
    runlane_free(dl);
    rlbk_free(&c);
    free(conv);
}

/* ---- rate.limit.rpm across clients ---- */

static int emu_last_seq(void) {
    cJSON *reqs = rlemu_requests(&rlbk_emu, 1);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(reqs, 0), "seq");
    int n = cJSON_IsNumber(seq) ? seq->valueint : 0;
    cJSON_Delete(reqs);
    return n;
}

/* API requests (paths under /v1/) the emulator logged after seq0. */
static int emu_api_requests_since(int seq0) {
    cJSON *reqs = rlemu_requests(&rlbk_emu, 2000);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(r, "seq");
        if (cJSON_IsNumber(seq) && seq->valueint > seq0 &&
            strncmp(rlbk_str(r, "path"), "/v1/", 4) == 0)
            n++;
    }
    cJSON_Delete(reqs);
    return n;
}

static long long metric(runlane_t *rl, const char *name) {
    char *text = NULL;
    RL_CHECK_OK(runlane_metrics(&text, rl));
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(text, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    runlane_free(text);
    return v;
}

#define RATE_CONVS 8

/* Two clients of one queue, both with work (4 batches each), at
 * rate.limit.rpm=120 (a burst of 2, then one every 500 ms): over a window
 * of ~3 s the emulator sees at most burst + refill + 1 requests from both
 * together. With a bucket per client it would be twice that (the work
 * needs 2 requests per batch: 16). */
static void shared_budget_clients(const char *store, const char *prefix) {
    char *convs[RATE_CONVS];
    for (int i = 0; i < RATE_CONVS; i++) convs[i] = new_conv();
    /* One batch at a time per client: neither can take all the work, so
     * both compete for the one bucket. */
    const char *kv[] = {"rate.limit.rpm", "120", "worker.concurrency", "1", "store", store,
                        "key.prefix", prefix, "batch.window.ms", "0", NULL};
    rlbk_t a, b;
    rlbk_new(&a, "responses", kv);
    rlbk_new(&b, "responses", kv);
    for (int i = 0; i < RATE_CONVS; i++) rlbk_enqueue(&a, convs[i], "budget", NULL);
    int seq0 = emu_last_seq();
    int64_t t0 = rl_mono_ms();
    RL_CHECK_OK(runlane_start(a.rl));
    RL_CHECK_OK(runlane_start(b.rl));
    const char *scale = getenv("RUNLANE_TEST_TIME_SCALE"); /* slower under valgrind */
    int64_t window = 3000 * (scale && atoi(scale) > 0 ? atoi(scale) : 1);
    while (rl_mono_ms() - t0 < window) {
        runlane_event_t *e = runlane_poll(a.rl, 20);
        if (e) rlbk_take(&a, e);
        e = runlane_poll(b.rl, 20);
        if (e) rlbk_take(&b, e);
    }
    int sent = emu_api_requests_since(seq0);
    int64_t el = rl_mono_ms() - t0;
    int most = 2 + (int)(el * 120 / 60000) + 1;
    long long ca = metric(a.rl, "runlane_batches_claimed_total");
    long long cb = metric(b.rl, "runlane_batches_claimed_total");
    rlbk_free(&a);
    rlbk_free(&b);
    for (int i = 0; i < RATE_CONVS; i++) free(convs[i]);
    RL_CHECK_MSG(ca >= 1 && cb >= 1, "both clients should have work: claimed %lld and %lld", ca,
                 cb);
    RL_CHECK_MSG(sent <= most,
                 "%s: two clients sent %d requests in %lld ms at rpm=120 (at most %d)", store,
                 sent, (long long)el, most);
    RL_CHECK_MSG(sent >= 3, "%s: only %d requests in %lld ms", store, sent, (long long)el);
}

/* runlane_conversation_create (a host thread's request) takes its token
 * from the same bucket: at rpm=60 (a burst of 1) it leaves the queue's
 * bucket empty. */
static void test_responses_conversation_create_takes_a_shared_token(void) {
    rlbk_need_emu();
    rlbk_t c;
    const char *kv[] = {"rate.limit.rpm", "60", NULL};
    rlbk_new(&c, "responses", kv);
    rl_store_t *st = rlbk_store_open(c.store);
    char *id = NULL;
    RL_CHECK_OK(runlane_conversation_create(&id, c.rl, NULL));
    runlane_free(id);
    int64_t wait = 0;
    RL_CHECK_OK(st->ops->rate_take(st, 60, &wait));
    RL_CHECK_MSG(wait > 0, "the create took no token of the shared bucket");
    st->ops->destroy(st);
    rlbk_free(&c);
}

static void test_responses_rate_limit_shared_by_clients(void) {
    rlbk_need_emu();
    char store[64];
    snprintf(store, sizeof(store), "memory://rlbk-rate-%d", (int)getpid());
    shared_budget_clients(store, "runlane");
}

/* Deletes the keys of `prefix` from the Redis server at `url`
 * (redis://[auth@]host[:port][/db]). */
static void redis_unlink_prefix(const char *url, const char *prefix) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?");
    for (const char *q = p; q < end; q++)
        if (*q == '@') p = q + 1;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    char host[128];
    snprintf(host, sizeof(host), "%.*s", (int)((colon ? colon : end) - p), p);
    int port = colon ? atoi(colon + 1) : 6379, db = *end == '/' ? atoi(end + 1) : 0;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return;
    }
    if (db) freeReplyObject(redisCommand(c, "SELECT %d", db));
    char pat[128], cursor[32] = "0";
    snprintf(pat, sizeof(pat), "%s:*", prefix);
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            freeReplyObject(redisCommand(c, "UNLINK %b", r->element[1]->element[i]->str,
                                         r->element[1]->element[i]->len));
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
}

static void test_responses_rate_limit_shared_by_clients_redis(void) {
    const char *url = rl_test_redis_url();
    if (!url) {
        const char *req = getenv("RUNLANE_REQUIRE_REDIS");
        if (req && strcmp(req, "1") == 0)
            RL_FAILF("RUNLANE_REQUIRE_REDIS=1 but RUNLANE_TEST_REDIS is not set");
        RL_SKIP("RUNLANE_TEST_REDIS not set");
    }
    rlbk_need_emu();
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "rltest-rate-%d-%lld", (int)getpid(),
             (long long)rl_now_ms());
    shared_budget_clients(url, prefix);
    redis_unlink_prefix(url, prefix);
}

/* Runs last: every event of every test above, scanned for the key. */
static void test_responses_api_key_in_no_event(void) {
    if (!rlbk_have_emu) RL_SKIP("emulator not available");
    rl_buf_puts(&rlbk_all_events, "");
    RL_CHECK(rlbk_all_events.len > 1000);
    RL_CHECK(strstr(rlbk_all_events.data, RLBK_API_KEY) == NULL);
    RL_CHECK(strstr(rlbk_all_events.data, "SECRET") == NULL);
}

/* Conversation keys, kill -9 between the create and the record: a worker
 * (a real process) sends POST /conversations for a key, the emulator
 * creates it and holds the answer, and the worker is killed. The next
 * owner creates its own conversation, records it and sends the batch
 * there: the first one stays empty (the documented orphan), and only the
 * mapped one ever receives the key's messages. Needs a shared store:
 * Redis (RUNLANE_TEST_REDIS). */
static void test_responses_key_kill9_between_create_and_record(void) {
    rlbk_need_emu();
    const char *url = rl_test_redis_url();
    if (!url) RL_SKIP("RUNLANE_TEST_REDIS not set");
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "rlk9-%d-%lld", (int)getpid(), (long long)rl_now_ms());
    const char *kv[] = {"store", url, "key.prefix", prefix, "lease.ms", "1500",
                        "worker.recover.ms", "100", NULL};
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", "{\"fault_slow_ms\":20000}");
    rlemu_fault(&rlbk_emu, "hold", 1, "POST", "/v1/conversations");
    rlbk_t prod;
    rlbk_new(&prod, "responses", kv);
    rlbk_enqueue(&prod, "chat-k9", "hello", NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char err[512];
        runlane_conf_t *conf = runlane_conf_new();
        const char *base[] = {"backend", "responses", "openai.base.url", rlbk_emu.base_url,
                              "openai.api.key", RLBK_API_KEY, "openai.model", "gpt-4o",
                              "worker.poll.ms", "20", NULL};
        for (int i = 0; base[i]; i += 2) runlane_conf_set(conf, base[i], base[i + 1], err, sizeof(err));
        for (int i = 0; kv[i]; i += 2) runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
        runlane_t *rl = runlane_new(conf, err, sizeof(err));
        if (!rl || runlane_start(rl) != RUNLANE_OK) _exit(3);
        for (;;) pause();
    }
    RL_CHECK(pid > 0);
    /* the create took effect at the provider: kill the worker now */
    int convs = 0;
    int64_t deadline = rl_now_ms() + (int64_t)(15000 * rl_test_time_scale());
    while (rl_now_ms() < deadline) {
        cJSON *j = rlemu_journal(&rlbk_emu);
        convs = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "conversations"));
        cJSON_Delete(j);
        if (convs >= 1) break;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    RL_CHECK_MSG(convs == 1, "the worker did not create the key's conversation (%d)", convs);
    char *none = (char *)"x";
    RL_CHECK_OK(runlane_conversation_map_get(&none, prod.rl, "chat-k9"));
    RL_CHECK(none == NULL);
    /* the next owner, once the dead worker's lease expired */
    rlbk_t w;
    rlbk_new(&w, "responses", kv);
    RL_CHECK_OK(runlane_start(w.rl));
    rlbk_ev_t *done = rlbk_wait(&w, RUNLANE_EVENT_COMPLETED, 1, (int)(30000 * rl_test_time_scale()));
    RL_CHECK_STR("echo: hello", rlbk_str(done->j, "reply"));
    char *mapped = NULL;
    RL_CHECK_OK(runlane_conversation_map_get(&mapped, prod.rl, "chat-k9"));
    RL_CHECK(mapped && strncmp(mapped, "conv_", 5) == 0);
    cJSON *j = rlemu_journal(&rlbk_emu);
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(j, "conversations");
    RL_CHECK_INT(2, cJSON_GetArraySize(all));
    const cJSON *e;
    int with_messages = 0;
    cJSON_ArrayForEach(e, all) {
        int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(e, "messages"));
        if (strcmp(e->string, mapped) == 0) RL_CHECK_INT(1, n);
        else RL_CHECK_MSG(n == 0, "orphan %s received %d messages", e->string, n);
        if (n) with_messages++;
    }
    RL_CHECK_INT(1, with_messages);
    cJSON_Delete(j);
    cJSON *creates = rlbk_bodies("POST", "/v1/conversations");
    RL_CHECK_INT(2, cJSON_GetArraySize(creates));
    const cJSON *b;
    cJSON_ArrayForEach(b, creates)
        RL_CHECK_STR("chat-k9", rlbk_str(cJSON_GetObjectItemCaseSensitive(b, "metadata"),
                                          "runlane_key"));
    cJSON_Delete(creates);
    runlane_free(mapped);
    rlbk_free(&w);
    rlbk_free(&prod);
}

static void test_responses_conversation_keys(void) {
    rlbk_check_key_flow("responses", "/v1/conversations", "conv_");
}

/* The lease estimate counts from when a renewal was sent, not from the
 * last drive before it: a worker stalled (SIGSTOP here; a long GC pause or
 * a swapped-out host alike) for 0.85 * lease.ms while a turn waits for its
 * tool outputs renews as soon as it runs again and then posts the outputs.
 * Before, the renewal was credited to the drive before the stall, the
 * outputs found "too little lease left", and the batch was released and
 * its tool calls raised a second time. The worker is a real process. */
static void test_responses_stalled_worker_keeps_its_turn(void) {
    rlbk_need_emu();
    double sc = rl_test_time_scale();
    int lease = (int)(2000 * sc);
    char lease_s[32];
    snprintf(lease_s, sizeof(lease_s), "%d", lease);
    char *conv = new_conv();
    int up[2], down[2];
    RL_CHECK(pipe(up) == 0 && pipe(down) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* the child reports through its exit status: 0 all as expected
         * (a failed check of rlbk_* lands here, not in the parent's run) */
        if (setjmp(rl_t_jmp) != 0) _exit(9);
        close(up[0]);
        close(down[1]);
        rlbk_t c;
        const char *kv[] = {"lease.ms", lease_s, NULL};
        rlbk_new(&c, "responses", kv);
        rlbk_enqueue(&c, conv, "weather? [[tool:get_weather {}]]", NULL);
        if (runlane_start(c.rl) != RUNLANE_OK) _exit(2);
        rlbk_ev_t *tc = rlbk_wait(&c, RUNLANE_EVENT_TOOL_CALLS, 1, TIMEOUT);
        char b = 's';
        if (write(up[1], &b, 1) != 1 || read(down[0], &b, 1) != 1) _exit(3);
        char *outs = rlbk_outputs_for(tc, "sunny");
        if (rlbk_submit_from_thread(c.rl, tc->batch_id, outs) != RUNLANE_OK) _exit(4);
        free(outs);
        rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, TIMEOUT);
        if (done->attempt != 1) _exit(5);
        if (rlbk_count(&c, RUNLANE_EVENT_TOOL_CALLS) != 1) _exit(6);
        if (rlbk_count(&c, RUNLANE_EVENT_LEASE_LOST) != 0) _exit(7);
        _exit(0);
    }
    RL_CHECK(pid > 0);
    close(up[1]);
    close(down[0]);
    char b;
    RL_CHECK(read(up[0], &b, 1) == 1);
    kill(pid, SIGSTOP);
    usleep((useconds_t)lease * 850);
    kill(pid, SIGCONT);
    RL_CHECK(write(down[1], &b, 1) == 1);
    int status = 0;
    waitpid(pid, &status, 0);
    close(up[0]);
    close(down[1]);
    RL_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "the worker process ended with status %d (5: a second attempt, 6: the tool "
                 "calls raised twice, 7: a lease lost, 9: an event did not come)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    /* one create, one with the outputs: nothing was sent twice */
    RL_CHECK_INT(2, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    free(conv);
}

/* Renewals that fail for most of a lease while a create that went out is
 * still unanswered (a Redis failover; seen in the Cluster chaos run): the
 * worker keeps following that create. Before, its lease watchdog cancelled
 * it and released the batch once the renewals had failed for
 * lease.ms * 3/4; the batch was claimed again at once, the conversation
 * already held its messages, and a second create (no input) asked for a
 * turn while the first still ran: two turns at once, which OpenAI refuses
 * (conversation_locked) and the emulator, with its lock off, counts.
 * The store refuses this worker's commands for 0.85 * lease.ms (an ACL
 * change on the test server, right after a renewal), then takes them
 * again while the lease still holds. Needs RUNLANE_TEST_REDIS. */
static void test_responses_sent_create_outlives_failed_renewals(void) {
    rlbk_need_emu();
    const char *url = rl_test_redis_url();
    if (!url) RL_SKIP("RUNLANE_TEST_REDIS not set");
    const char *hp = strstr(url, "://");
    RL_CHECK(hp != NULL);
    if (!hp) return;
    hp += 3;
    if (strchr(hp, '@')) RL_SKIP("RUNLANE_TEST_REDIS carries credentials: no ACL user is made");
    char host[128] = "127.0.0.1";
    int port = 6379;
    sscanf(hp, "%127[^:/]:%d", host, &port);
    redisContext *admin = redisConnect(host, port);
    RL_CHECK(admin && !admin->err);
    if (!admin || admin->err) return;
    char user[64], acl_url[512], prefix[64];
    snprintf(user, sizeof(user), "rlacl%d", (int)getpid());
    snprintf(acl_url, sizeof(acl_url), "redis://%s:pw@%s", user, hp);
    snprintf(prefix, sizeof(prefix), "rlacl-%d-%lld", (int)getpid(), (long long)rl_now_ms());
    redisReply *r = redisCommand(admin, "ACL SETUSER %s reset on >pw ~* &* +@all", user);
    RL_CHECK_MSG(r && r->type == REDIS_REPLY_STATUS, "ACL SETUSER: %s",
                 r && r->str ? r->str : "no reply");
    freeReplyObject(r);
    double sc = rl_test_time_scale();
    int lease = (int)(2000 * sc);
    char lease_s[32], cfg[160];
    snprintf(lease_s, sizeof(lease_s), "%d", lease);
    /* The turn runs 2.5 leases; its answer (the stream) is held 1.5. */
    snprintf(cfg, sizeof(cfg), "{\"conversation_lock\":0,\"latency_ms\":%d,\"fault_slow_ms\":%d}",
             lease * 5 / 2, lease * 3 / 2);
    rlemu_control(&rlbk_emu, "POST", "/_emulator/config", cfg);
    rlemu_fault(&rlbk_emu, "hold", 1, "POST", "/v1/responses");
    char *conv = new_conv();
    const char *kv[] = {"store", acl_url, "key.prefix", prefix, "lease.ms", lease_s,
                        "worker.recover.ms", "100", NULL};
    rlbk_t c;
    rlbk_new(&c, "responses", kv);
    rlbk_enqueue(&c, conv, "hello", NULL);
    RL_CHECK_OK(runlane_start(c.rl));
    int64_t deadline = rl_now_ms() + (int64_t)(15000 * sc);
    while (rl_now_ms() < deadline && rlemu_count(&rlbk_emu, "POST", "/v1/responses") < 1)
        usleep(5000);
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    /* Right after a renewal, so that the lease outlives the outage. */
    int64_t seen = __atomic_load_n(&c.rl->m.leases_renewed, __ATOMIC_RELAXED);
    while (rl_now_ms() < deadline &&
           __atomic_load_n(&c.rl->m.leases_renewed, __ATOMIC_RELAXED) == seen)
        usleep(1000);
    r = redisCommand(admin, "ACL SETUSER %s -@all", user);
    freeReplyObject(r);
    usleep((useconds_t)lease * 850);
    r = redisCommand(admin, "ACL SETUSER %s +@all", user);
    freeReplyObject(r);
    rlbk_ev_t *done = rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, 1, (int)(30000 * sc));
    RL_CHECK_STR("echo: hello", rlbk_str(done->j, "reply"));
    RL_CHECK_INT(1, done->attempt);
    RL_CHECK_INT(0, rlbk_count(&c, RUNLANE_EVENT_LEASE_LOST));
    RL_CHECK_INT(1, rlemu_count(&rlbk_emu, "POST", "/v1/responses"));
    cJSON *j = rlemu_journal(&rlbk_emu);
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(rlemu_journal_conv(j, conv), "overlaps");
    RL_CHECK_MSG(!cJSON_IsNumber(ov) || ov->valueint == 0, "%d turns at once",
                 cJSON_IsNumber(ov) ? ov->valueint : -1);
    cJSON_Delete(j);
    rlbk_free(&c);
    r = redisCommand(admin, "ACL DELUSER %s", user);
    freeReplyObject(r);
    redisFree(admin);
    free(conv);
}

/* A host that stops polling: the worker claims no new batch once
 * worker.max.pending.events events wait, and claims again as it polls. */
static void test_responses_unpolled_events_hold_back_claims(void) {
    rlbk_need_emu();
    rlbk_t c;
    const char *kv[] = {"worker.max.pending.events", "4", "worker.concurrency", "1", NULL};
    rlbk_new(&c, "responses", kv);
    enum { N = 10 };
    char *convs[N];
    for (int i = 0; i < N; i++) {
        convs[i] = new_conv();
        rlbk_enqueue(&c, convs[i], "hello", NULL);
    }
    RL_CHECK_OK(runlane_start(c.rl));
    /* Without the hold all N turns end well inside this wait. */
    usleep((useconds_t)(1500 * 1000 * rl_test_time_scale()));
    char *m = NULL;
    RL_CHECK_OK(runlane_metrics(&m, c.rl));
    const char *p = m ? strstr(m, "\nrunlane_batches_claimed_total ") : NULL;
    long claimed = p ? strtol(p + strlen("\nrunlane_batches_claimed_total "), NULL, 10) : -1;
    free(m);
    /* every turn emits at least one event (completed): at most 4 + 1 claims */
    RL_CHECK(claimed >= 1 && claimed <= 5);
    rlbk_wait(&c, RUNLANE_EVENT_COMPLETED, N, TIMEOUT);
    RL_CHECK_INT(N, rlbk_count(&c, RUNLANE_EVENT_COMPLETED));
    for (int i = 0; i < N; i++) free(convs[i]);
    rlbk_free(&c);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    rlbk_have_emu = rlemu_start(&rlbk_emu, NULL) == 0;
    if (!rlbk_have_emu) fprintf(stderr, "emulator not available: tests are skipped\n");
    RL_RUN(test_responses_conversation_keys);
    RL_RUN(test_responses_key_kill9_between_create_and_record);
    RL_RUN(test_responses_batch_is_one_turn_with_items_in_order);
    RL_RUN(test_responses_joined_mode_and_instructions);
    RL_RUN(test_responses_single_tool_call);
    RL_RUN(test_responses_parallel_tool_calls_and_error_output);
    RL_RUN(test_responses_tool_timeout_error_outputs);
    RL_RUN(test_responses_tool_timeout_cancel_dead_letters);
    RL_RUN(test_responses_conversation_locked_defers_then_succeeds);
    RL_RUN(test_responses_failed_turn_is_retried_without_resending);
    RL_RUN(test_responses_second_reconcile_of_an_attempt_sends_nothing_twice);
    RL_RUN(test_responses_dangling_calls_of_a_dead_turn_do_not_poison);
    RL_RUN(test_responses_lease_guard_follows_renewals);
    RL_RUN(test_responses_sent_create_outlives_failed_renewals);
    RL_RUN(test_responses_stalled_worker_keeps_its_turn);
    RL_RUN(test_responses_http_errors_retry_then_dead);
    RL_RUN(test_responses_invalid_request_is_dead_at_once);
    RL_RUN(test_responses_background_polling_mode);
    RL_RUN(test_responses_dead_lettered_response_is_settled_before_the_next_batch);
    RL_RUN(test_responses_adopts_running_response_after_crash);
    RL_RUN(test_responses_tool_calls_raised_again_after_crash);
    RL_RUN(test_responses_reconciles_messages_already_sent);
    RL_RUN(test_responses_reconciles_completed_turn_without_sending);
    RL_RUN(test_responses_stream_cut_falls_back_to_polling);
    RL_RUN(test_responses_lost_create_answer_is_reconciled);
    RL_RUN(test_responses_large_batch_metadata_fits);
    RL_RUN(test_responses_interrupt_cancels_and_restarts_with_everything);
    RL_RUN(test_responses_interrupt_cancels_streamed_turn_and_restarts);
    RL_RUN(test_responses_stream_without_interrupt_is_not_background);
    RL_RUN(test_responses_interrupt_while_waiting_for_tools);
    RL_RUN(test_responses_reply_is_redelivered_until_confirmed);
    RL_RUN(test_responses_conversation_create_helper);
    RL_RUN(test_responses_bad_key_errors_never_show_it);
    RL_RUN(test_responses_conversation_create_takes_a_shared_token);
    RL_RUN(test_responses_rate_limit_shared_by_clients);
    RL_RUN(test_responses_rate_limit_shared_by_clients_redis);
    RL_RUN(test_responses_api_key_in_no_event);
    RL_RUN(test_responses_unpolled_events_hold_back_claims);
    if (rlbk_have_emu) rlemu_stop(&rlbk_emu);
    rl_buf_free(&rlbk_all_events);
    return rl_test_summary();
}
