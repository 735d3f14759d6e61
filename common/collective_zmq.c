/* collective_zmq.c - collective operations over ZeroMQ (see collective_zmq.h).
 *
 * Messages: rank 0 sees [identity][header][payload], the others [header][payload];
 * the header is {kind, rank, sequence number, payload bytes}. Rank 0 keeps the
 * payloads of one all-reduce until every rank's has come, then adds them in rank
 * order. A rank waits for the peers in slices of 100 ms, so an op_timeout_ms or a
 * missing peer ends the wait with a message instead of a hang.
 */
#include "collective_zmq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

enum zmq_kind { KIND_HELLO = 1, KIND_WELCOME, KIND_REDUCE, KIND_RESULT, KIND_BCAST };

typedef struct wire_header {
    uint32_t kind, rank;
    uint64_t seq, bytes;
} wire_header;

typedef struct zmq_collective {
    collective base;
    void *ctx, *sock;               /* ROUTER on rank 0, DEALER elsewhere */
    uint64_t seq;                   /* operations so far */
    int op_timeout_ms;
    zmq_msg_t held[COLLECTIVE_MAX_RANKS];   /* rank 0: payloads of the current all-reduce */
} zmq_collective;

static int set_err(collective *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set_err(collective *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void identity_of(int rank, char *out, size_t cap) { snprintf(out, cap, "rank-%d", rank); }

/* Sends header+payload (to rank `to` when this is rank 0). */
static int send_msg(zmq_collective *g, int to, enum zmq_kind kind, const void *payload, size_t bytes)
{
    wire_header h = {kind, (uint32_t)g->base.rank, g->seq, bytes};
    if (g->base.rank == 0) {
        char id[32];
        identity_of(to, id, sizeof id);
        if (zmq_send(g->sock, id, strlen(id), ZMQ_SNDMORE) < 0) goto error;
    }
    if (zmq_send(g->sock, &h, sizeof h, ZMQ_SNDMORE) < 0 || zmq_send(g->sock, payload, bytes, 0) < 0)
        goto error;
    return 0;
error:
    return set_err(&g->base, "cannot send to rank %d: %s", to, zmq_strerror(errno));
}

/* Receives one message within the operation's timeout (deadline_ms < 0: none): its
 * header, and its payload in *payload (initialized; the caller closes it). */
static int recv_msg(zmq_collective *g, double deadline_ms, wire_header *h, zmq_msg_t *payload)
{
    for (;;) {
        zmq_pollitem_t item = {g->sock, 0, ZMQ_POLLIN, 0};
        double left = deadline_ms < 0 ? 100 : deadline_ms - now_ms();
        if (left <= 0)
            return set_err(&g->base, "no answer from the other ranks within %d ms", g->op_timeout_ms);
        int rc = zmq_poll(&item, 1, left > 100 ? 100 : (long)left + 1);
        if (rc < 0 && errno != EINTR)
            return set_err(&g->base, "poll: %s", zmq_strerror(errno));
        if (rc > 0) break;
    }
    zmq_msg_t part;
    int n_parts = 0;
    bool bad = false;
    zmq_msg_init(payload);
    for (int more = 1; more;) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, g->sock, 0) < 0) {
            zmq_msg_close(&part);
            return set_err(&g->base, "receive: %s", zmq_strerror(errno));
        }
        more = zmq_msg_more(&part);
        int header_at = g->base.rank == 0 ? 1 : 0;
        if (n_parts == header_at) {
            if (zmq_msg_size(&part) == sizeof *h) memcpy(h, zmq_msg_data(&part), sizeof *h);
            else bad = true;
        } else if (n_parts == header_at + 1) {
            zmq_msg_move(payload, &part);
        } else if (n_parts > header_at + 1) {
            bad = true;
        }
        zmq_msg_close(&part);
        n_parts++;
    }
    if (bad || n_parts != (g->base.rank == 0 ? 3 : 2) || h->rank >= (uint32_t)g->base.size ||
        zmq_msg_size(payload) != h->bytes) {
        zmq_msg_close(payload);
        return set_err(&g->base, "malformed message in the tensor-parallel group");
    }
    return 0;
}

/* recv_msg for an operation: late hellos (a rank that said hello twice while rank 0
 * was starting) are skipped. */
static int recv_op(zmq_collective *g, double deadline_ms, wire_header *h, zmq_msg_t *payload)
{
    for (;;) {
        if (recv_msg(g, deadline_ms, h, payload)) return -1;
        if (h->kind != KIND_HELLO) return 0;
        zmq_msg_close(payload);
    }
}

