/* test_sample.c - the sampler (kernels/sample/sample.h):
 *   - greedy is the argmax with ties to the lowest id; top-k = 1 is greedy at any
 *     temperature;
 *   - a seed gives the same draws, another seed other draws;
 *   - top-p, min-p and temperature give the distribution they promise: only the allowed
 *     ids appear and their frequencies over many draws pass a chi-square bound;
 *   - top-p without top-k (heap path) draws exactly as top-p after a full sort;
 *   - repetition, presence and frequency penalties change the logits as specified;
 *   - log-probabilities are a normalised log-softmax, the top list is sorted, and
 *     extreme logits (-inf, +inf, NaN, +-3e38) never give NaN.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sample/sample.h"

/* Parameters with every truncation off, at temperature 1. */
static sampler_params plain_params(uint64_t seed)
{
    sampler_params p = sampler_default_params();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

/* Deterministic pseudo-random logits in [-scale, scale), independent of libc rand. */
static void fill_logits(float *l, int n, uint32_t seed, float scale)
{
    uint32_t x = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        l[i] = ((float)(x >> 8) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
    }
}

/* One draw from a copy of logits (the sampler overwrites what it is given). */
static sample_result sample_copy(sampler *s, const float *logits, int n)
{
    float *tmp = malloc(sizeof(float) * (size_t)n);
    assert_non_null(tmp);
    memcpy(tmp, logits, sizeof(float) * (size_t)n);
    sample_result r = sampler_sample(s, tmp, NULL, 0);
    free(tmp);
    return r;
}

/* Draws n_draws tokens and asserts that only the ids with expected[i] > 0 appear and that
 * the counts fit expected (probabilities summing to 1) by Pearson's chi-square, against a
 * bound well past the 0.1% tail for the degrees of freedom used here. */
static void check_distribution(const sampler_params *p, const float *logits, int n,
                               const double *expected, int n_draws)
{
    sampler *s = sampler_create(p, n);
    assert_non_null(s);
    int counts[16] = {0};
    assert_true(n <= 16);
    for (int d = 0; d < n_draws; d++) {
        sample_result r = sample_copy(s, logits, n);
        assert_true(r.id >= 0 && r.id < n);
        counts[r.id]++;
    }
    double chi2 = 0.0;
    int df = -1;
    for (int i = 0; i < n; i++) {
        if (expected[i] == 0.0) {
            assert_int_equal(counts[i], 0);
            continue;
        }
        double e = expected[i] * n_draws;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        df++;
    }
    /* 0.1% critical values for 1..4 degrees of freedom are 10.8, 13.8, 16.3, 18.5; with
     * one allowed id (df 0) the zero counts above were the whole check. */
    assert_true(df >= 0 && df <= 4);
    static const double bound[] = {1e-9, 10.8, 13.8, 16.3, 18.5};
    if (chi2 > bound[df])
        fail_msg("chi-square %.2f exceeds %.1f (df %d)", chi2, bound[df], df);
    sampler_free(s);
}

/* ---- greedy --------------------------------------------------------------------------- */

static void test_greedy_picks_argmax_ties_lowest(void **state)
{
    (void)state;
    sampler_params p = plain_params(1);
    p.temperature = 0.0f;
    sampler *s = sampler_create(&p, 6);
    assert_non_null(s);
    float a[6] = {1, 5, 3, 5, 2, -1};
    assert_int_equal(sampler_sample(s, a, NULL, 0).id, 1);
    float b[6] = {-2, -2, -2, -2, -2, -2};
    assert_int_equal(sampler_sample(s, b, NULL, 0).id, 0);
    float c[6] = {-INFINITY, -3, 7, 0, 7.5f, 7.5f};
    assert_int_equal(sampler_sample(s, c, NULL, 0).id, 4);
    sampler_free(s);
}

static void test_top_k1_is_greedy_at_any_temperature(void **state)
{
    (void)state;
    enum { V = 3000 };
    static float logits[V];
    const float temps[] = {0.05f, 0.7f, 1.0f, 3.0f, 100.0f};
    for (int t = 0; t < 5; t++) {
        sampler_params p = plain_params(42 + (uint64_t)t);
        p.temperature = temps[t];
        p.top_k = 1;
        p.top_p = 0.5f;
        p.min_p = 0.1f;
        sampler *s = sampler_create(&p, V);
        assert_non_null(s);
        for (int round = 0; round < 20; round++) {
            fill_logits(logits, V, (uint32_t)(round + 100 * t), 8.0f);
            logits[V - 1] = logits[round] = 9.0f;  /* a tie: the lower id wins */
            assert_int_equal(sample_copy(s, logits, V).id, round);
        }
        sampler_free(s);
    }
}

/* ---- seeds ---------------------------------------------------------------------------- */

static void draw_sequence(uint64_t seed, const float *logits, int n, int32_t *out, int count)
{
    sampler_params p = plain_params(seed);
    sampler *s = sampler_create(&p, n);
    assert_non_null(s);
    for (int i = 0; i < count; i++)
        out[i] = sample_copy(s, logits, n).id;
    sampler_free(s);
}

static void test_same_seed_same_sequence(void **state)
{
    (void)state;
    enum { V = 1000, N = 200 };
    static float logits[V];
    fill_logits(logits, V, 7, 2.0f);
    int32_t a[N], b[N], c[N];
    draw_sequence(1234, logits, V, a, N);
    draw_sequence(1234, logits, V, b, N);
    draw_sequence(1235, logits, V, c, N);
    assert_memory_equal(a, b, sizeof a);
    int differ = 0;
    for (int i = 0; i < N; i++)
        differ += a[i] != c[i];
    assert_true(differ > N / 2);  /* a flat distribution over 1000 ids rarely repeats */
}

/* ---- truncation and temperature ------------------------------------------------------- */

static void test_top_p_restricts_candidates(void **state)
{
    (void)state;
    /* p = .5 .3 .1 .05 .05: the nucleus for 0.85 is {0, 1, 2} (0.9 >= 0.85). */
    const float logits[5] = {logf(0.5f), logf(0.3f), logf(0.1f), logf(0.05f), logf(0.05f)};
    sampler_params p = plain_params(99);
    p.top_p = 0.85f;
    const double expected[5] = {0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0};
    check_distribution(&p, logits, 5, expected, 20000);
    /* The same through the sorted path that follows top-k. */
    p.top_k = 4;
    check_distribution(&p, logits, 5, expected, 20000);
    /* A tiny top_p keeps only the best token. */
    p.top_k = 0;
    p.top_p = 0.01f;
    const double only_best[5] = {1, 0, 0, 0, 0};
    check_distribution(&p, logits, 5, only_best, 2000);
}

static void test_top_p_heap_path_matches_full_sort(void **state)
{
    (void)state;
    enum { V = 5000, N = 200 };
    static float logits[V];
    const float top_ps[] = {0.3f, 0.9f, 0.999f};
    for (int t = 0; t < 3; t++) {
        fill_logits(logits, V, (uint32_t)(11 + t), 6.0f);
        logits[V - 1] = -INFINITY;  /* top_k = V - 1 below drops exactly this one */
        sampler_params p = plain_params(5);
        p.top_p = top_ps[t];
        sampler *heap = sampler_create(&p, V);
        p.top_k = V - 1;  /* full selection, then top-p over the sorted list */
        sampler *sorted = sampler_create(&p, V);
        assert_non_null(heap);
        assert_non_null(sorted);
        for (int i = 0; i < N; i++)
            assert_int_equal(sample_copy(heap, logits, V).id, sample_copy(sorted, logits, V).id);
        sampler_free(heap);
        sampler_free(sorted);
    }
}

static void test_min_p_restricts_candidates(void **state)
{
    (void)state;
    /* p = .4 .3 .2 .06 .04 with min_p 0.2: the threshold 0.08 keeps {0, 1, 2}. */
    const float logits[5] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.06f), logf(0.04f)};
    sampler_params p = plain_params(3);
    p.min_p = 0.2f;
    const double expected[5] = {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0, 0};
    check_distribution(&p, logits, 5, expected, 20000);
}

