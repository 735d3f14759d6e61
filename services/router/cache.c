/* cache.c - the router's response cache (see cache.h). hiredis's asynchronous API is
 * driven by the router's zmq_poll loop: hiredis says through its event hooks whether it
 * wants to read or write, router_cache_poll_fd hands that to zmq_poll, and
 * router_cache_on_io gives hiredis the readiness back. No thread, no blocking call.
 *
 * Each request known to the cache is an entry (a chained hash table by request id).
 * A GET in flight is a lookup whose privdata hiredis keeps; a lookup that timed out is
 * abandoned (its entry forgets it) and freed when hiredis finally calls back, with the
 * late reply or with NULL when the connection goes.
 */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <zmq.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "log.h"

#define BUCKETS 1024
#define KEY_PREFIX "citadel:cache:v1:"
#define RECONNECT_S 1.0
#define CONNECT_TIMEOUT_S 1.0
#define MAX_LOOKUPS 1024          /* GETs in flight at most (slow Redis: bypass beyond) */
#define TIMEOUTS_BEFORE_RECONNECT 3

typedef struct lookup lookup;
typedef struct entry entry;

struct entry {
    char request_id[128];
    char key[96];
    enum router_cache_outcome outcome;
    bool store;                   /* the answer is to be stored when it completes */
    uint8_t *rec;                 /* the CachedResponse being recorded (protobuf bytes) */
    size_t rec_len, rec_cap;
    lookup *lookup;               /* the GET in flight, NULL once answered or abandoned */
    router_cache_fn fn;
    void *arg;
    entry *next;                  /* hash chain */
};

struct lookup {
    router_cache *cache;
    entry *e;                     /* NULL once abandoned (timed out, or the request forgotten) */
    double started, deadline;
    lookup *prev, *next;          /* the waiting list (those with e != NULL) */
};

struct router_cache {
    router_cache_config cfg;
    char host[256];
    int port;
    bool enabled;
    redisAsyncContext *ac;        /* NULL while disconnected */
    bool connected, want_read, want_write;
    double next_connect, connect_deadline;
    int consecutive_timeouts;
    int lookups_in_flight;        /* abandoned ones included: they hold hiredis memory */
    lookup *waiting;
    entry *buckets[BUCKETS];
    metrics_counter *hit, *miss, *bypass, *stores;
    metrics_counter *err_down, *err_timeout, *err_error, *err_too_large, *err_corrupt;
    metrics_histogram *lookup_seconds;
    double now;                   /* the last time the broker told us */
};

const char *router_cache_outcome_name(enum router_cache_outcome o)
{
    switch (o) {
    case CACHE_HIT: return "hit";
    case CACHE_MISS: return "miss";
    case CACHE_BYPASS: return "bypass";
    default: return "";
    }
}

/* ---- keys ------------------------------------------------------------------------- */

bool router_cache_cacheable(const Citadel__GenerateRequest *req)
{
    return req->temperature == 0.0f || req->has_seed;
}

void router_cache_key(const Citadel__GenerateRequest *req, char *out, size_t cap)
{
    Citadel__GenerateRequest norm = *req;   /* shallow: only scalars and pointers change */
    norm.request_id = "";
    norm.key_id = "";
    norm.user = "";
    norm.stream = false;
    norm.priority = 0;
    norm.deadline_unix_ms = 0;
    norm.cache_skip_lookup = false;
    norm.cache_skip_store = false;
    size_t len = citadel__generate_request__get_packed_size(&norm);
    uint8_t *buf = malloc(len ? len : 1);
    unsigned char md[32];
    unsigned int n = 0;
    if (buf) {
        citadel__generate_request__pack(&norm, buf);
        EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
    } else {
        memset(md, 0, sizeof md);   /* out of memory: a key no answer is stored under */
    }
    free(buf);
    int o = snprintf(out, cap, "%s", buf ? KEY_PREFIX : "citadel:cache:v1:unhashable:");
    for (int i = 0; i < 32 && (size_t)o + 3 <= cap; i++)
        o += snprintf(out + o, cap - (size_t)o, "%02x", md[i]);
}

/* ---- entries ---------------------------------------------------------------------- */

static unsigned bucket_of(const char *id)
{
    unsigned h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % BUCKETS;
}

