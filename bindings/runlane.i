/*
 * runlane.i - the SWIG interface over core/include/runlane.h.
 *
 * It generates the raw layer of the language bindings (today: Node, with
 * `swig -javascript -napi -c++`). The raw layer is the C API one to one,
 * with these conversions and nothing else:
 *
 * - A function returning runlane_err_t returns nothing (or its outputs) on
 *   RUNLANE_OK and throws on a negative code. The thrown error carries the
 *   detail of runlane_error_last(), read on the calling thread right after
 *   the call: message, `code` (the symbolic name, e.g. "RUNLANE_ERR_STALE"),
 *   `errno` (the number) and `retriable`. The idiomatic layer maps it to its
 *   typed errors.
 * - Out-parameters disappear from the argument list and come back as the
 *   return value: one output is returned as is, several as an array in
 *   declaration order (runlane_enqueue -> [id, duplicate]).
 * - Strings returned through `char **` are copied into the target language
 *   and freed with runlane_free(); callers never see an owned C string.
 * - runlane_new() throws instead of returning NULL; (errstr, errstr_size)
 *   buffers are internal.
 * - runlane_conf_get()'s size negotiation is done here: it returns the value.
 * - Dashboard: runlane_dashboard_handle() returns its response (free it with
 *   runlane_dashboard_response_destroy()) and takes the body as a Buffer, a
 *   string or null; runlane_dashboard_response_body() returns a Buffer (a
 *   copy); runlane_dashboard_new() throws instead of returning NULL. These
 *   run on the calling thread: the Node mount goes through the bridge's
 *   dashboard ops instead, off the event loop.
 * - runlane_free() and runlane_set_wake_cb() are not exposed: nothing owned
 *   escapes, and a wake callback needs a language-specific bridge (Node: the
 *   node-addon-api event bridge in node/src/native, added below with
 *   %native).
 *
 * Handles stay opaque pointers. The raw layer does not own them: the
 * idiomatic layer calls runlane_conf_destroy()/runlane_destroy().
 */
%module runlane

%{
#include <stdlib.h>
#include <string.h>
#include "runlane.h"
%}

/* ------------------------------------------------------------------ */
/* Output helpers                                                     */
/* ------------------------------------------------------------------ */

#if defined(SWIGJAVASCRIPT)
%{
#include "event_bridge.h"
/* Appends an output: undefined -> value; value -> [value, obj]; array -> push. */
static Napi::Value rlswig_append(Napi::Env env, Napi::Value result, Napi::Value obj) {
    if (result.IsUndefined()) return obj;
    Napi::Array arr;
    if (result.IsArray()) {
        arr = result.As<Napi::Array>();
    } else {
        arr = Napi::Array::New(env);
        arr.Set((uint32_t)0, result);
    }
    arr.Set(arr.Length(), obj);
    return arr;
}
%}
#define RLSWIG_APPEND(obj) $result = rlswig_append(env, $result, obj)
#else
#define RLSWIG_APPEND(obj) %append_output(obj)
#endif

/* ------------------------------------------------------------------ */
/* Errors: runlane_err_t results throw                                */
/* ------------------------------------------------------------------ */

/* The out typemap returns nothing; the throw happens in the "ret" typemap,
 * which SWIG emits after the argout and freearg code, so input strings are
 * released on the error path too. The argout typemaps below read `result`,
 * the wrapper's local holding the C return value. */
%typemap(out, noblock=1) runlane_err_t { $result = VOID_Object; }
%typemap(ret) runlane_err_t {
    if ($1 != RUNLANE_OK) {
#if defined(SWIGJAVASCRIPT)
        rlnode_throw_last(env, $1);
#else
        SWIG_exception(SWIG_RuntimeError, runlane_error_message(runlane_error_last()));
#endif
    }
}

/* Accessors that merely report a code must not throw. */
%typemap(out, fragment=SWIG_From_frag(int)) runlane_err_t runlane_error_code,
                                            runlane_err_t runlane_event_error_code
    { $result = SWIG_From(int)((int)$1); }
%typemap(ret) runlane_err_t runlane_error_code, runlane_err_t runlane_event_error_code "";

/* ------------------------------------------------------------------ */
/* Out-parameters                                                     */
/* ------------------------------------------------------------------ */

