/* job_queue.c - the worker's FIFO of waiting requests (see job_queue.h). A ring buffer
 * that doubles when full; removal by id or deadline shifts the later jobs up, which
 * keeps order and is cheap for the short queues a worker has. */
#include "job_queue.h"

#include <stdlib.h>
#include <string.h>

void job_queue_init(job_queue *q)
{
    memset(q, 0, sizeof *q);
}

void job_free(job *j)
{
    free(j->payload);
    free(j->prompt_ids);
    j->payload = NULL;
    j->prompt_ids = NULL;
}

/* The i-th waiting job, 0 the oldest. */
static job *at(const job_queue *q, int i)
{
    return &q->items[(q->head + i) % q->cap];
}

void job_queue_free(job_queue *q)
{
    for (int i = 0; i < q->n; i++)
        job_free(at(q, i));
    free(q->items);
    memset(q, 0, sizeof *q);
}

/* Makes room for one more, unrolling the ring into a bigger array. */
static int grow(job_queue *q)
{
    if (q->n < q->cap)
        return 0;
    int cap = q->cap ? q->cap * 2 : 8;
    job *items = malloc(sizeof *items * (size_t)cap);
    if (items == NULL)
        return -1;
    for (int i = 0; i < q->n; i++)
        items[i] = *at(q, i);
    free(q->items);
    q->items = items;
    q->head = 0;
    q->cap = cap;
    return 0;
}

int job_queue_push(job_queue *q, const job *j)
{
    size_t id_len = strnlen(j->request_id, JOB_ID_MAX);
    if (id_len == 0 || id_len == JOB_ID_MAX || q->n >= JOB_QUEUE_MAX || grow(q))
        return -1;
    *at(q, q->n) = *j;
    q->n++;
    q->n_tokens += j->n_prompt;
    return 0;
}

/* Takes out the i-th job into *out, the later ones moving up. */
static void take(job_queue *q, int i, job *out)
{
    *out = *at(q, i);
    q->n_tokens -= out->n_prompt;
    if (i == 0) {
        q->head = (q->head + 1) % q->cap;
    } else {
        for (; i + 1 < q->n; i++)
            *at(q, i) = *at(q, i + 1);
    }
    q->n--;
}

bool job_queue_pop(job_queue *q, job *out)
{
    if (q->n == 0)
        return false;
    take(q, 0, out);
    return true;
}

bool job_queue_pop_expired(job_queue *q, int64_t now_unix_ms, job *out)
{
    for (int i = 0; i < q->n; i++) {
        int64_t d = at(q, i)->deadline_unix_ms;
        if (d > 0 && d <= now_unix_ms) {
            take(q, i, out);
            return true;
        }
    }
    return false;
}

static int index_of(const job_queue *q, const char *request_id)
{
    for (int i = 0; i < q->n; i++)
        if (strcmp(at(q, i)->request_id, request_id) == 0)
            return i;
    return -1;
}

bool job_queue_contains(const job_queue *q, const char *request_id)
{
    return index_of(q, request_id) >= 0;
}

bool job_queue_remove(job_queue *q, const char *request_id)
{
    int i = index_of(q, request_id);
    if (i < 0)
        return false;
    job j;
    take(q, i, &j);
    job_free(&j);
    return true;
}

long long job_queue_tokens_after(const job_queue *q, int skip)
{
    long long sum = 0;
    for (int i = skip < 0 ? 0 : skip; i < q->n; i++)
        sum += at(q, i)->n_prompt;
    return sum;
}
