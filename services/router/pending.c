/* pending.c - the table of requests in flight and their retry bookkeeping (see
 * pending.h). Linear search: a router holds at most a few thousand requests, and every
 * lookup is far cheaper than the ZeroMQ hop it serves. */
#include "pending.h"

#include <stdlib.h>
#include <string.h>

void pending_init(pending_table *t)
{
    memset(t, 0, sizeof *t);
}

void pending_free(pending_table *t)
{
    for (int i = 0; i < t->n; i++) {
        free(t->items[i]->payload);
        free(t->items[i]);
    }
    free(t->items);
    memset(t, 0, sizeof *t);
}

pending_request *pending_find(pending_table *t, const char *request_id)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->items[i]->request_id, request_id) == 0)
            return t->items[i];
    return NULL;
}

static bool fits(const char *s, size_t max)
{
    size_t len = strlen(s);
    return len > 0 && len < max;
}

static bool grow(pending_table *t)
{
    if (t->n < t->cap)
        return true;
    int cap = t->cap ? t->cap * 2 : 16;
    pending_request **items = realloc(t->items, sizeof *items * (size_t)cap);
    if (items == NULL)
        return false;
    t->items = items;
    t->cap = cap;
    return true;
}

enum pending_add_result pending_add(pending_table *t, const char *request_id, const char *model,
                                    const void *client, size_t client_len, const void *payload,
                                    size_t payload_len, double now, pending_request **out)
{
    *out = NULL;
    if (!fits(request_id, PENDING_REQUEST_ID_MAX) || !fits(model, PENDING_MODEL_MAX) ||
        client_len == 0 || client_len > PENDING_ID_MAX)
        return PENDING_BAD;
    if (pending_find(t, request_id))
        return PENDING_DUPLICATE;
    if (t->n >= PENDING_MAX)
        return PENDING_FULL;
    pending_request *p = calloc(1, sizeof *p);
    uint8_t *bytes = malloc(payload_len ? payload_len : 1);
    if (p == NULL || bytes == NULL || !grow(t)) {
        free(p);
        free(bytes);
        return PENDING_NOMEM;
    }
    strcpy(p->request_id, request_id);
    strcpy(p->model, model);
    memcpy(p->client, client, client_len);
    p->client_len = client_len;
    if (payload_len)
        memcpy(bytes, payload, payload_len);
    p->payload = bytes;
    p->payload_len = payload_len;
    p->created = now;
    t->items[t->n++] = p;
    *out = p;
    return PENDING_ADDED;
}

void pending_remove(pending_table *t, pending_request *p)
{
    for (int i = 0; i < t->n; i++) {
        if (t->items[i] != p)
            continue;
        t->items[i] = t->items[--t->n];
        free(p->payload);
        free(p);
        return;
    }
}

bool pending_assign(pending_request *p, const void *worker, size_t worker_len)
{
    if (p->attempts >= PENDING_MAX_ATTEMPTS || worker_len == 0 || worker_len > PENDING_ID_MAX)
        return false;
    memcpy(p->tried[p->attempts], worker, worker_len);
    p->tried_len[p->attempts] = worker_len;
    p->attempts++;
    memcpy(p->worker, worker, worker_len);
    p->worker_len = worker_len;
    return true;
}

bool pending_tried(const pending_request *p, const void *worker, size_t worker_len)
{
    for (int i = 0; i < p->attempts; i++)
        if (p->tried_len[i] == worker_len && memcmp(p->tried[i], worker, worker_len) == 0)
            return true;
    return false;
}

bool pending_on_worker(const pending_request *p, const void *worker, size_t worker_len)
{
    return p->worker_len == worker_len && memcmp(p->worker, worker, worker_len) == 0;
}

void pending_mark_started(pending_request *p)
{
    p->started = true;
    free(p->payload);
    p->payload = NULL;
    p->payload_len = 0;
}

bool pending_can_retry(const pending_request *p)
{
    return !p->started && !p->cancelled && p->payload != NULL &&
           p->attempts < PENDING_MAX_ATTEMPTS;
}

int pending_on_worker_list(pending_table *t, const void *worker, size_t worker_len,
                           pending_request **out, int cap)
{
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        if (!pending_on_worker(t->items[i], worker, worker_len))
            continue;
        if (n < cap)
            out[n] = t->items[i];
        n++;
    }
    return n;
}
