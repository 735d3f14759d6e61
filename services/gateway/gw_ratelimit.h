/* gw_ratelimit.h - requests-per-minute and tokens-per-minute limits per caller, shared
 * by every gateway replica through Redis, with a local fallback when Redis is down.
 *
 * Windows are fixed minutes of Redis's clock (TIME inside the script, so replicas with
 * skewed clocks still share one window). One Lua script does the check and the count
 * atomically: a request is admitted when the caller's requests in this minute are below
 * its rpm and its tokens below its tpm, and only an admitted request is counted. The
 * tokens a generation used (prompt + completion, known at its end) are added afterwards
 * by gw_ratelimit_charge, so a long generation can take a caller past its tpm once; the
 * next request is then refused until the minute ends. Keys:
 *     citadel:rl:v1:<key_id>:<window start>:req   and   …:tok     (expire after 120 s)
 *
 * Redis is reached with hiredis's async API on the gateway's libevent loop: nothing
 * blocks. When Redis is not connected, or does not answer within redis_timeout_ms, the
 * decision is made locally, from in-process counters of the same shape, each replica
 * allowing limit / replicas (rounded up): the fleet-wide limit still holds when every
 * replica sees an equal share, and one replica never lets more than its share through.
 * The connection is retried every second; transitions are logged once.
 *
 * A caller with neither limit (rpm = tpm = 0) is admitted without asking Redis.
 */
#ifndef CITADEL_GW_RATELIMIT_H
#define CITADEL_GW_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "gw_auth.h"

typedef struct gw_ratelimit gw_ratelimit;
typedef struct gw_ratelimit_ticket gw_ratelimit_ticket;

typedef struct gw_ratelimit_config {
    const char *redis;          /* "host:port" or "redis://host:port"; "" = local only */
    int redis_timeout_ms;       /* no answer within this -> decide locally */
    int replicas;               /* the local fallback allows limit / replicas */
} gw_ratelimit_config;

/* One admission decision and what the x-ratelimit-* headers report. */
typedef struct gw_rate_decision {
    bool allowed;
    const char *exceeded;               /* "requests" or "tokens" when refused */
    int64_t limit_requests, remaining_requests;   /* limit 0: no request limit */
    int64_t limit_tokens, remaining_tokens;       /* limit 0: no token limit */
    int reset_seconds;                  /* until the window ends (Retry-After), >= 1 */
    bool shared;                        /* decided by Redis (false: locally) */
} gw_rate_decision;

typedef void (*gw_ratelimit_fn)(const gw_rate_decision *d, void *arg);

/* Starts connecting to Redis (when configured) on base. NULL with a message on a bad
 * address or out of memory; a Redis that is not up yet is not an error. */
gw_ratelimit *gw_ratelimit_new(struct event_base *base, const gw_ratelimit_config *cfg,
                               char *err, size_t errsz);

/* Frees the limiter; tickets still waiting are dropped without their callback. */
void gw_ratelimit_free(gw_ratelimit *rl);

/* Asks whether who may start a request now. Returns 1 when decided at once (no limits,
 * or Redis not connected): *now holds the decision and fn is never called. Returns 0
 * when Redis was asked: *ticket is set and fn(decision, arg) is called exactly once
 * later, from the event loop, unless gw_ratelimit_cancel(*ticket) comes first. */
int gw_ratelimit_admit(gw_ratelimit *rl, const gw_principal *who, gw_rate_decision *now,
                       gw_ratelimit_fn fn, void *arg, gw_ratelimit_ticket **ticket);

/* The caller no longer wants the answer (client gone): fn will not be called. */
void gw_ratelimit_cancel(gw_ratelimit_ticket *t);

/* Adds the tokens a finished request used to who's current minute. */
void gw_ratelimit_charge(gw_ratelimit *rl, const gw_principal *who, int64_t tokens);

/* Whether Redis is connected now. */
bool gw_ratelimit_shared(const gw_ratelimit *rl);

/* The response headers for d: up to 6 name/value pairs (x-ratelimit-limit-requests,
 * x-ratelimit-remaining-requests, x-ratelimit-limit-tokens,
 * x-ratelimit-remaining-tokens, x-ratelimit-reset-requests, and retry-after when
 * refused), only for the limits who has. Names are constants; values are written into
 * buf (at least 6 * 24 bytes). Returns the number of pairs. */
typedef struct gw_header { const char *name; const char *value; } gw_header;
size_t gw_ratelimit_headers(const gw_rate_decision *d, gw_header out[6], char *buf, size_t bufsz);

/* ---- the local counters, exposed for tests ---------------------------------------- */

/* The local decision for who at unix time now (the same rules as the script, with
 * limits divided by replicas), counting the request when admitted. */
void gw_ratelimit_local_admit(gw_ratelimit *rl, const gw_principal *who, int64_t now,
                              gw_rate_decision *d);

#endif
