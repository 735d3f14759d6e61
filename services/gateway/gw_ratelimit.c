/* gw_ratelimit.c - shared rate limits (see gw_ratelimit.h): two Lua scripts run by Redis
 * through hiredis's async API on the libevent loop, and the local fixed-window counters
 * used whenever Redis cannot answer in time. */
#include "gw_ratelimit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "gw_log.h"

#define WINDOW_SECONDS 60
#define LOCAL_BUCKETS 1024
#define RECONNECT_MS 1000
#define TIMEOUTS_BEFORE_DROP 3   /* consecutive unanswered requests: drop the connection */

/* Checks and counts one request. ARGV: key id, rpm, tpm (0 = no limit). Returns
 * {admitted 0/1, requests used, tokens used, seconds to the window's end, 1 requests
 * exceeded / 2 tokens exceeded / 0}. */
static const char ADMIT_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1])\n"
    "local window = now - now % 60\n"
    "local base = 'citadel:rl:v1:' .. ARGV[1] .. ':' .. window\n"
    "local rk, tk = base .. ':req', base .. ':tok'\n"
    "local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local used_r = tonumber(redis.call('GET', rk) or '0')\n"
    "local used_t = tonumber(redis.call('GET', tk) or '0')\n"
    "local reset = window + 60 - now\n"
    "if rpm > 0 and used_r >= rpm then return {0, used_r, used_t, reset, 1} end\n"
    "if tpm > 0 and used_t >= tpm then return {0, used_r, used_t, reset, 2} end\n"
    "used_r = redis.call('INCR', rk)\n"
    "redis.call('EXPIRE', rk, 120)\n"
    "return {1, used_r, used_t, reset, 0}\n";

/* Adds tokens to this minute. ARGV: key id, tokens. */
static const char CHARGE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1])\n"
    "local tk = 'citadel:rl:v1:' .. ARGV[1] .. ':' .. (now - now % 60) .. ':tok'\n"
    "local v = redis.call('INCRBY', tk, ARGV[2])\n"
    "redis.call('EXPIRE', tk, 120)\n"
    "return v\n";

/* One caller's local counters for one window; chained in a bucket of the table. */
typedef struct local_counter {
    char key_id[APIKEY_ID_MAX + 8];
    int64_t window;               /* unix seconds of the window's start */
    int64_t requests, tokens;
    struct local_counter *next;
} local_counter;

struct gw_ratelimit {
    struct event_base *base;
    char host[256];
    int port;                     /* 0: no Redis configured */
    int timeout_ms;
    int replicas;
    redisAsyncContext *ac;        /* NULL while disconnected */
    bool connected;               /* the connect callback said yes */
    bool was_up;                  /* for logging transitions once */
    bool closing;
    int timeouts_in_a_row;
    struct event *reconnect_timer;
    local_counter *buckets[LOCAL_BUCKETS];
};

/* One admission waiting for Redis. Freed by the Redis reply callback, which hiredis
 * always calls (with NULL when the connection goes away), never before. */
struct gw_ratelimit_ticket {
    gw_ratelimit *rl;
    gw_ratelimit_fn fn;
    void *arg;
    gw_principal who;
    struct event *timer;
    bool answered;                /* fn was called (or the caller cancelled) */
};

/* ---- local counters ------------------------------------------------------------------ */

static uint32_t hash_id(const char *s)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The caller's counter for window, reset when the window moved on; NULL when out of
 * memory (the caller is then admitted: failing open on a local table is the lesser
 * harm than refusing everyone). */
static local_counter *local_get(gw_ratelimit *rl, const char *key_id, int64_t window)
{
    local_counter **slot = &rl->buckets[hash_id(key_id) % LOCAL_BUCKETS];
    for (local_counter *c = *slot; c; c = c->next)
        if (strcmp(c->key_id, key_id) == 0) {
            if (c->window != window) {
                c->window = window;
                c->requests = c->tokens = 0;
            }
            return c;
        }
    local_counter *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    snprintf(c->key_id, sizeof c->key_id, "%s", key_id);
    c->window = window;
    c->next = *slot;
    *slot = c;
    return c;
}

