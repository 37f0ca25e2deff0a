/* test_dropin.c - what makes code written for the original
 * AssistantMessageQueue and for the official SDKs work as it is, and the
 * health call:
 *   - openai.assistant.id with no backend chosen selects the assistants
 *     backend; an explicit backend wins;
 *   - OPENAI_BASE_URL is the default of openai.base.url (empty = unset; an
 *     explicit value wins; an invalid one fails runlane_new naming it), and
 *     requests really go there;
 *   - runlane_start_check refuses a custom-backend worker nobody takes
 *     batches from, before anything is claimed;
 *   - runlane_health: store, worker state, lag of the oldest due
 *     conversation. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>

#include "rlemu.h"
#include "rltest.h"
#include "runlane.h"

static runlane_conf_t *conf_with(const char *const *kv) {
    char err[512];
    runlane_conf_t *c = runlane_conf_new();
    for (; kv && kv[0]; kv += 2)
        if (runlane_conf_set(c, kv[0], kv[1], err, sizeof(err)) != RUNLANE_OK) {
            fprintf(stderr, "conf_set %s: %s\n", kv[0], err);
            abort();
        }
    return c;
}

/* A client of `kv` (NULL-terminated pairs), or NULL with `err` set. */
static runlane_t *client_with(const char *const *kv, char *err, size_t errsize) {
    runlane_conf_t *c = conf_with(kv);
    runlane_t *rl = runlane_new(c, err, errsize);
    runlane_conf_destroy(c);
    return rl;
}

static cJSON *health(runlane_t *rl) {
    char *out = NULL;
    if (runlane_health(&out, rl) != RUNLANE_OK) return NULL;
    cJSON *j = cJSON_Parse(out);
    runlane_free(out);
    return j;
}

static const char *jstr(cJSON *j, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : "(missing)";
}

static double jnum(cJSON *j, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int jtrue(cJSON *j, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, k)); }

static const char *dumped(const runlane_conf_t *c, const char *key, char *buf, size_t size) {
    size_t n = size;
    if (runlane_conf_get(c, key, buf, &n) != RUNLANE_OK) return "(error)";
    return buf;
}

