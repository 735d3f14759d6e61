/* llama.h - the llama-family transformer: weights from a GGUF file and the forward pass.
 *
 * One implementation covers llama, mistral, SmolLM (llama with tied embeddings) and
 * qwen2 (q/k/v biases, NeoX RoPE): they differ only in metadata and optional tensors.
 * Every shape is read from the metadata and checked against the tensors.
 *
 * Notation (as in llm.c): T tokens in a chunk, C model width, NH query heads, NKV
 * key/value heads, HS head size, F feed-forward width, V vocabulary, L layers.
 *
 * A llama_model is read-only once loaded (weights stay in the file mapping) and can be
 * shared; a llama_state is one sequence's KV cache and scratch, used by one thread of
 * control at a time (the forward pass itself fans out over the thread pool). Keys and
 * values live in a paged cache (model/kv_cache.h): a session's state has a private one
 * of n_ctx positions; a batch's sequences share one pool through their block tables.
 */
#ifndef CITADEL_LLAMA_H
#define CITADEL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/threadpool.h"
#include "cpu/matmul.h"
#include "gguf/gguf.h"
#include "model/kv_cache.h"

struct collective;   /* parallel/collective.h */

enum rope_mode { ROPE_NORMAL = 0, ROPE_NEOX = 1 };

typedef struct llama_hparams {
    char arch[32];
    int n_vocab;      /* V */
    int dim;          /* C */
    int n_layers;     /* L */
    int n_heads;      /* NH */
    int n_kv_heads;   /* NKV (NH for plain multi-head attention) */
    int head_dim;     /* HS */
    int ffn_dim;      /* F */
    int n_ctx_train;  /* the context length the model was trained with */
    int n_rot;        /* dimensions of each head that RoPE rotates (<= HS) */
    float rms_eps;
    float rope_base;        /* rope.freq_base, 10000 when absent */
    float rope_pos_scale;   /* 1 / rope.scaling.factor for linear scaling, else 1 */
    enum rope_mode rope_mode;
    bool tied_embeddings;   /* output projection is token_embd */
} llama_hparams;

/* A weight matrix (OC, C) in the mapping, in its stored type. */
/* Larger heads are refused at load (no published llama-family model has them). */
#define LLAMA_MAX_HEAD_DIM 512

typedef struct llama_weight {
    const void *data;       /* in the GGUF mapping */
    enum tensor_type type;
    int rows;   /* OC */
    int cols;   /* C */
    packed_matrix *packed;  /* the same, rearranged for the fastest kernel; NULL if none */
    void *owned;            /* data when it is a copy owned by the model (a shard's columns) */
} llama_weight;

typedef struct llama_layer {
    float *attn_norm;               /* (C) */
    llama_weight wq, wk, wv, wo;    /* (NH*HS, C), (NKV*HS, C), (NKV*HS, C), (C, NH*HS) */
    float *bq, *bk, *bv;            /* qwen2 biases, NULL when absent */
    float *ffn_norm;                /* (C) */
    llama_weight w_gate, w_up;      /* (F, C) */
    llama_weight w_down;            /* (C, F) */
} llama_layer;

/* A tensor-parallel rank's share of the model (model/shard.h). */
typedef struct llama_shard llama_shard;

typedef struct llama_model {
    llama_hparams hp;               /* on a shard: n_heads, n_kv_heads, ffn_dim are this rank's */
    llama_shard *shard;             /* NULL: the whole model runs here */
    llama_weight tok_embd;          /* (V, C) */
    float *output_norm;             /* (C) */
    llama_weight output;            /* (V, C); tok_embd when tied */
    float *rope_freq_factors;       /* (n_rot/2) llama3-style scaling, NULL when absent */
    llama_layer *layers;            /* L */
} llama_model;

/* Reads hyper-parameters and weights from f (which must outlive the model). Returns
 * 0, or -1 with a message naming the missing key, bad shape or unsupported type. */
