/* train.c - forward and backward of a llama model with a LoRA adapter (see train.h).
 *
 * One sequence of T input tokens, read top to bottom in train_sequence():
 *
 *   x = embed(tokens)                                           (T, C)
 *   for each layer (activations kept in layer_acts):
 *     xn1 = rmsnorm(x) * attn_norm
 *     q, k, v = xn1 W^T (+ bias) + lora(xn1);   rope(q, k)
 *     att = causal softmax(q k^T / sqrt(HS)) v                  P kept: (NH, T, T)
 *     x += att Wo^T + lora(att)
 *     xn2 = rmsnorm(x) * ffn_norm
 *     g, u = xn2 Wg^T + lora, xn2 Wu^T + lora;   h = silu(g) * u
 *     x += h Wd^T + lora(h)
 *   logits = rmsnorm(x) * output_norm  Wout^T   (only the rows that are scored)
 *
 * and the backward pass walks the same steps in reverse, each x_backward next to its
 * x_forward. Gradients reach every layer's input (the residual stream carries them
 * down) but are stored only for the adapter. Where LoRA dropout is on, the masks are
 * a hash of (seed, layer, target, element), so the backward pass regenerates them
 * instead of keeping them.
 */
#include "train/train.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "cpu/threadpool.h"

/* The activations of one layer that its backward pass reads, for up to max_T tokens. */
typedef struct layer_acts {
    float *x_in;        /* (T, C) the layer's input */
    float *xn1, *rstd1; /* (T, C), (T) attention norm output and 1/rms */
    float *q, *k, *v;   /* (T, QD), (T, KD), (T, KD) after RoPE */
    float *P;           /* (NH, T, T) attention weights, zero above the diagonal */
    float *att;         /* (T, QD) attention output */
    float *x_mid;       /* (T, C) input of the feed-forward half */
    float *xn2, *rstd2; /* (T, C), (T) */
    float *g, *u, *h;   /* (T, F) gate and up projections, h = silu(g) * u */
    float *lu[LORA_N_TARGETS];  /* (T, r) x A^T of each adapted projection */
} layer_acts;

struct train_ctx {
    const llama_model *m;
    int max_T, lora_rank;       /* lu buffers are sized for lora_rank */
    threadpool *pool;
    float **layer_w;            /* (L, LORA_N_TARGETS) frozen matrices in f32, (out, in) */
    float *wout;                /* (V, C) */
    float *rope_cos, *rope_sin; /* (max_T, n_rot/2) */
    layer_acts *acts;           /* L */
    float *x, *rstdf, *xnf;     /* (T, C), (T), (T, C) final norm */
    float *rows_in, *logits;    /* (T, C), (T, V) the scored rows */
    int *rows;                  /* (T) the position of each scored row */
    double *row_loss;           /* (T) */
    /* backward scratch */
    float *dx, *dxn, *datt, *dq, *dk, *dv, *dh, *dg, *du, *dP, *xd, *dxd, *dlu;
};

static int tfail(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int tfail(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- set-up ----------------------------------------------------------------------- */

static const llama_weight *base_weight(const llama_layer *l, enum lora_target t)
{
    const llama_weight *ws[LORA_N_TARGETS] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up,
                                              &l->w_down};
    return ws[t];
}

static float *dequantize_weight(const llama_weight *w)
{
    float *out = malloc(sizeof(float) * (size_t)w->rows * w->cols);
    if (out)
        dequantize_row(w->type, w->data, out, (int64_t)w->rows * w->cols);
    return out;
}

/* Dimensions shared by the passes. */
typedef struct dims {
    int C, QD, KD, F, V, NH, NKV, HS, L;
} dims;

static dims model_dims(const llama_model *m)
{
    const llama_hparams *hp = &m->hp;
    return (dims){hp->dim, hp->n_heads * hp->head_dim, hp->n_kv_heads * hp->head_dim, hp->ffn_dim,
                  hp->n_vocab, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->n_layers};
}

static float *falloc(size_t n, int *failed)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (p == NULL)
        *failed = 1;
    return p;
}

