/* shard.c - splitting a llama model over the ranks of a tensor-parallel group (see
 * shard.h): checks that the split is possible, slices each layer's weights at load
 * (before they are packed), and the all-reduce the forward pass calls.
 */
#include "model/shard.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int fail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

static int block_of(enum tensor_type type)
{
    const struct tensor_type_info *info = tensor_type_info(type);
    return info ? info->block_elems : 1;
}

int shard_check(const llama_hparams *hp, int size, enum tensor_type wo_type, enum tensor_type down_type,
                char *err, size_t errsz)
{
    if (size < 1)
        return fail(err, errsz, "tensor-parallel size %d: must be at least 1", size);
    if (hp->n_heads % size || hp->n_kv_heads % size)
        return fail(err, errsz,
                    "cannot split this model over %d tensor-parallel ranks: it has %d attention heads and %d "
                    "key/value heads, and both must be divisible by %d",
                    size, hp->n_heads, hp->n_kv_heads, size);
    if (hp->ffn_dim % size)
        return fail(err, errsz,
                    "cannot split this model over %d tensor-parallel ranks: its feed-forward width %d is not "
                    "divisible by %d",
                    size, hp->ffn_dim, size);
    int wo_cols = hp->n_heads / size * hp->head_dim, down_cols = hp->ffn_dim / size;
    int wo_block = block_of(wo_type), down_block = block_of(down_type);
    if (wo_cols % wo_block)
        return fail(err, errsz,
                    "cannot split this model over %d tensor-parallel ranks: each rank's %d columns of "
                    "attn_output would cut its %s blocks of %d values",
                    size, wo_cols, tensor_type_info(wo_type)->name, wo_block);
    if (down_cols % down_block)
        return fail(err, errsz,
                    "cannot split this model over %d tensor-parallel ranks: each rank's %d columns of ffn_down "
                    "would cut its %s blocks of %d values",
                    size, down_cols, tensor_type_info(down_type)->name, down_block);
    return 0;
}

/* Keeps rows [first, first+n) of w: a pointer into the same data. */
static void slice_rows(llama_weight *w, int first, int n)
{
    w->data = (const uint8_t *)w->data + tensor_row_bytes(w->type, w->cols) * (size_t)first;
    w->rows = n;
}

/* Keeps columns [first, first+n) of w: a copy of each row's part (the caller checked
 * that first and n are whole blocks). The whole original's mapped pages are dropped
 * afterwards, as packing does for the rows it replaces. */
static int slice_cols(llama_weight *w, int first, int n, bool mapped)
{
    size_t src_row = tensor_row_bytes(w->type, w->cols), dst_row = tensor_row_bytes(w->type, n);
    size_t skip = tensor_row_bytes(w->type, first);
    uint8_t *copy = malloc(dst_row * (size_t)w->rows);
    if (copy == NULL)
        return -1;
    for (int i = 0; i < w->rows; i++)
        memcpy(copy + dst_row * i, (const uint8_t *)w->data + src_row * i + skip, dst_row);
    if (mapped) {
        long page = sysconf(_SC_PAGESIZE);
        uintptr_t begin = ((uintptr_t)w->data + page - 1) / page * page;
        uintptr_t end = ((uintptr_t)w->data + src_row * w->rows) / page * page;
        if (end > begin)
            madvise((void *)begin, end - begin, MADV_DONTNEED);
    }
    w->data = copy;
    w->owned = copy;
    w->cols = n;
    return 0;
}

/* A bias of the kept rows, moved to the front of its array (NULL stays NULL). */
static void slice_vector(float *v, int first, int n)
{
    if (v) memmove(v, v + first, sizeof(float) * (size_t)n);
}

/* The rows of the output head rank r of N computes: V split as evenly as it goes. */
static void vocab_share(int V, int N, int r, int *first, int *n)
{
    int base = V / N, extra = V % N;
    *first = r * base + (r < extra ? r : extra);
    *n = base + (r < extra ? 1 : 0);
}

int shard_split_model(llama_model *m, collective *comm, bool mapped, char *err, size_t errsz)
{
    llama_hparams *hp = &m->hp;
    int N = comm->size, r = comm->rank;
    for (int i = 0; i < hp->n_layers; i++)   /* layers may be quantized differently */
        if (shard_check(hp, N, m->layers[i].wo.type, m->layers[i].w_down.type, err, errsz))
            return -1;
    llama_shard *sh = calloc(1, sizeof *sh);
    if (sh == NULL)
        return fail(err, errsz, "out of memory");
    *sh = (llama_shard){.rank = r, .size = N, .comm = comm, .n_heads = hp->n_heads,
                        .n_kv_heads = hp->n_kv_heads, .ffn_dim = hp->ffn_dim};
    int HS = hp->head_dim, qd = hp->n_heads / N * HS, kvd = hp->n_kv_heads / N * HS, f = hp->ffn_dim / N;
    for (int i = 0; i < hp->n_layers; i++) {
        llama_layer *l = &m->layers[i];
        slice_rows(&l->wq, r * qd, qd);
        slice_rows(&l->wk, r * kvd, kvd);
        slice_rows(&l->wv, r * kvd, kvd);
        slice_vector(l->bq, r * qd, qd);
        slice_vector(l->bk, r * kvd, kvd);
        slice_vector(l->bv, r * kvd, kvd);
        slice_rows(&l->w_gate, r * f, f);
        slice_rows(&l->w_up, r * f, f);
        if (slice_cols(&l->wo, r * qd, qd, mapped) || slice_cols(&l->w_down, r * f, f, mapped)) {
            free(sh);   /* the copies made so far are owned by their weights, freed with the model */
            return fail(err, errsz, "out of memory slicing layer %d", i);
        }
    }
    vocab_share(hp->n_vocab, N, r, &sh->vocab_first, &sh->vocab_n);
    slice_rows(&m->output, sh->vocab_first, sh->vocab_n);   /* tied: tok_embd itself stays whole */
    hp->n_heads /= N;
    hp->n_kv_heads /= N;
    hp->ffn_dim = f;
    m->shard = sh;
    return 0;
}

int shard_gather_logits(const llama_model *m, const float *part, int n_rows, float *out)
{
    const llama_shard *sh = m->shard;
    int V = m->hp.n_vocab, first, n;
    float *piece = malloc(sizeof(float) * (size_t)n_rows * (size_t)(V / sh->size + 1));
    if (piece == NULL)
        return -1;
    for (int r = 0; r < sh->size; r++) {   /* each rank in turn sends its columns */
        vocab_share(V, sh->size, r, &first, &n);
        size_t bytes = sizeof(float) * (size_t)n_rows * (size_t)n;
        if (r == sh->rank)
            memcpy(piece, part, bytes);
        if (collective_broadcast(sh->comm, piece, bytes, r)) {
            free(piece);
            return -1;
        }
        for (int row = 0; row < n_rows; row++)
            memcpy(out + (size_t)row * V + first, piece + (size_t)row * n, sizeof(float) * (size_t)n);
    }
    free(piece);
    return 0;
}

int shard_all_reduce(const llama_model *m, float *x, size_t n)
{
    if (m->shard == NULL || m->shard->size == 1)
        return 0;
    return collective_all_reduce_sum_f32(m->shard->comm, x, n);
}
