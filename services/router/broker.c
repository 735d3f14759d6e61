/* broker.c - the router's handling of gateway and worker messages (see broker.h).
 *
 * Messages are read and written with common/envelope.h; the router reads only the
 * routing facts (request id, model, whether a chunk is the last one) from them and
 * passes the rest on unchanged. A request keeps its packed bytes until its first chunk
 * so that a worker dying before then can be hidden from the client by sending the same
 * bytes to another worker. The same bytes serve when a worker refuses a request as
 * OVERLOADED (its queue is full): the request goes to another worker of the model that
 * has not been tried yet, and only when there is none (or PENDING_MAX_ATTEMPTS workers
 * have refused) does the last refusal reach the gateway, which answers 503.
 */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "log.h"

#define ORIGIN "router"

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The route to one peer of a ROUTER socket: its identity, one hop. */
static envelope_route route_to(const void *id, size_t len)
{
    envelope_route r = {.n = 1};
    if (len > ENVELOPE_MAX_IDENTITY)
        len = ENVELOPE_MAX_IDENTITY;
    memcpy(r.id[0], id, len);
    r.len[0] = len;
    return r;
}

/* Copies s into out when it is non-empty and fits; the router refuses ids and names it
 * would otherwise have to truncate (they would stop matching). */
static int copy_field(const char *s, char *out, size_t cap)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= cap)
        return -1;
    memcpy(out, s, len + 1);
    return 0;
}

/* Answers a gateway with an Error the router made itself. */
static void reply_error(broker *b, const void *client, size_t client_len, const char *request_id,
                        Citadel__ErrorCode code, const char *message)
{
    metrics_counter_inc(b->metrics.errors);
    log_msg(LOG_WARN, request_id, "error reply: %s", message);
    if (router_batch_is_client(client, client_len)) {
        router_batch_on_error(b->batch, request_id, code, message, mono_now());
        return;
    }
    envelope_route to = route_to(client, client_len);
    if (envelope_reply_error(b->frontend, &to, request_id, code, ORIGIN, message, NULL, 0))
        log_msg(LOG_WARN, request_id, "gateway gone, error not delivered");
}

int broker_init(broker *b, void *frontend, void *backend, metrics_registry *reg)
{
    memset(b, 0, sizeof *b);
    b->frontend = frontend;
    b->backend = backend;
    registry_init(&b->workers);
    pending_init(&b->requests);
    broker_metrics *m = &b->metrics;
    m->requests_routed = metrics_counter_new(reg, "requests_routed_total",
                                             "GenerateRequests sent to a worker, retries included.", NULL);
    m->retries = metrics_counter_new(reg, "retries_total", "Re-sends after a worker died before the first token.", NULL);
    m->errors = metrics_counter_new(reg, "errors_total", "Error replies the router made itself.", NULL);
    m->bad_messages = metrics_counter_new(reg, "bad_messages_total",
                                          "Badly framed, unknown or undecodable messages received.", NULL);
    m->cancels = metrics_counter_new(reg, "cancels_total", "Cancels passed on to a worker.", NULL);
    m->workers_died = metrics_counter_new(reg, "workers_died_total", "Workers expired after 3 s of silence.", NULL);
    m->overload_retries = metrics_counter_new(reg, "overload_retries_total",
                                              "Requests a full worker refused, sent on to another worker.", NULL);
    static const char *const overloaded[] = {"reason", "overloaded", NULL};
    m->refused_overloaded = metrics_counter_new(reg, "requests_refused_total",
                                                "Requests refused back to the gateway, by reason.", overloaded);
    m->workers_alive = metrics_gauge_new(reg, "workers_alive", "Workers heard from in the last 3 s.", NULL);
    m->requests_in_flight = metrics_gauge_new(reg, "requests_in_flight", "Requests routed and not yet finished.", NULL);
    m->request_seconds = metrics_histogram_new(reg, "request_seconds",
                                               "Time from a GenerateRequest's arrival to its last chunk or Error.",
                                               NULL, NULL, 0);
    m->ttft_seconds = metrics_histogram_new(reg, "ttft_seconds",
                                            "Time from a GenerateRequest's arrival to its first chunk relayed.",
                                            NULL, NULL, 0);
    return shutdown_drain_init(&b->drain);
}

