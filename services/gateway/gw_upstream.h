/* gw_upstream.h - the gateway's link to the router: one ZeroMQ DEALER socket driven by
 * the gateway's libevent loop, a table of in-flight generations keyed by request id,
 * and the first-answer deadline.
 *
 * gw_server.c submits a validated gw_request with a callback; the router's
 * GenerateChunks and Errors come back through that callback, already translated from
 * protobuf into gw_upstream_event (text, log-probabilities, finish reason, usage, or an
 * error mapped to an HTTP status). After a final event (finish_reason set, or an error)
 * the callback is never called again for that id. This is the only gateway module that
 * knows the wire format (proto/citadel.proto).
 *
 * ZeroMQ and libevent: ZMQ_FD is edge-triggered, so the read callback drains the socket
 * until ZMQ_EVENTS no longer reports ZMQ_POLLIN, and does the same after every send
 * (a send can consume the edge that announced incoming messages).
 */
#ifndef CITADEL_GW_UPSTREAM_H
#define CITADEL_GW_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "gw_openai.h"

typedef struct gw_upstream gw_upstream;

#define GW_DEADLINE_GRACE_MS 1000

enum gw_upstream_event_kind { GW_UP_CHUNK, GW_UP_ERROR };

struct Citadel__GenerateChunk;

/* One answer from the router for one request. Pointers are valid only during the
 * callback. */
typedef struct gw_upstream_event {
    enum gw_upstream_event_kind kind;
    const char *text;  size_t text_len;             /* GW_UP_CHUNK: new text */
    size_t n_tokens;                                /* the tokens behind text */
    const gw_token_logprob *logprobs;  size_t n_logprobs;
    const char *finish_reason;                      /* set on the last chunk only */
    bool has_usage;  gw_usage usage;
    gw_error error;                                 /* GW_UP_ERROR: status, message */
    const struct Citadel__GenerateChunk *wire;      /* GW_UP_CHUNK: the message itself (gRPC relays it) */
    const char *cache;                              /* first chunk: "hit", "miss", "bypass" or "" */
    const int32_t *token_ids;  size_t n_token_ids;  /* set by gw_sanitize's output filter (wire NULL): */
    const char *worker_id;                          /* the ids behind released text, who made it */
} gw_upstream_event;

typedef void (*gw_upstream_fn)(const gw_upstream_event *ev, void *arg);

typedef struct gw_upstream_config {
    const char *router_endpoint;     /* e.g. "tcp://127.0.0.1:5555" */
    int first_answer_timeout_ms;     /* no word from the router within this -> 503 */
    int request_deadline_ms;         /* whole generation by default; sent to the router too */
    int retry_after_s;               /* Retry-After of the 503 for an overloaded fleet */
} gw_upstream_config;

/* Connects (ZeroMQ connects lazily, so a router that is not up yet is fine) and
 * registers with base. Returns NULL with a message on failure. */
gw_upstream *gw_upstream_new(struct event_base *base, const gw_upstream_config *cfg,
                             char *err, size_t errsz);
void gw_upstream_free(gw_upstream *up);

/* Sends req as a GenerateRequest. fn(ev, arg) is called for each answer. Returns 0, or
 * -1 with e filled (503 when the router cannot take it now) and fn never called.
 * The request's deadline is req->deadline_ms from now when set and shorter than
 * cfg.request_deadline_ms, else the latter; it travels in the GenerateRequest so that
 * the worker ends the request there (504). The gateway's own timer waits
 * GW_DEADLINE_GRACE_MS longer, as a backstop for a worker that cannot answer. */
int gw_upstream_submit(gw_upstream *up, const gw_request *req, const char *request_id,
                       const char *key_id, gw_upstream_fn fn, void *arg, gw_error *e);

/* Sends Cancel for request_id and forgets it: its callback is never called again.
 * Unknown ids are ignored. */
void gw_upstream_cancel(gw_upstream *up, const char *request_id);

/* Requests in flight. */
size_t gw_upstream_in_flight(const gw_upstream *up);

/* Whether the router answered anything recently (for /health and /readyz). */
bool gw_upstream_router_seen(const gw_upstream *up);

/* The models the router last reported in a ModelList (asked for every second with a
 * ModelsRequest: the union of its live workers' heartbeats); *n may be 0 before the
 * first answer. */
const char *const *gw_upstream_models(const gw_upstream *up, size_t *n);

#endif
