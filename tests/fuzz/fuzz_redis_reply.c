/* fuzz_redis_reply.c - what the Redis store reads back: the claim script's
 * reply (store_redis.c, rl_redis_claim_reply) and the stored batch it
 * carries, as the worker turns it into the host's BATCH event
 * (worker.c, rl_worker_batch_json).
 *
 * A Redis server, a proxy in between or a damaged key can answer anything,
 * so the input is raw RESP bytes: hiredis's own reader (the one the store
 * uses on its socket) builds the reply trees from them, and each complete
 * reply is decoded as a claim reply. Input: [conv] then RESP; conv picks
 * the conversation id (four fixed ones). The seeds are well-formed claim
 * replies (tests/fuzz/gen_corpus.py), so mutations reach the decoder's and
 * the record reader's every branch; a stored batch is anything a
 * "$<len>\r\n...\r\n" bulk string can hold.
 * Invariants (besides no crash, leak or undefined behaviour):
 *   - the decoder answers RUNLANE_OK, RUNLANE_ERR_INTERNAL ("unexpected
 *     reply shape", naming the server) or RUNLANE_ERR_NOMEM, and fills the
 *     claim only on OK: batch id and token NUL-terminated within their
 *     buffers and equal to the reply's strings, attempt and messages set;
 *   - the BATCH event of a decoded claim is NULL (unreadable batch: the
 *     worker dead-letters it) or valid UTF-8 JSON of the promised shape:
 *     {"conversation_id","batch_id","attempt","messages":[{"id","content",
 *     "ts_ms",...}]} naming this claim. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "client.h"
#include "fuzz_common.h"
#include "internal.h"
#include "runlane.h"
#include "store.h"
#include "redis_conn.h"
#include "store_redis.h"

static const char *const convs[] = {"conv_1", "c", "user:42 {x}", "\xc3\xa9t\xc3\xa9"};

static void check_event(const rl_claim_t *cl) {
    char *json = rl_worker_batch_json(cl);
    if (!json) return; /* unreadable: dead-lettered, never delivered */
    FZ_CHECK(rl_utf8_valid(json, strlen(json)), "the BATCH event is not UTF-8: %.300s", json);
    cJSON *j = cJSON_ParseWithOpts(json, NULL, 1);
    FZ_CHECK(cJSON_IsObject(j), "the BATCH event is not a JSON object: %.300s", json);
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(j, "conversation_id");
    const cJSON *bid = cJSON_GetObjectItemCaseSensitive(j, "batch_id");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(j, "attempt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    FZ_CHECK(cJSON_IsString(conv) && strcmp(conv->valuestring, cl->conversation_id) == 0,
             "conversation_id of the event: %.300s", json);
    FZ_CHECK(cJSON_IsString(bid) && strcmp(bid->valuestring, cl->batch_id) == 0,
             "batch_id of the event: %.300s", json);
    FZ_CHECK(cJSON_IsNumber(att) && (int)att->valuedouble == cl->attempt, "attempt: %.300s", json);
    FZ_CHECK(cJSON_IsArray(msgs), "messages is not an array: %.300s", json);
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        FZ_CHECK(cJSON_IsObject(m) &&
                     cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "id")) &&
                     cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "content")) &&
                     cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "ts_ms")),
                 "a message without id, content or ts_ms: %.300s", json);
    }
    cJSON_Delete(j);
    free(json);
}

static void decode(const char *conv, const redisReply *r) {
    rl_claim_t cl;
    memset(&cl, 0xA5, sizeof(cl)); /* the decoder must not read what it did not fill */
    cl.conversation_id = cl.messages_json = cl.ckpt_json = NULL;
    int rc = rl_redis_claim_reply("127.0.0.1:6379", conv, r, &cl);
    FZ_CHECK(rc == RUNLANE_OK || rc == RUNLANE_ERR_INTERNAL || rc == RUNLANE_ERR_NOMEM,
             "rl_redis_claim_reply returned %d", rc);
    if (rc != RUNLANE_OK) {
        const char *msg = runlane_error_message(runlane_error_last());
        FZ_CHECK(rc != RUNLANE_ERR_INTERNAL || strstr(msg, "127.0.0.1:6379"),
                 "the error does not name the server: %s", msg);
        return;
    }
    FZ_CHECK(r->type == REDIS_REPLY_ARRAY && r->elements >= 5, "OK for a reply of type %d",
             r->type);
    FZ_CHECK(memchr(cl.batch_id, 0, sizeof(cl.batch_id)) && memchr(cl.token, 0, sizeof(cl.token)),
             "batch id or token not terminated");
    FZ_CHECK(memcmp(cl.batch_id, r->element[0]->str, r->element[0]->len) == 0,
             "batch id differs from the reply's");
    FZ_CHECK(memcmp(cl.token, r->element[1]->str, r->element[1]->len) == 0,
             "token differs from the reply's");
    FZ_CHECK(cl.conversation_id && strcmp(cl.conversation_id, conv) == 0 && cl.messages_json,
             "conversation or messages not set");
    check_event(&cl);
    rl_claim_free(&cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 1 << 16) return 0;
    const char *conv = convs[data[0] % 4];
    redisReader *rd = redisReaderCreate();
    if (!rd) return 0;
    rl_redis_reader_limits(rd); /* as on every connection */
    if (redisReaderFeed(rd, (const char *)data + 1, size - 1) == REDIS_OK) {
        /* Every complete reply of the input, until the reader errs. */
        for (int i = 0; i < 64; i++) {
            void *reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply) break;
            decode(conv, reply);
            freeReplyObject(reply);
        }
    }
    redisReaderFree(rd);
    return 0;
}
