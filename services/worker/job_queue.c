/* job_queue.c - the worker's FIFO of waiting requests (see job_queue.h). A ring buffer
 * that doubles when full; removal by id shifts the later jobs up, which keeps order
 * and is cheap for the short queues a worker has. */
#include "job_queue.h"

#include <stdlib.h>
#include <string.h>

void job_queue_init(job_queue *q)
{
    memset(q, 0, sizeof *q);
}

void job_queue_free(job_queue *q)
{
    for (int i = 0; i < q->n; i++)
        free(q->items[(q->head + i) % q->cap].payload);
    free(q->items);
    memset(q, 0, sizeof *q);
}

/* The i-th waiting job, 0 the oldest. */
static job *at(const job_queue *q, int i)
{
    return &q->items[(q->head + i) % q->cap];
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

int job_queue_push(job_queue *q, const char *request_id, const void *payload, size_t len)
{
    size_t id_len = strlen(request_id);
    if (id_len == 0 || id_len >= JOB_ID_MAX || q->n >= JOB_QUEUE_MAX)
        return -1;
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL || grow(q)) {
        free(copy);
        return -1;
    }
    if (len)
        memcpy(copy, payload, len);
    job *j = at(q, q->n);
    memcpy(j->request_id, request_id, id_len + 1);
    j->payload = copy;
    j->payload_len = len;
    q->n++;
    return 0;
}

bool job_queue_pop(job_queue *q, job *out)
{
    if (q->n == 0)
        return false;
    *out = *at(q, 0);
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return true;
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
    free(at(q, i)->payload);
    for (; i + 1 < q->n; i++)
        *at(q, i) = *at(q, i + 1);
    q->n--;
    return true;
}
