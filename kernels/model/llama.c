/* llama.c - loading and running a llama-family transformer (see llama.h).
 *
 * The forward pass for a chunk of T tokens, read top to bottom in llama_forward():
 *
 *   x = embed(tokens)                                   (T, C)
 *   for each layer:
 *     xn = rmsnorm(x) * attn_norm
 *     q, k, v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv)
 *     rope(q, k) at positions n_past..n_past+T-1; append k, v to the cache
 *     a = causal softmax(q k^T / sqrt(HS)) v   (grouped: NH/NKV query heads per kv head)
 *     x += a Wo^T
 *     xn = rmsnorm(x) * ffn_norm
 *     x += (silu(xn Wgate^T) * (xn Wup^T)) Wdown^T
 *   logits = rmsnorm(x) * output_norm  Wout^T
 *
 * The matrix products (cpu/matmul.h) take nearly all the time; they see the whole
 * chunk at once so prefill is matrix-matrix, not one token at a time.
 */
#include "model/llama.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/matmul.h"
#include "cpu/quant.h"
#include "model/lora.h"
#include "model/shard.h"

/* ---- loading ---------------------------------------------------------------------- */

/* Writes the message into err and returns -1, so a check reads `return fail(...)`. */
static int fail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

static bool arch_key_u64(const gguf_file *f, const char *arch, const char *suffix, uint64_t *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u64(f, key, out);
}

static bool arch_key_f64(const gguf_file *f, const char *arch, const char *suffix, double *out)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f64(f, key, out);
}

static bool arch_supported(const char *arch)
{
    return !strcmp(arch, "llama") || !strcmp(arch, "mistral") || !strcmp(arch, "qwen2");
}

/* A required positive integer <arch>.<suffix> that fits an int. */
static int read_dim(const gguf_file *f, const char *arch, const char *suffix, int *out,
                    char *err, size_t errsz)
{
    uint64_t v;
    if (!arch_key_u64(f, arch, suffix, &v))
        return fail(err, errsz, "model lacks metadata key '%s.%s'", arch, suffix);
    if (v == 0 || v > (1u << 24))
        return fail(err, errsz, "metadata key '%s.%s' has an implausible value %llu", arch, suffix,
                    (unsigned long long)v);
    *out = (int)v;
    return 0;
}

static int read_hparams(llama_hparams *hp, const gguf_file *f, char *err, size_t errsz)
{
    gguf_str arch;
    if (!gguf_get_str(f, "general.architecture", &arch))
        return fail(err, errsz, "model lacks metadata key 'general.architecture'");
    if (arch.len >= sizeof hp->arch) arch.len = sizeof hp->arch - 1;
    memcpy(hp->arch, arch.ptr, arch.len);
    hp->arch[arch.len] = '\0';
    if (!arch_supported(hp->arch))
        return fail(err, errsz, "unsupported architecture '%s' (llama, mistral and qwen2 are)",
                    hp->arch);

    const char *a = hp->arch;
    if (read_dim(f, a, "embedding_length", &hp->dim, err, errsz) ||
        read_dim(f, a, "block_count", &hp->n_layers, err, errsz) ||
        read_dim(f, a, "feed_forward_length", &hp->ffn_dim, err, errsz) ||
        read_dim(f, a, "attention.head_count", &hp->n_heads, err, errsz))
        return -1;
    uint64_t v;
    hp->n_kv_heads = arch_key_u64(f, a, "attention.head_count_kv", &v) ? (int)v : hp->n_heads;
    hp->head_dim = hp->dim / hp->n_heads;
    if (arch_key_u64(f, a, "attention.key_length", &v)) hp->head_dim = (int)v;
    hp->n_ctx_train = arch_key_u64(f, a, "context_length", &v) ? (int)v : 2048;
    hp->n_rot = arch_key_u64(f, a, "rope.dimension_count", &v) ? (int)v : hp->head_dim;

    double d;
    hp->rms_eps = arch_key_f64(f, a, "attention.layer_norm_rms_epsilon", &d) ? (float)d : 1e-5f;
    hp->rope_base = arch_key_f64(f, a, "rope.freq_base", &d) ? (float)d : 10000.0f;
    hp->rope_pos_scale = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    gguf_str scaling;
    bool has_scaling_type = gguf_get_str(f, key, &scaling);
    if (arch_key_f64(f, a, "rope.scaling.factor", &d) && d > 0 &&
        (!has_scaling_type || gguf_str_eq(scaling, "linear")))
        hp->rope_pos_scale = (float)(1.0 / d);
    else if (arch_key_f64(f, a, "rope.scale_linear", &d) && d > 0)
        hp->rope_pos_scale = (float)(1.0 / d);
    if (has_scaling_type && !gguf_str_eq(scaling, "linear") && !gguf_str_eq(scaling, "none"))
        fprintf(stderr, "warning: rope scaling type '%.*s' is not applied (positions used as they are)\n",
                (int)scaling.len, scaling.ptr);
    hp->rope_mode = !strcmp(a, "qwen2") ? ROPE_NEOX : ROPE_NORMAL;

    if (hp->n_kv_heads <= 0 || hp->n_heads % hp->n_kv_heads != 0) {
        snprintf(err, errsz, "head_count %d is not a multiple of head_count_kv %d", hp->n_heads,
                 hp->n_kv_heads);
        return -1;
    }
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->head_dim > LLAMA_MAX_HEAD_DIM || hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        snprintf(err, errsz, "bad head size %d / rope dimensions %d", hp->head_dim, hp->n_rot);
        return -1;
    }
    return 0;
}

