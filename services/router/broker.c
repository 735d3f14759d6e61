/* broker.c - the router's handling of gateway and worker messages (see broker.h).
 *
 * Payloads are relayed as received; only the routing facts are decoded (router_wire.h).
 * A request keeps its bytes until its first chunk so that a worker dying before then
 * can be hidden from the client by sending the same bytes to another worker.
 */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "router_wire.h"

#define MAX_FRAMES 4   /* [identity][empty][type][payload] */

/* One received multipart message; frames past MAX_FRAMES are drained and counted. */
typedef struct frames {
    zmq_msg_t part[MAX_FRAMES];
    int n;
    bool too_many;
} frames;

static void frames_recv(void *sock, frames *f)
{
    f->n = 0;
    f->too_many = false;
    int more = 1;
    while (more) {
        zmq_msg_t tmp, *m = f->n < MAX_FRAMES ? &f->part[f->n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            zmq_msg_close(m);
            return;
        }
        more = zmq_msg_more(m);
        if (m == &tmp) {
            zmq_msg_close(m);
            f->too_many = true;
        } else {
            f->n++;
        }
    }
}

static void frames_close(frames *f)
{
    for (int i = 0; i < f->n; i++)
        zmq_msg_close(&f->part[i]);
}

static const void *frame_data(frames *f, int i) { return zmq_msg_data(&f->part[i]); }
static size_t frame_size(frames *f, int i) { return zmq_msg_size(&f->part[i]); }

/* Whether the frame holds exactly the text s. */
static bool frame_is(frames *f, int i, const char *s)
{
    size_t len = strlen(s);
    return frame_size(f, i) == len && memcmp(frame_data(f, i), s, len) == 0;
}

/* Sends [identity][empty][type][payload] without blocking. Returns 0, or -1 when the
 * peer is unknown (ROUTER_MANDATORY: EHOSTUNREACH) or its queue is full. */
