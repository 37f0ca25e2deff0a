/* fuzz_store.c - store records through the public API on the memory store:
 * runlane_enqueue's options JSON and runlane_enqueue_many's messages JSON.
 *
 * Input: up to 16 operations, each [op] then \0-separated fields:
 *   op even: runlane_enqueue: [c] conversation (c < 0xC0: one of four fixed
 *            ids, else a raw field), content, options ("" means NULL);
 *   op odd:  runlane_enqueue_many: messages JSON.
 * Invariants:
 *   - an error leaves the queue as it was (status "pending" unchanged, no
 *     result) and is INVALID_ARG or TOO_LARGE; an invalid conversation id or
 *     content (bad UTF-8, control characters, too long) is always refused;
 *   - a success grows "pending" by exactly the messages not reported as
 *     duplicates; runlane_enqueue_many answers one {"id","duplicate"} per
 *     message, in order;
 *   - idempotency: the same key in the same conversation gives the first
 *     message's id and duplicate=true (also within one enqueue_many);
 *   - then a worker claims everything: every stored message is delivered
 *     exactly once, in its own conversation, in enqueue order, with its
 *     content, instructions and metadata verbatim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "runlane.h"

#define MAX_BYTES 4096

typedef struct rec {
    char id[RUNLANE_ID_MAX];
    char *conv, *content;
    cJSON *instructions, *metadata; /* as given (NULL when absent) */
    int seq;                        /* enqueue order */
    int seen;
} rec_t;

typedef struct ikey {
    char *conv, *key;
    char id[RUNLANE_ID_MAX];
} ikey_t;

typedef struct state {
    rec_t recs[512];
    int nrecs;
    ikey_t keys[512];
    int nkeys;
    char *ambig[512]; /* conversations given a repeated idempotency_key member */
    int nambig;
} state_t;

static long long pending_of(runlane_t *rl) {
    char *s = NULL;
    FZ_CHECK(runlane_status(&s, rl, NULL) == RUNLANE_OK, "runlane_status failed: %s",
             runlane_error_message(runlane_error_last()));
    cJSON *j = cJSON_Parse(s);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pending");
    FZ_CHECK(cJSON_IsNumber(p), "status without pending: %s", s);
    long long v = (long long)p->valuedouble;
    cJSON_Delete(j);
    runlane_free(s);
    return v;
}

/* The oracle of runlane.h: 1..256 bytes of valid UTF-8 without control
 * characters. Decides only what must fail. */
static int utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n;
        unsigned c = *p;
        if (c < 0x80) n = 0;
        else if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c >= 0xE0 && c <= 0xEF) n = 2;
        else if (c >= 0xF0 && c <= 0xF4) n = 3;
        else return 0;
        unsigned cp = n == 0 ? c : n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

static int conv_must_fail(const char *c) {
    size_t n = strlen(c);
    if (n == 0 || n > RUNLANE_CONVERSATION_ID_MAX || !utf8_ok(c)) return 1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)c[i] < 0x20 || c[i] == 0x7F) return 1;
    return 0;
}

static int content_must_fail(const char *c) { return !utf8_ok(c) || strlen(c) > MAX_BYTES; }

/* How many members named `key` the object has (JSON allows repeats; which
 * one the library uses is not specified, so the oracle looks away). */
static int members(const cJSON *o, const char *key) {
    int n = 0;
    const cJSON *m;
    if (cJSON_IsObject(o))
        cJSON_ArrayForEach(m, o) n += m->string && strcmp(m->string, key) == 0;
    return n;
}

static int ambiguous(state_t *st, const char *conv) {
    for (int i = 0; i < st->nambig; i++)
        if (strcmp(st->ambig[i], conv) == 0) return 1;
    return 0;
}

static ikey_t *find_key(state_t *st, const char *conv, const char *key) {
    for (int i = 0; i < st->nkeys; i++)
        if (strcmp(st->keys[i].conv, conv) == 0 && strcmp(st->keys[i].key, key) == 0)
            return &st->keys[i];
    return NULL;
}

/* A message the store took: `opts` is the object with its optional
 * members (may be NULL). `dup` and `id` as reported. Returns 1 if fresh. */