/* Message id buffer of runlane_enqueue. */
%typemap(in, numinputs=0) (char *id_out, size_t id_out_size) (char idbuf[RUNLANE_ID_MAX]) {
    idbuf[0] = '\0';
    $1 = idbuf;
    $2 = sizeof(idbuf);
}
%typemap(argout, fragment="SWIG_FromCharPtr") (char *id_out, size_t id_out_size) {
    if (result == RUNLANE_OK) RLSWIG_APPEND(SWIG_FromCharPtr($1));
}

/* Duplicate flag of runlane_enqueue. */
%typemap(in, numinputs=0) int *duplicate_out (int dup) {
    dup = 0;
    $1 = &dup;
}
%typemap(argout, fragment=SWIG_From_frag(bool)) int *duplicate_out {
    if (result == RUNLANE_OK) RLSWIG_APPEND(SWIG_From(bool)(*$1 != 0));
}

/* Counts of runlane_dead_retry / runlane_dead_purge. */
%typemap(in, numinputs=0) size_t *count_out (size_t count) {
    count = 0;
    $1 = &count;
}
%typemap(argout, fragment=SWIG_From_frag(double)) size_t *count_out {
    if (result == RUNLANE_OK) RLSWIG_APPEND(SWIG_From(double)((double)*$1));
}

/* Strings owned by the caller: copied, then freed with runlane_free(). */
%typemap(in, numinputs=0) char **json_out (char *s), char **text_out (char *s),
                          char **result_json_out (char *s), char **id_out (char *s) {
    s = NULL;
    $1 = &s;
}
%typemap(argout, fragment="SWIG_FromCharPtr") char **json_out, char **text_out,
                                               char **result_json_out, char **id_out {
    if (result == RUNLANE_OK && *$1) RLSWIG_APPEND(SWIG_FromCharPtr(*$1));
    runlane_free(*$1);
}

/* Error text buffers: the same text is in runlane_error_last(). */
%typemap(in, numinputs=0) (char *errstr, size_t errstr_size) (char errbuf[512]) {
    errbuf[0] = '\0';
    $1 = errbuf;
    $2 = sizeof(errbuf);
}

/* runlane_new: NULL -> throw with the error's detail. */
%typemap(out) runlane_t *runlane_new {
    if (!$1) {
#if defined(SWIGJAVASCRIPT)
        rlnode_throw_last(env, runlane_error_code(runlane_error_last()));
#else
        SWIG_exception(SWIG_RuntimeError, runlane_error_message(runlane_error_last()));
#endif
    }
    $result = SWIG_NewPointerObj(SWIG_as_voidptr($1), $1_descriptor, 0);
}

/* ------------------------------------------------------------------ */
/* Dashboard                                                          */
/* ------------------------------------------------------------------ */

/* runlane_dashboard_new: NULL (bad options) -> throw with the detail. */
%typemap(out) runlane_dashboard_t *runlane_dashboard_new {
    if (!$1) {
#if defined(SWIGJAVASCRIPT)
        rlnode_throw_last(env, runlane_error_code(runlane_error_last()));
#else
        SWIG_exception(SWIG_RuntimeError, runlane_error_message(runlane_error_last()));
#endif
    }
    $result = SWIG_NewPointerObj(SWIG_as_voidptr($1), $1_descriptor, 0);
}

/* runlane_dashboard_handle's response comes back as the return value (a
 * pointer the caller frees with runlane_dashboard_response_destroy). */
%typemap(in, numinputs=0) runlane_dashboard_response_t **out (runlane_dashboard_response_t *resp) {
    resp = NULL;
    $1 = &resp;
}
%typemap(argout) runlane_dashboard_response_t **out {
    if (result == RUNLANE_OK)
        RLSWIG_APPEND(SWIG_NewPointerObj(SWIG_as_voidptr(*$1), SWIGTYPE_p_runlane_dashboard_response_s, 0));
}

#if defined(SWIGJAVASCRIPT)
/* The request body: a Buffer (bytes as they came, NULs included), a string
 * (its UTF-8) or null/undefined (none). */
