/* train.h - the forward and backward passes of a llama model with a LoRA adapter, for
 * fine-tuning: the base stays frozen, gradients flow through all of it but are kept
 * only for the adapter's A and B (model/lora.h).
 *
 * Notation as in llama.h: T tokens, C width, NH/NKV heads, HS head size, F feed-forward
 * width, V vocabulary, r the adapter's rank.
 *
 * The base may be quantized: its matrices are dequantized once to f32 when the context
 * is made (the backward pass multiplies by W as well as by W^T, which the inference
 * kernels do not), and every matrix product goes to BLAS (OpenBLAS's cblas_sgemm,
 * multithreaded). Activations of every layer are kept for the backward pass, so a
 * context serves sequences of up to max_T tokens.
 *
 * The loss is the mean cross-entropy of the tokens a mask selects (the assistant's or
 * the completion's tokens), each predicted from those before it. This is a reference
 * implementation in the spirit of llm.c: each layer is an x_forward / x_backward pair,
 * and tests/unit/test_train.c checks the gradients against finite differences.
 */
#ifndef CITADEL_TRAIN_H
#define CITADEL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"
#include "model/lora.h"

typedef struct train_ctx train_ctx;

/* A context for model m: its frozen weights in f32 and activations for max_T tokens,
 * products on n_threads threads. NULL with a message when out of memory. */
train_ctx *train_ctx_create(const llama_model *m, int max_T, int n_threads, char *err, size_t errsz);
void train_ctx_free(train_ctx *c);
int train_ctx_max_tokens(const train_ctx *c);

/* How one sequence is run. */
typedef struct train_pass {
    float dropout;          /* LoRA dropout on the adapted projections' inputs, [0, 1) */
    uint64_t dropout_seed;  /* the masks are a function of this seed and the position */
    float grad_scale;       /* gradients of grad_scale * (sum of the losses) are added */
} train_pass;

/* Runs tokens[0..n) (n <= max_T + 1) through the model with adapter l and scores every
 * token i >= 1 whose mask[i] is set, predicted from tokens[0..i). Returns the sum of
 * those cross-entropies in nats (0 when none is scored) and sets *n_scored; -1 when the
 * sequence does not fit or holds a bad id. When grads is not NULL (an adapter of l's
 * shape), adds the gradient of pass->grad_scale * sum to it. */
double train_sequence(train_ctx *c, const llama_lora *l, llama_lora *grads, const int32_t *tokens,
                      const uint8_t *mask, int n, const train_pass *pass, int *n_scored);

#endif
