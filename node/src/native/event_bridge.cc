// event_bridge.cc - see event_bridge.h.
//
// Threads:
// - the JS thread owns every field of Bridge except `wake_pending`;
// - the core's I/O thread (and any thread that pushes an event, e.g. a
//   threadpool thread inside runlane_batch_fail) runs on_wake(): it only
//   flips `wake_pending` and queues one call on the ThreadSafeFunction,
//   never blocks, never calls runlane;
// - libuv threadpool threads run short store calls (Op);
// - a thread of its own runs runlane_stop / runlane_destroy (LongOp).
//
// Lifetime of a Bridge: held by the JS External (until its GC finalizer) and
// by the ThreadSafeFunction (until its finalizer); freed when both let go.
// The wake callback is removed (runlane_set_wake_cb(rl, NULL): after it
// returns the core never calls it again) before the ThreadSafeFunction can
// be finalized, so the I/O thread never touches a dead one.
#include "event_bridge.h"

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

namespace {

rlnode_to_rl_fn g_to_rl = nullptr;
rlnode_to_conf_fn g_to_conf = nullptr;
rlnode_from_rl_fn g_from_rl = nullptr;

struct ErrInfo {
    runlane_err_t code = RUNLANE_OK;
    std::string message;
    bool retriable = false;
};

// Reads runlane_error_last() on the calling thread.
ErrInfo capture(runlane_err_t rc) {
    ErrInfo e;
    e.code = rc;
    const runlane_error_t *last = runlane_error_last();
    if (runlane_error_code(last) == rc) {
        e.message = runlane_error_message(last);
        e.retriable = runlane_error_retriable(last) != 0;
    }
    if (e.message.empty()) e.message = runlane_err2str(rc);
    return e;
}

ErrInfo make_info(runlane_err_t rc, const char *msg) {
    ErrInfo e;
    e.code = rc;
    e.message = msg;
    return e;
}

Napi::Error make_error(Napi::Env env, const ErrInfo &e) {
    Napi::Error err = Napi::Error::New(env, e.message);
    Napi::Object o = err.Value();
    o.Set("code", runlane_err2name(e.code));
    o.Set("errno", Napi::Number::New(env, (double)e.code));
    o.Set("retriable", Napi::Boolean::New(env, e.retriable));
    return err;
}

struct Bridge;
void call_js(Napi::Env env, Napi::Function fn, Bridge *b, void *data);
using WakeFn = Napi::TypedThreadSafeFunction<Bridge, void, call_js>;

struct Bridge {
    runlane_t *rl = nullptr;
    napi_env env = nullptr;
    WakeFn tsfn;
    bool tsfn_live = false;      // created, not finalized
    bool tsfn_released = false;  // Release() called
    bool wake_installed = false;
    bool refed = false;
    std::atomic<bool> wake_pending{false};
    int ops = 0;                 // async ops started, not yet completed
    bool destroying = false;     // destroy requested: new ops are refused
    bool destroyed = false;      // runlane_destroy returned (or started on GC)
    bool hook_installed = false;
    int holders = 0;             // External + ThreadSafeFunction
    // A destroy waiting for the running ops to end.
    bool destroy_pending = false;
    Napi::Promise::Deferred *destroy_deferred = nullptr;
    // (errno, message, retriable) => Error: the typed errors of the JS layer.
    Napi::FunctionReference error_factory;
};

// The error for `e`: made by the JS layer's factory when there is one (so
// promises reject with its typed classes), else a plain Error with code,
// errno and retriable.
Napi::Value error_value(Napi::Env env, const ErrInfo &e, Napi::FunctionReference *factory) {
    if (factory && !factory->IsEmpty()) {
        try {
            Napi::Value v = factory->Call({Napi::Number::New(env, (double)e.code),
                                           Napi::String::New(env, e.message),
                                           Napi::Boolean::New(env, e.retriable)});
            if (v.IsObject()) return v;
        } catch (const Napi::Error &) {
            // fall back to a plain error
        }
    }
    return make_error(env, e).Value();
}

void release_holder(Bridge *b) {
    if (--b->holders == 0) delete b;
}

// The wake callback: on the I/O thread, under the core's event lock.
extern "C" void on_wake(void *opaque) {
    Bridge *b = static_cast<Bridge *>(opaque);
    if (b->wake_pending.exchange(true)) return;  // a drain is already queued
    b->tsfn.NonBlockingCall();                   // napi_closing: ignored
}

void call_js(Napi::Env env, Napi::Function fn, Bridge *b, void *) {
    if (static_cast<napi_env>(env) == nullptr) return;  // teardown
    b->wake_pending.store(false);
    if (!fn.IsEmpty()) fn.Call({});
}

// Removes the wake callback while the client is alive.
void remove_wake(Bridge *b) {
    if (b->wake_installed) {
        runlane_set_wake_cb(b->rl, nullptr, nullptr);
        b->wake_installed = false;
    }
}

void release_tsfn(Bridge *b) {
    if (b->tsfn_live && !b->tsfn_released) {
        b->tsfn_released = true;
        b->tsfn.Release();
    }
}

void close_bridge(Bridge *b) {
    remove_wake(b);
    release_tsfn(b);
}

void tsfn_finalize(Napi::Env, void *, Bridge *b) {
    // Normally the wake callback is gone already; at environment teardown
    // Node may finalize the function first, so remove it here as well.
    remove_wake(b);
    b->tsfn_live = false;
    release_holder(b);
}

void cleanup_hook(void *arg);

void remove_hook(Bridge *b) {
    if (b->hook_installed) {
        napi_remove_env_cleanup_hook(b->env, cleanup_hook, b);
        b->hook_installed = false;
    }
}

// Environment teardown (process exit, worker_threads terminate) with the
// client still open: stop delivering, then free the client if no call is
// running on another thread.
void cleanup_hook(void *arg) {
    Bridge *b = static_cast<Bridge *>(arg);
    b->hook_installed = false;
    close_bridge(b);
    if (!b->destroyed && !b->destroying && b->ops == 0) {
        b->destroyed = true;
        runlane_destroy(b->rl);
    }
}

// GC of a bridge that was never destroyed: nobody can reach the client any
// more, so free it on a thread of its own (runlane_destroy joins the I/O
// thread; a finalizer must not block).
void external_finalize(Napi::Env, Bridge *b) {
    remove_hook(b);
    close_bridge(b);
    if (!b->destroyed && !b->destroying && b->rl) {
        b->destroyed = true;
        runlane_t *rl = b->rl;
        std::thread([rl] { runlane_destroy(rl); }).detach();
    }
    release_holder(b);
}

Bridge *bridge_arg(const Napi::CallbackInfo &info, size_t i) {
    if (info.Length() <= i || !info[i].IsExternal())
        throw Napi::TypeError::New(info.Env(), "runlane: expected a bridge handle");
    return info[i].As<Napi::External<Bridge>>().Data();
}

// Optional string argument: null/undefined -> absent.
bool opt_string(const Napi::CallbackInfo &info, size_t i, std::string *out) {
    if (info.Length() <= i || info[i].IsNull() || info[i].IsUndefined()) return false;
    if (!info[i].IsString())
        throw Napi::TypeError::New(info.Env(), "runlane: expected a string argument");
    *out = info[i].As<Napi::String>().Utf8Value();
    return true;
}

std::string req_string(const Napi::CallbackInfo &info, size_t i) {
    std::string s;
    if (!opt_string(info, i, &s))
        throw Napi::TypeError::New(info.Env(), "runlane: missing string argument");
    return s;
}

struct Dash;
Dash *dash_arg(const Napi::CallbackInfo &info, size_t i);

double req_number(const Napi::CallbackInfo &info, size_t i) {
    if (info.Length() <= i || !info[i].IsNumber())
        throw Napi::TypeError::New(info.Env(), "runlane: expected a number argument");
    return info[i].As<Napi::Number>().DoubleValue();
}

// ---- operations ------------------------------------------------------

enum class OpKind {
    Enqueue, EnqueueMany, Touch, Status, DeadList, DeadRetry, DeadPurge, Ack, Fail, Release,
    SubmitToolOutputs, ReplyAck, Start, Stop, Destroy, ConversationCreate, ThreadCreate, Health,
    MapGet, MapSet, MapForget, Migrate, DashboardHandle, DashboardSample
};

// A dashboard handler (runlane_dashboard_t) held by a JS External: freed by
// its GC finalizer (runlane_dashboard_destroy touches no client, so the
// order against the client's destroy does not matter). An op on it holds a
// reference to the External, so it cannot be freed under a running call.
struct Dash {
    runlane_dashboard_t *d = nullptr;
};

void dash_finalize(Napi::Env, Dash *dash) {
    runlane_dashboard_destroy(dash->d);
    delete dash;
}

Dash *dash_arg(const Napi::CallbackInfo &info, size_t i) {
    if (info.Length() <= i || !info[i].IsExternal())
        throw Napi::TypeError::New(info.Env(), "runlane: expected a dashboard handle");
    return info[i].As<Napi::External<Dash>>().Data();
}

struct OpArgs {
    OpKind kind;
    std::string s1, s2, s3;
    bool has1 = false, has2 = false, has3 = false;
    double n1 = 0, n2 = 0;
    // dashboard_handle: the handler, and the request body as bytes (any
    // content, NULs included: its length travels with it).
    runlane_dashboard_t *dash = nullptr;
    std::string s4, bytes;
    bool has4 = false, has_bytes = false;
};

struct OpResult {
    ErrInfo err;
    std::string str;
    bool has_str = false;
    double num = 0;
    bool has_num = false;
    bool dup = false;
    // dashboard_handle: the response.
    bool has_resp = false;
    int status = 0;
    std::string headers, body;
};

// Runs one operation on the calling (non-JS) thread.
void run_op(runlane_t *rl, const OpArgs &a, OpResult *r) {
    runlane_err_t rc = RUNLANE_OK;
    char *out = nullptr;
    size_t count = 0;
    switch (a.kind) {
    case OpKind::Enqueue: {
        char id[RUNLANE_ID_MAX];
        int dup = 0;
        id[0] = '\0';
        rc = runlane_enqueue(id, sizeof(id), &dup, rl, a.s1.c_str(), a.s2.c_str(),
                             a.has3 ? a.s3.c_str() : nullptr);
        if (rc == RUNLANE_OK) {
            r->str = id;
            r->has_str = true;
            r->dup = dup != 0;
        }
        break;
    }
    case OpKind::EnqueueMany:
        rc = runlane_enqueue_many(&out, rl, a.s1.c_str());
        break;
    case OpKind::Touch:
        rc = runlane_touch(rl, a.s1.c_str());
        break;
    case OpKind::Status:
        rc = runlane_status(&out, rl, a.has1 ? a.s1.c_str() : nullptr);
        break;
    case OpKind::Health:
        rc = runlane_health(&out, rl);
        break;
    case OpKind::DeadList:
        rc = runlane_dead_list(&out, rl, (size_t)a.n1, (size_t)a.n2);
        break;
    case OpKind::DeadRetry:
        rc = runlane_dead_retry(&count, rl, a.has1 ? a.s1.c_str() : nullptr);
        r->num = (double)count;
        r->has_num = true;
        break;
    case OpKind::DeadPurge:
        rc = runlane_dead_purge(&count, rl, a.has1 ? a.s1.c_str() : nullptr);
        r->num = (double)count;
        r->has_num = true;
        break;
    case OpKind::Ack:
        rc = runlane_batch_ack(rl, a.s1.c_str(), a.has2 ? a.s2.c_str() : nullptr);
        break;
    case OpKind::Fail:
        rc = runlane_batch_fail(rl, a.s1.c_str(), a.has2 ? a.s2.c_str() : nullptr, a.n1 != 0);
        break;
    case OpKind::Release:
        rc = runlane_batch_release(rl, a.s1.c_str());
        break;
    case OpKind::SubmitToolOutputs:
        rc = runlane_submit_tool_outputs(rl, a.s1.c_str(), a.s2.c_str());
        break;
    case OpKind::ReplyAck:
        rc = runlane_reply_ack(rl, a.s1.c_str());
        break;
    case OpKind::Start:
        rc = runlane_start(rl);
        break;
    case OpKind::Stop:
        rc = runlane_stop(rl, (runlane_stop_mode_t)(int)a.n1, (int)a.n2);
        break;
    case OpKind::Destroy:
        runlane_destroy(rl);
        break;
    case OpKind::ConversationCreate:
        rc = runlane_conversation_create(&out, rl, a.has1 ? a.s1.c_str() : nullptr);
        break;
    case OpKind::ThreadCreate:
        rc = runlane_thread_create(&out, rl, a.has1 ? a.s1.c_str() : nullptr);
        break;
    case OpKind::MapGet:
        rc = runlane_conversation_map_get(&out, rl, a.s1.c_str());
        break;
    case OpKind::MapSet:
        rc = runlane_conversation_map_set(rl, a.s1.c_str(), a.s2.c_str());
        break;
    case OpKind::MapForget:
        rc = runlane_conversation_map_forget(rl, a.s1.c_str());
        break;
    case OpKind::Migrate:
        rc = runlane_migrate_thread(&out, rl, a.s1.c_str(), a.has2 ? a.s2.c_str() : nullptr);
        break;
    case OpKind::DashboardHandle: {
        runlane_dashboard_response_t *resp = nullptr;
        rc = runlane_dashboard_handle(&resp, a.dash, a.s1.c_str(), a.s2.c_str(),
                                      a.has3 ? a.s3.c_str() : nullptr,
                                      a.has_bytes ? a.bytes.data() : nullptr,
                                      a.has_bytes ? a.bytes.size() : 0, a.has4 ? a.s4.c_str() : nullptr);
        if (rc == RUNLANE_OK) {
            size_t len = 0;
            const char *body = runlane_dashboard_response_body(resp, &len);
            r->status = runlane_dashboard_response_status(resp);
            r->headers = runlane_dashboard_response_headers(resp);
            r->body.assign(body, len);
            r->has_resp = true;
            runlane_dashboard_response_destroy(resp);
        }
        break;
    }
    case OpKind::DashboardSample:
        rc = runlane_dashboard_sample(a.dash);
        break;
    }
    if (rc != RUNLANE_OK) {
        r->err = capture(rc);
        r->has_str = r->has_num = false;
    } else if (out) {
        r->str = out;
        r->has_str = true;
    }
    runlane_free(out);
}

Napi::Value result_value(Napi::Env env, const OpArgs &a, const OpResult &r) {
    if (a.kind == OpKind::Enqueue) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::String::New(env, r.str));
        o.Set("duplicate", Napi::Boolean::New(env, r.dup));
        return o;
    }
    if (r.has_resp) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("status", Napi::Number::New(env, r.status));
        o.Set("headers", Napi::String::New(env, r.headers));
        o.Set("body", Napi::Buffer<char>::Copy(env, r.body.data(), r.body.size()));
        return o;
    }
    if (r.has_str) return Napi::String::New(env, r.str);
    if (r.has_num) return Napi::Number::New(env, r.num);
    if (a.kind == OpKind::MapGet) return env.Null();  // no mapping
    return env.Undefined();
}