static double time_scale(void) {
    const char *s = getenv("RUNLANE_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_assistant_id_selects_assistants_backend(void) {
    char err[512], buf[256];
    const char *kv[] = {"store", "memory://dropin-a", "openai.assistant.id", "asst_1", NULL};
    runlane_conf_t *c = conf_with(kv);
    RL_CHECK_STR("assistants", dumped(c, "backend", buf, sizeof(buf)));
    runlane_t *rl = runlane_new(c, err, sizeof(err));
    runlane_conf_destroy(c);
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    cJSON *h = health(rl);
    RL_CHECK(h != NULL);
    RL_CHECK_STR("assistants", jstr(h, "backend"));
    cJSON_Delete(h);
    /* HTTP backends run their own turns: no host flag needed. */
    RL_CHECK_OK(runlane_start_check(rl, 0));
    runlane_destroy(rl);

    /* An explicit backend wins over the assistant id. */
    const char *kv2[] = {"store", "memory://dropin-b", "openai.assistant.id", "asst_1", "backend", "custom", NULL};
    rl = client_with(kv2, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    h = health(rl);
    RL_CHECK_STR("custom", jstr(h, "backend"));
    cJSON_Delete(h);
    runlane_destroy(rl);

    /* No assistant id: custom, as before. */
    const char *kv3[] = {"store", "memory://dropin-c", NULL};
    rl = client_with(kv3, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    h = health(rl);
    RL_CHECK_STR("custom", jstr(h, "backend"));
    cJSON_Delete(h);
    runlane_destroy(rl);
}

static void test_openai_base_url_env_is_the_default(void) {
    char err[512], buf[2200];
    unsetenv("OPENAI_BASE_URL");
    runlane_conf_t *c = runlane_conf_new();
    RL_CHECK_STR("https://api.openai.com/v1", dumped(c, "openai.base.url", buf, sizeof(buf)));
    setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1", 1);
    RL_CHECK_STR("http://127.0.0.1:9/v1", dumped(c, "openai.base.url", buf, sizeof(buf)));
    setenv("OPENAI_BASE_URL", "", 1); /* empty means unset, as in the SDKs */
    RL_CHECK_STR("https://api.openai.com/v1", dumped(c, "openai.base.url", buf, sizeof(buf)));
    setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1", 1);
    RL_CHECK_OK(runlane_conf_set(c, "openai.base.url", "http://explicit.invalid/v1", err, sizeof(err)));
    RL_CHECK_STR("http://explicit.invalid/v1", dumped(c, "openai.base.url", buf, sizeof(buf)));
    runlane_conf_destroy(c);

    /* An invalid environment value fails runlane_new, naming the variable. */
    setenv("OPENAI_BASE_URL", "http://bad\x01url/v1", 1);
    const char *kv[] = {"store", "memory://dropin-env", NULL};
    runlane_t *rl = client_with(kv, err, sizeof(err));
    unsetenv("OPENAI_BASE_URL");
    RL_CHECK_MSG(rl == NULL, "runlane_new accepted an OPENAI_BASE_URL with a control character");
    RL_CHECK_INT(RUNLANE_ERR_INVALID_VALUE, runlane_error_code(runlane_error_last()));
    RL_CHECK_MSG(strstr(err, "OPENAI_BASE_URL") != NULL, "message does not name OPENAI_BASE_URL: %s", err);
}

static void test_openai_base_url_env_reaches_the_provider(void) {
    rlemu_t emu;
    if (rlemu_start(&emu, NULL) != 0) RL_SKIP("the emulator (python3) is not available");
    char err[512];
    setenv("OPENAI_BASE_URL", emu.base_url, 1);
    const char *kv[] = {"store", "memory://dropin-emu", "openai.assistant.id", "asst_1", NULL};
    runlane_t *rl = client_with(kv, err, sizeof(err));
    unsetenv("OPENAI_BASE_URL");
    if (!rl) {
        rlemu_stop(&emu);
        RL_FAILF("runlane_new: %s", err);
    }
    char *id = NULL;
    runlane_err_t rc = runlane_thread_create(&id, rl, NULL);
    int ok = rc == RUNLANE_OK && id && strncmp(id, "thread_", 7) == 0;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", runlane_error_message(runlane_error_last()));
    runlane_free(id);
    runlane_destroy(rl);
    rlemu_stop(&emu);
    RL_CHECK_MSG(ok, "thread_create through OPENAI_BASE_URL: rc %d (%s)", (int)rc, msg);
}

static void test_start_check_refuses_custom_worker_without_consumer(void) {
    char err[512];
    const char *kv[] = {"store", "memory://dropin-start", "batch.window.ms", "0", NULL};
    runlane_t *rl = client_with(kv, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "chat-1", "hello", NULL));
    RL_CHECK_INT(RUNLANE_ERR_STATE, runlane_start_check(rl, 0));
    const char *m = runlane_error_message(runlane_error_last());
    RL_CHECK_MSG(strstr(m, "custom") && strstr(m, "handler"), "unclear message: %s", m);
    RL_CHECK_INT(RUNLANE_ERR_INVALID_ARG, runlane_start_check(rl, 0x80));
    /* Nothing was claimed: the message is still pending, no lease. */
    char *st = NULL;
    RL_CHECK_OK(runlane_status(&st, rl, "chat-1"));
    cJSON *j = cJSON_Parse(st);
    runlane_free(st);
    RL_CHECK(j != NULL);
    double pending = jnum(j, "pending"), inflight = jnum(j, "inflight");
    cJSON_Delete(j);
    RL_CHECK_INT(1, (long long)pending);
    RL_CHECK_INT(0, (long long)inflight);
    RL_CHECK_OK(runlane_start_check(rl, RUNLANE_HOST_RUNS_BATCHES));
    runlane_destroy(rl);
}

static void test_health_reports_store_worker_and_lag(void) {
    char err[512];
    const char *redis = rl_test_redis_url();
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "dropin%ld", (long)getpid());
    const char *kv[] = {"store", redis ? redis : "memory://dropin-health", "key.prefix", prefix,
                        "batch.window.ms", "0", NULL};
    runlane_t *rl = client_with(kv, err, sizeof(err));
    RL_CHECK_MSG(rl != NULL, "runlane_new: %s", err);
    cJSON *h = health(rl);
    RL_CHECK(h != NULL);
    RL_CHECK(jtrue(h, "ok") && jtrue(h, "store_ok"));
    RL_CHECK_STR("idle", jstr(h, "worker"));
    RL_CHECK(!jtrue(h, "worker_running"));
    RL_CHECK_INT(0, (long long)jnum(h, "lag_ms"));
    cJSON_Delete(h);

    /* A due conversation nobody works on: the lag grows. */
    char id[RUNLANE_ID_MAX];
    RL_CHECK_OK(runlane_enqueue(id, sizeof(id), NULL, rl, "chat-lag", "hi", NULL));
    int64_t waited = 0, limit = (int64_t)(10000 * time_scale());
    double lag = 0;
    while (waited < limit) {
        h = health(rl);
        RL_CHECK(h != NULL);
        lag = jnum(h, "lag_ms");
        cJSON_Delete(h);
        if (lag >= 200) break;
        sleep_ms(20);
        waited += 20;
    }
    RL_CHECK_MSG(lag >= 200, "lag_ms stayed at %g with a conversation due and no worker", lag);

    RL_CHECK_OK(runlane_start(rl));
    h = health(rl);
    RL_CHECK_STR("running", jstr(h, "worker"));
    RL_CHECK(jtrue(h, "worker_running") && jtrue(h, "ok"));
    cJSON_Delete(h);
    /* The worker claims it (a batch event): the lag goes back to 0. */
    runlane_event_t *ev = NULL;
    for (int i = 0; i < 100 && !ev; i++) {
        ev = runlane_poll(rl, (int)(100 * time_scale()));
        if (ev && runlane_event_type(ev) != RUNLANE_EVENT_BATCH) {
            runlane_event_destroy(ev);
            ev = NULL;
        }
    }
    RL_CHECK(ev != NULL);
    h = health(rl);
    RL_CHECK_INT(0, (long long)jnum(h, "lag_ms"));
    RL_CHECK_INT(1, (long long)jnum(h, "inflight"));
    cJSON_Delete(h);
    RL_CHECK_OK(runlane_batch_ack(rl, runlane_event_batch_id(ev), NULL));
    runlane_event_destroy(ev);
    RL_CHECK_OK(runlane_stop(rl, RUNLANE_STOP_DRAIN, 1000));
    h = health(rl);
    RL_CHECK_STR("stopped", jstr(h, "worker"));
    RL_CHECK(!jtrue(h, "ok") && jtrue(h, "store_ok"));
    cJSON_Delete(h);
    runlane_destroy(rl);
}

/* A throwaway redis-server on a free loopback port; its pid, or -1. */
static pid_t start_redis(int *port_out) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &len)) {
        if (s >= 0) close(s);
        return -1;
    }
    int port = ntohs(a.sin_port);
    close(s);
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    *port_out = port;
    return pid;
}

