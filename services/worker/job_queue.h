/* job_queue.h - the worker's line of requests waiting behind the one it is generating.
 *
 * A worker generates one request at a time; requests that arrive meanwhile wait here
 * in arrival order and are never dropped silently: the only ways out are being taken
 * to run (job_queue_pop), being cancelled (job_queue_remove), or being refused at the
 * door when the queue is full (the caller answers those with an error). Entries keep
 * the packed GenerateRequest; it is decoded when its turn comes. Pure data structure:
 * no sockets, no protobuf.
 */
#ifndef CITADEL_WORKER_JOB_QUEUE_H
#define CITADEL_WORKER_JOB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOB_ID_MAX 128       /* bytes of a request id, NUL included */
#define JOB_QUEUE_MAX 1024   /* waiting requests before new ones are refused */

/* One waiting request: its id (for Cancel) and its packed GenerateRequest. */
typedef struct job {
    char request_id[JOB_ID_MAX];
    uint8_t *payload;
    size_t payload_len;
} job;

/* A FIFO ring of jobs; head is the oldest. */
typedef struct job_queue {
    job *items;
    int head, n, cap;
} job_queue;

void job_queue_init(job_queue *q);
/* Frees every waiting job and the storage. */
void job_queue_free(job_queue *q);

/* Appends a copy of the request. Returns 0, or -1 when the id is empty or too long,
 * the queue holds JOB_QUEUE_MAX jobs, or memory ran out (the queue is then unchanged). */
int job_queue_push(job_queue *q, const char *request_id, const void *payload, size_t len);

/* Takes the oldest job into *out (the caller frees out->payload). Returns false when
 * empty. */
bool job_queue_pop(job_queue *q, job *out);

/* Drops the waiting job with this id. Returns whether there was one. */
bool job_queue_remove(job_queue *q, const char *request_id);

/* Whether a job with this id is waiting. */
bool job_queue_contains(const job_queue *q, const char *request_id);

static inline int job_queue_len(const job_queue *q) { return q->n; }

#endif
