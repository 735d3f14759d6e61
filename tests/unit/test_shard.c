/* test_shard.c - tensor parallelism in the forward pass (kernels/model/shard.c): the
 * ranks of a real shared-memory group run as threads, each with its own share of the
 * model, and must give the same greedy tokens as the whole model on one rank:
 *   - stories260K (F32, 8 heads / 4 KV heads) split in 2 and 4: every greedy id of
 *     llama.cpp's reference (tests/data) and of TP=1, for 48 steps of each prompt;
 *   - the synthetic Q8_0 and Q4_0 models split in 2 (Wo and Wdown cut along blocks);
 *   - SmolLM2-135M-Instruct (9 heads / 3 KV heads, Q4_1) split in 3 (skipped, visibly,
 *     without var/models/: `make model`);
 *   - every rank of a group ends each step with bit-identical logits (the ranks cannot
 *     drift apart), and the logits stay within a small distance of TP=1's (only the
 *     order of the sums differs);
 *   - head counts or an FFN width that do not divide, and slices that would cut a
 *     quantized block, are refused at load with a message saying which.
 * Greedy steps follow each rank's own argmax, so a divergence anywhere shows.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine.h"
#include "json_min.h"
#include "parallel/collective.h"

#define STORIES "tests/data/models/stories260K.gguf"
#define SMOLLM2 "var/models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_RANKS 4

/* How far TP's logits may be from TP=1's. A split changes only the order of sums, but
 * the engine rounds keys and values to f16 and quantizes activations to 8 bits before
 * each quantized product, so a last-bit change can move a rounding step and grow
 * through the layers. Measured: stories260K (F32) 5e-3 at TP=2 on logits near 18;
 * synth-tiny 1e-2; SmolLM2 Q4_1 1.26 at TP=3, as large as between the scalar and the
 * AVX2 kernels at TP=1 (0.9-1.27 on the same prompt: also just summation order). The
 * greedy ids, which are what must not change, are compared exactly. */
#define F32_TOL 1e-2
#define SYNTH_TOL 0.05
#define SMOLLM2_TOL 2.5
#define MAX_STEPS 64

/* One greedy run of a model on `size` ranks (size 1: the whole model, no group). */
typedef struct tp_run {
    const char *path;
    int size;
    char shm_name[64];
    const int32_t *prompt;
    int n_prompt, steps, n_vocab;
    int32_t ids[MAX_RANKS][MAX_STEPS];
    float *logits[MAX_RANKS];          /* steps x V of each rank */
    int rc[MAX_RANKS];
    char err[MAX_RANKS][512];
} tp_run;

typedef struct rank_arg {
    tp_run *run;
    int rank;
} rank_arg;

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int greedy(tp_run *t, int rank, engine_model *m)
{
    char *err = t->err[rank];
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 256, .n_threads = 1});
    if (s == NULL) return snprintf(err, 512, "no session"), -1;
    int V = engine_n_vocab(m);
    t->n_vocab = V;
    t->logits[rank] = malloc(sizeof(float) * (size_t)V * t->steps);
    float *lg = t->logits[rank];
    int rc = engine_session_eval(s, t->prompt, t->n_prompt, lg, false, err, 512);
    for (int step = 0; rc == 0 && step < t->steps; step++) {
        int32_t next = argmax(lg + (size_t)step * V, V);
        t->ids[rank][step] = next;
        if (step + 1 < t->steps)
            rc = engine_session_eval(s, &next, 1, lg + (size_t)(step + 1) * V, false, err, 512);
    }
    engine_session_free(s);
    return rc;
}

static void *rank_main(void *p)
{
    rank_arg *a = p;
    tp_run *t = a->run;
    char *err = t->err[a->rank];
    collective *c = NULL;
    if (t->size > 1 &&
        (c = collective_shm_open(t->shm_name, a->rank, t->size, 0, 30000, 60000, err, 512)) == NULL) {
        t->rc[a->rank] = -1;
        return NULL;
    }
    engine_model *m = NULL;
    t->rc[a->rank] = engine_model_open_shard(&m, t->path, c, err, 512);
    if (t->rc[a->rank] == 0) {
        t->rc[a->rank] = greedy(t, a->rank, m);
        engine_model_close(m);
    }
    collective_close(c);
    return NULL;
}

static void run_ranks(tp_run *t)
{
    static int unique;
    pthread_t th[MAX_RANKS];
    rank_arg args[MAX_RANKS];
    snprintf(t->shm_name, sizeof t->shm_name, "citadel-test-shard-%d-%d", (int)getpid(), unique++);
    for (int r = 0; r < t->size; r++) {
        args[r] = (rank_arg){t, r};
        assert_int_equal(pthread_create(&th[r], NULL, rank_main, &args[r]), 0);
    }
    for (int r = 0; r < t->size; r++)
        pthread_join(th[r], NULL);
}