/* Finds a 2-D weight of shape (rows, cols) in a type the kernels handle. */
static int load_weight(llama_weight *w, const gguf_file *f, const char *name, int rows, int cols,
                       char *err, size_t errsz)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (t == NULL)
        return fail(err, errsz, "model lacks tensor '%s'", name);
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errsz, "tensor '%s' has shape [%lld, %lld], expected [%d, %d]", name,
                 (long long)t->ne[0], (long long)t->ne[1], cols, rows);
        return -1;
    }
    const struct tensor_type_info *info = tensor_type_info(t->type);
    if (info == NULL || !info->supported) {
        snprintf(err, errsz, "tensor '%s' has type %s, which the engine does not compute with",
                 name, info ? info->name : "unknown");
        return -1;
    }
    w->data = t->data;
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->packed = NULL;
    return 0;
}

/* Packs a weight for the fast kernels. The packed copy replaces the original in every
 * product, so the original's pages are handed back to the page cache (they are read
 * again from the file if ever needed), keeping memory near one copy of the weights. */
static void pack_weight(llama_weight *w, bool mapped)
{
    w->packed = matmul_pack(w->data, w->type, w->rows, w->cols);
    if (w->packed == NULL || !mapped || w->owned)
        return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)w->data + page - 1) / page * page;
    uintptr_t end = ((uintptr_t)w->data + tensor_row_bytes(w->type, w->cols) * w->rows) / page * page;
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

static void pack_model(llama_model *m, bool mapped)
{
    for (int i = 0; i < m->hp.n_layers; i++) {
        llama_layer *l = &m->layers[i];
        llama_weight *ws[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++)
            pack_weight(ws[j], mapped);
    }
    /* tied: the embedding lookups fault back in only the rows they read */
    pack_weight(&m->output, mapped);
}

/* A 1-D vector of n values (norms, biases), converted to f32 and owned by the model. */
static int load_vector(float **out, const gguf_file *f, const char *name, int n, bool optional,
                       char *err, size_t errsz)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    *out = NULL;
    if (t == NULL)
        return optional ? 0 : fail(err, errsz, "model lacks tensor '%s'", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errsz, "tensor '%s' has %lld values, expected %d", name, (long long)t->ne[0], n);
        return -1;
    }
    if (t->type != TENSOR_F32 && t->type != TENSOR_F16 && t->type != TENSOR_BF16)
        return fail(err, errsz, "tensor '%s' must be F32, F16 or BF16 (type %d)", name, (int)t->type);
    *out = malloc(sizeof(float) * (size_t)n);
    if (*out == NULL)
        return fail(err, errsz, "out of memory loading '%s'", name);
    dequantize_row(t->type, t->data, *out, n);
    return 0;
}

