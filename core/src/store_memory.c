/* store_memory.c - the in-process store (the embedded default).
 *
 * Same semantics as the redis store (see store.h), for one process: every
 * store object opened on the same name shares one state behind a mutex, so a
 * producer client and a worker client in one process see the same queue. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "store.h"

/* ---- a small string-keyed hash map (chained) ---- */

typedef struct hent {
    char *key;
    void *val;
    struct hent *next;
} hent_t;

typedef struct hmap {
    hent_t **slots;
    size_t nslots, count;
} hmap_t;

static int hmap_init(hmap_t *m) {
    m->nslots = 64;
    m->count = 0;
    m->slots = calloc(m->nslots, sizeof(hent_t *));
    return m->slots != NULL;
}

static hent_t **hmap_find(hmap_t *m, const char *key) {
    size_t i = rl_fnv1a32(key, strlen(key)) & (m->nslots - 1);
    hent_t **pp = &m->slots[i];
    while (*pp && strcmp((*pp)->key, key) != 0) pp = &(*pp)->next;
    return pp;
}

static void *hmap_get(hmap_t *m, const char *key) {
    hent_t **pp = hmap_find(m, key);
    return *pp ? (*pp)->val : NULL;
}

static void hmap_grow(hmap_t *m) {
    size_t n = m->nslots * 2;
    hent_t **slots = calloc(n, sizeof(hent_t *));
    if (!slots) return; /* keep working with longer chains */
    for (size_t i = 0; i < m->nslots; i++) {
        hent_t *e = m->slots[i];
        while (e) {
            hent_t *next = e->next;
            size_t j = rl_fnv1a32(e->key, strlen(e->key)) & (n - 1);
            e->next = slots[j];
            slots[j] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
}

static int hmap_put(hmap_t *m, const char *key, void *val) {
    hent_t **pp = hmap_find(m, key);
    if (*pp) {
        (*pp)->val = val;
        return 1;
    }
    hent_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = rl_strdup(key))) {
        free(e);
        return 0;
    }
    e->val = val;
    *pp = e;
    if (++m->count > m->nslots * 2) hmap_grow(m);
    return 1;
}

static void *hmap_del(hmap_t *m, const char *key) {
    hent_t **pp = hmap_find(m, key);
    if (!*pp) return NULL;
    hent_t *e = *pp;
    void *v = e->val;
    *pp = e->next;
    free(e->key);
    free(e);
    m->count--;
    return v;
}

/* ---- state ---- */

typedef struct rec {
    char *json;     /* the whole record */
    int64_t bytes;  /* content bytes */
} rec_t;

typedef struct recvec {
    rec_t *v;
    size_t len, cap;
} recvec_t;

typedef struct mconv {
    char *id;
    recvec_t pending;  /* pending.v[head..len) are live (head avoids O(n) shifts) */
    size_t head;
    int64_t pbytes;
    recvec_t batch;
    int64_t fence;
    char token[32]; /* "" when no lease */
    char owner[160];
    int64_t attempts; /* deliveries of the batch (claims not given back) */
    int64_t stalls;   /* of them, leases that expired (see store.h recover) */
    char batch_id[RUNLANE_ID_MAX];
    int64_t lease_until;
    int64_t first_ms, last_ms;
    int64_t due;      /* valid while in ready */
    long ready_idx;   /* index in ready vector or -1 */
    long lease_idx;   /* index in leases vector or -1 */
    char *ckpt;
    char *settle; /* checkpoint of a dead-lettered batch (see store.h claim) */
    char *last_error;
} mconv_t;

typedef struct idem {
    char id[RUNLANE_ID_MAX];
    int64_t expires;
} idem_t;

typedef struct dead {
    char *id;
    char *conv;
    char *json;
    int64_t dead_at;
} dead_t;

/* An unconfirmed reply (key: its batch id). */
typedef struct mreply {
    char *json;
    int64_t due;     /* next delivery */
    int64_t expires; /* dropped from then on */
} mreply_t;

typedef struct convvec {
    mconv_t **v;
    size_t len, cap;
} convvec_t;

typedef struct mstate {
    char *name;
    int refs;
    pthread_mutex_t mu;
    hmap_t convs; /* id -> mconv_t* */
    hmap_t idem;  /* lenprefixed(conv) + key -> idem_t* */
    hmap_t replies; /* batch id -> mreply_t* */
    hmap_t convmap; /* conversation key -> provider id (char *), see conv_map */
    convvec_t ready, leases;
    /* ready.v[i]->due as ready_due[i]: a claim scans every ready
     * conversation's due under the lock, and reading 10,000 of them from
     * the conversations themselves was 10,000 cache misses per claim. */
    int64_t *ready_due;
    size_t ready_due_cap;
    dead_t *dead;
    size_t ndead, capdead;
    int64_t seq;
    int64_t last_ms_issued; /* a clock that never runs backwards */
    int64_t pending_total;
    int64_t c_enqueued, c_acked, c_failed, c_dead, c_recovered;
    /* The rate.limit.rpm bucket (rate_take): tokens as of rate_at. */
    int rate_set;
    double rate_tokens;
    int64_t rate_at;
    struct mstate *next;
} mstate_t;

typedef struct mstore {
    rl_store_t base;
    mstate_t *st;
} mstore_t;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mstate_t *registry;

/* fork(): the child does not inherit a held registry lock. (A memory store
 * is per process; the child starts over with its own.) */
static void fork_prepare(void) { pthread_mutex_lock(&registry_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&registry_mu); }
static void fork_child(void) {
    registry = NULL; /* the parent's states stay with the parent */
    pthread_mutex_unlock(&registry_mu);
}
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static int64_t now_locked(mstate_t *s) {
    int64_t t = rl_now_ms();
    if (t < s->last_ms_issued) t = s->last_ms_issued;
    s->last_ms_issued = t;
    return t;
}

static int recvec_push(recvec_t *rv, rec_t r) {
    if (rv->len == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 8;
        rec_t *v = realloc(rv->v, cap * sizeof(rec_t));
        if (!v) return 0;
        rv->v = v;
        rv->cap = cap;
    }
    rv->v[rv->len++] = r;
    return 1;
}

static void recvec_clear(recvec_t *rv) {
    for (size_t i = 0; i < rv->len; i++) free(rv->v[i].json);
    free(rv->v);
    memset(rv, 0, sizeof(*rv));
}