static void free_run(tp_run *t)
{
    for (int r = 0; r < MAX_RANKS; r++)
        free(t->logits[r]);
}

/* TP=size against TP=1 on one prompt: same ids on every rank and as the whole model,
 * identical logits across ranks, close logits to the whole model's. Returns the
 * ids through want_ids (may be NULL) for comparison with a reference. */
static void check_split(const char *path, int size, const int32_t *prompt, int n_prompt, int steps,
                        const int32_t *want_ids, double tol)
{
    tp_run whole = {.path = path, .size = 1, .prompt = prompt, .n_prompt = n_prompt, .steps = steps};
    tp_run split = {.path = path, .size = size, .prompt = prompt, .n_prompt = n_prompt, .steps = steps};
    run_ranks(&whole);
    run_ranks(&split);
    assert_int_equal(whole.rc[0], 0);
    for (int r = 0; r < size; r++) {
        if (split.rc[r]) fail_msg("%s rank %d of %d: %s", path, r, size, split.err[r]);
    }
    int V = whole.n_vocab;
    double max_diff = 0, min_gap = INFINITY;
    for (int step = 0; step < steps; step++) {
        const float *a = whole.logits[0] + (size_t)step * V, *b = split.logits[0] + (size_t)step * V;
        for (int r = 1; r < size; r++)
            if (memcmp(b, split.logits[r] + (size_t)step * V, sizeof(float) * V) != 0)
                fail_msg("%s TP=%d step %d: rank %d's logits differ from rank 0's", path, size, step, r);
        for (int i = 0; i < V; i++)
            if (fabs(a[i] - b[i]) > max_diff) max_diff = fabs(a[i] - b[i]);
        int top = argmax(a, V);
        float second = -INFINITY;
        for (int i = 0; i < V; i++)
            if (i != top && a[i] > second) second = a[i];
        if (a[top] - second < min_gap) min_gap = a[top] - second;
        for (int r = 0; r < size; r++)
            if (split.ids[r][step] != whole.ids[0][step])
                fail_msg("%s TP=%d step %d: rank %d chose %d, TP=1 %d (TP=1's gap to the runner-up %g)", path,
                         size, step, r, split.ids[r][step], whole.ids[0][step], a[top] - second);
        if (want_ids && whole.ids[0][step] != want_ids[step])
            fail_msg("%s step %d: TP=1 chose %d, the reference %d", path, step, whole.ids[0][step], want_ids[step]);
    }
    printf("  %s TP=%d: %d greedy steps equal; logits within %.3g of TP=1 (smallest top-2 gap %.3g)\n", path, size,
           steps, max_diff, min_gap);
    if (max_diff > tol)
        fail_msg("%s TP=%d: logits %g away from TP=1's, more than %g", path, size, max_diff, tol);
    free_run(&whole);
    free_run(&split);
}

static int read_jsonl(const char *path, json_value **out, int cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char line[1 << 16];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        out[n] = json_parse(line);
        assert_non_null(out[n]);
        n++;
    }
    fclose(f);
    return n;
}

/* The reference's prompts, and its greedy ids (the top id of each step). */
static void check_reference_cases(const char *jsonl, const char *model_field, const char *path, int size,
                                  double tol)
{
    json_value *cases[16];
    int n = read_jsonl(jsonl, cases, 16), checked = 0;
    for (int i = 0; i < n; i++) {
        const json_value *c = cases[i], *pids = json_get(c, "prompt_ids"), *steps = json_get(c, "steps");
        const json_value *model = json_get(c, "model");
        if (model_field && (model == NULL || strcmp(model->string, model_field) != 0)) continue;
        int32_t prompt[256], want[MAX_STEPS];
        for (size_t k = 0; k < pids->n; k++) prompt[k] = (int32_t)pids->items[k]->number;
        int n_steps = (int)steps->n < MAX_STEPS ? (int)steps->n : MAX_STEPS;
        for (int k = 0; k < n_steps; k++)
            want[k] = (int32_t)json_get(steps->items[k], "top")->items[0]->items[0]->number;
        /* the quantized references differ from us in activation rounding: their ids are
         * checked by test_model; here TP=1 is the reference */
        check_split(path, size, prompt, (int)pids->n, n_steps, model_field ? NULL : want, tol);
        checked++;
    }
    for (int i = 0; i < n; i++) json_free(cases[i]);
    assert_true(checked > 0);
}

static void test_stories_tp2_matches_reference_and_tp1(void **state)
{
    (void)state;
    check_reference_cases("tests/data/stories260K-generate-shared.jsonl", NULL, STORIES, 2, F32_TOL);
}

