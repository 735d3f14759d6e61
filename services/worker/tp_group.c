/* tp_group.c - the leader/follower protocol of a tensor-parallel worker group (see
 * tp_group.h). A TpStep goes out as two broadcasts from rank 0: its packed length
 * (8 bytes), then the packed message. */
#include "tp_group.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collective_zmq.h"
#include "log.h"
#include "request_map.h"

static int set_err(tp_group *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_err(tp_group *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return -1;
}

int tp_group_open(tp_group *g, const char *addr, int rank, int size, double join_timeout_s, double op_timeout_s)
{
    memset(g, 0, sizeof *g);
    g->rank = rank;
    g->size = size;
    int join_ms = (int)(join_timeout_s * 1000), op_ms = (int)(op_timeout_s * 1000);
    char err[400];
    if (strncmp(addr, "shm:", 4) == 0)
        g->comm = collective_shm_open(addr + 4, rank, size, 0, join_ms, op_ms, err, sizeof err);
    else if (strncmp(addr, "tcp://", 6) == 0)
        g->comm = collective_zmq_open(addr, rank, size, join_ms, op_ms, err, sizeof err);
    else
        return set_err(g, "bad tensor-parallel address '%.200s' (shm:NAME or tcp://HOST:PORT)", addr);
    if (g->comm == NULL)
        return set_err(g, "%s", err);
    return 0;
}

static void free_events(tp_group *g)
{
    for (size_t i = 0; i < g->n_events; i++) {
        free(g->events[i]->request.data);
        free(g->events[i]);
    }
    g->n_events = 0;
}

void tp_group_close(tp_group *g)
{
    free_events(g);
    free(g->events);
    collective_close(g->comm);
    memset(g, 0, sizeof *g);
}

/* A new event at the end of the list (zeroed), or NULL when out of memory. */
static Citadel__TpEvent *new_event(tp_group *g)
{
    if (g->n_events == g->cap_events) {
        size_t cap = g->cap_events ? g->cap_events * 2 : 16;
        Citadel__TpEvent **grown = realloc(g->events, cap * sizeof *grown);
        if (grown == NULL) return NULL;
        g->events = grown;
        g->cap_events = cap;
    }
    Citadel__TpEvent *e = malloc(sizeof *e);
    if (e == NULL) return NULL;
    citadel__tp_event__init(e);
    g->events[g->n_events++] = e;
    return e;
}

int tp_group_record_add(tp_group *g, uint32_t slot, uint64_t seed, const uint8_t *request, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    Citadel__TpEvent *e = copy ? new_event(g) : NULL;
    if (e == NULL) {
        free(copy);
        return set_err(g, "out of memory recording an admission");
    }
    if (len) memcpy(copy, request, len);
    e->slot = slot;
    e->seed = seed;
    e->request.data = copy;
    e->request.len = len;
    return 0;
}

int tp_group_record_cancel(tp_group *g, uint32_t slot)
{
    Citadel__TpEvent *e = new_event(g);
    if (e == NULL) return set_err(g, "out of memory recording a cancel");
    e->slot = slot;
    e->cancel = true;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tp_group_publish(tp_group *g, bool run, bool stop, int active)
{
    Citadel__TpStep m = CITADEL__TP_STEP__INIT;
    m.step = g->step++;
    m.run = run;
    m.stop = stop;
    m.active = (uint32_t)active;
    m.n_events = g->n_events;
    m.events = g->events;
    uint64_t len = protobuf_c_message_get_packed_size(&m.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return set_err(g, "out of memory sending a step to the group");
    protobuf_c_message_pack(&m.base, buf);
    int rc = collective_broadcast(g->comm, &len, sizeof len, 0) || collective_broadcast(g->comm, buf, len, 0);
    free(buf);
    free_events(g);
    g->last_sent = now_s();
    if (rc) return set_err(g, "tensor-parallel group: %s", collective_error(g->comm));
    return 0;
}

int tp_group_keepalive(tp_group *g, int active)
{
    if (now_s() - g->last_sent < 1.0) return 0;
    return tp_group_publish(g, false, false, active);
}

/* ---- followers ---------------------------------------------------------------------- */

/* Receives the next TpStep (the caller frees it), or NULL with a message. */
static Citadel__TpStep *receive_step(tp_group *g)
{
    uint64_t len = 0;
    if (collective_broadcast(g->comm, &len, sizeof len, 0)) {
        set_err(g, "tensor-parallel group: %s", collective_error(g->comm));
        return NULL;
    }
    if (len > (1u << 30)) {
        set_err(g, "tensor-parallel group: a step of %llu bytes from rank 0", (unsigned long long)len);
        return NULL;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL || collective_broadcast(g->comm, buf, len, 0)) {
        set_err(g, "tensor-parallel group: %s", buf ? collective_error(g->comm) : "out of memory");
        free(buf);
        return NULL;
    }
    Citadel__TpStep *m = citadel__tp_step__unpack(NULL, len, buf);
    free(buf);
    if (m == NULL) set_err(g, "tensor-parallel group: undecodable step from rank 0");
    return m;
}

/* The leader's admission, replayed: the same request mapping and the same seed give
 * the same prompt and parameters. */
static int replay_add(tp_group *g, engine_model *m, engine_batch *batch, int n_ctx, const Citadel__TpEvent *e)
{
    char err[512];
    Citadel__GenerateRequest *req = citadel__generate_request__unpack(NULL, e->request.len, e->request.data);
    if (req == NULL) return set_err(g, "tensor-parallel group: undecodable request in step %llu",
                                    (unsigned long long)g->step);
    engine_gen_params params;
    int n = 0, rc = -1;
    int32_t *ids = NULL;
    if (request_gen_params(req, e->seed, &params, err, sizeof err) == 0 &&
        (ids = request_prompt_ids(m, req, &n, err, sizeof err)) != NULL) {
        if (params.max_tokens > n_ctx - n)   /* as rank 0's admission clamps it */
            params.max_tokens = n_ctx - n;
        if (engine_batch_add(batch, e->slot, ids, n, &params, NULL, NULL, NULL, err, sizeof err) == 0)
            rc = 0;
    }
    if (rc) set_err(g, "tensor-parallel ranks diverged: rank %d cannot admit %s that rank 0 admitted: %s", g->rank,
                    req->request_id, err);
    free(ids);
    citadel__generate_request__free_unpacked(req, NULL);
    return rc;
}

/* One TpStep: its events, then the step. Returns 1 to go on, 0 on stop, -1 on error. */
static int apply_step(tp_group *g, engine_model *m, engine_batch *batch, int n_ctx, const Citadel__TpStep *s)
{
    if (s->step != g->step)
        return set_err(g, "tensor-parallel group: step %llu from rank 0, expected %llu", (unsigned long long)s->step,
                       (unsigned long long)g->step);
    g->step++;
    for (size_t i = 0; i < s->n_events; i++) {
        const Citadel__TpEvent *e = s->events[i];
        if (e->cancel) engine_batch_cancel(batch, e->slot);
        else if (replay_add(g, m, batch, n_ctx, e)) return -1;
    }
    if (s->stop) return 0;
    if ((uint32_t)engine_batch_active(batch) != s->active)
        return set_err(g, "tensor-parallel ranks diverged: rank 0 has %u requests, rank %d %d", s->active, g->rank,
                       engine_batch_active(batch));
    if (s->run && engine_batch_step(batch) < 0)
        return set_err(g, "tensor-parallel group: the batch step failed: %s", collective_error(g->comm));
    return 1;
}

int tp_group_follow(tp_group *g, engine_model *m, engine_batch *batch, int n_ctx)
{
    for (;;) {
        Citadel__TpStep *s = receive_step(g);
        if (s == NULL) return -1;
        int rc = apply_step(g, m, batch, n_ctx, s);
        citadel__tp_step__free_unpacked(s, NULL);
        if (rc <= 0) return rc;
    }
}
