/* engine.h - Citadel's inference engine: the one header the services include.
 *
 * The engine loads a GGUF model (weights stay memory-mapped), tokenizes text, renders
 * chat messages with the model's template, and generates tokens with sampling and
 * stop conditions. It knows nothing of services, sockets or protobuf.
 *
 * Objects and their lifetimes:
 *   engine_model    weights + tokenizer + chat template; read-only once open, so one
 *                   model may serve many sessions (on different threads).
 *   engine_session  one sequence: its KV cache, thread pool and token history. A
 *                   session remembers the tokens in its cache, so a new prompt that
 *                   begins with them (a multi-turn chat) only computes the new part.
 *   engine_batch    many sequences at once (continuous batching) over one paged KV
 *                   cache with a prefix cache shared by all of them.
 *
 * KV storage (enum kv_dtype, model/kv_cache.h): KV_F16 (the default), KV_F32 or
 * KV_Q8_0, named "f16", "f32", "q8_0" by kv_dtype_name() / kv_dtype_parse().
 *
 * A typical use:
 *   engine_model_open(&m, path, err, sizeof err);
 *   s = engine_session_create(m, &(engine_session_options){.n_ctx = 2048, .n_threads = 2});
 *   n = engine_tokenize(m, text, len, engine_adds_bos(m), false, ids, cap);
 *   engine_generate(s, ids, n, &params, on_token, user, &result, err, sizeof err);
 */
#ifndef CITADEL_ENGINE_H
#define CITADEL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "model/kv_cache.h"
#include "sample/sample.h"
#include "tokenizer/chat_template.h"

#define ENGINE_VERSION "0.1.0"

typedef struct engine_model engine_model;
typedef struct engine_session engine_session;

/* ---- models ----------------------------------------------------------------------- */

/* Opens and validates the model at path. Returns 0, or -1 with a message in err naming
 * the problem (unreadable file, corrupt GGUF, missing key, unsupported type, ...). */
int engine_model_open(engine_model **out, const char *path, char *err, size_t errsz);
void engine_model_close(engine_model *m);

/* Tensor parallelism: opens rank comm->rank's share of the model for a group of
 * comm->size ranks (parallel/collective.h; comm NULL is engine_model_open). Every rank
 * of the group must then run the same sessions or batches with the same inputs, in
 * the same order: each forward pass all-reduces over comm, and every rank gets the
 * same logits. A model whose heads or FFN width do not divide by the group's size is
 * refused with a message saying so. comm must outlive the model. */
struct collective;
int engine_model_open_shard(engine_model **out, const char *path, struct collective *comm, char *err,
                            size_t errsz);

typedef struct engine_model_info {
    const char *arch;          /* "llama", "qwen2", ... */
    const char *name;          /* general.name, or "" */
    int n_vocab, n_ctx_train, dim, n_layers, n_heads, n_kv_heads, ffn_dim;
    const char *weight_type;   /* type of the largest weights, e.g. "Q4_1" */
    size_t file_bytes;
    size_t weight_bytes_per_token;  /* weight bytes one decode step reads */
    enum chat_family chat_family;
    bool chat_template_known;
} engine_model_info;

engine_model_info engine_model_get_info(const engine_model *m);

/* ---- text ------------------------------------------------------------------------- */

/* Tokenizes text[0..len) into ids (cap entries). Returns the full count (which may
 * exceed cap), or -1 on error. parse_special lets control-token texts such as
 * "<|im_start|>" in the text become those tokens. */
int engine_tokenize(const engine_model *m, const char *text, size_t len, bool add_bos,
                    bool parse_special, int32_t *ids, int cap);
/* Whether prompts of this model start with BOS (tokenizer.ggml.add_bos_token). */
bool engine_adds_bos(const engine_model *m);
int engine_n_vocab(const engine_model *m);
bool engine_is_eog(const engine_model *m, int32_t id);
/* The text of one token (raw bytes; possibly part of a UTF-8 character). Returns the
 * byte count (which may exceed cap), or -1 for a bad id. */
int engine_token_text(const engine_model *m, int32_t id, char *buf, int cap);

/* Renders messages with the model's chat template (see chat_template.h), adding the
 * template's default system prompt where it has one, and the assistant header when
 * add_assistant. Returns a malloc'd string or NULL. */
char *engine_render_chat(const engine_model *m, const chat_message *msgs, size_t n, bool add_assistant);

