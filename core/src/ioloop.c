/* ioloop.c - epoll + eventfd wait driving a curl multi handle by
 * curl_multi_socket_action; see ioloop.h. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "internal.h"
#include "ioloop.h"

/* Events taken per epoll_wait; more ready sockets are taken by the next
 * wait (level-triggered), so this only bounds one pass. */
#define RL_IOLOOP_EVENTS 512

struct rl_ioloop {
    CURLM *multi;
    int epfd, wakefd;
    int64_t timer_at; /* curl's next timeout (mono ms), INT64_MAX: none */
    int64_t timeout_acted_at; /* the last CURL_SOCKET_TIMEOUT action */
    int acting;
    int extfd; /* rl_ioloop_watch's fd, -1: none */
};

/* curl: watch socket s for `what` (or stop watching it). socketp is the
 * loop itself once s is in the set, NULL before. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    (void)easy;
    rl_ioloop_t *l = userp;
    if (what == CURL_POLL_REMOVE) {
        if (socketp) {
            /* ENOENT/EBADF: curl closed it already; epoll forgot it then. */
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, s, NULL);
            curl_multi_assign(l->multi, s, NULL);
        }
        return 0;
    }
    struct epoll_event ev = {0};
    ev.data.fd = s;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev.events |= EPOLLOUT;
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(l->epfd, op, s, &ev) != 0) {
        /* A reused descriptor number, or one curl closed and opened again
         * between callbacks: try the other operation. */
        if (errno == EEXIST) epoll_ctl(l->epfd, EPOLL_CTL_MOD, s, &ev);
        else if (errno == ENOENT) epoll_ctl(l->epfd, EPOLL_CTL_ADD, s, &ev);
    }
    curl_multi_assign(l->multi, s, l);
    return 0;
}

/* curl: call me with CURL_SOCKET_TIMEOUT in timeout_ms (-1: never). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    rl_ioloop_t *l = userp;
    l->timer_at = timeout_ms < 0 ? INT64_MAX : rl_mono_ms() + timeout_ms;
    return 0;
}

rl_ioloop_t *rl_ioloop_new(CURLM *multi) {
    rl_ioloop_t *l = calloc(1, sizeof(*l));
    if (!l) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    l->multi = multi;
    l->timer_at = INT64_MAX;
    l->extfd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.fd = l->wakefd;
    if (l->epfd < 0 || l->wakefd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) != 0) {
        rl_error_set(RUNLANE_ERR_INTERNAL, 0, "epoll/eventfd setup failed (errno %d)", errno);
        if (l->epfd >= 0) close(l->epfd);
        if (l->wakefd >= 0) close(l->wakefd);
        free(l);
        return NULL;
    }
    if (multi) {
        curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, (void *)l);
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(multi, CURLMOPT_TIMERDATA, (void *)l);
    }
    return l;
}

void rl_ioloop_destroy(rl_ioloop_t *l) {
    if (!l) return;
    if (l->multi) {
        /* The multi may outlive the loop (its cleanup calls back). */
        curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, NULL);
        curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, NULL);
        curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, NULL);
    }
    close(l->epfd);
    close(l->wakefd);
    free(l);
}

void rl_ioloop_wake(rl_ioloop_t *l) {
    uint64_t one = 1;
    /* Fails only when the counter would overflow: a wake is pending then. */
    ssize_t n = write(l->wakefd, &one, sizeof(one));
    (void)n;
}

void rl_ioloop_watch(rl_ioloop_t *l, int fd) {
    if (fd == l->extfd) return;
    if (l->extfd >= 0) epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->extfd, NULL);
    l->extfd = -1;
    if (fd < 0) return;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) l->extfd = fd;
}

int rl_ioloop_acting(const rl_ioloop_t *l) { return l->acting; }

int64_t rl_ioloop_timer_at(const rl_ioloop_t *l) { return l->timer_at; }

static void act(rl_ioloop_t *l, curl_socket_t s, int mask) {
    int running = 0;
    l->acting = 1;
    curl_multi_socket_action(l->multi, s, mask, &running);
    l->acting = 0;
}

int rl_ioloop_wait(rl_ioloop_t *l, int64_t timeout_ms) {
    struct epoll_event evs[RL_IOLOOP_EVENTS];
    int64_t now = rl_mono_ms();
    if (timeout_ms < 0) timeout_ms = 0;
    if (l->timer_at != INT64_MAX) {
        int64_t t = l->timer_at - now;
        if (t < timeout_ms) timeout_ms = t < 0 ? 0 : t;
    }
    if (timeout_ms > 60000) timeout_ms = 60000;
    int n = epoll_wait(l->epfd, evs, RL_IOLOOP_EVENTS, (int)timeout_ms);
    int actions = 0;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == l->wakefd) {
            uint64_t v;
            ssize_t r = read(l->wakefd, &v, sizeof(v));
            (void)r;
            continue;
        }
        if (fd == l->extfd) continue; /* its owner reads it after the wait */
        if (!l->multi) continue;
        int mask = 0;
        if (evs[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
        if (evs[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
        act(l, fd, mask);
        actions++;
    }
    now = rl_mono_ms();
    /* The timer is one-shot, as curl expects: curl re-arms it through
     * on_timer. A look at curl's timers at least every second anyway
     * (harmless, and cheap) keeps a lost re-arm from stalling a transfer. */
    if (l->multi && ((l->timer_at != INT64_MAX && now >= l->timer_at) ||
                     now - l->timeout_acted_at >= 1000)) {
        l->timer_at = INT64_MAX;
        l->timeout_acted_at = now;
        act(l, CURL_SOCKET_TIMEOUT, 0);
        actions++;
    }
    return actions;
}