void broker_free(broker *b)
{
    pending_free(&b->requests);
    shutdown_drain_destroy(&b->drain);
}

void broker_begin_drain(broker *b) { shutdown_drain_stop_accepting(&b->drain); }
int broker_in_flight(broker *b) { return shutdown_drain_in_flight(&b->drain); }

/* Forgets a request, whatever ended it. */
static void drop_request(broker *b, pending_request *p)
{
    router_cache_forget(b->cache, p->request_id);
    pending_remove(&b->requests, p);
    shutdown_drain_leave(&b->drain);
}

/* The request is over (last chunk, error): forget it and free its worker. */
static void finish_request(broker *b, pending_request *p, double now)
{
    registry_worker *w = registry_find(&b->workers, p->worker, p->worker_len);
    if (w && w->in_flight > 0)
        w->in_flight--;
    metrics_histogram_observe(b->metrics.request_seconds, now - p->created);
    drop_request(b, p);
}

static bool already_tried(const registry_worker *w, void *user)
{
    return pending_tried(user, w->id, w->id_len);
}

/* Sends the request to the best worker not yet tried; on no worker, answers the
 * gateway with why and drops the request. */
static void dispatch(broker *b, pending_request *p)
{
    char msg[256];
    for (;;) {
        registry_worker *w;
        enum registry_choice c = registry_choose(&b->workers, p->model, already_tried, p, &w);
        if (c == REGISTRY_CHOSEN && pending_assign(p, w->id, w->id_len)) {
            envelope_route to = route_to(w->id, w->id_len);
            if (envelope_send_raw(b->backend, &to, envelope_type_name(ENVELOPE_GENERATE_REQUEST), p->payload,
                                  p->payload_len, NULL, 0) == ENVELOPE_OK) {
                w->in_flight++;
                metrics_counter_inc(b->metrics.requests_routed);
                log_msg(LOG_DEBUG, p->request_id, "routed to worker %.*s (attempt %d)", (int)w->id_len,
                        w->id, p->attempts);
                return;
            }
            log_msg(LOG_WARN, p->request_id, "worker %.*s unreachable, trying another", (int)w->id_len, w->id);
            continue;   /* it is now in tried[]: the next choice goes elsewhere */
        }
        Citadel__ErrorCode code = CITADEL__ERROR_CODE__UNAVAILABLE;
        if (c == REGISTRY_NO_WORKERS)
            snprintf(msg, sizeof msg, "no workers available");
        else if (c == REGISTRY_NO_MODEL) {
            snprintf(msg, sizeof msg, "no worker serves model %s", p->model);
            code = CITADEL__ERROR_CODE__NOT_FOUND;
        } else
            snprintf(msg, sizeof msg, "every worker serving model %s failed (%d attempts)", p->model, p->attempts);
        reply_error(b, p->client, p->client_len, p->request_id, code, msg);
        drop_request(b, p);
        return;
    }
}

/* A cache hit: the stored chunks go to the gateway as the worker once sent them, with
 * this request's id, the first saying "hit". */
static void replay_cached(broker *b, pending_request *p, const Citadel__CachedResponse *cached)
{
    envelope_route to = route_to(p->client, p->client_len);
    double now = mono_now();
    metrics_histogram_observe(b->metrics.ttft_seconds, now - p->created);
    pending_mark_started(p);
    for (size_t i = 0; i < cached->n_chunks; i++) {
        Citadel__GenerateChunk chunk = *cached->chunks[i];
        chunk.request_id = p->request_id;
        chunk.worker_id = "cache";
        chunk.cache = i == 0 ? "hit" : "";
        chunk.timings = NULL;   /* nothing was computed */
        if (router_batch_is_client(p->client, p->client_len))
            router_batch_on_chunk(b->batch, &chunk, now);
        else if (envelope_send(b->frontend, &to, &chunk.base, NULL, 0)) {
            log_msg(LOG_DEBUG, p->request_id, "gateway gone, cached reply dropped");
            break;
        }
    }
    log_msg(LOG_DEBUG, p->request_id, "answered from the cache (%zu chunks)", cached->n_chunks);
    finish_request(b, p, now);
}

