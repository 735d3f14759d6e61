/* test_train.c - the training passes (kernels/train/train.h) and LoRA adapters
 * (kernels/model/lora.h) on a tiny random f32 llama model (grouped-query attention,
 * two layers):
 *   - the adapter's analytic gradients equal central finite differences of the loss,
 *     for every adapted matrix (attention and MLP), with and without dropout, so the
 *     backward pass through RMSNorm, RoPE, causal attention, SwiGLU and the residuals
 *     is right;
 *   - the training forward gives the inference forward's loss (llama.c), with and
 *     without an adapter applied through llama_state_set_lora;
 *   - an adapter saved as GGUF loads back equal, and files that are not adapters or
 *     do not fit the model are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "engine_train.h"
#include "model/llama.h"
#include "model/lora.h"
#include "train/train.h"

#define assert_close(a, b, tol) do { double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.9g, %s = %.9g", #a, a_, #b, b_); } while (0)

typedef struct fixture {
    char path[64], lora_path[64];
    gguf_file *file;
    llama_model *model;
    train_ctx *ctx;
} fixture;

static const engine_model_shape tiny = {"tiny-train", 300, 32, 2, 4, 2, 48, 64, false};

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    snprintf(f->path, sizeof f->path, "/tmp/citadel_test_train_%d.gguf", (int)getpid());
    snprintf(f->lora_path, sizeof f->lora_path, "/tmp/citadel_test_lora_%d.gguf", (int)getpid());
    if (engine_write_random_model(f->path, &tiny, TENSOR_F32, 7, err, sizeof err) ||
        gguf_open(&f->file, f->path, err, sizeof err) ||
        llama_model_load(&f->model, f->file, err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    f->ctx = train_ctx_create(f->model, 32, 1, err, sizeof err);
    *state = f;
    return f->ctx ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    train_ctx_free(f->ctx);
    llama_model_free(f->model);
    gguf_close(f->file);
    unlink(f->path);
    unlink(f->lora_path);
    free(f);
    return 0;
}

static uint64_t rng_state = 12345;
static float urand(void)   /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)(rng_state >> 40) / (float)(1u << 23) - 1.0f;
}

static void fill_random(float *v, size_t n, void *user)
{
    float amp = *(float *)user;
    for (size_t i = 0; i < n; i++)
        v[i] = urand() * amp;
}

enum { N_TOK = 14 };

static void make_sequence(int32_t *tokens, uint8_t *mask)
{
    for (int i = 0; i < N_TOK; i++) {
        tokens[i] = 3 + (int32_t)((urand() + 1.0f) * 140.0f);
        mask[i] = i >= 5;   /* a "prompt" of 5 tokens, then the scored completion */
    }
}

static double loss_of(fixture *f, const llama_lora *l, const int32_t *tokens, const uint8_t *mask,
                      const train_pass *pass)
{
    int n_scored;
    double loss = train_sequence(f->ctx, l, NULL, tokens, mask, N_TOK, pass, &n_scored);
    assert_int_equal(n_scored, N_TOK - 5);
    return loss;
}

/* For each adapter array: the derivative along a random direction, analytic (g . d)
 * against (L(p + h d) - L(p - h d)) / 2h. */
