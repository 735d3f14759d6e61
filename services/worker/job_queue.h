/* job_queue.h - the worker's line of requests waiting for a place in the batch.
 *
 * Requests that arrive while every batch slot is taken wait here in arrival order and
 * are never dropped silently: the only ways out are being taken to run (job_queue_pop),
 * being cancelled (job_queue_remove), their deadline passing (job_queue_pop_expired),
 * or being refused at the door (the caller answers those with an error). Entries keep
 * the packed GenerateRequest, decoded again when its turn comes, and the prompt's token
 * ids, counted at the door so that admission can bound the prompt tokens waiting
 * (admission.h). Pure data structure: no sockets, no protobuf, time passed in.
 */
#ifndef CITADEL_WORKER_JOB_QUEUE_H
#define CITADEL_WORKER_JOB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOB_ID_MAX 128       /* bytes of a request id, NUL included */
#define JOB_QUEUE_MAX 1024   /* waiting requests the queue can hold at all */

/* One waiting request.
 *   payload/payload_len  its packed GenerateRequest (owned)
 *   prompt_ids/n_prompt  its tokenized prompt (owned; may be NULL with n_prompt 0)
 *   deadline_unix_ms     wall-clock deadline from the request; 0: none
 *   enqueued_at          monotonic seconds when it joined the queue (queue time) */
typedef struct job {
    char request_id[JOB_ID_MAX];
    uint8_t *payload;
    size_t payload_len;
    int32_t *prompt_ids;
    int n_prompt;
    int64_t deadline_unix_ms;
    double enqueued_at;
} job;

/* A FIFO ring of jobs; head is the oldest. n_tokens is the sum of their n_prompt. */
typedef struct job_queue {
    job *items;
    int head, n, cap;
    long long n_tokens;
} job_queue;

void job_queue_init(job_queue *q);
/* Frees every waiting job and the storage. */
void job_queue_free(job_queue *q);

/* Frees what a job owns (payload, prompt ids). */
void job_free(job *j);

/* Appends *j (its request_id copied, its payload and prompt_ids taken over). Returns 0,
 * or -1 when the id is empty or not NUL-terminated, the queue holds JOB_QUEUE_MAX jobs, or memory
 * ran out: the queue is then unchanged and the caller still owns what *j points to. */
int job_queue_push(job_queue *q, const job *j);

/* Takes the oldest job into *out (the caller then owns it: job_free). Returns false
 * when empty. */
bool job_queue_pop(job_queue *q, job *out);

/* Takes the oldest job whose deadline is at or before now_unix_ms into *out (the
 * caller owns it). Returns false when no waiting job has expired. */
bool job_queue_pop_expired(job_queue *q, int64_t now_unix_ms, job *out);

/* Drops the waiting job with this id. Returns whether there was one. */
bool job_queue_remove(job_queue *q, const char *request_id);

/* Whether a job with this id is waiting. */
bool job_queue_contains(const job_queue *q, const char *request_id);

/* Prompt tokens of the waiting jobs after the first `skip` (those that will go into
 * the batch's free slots at the next step); 0 when skip >= the queue's length. */
long long job_queue_tokens_after(const job_queue *q, int skip);

static inline int job_queue_len(const job_queue *q) { return q->n; }
static inline long long job_queue_tokens(const job_queue *q) { return q->n_tokens; }

#endif