static int alloc_acts(train_ctx *c)
{
    dims d = model_dims(c->m);
    size_t T = (size_t)c->max_T;
    int failed = 0;
    for (int i = 0; i < d.L; i++) {
        layer_acts *a = &c->acts[i];
        a->x_in = falloc(T * d.C, &failed);
        a->xn1 = falloc(T * d.C, &failed);
        a->rstd1 = falloc(T, &failed);
        a->q = falloc(T * d.QD, &failed);
        a->k = falloc(T * d.KD, &failed);
        a->v = falloc(T * d.KD, &failed);
        a->P = falloc((size_t)d.NH * T * T, &failed);
        a->att = falloc(T * d.QD, &failed);
        a->x_mid = falloc(T * d.C, &failed);
        a->xn2 = falloc(T * d.C, &failed);
        a->rstd2 = falloc(T, &failed);
        a->g = falloc(T * d.F, &failed);
        a->u = falloc(T * d.F, &failed);
        a->h = falloc(T * d.F, &failed);
    }
    size_t wide = (size_t)(d.QD > d.C ? d.QD : d.C);
    if ((size_t)d.F > wide)
        wide = (size_t)d.F;
    c->x = falloc(T * d.C, &failed);
    c->rstdf = falloc(T, &failed);
    c->xnf = falloc(T * d.C, &failed);
    c->rows_in = falloc(T * d.C, &failed);
    c->logits = falloc(T * d.V, &failed);
    c->rows = malloc(sizeof(int) * T);
    c->row_loss = malloc(sizeof(double) * T);
    c->dx = falloc(T * d.C, &failed);
    c->dxn = falloc(T * wide, &failed);
    c->datt = falloc(T * d.QD, &failed);
    c->dq = falloc(T * d.QD, &failed);
    c->dk = falloc(T * d.KD, &failed);
    c->dv = falloc(T * d.KD, &failed);
    c->dh = falloc(T * d.F, &failed);
    c->dg = falloc(T * d.F, &failed);
    c->du = falloc(T * d.F, &failed);
    c->dP = falloc(T * T, &failed);
    c->xd = falloc(T * wide, &failed);
    c->dxd = falloc(T * wide, &failed);
    return failed || !c->rows || !c->row_loss ? -1 : 0;
}

/* cos/sin of RoPE's angles at positions 0..max_T-1, as llama.c computes them. */
static void rope_tables(train_ctx *c)
{
    const llama_hparams *hp = &c->m->hp;
    int half = hp->n_rot / 2;
    for (int t = 0; t < c->max_T; t++) {
        float pos = (float)t * hp->rope_pos_scale;
        for (int i = 0; i < half; i++) {
            float freq = powf(hp->rope_base, -2.0f * (float)i / (float)hp->n_rot);
            if (c->m->rope_freq_factors)
                freq /= c->m->rope_freq_factors[i];
            c->rope_cos[(size_t)t * half + i] = cosf(pos * freq);
            c->rope_sin[(size_t)t * half + i] = sinf(pos * freq);
        }
    }
}

train_ctx *train_ctx_create(const llama_model *m, int max_T, int n_threads, char *err, size_t errsz)
{
    if (max_T < 1 || n_threads < 1) {
        tfail(err, errsz, "bad sequence length %d or thread count %d", max_T, n_threads);
        return NULL;
    }
    train_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        tfail(err, errsz, "out of memory");
        return NULL;
    }
    dims d = model_dims(m);
    c->m = m;
    c->max_T = max_T;
    /* OpenBLAS's helper threads spin between calls; on a tiny model (stories260K) every
     * product is so small that they cost more than they give */
    openblas_set_num_threads(m->hp.dim >= 256 ? n_threads : 1);
    c->pool = threadpool_create(n_threads);
    c->layer_w = calloc((size_t)d.L * LORA_N_TARGETS, sizeof *c->layer_w);
    c->acts = calloc((size_t)d.L, sizeof *c->acts);
    int half = m->hp.n_rot / 2, failed = 0;
    c->rope_cos = falloc((size_t)max_T * half, &failed);
    c->rope_sin = falloc((size_t)max_T * half, &failed);
    if (!c->pool || !c->layer_w || !c->acts || failed || alloc_acts(c))
        goto oom;
    for (int i = 0; i < d.L; i++)
        for (int t = 0; t < LORA_N_TARGETS; t++)
            if ((c->layer_w[(size_t)i * LORA_N_TARGETS + t] =
                     dequantize_weight(base_weight(&m->layers[i], (enum lora_target)t))) == NULL)
                goto oom;
    if ((c->wout = dequantize_weight(&m->output)) == NULL)
        goto oom;
    rope_tables(c);
    return c;