static int account(state_t *st, const char *conv, const char *content, const cJSON *opts,
                   const char *id, int dup) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(opts, "idempotency_key");
    if (members(opts, "idempotency_key") > 1 || ambiguous(st, conv)) {
        /* Which key counts is unspecified: from now on this conversation's
         * duplicates are taken as reported. */
        if (!ambiguous(st, conv) && st->nambig < (int)(sizeof(st->ambig) / sizeof(st->ambig[0])))
            st->ambig[st->nambig++] = strdup(conv);
        if (dup) return 0;
    } else if (cJSON_IsString(k)) {
        ikey_t *e = find_key(st, conv, k->valuestring);
        if (e) {
            FZ_CHECK(dup, "idempotency key \"%s\" reused in its conversation but not a duplicate",
                     k->valuestring);
            FZ_CHECK(strcmp(e->id, id) == 0, "duplicate got id %s, the first message had %s", id,
                     e->id);
            return 0;
        }
        FZ_CHECK(!dup, "first use of idempotency key \"%s\" reported as a duplicate", k->valuestring);
        if (st->nkeys < (int)(sizeof(st->keys) / sizeof(st->keys[0]))) {
            ikey_t *n = &st->keys[st->nkeys++];
            n->conv = strdup(conv);
            n->key = strdup(k->valuestring);
            snprintf(n->id, sizeof(n->id), "%s", id);
        }
    } else {
        FZ_CHECK(!dup, "a message without idempotency key reported as a duplicate");
    }
    FZ_CHECK(st->nrecs < (int)(sizeof(st->recs) / sizeof(st->recs[0])), "too many messages");
    rec_t *r = &st->recs[st->nrecs];
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->conv = strdup(conv);
    r->content = strdup(content);
    if (members(opts, "instructions") == 1)
        r->instructions = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(opts, "instructions"), 1);
    if (members(opts, "metadata") == 1)
        r->metadata = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(opts, "metadata"), 1);
    r->seq = st->nrecs++;
    for (int i = 0; i < r->seq; i++)
        FZ_CHECK(strcmp(st->recs[i].id, id) != 0, "message id %s given twice", id);
    return 1;
}

static void op_enqueue(state_t *st, runlane_t *rl, fz_in_t *in) {
    static const char *const pool[4] = {"c1", "conv:{1}*?[a]", "thread_\xF0\x9F\x99\x82 \"x\"\\",
                                        "c1:"};
    unsigned c = fz_byte(in);
    char *conv = c < 0xC0 ? strdup(pool[c % 4]) : fz_field(in, 0, NULL);
    char *content = fz_field(in, 0, NULL);
    char *opts = fz_field(in, 0, NULL);
    long long before = pending_of(rl);
    char id[RUNLANE_ID_MAX];
    int dup = -1;
    runlane_err_t rc = runlane_enqueue(id, sizeof(id), &dup, rl, conv, content, *opts ? opts : NULL);
    long long after = pending_of(rl);
    if (getenv("RUNLANE_FUZZ_VERBOSE"))
        fprintf(stderr, "  enqueue(\"%s\", \"%s\", %s) -> %d %s dup=%d\n", conv, content,
                *opts ? opts : "NULL", rc, rc ? runlane_error_message(runlane_error_last()) : id, dup);
    if (rc != RUNLANE_OK) {
        FZ_CHECK(rc == RUNLANE_ERR_INVALID_ARG || rc == RUNLANE_ERR_TOO_LARGE,
                 "runlane_enqueue returned %d (%s)", rc, runlane_error_message(runlane_error_last()));
        FZ_CHECK(after == before, "failed enqueue changed pending from %lld to %lld", before, after);
    } else {
        FZ_CHECK(!conv_must_fail(conv), "invalid conversation id accepted");
        FZ_CHECK(!content_must_fail(content), "invalid content accepted");
        FZ_CHECK(dup == 0 || dup == 1, "duplicate_out not set");
        cJSON *o = *opts ? cJSON_Parse(opts) : NULL;
        int fresh = account(st, conv, content, o, id, dup);
        cJSON_Delete(o);
        FZ_CHECK(after == before + fresh, "enqueue (fresh %d) moved pending from %lld to %lld", fresh,
                 before, after);
    }
    free(conv);
    free(content);
    free(opts);
}