static size_t pending_count(const mconv_t *c) { return c->pending.len - c->head; }

/* Frees the live pending records (those before head moved to a batch). */
static void pending_clear(mconv_t *c) {
    for (size_t i = c->head; i < c->pending.len; i++) free(c->pending.v[i].json);
    free(c->pending.v);
    memset(&c->pending, 0, sizeof(c->pending));
    c->head = 0;
}

static int convvec_add(convvec_t *cv, mconv_t *c, long *idx) {
    if (cv->len == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 16;
        mconv_t **v = realloc(cv->v, cap * sizeof(*v));
        if (!v) return 0;
        cv->v = v;
        cv->cap = cap;
    }
    *idx = (long)cv->len;
    cv->v[cv->len++] = c;
    return 1;
}

static void ready_remove(mstate_t *s, mconv_t *c) {
    if (c->ready_idx < 0) return;
    size_t i = (size_t)c->ready_idx;
    s->ready.v[i] = s->ready.v[--s->ready.len];
    s->ready_due[i] = s->ready_due[s->ready.len];
    s->ready.v[i]->ready_idx = (long)i;
    c->ready_idx = -1;
}

static void lease_remove(mstate_t *s, mconv_t *c) {
    if (c->lease_idx < 0) return;
    size_t i = (size_t)c->lease_idx;
    s->leases.v[i] = s->leases.v[--s->leases.len];
    s->leases.v[i]->lease_idx = (long)i;
    c->lease_idx = -1;
}

static int ready_set(mstate_t *s, mconv_t *c, int64_t due) {
    c->due = due;
    if (c->ready_idx < 0) {
        if (!convvec_add(&s->ready, c, &c->ready_idx)) return 0;
        if (s->ready_due_cap < s->ready.cap) {
            int64_t *d = realloc(s->ready_due, s->ready.cap * sizeof(*d));
            if (!d) { /* the last one added: take it back out */
                s->ready.len--;
                c->ready_idx = -1;
                return 0;
            }
            s->ready_due = d;
            s->ready_due_cap = s->ready.cap;
        }
    }
    s->ready_due[c->ready_idx] = due;
    return 1;
}

/* Due time per store.h: at once when full, else the window / max wait. */
static int64_t due_of(const mconv_t *c, const rl_policy_t *pol, int64_t now, int not_before_now) {
    int64_t due;
    if ((int64_t)pending_count(c) >= pol->max_messages || c->pbytes >= pol->max_bytes) {
        due = now;
    } else {
        int64_t a = c->last_ms + pol->window_ms, b = c->first_ms + pol->max_wait_ms;
        due = a < b ? a : b;
    }
    if (not_before_now && due < now) due = now;
    return due;
}

/* Puts the conversation in ready when it has work and no lease. */
static void schedule(mstate_t *s, mconv_t *c, const rl_policy_t *pol, int64_t now, int not_before_now) {
    if (c->token[0] || c->batch.len) return;
    if (pending_count(c) > 0) {
        ready_set(s, c, due_of(c, pol, now, not_before_now));
    } else {
        ready_remove(s, c);
    }
}

static mconv_t *conv_get(mstate_t *s, const char *id, int create) {
    mconv_t *c = hmap_get(&s->convs, id);
    if (c || !create) return c;
    c = calloc(1, sizeof(*c));
    if (!c || !(c->id = rl_strdup(id))) {
        free(c);
        return NULL;
    }
    c->ready_idx = c->lease_idx = -1;
    if (!hmap_put(&s->convs, id, c)) {
        free(c->id);
        free(c);
        return NULL;
    }
    return c;
}

/* Frees a conversation that holds nothing (keeps memory bounded). Its fence
 * is forgotten too: safe because no token of it is live. */
static void conv_gc(mstate_t *s, mconv_t *c) {
    if (pending_count(c) || c->batch.len || c->token[0] || c->ready_idx >= 0 ||
        c->lease_idx >= 0 || c->settle)
        return;
    hmap_del(&s->convs, c->id);
    pending_clear(c);
    recvec_clear(&c->batch);
    free(c->ckpt);
    free(c->last_error);
    free(c->id);
    free(c);
}

static void mconv_free(void *v) {
    mconv_t *c = v;
    pending_clear(c);
    recvec_clear(&c->batch);
    free(c->ckpt);
    free(c->settle);
    free(c->last_error);
    free(c->id);
    free(c);
}

static void mreply_free(void *v) {
    mreply_t *r = v;
    free(r->json);
    free(r);
}