oom:
    train_ctx_free(c);
    tfail(err, errsz, "out of memory for training buffers (%d tokens)", max_T);
    return NULL;
}

static void free_acts(layer_acts *a)
{
    float *ps[] = {a->x_in, a->xn1, a->rstd1, a->q, a->k, a->v, a->P, a->att, a->x_mid,
                   a->xn2, a->rstd2, a->g, a->u, a->h};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
    for (int t = 0; t < LORA_N_TARGETS; t++)
        free(a->lu[t]);
}

void train_ctx_free(train_ctx *c)
{
    if (c == NULL)
        return;
    dims d = model_dims(c->m);
    for (int i = 0; c->acts && i < d.L; i++)
        free_acts(&c->acts[i]);
    for (size_t i = 0; c->layer_w && i < (size_t)d.L * LORA_N_TARGETS; i++)
        free(c->layer_w[i]);
    float *ps[] = {c->wout, c->rope_cos, c->rope_sin, c->x, c->rstdf, c->xnf, c->rows_in,
                   c->logits, c->dx, c->dxn, c->datt, c->dq, c->dk, c->dv, c->dh, c->dg,
                   c->du, c->dP, c->xd, c->dxd, c->dlu};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
    free(c->rows);
    free(c->row_loss);
    free(c->acts);
    free(c->layer_w);
    threadpool_free(c->pool);
    free(c);
}

int train_ctx_max_tokens(const train_ctx *c) { return c->max_T; }

/* The (T, r) buffers of the adapter's intermediate products, grown to rank r. */
static int ensure_rank(train_ctx *c, int r)
{
    if (r <= c->lora_rank)
        return 0;
    dims d = model_dims(c->m);
    size_t n = (size_t)c->max_T * r;
    for (int i = 0; i < d.L; i++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            free(c->acts[i].lu[t]);
            if ((c->acts[i].lu[t] = malloc(sizeof(float) * n)) == NULL)
                return -1;
        }
    free(c->dlu);
    if ((c->dlu = malloc(sizeof(float) * n)) == NULL)
        return -1;
    c->lora_rank = r;
    return 0;
}

/* ---- products --------------------------------------------------------------------- */

/* y (T, out) = x (T, in) W^T, W (out, in); beta 1 adds to y. */
static void linear_forward(float *y, const float *x, const float *w, int T, int out, int in, float beta)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, w, in, beta, y, out);
}

/* dx (T, in) (+)= dy (T, out) W, W (out, in). */
static void linear_backward(float *dx, const float *dy, const float *w, int T, int out, int in, float beta)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, out, 1.0f, dy, out, w, in, beta, dx, in);
}

/* ---- LoRA ------------------------------------------------------------------------- */

/* A uniform number in [0, 1) from a 64-bit key (splitmix64's finalizer). */
static inline float hash_uniform(uint64_t key)
{
    uint64_t z = key + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (float)(z >> 40) / (float)(1u << 24);
}

/* dst (T, n) = src with each element dropped with probability p and the rest scaled by
 * 1/(1-p). The same (seed, stream) always drops the same elements, so the backward
 * pass applies the same mask to the gradient by calling this again. */
static void dropout_apply(float *dst, const float *src, int T, int n, float p, uint64_t seed, uint64_t stream)
{
    float keep_scale = 1.0f / (1.0f - p);
    uint64_t base = seed * 0x100000001b3ULL ^ (stream << 40);
    for (size_t i = 0; i < (size_t)T * n; i++)
        dst[i] = hash_uniform(base + i) < p ? 0.0f : src[i] * keep_scale;
}

typedef struct lora_site {
    const lora_matrix *lm;  /* the adapted matrix, NULL when the target is not adapted */
    lora_matrix *gm;        /* its gradients, or NULL */
    float *lu;              /* (T, r) saved x A^T */
    uint64_t stream;        /* dropout stream of this (layer, target) */
} lora_site;

static lora_site site(train_ctx *c, const llama_lora *l, llama_lora *grads, int layer, enum lora_target t)
{
    size_t k = (size_t)layer * LORA_N_TARGETS + t;
    lora_site s = {NULL, NULL, c->acts[layer].lu[t], k + 1};
    if (l && l->m[k].a) {
        s.lm = &l->m[k];
        s.gm = grads ? &grads->m[k] : NULL;
    }
    return s;
}