/* The response cache's answer for a request that waited for it (cache.h). */
static void on_cache_answer(void *arg, const char *request_id, enum router_cache_outcome outcome,
                            const Citadel__CachedResponse *cached)
{
    broker *b = arg;
    pending_request *p = pending_find(&b->requests, request_id);
    if (p == NULL)
        return;
    if (p->cancelled)
        drop_request(b, p);
    else if (outcome == CACHE_HIT && cached)
        replay_cached(b, p, cached);
    else
        dispatch(b, p);
}

/* A GenerateRequest from a client (a gateway's identity, or the batch bridge's): into
 * the table, then to the cache or a worker; every refusal is answered. */
static void admit_request(broker *b, const Citadel__GenerateRequest *req, const void *client, size_t client_len,
                          double now)
{
    char rid[PENDING_REQUEST_ID_MAX], model[PENDING_MODEL_MAX];
    if (copy_field(req->request_id, rid, sizeof rid) || copy_field(req->model, model, sizeof model)) {
        metrics_counter_inc(b->metrics.bad_messages);
        reply_error(b, client, client_len, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                    "undecodable GenerateRequest, or its request_id or model is missing or too long");
        return;
    }
    if (!shutdown_drain_enter(&b->drain)) {
        reply_error(b, client, client_len, rid, CITADEL__ERROR_CODE__UNAVAILABLE, "router is shutting down");
        return;
    }
    /* The bytes to send, and to send again should the worker die before answering. */
    size_t len = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *payload = malloc(len ? len : 1);
    pending_request *p;
    enum pending_add_result r = PENDING_NOMEM;
    if (payload) {
        protobuf_c_message_pack(&req->base, payload);
        r = pending_add(&b->requests, rid, model, client, client_len, payload, len, now, &p);
        free(payload);
    }
    if (r == PENDING_ADDED) {
        /* A lookup in the response cache first, when it may hold the answer. */
        if (router_cache_begin(b->cache, req, now, on_cache_answer, b) != CACHE_MISS)
            dispatch(b, p);
        return;
    }
    shutdown_drain_leave(&b->drain);
    switch (r) {
    case PENDING_ADDED: break;
    case PENDING_DUPLICATE:
        reply_error(b, client, client_len, rid, CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                    "a request with this id is already in flight");
        break;
    case PENDING_FULL:
        reply_error(b, client, client_len, rid, CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED, "too many requests in flight");
        break;
    case PENDING_BAD:
        reply_error(b, client, client_len, rid, CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                    "bad request id, model or identity");
        break;
    case PENDING_NOMEM:
        reply_error(b, client, client_len, rid, CITADEL__ERROR_CODE__INTERNAL, "out of memory");
        break;
    }
}

static void on_generate_request(broker *b, const envelope *env, double now)
{
    admit_request(b, (const Citadel__GenerateRequest *)env->msg, env->route.id[0], env->route.len[0], now);
}

int broker_submit_batch(void *broker_ptr, const Citadel__GenerateRequest *req, double now, char *why, size_t whysz)
{
    (void)why;
    (void)whysz;
    admit_request(broker_ptr, req, ROUTER_BATCH_CLIENT, ROUTER_BATCH_CLIENT_LEN, now);
    return 0;
}

/* A Cancel goes to the worker holding the request. The request stays in the table
 * until the worker's last chunk (finish_reason "cancelled") so its in-flight count
 * stays right, but it is no longer retried. */
static void on_cancel(broker *b, const envelope *env)
{
    const Citadel__Cancel *cancel = (const Citadel__Cancel *)env->msg;
    char rid[PENDING_REQUEST_ID_MAX];
    if (copy_field(cancel->request_id, rid, sizeof rid)) {
        metrics_counter_inc(b->metrics.bad_messages);
        reply_error(b, env->route.id[0], env->route.len[0], "", CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                    "undecodable Cancel");
        return;
    }
    pending_request *p = pending_find(&b->requests, rid);
    if (p == NULL || p->client_len != env->route.len[0] || memcmp(p->client, env->route.id[0], p->client_len)) {
        log_msg(LOG_DEBUG, rid, "cancel for no request in flight from this gateway");
        return;
    }
    p->cancelled = true;
    metrics_counter_inc(b->metrics.cancels);
    envelope_route to = route_to(p->worker, p->worker_len);
    if (p->worker_len && envelope_send(b->backend, &to, env->msg, NULL, 0))
        log_msg(LOG_WARN, rid, "cancel not delivered: worker gone");
    log_msg(LOG_INFO, rid, "cancelled by the gateway");
}