/* Frees every entry of m (its value with free_val) and m's slots. */
static void hmap_free_all(hmap_t *m, void (*free_val)(void *)) {
    for (size_t i = 0; i < m->nslots; i++) {
        hent_t *e = m->slots[i];
        while (e) {
            hent_t *next = e->next;
            free_val(e->val);
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(m->slots);
}

static void mstate_free(mstate_t *s) {
    hmap_free_all(&s->convs, mconv_free);
    hmap_free_all(&s->idem, free);
    hmap_free_all(&s->replies, mreply_free);
    hmap_free_all(&s->convmap, free);
    free(s->ready.v);
    free(s->ready_due);
    free(s->leases.v);
    for (size_t i = 0; i < s->ndead; i++) {
        free(s->dead[i].id);
        free(s->dead[i].conv);
        free(s->dead[i].json);
    }
    free(s->dead);
    pthread_mutex_destroy(&s->mu);
    free(s->name);
    free(s);
}

/* ---- operations ---- */

static mstate_t *S(rl_store_t *st) { return ((mstore_t *)st)->st; }

static char *idem_key(const char *conv, const char *key) {
    return rl_asprintf("%zu:%s:%s", strlen(conv), conv, key);
}

static int enqueue_locked(mstate_t *s, const rl_policy_t *pol, const char *conv,
                          const char *tail, int64_t bytes, const char *ikey, char *id_out,
                          int *dup_out) {
    int64_t now = now_locked(s);
    char *ik = NULL;
    if (dup_out) *dup_out = 0;
    if (ikey) {
        if (!(ik = idem_key(conv, ikey))) return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        idem_t *e = hmap_get(&s->idem, ik);
        if (e && e->expires > now) {
            rl_strlcpy(id_out, e->id, RUNLANE_ID_MAX);
            if (dup_out) *dup_out = 1;
            free(ik);
            return RUNLANE_OK;
        }
    }
    mconv_t *c = conv_get(s, conv, 1);
    if (!c) {
        free(ik);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    char id[RUNLANE_ID_MAX];
    snprintf(id, sizeof(id), "m%lld-0-%lld", (long long)now, (long long)++s->seq);
    rec_t r;
    r.bytes = bytes;
    const char *rest = tail + 1;
    while (*rest == ' ' || *rest == '\t' || *rest == '\n' || *rest == '\r') rest++;
    r.json = rl_asprintf("{\"id\":\"%s\",\"ts_ms\":%lld%s%s", id, (long long)now,
                         *rest == '}' ? "" : ",", *rest == '}' ? "}" : tail + 1);
    if (!r.json || !recvec_push(&c->pending, r)) {
        free(r.json);
        free(ik);
        conv_gc(s, c);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    if (ik) {
        idem_t *e = hmap_get(&s->idem, ik);
        if (!e) {
            e = calloc(1, sizeof(*e));
            if (e && !hmap_put(&s->idem, ik, e)) {
                free(e);
                e = NULL;
            }
        }
        if (e) {
            rl_strlcpy(e->id, id, sizeof(e->id));
            e->expires = now + pol->idem_ttl_ms;
        }
        free(ik);
    }
    if (pending_count(c) == 1) c->first_ms = now;
    c->last_ms = now;
    c->pbytes += bytes;
    s->pending_total++;
    s->c_enqueued++;
    schedule(s, c, pol, now, 0);
    rl_strlcpy(id_out, id, RUNLANE_ID_MAX);
    return RUNLANE_OK;
}

static int m_enqueue(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *tail,
                     int64_t bytes, const char *ikey, char *id_out, int *dup_out) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int rc = enqueue_locked(s, pol, conv, tail, bytes, ikey, id_out, dup_out);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_enqueue_many(rl_store_t *st, const rl_policy_t *pol, size_t n,
                          const char *const *convs, const char *const *tails,
                          const int64_t *bytes, const char *const *ikeys,
                          char (*ids_out)[RUNLANE_ID_MAX], int *dups_out) {
    mstate_t *s = S(st);
    int rc = RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n && rc == RUNLANE_OK; i++)
        rc = enqueue_locked(s, pol, convs[i], tails[i], bytes[i], ikeys ? ikeys[i] : NULL,
                            ids_out[i], dups_out ? &dups_out[i] : NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_touch(rl_store_t *st, const rl_policy_t *pol, const char *conv) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = conv_get(s, conv, 0);
    if (c) {
        c->last_ms = now;
        schedule(s, c, pol, now, 0);
    }
    pthread_mutex_unlock(&s->mu);
    return RUNLANE_OK;
}

static int m_next_due(rl_store_t *st, int64_t *due_out, int64_t *now_out) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t best = INT64_MAX;
    for (size_t i = 0; i < s->ready.len; i++)
        if (s->ready_due[i] < best) best = s->ready_due[i];
    *due_out = best;
    if (now_out) *now_out = now_locked(s);
    pthread_mutex_unlock(&s->mu);
    return RUNLANE_OK;
}

static char *join_records(const recvec_t *rv, size_t from) {
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "[");
    for (size_t i = from; i < rv->len; i++) {
        if (i > from) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, rv->v[i].json);
    }
    rl_buf_puts(&b, "]");
    return rl_buf_take(&b);
}

/* A ready conversation in a claim: its due and its index in ready. */
typedef struct rdue {
    int64_t due;
    size_t i;
    mconv_t *c;
} rdue_t;

/* Due first; among equal dues, the ready vector's order (what a stable
 * sort of it gave). */
static int earlier(const rdue_t *x, const rdue_t *y) {
    return x->due != y->due ? x->due < y->due : x->i < y->i;
}

static void sift_down(rdue_t *h, size_t len, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < len && earlier(&h[l], &h[m])) m = l;
        if (l + 1 < len && earlier(&h[l + 1], &h[m])) m = l + 1;
        if (m == i) return;
        rdue_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Leaves the n earliest of v[0..len) in v[0..n), earliest first, in
 * O(len + n log len): each ack wakes a claim of a slot or two, and a full
 * sort of 10,000 ready conversations per claim held the store's lock for
 * most of a millisecond, which every host call (ack, enqueue) waited out. */
static void select_earliest(rdue_t *v, size_t len, size_t n) {
    for (size_t i = len / 2; i-- > 0;) sift_down(v, len, i);
    size_t heap = len;
    for (size_t k = 0; k < n; k++) { /* the earliest goes behind the heap */
        rdue_t t = v[0];
        v[0] = v[--heap];
        v[heap] = t;
        sift_down(v, heap, 0);
    }
    /* v[len-n..len) holds them latest first */
    for (size_t a = len - n, b = len - 1; a < b; a++, b--) {
        rdue_t t = v[a];
        v[a] = v[b];
        v[b] = t;
    }
    memmove(v, v + (len - n), n * sizeof(*v));
}

/* Moves pending records into the batch while it stays within the batch
 * limits (a batch that is empty takes at least one record). Returns 0 on
 * out of memory (what was moved stays moved). */
static int take_pending(mstate_t *s, mconv_t *c, const rl_policy_t *pol, int64_t now) {
    int64_t bytes = 0;
    for (size_t i = 0; i < c->batch.len; i++) bytes += c->batch.v[i].bytes;
    int ok = 1;
    while (pending_count(c) > 0 && (int64_t)c->batch.len < pol->max_messages) {
        rec_t r = c->pending.v[c->head];
        if (c->batch.len > 0 && bytes + r.bytes > pol->max_bytes) break;
        if (!recvec_push(&c->batch, r)) {
            ok = 0;
            break;
        }
        c->head++;
        bytes += r.bytes;
        c->pbytes -= r.bytes;
        s->pending_total--;
    }
    if (c->head == c->pending.len) {
        free(c->pending.v);
        memset(&c->pending, 0, sizeof(c->pending));
        c->head = 0;
    } else {
        /* The remaining head message starts the next window. */
        cJSON *j = cJSON_Parse(c->pending.v[c->head].json);
        cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "ts_ms");
        c->first_ms = cJSON_IsNumber(ts) ? rl_f64_to_i64(ts->valuedouble) : now;
        cJSON_Delete(j);
    }
    return ok;
}

