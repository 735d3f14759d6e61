/* lora.c - LoRA adapters: shapes, the low-rank product, GGUF files (see lora.h). */
#include "model/lora.h"

#include <cblas.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"

static const char *const target_names[LORA_N_TARGETS] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

const char *lora_target_name(enum lora_target t)
{
    return t < LORA_N_TARGETS ? target_names[t] : "?";
}

static int lfail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lfail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

/* The (out, in) shape of target t's base weight in a model with these dimensions. */
static void target_shape(const llama_hparams *hp, enum lora_target t, int *out, int *in)
{
    int C = hp->dim, QD = hp->n_heads * hp->head_dim, KD = hp->n_kv_heads * hp->head_dim;
    switch (t) {
    case LORA_Q: *out = QD; *in = C; break;
    case LORA_K: case LORA_V: *out = KD; *in = C; break;
    case LORA_O: *out = C; *in = QD; break;
    case LORA_GATE: case LORA_UP: *out = hp->ffn_dim; *in = C; break;
    default: *out = C; *in = hp->ffn_dim; break;
    }
}

static llama_lora *lora_alloc(const char *arch, int n_layers, int rank, float alpha, unsigned targets,
                              const int (*shapes)[2])
{
    if (rank < 1 || n_layers < 1)
        return NULL;
    llama_lora *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    snprintf(l->arch, sizeof l->arch, "%s", arch);
    l->n_layers = n_layers;
    l->rank = rank;
    l->alpha = alpha;
    l->scale = alpha != 0.0f ? alpha / (float)rank : 1.0f;
    l->targets = targets;
    l->m = calloc((size_t)n_layers * LORA_N_TARGETS, sizeof *l->m);
    if (l->m == NULL) {
        free(l);
        return NULL;
    }
    for (int i = 0; i < n_layers; i++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (!(targets & (1u << t)))
                continue;
            lora_matrix *lm = &l->m[(size_t)i * LORA_N_TARGETS + t];
            lm->out = shapes[t][0];
            lm->in = shapes[t][1];
            lm->a = calloc((size_t)rank * lm->in, sizeof(float));
            lm->b = calloc((size_t)lm->out * rank, sizeof(float));
            if (lm->a == NULL || lm->b == NULL) {
                lora_free(l);
                return NULL;
            }
        }
    return l;
}

llama_lora *lora_create(const llama_model *m, int rank, float alpha, unsigned targets)
{
    int shapes[LORA_N_TARGETS][2];
    for (int t = 0; t < LORA_N_TARGETS; t++)
        target_shape(&m->hp, (enum lora_target)t, &shapes[t][0], &shapes[t][1]);
    return lora_alloc(m->hp.arch, m->hp.n_layers, rank, alpha, targets & ((1u << LORA_N_TARGETS) - 1),
                      (const int (*)[2])shapes);
}

llama_lora *lora_create_like(const llama_lora *l)
{
    int shapes[LORA_N_TARGETS][2] = {{0}};
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (l->targets & (1u << t)) {
            shapes[t][0] = l->m[t].out;
            shapes[t][1] = l->m[t].in;
        }
    return lora_alloc(l->arch, l->n_layers, l->rank, l->alpha, l->targets, (const int (*)[2])shapes);
}

void lora_free(llama_lora *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; l->m && i < (size_t)l->n_layers * LORA_N_TARGETS; i++) {
        free(l->m[i].a);
        free(l->m[i].b);
    }
    free(l->m);
    free(l);
}

float *lora_array(const llama_lora *l, size_t i, size_t *n)
{
    size_t k = 0;
    for (size_t j = 0; j < (size_t)l->n_layers * LORA_N_TARGETS; j++) {
        const lora_matrix *lm = &l->m[j];
        if (lm->a == NULL)
            continue;
        if (k == i) {
            *n = (size_t)l->rank * lm->in;
            return lm->a;
        }
        if (k + 1 == i) {
            *n = (size_t)lm->out * l->rank;
            return lm->b;
        }
        k += 2;
    }
    *n = 0;
    return NULL;
}