static void test_top_k_restricts_candidates(void **state)
{
    (void)state;
    const float logits[5] = {0.0f, 2.0f, 1.0f, -1.0f, 1.5f};
    sampler_params p = plain_params(8);
    p.top_k = 2;
    double z = exp(2.0) + exp(1.5);
    const double expected[5] = {0, exp(2.0) / z, 0, 0, exp(1.5) / z};
    check_distribution(&p, logits, 5, expected, 20000);
}

static void test_temperature_sharpens_and_flattens(void **state)
{
    (void)state;
    const float logits[3] = {2.0f, 1.0f, 0.0f};
    const float temps[] = {0.5f, 1.0f, 2.0f};
    for (int t = 0; t < 3; t++) {
        sampler_params p = plain_params(77 + (uint64_t)t);
        p.temperature = temps[t];
        double w[3], z = 0.0;
        for (int i = 0; i < 3; i++)
            z += w[i] = exp(logits[i] / temps[t]);
        const double expected[3] = {w[0] / z, w[1] / z, w[2] / z};
        check_distribution(&p, logits, 3, expected, 20000);
    }
}

/* ---- penalties ------------------------------------------------------------------------ */

/* Runs one sample with p over logits (n <= 8) and history; returns the penalised logits. */
static void penalise(const sampler_params *p, float *logits, int n, const int32_t *hist, int n_hist)
{
    sampler *s = sampler_create(p, n);
    assert_non_null(s);
    sampler_sample(s, logits, hist, n_hist);
    sampler_free(s);
}

