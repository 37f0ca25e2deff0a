/* conf.c - key/value configuration validated by one property table.
 *
 * The table below is the only truth: it validates values, documents them
 * (runlane_conf_properties() -> the README's configuration reference) and
 * gives the bindings their typed options. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cjson/cJSON.h>

#include "conf.h"
#include "internal.h"

#define DAY_MS 86400000LL

const rl_prop_t rl_props[] = {
    /* ---- store ---- */
    {"store", RL_T_STRING, "memory", 0, 0, NULL, 0,
     "Where the queue lives: `memory` (this process only; `memory://NAME` for a separate one), "
     "`redis://[user:password@]host:port/db` (shared by every worker process and machine), or "
     "`rediss://...` (TLS: the server's certificate is verified against redis.tls.ca.file/dir, "
     "or the system's trust store, and its name against the URL's host; see redis.tls.*), "
     "`redis+cluster://[user:password@]host:port[,host:port...]` (Redis Cluster: seed nodes; "
     "`rediss+cluster://` with TLS), or `redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[/db]` "
     "(the master that these sentinels name; `rediss+sentinel://` with TLS to sentinels and nodes)."},
    {"key.prefix", RL_T_STRING, "runlane", 1, 64, NULL, 0,
     "Prefix of every Redis key. Letters, digits and `_.:-` only."},
    {"partitions", RL_T_INT, "0", 0, 1024, NULL, 0,
     "Number of partitions; each is one Redis Cluster hash tag, so on a cluster the partitions are "
     "what spreads a queue over the masters (tags chosen so that N partitions land evenly on masters "
     "owning equal slot ranges). 0: 1 on a single server or Sentinel, 12 on a cluster (even on 1, 2, "
     "3, 4, 6 or 12 masters). Every client of a queue must use the same value."},
    {"redis.connect.timeout.ms", RL_T_INT, "5000", 1, 600000, NULL, 0,
     "Timeout to connect to Redis."},
    {"redis.command.timeout.ms", RL_T_INT, "5000", 1, 600000, NULL, 0,
     "Timeout of one Redis round trip; an operation that times out fails with RUNLANE_ERR_STORE (retriable)."},
    {"redis.wait.replicas", RL_T_INT, "0", 0, 16, NULL, 0,
     "Replication-safe acknowledgements: an enqueue and every state change return only once this "
     "many replicas of the master that took it have it (Redis WAIT, in the same round trip), else "
     "fail retriable. 0: answered as soon as the master has it (a master that dies right after may "
     "lose the last writes). Costs one replication delay per call."},
    {"redis.wait.timeout.ms", RL_T_INT, "1000", 1, 600000, NULL, 0,
     "With redis.wait.replicas: how long a write waits for its replicas; must be below "
     "redis.command.timeout.ms."},
    {"redis.tls.ca.file", RL_T_STRING, "", 0, 4096, NULL, 0,
     "With `rediss://`: PEM file of the CA certificates that verify the server's certificate. "
     "Empty (and no redis.tls.ca.dir): the system's trust store (OpenSSL's default; SSL_CERT_FILE/SSL_CERT_DIR override it)."},
    {"redis.tls.ca.dir", RL_T_STRING, "", 0, 4096, NULL, 0,
     "With `rediss://`: directory of CA certificates in OpenSSL's hashed layout (`openssl rehash`), with or instead of redis.tls.ca.file."},
    {"redis.tls.cert.file", RL_T_STRING, "", 0, 4096, NULL, 0,
     "With `rediss://`: PEM client certificate (and chain) for servers that require one (mutual TLS, `tls-auth-clients yes`); needs redis.tls.key.file."},
    {"redis.tls.key.file", RL_T_STRING, "", 0, 4096, NULL, 0,
     "With `rediss://`: unencrypted PEM private key of redis.tls.cert.file. Messages name the file, never its contents."},
    {"redis.tls.server.name", RL_T_STRING, "", 0, 255, NULL, 0,
     "With `rediss://`: the name the server's certificate must carry, also sent as SNI. "
     "Empty: the host of each connection (the URL's host; on a Cluster or through Sentinel, each node's address as the cluster or the sentinels name it; an IP address is matched against the certificate's IP addresses and sends no SNI)."},
    {"redis.tls.insecure.skip.verify", RL_T_BOOL, "false", 0, 1, NULL, 0,
     "DANGER, tests only: with `rediss://`, accept any server certificate (no CA, no name check), so anyone on the network path can read and change the queue. "
     "runlane_new then queues an ERROR event (code RUNLANE_ERR_INVALID_VALUE) saying so."},
    {"idempotency.ttl.ms", RL_T_INT, "86400000", 1000, 30 * DAY_MS, NULL, 0,
     "How long an enqueue idempotency key is remembered."},
    /* ---- batching ---- */
    {"batch.window.ms", RL_T_INT, "10000", 0, DAY_MS, NULL, 0,
     "Quiet window: a conversation's batch is due this long after its last message or typing signal."},
    {"batch.max.wait.ms", RL_T_INT, "60000", 0, DAY_MS, NULL, 0,
     "Upper bound on the wait: a batch is due at most this long after its first message, however often the window is extended."},
    {"batch.max.messages", RL_T_INT, "100", 1, 100000, NULL, 0,
     "Most messages in one batch; a conversation with this many pending is due at once."},
    {"batch.max.bytes", RL_T_INT, "1048576", 1, 67108864, NULL, 0,
     "Most content bytes in one batch (a conversation with this many pending is due at once); also the largest message accepted."},
    /* ---- leases and retries ---- */
    {"lease.ms", RL_T_INT, "30000", 100, DAY_MS, NULL, 0,
     "Lease of a claimed batch; renewed while the worker lives. A dead worker's batches come back after it expires."},
    {"max.attempts", RL_T_INT, "5", 1, 1000, NULL, 0,
     "Attempts of a batch before it is dead-lettered. A lease that expired (its worker died or stalled) is not an attempt: see max.stalls."},
    {"max.stalls", RL_T_INT, "5", 0, 1000, NULL, 0,
     "Expired leases a batch survives: a worker that died (kill -9, crash) or stalled past lease.ms does not spend one of max.attempts; the batch is taken over at once (same batch id, attempt + 1). Once its lease has expired more than this many times the batch is dead-lettered with an error saying so (a batch that kills every worker it reaches). 0: the first expired lease dead-letters it."},
    {"backoff.base.ms", RL_T_INT, "1000", 0, 3600000, NULL, 0,
     "Retry backoff after attempt a: min(backoff.max.ms, base * 2^(a-1)), less up to backoff.jitter of it at random."},
    {"backoff.max.ms", RL_T_INT, "60000", 0, DAY_MS, NULL, 0, "Cap of the retry backoff."},
    {"backoff.jitter", RL_T_FLOAT, "0.5", 0, 1, NULL, 0,
     "Fraction (0..1) of the backoff taken off at random, so retries do not stampede."},
    /* ---- worker ---- */
    {"backend", RL_T_ENUM, "custom", 0, 0, "custom|responses|assistants", 0,
     "Who runs a turn: `custom` (the host, through batch events), `responses` (OpenAI Responses API + Conversations) or `assistants` (Assistants API v2 threads and runs). "
     "Default: `assistants` when openai.assistant.id is set, else `custom`."},
    {"busy.policy", RL_T_ENUM, "queue", 0, 0, "queue|interrupt", 0,
     "Messages arriving while a turn runs: `queue` (sent in the next turn, right after) or `interrupt` (cancel the turn and start again with everything). "
     "With `interrupt` the responses backend creates every response in background mode (streamed as well when openai.stream is true), since only a background response can be cancelled."},
    {"reply.redeliver.ms", RL_T_INT, "60000", 1000, DAY_MS, NULL, 0,
     "An unconfirmed reply (see runlane_reply_ack) is delivered again after this long, by any worker."},
    {"reply.ttl.ms", RL_T_INT, "604800000", 1000, 30 * DAY_MS, NULL, 0,
     "How long an unconfirmed reply is kept (and delivered again); then it is dropped."},
    {"worker.concurrency", RL_T_INT, "100", 1, 100000, NULL, 0,
     "Most batches in flight in one client (conversations, not threads)."},
    {"worker.max.pending.events", RL_T_INT, "10000", 1, 10000000, NULL, 0,
     "The worker claims no new batch while this many events wait to be polled (a host that stops polling holds memory and provider spend to the turns already in flight; claiming resumes as it polls)."},
    {"worker.id", RL_T_STRING, "", 0, 128, NULL, 0,
     "Name of this worker in leases and status; default `<hostname>:<pid>`."},
    {"worker.poll.ms", RL_T_INT, "250", 1, 60000, NULL, 0,
     "Longest wait between two looks for due conversations with the memory store (the worker also wakes at the earliest due time it knows). With Redis the worker is woken by the store when a conversation becomes due in any process, and looks at least every min(10 s, lease.ms / 2) without polling."},
    {"worker.wake.coalesce.ms", RL_T_INT, "1", 0, 1000, NULL, 0,
     "With Redis: after a wake-up, how long the worker lets announcements gather before it waits for the next one. What becomes due meanwhile is then taken by one blocking pop and one claim script instead of one of each per conversation: under load this cuts Redis CPU per message by about a quarter (tests/bench/RESULTS.md). It delays only a conversation that becomes due within this time of the worker's last wake-up while no other worker waits. 0: wait again at once."},
    {"worker.recover.ms", RL_T_INT, "1000", 10, 600000, NULL, 0,
     "How often the worker looks for expired leases of dead workers."},
    /* ---- HTTP backends ---- */
    {"openai.base.url", RL_T_STRING, "https://api.openai.com/v1", 1, 2048, NULL, 0,
     "Base URL of the OpenAI-compatible API. Default: the OPENAI_BASE_URL environment variable when set and not empty (as the official SDKs read it), else `https://api.openai.com/v1`."},
    {"openai.api.key", RL_T_STRING, "", 0, 4096, NULL, 1,
     "API key, sent as `Authorization: Bearer`. Never logged. Default: the OPENAI_API_KEY environment variable."},
    {"openai.organization", RL_T_STRING, "", 0, 256, NULL, 0, "OpenAI-Organization header."},
    {"openai.project", RL_T_STRING, "", 0, 256, NULL, 0, "OpenAI-Project header."},
    {"openai.headers", RL_T_JSON, "{}", 0, 0, NULL, 1,
     "Extra request headers as a JSON object of strings (e.g. Azure `{\"api-key\":\"...\"}`); a name that is not a header token or a value with control characters (CR, LF...) is refused when set. Secret: masked."},
    {"openai.query", RL_T_JSON, "{}", 0, 0, NULL, 0,
     "Extra query parameters as a JSON object of strings (e.g. Azure `{\"api-version\":\"...\"}`)."},
    {"openai.model", RL_T_STRING, "", 0, 256, NULL, 0, "Model of a response (responses backend)."},
    {"openai.prompt.id", RL_T_STRING, "", 0, 256, NULL, 0, "Stored prompt id (responses backend), instead of or with a model."},
    {"openai.assistant.id", RL_T_STRING, "", 0, 256, NULL, 0, "Assistant of a run (assistants backend)."},
    {"openai.instructions", RL_T_STRING, "", 0, 262144, NULL, 0,
     "Instructions of every turn; a message's own `instructions` override it (the batch's last wins)."},
    {"openai.additional.instructions", RL_T_STRING, "", 0, 262144, NULL, 0,
     "additional_instructions of a run (assistants backend)."},
    {"openai.tools", RL_T_JSON, "[]", 0, 0, NULL, 0, "Tools of every turn, as the API's JSON array."},
    {"openai.metadata", RL_T_JSON, "{}", 0, 0, NULL, 0, "Metadata of every turn, a JSON object of strings."},
    {"openai.stream", RL_T_BOOL, "true", 0, 1, NULL, 0,
     "Follow turns by server-sent events (true) or by background requests and polling (false)."},
    {"openai.input.mode", RL_T_ENUM, "items", 0, 0, "items|joined", 0,
     "Batch messages as one input item each (`items`) or joined into one message (`joined`)."},
    {"http.connect.timeout.ms", RL_T_INT, "10000", 1, 600000, NULL, 0, "HTTP connect timeout."},
    {"http.timeout.ms", RL_T_INT, "120000", 1, DAY_MS, NULL, 0, "Timeout of one HTTP request that is not a stream."},
    {"http.stream.idle.timeout.ms", RL_T_INT, "60000", 1, DAY_MS, NULL, 0,
     "A stream that sends nothing for this long, or only bytes that make no event (comments, a line without end), is dropped and the turn reconciled."},
    {"http.max.retries", RL_T_INT, "6", 0, 100, NULL, 0,
     "Retries of one HTTP request on network errors, 408, 409, 429 and 5xx."},
    {"http.retry.base.ms", RL_T_INT, "500", 1, 600000, NULL, 0, "Base of the HTTP retry backoff."},
    {"http.retry.max.ms", RL_T_INT, "30000", 1, DAY_MS, NULL, 0,
     "Cap of the HTTP retry backoff, and of any wait a server asks for (Retry-After, retry-after-ms, openai-poll-after-ms): a longer ask is cut to this. "
     "A server-asked wait of 5 s or more (or one cut to this cap) taken while a batch's lease is held is reported by an ERROR event; a stopping worker releases a batch whose wait would outlast its drain."},
    {"http.max.body.bytes", RL_T_INT, "16777216", 1024, 1073741824, NULL, 0,
     "Largest response body (not a stream) read from the provider; a larger one fails the request like a provider error (retried, then the attempt fails)."},
    {"http.max.header.bytes", RL_T_INT, "262144", 1024, 16777216, NULL, 0,
     "Largest total size of a response's headers; more fails the request like a provider error."},
    {"http.sse.max.line.bytes", RL_T_INT, "8388608", 1024, 1073741824, NULL, 0,
     "Longest line of a server-sent events stream; a longer one ends the stream as a provider error."},
    {"http.sse.max.event.bytes", RL_T_INT, "16777216", 1024, 1073741824, NULL, 0,
     "Largest data of one server-sent event; a larger one ends the stream as a provider error."},
    {"http.stream.max.bytes", RL_T_INT, "268435456", 1024, 1LL << 40, NULL, 0,
     "Most bytes read from one stream; past it the stream ends as a provider error (the turn is then reconciled or failed)."},
    {"http.max.requests.per.attempt", RL_T_INT, "10000", 10, 10000000, NULL, 0,
     "Most HTTP requests one attempt of a batch may send (creates, polls, listings, retries alike); past it the attempt fails. "
     "A 2xx answer that is not a usable response/run counts toward http.max.retries like a failure (with backoff) before the attempt fails."},
    {"tool.timeout.ms", RL_T_INT, "600000", 1, DAY_MS, NULL, 0, "Time the host has to answer one round of tool calls."},
    {"tool.timeout.action", RL_T_ENUM, "error", 0, 0, "error|cancel", 0,
     "When tool outputs are late: submit error outputs (`error`) or cancel the turn (`cancel`)."},
    {"rate.limit.rpm", RL_T_INT, "0", 0, 100000000, NULL, 0,
     "Requests per minute to the provider, shared by every client of the queue: one token bucket in the store (Redis: the key `<key.prefix>:{rate}:bucket`; memory: per store name) holds at most rpm/60 requests (at least 1) and refills at rpm per minute, so any minute sees at most rpm plus that burst. "
     "Every HTTP request of the backends (retries too, and runlane_conversation_create/runlane_thread_create) takes a token first, or waits for one without blocking the worker. "
     "While the store fails, each client keeps to a bucket of its own (an ERROR event says so) and asks the store again every second. Every client should use the same value; 0 = no limit."},
};
const int rl_props_count = (int)(sizeof(rl_props) / sizeof(rl_props[0]));