void queue_destroy(Napi::Env env, Bridge *b, Napi::Object keep, Napi::Promise::Deferred d);

// Bookkeeping when an op ends (JS thread): a waiting destroy may go now.
void op_done(Napi::Env env, Bridge *b, Napi::Object keep) {
    b->ops--;
    if (b->ops == 0 && b->destroy_pending) {
        b->destroy_pending = false;
        Napi::Promise::Deferred d = *b->destroy_deferred;
        delete b->destroy_deferred;
        b->destroy_deferred = nullptr;
        queue_destroy(env, b, keep, d);
    }
}

// A short store call in the libuv threadpool.
class Op : public Napi::AsyncWorker {
   public:
    Op(Napi::Env env, Bridge *b, Napi::Object keep, OpArgs args, Napi::Value keep2)
        : Napi::AsyncWorker(env, "runlane"),
          b_(b),
          rl_(b->rl),
          keep_(Napi::Persistent(keep)),
          args_(std::move(args)),
          deferred_(Napi::Promise::Deferred::New(env)) {
        if (keep2.IsObject()) keep2_ = Napi::Persistent(keep2.As<Napi::Object>());
    }

    Napi::Promise Promise() { return deferred_.Promise(); }

    void Execute() override { run_op(rl_, args_, &res_); }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        if (res_.err.code != RUNLANE_OK)
            deferred_.Reject(error_value(env, res_.err, &b_->error_factory));
        else
            deferred_.Resolve(result_value(env, args_, res_));
        op_done(env, b_, keep_.Value());
    }

    void OnError(const Napi::Error &e) override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        deferred_.Reject(e.Value());
        op_done(env, b_, keep_.Value());
    }

   private:
    Bridge *b_;
    runlane_t *rl_;
    Napi::ObjectReference keep_;
    Napi::ObjectReference keep2_;  // the dashboard External of a dashboard op
    OpArgs args_;
    OpResult res_;
    Napi::Promise::Deferred deferred_;
};