/* y (T, out) += scale * dropout(x) A^T B^T; keeps dropout(x) A^T in s->lu. */
static void lora_forward(train_ctx *c, const llama_lora *l, const lora_site *s, float *y,
                         const float *x, int T, const train_pass *pass)
{
    if (s->lm == NULL)
        return;
    const lora_matrix *lm = s->lm;
    if (pass->dropout > 0) {
        dropout_apply(c->xd, x, T, lm->in, pass->dropout, pass->dropout_seed, s->stream);
        x = c->xd;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, l->rank, lm->in, 1.0f, x, lm->in, lm->a,
                lm->in, 0.0f, s->lu, l->rank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, lm->out, l->rank, l->scale, s->lu, l->rank,
                lm->b, l->rank, 1.0f, y, lm->out);
}

/* Given dy (T, out): dB += scale dy^T lu, dA += (scale dy B)^T dropout(x), and, when dx
 * is not NULL, dx (T, in) += dropout'(scale dy B A). */
static void lora_backward(train_ctx *c, const llama_lora *l, const lora_site *s, float *dx,
                          const float *dy, const float *x, int T, const train_pass *pass)
{
    if (s->lm == NULL || s->gm == NULL)
        return;
    const lora_matrix *lm = s->lm;
    int r = l->rank;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lm->out, r, T, l->scale, dy, lm->out, s->lu, r,
                1.0f, s->gm->b, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, r, lm->out, l->scale, dy, lm->out, lm->b, r,
                0.0f, c->dlu, r);
    const float *xin = x;
    if (pass->dropout > 0) {
        dropout_apply(c->xd, x, T, lm->in, pass->dropout, pass->dropout_seed, s->stream);
        xin = c->xd;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, lm->in, T, 1.0f, c->dlu, r, xin, lm->in,
                1.0f, s->gm->a, lm->in);
    if (dx == NULL)
        return;
    if (pass->dropout <= 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, lm->in, r, 1.0f, c->dlu, r, lm->a,
                    lm->in, 1.0f, dx, lm->in);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, lm->in, r, 1.0f, c->dlu, r, lm->a, lm->in,
                0.0f, c->dxd, lm->in);
    dropout_apply(c->dxd, c->dxd, T, lm->in, pass->dropout, pass->dropout_seed, s->stream);
    for (size_t i = 0; i < (size_t)T * lm->in; i++)
        dx[i] += c->dxd[i];
}

/* ---- layers ----------------------------------------------------------------------- */

/* out (T, C) = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), kept per token. */
static void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int C, float eps)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++)
            ss += (double)xt[i] * xt[i];
        rstd[t] = (float)(1.0 / sqrt(ss / C + eps));
        for (int i = 0; i < C; i++)
            out[(size_t)t * C + i] = xt[i] * rstd[t] * w[i];
    }
}

/* dx += d/dx of rmsnorm given dout: rstd (dout w) - x rstd^3 sum(dout w x) / C. */
static void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w,
                             const float *rstd, int T, int C)
{
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C, *dt = dout + (size_t)t * C;
        double dot = 0.0;
        for (int i = 0; i < C; i++)
            dot += (double)dt[i] * w[i] * xt[i];
        float r = rstd[t], k = (float)(dot * r * r * r / C);
        for (int i = 0; i < C; i++)
            dx[(size_t)t * C + i] += r * dt[i] * w[i] - xt[i] * k;
    }
}

/* Rotates the first n_rot dims of each head of x (T, n_heads*HS); sign -1 turns back,
 * which is the backward pass (a rotation's transpose is its inverse). */
static void rope_rotate(const train_ctx *c, float *x, int T, int n_heads, float sign)
{
    const llama_hparams *hp = &c->m->hp;
    int half = hp->n_rot / 2, HS = hp->head_dim;
    bool neox = hp->rope_mode == ROPE_NEOX;
    for (int t = 0; t < T; t++) {
        const float *cs = c->rope_cos + (size_t)t * half, *sn = c->rope_sin + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * HS;
            for (int i = 0; i < half; i++) {
                int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b], s = sign * sn[i];
                v[a] = x0 * cs[i] - x1 * s;
                v[b] = x0 * s + x1 * cs[i];
            }
        }
    }
}

