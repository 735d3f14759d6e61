/* cache.h - the router's response cache in Redis (hiredis, asynchronous on the router's
 * poll loop), so that a repeated deterministic request is answered without a worker.
 *
 * What is cached: requests whose answer cannot change, temperature 0 or an explicit
 * seed; the client's Cache-Control no-cache skips the lookup (the fresh answer is still
 * stored) and no-store skips both. The key is
 *     citadel:cache:v1:<SHA-256 of the packed GenerateRequest>
 * with the fields that do not change the answer cleared first (request and key ids,
 * stream, priority, deadline, user, cache flags): so model, adapter, messages or prompt
 * and every sampling parameter are in it, and so is any field added to the message
 * later unless it is cleared here too. The messages are hashed as sent, not as rendered
 * tokens: the worker renders them with the model's template, a function of the model,
 * so the same messages always give the same tokens for a model name (a model replaced
 * under the same name needs a FLUSHDB or a new key version). The value is a
 * CachedResponse: the worker's chunks in order, replayed on a hit, streamed like the
 * original.
 *
 * Redis down or slow never fails a request: a lookup without an answer within
 * timeout_ms (50 ms), or while Redis is disconnected, goes on uncached ("bypass") and
 * is counted in citadel_router_cache_errors_total{reason}. The connection is retried
 * every second; a server that leaves 3 lookups in a row unanswered is disconnected.
 *
 * Life of a request (broker.c calls these, all on the router's thread):
 *   router_cache_begin      decides; for a lookup the answer comes to the callback
 *                           from router_cache_on_io or router_cache_tick
 *   router_cache_record     each chunk relayed from the worker (kept until done)
 *   router_cache_complete   the last chunk came: the answer is stored (TTL ttl_s)
 *   router_cache_forget     the request is gone, whatever ended it
 */
#ifndef CITADEL_ROUTER_CACHE_H
#define CITADEL_ROUTER_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "citadel.pb-c.h"
#include "metrics.h"

typedef struct router_cache router_cache;

typedef struct router_cache_config {
    const char *redis;          /* "host:port"; empty: no cache */
    int timeout_ms;             /* a lookup's answer must come within this */
    int ttl_s;                  /* entries expire after this */
    size_t max_entry_bytes;     /* larger answers are not stored */
} router_cache_config;

/* How a request relates to the cache; the words go to the client as x-citadel-cache. */
enum router_cache_outcome {
    CACHE_NONE,       /* no cache configured: "" */
    CACHE_HIT,        /* "hit": answered from Redis */
    CACHE_MISS,       /* "miss": looked up, not there; the answer will be stored */
    CACHE_BYPASS,     /* "bypass": not cacheable, skipped by Cache-Control, or Redis down/slow */
};
const char *router_cache_outcome_name(enum router_cache_outcome o);

/* A lookup's answer: hit with the stored response (borrowed for the call), or miss or
 * bypass with NULL. */
typedef void (*router_cache_fn)(void *arg, const char *request_id, enum router_cache_outcome outcome,
                                const Citadel__CachedResponse *cached);

/* NULL cfg->redis or "" gives a cache that does nothing (every outcome CACHE_NONE).
 * Connects lazily. Returns NULL only when out of memory or the address is malformed. */
router_cache *router_cache_new(const router_cache_config *cfg, metrics_registry *reg);
void router_cache_free(router_cache *c);

/* Whether req may be answered from the cache: deterministic (temperature 0 or
 * has_seed). Pure; tests use it. */
bool router_cache_cacheable(const Citadel__GenerateRequest *req);
/* The Redis key for req into out (at least 96 bytes). Pure; tests use it. */
void router_cache_key(const Citadel__GenerateRequest *req, char *out, size_t cap);

/* Starts on a new request. Returns CACHE_MISS when a lookup is under way (fn will be
 * called exactly once, later, unless router_cache_forget comes first), or the final
 * outcome (CACHE_NONE, CACHE_BYPASS) when there is nothing to wait for: then the
 * request goes to a worker at once. */
enum router_cache_outcome router_cache_begin(router_cache *c, const Citadel__GenerateRequest *req, double now,
                                             router_cache_fn fn, void *arg);
/* The outcome to tell the client for this request (CACHE_NONE when unknown). */
enum router_cache_outcome router_cache_outcome_of(router_cache *c, const char *request_id);
/* A chunk the worker sent for the request, in order. */
void router_cache_record(router_cache *c, const Citadel__GenerateChunk *chunk);
/* The request finished well (stop or length): store what was recorded, if it is to be
 * stored. Then forgets the request. */
void router_cache_complete(router_cache *c, const char *request_id);
/* Forgets the request (cancelled, failed, or done). Unknown ids are ignored. */
void router_cache_forget(router_cache *c, const char *request_id);

/* Poll integration: the fd to watch (-1: none) and the ZMQ_POLLIN/ZMQ_POLLOUT events
 * wanted; then router_cache_on_io with what zmq_poll returned. */
int router_cache_poll_fd(router_cache *c, short *events);
void router_cache_on_io(router_cache *c, short revents);
/* Timeouts and reconnection. Returns how many ms until it needs calling again at the
 * latest (for the poll timeout), or -1 when nothing is waiting. */
int router_cache_tick(router_cache *c, double now);

#endif