// A call that may wait long (stop, destroy): a thread of its own, the result
// handed back through a one-shot ThreadSafeFunction (which also keeps the
// event loop alive until it is delivered).
struct LongOp {
    Bridge *b;
    runlane_t *rl;
    OpArgs args;
    OpResult res;
    Napi::Promise::Deferred deferred;
    Napi::ObjectReference keep;
    LongOp(Napi::Env env, Bridge *bb, Napi::Object k, OpArgs a)
        : b(bb), rl(bb->rl), args(std::move(a)), deferred(Napi::Promise::Deferred::New(env)),
          keep(Napi::Persistent(k)) {}
};

void long_op_done(Napi::Env env, Napi::Function, void *, LongOp *op) {
    if (static_cast<napi_env>(env) == nullptr) return;  // teardown: leaked on purpose
    Napi::HandleScope scope(env);
    Bridge *b = op->b;
    if (op->args.kind == OpKind::Destroy) {
        b->destroyed = true;
        b->destroying = false;
        remove_hook(b);
    }
    if (op->res.err.code != RUNLANE_OK)
        op->deferred.Reject(error_value(env, op->res.err, &b->error_factory));
    else
        op->deferred.Resolve(result_value(env, op->args, op->res));
    Napi::Object keep = op->keep.Value();
    delete op;
    op_done(env, b, keep);
}