/* att (T, QD) = causal softmax(q k^T / sqrt(HS)) v, head by head; P keeps the weights. */
static void attention_forward(const dims *d, layer_acts *a, int T)
{
    float scale = 1.0f / sqrtf((float)d->HS);
    int group = d->NH / d->NKV;
    for (int h = 0; h < d->NH; h++) {
        int kvh = h / group;
        float *P = a->P + (size_t)h * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d->HS, scale, a->q + h * d->HS, d->QD,
                    a->k + kvh * d->HS, d->KD, 0.0f, P, T);
        for (int t = 0; t < T; t++) {
            float *row = P + (size_t)t * T, max = -INFINITY;
            for (int j = 0; j <= t; j++)
                max = row[j] > max ? row[j] : max;
            double sum = 0.0;
            for (int j = 0; j <= t; j++)
                sum += row[j] = expf(row[j] - max);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j <= t; j++)
                row[j] *= inv;
            for (int j = t + 1; j < T; j++)
                row[j] = 0.0f;  /* causal: later tokens get no weight */
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d->HS, T, 1.0f, P, T, a->v + kvh * d->HS,
                    d->KD, 0.0f, a->att + h * d->HS, d->QD);
    }
}

/* From datt (T, QD): dq (T, QD), dk and dv (T, KD) (query heads of a group add up). */
static void attention_backward(train_ctx *c, const dims *d, const layer_acts *a, int T)
{
    float scale = 1.0f / sqrtf((float)d->HS);
    int group = d->NH / d->NKV;
    memset(c->dk, 0, sizeof(float) * (size_t)T * d->KD);
    memset(c->dv, 0, sizeof(float) * (size_t)T * d->KD);
    for (int h = 0; h < d->NH; h++) {
        int kvh = h / group;
        const float *P = a->P + (size_t)h * T * T, *dO = c->datt + h * d->HS;
        float *dP = c->dP;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d->HS, 1.0f, dO, d->QD,
                    a->v + kvh * d->HS, d->KD, 0.0f, dP, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d->HS, T, 1.0f, P, T, dO, d->QD, 1.0f,
                    c->dv + kvh * d->HS, d->KD);
        /* softmax backward, row by row: dS = P * (dP - sum(P * dP)) */
        for (int t = 0; t < T; t++) {
            const float *p = P + (size_t)t * T;
            float *dp = dP + (size_t)t * T;
            double dot = 0.0;
            for (int j = 0; j <= t; j++)
                dot += (double)p[j] * dp[j];
            for (int j = 0; j <= t; j++)
                dp[j] = p[j] * (dp[j] - (float)dot);
            for (int j = t + 1; j < T; j++)
                dp[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d->HS, T, scale, dP, T,
                    a->k + kvh * d->HS, d->KD, 0.0f, c->dq + h * d->HS, d->QD);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d->HS, T, scale, dP, T,
                    a->q + h * d->HS, d->QD, 1.0f, c->dk + kvh * d->HS, d->KD);
    }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

static void add_bias(float *y, const float *b, int T, int n)
{
    for (int t = 0; b && t < T; t++)
        for (int i = 0; i < n; i++)
            y[(size_t)t * n + i] += b[i];
}

static float *frozen(const train_ctx *c, int layer, enum lora_target t)
{
    return c->layer_w[(size_t)layer * LORA_N_TARGETS + t];
}