static void test_health_reports_unreachable_store(void) {
    char err[512], url[64];
    int port = 0;
    pid_t pid = start_redis(&port);
    RL_CHECK_MSG(pid > 0, "could not start redis-server");
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    const char *kv[] = {"store", url, "redis.connect.timeout.ms", "300", "redis.command.timeout.ms", "300", NULL};
    runlane_t *rl = NULL;
    for (int i = 0; i < 100 && !rl; i++) { /* until the server listens */
        rl = client_with(kv, err, sizeof(err));
        if (!rl) sleep_ms(50);
    }
    if (!rl) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        RL_FAILF("runlane_new: %s", err);
    }
    cJSON *h = health(rl);
    int up = h && jtrue(h, "store_ok");
    cJSON_Delete(h);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    RL_CHECK_MSG(up, "store_ok false while redis-server ran");
    /* The server is gone: health says so in its JSON (not as an error). */
    h = health(rl);
    RL_CHECK_MSG(h != NULL, "runlane_health failed: %s", runlane_error_message(runlane_error_last()));
    RL_CHECK(!jtrue(h, "ok") && !jtrue(h, "store_ok"));
    RL_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(h, "lag_ms")));
    RL_CHECK(strlen(jstr(h, "store_error")) > 0);
    cJSON_Delete(h);
    runlane_destroy(rl);
}

int main(void) {
    RL_RUN(test_assistant_id_selects_assistants_backend);
    RL_RUN(test_openai_base_url_env_is_the_default);
    RL_RUN(test_openai_base_url_env_reaches_the_provider);
    RL_RUN(test_start_check_refuses_custom_worker_without_consumer);
    RL_RUN(test_health_reports_store_worker_and_lag);
    RL_RUN(test_health_reports_unreachable_store);
    return rl_test_summary();
}
