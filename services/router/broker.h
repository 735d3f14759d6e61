/* broker.h - the router's message handling: what happens to each message that arrives
 * on the frontend (gateways) or the backend (workers), and on each tick.
 *
 * Sockets (both ROUTER, frames [identity][empty][type][payload]):
 *   frontend  gateways' DEALERs send GenerateRequest and Cancel, get back
 *             GenerateChunk streams and Error; a ModelsRequest gets a ModelList
 *   backend   workers' DEALERs send WorkerHeartbeat, GenerateChunk and Error, get
 *             GenerateRequest and Cancel
 * The broker owns the registry (registry.h) and the requests in flight (pending.h);
 * main.c owns the sockets' lifetime, the poll loop, metrics export and drain.
 */
#ifndef CITADEL_ROUTER_BROKER_H
#define CITADEL_ROUTER_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "pending.h"
#include "registry.h"

/* Counters the admin listener exports (citadel_router_*). */
typedef struct broker_stats {
    uint64_t requests_routed;   /* GenerateRequests sent to a worker, retries included */
    uint64_t retries;           /* re-sends after a worker died before the first token */
    uint64_t errors;            /* Error replies the router made itself */
    uint64_t bad_messages;      /* unknown types, bad framing, undecodable payloads */
    uint64_t cancels;           /* Cancels passed on to a worker */
    uint64_t workers_died;      /* workers expired after 3 s of silence */
} broker_stats;

typedef struct broker {
    void *frontend, *backend;   /* ZeroMQ ROUTER sockets (not owned) */
    registry workers;
    pending_table requests;
    broker_stats stats;
    bool draining;              /* refuse new requests, finish those in flight */
} broker;

void broker_init(broker *b, void *frontend, void *backend);
void broker_free(broker *b);

/* Reads and handles one message from the frontend / backend socket (call when poll
 * says it is readable). Never fails: bad messages are answered, logged and counted. */
void broker_on_frontend(broker *b, double now);
void broker_on_backend(broker *b, double now);

/* Expires silent workers and retries or fails their requests. Call every ~100 ms. */
void broker_tick(broker *b, double now);

#endif
