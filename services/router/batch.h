/* batch.h - the router's Kafka batch bridge: BatchRequests from topic
 * citadel.batch.requests (consumer group citadel-router-batch) become generations like
 * a gateway's, at low priority, and their answers become BatchResults on
 * citadel.batch.results (both keyed by request id), with an AuditEvent each.
 *
 * Low priority: a new batch request is started only while no interactive request is in
 * flight, and at most max_in_flight at once; interactive requests are never held back
 * (a batch request already running finishes).
 *
 * At least once, never lost: a request's Kafka offset is committed only after its
 * result was acknowledged by the brokers (acks=all), in offset order per partition. A
 * router that dies in between runs the request again after restart; BatchResult
 * consumers keep the first result per request id (`citadel batch results` does).
 *
 * broker.c routes the answers of batch requests here: they are in its pending table
 * under the client identity ROUTER_BATCH_CLIENT instead of a gateway's.
 */
#ifndef CITADEL_ROUTER_BATCH_H
#define CITADEL_ROUTER_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "citadel.pb-c.h"
#include "metrics.h"

/* The pending-table identity of batch requests: a leading zero byte, as ZeroMQ's own
 * generated identities have, but a length (7) they never have (5). */
#define ROUTER_BATCH_CLIENT "\0batch!"
#define ROUTER_BATCH_CLIENT_LEN 7

typedef struct router_batch router_batch;

typedef struct router_batch_config {
    const char *brokers;        /* empty: batch jobs off */
    const char *options;        /* more librdkafka settings, name=value,... */
    const char *group;          /* consumer group, "citadel-router-batch" */
    int max_in_flight;          /* batch requests running at once */
} router_batch_config;

/* Hands a request to the broker as if a gateway had sent it. Returns 0 when it was
 * taken (its answer will come to router_batch_on_chunk / _on_error), or -1 with why. */
typedef int (*router_batch_submit_fn)(void *arg, const Citadel__GenerateRequest *req, double now, char *why,
                                      size_t whysz);

/* NULL when off (no brokers) or on error (logged): the router runs without batch jobs. */
router_batch *router_batch_new(const router_batch_config *cfg, metrics_registry *reg);
/* Flushes the results still queued (up to timeout_ms) and stops. NULL-safe. */
void router_batch_free(router_batch *bt, int timeout_ms);

/* Whether a pending request's client identity is the batch bridge. */
bool router_batch_is_client(const void *client, size_t len);

/* Starts new batch requests when allowed (no interactive request among the
 * requests_in_flight, batch ones included; a free place), commits what is done. Call
 * every loop turn. NULL-safe. */
void router_batch_tick(router_batch *bt, double now, int requests_in_flight, router_batch_submit_fn submit,
                       void *arg);
/* Batch requests running now. */
int router_batch_in_flight(const router_batch *bt);

/* The answers of a batch request, as the broker gets them. */
void router_batch_on_chunk(router_batch *bt, const Citadel__GenerateChunk *chunk, double now);
void router_batch_on_error(router_batch *bt, const char *request_id, int code, const char *message, double now);

#endif
