/* collective_zmq.h - the ZeroMQ backend of kernels/parallel/collective.h: the ranks of
 * a tensor-parallel group on several hosts (or one), over TCP.
 *
 * Rank 0 binds a ROUTER on the endpoint; every other rank connects a DEALER to it and
 * says hello with its rank. Every operation goes through rank 0 (a star): for an
 * all-reduce the others send their buffers, rank 0 adds them in rank order and sends
 * the sum back, so every rank gets the same bits; a broadcast from rank r goes r -> 0
 * -> the rest. For two ranks that is as few bytes as a ring; for many, rank 0's link
 * is the limit (the shared-memory backend is the one for a single host).
 *
 * Each message carries the operation's sequence number and byte count: a rank that
 * gets anything else reports that the ranks diverged. Ranks are assumed to have the
 * same byte order (floats are sent as they are in memory).
 */
#ifndef CITADEL_COLLECTIVE_ZMQ_H
#define CITADEL_COLLECTIVE_ZMQ_H

#include "parallel/collective.h"

/* Opens rank `rank` of a group of `size` at endpoint ("tcp://host:port": rank 0 binds
 * it, so host must be one of rank 0's addresses or *; the others connect to it).
 * Waits until every rank has joined, at most join_timeout_ms (< 0: forever).
 * op_timeout_ms bounds each operation's wait for the peers (< 0: forever). Returns
 * the group (its own ZeroMQ context), or NULL with a message in err. */
collective *collective_zmq_open(const char *endpoint, int rank, int size, int join_timeout_ms,
                                int op_timeout_ms, char *err, size_t errsz);

#endif
