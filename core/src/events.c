/* events.c - the client's event queue, its fd and wake callback, and the
 * event accessors. The I/O thread pushes; any host thread polls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "internal.h"

runlane_event_t *rl_event_new(runlane_event_type_t type, const char *conv, const char *batch_id,
                              int attempt, const char *json, runlane_err_t err,
                              const char *errmsg) {
    runlane_event_t *ev = calloc(1, sizeof(*ev));
    if (!ev) return NULL;
    ev->type = type;
    ev->attempt = attempt;
    ev->err = err;
    ev->conversation_id = rl_strdup(conv ? conv : "");
    ev->batch_id = rl_strdup(batch_id ? batch_id : "");
    ev->json = rl_strdup(json ? json : "{}");
    ev->errmsg = rl_strdup(errmsg ? errmsg : "");
    if (!ev->conversation_id || !ev->batch_id || !ev->json || !ev->errmsg) {
        runlane_event_destroy(ev);
        return NULL;
    }
    return ev;
}

int rl_events_init(runlane_t *rl) {
    pthread_mutex_init(&rl->ev_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rl->ev_cond, &ca);
    pthread_condattr_destroy(&ca);
    rl->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return rl->ev_fd >= 0;
}

void rl_events_destroy(runlane_t *rl) {
    runlane_event_t *ev = rl->ev_head;
    while (ev) {
        runlane_event_t *next = ev->next;
        runlane_event_destroy(ev);
        ev = next;
    }
    rl->ev_head = rl->ev_tail = NULL;
    if (rl->ev_fd >= 0) close(rl->ev_fd);
    rl->ev_fd = -1;
    pthread_cond_destroy(&rl->ev_cond);
    pthread_mutex_destroy(&rl->ev_mu);
}

void rl_event_push(runlane_t *rl, runlane_event_t *ev) {
    if (!ev) return;
    RL_ADD(rl, events_emitted, 1);
    pthread_mutex_lock(&rl->ev_mu);
    int was_empty = rl->ev_head == NULL;
    if (rl->ev_tail) rl->ev_tail->next = ev;
    else rl->ev_head = ev;
    rl->ev_tail = ev;
    rl->ev_count++;
    if (was_empty) {
        /* Edge: empty -> non-empty. The fd stays readable until a poll
         * empties the queue. */
        uint64_t one = 1;
        if (rl->ev_fd >= 0 && write(rl->ev_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
            /* eventfd write only fails on counter overflow: harmless */
        }
        if (rl->wake_cb) rl->wake_cb(rl->wake_opaque);
    }
    pthread_cond_broadcast(&rl->ev_cond);
    pthread_mutex_unlock(&rl->ev_mu);
}

runlane_event_t *rl_event_pop(runlane_t *rl, int timeout_ms);
runlane_event_t *rl_event_pop(runlane_t *rl, int timeout_ms) {
    pthread_mutex_lock(&rl->ev_mu);
    if (!rl->ev_head && timeout_ms != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (timeout_ms > 0) {
            ts.tv_sec += timeout_ms / 1000;
            ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
        }
        while (!rl->ev_head) {
            int rc = timeout_ms < 0 ? pthread_cond_wait(&rl->ev_cond, &rl->ev_mu)
                                    : pthread_cond_timedwait(&rl->ev_cond, &rl->ev_mu, &ts);
            if (rc == ETIMEDOUT) break;
        }
    }
    runlane_event_t *ev = rl->ev_head;
    int below_cap = 0;
    if (ev) {
        rl->ev_head = ev->next;
        if (!rl->ev_head) rl->ev_tail = NULL;
        below_cap = rl->ev_count-- == rl->max_pending_events;
        ev->next = NULL;
    }
    if (!rl->ev_head && rl->ev_fd >= 0) {
        uint64_t v;
        while (read(rl->ev_fd, &v, sizeof(v)) > 0) {}
    }
    pthread_mutex_unlock(&rl->ev_mu);
    if (below_cap) rl_worker_wake(rl); /* claims were held back by the backlog */
    return ev;
}

RUNLANE_EXTERN(runlane_event_type_t) runlane_event_type(const runlane_event_t *ev) {
    return ev ? ev->type : RUNLANE_EVENT_NONE;
}

RUNLANE_EXTERN(const char *) runlane_event_type_name(runlane_event_type_t type) {
    switch (type) {
    case RUNLANE_EVENT_NONE: return "none";
    case RUNLANE_EVENT_BATCH: return "batch";
    case RUNLANE_EVENT_RUN_STARTED: return "run_started";
    case RUNLANE_EVENT_DELTA: return "delta";
    case RUNLANE_EVENT_TOOL_CALLS: return "tool_calls";
    case RUNLANE_EVENT_COMPLETED: return "completed";
    case RUNLANE_EVENT_FAILED: return "failed";
    case RUNLANE_EVENT_DEAD: return "dead";
    case RUNLANE_EVENT_ERROR: return "error";
    case RUNLANE_EVENT_LEASE_LOST: return "lease_lost";
    case RUNLANE_EVENT_STOPPED: return "stopped";
    }
    return "unknown";
}

RUNLANE_EXTERN(const char *) runlane_event_conversation_id(const runlane_event_t *ev) {
    return ev ? ev->conversation_id : "";
}

RUNLANE_EXTERN(const char *) runlane_event_batch_id(const runlane_event_t *ev) {
    return ev ? ev->batch_id : "";
}

RUNLANE_EXTERN(int) runlane_event_attempt(const runlane_event_t *ev) { return ev ? ev->attempt : 0; }

RUNLANE_EXTERN(const char *) runlane_event_json(const runlane_event_t *ev) {
    return ev ? ev->json : "{}";
}

RUNLANE_EXTERN(runlane_err_t) runlane_event_error_code(const runlane_event_t *ev) {
    return ev ? ev->err : RUNLANE_ERR_INVALID_ARG;
}

RUNLANE_EXTERN(const char *) runlane_event_error_message(const runlane_event_t *ev) {
    return ev ? ev->errmsg : "";
}

RUNLANE_EXTERN(void) runlane_event_destroy(runlane_event_t *ev) {
    if (!ev) return;
    free(ev->conversation_id);
    free(ev->batch_id);
    free(ev->json);
    free(ev->errmsg);
    free(ev);
}

void rl_events_drop_batch(runlane_t *rl, const char *batch_id) {
    pthread_mutex_lock(&rl->ev_mu);
    runlane_event_t **pp = &rl->ev_head, *prev = NULL;
    while (*pp) {
        runlane_event_t *ev = *pp;
        if (ev->type == RUNLANE_EVENT_BATCH && strcmp(ev->batch_id, batch_id) == 0) {
            *pp = ev->next;
            rl->ev_count--;
            runlane_event_destroy(ev);
            continue;
        }
        prev = ev;
        pp = &ev->next;
    }
    rl->ev_tail = prev;
    if (!rl->ev_head && rl->ev_fd >= 0) {
        uint64_t v;
        while (read(rl->ev_fd, &v, sizeof(v)) > 0) {}
    }
    pthread_mutex_unlock(&rl->ev_mu);
}