static void assert_logits(const float *got, const float *want, int n)
{
    for (int i = 0; i < n; i++)
        if (fabsf(got[i] - want[i]) > 1e-6f)
            fail_msg("logit %d: got %g, want %g", i, got[i], want[i]);
}

static void test_presence_penalty_once_per_present_token(void **state)
{
    (void)state;
    sampler_params p = plain_params(1);
    p.presence_penalty = 0.5f;
    float l[5] = {1, 1, 1, 1, 1};
    const int32_t hist[] = {2, 2, 3, 2};
    penalise(&p, l, 5, hist, 4);
    assert_logits(l, (float[]){1, 1, 0.5f, 0.5f, 1}, 5);
}

static void test_frequency_penalty_times_count(void **state)
{
    (void)state;
    sampler_params p = plain_params(1);
    p.frequency_penalty = 0.25f;
    float l[5] = {1, 1, 1, 1, 1};
    const int32_t hist[] = {2, 2, 3, 2};
    penalise(&p, l, 5, hist, 4);
    assert_logits(l, (float[]){1, 1, 0.25f, 0.75f, 1}, 5);
}

static void test_repetition_penalty_divides_positive_multiplies_negative(void **state)
{
    (void)state;
    sampler_params p = plain_params(1);
    p.repeat_penalty = 2.0f;
    float l[4] = {3.0f, -1.5f, 3.0f, -1.5f};
    const int32_t hist[] = {0, 1, 0, 0};  /* repeats are penalised once */
    penalise(&p, l, 4, hist, 4);
    assert_logits(l, (float[]){1.5f, -3.0f, 3.0f, -1.5f}, 4);
}