static int send_to(void *sock, const void *id, size_t id_len, const char *type,
                   const void *payload, size_t len)
{
    if (zmq_send(sock, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /* Once the identity frame is accepted the rest of the message cannot fail. */
    zmq_send(sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(sock, type, strlen(type), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(sock, payload, len, ZMQ_DONTWAIT);
    return 0;
}

/* Answers a gateway with an Error the router made itself. */
static void reply_error(broker *b, const void *client, size_t client_len, const char *request_id,
                        enum wire_error_kind kind, const char *message)
{
    size_t len;
    uint8_t *buf = wire_pack_error(request_id, kind, message, &len);
    b->stats.errors++;
    log_msg(LOG_WARN, request_id, "error reply: %s", message);
    if (buf && send_to(b->frontend, client, client_len, WIRE_ERROR, buf, len))
        log_msg(LOG_WARN, request_id, "gateway gone, error not delivered");
    free(buf);
}

void broker_init(broker *b, void *frontend, void *backend)
{
    memset(b, 0, sizeof *b);
    b->frontend = frontend;
    b->backend = backend;
    registry_init(&b->workers);
    pending_init(&b->requests);
}

void broker_free(broker *b)
{
    pending_free(&b->requests);
}

/* The request is over (last chunk, error, or failure): forget it and free its worker. */
static void finish_request(broker *b, pending_request *p)
{
    registry_worker *w = registry_find(&b->workers, p->worker, p->worker_len);
    if (w && w->in_flight > 0)
        w->in_flight--;
    pending_remove(&b->requests, p);
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
            if (send_to(b->backend, w->id, w->id_len, WIRE_GENERATE_REQUEST, p->payload, p->payload_len) == 0) {
                w->in_flight++;
                b->stats.requests_routed++;
                log_msg(LOG_DEBUG, p->request_id, "routed to worker %.*s (attempt %d)", (int)w->id_len,
                        w->id, p->attempts);
                return;
            }
            log_msg(LOG_WARN, p->request_id, "worker %.*s unreachable, trying another", (int)w->id_len, w->id);
            continue;   /* it is now in tried[]: the next choice goes elsewhere */
        }
        enum wire_error_kind kind = WIRE_ERR_UNAVAILABLE;
        if (c == REGISTRY_NO_WORKERS)
            snprintf(msg, sizeof msg, "no workers available");
        else if (c == REGISTRY_NO_MODEL) {
            snprintf(msg, sizeof msg, "no worker serves model %s", p->model);
            kind = WIRE_ERR_NOT_FOUND;
        } else
            snprintf(msg, sizeof msg, "every worker serving model %s failed (%d attempts)", p->model, p->attempts);
        reply_error(b, p->client, p->client_len, p->request_id, kind, msg);
        pending_remove(&b->requests, p);
        return;
    }
}

static void on_generate_request(broker *b, frames *f, double now)
{
    char rid[PENDING_REQUEST_ID_MAX], model[PENDING_MODEL_MAX];
    const void *client = frame_data(f, 0);
    size_t client_len = frame_size(f, 0);
    if (wire_read_request(frame_data(f, 3), frame_size(f, 3), rid, sizeof rid, model, sizeof model)) {
        b->stats.bad_messages++;
        reply_error(b, client, client_len, "", WIRE_ERR_INVALID_ARGUMENT,
                    "undecodable GenerateRequest, or its request_id or model is missing or too long");
        return;
    }
    if (b->draining) {
        reply_error(b, client, client_len, rid, WIRE_ERR_UNAVAILABLE, "router is shutting down");
        return;
    }
    pending_request *p;
    switch (pending_add(&b->requests, rid, model, client, client_len, frame_data(f, 3), frame_size(f, 3), now, &p)) {
    case PENDING_ADDED: dispatch(b, p); return;
    case PENDING_DUPLICATE:
        reply_error(b, client, client_len, rid, WIRE_ERR_INVALID_ARGUMENT, "a request with this id is already in flight");
        return;
    case PENDING_FULL:
        reply_error(b, client, client_len, rid, WIRE_ERR_RESOURCE_EXHAUSTED, "too many requests in flight");
        return;
    case PENDING_BAD:
        reply_error(b, client, client_len, rid, WIRE_ERR_INVALID_ARGUMENT, "bad request id, model or identity");
        return;
    case PENDING_NOMEM:
        reply_error(b, client, client_len, rid, WIRE_ERR_INTERNAL, "out of memory");
        return;
    }
}

/* A Cancel goes to the worker holding the request. The request stays in the table
 * until the worker's last chunk (finish_reason "cancelled") so its in-flight count
 * stays right, but it is no longer retried. */
static void on_cancel(broker *b, frames *f)
{
    char rid[PENDING_REQUEST_ID_MAX];
    if (wire_read_cancel(frame_data(f, 3), frame_size(f, 3), rid, sizeof rid)) {
        b->stats.bad_messages++;
        reply_error(b, frame_data(f, 0), frame_size(f, 0), "", WIRE_ERR_INVALID_ARGUMENT, "undecodable Cancel");
        return;
    }
    pending_request *p = pending_find(&b->requests, rid);
    if (p == NULL || p->client_len != frame_size(f, 0) || memcmp(p->client, frame_data(f, 0), p->client_len)) {
        log_msg(LOG_DEBUG, rid, "cancel for no request in flight from this gateway");
        return;
    }
    p->cancelled = true;
    b->stats.cancels++;
    if (p->worker_len && send_to(b->backend, p->worker, p->worker_len, WIRE_CANCEL, frame_data(f, 3), frame_size(f, 3)))
        log_msg(LOG_WARN, rid, "cancel not delivered: worker gone");
    log_msg(LOG_INFO, rid, "cancelled by the gateway");
}

/* ModelsRequest: answer with every model a live worker announces, each once. */
static void on_models_request(broker *b, frames *f)
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
    size_t len;
    uint8_t *buf = wire_pack_model_list(names, n, &len);
    if (buf && send_to(b->frontend, frame_data(f, 0), frame_size(f, 0), WIRE_MODEL_LIST, buf, len))
        log_msg(LOG_DEBUG, "", "gateway gone, model list not delivered");
    free(buf);
}

void broker_on_frontend(broker *b, double now)
{
    frames f;
    frames_recv(b->frontend, &f);
    if (f.n == 0)
        return;
    if (f.n != 4 || f.too_many || frame_size(&f, 1) != 0) {
        b->stats.bad_messages++;
        log_msg(LOG_WARN, "", "frontend: badly framed message (%d frames), dropped", f.n);
        if (f.n >= 1 && frame_size(&f, 0) > 0)
            reply_error(b, frame_data(&f, 0), frame_size(&f, 0), "", WIRE_ERR_INVALID_ARGUMENT,
                        "expected frames [empty][type][payload]");
    } else if (frame_is(&f, 2, WIRE_GENERATE_REQUEST)) {
        on_generate_request(b, &f, now);
    } else if (frame_is(&f, 2, WIRE_CANCEL)) {
        on_cancel(b, &f);
    } else if (frame_is(&f, 2, WIRE_MODELS_REQUEST)) {
        on_models_request(b, &f);
    } else {
        b->stats.bad_messages++;
        char msg[128];
        snprintf(msg, sizeof msg, "unknown message type '%.*s'", (int)(frame_size(&f, 2) < 64 ? frame_size(&f, 2) : 64),
                 (const char *)frame_data(&f, 2));
        reply_error(b, frame_data(&f, 0), frame_size(&f, 0), "", WIRE_ERR_INVALID_ARGUMENT, msg);
    }
    frames_close(&f);
}

static void on_heartbeat(broker *b, frames *f, double now)
{
    wire_heartbeat hb;
    if (wire_read_heartbeat(frame_data(f, 3), frame_size(f, 3), &hb)) {
        b->stats.bad_messages++;
        log_msg(LOG_WARN, "", "backend: undecodable WorkerHeartbeat, dropped");
        return;
    }
    bool known = registry_find(&b->workers, frame_data(f, 0), frame_size(f, 0)) != NULL;
    if (registry_heartbeat(&b->workers, frame_data(f, 0), frame_size(f, 0), &hb.beat, now) == NULL)
        log_msg(LOG_WARN, "", "worker %s refused (bad identity or registry full)", hb.worker_id);
    else if (!known)
        log_msg(LOG_INFO, "", "worker %s joined (%d model(s), first: %s)", hb.worker_id, hb.beat.n_models,
                hb.beat.n_models ? hb.beat.models[0] : "-");
    wire_heartbeat_free(&hb);
}

/* A chunk or error from a worker: relay it to the gateway that asked, if the request
 * is still in flight on that worker (a late chunk from a worker already given up on
 * is dropped: the request is elsewhere by now). */
static void on_worker_reply(broker *b, frames *f, bool is_error)
{
    char rid[PENDING_REQUEST_ID_MAX];
    bool last = true;
    int rc = is_error ? wire_read_error(frame_data(f, 3), frame_size(f, 3), rid, sizeof rid)
                      : wire_read_chunk(frame_data(f, 3), frame_size(f, 3), rid, sizeof rid, &last);
    if (rc) {
        b->stats.bad_messages++;
        log_msg(LOG_WARN, "", "backend: undecodable %s, dropped", is_error ? "Error" : "GenerateChunk");
        return;
    }
    pending_request *p = pending_find(&b->requests, rid);
    if (p == NULL || !pending_on_worker(p, frame_data(f, 0), frame_size(f, 0))) {
        log_msg(LOG_DEBUG, rid, "reply for no request in flight on this worker, dropped");
        return;
    }
    if (!p->started)
        pending_mark_started(p);
    if (send_to(b->frontend, p->client, p->client_len, is_error ? WIRE_ERROR : WIRE_GENERATE_CHUNK,
                frame_data(f, 3), frame_size(f, 3)))
        log_msg(LOG_DEBUG, rid, "gateway gone, reply dropped");
    if (last || is_error)
        finish_request(b, p);
}

void broker_on_backend(broker *b, double now)
{
    frames f;
    frames_recv(b->backend, &f);
    if (f.n == 0)
        return;
    if (f.n != 4 || f.too_many || frame_size(&f, 1) != 0) {
        b->stats.bad_messages++;
        log_msg(LOG_WARN, "", "backend: badly framed message (%d frames), dropped", f.n);
    } else {
        /* Any well-framed message proves the worker alive, not only heartbeats. */
        registry_worker *w = registry_find(&b->workers, frame_data(&f, 0), frame_size(&f, 0));
        if (w)
            w->last_seen = now;
        if (frame_is(&f, 2, WIRE_HEARTBEAT))
            on_heartbeat(b, &f, now);
        else if (frame_is(&f, 2, WIRE_GENERATE_CHUNK))
            on_worker_reply(b, &f, false);
        else if (frame_is(&f, 2, WIRE_ERROR))
            on_worker_reply(b, &f, true);
        else {
            b->stats.bad_messages++;
            log_msg(LOG_WARN, "", "backend: unknown message type '%.*s', dropped",
                    (int)(frame_size(&f, 2) < 64 ? frame_size(&f, 2) : 64), (const char *)frame_data(&f, 2));
        }
    }
    frames_close(&f);
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
                b->stats.retries++;
                log_msg(LOG_WARN, p->request_id, "worker died before the first token, retrying elsewhere");
                dispatch(b, p);
            } else {
                reply_error(b, p->client, p->client_len, p->request_id, WIRE_ERR_UNAVAILABLE,
                            p->cancelled ? "cancelled" : "worker died during generation");
                pending_remove(&b->requests, p);
            }
        }
    }
}

void broker_tick(broker *b, double now)
{
    static dead_list dead;   /* static: too large for a comfortable stack frame */
    dead.n = 0;
    if (registry_expire(&b->workers, now, collect_dead, &dead) == 0)
        return;
    for (int i = 0; i < dead.n; i++) {
        b->stats.workers_died++;
        log_msg(LOG_WARN, "", "worker %.*s silent for %.0f s: dead", (int)dead.len[i], dead.id[i], REGISTRY_DEAD_AFTER);
        fail_over(b, dead.id[i], dead.len[i]);
    }
}