/* limit / replicas, rounded up; 0 stays 0 (no limit). */
static int64_t local_share(const gw_ratelimit *rl, int64_t limit)
{
    return limit <= 0 ? 0 : (limit + rl->replicas - 1) / rl->replicas;
}

static int64_t remaining(int64_t limit, int64_t used)
{
    return limit <= 0 ? 0 : (used >= limit ? 0 : limit - used);
}

void gw_ratelimit_local_admit(gw_ratelimit *rl, const gw_principal *who, int64_t now, gw_rate_decision *d)
{
    int64_t window = now - now % WINDOW_SECONDS;
    int64_t rpm = local_share(rl, who->rpm), tpm = local_share(rl, who->tpm);
    *d = (gw_rate_decision){.allowed = true, .limit_requests = rpm, .limit_tokens = tpm,
                            .reset_seconds = (int)(window + WINDOW_SECONDS - now)};
    local_counter *c = local_get(rl, who->key_id, window);
    int64_t used_r = c ? c->requests : 0, used_t = c ? c->tokens : 0;
    if (rpm > 0 && used_r >= rpm) d->allowed = false, d->exceeded = "requests";
    else if (tpm > 0 && used_t >= tpm) d->allowed = false, d->exceeded = "tokens";
    else if (c) used_r = ++c->requests;
    d->remaining_requests = remaining(rpm, used_r);
    d->remaining_tokens = remaining(tpm, used_t);
}

static void local_charge(gw_ratelimit *rl, const gw_principal *who, int64_t tokens)
{
    int64_t now = (int64_t)time(NULL);
    local_counter *c = local_get(rl, who->key_id, now - now % WINDOW_SECONDS);
    if (c) c->tokens += tokens;
}

/* ---- Redis connection ---------------------------------------------------------------- */

static void schedule_reconnect(gw_ratelimit *rl)
{
    if (rl->closing || rl->reconnect_timer == NULL) return;
    struct timeval tv = {RECONNECT_MS / 1000, (RECONNECT_MS % 1000) * 1000};
    evtimer_add(rl->reconnect_timer, &tv);
}

static void note_down(gw_ratelimit *rl, const char *why)
{
    rl->ac = NULL;
    rl->connected = false;
    if (rl->was_up || why != NULL) {
        if (rl->was_up)
            gw_log(GW_LOG_WARN, NULL, "Redis %s:%d unavailable (%s): rate limits are local until it is back",
                   rl->host, rl->port, why ? why : "disconnected");
        rl->was_up = false;
        gw_metric_error("redis_down");
    }
    schedule_reconnect(rl);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    gw_ratelimit *rl = ac->data;
    if (rl == NULL || rl->closing) return;
    if (status != REDIS_OK) {
        note_down(rl, ac->errstr);   /* hiredis frees ac after this callback */
        return;
    }
    rl->connected = true;
    rl->timeouts_in_a_row = 0;
    if (!rl->was_up) gw_log(GW_LOG_INFO, NULL, "Redis %s:%d connected: rate limits are shared", rl->host, rl->port);
    rl->was_up = true;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    gw_ratelimit *rl = ac->data;
    if (rl == NULL || rl->closing) return;
    note_down(rl, NULL);
}

static void connect_redis(gw_ratelimit *rl)
{
    redisAsyncContext *ac = redisAsyncConnect(rl->host, rl->port);
    if (ac == NULL || ac->err) {
        if (ac) redisAsyncFree(ac);
        note_down(rl, "cannot connect");
        return;
    }
    ac->data = rl;
    if (redisLibeventAttach(ac, rl->base) != REDIS_OK) {
        redisAsyncFree(ac);
        note_down(rl, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rl->ac = ac;
    rl->connected = false;
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_ratelimit *rl = arg;
    if (rl->ac == NULL) connect_redis(rl);
}

/* Splits "redis://host:port" or "host:port" (default port 6379). 0 or -1. */
static int parse_address(const char *s, char *host, size_t hostsz, int *port)
{
    if (strncmp(s, "redis://", 8) == 0) s += 8;
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (hl == 0 || hl >= hostsz) return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    *port = 6379;
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end != '\0' || p < 1 || p > 65535) return -1;
        *port = (int)p;
    }
    return 0;
}