static int load_layer(llama_layer *l, const gguf_file *f, const llama_hparams *hp, int i,
                      char *err, size_t errsz)
{
    int C = hp->dim, QD = hp->n_heads * hp->head_dim, KD = hp->n_kv_heads * hp->head_dim;
    char n[16][96];
    const char *names[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                           "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                           "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
    for (int j = 0; j < 12; j++)
        snprintf(n[j], sizeof n[j], "blk.%d.%s", i, names[j]);
    if (gguf_find_tensor(f, n[9]) == NULL) {
        char moe[96];
        snprintf(moe, sizeof moe, "blk.%d.ffn_gate_exps.weight", i);
        if (gguf_find_tensor(f, moe))
            return fail(err, errsz, "mixture-of-experts layers are not supported (%s)", moe);
    }
    return load_vector(&l->attn_norm, f, n[0], C, false, err, errsz) ||
           load_weight(&l->wq, f, n[1], QD, C, err, errsz) ||
           load_weight(&l->wk, f, n[2], KD, C, err, errsz) ||
           load_weight(&l->wv, f, n[3], KD, C, err, errsz) ||
           load_weight(&l->wo, f, n[4], C, QD, err, errsz) ||
           load_vector(&l->bq, f, n[5], QD, true, err, errsz) ||
           load_vector(&l->bk, f, n[6], KD, true, err, errsz) ||
           load_vector(&l->bv, f, n[7], KD, true, err, errsz) ||
           load_vector(&l->ffn_norm, f, n[8], C, false, err, errsz) ||
           load_weight(&l->w_gate, f, n[9], hp->ffn_dim, C, err, errsz) ||
           load_weight(&l->w_up, f, n[10], hp->ffn_dim, C, err, errsz) ||
           load_weight(&l->w_down, f, n[11], C, hp->ffn_dim, err, errsz)
               ? -1 : 0;
}

static int load_vocab_size(llama_hparams *hp, const gguf_file *f, char *err, size_t errsz)
{
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    if (t == NULL)
        return fail(err, errsz, "model lacks tensor 'token_embd.weight'");
    if (t->ne[1] <= 0 || t->ne[1] > (1 << 24))
        return fail(err, errsz, "tensor 'token_embd.weight' has an implausible vocabulary %lld",
                    (long long)t->ne[1]);
    hp->n_vocab = (int)t->ne[1];
    return 0;
}

int llama_model_load(llama_model **out, const gguf_file *f, char *err, size_t errsz)
{
    return llama_model_load_shard(out, f, NULL, err, errsz);
}

int llama_model_load_shard(llama_model **out, const gguf_file *f, struct collective *comm, char *err,
                           size_t errsz)
{
    *out = NULL;
    llama_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return fail(err, errsz, "out of memory");
    llama_hparams *hp = &m->hp;
    if (read_hparams(hp, f, err, errsz) || load_vocab_size(hp, f, err, errsz))
        goto error;
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    if (m->layers == NULL) {
        fail(err, errsz, "out of memory");
        goto error;
    }
    if (load_weight(&m->tok_embd, f, "token_embd.weight", hp->n_vocab, hp->dim, err, errsz) ||
        load_vector(&m->output_norm, f, "output_norm.weight", hp->dim, false, err, errsz))
        goto error;
    hp->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    if (hp->tied_embeddings)
        m->output = m->tok_embd;
    else if (load_weight(&m->output, f, "output.weight", hp->n_vocab, hp->dim, err, errsz))
        goto error;
    if (load_vector(&m->rope_freq_factors, f, "rope_freqs.weight", hp->n_rot / 2, true, err, errsz))
        goto error;
    for (int i = 0; i < hp->n_layers; i++)
        if (load_layer(&m->layers[i], f, hp, i, err, errsz))
            goto error;
    if (comm && comm->size > 1 && shard_split_model(m, comm, f->mapped, err, errsz))
        goto error;
    pack_model(m, f->mapped);
    *out = m;
    return 0;
error:
    llama_model_free(m);
    return -1;
}

void llama_model_free(llama_model *m)
{
    if (m == NULL)
        return;
    for (int i = 0; m->layers && i < m->hp.n_layers; i++) {
        llama_layer *l = &m->layers[i];
        free(l->attn_norm);
        free(l->ffn_norm);
        free(l->bq);
        free(l->bk);
        free(l->bv);
        llama_weight *ws[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) {
            packed_matrix_free(ws[j]->packed);
            free(ws[j]->owned);
        }
    }
    packed_matrix_free(m->output.packed);
    free(m->layers);
    free(m->output_norm);
    free(m->rope_freq_factors);
    free(m->shard);
    free(m);
}

static size_t weight_bytes(const llama_weight *w)
{
    return tensor_row_bytes(w->type, w->cols) * (size_t)w->rows;
}

size_t llama_model_weight_bytes(const llama_model *m)
{
    size_t total = weight_bytes(&m->output);
    for (int i = 0; i < m->hp.n_layers; i++) {
        const llama_layer *l = &m->layers[i];
        total += weight_bytes(&l->wq) + weight_bytes(&l->wk) + weight_bytes(&l->wv) +
                 weight_bytes(&l->wo) + weight_bytes(&l->w_gate) + weight_bytes(&l->w_up) +
                 weight_bytes(&l->w_down);
    }
    return total;
}

/* ---- state ------------------------------------------------------------------------ */

struct llama_state {
    const llama_model *m;
    threadpool *pool;
    int n_ctx, max_batch;
    kv_cache *own_cache;  /* a session's private cache of n_ctx positions (NULL: workspace) */
    kv_seq own_seq;       /* the session's sequence in it, all n_ctx positions reserved */
    /* activations of one chunk, each (max_batch, width); a chunk may hold tokens of
     * several sequences (llama_forward_batch): token t belongs to tok_seq[t], at
     * position tok_pos[t] of that sequence */
    float *x, *xn, *q, *k, *v, *att, *gate, *up;
    kv_seq **tok_seq;
    int *tok_pos;
    const llama_lora **tok_lora;   /* the adapter token t runs with, or NULL */
    int scores_len;      /* positions one row of scores holds */
    float *scores;       /* (n_threads, scores_len) attention weights, one row per thread */
    float *kv_rows;      /* (n_threads, KV_MAX_BLOCK_TOKENS * HS) one block's keys or values as f32 */
    float *rope_cos, *rope_sin;  /* (max_batch, n_rot/2) */
    float *logits_rows;  /* batches: the logits rows before they go to their sequences */
    size_t logits_rows_cap;
    const llama_lora *lora;  /* this sequence's adapter, or NULL */
    float *lora_tmp;     /* (max_batch, rank) x A^T of the adapters of a chunk's tokens */
    int lora_tmp_rank;
};

static int alloc_activations(llama_state *s, int n_threads)
{
    const llama_hparams *hp = &s->m->hp;
    size_t B = (size_t)s->max_batch, kvd = (size_t)hp->n_kv_heads * hp->head_dim;
    size_t qd = (size_t)hp->n_heads * hp->head_dim;
    size_t wide = (size_t)hp->dim > qd ? (size_t)hp->dim : qd;
    s->x = malloc(sizeof(float) * B * hp->dim);
    s->xn = malloc(sizeof(float) * B * wide);
    s->q = malloc(sizeof(float) * B * qd);
    s->k = malloc(sizeof(float) * B * kvd);
    s->v = malloc(sizeof(float) * B * kvd);
    s->att = malloc(sizeof(float) * B * qd);
    s->gate = malloc(sizeof(float) * B * hp->ffn_dim);
    s->up = malloc(sizeof(float) * B * hp->ffn_dim);
    s->tok_seq = malloc(sizeof(*s->tok_seq) * B);
    s->tok_pos = malloc(sizeof(*s->tok_pos) * B);
    s->tok_lora = calloc(B, sizeof(*s->tok_lora));
    s->scores = malloc(sizeof(float) * (size_t)n_threads * s->scores_len);
    s->rope_cos = malloc(sizeof(float) * B * (hp->n_rot / 2));
    s->rope_sin = malloc(sizeof(float) * B * (hp->n_rot / 2));
    s->kv_rows = malloc(sizeof(float) * (size_t)n_threads * KV_MAX_BLOCK_TOKENS * hp->head_dim);
    return s->x && s->xn && s->q && s->k && s->v && s->att && s->gate && s->up && s->tok_seq &&
                   s->tok_pos && s->tok_lora && s->scores && s->rope_cos && s->rope_sin && s->kv_rows
               ? 0 : -1;
}

kv_cache_shape llama_kv_shape(const llama_model *m, enum kv_dtype dtype, int block_tokens)
{
    return (kv_cache_shape){.n_layers = m->hp.n_layers, .n_kv_heads = m->hp.n_kv_heads,
                            .head_dim = m->hp.head_dim, .block_tokens = block_tokens, .dtype = dtype};
}

/* Whether the cache holds what this model's attention reads and writes. */
static bool kv_fits_model(const llama_model *m, const kv_cache *c)
{
    const kv_cache_shape *have = kv_cache_get_shape(c);
    kv_cache_shape want = llama_kv_shape(m, have->dtype, have->block_tokens);
    return have->n_layers == want.n_layers && have->n_kv_heads == want.n_kv_heads &&
           have->head_dim == want.head_dim;
}

llama_state *llama_state_create_kv(const llama_model *m, int n_ctx, int max_batch, int n_threads,
                                   enum kv_dtype dtype)
{
    if (n_ctx <= 0 || max_batch <= 0 || n_threads <= 0)
        return NULL;
    llama_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->m = m;
    s->n_ctx = s->scores_len = n_ctx;
    s->max_batch = max_batch;
    s->pool = threadpool_create(n_threads);
    /* a session is one sequence: its cache is exactly its context, all reserved */
    kv_cache_shape shape = llama_kv_shape(m, dtype, KV_DEFAULT_BLOCK_TOKENS);
    char err[128];
    s->own_cache = kv_cache_create(&shape, (n_ctx + shape.block_tokens - 1) / shape.block_tokens, err, sizeof err);
    if (s->own_cache)
        kv_seq_init(&s->own_seq, s->own_cache);
    if (!s->pool || !s->own_cache || kv_seq_reserve(&s->own_seq, n_ctx) || alloc_activations(s, n_threads)) {
        llama_state_free(s);
        return NULL;
    }
    return s;
}

llama_state *llama_state_create(const llama_model *m, int n_ctx, int max_batch, int n_threads)
{
    return llama_state_create_kv(m, n_ctx, max_batch, n_threads, KV_F16);
}

llama_state *llama_workspace_create(const llama_model *m, int max_ctx, int max_batch, int n_threads)
{
    if (max_ctx <= 0 || max_batch <= 0 || n_threads <= 0)
        return NULL;
    llama_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->m = m;
    s->scores_len = max_ctx;
    s->max_batch = max_batch;
    s->pool = threadpool_create(n_threads);
    if (!s->pool || alloc_activations(s, n_threads)) {
        llama_state_free(s);
        return NULL;
    }
    return s;
}

void llama_state_free(llama_state *s)
{
    if (s == NULL)
        return;
    threadpool_free(s->pool);
    if (s->own_cache)
        kv_seq_release(&s->own_seq);
    kv_cache_free(s->own_cache);
    free(s->kv_rows);
    free(s->x);
    free(s->xn);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->gate);
    free(s->up);
    free(s->scores);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->tok_seq);
    free(s->tok_pos);
    free(s->tok_lora);
    free(s->logits_rows);
    free(s->lora_tmp);
    free(s);
}