static void op_enqueue_many(state_t *st, runlane_t *rl, fz_in_t *in) {
    char *json = fz_field(in, 0, NULL);
    cJSON *arr = cJSON_Parse(json);
    if (cJSON_GetArraySize(arr) + st->nrecs > 500) { /* bounded bookkeeping */
        cJSON_Delete(arr);
        free(json);
        return;
    }
    long long before = pending_of(rl);
    char *res = (char *)"unset";
    runlane_err_t rc = runlane_enqueue_many(&res, rl, json);
    long long after = pending_of(rl);
    if (getenv("RUNLANE_FUZZ_VERBOSE"))
        fprintf(stderr, "  enqueue_many(%s) -> %d %s\n", json, rc,
                rc ? runlane_error_message(runlane_error_last()) : res);
    if (rc != RUNLANE_OK) {
        FZ_CHECK(rc == RUNLANE_ERR_INVALID_ARG || rc == RUNLANE_ERR_TOO_LARGE,
                 "runlane_enqueue_many returned %d (%s)", rc,
                 runlane_error_message(runlane_error_last()));
        FZ_CHECK(res == NULL, "failed enqueue_many left a result");
        FZ_CHECK(after == before, "failed enqueue_many changed pending from %lld to %lld", before,
                 after);
    } else {
        FZ_CHECK(cJSON_IsArray(arr), "enqueue_many accepted a non-array");
        cJSON *r = cJSON_Parse(res);
        FZ_CHECK(cJSON_IsArray(r) && cJSON_GetArraySize(r) == cJSON_GetArraySize(arr),
                 "result %s does not answer each of %d messages", res, cJSON_GetArraySize(arr));
        int fresh = 0, i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, arr) {
            const cJSON *a = cJSON_GetArrayItem(r, i++);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
            const cJSON *dup = cJSON_GetObjectItemCaseSensitive(a, "duplicate");
            FZ_CHECK(cJSON_IsString(id) && cJSON_IsBool(dup), "bad result item in %s", res);
            const cJSON *conv = cJSON_GetObjectItemCaseSensitive(m, "conversation_id");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            FZ_CHECK(cJSON_IsString(conv) && cJSON_IsString(content),
                     "a message without string conversation_id/content accepted");
            FZ_CHECK(!conv_must_fail(conv->valuestring), "invalid conversation id accepted");
            FZ_CHECK(!content_must_fail(content->valuestring), "invalid content accepted");
            fresh += account(st, conv->valuestring, content->valuestring, m, id->valuestring,
                             cJSON_IsTrue(dup));
        }
        FZ_CHECK(after == before + fresh, "enqueue_many (fresh %d) moved pending from %lld to %lld",
                 fresh, before, after);
        cJSON_Delete(r);
        runlane_free(res);
    }
    cJSON_Delete(arr);
    free(json);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A worker claims everything; each message comes once, verbatim. */
