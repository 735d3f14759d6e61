/* admission.h - the worker's door: which requests may join its queue.
 *
 * A worker has max_seqs batch slots and a bounded line behind them. A request is
 * refused at the door, never queued and forgotten, when
 *   - its prompt cannot fit the context: n_prompt >= n_ctx leaves no room for a single
 *     generated token (INVALID_ARGUMENT, HTTP 400 at the gateway);
 *   - it would have to wait (no free slot for it) and the waiting requests would then
 *     number more than max_queued_requests, or hold more than max_queued_tokens prompt
 *     tokens (OVERLOADED: the router tries another worker, the gateway answers 503
 *     with Retry-After).
 * "Waiting" excludes the queued requests that the next step moves into free slots, so
 * a burst that arrives at once is judged as if each had arrived in turn. Pure logic
 * over job_queue: no sockets, no protobuf, unit-tested in test_worker_admission.c.
 */
#ifndef CITADEL_WORKER_ADMISSION_H
#define CITADEL_WORKER_ADMISSION_H

#include <stddef.h>

#include "job_queue.h"

/* The door's limits.
 *   max_queued_requests  requests that may wait for a slot (1 .. JOB_QUEUE_MAX)
 *   max_queued_tokens    prompt tokens those may hold in all; 0: no token limit
 *   n_ctx                positions each request has: prompt plus generated tokens */
typedef struct admission_limits {
    int max_queued_requests;
    long long max_queued_tokens;
    int n_ctx;
} admission_limits;

enum admission_verdict {
    ADMISSION_ACCEPT = 0,
    ADMISSION_PROMPT_TOO_LONG,   /* 400 */
    ADMISSION_QUEUE_REQUESTS,    /* overloaded: too many requests waiting */
    ADMISSION_QUEUE_TOKENS,      /* overloaded: too many prompt tokens waiting */
};

/* Judges a request of n_prompt tokens arriving at queue q while free_slots batch slots
 * are free. On refusal msg holds the client-facing reason (it names the limit, e.g.
 * "prompt has 3000 tokens, the model's context is 2048"). Cannot fail. */
enum admission_verdict admission_check(const admission_limits *l, const job_queue *q, int free_slots,
                                       int n_prompt, char *msg, size_t msgsz);

/* The verdict as a metric label: "prompt_too_long", "queue_full_requests",
 * "queue_full_tokens" ("accepted" for ADMISSION_ACCEPT). */
const char *admission_reason(enum admission_verdict v);

#endif