static void test_penalties_combine_within_window(void **state)
{
    (void)state;
    sampler_params p = plain_params(1);
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    float l[5] = {4, 4, 4, -4, 4};
    /* Only the last 5 tokens count: 1 once, 3 twice; 0 is outside the window, and ids
     * outside the vocabulary are ignored. Repetition first, then the others. */
    const int32_t hist[] = {0, 0, 1, 3, 3, 99, -1};
    p.repeat_last_n = 5;
    penalise(&p, l, 5, hist, 7);
    assert_logits(l, (float[]){4, 2.0f - 0.75f, 4, -8.0f - 1.0f, 4}, 5);
    /* repeat_last_n = 0 turns every penalty off. */
    p.repeat_last_n = 0;
    float m[5] = {4, 4, 4, -4, 4};
    penalise(&p, m, 5, hist, 7);
    assert_logits(m, (float[]){4, 4, 4, -4, 4}, 5);
}

static void test_penalties_apply_over_calls_without_leaking(void **state)
{
    (void)state;
    /* The sampler's counts must be clean after each call: the second call with no
     * history sees unpenalised logits. */
    sampler_params p = plain_params(1);
    p.frequency_penalty = 1.0f;
    sampler *s = sampler_create(&p, 3);
    assert_non_null(s);
    float a[3] = {0, 0, 0};
    const int32_t hist[] = {1, 1};
    sampler_sample(s, a, hist, 2);
    assert_logits(a, (float[]){0, -2, 0}, 3);
    float b[3] = {0, 0, 0};
    sampler_sample(s, b, NULL, 0);
    assert_logits(b, (float[]){0, 0, 0}, 3);
    sampler_free(s);
}

/* ---- log-probabilities ---------------------------------------------------------------- */

static void test_logprobs_normalised_and_sorted(void **state)
{
    (void)state;
    enum { V = 20 };
    float logits[V];
    fill_logits(logits, V, 5, 10.0f);
    logits[3] = -INFINITY;
    sampler_params p = plain_params(2);
    p.n_top_logprobs = SAMPLE_MAX_TOP;
    p.temperature = 0.3f;  /* neither temperature nor truncation changes the logprobs */
    p.top_k = 3;
    sampler *s = sampler_create(&p, V);
    assert_non_null(s);
    sample_result r = sample_copy(s, logits, V);
    assert_int_equal(r.n_top, V);
    double sum = 0.0;
    for (int i = 0; i < r.n_top; i++) {
        sum += exp(r.top_logprobs[i]);
        if (i > 0)
            assert_true(r.top_logprobs[i] <= r.top_logprobs[i - 1]);
        assert_false(isnan(r.top_logprobs[i]));
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    /* The chosen token's logprob is its entry in the list, and the exact log-softmax. */
    double max = -INFINITY, z = 0.0;
    for (int i = 0; i < V; i++)
        max = logits[i] > max ? logits[i] : max;
    for (int i = 0; i < V; i++)
        z += exp(logits[i] - max);
    assert_true(fabs(r.logprob - (logits[r.id] - max - log(z))) < 1e-5);
    bool listed = false;
    for (int i = 0; i < r.n_top; i++)
        if (r.top_ids[i] == r.id) {
            listed = true;
            assert_true(fabsf(r.top_logprobs[i] - r.logprob) < 1e-6f);
        }
    assert_true(listed);
    assert_int_equal(r.top_ids[V - 1], 3);
    assert_true(isinf(r.top_logprobs[V - 1]) && r.top_logprobs[V - 1] < 0);
    sampler_free(s);
}

static void test_logprobs_large_vocabulary(void **state)
{
    (void)state;
    enum { V = 150000 };
    float *logits = malloc(sizeof(float) * V);
    assert_non_null(logits);
    fill_logits(logits, V, 9, 12.0f);
    sampler_params p = sampler_default_params();
    p.n_top_logprobs = 5;
    sampler *s = sampler_create(&p, V);
    assert_non_null(s);
    sample_result r = sample_copy(s, logits, V);
    assert_int_equal(r.n_top, 5);
    /* The best five by a plain scan, ties to the lower id. */
    int best[5];
    for (int k = 0; k < 5; k++) {
        int b = -1;
        for (int i = 0; i < V; i++) {
            bool taken = false;
            for (int j = 0; j < k; j++)
                taken |= best[j] == i;
            if (!taken && (b < 0 || logits[i] > logits[b]))
                b = i;
        }
        best[k] = b;
        assert_int_equal(r.top_ids[k], b);
    }
    /* Default parameters keep top-k 40, so the chosen token is among the best 40. */
    int rank = 0;
    for (int i = 0; i < V; i++)
        rank += logits[i] > logits[r.id];
    assert_true(rank < 40);
    sampler_free(s);
    free(logits);
}

static void test_extreme_logits_never_nan(void **state)
{
    (void)state;
    enum { V = 8 };
    const float cases[][V] = {
        {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY},
        {3e38f, 3e38f, -3e38f, 0, -INFINITY, 1, 2, 3},
        {NAN, 1, INFINITY, -INFINITY, 2, NAN, 0, -3e38f},
        {-INFINITY, -INFINITY, 5, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY},
    };
    const float temps[] = {0.0f, 0.01f, 1.0f, 50.0f};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int t = 0; t < 4; t++) {
            sampler_params p = sampler_default_params();
            p.temperature = temps[t];
            p.top_k = t == 2 ? 0 : 3;
            p.n_top_logprobs = V;
            p.frequency_penalty = 1.5f;
            p.repeat_penalty = 1.3f;
            sampler *s = sampler_create(&p, V);
            assert_non_null(s);
            const int32_t hist[] = {0, 1, 2};
            for (int d = 0; d < 10; d++) {
                float l[V];
                memcpy(l, cases[c], sizeof l);
                sample_result r = sampler_sample(s, l, hist, 3);
                assert_true(r.id >= 0 && r.id < V);
                assert_false(isnan(r.logprob));
                assert_false(isinf(r.logprob));  /* the chosen token always had mass */
                for (int i = 0; i < r.n_top; i++)
                    assert_false(isnan(r.top_logprobs[i]));
            }
            sampler_free(s);
        }
    }
    /* The one finite token among -inf is the only choice. */
    sampler_params p = plain_params(4);
    sampler *s = sampler_create(&p, V);
    float l[V];
    memcpy(l, cases[3], sizeof l);
    sample_result r = sampler_sample(s, l, NULL, 0);
    assert_int_equal(r.id, 2);
    assert_true(fabsf(r.logprob) < 1e-6f);
    sampler_free(s);
}