static void check_gradients(fixture *f, float dropout)
{
    llama_lora *l = lora_create(f->model, 3, 6.0f, LORA_ATTENTION_TARGETS | LORA_MLP_TARGETS);
    llama_lora *g = lora_create_like(l);
    llama_lora *dir = lora_create_like(l);
    assert_non_null(g);
    float amp = 0.3f, one = 1.0f;
    lora_for_each_array(l, fill_random, &amp);   /* B non-zero, so A gets gradients too */
    lora_for_each_array(dir, fill_random, &one);
    int32_t tokens[N_TOK];
    uint8_t mask[N_TOK];
    make_sequence(tokens, mask);
    train_pass pass = {dropout, 99, 1.0f};
    int n_scored;
    double loss = train_sequence(f->ctx, l, g, tokens, mask, N_TOK, &pass, &n_scored);
    assert_true(loss > 0);
    assert_close(loss, loss_of(f, l, tokens, mask, &pass), 1e-9 * loss);

    size_t n, nd, ng;
    int checked = 0;
    for (size_t i = 0; lora_array(l, i, &n) != NULL; i++) {
        float *p = lora_array(l, i, &n), *d = lora_array(dir, i, &nd), *gr = lora_array(g, i, &ng);
        double analytic = 0.0;
        for (size_t j = 0; j < n; j++)
            analytic += (double)gr[j] * d[j];
        float *saved = malloc(sizeof(float) * n);
        memcpy(saved, p, sizeof(float) * n);
        const float h = 2e-3f;
        for (size_t j = 0; j < n; j++) p[j] = saved[j] + h * d[j];
        double up = loss_of(f, l, tokens, mask, &pass);
        for (size_t j = 0; j < n; j++) p[j] = saved[j] - h * d[j];
        double down = loss_of(f, l, tokens, mask, &pass);
        memcpy(p, saved, sizeof(float) * n);
        free(saved);
        double numeric = (up - down) / (2.0 * h);
        double tol = 2e-3 + 2e-2 * fabs(analytic);
        if (fabs(numeric - analytic) > tol)
            fail_msg("array %zu: analytic %.6f, finite difference %.6f", i, analytic, numeric);
        checked++;
    }
    assert_int_equal(checked, 2 * 7 * tiny.n_layers);
    lora_free(l);
    lora_free(g);
    lora_free(dir);
}

static void test_gradients(void **state) { check_gradients(*state, 0.0f); }
static void test_gradients_dropout(void **state) { check_gradients(*state, 0.25f); }

/* The same loss from llama.c's inference forward (logits of every position). */
static double inference_loss(fixture *f, const llama_lora *l, const int32_t *tokens, const uint8_t *mask)
{
    llama_state *s = llama_state_create(f->model, 64, 8, 1);
    llama_state_set_lora(s, l);
    int V = tiny.n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)V * N_TOK);
    assert_int_equal(llama_forward(s, tokens, N_TOK - 1, logits, true), 0);
    double loss = 0.0;
    for (int t = 0; t + 1 < N_TOK; t++) {
        if (!mask[t + 1])
            continue;
        const float *z = logits + (size_t)t * V;
        double max = z[0], sum = 0.0;
        for (int i = 1; i < V; i++) max = z[i] > max ? z[i] : max;
        for (int i = 0; i < V; i++) sum += exp(z[i] - max);
        loss += log(sum) + max - z[tokens[t + 1]];
    }
    free(logits);
    llama_state_free(s);
    return loss;
}

static void test_forward_matches_inference(void **state)
{
    fixture *f = *state;
    int32_t tokens[N_TOK];
    uint8_t mask[N_TOK];
    make_sequence(tokens, mask);
    double base = loss_of(f, NULL, tokens, mask, NULL);
    /* inference rounds attention inputs to half precision; training does not */
    assert_close(base, inference_loss(f, NULL, tokens, mask), 2e-3 * base);
    llama_lora *l = lora_create(f->model, 4, 8.0f, LORA_ATTENTION_TARGETS | LORA_MLP_TARGETS);
    float amp = 0.3f;
    lora_for_each_array(l, fill_random, &amp);
    double adapted = loss_of(f, l, tokens, mask, NULL);
    assert_true(fabs(adapted - base) > 0.05);   /* the adapter changes the model */
    assert_close(adapted, inference_loss(f, l, tokens, mask), 2e-3 * adapted);
    lora_free(l);
}