gw_ratelimit *gw_ratelimit_new(struct event_base *base, const gw_ratelimit_config *cfg, char *err, size_t errsz)
{
    gw_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    rl->base = base;
    rl->timeout_ms = cfg->redis_timeout_ms > 0 ? cfg->redis_timeout_ms : 100;
    rl->replicas = cfg->replicas > 0 ? cfg->replicas : 1;
    if (cfg->redis && cfg->redis[0]) {
        if (parse_address(cfg->redis, rl->host, sizeof rl->host, &rl->port) != 0) {
            snprintf(err, errsz, "bad Redis address '%.200s' (want host:port)", cfg->redis);
            free(rl);
            return NULL;
        }
        rl->reconnect_timer = evtimer_new(base, on_reconnect_timer, rl);
        connect_redis(rl);
    }
    return rl;
}

void gw_ratelimit_free(gw_ratelimit *rl)
{
    if (rl == NULL) return;
    rl->closing = true;
    if (rl->ac) redisAsyncFree(rl->ac);   /* runs every pending reply callback with NULL */
    if (rl->reconnect_timer) event_free(rl->reconnect_timer);
    for (size_t i = 0; i < LOCAL_BUCKETS; i++)
        for (local_counter *c = rl->buckets[i], *next; c; c = next) {
            next = c->next;
            free(c);
        }
    free(rl);
}

bool gw_ratelimit_shared(const gw_ratelimit *rl)
{
    return rl && rl->ac && rl->connected;
}

/* ---- admission -------------------------------------------------------------------------- */

/* Answers the ticket's caller with d, once. */
static void answer(gw_ratelimit_ticket *t, const gw_rate_decision *d)
{
    if (t->answered) return;
    t->answered = true;
    if (t->timer) evtimer_del(t->timer);
    t->fn(d, t->arg);
}

static void answer_locally(gw_ratelimit_ticket *t)
{
    gw_rate_decision d;
    gw_ratelimit_local_admit(t->rl, &t->who, (int64_t)time(NULL), &d);
    gw_metric_error("ratelimit_local_fallback");
    answer(t, &d);
}

/* The script's reply {admitted, used_r, used_t, reset, which} into d; 0 or -1. */
static int decode_admit(const redisReply *r, const gw_principal *who, gw_rate_decision *d)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5) return -1;
    for (size_t i = 0; i < 5; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER) return -1;
    int64_t used_r = r->element[1]->integer, used_t = r->element[2]->integer;
    *d = (gw_rate_decision){.allowed = r->element[0]->integer == 1, .limit_requests = who->rpm,
                            .limit_tokens = who->tpm, .remaining_requests = remaining(who->rpm, used_r),
                            .remaining_tokens = remaining(who->tpm, used_t),
                            .reset_seconds = (int)(r->element[3]->integer > 0 ? r->element[3]->integer : 1),
                            .shared = true};
    if (!d->allowed) d->exceeded = r->element[4]->integer == 2 ? "tokens" : "requests";
    return 0;
}

static void on_admit_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    gw_ratelimit_ticket *t = privdata;
    gw_ratelimit *rl = t->rl;
    if (!rl->closing && !t->answered) {
        gw_rate_decision d;
        if (decode_admit(reply, &t->who, &d) == 0) {
            rl->timeouts_in_a_row = 0;
            answer(t, &d);
        } else {
            const redisReply *r = reply;
            if (r && r->type == REDIS_REPLY_ERROR)
                gw_log(GW_LOG_WARN, NULL, "Redis rate-limit script failed: %.200s", r->str);
            answer_locally(t);
        }
    }
    if (t->timer) event_free(t->timer);
    free(t);
}

/* Redis did not answer in time: decide locally now; the reply, if it ever comes, is
 * ignored. Several in a row mean a dead link that TCP has not noticed: drop it. */
static void on_admit_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_ratelimit_ticket *t = arg;
    gw_ratelimit *rl = t->rl;
    answer_locally(t);
    if (++rl->timeouts_in_a_row >= TIMEOUTS_BEFORE_DROP && rl->ac) {
        gw_log(GW_LOG_WARN, NULL, "Redis %s:%d did not answer %d times: reconnecting", rl->host, rl->port,
               rl->timeouts_in_a_row);
        rl->timeouts_in_a_row = 0;
        redisAsyncDisconnect(rl->ac);   /* pending callbacks run with NULL; on_disconnect follows */
    }
}

