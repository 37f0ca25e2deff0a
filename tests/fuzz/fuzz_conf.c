/* fuzz_conf.c - configuration parsing: runlane_conf_set with arbitrary keys
 * and values, and the _get / _dump / _dup round trips.
 *
 * Input: records [k][value]\0 ... where k < 0xE0 picks a key of the
 * property table (k % count) and k >= 0xE0 is followed by a raw key and a
 * \0. At most 32 records.
 * Invariants:
 *   - runlane_conf_set returns OK, UNKNOWN_KEY or INVALID_VALUE (a known
 *     key never gives UNKNOWN_KEY, an unknown one always does); on failure
 *     the configuration is unchanged (same dump), the message is non-empty,
 *     equals runlane_error_last() and is NUL-terminated within errstr_size
 *     (nothing written past it);
 *   - a value that was accepted reads back unchanged with runlane_conf_get
 *     (secret keys: "********"; the store: its password masked), with the
 *     size protocol of runlane_conf_get (size query, too small buffer);
 *   - secrets never show: a secret value, and the password of a store URL
 *     as the Redis store would read it (the userinfo of redis://, rediss://
 *     and unix:// URLs; text without a colon is a password, as in
 *     redis-cli), appears neither in runlane_conf_get, nor in the dump, nor
 *     in any error message;
 *   - the dump is a JSON object of strings with every key of the table,
 *     and runlane_conf_dup dumps the same.
 * It never connects anywhere (no runlane_new). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "runlane.h"

#define MAXP 128
static int nprops;
static char *pname[MAXP], *pdef[MAXP];
static int psecret[MAXP];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    cJSON *a = cJSON_Parse(runlane_conf_properties());
    const cJSON *p;
    cJSON_ArrayForEach(p, a) {
        if (nprops == MAXP) break;
        pname[nprops] = strdup(cJSON_GetObjectItem(p, "name")->valuestring);
        pdef[nprops] = strdup(cJSON_GetObjectItem(p, "default")->valuestring);
        psecret[nprops] = cJSON_IsTrue(cJSON_GetObjectItem(p, "secret"));
        nprops++;
    }
    cJSON_Delete(a);
    if (nprops == 0) abort();
    return 0;
}

static int prop_of(const char *key) {
    for (int i = 0; i < nprops; i++)
        if (strcmp(pname[i], key) == 0) return i;
    return -1;
}

static char *dump(const runlane_conf_t *c) {
    char *s = NULL;
    FZ_CHECK(runlane_conf_dump(&s, c) == RUNLANE_OK && s, "runlane_conf_dump failed");
    return s;
}

/* Where the password of a store URL is, as the Redis store reads it (see
 * parse_url/parse_userinfo in store_redis.c): 1 and its offset and length
 * (raw, not %-decoded), or 0 when it has none. */
static int store_password(const char *v, size_t *off, size_t *len) {
    const char *p, *end;
    if (strncmp(v, "unix://", 7) == 0) {
        p = v + 7;
        const char *slash = strchr(p, '/');
        if (!slash || slash == p || slash[-1] != '@') return 0;
        end = slash - 1;
    } else {
        if (strncmp(v, "redis://", 8) == 0) p = v + 8;
        else if (strncmp(v, "rediss://", 9) == 0) p = v + 9;
        else return 0;
        const char *auth_end = p + strcspn(p, "/?#");
        end = NULL;
        for (const char *q = p; q < auth_end; q++)
            if (*q == '@') end = q;
        if (!end) return 0;
    }
    const char *colon = memchr(p, ':', (size_t)(end - p));
    const char *pw = colon ? colon + 1 : p;
    if (end <= pw) return 0;
    *off = (size_t)(pw - v);
    *len = (size_t)(end - pw);
    return 1;
}

/* The password (new string) and the URL without it (new string). */
static int split_password(const char *v, char **pw, char **bare) {
    size_t off, len;
    if (!store_password(v, &off, &len)) return 0;
    *pw = strndup(v + off, len);
    *bare = strdup(v);
    if (!*pw || !*bare) abort();
    memmove(*bare + off, *bare + off + len, strlen(*bare + off + len) + 1);
    return 1;
}