using DoneFn = Napi::TypedThreadSafeFunction<void, LongOp, long_op_done>;

Napi::Promise start_long_op(Napi::Env env, Bridge *b, Napi::Object keep, OpArgs args) {
    LongOp *op = new LongOp(env, b, keep, std::move(args));
    Napi::Promise p = op->deferred.Promise();
    b->ops++;
    DoneFn done = DoneFn::New(env, "runlane-long-op", 0, 1);
    std::thread([op, done]() mutable {
        run_op(op->rl, op->args, &op->res);
        if (done.BlockingCall(op) != napi_ok) {
            // The environment is going away: nobody waits for the result.
        }
        done.Release();
    }).detach();
    return p;
}

void queue_destroy(Napi::Env env, Bridge *b, Napi::Object keep, Napi::Promise::Deferred d) {
    OpArgs a;
    a.kind = OpKind::Destroy;
    Napi::Promise p = start_long_op(env, b, keep, a);
    // Chain the inner promise into the one handed out earlier.
    Napi::Function then = p.Get("then").As<Napi::Function>();
    Napi::Function ok = Napi::Function::New(env, [d](const Napi::CallbackInfo &info) {
        d.Resolve(info.Env().Undefined());
    });
    Napi::Function bad = Napi::Function::New(env, [d](const Napi::CallbackInfo &info) {
        d.Reject(info[0]);
    });
    then.Call(p, {ok, bad});
}