static int prop_index(const char *key) {
    for (int i = 0; i < rl_props_count; i++)
        if (strcmp(rl_props[i].name, key) == 0) return i;
    return -1;
}

/* Defaults that depend on the environment or on other keys, so that code
 * written for the official SDKs and for the original AssistantMessageQueue
 * works as it is: OPENAI_BASE_URL is the default base URL (empty means
 * unset, as in the SDKs), and an assistant id with no backend chosen means
 * the assistants backend. Explicit values always win. */
static const char *env_base_url(void) {
    const char *v = getenv("OPENAI_BASE_URL");
    return v && *v ? v : NULL;
}

static const char *value_of(const runlane_conf_t *conf, int i);

static const char *dynamic_default(const runlane_conf_t *conf, int i) {
    const char *name = rl_props[i].name;
    if (strcmp(name, "openai.base.url") == 0) {
        const char *env = env_base_url();
        if (env) return env;
    } else if (strcmp(name, "backend") == 0) {
        int a = prop_index("openai.assistant.id");
        if (a >= 0 && *value_of(conf, a)) return "assistants";
    }
    return rl_props[i].def;
}

static const char *value_of(const runlane_conf_t *conf, int i) {
    return conf->values[i] ? conf->values[i] : dynamic_default(conf, i);
}

