/* broker.h - the router's message handling: what happens to each message that arrives
 * on the frontend (gateways) or the backend (workers), and on each tick.
 *
 * Sockets (both ROUTER, frames [identity][empty][type][payload], read and written
 * through common/envelope.h):
 *   frontend  gateways' DEALERs send GenerateRequest and Cancel, get back
 *             GenerateChunk streams and Error; a ModelsRequest gets a ModelList
 *   backend   workers' DEALERs send WorkerHeartbeat, GenerateChunk and Error, get
 *             GenerateRequest and Cancel
 * The broker owns the registry (registry.h), the requests in flight (pending.h) and
 * the drain counter (shutdown.h: one unit per request in flight); main.c owns the
 * sockets' lifetime, the poll loop and the metrics registry the broker reports into.
 */
#ifndef CITADEL_ROUTER_BROKER_H
#define CITADEL_ROUTER_BROKER_H

#include <stdbool.h>

#include "batch.h"
#include "cache.h"
#include "metrics.h"
#include "pending.h"
#include "registry.h"
#include "shutdown.h"

/* The broker's metrics (citadel_router_*); any handle may be NULL. */
typedef struct broker_metrics {
    metrics_counter *requests_routed;   /* GenerateRequests sent to a worker, retries included */
    metrics_counter *retries;           /* re-sends after a worker died before the first token */
    metrics_counter *errors;            /* Error replies the router made itself */
    metrics_counter *bad_messages;      /* unknown types, bad framing, undecodable payloads */
    metrics_counter *cancels;           /* Cancels passed on to a worker */
    metrics_counter *workers_died;      /* workers expired after 3 s of silence */
    metrics_counter *overload_retries;  /* requests a full worker refused, sent to another */
    metrics_counter *refused_overloaded;/* requests_refused_total{reason="overloaded"}: every worker full */
    metrics_gauge *workers_alive, *requests_in_flight;
    metrics_histogram *request_seconds; /* arrival to the last chunk or Error from a worker */
    metrics_histogram *ttft_seconds;    /* arrival to the first chunk relayed */
} broker_metrics;

typedef struct broker {
    void *frontend, *backend;   /* ZeroMQ ROUTER sockets (not owned) */
    registry workers;
    pending_table requests;
    broker_metrics metrics;
    shutdown_drain drain;       /* not accepting: refuse new requests, finish those in flight */
    router_cache *cache;        /* the response cache (cache.h); NULL: none. Set by main.c */
    router_batch *batch;        /* the Kafka batch bridge (batch.h); NULL: none. Set by main.c */
} broker;

/* Registers the broker's metrics in reg (may be NULL: no metrics). Returns 0, or -1
 * when the drain counter cannot be made. */
int broker_init(broker *b, void *frontend, void *backend, metrics_registry *reg);
void broker_free(broker *b);

/* Reads and handles one message from the frontend / backend socket without waiting.
 * Returns whether there was one. Never fails: bad messages are answered, logged and
 * counted. */
bool broker_on_frontend(broker *b, double now);
bool broker_on_backend(broker *b, double now);

/* Expires silent workers and retries or fails their requests, and updates the gauges.
 * Call every ~100 ms. */
void broker_tick(broker *b, double now);

/* A batch request from batch.h, admitted as if a gateway had sent it; its answers go
 * back to the batch bridge. Always 0: refusals come back as errors (router_batch_submit_fn). */
int broker_submit_batch(void *broker_ptr, const Citadel__GenerateRequest *req, double now, char *why, size_t whysz);

/* Stops taking new requests (SIGTERM); those in flight go on. */
void broker_begin_drain(broker *b);
/* Requests in flight. */
int broker_in_flight(broker *b);

#endif