// ---- runlane_new in the threadpool -------------------------------------

class NewOp : public Napi::AsyncWorker {
   public:
    NewOp(Napi::Env env, runlane_conf_t *conf, Napi::Function on_wake, Napi::Value factory)
        : Napi::AsyncWorker(env, "runlane"),
          conf_(conf),
          on_wake_(Napi::Persistent(on_wake)),
          deferred_(Napi::Promise::Deferred::New(env)) {
        if (factory.IsFunction()) factory_ = Napi::Persistent(factory.As<Napi::Function>());
    }
    ~NewOp() override { runlane_conf_destroy(conf_); }

    Napi::Promise Promise() { return deferred_.Promise(); }

    void Execute() override {
        char errbuf[512];
        rl_ = runlane_new(conf_, errbuf, sizeof(errbuf));
        if (!rl_) err_ = capture(runlane_error_code(runlane_error_last()));
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        if (!rl_) {
            deferred_.Reject(error_value(env, err_, &factory_));
            return;
        }
        Bridge *b = new Bridge();
        b->rl = rl_;
        b->env = env;
        if (!factory_.IsEmpty()) b->error_factory = Napi::Persistent(factory_.Value());
        b->holders = 1;  // the External
        Napi::External<Bridge> ext = Napi::External<Bridge>::New(env, b, external_finalize);
        try {
            b->tsfn = WakeFn::New(env, on_wake_.Value(), "runlane-wake", 0, 1, b, tsfn_finalize,
                                  (void *)nullptr);
        } catch (const Napi::Error &e) {
            deferred_.Reject(e.Value());
            return;  // the External's finalizer frees the client
        }
        b->holders++;
        b->tsfn_live = true;
        b->tsfn.Unref(env);  // idle until the host says otherwise
        if (napi_add_env_cleanup_hook(env, cleanup_hook, b) == napi_ok) b->hook_installed = true;
        b->wake_installed = true;
        runlane_set_wake_cb(rl_, on_wake, b);
        Napi::Array pair = Napi::Array::New(env, 2);
        pair.Set((uint32_t)0, ext);
        pair.Set((uint32_t)1, g_from_rl(env, rl_));
        deferred_.Resolve(pair);
    }