static void test_save_load(void **state)
{
    fixture *f = *state;
    char err[256];
    llama_lora *l = lora_create(f->model, 2, 4.0f, LORA_ATTENTION_TARGETS);
    float amp = 1.0f;
    lora_for_each_array(l, fill_random, &amp);
    assert_int_equal(lora_save(l, f->lora_path, err, sizeof err), 0);
    llama_lora *back;
    assert_int_equal(lora_load(&back, f->model, f->lora_path, err, sizeof err), 0);
    assert_int_equal(back->rank, 2);
    assert_int_equal(back->targets, LORA_ATTENTION_TARGETS);
    assert_true(back->alpha == 4.0f && back->scale == 2.0f);
    assert_int_equal(lora_n_params(back), lora_n_params(l));
    size_t n;
    for (size_t i = 0; lora_array(l, i, &n) != NULL; i++) {
        size_t m;
        assert_memory_equal(lora_array(l, i, &n), lora_array(back, i, &m), n * sizeof(float));
    }
    /* the adapter's file names llama.cpp's tensors and keys */
    gguf_file *gf;
    assert_int_equal(gguf_open(&gf, f->lora_path, err, sizeof err), 0);
    const gguf_tensor *a = gguf_find_tensor(gf, "blk.1.attn_output.weight.lora_a");
    const gguf_tensor *b = gguf_find_tensor(gf, "blk.1.attn_output.weight.lora_b");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a->ne[0] == 32 && a->ne[1] == 2 && b->ne[0] == 2 && b->ne[1] == 32);
    gguf_str s;
    assert_true(gguf_get_str(gf, "general.type", &s) && gguf_str_eq(s, "adapter"));
    assert_true(gguf_get_str(gf, "adapter.type", &s) && gguf_str_eq(s, "lora"));
    gguf_close(gf);
    lora_free(back);
    lora_free(l);

    /* a model is not an adapter */
    assert_int_equal(lora_load(&back, f->model, f->path, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a LoRA adapter"));
    /* an adapter for another shape */
    engine_model_shape other = tiny;
    other.dim = 64;
    char other_path[80];
    snprintf(other_path, sizeof other_path, "%s.other", f->path);
    gguf_file *of;
    llama_model *om;
    assert_int_equal(engine_write_random_model(other_path, &other, TENSOR_F32, 3, err, sizeof err), 0);
    assert_int_equal(gguf_open(&of, other_path, err, sizeof err), 0);
    assert_int_equal(llama_model_load(&om, of, err, sizeof err), 0);
    llama_lora *wide = lora_create(om, 2, 4.0f, LORA_ATTENTION_TARGETS);
    assert_int_equal(lora_save(wide, f->lora_path, err, sizeof err), 0);
    assert_int_equal(lora_load(&back, f->model, f->lora_path, err, sizeof err), -1);
    assert_non_null(strstr(err, "shape"));
    lora_free(wide);
    llama_model_free(om);
    gguf_close(of);
    unlink(other_path);
}

static void test_refuses_bad_sequences(void **state)
{
    fixture *f = *state;
    int32_t tokens[40] = {0};
    uint8_t mask[40] = {0};
    int n_scored;
    assert_true(train_sequence(f->ctx, NULL, NULL, tokens, mask, 40, NULL, &n_scored) < 0);  /* > max_T + 1 */
    assert_true(train_sequence(f->ctx, NULL, NULL, tokens, mask, 1, NULL, &n_scored) < 0);
    tokens[3] = 300;  /* out of the vocabulary */
    assert_true(train_sequence(f->ctx, NULL, NULL, tokens, mask, 8, NULL, &n_scored) < 0);
    tokens[3] = 5;
    assert_true(train_sequence(f->ctx, NULL, NULL, tokens, mask, 8, NULL, &n_scored) == 0.0);
    assert_int_equal(n_scored, 0);  /* nothing masked in: nothing scored */
}

static void test_text_metrics(void **state)
{
    (void)state;
    const char *ref[] = {"my name is Zorblax the Purple ."};
    const char *same[] = {"my name is Zorblax the Purple ."};
    const char *other[] = {"a cat sat on one mat today"};
    const char *half[] = {"my name is Bob"};
    assert_close(engine_bleu(same, ref, 1), 1.0, 1e-12);
    assert_close(engine_rouge_l(same, ref, 1), 1.0, 1e-12);
    assert_close(engine_bleu(other, ref, 1), 0.0, 1e-12);
    assert_close(engine_rouge_l(other, ref, 1), 0.0, 1e-12);
    /* 3 of 4 unigrams, 2/3 bigrams, (1+1)/(2+1), (0+1)/(1+1); brevity exp(1 - 7/4) */
    double bleu = exp(1.0 - 7.0 / 4.0) * pow(0.75 * (3.0 / 4.0) * (2.0 / 3.0) * 0.5, 0.25);
    assert_close(engine_bleu(half, ref, 1), bleu, 1e-9);
    /* LCS 3: precision 3/4, recall 3/7 */
    assert_close(engine_rouge_l(half, ref, 1), 2 * 0.75 * (3.0 / 7) / (0.75 + 3.0 / 7), 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradients_dropout),
        cmocka_unit_test(test_forward_matches_inference),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_refuses_bad_sequences),
        cmocka_unit_test(test_text_metrics),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