/* ---- sessions --------------------------------------------------------------------- */

typedef struct engine_session_options {
    int n_ctx;      /* positions in the KV cache; 0 -> min(2048, training context) */
    int n_threads;  /* 0 -> the number of online CPUs */
    int n_batch;    /* prompt tokens per forward chunk; 0 -> 256 */
    enum kv_dtype kv_dtype;   /* KV storage; 0 -> f16 */
} engine_session_options;

/* NULL on allocation failure. */
engine_session *engine_session_create(engine_model *m, const engine_session_options *opt);
void engine_session_free(engine_session *s);
int engine_session_n_ctx(const engine_session *s);
/* Forget the cached tokens. */
void engine_session_reset(engine_session *s);

/* Low-level: appends ids to the sequence and computes their logits (n*V floats when
 * all_logits, else V for the last one). Returns 0, or -1 with a message. */
int engine_session_eval(engine_session *s, const int32_t *ids, int n, float *logits,
                        bool all_logits, char *err, size_t errsz);

/* ---- adapters --------------------------------------------------------------------- */

/* A LoRA adapter (a GGUF LoRA file, as llama.cpp's --lora takes) for one model. It is
 * read-only once open: many generations, in sessions and batches, may use it at once,
 * each naming it in engine_gen_params.adapter, next to others using other adapters or
 * none. Close it only when no generation uses it. */
typedef struct engine_adapter engine_adapter;

/* Returns 0, or -1 with a message (unreadable, not an adapter, made for another model). */
int engine_adapter_open(engine_adapter **out, const engine_model *m, const char *path, char *err, size_t errsz);
void engine_adapter_close(engine_adapter *a);

/* ---- generation ------------------------------------------------------------------- */

#define ENGINE_MAX_STOP 8

typedef struct engine_gen_params {
    const engine_adapter *adapter;           /* NULL: the base model */
    sampler_params sampling;
    int max_tokens;                          /* <= 0: until the context is full */
    const char *stop[ENGINE_MAX_STOP];       /* stop strings, NULL-terminated list */
    bool ignore_eos;                         /* benchmarks: keep going past EOS */
} engine_gen_params;

engine_gen_params engine_default_gen_params(void);

enum engine_finish {
    ENGINE_FINISH_STOP = 0,   /* end-of-generation token or a stop string */
    ENGINE_FINISH_LENGTH,     /* max_tokens or the context filled */
    ENGINE_FINISH_CANCELLED,  /* the callback asked to stop */
};
const char *engine_finish_name(enum engine_finish f);   /* "stop", "length", "cancelled" */

/* Handed to the callback once per generated token. `text` holds the newly complete,
 * valid UTF-8 text that may be shown (it may be empty while a multi-byte character or
 * a possible stop string is pending). */
typedef struct engine_token_event {
    int32_t id;
    const char *text;
    int text_len;
    const sample_result *sample;   /* logprob and top alternatives */
} engine_token_event;

/* Return false to stop generating (client went away, deadline passed). */
typedef bool (*engine_token_fn)(const engine_token_event *ev, void *user);

typedef struct engine_gen_result {
    enum engine_finish finish;
    int n_prompt;           /* prompt tokens */
    int n_cached;           /* of which were already in the session's cache */
    int n_generated;
    int32_t *ids;           /* generated ids (n_generated), malloc'd */
    char *text;             /* generated text, stop string excluded, malloc'd */
    size_t text_len;
    double prefill_seconds, decode_seconds;
} engine_gen_result;

/* Generates after prompt[0..n_prompt). on_token may be NULL. Returns 0 (result filled;
 * free it with engine_gen_result_free), or -1 with a message (prompt too long for the
 * context, bad id, out of memory). */
int engine_generate(engine_session *s, const int32_t *prompt, int n_prompt,
                    const engine_gen_params *params, engine_token_fn on_token, void *user,
                    engine_gen_result *result, char *err, size_t errsz);
void engine_gen_result_free(engine_gen_result *r);

/* ---- batches: many generations, one pass over the weights per step ---------------- */