int gw_ratelimit_admit(gw_ratelimit *rl, const gw_principal *who, gw_rate_decision *now,
                       gw_ratelimit_fn fn, void *arg, gw_ratelimit_ticket **ticket)
{
    *ticket = NULL;
    if (who->rpm <= 0 && who->tpm <= 0) {
        *now = (gw_rate_decision){.allowed = true, .reset_seconds = WINDOW_SECONDS};
        return 1;
    }
    if (!gw_ratelimit_shared(rl)) {
        gw_ratelimit_local_admit(rl, who, (int64_t)time(NULL), now);
        if (rl->port) gw_metric_error("ratelimit_local_fallback");
        return 1;
    }
    gw_ratelimit_ticket *t = calloc(1, sizeof *t);
    if (t == NULL) {
        gw_ratelimit_local_admit(rl, who, (int64_t)time(NULL), now);
        return 1;
    }
    *t = (gw_ratelimit_ticket){.rl = rl, .fn = fn, .arg = arg, .who = *who};
    t->timer = evtimer_new(rl->base, on_admit_timeout, t);
    char rpm[24], tpm[24];
    snprintf(rpm, sizeof rpm, "%" PRId64, who->rpm);
    snprintf(tpm, sizeof tpm, "%" PRId64, who->tpm);
    if (t->timer == NULL ||
        redisAsyncCommand(rl->ac, on_admit_reply, t, "EVAL %s 0 %s %s %s", ADMIT_SCRIPT, who->key_id, rpm, tpm) != REDIS_OK) {
        if (t->timer) event_free(t->timer);
        free(t);
        gw_ratelimit_local_admit(rl, who, (int64_t)time(NULL), now);
        return 1;
    }
    struct timeval tv = {rl->timeout_ms / 1000, (rl->timeout_ms % 1000) * 1000};
    evtimer_add(t->timer, &tv);
    *ticket = t;
    return 0;
}

void gw_ratelimit_cancel(gw_ratelimit_ticket *t)
{
    if (t == NULL) return;
    t->answered = true;     /* the reply callback still frees it */
    if (t->timer) evtimer_del(t->timer);
}

static void on_charge_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    (void)privdata;
    const redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) gw_log(GW_LOG_WARN, NULL, "Redis token charge failed: %.200s", r->str);
}

void gw_ratelimit_charge(gw_ratelimit *rl, const gw_principal *who, int64_t tokens)
{
    if (rl == NULL || tokens <= 0 || who->tpm <= 0) return;
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, tokens);
    if (!gw_ratelimit_shared(rl) ||
        redisAsyncCommand(rl->ac, on_charge_reply, NULL, "EVAL %s 0 %s %s", CHARGE_SCRIPT, who->key_id, n) != REDIS_OK)
        local_charge(rl, who, tokens);
}

size_t gw_ratelimit_headers(const gw_rate_decision *d, gw_header out[6], char *buf, size_t bufsz)
{
    size_t n = 0, used = 0;
#define PUT(hname, fmt, val)                                                              \
    do {                                                                                  \
        int w = snprintf(buf + used, bufsz - used, fmt, val);                             \
        if (w < 0 || (size_t)w >= bufsz - used) return n;                                 \
        out[n].name = hname;                                                              \
        out[n++].value = buf + used;                                                      \
        used += (size_t)w + 1;                                                            \
    } while (0)
    if (d->limit_requests > 0) {
        PUT("x-ratelimit-limit-requests", "%" PRId64, d->limit_requests);
        PUT("x-ratelimit-remaining-requests", "%" PRId64, d->remaining_requests);
        PUT("x-ratelimit-reset-requests", "%ds", d->reset_seconds);
    }
    if (d->limit_tokens > 0) {
        PUT("x-ratelimit-limit-tokens", "%" PRId64, d->limit_tokens);
        PUT("x-ratelimit-remaining-tokens", "%" PRId64, d->remaining_tokens);
    }
    if (!d->allowed) PUT("retry-after", "%d", d->reset_seconds > 0 ? d->reset_seconds : 1);
#undef PUT
    return n;
}