/* One layer on c->x (T, C), in place, keeping what layer_backward needs. */
static void layer_forward(train_ctx *c, const llama_lora *l, int i, int T, const train_pass *pass)
{
    dims d = model_dims(c->m);
    const llama_layer *ly = &c->m->layers[i];
    layer_acts *a = &c->acts[i];
    float eps = c->m->hp.rms_eps;
    memcpy(a->x_in, c->x, sizeof(float) * (size_t)T * d.C);
    rmsnorm_forward(a->xn1, a->rstd1, c->x, ly->attn_norm, T, d.C, eps);
    float *outs[3] = {a->q, a->k, a->v};
    const float *biases[3] = {ly->bq, ly->bk, ly->bv};
    for (int t = LORA_Q; t <= LORA_V; t++) {
        int out = t == LORA_Q ? d.QD : d.KD;
        linear_forward(outs[t], a->xn1, frozen(c, i, t), T, out, d.C, 0.0f);
        add_bias(outs[t], biases[t], T, out);
        lora_site s = site(c, l, NULL, i, t);
        lora_forward(c, l, &s, outs[t], a->xn1, T, pass);
    }
    rope_rotate(c, a->q, T, d.NH, 1.0f);
    rope_rotate(c, a->k, T, d.NKV, 1.0f);
    attention_forward(&d, a, T);
    linear_forward(c->x, a->att, frozen(c, i, LORA_O), T, d.C, d.QD, 1.0f);  /* residual */
    lora_site so = site(c, l, NULL, i, LORA_O);
    lora_forward(c, l, &so, c->x, a->att, T, pass);

    memcpy(a->x_mid, c->x, sizeof(float) * (size_t)T * d.C);
    rmsnorm_forward(a->xn2, a->rstd2, c->x, ly->ffn_norm, T, d.C, eps);
    linear_forward(a->g, a->xn2, frozen(c, i, LORA_GATE), T, d.F, d.C, 0.0f);
    linear_forward(a->u, a->xn2, frozen(c, i, LORA_UP), T, d.F, d.C, 0.0f);
    lora_site sg = site(c, l, NULL, i, LORA_GATE), su = site(c, l, NULL, i, LORA_UP);
    lora_forward(c, l, &sg, a->g, a->xn2, T, pass);
    lora_forward(c, l, &su, a->u, a->xn2, T, pass);
    for (size_t j = 0; j < (size_t)T * d.F; j++)
        a->h[j] = silu(a->g[j]) * a->u[j];
    linear_forward(c->x, a->h, frozen(c, i, LORA_DOWN), T, d.C, d.F, 1.0f);  /* residual */
    lora_site sd = site(c, l, NULL, i, LORA_DOWN);
    lora_forward(c, l, &sd, c->x, a->h, T, pass);
}

/* Given c->dx, the gradient at the layer's output, adds the adapter's gradients and
 * turns c->dx into the gradient at its input (skipped when !need_dx: the first layer's
 * input is the frozen embedding). */
static void layer_backward(train_ctx *c, const llama_lora *l, llama_lora *g, int i, int T,
                           const train_pass *pass, bool need_dx)
{
    dims d = model_dims(c->m);
    const llama_layer *ly = &c->m->layers[i];
    const layer_acts *a = &c->acts[i];

    /* feed-forward half: x_out = x_mid + (silu(g) * u) Wd^T */
    linear_backward(c->dh, c->dx, frozen(c, i, LORA_DOWN), T, d.C, d.F, 0.0f);
    lora_site sd = site(c, l, g, i, LORA_DOWN);
    lora_backward(c, l, &sd, c->dh, c->dx, a->h, T, pass);
    for (size_t j = 0; j < (size_t)T * d.F; j++) {
        float x = a->g[j], sig = 1.0f / (1.0f + expf(-x));
        c->dg[j] = c->dh[j] * a->u[j] * sig * (1.0f + x * (1.0f - sig));
        c->du[j] = c->dh[j] * x * sig;
    }
    linear_backward(c->dxn, c->dg, frozen(c, i, LORA_GATE), T, d.F, d.C, 0.0f);
    linear_backward(c->dxn, c->du, frozen(c, i, LORA_UP), T, d.F, d.C, 1.0f);
    lora_site sg = site(c, l, g, i, LORA_GATE), su = site(c, l, g, i, LORA_UP);
    lora_backward(c, l, &sg, c->dxn, c->dg, a->xn2, T, pass);
    lora_backward(c, l, &su, c->dxn, c->du, a->xn2, T, pass);
    rmsnorm_backward(c->dx, c->dxn, a->x_mid, ly->ffn_norm, a->rstd2, T, d.C);

    /* attention half: x_mid = x_in + att Wo^T */
    linear_backward(c->datt, c->dx, frozen(c, i, LORA_O), T, d.C, d.QD, 0.0f);
    lora_site so = site(c, l, g, i, LORA_O);
    lora_backward(c, l, &so, c->datt, c->dx, a->att, T, pass);
    attention_backward(c, &d, a, T);
    rope_rotate(c, c->dq, T, d.NH, -1.0f);
    rope_rotate(c, c->dk, T, d.NKV, -1.0f);
    float *douts[3] = {c->dq, c->dk, c->dv};
    for (int t = LORA_Q; t <= LORA_V; t++) {
        int out = t == LORA_Q ? d.QD : d.KD;
        if (need_dx)
            linear_backward(c->dxn, douts[t], frozen(c, i, t), T, out, d.C, t == LORA_Q ? 0.0f : 1.0f);
        lora_site s = site(c, l, g, i, t);
        lora_backward(c, l, &s, need_dx ? c->dxn : NULL, douts[t], a->xn1, T, pass);
    }
    if (need_dx)
        rmsnorm_backward(c->dx, c->dxn, a->x_in, ly->attn_norm, a->rstd1, T, d.C);
}

