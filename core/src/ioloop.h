/* ioloop.h - the I/O thread's one wait (internal).
 *
 * An epoll set holding the sockets of a curl multi handle and an eventfd
 * that other threads write to wake the loop. curl tells the set which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION) and when its next timeout is
 * (CURLMOPT_TIMERFUNCTION); rl_ioloop_wait sleeps until a socket is ready,
 * curl's timer is due, a wake comes or the caller's timeout passes, and
 * then hands curl only what is ready (curl_multi_socket_action).
 *
 * Why not curl_multi_poll + curl_multi_perform: both visit every transfer
 * on every call (perform polls each transfer's socket with its own
 * poll()), so a pass cost O(transfers in flight) system calls; at
 * thousands of streams in flight passes took seconds and leases went
 * unrenewed. Here a pass costs O(sockets ready).
 *
 * Everything but rl_ioloop_wake runs on the thread that owns the multi. */
#ifndef RUNLANE_IOLOOP_H
#define RUNLANE_IOLOOP_H

#include <stdint.h>

#include <curl/curl.h>

typedef struct rl_ioloop rl_ioloop_t;

/* A loop watching `multi` (it installs the multi's socket and timer
 * callbacks; the multi must then be driven through this loop only, never
 * with curl_multi_perform). NULL with the error set on failure. */
rl_ioloop_t *rl_ioloop_new(CURLM *multi);
/* Frees the loop (before the multi is cleaned up: cleaning up the multi
 * calls the socket callback, which then only forgets). NULL is ignored. */
void rl_ioloop_destroy(rl_ioloop_t *l);
/* Wakes a wait in progress, or makes the next one return at once. Any
 * thread. */
void rl_ioloop_wake(rl_ioloop_t *l);
/* Sleeps at most timeout_ms (0: only looks; curl's own timer may end it
 * sooner), then lets curl act on every ready socket and on its timer when
 * due. Returns the number of curl actions. */
int rl_ioloop_wait(rl_ioloop_t *l, int64_t timeout_ms);
/* Also ends a wait when fd is readable (one fd besides curl's: the
 * store's wake-up connection); -1 stops watching it. Unwatch before
 * closing it. The loop does not read it: its owner does after the wait. */
void rl_ioloop_watch(rl_ioloop_t *l, int fd);
/* 1 while curl acts (inside curl_multi_socket_action): transfer callbacks
 * run then and must not call multi functions (add, remove). */
int rl_ioloop_acting(const rl_ioloop_t *l);
/* curl's next timeout (rl_mono_ms time), or INT64_MAX when none. */
int64_t rl_ioloop_timer_at(const rl_ioloop_t *l);

#endif