static double op_deadline(const zmq_collective *g)
{
    return g->op_timeout_ms < 0 ? -1 : now_ms() + g->op_timeout_ms;
}

/* A message of this operation, of this kind and size, or a divergence error. */
static int expect(zmq_collective *g, const wire_header *h, enum zmq_kind kind, size_t bytes)
{
    if (h->kind == kind && h->seq == g->seq && h->bytes == bytes)
        return 0;
    return set_err(&g->base,
                   "tensor-parallel ranks diverged: rank %u sent message %u #%llu of %llu bytes, rank %d expected %u "
                   "#%llu of %zu",
                   h->rank, h->kind, (unsigned long long)h->seq, (unsigned long long)h->bytes, g->base.rank, kind,
                   (unsigned long long)g->seq, bytes);
}

static int zmq_all_reduce(collective *c, float *buf, size_t n)
{
    zmq_collective *g = (zmq_collective *)c;
    size_t bytes = n * sizeof(float);
    double deadline = op_deadline(g);
    int rc = 0;
    if (c->rank != 0) {
        wire_header h;
        zmq_msg_t in;
        if (send_msg(g, 0, KIND_REDUCE, buf, bytes) || recv_op(g, deadline, &h, &in))
            return -1;
        rc = expect(g, &h, KIND_RESULT, bytes);
        if (rc == 0 && bytes) memcpy(buf, zmq_msg_data(&in), bytes);
        zmq_msg_close(&in);
        g->seq++;
        return rc;
    }
    bool have[COLLECTIVE_MAX_RANKS] = {false};
    for (int got = 1; got < c->size && rc == 0; got++) {
        wire_header h;
        zmq_msg_t in;
        if (recv_op(g, deadline, &h, &in)) { rc = -1; break; }
        rc = expect(g, &h, KIND_REDUCE, bytes);
        if (rc == 0 && (h.rank == 0 || have[h.rank]))
            rc = set_err(c, "rank %u sent twice in one all-reduce", h.rank);
        if (rc == 0) {
            zmq_msg_move(&g->held[h.rank], &in);
            have[h.rank] = true;
        }
        zmq_msg_close(&in);
    }
    if (rc == 0) {
        for (int r = 1; r < c->size; r++) {   /* rank order: the same sum as every backend */
            /* a small message's data sits inside the message, not aligned for floats */
            const unsigned char *in = zmq_msg_data(&g->held[r]);
            for (size_t i = 0; i < n; i++) {
                float v;
                memcpy(&v, in + i * sizeof v, sizeof v);
                buf[i] += v;
            }
        }
        for (int r = 1; r < c->size && rc == 0; r++)
            rc = send_msg(g, r, KIND_RESULT, buf, bytes);
    }
    for (int r = 1; r < c->size; r++)
        if (have[r]) {
            zmq_msg_close(&g->held[r]);
            zmq_msg_init(&g->held[r]);
        }
    g->seq++;
    return rc;
}

static int zmq_broadcast(collective *c, void *buf, size_t bytes, int root)
{
    zmq_collective *g = (zmq_collective *)c;
    if (root < 0 || root >= c->size)
        return set_err(c, "broadcast from rank %d of a group of %d", root, c->size);
    double deadline = op_deadline(g);
    int rc = 0;
    if (c->rank == root && root != 0) {
        rc = send_msg(g, 0, KIND_BCAST, buf, bytes);
    } else if (c->rank == 0) {
        if (root != 0) {   /* relay: from the root to rank 0, then to the rest */
            wire_header h;
            zmq_msg_t in;
            if (recv_op(g, deadline, &h, &in)) return -1;
            rc = expect(g, &h, KIND_BCAST, bytes);
            if (rc == 0 && bytes) memcpy(buf, zmq_msg_data(&in), bytes);
            zmq_msg_close(&in);
        }
        for (int r = 1; r < c->size && rc == 0; r++)
            if (r != root) rc = send_msg(g, r, KIND_BCAST, buf, bytes);
    } else {
        wire_header h;
        zmq_msg_t in;
        if (recv_op(g, deadline, &h, &in)) return -1;
        rc = expect(g, &h, KIND_BCAST, bytes);
        if (rc == 0 && bytes) memcpy(buf, zmq_msg_data(&in), bytes);
        zmq_msg_close(&in);
    }
    g->seq++;
    return rc;
}

static int zmq_barrier(collective *c) { return zmq_all_reduce(c, NULL, 0); }

