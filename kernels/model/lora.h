/* lora.h - LoRA adapters for a llama model: low-rank updates to its projections.
 *
 * An adapted projection computes y = x W^T + scale * (x A^T) B^T, with W (OC, C) the
 * frozen base weight, A (r, C), B (OC, r) and scale = alpha / r. Only A and B are
 * trained (kernels/train), so an adapter is a few megabytes next to the model, and
 * several adapters can serve on one base at once: each sequence points at its own
 * (llama_state_set_lora), or at none.
 *
 * On disk an adapter is a GGUF LoRA file in the layout llama.cpp loads with --lora:
 * general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32),
 * general.architecture the base's, and per adapted matrix two tensors
 * "blk.N.<name>.weight.lora_a" of ne [C, r] (A row-major) and ".lora_b" of ne [r, OC].
 *
 * The same struct holds an adapter's gradients and its optimizer moments (the trainer
 * makes three more of the same shape), so the shape logic lives in one place.
 */
#ifndef CITADEL_LORA_H
#define CITADEL_LORA_H

#include <stdbool.h>
#include <stddef.h>

#include "model/llama.h"

/* The projections an adapter may change, in a layer's order. */
enum lora_target {
    LORA_Q, LORA_K, LORA_V, LORA_O,         /* attention */
    LORA_GATE, LORA_UP, LORA_DOWN,          /* feed-forward (optional) */
    LORA_N_TARGETS
};
#define LORA_ATTENTION_TARGETS ((1u << LORA_Q) | (1u << LORA_K) | (1u << LORA_V) | (1u << LORA_O))
#define LORA_MLP_TARGETS ((1u << LORA_GATE) | (1u << LORA_UP) | (1u << LORA_DOWN))

/* One adapted matrix: a (r, in) and b (out, r), row-major f32; NULL when not adapted. */
typedef struct lora_matrix {
    float *a, *b;
    int in, out;
} lora_matrix;

typedef struct llama_lora {
    char arch[32];          /* the base's general.architecture */
    int n_layers, rank;
    float alpha, scale;     /* scale = alpha / rank (1 when alpha is 0, as llama.cpp does) */
    unsigned targets;       /* bit t set: target t adapted in every layer */
    lora_matrix *m;         /* (n_layers, LORA_N_TARGETS) */
} llama_lora;

/* "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down". */
const char *lora_target_name(enum lora_target t);

/* An adapter for model m with every value zero. targets is a mask of 1 << LORA_*.
 * NULL when out of memory or rank < 1. */
llama_lora *lora_create(const llama_model *m, int rank, float alpha, unsigned targets);
/* A zeroed adapter of the same shape (gradients, optimizer moments). */
llama_lora *lora_create_like(const llama_lora *l);
void lora_free(llama_lora *l);

/* Calls fn on every parameter array of l, in a fixed order (layer, target, a then b),
 * so that several adapters of one shape can be walked together. */
typedef void (*lora_array_fn)(float *values, size_t n, void *user);
void lora_for_each_array(const llama_lora *l, lora_array_fn fn, void *user);
/* The number of trainable values. */
size_t lora_n_params(const llama_lora *l);
/* The i-th array (in lora_for_each_array's order) and its length; NULL past the end. */
float *lora_array(const llama_lora *l, size_t i, size_t *n);

/* y (T, out) += scale * (x (T, in) A^T) B^T. tmp holds T * rank floats. */
void lora_matrix_apply(const lora_matrix *lm, int rank, float scale, float *y, const float *x,
                       int T, float *tmp);

/* Writes l as a GGUF LoRA file (F32 tensors). Returns 0, or -1 with a message. */
int lora_save(const llama_lora *l, const char *path, char *err, size_t errsz);

/* Adds l's tensors and metadata to a GGUF being written (checkpoints hold the adapter
 * plus the optimizer's state); prefix is put before every tensor name. */
void lora_write_tensors(const llama_lora *l, gguf_writer *w, const char *prefix);
/* Reads tensors written with lora_write_tensors(prefix) into l (same shape). Returns 0,
 * or -1 with a message. */
int lora_read_tensors(llama_lora *l, const gguf_file *f, const char *prefix, char *err, size_t errsz);

/* Reads a GGUF LoRA file made for model m (ours or llama.cpp's convert_lora_to_gguf:
 * F32, F16 or BF16 tensors, any subset of the targets). Returns 0, or -1 with a message
 * naming the problem (not an adapter, another architecture, a shape that does not fit
 * the model, ranks that differ). */
int lora_load(llama_lora **out, const llama_model *m, const char *path, char *err, size_t errsz);

#endif