const char *rl_conf_str(const runlane_conf_t *conf, const char *key) {
    int i = prop_index(key);
    return i < 0 ? "" : value_of(conf, i);
}

int64_t rl_conf_int(const runlane_conf_t *conf, const char *key) {
    return strtoll(rl_conf_str(conf, key), NULL, 10);
}

double rl_conf_float(const runlane_conf_t *conf, const char *key) {
    return strtod(rl_conf_str(conf, key), NULL);
}

int rl_conf_bool(const runlane_conf_t *conf, const char *key) {
    return strcmp(rl_conf_str(conf, key), "true") == 0;
}

RUNLANE_EXTERN(runlane_conf_t *) runlane_conf_new(void) {
    runlane_conf_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->values = calloc((size_t)rl_props_count, sizeof(char *));
    if (!c->values) {
        free(c);
        return NULL;
    }
    return c;
}

RUNLANE_EXTERN(void) runlane_conf_destroy(runlane_conf_t *conf) {
    if (!conf) return;
    for (int i = 0; i < rl_props_count; i++) {
        if (conf->values[i] && rl_props[i].secret)
            memset(conf->values[i], 0, strlen(conf->values[i]));
        free(conf->values[i]);
    }
    free(conf->values);
    free(conf);
}

RUNLANE_EXTERN(runlane_conf_t *) runlane_conf_dup(const runlane_conf_t *conf) {
    if (!conf) return NULL;
    runlane_conf_t *c = runlane_conf_new();
    if (!c) return NULL;
    for (int i = 0; i < rl_props_count; i++) {
        if (conf->values[i] && !(c->values[i] = rl_strdup(conf->values[i]))) {
            runlane_conf_destroy(c);
            return NULL;
        }
    }
    return c;
}