/* ModelsRequest: answer with every model a live worker announces, each once. */
static void on_models_request(broker *b, const envelope *env)
{
    static const char *names[REGISTRY_MAX_WORKERS * REGISTRY_MAX_MODELS];
    size_t n = 0;
    for (int i = 0; i < b->workers.n_workers; i++) {
        const registry_worker *w = &b->workers.workers[i];
        for (int j = 0; j < w->n_models; j++) {
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = strcmp(names[k], w->models[j]) == 0;
            if (!seen)
                names[n++] = w->models[j];
        }
    }
    Citadel__ModelList list = CITADEL__MODEL_LIST__INIT;
    list.models = (char **)names;
    list.n_models = n;
    if (envelope_send(b->frontend, &env->route, &list.base, NULL, 0))
        log_msg(LOG_DEBUG, "", "gateway gone, model list not delivered");
}

bool broker_on_frontend(broker *b, double now)
{
    envelope env;
    char err[256];
    int rc = envelope_recv(b->frontend, 0, &env, err, sizeof err);
    if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO) {
        envelope_free(&env);
        return false;
    }
    /* A gateway's DEALER gives exactly one identity frame. */
    if (rc != ENVELOPE_ERR_FRAMING && env.route.n != 1) {
        rc = ENVELOPE_ERR_FRAMING;
        snprintf(err, sizeof err, "bad framing: %d identity frames", env.route.n);
    }
    bool can_reply = env.route.n >= 1 && env.route.len[0] > 0;
    if (rc == ENVELOPE_ERR_FRAMING) {
        metrics_counter_inc(b->metrics.bad_messages);
        log_msg(LOG_WARN, "", "frontend: %s, dropped", err);
        if (can_reply)
            reply_error(b, env.route.id[0], env.route.len[0], "", CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                        "expected frames [empty][type][payload]");
    } else if (rc == ENVELOPE_ERR_DECODE) {
        metrics_counter_inc(b->metrics.bad_messages);
        reply_error(b, env.route.id[0], env.route.len[0], "", CITADEL__ERROR_CODE__INVALID_ARGUMENT,
                    env.type == ENVELOPE_GENERATE_REQUEST
                        ? "undecodable GenerateRequest, or its request_id or model is missing or too long"
                        : err);
    } else if (rc == ENVELOPE_OK && env.type == ENVELOPE_GENERATE_REQUEST) {
        on_generate_request(b, &env, now);
    } else if (rc == ENVELOPE_OK && env.type == ENVELOPE_CANCEL) {
        on_cancel(b, &env);
    } else if (rc == ENVELOPE_OK && env.type == ENVELOPE_MODELS_REQUEST) {
        on_models_request(b, &env);
    } else {   /* an unknown type, or one a gateway has no business sending */
        metrics_counter_inc(b->metrics.bad_messages);
        char msg[128];
        snprintf(msg, sizeof msg, "unknown message type '%s'", env.type_name);
        reply_error(b, env.route.id[0], env.route.len[0], "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, msg);
    }
    envelope_free(&env);
    return true;
}

static void on_heartbeat(broker *b, const envelope *env, double now)
{
    const Citadel__WorkerHeartbeat *m = (const Citadel__WorkerHeartbeat *)env->msg;
    registry_beat beat = {
        .models = (const char *const *)m->models,
        .n_models = m->n_models > REGISTRY_MAX_MODELS ? REGISTRY_MAX_MODELS : (int)m->n_models,
        .free_slots = m->free_slots,
        .queue_depth = m->queue_depth,
        .load = m->load,
    };
    const char *worker_id = m->worker_id ? m->worker_id : "";
    const void *id = env->route.id[0];
    size_t id_len = env->route.len[0];
    bool known = registry_find(&b->workers, id, id_len) != NULL;
    if (registry_heartbeat(&b->workers, id, id_len, &beat, now) == NULL)
        log_msg(LOG_WARN, "", "worker %.64s refused (bad identity or registry full)", worker_id);
    else if (!known)
        log_msg(LOG_INFO, "", "worker %.64s joined (%d model(s), first: %s)", worker_id, beat.n_models,
                beat.n_models ? beat.models[0] : "-");
}