void llama_state_set_lora(llama_state *s, const llama_lora *lora) { s->lora = lora; }
const llama_lora *llama_state_lora(const llama_state *s) { return s->lora; }

/* Grows the workspace's adapter scratch to the largest rank among the chunk's
 * sequences. Returns 0, or -1 when out of memory. */
static int lora_scratch(llama_state *work, int T)
{
    int rank = 0;
    for (int t = 0; t < T; t++)
        if (work->tok_lora[t] && work->tok_lora[t]->rank > rank)
            rank = work->tok_lora[t]->rank;
    if (rank <= work->lora_tmp_rank)
        return 0;
    float *tmp = malloc(sizeof(float) * (size_t)work->max_batch * rank);
    if (tmp == NULL)
        return -1;
    free(work->lora_tmp);
    work->lora_tmp = tmp;
    work->lora_tmp_rank = rank;
    return 0;
}

int llama_state_n_ctx(const llama_state *s) { return s->n_ctx; }
int llama_state_n_past(const llama_state *s) { return s->own_seq.n_tokens; }
threadpool *llama_state_pool(llama_state *s) { return s->pool; }

void llama_state_truncate(llama_state *s, int n_past)
{
    kv_seq_truncate(&s->own_seq, n_past);
}

/* ---- layers ----------------------------------------------------------------------- */

