/* server.h - the worker's serving loop: one DEALER socket to the router, and an
 * engine batch (continuous batching) that serves up to max_seqs requests at once.
 *
 * ZeroMQ sockets belong to one thread, and generation runs on this thread, so the loop
 * alternates: read the socket (queue requests, apply Cancels, heartbeat), admit queued
 * requests into the batch while it has room, run one batch step (one token for every
 * generating request, prompt chunks for the others). Requests beyond max_seqs wait in
 * arrival order, within the bounds admission.h sets (beyond them a request is refused
 * with OVERLOADED); a request whose deadline passes while it waits is answered with
 * DEADLINE_EXCEEDED, and one whose deadline passes while it runs is ended the same way.
 * A Cancel for a running request ends it at the next step; for a queued one it removes
 * it. Each request ends with exactly one last message: a chunk carrying finish_reason
 * ("stop", "length", "cancelled") and usage, or an Error.
 */
#ifndef CITADEL_WORKER_SERVER_H
#define CITADEL_WORKER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "adapters.h"
#include "admission.h"
#include "engine.h"
#include "job_queue.h"
#include "metrics.h"
#include "shutdown.h"
#include "tp_group.h"

/* Why a request was refused without ever running; each is logged and counted in
 * citadel_worker_requests_refused_total{reason} under server_refused_reason(). */
enum server_refused {
    SERVER_REFUSED_PROMPT_TOO_LONG,   /* 400: the prompt leaves no room in the context */
    SERVER_REFUSED_QUEUE_REQUESTS,    /* overloaded: max_queued_requests */
    SERVER_REFUSED_QUEUE_TOKENS,      /* overloaded: max_queued_tokens */
    SERVER_REFUSED_DEADLINE,          /* 504: its deadline passed before it could start */
    SERVER_REFUSED_INVALID,           /* 400: bad parameters, untokenizable prompt */
    SERVER_REFUSED_UNKNOWN_MODEL,     /* 404 */
    SERVER_REFUSED_SHUTTING_DOWN,     /* 503: draining */
    SERVER_REFUSED_N
};
const char *server_refused_reason(enum server_refused r);

/* The worker's metrics (citadel_worker_*); any handle may be NULL. */
typedef struct server_metrics {
    metrics_counter *requests_done, *requests_failed, *requests_cancelled;   /* requests_total{outcome} */
    metrics_counter *tokens_generated, *prompt_tokens, *prompt_tokens_cached;
    metrics_counter *bad_messages;
    metrics_counter *busy_seconds;
    metrics_gauge *busy, *running_requests, *queue_depth;
    metrics_histogram *ttft_seconds;   /* admission into the batch to the first token */
    metrics_histogram *itl_seconds;    /* between two tokens of one request */
    metrics_histogram *batch_size;     /* requests in the batch, once per step */
    /* Admission (admission.h) and deadlines: */
    metrics_counter *refused[SERVER_REFUSED_N];   /* requests_refused_total{reason} */
    metrics_counter *requests_deadline;           /* requests_total{outcome="deadline"}: ended running */
    metrics_gauge *waiting_tokens;                /* prompt tokens of the waiting requests */
    metrics_histogram *queue_seconds;             /* arrival to admission into the batch */
    /* the engine's paged KV cache, from engine_batch_get_stats after every step */
    metrics_gauge *kv_blocks_used, *kv_blocks_free, *kv_blocks_cached;
    metrics_counter *prefix_hit_tokens, *prefix_lookup_tokens, *preemptions;
    engine_batch_stats kv_seen;                   /* what the counters hold already */
} server_metrics;

/* A request in the batch; its index is the id the engine batch knows it by. */
typedef struct active_request {
    bool used;
    char request_id[JOB_ID_MAX];
    struct server *server;
    bool want_logprobs;
    size_t text_sent;           /* bytes of text streamed so far */
    double queued_seconds;
    double arrived_at;          /* monotonic seconds: when it reached the worker */
    double admitted_at;         /* monotonic seconds */
    int64_t deadline_unix_ms;   /* 0: none; past it the request is ended with DEADLINE_EXCEEDED */
    bool deadline_passed;       /* cancelled for its deadline: ends with an Error, not a chunk */
    double last_token_at;       /* 0 until the first token */
    int32_t *prompt_ids;
    const engine_adapter *adapter;  /* held from the store until the request ends, or NULL */
} active_request;

typedef struct server {
    void *sock;                 /* DEALER connected to the router backend (not owned) */
    engine_model *model;
    engine_batch *batch;        /* continuous batching over up to max_seqs requests */
    int max_seqs;
    active_request *active;     /* max_seqs slots */
    int n_active;
    const char *model_name;     /* what the worker announces and requests name */
    adapter_store adapters;     /* for "<model_name>:<adapter>" requests */
    const char *worker_id;
    job_queue queue;
    admission_limits limits;    /* the door: queue bounds and context (server_set_admission) */
    server_metrics metrics;
    shutdown_drain drain;       /* one unit per request accepted and not yet ended */
    uint64_t n_done;            /* requests finished so far (varies the seeds) */
    double next_heartbeat;      /* monotonic seconds */
    double heartbeat_interval;
    bool busy;                  /* n_active > 0 */
    bool draining;              /* SIGTERM: refuse new work (drain not accepting), finish the running ones */
    double drain_deadline;      /* past it, the running generations are cancelled */
    tp_group *tp;               /* rank 0 of a tensor-parallel group, or NULL (tp_group.h) */
    bool tp_failed;             /* the group broke: stop serving (the caller exits) */
} server;

/* Registers the metrics in reg (may be NULL: no metrics). Returns 0, or -1 when out of
 * memory. */
int server_init(server *s, void *sock, engine_model *m, engine_batch *batch, int max_seqs,
                const char *model_name, const char *worker_id, metrics_registry *reg);
void server_free(server *s);
/* Where adapters are read from (server_init: var/adapters). */
void server_set_adapter_dir(server *s, const char *dir);

/* Sets the queue bounds and the context each request has (admission.h). Until called,
 * up to JOB_QUEUE_MAX requests may wait, with no token bound, and the context is
 * taken as unbounded (the engine still refuses prompts that do not fit). */
void server_set_admission(server *s, const admission_limits *limits);

/* Sends a heartbeat now if one is due. */
void server_heartbeat_if_due(server *s, double now);

/* Reads every message waiting on the socket without blocking: requests are queued,
 * Cancels applied. Safe to call from the token callback. */
void server_drain_socket(server *s);

/* Admits queued requests while the batch has room, then runs one batch step. Returns
 * whether any request is running (call again soon) or false when idle. */
bool server_run_next(server *s);

/* Starts draining (the drain stops accepting): queued requests are answered with an
 * Error, new ones refused, the running ones get until deadline (monotonic seconds). */
void server_begin_drain(server *s, double deadline);

/* Monotonic seconds. */
double server_now(void);

#endif