static runlane_err_t invalid(char *errstr, size_t errstr_size, const char *fmt, ...) RL_PRINTF(3, 4);
static runlane_err_t invalid(char *errstr, size_t errstr_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rl_error_setv(RUNLANE_ERR_INVALID_VALUE, 0, fmt, ap);
    va_end(ap);
    rl_error_copy(errstr, errstr_size);
    return RUNLANE_ERR_INVALID_VALUE;
}

static int parse_int(const char *v, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return 0;
    *out = x;
    return 1;
}

static runlane_err_t validate_store(const char *v, char *errstr, size_t n) {
    if (strcmp(v, "memory") == 0) return RUNLANE_OK;
    if (strncmp(v, "memory://", 9) == 0) {
        if (!v[9]) return invalid(errstr, n, "store: memory:// needs a name, e.g. memory://jobs");
        return RUNLANE_OK;
    }
    if (strncmp(v, "redis://", 8) == 0 || strncmp(v, "unix://", 7) == 0 ||
        strncmp(v, "redis+cluster://", 16) == 0 || strncmp(v, "redis+sentinel://", 17) == 0)
        return RUNLANE_OK;
    if (strncmp(v, "rediss://", 9) == 0 || strncmp(v, "rediss+cluster://", 17) == 0 ||
        strncmp(v, "rediss+sentinel://", 18) == 0) {
#ifdef RUNLANE_HAVE_HIREDIS_SSL
        return RUNLANE_OK;
#else
        return invalid(errstr, n,
                       "store: rediss:// needs hiredis built with TLS (hiredis_ssl); this build has "
                       "none (runlane_features() lacks RUNLANE_FEATURE_REDIS_TLS)");
#endif
    }
    return invalid(errstr, n,
                   "store: expected memory, memory://NAME, redis://[user:password@]host:port/db, "
                   "unix:///path/to/socket, redis+cluster://host:port[,host:port...] or "
                   "redis+sentinel://host:port[,host:port...]/MASTER");
}