/* `secret` must not show in `text` more often than in `clean` (the same
 * text produced without the secret), for secrets that cannot be confused
 * with the text around them. */
static void check_hidden(const char *secret, const char *text, const char *clean, const char *what) {
    if (strlen(secret) < 4 || strpbrk(secret, "*:\"\\")) return;
    /* A "secret" that is a word of the property table itself (a key name,
     * a phrase of its docs) shows in messages because messages name keys. */
    if (strstr(runlane_conf_properties(), secret)) return;
    int a = fz_count(text, secret), b = clean ? fz_count(clean, secret) : 0;
    FZ_CHECK(a <= b, "%s shows the secret \"%s\": %s", what, secret, text);
}

static void check_get(const runlane_conf_t *c, const char *key, const char *expect) {
    size_t need = 0;
    FZ_CHECK(runlane_conf_get(c, key, NULL, &need) == RUNLANE_OK, "size query of %s failed", key);
    char *buf = malloc(need + 8);
    if (!buf) abort();
    memset(buf, 'Z', need + 8);
    size_t sz = need;
    FZ_CHECK(runlane_conf_get(c, key, buf, &sz) == RUNLANE_OK && sz == need,
             "get %s with the size it asked for failed", key);
    FZ_CHECK(strlen(buf) + 1 == need, "get %s: %zu bytes, size query said %zu", key, strlen(buf) + 1,
             need);
    FZ_CHECK(buf[need] == 'Z', "get %s wrote past its buffer", key);
    if (expect) FZ_CHECK(strcmp(buf, expect) == 0, "get %s: \"%s\", expected \"%s\"", key, buf, expect);
    if (need > 1) {
        size_t small = need - 1;
        memset(buf, 'Z', need + 8);
        FZ_CHECK(runlane_conf_get(c, key, buf, &small) == RUNLANE_ERR_TOO_LARGE && small == need,
                 "get %s with a buffer one byte short: not TOO_LARGE with the needed size", key);
        FZ_CHECK(buf[need - 2] == '\0' && buf[need - 1] == 'Z',
                 "get %s with a short buffer: not truncated and NUL-terminated in place", key);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    if (!nprops) LLVMFuzzerInitialize(NULL, NULL);
    fz_in_t in = {data, size};
    runlane_conf_t *conf = runlane_conf_new();
    FZ_CHECK(conf, "runlane_conf_new failed");
    static const size_t errsizes[] = {0, 1, 2, 16, 512};
    for (int rec = 0; rec < 32 && in.n; rec++) {
        unsigned k = fz_byte(&in);
        char *key = k < 0xE0 ? strdup(pname[k % (unsigned)nprops]) : fz_field(&in, 0, NULL);
        char *value = fz_field(&in, 0, NULL);
        int pi = prop_of(key);
        char *before = dump(conf);
        size_t es = errsizes[k % 5];
        char errstr[600];
        memset(errstr, 'Z', sizeof(errstr));
        runlane_err_t rc = runlane_conf_set(conf, key, value, es ? errstr : NULL, es);
        const char *msg = runlane_error_message(runlane_error_last());
        FZ_CHECK(rc == RUNLANE_OK || rc == RUNLANE_ERR_UNKNOWN_KEY || rc == RUNLANE_ERR_INVALID_VALUE,
                 "runlane_conf_set(%s) returned %d", key, rc);
        FZ_CHECK((pi < 0) == (rc == RUNLANE_ERR_UNKNOWN_KEY), "key \"%s\" (known: %d) gave %d", key,
                 pi >= 0, rc);
        FZ_CHECK(es == 0 || errstr[es] == 'Z' || es >= sizeof(errstr) - 1,
                 "errstr written past errstr_size %zu", es);
        if (rc != RUNLANE_OK) {
            char *after = dump(conf);
            FZ_CHECK(strcmp(before, after) == 0, "failed set of %s changed the configuration", key);
            free(after);
            FZ_CHECK(*msg, "failed set of %s without a message", key);
            FZ_CHECK(runlane_error_code(runlane_error_last()) == rc, "error code %d vs returned %d",
                     runlane_error_code(runlane_error_last()), rc);
            if (es) {
                FZ_CHECK(memchr(errstr, '\0', es) != NULL, "errstr not NUL-terminated within %zu", es);
                FZ_CHECK(strncmp(errstr, msg, es - 1) == 0, "errstr \"%s\" is not the message \"%s\"",
                         errstr, msg);
            }
            if (pi >= 0 && psecret[pi]) check_hidden(value, msg, NULL, "error message of a secret key");
            char *pw = NULL, *bare = NULL;
            if (pi >= 0 && strcmp(key, "store") == 0 && split_password(value, &pw, &bare)) {
                /* The message the same URL without its password gets. */
                char *m = strdup(msg);
                runlane_conf_t *scratch = runlane_conf_new();
                runlane_conf_set(scratch, "store", bare, NULL, 0);
                check_hidden(pw, m, runlane_error_message(runlane_error_last()),
                             "error message of a store URL");
                runlane_conf_destroy(scratch);
                free(m);
            }
            free(pw);
            free(bare);
        } else {
            FZ_CHECK(runlane_error_code(runlane_error_last()) == RUNLANE_OK,
                     "successful set left an error behind");
            const char *expect = value;
            int masked = psecret[pi] && *value && strcmp(value, "{}") != 0;
            if (masked) expect = "********";
            if (strcmp(key, "store") == 0) expect = NULL; /* checked below */
            check_get(conf, key, expect);
            /* Secrets: compare with the same configuration holding the
             * default (a secret key) or the URL without its password (the
             * store) instead. */
            char *pw = NULL, *bare = NULL;
            if (strcmp(key, "store") == 0) split_password(value, &pw, &bare);
            if (masked || pw) {
                runlane_conf_t *clean = runlane_conf_dup(conf);
                FZ_CHECK(clean, "dup failed");
                FZ_CHECK(runlane_conf_set(clean, key, pw ? bare : pdef[pi], NULL, 0) == RUNLANE_OK,
                         "clean value of %s refused", key);
                char *d1 = dump(conf), *d0 = dump(clean);
                if (masked) check_hidden(value, d1, d0, "runlane_conf_dump");
                if (pw) {
                    char shown[4096], shown0[4096];
                    size_t sz = sizeof(shown), sz0 = sizeof(shown0);
                    if (runlane_conf_get(conf, "store", shown, &sz) == RUNLANE_OK &&
                        runlane_conf_get(clean, "store", shown0, &sz0) == RUNLANE_OK)
                        check_hidden(pw, shown, shown0, "runlane_conf_get(store)");
                    check_hidden(pw, d1, d0, "runlane_conf_dump (store)");
                }
                free(d1);
                free(d0);
                runlane_conf_destroy(clean);
            }
            free(pw);
            free(bare);
        }
        free(before);
        free(key);
        free(value);
    }
    /* The dump: a JSON object of strings with every key; the dup the same. */
    char *d = dump(conf);
    cJSON *j = cJSON_Parse(d);
    FZ_CHECK(cJSON_IsObject(j), "dump is not a JSON object: %s", d);
    FZ_CHECK(cJSON_GetArraySize(j) == nprops, "dump has %d keys, table %d", cJSON_GetArraySize(j),
             nprops);
    for (int i = 0; i < nprops; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, pname[i]);
        FZ_CHECK(cJSON_IsString(v), "dump lacks %s", pname[i]);
        char buf[8192];
        size_t sz = sizeof(buf);
        if (runlane_conf_get(conf, pname[i], buf, &sz) == RUNLANE_OK)
            FZ_CHECK(strcmp(buf, v->valuestring) == 0, "dump and get disagree on %s", pname[i]);
    }
    cJSON_Delete(j);
    runlane_conf_t *dup = runlane_conf_dup(conf);
    FZ_CHECK(dup, "dup failed");
    char *dd = dump(dup);
    FZ_CHECK(strcmp(d, dd) == 0, "dup dumps differently");
    free(dd);
    free(d);
    runlane_conf_destroy(dup);
    runlane_conf_destroy(conf);
    return 0;
}