   private:
    runlane_conf_t *conf_;
    Napi::FunctionReference on_wake_;
    Napi::FunctionReference factory_;
    Napi::Promise::Deferred deferred_;
    runlane_t *rl_ = nullptr;
    ErrInfo err_;
};

}  // namespace

// ---- exported ------------------------------------------------------------

void rlnode_set_hooks(rlnode_to_rl_fn to_rl, rlnode_to_conf_fn to_conf, rlnode_from_rl_fn from_rl) {
    g_to_rl = to_rl;
    g_to_conf = to_conf;
    g_from_rl = from_rl;
}

void rlnode_throw_last(Napi::Env env, runlane_err_t code) {
    throw make_error(env, capture(code));
}

Napi::Value rlnode_bridge_new(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    runlane_conf_t *conf = nullptr;
    if (info.Length() > 0 && !info[0].IsNull() && !info[0].IsUndefined()) {
        conf = g_to_conf(info[0]);
        if (!conf) throw Napi::TypeError::New(env, "runlane: bridge_new expects a runlane_conf_t");
    }
    if (info.Length() < 2 || !info[1].IsFunction())
        throw Napi::TypeError::New(env, "runlane: bridge_new expects a wake function");
    // Copied now: the caller may destroy its conf as soon as this returns.
    runlane_conf_t *copy = conf ? runlane_conf_dup(conf) : runlane_conf_new();
    if (!copy) throw make_error(env, make_info(RUNLANE_ERR_NOMEM, "out of memory"));
    NewOp *op = new NewOp(env, copy, info[1].As<Napi::Function>(),
                          info.Length() > 2 ? info[2] : env.Undefined());
    Napi::Promise p = op->Promise();
    op->Queue();
    return p;
}