%typemap(in) (const char *body, size_t body_len) (std::string text) {
    if ($input.IsBuffer()) {
        Napi::Buffer<char> buf = $input.As<Napi::Buffer<char>>();
        $1 = buf.Data();
        $2 = buf.Length();
    } else if ($input.IsString()) {
        text = $input.As<Napi::String>().Utf8Value();
        $1 = (char *)text.data();
        $2 = text.size();
    } else if ($input.IsNull() || $input.IsUndefined()) {
        $1 = NULL;
        $2 = 0;
    } else {
        SWIG_exception_fail(SWIG_TypeError, "runlane_dashboard_handle: the body must be a Buffer, a string or null");
    }
}

/* A response body is bytes with a length: it comes back as a Buffer (a
 * copy, so it outlives the response). */
%typemap(in, numinputs=0) size_t *len_out (size_t len) {
    len = 0;
    $1 = &len;
}
%typemap(argout) size_t *len_out {
    $result = Napi::Buffer<char>::Copy(env, result ? result : "", *$1);
}
#endif

/* ------------------------------------------------------------------ */
/* The API                                                            */
/* ------------------------------------------------------------------ */

%ignore runlane_free;
%ignore runlane_set_wake_cb;
%ignore runlane_conf_get;

%include "runlane.h"

/* runlane_conf_get with the size negotiation done: returns the value. */
%typemap(in, numinputs=0) char **rlswig_value_out (char *s) {
    s = NULL;
    $1 = &s;
}
%typemap(argout, fragment="SWIG_FromCharPtr") char **rlswig_value_out {
    if (result == RUNLANE_OK && *$1) RLSWIG_APPEND(SWIG_FromCharPtr(*$1));
    free(*$1);
}
%rename(runlane_conf_get) rlswig_conf_get;
%inline %{
static runlane_err_t rlswig_conf_get(char **rlswig_value_out, const runlane_conf_t *conf,
                                     const char *key) {
    size_t size = 0;
    runlane_err_t rc = runlane_conf_get(conf, key, NULL, &size);
    if (rc != RUNLANE_OK) return rc;
    char *buf = (char *)malloc(size);
    if (!buf) return RUNLANE_ERR_NOMEM;
    rc = runlane_conf_get(conf, key, buf, &size);
    if (rc != RUNLANE_OK) {
        free(buf);
        return rc;
    }
    *rlswig_value_out = buf;
    return RUNLANE_OK;
}
%}

/* ------------------------------------------------------------------ */
/* Node: the event bridge (node/src/native/event_bridge.cc)           */
/* ------------------------------------------------------------------ */

#if defined(SWIGJAVASCRIPT)
/* The bridge converts between SWIG pointer objects and C pointers through
 * these hooks, so it needs nothing of SWIG's runtime. */
%wrapper %{
static runlane_t *rlswig_to_rl(Napi::Value v) {
    void *p = NULL;
    if (v.IsNull() || v.IsUndefined()) return NULL;
    if (!SWIG_IsOK(SWIG_ConvertPtr(v, &p, SWIGTYPE_p_runlane_s, 0))) return NULL;
    return (runlane_t *)p;
}
static runlane_conf_t *rlswig_to_conf(Napi::Value v) {
    void *p = NULL;
    if (v.IsNull() || v.IsUndefined()) return NULL;
    if (!SWIG_IsOK(SWIG_ConvertPtr(v, &p, SWIGTYPE_p_runlane_conf_s, 0))) return NULL;
    return (runlane_conf_t *)p;
}
static Napi::Value rlswig_from_rl(Napi::Env env, runlane_t *rl) {
    return SWIG_NewPointerObj(SWIG_as_voidptr(rl), SWIGTYPE_p_runlane_s, 0);
}
%}
%init %{
    rlnode_set_hooks(rlswig_to_rl, rlswig_to_conf, rlswig_from_rl);
%}
%native(bridge_ref) Napi::Value rlnode_bridge_ref(const Napi::CallbackInfo &info);
%native(bridge_close) Napi::Value rlnode_bridge_close(const Napi::CallbackInfo &info);
%native(bridge_call) Napi::Value rlnode_bridge_call(const Napi::CallbackInfo &info);
%native(bridge_new) Napi::Value rlnode_bridge_new(const Napi::CallbackInfo &info);
%native(dashboard_new) Napi::Value rlnode_dashboard_new(const Napi::CallbackInfo &info);
#endif
