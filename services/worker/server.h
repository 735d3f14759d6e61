/* server.h - the worker's serving loop: one engine session, one DEALER socket to the
 * router, requests served one at a time in arrival order.
 *
 * ZeroMQ sockets belong to one thread, and generation runs on this thread, so
 * everything the socket needs while a request is generating (heartbeats every second,
 * reading Cancels and newly queued requests) is done from the engine's per-token
 * callback. A Cancel for the running request stops it at the next token; a Cancel for
 * a queued one removes it. Each request ends with exactly one last message: a chunk
 * carrying finish_reason ("stop", "length", "cancelled") and usage, or an Error.
 */
#ifndef CITADEL_WORKER_SERVER_H
#define CITADEL_WORKER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "job_queue.h"

/* Counters the admin listener exports (citadel_worker_*). */
typedef struct server_stats {
    uint64_t requests_done, requests_failed, requests_cancelled;
    uint64_t tokens_generated, prompt_tokens, prompt_tokens_cached;
    uint64_t bad_messages;
    double busy_seconds;
} server_stats;

typedef struct server {
    void *sock;                 /* DEALER connected to the router backend (not owned) */
    engine_model *model;
    engine_session *session;    /* one session: its KV cache is reused across turns */
    const char *model_name;     /* what the worker announces and requests name */
    const char *worker_id;
    job_queue queue;
    server_stats stats;
    double next_heartbeat;      /* monotonic seconds */
    double heartbeat_interval;
    bool busy;
    bool draining;              /* SIGTERM: refuse new work, finish the current one */
    double drain_deadline;      /* past it, the current generation is cancelled */
    /* the request being generated */
    char current_id[JOB_ID_MAX];
    bool current_cancelled;
} server;

void server_init(server *s, void *sock, engine_model *m, engine_session *session,
                 const char *model_name, const char *worker_id);
void server_free(server *s);

/* Sends a heartbeat now if one is due. */
void server_heartbeat_if_due(server *s, double now);

/* Reads every message waiting on the socket without blocking: requests are queued,
 * Cancels applied. Safe to call from the token callback. */
void server_drain_socket(server *s);

/* Runs the oldest queued request to completion, if any. Returns whether one ran. */
bool server_run_next(server *s);

/* Starts draining: queued requests are answered with an Error, new ones refused, the
 * running one gets until deadline (monotonic seconds). */
void server_begin_drain(server *s, double deadline);

/* Monotonic seconds. */
double server_now(void);

#endif