Napi::Value rlnode_bridge_ref(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Bridge *b = bridge_arg(info, 0);
    bool want = info.Length() > 1 && info[1].ToBoolean().Value();
    if (b->tsfn_live && !b->tsfn_released && want != b->refed) {
        if (want)
            b->tsfn.Ref(env);
        else
            b->tsfn.Unref(env);
        b->refed = want;
    }
    return env.Undefined();
}

Napi::Value rlnode_bridge_close(const Napi::CallbackInfo &info) {
    Bridge *b = bridge_arg(info, 0);
    if (!b->destroyed) close_bridge(b);
    return info.Env().Undefined();
}

Napi::Value rlnode_bridge_call(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Bridge *b = bridge_arg(info, 0);
    Napi::Object keep = info[0].As<Napi::Object>();
    std::string op = req_string(info, 1);
    OpArgs a;
    Napi::Value keep2 = env.Undefined();
    bool long_op = false;
    if (op == "enqueue") {
        a.kind = OpKind::Enqueue;
        a.s1 = req_string(info, 2);
        a.s2 = req_string(info, 3);
        a.has3 = opt_string(info, 4, &a.s3);
    } else if (op == "enqueue_many") {
        a.kind = OpKind::EnqueueMany;
        a.s1 = req_string(info, 2);
    } else if (op == "touch") {
        a.kind = OpKind::Touch;
        a.s1 = req_string(info, 2);
    } else if (op == "status") {
        a.kind = OpKind::Status;
        a.has1 = opt_string(info, 2, &a.s1);
    } else if (op == "health") {
        a.kind = OpKind::Health;
    } else if (op == "dead_list") {
        a.kind = OpKind::DeadList;
        a.n1 = req_number(info, 2);
        a.n2 = req_number(info, 3);
    } else if (op == "dead_retry" || op == "dead_purge") {
        a.kind = op == "dead_retry" ? OpKind::DeadRetry : OpKind::DeadPurge;
        a.has1 = opt_string(info, 2, &a.s1);
    } else if (op == "ack") {
        a.kind = OpKind::Ack;
        a.s1 = req_string(info, 2);
        a.has2 = opt_string(info, 3, &a.s2);
    } else if (op == "fail") {
        a.kind = OpKind::Fail;
        a.s1 = req_string(info, 2);
        a.has2 = opt_string(info, 3, &a.s2);
        // An error text is a description: a NUL in it is shown as \u0000
        // (not refused: a failing handler must still settle its batch).
        for (size_t at; (at = a.s2.find('\0')) != std::string::npos;) a.s2.replace(at, 1, "\\u0000");
        a.n1 = info.Length() > 4 && info[4].ToBoolean().Value() ? 1 : 0;
    } else if (op == "release") {
        a.kind = OpKind::Release;
        a.s1 = req_string(info, 2);
    } else if (op == "submit_tool_outputs") {
        a.kind = OpKind::SubmitToolOutputs;
        a.s1 = req_string(info, 2);
        a.s2 = req_string(info, 3);
    } else if (op == "reply_ack") {
        a.kind = OpKind::ReplyAck;
        a.s1 = req_string(info, 2);
    } else if (op == "start") {
        a.kind = OpKind::Start;
    } else if (op == "stop") {
        a.kind = OpKind::Stop;
        a.n1 = req_number(info, 2);
        a.n2 = req_number(info, 3);
        long_op = true;
    } else if (op == "destroy") {
        a.kind = OpKind::Destroy;
        long_op = true;
    } else if (op == "conversation_create" || op == "thread_create") {
        // HTTP with retries: may take long, so not in the threadpool.
        a.kind = op == "thread_create" ? OpKind::ThreadCreate : OpKind::ConversationCreate;
        a.has1 = opt_string(info, 2, &a.s1);
        long_op = true;
    } else if (op == "map_get" || op == "map_forget") {
        a.kind = op == "map_get" ? OpKind::MapGet : OpKind::MapForget;
        a.s1 = req_string(info, 2);
    } else if (op == "migrate") {
        // HTTP with retries and paging: may take long, so not in the threadpool.
        a.kind = OpKind::Migrate;
        a.s1 = req_string(info, 2);
        a.has2 = opt_string(info, 3, &a.s2);
        long_op = true;
    } else if (op == "map_set") {
        a.kind = OpKind::MapSet;
        a.s1 = req_string(info, 2);
        a.s2 = req_string(info, 3);
    } else if (op == "dashboard_handle") {
        // (dash, method, path, query|null, body: Buffer|null, csrf|null)
        a.kind = OpKind::DashboardHandle;
        a.dash = dash_arg(info, 2)->d;
        keep2 = info[2];
        a.s1 = req_string(info, 3);
        a.s2 = req_string(info, 4);
        a.has3 = opt_string(info, 5, &a.s3);
        if (info.Length() > 6 && info[6].IsBuffer()) {
            Napi::Buffer<char> buf = info[6].As<Napi::Buffer<char>>();
            a.bytes.assign(buf.Data(), buf.Length());
            a.has_bytes = true;
        } else if (info.Length() > 6 && !info[6].IsNull() && !info[6].IsUndefined()) {
            throw Napi::TypeError::New(env, "runlane: dashboard_handle: the body must be a Buffer or null");
        }
        a.has4 = opt_string(info, 7, &a.s4);
    } else if (op == "dashboard_sample") {
        a.kind = OpKind::DashboardSample;
        a.dash = dash_arg(info, 2)->d;
        keep2 = info[2];
    } else {
        throw Napi::TypeError::New(env, "runlane: unknown bridge op \"" + op + "\"");
    }

    // A C string ends at the first NUL: such an argument cannot reach the
    // core whole ("victim\0x" would become "victim"), so it is refused here
    // rather than cut. Text carried in JSON is the core's to check.
    for (const std::string *s : {&a.s1, &a.s2, &a.s3, &a.s4}) {
        if (s->find('\0') == std::string::npos) continue;
        Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
        std::string msg = "runlane: " + op +
                          ": a string argument contains a NUL character, which a C string cannot carry";
        d.Reject(error_value(env, make_info(RUNLANE_ERR_INVALID_ARG, msg.c_str()), &b->error_factory));
        return d.Promise();
    }
    if (b->destroyed || b->destroying) {
        Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
        if (a.kind == OpKind::Destroy)
            d.Resolve(env.Undefined());  // idempotent
        else
            d.Reject(error_value(env, make_info(RUNLANE_ERR_DESTROYED, "runlane: the client is closed"),
                                 &b->error_factory));
        return d.Promise();
    }
    if (a.kind == OpKind::Destroy) {
        // No new op from here on; the wake callback goes first.
        b->destroying = true;
        close_bridge(b);
        if (b->ops > 0) {
            Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
            b->destroy_pending = true;
            b->destroy_deferred = new Napi::Promise::Deferred(d);
            return d.Promise();
        }
        return start_long_op(env, b, keep, a);
    }
    if (long_op) return start_long_op(env, b, keep, a);
    b->ops++;
    Op *w = new Op(env, b, keep, std::move(a), keep2);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
}

// dashboard_new(bridge, options_json|null) -> dashboard handle (External).
// On the JS thread: runlane_dashboard_new makes no store call.
Napi::Value rlnode_dashboard_new(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Bridge *b = bridge_arg(info, 0);
    std::string opts;
    bool has_opts = opt_string(info, 1, &opts);
    if (b->destroyed || b->destroying)
        throw Napi::Error(env, error_value(env, make_info(RUNLANE_ERR_DESTROYED,
                                                          "runlane: the client is closed"),
                                           &b->error_factory));
    runlane_dashboard_t *d = runlane_dashboard_new(b->rl, has_opts ? opts.c_str() : nullptr);
    if (!d)
        throw Napi::Error(env, error_value(env, capture(runlane_error_code(runlane_error_last())),
                                           &b->error_factory));
    Dash *dash = new Dash();
    dash->d = d;
    return Napi::External<Dash>::New(env, dash, dash_finalize);
}