/* A worker refused p as OVERLOADED before starting it. Sends p to another worker of its
 * model not tried yet and returns true; returns false (the refusal goes to the
 * gateway) when there is none, the attempts are used up, or the client cancelled. */
static bool retry_overloaded(broker *b, pending_request *p)
{
    registry_worker *next;
    if (!pending_can_retry(p) ||
        registry_choose(&b->workers, p->model, already_tried, p, &next) != REGISTRY_CHOSEN)
        return false;
    registry_worker *full = registry_find(&b->workers, p->worker, p->worker_len);
    if (full && full->in_flight > 0)
        full->in_flight--;
    log_msg(LOG_INFO, p->request_id, "worker %.*s overloaded, trying %.*s", (int)p->worker_len, p->worker,
            (int)next->id_len, next->id);
    p->worker_len = 0;
    metrics_counter_inc(b->metrics.overload_retries);
    dispatch(b, p);
    return true;
}

/* A chunk or error from a worker: relay it to the gateway that asked, if the request
 * is still in flight on that worker (a late chunk from a worker already given up on
 * is dropped: the request is elsewhere by now). */
static void on_worker_reply(broker *b, const envelope *env, double now)
{
    bool is_error = env->type == ENVELOPE_ERROR;
    const char *request_id;
    bool last = true;
    if (is_error) {
        request_id = ((const Citadel__Error *)env->msg)->request_id;
    } else {
        const Citadel__GenerateChunk *c = (const Citadel__GenerateChunk *)env->msg;
        request_id = c->request_id;
        last = c->finish_reason && c->finish_reason[0] != '\0';
    }
    char rid[PENDING_REQUEST_ID_MAX];
    if (copy_field(request_id, rid, sizeof rid)) {
        metrics_counter_inc(b->metrics.bad_messages);
        log_msg(LOG_WARN, "", "backend: %s without a usable request_id, dropped", env->type_name);
        return;
    }
    pending_request *p = pending_find(&b->requests, rid);
    if (p == NULL || !pending_on_worker(p, env->route.id[0], env->route.len[0])) {
        log_msg(LOG_DEBUG, rid, "reply for no request in flight on this worker, dropped");
        return;
    }
    if (is_error && ((const Citadel__Error *)env->msg)->code == CITADEL__ERROR_CODE__OVERLOADED && !p->started) {
        if (retry_overloaded(b, p))
            return;
        metrics_counter_inc(b->metrics.refused_overloaded);
        log_msg(LOG_WARN, rid, "every worker tried is overloaded, refusal passed to the gateway");
    }
    Citadel__GenerateChunk *chunk = is_error ? NULL : (Citadel__GenerateChunk *)env->msg;
    char *cache_was = chunk ? chunk->cache : NULL;
    if (chunk)
        router_cache_record(b->cache, chunk);
    if (!p->started) {
        pending_mark_started(p);
        if (!is_error)
            metrics_histogram_observe(b->metrics.ttft_seconds, now - p->created);
        if (chunk)   /* the client learns the cache outcome from the first chunk */
            chunk->cache = (char *)router_cache_outcome_name(router_cache_outcome_of(b->cache, rid));
    }
    envelope_route to = route_to(p->client, p->client_len);
    if (router_batch_is_client(p->client, p->client_len)) {
        if (chunk)
            router_batch_on_chunk(b->batch, chunk, now);
        else {
            const Citadel__Error *e = (const Citadel__Error *)env->msg;
            router_batch_on_error(b->batch, rid, e->code, e->message, now);
        }
    } else if (envelope_send(b->frontend, &to, env->msg, NULL, 0))
        log_msg(LOG_DEBUG, rid, "gateway gone, reply dropped");
    if (chunk)
        chunk->cache = cache_was;   /* the message's own string, freed with it */
    if (last && chunk && (strcmp(chunk->finish_reason, "stop") == 0 || strcmp(chunk->finish_reason, "length") == 0))
        router_cache_complete(b->cache, rid);
    if (last || is_error)
        finish_request(b, p, now);
}

