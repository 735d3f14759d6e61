/* collective.h - the collective operations a tensor-parallel group of ranks uses
 * (all-reduce, broadcast, barrier), behind one interface that backends plug into.
 *
 * A group is N ranks (0..N-1), usually one process each, running the same forward pass
 * in lockstep (model/shard.h says how the model is split). Every operation is called
 * by every rank in the same order with the same sizes; it returns once this rank's
 * part is done. Results are bit-identical on every rank (each backend sums in rank
 * order 0..N-1 whoever computes), so the replicated parts of the forward pass stay
 * identical and the ranks never drift apart.
 *
 * Backends:
 *   shared memory   ranks on one host (collective_shm.c in this directory)
 *   ZeroMQ          ranks across hosts (common/collective_zmq.c: kernels/ has no
 *                   sockets, so the services link it)
 *   NCCL            GPU ranks (issue 8): its constructor takes an open CPU collective
 *                   as the bootstrap, rank 0 makes the ncclUniqueId and broadcasts
 *                   it through that, then every rank calls ncclCommInitRank; buffers
 *                   are then device memory.
 * A backend fills a collective_ops table and embeds `collective` first in its own
 * struct (as Redis' dict types do with their type table).
 *
 * Errors: every operation returns 0, or -1 with a message in c->err (a peer died or
 * timed out, sizes differ between ranks, the group was aborted). After an error the
 * group is unusable: close it. An error on one rank makes the others fail too (the
 * backends mark the group aborted, or the others time out), never hang forever when
 * a timeout is set.
 */
#ifndef CITADEL_COLLECTIVE_H
#define CITADEL_COLLECTIVE_H

#include <stddef.h>

#define COLLECTIVE_MAX_RANKS 64

typedef struct collective collective;

typedef struct collective_ops {
    const char *name;   /* "shm", "zmq", "nccl" */
    /* buf (n floats) becomes the element-wise sum of every rank's buf. */
    int (*all_reduce_sum_f32)(collective *c, float *buf, size_t n);
    /* buf (bytes) of rank root is copied into every other rank's buf. */
    int (*broadcast)(collective *c, void *buf, size_t bytes, int root);
    /* Returns once every rank has called it. */
    int (*barrier)(collective *c);
    /* Frees the group (always succeeds; peers see this rank gone). */
    void (*close)(collective *c);
} collective_ops;

struct collective {
    const collective_ops *ops;
    int rank, size;
    char err[256];
};

/* The operations, called through the table; c may not be NULL. */
static inline int collective_all_reduce_sum_f32(collective *c, float *buf, size_t n)
{
    return c->ops->all_reduce_sum_f32(c, buf, n);
}

static inline int collective_broadcast(collective *c, void *buf, size_t bytes, int root)
{
    return c->ops->broadcast(c, buf, bytes, root);
}

static inline int collective_barrier(collective *c) { return c->ops->barrier(c); }

static inline const char *collective_error(const collective *c) { return c->err; }

/* NULL is allowed. */
static inline void collective_close(collective *c)
{
    if (c) c->ops->close(c);
}

/* The shared-memory backend: ranks on one host attach to the POSIX shared memory
 * object "/<name>" (name: letters, digits, '-', '_', '.'; at most 200 characters).
 * Rank 0 creates it (replacing a stale one left by a crash) and every rank waits until
 * all size ranks have attached, at most join_timeout_ms (< 0: forever). Operations
 * move at most slot_bytes per round (larger ones are cut into rounds); 0 -> 1 MiB.
 * op_timeout_ms bounds the wait inside one operation for the slowest peer (< 0:
 * forever); a peer whose process has exited is noticed within ~50 ms whatever it is.
 * Returns the group, or NULL with a message in err. */
collective *collective_shm_open(const char *name, int rank, int size, size_t slot_bytes,
                                int join_timeout_ms, int op_timeout_ms, char *err, size_t errsz);

#endif