/* Keys whose value is sent as an HTTP header (besides openai.headers). */
static int is_header_key(const char *name) {
    return strcmp(name, "openai.api.key") == 0 || strcmp(name, "openai.organization") == 0 ||
           strcmp(name, "openai.project") == 0;
}

static runlane_err_t validate(int i, const char *v, char *errstr, size_t n) {
    const rl_prop_t *p = &rl_props[i];
    size_t len = strlen(v);
    if (!rl_utf8_valid(v, len)) return invalid(errstr, n, "%s: value is not valid UTF-8", p->name);
    switch (p->type) {
    case RL_T_STRING:
        if (p->max && (int64_t)len > p->max)
            return invalid(errstr, n, "%s: at most %lld bytes, got %zu", p->name, (long long)p->max, len);
        if ((int64_t)len < p->min)
            return invalid(errstr, n, "%s: must not be empty", p->name);
        if (strcmp(p->name, "store") == 0) return validate_store(v, errstr, n);
        if (strcmp(p->name, "key.prefix") == 0) {
            for (size_t k = 0; k < len; k++) {
                char c = v[k];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == ':' || c == '-'))
                    return invalid(errstr, n, "key.prefix: only letters, digits and _.:- are allowed, got '%c'", c);
            }
        }
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)v[k] < 0x20)
                return invalid(errstr, n, "%s: control characters are not allowed", p->name);
        if (is_header_key(p->name) && !rl_http_header_value_ok(v))
            return invalid(errstr, n,
                           "%s: control characters are not allowed (it is sent as an HTTP header)",
                           p->name);
        return RUNLANE_OK;
    case RL_T_INT: {
        int64_t x;
        if (!parse_int(v, &x))
            return invalid(errstr, n, "%s: expected an integer, got \"%s\"", p->name, v);
        if (x < p->min || x > p->max)
            return invalid(errstr, n, "%s: %lld is out of range [%lld, %lld]", p->name, (long long)x,
                           (long long)p->min, (long long)p->max);
        return RUNLANE_OK;
    }
    case RL_T_FLOAT: {
        char *end;
        double x = strtod(v, &end);
        if (end == v || *end || !isfinite(x))
            return invalid(errstr, n, "%s: expected a number, got \"%s\"", p->name, v);
        if (x < (double)p->min || x > (double)p->max)
            return invalid(errstr, n, "%s: %g is out of range [%lld, %lld]", p->name, x,
                           (long long)p->min, (long long)p->max);
        return RUNLANE_OK;
    }
    case RL_T_BOOL:
        if (strcmp(v, "true") && strcmp(v, "false"))
            return invalid(errstr, n, "%s: expected true or false, got \"%s\"", p->name, v);
        return RUNLANE_OK;
    case RL_T_ENUM: {
        const char *e = p->enums;
        while (*e) {
            const char *bar = strchr(e, '|');
            size_t el = bar ? (size_t)(bar - e) : strlen(e);
            if (el == len && strncmp(e, v, len) == 0) return RUNLANE_OK;
            if (!bar) break;
            e = bar + 1;
        }
        return invalid(errstr, n, "%s: expected one of %s, got \"%s\"", p->name, p->enums, v);
    }
    case RL_T_JSON: {
        cJSON *j = cJSON_Parse(v);
        int ok = j != NULL;
        int want_array = p->def[0] == '[';
        if (ok) ok = want_array ? cJSON_IsArray(j) : cJSON_IsObject(j);
        if (ok && !want_array) {
            cJSON *it;
            cJSON_ArrayForEach(it, j) if (!cJSON_IsString(it)) ok = 0;
        }
        if (!ok) {
            cJSON_Delete(j);
            return invalid(errstr, n, "%s: expected a JSON %s", p->name,
                           want_array ? "array" : "object of strings");
        }
        /* No string may decode to U+0000 (it would be cut there). */
        runlane_err_t rc = rl_json_check_strings(v, len, p->name);
        if (rc == RUNLANE_OK && strcmp(p->name, "openai.headers") == 0) {
            const cJSON *it;
            cJSON_ArrayForEach(it, j) {
                if (!rl_http_header_name_ok(it->string)) {
                    rc = rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                      "openai.headers: \"%.64s\" is not a header name (letters, "
                                      "digits and !#$%%&'*+-.^_`|~ only)",
                                      it->string);
                    break;
                }
                if (!rl_http_header_value_ok(it->valuestring)) {
                    /* The value may be a secret: named by its header only. */
                    rc = rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0,
                                      "openai.headers: the value of \"%.64s\" contains control "
                                      "characters (CR, LF...), which a header cannot carry",
                                      it->string);
                    break;
                }
            }
        }
        cJSON_Delete(j);
        if (rc) {
            char msg[512];
            rl_strlcpy(msg, runlane_error_message(runlane_error_last()), sizeof(msg));
            return invalid(errstr, n, "%s", msg);
        }
        return RUNLANE_OK;
    }
    }
    return invalid(errstr, n, "%s: bad type", p->name);
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conf_set(runlane_conf_t *conf, const char *key, const char *value, char *errstr,
                 size_t errstr_size) {
    if (!conf || !key || !value) {
        rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_conf_set: %s is NULL",
                     !conf ? "conf" : !key ? "key" : "value");
        rl_error_copy(errstr, errstr_size);
        return RUNLANE_ERR_INVALID_ARG;
    }
    int i = prop_index(key);
    if (i < 0) {
        rl_error_set(RUNLANE_ERR_UNKNOWN_KEY, 0, "unknown configuration key \"%.100s\"", key);
        rl_error_copy(errstr, errstr_size);
        return RUNLANE_ERR_UNKNOWN_KEY;
    }
    runlane_err_t rc = validate(i, value, errstr, errstr_size);
    if (rc) return rc;
    char *copy = rl_strdup(value);
    if (!copy) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        rl_error_copy(errstr, errstr_size);
        return RUNLANE_ERR_NOMEM;
    }
    if (conf->values[i] && rl_props[i].secret) memset(conf->values[i], 0, strlen(conf->values[i]));
    free(conf->values[i]);
    conf->values[i] = copy;
    rl_error_clear();
    return RUNLANE_OK;
}