/* ---- the loss --------------------------------------------------------------------- */

typedef struct loss_job {
    train_ctx *c;
    const int32_t *targets;  /* the token each scored row should predict */
    float grad_scale;
    bool want_grad;
} loss_job;

/* Row r of the logits: its cross-entropy, and (softmax - onehot) * grad_scale in place.
 * V exponentials per row: in float, once each (the sum is kept in double). */
static void loss_row_task(void *ctx, int r, int n_tasks, int thread)
{
    (void)n_tasks;
    (void)thread;
    loss_job *job = ctx;
    int V = job->c->m->hp.n_vocab, target = job->targets[r];
    float *z = job->c->logits + (size_t)r * V, max = -INFINITY;
    for (int i = 0; i < V; i++)
        max = z[i] > max ? z[i] : max;
    float target_logit = z[target];
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        sum += z[i] = expf(z[i] - max);
    job->c->row_loss[r] = log(sum) + max - target_logit;
    if (!job->want_grad)
        return;
    float scale = (float)(job->grad_scale / sum);
    for (int i = 0; i < V; i++)
        z[i] *= scale;
    z[target] -= job->grad_scale;
}

double train_sequence(train_ctx *c, const llama_lora *l, llama_lora *grads, const int32_t *tokens,
                      const uint8_t *mask, int n, const train_pass *pass, int *n_scored)
{
    dims d = model_dims(c->m);
    static const train_pass plain = {0.0f, 0, 1.0f};
    if (pass == NULL)
        pass = &plain;
    int T = n - 1;  /* inputs; the last token is only ever a target */
    *n_scored = 0;
    if (T < 1 || T > c->max_T || (l && ensure_rank(c, l->rank)))
        return -1;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= d.V)
            return -1;
    const llama_model *m = c->m;
    size_t row_bytes = tensor_row_bytes(m->tok_embd.type, d.C);
    for (int t = 0; t < T; t++)
        dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + row_bytes * tokens[t],
                       c->x + (size_t)t * d.C, d.C);
    for (int i = 0; i < d.L; i++)
        layer_forward(c, l, i, T, pass);
    rmsnorm_forward(c->xnf, c->rstdf, c->x, m->output_norm, T, d.C, m->hp.rms_eps);

    /* only the scored rows go through the output matrix, the widest product of all */
    int R = 0;
    int32_t targets[T];
    for (int t = 0; t < T; t++)
        if (mask[t + 1]) {
            memcpy(c->rows_in + (size_t)R * d.C, c->xnf + (size_t)t * d.C, sizeof(float) * d.C);
            targets[R] = tokens[t + 1];
            c->rows[R++] = t;
        }
    *n_scored = R;
    if (R == 0)
        return 0.0;
    linear_forward(c->logits, c->rows_in, c->wout, R, d.V, d.C, 0.0f);
    loss_job job = {c, targets, pass->grad_scale, grads != NULL};
    threadpool_run(c->pool, loss_row_task, &job, R);
    double loss = 0.0;
    for (int r = 0; r < R; r++)
        loss += c->row_loss[r];
    if (grads == NULL || l == NULL)
        return loss;

    linear_backward(c->rows_in, c->logits, c->wout, R, d.V, d.C, 0.0f);  /* d xnf, scored rows */
    memset(c->dxn, 0, sizeof(float) * (size_t)T * d.C);
    for (int r = 0; r < R; r++)
        memcpy(c->dxn + (size_t)c->rows[r] * d.C, c->rows_in + (size_t)r * d.C, sizeof(float) * d.C);
    memset(c->dx, 0, sizeof(float) * (size_t)T * d.C);
    rmsnorm_backward(c->dx, c->dxn, c->x, m->output_norm, c->rstdf, T, d.C);
    for (int i = d.L - 1; i >= 0; i--)
        layer_backward(c, l, grads, i, T, pass, i > 0);
    return loss;
}