/* A batch runner serves many generations at once (continuous batching): each step runs
 * one token of every sequence that is generating, plus prompt chunks of those still
 * reading their prompt, in a single forward pass, so the weights stream from memory
 * once per step however many sequences there are. Sequences join at the next step and
 * leave as they finish. Every sequence gets exactly the tokens it would get alone.
 *
 * Memory: keys and values live in one paged cache of kv_cache_bytes, in blocks of
 * kv_block_tokens positions taken as sequences grow and given back when they end. A
 * prompt that begins with blocks another sequence computed (a shared system prompt, the
 * earlier turns of a chat) reuses them instead of computing them again. When the blocks
 * run out, the newest sequences give theirs up (preemption) and are recomputed later
 * from their prompt and the tokens they had generated: slower, never a failure, and
 * with the same tokens. */
typedef struct engine_batch engine_batch;

typedef struct engine_batch_options {
    int n_ctx;        /* positions per sequence; 0 -> min(2048, training context) */
    int max_seqs;     /* sequences at once; 0 -> 16 */
    int step_tokens;  /* tokens per step (decodes first, then prompt chunks); 0 -> 256 */
    int n_threads;    /* 0 -> the number of online CPUs */
    size_t kv_cache_bytes;    /* the paged cache; 0 -> room for max_seqs full contexts */
    enum kv_dtype kv_dtype;   /* 0 -> f16 */
    int kv_block_tokens;      /* positions per block; 0 -> 16 */
} engine_batch_options;

/* What the batch's cache holds and has done, for metrics. */
typedef struct engine_batch_stats {
    int kv_blocks_total;
    int kv_blocks_used;       /* held by running sequences */
    int kv_blocks_free;       /* not held: empty, or cached for prefix reuse (below) */
    int kv_blocks_cached;     /* of the free ones, those holding an indexed prefix */
    int kv_block_tokens;
    size_t kv_block_bytes;
    uint64_t prefix_lookup_tokens;   /* prompt tokens of admitted sequences */
    uint64_t prefix_hit_tokens;      /* of which came from the prefix cache */
    uint64_t prefill_tokens;         /* tokens run to read prompts (and to recompute) */
    uint64_t preemptions;            /* sequences that gave up their blocks */
    uint64_t evictions;              /* cached blocks reused for new content */
} engine_batch_stats;

/* Called once per generation when it ends (finished, stopped or cancelled); the result
 * is freed after the call returns. */
typedef void (*engine_done_fn)(uint64_t id, const engine_gen_result *result, void *user);

/* Returns NULL with a message in err when out of memory or when kv_cache_bytes cannot
 * hold one full context (the message names the least that can). */
engine_batch *engine_batch_create(engine_model *m, const engine_batch_options *opt, char *err, size_t errsz);
void engine_batch_free(engine_batch *b);

/* Queues a generation under the caller's id; it starts at the next step. The prompt and
 * params are copied. Returns 0, or -1 with a message (prompt empty or longer than the
 * context, bad id, batch full, out of memory). */
int engine_batch_add(engine_batch *b, uint64_t id, const int32_t *prompt, int n_prompt,
                     const engine_gen_params *params, engine_token_fn on_token, engine_done_fn on_done,
                     void *user, char *err, size_t errsz);

/* Ends the generation with this id (on_done reports "cancelled"). False if unknown. */
bool engine_batch_cancel(engine_batch *b, uint64_t id);

/* Runs one step. Returns the number of generations still going on, or -1 if the forward
 * pass failed (every generation is then ended as cancelled). */
int engine_batch_step(engine_batch *b);
int engine_batch_active(const engine_batch *b);
engine_batch_stats engine_batch_get_stats(const engine_batch *b);
/* Bytes of cache one position of this model takes with this storage type. */
size_t engine_kv_bytes_per_token(const engine_model *m, enum kv_dtype dtype);

/* ---- benchmarks and tests ----------------------------------------------------------- */

/* The shape of a model: used to write random-weight models for benchmarks. */
typedef struct engine_model_shape {
    const char *name;
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, ffn_dim, n_ctx;
    bool tied_embeddings;
} engine_model_shape;

/* The shape named "smollm2-135m" or "tinyllama-1.1b", or NULL. */
const engine_model_shape *engine_shape_by_name(const char *name);

/* Writes a llama-architecture GGUF of the given shape with random weights of `type`
 * (norms F32) and a byte-level SentencePiece vocabulary, so that it loads, tokenizes
 * and runs like a real model. Returns 0, or -1 with a message. */
int engine_write_random_model(const char *path, const engine_model_shape *shape,
                              enum tensor_type type, uint64_t seed, char *err, size_t errsz);

#endif