static void deliver_all(state_t *st, runlane_t *rl) {
    FZ_CHECK(runlane_start(rl) == RUNLANE_OK, "runlane_start failed");
    int seen = 0;
    int64_t deadline = now_ms() + 10000;
    while (seen < st->nrecs) {
        FZ_CHECK(now_ms() < deadline, "only %d of %d messages delivered in 10 s", seen, st->nrecs);
        runlane_event_t *ev = runlane_poll(rl, 50);
        if (!ev) continue;
        runlane_event_type_t type = runlane_event_type(ev);
        FZ_CHECK(type == RUNLANE_EVENT_BATCH, "unexpected event %s: %s %s",
                 runlane_event_type_name(type), runlane_event_json(ev),
                 runlane_event_error_message(ev));
        const char *conv = runlane_event_conversation_id(ev);
        cJSON *j = cJSON_Parse(runlane_event_json(ev));
        FZ_CHECK(j, "batch event JSON does not parse: %s", runlane_event_json(ev));
        const char *jconv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "conversation_id"));
        FZ_CHECK(jconv && strcmp(jconv, conv) == 0, "event conversation id differs from its JSON");
        int last_seq = -1;
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "messages")) {
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "id"));
            FZ_CHECK(id, "message without id");
            rec_t *r = NULL;
            for (int i = 0; i < st->nrecs; i++)
                if (strcmp(st->recs[i].id, id) == 0) r = &st->recs[i];
            FZ_CHECK(r, "delivered message %s was never enqueued", id);
            FZ_CHECK(!r->seen, "message %s delivered twice", id);
            r->seen = 1;
            seen++;
            FZ_CHECK(strcmp(r->conv, conv) == 0, "message %s of \"%s\" delivered in \"%s\"", id,
                     r->conv, conv);
            FZ_CHECK(r->seq > last_seq, "message %s out of order in its batch", id);
            last_seq = r->seq;
            const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
            FZ_CHECK(content && strcmp(content, r->content) == 0, "message %s content changed", id);
            const cJSON *ins = cJSON_GetObjectItemCaseSensitive(m, "instructions");
            if (cJSON_IsString(r->instructions))
                FZ_CHECK(cJSON_IsString(ins) && strcmp(ins->valuestring, r->instructions->valuestring) == 0,
                         "message %s instructions changed: enqueued \"%s\", delivered %s", id,
                         r->instructions->valuestring, ins ? cJSON_PrintUnformatted(ins) : "(none)");
            const cJSON *md = cJSON_GetObjectItemCaseSensitive(m, "metadata");
            if (cJSON_IsObject(r->metadata) && cJSON_GetArraySize(r->metadata) > 0)
                FZ_CHECK(md && cJSON_Compare(md, r->metadata, 1), "message %s metadata changed: %s",
                         id, md ? cJSON_PrintUnformatted(md) : "(none)");
        }
        /* Earlier messages of the same conversation came in earlier batches. */
        for (int i = 0; i < st->nrecs; i++)
            if (strcmp(st->recs[i].conv, conv) == 0 && st->recs[i].seq < last_seq)
                FZ_CHECK(st->recs[i].seen, "message %s delivered after a later one of its conversation",
                         st->recs[i].id);
        cJSON_Delete(j);
        FZ_CHECK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL) == RUNLANE_OK,
                 "ack failed: %s", runlane_error_message(runlane_error_last()));
        runlane_event_destroy(ev);
    }
    runlane_stop(rl, RUNLANE_STOP_RELEASE, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    runlane_conf_t *conf = runlane_conf_new();
    char err[512];
    const char *kv[] = {"store", "memory://fuzzstore", "batch.window.ms", "0",
                        "batch.max.wait.ms", "0", "worker.poll.ms", "2",
                        "batch.max.bytes", "4096", "lease.ms", "60000", NULL};
    for (int i = 0; kv[i]; i += 2)
        FZ_CHECK(runlane_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)) == RUNLANE_OK, "conf: %s",
                 err);
    runlane_t *rl = runlane_new(conf, err, sizeof(err));
    runlane_conf_destroy(conf);
    FZ_CHECK(rl, "runlane_new: %s", err);
    static state_t st;
    memset(&st, 0, sizeof(st));
    fz_in_t in = {data, size};
    for (int k = 0; k < 16 && in.n && st.nrecs < 400; k++) {
        if (fz_byte(&in) % 2 == 0) op_enqueue(&st, rl, &in);
        else op_enqueue_many(&st, rl, &in);
    }
    if (st.nrecs) deliver_all(&st, rl);
    runlane_destroy(rl);
    for (int i = 0; i < st.nrecs; i++) {
        free(st.recs[i].conv);
        free(st.recs[i].content);
        cJSON_Delete(st.recs[i].instructions);
        cJSON_Delete(st.recs[i].metadata);
    }
    for (int i = 0; i < st.nkeys; i++) {
        free(st.keys[i].conv);
        free(st.keys[i].key);
    }
    for (int i = 0; i < st.nambig; i++) free(st.ambig[i]);
    return 0;
}
