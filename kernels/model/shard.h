/* shard.h - tensor parallelism for the llama forward pass: how a model is split over
 * the N ranks of a group (parallel/collective.h), Megatron-style.
 *
 * Each rank keeps a slice of every layer and computes it; the partial results meet in
 * two all-reduces per layer:
 *
 *   attention   rank r has query heads [r*NH/N, (r+1)*NH/N) and their key/value heads
 *               [r*NKV/N, ...): the rows of Wq, Wk, Wv (and biases) of those heads,
 *               its own part of the KV cache, and the matching columns of Wo, so
 *               a Wo^T over its heads is a partial sum of x's update  -> all-reduce
 *   FFN         rank r has FFN channels [r*F/N, (r+1)*F/N): those rows of Wgate and
 *               Wup and those columns of Wdown                      -> all-reduce
 *   output      rank r has about V/N rows of the output head (its share of the
 *               vocabulary) and computes those logits; N broadcasts gather the
 *               whole row of V logits on every rank
 *   the rest    embeddings and norms are replicated: every rank has the same
 *               residual stream and the same logits (the all-reduce gives every
 *               rank the same bits), so every rank can sample alike.
 *
 * Slicing rows is a pointer into the mapping; slicing columns (Wo, Wdown) copies each
 * row's part, so a quantized block (32 or 256 values) must not straddle two ranks:
 * the slice width must be a multiple of the block. Models that cannot be split so
 * (head counts or FFN width not divisible by N, blocks that straddle) are refused at
 * load with a message saying why.
 *
 * After the split, the model's hparams describe THIS rank's share (n_heads,
 * n_kv_heads, ffn_dim are local), so the forward pass and cache sizes need no other
 * change; the shard keeps the whole model's counts.
 */
#ifndef CITADEL_SHARD_H
#define CITADEL_SHARD_H

#include <stdbool.h>
#include <stddef.h>

#include "model/llama.h"
#include "parallel/collective.h"

struct llama_shard {
    int rank, size;
    collective *comm;                       /* not owned */
    int n_heads, n_kv_heads, ffn_dim;       /* of the whole model */
    int vocab_first, vocab_n;               /* this rank's rows of the output head */
};

/* Whether the model described by hp (whole-model counts) can be split over `size`
 * ranks with these weight types (wo_type: Wo's, down_type: Wdown's). Returns 0, or -1
 * with a message naming the count that does not divide or the block that straddles. */
int shard_check(const llama_hparams *hp, int size, enum tensor_type wo_type, enum tensor_type down_type,
                char *err, size_t errsz);

/* Splits the loaded (not yet packed) model m for rank comm->rank of comm->size: slices
 * its weights, makes hp local and sets m->shard. mapped: the weights are in a file
 * mapping whose pages may be dropped once copied. Returns 0, or -1 with a message
 * (the model is then still whole; free it). */
int shard_split_model(llama_model *m, collective *comm, bool mapped, char *err, size_t errsz);

/* out (n_rows, V) = every rank's part (n_rows, its vocab_n logits), each in its
 * columns. Returns 0, or -1 when the group failed. */
int shard_gather_logits(const llama_model *m, const float *part, int n_rows, float *out);

/* x (n floats) summed over the ranks; nothing when the model is whole. Returns 0, or -1
 * when the group failed (the message is in the collective). */
int shard_all_reduce(const llama_model *m, float *x, size_t n);

#endif
