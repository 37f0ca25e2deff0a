/* cmd_demo.c - `runlane demo`: simulated users send bursts of messages to
 * several conversations; the worker turns each burst into one batch, runs
 * one turn per conversation at a time, keeps messages that arrive mid-turn
 * for the next turn, and the demo checks at the end that every message was
 * answered exactly once and in order.
 *
 * The turn itself is run by this program (custom backend), so the demo needs
 * no API key and, on the default memory store, no Redis. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

typedef struct sent {
    char conv[128];
    char text[96];
    char id[RUNLANE_ID_MAX];
    int64_t at_ms; /* when the simulated user sends it, from the start */
    int touch;     /* a typing signal instead of a message */
    int delivered; /* times it came back in a batch */
} sent_t;

typedef struct turn {
    char batch_id[RUNLANE_ID_MAX];
    char conv[128];
    int64_t done_ms;
    int nmsgs;
} turn_t;

static void sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int cmp_sent(const void *a, const void *b) {
    const sent_t *x = a, *y = b;
    return x->at_ms < y->at_ms ? -1 : x->at_ms > y->at_ms;
}

int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv) {
    static const cli_optspec_t specs[] = {
        {"conversations", 'n', CLI_ARG_REQUIRED, 1},
        {"turn-ms", 0, CLI_ARG_REQUIRED, 2},
        {"window-ms", 0, CLI_ARG_REQUIRED, 3},
        {"quiet", 'q', CLI_ARG_NONE, 4},
        {"backend", 0, CLI_ARG_REQUIRED, 5},
        {"emulator", 0, CLI_ARG_NONE, 6},
        {NULL, 0, 0, 0},
    };
    uint64_t nconv = 4, turn_ms = 400, window_ms = 300;
    int quiet = 0, emulator = 0;
    const char *backend = "custom";
    cli_parser_t p;
    cli_parser_init(&p, ctx, argc, argv);
    const char *val;
    int id;
    while ((id = cli_next(&p, specs, &val)) != CLI_END) {
        if (id == CLI_HELP) return cli_print_help(cli_help_demo);
        if (id == 1 && (!cli_parse_u64(val, &nconv) || nconv < 1 || nconv > 1000))
            cli_usage_fail(ctx, "--conversations: expected 1..1000, got \"%s\"", val);
        if (id == 2 && (!cli_parse_u64(val, &turn_ms) || turn_ms > 60000))
            cli_usage_fail(ctx, "--turn-ms: expected 0..60000, got \"%s\"", val);
        if (id == 3 && (!cli_parse_u64(val, &window_ms) || window_ms > 60000))
            cli_usage_fail(ctx, "--window-ms: expected 0..60000, got \"%s\"", val);
        if (id == 4) quiet = 1;
        if (id == 5) backend = val;
        if (id == 6) emulator = 1;
        if (id == CLI_POSITIONAL) cli_usage_fail(ctx, "unexpected argument \"%s\"", val);
    }

    runlane_conf_t *conf = cli_conf(ctx);
    char err[512], num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)window_ms);
    runlane_conf_set(conf, "batch.window.ms", num, err, sizeof(err));
    snprintf(num, sizeof(num), "%llu", (unsigned long long)(window_ms * 4 + 100));
    runlane_conf_set(conf, "batch.max.wait.ms", num, err, sizeof(err));
    runlane_conf_set(conf, "worker.poll.ms", "20", err, sizeof(err));
    int http = strcmp(backend, "custom") != 0;
    if (runlane_conf_set(conf, "backend", backend, err, sizeof(err)))
        cli_usage_fail(ctx, "--backend: %s", err);
    if (http) {
        /* One tool the model may call; the emulator calls it on a marker. */
        runlane_conf_set(conf, "openai.tools",
                         "[{\"type\":\"function\",\"name\":\"get_order_status\",\"description\":"
                         "\"Shipping status of the user's latest order\",\"parameters\":{\"type\":"
                         "\"object\",\"properties\":{\"order\":{\"type\":\"string\"}}}}]",
                         err, sizeof(err));
        char model[8];
        size_t msz = sizeof(model);
        if (runlane_conf_get(conf, "openai.model", model, &msz) == RUNLANE_OK && msz <= 1)
            runlane_conf_set(conf, "openai.model", "gpt-4o-mini", err, sizeof(err));
    }
    int code = 0;
    runlane_t *rl = cli_open(ctx, conf, &code);
    runlane_conf_destroy(conf);
    if (!rl) return code;

    /* The script: per conversation a burst of 3 messages 40 ms apart with a
     * typing signal, then a second burst that lands while the first turn is
     * still running. */
    size_t cap = nconv * 8, n = 0;
    sent_t *script = calloc(cap, sizeof(*script));
    if (!script) return CLI_EXIT_RUNTIME;
    static const char *first[] = {"hi!", "quick question", "is my order shipped?"};
    static const char *first_emu[] = {"hi!", "quick question",
                                      "is my order shipped? [[tool:get_order_status {\"order\":\"A17\"}]]"};
    char (*convs)[128] = calloc(nconv, sizeof(*convs));
    for (uint64_t c = 0; c < nconv; c++) {
        if (!http) {
            snprintf(convs[c], sizeof(convs[c]), "conv_demo_%llu", (unsigned long long)c);
            continue;
        }
        char *cid = NULL;
        runlane_err_t rc = strcmp(backend, "assistants") == 0 ? runlane_thread_create(&cid, rl, NULL)
                                                              : runlane_conversation_create(&cid, rl, NULL);
        if (rc) return cli_lib_fail(ctx, rc, "create a conversation");
        snprintf(convs[c], sizeof(convs[c]), "%s", cid);
        runlane_free(cid);
    }
    static const char *second[] = {"sorry, one more thing", "can I change the address?"};
    for (uint64_t c = 0; c < nconv; c++) {
        int64_t t0 = (int64_t)(c * 70);
        for (int k = 0; k < 3; k++) {
            sent_t *s = &script[n++];
            snprintf(s->conv, sizeof(s->conv), "%s", convs[c]);
            snprintf(s->text, sizeof(s->text), "%s", (emulator ? first_emu : first)[k]);
            s->at_ms = t0 + k * 40;
        }
        sent_t *t = &script[n++];
        snprintf(t->conv, sizeof(t->conv), "%s", convs[c]);
        t->touch = 1;
        t->at_ms = t0 + 100;
        int64_t t1 = t0 + 100 + (int64_t)window_ms + 80 + (int64_t)turn_ms / 3;
        for (int k = 0; k < 2; k++) {
            sent_t *s = &script[n++];
            snprintf(s->conv, sizeof(s->conv), "%s", convs[c]);
            snprintf(s->text, sizeof(s->text), "%s", second[k]);
            s->at_ms = t1 + k * 30;
        }
    }
    qsort(script, n, sizeof(*script), cmp_sent);

    if (runlane_start(rl) != RUNLANE_OK) return cli_lib_fail(ctx, runlane_error_code(runlane_error_last()), "start");
    char store[256];
    cli_store_display(store, sizeof(store), ctx);
    if (http)
        printf("runlane demo: %llu conversations, window %llu ms, backend %s%s, store %s\n\n",
               (unsigned long long)nconv, (unsigned long long)window_ms, backend,
               emulator ? " (OpenAI emulator)" : "", store);
    else
        printf("runlane demo: %llu conversations, window %llu ms, turn %llu ms, store %s\n\n",
               (unsigned long long)nconv, (unsigned long long)window_ms, (unsigned long long)turn_ms,
               store);

    turn_t *turns = calloc(nconv, sizeof(*turns));
    size_t nturns = 0, next = 0, total_msgs = 0, answered = 0, batches = 0, bad_order = 0;
    for (size_t i = 0; i < n; i++) total_msgs += script[i].touch ? 0 : 1;
    int64_t start = cli_mono_ms();
    int64_t deadline = start + 30000 + (int64_t)(nconv * (turn_ms + window_ms) * 2);
    while ((answered < total_msgs || nturns > 0) && cli_mono_ms() < deadline) {
        int64_t now = cli_mono_ms() - start;
        /* Users act on schedule. */
        while (next < n && script[next].at_ms <= now) {
            sent_t *s = &script[next++];
            char mid[RUNLANE_ID_MAX];
            runlane_err_t rc = s->touch ? runlane_touch(rl, s->conv)
                                        : runlane_enqueue(mid, sizeof(mid), NULL, rl, s->conv, s->text, NULL);
            if (rc) return cli_lib_fail(ctx, rc, "enqueue");
            if (!s->touch) snprintf(s->id, sizeof(s->id), "%s", mid);
            if (!quiet)
                printf("%6lld ms  %-12.12s %s %s\n", (long long)now, s->conv,
                       s->touch ? "...   " : "user: ", s->touch ? "(typing)" : s->text);
        }
        /* Turns that finished are acknowledged. */
        for (size_t i = 0; i < nturns;) {
            if (turns[i].done_ms > now) {
                i++;
                continue;
            }
            if (!quiet)
                printf("%6lld ms  %-12.12s bot:  answered %d message%s in one turn (batch %s)\n",
                       (long long)now, turns[i].conv, turns[i].nmsgs, turns[i].nmsgs == 1 ? "" : "s",
                       turns[i].batch_id);
            runlane_err_t rc = runlane_batch_ack(rl, turns[i].batch_id, NULL);
            if (rc) return cli_lib_fail(ctx, rc, "ack");
            turns[i] = turns[--nturns];
        }
        int64_t wait = 10;
        runlane_event_t *ev = runlane_poll(rl, (int)wait);
        if (!ev) continue;
        runlane_event_type_t et = runlane_event_type(ev);
        if (et == RUNLANE_EVENT_TOOL_CALLS) {
            /* The app's own code answers tool calls. */
            cJSON *j = cJSON_Parse(runlane_event_json(ev)), *call;
            cJSON *outs = cJSON_CreateArray();
            cJSON_ArrayForEach(call, cJSON_GetObjectItem(j, "tool_calls")) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "tool_call_id", cJSON_GetObjectItem(call, "id")->valuestring);
                cJSON_AddStringToObject(o, "output", "{\"order\":\"A17\",\"status\":\"shipped\"}");
                cJSON_AddItemToArray(outs, o);
                if (!quiet)
                    printf("%6lld ms  %-12.12s tool: %s(%s) -> shipped\n", (long long)(cli_mono_ms() - start),
                           runlane_event_conversation_id(ev), cJSON_GetObjectItem(call, "name")->valuestring,
                           cJSON_GetObjectItem(call, "arguments")->valuestring);
            }
            char *outj = cJSON_PrintUnformatted(outs);
            runlane_err_t rc = runlane_submit_tool_outputs(rl, runlane_event_batch_id(ev), outj);
            free(outj);
            cJSON_Delete(outs);
            cJSON_Delete(j);
            if (rc) return cli_lib_fail(ctx, rc, "submit tool outputs");
        } else if (et == RUNLANE_EVENT_COMPLETED) {
            batches++;
            cJSON *j = cJSON_Parse(runlane_event_json(ev)), *mid;
            int count = 0;
            /* The reply names the messages it answered, in order: each must
             * be the conversation's next unanswered one. */
            cJSON_ArrayForEach(mid, cJSON_GetObjectItem(j, "message_ids")) {
                size_t k;
                for (k = 0; k < n; k++)
                    if (!script[k].touch && !script[k].delivered &&
                        strcmp(script[k].conv, runlane_event_conversation_id(ev)) == 0)
                        break;
                if (k == n || strcmp(script[k].id, mid->valuestring) != 0) bad_order++;
                if (k < n) script[k].delivered++;
                count++;
                answered++;
            }
            cJSON *reply = cJSON_GetObjectItem(j, "reply");
            char shown[96];
            snprintf(shown, sizeof(shown), "%s", cJSON_IsString(reply) ? reply->valuestring : "");
            for (char *c = shown; *c; c++)
                if (*c == '\n' || *c == '\r') *c = ' ';
            if (!quiet)
                printf("%6lld ms  %-12.12s bot:  (%d message%s) %s\n", (long long)(cli_mono_ms() - start),
                       runlane_event_conversation_id(ev), count, count == 1 ? "" : "s", shown);
            cJSON_Delete(j);
            runlane_reply_ack(rl, runlane_event_batch_id(ev));
        } else if (et == RUNLANE_EVENT_RUN_STARTED && !quiet) {
            printf("%6lld ms  %-12.12s turn: started (attempt %d)\n", (long long)(cli_mono_ms() - start),
                   runlane_event_conversation_id(ev), runlane_event_attempt(ev));
        } else if ((et == RUNLANE_EVENT_FAILED || et == RUNLANE_EVENT_DEAD || et == RUNLANE_EVENT_ERROR) && !quiet) {
            printf("%6lld ms  %-12.12s %s: %s\n", (long long)(cli_mono_ms() - start),
                   runlane_event_conversation_id(ev), runlane_event_type_name(et),
                   runlane_event_error_message(ev));
        }
        if (et == RUNLANE_EVENT_BATCH) {
            batches++;
            cJSON *j = cJSON_Parse(runlane_event_json(ev));
            cJSON *m;
            int count = 0;
            /* Every message of the batch, matched against the script in
             * order: the first undelivered message of the conversation
             * must be the one that comes. */
            cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "messages")) {
                const char *text = cJSON_GetObjectItem(m, "content")->valuestring;
                size_t k;
                for (k = 0; k < n; k++)
                    if (!script[k].touch && !script[k].delivered &&
                        strcmp(script[k].conv, runlane_event_conversation_id(ev)) == 0)
                        break;
                if (k == n || strcmp(script[k].text, text) != 0) bad_order++;
                if (k < n) script[k].delivered++;
                count++;
                answered++;
            }
            cJSON_Delete(j);
            now = cli_mono_ms() - start;
            if (!quiet)
                printf("%6lld ms  %-12.12s turn: %d message%s batched, attempt %d\n", (long long)now,
                       runlane_event_conversation_id(ev), count, count == 1 ? "" : "s",
                       runlane_event_attempt(ev));
            if (nturns < nconv) {
                turn_t *t = &turns[nturns++];
                snprintf(t->batch_id, sizeof(t->batch_id), "%s", runlane_event_batch_id(ev));
                snprintf(t->conv, sizeof(t->conv), "%s", runlane_event_conversation_id(ev));
                t->done_ms = now + (int64_t)turn_ms;
                t->nmsgs = count;
            }
        }
        runlane_event_destroy(ev);
    }
    /* Let the last turns finish. */
    while (nturns) {
        sleep_ms(turns[nturns - 1].done_ms - (cli_mono_ms() - start));
        runlane_batch_ack(rl, turns[nturns - 1].batch_id, NULL);
        nturns--;
    }
    runlane_stop(rl, RUNLANE_STOP_DRAIN, 2000);
    size_t lost = 0, dup = 0;
    for (size_t i = 0; i < n; i++) {
        if (script[i].touch) continue;
        if (script[i].delivered == 0) lost++;
        if (script[i].delivered > 1) dup++;
    }
    printf("\n%zu messages from %llu conversations -> %zu turns; lost %zu, duplicated %zu, out of order %zu\n",
           total_msgs, (unsigned long long)nconv, batches, lost, dup, bad_order);
    char *metrics = NULL;
    if (!quiet && runlane_metrics(&metrics, rl) == RUNLANE_OK) {
        printf("\nmetrics (Prometheus text, excerpt):\n");
        for (char *line = strtok(metrics, "\n"); line; line = strtok(NULL, "\n"))
            if (line[0] != '#' && (strstr(line, "enqueued") || strstr(line, "batches_")))
                printf("  %s\n", line);
        runlane_free(metrics);
    }
    free(turns);
    free(script);
    free(convs);
    runlane_destroy(rl);
    int ok = lost == 0 && dup == 0 && bad_order == 0 && batches < total_msgs;
    printf("%s\n", ok ? "demo OK: every message answered once, in order, in batched turns"
                      : "demo FAILED");
    return ok ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
}