int llama_model_load(llama_model **out, const gguf_file *f, char *err, size_t errsz);
/* The same for rank comm->rank of a tensor-parallel group (comm NULL: the whole model):
 * only this rank's slice is kept (model/shard.h), and the forward pass all-reduces over
 * comm, so every rank of the group must run the same forward passes in the same order. */
int llama_model_load_shard(llama_model **out, const gguf_file *f, struct collective *comm, char *err,
                           size_t errsz);
void llama_model_free(llama_model *m);

/* The shape of the KV cache the model's attention reads: its layers, head size and the
 * KV heads this process computes. */
kv_cache_shape llama_kv_shape(const llama_model *m, enum kv_dtype dtype, int block_tokens);

/* One sequence: its KV cache (n_ctx positions, f16) and the activations of a chunk of
 * up to max_batch tokens. */
typedef struct llama_state llama_state;

/* NULL on allocation failure. */
llama_state *llama_state_create(const llama_model *m, int n_ctx, int max_batch, int n_threads);
/* The same with the cache's storage type chosen. */
llama_state *llama_state_create_kv(const llama_model *m, int n_ctx, int max_batch, int n_threads,
                                   enum kv_dtype dtype);
void llama_state_free(llama_state *s);
int llama_state_n_ctx(const llama_state *s);
int llama_state_n_past(const llama_state *s);    /* positions filled in the cache */
/* Forgets positions >= n_past (n_past <= current): rewind for a new prompt. */
void llama_state_truncate(llama_state *s, int n_past);
threadpool *llama_state_pool(llama_state *s);

/* The LoRA adapter (model/lora.h) this sequence's tokens run with from now on; NULL
 * for the base model. The adapter is only read, so one may serve many sequences at
 * once; it must outlive its use. Tokens already in the cache keep what they were
 * computed with: callers truncate the cache when they change a sequence's adapter. */
struct llama_lora;
void llama_state_set_lora(llama_state *s, const struct llama_lora *lora);
const struct llama_lora *llama_state_lora(const llama_state *s);

/* Runs tokens[0..n) at positions n_past.. and appends them to the cache. Writes the
 * logits (V floats per token) of every token into logits when all_logits, else of the
 * last token only. logits may be NULL. Returns 0, or -1 when the tokens do not fit the
 * context or an id is out of range. */
int llama_forward(llama_state *s, const int32_t *tokens, int n, float *logits, bool all_logits);

/* A workspace for llama_forward_batch: activation buffers for max_batch tokens and a
 * thread pool, but no KV cache of its own. max_ctx bounds the context of the
 * sequences it may serve. NULL on allocation failure; free with llama_state_free. */
llama_state *llama_workspace_create(const llama_model *m, int max_ctx, int max_batch, int n_threads);

/* One sequence's part of a batch: n tokens written at its positions kv->n_tokens.. ;
 * the logits of its last token go to logits (V floats) unless that is NULL. lora is
 * the sequence's adapter (NULL: the base model), as llama_state_set_lora says. */
typedef struct llama_batch_seq {
    kv_seq *kv;
    const int32_t *tokens;
    int n;
    float *logits;
    const struct llama_lora *lora;
} llama_batch_seq;

/* Runs the tokens of several sequences in one pass over the weights (the matrix
 * products see all of them at once; attention reads each token's own sequence through
 * its block table), using work's buffers and pool. At most one entry per sequence; the
 * total must fit work's max_batch, each sequence's blocks must already hold room for its
 * tokens (kv_seq_reserve) within work's max_ctx, and its cache must have the model's
 * shape (llama_kv_shape). Advances each kv->n_tokens by n. Each sequence gets exactly
 * the logits and cache it would get alone (the kernels compute every token
 * independently). Returns 0, or -1 when the batch does not fit or holds a bad id. */
int llama_forward_batch(llama_state *work, const llama_batch_seq *seqs, int n_seqs);

/* Bytes of weights read per generated token (for bandwidth figures). */
size_t llama_model_weight_bytes(const llama_model *m);

#endif