/* Moves up to the batch limits from pending into a new batch. */
static int form_batch(mstate_t *s, mconv_t *c, const rl_policy_t *pol, int64_t now) {
    if (!take_pending(s, c, pol, now)) return 0;
    snprintf(c->batch_id, sizeof(c->batch_id), "b%lld-0-%lld", (long long)now, (long long)++s->seq);
    c->attempts = 0;
    c->stalls = 0;
    free(c->ckpt);
    c->ckpt = NULL;
    return 1;
}

static int m_claim(rl_store_t *st, const rl_policy_t *pol, const char *owner, int max,
                   rl_claim_t **out, int *n_out) {
    mstate_t *s = S(st);
    *out = NULL;
    *n_out = 0;
    if (max <= 0) return RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    size_t ndue = 0;
    rdue_t *due = NULL;
    for (size_t i = 0; i < s->ready.len; i++)
        if (s->ready_due[i] <= now) ndue++;
    if (ndue) {
        due = malloc(ndue * sizeof(*due));
        if (!due) {
            pthread_mutex_unlock(&s->mu);
            return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        }
        ndue = 0;
        for (size_t i = 0; i < s->ready.len; i++)
            if (s->ready_due[i] <= now) due[ndue++] = (rdue_t){s->ready_due[i], i, s->ready.v[i]};
    }
    size_t n = ndue < (size_t)max ? ndue : (size_t)max;
    if (n) select_earliest(due, ndue, n);
    rl_claim_t *claims = n ? calloc(n, sizeof(*claims)) : NULL;
    int rc = RUNLANE_OK, got = 0;
    if (n && !claims) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    for (size_t i = 0; i < n && rc == RUNLANE_OK; i++) {
        mconv_t *c = due[i].c;
        if (c->batch.len == 0 && !form_batch(s, c, pol, now)) {
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            break;
        }
        rl_claim_t *cl = &claims[got];
        cl->conversation_id = rl_strdup(c->id);
        cl->messages_json = join_records(&c->batch, 0);
        cl->ckpt_json = c->ckpt ? rl_strdup(c->ckpt) : NULL;
        cl->settle_json = c->settle ? rl_strdup(c->settle) : NULL;
        long dummy;
        if (!cl->conversation_id || !cl->messages_json || (c->ckpt && !cl->ckpt_json) ||
            (c->settle && !cl->settle_json) ||
            !convvec_add(&s->leases, c, &dummy)) {
            rl_claim_free(cl);
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            break;
        }
        c->lease_idx = dummy;
        ready_remove(s, c);
        c->attempts++;
        /* Tokens come from the store-wide sequence, so a token stays unique
         * even after an idle conversation is forgotten and comes back. */
        c->fence = ++s->seq;
        snprintf(c->token, sizeof(c->token), "%lld", (long long)c->fence);
        rl_strlcpy(c->owner, owner, sizeof(c->owner));
        c->lease_until = now + pol->lease_ms;
        rl_strlcpy(cl->batch_id, c->batch_id, sizeof(cl->batch_id));
        rl_strlcpy(cl->token, c->token, sizeof(cl->token));
        cl->attempt = (int)c->attempts;
        cl->lease_until_ms = c->lease_until;
        got++;
    }
    pthread_mutex_unlock(&s->mu);
    free(due);
    if (got == 0) {
        free(claims);
        claims = NULL;
    }
    *out = claims;
    *n_out = got;
    return got ? RUNLANE_OK : rc;
}

/* The conversation whose current token is `token`, or NULL (stale). */
static mconv_t *owned(mstate_t *s, const char *conv, const char *token) {
    mconv_t *c = conv_get(s, conv, 0);
    if (!c || !c->token[0] || !token || strcmp(c->token, token) != 0) return NULL;
    return c;
}

static int stale(const char *conv) {
    return rl_error_set(RUNLANE_ERR_STALE, 0,
                        "lease of conversation \"%.64s\" lost: fencing token refused", conv);
}

