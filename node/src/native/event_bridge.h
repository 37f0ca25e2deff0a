// event_bridge.h - the hand-written half of the Node addon.
//
// The SWIG-generated raw layer (bindings/runlane.i) exposes the C API one to
// one. This bridge adds what SWIG cannot generate:
// - the wake callback: one ThreadSafeFunction per client, woken (coalesced,
//   without payload) from the core's I/O thread; JS then drains the events
//   with runlane_poll(rl, 0);
// - calls that touch the store, run off the event loop: short ones in the
//   libuv threadpool (Napi::AsyncWorker), the ones that may wait long
//   (runlane_stop, runlane_destroy) on a thread of their own so that they
//   never hold a threadpool slot that an ack they wait for needs;
// - safe teardown: close(), the GC finalizer and the environment's cleanup
//   hook each remove the wake callback before the ThreadSafeFunction goes.
//
// It knows nothing of SWIG's runtime: the wrapper hands it three converters
// between SWIG pointer objects and C pointers (rlnode_set_hooks).
#ifndef RUNLANE_NODE_EVENT_BRIDGE_H
#define RUNLANE_NODE_EVENT_BRIDGE_H

#ifndef NAPI_CPP_EXCEPTIONS
#define NAPI_CPP_EXCEPTIONS
#endif
#include <napi.h>

#include "runlane.h"

typedef runlane_t *(*rlnode_to_rl_fn)(Napi::Value v);
typedef runlane_conf_t *(*rlnode_to_conf_fn)(Napi::Value v);
typedef Napi::Value (*rlnode_from_rl_fn)(Napi::Env env, runlane_t *rl);

// Called from the module's init (SWIG %init).
void rlnode_set_hooks(rlnode_to_rl_fn to_rl, rlnode_to_conf_fn to_conf, rlnode_from_rl_fn from_rl);

// Throws (as a C++ Napi::Error) the error `code` with the detail of
// runlane_error_last() on the calling thread: message, code (symbolic name),
// errno (number), retriable.
[[noreturn]] void rlnode_throw_last(Napi::Env env, runlane_err_t code);

// bridge_new(conf | null, onWake: () => void, errorFactory?) -> Promise<[bridge, rl]>
//   runlane_new in the threadpool; then the ThreadSafeFunction (unref'd) and
//   the wake callback are installed. `conf` is copied at once.
//   errorFactory(errno, message, retriable) makes the errors its promises
//   reject with (the JS layer's typed classes); without it, plain Errors
//   with code, errno and retriable.
Napi::Value rlnode_bridge_new(const Napi::CallbackInfo &info);
// bridge_ref(bridge, ref: boolean): keeps the event loop alive (or not).
Napi::Value rlnode_bridge_ref(const Napi::CallbackInfo &info);
// bridge_close(bridge): removes the wake callback, releases the
// ThreadSafeFunction. Idempotent. The client itself stays until "destroy".
Napi::Value rlnode_bridge_close(const Napi::CallbackInfo &info);
// bridge_call(bridge, op, ...args) -> Promise. Ops: enqueue(conv, content,
// opts|null) -> {id, duplicate}; enqueue_many(json) -> string;
// touch(conv); status(conv|null) -> string; dead_list(offset, limit) ->
// string; dead_retry(id|null) -> number; dead_purge(id|null) -> number;
// ack(batch, result|null); fail(batch, msg|null, retriable);
// submit_tool_outputs(batch, json); reply_ack(batch); start();
// stop(mode, timeout_ms); destroy(); conversation_create(metadata|null) and
// thread_create(metadata|null) -> id (HTTP, on a thread of their own). After destroy every op rejects with
// RUNLANE_ERR_DESTROYED; destroy waits for the ops already running.
// dashboard_handle(dash, method, path, query|null, body: Buffer|null,
// csrf|null) -> {status, headers: JSON string, body: Buffer} and
// dashboard_sample(dash): runlane_dashboard_handle/_sample in the threadpool.
Napi::Value rlnode_bridge_call(const Napi::CallbackInfo &info);
// dashboard_new(bridge, options_json|null) -> dashboard handle (an External
// freed by its GC finalizer). Throws on bad options or a closed client.
Napi::Value rlnode_dashboard_new(const Napi::CallbackInfo &info);

#endif