static void test_create_rejects_bad_arguments(void **state)
{
    (void)state;
    sampler_params p = sampler_default_params();
    assert_null(sampler_create(&p, 0));
    assert_null(sampler_create(NULL, 10));
    sampler_free(NULL);
    p.n_top_logprobs = 1000;  /* clamped, not an overflow of top_ids */
    sampler *s = sampler_create(&p, 50);
    assert_non_null(s);
    float l[50];
    fill_logits(l, 50, 1, 1.0f);
    assert_int_equal(sampler_sample(s, l, NULL, 0).n_top, SAMPLE_MAX_TOP);
    sampler_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_picks_argmax_ties_lowest),
        cmocka_unit_test(test_top_k1_is_greedy_at_any_temperature),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_top_p_restricts_candidates),
        cmocka_unit_test(test_top_p_heap_path_matches_full_sort),
        cmocka_unit_test(test_min_p_restricts_candidates),
        cmocka_unit_test(test_top_k_restricts_candidates),
        cmocka_unit_test(test_temperature_sharpens_and_flattens),
        cmocka_unit_test(test_presence_penalty_once_per_present_token),
        cmocka_unit_test(test_frequency_penalty_times_count),
        cmocka_unit_test(test_repetition_penalty_divides_positive_multiplies_negative),
        cmocka_unit_test(test_penalties_combine_within_window),
        cmocka_unit_test(test_penalties_apply_over_calls_without_leaking),
        cmocka_unit_test(test_logprobs_normalised_and_sorted),
        cmocka_unit_test(test_logprobs_large_vocabulary),
        cmocka_unit_test(test_extreme_logits_never_nan),
        cmocka_unit_test(test_create_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