static int m_renew(rl_store_t *st, const rl_policy_t *pol, rl_claim_t *claims, int n, int *ok_out,
                   int64_t *pending_out) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    for (int i = 0; i < n; i++) {
        mconv_t *c = owned(s, claims[i].conversation_id, claims[i].token);
        ok_out[i] = c != NULL;
        if (pending_out) pending_out[i] = c ? (int64_t)pending_count(c) : 0;
        if (c) {
            c->lease_until = now + pol->lease_ms;
            claims[i].lease_until_ms = c->lease_until;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return RUNLANE_OK;
}

static int m_extend_batch(rl_store_t *st, const rl_policy_t *pol, const char *conv,
                          const char *token, char **messages_json_out) {
    mstate_t *s = S(st);
    *messages_json_out = NULL;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else if (!take_pending(s, c, pol, now) || !(*messages_json_out = join_records(&c->batch, 0))) {
        rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_checkpoint(rl_store_t *st, const char *conv, const char *token, const char *ckpt) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else {
        char *d = rl_strdup(ckpt);
        if (!d) {
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        } else {
            free(c->ckpt);
            c->ckpt = d;
            /* The batch's own turn began: the dead one's was settled. */
            free(c->settle);
            c->settle = NULL;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void end_lease(mstate_t *s, mconv_t *c) {
    c->token[0] = '\0';
    c->owner[0] = '\0';
    c->lease_until = 0;
    lease_remove(s, c);
}

static void drop_batch(mconv_t *c) {
    recvec_clear(&c->batch);
    c->attempts = 0;
    c->stalls = 0;
    c->batch_id[0] = '\0';
    free(c->ckpt);
    c->ckpt = NULL;
}

/* ack of an owned conversation (c may be freed). */
static void ack_locked(mstate_t *s, mconv_t *c, const rl_policy_t *pol, int64_t now) {
    end_lease(s, c);
    drop_batch(c);
    free(c->settle);
    c->settle = NULL;
    free(c->last_error);
    c->last_error = NULL;
    s->c_acked++;
    schedule(s, c, pol, now, 1);
    conv_gc(s, c);
}

static int m_ack(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else {
        ack_locked(s, c, pol, now);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int m_ack_reply(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token,
                       const char *batch_id, const char *reply_json) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c || !batch_id || strcmp(c->batch_id, batch_id) != 0) {
        rc = stale(conv);
    } else {
        /* Everything that can fail comes before the ack: all or nothing. */
        mreply_t *r = calloc(1, sizeof(*r));
        mreply_t *old = hmap_get(&s->replies, batch_id);
        if (!r || !(r->json = rl_strdup(reply_json ? reply_json : "{}")) ||
            !hmap_put(&s->replies, batch_id, r)) {
            if (r) free(r->json);
            free(r);
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        } else {
            if (old) {
                free(old->json);
                free(old);
            }
            r->expires = now + pol->reply_ttl_ms;
            r->due = min64(now + pol->reply_redeliver_ms, r->expires);
            ack_locked(s, c, pol, now);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int to_dead(mstate_t *s, mconv_t *c, const char *error, int64_t now) {
    char *msgs = join_records(&c->batch, 0);
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"id\":");
    rl_buf_json_str(&b, c->batch_id);
    rl_buf_puts(&b, ",\"conversation_id\":");
    rl_buf_json_str(&b, c->id);
    rl_buf_puts(&b, ",\"batch_id\":");
    rl_buf_json_str(&b, c->batch_id);
    rl_buf_printf(&b, ",\"attempts\":%lld,\"stalls\":%lld,\"error\":", (long long)c->attempts,
                  (long long)c->stalls);
    rl_buf_json_str(&b, error ? error : "");
    rl_buf_printf(&b, ",\"dead_at_ms\":%lld,\"messages\":%s}", (long long)now, msgs ? msgs : "[]");
    free(msgs);
    char *json = rl_buf_take(&b);
    if (!json) return 0;
    if (s->ndead == s->capdead) {
        size_t cap = s->capdead ? s->capdead * 2 : 16;
        dead_t *d = realloc(s->dead, cap * sizeof(*d));
        if (!d) {
            free(json);
            return 0;
        }
        s->dead = d;
        s->capdead = cap;
    }
    dead_t *d = &s->dead[s->ndead];
    d->id = rl_strdup(c->batch_id);
    d->conv = rl_strdup(c->id);
    d->json = json;
    d->dead_at = now;
    if (!d->id || !d->conv) {
        free(d->id);
        free(d->conv);
        free(json);
        return 0;
    }
    s->ndead++;
    s->c_dead++;
    free(c->last_error);
    c->last_error = error ? rl_strdup(error) : NULL;
    if (c->ckpt && *c->ckpt) {
        /* Its provider turn may still run: the next claim settles it. */
        free(c->settle);
        c->settle = c->ckpt;
        c->ckpt = NULL;
    }
    drop_batch(c);
    return 1;
}

static int m_fail(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token,
                  const char *error, int retriable, rl_fail_outcome_t *outcome) {
    mstate_t *s = S(st);
    double u = rl_random();
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else {
        s->c_failed++;
        end_lease(s, c);
        /* Expired leases are not attempts (see recover). */
        int64_t failed = c->attempts - c->stalls;
        if (retriable && failed < pol->max_attempts) {
            free(c->last_error);
            c->last_error = error ? rl_strdup(error) : NULL;
            ready_set(s, c, now + rl_backoff_ms(pol, failed, u));
            if (outcome) *outcome = RL_FAIL_RETRY;
        } else {
            if (!to_dead(s, c, error, now)) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            if (outcome) *outcome = RL_FAIL_DEAD;
            schedule(s, c, pol, now, 1);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_release(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token) {
    (void)pol;
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else {
        end_lease(s, c);
        if (c->attempts > 0) c->attempts--;
        ready_set(s, c, now);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_defer(rl_store_t *st, const rl_policy_t *pol, const char *conv, const char *token,
                   int64_t delay_ms) {
    (void)pol;
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mconv_t *c = owned(s, conv, token);
    int rc = RUNLANE_OK;
    if (!c) {
        rc = stale(conv);
    } else {
        end_lease(s, c);
        if (c->attempts > 0) c->attempts--;
        ready_set(s, c, now + (delay_ms > 0 ? delay_ms : 0));
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int m_recover(rl_store_t *st, const rl_policy_t *pol, int *recovered_out, int *dead_out) {
    mstate_t *s = S(st);
    int rec = 0, dead = 0, rc = RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    for (size_t i = 0; i < s->leases.len;) {
        mconv_t *c = s->leases.v[i];
        if (c->lease_until > now) {
            i++;
            continue;
        }
        end_lease(s, c); /* swaps another entry into slot i */
        s->c_recovered++;
        rec++;
        if (c->batch.len && ++c->stalls > pol->max_stalls) {
            char err[160];
            /* Same text as recover-9.lua. */
            snprintf(err, sizeof(err),
                     "lease expired %lld times, more than max.stalls (%lld): the workers "
                     "holding the batch died or stalled",
                     (long long)c->stalls, (long long)pol->max_stalls);
            if (!to_dead(s, c, err, now)) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            dead++;
            schedule(s, c, pol, now, 1);
        } else {
            ready_set(s, c, now);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (recovered_out) *recovered_out = rec;
    if (dead_out) *dead_out = dead;
    return rc;
}

static const char *state_of(const mconv_t *c, int64_t now) {
    if (c->token[0]) return "leased";
    if (c->ready_idx >= 0) {
        if (c->due <= now) return "ready";
        return c->batch.len ? "backoff" : "waiting";
    }
    return "idle";
}

static int m_status(rl_store_t *st, const char *conv, char **json_out) {
    mstate_t *s = S(st);
    rl_buf_t b;
    rl_buf_init(&b);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    if (!conv) {
        size_t active = 0;
        for (size_t i = 0; i < s->convs.nslots; i++)
            for (hent_t *e = s->convs.slots[i]; e; e = e->next) {
                mconv_t *c = e->val;
                if (pending_count(c) || c->batch.len) active++;
            }
        rl_buf_printf(&b,
                      "{\"pending\":%lld,\"ready\":%zu,\"inflight\":%zu,\"dead\":%zu,"
                      "\"conversations\":%zu,\"enqueued\":%lld,\"acked\":%lld,\"failed\":%lld,"
                      "\"dead_lettered\":%lld,\"recovered\":%lld}",
                      (long long)s->pending_total, s->ready.len, s->leases.len, s->ndead,
                      active, (long long)s->c_enqueued, (long long)s->c_acked,
                      (long long)s->c_failed, (long long)s->c_dead, (long long)s->c_recovered);
    } else {
        mconv_t *c = conv_get(s, conv, 0);
        rl_buf_puts(&b, "{\"conversation_id\":");
        rl_buf_json_str(&b, conv);
        if (!c) {
            rl_buf_puts(&b, ",\"pending\":0,\"inflight\":0,\"attempts\":0,\"batch_id\":null,"
                            "\"owner\":null,\"lease_expires_ms\":null,\"due_ms\":null,"
                            "\"last_error\":null,\"state\":\"idle\"}");
        } else {
            rl_buf_printf(&b, ",\"pending\":%zu,\"inflight\":%zu,\"attempts\":%lld,\"batch_id\":",
                          pending_count(c), c->batch.len, (long long)c->attempts);
            if (c->batch_id[0]) rl_buf_json_str(&b, c->batch_id); else rl_buf_puts(&b, "null");
            rl_buf_puts(&b, ",\"owner\":");
            if (c->token[0]) rl_buf_json_str(&b, c->owner); else rl_buf_puts(&b, "null");
            if (c->token[0]) rl_buf_printf(&b, ",\"lease_expires_ms\":%lld", (long long)c->lease_until);
            else rl_buf_puts(&b, ",\"lease_expires_ms\":null");
            if (c->ready_idx >= 0) rl_buf_printf(&b, ",\"due_ms\":%lld", (long long)c->due);
            else rl_buf_puts(&b, ",\"due_ms\":null");
            rl_buf_puts(&b, ",\"last_error\":");
            if (c->last_error) rl_buf_json_str(&b, c->last_error); else rl_buf_puts(&b, "null");
            rl_buf_printf(&b, ",\"state\":\"%s\"}", state_of(c, now));
        }
    }
    pthread_mutex_unlock(&s->mu);
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static int m_dead_list(rl_store_t *st, size_t offset, size_t limit, char **json_out) {
    mstate_t *s = S(st);
    if (!limit) limit = 100;
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "[");
    pthread_mutex_lock(&s->mu);
    for (size_t i = offset, k = 0; i < s->ndead && k < limit; i++, k++) {
        if (k) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, s->dead[i].json);
    }
    pthread_mutex_unlock(&s->mu);
    rl_buf_puts(&b, "]");
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static void dead_remove_at(mstate_t *s, size_t i) {
    free(s->dead[i].id);
    free(s->dead[i].conv);
    free(s->dead[i].json);
    memmove(&s->dead[i], &s->dead[i + 1], (s->ndead - i - 1) * sizeof(dead_t));
    s->ndead--;
}

/* Puts dead letter i's messages in front of its conversation's pending. */
static int retry_at(mstate_t *s, const rl_policy_t *pol, size_t i, int64_t now) {
    dead_t *d = &s->dead[i];
    cJSON *j = cJSON_Parse(d->json);
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    mconv_t *c = conv_get(s, d->conv, 1);
    if (!j || !cJSON_IsArray(msgs) || !c) {
        cJSON_Delete(j);
        return 0;
    }
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    recvec_t nv = {0};
    int ok = 1;
    cJSON *m;
    int64_t oldest = 0;
    cJSON_ArrayForEach(m, msgs) {
        rec_t r;
        cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        cJSON *ts = cJSON_GetObjectItemCaseSensitive(m, "ts_ms");
        if (!oldest && cJSON_IsNumber(ts)) oldest = rl_f64_to_i64(ts->valuedouble);
        r.bytes = cJSON_IsString(content) ? (int64_t)strlen(content->valuestring) : 0;
        r.json = cJSON_PrintUnformatted(m);
        if (!r.json || !recvec_push(&nv, r)) {
            free(r.json);
            ok = 0;
            break;
        }
    }
    cJSON_Delete(j);
    for (size_t k = c->head; ok && k < c->pending.len; k++)
        if (!recvec_push(&nv, c->pending.v[k])) ok = 0;
    if (!ok) {
        for (size_t k = 0; k < n && k < nv.len; k++) free(nv.v[k].json);
        free(nv.v);
        conv_gc(s, c);
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        c->pbytes += nv.v[k].bytes;
        s->pending_total++;
    }
    free(c->pending.v);
    c->pending = nv;
    c->head = 0;
    c->first_ms = oldest ? oldest : now;
    if (!c->token[0]) ready_set(s, c, now);
    (void)pol;
    dead_remove_at(s, i);
    return 1;
}

static int m_dead_retry(rl_store_t *st, const rl_policy_t *pol, const char *dead_id, size_t *count_out) {
    mstate_t *s = S(st);
    size_t count = 0;
    int rc = RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    if (dead_id) {
        size_t i;
        for (i = 0; i < s->ndead && strcmp(s->dead[i].id, dead_id) != 0; i++) {}
        if (i == s->ndead)
            rc = rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", dead_id);
        else if (!retry_at(s, pol, i, now))
            rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        else
            count = 1;
    } else {
        /* Newest first, so that each conversation ends with its oldest
         * dead batch in front. */
        while (s->ndead && rc == RUNLANE_OK) {
            if (!retry_at(s, pol, s->ndead - 1, now)) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            else count++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (count_out) *count_out = count;
    return rc;
}

static int m_dead_purge(rl_store_t *st, const char *dead_id, size_t *count_out) {
    mstate_t *s = S(st);
    size_t count = 0;
    int rc = RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    if (dead_id) {
        size_t i;
        for (i = 0; i < s->ndead && strcmp(s->dead[i].id, dead_id) != 0; i++) {}
        if (i == s->ndead) {
            rc = rl_error_set(RUNLANE_ERR_NOT_FOUND, 0, "no dead letter \"%.64s\"", dead_id);
        } else {
            dead_remove_at(s, i);
            count = 1;
        }
    } else {
        count = s->ndead;
        while (s->ndead) dead_remove_at(s, s->ndead - 1);
    }
    pthread_mutex_unlock(&s->mu);
    if (count_out) *count_out = count;
    return rc;
}

typedef struct mdue {
    const char *id; /* the hash entry's key */
    mreply_t *r;
} mdue_t;

static int cmp_mdue(const void *a, const void *b) {
    const mdue_t *x = a, *y = b;
    if (x->r->due != y->r->due) return x->r->due < y->r->due ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void reply_drop(mstate_t *s, const char *batch_id) {
    mreply_t *r = hmap_del(&s->replies, batch_id);
    if (r) {
        free(r->json);
        free(r);
    }
}

static int m_reply_claim(rl_store_t *st, const rl_policy_t *pol, int max, rl_reply_t **out,
                         int *n_out) {
    mstate_t *s = S(st);
    *out = NULL;
    *n_out = 0;
    if (max <= 0) return RUNLANE_OK;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    /* Expired replies go first (collected, then deleted: the chains must
     * not change while walked). */
    size_t nexp = 0, ndue = 0;
    for (size_t i = 0; i < s->replies.nslots; i++)
        for (hent_t *e = s->replies.slots[i]; e; e = e->next) {
            mreply_t *r = e->val;
            if (r->expires <= now) nexp++;
            else if (r->due <= now) ndue++;
        }
    int rc = RUNLANE_OK;
    if (nexp) {
        char **ids = calloc(nexp, sizeof(*ids));
        size_t k = 0;
        for (size_t i = 0; ids && i < s->replies.nslots; i++)
            for (hent_t *e = s->replies.slots[i]; e; e = e->next)
                if (((mreply_t *)e->val)->expires <= now) ids[k++] = rl_strdup(e->key);
        for (size_t i = 0; ids && i < k; i++) {
            if (ids[i]) reply_drop(s, ids[i]);
            free(ids[i]);
        }
        free(ids);
    }
    mdue_t *due = ndue ? calloc(ndue, sizeof(*due)) : NULL;
    rl_reply_t *v = NULL;
    int got = 0;
    if (ndue && !due) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    if (due) {
        size_t k = 0;
        for (size_t i = 0; i < s->replies.nslots; i++)
            for (hent_t *e = s->replies.slots[i]; e; e = e->next) {
                mreply_t *r = e->val;
                if (r->expires > now && r->due <= now) {
                    due[k].id = e->key;
                    due[k].r = r;
                    k++;
                }
            }
        qsort(due, ndue, sizeof(*due), cmp_mdue);
        size_t n = ndue < (size_t)max ? ndue : (size_t)max;
        v = calloc(n, sizeof(*v));
        if (!v) rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        for (size_t i = 0; v && i < n; i++) {
            if (!(v[got].json = rl_strdup(due[i].r->json))) {
                rc = rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
                break;
            }
            rl_strlcpy(v[got].batch_id, due[i].id, sizeof(v[got].batch_id));
            due[i].r->due = min64(now + pol->reply_redeliver_ms, due[i].r->expires);
            got++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(due);
    if (got == 0) {
        free(v);
        return rc;
    }
    /* what was claimed is postponed: hand it over */
    *out = v;
    *n_out = got;
    return RUNLANE_OK;
}

static int m_reply_ack(rl_store_t *st, const char *batch_id) {
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    mreply_t *r = batch_id ? hmap_get(&s->replies, batch_id) : NULL;
    int live = r && r->expires > now;
    if (r) reply_drop(s, batch_id);
    pthread_mutex_unlock(&s->mu);
    if (!live)
        return rl_error_set(RUNLANE_ERR_NOT_FOUND, 0,
                            "no unconfirmed reply of batch \"%.64s\" (already confirmed, expired "
                            "or unknown)",
                            batch_id ? batch_id : "");
    return RUNLANE_OK;
}

/* The shared token bucket; the same arithmetic as lua/rate_take-1.lua. */
static int m_rate_take(rl_store_t *st, int64_t rpm, int64_t *wait_ms_out) {
    *wait_ms_out = 0;
    if (rpm <= 0) return RUNLANE_OK;
    mstate_t *s = S(st);
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    double cap = (double)rpm / 60.0;
    if (cap < 1.0) cap = 1.0;
    if (!s->rate_set) {
        s->rate_set = 1;
        s->rate_tokens = cap;
        s->rate_at = now;
    }
    if (now > s->rate_at) {
        s->rate_tokens += (double)(now - s->rate_at) * (double)rpm / 60000.0;
        s->rate_at = now;
    }
    if (s->rate_tokens > cap) s->rate_tokens = cap;
    if (s->rate_tokens >= 1.0)
        s->rate_tokens -= 1.0;
    else /* rounded up: after this long a whole token is there */
        *wait_ms_out = (int64_t)((1.0 - s->rate_tokens) * 60000.0 / (double)rpm) + 1;
    pthread_mutex_unlock(&s->mu);
    return RUNLANE_OK;
}

/* The conversation key map; the same contract as lua/conv_map-2.lua. */
static int m_conv_map(rl_store_t *st, int mode, const char *conv, const char *token,
                      const char *provider_id, char **out) {
    mstate_t *s = S(st);
    int rc = RUNLANE_OK;
    char *res = NULL;
    if (out) *out = NULL;
    pthread_mutex_lock(&s->mu);
    const char *cur = hmap_get(&s->convmap, conv);
    if (mode == RL_MAP_GET) {
        res = cur ? rl_strdup(cur) : NULL;
        if (cur && !res) rc = RUNLANE_ERR_NOMEM;
    } else if (mode == RL_MAP_RECORD) {
        /* fenced, and never over a mapping (see store.h) */
        if (!owned(s, conv, token)) {
            rc = RUNLANE_ERR_STALE;
        } else if (cur) {
            if (!(res = rl_strdup(cur))) rc = RUNLANE_ERR_NOMEM;
        } else {
            char *v = rl_strdup(provider_id ? provider_id : "");
            res = rl_strdup(provider_id ? provider_id : "");
            if (!v || !res || !hmap_put(&s->convmap, conv, v)) {
                free(v);
                rc = RUNLANE_ERR_NOMEM;
            }
        }
    } else if (mode == RL_MAP_SET) {
        char *v = rl_strdup(provider_id ? provider_id : "");
        char *old = cur ? rl_strdup(cur) : NULL;
        if (!v || (cur && !old)) {
            free(v);
            free(old);
            rc = RUNLANE_ERR_NOMEM;
        } else {
            free(hmap_del(&s->convmap, conv));
            if (!hmap_put(&s->convmap, conv, v)) {
                free(v);
                free(old);
                rc = RUNLANE_ERR_NOMEM;
            } else {
                res = old;
            }
        }
    } else {
        res = hmap_del(&s->convmap, conv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == RUNLANE_ERR_STALE) {
        free(res);
        return stale(conv);
    }
    if (rc != RUNLANE_OK) {
        free(res);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    if (out) *out = res;
    else free(res);
    return RUNLANE_OK;
}

static void m_destroy(rl_store_t *st) {
    mstore_t *ms = (mstore_t *)st;
    pthread_mutex_lock(&registry_mu);
    mstate_t *s = ms->st;
    if (--s->refs == 0) {
        mstate_t **pp = &registry;
        while (*pp && *pp != s) pp = &(*pp)->next;
        if (*pp) { /* not found: a state inherited through fork, left alone */
            *pp = s->next;
            mstate_free(s);
        }
    }
    pthread_mutex_unlock(&registry_mu);
    free(ms);
}

/* ---- dashboard reads (see store.h conv_list, conv_peek) ---- */

typedef struct mlist_item {
    mconv_t *c;
    int64_t score;
} mlist_item_t;

static int cmp_mlist(const void *a, const void *b) {
    const mlist_item_t *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return strcmp(x->c->id, y->c->id);
}

static int m_conv_list(rl_store_t *st, const char *state, const char *search, size_t offset,
                       size_t limit, size_t scan, char **json_out) {
    mstate_t *s = S(st);
    *json_out = NULL;
    int leased = strcmp(state, "leased") == 0;
    pthread_mutex_lock(&s->mu);
    int64_t now = now_locked(s);
    const convvec_t *src = leased ? &s->leases : &s->ready;
    mlist_item_t *v = src->len ? malloc(src->len * sizeof(*v)) : NULL;
    if (src->len && !v) {
        pthread_mutex_unlock(&s->mu);
        return rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
    }
    /* Same selection as the redis store: the first `scan` members of the
     * state's range in score order, then the filters. */
    size_t n = 0;
    for (size_t i = 0; i < src->len; i++) {
        mconv_t *c = src->v[i];
        int64_t score = leased ? c->lease_until : c->due;
        if (!leased && (strcmp(state, "ready") == 0) != (score <= now)) continue;
        v[n].c = c;
        v[n].score = score;
        n++;
    }
    if (n > 1) qsort(v, n, sizeof(*v), cmp_mlist);
    int truncated = n > scan;
    if (truncated) n = scan;
    rl_buf_t b;
    rl_buf_init(&b);
    rl_buf_puts(&b, "{\"items\":[");
    size_t total = 0, shown = 0;
    for (size_t i = 0; i < n; i++) {
        mconv_t *c = v[i].c;
        if (search && *search && !strstr(c->id, search)) continue;
        if (!leased && strcmp(state, "ready") != 0 &&
            (strcmp(state, "backoff") == 0) != (c->batch.len > 0))
            continue;
        total++;
        if (total <= offset || shown >= limit) continue;
        if (shown++) rl_buf_puts(&b, ",");
        rl_buf_puts(&b, "{\"conversation_id\":");
        rl_buf_json_str(&b, c->id);
        rl_buf_printf(&b, ",\"state\":\"%s\",\"score_ms\":%lld,\"attempts\":%lld,\"owner\":",
                      state_of(c, now), (long long)v[i].score, (long long)c->attempts);
        if (c->token[0]) rl_buf_json_str(&b, c->owner); else rl_buf_puts(&b, "null");
        rl_buf_puts(&b, ",\"last_error\":");
        if (c->last_error) rl_buf_json_str(&b, c->last_error); else rl_buf_puts(&b, "null");
        rl_buf_puts(&b, "}");
    }
    pthread_mutex_unlock(&s->mu);
    free(v);
    rl_buf_printf(&b, "],\"now_ms\":%lld,\"total\":%zu,\"truncated\":%s}", (long long)now, total,
                  truncated ? "true" : "false");
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static int m_conv_peek(rl_store_t *st, const char *conv, size_t max, char **json_out) {
    mstate_t *s = S(st);
    rl_buf_t b;
    rl_buf_init(&b);
    pthread_mutex_lock(&s->mu);
    mconv_t *c = conv_get(s, conv, 0);
    rl_buf_puts(&b, "{\"pending\":[");
    if (c)
        for (size_t i = c->head, k = 0; i < c->pending.len && k < max; i++, k++) {
            if (k) rl_buf_puts(&b, ",");
            rl_buf_puts(&b, c->pending.v[i].json);
        }
    rl_buf_puts(&b, "],\"batch\":[");
    if (c)
        for (size_t i = 0; i < c->batch.len && i < max; i++) {
            if (i) rl_buf_puts(&b, ",");
            rl_buf_puts(&b, c->batch.v[i].json);
        }
    rl_buf_puts(&b, "],\"token\":");
    rl_buf_json_str(&b, c ? c->token : "");
    rl_buf_puts(&b, "}");
    pthread_mutex_unlock(&s->mu);
    *json_out = rl_buf_take(&b);
    return *json_out ? RUNLANE_OK : rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
}

static const rl_store_ops_t memory_ops = {
    "memory",      m_enqueue,      m_enqueue_many, m_touch,     m_next_due,   m_claim,
    m_renew,       m_extend_batch, m_checkpoint,   m_ack,       m_ack_reply,  m_fail,
    m_release,     m_defer,        m_recover,      m_status,    m_dead_list,  m_dead_retry,
    m_dead_purge,  m_reply_claim,  m_reply_ack,    m_rate_take,  m_conv_map,   m_destroy,
    NULL,          NULL,           NULL,           NULL,         NULL, /* no wake-up ops */
    m_conv_list,   m_conv_peek,    NULL,
    NULL, /* no round trip to share */
};

rl_store_t *rl_store_memory_open(const rl_store_opts_t *opts) {
    const char *name = strncmp(opts->url, "memory://", 9) == 0 ? opts->url + 9 : "default";
    mstore_t *ms = calloc(1, sizeof(*ms));
    if (!ms) {
        rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
        return NULL;
    }
    ms->base.ops = &memory_ops;
    pthread_once(&fork_once, register_fork_handlers);
    pthread_mutex_lock(&registry_mu);
    mstate_t *s = registry;
    while (s && strcmp(s->name, name) != 0) s = s->next;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s || !(s->name = rl_strdup(name)) || !hmap_init(&s->convs) || !hmap_init(&s->idem) ||
            !hmap_init(&s->replies) || !hmap_init(&s->convmap)) {
            if (s) {
                free(s->name);
                free(s->convs.slots);
                free(s->idem.slots);
                free(s->replies.slots);
                free(s);
            }
            pthread_mutex_unlock(&registry_mu);
            free(ms);
            rl_error_set(RUNLANE_ERR_NOMEM, 0, "out of memory");
            return NULL;
        }
        pthread_mutex_init(&s->mu, NULL);
        s->next = registry;
        registry = s;
    }
    s->refs++;
    ms->st = s;
    pthread_mutex_unlock(&registry_mu);
    return &ms->base;
}
