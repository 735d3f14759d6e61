/* random_model.c - writes llama-architecture GGUF files with random weights in the
 * shape of real models, so benchmarks measure the engine on real shapes and weight
 * types without shipping multi-gigabyte files (engine_write_random_model in engine.h).
 *
 * The vocabulary is SentencePiece-style: <unk>, <s>, </s>, the 256 byte tokens, then
 * filler pieces, so any text tokenizes (byte fallback) and the file loads like a real
 * model. The text such a model writes is meaningless; only its speed is of interest.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "engine.h"

static const engine_model_shape shapes[] = {
    {"smollm2-135m", 49152, 576, 30, 9, 3, 1536, 8192, true},
    {"tinyllama-1.1b", 32000, 2048, 22, 32, 4, 5632, 2048, false},
};

const engine_model_shape *engine_shape_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(shapes[i].name, name))
            return &shapes[i];
    return NULL;
}

/* xorshift64*: fast, and plenty for benchmark weights. */
static float rand_uniform(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return (float)((x * 0x2545F4914F6CDD1DULL) >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* A (rows, cols) matrix of uniform values in +-1/sqrt(cols), stored as `type`. */
static int add_matrix(gguf_writer *w, const char *name, enum tensor_type type, int rows, int cols,
                      uint64_t *rng)
{
    size_t row_bytes = tensor_row_bytes(type, cols);
    uint8_t *data = malloc(row_bytes * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)cols);
    if (data == NULL || row == NULL) {
        free(data);
        free(row);
        return -1;
    }
    float scale = 1.0f / sqrtf((float)cols);
    int rc = 0;
    for (int r = 0; r < rows && rc == 0; r++) {
        for (int c = 0; c < cols; c++)
            row[c] = rand_uniform(rng) * scale;
        rc = quantize_row(type, row, data + row_bytes * (size_t)r, cols);
    }
    if (rc == 0)
        gguf_writer_add_tensor(w, name, type, 2, (int64_t[]){cols, rows}, data);
    free(data);
    free(row);
    return rc;
}

static void add_norm(gguf_writer *w, const char *name, int n)
{
    float *ones = malloc(sizeof(float) * (size_t)n);
    if (ones == NULL)
        return;
    for (int i = 0; i < n; i++)
        ones[i] = 1.0f;
    gguf_writer_add_tensor(w, name, TENSOR_F32, 1, (int64_t[]){n}, ones);
    free(ones);
}

static int add_vocab(gguf_writer *w, int n_vocab)
{
    char **tokens = calloc((size_t)n_vocab, sizeof *tokens);
    float *scores = malloc(sizeof(float) * (size_t)n_vocab);
    int32_t *types = malloc(sizeof(int32_t) * (size_t)n_vocab);
    int rc = -1;
    if (tokens == NULL || scores == NULL || types == NULL)
        goto done;
    for (int i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i == 0) snprintf(buf, sizeof buf, "<unk>");
        else if (i == 1) snprintf(buf, sizeof buf, "<s>");
        else if (i == 2) snprintf(buf, sizeof buf, "</s>");
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3);
        else snprintf(buf, sizeof buf, "\xe2\x96\x81t%d", i);
        tokens[i] = strdup(buf);
        if (tokens[i] == NULL)
            goto done;
        scores[i] = i < 259 ? 0.0f : -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
    }
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (size_t)n_vocab);
    gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, (size_t)n_vocab);
    gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, (size_t)n_vocab);
    gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    rc = 0;
done:
    for (int i = 0; tokens && i < n_vocab; i++)
        free(tokens[i]);
    free(tokens);
    free(scores);
    free(types);
    return rc;
}

static void add_hparams(gguf_writer *w, const engine_model_shape *sh)
{
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_str(w, "general.name", sh->name);
    gguf_writer_add_u32(w, "llama.context_length", (uint32_t)sh->n_ctx);
    gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)sh->dim);
    gguf_writer_add_u32(w, "llama.block_count", (uint32_t)sh->n_layers);
    gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)sh->ffn_dim);
    gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)sh->n_heads);
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)sh->n_kv_heads);
    gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)(sh->dim / sh->n_heads));
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
}

static int add_layer(gguf_writer *w, const engine_model_shape *sh, int i, enum tensor_type type,
                     uint64_t *rng)
{
    int C = sh->dim, HS = sh->dim / sh->n_heads, KD = sh->n_kv_heads * HS;
    char name[64];
#define LAYER_NAME(suffix) (snprintf(name, sizeof name, "blk.%d.%s", i, suffix), name)
    add_norm(w, LAYER_NAME("attn_norm.weight"), C);
    add_norm(w, LAYER_NAME("ffn_norm.weight"), C);
    return add_matrix(w, LAYER_NAME("attn_q.weight"), type, C, C, rng) ||
           add_matrix(w, LAYER_NAME("attn_k.weight"), type, KD, C, rng) ||
           add_matrix(w, LAYER_NAME("attn_v.weight"), type, KD, C, rng) ||
           add_matrix(w, LAYER_NAME("attn_output.weight"), type, C, C, rng) ||
           add_matrix(w, LAYER_NAME("ffn_gate.weight"), type, sh->ffn_dim, C, rng) ||
           add_matrix(w, LAYER_NAME("ffn_up.weight"), type, sh->ffn_dim, C, rng) ||
           add_matrix(w, LAYER_NAME("ffn_down.weight"), type, C, sh->ffn_dim, rng)
               ? -1 : 0;
#undef LAYER_NAME
}

int engine_write_random_model(const char *path, const engine_model_shape *sh,
                              enum tensor_type type, uint64_t seed, char *err, size_t errsz)
{
    const struct tensor_type_info *info = tensor_type_info(type);
    if (info == NULL || !info->supported || sh->dim % info->block_elems ||
        sh->ffn_dim % info->block_elems) {
        snprintf(err, errsz, "cannot write %s weights for shape %s", info ? info->name : "unknown",
                 sh->name);
        return -1;
    }
    gguf_writer *w = gguf_writer_create();
    if (w == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    int rc = 0;
    add_hparams(w, sh);
    rc |= add_vocab(w, sh->n_vocab);
    rc |= add_matrix(w, "token_embd.weight", type, sh->n_vocab, sh->dim, &rng);
    if (!sh->tied_embeddings)
        rc |= add_matrix(w, "output.weight", type, sh->n_vocab, sh->dim, &rng);
    add_norm(w, "output_norm.weight", sh->dim);
    for (int i = 0; i < sh->n_layers && rc == 0; i++)
        rc |= add_layer(w, sh, i, type, &rng);
    if (rc != 0)
        snprintf(err, errsz, "out of memory or unwritable type while building %s", sh->name);
    else
        rc = gguf_writer_save(w, path, err, errsz);
    gguf_writer_free(w);
    return rc;
}