static entry *find(router_cache *c, const char *id)
{
    for (entry *e = c->buckets[bucket_of(id)]; e; e = e->next)
        if (strcmp(e->request_id, id) == 0)
            return e;
    return NULL;
}

static void unlink_waiting(router_cache *c, lookup *l)
{
    if (l->prev) l->prev->next = l->next;
    else if (c->waiting == l) c->waiting = l->next;
    if (l->next) l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

/* Removes and frees e; a lookup still in flight is abandoned. */
static void drop_entry(router_cache *c, entry *e)
{
    entry **pp = &c->buckets[bucket_of(e->request_id)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    if (e->lookup) {
        unlink_waiting(c, e->lookup);
        e->lookup->e = NULL;
    }
    free(e->rec);
    free(e);
}

enum router_cache_outcome router_cache_outcome_of(router_cache *c, const char *request_id)
{
    entry *e = c && c->enabled ? find(c, request_id) : NULL;
    return e ? e->outcome : CACHE_NONE;
}

void router_cache_forget(router_cache *c, const char *request_id)
{
    entry *e = c && c->enabled ? find(c, request_id) : NULL;
    if (e)
        drop_entry(c, e);
}

/* ---- hiredis event hooks ---------------------------------------------------------- */

static void ev_add_read(void *p) { ((router_cache *)p)->want_read = true; }
static void ev_del_read(void *p) { ((router_cache *)p)->want_read = false; }
static void ev_add_write(void *p) { ((router_cache *)p)->want_write = true; }
static void ev_del_write(void *p) { ((router_cache *)p)->want_write = false; }
static void ev_cleanup(void *p)
{
    router_cache *c = p;
    c->want_read = c->want_write = false;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    router_cache *c = ac->ev.data;
    if (status != REDIS_OK) {   /* hiredis frees ac after this */
        log_msg(LOG_WARN, "", "cache: cannot connect to Redis %s:%d: %s (requests go on uncached)", c->host, c->port,
                ac->errstr);
        c->ac = NULL;
        c->connected = false;
        c->next_connect = c->now + RECONNECT_S;
        return;
    }
    c->connected = true;
    c->consecutive_timeouts = 0;
    log_msg(LOG_INFO, "", "cache: Redis %s:%d connected", c->host, c->port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    router_cache *c = ac->ev.data;
    if (c->connected)
        log_msg(LOG_WARN, "", "cache: Redis %s:%d disconnected%s%s (requests go on uncached)", c->host, c->port,
                status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : ac->errstr);
    c->ac = NULL;
    c->connected = false;
    c->want_read = c->want_write = false;
    c->next_connect = c->now + RECONNECT_S;
}

static void connect_redis(router_cache *c, double now)
{
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (ac == NULL || ac->err) {
        log_msg(LOG_WARN, "", "cache: cannot connect to Redis %s:%d: %s", c->host, c->port,
                ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        c->next_connect = now + RECONNECT_S;
        return;
    }
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->want_read = false;
    c->want_write = true;   /* the socket turns writable when the connect completes */
    c->connect_deadline = now + CONNECT_TIMEOUT_S;
}

/* Drops the connection now (hiredis answers every callback with NULL first). */
static void disconnect_redis(router_cache *c, const char *why)
{
    if (c->ac == NULL)
        return;
    log_msg(LOG_WARN, "", "cache: dropping the Redis connection: %s", why);
    redisAsyncContext *ac = c->ac;
    redisAsyncFree(ac);   /* on_disconnect runs only when it was connected */
    c->ac = NULL;
    c->connected = false;
    c->want_read = c->want_write = false;
    c->next_connect = c->now + RECONNECT_S;
}

int router_cache_poll_fd(router_cache *c, short *events)
{
    *events = 0;
    if (c == NULL || c->ac == NULL)
        return -1;
    if (c->want_read) *events |= ZMQ_POLLIN;
    if (c->want_write) *events |= ZMQ_POLLOUT;
    return c->ac->c.fd;
}

void router_cache_on_io(router_cache *c, short revents)
{
    if (c == NULL || c->ac == NULL)
        return;
    if (revents & (ZMQ_POLLIN | ZMQ_POLLERR))
        redisAsyncHandleRead(c->ac);
    if (c->ac && (revents & ZMQ_POLLOUT))
        redisAsyncHandleWrite(c->ac);
}

/* ---- lookups ---------------------------------------------------------------------- */

/* Settles e's lookup with an outcome and tells the broker. e may be gone after. */
static void settle(router_cache *c, entry *e, enum router_cache_outcome o, const Citadel__CachedResponse *cached)
{
    e->outcome = o;
    if (o != CACHE_MISS)
        e->store = false;
    if (o == CACHE_HIT) metrics_counter_inc(c->hit);
    else if (o == CACHE_MISS) metrics_counter_inc(c->miss);
    else metrics_counter_inc(c->bypass);
    router_cache_fn fn = e->fn;
    void *arg = e->arg;
    char id[128];
    memcpy(id, e->request_id, sizeof id);
    fn(arg, id, o, cached);
}

static void on_get(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    lookup *l = privdata;
    router_cache *c = l->cache;
    redisReply *reply = r;
    c->lookups_in_flight--;
    entry *e = l->e;
    if (e == NULL) {   /* timed out or forgotten earlier */
        free(l);
        return;
    }
    unlink_waiting(c, l);
    e->lookup = NULL;
    metrics_histogram_observe(c->lookup_seconds, c->now - l->started);
    free(l);
    c->consecutive_timeouts = 0;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        metrics_counter_inc(c->err_error);
        log_msg(LOG_WARN, e->request_id, "cache: lookup failed: %s", reply ? reply->str : "connection lost");
        settle(c, e, CACHE_BYPASS, NULL);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        settle(c, e, CACHE_MISS, NULL);
        return;
    }
    Citadel__CachedResponse *cr = citadel__cached_response__unpack(NULL, reply->len, (const uint8_t *)reply->str);
    if (cr == NULL || cr->n_chunks == 0) {
        metrics_counter_inc(c->err_corrupt);
        log_msg(LOG_WARN, e->request_id, "cache: entry %s is not a CachedResponse: answered afresh", e->key);
        if (cr)
            citadel__cached_response__free_unpacked(cr, NULL);
        settle(c, e, CACHE_MISS, NULL);
        return;
    }
    e->store = false;
    settle(c, e, CACHE_HIT, cr);
    citadel__cached_response__free_unpacked(cr, NULL);
}

/* A request that will not be looked up: known only for its outcome (and recording
 * when it is to be stored). */
static enum router_cache_outcome remember(router_cache *c, const Citadel__GenerateRequest *req,
                                          enum router_cache_outcome o, bool store)
{
    if (!store && o == CACHE_BYPASS) {   /* nothing to record: an entry only for the header */
        metrics_counter_inc(c->bypass);
    }
    entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CACHE_BYPASS;
    snprintf(e->request_id, sizeof e->request_id, "%s", req->request_id);
    if (store)   /* the key costs a pack and a hash: only when the answer will be stored */
        router_cache_key(req, e->key, sizeof e->key);
    e->outcome = o;
    e->store = store;
    unsigned b = bucket_of(e->request_id);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    return o;
}

enum router_cache_outcome router_cache_begin(router_cache *c, const Citadel__GenerateRequest *req, double now,
                                             router_cache_fn fn, void *arg)
{
    if (c == NULL || !c->enabled)
        return CACHE_NONE;
    c->now = now;
    router_cache_forget(c, req->request_id);   /* a stale entry under a reused id */
    if (!router_cache_cacheable(req) || (req->cache_skip_lookup && req->cache_skip_store))
        return remember(c, req, CACHE_BYPASS, false);
    if (!c->connected) {
        metrics_counter_inc(c->err_down);
        return remember(c, req, CACHE_BYPASS, false);
    }
    if (req->cache_skip_lookup) {   /* no-cache: answer afresh, store the answer */
        metrics_counter_inc(c->bypass);
        return remember(c, req, CACHE_BYPASS, true);
    }
    if (c->lookups_in_flight >= MAX_LOOKUPS) {
        metrics_counter_inc(c->err_timeout);
        return remember(c, req, CACHE_BYPASS, false);
    }
    lookup *l = calloc(1, sizeof *l);
    entry *e = calloc(1, sizeof *e);
    if (l == NULL || e == NULL) {
        free(l);
        free(e);
        return CACHE_BYPASS;
    }
    snprintf(e->request_id, sizeof e->request_id, "%s", req->request_id);
    router_cache_key(req, e->key, sizeof e->key);
    e->outcome = CACHE_MISS;
    e->store = !req->cache_skip_store;
    e->fn = fn;
    e->arg = arg;
    *l = (lookup){.cache = c, .e = e, .started = now, .deadline = now + c->cfg.timeout_ms / 1000.0};
    if (redisAsyncCommand(c->ac, on_get, l, "GET %s", e->key) != REDIS_OK) {
        free(l);
        free(e);
        metrics_counter_inc(c->err_error);
        return remember(c, req, CACHE_BYPASS, false);
    }
    c->lookups_in_flight++;
    e->lookup = l;
    l->next = c->waiting;
    if (c->waiting) c->waiting->prev = l;
    c->waiting = l;
    unsigned b = bucket_of(e->request_id);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    return CACHE_MISS;
}

/* ---- recording and storing --------------------------------------------------------- */

static bool append(entry *e, const void *data, size_t n)
{
    if (e->rec_len + n > e->rec_cap) {
        size_t cap = e->rec_cap ? e->rec_cap * 2 : 1024;
        while (cap < e->rec_len + n)
            cap *= 2;
        uint8_t *bigger = realloc(e->rec, cap);
        if (bigger == NULL)
            return false;
        e->rec = bigger;
        e->rec_cap = cap;
    }
    memcpy(e->rec + e->rec_len, data, n);
    e->rec_len += n;
    return true;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

void router_cache_record(router_cache *c, const Citadel__GenerateChunk *chunk)
{
    entry *e = c && c->enabled && chunk->request_id ? find(c, chunk->request_id) : NULL;
    if (e == NULL || !e->store)
        return;
    Citadel__GenerateChunk copy = *chunk;
    copy.cache = "";   /* what the client was told is not part of the answer */
    size_t n = citadel__generate_chunk__get_packed_size(&copy);
    if (e->rec_len + n + 16 > c->cfg.max_entry_bytes) {
        metrics_counter_inc(c->err_too_large);
        e->store = false;
        free(e->rec);
        e->rec = NULL;
        e->rec_len = e->rec_cap = 0;
        return;
    }
    uint8_t head[12];
    head[0] = (1 << 3) | 2;   /* field 1 (chunks), length-delimited */
    size_t h = 1 + put_varint(head + 1, n);
    uint8_t *body = malloc(n ? n : 1);
    if (body == NULL || !append(e, head, h)) {
        free(body);
        e->store = false;
        return;
    }
    citadel__generate_chunk__pack(&copy, body);
    if (!append(e, body, n))
        e->store = false;
    free(body);
}

static void on_set(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    router_cache *c = privdata;
    redisReply *reply = r;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        metrics_counter_inc(c->err_error);
        log_msg(LOG_WARN, "", "cache: store failed: %s", reply ? reply->str : "connection lost");
    } else {
        metrics_counter_inc(c->stores);
    }
}

void router_cache_complete(router_cache *c, const char *request_id)
{
    entry *e = c && c->enabled ? find(c, request_id) : NULL;
    if (e == NULL)
        return;
    if (e->store && e->rec_len > 0 && c->connected) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        uint8_t tail[12];
        tail[0] = (2 << 3) | 0;   /* field 2 (stored_unix_ms), varint */
        size_t t = 1 + put_varint(tail + 1, (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000);
        if (append(e, tail, t) &&
            redisAsyncCommand(c->ac, on_set, c, "SET %s %b PX %lld", e->key, e->rec, e->rec_len,
                              (long long)c->cfg.ttl_s * 1000) != REDIS_OK)
            metrics_counter_inc(c->err_error);
    }
    drop_entry(c, e);
}

/* ---- time ------------------------------------------------------------------------- */

int router_cache_tick(router_cache *c, double now)
{
    if (c == NULL || !c->enabled)
        return -1;
    c->now = now;
    if (c->ac == NULL && now >= c->next_connect)
        connect_redis(c, now);
    else if (c->ac && !c->connected && now > c->connect_deadline)
        disconnect_redis(c, "connect timed out");
    /* Lookups past their deadline go on uncached; the reply, if it ever comes, is
     * dropped. Settling may free other entries, so restart from the list head. */
    for (lookup *l = c->waiting; l;) {
        if (now < l->deadline) {
            l = l->next;
            continue;
        }
        entry *e = l->e;
        unlink_waiting(c, l);
        l->e = NULL;
        e->lookup = NULL;
        metrics_counter_inc(c->err_timeout);
        c->consecutive_timeouts++;
        log_msg(LOG_WARN, e->request_id, "cache: no answer from Redis within %d ms: uncached", c->cfg.timeout_ms);
        settle(c, e, CACHE_BYPASS, NULL);
        l = c->waiting;
    }
    if (c->consecutive_timeouts >= TIMEOUTS_BEFORE_RECONNECT) {
        c->consecutive_timeouts = 0;
        disconnect_redis(c, "3 lookups in a row unanswered");
    }
    double next = c->ac ? (c->connected ? 1e9 : c->connect_deadline) : c->next_connect;
    for (lookup *l = c->waiting; l; l = l->next)
        if (l->deadline < next)
            next = l->deadline;
    if (next >= 1e9)
        return -1;
    double ms = (next - now) * 1000.0 + 1;
    return ms < 1 ? 1 : (int)ms;
}

/* ---- lifecycle -------------------------------------------------------------------- */

router_cache *router_cache_new(const router_cache_config *cfg, metrics_registry *reg)
{
    router_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->cfg = *cfg;
    const char *hit[] = {"result", "hit", NULL}, *miss[] = {"result", "miss", NULL}, *bypass[] = {"result", "bypass", NULL};
    c->hit = metrics_counter_new(reg, "cache_requests_total", "Requests by response cache outcome.", hit);
    c->miss = metrics_counter_new(reg, "cache_requests_total", "Requests by response cache outcome.", miss);
    c->bypass = metrics_counter_new(reg, "cache_requests_total", "Requests by response cache outcome.", bypass);
    c->stores = metrics_counter_new(reg, "cache_stores_total", "Answers stored in the response cache.", NULL);
    const char *down[] = {"reason", "down", NULL}, *timeout[] = {"reason", "timeout", NULL},
               *error[] = {"reason", "error", NULL}, *large[] = {"reason", "too_large", NULL},
               *corrupt[] = {"reason", "corrupt", NULL};
    const char *help = "Requests the cache could not serve as asked (they went on uncached).";
    c->err_down = metrics_counter_new(reg, "cache_errors_total", help, down);
    c->err_timeout = metrics_counter_new(reg, "cache_errors_total", help, timeout);
    c->err_error = metrics_counter_new(reg, "cache_errors_total", help, error);
    c->err_too_large = metrics_counter_new(reg, "cache_errors_total", help, large);
    c->err_corrupt = metrics_counter_new(reg, "cache_errors_total", help, corrupt);
    static const double bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1};
    c->lookup_seconds = metrics_histogram_new(reg, "cache_lookup_seconds", "Time for Redis to answer a lookup.", NULL,
                                              bounds, sizeof bounds / sizeof bounds[0]);
    /* The metrics exist (at 0) without a cache too: dashboards and alerts see the same
     * families on every router. */
    if (cfg->redis == NULL || cfg->redis[0] == '\0')
        return c;   /* disabled */
    const char *colon = strrchr(cfg->redis, ':');
    if (colon == NULL || colon == cfg->redis || (size_t)(colon - cfg->redis) >= sizeof c->host ||
        (c->port = atoi(colon + 1)) <= 0 || c->port > 65535) {
        log_msg(LOG_ERROR, "", "cache: router_cache_redis must be host:port, got '%s'", cfg->redis);
        free(c);
        return NULL;
    }
    memcpy(c->host, cfg->redis, (size_t)(colon - cfg->redis));
    c->enabled = true;
    return c;
}

void router_cache_free(router_cache *c)
{
    if (c == NULL)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        while (c->buckets[b]) {
            entry *e = c->buckets[b];
            c->buckets[b] = e->next;
            if (e->lookup)
                e->lookup->e = NULL;
            free(e->rec);
            free(e);
        }
    }
    c->waiting = NULL;
    if (c->ac)
        redisAsyncFree(c->ac);   /* the abandoned lookups get NULL replies and are freed */
    c->ac = NULL;
    free(c);
}