void lora_for_each_array(const llama_lora *l, lora_array_fn fn, void *user)
{
    size_t n;
    float *p;
    for (size_t i = 0; (p = lora_array(l, i, &n)) != NULL; i++)
        fn(p, n, user);
}

size_t lora_n_params(const llama_lora *l)
{
    size_t total = 0, n;
    for (size_t i = 0; lora_array(l, i, &n) != NULL; i++)
        total += n;
    return total;
}

void lora_matrix_apply(const lora_matrix *lm, int rank, float scale, float *y, const float *x,
                       int T, float *tmp)
{
    /* two thin products: (T, in) x (in, r), then (T, r) x (r, out); r is small, so this
     * costs a few percent of the base product it rides on */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rank, lm->in, 1.0f, x, lm->in, lm->a,
                lm->in, 0.0f, tmp, rank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, lm->out, rank, scale, tmp, rank, lm->b,
                rank, 1.0f, y, lm->out);
}

/* ---- files ------------------------------------------------------------------------ */

static void tensor_name(char *buf, size_t size, const char *prefix, int layer, enum lora_target t,
                        const char *half)
{
    snprintf(buf, size, "%sblk.%d.%s.weight.%s", prefix, layer, target_names[t], half);
}

void lora_write_tensors(const llama_lora *l, gguf_writer *w, const char *prefix)
{
    char name[128];
    for (int i = 0; i < l->n_layers; i++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const lora_matrix *lm = &l->m[(size_t)i * LORA_N_TARGETS + t];
            if (lm->a == NULL)
                continue;
            tensor_name(name, sizeof name, prefix, i, (enum lora_target)t, "lora_a");
            gguf_writer_add_tensor(w, name, TENSOR_F32, 2, (int64_t[]){lm->in, l->rank}, lm->a);
            tensor_name(name, sizeof name, prefix, i, (enum lora_target)t, "lora_b");
            gguf_writer_add_tensor(w, name, TENSOR_F32, 2, (int64_t[]){l->rank, lm->out}, lm->b);
        }
}

int lora_save(const llama_lora *l, const char *path, char *err, size_t errsz)
{
    gguf_writer *w = gguf_writer_create();
    if (w == NULL)
        return lfail(err, errsz, "out of memory");
    gguf_writer_add_str(w, "general.architecture", l->arch);
    gguf_writer_add_str(w, "general.type", "adapter");
    gguf_writer_add_str(w, "general.name", "citadel LoRA adapter");
    gguf_writer_add_str(w, "adapter.type", "lora");
    gguf_writer_add_f32(w, "adapter.lora.alpha", l->alpha);
    lora_write_tensors(l, w, "");
    int rc = gguf_writer_save(w, path, err, errsz);
    gguf_writer_free(w);
    return rc;
}

/* Copies a 2-D tensor of ne [cols, rows] (F32, F16 or BF16) into dst. */
static int read_matrix(float *dst, const gguf_tensor *t, int cols, int rows, char *err, size_t errsz)
{
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return lfail(err, errsz, "tensor '%.*s' has shape [%lld, %lld], expected [%d, %d]",
                     (int)t->name.len, t->name.ptr, (long long)t->ne[0], (long long)t->ne[1], cols, rows);
    if (t->type != TENSOR_F32 && t->type != TENSOR_F16 && t->type != TENSOR_BF16)
        return lfail(err, errsz, "tensor '%.*s' must be F32, F16 or BF16", (int)t->name.len, t->name.ptr);
    dequantize_row(t->type, t->data, dst, (int64_t)cols * rows);
    return 0;
}