runlane_err_t rl_conf_resolve(runlane_conf_t *conf, char *errstr, size_t errstr_size) {
    /* Fixes the defaults above into the client's own copy: the client then
     * sees one value for its whole life, and a bad OPENAI_BASE_URL fails
     * runlane_new() with a message naming it, like a bad explicit value. */
    for (int i = 0; i < rl_props_count; i++) {
        if (conf->values[i]) continue;
        const char *v = dynamic_default(conf, i);
        if (v == rl_props[i].def) continue;
        if (validate(i, v, NULL, 0) != RUNLANE_OK) {
            char why[512];
            rl_strlcpy(why, runlane_error_message(runlane_error_last()), sizeof(why));
            rl_error_set(RUNLANE_ERR_INVALID_VALUE, 0, "OPENAI_BASE_URL: %s (it is the default of %s)", why,
                         rl_props[i].name);
            rl_error_copy(errstr, errstr_size);
            return RUNLANE_ERR_INVALID_VALUE;
        }
        if (!(conf->values[i] = rl_strdup(v))) {
            rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            rl_error_copy(errstr, errstr_size);
            return RUNLANE_ERR_NOMEM;
        }
    }
    return RUNLANE_OK;
}

/* The store URL with its password (redis://user:PASSWORD@host) masked,
 * where the store itself would read it (rl_store_url_userinfo). */