/* out (T, C) = x / rms(x) * w, per token. */
static void rmsnorm_forward(float *out, const float *x, const float *w, int T, int C, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        float *ot = out + (size_t)t * C;
        double ss = 0.0;  /* double: C terms of varying size, cheap next to the matmuls */
        for (int i = 0; i < C; i++)
            ss += (double)xt[i] * xt[i];
        float scale = (float)(1.0 / sqrt(ss / C + eps));
        for (int i = 0; i < C; i++)
            ot[i] = xt[i] * scale * w[i];
    }
}

static void add_bias(float *x, const float *b, int T, int n)
{
    if (b == NULL)
        return;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++)
            x[(size_t)t * n + i] += b[i];
}

/* cos/sin (T, n_rot/2) of the rotation angles at each token's position. Dimension pair
 * i turns by pos * base^(-2i/n_rot), divided by the llama3 frequency factor if any. */
static void rope_tables(llama_state *s, int T)
{
    const llama_hparams *hp = &s->m->hp;
    int half = hp->n_rot / 2;
    for (int t = 0; t < T; t++) {
        float pos = (float)s->tok_pos[t] * hp->rope_pos_scale;
        for (int i = 0; i < half; i++) {
            float freq = powf(hp->rope_base, -2.0f * (float)i / (float)hp->n_rot);
            if (s->m->rope_freq_factors)
                freq /= s->m->rope_freq_factors[i];
            float angle = pos * freq;
            s->rope_cos[(size_t)t * half + i] = cosf(angle);
            s->rope_sin[(size_t)t * half + i] = sinf(angle);
        }
    }
}

/* Rotates the first n_rot dims of each of the n_heads heads of x (T, n_heads*HS).
 * Normal mode turns adjacent pairs (2i, 2i+1); NeoX mode pairs i with i + n_rot/2. */
static void rope_forward(llama_state *s, float *x, int T, int n_heads)
{
    const llama_hparams *hp = &s->m->hp;
    int half = hp->n_rot / 2, HS = hp->head_dim;
    for (int t = 0; t < T; t++) {
        const float *cs = s->rope_cos + (size_t)t * half, *sn = s->rope_sin + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * HS;
            for (int i = 0; i < half; i++) {
                int a = hp->rope_mode == ROPE_NEOX ? i : 2 * i;
                int b = hp->rope_mode == ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs[i] - x1 * sn[i];
                v[b] = x0 * sn[i] + x1 * cs[i];
            }
        }
    }
}