int lora_read_tensors(llama_lora *l, const gguf_file *f, const char *prefix, char *err, size_t errsz)
{
    char name[128];
    for (int i = 0; i < l->n_layers; i++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            lora_matrix *lm = &l->m[(size_t)i * LORA_N_TARGETS + t];
            if (lm->a == NULL)
                continue;
            const gguf_tensor *ta, *tb;
            tensor_name(name, sizeof name, prefix, i, (enum lora_target)t, "lora_a");
            ta = gguf_find_tensor(f, name);
            tensor_name(name, sizeof name, prefix, i, (enum lora_target)t, "lora_b");
            tb = gguf_find_tensor(f, name);
            if (ta == NULL || tb == NULL)
                return lfail(err, errsz, "missing tensor '%s'", name);
            if (read_matrix(lm->a, ta, lm->in, l->rank, err, errsz) ||
                read_matrix(lm->b, tb, l->rank, lm->out, err, errsz))
                return -1;
        }
    return 0;
}

/* Which targets f adapts (names "blk.N.<target>.weight.lora_a") and their common rank:
 * llama.cpp's files adapt any subset. Returns 0, or -1 with a message. */
static int scan_targets(const gguf_file *f, int n_layers, unsigned *targets, int *rank, char *err,
                        size_t errsz)
{
    *targets = 0;
    *rank = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char name[160];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 150 ? t->name.len : 150), t->name.ptr);
        int layer, end = 0;
        char target[32];
        if (sscanf(name, "blk.%d.%31[a-z_].weight.lora_a%n", &layer, target, &end) != 2 ||
            name[end] != '\0')
            continue;
        if (layer < 0 || layer >= n_layers)
            return lfail(err, errsz, "tensor '%s' names layer %d; the model has %d", name, layer, n_layers);
        int which = -1;
        for (int k = 0; k < LORA_N_TARGETS; k++)
            if (!strcmp(target, target_names[k]))
                which = k;
        if (which < 0)
            return lfail(err, errsz, "tensor '%s' adapts '%s', which this engine does not", name, target);
        if (*rank && t->ne[1] != *rank)
            return lfail(err, errsz, "tensor '%s' has rank %lld; others have %d (one rank per adapter)",
                         name, (long long)t->ne[1], *rank);
        if (t->ne[1] < 1 || t->ne[1] > 4096)
            return lfail(err, errsz, "tensor '%s' has an implausible rank %lld", name, (long long)t->ne[1]);
        *rank = (int)t->ne[1];
        *targets |= 1u << which;
    }
    if (*targets == 0)
        return lfail(err, errsz, "the file holds no LoRA tensors");
    return 0;
}

int lora_load(llama_lora **out, const llama_model *m, const char *path, char *err, size_t errsz)
{
    *out = NULL;
    gguf_file *f;
    char sub[256];
    if (gguf_open(&f, path, sub, sizeof sub))
        return lfail(err, errsz, "%s: %s", path, sub);
    gguf_str s;
    double alpha = 0;
    unsigned targets;
    int rank, rc = -1;
    if (!gguf_get_str(f, "general.type", &s) || !gguf_str_eq(s, "adapter") ||
        !gguf_get_str(f, "adapter.type", &s) || !gguf_str_eq(s, "lora"))
        lfail(err, errsz, "%s: not a LoRA adapter (general.type 'adapter', adapter.type 'lora')", path);
    else if (!gguf_get_str(f, "general.architecture", &s) || !gguf_str_eq(s, m->hp.arch))
        lfail(err, errsz, "%s: the adapter is for another architecture than the model's '%s'", path,
              m->hp.arch);
    else if (scan_targets(f, m->hp.n_layers, &targets, &rank, sub, sizeof sub))
        lfail(err, errsz, "%s: %s", path, sub);
    else {
        gguf_get_f64(f, "adapter.lora.alpha", &alpha);
        llama_lora *l = lora_create(m, rank, (float)alpha, targets);
        if (l == NULL)
            lfail(err, errsz, "out of memory");
        else if (lora_read_tensors(l, f, "", sub, sizeof sub)) {
            lfail(err, errsz, "%s: %s (maybe made for another model)", path, sub);
            lora_free(l);
        } else {
            *out = l;
            rc = 0;
        }
    }
    gguf_close(f);
    return rc;
}