static const char *masked_store(const char *v) {
    static _Thread_local char buf[2200];
    size_t begin, end;
    if (!rl_store_url_userinfo(v, &begin, &end) || begin == end) return v;
    const char *colon = memchr(v + begin, ':', end - begin);
    /* Without a colon the whole user info is a password (as in redis-cli). */
    size_t keep = colon ? (size_t)(colon + 1 - v) : begin;
    snprintf(buf, sizeof(buf), "%.*s***%s", (int)keep, v, v + end);
    return buf;
}

static const char *shown_value(const runlane_conf_t *conf, int i) {
    const char *v = value_of(conf, i);
    if (strcmp(rl_props[i].name, "store") == 0) return masked_store(v);
    if (rl_props[i].secret && conf->values[i] && *v && strcmp(v, "{}") != 0) return "********";
    return v;
}

RUNLANE_EXTERN(runlane_err_t)
runlane_conf_get(const runlane_conf_t *conf, const char *key, char *dest, size_t *dest_size) {
    if (!conf || !key || !dest_size)
        return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_conf_get: NULL argument");
    int i = prop_index(key);
    if (i < 0)
        return rl_error_set(RUNLANE_ERR_UNKNOWN_KEY, 0, "unknown configuration key \"%.100s\"", key);
    const char *v = shown_value(conf, i);
    size_t need = strlen(v) + 1, have = *dest_size;
    *dest_size = need;
    if (!dest) return RUNLANE_OK;
    if (have < need) {
        if (have) rl_strlcpy(dest, v, have);
        return rl_error_set(RUNLANE_ERR_TOO_LARGE, 0, "%s: value needs %zu bytes, buffer has %zu",
                            key, need, have);
    }
    memcpy(dest, v, need);
    return RUNLANE_OK;
}

