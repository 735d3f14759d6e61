/* tp_group.h - a worker's tensor-parallel group: N citadel-worker processes that each
 * hold a share of the model (kernels/model/shard.h) and run every batch step together.
 *
 * Rank 0, the leader, is the worker the router knows: it talks to the router, admits
 * and cancels requests, samples and streams tokens. The other ranks, the followers,
 * never talk to the router: before each batch step the leader broadcasts a TpStep
 * (proto/citadel.proto) holding what changed in its batch since the last one (requests
 * admitted, with the seed it chose, and requests cancelled); each follower applies the
 * same changes to its own engine batch and steps it too. Every decision the engine
 * batch makes depends only on those inputs, and every rank gets the same logits (the
 * all-reduce gives every rank the same bits), so the batches stay identical: same
 * sequences in the same slots, same forward passes, same sampled tokens. The followers'
 * tokens are simply not sent anywhere.
 *
 * While idle the leader sends an empty TpStep every second, so a follower whose leader
 * has vanished notices within the operation timeout; on shutdown it sends one with
 * stop set. A follower checks each step's sequence number and the leader's count of
 * requests against its own, and leaves the group with an error when they disagree.
 *
 * The group's collective is the shared-memory backend for "shm:NAME" addresses (ranks
 * on one host) and ZeroMQ for "tcp://HOST:PORT" (rank 0 binds, the others connect).
 */
#ifndef CITADEL_WORKER_TP_GROUP_H
#define CITADEL_WORKER_TP_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "citadel.pb-c.h"
#include "engine.h"
#include "parallel/collective.h"

typedef struct tp_group {
    collective *comm;
    int rank, size;
    uint64_t step;              /* TpSteps sent (leader) or received (follower) */
    Citadel__TpEvent **events;  /* leader: recorded since the last TpStep */
    size_t n_events, cap_events;
    double last_sent;           /* leader: monotonic seconds of the last TpStep */
    char err[512];
} tp_group;

/* Joins rank `rank` of a group of `size` at addr ("shm:NAME" or "tcp://HOST:PORT"),
 * waiting up to join_timeout_s for the others; each later operation waits at most
 * op_timeout_s for the slowest rank. Returns 0, or -1 with a message in g->err. */
int tp_group_open(tp_group *g, const char *addr, int rank, int size, double join_timeout_s, double op_timeout_s);
void tp_group_close(tp_group *g);

/* Leader: records an admission (the packed GenerateRequest and the seed it was given)
 * or a cancel, to go out with the next TpStep. Returns 0, or -1 when out of memory
 * (the group can then not stay in step: treat as fatal). */
int tp_group_record_add(tp_group *g, uint32_t slot, uint64_t seed, const uint8_t *request, size_t len);
int tp_group_record_cancel(tp_group *g, uint32_t slot);

/* Leader: sends the recorded events; run: a batch step follows; stop: the last message.
 * active: requests in the leader's batch now. Returns 0, or -1 with a message in g->err
 * (a follower is gone: the group cannot go on). */
int tp_group_publish(tp_group *g, bool run, bool stop, int active);

/* Leader: an empty TpStep when none went out for a second (call it while idle).
 * Returns 0, or -1 as tp_group_publish. */
int tp_group_keepalive(tp_group *g, int active);

/* Follower: serves the leader until it says stop (returns 0) or the group fails
 * (returns -1 with a message in g->err): receives each TpStep, applies its events to
 * batch (admissions through the same request mapping as the leader, max_tokens
 * clamped to the context n_ctx as the leader's admission does), and steps the batch
 * when the leader does. */
int tp_group_follow(tp_group *g, engine_model *m, engine_batch *batch, int n_ctx);

#endif