bool broker_on_backend(broker *b, double now)
{
    envelope env;
    char err[256];
    int rc = envelope_recv(b->backend, 0, &env, err, sizeof err);
    if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO) {
        envelope_free(&env);
        return false;
    }
    if (rc != ENVELOPE_ERR_FRAMING && env.route.n != 1) {
        rc = ENVELOPE_ERR_FRAMING;
        snprintf(err, sizeof err, "bad framing: %d identity frames", env.route.n);
    }
    if (rc == ENVELOPE_ERR_FRAMING) {
        metrics_counter_inc(b->metrics.bad_messages);
        log_msg(LOG_WARN, "", "backend: %s, dropped", err);
    } else {
        /* Any well-framed message proves the worker alive, not only heartbeats. */
        registry_worker *w = registry_find(&b->workers, env.route.id[0], env.route.len[0]);
        if (w)
            w->last_seen = now;
        if (rc != ENVELOPE_OK) {
            metrics_counter_inc(b->metrics.bad_messages);
            log_msg(LOG_WARN, "", "backend: %s, dropped", err);
        } else if (env.type == ENVELOPE_WORKER_HEARTBEAT) {
            on_heartbeat(b, &env, now);
        } else if (env.type == ENVELOPE_GENERATE_CHUNK || env.type == ENVELOPE_ERROR) {
            on_worker_reply(b, &env, now);
        } else {
            metrics_counter_inc(b->metrics.bad_messages);
            log_msg(LOG_WARN, "", "backend: unexpected message type '%s', dropped", env.type_name);
        }
    }
    envelope_free(&env);
    return true;
}

/* Identities of workers that expired in this tick, collected first so that retries
 * run against a registry that no longer lists them. */
typedef struct dead_list {
    char id[REGISTRY_MAX_WORKERS][REGISTRY_ID_MAX];
    size_t len[REGISTRY_MAX_WORKERS];
    int n;
} dead_list;

static void collect_dead(const registry_worker *w, void *user)
{
    dead_list *d = user;
    memcpy(d->id[d->n], w->id, w->id_len);
    d->len[d->n++] = w->id_len;
}

/* The worker is gone: requests that had not started go to another worker; the others
 * end with an error, since part of their answer already reached the client. */
static void fail_over(broker *b, const void *id, size_t id_len)
{
    pending_request *list[64];
    int n;
    while ((n = pending_on_worker_list(&b->requests, id, id_len, list, 64)) > 0) {
        int k = n < 64 ? n : 64;
        for (int i = 0; i < k; i++) {
            pending_request *p = list[i];
            p->worker_len = 0;   /* no longer on the dead worker, whatever happens next */
            if (pending_can_retry(p)) {
                metrics_counter_inc(b->metrics.retries);
                log_msg(LOG_WARN, p->request_id, "worker died before the first token, retrying elsewhere");
                dispatch(b, p);
            } else {
                reply_error(b, p->client, p->client_len, p->request_id, CITADEL__ERROR_CODE__UNAVAILABLE,
                            p->cancelled ? "cancelled" : "worker died during generation");
                drop_request(b, p);
            }
        }
    }
}

void broker_tick(broker *b, double now)
{
    static dead_list dead;   /* static: too large for a comfortable stack frame */
    dead.n = 0;
    if (registry_expire(&b->workers, now, collect_dead, &dead) > 0) {
        for (int i = 0; i < dead.n; i++) {
            metrics_counter_inc(b->metrics.workers_died);
            log_msg(LOG_WARN, "", "worker %.*s silent for %.0f s: dead", (int)dead.len[i], dead.id[i],
                    REGISTRY_DEAD_AFTER);
            fail_over(b, dead.id[i], dead.len[i]);
        }
    }
    metrics_gauge_set(b->metrics.workers_alive, b->workers.n_workers);
    metrics_gauge_set(b->metrics.requests_in_flight, b->requests.n);
}