static void zmq_close_group(collective *c)
{
    zmq_collective *g = (zmq_collective *)c;
    for (int r = 0; r < COLLECTIVE_MAX_RANKS; r++)
        zmq_msg_close(&g->held[r]);
    if (g->sock) zmq_close(g->sock);
    if (g->ctx) zmq_ctx_term(g->ctx);
    free(g);
}

static const collective_ops zmq_ops = {"zmq", zmq_all_reduce, zmq_broadcast, zmq_barrier, zmq_close_group};

/* Rank 0: waits for a hello from every other rank, then welcomes them all. */
static int join_as_leader(zmq_collective *g, double deadline)
{
    bool seen[COLLECTIVE_MAX_RANKS] = {false};
    for (int got = 1; got < g->base.size;) {
        wire_header h;
        zmq_msg_t in;
        if (recv_msg(g, deadline, &h, &in))
            return set_err(&g->base, "%d of %d ranks joined in time", got, g->base.size);
        zmq_msg_close(&in);
        if (h.kind != KIND_HELLO || h.rank == 0)
            continue;   /* a straggler from an earlier group on this endpoint */
        if (!seen[h.rank]) got++;
        seen[h.rank] = true;
    }
    for (int r = 1; r < g->base.size; r++)
        if (send_msg(g, r, KIND_WELCOME, NULL, 0)) return -1;
    return 0;
}

/* Other ranks: hello every second until rank 0 welcomes (it may start later). */
static int join_as_follower(zmq_collective *g, double deadline)
{
    for (;;) {
        if (send_msg(g, 0, KIND_HELLO, NULL, 0)) return -1;
        double next = now_ms() + 1000;
        wire_header h;
        zmq_msg_t in;
        int rc = recv_msg(g, deadline < 0 || deadline > next ? next : deadline, &h, &in);
        if (rc == 0) {
            zmq_msg_close(&in);
            if (h.kind == KIND_WELCOME) return 0;
        } else if (deadline >= 0 && now_ms() >= deadline) {
            return set_err(&g->base, "rank 0 did not welcome rank %d in time", g->base.rank);
        }
    }
}

collective *collective_zmq_open(const char *endpoint, int rank, int size, int join_timeout_ms,
                                int op_timeout_ms, char *err, size_t errsz)
{
    if (size < 1 || size > COLLECTIVE_MAX_RANKS || rank < 0 || rank >= size) {
        snprintf(err, errsz, "bad tensor-parallel rank %d of %d (1..%d ranks)", rank, size, COLLECTIVE_MAX_RANKS);
        return NULL;
    }
    zmq_collective *g = calloc(1, sizeof *g);
    if (g == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    g->base = (collective){.ops = &zmq_ops, .rank = rank, .size = size};
    g->op_timeout_ms = op_timeout_ms;
    for (int r = 0; r < COLLECTIVE_MAX_RANKS; r++)
        zmq_msg_init(&g->held[r]);
    g->ctx = zmq_ctx_new();
    g->sock = g->ctx ? zmq_socket(g->ctx, rank == 0 ? ZMQ_ROUTER : ZMQ_DEALER) : NULL;
    /* Closing waits up to 2 s for messages still queued (the last results, a final
     * broadcast), then drops them: a dead peer cannot hold a closing rank up. */
    int linger = 2000, one = 1;
    char id[32];
    identity_of(rank, id, sizeof id);
    if (g->sock) {
        zmq_setsockopt(g->sock, ZMQ_LINGER, &linger, sizeof linger);
        if (rank == 0) zmq_setsockopt(g->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        else zmq_setsockopt(g->sock, ZMQ_ROUTING_ID, id, strlen(id));
    }
    if (g->sock == NULL || (rank == 0 ? zmq_bind(g->sock, endpoint) : zmq_connect(g->sock, endpoint)) != 0) {
        snprintf(err, errsz, "cannot %s %s: %s", rank == 0 ? "bind" : "connect to", endpoint, zmq_strerror(errno));
        zmq_close_group(&g->base);
        return NULL;
    }
    double deadline = join_timeout_ms < 0 ? -1 : now_ms() + join_timeout_ms;
    if ((rank == 0 ? join_as_leader(g, deadline) : join_as_follower(g, deadline)) != 0) {
        snprintf(err, errsz, "tensor-parallel group on %s: %s", endpoint, g->base.err);
        int zero = 0;   /* nobody waits for our hellos */
        zmq_setsockopt(g->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close_group(&g->base);
        return NULL;
    }
    g->base.err[0] = '\0';
    return &g->base;
}