static void test_stories_tp4(void **state)
{
    (void)state;
    int32_t prompt[] = {1, 403, 407, 261, 378};   /* "Once upon a time" with BOS */
    check_split(STORIES, 4, prompt, 5, 48, NULL, F32_TOL);
}

static void test_synth_quantized_tp2(void **state)
{
    (void)state;
    check_reference_cases("tests/data/synth-tiny-generate.jsonl", "synth-tiny-q8_0.gguf",
                          "tests/data/models/synth-tiny-q8_0.gguf", 2, SYNTH_TOL);
    check_reference_cases("tests/data/synth-tiny-generate.jsonl", "synth-tiny-q4_0.gguf",
                          "tests/data/models/synth-tiny-q4_0.gguf", 2, SYNTH_TOL);
}

static bool have_smollm2(void)
{
    if (access(SMOLLM2, R_OK) == 0) return true;
    printf("  SKIPPED: %s is absent (make model)\n", SMOLLM2);
    return false;
}

static void test_smollm2_tp3(void **state)
{
    (void)state;
    if (!have_smollm2()) return;
    engine_model *m = NULL;
    char err[512];
    assert_int_equal(engine_model_open(&m, SMOLLM2, err, sizeof err), 0);
    const char *text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    int32_t prompt[128];
    int n = engine_tokenize(m, text, strlen(text), false, true, prompt, 128);
    engine_model_close(m);
    assert_true(n > 0 && n < 128);
    check_split(SMOLLM2, 3, prompt, n, 32, NULL, SMOLLM2_TOL);
}

/* ---- models that cannot be split -------------------------------------------------- */

/* Every rank of a group of `size` must fail to load path with a message holding want. */
static void check_refused(const char *path, int size, const char *want)
{
    int32_t prompt[] = {1};
    tp_run t = {.path = path, .size = size, .prompt = prompt, .n_prompt = 1, .steps = 1};
    run_ranks(&t);
    for (int r = 0; r < size; r++) {
        assert_int_equal(t.rc[r], -1);
        if (strstr(t.err[r], want) == NULL)
            fail_msg("rank %d: '%s' lacks '%s'", r, t.err[r], want);
    }
    printf("  refused as it should be: %s\n", t.err[0]);
    free_run(&t);
}

static void test_indivisible_refused(void **state)
{
    (void)state;
    char path[128], err[256];
    snprintf(path, sizeof path, "/tmp/citadel-test-shard-%d.gguf", (int)getpid());
    /* 6 heads, 3 KV heads: not over 2 ranks (KV), nor 4 (both); F = 96 (3 blocks of 32) */
    engine_model_shape shape = {.name = "odd", .n_vocab = 300, .dim = 192, .n_layers = 1, .n_heads = 6,
                                .n_kv_heads = 3, .ffn_dim = 96, .n_ctx = 64};
    assert_int_equal(engine_write_random_model(path, &shape, TENSOR_Q8_0, 7, err, sizeof err), 0);
    check_refused(path, 2, "6 attention heads and 3 key/value heads, and both must be divisible by 2");
    check_refused(path, 4, "divisible by 4");
    /* 4 / 2 heads divide by 2, but each rank's 48 of F = 96 columns would cut a block */
    shape = (engine_model_shape){.name = "cut", .n_vocab = 300, .dim = 128, .n_layers = 1, .n_heads = 4,
                                 .n_kv_heads = 2, .ffn_dim = 96, .n_ctx = 64};
    if (engine_write_random_model(path, &shape, TENSOR_Q8_0, 7, err, sizeof err)) fail_msg("%s", err);
    check_refused(path, 2, "each rank's 48 columns of ffn_down would cut its Q8_0 blocks of 32");
    /* heads of 16 values: one head per rank is half a block of Wo */
    shape = (engine_model_shape){.name = "cut", .n_vocab = 300, .dim = 64, .n_layers = 1, .n_heads = 4,
                                 .n_kv_heads = 4, .ffn_dim = 128, .n_ctx = 64};
    if (engine_write_random_model(path, &shape, TENSOR_Q8_0, 7, err, sizeof err)) fail_msg("%s", err);
    check_refused(path, 4, "each rank's 16 columns of attn_output would cut its Q8_0 blocks of 32");
    unlink(path);
    if (have_smollm2())
        check_refused(SMOLLM2, 2, "it has 9 attention heads and 3 key/value heads");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_tp2_matches_reference_and_tp1),
        cmocka_unit_test(test_stories_tp4),
        cmocka_unit_test(test_synth_quantized_tp2),
        cmocka_unit_test(test_smollm2_tp3),
        cmocka_unit_test(test_indivisible_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