/* Attention of one (token, head) pair over its sequence's cache, written to s->att.
 * The keys and values are read block by block through the sequence's block table.
 *
 * With the f16 cache, keys and values are stored in half precision, and the query and
 * the attention weights pass through it too, as llama.cpp's default f16 KV cache makes
 * them: the reference logits (tests/data) carry that rounding, and matching it halves
 * the gap to them. The f32 and q8_0 caches keep the query and weights in f32. */
typedef struct attention_job {
    llama_state *s;      /* the chunk's activations */
    int layer;
} attention_job;

/* x rounded to the nearest half-precision value (ties to even). Within the normal range
 * of halves that is the float with its mantissa rounded to 10 bits, done on the bits;
 * tiny, huge and non-finite values take the full conversion. */
static inline float round_to_half(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t mag = u & 0x7fffffffu;
    if (mag < 0x38800000u || mag >= 0x477fe000u)
        return fp16_to_fp32(fp32_to_fp16(x));
    u = (u + 0x0fffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

static void attention_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    attention_job *job = ctx;
    llama_state *s = job->s;
    const llama_hparams *hp = &s->m->hp;
    int NH = hp->n_heads, HS = hp->head_dim;
    int t = task / NH, h = task % NH, kvh = h / (NH / hp->n_kv_heads);
    const kv_seq *seq = s->tok_seq[t];
    const kv_cache_shape *shape = kv_cache_get_shape(seq->cache);
    int BT = shape->block_tokens, n_keys = s->tok_pos[t] + 1;  /* causal: this token and every one before it */
    bool half = shape->dtype == KV_F16;
    float *scores = s->scores + (size_t)thread * s->scores_len;
    float *rows = s->kv_rows + (size_t)thread * KV_MAX_BLOCK_TOKENS * HS;
    float q[LLAMA_MAX_HEAD_DIM];
    for (int i = 0; i < HS; i++) {
        float x = s->q[((size_t)t * NH + h) * HS + i];
        q[i] = half ? round_to_half(x) : x;
    }
    float scale = 1.0f / sqrtf((float)HS), max = -INFINITY;
    for (int b = 0, p0 = 0; p0 < n_keys; b++, p0 += BT) {
        int n = n_keys - p0 < BT ? n_keys - p0 : BT;
        /* f16 rows are read as they are stored (widening on the fly costs less than a
         * converted copy); the sums are those of the f32 dot product */
        const uint16_t *halves = half ? kv_seq_stored_rows(seq, b, job->layer, kvh, false) : NULL;
        const float *keys = half ? NULL : kv_seq_rows(seq, b, job->layer, kvh, false, n, rows);
        for (int j = 0; j < n; j++) {
            float sc = (half ? vec_dot_f16(halves + (size_t)j * HS, q, HS)
                             : vec_dot(TENSOR_F32, keys + (size_t)j * HS, q, NULL, HS)) * scale;
            scores[p0 + j] = sc;
            if (sc > max) max = sc;
        }
    }
    float sum = 0.0f;
    for (int p = 0; p < n_keys; p++) {
        scores[p] = expf(scores[p] - max);  /* minus the max: exp never overflows */
        sum += scores[p];
    }
    float *out = s->att + ((size_t)t * NH + h) * HS;
    memset(out, 0, sizeof(float) * HS);
    for (int b = 0, p0 = 0; p0 < n_keys; b++, p0 += BT) {
        int n = n_keys - p0 < BT ? n_keys - p0 : BT;
        if (half) {
            const uint16_t *v = kv_seq_stored_rows(seq, b, job->layer, kvh, true);
            for (int j = 0; j < n; j++)
                axpy_f16(out, round_to_half(scores[p0 + j] / sum), v + (size_t)j * HS, HS);
            continue;
        }
        const float *values = kv_seq_rows(seq, b, job->layer, kvh, true, n, rows);
        for (int j = 0; j < n; j++) {
            const float *v = values + (size_t)j * HS;
            float w = scores[p0 + j] / sum;
            for (int i = 0; i < HS; i++)
                out[i] += w * v[i];
        }
    }
}

/* Writes each token's key and value into its sequence's cache, then attends. */
static void attention_forward(llama_state *s, int layer, int T)
{
    const llama_hparams *hp = &s->m->hp;
    size_t kvd = (size_t)hp->n_kv_heads * hp->head_dim;
    for (int t = 0; t < T; t++)
        kv_cache_store(s->tok_seq[t], layer, s->tok_pos[t], s->k + (size_t)t * kvd, s->v + (size_t)t * kvd);
    attention_job job = {s, layer};
    threadpool_run(s->pool, attention_task, &job, T * hp->n_heads);
}

static void swiglu_forward(float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void residual_add(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

static void mm(llama_state *s, float *y, const float *x, int T, const llama_weight *w)
{
    if (w->packed)
        matmul_packed(s->pool, y, x, T, w->packed);
    else
        matmul(s->pool, y, x, T, w->data, w->type, w->rows, w->cols);
}

/* y += each token's adapter update of projection `target` of this layer, over runs of
 * consecutive tokens that share an adapter (a batch holds several sequences, each with
 * its own adapter or none). */
static void lora_add(llama_state *s, int layer, enum lora_target target, float *y, const float *x, int T)
{
    for (int t = 0, end; t < T; t = end) {
        const llama_lora *a = s->tok_lora[t];
        for (end = t + 1; end < T && s->tok_lora[end] == a;)
            end++;
        const lora_matrix *lm = a ? &a->m[(size_t)layer * LORA_N_TARGETS + target] : NULL;
        if (lm && lm->a)
            lora_matrix_apply(lm, a->rank, a->scale, y + (size_t)t * lm->out, x + (size_t)t * lm->in,
                              end - t, s->lora_tmp);
    }
}

/* One layer over the chunk. Returns 0, or -1 when a tensor-parallel all-reduce failed. */
static int layer_forward(llama_state *s, const llama_layer *l, int layer, int T)
{
    const llama_hparams *hp = &s->m->hp;
    int C = hp->dim, QD = hp->n_heads * hp->head_dim, KD = hp->n_kv_heads * hp->head_dim;
    rmsnorm_forward(s->xn, s->x, l->attn_norm, T, C, hp->rms_eps);
    mm(s, s->q, s->xn, T, &l->wq);
    mm(s, s->k, s->xn, T, &l->wk);
    mm(s, s->v, s->xn, T, &l->wv);
    lora_add(s, layer, LORA_Q, s->q, s->xn, T);
    lora_add(s, layer, LORA_K, s->k, s->xn, T);
    lora_add(s, layer, LORA_V, s->v, s->xn, T);
    add_bias(s->q, l->bq, T, QD);
    add_bias(s->k, l->bk, T, KD);
    add_bias(s->v, l->bv, T, KD);
    rope_forward(s, s->q, T, hp->n_heads);
    rope_forward(s, s->k, T, hp->n_kv_heads);
    attention_forward(s, layer, T);
    mm(s, s->xn, s->att, T, &l->wo);
    lora_add(s, layer, LORA_O, s->xn, s->att, T);
    if (shard_all_reduce(s->m, s->xn, (size_t)T * C))   /* a shard has its heads' part */
        return -1;
    residual_add(s->x, s->xn, (size_t)T * C);

    rmsnorm_forward(s->xn, s->x, l->ffn_norm, T, C, hp->rms_eps);
    mm(s, s->gate, s->xn, T, &l->w_gate);
    mm(s, s->up, s->xn, T, &l->w_up);
    lora_add(s, layer, LORA_GATE, s->gate, s->xn, T);
    lora_add(s, layer, LORA_UP, s->up, s->xn, T);
    swiglu_forward(s->gate, s->up, (size_t)T * hp->ffn_dim);
    mm(s, s->xn, s->gate, T, &l->w_down);
    lora_add(s, layer, LORA_DOWN, s->xn, s->gate, T);
    if (shard_all_reduce(s->m, s->xn, (size_t)T * C))   /* ... and its FFN channels' part */
        return -1;
    residual_add(s->x, s->xn, (size_t)T * C);
    return 0;
}

/* The rows of the tokens whose logits are wanted, normalized, through the output
 * matrix into out (one row of V per wanted token, in order). A shard computes its
 * share of the vocabulary and gathers the rest. Returns 0, or -1 when that failed. */
static int logits_forward(llama_state *s, const int *rows, int n_rows, float *out)
{
    const llama_model *m = s->m;
    int C = m->hp.dim;
    for (int i = 0; i < n_rows; i++)
        rmsnorm_forward(s->xn + (size_t)i * C, s->x + (size_t)rows[i] * C, m->output_norm, 1, C,
                        m->hp.rms_eps);
    if (m->shard == NULL) {
        mm(s, out, s->xn, n_rows, &m->output);
        return 0;
    }
    float *part = malloc(sizeof(float) * (size_t)n_rows * (size_t)m->output.rows);
    int rc = part ? 0 : -1;
    if (part) {
        mm(s, part, s->xn, n_rows, &m->output);
        rc = shard_gather_logits(m, part, n_rows, out);
    }
    free(part);
    return rc;
}

/* The chunk's tokens, already laid out in tok_seq/tok_pos, through every layer.
 * Returns 0, or -1 when a tensor-parallel all-reduce failed. */
static int chunk_forward(llama_state *s, const int32_t *tokens, int T)
{
    const llama_model *m = s->m;
    int C = m->hp.dim;
    size_t row_bytes = tensor_row_bytes(m->tok_embd.type, C);
    for (int t = 0; t < T; t++)
        dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + row_bytes * tokens[t],
                       s->x + (size_t)t * C, C);
    rope_tables(s, T);
    for (int i = 0; i < m->hp.n_layers; i++)
        if (layer_forward(s, &m->layers[i], i, T))
            return -1;
    return 0;
}

/* n > 0 tokens, each in the vocabulary. */
static bool tokens_valid(const llama_model *m, const int32_t *tokens, int n)
{
    if (n <= 0)
        return false;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return false;
    return true;
}

int llama_forward(llama_state *s, const int32_t *tokens, int n, float *logits, bool all_logits)
{
    int V = s->m->hp.n_vocab;
    kv_seq *seq = &s->own_seq;
    if (s->own_cache == NULL || !tokens_valid(s->m, tokens, n) || n > s->n_ctx - seq->n_tokens)
        return -1;
    for (int t = 0; t < s->max_batch; t++)
        s->tok_lora[t] = s->lora;
    if (lora_scratch(s, s->max_batch))
        return -1;
    for (int done = 0; done < n;) {
        int T = n - done < s->max_batch ? n - done : s->max_batch;
        for (int t = 0; t < T; t++) {
            s->tok_seq[t] = seq;
            s->tok_pos[t] = seq->n_tokens + t;
        }
        if (chunk_forward(s, tokens + done, T))
            return -1;
        seq->n_tokens += T;
        if (logits && (all_logits || done + T == n)) {
            int rows[T], n_rows = 0;  /* T <= max_batch: a few hundred ints */
            for (int t = all_logits ? 0 : T - 1; t < T; t++)
                rows[n_rows++] = t;
            if (logits_forward(s, rows, n_rows, all_logits ? logits + (size_t)done * V : logits))
                return -1;
        }
        done += T;
    }
    return 0;
}

/* The staging buffer for a batch's logits rows (grows, kept for the next batch). */
static float *logits_staging(llama_state *work, size_t n_floats)
{
    if (n_floats > work->logits_rows_cap) {
        free(work->logits_rows);
        work->logits_rows = malloc(sizeof(float) * n_floats);
        work->logits_rows_cap = work->logits_rows ? n_floats : 0;
    }
    return work->logits_rows;
}

int llama_forward_batch(llama_state *work, const llama_batch_seq *seqs, int n_seqs)
{
    int T = 0, n_rows = 0, V = work->m->hp.n_vocab;
    for (int i = 0; i < n_seqs; i++) {
        const llama_batch_seq *b = &seqs[i];
        if (!kv_fits_model(work->m, b->kv->cache) || !tokens_valid(work->m, b->tokens, b->n) ||
            b->kv->n_tokens + b->n > work->scores_len || kv_seq_spare(b->kv) < b->n ||
            T + b->n > work->max_batch)
            return -1;
        for (int j = 0; j < i; j++)
            if (seqs[j].kv == b->kv)
                return -1;  /* one entry per sequence: its tokens are consecutive positions */
        T += b->n;
    }
    int32_t tokens[T > 0 ? T : 1];
    int rows[n_seqs > 0 ? n_seqs : 1];
    for (int i = 0, t = 0; i < n_seqs; i++) {
        for (int j = 0; j < seqs[i].n; j++, t++) {
            tokens[t] = seqs[i].tokens[j];
            work->tok_seq[t] = seqs[i].kv;
            work->tok_lora[t] = seqs[i].lora;
            work->tok_pos[t] = seqs[i].kv->n_tokens + j;
        }
        if (seqs[i].logits)
            rows[n_rows++] = t - 1;
    }
    if (T == 0)
        return 0;
    float *staged = n_rows ? logits_staging(work, (size_t)n_rows * V) : NULL;
    if ((n_rows && staged == NULL) || lora_scratch(work, T))
        return -1;
    if (chunk_forward(work, tokens, T))
        return -1;
    for (int i = 0; i < n_seqs; i++)
        seqs[i].kv->n_tokens += seqs[i].n;
    if (n_rows == 0)
        return 0;
    if (logits_forward(work, rows, n_rows, staged))
        return -1;
    for (int i = 0, r = 0; i < n_seqs; i++)
        if (seqs[i].logits)
            memcpy(seqs[i].logits, staged + (size_t)r++ * V, sizeof(float) * V);
    return 0;
}