RUNLANE_EXTERN(runlane_err_t) runlane_conf_dump(char **json_out, const runlane_conf_t *conf) {
    if (!json_out || !conf) return rl_error_set(RUNLANE_ERR_INVALID_ARG, 0, "runlane_conf_dump: NULL argument");
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{");
    for (int i = 0; i < rl_props_count; i++) {
        if (i) rl_buf_puts(&b, ",");
        rl_buf_json_str(&b, rl_props[i].name);
        rl_buf_puts(&b, ":");
        rl_buf_json_str(&b, shown_value(conf, i));
    }
    rl_buf_puts(&b, "}");
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static const char *type_name(rl_ptype_t t) {
    switch (t) {
    case RL_T_STRING: return "string";
    case RL_T_INT: return "int";
    case RL_T_ENUM: return "enum";
    case RL_T_BOOL: return "bool";
    case RL_T_FLOAT: return "float";
    case RL_T_JSON: return "json";
    }
    return "string";
}

static char *props_json;
static pthread_once_t props_once = PTHREAD_ONCE_INIT;

static void build_props_json(void) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "[");
    for (int i = 0; i < rl_props_count; i++) {
        const rl_prop_t *p = &rl_props[i];
        if (i) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, "{\"name\":");
        rl_buf_json_str(&b, p->name);
        rl_buf_printf(&b, ",\"type\":\"%s\",\"default\":", type_name(p->type));
        rl_buf_json_str(&b, p->def);
        if (p->type == RL_T_INT || p->type == RL_T_FLOAT)
            rl_buf_printf(&b, ",\"min\":%lld,\"max\":%lld", (long long)p->min, (long long)p->max);
        if (p->type == RL_T_STRING && p->max)
            rl_buf_printf(&b, ",\"max_bytes\":%lld", (long long)p->max);
        if (p->type == RL_T_ENUM) {
            rl_buf_puts(&b, ",\"values\":[");
            const char *e = p->enums;
            int first = 1;
            while (*e) {
                const char *bar = strchr(e, '|');
                size_t el = bar ? (size_t)(bar - e) : strlen(e);
                char tmp[64];
                rl_strlcpy(tmp, e, el + 1 < sizeof(tmp) ? el + 1 : sizeof(tmp));
                if (!first) rl_buf_puts(&b, ",");
                rl_buf_json_str(&b, tmp);
                first = 0;
                if (!bar) break;
                e = bar + 1;
            }
            rl_buf_puts(&b, "]");
        }
        rl_buf_printf(&b, ",\"secret\":%s,\"doc\":", p->secret ? "true" : "false");
        rl_buf_json_str(&b, p->doc);
        rl_buf_puts(&b, "}");
    }
    rl_buf_puts(&b, "]");
    props_json = rl_buf_take(&b);
}

RUNLANE_EXTERN(const char *) runlane_conf_properties(void) {
    pthread_once(&props_once, build_props_json);
    return props_json ? props_json : "[]";
}
